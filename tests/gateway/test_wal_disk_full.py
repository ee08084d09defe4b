"""A write-ahead log on a full disk: the RPC is refused with a clear, counted reason and nothing is
taken; once the log's segments are let go the gateway takes spans again.

The disk is a real one: a 96 KiB tmpfs mounted for the test (this needs root, as CI runs here; the
test fails, naming why, rather than skipping)."""

from __future__ import annotations

import random
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.pb import spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import config
from gateway.server import ThreadedGateway
from tests.fakes import ROOMY, RecordingWriter
from tests.support import wait_for


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)], capture_output=True)
    assert done.returncode == 0, f"cannot mount a small tmpfs (needs root): {done.stderr.decode().strip()}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def request(size: int) -> trace_gateway_service_pb2.ExportSpansRequest:
    now = time.time_ns()
    span = spans_pb2.Span(
        trace_id=random.randbytes(16),
        span_id=random.randbytes(8),
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
    )
    span.attributes["note"].string_value = "x" * size
    return trace_gateway_service_pb2.ExportSpansRequest(spans=[span])


def test_a_full_disk_refuses_the_rpc_counted_and_the_gateway_recovers(tmp_path: Path, small_disk: Path) -> None:
    writer = RecordingWriter()
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                **ROOMY,
                "TRACEGW_METRICS_ADDRESS": "",
                "MLFLOW_TRACE_SAMPLING_RATIO": "1.0",
                "TRACEGW_SPOOL_DIR": str(tmp_path / "spool"),
                "TRACEGW_WAL_DIR": str(small_disk / "wal"),
                "TRACEGW_ROOT_GRACE_S": "0.05",
                "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
            }
        ),
        writer,
    )
    stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(grpc.insecure_channel(gw.target))
    try:
        refused: grpc.RpcError | None = None
        accepted = 0
        for _ in range(20):  # 20 KiB each against a 96 KiB disk: it fills within a few
            try:
                stub.ExportSpans(request(20_000), timeout=10)
                accepted += 1
            except grpc.RpcError as exc:
                refused = exc
                break
        assert refused is not None, "the disk never filled"
        assert refused.code() == grpc.StatusCode.UNAVAILABLE
        assert "write-ahead log could not be written" in (refused.details() or "")
        assert "nothing was recorded" in (refused.details() or "")
        registry = gw.metrics.registry
        assert registry.get_sample_value("tracegw_wal_appends_total", {"outcome": "error"}) == 1
        assert registry.get_sample_value("tracegw_wal_refused_items_total", {"kind": "spans", "reason": "error"}) == 1
        wait_for(lambda: len(writer.written) == accepted, timeout_s=10, what="the accepted traces written")
        # The accepted traces settle, their segments go, and the disk has room again.
        deadline = time.monotonic() + 15
        while True:
            try:
                stub.ExportSpans(request(20_000), timeout=10)
                break
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline, exc.details()
                time.sleep(0.5)
        wait_for(lambda: len(writer.written) == accepted + 1, timeout_s=10, what="the trace after recovery written")
    finally:
        gw.stop(5.0)
