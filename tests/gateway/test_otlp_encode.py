"""The hand-written OTLP encoder, checked by parsing its bytes with the generated classes."""

from __future__ import annotations

import math
import random
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from gateway.export.otlp_encode import SCOPE_NAME, encode_traces
from gateway.model import SpanEvent, SpanRecord, SpanStatus, TraceRecord

TRACE = "0af7651916cd43dd8448eb211c80319c"


def python_value(v: AnyValue) -> Any:
    """An ``AnyValue`` back as the Python value the encoder was given (``None`` when unset)."""
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [python_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: python_value(kv.value) if kv.HasField("value") else None for kv in v.kvlist_value.values}
    return getattr(v, kind)


def attributes(span: Span) -> dict[str, Any]:
    return {kv.key: python_value(kv.value) if kv.HasField("value") else None for kv in span.attributes}


def spans_of(payload: bytes) -> list[Span]:
    request = ExportTraceServiceRequest.FromString(payload)
    assert len(request.resource_spans) == 1
    assert not request.resource_spans[0].HasField("resource")  # MLflow would tag every trace with it
    (scope_spans,) = request.resource_spans[0].scope_spans
    assert scope_spans.scope.name == SCOPE_NAME
    return list(scope_spans.spans)


def record(span_id: str, parent: str | None, **kw: Any) -> SpanRecord:
    return SpanRecord(
        TRACE,
        span_id,
        parent,
        kw.pop("name", "step"),
        kw.pop("span_type", "CHAIN"),
        1_700_000_000_000_000_000,
        1_700_000_000_500_000_000,
        **kw,
    )


def one_span_trace(attrs: dict[str, Any]) -> TraceRecord:
    return TraceRecord(TRACE, "e", [record("b7ad6b7169203331", None, attributes=attrs)], {})


def test_every_value_type_round_trips() -> None:
    values = {
        "s": "日本語",
        "empty": "",
        "t": True,
        "f": False,
        "zero": 0,
        "neg": -5,
        "max": 2**63 - 1,
        "min": -(2**63),
        "half": 1.5,
        "negzero": -0.0,
        "list": [1, "a", None, [2.5]],
        "tuple": (True,),
        "dict": {"a": {"b": [1, {"c": "d"}]}, "n": None},
        "empty_list": [],
        "empty_dict": {},
    }
    (span,) = spans_of(encode_traces([one_span_trace(values)]))
    got = attributes(span)
    assert got.pop("mlflow.spanType") == "CHAIN"
    assert got == {**values, "tuple": [True]}
    assert math.copysign(1.0, got["negzero"]) == -1.0
    kinds = {kv.key: kv.value.WhichOneof("value") for kv in span.attributes}
    assert (kinds["t"], kinds["zero"], kinds["half"], kinds["empty"]) == (
        "bool_value",
        "int_value",
        "double_value",
        "string_value",
    )


def test_out_of_range_ints_and_unknown_types_become_text_and_none_is_sent_without_a_value() -> None:
    attrs = {"big": 2**63, "small": -(2**70), "obj": SpanStatus.OK, "nothing": None}
    (span,) = spans_of(encode_traces([one_span_trace(attrs)]))
    got = attributes(span)
    assert (got["big"], got["small"], got["obj"]) == (str(2**63), str(-(2**70)), str(SpanStatus.OK))
    assert "nothing" in got and got["nothing"] is None


def test_the_cache_keeps_equal_values_of_different_types_apart() -> None:
    spans = [
        record(f"{i + 1:016x}", None if i == 0 else "0000000000000001", attributes={"v": v})
        for i, v in enumerate([True, 1, 1.0, "1", 1, True, 1.0])
    ]
    got = [attributes(s)["v"] for s in spans_of(encode_traces([TraceRecord(TRACE, "e", spans, {})]))]
    assert [(type(v), v) for v in got] == [
        (bool, True),
        (int, 1),
        (float, 1.0),
        (str, "1"),
        (int, 1),
        (bool, True),
        (float, 1.0),
    ]


def test_span_fields_status_events_and_root_conventions() -> None:
    root = record(
        "b7ad6b7169203331",
        None,
        name="handle_message",
        status=SpanStatus.OK,
        inputs={"message": "hi"},
        outputs="done",
        attributes={"k": 1},
    )
    llm = record(
        "00f067aa0ba902b7",
        "b7ad6b7169203331",
        name="bedrock_generate",
        span_type="LLM",
        status=SpanStatus.ERROR,
        status_message="throttled",
        attributes={
            "input_tokens": 10,
            "output_tokens": 5,
            "bedrock_model_id": "m-1",
            "provider": "bedrock",
            "input_cost_usd": 0.5,
            "output_cost_usd": 0.25,
        },
        events=[SpanEvent("exception", 1_700_000_000_100_000_000, {"exception.message": "boom"})],
    )
    unset = record("1111111111111111", "b7ad6b7169203331", span_type="")
    tags = {"session_id": "sess-1", "intent": "recommendation"}
    got_root, got_llm, got_unset = spans_of(encode_traces([TraceRecord(TRACE, "e", [root, llm, unset], tags)]))

    assert got_root.trace_id.hex() == TRACE and got_root.span_id.hex() == "b7ad6b7169203331"
    assert got_root.parent_span_id == b"" and got_llm.parent_span_id.hex() == "b7ad6b7169203331"
    assert (got_root.name, got_root.kind) == ("handle_message", Span.SPAN_KIND_INTERNAL)
    assert (got_root.start_time_unix_nano, got_root.end_time_unix_nano) == (root.start_time_ns, root.end_time_ns)
    assert got_root.status.code == Status.STATUS_CODE_OK
    assert attributes(got_root) == {
        "mlflow.spanType": "CHAIN",
        "mlflow.spanInputs": {"message": "hi"},
        "mlflow.spanOutputs": "done",
        "k": 1,
        "mlflow.traceTag.session_id": "sess-1",
        "mlflow.traceTag.intent": "recommendation",
        "session.id": "sess-1",
    }

    assert (got_llm.status.code, got_llm.status.message) == (Status.STATUS_CODE_ERROR, "throttled")
    llm_attrs = attributes(got_llm)
    assert llm_attrs["mlflow.chat.tokenUsage"] == {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
    assert (llm_attrs["mlflow.llm.model"], llm_attrs["mlflow.llm.provider"]) == ("m-1", "bedrock")
    assert llm_attrs["mlflow.llm.cost"] == {"input_cost": 0.5, "output_cost": 0.25, "total_cost": 0.75}
    assert not any(k.startswith("mlflow.traceTag.") for k in llm_attrs)  # trace tags go on the root only
    (event,) = got_llm.events
    assert (event.name, event.time_unix_nano) == ("exception", 1_700_000_000_100_000_000)
    assert {kv.key: kv.value.string_value for kv in event.attributes} == {"exception.message": "boom"}

    assert got_unset.HasField("status") and got_unset.status.code == Status.STATUS_CODE_UNSET
    assert attributes(got_unset)["mlflow.spanType"] == "UNKNOWN"


def test_many_traces_in_one_request_keep_order_and_lengths() -> None:
    rng = random.Random(3)
    traces = []
    for t in range(40):
        tid = f"{t + 1:032x}"
        # Long values cross the one-byte length boundaries (127/128, 16,383/16,384).
        spans = [
            SpanRecord(
                tid,
                f"{t * 100 + i + 1:016x}",
                None if i == 0 else f"{t * 100 + 1:016x}",
                f"s{i}",
                "CHAIN",
                1 + i,
                2 + i,
                attributes={"text": "x" * rng.choice([0, 127, 128, 16_383, 16_384])},
            )
            for i in range(rng.randint(1, 20))
        ]
        traces.append(TraceRecord(tid, "e", spans, {}))
    got = spans_of(encode_traces(traces))
    expected = [(s.trace_id, s.span_id, s.attributes["text"]) for t in traces for s in t.spans]
    assert [(s.trace_id.hex(), s.span_id.hex(), attributes(s)["text"]) for s in got] == expected
