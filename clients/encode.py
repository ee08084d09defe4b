"""Conversion of recorded spans and events to protobuf; runs on the sender thread only.

Attribute values map to ``AttributeValue`` by Python type: ``str`` → string, ``bool`` → bool
(checked before int), ``int`` → int (outside int64 → double), ``float`` → double, a list or
tuple of ``str`` → string_list, other lists, tuples and dicts → JSON, ``None`` is skipped,
anything else → its ``str()``. Inputs and outputs become JSON with ``json.dumps(default=str)``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from clients.events import (
    BundleEvaluated,
    BundleEvent,
    BundlePromoted,
    BundleRegistered,
    BundleRolledBack,
    BundleSignedOff,
    FeedbackEvent,
)
from clients.pb import bundles_pb2, common_pb2, feedback_pb2, spans_pb2, trace_gateway_service_pb2
from clients.span import UNSET, SpanHandle

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def set_attribute_value(target: common_pb2.AttributeValue, value: Any) -> None:
    """Fill ``target`` from a Python value (see the module docstring for the mapping)."""
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if _INT64_MIN <= value <= _INT64_MAX:
            target.int_value = value
        else:
            target.double_value = float(value)
    elif isinstance(value, float):
        target.double_value = value
    elif isinstance(value, list | tuple):
        if all(isinstance(item, str) for item in value):
            target.string_list_value.values.extend(value)
        else:
            target.json_value = json.dumps(value, default=str)
    elif isinstance(value, dict):
        target.json_value = json.dumps(value, default=str)
    else:
        target.string_value = str(value)


def fill_attributes(target: MutableMapping[str, common_pb2.AttributeValue], attributes: Mapping[str, Any]) -> None:
    """Copy a mapping of attributes into a protobuf map field, skipping ``None`` values."""
    for key, value in attributes.items():
        if value is not None:
            set_attribute_value(target[key if isinstance(key, str) else str(key)], value)


def encode_span(span: SpanHandle) -> spans_pb2.Span:
    """Convert a finished span to its wire form."""
    trace_id = span._trace.trace_id
    out = spans_pb2.Span(
        trace_id=trace_id.to_bytes(16, "big"),
        span_id=span._span_id.to_bytes(8, "big"),
        name=span._name,
        span_type=span._span_type,
        start_time_unix_nano=span._start_ns,
        end_time_unix_nano=max(span._end_ns, span._start_ns),
        status_code=span._status_code,  # type: ignore[arg-type]
    )
    if span._parent_id:
        out.parent_span_id = span._parent_id.to_bytes(8, "big")
    status_message = getattr(span, "_status_message", "")
    if status_message:
        out.status_message = status_message
    if span._attrs:
        fill_attributes(out.attributes, span._attrs)
    events = getattr(span, "_events", None)
    if events:
        for name, time_unix_nano, attributes in events:
            event = out.events.add(name=name, time_unix_nano=time_unix_nano)
            if attributes:
                fill_attributes(event.attributes, attributes)
    inputs = getattr(span, "_inputs", UNSET)
    if inputs is not UNSET:
        out.inputs_json = json.dumps(inputs, default=str)
    outputs = getattr(span, "_outputs", UNSET)
    if outputs is not UNSET:
        out.outputs_json = json.dumps(outputs, default=str)
    tags = getattr(span, "_tags", None)
    if tags:
        trace_tags = out.trace_tags
        for key, value in tags.items():
            trace_tags[str(key)] = value if isinstance(value, str) else str(value)
    return out


def encode_spans_chunk(spans: Iterable[SpanHandle]) -> tuple[bytes, int]:
    """Serialise spans as a partial ``ExportSpansRequest`` (protobuf concatenation appends
    repeated fields, so chunks can be joined). Returns the bytes and how many spans failed to
    encode (they are left out)."""
    request = trace_gateway_service_pb2.ExportSpansRequest()
    failed = 0
    for span in spans:
        try:
            request.spans.append(encode_span(span))
        except Exception:
            failed += 1
    return request.SerializeToString(), failed


def export_header(experiment_name: str, service_name: str) -> bytes:
    """The scalar fields of every ``ExportSpansRequest``, serialised once."""
    return trace_gateway_service_pb2.ExportSpansRequest(
        experiment_name=experiment_name, service_name=service_name
    ).SerializeToString()


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
