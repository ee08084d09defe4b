"""Availability: the application never waits on tracing when the gateway or MLflow is down,
every lost span is counted on the side that lost it, and the Prometheus scrape tells the truth."""

from __future__ import annotations

import os
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from clients import ClientConfig, Tracer
from orchestrator.tools.traffic import handle_message, plan_requests
from tests.support import MlflowServer, wait_for

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

FIRST_PLANS = plan_requests(20, seed=41, feedback_rate=0.0)
SECOND_PLANS = plan_requests(50, seed=42, feedback_rate=0.0)
SCRAPE_PLANS = plan_requests(10, seed=51, feedback_rate=0.0)


def spans(plans: list[Any]) -> int:
    """Spans the plans' traces have (17 on Bedrock-backed routes, 16 on the others)."""
    return sum(p.span_count for p in plans)


def _sample(gw: Any, name: str, labels: dict[str, str] | None = None) -> float:
    return gw.metrics.registry.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.integration
def test_gateway_stopped_calls_return_and_drops_are_counted(gateway_factory: Any) -> None:
    gw = gateway_factory()
    target = gw.target
    gw.stop()
    plans = plan_requests(50, seed=31, feedback_rate=0.0)
    tracer = Tracer(ClientConfig(target=target, flush_interval_s=0.05))
    try:
        started = time.monotonic()
        trace_ids = [handle_message(tracer, p) for p in plans]
        elapsed = time.monotonic() - started
        assert len(set(trace_ids)) == 50
        # A behaviour check, not a benchmark: nothing on the request path waits for the
        # 1 s RPC deadline, so 50 requests are nowhere near 50 s.
        assert elapsed < 5.0, f"50 requests took {elapsed:.2f}s with the gateway down"
    finally:
        started = time.monotonic()
        tracer.shutdown(timeout_s=2)
        shutdown_s = time.monotonic() - started
    assert shutdown_s < 3.0, f"shutdown took {shutdown_s:.2f}s"
    stats = tracer.stats()
    assert stats.errors == 0, stats.last_error
    assert stats.spans_sent == 0
    assert stats.spans_pending == 0
    assert stats.spans_enqueued + stats.spans_dropped["queue_full"] == spans(plans)
    assert stats.spans_dropped_total == spans(plans) - stats.spans_sent
    reasons = {reason for reason, n in stats.spans_dropped.items() if n}
    assert reasons and reasons <= {"unavailable", "queue_full"}, dict(stats.spans_dropped)


@pytest.mark.integration
def test_mlflow_down_then_back_nothing_lost(tmp_path: Path, gateway_factory: Any) -> None:
    import mlflow

    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow-own.db'}", tmp_path).start()
    tracer: Tracer | None = None
    try:
        gw = gateway_factory(MLFLOW_TRACKING_URI=server.url, MLFLOW_EXPERIMENT_NAME="availability")
        tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
        first = {"tr-" + handle_message(tracer, p) for p in FIRST_PLANS}
        assert tracer.flush(timeout_s=10)
        client = mlflow.MlflowClient(tracking_uri=server.url)

        def stored() -> set[str]:
            exp = client.get_experiment_by_name("availability")
            if exp is None:
                return set()
            found = {t.info.trace_id for t in client.search_traces(locations=[exp.experiment_id], max_results=100)}
            return found if found >= first else set()

        assert wait_for(stored, timeout_s=30, interval_s=0.2, what="first 20 traces in MLflow") == first
        assert _sample(gw, "tracegw_spans_written_total") == spans(FIRST_PLANS)

        server.stop()
        assert server.proc is not None and server.proc.poll() is not None

        started = time.monotonic()
        for p in SECOND_PLANS:
            handle_message(tracer, p)
        assert time.monotonic() - started < 5.0
        assert tracer.flush(timeout_s=10)
        stats = tracer.stats()
        # The gateway took everything: MLflow being down is invisible to the application.
        assert stats.spans_dropped_total == 0, dict(stats.spans_dropped)
        assert stats.spans_sent == spans(FIRST_PLANS) + spans(SECOND_PLANS)
        assert stats.errors == 0

        # The gateway keeps what it accepted (disk spool) and retries; nothing is dropped.
        wait_for(
            lambda: _sample(gw, "tracegw_write_retries_total", {"kind": "spans"}) > 0,
            timeout_s=30,
            what="retries while MLflow is down",
        )
        wait_for(lambda: _sample(gw, "tracegw_spool_segments") > 0, timeout_s=10, what="batches in the spool")
        assert _sample(gw, "tracegw_spans_written_total") == spans(FIRST_PLANS)

        server.start()  # the same port: MLflow is back
        everything = first | set()
        client = mlflow.MlflowClient(tracking_uri=server.url)

        def all_stored() -> bool:
            exp = client.get_experiment_by_name("availability")
            return exp is not None and len(client.search_traces(locations=[exp.experiment_id], max_results=200)) == len(
                FIRST_PLANS + SECOND_PLANS
            )

        wait_for(all_stored, timeout_s=90, interval_s=0.5, what="all 70 traces in MLflow after the outage")
        assert everything <= {
            t.info.trace_id
            for t in client.search_traces(
                locations=[client.get_experiment_by_name("availability").experiment_id],  # type: ignore[union-attr]
                max_results=200,
            )
        }
        wait_for(lambda: _sample(gw, "tracegw_spool_segments") == 0, timeout_s=10, what="spool emptied")
        assert _sample(gw, "tracegw_spans_written_total") == spans(FIRST_PLANS) + spans(SECOND_PLANS)
        dropped = sum(
            m.value for fam in gw.metrics.registry.collect() if fam.name == "tracegw_spans_dropped" for m in fam.samples
        )
        assert dropped == 0
    finally:
        if tracer is not None:
            tracer.shutdown(timeout_s=2)
        server.stop()


def _get(url: str, accept: str | None = None) -> tuple[str, str]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=5) as resp:
        return resp.headers.get("Content-Type", ""), resp.read().decode()


def _scraped(body: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name and (labels is None or dict(sample.labels) == labels):
                return float(sample.value)
    return None


@pytest.mark.integration
def test_prometheus_scrape_reports_received_and_written_spans(gateway_factory: Any) -> None:
    gw = gateway_factory(MLFLOW_EXPERIMENT_NAME="scrape")  # embedded SQLite store in tmp_path
    url = f"http://127.0.0.1:{gw.running.metrics_port}/metrics"
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
    try:
        for p in SCRAPE_PLANS:
            handle_message(tracer, p)
        assert tracer.flush(timeout_s=10)
        sent = tracer.stats().spans_sent
    finally:
        tracer.shutdown(timeout_s=2)
    assert sent == spans(SCRAPE_PLANS)

    _, body = _get(url)
    assert _scraped(body, "tracegw_spans_received_total", {"receiver": "native"}) == sent
    wait_for(
        lambda: _scraped(_get(url)[1], "tracegw_spans_written_total") == sent,
        timeout_s=30,
        what="tracegw_spans_written_total to reach the spans sent",
    )
    _, body = _get(url)
    assert _scraped(body, "tracegw_traces_written_total") == 10
    assert not _scraped(body, "tracegw_spans_dropped_total")

    content_type, body = _get(url, accept="application/openmetrics-text")
    assert content_type.startswith("application/openmetrics-text"), content_type
    assert body.rstrip("\n").endswith("# EOF")
    assert f'tracegw_spans_received_total{{receiver="native"}} {spans(SCRAPE_PLANS)}' in body
