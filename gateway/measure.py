"""Measure: the business metrics of spec §14 on 100% of traffic, before sampling.

Sampling decides what is stored, never what is measured: this stage sees every trace and
updates request counts, errors, latency (with ``trace_id`` exemplars), guardrail verdicts,
grounding failures, Bedrock tokens and cost, each labelled by intent, release bundle, prompt
version, Bedrock model and deployment stage. Label values are capped per label (``LabelCap``):
past the cap a new value is reported as ``other`` and counted, so a misbehaving client cannot
explode the metric's cardinality. Late spans of an already-measured trace are not counted again.
"""

from __future__ import annotations

from typing import Any

from gateway.metrics import BUSINESS_LABELS, GatewayMetrics
from gateway.model import SpanStatus, TraceRecord, truthy

OTHER = "other"
MISSING = "none"
GUARDRAIL_PARENT = "apply_guardrails"


class LabelCap:
    """Keeps the first ``max_values`` distinct values of each label; later ones become ``other``."""

    def __init__(self, max_values: int, metrics: GatewayMetrics) -> None:
        self._max = max_values
        self._seen: dict[str, set[str]] = {}
        self._metrics = metrics

    def __call__(self, label: str, value: str) -> str:
        seen = self._seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) < self._max:
            seen.add(value)
            return value
        self._metrics.label_overflow.labels(label).inc()
        return OTHER


def _number(value: Any) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return 0.0


def guardrail_verdict(attributes: dict[str, Any]) -> str:
    """block / redact when the stage acted, else pass or fail from ``passed``."""
    action = attributes.get("action")
    if action in ("block", "redact"):
        return str(action)
    passed = attributes.get("passed")
    if passed is None:
        return "unknown"
    return "pass" if truthy(passed) else "fail"


class _Children:
    """The labelled children of every business metric for one label set (``labels()`` is slow)."""

    __slots__ = ("cost", "errors", "fallbacks", "grounding", "in_tok", "latency", "out_tok", "requests")

    def __init__(self, m: GatewayMetrics, labels: tuple[str, ...]) -> None:
        self.requests = m.requests.labels(*labels)
        self.latency = m.request_latency.labels(*labels)
        self.errors = m.request_errors.labels(*labels)
        self.grounding = m.grounding_failures.labels(*labels)
        self.fallbacks = m.guardrail_fallbacks.labels(*labels)
        self.in_tok = m.bedrock_input_tokens.labels(*labels)
        self.out_tok = m.bedrock_output_tokens.labels(*labels)
        self.cost = m.bedrock_cost.labels(*labels)


class Measure:
    """Updates the business metrics for each trace; passes every trace on unchanged."""

    name = "measure"
    drop_reason = None

    def __init__(self, metrics: GatewayMetrics, max_label_values: int) -> None:
        self._m = metrics
        self._cap = LabelCap(max_label_values, metrics)
        self._children: dict[tuple[str, ...], _Children] = {}
        self._verdicts: dict[tuple[str, ...], Any] = {}

    def labels(self, trace: TraceRecord) -> tuple[str, ...]:
        tags = trace.tags
        return tuple(self._cap(name, tags.get(name) or MISSING) for name in BUSINESS_LABELS)

    def _verdict(self, stage: str, verdict: str, labels: tuple[str, ...]) -> Any:
        key = (stage, verdict, *labels)
        child = self._verdicts.get(key)
        if child is None:
            child = self._verdicts[key] = self._m.guardrail_verdicts.labels(self._cap("stage", stage), verdict, *labels)
        return child

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        for trace in traces:
            if trace.late:
                continue
            labels = self.labels(trace)
            c = self._children.get(labels)
            if c is None:
                c = self._children[labels] = _Children(self._m, labels)
            exemplar = {"trace_id": trace.trace_id}
            c.requests.inc(exemplar=exemplar)
            root = trace.root
            if root is not None:
                seconds = max(0, root.end_time_ns - root.start_time_ns) / 1e9
                c.latency.observe(seconds, exemplar=exemplar)
            ids = {s.span_id: s.name for s in trace.spans}
            error = grounding_failed = fallback = False
            in_tok = out_tok = 0.0
            cost = 0.0
            for span in trace.spans:
                attrs = span.attributes
                if span.status is SpanStatus.ERROR:
                    error = True
                if attrs:
                    if span.parent_span_id is not None and ids.get(span.parent_span_id) == GUARDRAIL_PARENT:
                        verdict = guardrail_verdict(attrs)
                        self._verdict(span.name, verdict, labels).inc()
                        if span.name == "grounding_check" and verdict in ("fail", "block"):
                            grounding_failed = True
                    if truthy(attrs.get("fallback_triggered")):
                        fallback = True
                    if "input_tokens" in attrs or "output_tokens" in attrs:
                        in_tok += _number(attrs.get("input_tokens"))
                        out_tok += _number(attrs.get("output_tokens"))
                        cost += _number(attrs.get("input_cost_usd")) + _number(attrs.get("output_cost_usd"))
            if error:
                c.errors.inc(exemplar=exemplar)
            if grounding_failed:
                c.grounding.inc(exemplar=exemplar)
            if fallback:
                c.fallbacks.inc(exemplar=exemplar)
            if in_tok:
                c.in_tok.inc(in_tok)
            if out_tok:
                c.out_tok.inc(out_tok)
            if cost:
                c.cost.inc(cost)
        return traces
