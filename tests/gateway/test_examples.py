"""The example series for alert payloads: bounded, newest first out, and only stored traces."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry

from clients import ClientConfig, FeedbackEvent, Tracer
from clients.events import Feedback
from gateway import config
from gateway.metrics import GatewayMetrics
from gateway.process.examples import MAX_KEYS, PER_KEY, REASONS, ExampleTraces
from gateway.server import ThreadedGateway
from orchestrator.tools.traffic import handle_message, plan_requests
from tests.fakes import ROOMY, RecordingWriter
from tests.support import wait_for


def examples(registry: CollectorRegistry) -> list[dict[str, str]]:
    return [
        s.labels for family in registry.collect() if family.name == "mangaassist_example_trace" for s in family.samples
    ]


def test_each_reason_and_pivot_keeps_its_newest_few_and_the_series_is_bounded() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    ex = ExampleTraces(metrics)
    pivots = ("rb-1", "pv-1", "model-1")
    for i in range(10):
        ex.note(f"t{i}", pivots, ("error",))
        ex.stored(f"t{i}")
    ids = [s["trace_id"] for s in examples(metrics.registry)]
    assert sorted(ids) == [f"t{i}" for i in range(10 - PER_KEY, 10)]
    ex.note("plain", pivots, ())  # nothing notable: never offered
    ex.stored("plain")
    ex.note("unkept", pivots, ("error",))  # noted, but the sampler never kept it
    assert "plain" not in {s["trace_id"] for s in examples(metrics.registry)}
    assert "unkept" not in {s["trace_id"] for s in examples(metrics.registry)}
    for k in range(MAX_KEYS * 2):  # many pivots: the least recently used are forgotten
        for reason in REASONS:
            ex.note(f"k{k}-{reason}", (f"rb-{k}", "pv", "m"), (reason,))
            ex.stored(f"k{k}-{reason}")
    assert ex.series() == len(examples(metrics.registry)) <= len(REASONS) * MAX_KEYS * PER_KEY
    assert not [s for s in examples(metrics.registry) if s["release_bundle"] == "rb-1"]


def test_a_kept_error_trace_and_a_thumbs_down_are_offered_and_a_sampled_out_trace_is_not() -> None:
    writer = RecordingWriter()
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                **ROOMY,
                "TRACEGW_METRICS_ADDRESS": "",
                "TRACEGW_SPOOL_DIR": "",
                "MLFLOW_TRACE_SAMPLING_RATIO": "0.0",  # only tail reasons and feedback keep a trace
                "TRACEGW_ROOT_GRACE_S": "0.05",
                "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
            }
        ),
        writer,
    )
    try:
        plans = plan_requests(40, seed=12, feedback_rate=0.0, error_rate=0.25)
        with Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05)) as tracer:
            ids = [handle_message(tracer, p) for p in plans]
            assert tracer.flush(timeout_s=10)
            wait_for(
                lambda: (
                    gw.metrics.registry.get_sample_value("tracegw_stage_traces_out_total", {"stage": "measure"}) == 40
                ),
                timeout_s=10,
                what="40 traces decided",
            )
            stored = set(writer.written)
            plain = [t for t in ids if t not in stored]
            assert plain, "some plain traces were sampled out"
            tracer.record_feedback(
                FeedbackEvent(
                    response_id="resp_x",
                    trace_id=plain[0],
                    feedback=Feedback.THUMBS_DOWN,
                    reason_code="wrong_recommendation",
                    session_id=plans[ids.index(plain[0])].session_id,
                )
            )
            assert tracer.flush(timeout_s=10)
        wait_for(lambda: plain[0] in writer.written, timeout_s=10, what="the thumbs-down trace rescued")
        offered = examples(gw.metrics.registry)
        errors = {s["trace_id"] for s in offered if s["reason"] == "error"}
        assert errors and errors <= set(writer.written), "only stored traces are offered"
        down = [s for s in offered if s["reason"] == "thumbs_down"]
        assert [s["trace_id"] for s in down] == [plain[0]]
        assert down[0]["release_bundle"] == "2026.11.20-rc1"
        never = {t for t in ids if t not in writer.written}
        assert not never & {s["trace_id"] for s in offered}
        assert all(0 < float(v) <= time.time() for v in _values(gw.metrics.registry))
    finally:
        gw.stop(2.0)


def _values(registry: CollectorRegistry) -> list[float]:
    return [
        s.value for family in registry.collect() if family.name == "mangaassist_example_trace" for s in family.samples
    ]


def test_the_scrape_carries_trace_id_exemplars_on_latency_errors_fallbacks_and_feedback() -> None:
    """What Prometheus reads: the OpenMetrics exposition of a real gateway's /metrics under MangaAssist
    traffic, parsed (``promtool check metrics`` 2.42 rejects exemplars), carries trace ids on the
    latency histogram and on the error, guardrail-fallback and feedback counters."""
    import urllib.request

    from prometheus_client.openmetrics.parser import text_string_to_metric_families

    writer = RecordingWriter()
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                **ROOMY,
                "TRACEGW_METRICS_ADDRESS": "127.0.0.1:0",
                "TRACEGW_SPOOL_DIR": "",
                "TRACEGW_ROOT_GRACE_S": "0.05",
                "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
            }
        ),
        writer,
    )
    try:
        plans = plan_requests(60, seed=13, feedback_rate=0.0, error_rate=0.2, block_rate=0.2)
        with Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05)) as tracer:
            ids = [handle_message(tracer, p) for p in plans]
            assert tracer.flush(timeout_s=10)
            wait_for(
                lambda: (
                    gw.metrics.registry.get_sample_value("tracegw_stage_traces_out_total", {"stage": "measure"}) == 60
                ),
                timeout_s=10,
                what="60 traces decided",
            )
            tracer.record_feedback(
                FeedbackEvent(
                    response_id="resp_e",
                    trace_id=ids[0],
                    feedback=Feedback.THUMBS_DOWN,
                    reason_code="wrong_recommendation",
                    session_id=plans[0].session_id,
                )
            )
            assert tracer.flush(timeout_s=10)
        wait_for(
            lambda: (
                (gw.metrics.registry.get_sample_value("tracegw_feedback_joins_total", {"outcome": "sampled_in"}) or 0)
                + (gw.metrics.registry.get_sample_value("tracegw_feedback_joins_total", {"outcome": "rescued"}) or 0)
                == 1
            ),
            timeout_s=10,
            what="the feedback joined",
        )
        port = gw.running.metrics_port
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/metrics", headers={"Accept": "application/openmetrics-text;version=1.0.0"}
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read().decode()
        found: dict[str, set[str]] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.exemplar is not None:
                    found.setdefault(family.name, set()).add(sample.exemplar.labels["trace_id"])
        for name in (
            "mangaassist_request_latency_seconds",
            "mangaassist_request_errors",
            "mangaassist_guardrail_fallbacks",
            "mangaassist_feedback",
        ):
            assert found.get(name), f"no trace_id exemplar on {name}: {sorted(found)}"
            assert found[name] <= set(ids), f"{name} names a trace nobody sent"
        assert found["mangaassist_feedback"] == {ids[0]}
    finally:
        gw.stop(2.0)
