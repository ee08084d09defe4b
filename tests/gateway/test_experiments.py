"""Which experiments a request may name: length bound, allow-list with prefixes, a cap on
distinct names; refused requests are refused whole, named and counted."""

from __future__ import annotations

import random
import time
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from clients.pb import spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway.receive.experiments import ExperimentPolicy, Refusal


def test_policy_allows_the_default_exact_names_and_prefixes_up_to_the_cap() -> None:
    p = ExperimentPolicy("default", ("mangaassist-prod", "team-*"), max_experiments=2, max_chars=20)
    assert p.check("") is None and p.check("default") is None  # the default is always allowed, not counted
    assert p.check("mangaassist-prod") is None
    assert p.check("other") is Refusal.NOT_ALLOWED
    assert p.check("x" * 21) is Refusal.TOO_LONG
    assert p.check("team-a") is None
    assert p.check("team-b") is Refusal.CAP  # a third distinct name
    assert p.check("team-a") is None  # names already in use stay usable
    assert "TRACEGW_MAX_EXPERIMENTS" in p.explain(Refusal.CAP, "team-b")


def span() -> spans_pb2.Span:
    now = time.time_ns()
    return spans_pb2.Span(
        trace_id=random.randbytes(16),
        span_id=random.randbytes(8),
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
    )


def test_requests_naming_experiments_past_the_bounds_are_refused_and_counted(gateway_factory: Any) -> None:
    gw = gateway_factory(TRACEGW_MAX_EXPERIMENTS="2", TRACEGW_MAX_EXPERIMENT_NAME_CHARS="64")
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    otlp = trace_service_pb2_grpc.TraceServiceStub(channel)

    def send(name: str) -> None:
        native.ExportSpans(
            trace_gateway_service_pb2.ExportSpansRequest(experiment_name=name, spans=[span()]), timeout=5
        )

    send("exp-1")
    otlp.Export(trace_service_pb2.ExportTraceServiceRequest(), metadata=[("x-mlflow-experiment-name", "exp-2")])
    with pytest.raises(grpc.RpcError) as cap:
        send("exp-3")  # the receivers share one cap
    assert cap.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "TRACEGW_MAX_EXPERIMENTS" in (cap.value.details() or "")
    with pytest.raises(grpc.RpcError) as long:
        send("n" * 10_000)
    assert long.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10000 characters" in (long.value.details() or "")
    assert len(long.value.details() or "") < 200  # the name is not echoed back
    send("exp-1")  # a name in use stays usable
    sample = gw.metrics.registry.get_sample_value
    assert sample("tracegw_experiments_refused_total", {"reason": "cap"}) == 1
    assert sample("tracegw_experiments_refused_total", {"reason": "too_long"}) == 1
    channel.close()


def test_an_allow_list_refuses_other_names_with_permission_denied(gateway_factory: Any) -> None:
    gw = gateway_factory(TRACEGW_ALLOWED_EXPERIMENTS="mangaassist-*")
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    native.ExportSpans(
        trace_gateway_service_pb2.ExportSpansRequest(experiment_name="mangaassist-canary", spans=[span()])
    )
    with pytest.raises(grpc.RpcError) as denied:
        native.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(experiment_name="scratch", spans=[span()]))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "TRACEGW_ALLOWED_EXPERIMENTS" in (denied.value.details() or "")
    assert gw.metrics.registry.get_sample_value("tracegw_experiments_refused_total", {"reason": "not_allowed"}) == 1
    channel.close()


def test_an_event_request_over_its_bound_is_refused_before_it_is_parsed(gateway_factory: Any) -> None:
    gw = gateway_factory(TRACEGW_MAX_EVENT_MESSAGE_BYTES="4096")
    channel = grpc.insecure_channel(gw.target)
    call = channel.unary_unary(
        "/mangaassist.tracegateway.v1.TraceGatewayService/RecordFeedback",
        request_serializer=None,
        response_deserializer=None,
    )
    with pytest.raises(grpc.RpcError) as big:
        call(b"\x0a\x80\x40" + b"x" * 8192, timeout=5)
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "TRACEGW_MAX_EVENT_MESSAGE_BYTES" in (big.value.details() or "")
    assert gw.metrics.registry.get_sample_value("tracegw_requests_too_large_total", {"rpc": "RecordFeedback"}) == 1
    channel.close()
