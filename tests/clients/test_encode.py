"""The hand-written span encoder produces what the generated protobuf classes would."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from clients import SpanHandle, Tracer
from clients.encode import encode_span, encode_spans_chunk
from clients.pb import common_pb2, spans_pb2
from clients.pb import trace_gateway_service_pb2 as svc_pb2
from clients.span import wire_span_id
from tests.clients.conftest import MakeTracer


def _reference_value(target: common_pb2.AttributeValue, value: Any) -> None:
    """The documented mapping, written with the generated classes."""
    if isinstance(value, str):
        target.string_value = value
    elif isinstance(value, bool):
        target.bool_value = value
    elif isinstance(value, int):
        if -(2**63) <= value < 2**63:
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


def _reference_attributes(target: Any, attributes: dict[str, Any]) -> None:
    for key, value in attributes.items():
        if value is not None:
            _reference_value(target[str(key)], value)


def _idle_tracer(make_tracer: MakeTracer, dead_target: str) -> Tracer:
    """A tracer whose sender never wakes: finished spans stay in its queue."""
    return make_tracer(
        target=dead_target,
        flush_interval_s=3600.0,
        encode_interval_s=3600.0,
        max_batch_spans=10_000,
        max_queue_spans=10_000,
    )


def _take(tracer: Tracer) -> list[SpanHandle]:
    spans = list(tracer._sink.queue)
    tracer._sink.queue.clear()
    return spans


ODD_VALUES: list[Any] = [
    "",
    "plain",
    "ünïcödé ✓ 漫画",
    "x" * 300,  # longer than what the encoder caches
    True,
    False,
    0,
    1,
    -1,
    127,
    128,
    2**63 - 1,
    -(2**63),
    2**63,
    -(2**70),
    0.0,
    -0.0,
    0.5,
    -1e300,
    math.inf,
    [],
    ["a", "b"],
    ("t1", "t2"),
    [1, "a"],
    {"nested": [1, 2], "k": None},
    None,
    object.__name__,
    3 + 4j,
]


def test_every_value_type_matches_the_generated_encoding(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = _idle_tracer(make_tracer, dead_target)
    for _ in range(2):  # the second round is served from the encoder's caches
        for i, value in enumerate(ODD_VALUES):
            with tracer.start_span(f"s{i}", span_type="TOOL", attributes={"given": value, "same": 1}) as span:
                span.set_attribute("added", value)
                span.set_attribute("same", True)  # wins over the start_span value
        spans = _take(tracer)
        data, failed = encode_spans_chunk(spans)
        assert failed == 0
        decoded = svc_pb2.ExportSpansRequest.FromString(data).spans
        assert len(decoded) == len(ODD_VALUES)
        for value, span, got in zip(ODD_VALUES, spans, decoded, strict=True):
            want = spans_pb2.Span()
            _reference_attributes(want.attributes, {"given": value, "same": True, "added": value})
            assert dict(got.attributes) == dict(want.attributes), value
            assert got.span_id == wire_span_id(span._span_seq).to_bytes(8, "little")
            assert got.span_id.hex() == span.span_id


def test_a_full_span_matches_the_generated_encoding(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = _idle_tracer(make_tracer, dead_target)
    with tracer.start_span("root", span_type="CHAIN", attributes={"request_id": "r1"}) as root:
        root.set_inputs({"message": "漫画 please", "n": 1})
        tracer.update_current_trace(tags={"intent": "recommendation", "turn": 3})  # type: ignore[dict-item]
        with tracer.start_span("child", attributes={"k": 20}) as child:
            child.add_event("cache_miss", {"key": "k1", "attempt": 2, "skip": None})
            child.add_event("bare")
            child.set_status("ERROR", "upstream said no")
            child.set_outputs(None)
        root.set_attributes({"chunk_ids": ["c1", "c2"], "request_id": "r2"})
        root.set_outputs(["done"])
    child_span, root_span = _take(tracer)
    got_child, got_root = (encode_span(span) for span in (child_span, root_span))

    want_root = spans_pb2.Span(
        trace_id=int(root.trace_id, 16).to_bytes(16, "big"),
        span_id=bytes.fromhex(root.span_id),
        name="root",
        span_type="CHAIN",
        start_time_unix_nano=root_span._start_ns,
        end_time_unix_nano=root_span._end_ns,
        status_code=spans_pb2.SPAN_STATUS_CODE_OK,
        inputs_json=json.dumps({"message": "漫画 please", "n": 1}),
        outputs_json='["done"]',
        trace_tags={"intent": "recommendation", "turn": "3"},
    )
    _reference_attributes(want_root.attributes, {"request_id": "r2", "chunk_ids": ["c1", "c2"]})
    assert got_root == want_root

    want_child = spans_pb2.Span(
        trace_id=want_root.trace_id,
        span_id=bytes.fromhex(child.span_id),
        parent_span_id=want_root.span_id,
        name="child",
        span_type="UNKNOWN",
        start_time_unix_nano=child_span._start_ns,
        end_time_unix_nano=child_span._end_ns,
        status_code=spans_pb2.SPAN_STATUS_CODE_ERROR,
        status_message="upstream said no",
        outputs_json="null",
    )
    _reference_attributes(want_child.attributes, {"k": 20})
    for name, when, attributes in child_span._events:
        event = want_child.events.add(name=name, time_unix_nano=when)
        if attributes:
            _reference_attributes(event.attributes, dict(attributes))
    assert got_child == want_child


def test_a_span_that_cannot_be_encoded_is_left_out_and_counted(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = _idle_tracer(make_tracer, dead_target)
    with tracer.start_span("good"):
        pass
    with tracer.start_span("bad", attributes={"text": "\ud800"}):  # a lone surrogate is not UTF-8
        pass
    data, failed = encode_spans_chunk(_take(tracer))
    assert failed == 1
    assert [span.name for span in svc_pb2.ExportSpansRequest.FromString(data).spans] == ["good"]


def test_span_ids_are_unique_nonzero_and_spread() -> None:
    ids = [wire_span_id(seq) for seq in range(1, 20_001)]
    assert wire_span_id(0) == 0
    assert len(set(ids)) == len(ids) and 0 not in ids
    top_bits = {span_id >> 56 for span_id in ids}
    assert len(top_bits) == 256  # consecutive counter values do not give neighbouring ids


@pytest.mark.parametrize("nested", [1, 3])
def test_ids_and_links_survive_encoding(make_tracer: MakeTracer, dead_target: str, nested: int) -> None:
    tracer = _idle_tracer(make_tracer, dead_target)
    handles: list[SpanHandle] = []

    def nest(depth: int) -> None:
        with tracer.start_span(f"d{depth}") as span:
            handles.append(span)
            if depth < nested:
                nest(depth + 1)
                nest(depth + 1)

    nest(1)
    data, failed = encode_spans_chunk(_take(tracer))
    assert not failed
    decoded = {span.span_id.hex(): span for span in svc_pb2.ExportSpansRequest.FromString(data).spans}
    assert len(decoded) == len(handles)
    for handle in handles:
        wire = decoded[handle.span_id]
        assert wire.trace_id.hex() == handle.trace_id
        assert (wire.parent_span_id.hex() or None) == handle.parent_span_id
