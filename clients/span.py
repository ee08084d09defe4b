"""The request-path half of tracing: :class:`SpanHandle` and the per-trace state.

A span only records here: plain Python values in slots, no protobuf, no JSON, no locks. When
it ends, the handle itself is the compact record appended to the tracer's bounded queue; the
sender thread converts it later. Consequently objects passed to ``set_inputs``,
``set_outputs``, ``set_attribute(s)``, ``add_event`` and ``start_span(attributes=...)`` are
read after the request returns and must not be mutated afterwards.
"""

from __future__ import annotations

import logging
import traceback
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
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

    Use it through ``Tracer.start_span``. Every method is safe: misuse is counted in
    ``ClientStats.errors``, never raised. Changes after the span ended are ignored.
    """

    __slots__ = (
        "_attrs",
        "_attrs_owned",
        "_end_ns",
        "_events",
        "_inputs",
        "_name",
        "_outputs",
        "_parent_id",
        "_sink",
        "_span_id",
        "_span_type",
        "_start_ns",
        "_status_code",
        "_status_message",
        "_tags",
        "_token",
        "_trace",
    )

    def __init__(
        self,
        sink: SpanSink,
        trace: TraceState,
        span_id: int,
        parent_id: int,
        name: str,
        span_type: str,
        attributes: Mapping[str, Any] | None,
    ) -> None:
        # Only what the request path reads is assigned here; the other slots (_inputs,
        # _outputs, _events, _status_message, _tags, _attrs_owned, _token) are filled when used
        # and read with getattr defaults, which keeps a span's construction cheap.
        self._sink = sink
        self._trace = trace
        self._span_id = span_id
        self._parent_id = parent_id
        self._name = name
        self._span_type = span_type
        self._attrs = attributes
        self._status_code = STATUS_UNSET
        self._end_ns = 0
        self._start_ns = time_ns()

    # -- identity -------------------------------------------------------------------------

    @property
    def trace_id(self) -> str:
        """The 32-hex OpenTelemetry trace id (MLflow shows ``tr-<trace_id>``)."""
        return f"{self._trace.trace_id:032x}"

    @property
    def span_id(self) -> str:
        """The 16-hex span id."""
        return f"{self._span_id:016x}"

    @property
    def parent_span_id(self) -> str | None:
        """The parent's 16-hex span id, or None for a root span."""
        return f"{self._parent_id:016x}" if self._parent_id else None

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
            attrs = self._attrs
            if attrs is None:
                self._attrs = {key: value}
                self._attrs_owned = True
            elif getattr(self, "_attrs_owned", False):
                attrs[key] = value  # type: ignore[index]
            else:
                self._attrs = {**attrs, key: value}
                self._attrs_owned = True
        except Exception as exc:
            self._sink.counters.error("set_attribute", type(exc).__name__)

    def set_attributes(self, attributes: Mapping[str, Any]) -> None:
        """Set several attributes at once."""
        if self._end_ns:
            return
        try:
            attrs = self._attrs
            if attrs is None:
                self._attrs = attributes
                self._attrs_owned = False
            elif getattr(self, "_attrs_owned", False):
                attrs.update(attributes)  # type: ignore[attr-defined]
            else:
                self._attrs = {**attrs, **attributes}
                self._attrs_owned = True
        except Exception as exc:
            self._sink.counters.error("set_attributes", type(exc).__name__)

    def set_inputs(self, inputs: Any) -> None:
        """Record the span's inputs; JSON-serialised later by the sender (do not mutate them)."""
        if not self._end_ns:
            self._inputs = inputs

    def set_outputs(self, outputs: Any) -> None:
        """Record the span's outputs; JSON-serialised later by the sender (do not mutate them)."""
        if not self._end_ns:
            self._outputs = outputs

    def add_event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """Add a timestamped event."""
        if self._end_ns:
            return
        try:
            event = (name, time_ns(), attributes)
            events = getattr(self, "_events", None)
            if events is None:
                self._events = [event]
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
            self._status_code = code
            self._status_message = message if code == STATUS_ERROR else ""
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
            self._status_code = STATUS_ERROR
            self._status_message = f"{exc_type}: {message}"
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
        # The hot path: end() inlined to save a call per span.
        if exc is not None and exc_type is not GeneratorExit:
            self.record_exception(exc)
        sink = self._sink
        try:
            sink.current.reset(self._token)
        except Exception as err:  # reset in another context (e.g. a generator moved threads)
            sink.counters.error("end_span", type(err).__name__)
        if self._end_ns:
            return False
        self._end_ns = time_ns()
        if not self._status_code:
            self._status_code = STATUS_OK
        if not self._parent_id and self._trace.tags is not None:
            self._tags = self._trace.tags
        queue = sink.queue
        n = len(queue)
        if n >= sink.limit:
            sink.counters.drop_spans("shutdown" if sink.closed else "queue_full")
        else:
            queue.append(self)
            if n == sink.wake_at:
                sink.wake.set()
        return False

    def end(self) -> None:
        """Finish the span and hand it to the sender; later calls do nothing.

        ``with tracer.start_span(...)`` calls this; call it yourself only for spans not used as
        a context manager (they are never made current).
        """
        if self._end_ns:
            return
        self._end_ns = time_ns()
        if not self._status_code:
            self._status_code = STATUS_OK
        if not self._parent_id and self._trace.tags is not None:
            self._tags = self._trace.tags
        sink = self._sink
        queue = sink.queue
        n = len(queue)
        if n >= sink.limit:
            sink.counters.drop_spans("shutdown" if sink.closed else "queue_full")
            return
        queue.append(self)
        if n == sink.wake_at:
            sink.wake.set()

    def __repr__(self) -> str:
        return f"SpanHandle(name={self._name!r}, trace_id={self.trace_id}, span_id={self.span_id})"
