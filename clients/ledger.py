"""The sender's accounting: where every span and event the application enqueued is now.

The application threads only append to the queues (no lock, no call into this module); the
sender thread moves what it takes through the ledger, and ``shutdown``, ``stats()`` and
``flush()`` read it or settle it. Every change happens under the ledger's one lock, so the
races between the sender thread and shutdown are settled here and nowhere else.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from clients.events import Event
from clients.span import SpanHandle
from clients.stats import ClientStats, Counters


def _pop_batch(queue: deque[Any], limit: int) -> list[Any]:
    batch: list[Any] = []
    append, popleft = batch.append, queue.popleft
    try:
        for _ in range(min(limit, len(queue))):
            append(popleft())
    except IndexError:  # emptied by a concurrent shutdown
        pass
    return batch


def _drain_queue(queue: deque[Any]) -> int:
    count = 0
    try:
        while True:
            queue.popleft()
            count += 1
    except IndexError:
        return count


class Ledger:
    """Where the spans and events the sender took are, counted exactly across shutdown races.

    Invariant: every span the application enqueued is, at every moment, in exactly one state::

        queued ─take_spans→ taking ─hold→ held ─start_call→ in_call ─call_answered→ sent
          │                   │             │                 │
          └───────────────────┴─────────────┴─────────────────┴──→ dropped(reason)

    - ``taking``: taken from the queue, not yet encoded; ``held``: encoded, waiting for a batch
      (the bytes live here too, so that they and their count change together); ``in_call``: in
      the ExportSpans call sending them. Drops: ``hold`` (could not be encoded), ``drop_taking``
      (a failure cut the encoding short), ``call_failed``, ``call_answered`` (rejected),
      ``drop_rest`` (all of it, the queue too). So ``counters.spans_taken`` is always ``taking +
      held + in_call + spans_sent`` plus the drops counted here.
    - Events the same, with one state between: ``queued ─take_events→ events_in_flight`` (being
      encoded, or in the RecordFeedback/RecordBundleEvents call) ``─settle_events→ sent |
      dropped(reason)``.
    - :meth:`snapshot` (``stats()``) takes the lock and counts ``taking + held + in_call`` (and
      the events in flight) as pending: no span is missing from it, or in it twice, while the
      thread moves one.
    - Frozen: shutdown that gives up on a sender thread still busy (a chunk too slow to encode,
      a call that ignores the channel's close) calls :meth:`freeze`, then counts everything
      left as dropped (:meth:`drop_rest`). From then on the orphaned thread's updates count
      nothing: ``take_*`` and ``start_call`` return None, ``hold`` and ``call_answered`` return
      False, the others return at once. :meth:`drop_rest` still counts what is queued (spans an
      application thread appended as shutdown closed the queue), which is all it finds.

    The counts are plain ints written only under the lock; reading one without it (the sender
    thread's cadence checks) sees a value that was true a moment ago.
    """

    __slots__ = (
        "_chunks",
        "_counters",
        "_events",
        "_lock",
        "_spans",
        "events_in_flight",
        "frozen",
        "held",
        "in_call",
        "taking",
    )

    def __init__(self, spans: deque[SpanHandle], events: deque[Event], counters: Counters) -> None:
        self._spans = spans
        self._events = events
        self._counters = counters
        self._lock = threading.Lock()
        self._chunks: list[bytes] = []  # the held spans, encoded (no header)
        self.taking = 0
        """Spans taken from the queue and not yet encoded."""
        self.held = 0
        """Encoded spans waiting for a batch."""
        self.in_call = 0
        """Spans in the ExportSpans call now sending them."""
        self.events_in_flight = 0
        """Events taken from their queue: being encoded, or in a call not yet answered."""
        self.frozen = False
        """Shutdown orphaned the sender thread: its updates count nothing (see the class)."""

    @property
    def pending(self) -> int:
        """Spans taken and neither sent nor dropped yet (being encoded, held, or in a call)."""
        return self.taking + self.held + self.in_call

    # -- spans (the sender thread) ----------------------------------------------------------

    def take_spans(self, batch_spans: int) -> list[SpanHandle] | None:
        """Take queued spans (``taking``) to fill a batch of ``batch_spans`` with what is held;
        None when frozen."""
        with self._lock:
            if self.frozen:
                return None
            batch: list[SpanHandle] = _pop_batch(self._spans, batch_spans - self.held)
            self._counters.spans_taken += len(batch)
            self.taking = len(batch)
            return batch

    def hold(self, data: bytes, count: int, bad: int) -> bool:
        """``count`` spans taken were encoded into ``data``: they are held, except ``bad`` that
        could not be encoded (dropped as ``error``). False when frozen (nothing counted)."""
        with self._lock:
            if self.frozen:
                return False
            self._chunks.append(data)
            self.taking -= count
            self.held += count - bad
            if bad:
                self._counters.drop_spans("error", bad)
            return True

    def start_call(self, header: bytes) -> tuple[bytes, int] | None:
        """The payload of one call (``header`` then the held chunks) and its span count: the
        held spans are ``in_call`` until :meth:`call_answered` or :meth:`call_failed`. None
        when frozen."""
        with self._lock:
            if self.frozen:
                return None
            payload = b"".join([header, *self._chunks])
            self._chunks.clear()
            self.in_call += self.held
            self.held = 0
            return payload, self.in_call

    def call_answered(self, rejected: int) -> bool:
        """The call returned: its spans are sent, but ``rejected`` of them (dropped as
        ``rejected``). False when frozen (nothing counted)."""
        with self._lock:
            if self.frozen:
                return False
            good, self.in_call = self.in_call, 0
            if rejected:
                self._counters.drop_spans("rejected", rejected)
            self._counters.spans_sent += good - rejected
            return True

    def call_failed(self, reason: str) -> None:
        """The call failed: its spans are dropped for ``reason``."""
        with self._lock:
            if self.frozen:
                return
            good, self.in_call = self.in_call, 0
            self._counters.drop_spans(reason, good)

    # -- events (the sender thread) ---------------------------------------------------------

    def take_events(self, limit: int) -> list[Event] | None:
        """Take up to ``limit`` queued events for a call; None when frozen."""
        with self._lock:
            if self.frozen:
                return None
            batch: list[Event] = _pop_batch(self._events, limit)
            self._counters.events_taken += len(batch)
            self.events_in_flight = len(batch)
            return batch

    def settle_events(self, count: int, reason: str | None) -> None:
        """``count`` of the events in flight are sent (``reason`` None) or dropped for
        ``reason``."""
        with self._lock:
            if self.frozen or not count:
                return
            self.events_in_flight -= count
            if reason is None:
                self._counters.events_sent += count
            else:
                self._counters.drop_events(reason, count)

    # -- failures and shutdown ----------------------------------------------------------------

    def drop_taking(self, reason: str, events: bool = False) -> None:
        """Count the spans taken and not yet encoded (and, with ``events``, the events in
        flight) as dropped for ``reason``; what is held stays held."""
        with self._lock:
            if self.frozen:
                return
            if self.taking:
                self._counters.drop_spans(reason, self.taking)
                self.taking = 0
            if events and self.events_in_flight:
                self._counters.drop_events(reason, self.events_in_flight)
                self.events_in_flight = 0

    def drop_rest(self, reason: str) -> None:
        """Count as dropped for ``reason`` every span and event taken and not settled yet, and
        everything still queued (taking it first). Works when frozen too."""
        with self._lock:
            held = self.taking + self.held + self.in_call
            self._chunks.clear()
            self.taking = self.held = self.in_call = 0
            queued = _drain_queue(self._spans)
            self._counters.spans_taken += queued
            if held + queued:
                self._counters.drop_spans(reason, held + queued)
            events = _drain_queue(self._events)
            self._counters.events_taken += events
            if events + self.events_in_flight:
                self._counters.drop_events(reason, events + self.events_in_flight)
            self.events_in_flight = 0

    def freeze(self) -> None:
        """Shutdown gave up on the sender thread: from now on its updates count nothing."""
        with self._lock:
            self.frozen = True

    # -- reading (any thread) ---------------------------------------------------------------

    def snapshot(self) -> ClientStats:
        """The counters, read consistently with what is taken: queued and pending add up."""
        with self._lock:
            return self._counters.snapshot(len(self._spans), len(self._events) + self.events_in_flight, self.pending)
