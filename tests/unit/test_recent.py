from gateway.recent import RecentMap


def test_forgets_the_oldest_insertion_and_updates_keep_their_place() -> None:
    recent: RecentMap[str, int] = RecentMap(3)
    for i, key in enumerate("abc"):
        recent[key] = i
    recent["a"] = 10  # an update: "a" stays the oldest
    recent["d"] = 3
    assert "a" not in recent and len(recent) == 3
    assert [recent.get(k) for k in "bcd"] == [1, 2, 3]
    assert recent.get("a") is None and recent.get("a", -1) == -1
