"""Client counters and their immutable snapshot, :class:`ClientStats`.

Drop reasons (every dropped span or event is counted under exactly one):

``queue_full``          the bounded queue was full when the item was recorded
``unavailable``         the gateway could not be reached (UNAVAILABLE)
``deadline_exceeded``   the RPC exceeded ``rpc_timeout_s``
``resource_exhausted``  the gateway said it was full (RESOURCE_EXHAUSTED)
``rejected``            the gateway rejected the item (partial_success)
``shutdown``            still queued when ``shutdown`` ran out of time, or recorded after it
``error``               any other RPC failure or an item that could not be encoded

Counters written on the request path are kept off the hot path: enqueued counts are derived
from what the sender took plus what is still queued; spans dropped because the queue is full
(every span, while the gateway is down) are counted by an ``itertools.count`` (one atomic
``next()``, no lock); other drops take a lock (they are rare). Snapshots are exact when the
client is quiescent (for example after ``flush``).
"""

from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Final

DROP_REASONS: Final = (
    "queue_full",
    "unavailable",
    "deadline_exceeded",
    "resource_exhausted",
    "rejected",
    "shutdown",
    "error",
)


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of the client's counters."""

    spans_enqueued: int = 0
    """Spans accepted into the queue."""
    spans_sent: int = 0
    """Spans the gateway accepted."""
    spans_pending: int = 0
    """Spans neither sent nor dropped yet: in the queue, or taken by the sender (being encoded,
    waiting for a batch, or in the call sending them)."""
    spans_dropped: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Dropped spans by reason (see the module docstring); every reason is present."""
    events_enqueued: int = 0
    """Feedback and bundle events accepted into their queue."""
    events_sent: int = 0
    """Events the gateway accepted."""
    events_pending: int = 0
    """Events still waiting in their queue."""
    events_dropped: MappingProxyType[str, int] = field(default_factory=lambda: MappingProxyType({}))
    """Dropped events by reason; every reason is present."""
    errors: int = 0
    """Internal errors caught inside public methods (never raised to the caller)."""
    last_error: str | None = None
    """The last failure, as ``"<where>: <reason>"`` (no payloads)."""

    @property
    def spans_dropped_total(self) -> int:
        """All dropped spans, whatever the reason."""
        return sum(self.spans_dropped.values())

    @property
    def events_dropped_total(self) -> int:
        """All dropped events, whatever the reason."""
        return sum(self.events_dropped.values())


class Counters:
    """Mutable counters shared by the tracer (request path) and the sender thread.

    ``*_taken`` and ``*_sent`` are written by the sender thread only; drops and errors may come
    from any thread and take the lock.
    """

    __slots__ = (
        "_lock",
        "_queue_full_reads",
        "errors",
        "events_dropped",
        "events_sent",
        "events_taken",
        "last_error",
        "spans_dropped",
        "spans_queue_full",
        "spans_sent",
        "spans_taken",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.spans_taken = 0
        self.spans_sent = 0
        self.events_taken = 0
        self.events_sent = 0
        self.spans_dropped = dict.fromkeys(DROP_REASONS, 0)
        self.spans_queue_full = itertools.count()
        """``next()`` it for each span dropped because the queue was full (any thread)."""
        self._queue_full_reads = 0  # snapshot() takes a value from spans_queue_full too
        self.events_dropped = dict.fromkeys(DROP_REASONS, 0)
        self.errors = 0
        self.last_error: str | None = None

    def drop_spans(self, reason: str, count: int = 1) -> None:
        """Count ``count`` spans dropped for ``reason``."""
        with self._lock:
            self.spans_dropped[reason] = self.spans_dropped.get(reason, 0) + count

    def drop_events(self, reason: str, count: int = 1) -> None:
        """Count ``count`` events dropped for ``reason``."""
        with self._lock:
            self.events_dropped[reason] = self.events_dropped.get(reason, 0) + count

    def error(self, where: str, reason: str) -> None:
        """Count an internal error and remember it (``reason`` must not carry payloads)."""
        with self._lock:
            self.errors += 1
            self.last_error = f"{where}: {reason}"

    def note_failure(self, where: str, reason: str) -> None:
        """Remember a delivery failure without counting an internal error."""
        self.last_error = f"{where}: {reason}"

    def snapshot(self, spans_queued: int, events_pending: int, spans_held: int) -> ClientStats:
        """Freeze the counters; ``spans_queued`` and ``events_pending`` are the current queue
        lengths, ``spans_held`` the spans the sender took and has neither sent nor dropped yet."""
        with self._lock:
            spans_dropped = dict(self.spans_dropped)
            spans_dropped["queue_full"] += next(self.spans_queue_full) - self._queue_full_reads
            self._queue_full_reads += 1
            events_dropped = dict(self.events_dropped)
            errors, last_error = self.errors, self.last_error
        return ClientStats(
            spans_enqueued=self.spans_taken + spans_queued,
            spans_sent=self.spans_sent,
            spans_pending=spans_queued + spans_held,
            spans_dropped=MappingProxyType(spans_dropped),
            events_enqueued=self.events_taken + events_pending,
            events_sent=self.events_sent,
            events_pending=events_pending,
            events_dropped=MappingProxyType(events_dropped),
            errors=errors,
            last_error=last_error,
        )
