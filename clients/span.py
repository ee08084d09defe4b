"""The request-path half of tracing: :class:`SpanHandle` and the per-trace state.

A span only records here: plain Python values in slots, no protobuf, no JSON, no locks. When
it ends, the handle itself is the compact record appended to the tracer's bounded queue; the
sender thread converts it later. Consequently objects passed to ``set_inputs``,
``set_outputs``, ``set_attribute(s)``, ``add_event`` and ``start_span(attributes=...)`` are
read after the request returns and must not be mutated afterwards.

Span ids cost one ``next()`` on the request path: a span records a number from a per-tracer
counter that starts at a random point, and the sender (and the ``span_id`` properties) turn it
into the wire id with :func:`wire_span_id`, a bijection of 64-bit integers that maps only 0 to
0 (the SplitMix64 output function), written as 8 little-endian bytes. Ids are therefore unique
within the tracer, not just within a trace, never zero, and look random; they are not secret
(the mapping is invertible).
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar, Token
from time import time_ns
from types import TracebackType
from typing import Any, Final, Literal

from clients.stats import Counters

_log = logging.getLogger(__name__)

STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2
_STATUS_BY_NAME: Final = {"OK": STATUS_OK, "ERROR": STATUS_ERROR, "UNSET": STATUS_UNSET}

UNSET: Final[Any] = object()
"""Marks inputs/outputs that were never set (``None`` is a legitimate value)."""

StatusName = Literal["OK", "ERROR", "UNSET"]

_MASK64: Final = (1 << 64) - 1
SPAN_SEQ_BITS: Final = 62
"""The span counter starts below 2**62, so it cannot reach 2**64 (the one value mapped to 0)."""


def wire_span_id(seq: int) -> int:
    """The 64-bit span id for counter value ``seq`` (1 <= seq < 2**64): SplitMix64's output
    function, a bijection with ``wire_span_id(0) == 0``, so distinct counter values give
    distinct, non-zero ids. (``clients.encode`` inlines it.)"""
    z = (seq * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def span_id_hex(seq: int) -> str:
    """The 16-hex span id for counter value ``seq``, as it appears on the wire."""
    return wire_span_id(seq).to_bytes(8, "little").hex()


class SpanSink:
    """Where finished spans go: the bounded queue, its limits and the shared counters.

    One per tracer. ``limit`` drops to 0 on shutdown, so later spans are counted, not queued.
    """

    __slots__ = ("closed", "counters", "current", "limit", "queue", "wake", "wake_at")

    def __init__(
        self, current: ContextVar[SpanHandle | None], limit: int, wake_at: int, wake: Any, counters: Counters
    ) -> None:
        self.current = current
        self.queue: deque[SpanHandle] = deque()
        self.limit = limit
        self.wake_at = wake_at - 1  # queue length *before* the append that reaches a batch
        self.wake = wake
        self.counters = counters
        self.closed = False


class TraceState:
    """What the spans of one trace share: its id and the tags from ``update_current_trace``.

    ``tags`` is replaced, never mutated, so the sender can read it without a lock.
    """

    __slots__ = ("tags", "trace_id")

    def __init__(self, trace_id: int) -> None:
        self.trace_id = trace_id
        self.tags: dict[str, Any] | None = None


class SpanHandle:
    """A span being recorded; a context manager that makes it the current span.

    Use it through ``Tracer.start_span`` (which fills the slots: there is no ``__init__``, a
    Python-level constructor call being a good part of a span's cost). Every method is safe:
    misuse is counted in ``ClientStats.errors``, never raised. Changes after the span ended
    are ignored.
    """

    __slots__ = (
        "_attrs",
        "_end_ns",
        "_events",
        "_extra_attrs",
        "_extras",
        "_inputs",
        "_name",
        "_outputs",
        "_parent_seq",
        "_sink",
        "_span_seq",
        "_span_type",
        "_start_ns",
        "_status",
        "_tags",
        "_token",
        "_trace",
    )
    # Always set by Tracer.start_span:
    _sink: SpanSink
    _trace: TraceState
    _span_seq: int  # counter value; the wire id is wire_span_id(_span_seq)
    _parent_seq: int  # the parent's _span_seq, 0 for a root span
    _name: str
    _span_type: str
    _attrs: Mapping[str, Any] | None  # the caller's mapping, never mutated
    _start_ns: int
    _end_ns: int  # 0 while recording
    _extras: bool  # whether any of the slots below, other than _token, was set
    # Set when used (the sender reads them with getattr defaults, only when _extras is True),
    # which keeps the request path to the writes every span needs:
    _token: Token[SpanHandle | None]  # from __enter__ until __exit__
    _extra_attrs: dict[str, Any]  # set_attribute(s) additions; win over _attrs
    _inputs: Any
    _outputs: Any
    _events: list[tuple[str, int, Mapping[str, Any] | None]]
    _status: tuple[int, str]  # (code, message) from set_status / record_exception; else OK at end
    _tags: dict[str, Any]  # trace tags carried by this span (the root, or current at update)

    # -- identity -------------------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        """The 32-hex OpenTelemetry trace id (MLflow shows ``tr-<trace_id>``)."""
        return f"{self._trace.trace_id:032x}"

    @property
    def span_id(self) -> str:
        """The 16-hex span id."""
        return span_id_hex(self._span_seq)

    @property
    def parent_span_id(self) -> str | None:
        """The parent's 16-hex span id, or None for a root span."""
        return span_id_hex(self._parent_seq) if self._parent_seq else None

    @property
    def name(self) -> str:
        """The operation name."""
        return self._name

    @property
    def is_recording(self) -> bool:
        """True until the span ends."""
        return not self._end_ns

    # -- recording ------------------------------------------------------------------------

    def set_attribute(self, key: str, value: Any) -> None:
        """Set one attribute (str, bool, int, float, list of str, or JSON-able dict/list)."""
        if self._end_ns:
            return
        try:
            extra = getattr(self, "_extra_attrs", None)
            if extra is None:
                self._extra_attrs = {key: value}
                self._extras = True
            else:
                extra[key] = value
        except Exception as exc:
            self._sink.counters.error("set_attribute", type(exc).__name__)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        if self._end_ns:
            return
        try:
            extra = getattr(self, "_extra_attrs", None)
            if extra is None:
                self._extra_attrs = dict(attributes)
                self._extras = True
            else:
                extra.update(attributes)
        except Exception as exc:
            self._sink.counters.error("set_attributes", type(exc).__name__)

    def set_inputs(self, inputs: Any) -> None:
        """Record the span's inputs; JSON-serialised later by the sender (do not mutate them)."""
        if not self._end_ns:
            self._inputs = inputs
            self._extras = True

    def set_outputs(self, outputs: Any) -> None:
        """Record the span's outputs; JSON-serialised later by the sender (do not mutate them)."""
        if not self._end_ns:
            self._outputs = outputs
            self._extras = True

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a timestamped event."""
        if self._end_ns:
            return
        try:
            event = (name, time_ns(), attributes)
            events = getattr(self, "_events", None)
            if events is None:
                self._events = [event]
                self._extras = True
            else:
                events.append(event)
        except Exception as exc:
            self._sink.counters.error("add_event", type(exc).__name__)

    def set_status(self, status: StatusName | str, message: str = "") -> None:
        """Set the outcome: ``"OK"`` or ``"ERROR"`` with a message saying why."""
        if self._end_ns:
            return
        try:
            code = _STATUS_BY_NAME.get(status.upper())
            if code is None:
                self._sink.counters.error("set_status", "unknown status")
                return
            self._status = (code, message if code == STATUS_ERROR else "")
            self._extras = True
        except Exception as exc:
            self._sink.counters.error("set_status", type(exc).__name__)

    def record_exception(self, exc: BaseException) -> None:
        """Add an ``exception`` event and set status ERROR with ``"<ExcType>: <msg>"``."""
        if self._end_ns:
            return
        try:
            exc_type = type(exc).__name__
            message = str(exc)
            stack = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
            self.add_event(
                "exception", {"exception.type": exc_type, "exception.message": message, "exception.stacktrace": stack}
            )
            self._status = (STATUS_ERROR, f"{exc_type}: {message}")
            self._extras = True
        except Exception as err:
            self._sink.counters.error("record_exception", type(err).__name__)

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> SpanHandle:
        try:
            self._token = self._sink.current.set(self)
        except Exception as exc:
            self._sink.counters.error("start_span", type(exc).__name__)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> Literal[False]:
        # The hot path: end() inlined to save a call per span. An unset status is sent as OK.
        if exc is not None and exc_type is not GeneratorExit:
            self.record_exception(exc)
        sink = self._sink
        try:
            sink.current.reset(self._token)
            del self._token  # freed now, not when the sender is done: see the module docstring
        except Exception as err:  # reset in another context (e.g. a generator moved threads)
            sink.counters.error("end_span", type(err).__name__)
        if self._end_ns:
            return False
        self._end_ns = time_ns()
        if not self._parent_seq and self._trace.tags is not None:
            self._tags = self._trace.tags
            self._extras = True
        queue = sink.queue
        n = len(queue)
        if n < sink.limit:
            queue.append(self)
            if n == sink.wake_at:
                sink.wake.set()
        else:
            if sink.closed:
                sink.counters.drop_spans("shutdown")
            else:
                next(sink.counters.spans_queue_full)
        return False

    def end(self) -> None:
        """Finish the span and hand it to the sender; later calls do nothing.

        ``with tracer.start_span(...)`` calls this; call it yourself only for spans not used as
        a context manager (they are never made current).
        """
        if self._end_ns:
            return
        self._end_ns = time_ns()
        if not self._parent_seq and self._trace.tags is not None:
            self._tags = self._trace.tags
            self._extras = True
        sink = self._sink
        queue = sink.queue
        n = len(queue)
        if n < sink.limit:
            queue.append(self)
            if n == sink.wake_at:
                sink.wake.set()
        else:
            if sink.closed:
                sink.counters.drop_spans("shutdown")
            else:
                next(sink.counters.spans_queue_full)

    def __repr__(self) -> str:
        return f"SpanHandle(name={self._name!r}, trace_id={self.trace_id}, span_id={self.span_id})"
