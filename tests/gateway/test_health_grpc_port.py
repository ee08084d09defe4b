"""A gRPC health listener of its own (TRACEGW_HEALTH_GRPC_ADDRESS): what the kubelet's gRPC
startupProbe dials on the pod IP while the span port stays on loopback. It serves health only, says
SERVING while spans are accepted and NOT_SERVING while the gateway drains."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.pb import trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import config
from gateway.server import ThreadedGateway
from tests.fakes import ROOMY, RecordingWriter
from tests.support import wait_for


def test_the_health_port_serves_health_only_and_follows_the_drain() -> None:
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                **ROOMY,
                "TRACEGW_METRICS_ADDRESS": "",
                "TRACEGW_SPOOL_DIR": "",
                "TRACEGW_HEALTH_GRPC_ADDRESS": "127.0.0.1:0",
            }
        ),
        RecordingWriter(),
    )
    port = gw.running.health_grpc_port
    assert port and port != gw.grpc_port
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    health = health_pb2_grpc.HealthStub(channel)
    assert health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    spans = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    try:
        spans.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(), timeout=5)
        raise AssertionError("the health port took a span RPC")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
    gw.call(lambda: asyncio.ensure_future(gw.running._health.enter_graceful_shutdown()))  # as stop() begins
    wait_for(
        lambda: (
            health.Check(health_pb2.HealthCheckRequest(), timeout=5).status
            == health_pb2.HealthCheckResponse.NOT_SERVING
        ),
        timeout_s=5,
        what="NOT_SERVING while draining",
    )
    gw.stop(2.0)
