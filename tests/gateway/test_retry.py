import threading

from gateway.export.retry import CLOSED, HALF_OPEN, OPEN, CircuitBreaker, backoff_s
from tests.fakes import FakeClock


def test_backoff_grows_caps_jitters_and_honours_retry_after() -> None:
    lo = [backoff_s(a, 0.5, 30, rng=lambda: 0.0) for a in range(1, 9)]
    hi = [backoff_s(a, 0.5, 30, rng=lambda: 0.999) for a in range(1, 9)]
    assert lo[:4] == [0.25, 0.5, 1.0, 2.0] and all(h < 2 * low + 1e-9 for h, low in zip(hi, lo, strict=True))
    assert max(hi) <= 30
    assert backoff_s(1, 0.5, 30, retry_after_s=7, rng=lambda: 0.0) == 7
    assert backoff_s(1, 0.5, 30, retry_after_s=3600, rng=lambda: 0.0) == 30


def test_breaker_opens_probes_and_closes() -> None:
    clock = FakeClock()
    states: list[int] = []
    b = CircuitBreaker(3, cooldown_s=2, max_cooldown_s=30, on_change=states.append, clock=clock)
    stop = threading.Event()
    for _ in range(3):
        permit = b.acquire(stop, 0)
        assert permit is not None and not permit.probe
        permit.failure()
    assert b.state == OPEN and states == [OPEN]
    assert b.acquire(stop, 0) is None  # open: nobody may send
    clock.now += 2
    probe = b.acquire(stop, 0)
    assert probe is not None and probe.probe and b.state == HALF_OPEN  # exactly one probe
    assert b.acquire(stop, 0) is None
    probe.failure()  # the probe failed: open again, longer
    assert b.state == OPEN
    clock.now += 2
    assert b.acquire(stop, 0) is None
    clock.now += 2
    probe = b.acquire(stop, 0)
    assert probe is not None
    probe.success()
    probe.failure()  # a permit settles once: this is ignored
    assert b.state == CLOSED
    assert states == [OPEN, HALF_OPEN, OPEN, HALF_OPEN, CLOSED]


def test_a_probe_left_unsettled_lets_the_next_one_go() -> None:
    clock = FakeClock()
    b = CircuitBreaker(1, cooldown_s=1, max_cooldown_s=1, clock=clock)
    stop = threading.Event()
    first = b.acquire(stop, 0)
    assert first is not None
    first.failure()
    clock.now += 1
    with b.acquire(stop, 0) as probe:  # type: ignore[union-attr]
        assert probe.probe and b.acquire(stop, 0) is None
    # left without an answer (an unreadable segment): the breaker is still half-open, and lets one more go
    assert b.state == HALF_OPEN
    again = b.acquire(stop, 0)
    assert again is not None and again.probe
    try:
        with again:
            raise RuntimeError("unexpected")
    except RuntimeError:
        pass
    assert b.acquire(stop, 0) is not None


def test_acquire_returns_when_stopping() -> None:
    b = CircuitBreaker(1, cooldown_s=60, max_cooldown_s=60)
    permit = b.acquire(threading.Event(), 0)
    assert permit is not None
    permit.failure()
    stop = threading.Event()
    stop.set()
    assert b.acquire(stop, 5) is None
