import json
from typing import Any

from clients.pb import spans_pb2
from gateway.model import SpanStatus
from gateway.receive import decode_events, decode_spans

T = bytes(range(1, 17))
S1 = bytes(range(1, 9))
S2 = bytes(range(2, 10))


def span(**kw: object) -> spans_pb2.Span:
    base = dict(
        trace_id=T,
        span_id=S1,
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=1_000,
        end_time_unix_nano=2_000,
        status_code=1,
    )
    base.update(kw)
    return spans_pb2.Span(**base)  # type: ignore[arg-type]


def test_valid_span_is_converted_with_typed_attributes() -> None:
    s = span(inputs_json='{"message": "hi"}', trace_tags={"intent": "faq"})
    s.attributes["n"].int_value = 3
    s.attributes["ok"].bool_value = True
    s.attributes["score"].double_value = 0.5
    s.attributes["ids"].string_list_value.values.extend(["a", "b"])
    s.attributes["filters"].json_value = json.dumps({"lang": "ja"})
    out = decode_spans.decode_native_spans([s])
    assert not out.rejections
    rec = out.spans[0]
    assert rec.trace_id == T.hex() and rec.span_id == S1.hex() and rec.parent_span_id is None
    assert rec.status is SpanStatus.OK
    assert rec.attributes == {"n": 3, "ok": True, "score": 0.5, "ids": ["a", "b"], "filters": {"lang": "ja"}}
    assert rec.inputs == {"message": "hi"}
    assert rec.trace_tags == {"intent": "faq"}


def test_bad_spans_are_rejected_by_field_and_the_rest_accepted() -> None:
    spans = [
        span(),
        span(trace_id=b"\x00" * 16),
        span(span_id=b"abc"),
        span(name=""),
        span(end_time_unix_nano=10),
        span(inputs_json="{not json"),
        span(parent_span_id=S2, span_id=S2),
    ]
    out = decode_spans.decode_native_spans(spans)
    assert [s.span_id for s in out.spans] == [S1.hex(), S2.hex()]
    fields = [(r.index, r.field) for r in out.rejections]
    assert fields == [
        (1, "spans[1].trace_id"),
        (2, "spans[2].span_id"),
        (3, "spans[3].name"),
        (4, "spans[4].end_time_unix_nano"),
        (5, "spans[5].inputs_json"),
    ]
    assert "all zero" in out.rejections[0].reason
    assert "valid JSON" in out.rejections[4].reason


def test_reserved_mlflow_keys_are_stripped_and_counted() -> None:
    s = span(trace_tags={"mlflow.traceName": "x", "intent": "faq"})
    s.attributes["mlflow.spanInputs"].string_value = "spoof"
    s.attributes["request_id"].string_value = "r1"
    out = decode_spans.decode_native_spans([s])
    assert out.stripped_keys == 2
    assert out.spans[0].attributes == {"request_id": "r1"}
    assert out.spans[0].trace_tags == {"intent": "faq"}


def test_otlp_spans_map_mlflow_conventions() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    otlp = req.resource_spans.add().scope_spans.add().spans.add()
    otlp.trace_id, otlp.span_id, otlp.name = T, S1, "llm_call"
    otlp.start_time_unix_nano, otlp.end_time_unix_nano = 5, 9
    otlp.status.code = 2
    otlp.status.message = "boom"
    for key, value in (
        ("mlflow.spanType", '"LLM"'),
        ("mlflow.spanInputs", '{"q": 1}'),
        ("mlflow.traceTag.intent", "faq"),
        ("mlflow.traceRequestId", "tr-spoof"),
        ("app", "x"),
    ):
        kv = otlp.attributes.add()
        kv.key = key
        kv.value.string_value = value
    bad = req.resource_spans[0].scope_spans[0].spans.add()
    bad.trace_id = b"short"
    out = decode_spans.decode_otlp_spans(req.resource_spans)
    rec = out.spans[0]
    assert rec.span_type == "LLM"
    assert rec.inputs == {"q": 1}
    assert rec.trace_tags == {"intent": "faq"}
    assert rec.attributes == {"app": "x"}
    assert rec.status is SpanStatus.ERROR and rec.status_message == "boom"
    assert out.stripped_keys == 1
    assert out.rejections[0].index == 1 and out.rejections[0].field.endswith("spans[1].trace_id")


def test_feedback_validation_names_the_field() -> None:
    from clients.pb import feedback_pb2

    good = feedback_pb2.FeedbackEvent(event_id="e1", trace_id="AB" * 16, feedback=2, response_id="resp_1")  # type: ignore[arg-type]
    bad_id = feedback_pb2.FeedbackEvent(event_id="e2", trace_id="xyz", feedback=2)  # type: ignore[arg-type]
    no_value = feedback_pb2.FeedbackEvent(event_id="e3", trace_id="ab" * 16)
    records, rejections = decode_events.decode_feedback([good, bad_id, no_value])
    assert [r.event_id for r in records] == ["e1"]
    assert records[0].trace_id == "ab" * 16
    assert [r.field for r in rejections] == ["events[1].trace_id", "events[2].feedback"]


def test_rejections_name_the_field_inside_attributes_events_and_tags() -> None:
    no_value = span()
    no_value.attributes["empty"].SetInParent()
    bad_json = span()
    bad_json.attributes["filters"].json_value = "{oops"
    bad_event = span()
    bad_event.events.add(name="exception", time_unix_nano=5).attributes["x"].SetInParent()
    long_tag = span(trace_tags={"intent": "x" * (decode_spans.MAX_TAG_VALUE_CHARS + 1)})
    spans = [
        no_value,
        bad_json,
        bad_event,
        long_tag,
        span(status_code=7),
        span(parent_span_id=b"\x00" * 8),
        span(start_time_unix_nano=0),
        span(name="n" * 300),
    ]
    out = decode_spans.decode_native_spans(spans)
    assert not out.spans
    assert [(r.index, r.field) for r in out.rejections] == [
        (0, "spans[0].attributes['empty']"),
        (1, "spans[1].attributes['filters']"),
        (2, "spans[2].events[0].attributes['x']"),
        (3, "spans[3].trace_tags['intent']"),
        (4, "spans[4].status_code"),
        (5, "spans[5].parent_span_id"),
        (6, "spans[6].start_time_unix_nano"),
        (7, "spans[7].name"),
    ]
    assert out.rejections[0].reason == "attribute value has no value set"
    assert "valid JSON" in out.rejections[1].reason and "unknown value 7" in out.rejections[4].reason


# One bad value per scalar field the native hot path checks with its fast boolean test. Each must
# be rejected by the fast test *and* named by the slow path (``_native_problem``), never fall
# through to its "invalid span" fallback: the two sets of checks must mirror each other.
BAD_SCALARS: list[tuple[dict[str, object], str, str]] = [
    ({"trace_id": b"\x01" * 15}, ".trace_id", "must be 16 bytes"),
    ({"trace_id": bytes(16)}, ".trace_id", "must not be all zero"),
    ({"span_id": b"\x01" * 9}, ".span_id", "must be 8 bytes"),
    ({"span_id": bytes(8)}, ".span_id", "must not be all zero"),
    ({"parent_span_id": b"\x01" * 3}, ".parent_span_id", "must be 8 bytes"),
    ({"parent_span_id": bytes(8)}, ".parent_span_id", "must not be all zero"),
    ({"name": ""}, ".name", "must not be empty"),
    ({"name": "n" * (decode_spans.MAX_NAME_CHARS + 1)}, ".name", "longer than"),
    ({"start_time_unix_nano": 0}, ".start_time_unix_nano", "must be set"),
    ({"end_time_unix_nano": 999}, ".end_time_unix_nano", "must not be before"),
    ({"status_code": 7}, ".status_code", "unknown value 7"),
]


def test_every_fast_check_is_named_by_the_slow_path() -> None:
    for change, field, reason in BAD_SCALARS:
        out = decode_spans.decode_native_spans([span(**change)])
        assert out.spans == [], change
        [rejection] = out.rejections
        assert (rejection.field, reason in rejection.reason) == (f"spans[0]{field}", True), (change, rejection)
    # and a span with none of these problems passes both
    assert decode_spans.decode_native_spans([span(parent_span_id=S2)]).rejections == []


def nested(depth: int, kind: str = "dict") -> object:
    value: object = "leaf"
    for _ in range(depth):
        value = {"k": value} if kind == "dict" else [value]
    return value


def test_json_that_a_later_stage_would_choke_on_is_rejected_with_its_span_alone() -> None:
    poisons = {
        "surrogate in inputs": span(inputs_json='{"m": "\\ud800"}'),
        "surrogate in a key": span(outputs_json='{"\\udc00": 1}'),
        "too deep a list": span(inputs_json="[" * 60 + "]" * 60),
        "too deep an object": span(outputs_json=json.dumps(nested(decode_spans.MAX_JSON_DEPTH + 1))),
        "far too deep": span(inputs_json="[" * 10_000 + "]" * 10_000),
        "integer of 5000 digits": span(inputs_json="1" * 5000),
        "time from 2262 on": span(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10),
    }
    deep_attr = span()
    deep_attr.attributes["j"].json_value = "[" * 60 + "]" * 60
    poisons["too deep a json_value"] = deep_attr
    fine = span(span_id=S2, inputs_json='{"m": "caf\\u00e9 \\ud83d\\ude00"}')  # a surrogate *pair* is fine
    out = decode_spans.decode_native_spans([*poisons.values(), fine])
    assert [r.index for r in out.rejections] == list(range(len(poisons))), out.rejections
    assert [s.span_id for s in out.spans] == [S2.hex()] and out.spans[0].inputs == {"m": "café 😀"}
    reasons = {name: r.reason for name, r in zip(poisons, out.rejections, strict=True)}
    assert "surrogate" in reasons["surrogate in inputs"] and "surrogate" in reasons["surrogate in a key"]
    assert "deeper than" in reasons["too deep a list"] and "deeper than" in reasons["too deep a json_value"]
    assert "before 2262" in reasons["time from 2262 on"]


def test_the_deepest_json_accepted_survives_the_encoder_and_protobufs_decoder() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gateway.export.otlp_encode import encode_traces
    from gateway.model import TraceRecord

    for kind in ("dict", "list"):
        s = span(inputs_json=json.dumps(nested(decode_spans.MAX_JSON_DEPTH, kind)))
        s.attributes["j"].json_value = json.dumps(nested(decode_spans.MAX_JSON_DEPTH, kind))
        [record] = decode_spans.decode_native_spans([s]).spans
        payload = encode_traces([TraceRecord(record.trace_id, "e", [record], {})])
        assert ExportTraceServiceRequest.FromString(payload).resource_spans  # no DecodeError


def test_otlp_span_inputs_with_a_lone_surrogate_are_rejected() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()
    for i, text in enumerate(['"\\udc00"', "[" * 60 + "]" * 60, '{"fine": true}']):
        s = scope.spans.add(
            trace_id=T, span_id=bytes([i + 1]) * 8, name="n", start_time_unix_nano=1, end_time_unix_nano=2
        )
        kv = s.attributes.add(key="mlflow.spanInputs")
        kv.value.string_value = text
    out = decode_spans.decode_otlp_spans(req.resource_spans)
    assert [r.index for r in out.rejections] == [0, 1] and [s.inputs for s in out.spans] == [{"fine": True}]


def test_every_input_bound_rejects_its_span_alone_and_names_it() -> None:
    from gateway.config import InputLimits

    lim = InputLimits(
        max_attributes=4, max_key_chars=16, max_value_chars=32, max_io_json_chars=64, max_status_chars=8, max_events=2
    )
    many = span()
    for i in range(5):
        many.attributes[f"a{i}"].int_value = i
    long_key = span()
    long_key.attributes["k" * 10_000].int_value = 1
    long_value = span()
    long_value.attributes["v"].string_value = "x" * 33
    long_json = span()
    long_json.attributes["j"].json_value = json.dumps("x" * 40)
    long_list = span()
    long_list.attributes["l"].string_list_value.values.extend(["x" * 20, "y" * 20])
    events = span()
    for _ in range(3):
        events.events.add(name="e", time_unix_nano=1)
    long_event = span()
    long_event.events.add(name="n" * 17, time_unix_nano=1)
    cases = {
        ".attributes": many,
        ".attributes['kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk'…]": long_key,
        ".attributes['v']": long_value,
        ".attributes['j']": long_json,
        ".attributes['l']": long_list,
        ".span_type": span(span_type="T" * 17),
        ".status_message": span(status_message="m" * 9),
        ".events": events,
        ".events[0].name": long_event,
        ".inputs_json": span(inputs_json=json.dumps("i" * 70)),
    }
    fine = span(span_id=S2)
    fine.attributes["ok"].string_value = "x" * 32
    out = decode_spans.decode_native_spans([*cases.values(), fine], lim)
    assert [r.field for r in out.rejections] == [f"spans[{i}]{f}" for i, f in enumerate(cases)]
    assert [s.span_id for s in out.spans] == [S2.hex()]
    assert all(len(r.field) < 120 for r in out.rejections)  # a 10,000-character key is not echoed back


def test_otlp_spans_have_the_same_bounds() -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from gateway.config import InputLimits

    lim = InputLimits(
        max_attributes=2, max_key_chars=20, max_value_chars=8, max_io_json_chars=64, max_status_chars=8, max_events=1
    )
    req = ExportTraceServiceRequest()
    scope = req.resource_spans.add().scope_spans.add()

    def add(i: int) -> Any:
        return scope.spans.add(
            trace_id=T, span_id=bytes([i + 1]) * 8, name="n", start_time_unix_nano=1, end_time_unix_nano=2
        )

    add(0).attributes.add(key="k" * 21).value.int_value = 1
    s = add(1)
    for k in ("a", "b", "c"):
        s.attributes.add(key=k).value.int_value = 1
    add(2).attributes.add(key="v").value.string_value = "x" * 9
    add(3).status.message = "m" * 9
    add(4).attributes.add(key="mlflow.spanInputs").value.string_value = json.dumps("x" * 40)  # within the I/O bound
    out = decode_spans.decode_otlp_spans(req.resource_spans, lim)
    assert [r.index for r in out.rejections] == [0, 1, 2, 3] and len(out.spans) == 1
