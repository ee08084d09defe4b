"""``make stack`` end to end: ``orchestrator.tools.stack up`` as a user runs it, chats through its
proxy, the traces in MLflow (PostgreSQL, basic-auth), Prometheus scraping both gateways, then
``down`` and no process of the state file left alive.

It fails (does not skip) when PostgreSQL on 127.0.0.1:5432 or the Prometheus of ``make setup``
is missing: the stack needs both.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from orchestrator.tools import stack
from tests.support import PG_DSN, drop_pg_database, wait_for

pytestmark = [
    pytest.mark.integration,
    pytest.mark.postgres,
    pytest.mark.slow,
    pytest.mark.timeout(240),
    pytest.mark.filterwarnings("ignore:starlette.middleware.wsgi is deprecated"),
]

REPO = Path(__file__).resolve().parents[2]


def run_stack(*args: str, timeout_s: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING_", "AWS_"))}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.tools.stack", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def chat(proxy: str, session: str, message: str) -> tuple[dict[str, Any], str]:
    body = {
        "session_id": session,
        "message": message,
        "page_context": {"page_type": "search", "locale": "en-US"},
        "user_type": "guest",
    }
    req = urllib.request.Request(
        proxy + "/v1/chat", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read()), str(resp.headers["X-Stack-Backend"])


def prom_query(prom: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{prom}/api/v1/query?query={urllib.parse.quote(expr)}", timeout=5) as resp:
        return list(json.loads(resp.read())["data"]["result"])


def test_stack_up_chat_traces_scrapes_down(tmp_path: Path) -> None:
    import psycopg2

    assert stack.PROMETHEUS_BIN.exists(), f"{stack.PROMETHEUS_BIN} is missing: run `make setup`"
    try:
        psycopg2.connect(PG_DSN, connect_timeout=5).close()
    except psycopg2.Error as exc:
        pytest.fail(f"the stack needs PostgreSQL at {PG_DSN}: {exc}")

    workdir = tmp_path / "stack"
    database = f"mangaassist_stack_test_{secrets.token_hex(4)}"
    pg_args = ["--pg-dsn", PG_DSN, "--database", database]
    state: stack.State | None = None
    try:
        up = run_stack(
            "up", "--workdir", str(workdir), *pg_args, "--traffic", "0", "--scrape-interval", "1", timeout_s=200
        )
        state = stack.State.load(workdir)
        assert up.returncode == 0, f"stack up failed:\n{up.stdout[-3000:]}\n{up.stderr[-3000:]}"
        assert state is not None
        assert "How to open each part" in up.stdout and state.info["proxy"] in up.stdout
        names = {p.name for p in state.processes}
        expected = {"moto-s3", "mlflow-1", "gateway-1", "gateway-2", "chatbot-1", "chatbot-2", "proxy", "prometheus"}
        assert expected <= names
        info = state.info

        # a few chats through the proxy: new sessions go round-robin, so both chatbots answer
        proxy = info["proxy"]
        sent: dict[str, str] = {}
        backends = set()
        for i, message in enumerate(["Recommend a manga like Vinland Saga", "Do you ship manga to Canada?"] * 3):
            resp, backend = chat(proxy, f"stack-test-{i}", message)
            sent[resp["trace_id"]] = backend
            backends.add(backend)
        assert backends == {"chatbot-1", "chatbot-2"}
        again, backend = chat(proxy, "stack-test-0", "thanks, that's all")  # sticky: the session's chatbot
        assert backend == sent[next(iter(sent))]
        sent[again["trace_id"]] = backend

        # the traces land in MLflow, readable through basic-auth only
        mlflow_url = info["mlflow_urls"][0]
        assert stack._http_status(mlflow_url + "/api/2.0/mlflow/experiments/search?max_results=1") == 401
        admin_pw = Path(info["admin_password_file"]).read_text().strip()

        def stored() -> set[str]:
            import mlflow

            with stack._as_admin(mlflow_url, admin_pw):
                found = mlflow.MlflowClient(tracking_uri=mlflow_url).search_traces(
                    locations=[info["experiment_id"]], max_results=100, include_spans=False
                )
            return {t.info.trace_id.removeprefix("tr-") for t in found}

        wait_for(lambda: set(sent) <= stored(), timeout_s=60, interval_s=1, what="the chats' traces in MLflow")

        # Prometheus scraped both gateways (and both chatbots), and has the gateways' counters
        prom = info["prometheus"]
        up_gw = {r["metric"]["gateway"]: r["value"][1] for r in prom_query(prom, 'up{job="tracegw"}')}
        assert up_gw == {"gateway-1": "1", "gateway-2": "1"}
        assert len(prom_query(prom, 'up{job="mangaassist-chatbot"} == 1')) == 2
        wait_for(
            lambda: sum(float(r["value"][1]) for r in prom_query(prom, "tracegw_traces_written_total")) >= len(sent),
            timeout_s=30,
            interval_s=1,
            what="Prometheus to scrape the traces written",
        )
        assert {"trace-gateway", "mangaassist-rollout"} <= set(stack.prometheus_rule_groups(prom))
    finally:
        down = run_stack("down", "--workdir", str(workdir), timeout_s=120)
        if state is None:
            state = stack.State.load(workdir)
        drop_pg_database(database)
    assert down.returncode == 0, f"stack down failed:\n{down.stdout}\n{down.stderr}"
    assert state is not None
    alive = [p.name for p in state.processes if p.alive()]
    assert not alive, f"still alive after down: {alive}"
    assert not (workdir / "state.json").exists() and (workdir / "state.stopped.json").exists()
