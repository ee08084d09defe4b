"""Conversion of recorded spans and events to protobuf; runs on the sender thread only.

Spans are written straight to wire bytes (a partial ``ExportSpansRequest``), without building
protobuf objects: building a ``Span`` message, its attribute map and one ``AttributeValue`` per
attribute took ~10 µs per span of the sender's time, all of it holding the GIL the application
needs. The encodings of the strings and attribute entries that repeat from request to request
(span names and types, ``{"component": "rerank"}``, ``{"k": 20}``, trace tags) are cached in
bounded dictionaries. Events and feedback/bundle events are rare and use the generated classes.

Attribute values map to ``AttributeValue`` by Python type: ``str`` → string, ``bool`` → bool
(checked before int), ``int`` → int (outside int64 → double), ``float`` → double, a list or
tuple of ``str`` → string_list, other lists, tuples and dicts → JSON, ``None`` is skipped,
anything else → its ``str()``. Inputs and outputs become JSON with ``json.dumps(default=str)``.
Attributes added with ``set_attribute(s)`` win over those given to ``start_span``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterable, Mapping
from typing import Any, Final

from clients.events import (
    BundleEvaluated,
    BundleEvent,
    BundlePromoted,
    BundleRegistered,
    BundleRolledBack,
    BundleSignedOff,
    FeedbackEvent,
)
from clients.pb import bundles_pb2, feedback_pb2, spans_pb2, trace_gateway_service_pb2
from clients.span import STATUS_OK, UNSET, SpanHandle
from clients.wire import field as _field
from clients.wire import remember as _remember
from clients.wire import varint as _varint

_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1
_MASK64: Final = (1 << 64) - 1
_CACHE_ENTRIES: Final = 4096
"""Bound of each encoding cache; a full cache is cleared (values such as request ids churn it)."""
_CACHED_TEXT: Final = 200
"""Longer string values are not cached, which bounds a cache's memory too."""

_json_dumps = json.JSONEncoder(default=str).encode  # = json.dumps(value, default=str), built once
_pack_double = struct.Struct("<d").pack
_pack_fixed64 = struct.Struct("<Q").pack

# Tags (field number << 3 | wire type) of the fields written here.
_REQUEST_SPAN: Final = b"\x0a"  # ExportSpansRequest.spans
_TRACE_ID: Final = b"\x0a\x10"  # Span.trace_id, 16 bytes
_NAME: Final = b"\x22"
_SPAN_TYPE: Final = b"\x2a"
_STATUS_MESSAGE: Final = b"\x4a"
_ATTRIBUTES: Final = b"\x52"
_EVENTS: Final = b"\x5a"
_INPUTS: Final = b"\x62"
_OUTPUTS: Final = b"\x6a"
_TRACE_TAGS: Final = b"\x72"
_EVENT_NAME: Final = b"\x0a"  # SpanEvent
_EVENT_TIME: Final = b"\x11"
_EVENT_ATTRIBUTES: Final = b"\x1a"
_MAP_KEY: Final = b"\x0a"  # map entries
_MAP_VALUE: Final = b"\x12"
_STRING_VALUE: Final = b"\x0a"  # AttributeValue
_BOOL_TRUE: Final = b"\x10\x01"
_BOOL_FALSE: Final = b"\x10\x00"
_INT_VALUE: Final = b"\x18"
_DOUBLE_VALUE: Final = b"\x21"
_STRING_LIST_VALUE: Final = b"\x2a"
_JSON_VALUE: Final = b"\x32"
_LIST_ITEM: Final = b"\x0a"  # StringList.values

_names: dict[tuple[str, str], bytes] = {}  # (name, span type) -> the encoded fields
_entries: dict[tuple[str, type, Any], bytes] = {}  # (key, type, value) -> encoded attributes entry
_tag_entries: dict[tuple[str, str], bytes] = {}  # (key, value) -> encoded trace_tags entry


def _attribute_value(value: Any) -> bytes:
    """An ``AttributeValue`` message (see the module docstring for the mapping)."""
    if isinstance(value, str):
        return _field(_STRING_VALUE, value.encode())
    if isinstance(value, bool):
        return _BOOL_TRUE if value else _BOOL_FALSE
    if isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            return _INT_VALUE + _varint(value & _MASK64)
        return _DOUBLE_VALUE + _pack_double(float(value))
    if isinstance(value, float):
        return _DOUBLE_VALUE + _pack_double(value)
    if isinstance(value, list | tuple):
        if all(isinstance(item, str) for item in value):
            return _field(_STRING_LIST_VALUE, b"".join([_field(_LIST_ITEM, item.encode()) for item in value]))
        return _field(_JSON_VALUE, _json_dumps(value).encode())
    if isinstance(value, dict):
        return _field(_JSON_VALUE, _json_dumps(value).encode())
    return _field(_STRING_VALUE, str(value).encode())


def _entry(tag: bytes, key: Any, value: Any) -> bytes:
    """One attributes map entry (``tag`` is the map field's)."""
    key_text = key if isinstance(key, str) else str(key)
    return _field(tag, _field(_MAP_KEY, key_text.encode()) + _field(_MAP_VALUE, _attribute_value(value)))


def _attributes(attrs: Mapping[str, Any]) -> list[bytes]:
    """The span's attributes map entries, cached for scalar values; ``None`` values are skipped."""
    out = []
    entries = _entries
    for key, value in attrs.items():
        if value is None:
            continue
        cls = value.__class__
        # Not cached: containers (unhashable, or too varied), long strings (memory) and 0.0
        # (equal to -0.0 as a dictionary key).
        if (cls is str and len(value) <= _CACHED_TEXT) or cls is int or cls is bool or (cls is float and value):
            cache_key = (key, cls, value)
            data = entries.get(cache_key)
            if data is None:
                data = _entry(_ATTRIBUTES, key, value)
                _remember(entries, cache_key, data, _CACHE_ENTRIES)
            out.append(data)
        else:
            out.append(_entry(_ATTRIBUTES, key, value))
    return out


def _trace_tags(tags: Mapping[str, Any]) -> bytes:
    out = []
    cache = _tag_entries
    for key, value in tags.items():
        text_key = key if isinstance(key, str) else str(key)
        text = value if isinstance(value, str) else str(value)
        data = cache.get((text_key, text))
        if data is None:
            data = _field(_TRACE_TAGS, _field(_MAP_KEY, text_key.encode()) + _field(_MAP_VALUE, text.encode()))
            if len(text) <= _CACHED_TEXT:
                _remember(cache, (text_key, text), data, _CACHE_ENTRIES)
        out.append(data)
    return b"".join(out)


def _event(name: str, time_unix_nano: int, attributes: Mapping[str, Any] | None) -> bytes:
    parts = [_field(_EVENT_NAME, name.encode()), _EVENT_TIME, _pack_fixed64(time_unix_nano)]
    if attributes:
        parts.extend(_entry(_EVENT_ATTRIBUTES, key, value) for key, value in attributes.items() if value is not None)
    return _field(_EVENTS, b"".join(parts))


def _extras(span: SpanHandle, parts: list[bytes]) -> None:
    """Append what only some spans have: a status message, added attributes, events, inputs,
    outputs, trace tags. The status code is set by the caller."""
    attrs = span._attrs
    extra = getattr(span, "_extra_attrs", None)
    if extra:
        attrs = {**attrs, **extra} if attrs else extra
    if attrs:
        parts.extend(_attributes(attrs))
    _, message = getattr(span, "_status", _NO_STATUS)
    if message:
        parts.append(_field(_STATUS_MESSAGE, message.encode()))
    events = getattr(span, "_events", None)
    if events:
        parts.extend(_event(*event) for event in events)
    inputs = getattr(span, "_inputs", UNSET)
    if inputs is not UNSET:
        parts.append(_field(_INPUTS, _json_dumps(inputs).encode()))
    outputs = getattr(span, "_outputs", UNSET)
    if outputs is not UNSET:
        parts.append(_field(_OUTPUTS, _json_dumps(outputs).encode()))
    tags = getattr(span, "_tags", None)
    if tags:
        parts.append(_trace_tags(tags))


_NO_STATUS: Final = (STATUS_OK, "")
# Span fields 2 (and 3), 6, 7 and 8 in one pack, each after its tag (and length): span_id
# (0x12, 8 bytes), parent_span_id (0x1a, 8 bytes), start and end times (0x31, 0x39, fixed64),
# status_code (0x40, a one-byte varint).
_pack_child = struct.Struct("<BBQBBQBQBQBB").pack
_pack_root = struct.Struct("<BBQBQBQBB").pack


def encode_spans_chunk(spans: Iterable[SpanHandle]) -> tuple[bytes, int]:
    """Serialise spans as a partial ``ExportSpansRequest`` (protobuf concatenation appends
    repeated fields, so chunks can be joined). Returns the bytes and how many spans failed to
    encode (they are left out).

    The hot loop of the sender: the span-id mixing of :func:`clients.span.wire_span_id` is
    inlined and remembered for the chunk (a parent's id is needed by each child and by itself).
    """
    out: list[bytes] = []
    failed = 0
    trace = None
    trace_id = b""
    ids: dict[int, int] = {}
    names = _names
    for span in spans:
        try:
            if span._trace is not trace:  # the spans of a trace usually come together
                trace = span._trace
                trace_id = _TRACE_ID + trace.trace_id.to_bytes(16, "big")
            seq = span._span_seq
            sid = ids.get(seq)
            if sid is None:
                z = (seq * 0x9E3779B97F4A7C15) & _MASK64
                z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
                z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
                sid = z ^ (z >> 31)
            start = span._start_ns
            end = span._end_ns
            if end < start:
                end = start
            code = STATUS_OK  # also for a status still unset when the span ended
            extras = span._extras
            if extras:
                status = getattr(span, "_status", None)
                if status is not None and status[0]:
                    code = status[0]
            seq = span._parent_seq
            if seq:
                pid = ids.get(seq)
                if pid is None:
                    z = (seq * 0x9E3779B97F4A7C15) & _MASK64
                    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
                    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
                    ids[seq] = pid = z ^ (z >> 31)
                fixed = _pack_child(0x12, 8, sid, 0x1A, 8, pid, 0x31, start, 0x39, end, 0x40, code)
            else:
                fixed = _pack_root(0x12, 8, sid, 0x31, start, 0x39, end, 0x40, code)
            key = (span._name, span._span_type)
            name_type = names.get(key)
            if name_type is None:
                name_type = _field(_NAME, key[0].encode()) + _field(_SPAN_TYPE, key[1].encode())
                _remember(names, key, name_type, _CACHE_ENTRIES)
            parts = [trace_id, fixed, name_type]
            if extras:
                _extras(span, parts)
            elif span._attrs:
                parts.extend(_attributes(span._attrs))
            body = b"".join(parts)
            out.append(_REQUEST_SPAN + _varint(len(body)) + body)
        except Exception:
            failed += 1
    return b"".join(out), failed


def encode_span(span: SpanHandle) -> spans_pb2.Span:
    """Convert a finished span to its wire form, as a message (for tools; the sender uses
    :func:`encode_spans_chunk`)."""
    data, failed = encode_spans_chunk([span])
    if failed:
        raise ValueError("the span could not be encoded")
    message: spans_pb2.Span = trace_gateway_service_pb2.ExportSpansRequest.FromString(data).spans[0]
    return message


def export_header(experiment_name: str, service_name: str) -> bytes:
    """The scalar fields of every ``ExportSpansRequest``, serialised once."""
    request = trace_gateway_service_pb2.ExportSpansRequest(experiment_name=experiment_name, service_name=service_name)
    header: bytes = request.SerializeToString()
    return header


def _timestamp(target: Any, unix_nanos: int) -> None:
    target.seconds, target.nanos = divmod(unix_nanos, 1_000_000_000)


def encode_feedback(event: FeedbackEvent) -> feedback_pb2.FeedbackEvent:
    """Convert a feedback event to its wire form."""
    out = feedback_pb2.FeedbackEvent(
        event_id=event.event_id,
        response_id=event.response_id,
        trace_id=event.trace_id,
        feedback=event.feedback.proto_value,  # type: ignore[arg-type]
        reason_code=event.reason_code,
        comment=event.comment,
        session_id=event.session_id,
        prompt_version=event.prompt_version,
        release_bundle=event.release_bundle,
    )
    _timestamp(out.time, event.time_unix_nano)
    return out


def encode_bundle_event(event: BundleEvent) -> bundles_pb2.BundleEvent:
    """Convert a bundle lifecycle event to its wire form."""
    out = bundles_pb2.BundleEvent(
        event_id=event.event_id,
        bundle_name=event.bundle_name,
        bundle_version=event.bundle_version,
        actor_id=event.actor_id,
        note=event.note,
    )
    _timestamp(out.time, event.time_unix_nano)
    kind = event.kind
    if isinstance(kind, BundleRegistered):
        out.registered.SetInParent()
        c = kind.components
        out.registered.components.CopyFrom(
            bundles_pb2.BundleComponents(
                intent_classifier_version=c.intent_classifier_version,
                reranker_version=c.reranker_version,
                prompt_version=c.prompt_version,
                bedrock_model_id=c.bedrock_model_id,
                retriever_policy_version=c.retriever_policy_version,
                guardrail_ruleset_version=c.guardrail_ruleset_version,
            )
        )
    elif isinstance(kind, BundleEvaluated):
        evaluated = out.evaluated
        evaluated.SetInParent()
        evaluated.stage = kind.stage.proto_value  # type: ignore[assignment]
        evaluated.verdict = kind.verdict.proto_value  # type: ignore[assignment]
        evaluated.metrics.update({str(k): float(v) for k, v in kind.metrics.items()})
        evaluated.dataset_version = kind.dataset_version
        evaluated.traffic_percent = kind.traffic_percent
        evaluated.run_id = kind.run_id
    elif isinstance(kind, BundleSignedOff):
        out.signed_off.SetInParent()
        out.signed_off.area = kind.area.proto_value  # type: ignore[assignment]
        out.signed_off.approver_id = kind.approver_id
    elif isinstance(kind, BundlePromoted):
        out.promoted.SetInParent()
        out.promoted.previous_version = kind.previous_version
    elif isinstance(kind, BundleRolledBack):
        out.rolled_back.SetInParent()
        out.rolled_back.to_version = kind.to_version
        out.rolled_back.reason = kind.reason
    else:
        raise TypeError(f"unknown bundle event kind {type(kind).__name__}")
    return out
