"""Model → OTLP protobuf, in the shape MLflow 3.17's ``/v1/traces`` ingestion understands.

MLflow's conventions that this module writes (see ``mlflow/tracing/constant.py``):

- ``mlflow.spanType`` as a plain string (a JSON-quoted one breaks ``span.type`` filters);
- ``mlflow.spanInputs`` / ``mlflow.spanOutputs`` as typed values (MLflow JSON-encodes each
  attribute once on ingest, so sending JSON text would double-encode it);
- trace tags as root-span attributes ``mlflow.traceTag.<key>`` (restored as real, searchable
  trace tags); the session id as ``session.id`` on the root;
- LLM spans: ``input_tokens``/``output_tokens`` → ``mlflow.chat.tokenUsage``,
  ``bedrock_model_id`` → ``mlflow.llm.model``, ``provider`` → ``mlflow.llm.provider``,
  ``input_cost_usd``/``output_cost_usd`` → ``mlflow.llm.cost``, so the MLflow UI shows them.

No resource attributes are sent: MLflow turns them into tags on every trace of the request.
This module does not import mlflow; both writers (HTTP and embedded) use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan
from opentelemetry.proto.trace.v1.trace_pb2 import Status as OtlpStatus

from gateway.model import SpanRecord, SpanStatus, TraceRecord

SPAN_TYPE = "mlflow.spanType"
SPAN_INPUTS = "mlflow.spanInputs"
SPAN_OUTPUTS = "mlflow.spanOutputs"
TRACE_TAG_PREFIX = "mlflow.traceTag."
TOKEN_USAGE = "mlflow.chat.tokenUsage"
LLM_MODEL = "mlflow.llm.model"
LLM_PROVIDER = "mlflow.llm.provider"
LLM_COST = "mlflow.llm.cost"
SESSION_ID = "session.id"
SCOPE_NAME = "mangaassist.tracegateway"

_STATUS = {SpanStatus.UNSET: OtlpStatus.STATUS_CODE_UNSET, SpanStatus.OK: OtlpStatus.STATUS_CODE_OK,
           SpanStatus.ERROR: OtlpStatus.STATUS_CODE_ERROR}


def set_any_value(target: AnyValue, value: Any) -> None:
    """Fill an OTLP ``AnyValue`` from a plain Python value (bool before int)."""
    if value is None:
        return
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
            target.int_value = value
        else:
            target.string_value = str(value)
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, (list, tuple)):
        arr = target.array_value
        arr.SetInParent()
        for item in value:
            set_any_value(arr.values.add(), item)
    elif isinstance(value, dict):
        kvs = target.kvlist_value
        kvs.SetInParent()
        for k, v in value.items():
            kv = kvs.values.add()
            kv.key = str(k)
            set_any_value(kv.value, v)
    else:
        target.string_value = str(value)


def _add(span: OtlpSpan, key: str, value: Any) -> None:
    kv = span.attributes.add()
    kv.key = key
    set_any_value(kv.value, value)


def _llm_conventions(attrs: dict[str, Any]) -> dict[str, Any]:
    extra: dict[str, Any] = {}
    inp, out = attrs.get("input_tokens"), attrs.get("output_tokens")
    if isinstance(inp, int) and isinstance(out, int) and not isinstance(inp, bool):
        extra[TOKEN_USAGE] = {"input_tokens": inp, "output_tokens": out, "total_tokens": inp + out}
    model = attrs.get("bedrock_model_id") or attrs.get("model_id")
    if isinstance(model, str) and model and model != "none":
        extra[LLM_MODEL] = model
    provider = attrs.get("provider")
    if isinstance(provider, str) and provider:
        extra[LLM_PROVIDER] = provider
    in_cost, out_cost = attrs.get("input_cost_usd"), attrs.get("output_cost_usd")
    if isinstance(in_cost, (int, float)) and isinstance(out_cost, (int, float)):
        extra[LLM_COST] = {"input_cost": float(in_cost), "output_cost": float(out_cost),
                           "total_cost": float(in_cost) + float(out_cost)}
    return extra


def encode_span(record: SpanRecord, trace_tags: dict[str, str] | None, out: OtlpSpan) -> None:
    """Encode one span into ``out``; ``trace_tags`` is given for the root span only."""
    out.trace_id = bytes.fromhex(record.trace_id)
    out.span_id = bytes.fromhex(record.span_id)
    if record.parent_span_id:
        out.parent_span_id = bytes.fromhex(record.parent_span_id)
    out.name = record.name
    out.kind = OtlpSpan.SPAN_KIND_INTERNAL
    out.start_time_unix_nano = record.start_time_ns
    out.end_time_unix_nano = record.end_time_ns
    out.status.code = _STATUS[record.status]
    if record.status_message:
        out.status.message = record.status_message
    _add(out, SPAN_TYPE, record.span_type or "UNKNOWN")
    if record.inputs is not None:
        _add(out, SPAN_INPUTS, record.inputs)
    if record.outputs is not None:
        _add(out, SPAN_OUTPUTS, record.outputs)
    for key, value in record.attributes.items():
        _add(out, key, value)
    for key, value in _llm_conventions(record.attributes).items():
        if key not in record.attributes:
            _add(out, key, value)
    if trace_tags:
        for key, value in trace_tags.items():
            _add(out, TRACE_TAG_PREFIX + key, value)
        session = trace_tags.get("session_id")
        if session and SESSION_ID not in record.attributes:
            _add(out, SESSION_ID, session)
    for event in record.events:
        ev = out.events.add()
        ev.name = event.name
        ev.time_unix_nano = event.time_ns
        for key, value in event.attributes.items():
            kv = ev.attributes.add()
            kv.key = key
            set_any_value(kv.value, value)


def encode_traces(traces: Iterable[TraceRecord]) -> ExportTraceServiceRequest:
    """One OTLP request holding every span of ``traces`` (one resource, one scope)."""
    request = ExportTraceServiceRequest()
    scope_spans = request.resource_spans.add().scope_spans.add()
    scope_spans.scope.name = SCOPE_NAME
    for trace in traces:
        for record in trace.spans:
            tags = trace.tags if record.parent_span_id is None else None
            encode_span(record, tags, scope_spans.spans.add())
    return request
