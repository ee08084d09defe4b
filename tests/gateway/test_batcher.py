"""Batches honour their span bound: a trace that would take a batch past it starts a new one."""

from __future__ import annotations

from gateway import config
from gateway.export.batcher import Batcher, SpanBatch
from gateway.model import SpanRecord, TraceRecord
from tests.fakes import FakeClock


def trace(tid: str, spans: int) -> TraceRecord:
    return TraceRecord(
        tid * 32,
        "e",
        [SpanRecord(tid * 32, f"{i + 1:016x}", None, "s", "CHAIN", 1, 2) for i in range(spans)],
        {},
    )


def test_a_batch_never_exceeds_its_span_bound_unless_one_trace_alone_does() -> None:
    cfg = config.load({"TRACEGW_BATCH_MAX_SPANS": "10", "TRACEGW_MAX_SPANS_PER_TRACE": "10"}).batch
    out: list[SpanBatch] = []
    b = Batcher(cfg, out.append, FakeClock(0.0))
    b.add([trace("a", 6), trace("b", 6), trace("c", 4), trace("d", 10), trace("e", 1)])
    b.flush()
    assert [[t.trace_id[0] for t in x.traces] for x in out] == [["a"], ["b", "c"], ["d"], ["e"]]
    assert max(x.span_count for x in out) == 10
