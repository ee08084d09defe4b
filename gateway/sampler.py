"""Sampling: decide which traces are stored in MLflow (never what is measured).

Head sampling is deterministic by trace id with OpenTelemetry's ``TraceIdRatioBased`` rule
(and so MLflow's sampler): keep when the low 64 bits of the trace id are below
``ratio * 2**64``. Every replica and the client agree without coordination. Tail policies
(errors, guardrail blocks, slow, canary, forced, contract violations) and the rescue buffer
come in their own issue; this stage is their seam.
"""

from __future__ import annotations

from gateway.config import SamplingConfig
from gateway.model import TraceRecord

REASON_TAG = "sampling.reason"
_MAX_64 = (1 << 64) - 1


def ratio_bound(ratio: float) -> int:
    """The bound OpenTelemetry computes: ``round(ratio * 2**64)``."""
    return round(ratio * (_MAX_64 + 1))


def head_keep(trace_id: str, bound: int) -> bool:
    return int(trace_id[16:], 16) < bound


class Sampler:
    """Keeps a trace when the head ratio says so; pure and synchronous."""

    name = "sample"
    drop_reason = "sampled_out"

    def __init__(self, config: SamplingConfig) -> None:
        self._bound = ratio_bound(config.ratio)

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        kept = []
        for trace in traces:
            if head_keep(trace.trace_id, self._bound):
                trace.tags.setdefault(REASON_TAG, "head")
                kept.append(trace)
        return kept
