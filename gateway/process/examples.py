"""Example trace ids for alert payloads: a small, bounded series of stored traces per reason.

Prometheus cannot attach a histogram's exemplars to an alert (prometheus#8798), so an alert's
annotation reads this series with ``query`` instead::

    mangaassist_example_trace{reason, release_bundle, prompt_version, bedrock_model_id, trace_id}
        = the Unix time the gateway kept that trace

For each reason and pivot (bundle, prompt version, Bedrock model) it holds the ``PER_KEY`` newest
trace ids and removes the older ones; at most ``MAX_KEYS`` pivots are tracked (the least recently
used one is forgotten first), so the series stays under ``len(REASONS) * MAX_KEYS * PER_KEY``.

Only traces the gateway stores are offered (a sampled-out id would open nothing in MLflow):
``Measure`` notes a trace's reasons on 100% of traffic (``note``), and the id is published once the
sampler kept the trace (``stored``), or when a thumbs-down made it kept (``thumbs_down``).

Reasons, one per business alert: ``slow`` (root span at least the sampler's latency threshold,
which the sampler keeps), ``error``, ``guardrail_fallback``, ``grounding_failure``,
``thumbs_down`` and ``costly`` (Bedrock cost of one trace at least ``costly_usd``).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict, deque
from collections.abc import Callable

from gateway.metrics import GatewayMetrics
from gateway.process.recent import RecentMap

REASONS = ("slow", "error", "guardrail_fallback", "grounding_failure", "thumbs_down", "costly")
PER_KEY = 3
MAX_KEYS = 32
NOTED_MAX = 20_000  # traces noted and waiting for their sampling decision (RecentMap: the newest)

Pivots = tuple[str, str, str]  # release_bundle, prompt_version, bedrock_model_id (capped as in Measure)


class ExampleTraces:
    """Not thread-safe: the gateway calls it from its event loop."""

    def __init__(self, metrics: GatewayMetrics, clock: Callable[[], float] = time.time) -> None:
        self._gauge = metrics.example_traces
        self._clock = clock
        self._noted: RecentMap[str, tuple[Pivots, tuple[str, ...]]] = RecentMap(NOTED_MAX)
        self._keys: OrderedDict[Pivots, dict[str, deque[str]]] = OrderedDict()

    def note(self, trace_id: str, pivots: Pivots, reasons: tuple[str, ...]) -> None:
        """Measure saw a trace worth offering (before sampling decided whether it is stored)."""
        if reasons:
            self._noted[trace_id] = (pivots, reasons)

    def stored(self, trace_id: str) -> None:
        """The sampler kept the trace: offer it for the reasons noted."""
        noted = self._noted.get(trace_id)
        if noted is not None:
            pivots, reasons = noted
            for reason in reasons:
                self._publish(reason, pivots, trace_id)

    def thumbs_down(self, trace_id: str, pivots: Pivots) -> None:
        """A thumbs-down on a trace that is (or will be) stored."""
        self._publish("thumbs_down", pivots, trace_id)

    def _publish(self, reason: str, pivots: Pivots, trace_id: str) -> None:
        by_reason = self._keys.get(pivots)
        if by_reason is None:
            if len(self._keys) >= MAX_KEYS:
                old_pivots, old = self._keys.popitem(last=False)
                for old_reason, ids in old.items():
                    for old_id in ids:
                        self._remove(old_reason, old_pivots, old_id)
            by_reason = self._keys[pivots] = {}
        else:
            self._keys.move_to_end(pivots)
        ids = by_reason.setdefault(reason, deque())
        if trace_id in ids:
            return
        ids.append(trace_id)
        self._gauge.labels(reason, *pivots, trace_id).set(self._clock())
        while len(ids) > PER_KEY:
            self._remove(reason, pivots, ids.popleft())

    def _remove(self, reason: str, pivots: Pivots, trace_id: str) -> None:
        with contextlib.suppress(KeyError):
            self._gauge.remove(reason, *pivots, trace_id)

    def series(self) -> int:
        return sum(len(ids) for by_reason in self._keys.values() for ids in by_reason.values())
