"""Fixtures for the client tests: a fake gateway, a dead target, tracers that are shut down."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from clients import ClientConfig, Tracer
from tests.clients.fake_gateway import FakeGateway, start_fake_gateway

MakeTracer = Callable[..., Tracer]


@pytest.fixture
def gateway() -> Iterator[FakeGateway]:
    """A recording fake gateway on a free loopback port, stopped at teardown."""
    server, fake = start_fake_gateway()
    try:
        yield fake
    finally:
        fake.release()
        server.stop(0).wait(5)


@pytest.fixture
def dead_target() -> str:
    """A loopback address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


@pytest.fixture
def make_tracer() -> Iterator[MakeTracer]:
    """Build tracers from ClientConfig keyword arguments; all are shut down at teardown."""
    tracers: list[Tracer] = []

    def make(**config: Any) -> Tracer:
        config.setdefault("flush_interval_s", 0.05)
        tracer = Tracer(ClientConfig(**config))
        tracers.append(tracer)
        return tracer

    yield make
    for tracer in tracers:
        tracer.shutdown(2.0)


@pytest.fixture(autouse=True)
def no_leaked_sender_threads() -> Iterator[None]:
    """Every sender thread a test starts is stopped by the time its fixtures are torn down
    (threads other suites left behind are theirs to answer for, not this test's)."""
    before = set(threading.enumerate())
    yield

    leaked = [
        t.name for t in threading.enumerate() if t.name == "tracegw-client-sender" and t.is_alive() and t not in before
    ]
    assert not leaked, f"sender threads still running: {leaked}"
