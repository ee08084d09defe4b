"""Batching: group kept traces by experiment into batches bounded by spans, approximate bytes
and age, sized for MLflow's ``/v1/traces`` (one request is persisted all-or-nothing, so a
batch is also the unit of retry). Runs on the event loop; ``emit`` receives each batch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import BatchConfig
from gateway.model import TraceRecord, approx_trace_bytes


@dataclass(slots=True)
class SpanBatch:
    experiment_name: str
    traces: list[TraceRecord] = field(default_factory=list)
    span_count: int = 0
    approx_bytes: int = 0
    opened_at: float = 0.0


class Batcher:
    """Groups traces by experiment; ``emit`` receives each full or aged batch."""

    def __init__(
        self, config: BatchConfig, emit: Callable[[SpanBatch], None], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._cfg = config
        self._emit = emit
        self._clock = clock
        self._open: dict[str, SpanBatch] = {}

    def add(self, traces: list[TraceRecord]) -> None:
        for trace in traces:
            batch = self._open.get(trace.experiment_name)
            spans = len(trace.spans)
            if batch is not None and batch.traces and batch.span_count + spans > self._cfg.max_spans:
                # This trace would take the batch past its span bound: send what is there first,
                # so a batch exceeds TRACEGW_BATCH_MAX_SPANS only when one trace alone does.
                del self._open[trace.experiment_name]
                self._emit(batch)
                batch = None
            if batch is None:
                batch = SpanBatch(trace.experiment_name, opened_at=self._clock())
                self._open[trace.experiment_name] = batch
            batch.traces.append(trace)
            batch.span_count += spans
            batch.approx_bytes += approx_trace_bytes(trace)
            if batch.span_count >= self._cfg.max_spans or batch.approx_bytes >= self._cfg.max_bytes:
                del self._open[trace.experiment_name]
                self._emit(batch)

    def poll(self) -> None:
        now = self._clock()
        for name, batch in list(self._open.items()):
            if now - batch.opened_at >= self._cfg.max_delay_s:
                del self._open[name]
                self._emit(batch)

    def flush(self) -> None:
        for name in list(self._open):
            self._emit(self._open.pop(name))
