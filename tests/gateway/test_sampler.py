import random

from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from prometheus_client import CollectorRegistry

from gateway import config
from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord, SpanStatus, TraceRecord
from gateway.process.contract import VIOLATIONS_TAG
from gateway.process.sampler import FORCE_TAG, REASON_TAG, Sampler, head_keep, ratio_bound


def test_head_decisions_equal_opentelemetry_trace_id_ratio_based() -> None:
    rng = random.Random(20261126)
    for ratio in (0.1, 0.01, 0.5):
        otel = TraceIdRatioBased(ratio)
        bound = ratio_bound(ratio)
        agree = 0
        kept = 0
        for _ in range(100_000):
            tid = rng.getrandbits(128)
            ours = head_keep(f"{tid:032x}", bound)
            theirs = otel.should_sample(None, tid, "handle_message").decision is Decision.RECORD_AND_SAMPLE
            agree += ours == theirs
            kept += ours
        assert agree == 100_000, ratio
        assert abs(kept / 100_000 - ratio) < 0.01


def test_edges_keep_all_and_none() -> None:
    assert head_keep("f" * 32, ratio_bound(1.0))
    assert not head_keep("0" * 32, ratio_bound(0.0))


def cfg(**kw: str) -> config.SamplingConfig:
    env = {"MLFLOW_TRACE_SAMPLING_RATIO": "0.0"}
    env.update(kw)
    return config.load(env).sampling


def trace(
    tid: str = "ab" * 16,
    *,
    status: SpanStatus = SpanStatus.OK,
    attrs: dict | None = None,
    tags: dict | None = None,
    duration_s: float = 0.1,
    late: bool = False,
) -> TraceRecord:
    root = SpanRecord(
        tid,
        "1" * 16,
        None,
        "handle_message",
        "CHAIN",
        1,
        1 + int(duration_s * 1e9),
        status,
        attributes=dict(attrs or {}),
    )
    return TraceRecord(tid, "e", [root], dict(tags or {}), late=late)


def make(c: config.SamplingConfig, forced: set[str] | None = None) -> tuple[Sampler, list[TraceRecord]]:
    dropped: list[TraceRecord] = []
    s = Sampler(
        c, GatewayMetrics(CollectorRegistry()), on_dropped=dropped.append, forced=(forced or set()).__contains__
    )
    return s, dropped


def test_tail_policies_keep_whatever_the_ratio_and_say_why() -> None:
    s, dropped = make(cfg())
    cases = {
        "error": trace(status=SpanStatus.ERROR),
        "guardrail": trace(attrs={"action": "block"}),
        "slow": trace(duration_s=4.0),
        "canary": trace(tags={"deployment_stage": "canary"}),
        "shadow_pair": trace(tags={"deployment_stage": "prod", "shadow_pair_id": "0123abcd0123abcd"}),
        "contract": trace(tags={VIOLATIONS_TAG: "missing_tag.intent"}),
        "forced": trace(tags={FORCE_TAG: "true"}),
    }
    for reason, t in cases.items():
        assert s.process([t]) == [t], reason
        assert t.tags[REASON_TAG] == reason
    redact = trace(attrs={"action": "redact"})
    fallback = trace(attrs={"fallback_triggered": True})
    assert len(s.process([redact, fallback])) == 2
    plain = trace(tags={"deployment_stage": "prod"})
    assert s.process([plain]) == [] and dropped == [plain]


def test_each_tail_policy_can_be_switched_off() -> None:
    s, _ = make(
        cfg(
            TRACEGW_TAIL_KEEP_ERRORS="false",
            TRACEGW_TAIL_KEEP_GUARDRAIL="false",
            TRACEGW_TAIL_LATENCY_THRESHOLD_S="0",
            TRACEGW_TAIL_KEEP_STAGES="",
            TRACEGW_TAIL_KEEP_CONTRACT_VIOLATIONS="false",
            TRACEGW_TAIL_KEEP_FORCED="false",
        )
    )
    everything = trace(
        status=SpanStatus.ERROR,
        attrs={"action": "block"},
        duration_s=9,
        tags={"deployment_stage": "canary", VIOLATIONS_TAG: "x", FORCE_TAG: "true"},
    )
    assert s.process([everything]) == []


def test_feedback_before_the_decision_keeps_the_trace() -> None:
    s, _ = make(cfg(), forced={"cd" * 16})
    t = trace("cd" * 16)
    assert s.process([t]) == [t] and t.tags[REASON_TAG] == "feedback"


def test_late_spans_follow_the_decision() -> None:
    s, dropped = make(cfg())
    kept = trace("aa" * 16, status=SpanStatus.ERROR)
    gone = trace("bb" * 16)
    s.process([kept, gone])
    late_kept = trace("aa" * 16, late=True)
    late_gone = trace("bb" * 16, late=True)
    assert s.process([late_kept, late_gone]) == [late_kept]
    assert dropped[-1] is late_gone


def test_unhashable_action_values_do_not_break_the_guardrail_policy() -> None:
    from prometheus_client import CollectorRegistry

    from gateway import config
    from gateway.metrics import GatewayMetrics
    from gateway.model import SpanRecord, TraceRecord
    from gateway.process.sampler import Sampler

    cfg = config.load({"MLFLOW_TRACE_SAMPLING_RATIO": "0"})
    sampler = Sampler(cfg.sampling, GatewayMetrics(CollectorRegistry()))
    odd = SpanRecord(
        "1" * 32,
        "2" * 16,
        None,
        "handle_message",
        "CHAIN",
        1,
        2,
        attributes={"action": ["block"], "fallback_triggered": {"x": 1}},
    )
    acting = SpanRecord("3" * 32, "2" * 16, None, "handle_message", "CHAIN", 1, 2, attributes={"action": "redact"})
    assert sampler.tail_reasons(TraceRecord("1" * 32, "e", [odd], {})) == []
    assert sampler.tail_reasons(TraceRecord("3" * 32, "e", [acting], {})) == ["guardrail"]
