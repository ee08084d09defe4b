"""A feedback flood is written or refused before it is acknowledged, never acknowledged and then
dropped; and it does not take the span batches' room."""

from __future__ import annotations

import random
from pathlib import Path

import grpc
import pytest

from clients.pb import bundles_pb2, feedback_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import config
from gateway.server import ThreadedGateway
from tests.fakes import RecordingWriter
from tests.support import wait_for

pytestmark = pytest.mark.integration


def recording_gateway(tmp_path: Path, **env: str) -> tuple[RecordingWriter, ThreadedGateway]:
    """A gateway whose writer is a ``RecordingWriter`` (MLflow is never contacted), spooling to disk."""
    writer = RecordingWriter()
    settings = {
        "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
        "TRACEGW_METRICS_ADDRESS": "",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "TRACEGW_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
        "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
        **env,
    }
    return writer, ThreadedGateway(config.load(settings), writer=writer)


def test_a_feedback_flood_is_written_or_refused_before_acknowledgement(tmp_path: Path) -> None:
    # fsync per event: the spooler lags the flood
    writer, gw = recording_gateway(tmp_path, TRACEGW_EVENT_QUEUE_EVENTS="1000")
    stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(grpc.insecure_channel(gw.target))
    acknowledged = refused = 0
    for call in range(100):  # 10,000 events, as fast as one client sends them
        events = [
            feedback_pb2.FeedbackEvent(
                event_id=f"flood-{call}-{i}",
                trace_id=random.randbytes(16).hex(),
                response_id=f"resp_{call}_{i}",
                feedback=feedback_pb2.FEEDBACK_VALUE_THUMBS_DOWN,
            )
            for i in range(100)
        ]
        try:
            answer = stub.RecordFeedback(trace_gateway_service_pb2.RecordFeedbackRequest(events=events), timeout=10)
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, exc
            assert "retry later" in (exc.details() or "")
            refused += len(events)
            continue
        assert answer.partial_success.rejected_count == 0
        acknowledged += len(events)
    assert acknowledged + refused == 10_000 and acknowledged >= 1000

    def sample(name: str, **labels: str) -> float:
        return gw.metrics.registry.get_sample_value(name, labels) or 0.0

    wait_for(
        lambda: len(writer.feedback) == acknowledged, timeout_s=120, interval_s=0.2, what="every acknowledged event"
    )
    assert sample("tracegw_events_dropped_total", kind="feedback", reason="writer_queue_full") == 0
    assert sample("tracegw_events_refused_total", kind="feedback", reason="queue_full") == refused
    gw.stop(10)


def test_a_resent_event_id_is_counted_once(tmp_path: Path) -> None:
    writer, gw = recording_gateway(tmp_path)
    stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(grpc.insecure_channel(gw.target))
    event = feedback_pb2.FeedbackEvent(
        event_id="click-1", trace_id="ab" * 16, response_id="resp_1", feedback=feedback_pb2.FEEDBACK_VALUE_THUMBS_DOWN
    )
    for _ in range(2):  # a retried call
        stub.RecordFeedback(trace_gateway_service_pb2.RecordFeedbackRequest(events=[event, event]), timeout=10)
    bundle = bundles_pb2.BundleEvent(
        event_id="b-1",
        bundle_name="mangaassist-chatbot",
        bundle_version="1",
        actor_id="pipeline",
        promoted=bundles_pb2.BundlePromoted(),
    )
    reused = bundles_pb2.BundleEvent(
        event_id="b-1",
        bundle_name="mangaassist-chatbot",
        bundle_version="1",
        actor_id="pipeline",
        rolled_back=bundles_pb2.BundleRolledBack(to_version="1"),
    )
    stub.RecordBundleEvents(trace_gateway_service_pb2.RecordBundleEventsRequest(events=[bundle, reused]), timeout=10)
    wait_for(lambda: len(writer.feedback) == 1 and len(writer.bundles) == 1, timeout_s=10, what="one of each written")
    gw.stop(10)
    assert writer.feedback == [("click-1", False)] and writer.bundles[0].kind == "promoted"  # not overwritten

    def dropped(kind: str) -> float:
        return (
            gw.metrics.registry.get_sample_value("tracegw_events_dropped_total", {"kind": kind, "reason": "duplicate"})
            or 0
        )

    assert (dropped("feedback"), dropped("bundle")) == (3, 1)
