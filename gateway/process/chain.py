"""The chain of pure stages between assembly and delivery.

Each stage is ``process(traces) -> traces``; the chain, not the stage, counts what went in,
what came out, and the spans of traces a stage dropped (with the stage's ``drop_reason``).
"""

from __future__ import annotations

from collections.abc import Callable
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
    """``on_lost`` receives the traces a stage dropped (sampled out included): the WAL's holds on
    them are given back there."""

    def __init__(
        self,
        stages: list[Stage],
        metrics: GatewayMetrics,
        on_lost: Callable[[list[TraceRecord]], None] | None = None,
    ) -> None:
        self._stages = stages
        self._metrics = metrics
        self._on_lost = on_lost

    def run(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        for stage in self._stages:
            if not traces:
                break
            self._metrics.stage_in.labels(stage.name).inc(len(traces))
            out = stage.process(traces)
            self._metrics.stage_out.labels(stage.name).inc(len(out))
            if len(out) != len(traces):
                kept = {id(t) for t in out}
                gone = [t for t in traces if id(t) not in kept]
                self._metrics.drop_spans(stage.name, stage.drop_reason or "invalid", sum(len(t.spans) for t in gone))
                if self._on_lost is not None:
                    self._on_lost(gone)
            traces = out
        return traces
