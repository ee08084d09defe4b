"""The rescue buffer: sampled-out traces kept (already redacted, in memory only) for a window,
so that feedback on a trace that sampling dropped can still bring it into MLflow.

Bounded by age (``rescue_window_s``) and approximate bytes (oldest first); every trace that
leaves unpromoted is counted with its reason. Nothing here is written to disk. Not
thread-safe: the gateway uses it from its event loop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from gateway.metrics import GatewayMetrics
from gateway.model import TraceRecord, approx_trace_bytes


@dataclass(slots=True)
class _Held:
    trace: TraceRecord
    approx_bytes: int
    added_at: float


class RescueBuffer:
    def __init__(self, window_s: float, max_bytes: int, metrics: GatewayMetrics,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._window_s = window_s
        self._max_bytes = max_bytes
        self._metrics = metrics
        self._clock = clock
        self._held: OrderedDict[str, _Held] = OrderedDict()
        self._bytes = 0

    def __contains__(self, trace_id: str) -> bool:
        return trace_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def add(self, trace: TraceRecord) -> None:
        """Hold a sampled-out trace (late spans of a held trace join it)."""
        size = approx_trace_bytes(trace)
        held = self._held.get(trace.trace_id)
        if held is not None:
            held.trace.spans.extend(trace.spans)
            held.approx_bytes += size
            held.trace.approx_bytes = held.approx_bytes
        else:
            self._held[trace.trace_id] = _Held(trace, size, self._clock())
        self._bytes += size
        while self._bytes > self._max_bytes and self._held:
            self._drop_oldest("bytes")
        self._update()

    def promote(self, trace_id: str) -> TraceRecord | None:
        """Take the trace out to be stored after all; None if it is not (or no longer) held."""
        held = self._held.pop(trace_id, None)
        if held is None:
            return None
        self._bytes -= held.approx_bytes
        self._update()
        return held.trace

    def clear(self, reason: str) -> None:
        """Let everything go (memory pressure), counted with ``reason``."""
        while self._held:
            self._drop_oldest(reason)
        self._update()

    def expire(self) -> None:
        """Drop traces older than the window (call periodically)."""
        cutoff = self._clock() - self._window_s
        while self._held:
            oldest = next(iter(self._held.values()))
            if oldest.added_at > cutoff:
                break
            self._drop_oldest("age")
        self._update()

    def _drop_oldest(self, reason: str) -> None:
        _, held = self._held.popitem(last=False)
        self._bytes -= held.approx_bytes
        self._metrics.rescue_evicted.labels(reason).inc()

    def _update(self) -> None:
        self._metrics.rescue_traces.set(len(self._held))
        self._metrics.rescue_bytes.set(self._bytes)
