"""Back-pressure: keep the gateway's memory under a hard limit without blocking callers.

The guard samples the process's resident memory (``/proc/self/statm``) on every tick:

- below the soft limit: accept everything;
- from the soft limit: shed what would not be stored anyway — the rescue buffer is emptied and
  sampled-out traces are no longer kept for rescue (counted as ``memory_shed``);
- from halfway between soft and hard: refuse new spans with ``RESOURCE_EXHAUSTED`` and a
  ``RetryInfo`` (the client drops and counts them), until memory is back under the soft limit.

Python rarely returns freed memory to the OS at once, so refusal also ends when the gateway
holds nothing worth waiting for (assembly and delivery queues empty): accepting a little more
then reuses memory that is already resident instead of growing it.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from gateway.config import MemoryConfig
from gateway.metrics import GatewayMetrics

OK, SHED, REFUSE = 0, 1, 2
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return 0


class MemoryGuard:
    def __init__(self, config: MemoryConfig, metrics: GatewayMetrics, read_rss: Callable[[], int] = rss_bytes) -> None:
        self._soft = config.soft_limit_bytes
        self._hard = config.hard_limit_bytes
        self._refuse_at = (config.soft_limit_bytes + config.hard_limit_bytes) // 2
        self._m = metrics
        self._read = read_rss
        self.state = OK

    @property
    def refusing(self) -> bool:
        return self.state == REFUSE

    @property
    def shedding(self) -> bool:
        return self.state >= SHED

    def update(self, holding: bool) -> int:
        """Re-evaluate from the current RSS; ``holding`` says whether queues hold anything."""
        rss = self._read()
        self._m.memory_rss.set(rss)
        if rss >= self._refuse_at and holding:
            state = REFUSE
        elif self.state == REFUSE and rss >= self._soft and holding:
            state = REFUSE  # hysteresis: keep refusing until back under the soft limit
        elif rss >= self._soft:
            state = SHED
        else:
            state = OK
        self.state = state
        self._m.memory_state.set(state)
        return state
