from prometheus_client import CollectorRegistry

from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord, TraceRecord
from gateway.rescue_buffer import RescueBuffer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def t(tid: str) -> TraceRecord:
    return TraceRecord(tid * 32, "e", [SpanRecord(tid * 32, "1" * 16, None, "handle_message", "CHAIN", 1, 2)], {})


def test_promote_takes_the_trace_out() -> None:
    m = GatewayMetrics(CollectorRegistry())
    rb = RescueBuffer(900, 10**6, m, FakeClock())
    rb.add(t("a"))
    assert "a" * 32 in rb
    got = rb.promote("a" * 32)
    assert got is not None and got.trace_id == "a" * 32
    assert rb.promote("a" * 32) is None and len(rb) == 0


def test_age_and_bytes_bounds_are_counted() -> None:
    m = GatewayMetrics(CollectorRegistry())
    clock = FakeClock()
    rb = RescueBuffer(900, 500, m, clock)  # room for two single-span traces
    for tid in "abc":
        rb.add(t(tid))
        clock.now += 100
    assert len(rb) == 2 and "a" * 32 not in rb
    assert m.registry.get_sample_value("tracegw_rescue_evicted_total", {"reason": "bytes"}) == 1
    clock.now += 900
    rb.expire()
    assert len(rb) == 0
    assert m.registry.get_sample_value("tracegw_rescue_evicted_total", {"reason": "age"}) == 2
    assert m.registry.get_sample_value("tracegw_rescue_traces") == 0


def test_late_spans_join_a_held_trace() -> None:
    rb = RescueBuffer(900, 10**6, GatewayMetrics(CollectorRegistry()), FakeClock())
    rb.add(t("a"))
    late = t("a")
    late.spans[0].span_id = "2" * 16
    rb.add(late)
    got = rb.promote("a" * 32)
    assert got is not None and len(got.spans) == 2
