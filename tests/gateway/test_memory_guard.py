from prometheus_client import CollectorRegistry

from gateway.config import MemoryConfig
from gateway.memory_guard import OK, REFUSE, SHED, MemoryGuard, rss_bytes
from gateway.metrics import GatewayMetrics

MB = 1 << 20


def test_states_follow_rss_with_hysteresis() -> None:
    rss = [0]
    cfg = MemoryConfig(200 * MB, 300 * MB, gc_interval_s=1.0)
    g = MemoryGuard(cfg, GatewayMetrics(CollectorRegistry()), lambda: rss[0])
    rss[0] = 100 * MB
    assert g.update(holding=True) == OK
    rss[0] = 210 * MB
    assert g.update(holding=True) == SHED and g.shedding and not g.refusing
    rss[0] = 260 * MB
    assert g.update(holding=True) == REFUSE and g.refusing
    rss[0] = 220 * MB  # still above soft: keep refusing
    assert g.update(holding=True) == REFUSE
    assert g.update(holding=False) == SHED  # nothing held: accept again, reuse resident memory
    rss[0] = 150 * MB
    assert g.update(holding=True) == OK


def test_rss_is_read_from_proc() -> None:
    assert rss_bytes() > 10 * MB
