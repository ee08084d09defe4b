"""Assembly: group spans by trace until the trace can be decided.

A trace is handed on when its root span has ended and ``root_grace_s`` has passed (late
children usually arrive within it), or when ``decision_timeout_s`` has passed since its first
span without a root (decided on what arrived, marked incomplete, and given a synthesized root
so that MLflow finalizes and tags it instead of leaving it IN_PROGRESS forever). Spans that
arrive after their trace was decided follow it as a small "late" trace of their own (a bounded
cache remembers recent decisions).

Bounded: at most ``max_traces_in_flight`` traces and about ``max_bytes_in_flight`` bytes
(beyond either the oldest trace is decided early, outcome ``evicted_count`` or
``evicted_bytes``), and ``max_spans_per_trace`` spans per trace, late spans included (extra
spans are dropped and counted with reason ``span_limit``). Not thread-safe: the gateway calls it from its event loop.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import AssemblyConfig
from gateway.metrics import Children, GatewayMetrics
from gateway.model import SpanRecord, SpanStatus, TraceRecord, approx_span_bytes
from gateway.process.recent import RecentMap

INCOMPLETE_TAG = "tracegw.incomplete"
SYNTHESIZED_ATTRIBUTE = "tracegw.synthesized_root"
DECISION_CACHE_SIZE = 100_000


@dataclass(slots=True)
class _Decided:
    """What assembly remembers of a decided trace: where its late spans go, and how many spans
    it has had (the per-trace cap counts late spans too)."""

    experiment: str
    spans: int


@dataclass(slots=True)
class _Pending:
    experiment: str
    first_seen: float
    spans: list[SpanRecord] = field(default_factory=list)
    tags: dict[str, str] = field(default_factory=dict)
    root_done_at: float | None = None
    root: SpanRecord | None = None
    approx_bytes: int = 0
    wal: list[int] = field(default_factory=list)
    replayed: bool = False


class Assembler:
    def __init__(
        self, config: AssemblyConfig, metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cfg = config
        self._metrics = metrics
        self._clock = clock
        self._pending: dict[str, _Pending] = {}
        self._root_deadlines: deque[tuple[float, str]] = deque()
        self._timeout_deadlines: deque[tuple[float, str]] = deque()
        self._decided: RecentMap[str, _Decided] = RecentMap(DECISION_CACHE_SIZE)
        self._late: dict[str, list[SpanRecord]] = {}
        self._late_wal: dict[str, list[int]] = {}  # WAL segments of the late spans, per trace
        self._span_count = 0
        self._bytes = 0
        self.last_holds = 0
        self._outcome = Children(metrics.traces_assembled)

    def holds(self, trace_id: str) -> bool:
        """True while the trace is being assembled (not decided yet)."""
        return trace_id in self._pending

    @property
    def traces_in_flight(self) -> int:
        return len(self._pending)

    @property
    def spans_in_flight(self) -> int:
        return self._span_count

    def add(
        self, spans: list[SpanRecord], experiment: str, wal_segment: int = 0, replayed: bool = False
    ) -> list[TraceRecord]:
        """Take spans; returns traces decided early because assembly was full. ``last_holds`` is then
        how many traces (or late-span groups) took a new hold on ``wal_segment``: the caller holds
        the segment that often (0 when the WAL is off)."""
        now = self._clock()
        holds = 0
        evicted: list[TraceRecord] = []
        max_spans = self._cfg.max_spans_per_trace
        added = added_bytes = 0
        # A client sends a trace's spans together, so spans of one trace come in runs: the trace is
        # looked up once per run, not once per span (the per-span hot path of assembly).
        last: str | None = None
        pending: _Pending | None = None
        held: list[SpanRecord] = []
        for span in spans:
            trace_id = span.trace_id
            if trace_id != last:
                last = trace_id
                pending = self._pending.get(trace_id)
                if pending is None:
                    decided = self._decided.get(trace_id)
                    if decided is not None:
                        if decided.spans >= max_spans:
                            self._metrics.drop_spans("assemble", "span_limit", 1)
                        else:
                            decided.spans += 1
                            self._late.setdefault(trace_id, []).append(span)
                            if wal_segment:
                                segs = self._late_wal.setdefault(trace_id, [])
                                if not segs or segs[-1] != wal_segment:
                                    segs.append(wal_segment)
                                    holds += 1
                        last = None  # the next span of this trace goes the same way
                        continue
                    if len(self._pending) >= self._cfg.max_traces_in_flight:
                        oldest = self._evict_oldest("evicted_count")
                        if oldest is not None:
                            evicted.append(oldest)
                    pending = _Pending(experiment, now)
                    self._pending[trace_id] = pending
                    self._timeout_deadlines.append((now + self._cfg.decision_timeout_s, trace_id))
                held = pending.spans
                if wal_segment and (not pending.wal or pending.wal[-1] != wal_segment):
                    pending.wal.append(wal_segment)
                    holds += 1
                if replayed:
                    pending.replayed = True
            assert pending is not None
            if len(held) >= max_spans:
                self._metrics.drop_spans("assemble", "span_limit", 1)
                continue
            size = span.approx_bytes or approx_span_bytes(span)
            held.append(span)
            pending.approx_bytes += size
            added_bytes += size
            added += 1
            if span.trace_tags:
                # The tags now belong to the trace; one copy only, so later stages (redaction)
                # handle them once.
                pending.tags.update(span.trace_tags)
                span.trace_tags = {}
            if span.parent_span_id is None and pending.root_done_at is None:
                pending.root_done_at = now
                pending.root = span
                self._root_deadlines.append((now + self._cfg.root_grace_s, trace_id))
        self._bytes += added_bytes
        self._span_count += added
        while self._bytes > self._cfg.max_bytes_in_flight and len(self._pending) > 1:
            oldest = self._evict_oldest("evicted_bytes")
            if oldest is None:
                break
            evicted.append(oldest)
        self._update_gauges()
        self.last_holds = holds
        return evicted

    def poll(self) -> list[TraceRecord]:
        """Traces that are ready now, plus late spans of already-decided traces."""
        now = self._clock()
        ready: list[TraceRecord] = []
        while self._root_deadlines and self._root_deadlines[0][0] <= now:
            _, trace_id = self._root_deadlines.popleft()
            if trace_id in self._pending:
                ready.append(self._finish(trace_id, "root"))
        while self._timeout_deadlines and self._timeout_deadlines[0][0] <= now:
            _, trace_id = self._timeout_deadlines.popleft()
            if trace_id in self._pending:
                ready.append(self._finish(trace_id, "timeout"))
        ready.extend(self._take_late())
        self._update_gauges()
        return ready

    def drain(self) -> list[TraceRecord]:
        """Decide everything held (shutdown): complete traces as they are, others incomplete."""
        ready = [
            self._finish(tid, "root" if p.root_done_at is not None else "timeout")
            for tid, p in list(self._pending.items())
        ]
        self._root_deadlines.clear()
        self._timeout_deadlines.clear()
        ready.extend(self._take_late())
        self._update_gauges()
        return ready

    def _evict_oldest(self, outcome: str) -> TraceRecord | None:
        while self._timeout_deadlines:
            _, trace_id = self._timeout_deadlines.popleft()
            if trace_id in self._pending:
                return self._finish(trace_id, outcome)
        return None

    def _take_late(self) -> list[TraceRecord]:
        if not self._late:
            return []
        now = self._clock()
        late = []
        for tid, spans in self._late.items():
            decided = self._decided.get(tid)
            trace = TraceRecord(tid, decided.experiment if decided else "", spans, {}, late=True, first_seen=now)
            wal = self._late_wal.get(tid)
            if wal:
                trace.wal = wal
            late.append(trace)
        self._late.clear()
        self._late_wal.clear()
        self._outcome("late").inc(len(late))
        return late

    def _finish(self, trace_id: str, outcome: str) -> TraceRecord:
        pending = self._pending.pop(trace_id)
        self._span_count -= len(pending.spans)
        self._bytes -= pending.approx_bytes
        self._decided[trace_id] = _Decided(pending.experiment, len(pending.spans))
        trace = TraceRecord(
            trace_id,
            pending.experiment,
            pending.spans,
            pending.tags,
            first_seen=pending.first_seen,
            approx_bytes=pending.approx_bytes,
            first_root=pending.root,
            wal=pending.wal,
            replayed=pending.replayed,
        )
        if pending.root_done_at is None:
            trace.complete = False
            trace.tags[INCOMPLETE_TAG] = "true"
            trace.spans.append(synthesize_root(trace))
        self._outcome(outcome).inc()
        return trace

    def _update_gauges(self) -> None:
        self._metrics.traces_in_flight.set(len(self._pending))
        self._metrics.spans_in_flight.set(self._span_count)
        self._metrics.assembly_bytes.set(self._bytes)


def synthesize_root(trace: TraceRecord) -> SpanRecord:
    """A stand-in root for a trace whose root never arrived.

    It takes the span id that the orphaned spans point at most often, so they hang under it,
    and spans their time range. It is marked so nobody mistakes it for a real span.
    """
    present = {s.span_id for s in trace.spans}
    missing = Counter(
        s.parent_span_id for s in trace.spans if s.parent_span_id is not None and s.parent_span_id not in present
    )
    span_id = missing.most_common(1)[0][0] if missing else _fresh_span_id(present)
    return SpanRecord(
        trace_id=trace.trace_id,
        span_id=span_id or _fresh_span_id(present),
        parent_span_id=None,
        name="incomplete_trace",
        span_type="UNKNOWN",
        start_time_ns=min(s.start_time_ns for s in trace.spans),
        end_time_ns=max(s.end_time_ns for s in trace.spans),
        status=SpanStatus.UNSET,
        status_message="",
        attributes={SYNTHESIZED_ATTRIBUTE: True},
    )


def _fresh_span_id(taken: set[str]) -> str:
    import secrets

    while True:
        candidate = secrets.token_hex(8)
        if candidate not in taken and candidate != "0" * 16:
            return candidate
