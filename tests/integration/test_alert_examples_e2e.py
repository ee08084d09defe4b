"""Alert payloads name example traces that open in MLflow, end to end on loopback.

MangaAssist traffic through the real client (``orchestrator.tools.traffic.handle_message``) ->
a real gateway (head sampling ratio 0.1, so most plain traces are sampled out) -> a real MLflow
server; a real Prometheus (exemplar storage on) scrapes the gateway's /metrics every 1 s and
evaluates a test copy of deploy/prometheus/alerts.yaml every 1 s.

Two release bundles: ``2026.11.20-rc1`` fails 30% of its Bedrock calls
(``plan_requests(..., error_rate=0.3)``), ``2026.12.01-rc2`` never fails; a quarter of the
responses get feedback, two thirds of it thumbs-down. Checked:

- MangaAssistErrorRateHigh fires for the failing bundle only, and MangaAssistThumbsDownRateHigh
  fires; each alert's rendered ``example_trace_ids`` names 1-3 trace ids of that alert's pivot and
  reason (failed requests, thumbs-down ones), each of which opens in MLflow (``tr-<id>``);
- the latency histogram's exemplars (``/api/v1/query_exemplars``) name traces this test sent;
  those of errors and guardrail blocks (always kept) are all in MLflow, at least one is, and the
  rest may be sampled out (an exemplar is the last observation of a bucket, stored or not);
- the error ratio the alert compares (``/api/v1/query``) has a value per release_bundle.

What the test copy scales (``scaled_alerts``), in the business group ``mangaassist-quality``
only: every ``for`` becomes ``0s`` and every minimum-volume guard (the trailing ``>= N``) becomes
``>= 1``, because this test sends ~25 requests/s for ~16 s instead of the live hundreds in 5m. The
rate windows ([5m], [15m], [30m], [1h], [6h]) are unchanged (with 1 s scrapes and evaluation they
hold the whole run), as are the thresholds, keep_firing_for, the recording rules, the
TraceGateway* group and every annotation template: the payloads checked here are the live ones.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from clients import ClientConfig, FeedbackEvent, Tracer
from clients.events import Feedback
from gateway import config as gateway_config
from gateway.server import ThreadedGateway
from orchestrator.tools import traffic
from tests.support import MlflowServer, PrometheusServer, free_port, wait_for

pytestmark = pytest.mark.integration

ALERTS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "alerts.yaml"
EXPERIMENT = "alert-examples-e2e"
BAD, GOOD = "2026.11.20-rc1", "2026.12.01-rc2"
RATE_PER_S = 25
SECONDS = 16  # spread over many scrapes: a counter seen once has no rate


def scaled_alerts(text: str) -> str:
    """The live alerts with the business alerts' ``for`` at 0s and minimum volumes at 1 (see above)."""
    doc = yaml.safe_load(text)
    scaled = 0
    for group in doc["groups"]:
        if group["name"] != "mangaassist-quality":
            continue
        for rule in group["rules"]:
            rule["for"] = "0s"
            rule["expr"], n = re.subn(r">= \d+(\s*)$", r">= 1\1", rule["expr"])
            assert n == 1, rule["alert"]
            scaled += 1
    assert scaled == 8
    return yaml.safe_dump(doc, sort_keys=False)


@dataclass
class Sent:
    """What the test sent: trace id -> (release_bundle, prompt_version, bedrock_model_id) and kinds."""

    pivot: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    errors: set[str] = field(default_factory=set)
    blocked: set[str] = field(default_factory=set)
    thumbs_down: set[str] = field(default_factory=set)


@dataclass
class Env:
    prometheus: str
    mlflow: Any  # MlflowClient
    db: Path
    gateway: ThreadedGateway
    sent: Sent
    started: float


def prom(base: str, path: str, **params: str) -> Any:
    url = f"{base}{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    return body["data"]


def drive(tracer: Tracer, sent: Sent, monkeypatch: pytest.MonkeyPatch) -> None:
    """Interleave both bundles at RATE_PER_S through the traffic tool's handle_message."""
    n = RATE_PER_S * SECONDS
    plans = [
        (BAD if i % 3 else GOOD, p)
        for i, p in enumerate(
            zip(
                traffic.plan_requests(n, seed=22, error_rate=0.3, feedback_rate=0.0),
                traffic.plan_requests(n, seed=23, error_rate=0.0, feedback_rate=0.0),
                strict=True,
            )
        )
    ]
    started = time.monotonic()
    for i, (bundle, (bad, good)) in enumerate(plans):
        plan = bad if bundle == BAD else good
        monkeypatch.setattr(traffic, "RELEASE_BUNDLE", bundle)  # the tool's one bundle, per request here
        trace_id = traffic.handle_message(tracer, plan)
        sent.pivot[trace_id] = (bundle, plan.prompt_version, plan.model_id)
        if plan.fail_bedrock:
            sent.errors.add(trace_id)
        if plan.guardrail_block:
            sent.blocked.add(trace_id)
        if i % 4 == 0:  # feedback on a quarter of the responses, two thirds of it thumbs-down
            verdict = Feedback.THUMBS_UP if i % 12 == 0 else Feedback.THUMBS_DOWN
            tracer.record_feedback(
                FeedbackEvent(
                    response_id="resp_" + plan.request_id[-10:],
                    trace_id=trace_id,
                    feedback=verdict,
                    reason_code="wrong_recommendation" if verdict is Feedback.THUMBS_DOWN else "helpful",
                    session_id=plan.session_id,
                    prompt_version=plan.prompt_version,
                    release_bundle=bundle,
                )
            )
            if verdict is Feedback.THUMBS_DOWN:
                sent.thumbs_down.add(trace_id)
        delay = started + (i + 1) / RATE_PER_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    from mlflow import MlflowClient

    work = tmp_path_factory.mktemp("alert-examples")
    db = work / "mlflow.db"
    server = MlflowServer(f"sqlite:///{db}", work).start()
    metrics_port = free_port()
    gateway = ThreadedGateway(
        gateway_config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                "TRACEGW_METRICS_ADDRESS": f"127.0.0.1:{metrics_port}",
                "MLFLOW_TRACKING_URI": server.url,
                "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
                "MLFLOW_TRACE_SAMPLING_RATIO": "0.1",
                "TRACEGW_SPOOL_DIR": str(work / "spool"),
                "TRACEGW_BATCH_MAX_DELAY_S": "0.2",
                "TRACEGW_TRACE_LINKS": "false",  # fewer calls to the one-worker server; tested elsewhere
                "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
                "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
            }
        )
    )
    rules = work / "alerts.scaled.yaml"
    rules.write_text(scaled_alerts(ALERTS.read_text()))
    prometheus = PrometheusServer([f"127.0.0.1:{metrics_port}"], work, rule_files=[rules])
    tracer: Tracer | None = None
    monkeypatch = pytest.MonkeyPatch()
    try:
        prometheus.start()
        tracer = Tracer(ClientConfig(target=gateway.target, flush_interval_s=0.05, service_name="alert-examples"))
        sent = Sent()
        started = time.time()
        drive(tracer, sent, monkeypatch)
        assert tracer.flush(timeout_s=30)
        yield Env(prometheus.url, MlflowClient(tracking_uri=server.url), db, gateway, sent, started)
    finally:
        monkeypatch.undo()
        if tracer is not None:
            tracer.shutdown(timeout_s=5)
        prometheus.stop()
        gateway.stop(10)
        server.stop()


def firing(env: Env, alertname: str) -> list[dict[str, Any]]:
    alerts = prom(env.prometheus, "/api/v1/alerts")["alerts"]
    return [a for a in alerts if a["labels"]["alertname"] == alertname and a["state"] == "firing"]


def with_examples(env: Env, alertname: str) -> list[dict[str, Any]]:
    """Firing alerts of ``alertname``, once one of them renders example ids (bounded wait)."""
    return wait_for(
        lambda: [a for a in firing(env, alertname) if a["annotations"].get("example_trace_ids")],
        timeout_s=45,
        interval_s=0.5,
        what=f"{alertname} firing with example_trace_ids",
    )


def opens_in_mlflow(env: Env, ids: list[str]) -> None:
    errors: list[str] = []

    def stored(trace_id: str) -> bool:
        try:
            return env.mlflow.get_trace(f"tr-{trace_id}") is not None
        except Exception as exc:  # not written yet
            errors.append(str(exc)[:300])
            return False

    wait_for(lambda: all(stored(t) for t in ids), timeout_s=60, interval_s=0.5, what=f"{ids} in MLflow ({errors[-1:]})")


def check_payload(env: Env, alert: dict[str, Any], kind: set[str]) -> list[str]:
    labels = alert["labels"]
    pivot = (labels["release_bundle"], labels["prompt_version"], labels["bedrock_model_id"])
    rendered = alert["annotations"]["example_trace_ids"]
    ids = rendered.split(" ")
    assert 1 <= len(ids) <= 3 and rendered == rendered.strip(), (rendered, labels)
    assert len(set(ids)) == len(ids), rendered
    for trace_id in ids:  # a trace this test sent, of the alert's pivot and reason
        assert env.sent.pivot.get(trace_id) == pivot, (trace_id, env.sent.pivot.get(trace_id), pivot)
        assert trace_id in kind, (trace_id, labels)
    opens_in_mlflow(env, ids)
    return ids


def test_error_rate_alert_names_stored_failed_traces_of_its_own_pivot(env: Env) -> None:
    alerts = with_examples(env, "MangaAssistErrorRateHigh")
    assert all(a["labels"]["release_bundle"] == BAD for a in firing(env, "MangaAssistErrorRateHigh"))
    for alert in alerts:
        check_payload(env, alert, env.sent.errors)
    notes = alerts[0]["annotations"]
    assert "mangaassist_example_trace" in notes["description"] and notes["mlflow_trace_filter"]


def test_thumbs_down_alert_names_stored_thumbs_down_traces(env: Env) -> None:
    for alert in with_examples(env, "MangaAssistThumbsDownRateHigh"):
        # a thumbs-down on a sampled-out trace rescues it: the example opens all the same
        check_payload(env, alert, env.sent.thumbs_down)


def test_latency_exemplars_name_sent_traces_and_the_kept_ones_are_in_mlflow(env: Env) -> None:
    data = prom(
        env.prometheus,
        "/api/v1/query_exemplars",
        query="mangaassist_request_latency_seconds_bucket",
        start=str(env.started - 5),
        end=str(time.time()),
    )
    exemplars = {e["labels"]["trace_id"] for s in data for e in s["exemplars"]}
    assert exemplars and exemplars <= set(env.sent.pivot), exemplars - set(env.sent.pivot)
    must_keep = exemplars & (env.sent.errors | env.sent.blocked)  # tail policies keep these always

    def in_mlflow() -> set[str]:
        with sqlite3.connect(env.db) as conn:
            return {r[0].removeprefix("tr-") for r in conn.execute("SELECT request_id FROM trace_info")}

    wait_for(
        lambda: must_keep <= in_mlflow(),
        timeout_s=60,
        interval_s=0.5,
        what=f"exemplars of error/guardrail traces in MLflow (missing: {len(must_keep - in_mlflow())})",
    )
    stored = exemplars & in_mlflow()
    assert stored, f"no exemplar names a stored trace ({len(exemplars)} exemplars, all sampled out?)"
    for trace_id in sorted(stored)[:3]:
        assert env.mlflow.get_trace(f"tr-{trace_id}") is not None
    print(
        f"\nlatency exemplars: {len(exemplars)}, stored in MLflow {len(stored)}, "
        f"sampled out {len(exemplars - stored)} (an exemplar names any request; only stored ones open)"
    )


def test_the_error_ratio_has_a_value_per_release_bundle(env: Env) -> None:
    expr = (
        "sum by (release_bundle) (mangaassist:alert_errors:rate5m)"
        " / sum by (release_bundle) (mangaassist:alert_requests:rate5m)"
    )
    result = prom(env.prometheus, "/api/v1/query", query=expr)["result"]
    ratio = {r["metric"]["release_bundle"]: float(r["value"][1]) for r in result}
    assert set(ratio) == {BAD, GOOD}, ratio
    assert ratio[GOOD] == 0.0 and ratio[BAD] > 0.02, ratio  # above the live 2% threshold
