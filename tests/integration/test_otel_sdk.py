"""OpenTelemetry's own Python SDK, exporting OTLP/gRPC to the gateway, lands its traces in
MLflow: span tree, attributes, error status, and the experiment named by request metadata."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import pytest

from tests.support import MlflowServer, wait_for

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")


def _send_otel_trace(target: str, headers: Sequence[tuple[str, str]] | None = None) -> tuple[str, dict[str, str]]:
    """Send root → (retrieve, generate[error]) with the SDK; return the MLflow trace id and span ids."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace import Status, StatusCode

    exporter = OTLPSpanExporter(endpoint=target, insecure=True, headers=tuple(headers or ()), timeout=5)
    provider = TracerProvider(resource=Resource.create({"service.name": "otel-sdk-test"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=50))
    try:
        tracer = provider.get_tracer("tests.otel")
        with tracer.start_as_current_span("otel_root", attributes={"request_id": "otel-req-1"}) as root:
            with tracer.start_as_current_span("otel_retrieve", attributes={"k": 5, "source": "faq"}) as retrieve:
                pass
            with tracer.start_as_current_span(
                "otel_generate", record_exception=False, set_status_on_exception=False
            ) as generate:
                generate.set_attribute("model", "claude-haiku")
                generate.record_exception(RuntimeError("ThrottlingException"))
                generate.set_status(Status(StatusCode.ERROR, "throttled"))
        assert provider.force_flush(timeout_millis=10_000)
    finally:
        provider.shutdown()
    ctx = root.get_span_context()
    ids = {
        name: format(s.get_span_context().span_id, "016x")
        for name, s in (("otel_root", root), ("otel_retrieve", retrieve), ("otel_generate", generate))
    }
    return "tr-" + format(ctx.trace_id, "032x"), ids


def _wait_for_trace(client: Any, trace_id: str, spans: int) -> Any:
    def ready() -> Any:
        try:
            t = client.get_trace(trace_id)
        except Exception:  # not stored yet
            return None
        return t if t is not None and len(t.data.spans) >= spans else None

    return wait_for(ready, timeout_s=30, interval_s=0.2, what=f"trace {trace_id} in MLflow")


@pytest.mark.integration
def test_otel_sdk_trace_reaches_mlflow(mlflow_server: MlflowServer, gateway_factory: Any) -> None:
    import mlflow

    gw = gateway_factory(MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME="otel")
    trace_id, ids = _send_otel_trace(gw.target)
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)

    trace = _wait_for_trace(client, trace_id, 3)
    assert trace.info.trace_id == trace_id
    exp = client.get_experiment_by_name("otel")
    assert exp is not None and trace.info.experiment_id == exp.experiment_id
    names = {s.name: s for s in trace.data.spans}
    assert set(names) == {"otel_root", "otel_retrieve", "otel_generate"}
    assert {name: s.span_id for name, s in names.items()} == ids
    assert names["otel_root"].parent_id is None
    assert names["otel_retrieve"].parent_id == ids["otel_root"]
    assert names["otel_generate"].parent_id == ids["otel_root"]
    assert names["otel_root"].attributes["request_id"] == "otel-req-1"
    assert names["otel_retrieve"].attributes["k"] == 5
    assert names["otel_generate"].attributes["model"] == "claude-haiku"
    gen_status = names["otel_generate"].status
    assert gen_status.status_code.value == "ERROR" and gen_status.description == "throttled"
    assert any(e.name == "exception" for e in names["otel_generate"].events)
    assert names["otel_retrieve"].status.status_code.value != "ERROR"
    assert gw.metrics.registry.get_sample_value("tracegw_spans_received_total", {"receiver": "otlp"}) == 3


@pytest.mark.integration
def test_otlp_metadata_routes_spans_to_the_named_experiment(mlflow_server: MlflowServer, gateway_factory: Any) -> None:
    import mlflow

    gw = gateway_factory(MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME="otel-default")
    trace_id, _ = _send_otel_trace(gw.target, headers=(("x-mlflow-experiment-name", "otel-routed"),))
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)

    trace = _wait_for_trace(client, trace_id, 3)
    routed = client.get_experiment_by_name("otel-routed")
    assert routed is not None
    assert trace.info.experiment_id == routed.experiment_id
    assert trace_id in {t.info.trace_id for t in client.search_traces(locations=[routed.experiment_id])}
    default = client.get_experiment_by_name("otel-default")
    if default is not None:  # the gateway creates experiments lazily: the default may not exist at all
        assert trace_id not in {t.info.trace_id for t in client.search_traces(locations=[default.experiment_id])}


@pytest.mark.integration
def test_the_otel_sdk_authenticates_with_the_authorization_header(
    mlflow_server: MlflowServer, gateway_factory: Any, tmp_path: Any
) -> None:
    import mlflow

    token = "otel-collector-token-0123456789"
    tokens = tmp_path / "ingest.tokens"
    tokens.write_text(f"otel {token}\n")
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME="otel-auth", TRACEGW_AUTH_TOKEN_FILE=str(tokens)
    )
    # what OTEL_EXPORTER_OTLP_HEADERS="authorization=Bearer <token>" makes the exporter send
    trace_id, _ = _send_otel_trace(gw.target, headers=(("authorization", f"Bearer {token}"),))
    _wait_for_trace(mlflow.MlflowClient(tracking_uri=mlflow_server.url), trace_id, 3)
    _send_otel_trace(gw.target)  # without the header: refused, and counted
    refused = gw.metrics.registry.get_sample_value(
        "tracegw_requests_unauthorized_total", {"rpc": "Export", "reason": "unauthenticated"}
    )
    assert refused and refused >= 1
