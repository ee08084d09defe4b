"""The gateway's own data model. Proto types stop at the receivers; every stage after them
works on these small classes.

Ids are lowercase hex (32 chars for a trace, 16 for a span), times are Unix epoch
nanoseconds, attribute values are plain Python values (str, bool, int, float, list, dict),
and inputs/outputs are decoded JSON values (``None`` when unset).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol


class SpanStatus(enum.Enum):
    """Outcome of a span, as OpenTelemetry defines it."""

    UNSET = "UNSET"
    OK = "OK"
    ERROR = "ERROR"


@dataclass(slots=True)
class SpanEvent:
    """A timestamped event inside a span (for example a recorded exception)."""

    name: str
    time_ns: int
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One finished span as received, after validation."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    span_type: str
    start_time_ns: int
    end_time_ns: int
    status: SpanStatus = SpanStatus.UNSET
    status_message: str = ""
    attributes: dict[str, Any] = field(default_factory=dict)
    events: Sequence[SpanEvent] = ()
    """A list when the span has events; the shared empty tuple when not (one object less per span
    for the garbage collector to scan)."""
    inputs: Any = None
    outputs: Any = None
    trace_tags: dict[str, str] = field(default_factory=dict)
    approx_bytes: int = field(default=0, compare=False)
    """Its memory estimate (``approx_span_bytes``); the decoder fills it in as it goes, 0 = not yet."""

    @property
    def is_root(self) -> bool:
        return self.parent_span_id is None


@dataclass(slots=True)
class TraceRecord:
    """A trace assembled from its spans, ready for the stages after assembly.

    ``complete`` is false when assembly gave up waiting for the root span; the writer then
    synthesizes a root so that MLflow finalizes and tags the trace.
    """

    trace_id: str
    experiment_name: str
    spans: list[SpanRecord]
    tags: dict[str, str]
    complete: bool = True
    reasons: list[str] = field(default_factory=list)
    late: bool = False
    """Spans that arrived after their trace was decided; they follow that decision."""
    first_seen: float = 0.0
    """Monotonic time the gateway received the trace's first span (decision latency)."""
    approx_bytes: int = 0
    """The size estimate of its spans, kept by assembly so later stages need not recompute it."""
    first_root: SpanRecord | None = field(default=None, compare=False, repr=False)
    """Its first root span when assembly saw it arrive (a client sends the root last, so finding
    it in ``spans`` means walking the whole trace); None: not known, ``root`` looks."""
    wal: list[int] = field(default_factory=list, compare=False, repr=False)
    """The write-ahead-log segments its spans came in, each held once for it until it is settled
    (spooled, sampled out or dropped); empty when the WAL is off."""
    replayed: bool = False
    """Some of its spans were fed through again from the WAL at start: business metrics skip it."""

    @property
    def root(self) -> SpanRecord | None:
        if self.first_root is not None:
            return self.first_root
        for span in self.spans:
            if span.parent_span_id is None:
                return span
        return None


class FeedbackValue(enum.Enum):
    """The customer's verdict on a response."""

    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"


@dataclass(slots=True, frozen=True)
class FeedbackRecord:
    """A feedback event (spec section 10)."""

    event_id: str
    response_id: str
    trace_id: str
    value: FeedbackValue
    time_ns: int
    reason_code: str = ""
    comment: str = ""
    session_id: str = ""
    prompt_version: str = ""
    release_bundle: str = ""


@dataclass(slots=True, frozen=True)
class BundleRecord:
    """A release bundle lifecycle event. ``kind`` is one of registered, evaluated,
    signed_off, promoted, rolled_back; ``details`` holds that kind's fields."""

    event_id: str
    bundle_name: str
    bundle_version: str
    kind: str
    time_ns: int
    actor_id: str = ""
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    recorded_by: str = ""  # the authenticated caller (receive/auth.py), beside the claimed actor_id


def truthy(value: Any) -> bool:
    """An attribute or tag value meaning yes: ``True`` or the text "true" in any case."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


# Memory estimate of a decoded span, calibrated with tracemalloc on the MangaAssist traces that
# ``bench/ingest.py`` sends (17 spans, 0-10 attributes each, JSON inputs/outputs on the root and the
# LLM span): within about 10% of what Python really holds for them (see
# ``tests/gateway/test_model_sizes.py``). It counts what a span owns — the record, its id and name
# strings, attribute dict, events list and tags dict — plus each attribute and the text in values.
SPAN_OVERHEAD_BYTES = 800
ATTRIBUTE_BYTES = 90
EVENT_BYTES = 200
TAG_BYTES = 110
_STR_BYTES = 50
_NUMBER_BYTES = 32
_CONTAINERS = (list, tuple, dict)


def value_bytes(value: Any) -> int:
    """Approximate memory of a plain Python value (str, number, bool, None, list, tuple, dict)."""
    cls = value.__class__
    if cls is str:
        return _STR_BYTES + len(value) if value.isascii() else 2 * _STR_BYTES + 2 * len(value)
    if cls is dict:
        total = 64 + 40 * len(value)
        for k, v in value.items():
            total += value_bytes(k) + value_bytes(v)
        return total
    if cls is list or cls is tuple:
        total = 56 + 8 * len(value)
        for v in value:
            total += value_bytes(v)
        return total
    if value is None or cls is bool:
        return 0
    return _NUMBER_BYTES


def attributes_bytes(attrs: dict[str, Any]) -> int:
    """Attributes' share of a span's estimate (the decoder counts the same as it converts)."""
    total = ATTRIBUTE_BYTES * len(attrs)
    for key, v in attrs.items():
        total += len(key)
        cls = v.__class__
        if cls is str:
            total += len(v)
        elif cls in _CONTAINERS:
            total += value_bytes(v)
    return total


def approx_span_bytes(span: SpanRecord) -> int:
    """The memory a span holds, estimated without serializing (assembly and batching bounds).

    Computed once per span: the decoder fills ``span.approx_bytes`` in while it converts the
    span (``rest_of_span_bytes`` plus the text it has at hand), other spans get it here.
    """
    if span.approx_bytes:
        return span.approx_bytes
    total = rest_of_span_bytes(span) + len(span.name) + len(span.status_message)
    if span.attributes:
        total += attributes_bytes(span.attributes)
    span.approx_bytes = total
    return total


def rest_of_span_bytes(span: SpanRecord) -> int:
    """``approx_span_bytes`` without the name, status message and attributes."""
    total = SPAN_OVERHEAD_BYTES
    for event in span.events:
        total += EVENT_BYTES + len(event.name) + attributes_bytes(event.attributes)
    if span.inputs is not None:
        total += value_bytes(span.inputs)
    if span.outputs is not None:
        total += value_bytes(span.outputs)
    if span.trace_tags:
        total += TAG_BYTES * len(span.trace_tags)
        for key, v in span.trace_tags.items():
            total += len(key) + len(v)
    return total


def approx_trace_bytes(trace: TraceRecord) -> int:
    """The trace's size estimate, computed once (assembly usually did already)."""
    if not trace.approx_bytes:
        trace.approx_bytes = sum(approx_span_bytes(s) for s in trace.spans)
    return trace.approx_bytes


class Settles(Protocol):
    """What an item carries to say it is settled (spooled, delivered, or dropped and counted): a
    write-ahead-log hold (``gateway/export/wal.py``), kept abstract here so the pipeline's stages
    need not know the log."""

    def done(self) -> None: ...
