"""The sidecar's clocked garbage collector (gateway.gc_policy)."""

from __future__ import annotations

import gc
import weakref

import pytest
from prometheus_client import CollectorRegistry

from gateway.gc_policy import TimedCollector
from gateway.metrics import GatewayMetrics
from tests.support import wait_for


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def make_cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


def test_cycles_are_collected_on_the_clock_with_the_automatic_collector_off() -> None:
    registry = CollectorRegistry()
    metrics = GatewayMetrics(registry)
    was_enabled = gc.isenabled()
    collector = TimedCollector(0.05, metrics.gc_pause, full_every=3)
    collector.start()
    try:
        assert not gc.isenabled()
        ref = make_cycle()
        assert ref() is not None  # only a collection frees a cycle
        wait_for(lambda: ref() is None, timeout_s=10, what="the cycle collected by the clock")
        wait_for(lambda: collector.collections >= 3, timeout_s=10, what="three collections")
        assert collector.collected_objects >= 2
        young = registry.get_sample_value("tracegw_gc_pause_seconds_count", {"generation": "1"}) or 0
        full = registry.get_sample_value("tracegw_gc_pause_seconds_count", {"generation": "2"}) or 0
        assert young >= 2 and full >= 1  # every third one is a full collection
    finally:
        collector.stop()
    assert gc.isenabled() == was_enabled
    assert gc.get_freeze_count() == 0


def test_interval_zero_keeps_the_automatic_collector_with_raised_thresholds() -> None:
    before = gc.get_threshold()
    collector = TimedCollector(0)
    collector.start()
    try:
        assert gc.isenabled()
        assert gc.get_threshold()[0] > before[0]
    finally:
        collector.stop()
    assert gc.get_threshold() == before


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        TimedCollector(-1)
    with pytest.raises(ValueError, match="full_every"):
        TimedCollector(1, full_every=0)
