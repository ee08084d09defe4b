"""The sidecar's garbage-collection policy: collect on a clock, not on allocation counts.

Every span becomes a handful of container objects that live until its trace is decided (half a
second or more). CPython's collector runs a young collection every N allocations and scans
every young object still alive, so nearly every span object was scanned at least once, and
again in each older generation it reached: ~3 µs of CPU per ingested span at full load, however
high the thresholds (``bench/ingest.py``, BENCHMARKS.md). Reference counting frees the
gateway's objects as soon as a trace is written or dropped; only reference cycles (an
exception's traceback, some asyncio/gRPC internals: ~250 objects a second at full load) need
the collector, and they can wait a few seconds.

So the sidecar process, once started, freezes what start-up created (modules, metrics,
compiled patterns: never rescanned), turns the automatic collector off and runs a thread that
collects the young generations every ``interval_s`` and everything every ``full_every``-th
time. A collection then scans only what is alive at that moment (the traces in assembly and
the open batches: ~70,000 objects, 20-70 ms on this project's 2-core machine), not everything
allocated since the last one, so its cost per second falls with the interval. Pauses are observed in
``tracegw_gc_pause_seconds``; cycles live at most one interval longer than with the default.

Only the sidecar's entry point (``gateway.server.serve``) and the ingest benchmark's gateway
process call ``start``: a gateway embedded in another process (tests, the demo's in-process
mode, an application using ``ThreadedGateway``) leaves that process's collector alone.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

FULL_EVERY = 60
"""Every this many collections, a full one (all generations); the others collect generations 0-1."""

AUTOMATIC_THRESHOLDS = (10_000, 20, 100)
"""With ``interval_s`` 0, CPython's automatic collector stays on with these thresholds."""


class TimedCollector:
    """Collects garbage every ``interval_s`` on a daemon thread (0: automatic, tuned thresholds)."""

    def __init__(self, interval_s: float, pause_histogram: Any = None, full_every: int = FULL_EVERY) -> None:
        if interval_s < 0:
            raise ValueError(f"interval_s must be >= 0, got {interval_s}")
        if full_every < 1:
            raise ValueError(f"full_every must be >= 1, got {full_every}")
        self.interval_s = interval_s
        self.full_every = full_every
        self._pauses = pause_histogram
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._was_enabled = gc.isenabled()
        self._was_thresholds = gc.get_threshold()
        self.collections = 0
        self.collected_objects = 0

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        if self.interval_s == 0:
            gc.set_threshold(*AUTOMATIC_THRESHOLDS)
            return
        gc.disable()
        self._thread = threading.Thread(target=self._run, name="tracegw-gc", daemon=True)
        self._thread.start()

    def collect_once(self) -> int:
        """One scheduled collection; returns how many unreachable objects it found."""
        generation = 2 if self.collections % self.full_every == self.full_every - 1 else 1
        started = time.perf_counter()
        found = gc.collect(generation)
        if self._pauses is not None:
            self._pauses.labels(generation=str(generation)).observe(time.perf_counter() - started)
        self.collections += 1
        self.collected_objects += found
        return found

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.collect_once()
            except Exception:  # a finalizer that raises must not end collection for good
                log.exception("gc_collection_failed")

    def stop(self) -> None:
        """Stop the thread and give the process its collector back (tests)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None
        gc.set_threshold(*self._was_thresholds)
        if self._was_enabled:
            gc.enable()
        gc.unfreeze()


_process_collector: TimedCollector | None = None


def tune_process(interval_s: float, pause_histogram: Any = None) -> TimedCollector:
    """Install the timed collector for this process (once; later calls return the first)."""
    global _process_collector
    if _process_collector is None:
        _process_collector = TimedCollector(interval_s, pause_histogram)
        _process_collector.start()
    return _process_collector
