"""Measure: the business metrics of spec §14 on 100% of traffic, before sampling.

Sampling decides what is stored, never what is measured: this stage sees every trace and
updates request counts, errors, latency (with ``trace_id`` exemplars), guardrail verdicts,
grounding failures, Bedrock tokens and cost, each labelled by intent, release bundle, prompt
version, Bedrock model and deployment stage. ``LabelCap`` bounds the cardinality three ways, each
counted in ``tracegw_metric_label_overflow_total``: distinct values per label (a new value past
the cap is reported as ``other``), the length of a value (a longer one is ``other``), and
distinct label *combinations* per metric family (past the cap, a new combination is reported
with every label ``other``), so a misbehaving client cannot explode the series count. Late
spans of an already-measured trace are not counted again.
"""

from __future__ import annotations

from typing import Any

from gateway.metrics import BUSINESS_LABELS, GatewayMetrics
from gateway.model import SpanStatus, TraceRecord, truthy
from gateway.process.examples import ExampleTraces
from gateway.process.recent import RecentMap

OTHER = "other"
MISSING = "none"
GUARDRAIL_PARENT = "apply_guardrails"
LABEL_SETS_REMEMBERED = 4096
SESSIONS_REMEMBERED = 100_000
"""Sessions counted once per label set while remembered (``RecentMap``: the newest 50,000-100,000)."""


class LabelCap:
    """Keeps the first ``max_values`` distinct values of each label and the first ``max_sets``
    distinct label combinations; values longer than ``max_chars``, later values and later
    combinations become ``other``. One instance per metric family."""

    def __init__(self, max_values: int, metrics: GatewayMetrics, max_sets: int = 1000, max_chars: int = 128) -> None:
        self._max = max_values
        self._max_sets = max_sets
        self._max_chars = max_chars
        self._seen: dict[str, set[str]] = {}
        self._sets: set[tuple[str, ...]] = set()
        self._metrics = metrics

    def __call__(self, label: str, value: str) -> str:
        seen = self._seen.setdefault(label, set())
        if value in seen:
            return value
        if len(seen) < self._max and len(value) <= self._max_chars:
            seen.add(value)
            return value
        self._metrics.label_overflow.labels(label).inc()
        return OTHER

    def label_set(self, names: tuple[str, ...], values: tuple[str | None, ...]) -> tuple[str, ...]:
        """Each of ``values`` capped as its label, and the combination capped as a whole."""
        labels = tuple(self(name, value or MISSING) for name, value in zip(names, values, strict=True))
        if labels in self._sets:
            return labels
        if len(self._sets) < self._max_sets:
            self._sets.add(labels)
            return labels
        self._metrics.label_overflow.labels("label_set").inc()
        return (OTHER,) * len(names)


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
    """The labelled children of every business metric for one label set (``labels()`` is slow),
    and what one ``process`` call has counted for them so far (applied once per call: a counter
    increment with an exemplar costs ~1.6 µs, and a tick brings ~100 traces with a few label sets).
    """

    __slots__ = (
        "cost",
        "errors",
        "ex_errors",
        "ex_fallbacks",
        "ex_grounding",
        "ex_requests",
        "fallbacks",
        "grounding",
        "in_tok",
        "latency",
        "n_errors",
        "n_fallbacks",
        "n_grounding",
        "n_requests",
        "n_sessions",
        "out_tok",
        "requests",
        "sessions",
        "sum_cost",
        "sum_in",
        "sum_out",
    )

    def __init__(self, m: GatewayMetrics, labels: tuple[str, ...]) -> None:
        self.requests = m.requests.labels(*labels)
        self.sessions = m.sessions.labels(*labels)
        self.latency = m.request_latency.labels(*labels)
        self.errors = m.request_errors.labels(*labels)
        self.grounding = m.grounding_failures.labels(*labels)
        self.fallbacks = m.guardrail_fallbacks.labels(*labels)
        self.in_tok = m.bedrock_input_tokens.labels(*labels)
        self.out_tok = m.bedrock_output_tokens.labels(*labels)
        self.cost = m.bedrock_cost.labels(*labels)
        self._reset()

    def _reset(self) -> None:
        self.n_requests = self.n_errors = self.n_grounding = self.n_fallbacks = self.n_sessions = 0
        self.sum_in = self.sum_out = self.sum_cost = 0.0
        self.ex_requests = self.ex_errors = self.ex_grounding = self.ex_fallbacks = ""

    def apply(self) -> None:
        """Add what was counted to the metrics (each counter's exemplar: its last trace) and reset."""
        if self.n_requests:
            self.requests.inc(self.n_requests, exemplar={"trace_id": self.ex_requests})
        if self.n_sessions:
            self.sessions.inc(self.n_sessions)
        if self.n_errors:
            self.errors.inc(self.n_errors, exemplar={"trace_id": self.ex_errors})
        if self.n_grounding:
            self.grounding.inc(self.n_grounding, exemplar={"trace_id": self.ex_grounding})
        if self.n_fallbacks:
            self.fallbacks.inc(self.n_fallbacks, exemplar={"trace_id": self.ex_fallbacks})
        if self.sum_in:
            self.in_tok.inc(self.sum_in)
        if self.sum_out:
            self.out_tok.inc(self.sum_out)
        if self.sum_cost:
            self.cost.inc(self.sum_cost)
        self._reset()


class Measure:
    """Updates the business metrics for each trace; passes every trace on unchanged."""

    name = "measure"
    drop_reason = None

    def __init__(
        self,
        metrics: GatewayMetrics,
        max_label_values: int,
        max_label_sets: int = 1000,
        max_label_chars: int = 128,
        examples: ExampleTraces | None = None,
        slow_s: float = float("inf"),
        costly_usd: float = float("inf"),
    ) -> None:
        """``examples``: where traces worth offering in an alert payload are noted (slow: root at least
        ``slow_s``; costly: Bedrock cost at least ``costly_usd``; errors, fallbacks, grounding failures)."""
        self._m = metrics
        self._examples = examples
        self._slow_s = slow_s
        self._costly_usd = costly_usd
        self._cap = LabelCap(max_label_values, metrics, max_label_sets, max_label_chars)
        self._children: dict[tuple[str, ...], _Children] = {}
        self._verdicts: dict[tuple[str, ...], Any] = {}
        self._labels: dict[tuple[str | None, ...], tuple[str, ...]] = {}  # the traces' tag values → labels
        self._sessions: RecentMap[int, None] = RecentMap(SESSIONS_REMEMBERED)  # hash((session, labels))

    def labels(self, trace: TraceRecord) -> tuple[str, ...]:
        raw = tuple(map(trace.tags.get, BUSINESS_LABELS))
        labels = self._labels.get(raw)
        if labels is None:
            labels = self._cap.label_set(BUSINESS_LABELS, raw)
            # Only label sets within the caps are remembered: an admitted value stays admitted, so
            # the answer cannot change, while a value past a cap must be counted every time.
            if all(label == (value or MISSING) for label, value in zip(labels, raw, strict=True)):
                if len(self._labels) >= LABEL_SETS_REMEMBERED:
                    self._labels.clear()
                self._labels[raw] = labels
        return labels

    def _verdict(self, stage: str, verdict: str, labels: tuple[str, ...]) -> Any:
        key = (stage, verdict, *labels)
        child = self._verdicts.get(key)
        if child is None:
            child = self._verdicts[key] = self._m.guardrail_verdicts.labels(self._cap("stage", stage), verdict, *labels)
        return child

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        touched: dict[tuple[str, ...], _Children] = {}
        verdicts: dict[Any, int] = {}
        for trace in traces:
            if trace.late or trace.replayed:  # a replayed trace may have been counted before the kill
                continue
            labels = self.labels(trace)
            c = self._children.get(labels)
            if c is None:
                c = self._children[labels] = _Children(self._m, labels)
            touched[labels] = c
            trace_id = trace.trace_id
            c.n_requests += 1
            c.ex_requests = trace_id
            session_key = hash((trace.tags.get("session_id"), labels))
            if session_key not in self._sessions:
                self._sessions[session_key] = None
                c.n_sessions += 1
            root = trace.root
            seconds = 0.0
            if root is not None:
                seconds = max(0, root.end_time_ns - root.start_time_ns) / 1e9
                c.latency.observe(seconds, exemplar={"trace_id": trace_id})
            guardrails = {s.span_id for s in trace.spans if s.name == GUARDRAIL_PARENT}
            error = grounding_failed = fallback = False
            in_tok = out_tok = 0.0
            cost = 0.0
            for span in trace.spans:
                attrs = span.attributes
                if span.status is SpanStatus.ERROR:
                    error = True
                if attrs:
                    if guardrails and span.parent_span_id in guardrails:
                        verdict = guardrail_verdict(attrs)
                        child = self._verdict(span.name, verdict, labels)
                        verdicts[child] = verdicts.get(child, 0) + 1
                        if span.name == "grounding_check" and verdict in ("fail", "block"):
                            grounding_failed = True
                    flag = attrs.get("fallback_triggered")
                    if flag is not None and truthy(flag):
                        fallback = True
                    if "input_tokens" in attrs or "output_tokens" in attrs:
                        in_tok += _number(attrs.get("input_tokens"))
                        out_tok += _number(attrs.get("output_tokens"))
                        cost += _number(attrs.get("input_cost_usd")) + _number(attrs.get("output_cost_usd"))
            if error:
                c.n_errors += 1
                c.ex_errors = trace_id
            if grounding_failed:
                c.n_grounding += 1
                c.ex_grounding = trace_id
            if fallback:
                c.n_fallbacks += 1
                c.ex_fallbacks = trace_id
            c.sum_in += in_tok
            c.sum_out += out_tok
            c.sum_cost += cost
            if self._examples is not None and (
                error or grounding_failed or fallback or seconds >= self._slow_s or cost >= self._costly_usd
            ):
                reasons = tuple(
                    reason
                    for reason, hit in (
                        ("slow", seconds >= self._slow_s),
                        ("error", error),
                        ("guardrail_fallback", fallback),
                        ("grounding_failure", grounding_failed),
                        ("costly", cost >= self._costly_usd),
                    )
                    if hit
                )
                self._examples.note(trace_id, (labels[1], labels[2], labels[3]), reasons)
        for c in touched.values():
            c.apply()
        for child, n in verdicts.items():
            child.inc(n)
        return traces
