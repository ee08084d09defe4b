"""The MLflow-like tracer: start spans, tag the trace, record feedback and bundle events.

Every public method only records into bounded in-memory queues and returns; the
:class:`~clients.sender.Sender` thread ships them. No method raises into the caller: failures
are counted (``stats()``) and logged at most at a limited rate.

    tracer = Tracer(ClientConfig(target="127.0.0.1:4317"))
    with tracer.start_span("handle_message", span_type="CHAIN") as span:
        span.set_inputs({"message": text})
        tracer.update_current_trace(tags={"intent": "recommendation"})
    tracer.shutdown()
"""

from __future__ import annotations

import itertools
import threading
from collections import deque
from collections.abc import Mapping
from contextvars import ContextVar
from random import getrandbits
from time import time_ns
from types import TracebackType
from typing import Any

from clients.config import ClientConfig
from clients.events import BundleEvent, Event, FeedbackEvent
from clients.sender import Sender
from clients.span import SPAN_SEQ_BITS, SpanHandle, SpanSink, TraceState
from clients.stats import ClientStats, Counters


class Tracer:
    """Records spans and events for the trace gateway; thread-safe, never blocks, never raises.

    Spans nest through ``contextvars``: a span started while another is current (in the same
    thread, or in an asyncio task or a copied context) becomes its child; otherwise it starts a
    new trace. ``shutdown`` flushes and stops; spans ended afterwards are counted as dropped.
    """

    def __init__(self, config: ClientConfig | None = None) -> None:
        self._config = config if config is not None else ClientConfig.from_env()
        self._counters = Counters()
        self._current: ContextVar[SpanHandle | None] = ContextVar(f"tracegw_current_span_{id(self):x}", default=None)
        self._wake = threading.Event()
        self._sink = SpanSink(
            self._current, self._config.max_queue_spans, self._config.max_batch_spans, self._wake, self._counters
        )
        self._span_seqs = itertools.count(getrandbits(SPAN_SEQ_BITS) | 1)  # see clients.span
        self._events: deque[Event] = deque()
        self._events_limit = self._config.max_queue_events
        self._sender = Sender(self._config, self._sink.queue, self._events, self._wake, self._counters)
        self._sender.start()

    @property
    def config(self) -> ClientConfig:
        """The configuration this tracer was built with."""
        return self._config

    # -- spans ----------------------------------------------------------------------------

    def start_span(
        self, name: str, span_type: str = "UNKNOWN", attributes: Mapping[str, Any] | None = None
    ) -> SpanHandle:
        """Start a span; use it as a context manager (``with tracer.start_span(...) as span``).

        ``attributes`` is kept by reference (not copied): do not mutate it afterwards.
        """
        # The hot path: the handle's slots are filled here (SpanHandle has no __init__).
        span = SpanHandle()
        try:
            parent = self._current.get()
            if parent is None:
                span._trace = TraceState(getrandbits(128) or 1)
                span._parent_seq = 0
            else:
                span._trace = parent._trace
                span._parent_seq = parent._span_seq
            span._span_seq = next(self._span_seqs)
            span._sink = self._sink
            span._name = name
            span._span_type = span_type
            span._attrs = attributes
            span._end_ns = 0
            span._extras = False
            span._start_ns = time_ns()
        except Exception as exc:
            self._counters.error("start_span", type(exc).__name__)
            span._trace = TraceState(getrandbits(128) or 1)
            span._parent_seq = 0
            span._span_seq = next(self._span_seqs)
            span._sink = self._sink
            span._name = str(name)
            span._span_type = "UNKNOWN"
            span._attrs = None
            span._end_ns = 0
            span._extras = False
            span._start_ns = time_ns()
        return span

    def get_current_span(self) -> SpanHandle | None:
        """The span made current by the innermost ``with`` block, or None."""
        try:
            return self._current.get()
        except Exception as exc:
            self._counters.error("get_current_span", type(exc).__name__)
            return None

    def update_current_trace(self, tags: Mapping[str, str] | None = None) -> None:
        """Add tags to the whole current trace (sent on its root span; later values win).

        Outside any span this does nothing but count an error, like MLflow's warning.
        """
        try:
            span = self._current.get()
            if span is None:
                self._counters.error("update_current_trace", "no current span")
                return
            if not tags:
                return
            trace = span._trace
            # Replace, never mutate: the sender may be reading the previous dict.
            trace.tags = {**trace.tags, **tags} if trace.tags else dict(tags)
            if span._parent_seq and not span._end_ns:
                span._tags = trace.tags
                span._extras = True
        except Exception as exc:
            self._counters.error("update_current_trace", type(exc).__name__)

    # -- events ---------------------------------------------------------------------------

    def record_feedback(self, event: FeedbackEvent) -> bool:
        """Queue a feedback event; False when it was dropped (counted in ``stats()``)."""
        return self._enqueue_event(event, FeedbackEvent, "record_feedback")

    def record_bundle_event(self, event: BundleEvent) -> bool:
        """Queue a release-bundle event; False when it was dropped (counted in ``stats()``)."""
        return self._enqueue_event(event, BundleEvent, "record_bundle_event")

    def _enqueue_event(self, event: Event, expected: type[Any], where: str) -> bool:
        try:
            if not isinstance(event, expected):
                self._counters.drop_events("error")
                self._counters.error(where, f"expected {expected.__name__}, got {type(event).__name__}")
                return False
            queue = self._events
            n = len(queue)
            if n >= self._events_limit:
                self._counters.drop_events("shutdown" if self._sink.closed else "queue_full")
                return False
            queue.append(event)
            if n + 1 >= self._config.max_batch_events:
                self._wake.set()
            return True
        except Exception as exc:
            self._counters.error(where, type(exc).__name__)
            return False

    # -- lifecycle ------------------------------------------------------------------------

    def stats(self) -> ClientStats:
        """A snapshot of the counters: what was enqueued is sent, dropped or pending in it."""
        return self._sender.stats()

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Wait until what was queued before the call is shipped or counted as dropped.

        Best effort: returns False when ``timeout_s`` ran out first (e.g. while backing off
        from an unreachable gateway).
        """
        try:
            return self._sender.flush(timeout_s)
        except Exception as exc:
            self._counters.error("flush", type(exc).__name__)
            return False

    def shutdown(self, timeout_s: float = 5.0) -> None:
        """Flush within ``timeout_s``, stop the sender thread and close the channel; idempotent.

        Returns within about ``timeout_s`` + 0.5 s with every span accounted for: what was not
        delivered by then (queued, being encoded or in a cancelled call) is counted as dropped
        with reason ``shutdown``, and so are spans and events recorded afterwards.
        """
        try:
            self._sink.closed = True
            self._sink.limit = 0
            self._events_limit = 0
            self._sender.shutdown(timeout_s)
        except Exception as exc:
            self._counters.error("shutdown", type(exc).__name__)

    def __enter__(self) -> Tracer:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.shutdown()
