"""``RecentMap``: a dict that remembers only its ``max_items`` most recently added keys.

The gateway's decision caches (assembly's decided traces, sampling decisions, the contract's
request ids) each hold ~100,000 trace ids. An ``OrderedDict`` costs ~91 bytes per entry beyond
the key (its linked list); a plain dict plus a deque of keys in insertion order costs ~47, which
is ~13 MB less across those caches once they are full. Setting an existing key keeps its place,
as in an ``OrderedDict``: the oldest insertion goes first.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar, overload

K = TypeVar("K")
V = TypeVar("V")


class RecentMap(Generic[K, V]):
    __slots__ = ("_map", "_max", "_order")

    def __init__(self, max_items: int) -> None:
        self._max = max_items
        self._map: dict[K, V] = {}
        self._order: deque[K] = deque()

    def __contains__(self, key: object) -> bool:
        return key in self._map

    def __len__(self) -> int:
        return len(self._map)

    @overload
    def get(self, key: K) -> V | None: ...

    @overload
    def get(self, key: K, default: V) -> V: ...

    def get(self, key: K, default: V | None = None) -> V | None:
        return self._map.get(key, default)

    def __setitem__(self, key: K, value: V) -> None:
        """Remember ``value`` for ``key``; beyond ``max_items`` the oldest key is forgotten."""
        if key not in self._map:
            self._order.append(key)
            if len(self._order) > self._max:
                del self._map[self._order.popleft()]
        self._map[key] = value
