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
Every request this module builds has one resource and one scope; ``split_spans`` (poison
isolation, used by delivery) relies on that. This module does not import mlflow; both
writers (HTTP and embedded) use it.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Any, Final

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from clients.wire import VARINT_1 as _VARINT_1
from clients.wire import field as _field
from clients.wire import remember as _remember
from clients.wire import varint as _varint
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

# ---- protobuf wire encoding ------------------------------------------------------------------
#
# The request is written straight to wire bytes: building it with the generated classes cost
# ~1 µs per attribute (a KeyValue and an AnyValue object each) and was the gateway's largest
# cost after decoding (bench/ingest.py). Tags are (field number << 3 | wire type) of
# opentelemetry/proto: KeyValue {key 1, value 2}; AnyValue {string 1, bool 2, int 3, double 4,
# array 5, kvlist 6}; ArrayValue/KeyValueList {values 1}; Span {trace_id 1, span_id 2,
# parent_span_id 4, name 5, kind 6, start 7, end 8, attributes 9, events 11, status 15};
# Event {time 1, name 2, attributes 3}; Status {message 2, code 3}.

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MASK64: Final = (1 << 64) - 1
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack
_CACHE_ENTRIES: Final = 8192
"""Bound of the attribute-encoding cache; a full cache is cleared (unique values churn it)."""
_CACHED_TEXT: Final = 200
"""Longer string values are not cached, which also bounds the cache's memory."""

_KV_KEY: Final = b"\x0a"
_KV_VALUE: Final = b"\x12"
_STRING: Final = b"\x0a"
_BOOL_TRUE: Final = b"\x10\x01"
_BOOL_FALSE: Final = b"\x10\x00"
_INT: Final = b"\x18"
_DOUBLE: Final = b"\x21"
_ARRAY: Final = b"\x2a"
_KVLIST: Final = b"\x32"
_VALUES: Final = b"\x0a"
_SPAN_ATTRIBUTE: Final = b"\x4a"
_SPAN_EVENT: Final = b"\x5a"
_EVENT_ATTRIBUTE: Final = b"\x1a"
_KIND_INTERNAL: Final = b"\x30\x01"
_STATUS_CODE: Final = {SpanStatus.UNSET: 0, SpanStatus.OK: 1, SpanStatus.ERROR: 2}
_STATUS: Final = {  # Span.status with its code alone (an UNSET status is still sent, empty)
    status: b"\x7a\x02\x18" + bytes((code,)) if code else b"\x7a\x00" for status, code in _STATUS_CODE.items()
}
# Span fields 1, 2 (tag and length each) then 4, or without it: trace id, span id, parent span id.
_IDS_ROOT: Final = struct.Struct("<2s16s2s8s").pack
_IDS_CHILD: Final = struct.Struct("<2s16s2s8s2s8s").pack
_TIMES: Final = struct.Struct("<BQBQ").pack  # Span fields 7 and 8 (fixed64), each after its tag


def any_value(value: Any) -> bytes:
    """An OTLP ``AnyValue`` for a plain Python value (bool before int; ``None`` → an empty one;
    ints outside int64 and unknown types as their ``str()``)."""
    if isinstance(value, str):
        return _field(_STRING, value.encode())
    if isinstance(value, bool):
        return _BOOL_TRUE if value else _BOOL_FALSE
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return _INT + _varint(value & _MASK64)
        return _field(_STRING, str(value).encode())
    if isinstance(value, float):
        return _DOUBLE + _pack_double(value)
    if value is None:
        return b""
    if isinstance(value, (list, tuple)):
        return _field(_ARRAY, b"".join([_field(_VALUES, any_value(item)) for item in value]))
    if isinstance(value, dict):
        return _field(_KVLIST, b"".join([_key_value(_VALUES, k, v) for k, v in value.items()]))
    return _field(_STRING, str(value).encode())


_keys: dict[str, bytes] = {}  # key -> its encoded KeyValue.key field (keys repeat: attributes, JSON fields)


def _key_value(tag: bytes, key: Any, value: Any) -> bytes:
    """A ``KeyValue`` as field ``tag``; a ``None`` value leaves the KeyValue without one."""
    body = _keys.get(key) if key.__class__ is str else None
    if body is None:
        body = _field(_KV_KEY, str(key).encode()) if key != "" else b""
        if key.__class__ is str and len(key) <= _CACHED_TEXT:
            _remember(_keys, key, body, _CACHE_ENTRIES)
    if value is not None:
        body += _field(_KV_VALUE, any_value(value))
    return _field(tag, body)


_kv_cache: dict[tuple[str, type, Any], bytes] = {}  # (key, type, value) -> encoded span attribute


def _attribute(key: str, value: Any) -> bytes:
    """A span attribute, from the cache for the scalar values that repeat from trace to trace."""
    cls = value.__class__
    # Not cached: containers (unhashable or too varied), long strings (memory) and 0.0 (equal to
    # -0.0 as a dictionary key).
    if (cls is str and len(value) <= _CACHED_TEXT) or cls is int or cls is bool or (cls is float and value):
        cache_key = (key, cls, value)
        data = _kv_cache.get(cache_key)
        if data is None:
            data = _key_value(_SPAN_ATTRIBUTE, key, value)
            _remember(_kv_cache, cache_key, data, _CACHE_ENTRIES)
        return data
    return _key_value(_SPAN_ATTRIBUTE, key, value)


_names: dict[str, bytes] = {}  # span name -> its encoded Span.name field


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
        extra[LLM_COST] = {
            "input_cost": float(in_cost),
            "output_cost": float(out_cost),
            "total_cost": float(in_cost) + float(out_cost),
        }
    return extra


def encode_span(record: SpanRecord, trace_tags: dict[str, str] | None, trace_id: bytes | None = None) -> bytes:
    """One OTLP ``Span`` message; ``trace_tags`` is given for the root span only; ``trace_id`` is
    the record's trace id as bytes when the caller has it (one conversion per trace)."""
    attrs = record.attributes
    tid = trace_id if trace_id is not None else bytes.fromhex(record.trace_id)
    if record.parent_span_id:
        parts = [
            _IDS_CHILD(
                b"\x0a\x10",
                tid,
                b"\x12\x08",
                bytes.fromhex(record.span_id),
                b"\x22\x08",
                bytes.fromhex(record.parent_span_id),
            )
        ]
    else:
        parts = [_IDS_ROOT(b"\x0a\x10", tid, b"\x12\x08", bytes.fromhex(record.span_id))]
    name = record.name
    if name:
        data = _names.get(name)
        if data is None:  # span names repeat from trace to trace (MangaAssist has 17)
            data = _field(b"\x2a", name.encode())
            _remember(_names, name, data, _CACHE_ENTRIES)
        parts.append(data)
    parts.append(_KIND_INTERNAL)
    start, end = record.start_time_ns, record.end_time_ns
    if start and end:
        parts.append(_TIMES(0x39, start, 0x41, end))
    else:
        if start:
            parts.append(b"\x39" + _pack_fixed64(start))
        if end:
            parts.append(b"\x41" + _pack_fixed64(end))
    parts.append(_attribute(SPAN_TYPE, record.span_type or "UNKNOWN"))
    if record.inputs is not None:
        parts.append(_key_value(_SPAN_ATTRIBUTE, SPAN_INPUTS, record.inputs))
    if record.outputs is not None:
        parts.append(_key_value(_SPAN_ATTRIBUTE, SPAN_OUTPUTS, record.outputs))
    for key, value in attrs.items():
        parts.append(_attribute(key, value))
    if (
        "input_tokens" in attrs
        or "bedrock_model_id" in attrs
        or "model_id" in attrs
        or "provider" in attrs
        or "input_cost_usd" in attrs
    ):
        for key, value in _llm_conventions(attrs).items():
            if key not in attrs:
                parts.append(_attribute(key, value))  # the model and provider repeat: cached
    if trace_tags:
        for key, value in trace_tags.items():
            parts.append(_attribute(TRACE_TAG_PREFIX + key, value))
        session = trace_tags.get("session_id")
        if session and SESSION_ID not in attrs:
            parts.append(_attribute(SESSION_ID, session))
    for event in record.events:
        ev = [_field(b"\x12", event.name.encode())] if event.name else []
        if event.time_ns:
            ev.insert(0, b"\x09" + _pack_fixed64(event.time_ns))
        ev.extend(_key_value(_EVENT_ATTRIBUTE, k, v) for k, v in event.attributes.items())
        parts.append(_field(_SPAN_EVENT, b"".join(ev)))
    message = record.status_message
    if message:
        code = _STATUS_CODE[record.status]
        status = _field(b"\x12", message.encode()) + (b"\x18" + _VARINT_1[code] if code else b"")
        parts.append(_field(b"\x7a", status))
    else:
        parts.append(_STATUS[record.status])
    return b"".join(parts)


_SCOPE: Final = _field(b"\x0a", _field(b"\x0a", SCOPE_NAME.encode()))  # ScopeSpans.scope {name}


def encode_traces(traces: Iterable[TraceRecord]) -> bytes:
    """A serialized OTLP ``ExportTraceServiceRequest`` holding every span of ``traces`` (one
    resource, one scope)."""
    parts = [_SCOPE]
    for trace in traces:
        tags = trace.tags
        trace_id = bytes.fromhex(trace.trace_id)
        for record in trace.spans:
            span = encode_span(
                record,
                tags if record.parent_span_id is None else None,
                trace_id if record.trace_id == trace.trace_id else None,
            )
            parts.append(b"\x12" + _varint(len(span)) + span)
    scope_spans = b"".join(parts)
    resource_spans = b"\x12" + _varint(len(scope_spans)) + scope_spans  # ResourceSpans.scope_spans
    return b"\x0a" + _varint(len(resource_spans)) + resource_spans  # the request's resource_spans


def trace_ids(payload: bytes) -> list[str]:
    """The distinct trace ids (hex) of a serialized OTLP request, in order of first appearance."""
    request = ExportTraceServiceRequest.FromString(payload)
    seen = {span.trace_id.hex(): None for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans}
    return list(seen)


def split_spans(payload: bytes) -> list[tuple[bytes, int, int]]:
    """Split an OTLP request into two by trace: [(payload, span_count, trace_count)], or [] for one trace."""
    request = ExportTraceServiceRequest.FromString(payload)
    by_trace: dict[bytes, list[Any]] = {}
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for span in ss.spans:
                by_trace.setdefault(span.trace_id, []).append(span)
    if len(by_trace) < 2:
        return []
    ids = list(by_trace)
    halves = [ids[: len(ids) // 2], ids[len(ids) // 2 :]]
    out = []
    for half in halves:
        part = ExportTraceServiceRequest()
        scope = part.resource_spans.add().scope_spans.add()
        scope.scope.CopyFrom(request.resource_spans[0].scope_spans[0].scope)
        for tid in half:
            scope.spans.extend(by_trace[tid])
        out.append((part.SerializeToString(), sum(len(by_trace[t]) for t in half), len(half)))
    return out
