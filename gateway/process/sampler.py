"""Sampling: decide which traces are stored in MLflow (never what is measured).

Head sampling is deterministic by trace id with OpenTelemetry's ``TraceIdRatioBased`` rule
(and so MLflow's sampler): keep when the low 64 bits of the trace id are below
``round(ratio * 2**64)``. Every replica and the client agree without coordination.

Tail policies keep a trace whatever the ratio, each switchable in configuration:

=============  ==============================================================================
``error``      any span has ERROR status
``guardrail``  a span has ``action=block`` or ``action=redact``, or ``fallback_triggered=true``
``slow``       the root span took longer than ``latency_threshold_s``
``canary`` …   the ``deployment_stage`` tag is one of ``keep_stages`` (the reason is the stage)
``shadow_pair`` the primary of a shadow pair (tag ``shadow_pair_id``) while ``shadow`` is kept: a
               shadow answer is only comparable next to the answer the customer got
``contract``   the trace breaks the trace contract (tag ``contract.violations``)
``forced``     the application tagged ``sampling.force=true``
``feedback``   feedback arrived for the trace before it was decided
=============  ==============================================================================

A kept trace records why in the ``sampling.reason`` tag (tail reasons in that order, else
``head``). A dropped trace goes to the rescue buffer. Spans that arrive after a decision follow
it (a bounded decision cache); if the decision was forgotten, the head rule decides again.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from gateway.config import SamplingConfig
from gateway.metrics import Children, GatewayMetrics
from gateway.model import SpanStatus, TraceRecord, truthy
from gateway.process.contract import VIOLATIONS_TAG
from gateway.process.recent import RecentMap

REASON_TAG = "sampling.reason"
FORCE_TAG = "sampling.force"
DECISION_CACHE_SIZE = 100_000
"""Decisions remembered, the newest 50,000 to 100,000 (late spans follow them; feedback on a
remembered trace counts as ``sampled_in``): as many as assembly remembers, 85 to 170 s of
traffic at 10,000 spans/s, and ~13 MB with the trace-id strings."""
_TWO_64 = 1 << 64
_ERROR = SpanStatus.ERROR
_ACTING = ("block", "redact")  # a tuple: attribute values may be unhashable lists


def ratio_bound(ratio: float) -> int:
    """The bound OpenTelemetry computes: ``round(ratio * 2**64)``."""
    return round(ratio * _TWO_64)


def head_keep(trace_id: str, bound: int) -> bool:
    """True when the low 64 bits of the 32-hex ``trace_id`` are below ``bound``."""
    return int(trace_id[16:], 16) < bound


class Sampler:
    name = "sample"
    drop_reason = "sampled_out"

    def __init__(
        self,
        config: SamplingConfig,
        metrics: GatewayMetrics,
        on_dropped: Callable[[TraceRecord], None] = lambda _t: None,
        forced: Callable[[str], bool] = lambda _id: False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = config
        self._bound = ratio_bound(config.ratio)
        self._metrics = metrics
        self._on_dropped = on_dropped
        self._forced = forced
        self._clock = clock
        self._threshold_ns = int(config.latency_threshold_s * 1e9)
        self._stages = frozenset(config.keep_stages)
        self._decisions: RecentMap[str, bool] = RecentMap(DECISION_CACHE_SIZE)
        self._dropped = metrics.sampling_decisions.labels("dropped", "ratio")
        self._decisions_counted = Children(metrics.sampling_decisions)

    def tail_reasons(self, trace: TraceRecord) -> list[str]:
        cfg = self._cfg
        reasons: list[str] = []
        error = guardrail = False
        for s in trace.spans:  # one pass for both span-level policies
            if s.status is _ERROR:
                error = True
            attrs = s.attributes
            if attrs:
                flag = attrs.get("fallback_triggered")
                if attrs.get("action") in _ACTING or (flag is not None and truthy(flag)):
                    guardrail = True
        if error and cfg.keep_errors:
            reasons.append("error")
        if guardrail and cfg.keep_guardrail:
            reasons.append("guardrail")
        if self._threshold_ns > 0:
            root = trace.root
            if root is not None and root.end_time_ns - root.start_time_ns > self._threshold_ns:
                reasons.append("slow")
        stage = trace.tags.get("deployment_stage")
        if stage in self._stages:
            reasons.append(str(stage))
        elif "shadow" in self._stages and trace.tags.get("shadow_pair_id"):
            reasons.append("shadow_pair")
        if cfg.keep_contract_violations and trace.tags.get(VIOLATIONS_TAG):
            reasons.append("contract")
        if cfg.keep_forced:
            if truthy(trace.tags.get(FORCE_TAG)):
                reasons.append("forced")
            if self._forced(trace.trace_id):
                reasons.append("feedback")
        return reasons

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        kept: list[TraceRecord] = []
        now = self._clock()
        for trace in traces:
            if trace.late:
                decision = self._decisions.get(trace.trace_id)
                if decision is None:
                    decision = head_keep(trace.trace_id, self._bound)
                if decision:
                    kept.append(trace)
                else:
                    self._on_dropped(trace)
                continue
            reasons = self.tail_reasons(trace)
            keep = bool(reasons) or head_keep(trace.trace_id, self._bound)
            self._remember(trace.trace_id, keep)
            if trace.first_seen:
                self._metrics.decision_latency.observe(max(0.0, now - trace.first_seen))
            if keep:
                reason = ",".join(reasons) if reasons else "head"
                trace.tags[REASON_TAG] = reason
                first = reasons[0] if reasons else "head"
                self._decisions_counted("kept", first).inc()
                kept.append(trace)
            else:
                trace.tags.pop(REASON_TAG, None)
                self._dropped.inc()
                self._on_dropped(trace)
        return kept

    def decided_keep(self, trace_id: str) -> bool | None:
        return self._decisions.get(trace_id)

    def remember_promoted(self, trace_id: str) -> None:
        """A rescued trace is stored now: its late spans must follow it."""
        self._remember(trace_id, True)

    def _remember(self, trace_id: str, keep: bool) -> None:
        self._decisions[trace_id] = keep
