"""Retry timing and the circuit breaker used by the senders.

``backoff_s(attempt)`` is exponential with full jitter, capped, and never shorter than a
server's ``Retry-After``. ``CircuitBreaker`` stops every sender from hammering a failing
server: after ``failures_to_open`` consecutive retryable failures it opens for a cooldown
(doubling up to a cap), then lets exactly one probe through (half-open); the probe's success
closes it, its failure opens it again. A permanent error is an answer, so it counts as the
server being reachable.

``acquire()`` hands out a ``Permit``, used as a context manager around one request. Inside,
the sender calls ``permit.success()`` or ``permit.failure()`` when the server answered; a
permit that leaves its ``with`` block unsettled (an unreadable segment, an unexpected
exception, shutdown) gives its probe back, so a half-open breaker can never be left waiting
for a probe that will not report.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

CLOSED, HALF_OPEN, OPEN = 0, 1, 2
STATE_NAMES = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}


def backoff_s(
    attempt: int,
    initial_s: float,
    max_s: float,
    retry_after_s: float | None = None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Delay before retry number ``attempt`` (1-based): full jitter over initial·2^(attempt-1), capped."""
    ceiling = min(max_s, initial_s * 2.0 ** max(0, attempt - 1))
    delay = ceiling * (0.5 + rng() / 2)  # jitter in [ceiling/2, ceiling): spread, but never ~0
    if retry_after_s is not None:
        delay = max(delay, min(retry_after_s, max_s))
    return delay


class Permit:
    """Leave to send one request. Settles once: ``success()``, ``failure()`` or, on leaving the
    ``with`` block without either, ``release()`` (no answer either way)."""

    __slots__ = ("_breaker", "_probe", "_settled")

    def __init__(self, breaker: CircuitBreaker, probe: bool) -> None:
        self._breaker = breaker
        self._probe = probe
        self._settled = False

    @property
    def probe(self) -> bool:
        """True when this request is the half-open breaker's one probe."""
        return self._probe

    def success(self) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._success()

    def failure(self) -> None:
        if not self._settled:
            self._settled = True
            self._breaker._failure()

    def release(self) -> None:
        if not self._settled:
            self._settled = True
            if self._probe:
                self._breaker._release_probe()

    def __enter__(self) -> Permit:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.release()


class CircuitBreaker:
    def __init__(
        self,
        failures_to_open: int,
        cooldown_s: float,
        max_cooldown_s: float,
        on_change: Callable[[int], None] = lambda _s: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._threshold = failures_to_open
        self._base_cooldown = cooldown_s
        self._max_cooldown = max(cooldown_s, max_cooldown_s)
        self._cooldown = cooldown_s
        self._on_change = on_change
        self._clock = clock
        self._cond = threading.Condition()
        self._state = CLOSED
        self._failures = 0
        self._open_until = 0.0
        self._probe_out = False

    @property
    def state(self) -> int:
        return self._state

    def acquire(self, stop: threading.Event, max_wait_s: float = 0.2) -> Permit | None:
        """A ``Permit`` when a request may be sent now; None after ``max_wait_s`` or when stopping."""
        deadline = self._clock() + max_wait_s
        with self._cond:
            while not stop.is_set():
                now = self._clock()
                if self._state == CLOSED:
                    return Permit(self, probe=False)
                if self._state == OPEN and now >= self._open_until:
                    self._set(HALF_OPEN)
                if self._state == HALF_OPEN and not self._probe_out:
                    self._probe_out = True
                    return Permit(self, probe=True)
                remaining = deadline - now
                if remaining <= 0:
                    return None
                wait = remaining if self._state == HALF_OPEN else min(remaining, max(0.0, self._open_until - now))
                self._cond.wait(max(0.01, wait))
        return None

    def _success(self) -> None:
        with self._cond:
            self._failures = 0
            self._cooldown = self._base_cooldown
            self._probe_out = False
            if self._state != CLOSED:
                self._set(CLOSED)
            self._cond.notify_all()

    def _failure(self) -> None:
        with self._cond:
            self._failures += 1
            if self._state == HALF_OPEN or (self._state == CLOSED and self._failures >= self._threshold):
                self._open_until = self._clock() + self._cooldown
                self._cooldown = min(self._cooldown * 2, self._max_cooldown)
                self._probe_out = False
                self._set(OPEN)
            self._cond.notify_all()

    def _release_probe(self) -> None:
        """The probe ended without an answer either way: let another one go."""
        with self._cond:
            self._probe_out = False
            self._cond.notify_all()

    def _set(self, state: int) -> None:
        self._state = state
        self._on_change(state)
