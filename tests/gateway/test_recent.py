import gc
import tracemalloc

from gateway.process.recent import RecentMap


def test_remembers_between_half_and_all_of_max_items_newest_first() -> None:
    recent: RecentMap[str, int] = RecentMap(4)  # generations of two
    recent["a"] = 1
    recent["b"] = 2
    recent["c"] = 3  # a and b become the previous generation
    assert [recent.get(k) for k in "abc"] == [1, 2, 3] and len(recent) == 3
    recent["a"] = 10  # set again: the newest value wins
    assert recent.get("a") == 10
    recent["d"] = 4  # a, c roll over; b is forgotten
    assert "b" not in recent and recent.get("b") is None and recent.get("b", -1) == -1
    assert [recent.get(k) for k in "acd"] == [10, 3, 4]


def test_memory_stays_bounded_while_keys_stream_through() -> None:
    recent: RecentMap[int, bool] = RecentMap(100_000)
    keys = list(range(10**6, 10**6 + 400_000))  # created before measuring: the map holds references
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        peak = 0
        for i, key in enumerate(keys):
            recent[key] = True
            if i % 10_000 == 0:
                peak = max(peak, tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    assert 50_000 <= len(recent) <= 100_000
    assert peak < 100_000 * 70, peak  # ~52 bytes per remembered key, no table of deleted slots
