"""The chain of pure stages between assembly and delivery.

Each stage is ``process(traces) -> traces``; the chain, not the stage, counts what went in,
what came out, and the spans of traces a stage dropped (with the stage's ``drop_reason``).
"""

from __future__ import annotations

from typing import Protocol

from gateway.metrics import GatewayMetrics
from gateway.model import TraceRecord


class Stage(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def drop_reason(self) -> str | None:
        """The reason counted for the spans of traces this stage drops (None: it never drops)."""

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]: ...


class StageChain:
    def __init__(self, stages: list[Stage], metrics: GatewayMetrics) -> None:
        self._stages = stages
        self._metrics = metrics

    def run(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        for stage in self._stages:
            if not traces:
                break
            self._metrics.stage_in.labels(stage.name).inc(len(traces))
            out = stage.process(traces)
            self._metrics.stage_out.labels(stage.name).inc(len(out))
            if len(out) != len(traces):
                kept = {id(t) for t in out}
                lost = sum(len(t.spans) for t in traces if id(t) not in kept)
                self._metrics.drop_spans(stage.name, stage.drop_reason or "invalid", lost)
            traces = out
        return traces
