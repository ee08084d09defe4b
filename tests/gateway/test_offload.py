"""A large PII-dense trace is redacted on a worker thread: health checks keep answering while
it is, and what is written is redacted all the same."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.pb import spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import config
from gateway.server import ThreadedGateway
from tests.fakes import RecordingWriter
from tests.support import wait_for


class PayloadWriter(RecordingWriter):
    def __init__(self) -> None:
        super().__init__()
        self.payloads: list[bytes] = []

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        super().write_spans(experiment_id, payload, span_count)
        with self.lock:
            self.payloads.append(payload)


def pii_span() -> spans_pb2.Span:
    text = " ".join(f"user{i}@example.com or +1-555-010-{i % 10000:04d}" for i in range(1600))[:60_000]
    now = time.time_ns()
    span = spans_pb2.Span(
        trace_id=random.randbytes(16),
        span_id=random.randbytes(8),
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
    )
    for i in range(50):  # ~3 MB of e-mail addresses and phone numbers, under the 4 MiB message bound
        span.attributes[f"note.{i}"].string_value = text
    return span


def test_health_answers_while_a_large_trace_is_redacted_and_the_trace_is_written_redacted(tmp_path: Path) -> None:
    writer = PayloadWriter()
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                "TRACEGW_METRICS_ADDRESS": "",
                "TRACEGW_ROOT_GRACE_S": "0.05",
                "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
                "TRACEGW_SPOOL_DIR": str(tmp_path / "spool"),
                "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
                "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
            }
        ),
        writer,
    )
    channel = grpc.insecure_channel(gw.target)
    health = health_pb2_grpc.HealthStub(channel)
    answered: list[int] = []
    failed: list[str] = []
    stop = threading.Event()

    def probe() -> None:
        for _ in range(2000):  # bounded: ~0.01 s apart, until stopped
            if stop.is_set():
                return
            try:
                status = health.Check(health_pb2.HealthCheckRequest(), timeout=1.0).status
                answered.append(status)
            except grpc.RpcError as exc:
                failed.append(exc.code().name)
            time.sleep(0.01)

    try:
        prober = threading.Thread(target=probe)
        prober.start()
        stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
        stub.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(spans=[pii_span()]), timeout=10)
        wait_for(lambda: writer.payloads, timeout_s=30, what="the large trace written")
        stop.set()
        prober.join(10)
        assert failed == []  # every probe answered within its 1 s deadline while redaction ran
        assert answered and set(answered) == {health_pb2.HealthCheckResponse.SERVING}
        assert gw.metrics.registry.get_sample_value("tracegw_redaction_offloaded_traces_total") == 1
        written = b"".join(writer.payloads)
        assert b"@example.com" not in written and b"555-010" not in written
        assert b"<EMAIL" in written
    finally:
        stop.set()
        channel.close()
        gw.stop(10)
