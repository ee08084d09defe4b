"""The response cache: repeated questions on the same route are answered without Bedrock.

Keyed by the normalised message, intent, page type, product, locale, prompt version and model,
so a prompt or model change never serves an old answer. LRU with a TTL; thread-safe. Only
answers that passed every guardrail are stored.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from orchestrator.corpus import Document


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    reply: str
    prompt_version: str
    model_id: str
    chunks: tuple[Document, ...]
    response_id: str
    """The response that produced the answer (for audit)."""


def cache_key(
    message: str, intent: str, page_type: str, product_id: str | None, locale: str, prompt_version: str, model_id: str
) -> str:
    normalised = " ".join(message.lower().split()).rstrip("?!.？！。 ")
    raw = "\x1f".join((normalised, intent, page_type, product_id or "", locale, prompt_version, model_id))
    return hashlib.sha256(raw.encode()).hexdigest()


class ResponseCache:
    def __init__(
        self, ttl_s: float = 300.0, max_entries: int = 2000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._items: OrderedDict[str, tuple[float, CachedAnswer]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> CachedAnswer | None:
        with self._lock:
            item = self._items.get(key)
            if item is None or item[0] <= self._clock():
                if item is not None:
                    del self._items[key]
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[1]

    def put(self, key: str, answer: CachedAnswer) -> None:
        if self._max <= 0 or self._ttl_s <= 0:
            return
        with self._lock:
            self._items[key] = (self._clock() + self._ttl_s, answer)
            self._items.move_to_end(key)
            while len(self._items) > self._max:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)
