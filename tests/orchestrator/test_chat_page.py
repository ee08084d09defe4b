"""The chat page at ``/`` (``orchestrator/web/``) in headless Chromium, over a real stack: orchestrator →
gateway → ``mlflow server``. An answer shows its citations and links to its trace in the MLflow UI;
a thumbs-down with a reason lands on that trace as an assessment; a Japanese message round-trips.

Chromium is Debian's ``/usr/bin/chromium`` (``make setup`` installs it), driven by Playwright without
``playwright install``. A missing browser fails these tests; it never skips them.
"""

from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from clients import Tracer, feedback_rules
from orchestrator.adapters import offline_providers
from orchestrator.api import create_app
from orchestrator.service import ChatService
from tests.orchestrator.stack import LLM_TREE, Stack, orchestrator_stack
from tests.support import MlflowServer, wait_for

CHROMIUM = Path("/usr/bin/chromium")
JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    assert CHROMIUM.is_file(), f"{CHROMIUM} is missing: run `make setup` (apt-get install chromium, as root)"
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


def page_stack(mlflow_server: MlflowServer, gateway_factory: Any, experiment: str) -> tuple[Any, str]:
    import mlflow

    experiment_id = mlflow.MlflowClient(tracking_uri=mlflow_server.url).create_experiment(experiment)
    options = {"mlflow_ui_url": mlflow_server.url + "/", "mlflow_experiment_id": experiment_id}
    return orchestrator_stack(gateway_factory, mlflow_server.url, experiment, app_options=options), experiment_id


def open_page(browser: Any, stack: Stack) -> Any:
    from playwright.sync_api import expect

    page = browser.new_page(locale="en-US")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(stack.url + "/")
    expect(page.locator("body")).to_have_attribute("data-ready", "true")
    assert errors == []
    return page


def send(page: Any, message: str) -> tuple[dict[str, Any], dict[str, Any], Any]:
    """Type ``message``, press Enter; the request body, the API's answer and the answer's list item."""
    from playwright.sync_api import expect

    box = page.get_by_role("textbox", name=re.compile("Your message|メッセージ"))
    box.fill(message)
    with page.expect_response(lambda r: r.url.endswith("/v1/chat")) as info:
        box.press("Enter")
    response = info.value
    assert response.status == 200, response.text()
    answer = response.json()
    turn = page.locator(f'li.turn.bot[data-trace-id="{answer["trace_id"]}"]')
    expect(turn).to_be_visible()
    return response.request.post_data_json, answer, turn


def test_the_page_and_its_config_are_served(offline_tracer: Tracer) -> None:
    app = create_app(
        ChatService(offline_tracer, offline_providers()),
        mlflow_ui_url="http://127.0.0.1:5000/",
        mlflow_experiment_id="7",
    )
    with TestClient(app) as api:
        r = api.get("/")
        assert r.status_code == 200 and r.headers["content-type"] == "text/html; charset=utf-8"
        assert '<html lang="en">' in r.text and 'aria-live="polite"' in r.text and "日本語" in r.text
        for asset in ("/web/app.js", "/web/style.css"):
            assert api.get(asset).status_code == 200, asset
        config = api.get("/v1/page-config").json()
        assert config["mlflow_ui_url"] == "http://127.0.0.1:5000" and config["mlflow_experiment_id"] == "7"
        assert set(config["reason_codes"]) == feedback_rules.REASON_CODES - {""}


@pytest.mark.integration
@pytest.mark.slow
def test_answer_citations_trace_link_and_thumbs_down_reach_mlflow(
    mlflow_server: MlflowServer, gateway_factory: Any, browser: Any
) -> None:
    from playwright.sync_api import expect

    context, experiment_id = page_stack(mlflow_server, gateway_factory, "chat-page-en")
    with context as stack:
        page = open_page(browser, stack)
        expect(page.locator("html")).to_have_attribute("lang", "en")
        expect(page.locator("#log")).to_have_attribute("aria-live", "polite")
        page.get_by_label("Page type").select_option("category")
        page.get_by_label("Customer").select_option("prime")
        sent, answer, turn = send(page, "Recommend a manga like Vinland Saga for a teenager")
        assert sent["page_context"] == {"page_type": "category", "locale": "en-US"} and sent["user_type"] == "prime"
        assert answer["citations"], answer
        assert turn.locator(".reply").text_content() == answer["reply"]
        assert turn.locator(".citation").all_text_contents() == answer["citations"]

        link = turn.get_by_role("link", name="View trace in MLflow")
        expected = (
            f"{mlflow_server.url}/#/experiments/{experiment_id}/traces?selectedEvaluationId=tr-{answer['trace_id']}"
        )
        assert link.get_attribute("href") == expected

        # thumbs-down with a reason, by keyboard: Enter on the button opens the reason form
        down = turn.get_by_role("button", name="Not helpful")
        down.focus()
        page.keyboard.press("Enter")
        expect(down).to_have_attribute("aria-expanded", "true")
        reason = turn.get_by_label("Reason")
        expect(reason).to_be_focused()
        offered = reason.locator("option").evaluate_all("options => options.map(o => o.value)")
        assert "wrong_recommendation" in offered and "helpful" not in offered
        assert set(offered) <= feedback_rules.REASON_CODES
        reason.select_option("wrong_recommendation")
        turn.get_by_label("Comment (optional)").fill("not for teenagers")
        with page.expect_response(lambda r: r.url.endswith("/v1/feedback")) as info:
            turn.get_by_role("button", name="Send feedback").press("Enter")
        assert info.value.status == 202, info.value.text()
        expect(turn.locator(".feedback-status")).to_have_text(re.compile("feedback was recorded"))
        expect(down).to_have_attribute("aria-pressed", "true")

        assert stack.tracer.flush(timeout_s=10)
        client = stack.mlflow()

        def joined() -> Any:
            try:
                t = client.get_trace("tr-" + answer["trace_id"])
            except Exception:  # not written yet
                return None
            return t if t is not None and t.info.tags.get("user_feedback") else None

        trace = wait_for(joined, timeout_s=60, interval_s=0.2, what="the page's thumbs-down on its trace")
        assert trace.info.tags["user_feedback"] == "thumbs_down"
        assert trace.info.experiment_id == experiment_id
        [assessment] = [a for a in trace.info.assessments if a.name == "user_feedback"]
        assert assessment.rationale.startswith("wrong_recommendation")
        page.close()


@pytest.mark.integration
@pytest.mark.slow
def test_a_japanese_message_round_trips(mlflow_server: MlflowServer, gateway_factory: Any, browser: Any) -> None:
    from playwright.sync_api import expect

    context, experiment_id = page_stack(mlflow_server, gateway_factory, "chat-page-ja")
    with context as stack:
        page = open_page(browser, stack)
        page.get_by_label("Language").select_option("ja-JP")
        expect(page.locator("html")).to_have_attribute("lang", "ja")
        expect(page.locator("label[for=message]")).to_have_text("メッセージ")
        message = "返品の期限は何日ですか？"
        sent, answer, turn = send(page, message)
        assert sent["message"] == message and sent["page_context"]["locale"] == "ja-JP"
        assert JAPANESE.search(answer["reply"]), answer
        reply = turn.locator(".reply")
        assert reply.text_content() == answer["reply"]
        assert reply.get_attribute("lang") == "ja-JP"
        assert answer["citations"] and turn.locator(".citation").all_text_contents() == answer["citations"]
        expect(turn.locator(".citations .label")).to_have_text("出典")
        assert page.locator("li.turn.user .text").last.text_content() == message
        href = turn.get_by_role("link", name="MLflowでトレースを見る").get_attribute("href")
        assert href is not None and href.endswith(
            f"/{experiment_id}/traces?selectedEvaluationId=tr-{answer['trace_id']}"
        )

        assert stack.tracer.flush(timeout_s=10)
        trace = stack.trace(answer["trace_id"], len(LLM_TREE))
        root = next(s for s in trace.data.spans if s.name == "handle_message")
        assert root.attributes["customer_locale"] == "ja-JP"
        assert message in str(root.inputs)
        page.close()


@pytest.mark.integration
@pytest.mark.slow
def test_demo_serve_keeps_the_page_up_until_ctrl_c(tmp_path: Path) -> None:
    demo = Path(sys.executable).parent / "mangaassist-demo"
    proc = subprocess.Popen(
        [str(demo), "--serve", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )
    lines: queue.Queue[str] = queue.Queue()
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode(errors="replace"))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:

        def address() -> str | None:
            while not lines.empty():
                output.append(lines.get())
                found = re.match(r"Chat page: (http://127\.0\.0\.1:\d+/)$", output[-1].strip())
                if found:
                    return found.group(1)
            assert proc.poll() is None, "".join(output)
            return None

        url = str(wait_for(address, timeout_s=180, interval_s=0.2, what="the chat page's address"))
        with urllib.request.urlopen(url, timeout=10) as resp:
            assert resp.status == 200 and 'lang="en"' in resp.read().decode()
        with urllib.request.urlopen(url + "v1/page-config", timeout=10) as resp:
            assert resp.read().decode().count("http://127.0.0.1:") == 1
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        assert proc.wait(timeout=120) == 0
        reader.join(timeout=10)
        while not lines.empty():
            output.append(lines.get())
        assert output[-1].strip() == "stopped.", "".join(output)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        reader.join(timeout=10)
        assert proc.stdout is not None
        proc.stdout.close()
