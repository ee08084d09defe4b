from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord, SpanStatus, TraceRecord
from gateway.process.measure import Measure

TAGS = {
    "intent": "recommendation",
    "release_bundle": "b1",
    "prompt_version": "rec-2.4",
    "bedrock_model_id": "m1",
    "deployment_stage": "prod",
}


def request(tid: str, *, error: bool = False, blocked: bool = False, intent: str = "recommendation") -> TraceRecord:
    t0 = 1_000_000_000
    spans = [
        SpanRecord(tid, "1" * 16, None, "handle_message", "CHAIN", t0, t0 + 1_500_000_000),
        SpanRecord(
            tid,
            "2" * 16,
            "1" * 16,
            "bedrock_generate",
            "LLM",
            t0,
            t0 + 1,
            status=SpanStatus.ERROR if error else SpanStatus.OK,
            attributes={
                "input_tokens": 1000,
                "output_tokens": 100,
                "input_cost_usd": 0.0008,
                "output_cost_usd": 0.0004,
            },
        ),
        SpanRecord(
            tid,
            "3" * 16,
            "1" * 16,
            "apply_guardrails",
            "GUARDRAIL",
            t0,
            t0 + 1,
            attributes={"fallback_triggered": True} if blocked else {},
        ),
        SpanRecord(
            tid,
            "4" * 16,
            "3" * 16,
            "grounding_check",
            "GUARDRAIL",
            t0,
            t0 + 1,
            attributes={"passed": not blocked, **({"action": "block"} if blocked else {})},
        ),
    ]
    return TraceRecord(tid, "e", spans, {**TAGS, "intent": intent})


def sample(m: GatewayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, {**TAGS, "rollout_cohort": "none", **labels}) or 0.0


def test_every_trace_is_measured_with_its_labels() -> None:
    m = GatewayMetrics(CollectorRegistry())
    stage = Measure(m, max_label_values=50)
    traces = [request("a" * 32), request("b" * 32, error=True), request("c" * 32, blocked=True)]
    assert stage.process(traces) == traces
    assert sample(m, "mangaassist_requests_total") == 3
    assert sample(m, "mangaassist_request_errors_total") == 1
    assert sample(m, "mangaassist_grounding_failures_total") == 1
    assert sample(m, "mangaassist_guardrail_fallbacks_total") == 1
    assert sample(m, "mangaassist_guardrail_verdicts_total", stage="grounding_check", verdict="block") == 1
    assert sample(m, "mangaassist_guardrail_verdicts_total", stage="grounding_check", verdict="pass") == 2
    assert sample(m, "mangaassist_bedrock_input_tokens_total") == 3000
    assert sample(m, "mangaassist_bedrock_output_tokens_total") == 300
    assert abs(sample(m, "mangaassist_bedrock_cost_usd_total") - 0.0036) < 1e-9
    assert sample(m, "mangaassist_request_latency_seconds_count") == 3
    assert sample(m, "mangaassist_request_latency_seconds_bucket", le="1.5") == 3
    assert sample(m, "mangaassist_request_latency_seconds_bucket", le="1.0") == 0


def test_latency_exemplars_carry_the_trace_id() -> None:
    m = GatewayMetrics(CollectorRegistry())
    Measure(m, 50).process([request("d" * 32)])
    text = openmetrics(m.registry).decode()
    assert '# {trace_id="' + "d" * 32 + '"}' in text


def test_label_values_beyond_the_cap_become_other() -> None:
    m = GatewayMetrics(CollectorRegistry())
    stage = Measure(m, max_label_values=2)
    stage.process([request(f"{i:032x}", intent=f"intent{i}") for i in range(1, 6)])
    assert sample(m, "mangaassist_requests_total", intent="intent1") == 1
    assert sample(m, "mangaassist_requests_total", intent="other") == 3
    assert m.registry.get_sample_value("tracegw_metric_label_overflow_total", {"label": "intent"}) == 3
    # Seen again: the admitted value stays itself, the one past the cap is counted again.
    stage.process([request("f" * 32, intent="intent1"), request("e" * 32, intent="intent5")])
    assert sample(m, "mangaassist_requests_total", intent="intent1") == 2
    assert sample(m, "mangaassist_requests_total", intent="other") == 4
    assert m.registry.get_sample_value("tracegw_metric_label_overflow_total", {"label": "intent"}) == 4


def test_late_spans_are_not_counted_as_requests() -> None:
    m = GatewayMetrics(CollectorRegistry())
    late = request("e" * 32)
    late.late = True
    Measure(m, 50).process([late])
    assert sample(m, "mangaassist_requests_total") == 0


def test_counts_of_a_batch_are_applied_once_with_an_exemplar_of_that_batch() -> None:
    m = GatewayMetrics(CollectorRegistry())
    stage = Measure(m, 50)
    stage.process([request("a" * 32, error=True), request("b" * 32), request("c" * 32)])
    stage.process([request("d" * 32)])
    assert sample(m, "mangaassist_requests_total") == 4
    assert sample(m, "mangaassist_request_errors_total") == 1
    assert sample(m, "mangaassist_bedrock_input_tokens_total") == 4000
    text = openmetrics(m.registry).decode()
    errors = next(line for line in text.splitlines() if line.startswith("mangaassist_request_errors_total{"))
    requests = next(line for line in text.splitlines() if line.startswith("mangaassist_requests_total{"))
    assert '# {trace_id="' + "a" * 32 + '"}' in errors  # the trace that failed, not the batch's last one
    assert '# {trace_id="' + "d" * 32 + '"}' in requests


def test_label_combinations_and_long_values_are_capped_per_family() -> None:
    import random

    from gateway.metrics import BUSINESS_LABELS

    m = GatewayMetrics(CollectorRegistry())
    stage = Measure(m, max_label_values=50, max_label_sets=200, max_label_chars=128)
    rng = random.Random(5)
    traces = []
    for i in range(5000):  # five labels of 50 values each: up to 50^5 combinations without the set cap
        t = request(f"{i + 1:032x}")
        t.tags.update({name: f"{name[:2]}{rng.randrange(50)}" for name in BUSINESS_LABELS})
        traces.append(t)
    long_value = request("f" * 32)
    long_value.tags["prompt_version"] = "p" * 100_000
    stage.process([*traces, long_value])
    series = {
        tuple(s.labels[n] for n in BUSINESS_LABELS)
        for metric in m.registry.collect()
        if metric.name == "mangaassist_requests"
        for s in metric.samples
        if s.name == "mangaassist_requests_total"
    }
    assert len(series) <= 200 + 1  # the admitted combinations, and the all-"other" one
    assert ("other",) * len(BUSINESS_LABELS) in series
    assert sum(s.value for s in _samples(m, "mangaassist_requests_total")) == 5001  # every request counted
    assert (m.registry.get_sample_value("tracegw_metric_label_overflow_total", {"label": "label_set"}) or 0) > 0
    assert (m.registry.get_sample_value("tracegw_metric_label_overflow_total", {"label": "prompt_version"}) or 0) >= 1
    assert all(len(v) <= 128 for labels in series for v in labels)


def _samples(m: GatewayMetrics, name: str) -> list:
    return [s for metric in m.registry.collect() for s in metric.samples if s.name == name]
