"""Bytes protobuf cannot parse answer INVALID_ARGUMENT, are counted, and log one rate-limited
line, on every RPC of both services; the gateway goes on serving."""

from __future__ import annotations

import logging
import random
from typing import Any

import grpc
import pytest

from clients.pb import trace_gateway_service_pb2, trace_gateway_service_pb2_grpc

RPCS = [
    "/mangaassist.tracegateway.v1.TraceGatewayService/ExportSpans",
    "/mangaassist.tracegateway.v1.TraceGatewayService/RecordFeedback",
    "/mangaassist.tracegateway.v1.TraceGatewayService/RecordBundleEvents",
    "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
]


def garbage() -> list[bytes]:
    rng = random.Random(7)
    deep = b""
    for _ in range(200):  # ExportSpansRequest.spans → Span.attributes... nested past protobuf's depth limit
        deep = b"\x0a" + bytes([len(deep)]) + deep if len(deep) < 127 else b"\x0a\x7f" + deep[:127]
    return [
        rng.randbytes(64),
        rng.randbytes(4096),
        b"\x0a\x05abc",  # truncated: a length past the end
        b"\x0a\x03\x12\x01\xff",  # invalid UTF-8 in a string field
        deep,
    ]


def test_malformed_requests_answer_invalid_argument(gateway_factory: Any, caplog: pytest.LogCaptureFixture) -> None:
    gw = gateway_factory()
    channel = grpc.insecure_channel(gw.target)
    sent = 0
    with caplog.at_level(logging.WARNING, logger="gateway.receive.servicers"):
        for rpc in RPCS:
            call = channel.unary_unary(rpc, request_serializer=None, response_deserializer=None)
            for data in garbage():
                try:
                    call(data, timeout=5)
                except grpc.RpcError as exc:
                    if exc.code() != grpc.StatusCode.INVALID_ARGUMENT:
                        continue  # some garbage happens to parse as a (partly) valid message: not ours to judge
                    assert "not a valid protobuf message" in (exc.details() or "")
                    sent += 1
    assert sent >= len(RPCS) * 3  # random, truncated and invalid-UTF-8 bytes fail on every RPC
    counted = sum(
        gw.metrics.registry.get_sample_value("tracegw_requests_malformed_total", {"rpc": rpc.rsplit("/", 1)[1]}) or 0
        for rpc in RPCS
    )
    assert counted == sent
    lines = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert 1 <= len(lines) <= len(RPCS) and not any(r.exc_info for r in lines)  # one per RPC, no tracebacks
    # and the gateway still serves well-formed requests
    stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    assert (
        stub.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(), timeout=5).partial_success.rejected_count == 0
    )
    channel.close()
