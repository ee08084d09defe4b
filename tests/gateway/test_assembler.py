from prometheus_client import CollectorRegistry

from gateway.config import AssemblyConfig
from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord
from gateway.process.assembler import INCOMPLETE_TAG, SYNTHESIZED_ATTRIBUTE, Assembler
from tests.fakes import FakeClock


def mk(trace: str, span: str, parent: str | None, tags: dict[str, str] | None = None) -> SpanRecord:
    return SpanRecord(
        trace_id=trace * 32,
        span_id=span * 16,
        parent_span_id=parent * 16 if parent else None,
        name=f"s{span}",
        span_type="CHAIN",
        start_time_ns=10,
        end_time_ns=20,
        trace_tags=tags or {},
    )


def make(**kw: float) -> tuple[Assembler, FakeClock, GatewayMetrics]:
    cfg = AssemblyConfig(
        root_grace_s=kw.get("grace", 0.5),
        decision_timeout_s=kw.get("timeout", 30),
        max_traces_in_flight=int(kw.get("max_traces", 100)),
        max_spans_per_trace=int(kw.get("max_spans", 100)),
        max_bytes_in_flight=int(kw.get("max_bytes", 10**9)),
    )
    clock = FakeClock(1000.0)
    metrics = GatewayMetrics(CollectorRegistry())
    return Assembler(cfg, metrics, clock), clock, metrics


def sample(metrics: GatewayMetrics, name: str, labels: dict[str, str] | None = None) -> float:
    value = metrics.registry.get_sample_value(name, labels or {})
    return value or 0.0


def test_trace_is_handed_on_after_root_plus_grace_with_merged_tags() -> None:
    asm, clock, metrics = make()
    asm.add([mk("a", "2", "1", {"intent": "faq"}), mk("a", "1", None, {"session_id": "s"})], "exp")
    assert asm.poll() == []
    clock.now += 0.49
    assert asm.poll() == []
    clock.now += 0.02
    [trace] = asm.poll()
    assert len(trace.spans) == 2 and trace.complete
    assert trace.tags == {"intent": "faq", "session_id": "s"}
    assert trace.experiment_name == "exp"
    assert sample(metrics, "tracegw_traces_assembled_total", {"outcome": "root"}) == 1


def test_late_child_follows_its_decided_trace() -> None:
    asm, clock, _ = make()
    asm.add([mk("a", "1", None)], "exp")
    clock.now += 1
    assert len(asm.poll()) == 1
    asm.add([mk("a", "3", "1")], "other")
    [late] = asm.poll()
    assert late.late and late.experiment_name == "exp"
    assert [s.span_id for s in late.spans] == ["3" * 16]


def test_rootless_trace_is_decided_at_timeout_with_synthesized_root() -> None:
    asm, clock, metrics = make(timeout=30)
    asm.add([mk("b", "2", "1"), mk("b", "3", "2")], "exp")
    clock.now += 29
    assert asm.poll() == []
    clock.now += 1.5
    [trace] = asm.poll()
    assert not trace.complete
    assert trace.tags[INCOMPLETE_TAG] == "true"
    root = trace.root
    assert root is not None and root.span_id == "1" * 16  # the orphans hang under it
    assert root.attributes[SYNTHESIZED_ATTRIBUTE] is True
    assert sample(metrics, "tracegw_traces_assembled_total", {"outcome": "timeout"}) == 1


def test_bounds_evict_oldest_and_count_span_limit() -> None:
    asm, clock, metrics = make(max_traces=2, max_spans=2)
    asm.add([mk("a", "1", None)], "e")
    clock.now += 0.01
    asm.add([mk("b", "1", None)], "e")
    evicted = asm.add([mk("c", "1", None)], "e")
    assert [t.trace_id for t in evicted] == ["a" * 32]
    assert asm.traces_in_flight == 2
    asm.add([mk("c", "2", "1"), mk("c", "3", "1")], "e")
    assert sample(metrics, "tracegw_spans_dropped_total", {"stage": "assemble", "reason": "span_limit"}) == 1
    assert sample(metrics, "tracegw_traces_assembled_total", {"outcome": "evicted_count"}) == 1


def test_drain_hands_on_everything() -> None:
    asm, _, _ = make()
    asm.add([mk("a", "1", None), mk("b", "2", "1")], "e")
    traces = asm.drain()
    assert sorted(t.complete for t in traces) == [False, True]
    assert asm.traces_in_flight == 0 and asm.spans_in_flight == 0


def test_byte_bound_evicts_oldest_with_its_own_reason() -> None:
    asm, clock, metrics = make(max_bytes=1000)  # about four spans
    for i, t in enumerate("abcdef"):
        clock.now += 0.01
        asm.add([mk(t, str(i + 1), None)], "e")
    assert asm.traces_in_flight < 6
    assert sample(metrics, "tracegw_traces_assembled_total", {"outcome": "evicted_bytes"}) == 6 - asm.traces_in_flight
    assert sample(metrics, "tracegw_assembly_bytes") <= 1000


def test_span_tags_move_to_the_trace_once() -> None:
    asm, clock, _ = make()
    asm.add([mk("a", "1", None, {"intent": "faq"})], "e")
    clock.now += 1
    [trace] = asm.poll()
    assert trace.tags == {"intent": "faq"} and trace.spans[0].trace_tags == {}


def test_interleaved_runs_of_traces_in_one_call_are_each_assembled_and_counted() -> None:
    """Spans usually come in runs per trace; interleaved ones, limits and late spans in the same call
    must still land where they belong, with the span and byte counts kept exact."""
    asm, clock, metrics = make(max_spans=3)
    asm.add([mk("z", "1", None)], "exp")
    clock.now += 1
    assert len(asm.poll()) == 1  # z decided; its further spans are late
    batch = [
        mk("a", "2", "1"),
        mk("a", "1", None),
        mk("b", "2", "1"),
        mk("z", "5", "1"),
        mk("z", "6", "1"),
        mk("a", "3", "1"),
        mk("a", "4", "1"),
        mk("b", "1", None),
        mk("a", "5", "1"),
    ]
    asm.add(batch, "exp")
    assert asm.traces_in_flight == 2 and asm.spans_in_flight == 5  # a: 3 (limit), b: 2
    assert sample(metrics, "tracegw_spans_dropped_total", {"stage": "assemble", "reason": "span_limit"}) == 2  # a4, a5
    assert sample(metrics, "tracegw_assembly_bytes") > 0
    clock.now += 1
    ready = {t.trace_id[0] + ("L" if t.late else ""): t for t in asm.poll()}
    assert sorted(ready) == ["a", "b", "zL"]
    assert [s.span_id[0] for s in ready["a"].spans] == ["2", "1", "3"]
    assert [s.span_id[0] for s in ready["b"].spans] == ["2", "1"]
    assert [s.span_id[0] for s in ready["zL"].spans] == ["5", "6"]
    assert asm.spans_in_flight == 0 and sample(metrics, "tracegw_assembly_bytes") == 0


def test_the_trace_knows_its_first_root_as_a_scan_would_find_it() -> None:
    asm, clock, _ = make()
    asm.add([mk("a", "2", "1"), mk("a", "1", None), mk("a", "3", None)], "exp")
    clock.now += 1
    [trace] = asm.poll()
    assert trace.first_root is trace.spans[1] and trace.root is trace.spans[1]
    trace.first_root = None  # as after the rescue buffer: root is found by walking the spans
    assert trace.root is trace.spans[1]


def test_late_spans_count_against_the_per_trace_cap() -> None:
    asm, clock, metrics = make(max_spans=3)
    asm.add([mk("a", "1", None), mk("a", "2", "1")], "exp")
    clock.now += 1
    assert len(asm.poll()) == 1
    asm.add([mk("a", "3", "1"), mk("a", "4", "1"), mk("a", "5", "1")], "exp")  # one more fits
    asm.add([mk("a", "6", "1")], "exp")
    [late] = asm.poll()
    assert [s.span_id for s in late.spans] == ["3" * 16]
    assert sample(metrics, "tracegw_spans_dropped_total", {"stage": "assemble", "reason": "span_limit"}) == 3
