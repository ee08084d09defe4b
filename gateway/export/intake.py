"""The intake: what the event loop handed to delivery, waiting for the spooler thread.

One bounded FIFO per kind (span batches, feedback events, bundle events), so a flood of one kind
never takes another's room: 10,000 feedback events cannot push a span batch out. The receivers
ask ``room(kind)`` before they acknowledge an RPC and refuse it (``RESOURCE_EXHAUSTED``) when it
does not fit, so an acknowledged event always finds its place. The spooler takes round robin
across kinds, in arrival order within each.
"""

from __future__ import annotations

import threading
from collections import deque

from gateway.export.segments import Kind


class Intake:
    """Thread-safe: the event loop offers, the spooler thread takes, shutdown closes."""

    def __init__(self, bounds: dict[Kind, int]) -> None:
        self._bounds = dict(bounds)
        self._queues: dict[Kind, deque[object]] = {kind: deque() for kind in bounds}
        self._order = list(bounds)
        self._next = 0
        self._cond = threading.Condition()
        self._closed = False

    def room(self, kind: Kind) -> int:
        """How many more items of ``kind`` fit now."""
        return self._bounds[kind] - len(self._queues[kind])

    def empty(self, kind: Kind) -> bool:
        return not self._queues[kind]

    def offer(self, kind: Kind, item: object) -> bool:
        """Queue ``item``; False when its kind's queue is full (the caller counts the drop)."""
        with self._cond:
            queue = self._queues[kind]
            if len(queue) >= self._bounds[kind]:
                return False
            queue.append(item)
            self._cond.notify()
            return True

    def take(self) -> tuple[Kind, object] | None:
        """The next item, round robin across kinds; waits for one. None once closed and empty."""
        with self._cond:
            while True:
                for i in range(len(self._order)):
                    kind = self._order[(self._next + i) % len(self._order)]
                    queue = self._queues[kind]
                    if queue:
                        self._next = (self._next + i + 1) % len(self._order)
                        return kind, queue.popleft()
                if self._closed:
                    return None
                self._cond.wait()

    def close(self) -> None:
        """No more offers are coming: ``take`` returns None once the queues are empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def drain(self) -> list[tuple[Kind, object]]:
        """Everything still queued, taken out (shutdown counts it)."""
        with self._cond:
            out = [(kind, item) for kind, queue in self._queues.items() for item in queue]
            for queue in self._queues.values():
                queue.clear()
            return out
