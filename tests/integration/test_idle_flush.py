"""Adaptive batching: while the writer waits for work, a partial batch goes at once; while it is
busy, traces gather into fuller batches (``TRACEGW_BATCH_FLUSH_WHEN_IDLE``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import pytest

from clients import ClientConfig, Tracer
from gateway import config
from gateway.server import ThreadedGateway
from tests.fakes import RecordingWriter
from tests.support import wait_for


@contextlib.contextmanager
def running(tmp_path: Any, flush_when_idle: str) -> Iterator[tuple[RecordingWriter, ThreadedGateway, Tracer]]:
    """A gateway writing to a ``RecordingWriter`` (a 30 s batch delay), and a client sending to it."""
    writer = RecordingWriter()
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                "TRACEGW_METRICS_ADDRESS": "127.0.0.1:0",
                "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",  # never contacted: the writer is the fake above
                "TRACEGW_SPOOL_DIR": str(tmp_path / f"spool-{flush_when_idle}"),
                "TRACEGW_ROOT_GRACE_S": "0.05",
                "TRACEGW_BATCH_MAX_DELAY_S": "30",
                "TRACEGW_BATCH_FLUSH_WHEN_IDLE": flush_when_idle,
                "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
                "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
            }
        ),
        writer=writer,
    )
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.02))
    try:
        yield writer, gw, tracer
    finally:
        writer.hold.set()
        tracer.shutdown()
        gw.stop(5)


def send(tracer: Tracer, n: int) -> None:
    for _ in range(n):
        with tracer.start_span("handle_message"):
            pass
    assert tracer.flush(timeout_s=10)


@pytest.mark.integration
def test_a_partial_batch_goes_at_once_while_the_writer_is_idle_and_gathers_while_it_is_busy(tmp_path: Any) -> None:
    with running(tmp_path, "true") as (writer, _gw, tracer):
        send(tracer, 1)
        wait_for(
            lambda: [len(b) for b in writer.batches] == [1],
            timeout_s=5,
            what="one trace written long before the 30 s delay",
        )
        writer.hold.clear()  # the next write blocks: the writer is busy
        send(tracer, 1)
        wait_for(lambda: writer.calls == 2, timeout_s=5, what="the second write in flight")
        send(tracer, 5)
        time.sleep(0.5)  # several ticks while busy: the five stay in one open batch
        writer.hold.set()
        wait_for(
            lambda: [len(b) for b in writer.batches] == [1, 1, 5], timeout_s=5, what="the five gathered into one batch"
        )


@pytest.mark.integration
def test_with_idle_flushing_off_a_partial_batch_waits_for_its_delay(tmp_path: Any) -> None:
    with running(tmp_path, "false") as (writer, _gw, tracer):
        send(tracer, 1)
        time.sleep(1.0)
        assert [len(b) for b in writer.batches] == []  # the 30 s delay holds it
    assert [len(b) for b in writer.batches] == [1]  # and shutdown delivers it
