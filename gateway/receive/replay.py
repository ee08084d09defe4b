"""Reading WAL records back into the gateway's model (proto types stop in ``receive/``).

A span record holds an RPC's request bytes as they arrived (native ``ExportSpansRequest`` or
OTLP ``ExportTraceServiceRequest``); they are decoded exactly as the receiver decoded them, so the
same spans come out (the invalid ones were counted when they first arrived, and are not again).
Event records hold the events the receiver accepted, as JSON (``events_payload``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from clients.pb import trace_gateway_service_pb2
from gateway.config import InputLimits
from gateway.export.segments import Kind, bundle_to_json, feedback_from_dict, feedback_to_json
from gateway.export.wal import Record, RecordKind
from gateway.model import BundleRecord, FeedbackRecord, SpanRecord
from gateway.receive import decode_spans


def events_payload(records: Sequence[FeedbackRecord] | Sequence[BundleRecord]) -> bytes:
    """The WAL payload of accepted feedback or bundle events."""
    encode = feedback_to_json if records and isinstance(records[0], FeedbackRecord) else bundle_to_json
    return b"[" + b",".join(encode(r) for r in records) + b"]"  # type: ignore[arg-type]


def decode_record(
    record: Record, limits: InputLimits
) -> tuple[Kind, list[SpanRecord] | list[FeedbackRecord] | list[BundleRecord]]:
    if record.kind is RecordKind.NATIVE_SPANS:
        native = trace_gateway_service_pb2.ExportSpansRequest.FromString(record.payload)
        return Kind.SPANS, decode_spans.decode_native_spans(native.spans, limits).spans
    if record.kind is RecordKind.OTLP_SPANS:
        otlp = trace_service_pb2.ExportTraceServiceRequest.FromString(record.payload)
        return Kind.SPANS, decode_spans.decode_otlp_spans(otlp.resource_spans, limits).spans
    rows = json.loads(record.payload)
    if record.kind is RecordKind.FEEDBACK:
        return Kind.FEEDBACK, [feedback_from_dict(r) for r in rows]
    return Kind.BUNDLE, [BundleRecord(**r) for r in rows]
