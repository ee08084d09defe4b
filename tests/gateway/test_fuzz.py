"""Property-based fuzz of both receivers (issue 17): arbitrary bytes, nesting, sizes and unicode.

The property: **the gateway stays healthy, and every well-formed trace sent alongside lands.**
Three levels, fastest first:

1. Decoders (many examples): ``decode_native_spans`` / ``decode_otlp_spans`` (and the event
   decoders) never raise; every span is either accepted or named in a rejection, exactly once;
   every accepted span encodes for MLflow (``encode_traces``), before and after redaction, and
   the encoded request parses back under protobuf's depth limit (what MLflow's ingest does).
2. Bytes: arbitrary, truncated, mutated and invalid-UTF-8 requests through a real gRPC server
   on loopback answer OK or INVALID_ARGUMENT (INVALID_ARGUMENT exactly when protobuf cannot
   parse them; RESOURCE_EXHAUSTED past the size bounds), never UNKNOWN or INTERNAL; each
   unparseable one is counted; afterwards health answers SERVING, nothing was lost in delivery,
   no loop boundary logged an error, and a well-formed trace still lands.
3. End to end: one fuzzed (possibly poisonous) trace beside a well-formed innocent one in the
   same request, native ``ExportSpans`` and OTLP ``Export``: the innocent trace reaches the
   writer whatever the poison was, and the gateway's answer names exactly the spans the decoder
   rejects.

The security probe's cases (``../shared/research/security-probe-2026-12.md``: deep JSON, lone
surrogates, huge integers, times from 2^63, random and truncated bytes, huge attribute counts,
long keys) are explicit ``@example``s and plain regression tests. Hypothesis runs derandomized,
without an example database, so CI sees the same examples on every run.

Surrogates: protobuf's Python strings refuse lone surrogates on assignment, and its parser
refuses them (and any invalid UTF-8) on the wire, so they reach the decoders only as JSON
``\\ud800`` escapes (``inputs_json``, ``json_value``, OTLP ``mlflow.spanInputs``); as raw
bytes they are part of the bytes-level fuzz.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import DecodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, assume, example, given, settings, target
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1 import common_pb2 as otlp_common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2 as otlp_trace_pb2
from prometheus_client import CollectorRegistry

from clients.pb import (
    bundles_pb2,
    common_pb2,
    feedback_pb2,
    spans_pb2,
    trace_gateway_service_pb2,
    trace_gateway_service_pb2_grpc,
)
from gateway import config as gateway_config
from gateway.export.otlp_encode import encode_traces
from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord, TraceRecord, approx_span_bytes
from gateway.process.redactor import Redactor
from gateway.receive import decode_events, decode_spans
from gateway.server import ThreadedGateway
from tests.fakes import RecordingWriter
from tests.support import wait_for

ExportTraceServiceRequest = trace_service_pb2.ExportTraceServiceRequest

# Derandomized and without a database: the same examples on every run, nothing written to
# .hypothesis/examples. Strategies below build large values from a few choices (a length, a
# depth), so too_slow / data_too_large are not about the code under test.
FUZZ = settings(
    derandomize=True,
    database=None,
    deadline=None,
    print_blob=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.large_base_example],
)
# A failing example holding megabyte strings would otherwise turn into this warning (an error
# under filterwarnings=error) instead of the failure report.
pytestmark = pytest.mark.filterwarnings("ignore:Generating overly large repr:hypothesis.errors.HypothesisWarning")
LIMITS = decode_spans.DEFAULT_LIMITS
CONFIG = gateway_config.load({})
MAX_REJECTION_TEXT = 1024  # a rejection never echoes a megabyte key back (probe finding 11)
INNOCENT_WAIT_S = 10.0

# ---- strategies: values --------------------------------------------------------------------

# Arbitrary unicode, surrogates excluded (protobuf strings cannot hold them), control
# characters and NUL included.
TEXT = st.text(max_size=24)
SURROGATES = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


def around(*bounds: int, char: str = "x") -> st.SearchStrategy[str]:
    """Strings of exactly ``bound - 1``, ``bound`` and ``bound + 1`` characters (ASCII or not)."""
    lengths = sorted({n for b in bounds for n in (b - 1, b, b + 1) if n >= 0})
    return st.builds(lambda n, c: c * n, st.sampled_from(lengths), st.sampled_from([char, "界", "😀"]))


RARE = st.sampled_from([False] * 11 + [True])  # not integers(): those favour 0; this shrinks to common


@st.composite
def _rarely(draw: st.DrawFn, common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    return draw(rare) if draw(RARE) else draw(common)


def rarely(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``rare`` one time in twelve: each field is hostile now and then, and a third to a half of
    the spans are accepted, so what the decoder accepts gets fuzzed too."""
    return _rarely(common, rare)


NAMES = rarely(st.text(min_size=1, max_size=24), st.one_of(st.just(""), around(decode_spans.MAX_NAME_CHARS)))
KEYS = st.one_of(
    TEXT,
    st.sampled_from(["mlflow.spanInputs", "mlflow.traceName", "mlflow.", "Mlflow.x", "input_tokens", "provider"]),
    TEXT.map(lambda s: "mlflow." + s),
    rarely(TEXT, around(LIMITS.max_key_chars, char="k")),
)
UINT64 = st.one_of(
    st.integers(0, 2**64 - 1),
    st.sampled_from([0, 1, 2**62, 2**63 - 2, 2**63 - 1, 2**63, 2**63 + 5, 2**64 - 2, 2**64 - 1]),
)
INT64 = st.one_of(st.integers(-(2**63), 2**63 - 1), st.sampled_from([-(2**63), -1, 0, 2**63 - 1]))
FLOATS = st.floats(allow_nan=True, allow_infinity=True)

JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**64), max_value=-(2**63) + 2),
    FLOATS,
    TEXT,
    st.text(st.one_of(st.characters(), SURROGATES), min_size=1, max_size=6),  # lone and paired surrogates
)
JSON_VALUES = st.recursive(
    JSON_LEAVES,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(TEXT, inner, max_size=4)),
    max_leaves=12,
)


@st.composite
def json_dumps(draw: st.DrawFn) -> str:
    """An arbitrary JSON value as text; lone surrogates come out as ``\\udXXX`` escapes."""
    value = draw(JSON_VALUES)
    ascii_only = draw(st.booleans())
    try:
        text = json.dumps(value, ensure_ascii=ascii_only)
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate has no UTF-8: escape it, as a sender would
        text = json.dumps(value, ensure_ascii=True)
    if draw(st.booleans()):
        text = text.replace("\\ud", "\\uD")  # JSON escapes are case-insensitive; the gateway's scan must be too
    return text


_LIMIT = decode_spans.MAX_JSON_DEPTH
# Depths up to 40 (past the bound, and past protobuf's 100 levels for objects, which
# cost three levels each), and far past it; arrays, objects or both, every level the same or mixed.
DEPTHS = st.sampled_from([*range(41), *range(_LIMIT - 4, 41), 60, 600, 10_000])  # more mass near the bounds
OPENERS = st.sampled_from([["["], ['{"k":'], ['{"":'], ["[1,"], ["[", '{"k":'], ['{"a":', "[", "[0,"]])
DEEP_LEAVES = st.sampled_from(["1", '"x"', "[]", "{}", '"\\ud800"', "null"])


@st.composite
def deep_json(draw: st.DrawFn) -> str:
    """JSON nested ``depth`` levels (arrays, objects, or both in turn), around MAX_JSON_DEPTH and far past it."""
    depth, openers, leaf = draw(DEPTHS), draw(OPENERS), draw(DEEP_LEAVES)
    opens = [openers[i % len(openers)] for i in range(depth)]
    closes = ["]" if o.startswith("[") else "}" for o in reversed(opens)]
    return "".join(opens) + leaf + "".join(closes)


HUGE_INTS = st.builds(
    lambda sign, n, lead: sign + lead + "9" * (n - 1),
    st.sampled_from(["", "-"]),
    st.sampled_from([19, 20, 4299, 4300, 4301, 5000]),
    st.sampled_from(["1", "9"]),
)
JSON_TEXT = st.one_of(
    json_dumps(),
    deep_json(),
    HUGE_INTS,
    st.sampled_from(["", "{", "[1,]", "NaN", "-Infinity", "1e400", '"\\ud800"', '"\\uDFFF"', '"\\ud83d\\ude00"']),
    rarely(json_dumps(), TEXT),  # now and then not JSON at all
)

# ---- strategies: native spans --------------------------------------------------------------
#
# Every strategy is built once, here: building one inside a draw costs hypothesis a validation
# each time, which was most of this file's run time.

STRING_VALUES = rarely(TEXT, around(LIMITS.max_value_chars))
JSON_VALUE_TEXT = rarely(json_dumps(), st.one_of(JSON_TEXT, around(LIMITS.max_value_chars, char="1")))
STRING_LISTS = st.lists(TEXT, max_size=4)
ATTRIBUTE_KINDS = st.sampled_from(["string", "bool", "int", "double", "list", "long_list", "json", "unset"])
ATTRIBUTE_KEYS = st.lists(KEYS, max_size=5, unique=True)
# Filler attributes: none usually, else just under or over max_attributes, or far over.
PADDING = rarely(st.just(0), st.sampled_from([LIMITS.max_attributes - 1, LIMITS.max_attributes + 1, 2_000]))
EVENT_COUNTS = st.integers(0, 2)
EVENT_PADDING = rarely(st.just(0), st.just(LIMITS.max_events + 1))
EVENT_NAMES = rarely(TEXT, around(LIMITS.max_key_chars))
SPAN_TYPES = rarely(TEXT, around(LIMITS.max_key_chars))
STATUS_MESSAGES = rarely(TEXT, around(LIMITS.max_status_chars))
STATUS_CODES = rarely(st.integers(0, 2), st.integers(-(2**31), 2**31 - 1))  # an open enum: any int32
# The JSON fields are where the probe's poisons live: hostile a quarter of the time, not rarely.
INPUTS = st.one_of(
    st.just(""), json_dumps(), JSON_TEXT, rarely(json_dumps(), around(LIMITS.max_io_json_chars, char="1"))
)
OUTPUTS = st.one_of(st.just(""), json_dumps(), JSON_TEXT)
TAGS = st.dictionaries(
    st.one_of(TEXT, TEXT.map(lambda k: "mlflow." + k), rarely(TEXT, around(decode_spans.MAX_TAG_KEY_CHARS))),
    rarely(TEXT, around(decode_spans.MAX_TAG_VALUE_CHARS)),
    max_size=3,
)
WEIRD_IDS = st.one_of(st.binary(max_size=20), st.sampled_from([b"", bytes(8), bytes(16), b"\xff" * 32]))


def _nonzero(raw: bytes) -> bytes:
    return raw if any(raw) else b"\x01" + raw[1:]  # hypothesis favours zeros: all-zero ids come from WEIRD_IDS


TRACE_IDS = rarely(st.binary(min_size=16, max_size=16).map(_nonzero), WEIRD_IDS)
SPAN_IDS = rarely(st.binary(min_size=8, max_size=8).map(_nonzero), WEIRD_IDS)
PARENT_KINDS = st.sampled_from(["root"] * 5 + ["child"] * 4 + ["itself", "weird"])
VALID_START = st.integers(1, 2**63 - 1)


@st.composite
def native_attribute(draw: st.DrawFn, target: common_pb2.AttributeValue) -> None:
    kind = draw(ATTRIBUTE_KINDS)
    if kind == "string":
        target.string_value = draw(STRING_VALUES)
    elif kind == "bool":
        target.bool_value = draw(st.booleans())
    elif kind == "int":
        target.int_value = draw(INT64)
    elif kind == "double":
        target.double_value = draw(FLOATS)
    elif kind in ("list", "long_list"):
        target.string_list_value.values.extend(draw(STRING_LISTS))
        if kind == "long_list":
            target.string_list_value.values.append(draw(STRING_VALUES))
    elif kind == "json":
        target.json_value = draw(JSON_VALUE_TEXT)


@st.composite
def native_attributes(draw: st.DrawFn, target: Any) -> None:
    """An arbitrary attribute map, sometimes padded to around ``max_attributes`` entries."""
    for key in draw(ATTRIBUTE_KEYS):
        draw(native_attribute(target[key]))
    for i in range(draw(PADDING) - len(target)):
        target[f"pad{i}"].int_value = i


@dataclass(frozen=True)
class SpanIds:
    trace_id: bytes
    span_id: bytes
    parent_span_id: bytes


@st.composite
def ids(draw: st.DrawFn, trace_id: bytes | None = None) -> SpanIds:
    """Mostly well-formed ids (some all-zero, some the wrong length); a fixed ``trace_id`` if given."""
    tid = trace_id if trace_id is not None else draw(TRACE_IDS)
    sid = draw(SPAN_IDS)
    parent = {"root": b"", "itself": sid}.get(kind := draw(PARENT_KINDS))
    if parent is None:
        parent = draw(SPAN_IDS if kind == "child" else WEIRD_IDS)
    return SpanIds(tid, sid, parent)


@st.composite
def times(draw: st.DrawFn) -> tuple[int, int]:
    """(start, end): valid ones mostly, any uint64 pair otherwise (2^63 and up included)."""
    if not draw(RARE):
        start = draw(VALID_START)
        return start, min(start + draw(VALID_START), 2**63 - 1)
    return draw(UINT64), draw(UINT64)


@st.composite
def native_span(draw: st.DrawFn, trace_id: bytes | None = None) -> spans_pb2.Span:
    """An arbitrary native span: any field may be malformed, over a bound, or hostile."""
    span_ids = draw(ids(trace_id))
    start, end = draw(times())
    s = spans_pb2.Span(
        trace_id=span_ids.trace_id,
        span_id=span_ids.span_id,
        parent_span_id=span_ids.parent_span_id,
        name=draw(NAMES),
        span_type=draw(SPAN_TYPES),
        start_time_unix_nano=start,
        end_time_unix_nano=end,
        status_code=draw(STATUS_CODES),
        status_message=draw(STATUS_MESSAGES),
        inputs_json=draw(INPUTS),
        outputs_json=draw(OUTPUTS),
    )
    draw(native_attributes(s.attributes))
    for _ in range(draw(EVENT_COUNTS)):
        e = s.events.add(name=draw(EVENT_NAMES), time_unix_nano=draw(UINT64))
        draw(native_attributes(e.attributes))
    for _ in range(draw(EVENT_PADDING)):
        s.events.add(name="pad")
    for key, value in draw(TAGS).items():
        s.trace_tags[key] = value
    return s


# ---- strategies: OTLP spans ----------------------------------------------------------------

MLFLOW_OTLP_KEYS = st.sampled_from(
    [
        "mlflow.spanInputs",
        "mlflow.spanOutputs",
        "mlflow.spanType",
        "mlflow.traceTag.intent",
        "mlflow.traceTag.mlflow.user",
        "mlflow.traceTag.",
        "mlflow.chat.tokenUsage",
        "mlflow.llm.cost",
        "mlflow.traceRequestId",
        "mlflow.spanFunctionName",
    ]
)
OTLP_KEYS = st.lists(
    st.one_of(
        KEYS,
        MLFLOW_OTLP_KEYS,
        rarely(MLFLOW_OTLP_KEYS, around(LIMITS.max_key_chars).map(lambda k: "mlflow.traceTag." + k)),
    ),
    max_size=5,  # repeated keys allowed, as on the wire
)
OTLP_PADDING = rarely(st.just(0), st.sampled_from([LIMITS.max_attributes + 1, 2_000]))
# One kvlist level is three protobuf levels: an attribute nested deeper than this cannot be
# parsed at all (its request is INVALID_ARGUMENT as a whole, which the bytes-level fuzz covers).
MAX_OTLP_NESTING = 28
LEAF_KINDS = ["string", "bool", "int", "double", "bytes", "unset"]
ANY_KINDS = st.sampled_from([*LEAF_KINDS, "array", "kvlist", "chain"])
LEAF_ONLY = st.sampled_from(LEAF_KINDS)
IO_STRINGS = st.one_of(JSON_TEXT, STRING_VALUES)
SMALL_BYTES = st.binary(max_size=32)
CHILDREN = st.integers(0, 3)
KVLIST_KEYS = st.lists(TEXT, max_size=3)
CHAIN = st.lists(st.booleans(), min_size=1, max_size=MAX_OTLP_NESTING)
OTLP_KINDS = st.integers(-1, 7)
OTLP_STATUS = st.integers(-(2**31), 2**31 - 1)
FLAGS = st.integers(0, 2**32 - 1)
LINK_TRACE_IDS, LINK_SPAN_IDS = st.binary(max_size=17), st.binary(max_size=9)


@st.composite
def any_value(draw: st.DrawFn, target: otlp_common_pb2.AnyValue, depth: int = 0, json_text: bool = False) -> None:
    kind = draw(ANY_KINDS if depth < MAX_OTLP_NESTING else LEAF_ONLY)
    if kind == "string":
        target.string_value = draw(IO_STRINGS if json_text else STRING_VALUES)
    elif kind == "bool":
        target.bool_value = draw(st.booleans())
    elif kind == "int":
        target.int_value = draw(INT64)
    elif kind == "double":
        target.double_value = draw(FLOATS)
    elif kind == "bytes":
        target.bytes_value = draw(SMALL_BYTES)
    elif kind == "array":
        for _ in range(draw(CHILDREN)):
            draw(any_value(target.array_value.values.add(), depth + 1))
    elif kind == "kvlist":
        for key in draw(KVLIST_KEYS):
            draw(any_value(target.kvlist_value.values.add(key=key).value, depth + 1))
    elif kind == "chain":  # straight down, as deep as a request can carry
        v = target
        for as_kvlist in draw(CHAIN)[: MAX_OTLP_NESTING - depth]:
            v = v.kvlist_value.values.add(key="k").value if as_kvlist else v.array_value.values.add()
        v.string_value = "leaf"


@st.composite
def otlp_attributes(draw: st.DrawFn, target: Any) -> None:
    for key in draw(OTLP_KEYS):
        draw(any_value(target.add(key=key).value, json_text=key.startswith("mlflow.")))
    for i in range(draw(OTLP_PADDING) - len(target)):
        target.add(key=f"pad{i}").value.int_value = i


@st.composite
def otlp_span(draw: st.DrawFn, target: otlp_trace_pb2.Span, trace_id: bytes | None = None) -> None:
    span_ids = draw(ids(trace_id))
    start, end = draw(times())
    target.trace_id = span_ids.trace_id
    target.span_id = span_ids.span_id
    target.parent_span_id = span_ids.parent_span_id
    target.name = draw(NAMES)
    target.kind = draw(OTLP_KINDS)  # type: ignore[assignment]
    target.start_time_unix_nano = start
    target.end_time_unix_nano = end
    target.status.code = draw(OTLP_STATUS)  # type: ignore[assignment]
    target.status.message = draw(STATUS_MESSAGES)
    target.trace_state = draw(TEXT)
    target.flags = draw(FLAGS)
    draw(otlp_attributes(target.attributes))
    for _ in range(draw(EVENT_COUNTS)):
        event = target.events.add(name=draw(EVENT_NAMES), time_unix_nano=draw(UINT64))
        draw(otlp_attributes(event.attributes))
    for _ in range(draw(EVENT_PADDING)):
        target.events.add(name="pad")
    if draw(st.booleans()):
        link = target.links.add(trace_id=draw(LINK_TRACE_IDS), span_id=draw(LINK_SPAN_IDS))
        draw(otlp_attributes(link.attributes))


ONE_OR_TWO = st.integers(1, 2)
SPAN_COUNTS = {n: st.integers(0, n) for n in range(1, 4)}


@st.composite
def otlp_request(draw: st.DrawFn, max_spans: int = 3) -> ExportTraceServiceRequest:
    """An OTLP request: fuzzed spans in one or more resources and scopes (resource and scope
    attributes fuzzed too; the gateway does not use them)."""
    request = ExportTraceServiceRequest()
    for _ in range(draw(ONE_OR_TWO)):
        rs = request.resource_spans.add(schema_url=draw(TEXT))
        draw(otlp_attributes(rs.resource.attributes))
        for _ in range(draw(ONE_OR_TWO)):
            ss = rs.scope_spans.add()
            ss.scope.name, ss.scope.version = draw(TEXT), draw(TEXT)
            for _ in range(draw(SPAN_COUNTS[max_spans])):
                draw(otlp_span(ss.spans.add()))
    return request


# ---- strategies: any message of a descriptor (feedback and bundle events) ------------------

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    1: FLOATS,  # TYPE_DOUBLE
    2: st.floats(width=32),  # TYPE_FLOAT
    3: INT64,  # TYPE_INT64
    4: st.integers(0, 2**64 - 1),  # TYPE_UINT64
    5: st.integers(-(2**31), 2**31 - 1),  # TYPE_INT32
    6: st.integers(0, 2**64 - 1),  # TYPE_FIXED64
    7: st.integers(0, 2**32 - 1),  # TYPE_FIXED32
    8: st.booleans(),  # TYPE_BOOL
    9: st.one_of(TEXT, around(128, 2000)),  # TYPE_STRING (feedback bounds: ids 128, comments 2000)
    12: st.binary(max_size=24),  # TYPE_BYTES
    13: st.integers(0, 2**32 - 1),  # TYPE_UINT32
    14: st.integers(-(2**31), 2**31 - 1),  # TYPE_ENUM: open in proto3, unknown numbers included
    15: st.integers(-(2**31), 2**31 - 1),  # TYPE_SFIXED32
    16: INT64,  # TYPE_SFIXED64
    17: st.integers(-(2**31), 2**31 - 1),  # TYPE_SINT32
    18: INT64,  # TYPE_SINT64
}
_SCALAR_LISTS = {kind: st.lists(s, max_size=3) for kind, s in _SCALARS.items()}


# google.protobuf.Timestamp: mostly inside its valid range (years 1-9999, nanos below 10^9), and
# sometimes anywhere an int64/int32 reaches (the decoders reject those by name, never raise).
TIMESTAMP_SECONDS = st.one_of(st.integers(-62_135_596_800, 253_402_300_799), st.integers(-(2**63), 2**63 - 1))
TIMESTAMP_NANOS = st.one_of(st.integers(0, 999_999_999), st.integers(-(2**31), 2**31 - 1))


@st.composite
def fill(draw: st.DrawFn, msg: Message, depth: int = 0) -> Message:
    """Set an arbitrary subset of ``msg``'s fields to arbitrary values (any message type)."""
    if msg.DESCRIPTOR.full_name == "google.protobuf.Timestamp":
        msg.seconds, msg.nanos = draw(TIMESTAMP_SECONDS), draw(TIMESTAMP_NANOS)
        return msg
    for f in msg.DESCRIPTOR.fields:
        if not draw(st.booleans()):
            continue
        if f.message_type is not None and f.message_type.GetOptions().map_entry:
            key_f, value_f = f.message_type.fields_by_name["key"], f.message_type.fields_by_name["value"]
            for _ in range(draw(CHILDREN)):
                key = draw(_SCALARS[key_f.type])
                if value_f.message_type is not None:
                    draw(fill(getattr(msg, f.name)[key], depth + 1))
                else:
                    getattr(msg, f.name)[key] = draw(_SCALARS[value_f.type])
        elif f.message_type is not None:
            if depth >= 4:
                continue
            if f.is_repeated:
                for _ in range(draw(CHILDREN)):
                    draw(fill(getattr(msg, f.name).add(), depth + 1))
            else:
                draw(fill(getattr(msg, f.name), depth + 1))
                getattr(msg, f.name).SetInParent()
        elif f.is_repeated:
            getattr(msg, f.name).extend(draw(_SCALAR_LISTS[f.type]))
        else:
            setattr(msg, f.name, draw(_SCALARS[f.type]))
    return msg


FEEDBACK_VALUES = st.integers(0, 3)
HEX_TRACE_IDS = st.one_of(st.binary(min_size=16, max_size=16).map(bytes.hex), TEXT)


@st.composite
def feedback_event(draw: st.DrawFn) -> feedback_pb2.FeedbackEvent:
    e = draw(fill(feedback_pb2.FeedbackEvent()))
    if draw(st.booleans()):  # often near-valid, so the later checks are reached too
        e.event_id, e.response_id = draw(TEXT) or "e", "resp_1"
        e.feedback = draw(FEEDBACK_VALUES)
        e.trace_id = draw(HEX_TRACE_IDS)
    return e


@st.composite
def bundle_event(draw: st.DrawFn) -> bundles_pb2.BundleEvent:
    return draw(fill(bundles_pb2.BundleEvent()))


# ---- checks --------------------------------------------------------------------------------


def check_accounting(decoded: decode_spans.Decoded, sent: int) -> set[int]:
    """Every span sent is accepted or rejected, exactly once; returns the rejected indexes."""
    rejected = [r.index for r in decoded.rejections]
    assert len(decoded.spans) + len(rejected) == sent
    assert len(set(rejected)) == len(rejected), "a span rejected twice"
    assert all(0 <= i < sent for i in rejected)
    assert rejected == sorted(rejected)
    for r in decoded.rejections:
        assert r.field and r.reason
        assert len(r.field) <= MAX_REJECTION_TEXT and len(r.reason) <= MAX_REJECTION_TEXT, r
    return set(rejected)


def traces_of(spans: list[SpanRecord]) -> list[TraceRecord]:
    """Accepted spans as the assembler hands them on: by trace, the tags moved onto the trace."""
    by_trace: dict[str, TraceRecord] = {}
    for span in spans:
        trace = by_trace.setdefault(span.trace_id, TraceRecord(span.trace_id, "fuzz", [], {}))
        trace.spans.append(span)
        trace.tags.update(span.trace_tags)
        span.trace_tags = {}
    return list(by_trace.values())


def check_exportable(spans: list[SpanRecord]) -> None:
    """What the decoder accepted encodes for MLflow, and the request parses back (protobuf's
    depth limit is MLflow's, and poison isolation's), before redaction and after it."""
    raw = traces_of(copy.deepcopy(spans))
    redacted = Redactor(CONFIG.redaction, GatewayMetrics(CollectorRegistry())).process(copy.deepcopy(raw))
    for traces in (raw, redacted):
        payload = encode_traces(traces)
        parsed = ExportTraceServiceRequest.FromString(payload)
        sent = [s for rs in parsed.resource_spans for ss in rs.scope_spans for s in ss.spans]
        assert len(sent) == len(spans)
        assert {s.trace_id.hex() for s in sent} == {t.trace_id for t in traces}
        # MLflow stores span times as int64 nanoseconds; from 2^63 its store fails (probe finding 1b)
        assert all(0 < s.start_time_unix_nano <= s.end_time_unix_nano < 2**63 for s in sent)
        for trace in traces:  # and each trace on its own (delivery's fallback when a batch fails)
            ExportTraceServiceRequest.FromString(encode_traces([trace]))


def wire_depth(value: Any) -> int:
    """Protobuf message levels ``value`` takes as an OTLP AnyValue (an object costs three: AnyValue,
    KeyValueList, KeyValue; an array two); iterative, values can be thousands deep."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 3) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 2) for v in item)
    return deepest


def steer_to_the_edges(spans: list[SpanRecord]) -> None:
    """Guide hypothesis (``target``) towards accepted spans that are as deep and as large as the
    bounds allow: where an encoder or MLflow's parser would break first."""
    if spans:
        values = [v for s in spans for v in (s.inputs, s.outputs, *s.attributes.values())]
        target(float(max(map(wire_depth, values), default=0)), label="deepest accepted value (protobuf levels)")
        target(float(sum(map(approx_span_bytes, spans))), label="accepted bytes (estimate)")


# ---- 1. decoders ---------------------------------------------------------------------------

T = bytes(range(1, 17))
S1, S2 = bytes(range(1, 9)), bytes(range(2, 10))


def good_native(**fields: Any) -> spans_pb2.Span:
    base: dict[str, Any] = dict(
        trace_id=T,
        span_id=S1,
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_000_001_000,
        status_code=1,
    )
    base.update(fields)
    return spans_pb2.Span(**base)


def with_attribute(span: spans_pb2.Span, **value: Any) -> spans_pb2.Span:
    span.attributes["j"].CopyFrom(common_pb2.AttributeValue(**value))
    return span


def with_attributes(span: spans_pb2.Span, n: int, key_chars: int = 3) -> spans_pb2.Span:
    for i in range(n):
        span.attributes[f"{i:0{key_chars}d}"].int_value = i
    return span


@settings(FUZZ, max_examples=400)
@given(st.lists(native_span(), min_size=1, max_size=4))
@example([good_native(inputs_json='{"m": "\\ud800"}')])
@example([good_native(inputs_json="[" * 10_000 + "]" * 10_000), good_native(span_id=S2)])
@example([good_native(outputs_json="9" * 5000)])
@example([good_native(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10)])
@example([with_attribute(good_native(), json_value="[" * 60 + "]" * 60)])
@example([with_attribute(good_native(), json_value='"\\udfff"')])
def test_native_decoder_accounts_for_every_span_and_accepts_only_exportable_ones(spans: list[spans_pb2.Span]) -> None:
    decoded = decode_spans.decode_native_spans(spans, LIMITS)
    rejected = check_accounting(decoded, len(spans))
    for r in decoded.rejections:
        assert r.field.startswith(f"spans[{r.index}]"), r
    kept = [s for i, s in enumerate(spans) if i not in rejected]
    assert [(r.trace_id, r.span_id) for r in decoded.spans] == [(s.trace_id.hex(), s.span_id.hex()) for s in kept]
    steer_to_the_edges(decoded.spans)
    check_exportable(decoded.spans)


def good_otlp(*attributes: tuple[str, str], **fields: Any) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    base: dict[str, Any] = dict(
        trace_id=T,
        span_id=S1,
        name="otlp_root",
        start_time_unix_nano=1_700_000_000_000_000_000,
        end_time_unix_nano=1_700_000_000_000_001_000,
    )
    base.update(fields)
    span = request.resource_spans.add().scope_spans.add().spans.add(**base)
    for key, text in attributes:
        span.attributes.add(key=key).value.string_value = text
    return request


@settings(FUZZ, max_examples=300)
@given(otlp_request())
@example(good_otlp(("mlflow.spanInputs", '"\\udc00"')))
@example(good_otlp(("mlflow.spanInputs", "[" * 60 + "]" * 60)))
@example(good_otlp(("mlflow.spanOutputs", "[" * 10_000 + "]" * 10_000)))
@example(good_otlp(("mlflow.spanType", '"\\uD800"')))
@example(good_otlp(("mlflow.traceTag.x", '{"a": "\\ud800"}')))
@example(good_otlp(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10))
@example(good_otlp(start_time_unix_nano=1, end_time_unix_nano=2**64 - 2))
@example(good_otlp(("k" * 10_000, "v"), ("mlflow.traceTag." + "t" * 10_000, "v")))
def test_otlp_decoder_accounts_for_every_span_and_accepts_only_exportable_ones(
    request: ExportTraceServiceRequest,
) -> None:
    # Only requests that can arrive: one protobuf parses (the gRPC server parses before decoding).
    request = ExportTraceServiceRequest.FromString(request.SerializeToString())
    sent = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
    decoded = decode_spans.decode_otlp_spans(request.resource_spans, LIMITS)
    rejected = check_accounting(decoded, len(sent))
    for r in decoded.rejections:
        assert r.field.startswith("resource_spans["), r
    kept = [s for i, s in enumerate(sent) if i not in rejected]
    assert [(r.trace_id, r.span_id) for r in decoded.spans] == [(s.trace_id.hex(), s.span_id.hex()) for s in kept]
    steer_to_the_edges(decoded.spans)
    check_exportable(decoded.spans)


@settings(FUZZ, max_examples=200)
@given(
    st.lists(feedback_event(), max_size=4),
    st.lists(bundle_event(), max_size=4),
)
def test_event_decoders_account_for_every_event(
    feedback: list[feedback_pb2.FeedbackEvent], bundles: list[bundles_pb2.BundleEvent]
) -> None:
    from gateway.export.segments import bundle_to_json, feedback_to_json

    records, rejections = decode_events.decode_feedback(feedback)
    assert len(records) + len(rejections) == len(feedback)
    assert len({r.index for r in rejections}) == len(rejections)
    for record in records:
        assert len(record.trace_id) == 32 and record.trace_id != "0" * 32
        json.loads(feedback_to_json(record))  # the spooler's encoding takes it
    bundle_records, bundle_rejections = decode_events.decode_bundle_events(bundles)
    assert len(bundle_records) + len(bundle_rejections) == len(bundles)
    for bundle in bundle_records:
        json.loads(bundle_to_json(bundle))


# ---- the probe's cases, as plain regression tests -------------------------------------------


def with_event_attribute(span: spans_pb2.Span, **value: Any) -> spans_pb2.Span:
    span.events.add(name="exception", time_unix_nano=1).attributes["j"].CopyFrom(common_pb2.AttributeValue(**value))
    return span


def with_long_key(span: spans_pb2.Span, n: int) -> spans_pb2.Span:
    span.attributes["k" * n].string_value = "v"
    return span


def with_events(span: spans_pb2.Span, n: int, name: str = "e") -> spans_pb2.Span:
    for _ in range(n):
        span.events.add(name=name, time_unix_nano=1)
    return span


def native_probe_rejected() -> dict[str, tuple[spans_pb2.Span, str]]:
    """Probe cases the native decoder must reject, with the field each rejection names."""
    deep60 = "[" * 60 + "]" * 60
    return {
        "lone surrogate in inputs_json": (good_native(inputs_json='{"m": "\\ud800"}'), ".inputs_json"),
        "upper-case surrogate escape": (good_native(inputs_json='["\\uDBFF"]'), ".inputs_json"),
        "lone surrogate in an object key": (good_native(outputs_json='{"\\udc00": 1}'), ".outputs_json"),
        "lone surrogate in json_value": (with_attribute(good_native(), json_value='"\\udfff"'), ".attributes['j']"),
        "lone surrogate in an event's json_value": (
            with_event_attribute(good_native(), json_value='"\\ud800"'),
            ".events[0].attributes['j']",
        ),
        "60-deep json_value": (with_attribute(good_native(), json_value=deep60), ".attributes['j']"),
        "600-deep json_value": (
            with_attribute(good_native(), json_value='{"a":' * 600 + "1" + "}" * 600),
            ".attributes['j']",
        ),
        "60-deep json_value in an event": (
            with_event_attribute(good_native(), json_value=deep60),
            ".events[0].attributes['j']",
        ),
        "60-deep inputs_json": (good_native(inputs_json=deep60), ".inputs_json"),
        "10000-deep inputs_json": (good_native(inputs_json="[" * 10_000 + "]" * 10_000), ".inputs_json"),
        "5000-digit integer": (good_native(outputs_json="9" * 5000), ".outputs_json"),
        "start and end past 2^63": (
            good_native(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10),
            ".end_time_unix_nano",
        ),
        "end at 2^64 - 2": (good_native(start_time_unix_nano=1, end_time_unix_nano=2**64 - 2), ".end_time_unix_nano"),
        "100,000 attributes": (with_attributes(good_native(), 100_000, key_chars=6), ".attributes"),
        "a string attribute over the value bound": (
            with_attribute(good_native(), string_value="x" * (LIMITS.max_value_chars + 1)),
            ".attributes['j']",
        ),
        "an attribute key of 10k characters": (with_long_key(good_native(), 10_000), ".attributes['kkkk"),
        "an event name of 10k characters": (with_events(good_native(), 1, name="e" * 10_000), ".events[0].name"),
        "more events than the bound": (with_events(good_native(), LIMITS.max_events + 1), ".events"),
        "a span_type of 10k characters": (good_native(span_type="t" * 10_000), ".span_type"),
        "a 1 MB status_message": (good_native(status_message="m" * (1 << 20)), ".status_message"),
        "a tag key of 251 characters": (good_native(trace_tags={"k" * 251: "v"}), ".trace_tags['kkkk"),
        "a tag value of 8001 characters": (good_native(trace_tags={"k": "v" * 8001}), ".trace_tags['k']"),
        "a 257-character name": (good_native(name="n" * 257), ".name"),
        "status_code 7": (good_native(status_code=7), ".status_code"),
        "an all-zero trace id": (good_native(trace_id=bytes(16)), ".trace_id"),
        "a 15-byte trace id": (good_native(trace_id=T[:15]), ".trace_id"),
        "a 4-byte span id": (good_native(span_id=b"abcd"), ".span_id"),
        "end before start": (good_native(start_time_unix_nano=10, end_time_unix_nano=9), ".end_time_unix_nano"),
        "start 0": (good_native(start_time_unix_nano=0), ".start_time_unix_nano"),
    }


@pytest.mark.parametrize("case", list(native_probe_rejected()))
def test_native_probe_case_costs_only_its_own_span(case: str) -> None:
    poison, where = native_probe_rejected()[case]
    spans = [good_native(span_id=S1), poison, good_native(span_id=S2, parent_span_id=S1)]
    decoded = decode_spans.decode_native_spans(spans, LIMITS)
    assert [(r.index, r.field[: len(f"spans[1]{where}")]) for r in decoded.rejections] == [(1, f"spans[1]{where}")]
    assert [s.span_id for s in decoded.spans] == [S1.hex(), S2.hex()]
    check_exportable(decoded.spans)


def nested(shape: str, depth: int) -> str:
    """JSON ``depth`` levels deep: arrays, objects, or the two in turn."""
    opens = ["[" if shape == "arrays" or (shape == "mixed" and i % 2) else '{"k":' for i in range(depth)]
    return "".join(opens) + "1" + "".join("]" if o == "[" else "}" for o in reversed(opens))


def native_json_in(where: str, text: str) -> spans_pb2.Span:
    if where == "json_value":
        return with_attribute(good_native(), json_value=text)
    if where == "event json_value":
        return with_event_attribute(good_native(), json_value=text)
    return good_native(**{where: text})


@pytest.mark.parametrize("shape", ["arrays", "objects", "mixed"])
@pytest.mark.parametrize(
    "where", ["inputs_json", "outputs_json", "json_value", "event json_value", "mlflow.spanInputs"]
)
def test_json_nesting_is_accepted_up_to_the_bound_and_rejected_past_it(where: str, shape: str) -> None:
    """MAX_JSON_DEPTH levels are taken (and encode under protobuf's limit); one more is not."""
    for depth, accepted in ((decode_spans.MAX_JSON_DEPTH, True), (decode_spans.MAX_JSON_DEPTH + 1, False)):
        text = nested(shape, depth)
        if where == "mlflow.spanInputs":
            decoded = decode_spans.decode_otlp_spans(good_otlp((where, text)).resource_spans, LIMITS)
        else:
            decoded = decode_spans.decode_native_spans([native_json_in(where, text)], LIMITS)
        assert len(decoded.spans) == accepted, (depth, decoded.rejections)
        if accepted:
            check_exportable(decoded.spans)
        else:
            assert f"nests deeper than {decode_spans.MAX_JSON_DEPTH} levels" in decoded.rejections[0].reason


def otlp_probe_rejected() -> dict[str, tuple[ExportTraceServiceRequest, str]]:
    deep60 = "[" * 60 + "]" * 60
    many = good_otlp()
    span = many.resource_spans[0].scope_spans[0].spans[0]
    for i in range(100_000):
        span.attributes.add(key=f"{i:06d}").value.int_value = i
    long_event = good_otlp()
    long_event.resource_spans[0].scope_spans[0].spans[0].events.add(name="e" * 10_000)
    return {
        "lone surrogate in mlflow.spanInputs": (good_otlp(("mlflow.spanInputs", '"\\udc00"')), "spanInputs"),
        "lone surrogate in mlflow.spanOutputs": (good_otlp(("mlflow.spanOutputs", '{"a": "\\uDfFf"}')), "spanOutputs"),
        "lone surrogate in a trace tag": (good_otlp(("mlflow.traceTag.x", '"\\ud800"')), ".attributes"),
        "60-deep mlflow.spanInputs": (good_otlp(("mlflow.spanInputs", deep60)), "spanInputs"),
        "start and end past 2^63": (
            good_otlp(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10),
            ".end_time_unix_nano",
        ),
        "end at 2^64 - 2": (good_otlp(start_time_unix_nano=1, end_time_unix_nano=2**64 - 2), ".end_time_unix_nano"),
        "100,000 attributes": (many, ".attributes"),
        "an attribute key of 10k characters": (good_otlp(("k" * 10_000, "v")), ".attributes['kkkk"),
        "an event name of 10k characters": (long_event, ".events[0].name"),
        "a string attribute over the value bound": (
            good_otlp(("big", "x" * (LIMITS.max_value_chars + 1))),
            ".attributes['big']",
        ),
        "a tag key of 251 characters": (good_otlp(("mlflow.traceTag." + "k" * 251, "v")), ".attributes"),
    }


@pytest.mark.parametrize("case", list(otlp_probe_rejected()))
def test_otlp_probe_case_costs_only_its_own_span(case: str) -> None:
    request, where = otlp_probe_rejected()[case]
    scope = request.resource_spans[0].scope_spans[0]
    scope.spans.add(
        trace_id=T, span_id=S2, parent_span_id=S1, name="child", start_time_unix_nano=5, end_time_unix_nano=6
    )
    decoded = decode_spans.decode_otlp_spans(request.resource_spans, LIMITS)
    assert [r.index for r in decoded.rejections] == [0]
    assert decoded.rejections[0].field.startswith("resource_spans[0].scope_spans[0].spans[0]")
    assert where in decoded.rejections[0].field
    assert [s.span_id for s in decoded.spans] == [S2.hex()]
    check_exportable(decoded.spans)


def native_probe_harmless() -> dict[str, spans_pb2.Span]:
    """Edge values the probe found stored fine: accepted, and exportable."""
    nan = with_attribute(good_native(), double_value=math.nan)
    nan.attributes["inf"].double_value = -math.inf
    return {
        "year 1970 (1 ns)": good_native(start_time_unix_nano=1, end_time_unix_nano=1),
        "year 2200": good_native(start_time_unix_nano=7_258_118_400 * 10**9, end_time_unix_nano=7_258_118_400 * 10**9),
        "the last representable end time": good_native(start_time_unix_nano=1, end_time_unix_nano=2**63 - 1),
        "NaN and -Infinity attributes": nan,
        "NaN and Infinity in JSON": good_native(inputs_json="[NaN, Infinity, -Infinity, 1e400]"),
        "a 4000-digit integer": good_native(outputs_json="9" * 4000),
        "int64 bounds and past them in JSON": good_native(
            inputs_json=json.dumps([2**63 - 1, -(2**63), 2**64, -(2**70)])
        ),
        "NUL in the name and in JSON": good_native(name="a\x00b", inputs_json='{"\\u0000": "\\u0000"}'),
        "a surrogate pair escape (one emoji)": good_native(inputs_json='"\\ud83d\\ude00"'),
        "a span whose parent is itself": good_native(parent_span_id=S1),
        "Mlflow.x is not reserved": with_attribute(good_native(trace_tags={"Mlflow.x": "y"}), string_value="x"),
        "exactly max_attributes attributes": with_attributes(good_native(), LIMITS.max_attributes),
    }


@pytest.mark.parametrize("case", list(native_probe_harmless()))
def test_native_probe_edge_value_is_accepted_and_exportable(case: str) -> None:
    decoded = decode_spans.decode_native_spans([native_probe_harmless()[case]], LIMITS)
    assert not decoded.rejections, decoded.rejections
    check_exportable(decoded.spans)


# ---- a real gateway on loopback, one per module ----------------------------------------------

NATIVE_SERVICE = "/mangaassist.tracegateway.v1.TraceGatewayService/"
OTLP_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
REQUESTS: dict[str, type[Message]] = {
    NATIVE_SERVICE + "ExportSpans": trace_gateway_service_pb2.ExportSpansRequest,
    NATIVE_SERVICE + "RecordFeedback": trace_gateway_service_pb2.RecordFeedbackRequest,
    NATIVE_SERVICE + "RecordBundleEvents": trace_gateway_service_pb2.RecordBundleEventsRequest,
    OTLP_EXPORT: ExportTraceServiceRequest,
}
_innocent_ids = itertools.count(1)


def innocent_trace_id() -> bytes:
    """A fresh trace id no strategy produces (hypothesis ids are filtered against the prefix)."""
    return b"innocent" + next(_innocent_ids).to_bytes(8, "big")


class _Errors(logging.Handler):
    """Keeps the gateway's ERROR records (a loop boundary that caught something: spooler, sender, tick)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@dataclass
class Rig:
    gateway: ThreadedGateway
    writer: RecordingWriter
    channel: grpc.Channel
    errors: _Errors

    @property
    def native(self) -> trace_gateway_service_pb2_grpc.TraceGatewayServiceStub:
        return trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(self.channel)

    @property
    def otlp(self) -> trace_service_pb2_grpc.TraceServiceStub:
        return trace_service_pb2_grpc.TraceServiceStub(self.channel)

    @property
    def max_bytes(self) -> int:
        """The largest request the server takes (gRPC refuses a larger one before parsing it)."""
        return self.gateway.running.config.listen.max_receive_message_bytes

    def call_raw(self, rpc: str, data: bytes) -> grpc.StatusCode:
        call = self.channel.unary_unary(rpc, request_serializer=None, response_deserializer=None)
        try:
            call(data, timeout=15)
        except grpc.RpcError as exc:
            return exc.code()
        return grpc.StatusCode.OK

    def delivered(self, trace_id: bytes) -> bool:
        with self.writer.lock:
            return trace_id.hex() in self.writer.written

    def wait_delivered(self, trace_id: bytes) -> None:
        wait_for(
            lambda: self.delivered(trace_id), timeout_s=INNOCENT_WAIT_S, interval_s=0.01, what="the innocent trace"
        )

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.gateway.metrics.registry.get_sample_value(name, labels or {}) or 0.0

    def write_drops(self) -> dict[str, float]:
        return {
            s.labels["reason"]: s.value
            for m in self.gateway.metrics.registry.collect()
            for s in m.samples
            if s.name == "tracegw_spans_dropped_total" and s.labels.get("stage") == "write" and s.value
        }

    def assert_healthy(self) -> None:
        """Health SERVING on every service, nothing lost in delivery, no loop boundary hit, and a
        well-formed trace sent now still lands."""
        health = health_pb2_grpc.HealthStub(self.channel)
        for service in ("", NATIVE_SERVICE.strip("/"), OTLP_EXPORT.rsplit("/", 1)[0].strip("/")):
            answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING, service
        trace_id = innocent_trace_id()
        self.native.ExportSpans(
            trace_gateway_service_pb2.ExportSpansRequest(spans=innocent_native(trace_id)), timeout=10
        )
        self.wait_delivered(trace_id)
        assert self.write_drops() == {}
        assert not self.errors.records, [r.getMessage() for r in self.errors.records]


@pytest.fixture(scope="module")
def rig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    tmp: Path = tmp_path_factory.mktemp("fuzz-gateway")
    config = gateway_config.load(
        {
            "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
            "TRACEGW_METRICS_ADDRESS": "",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'never-opened.db'}",  # the RecordingWriter writes
            "TRACEGW_ARTIFACT_ROOT": str(tmp / "artifacts"),
            "TRACEGW_SPOOL_DIR": str(tmp / "spool"),
            "TRACEGW_SPOOL_FSYNC": "never",
            "TRACEGW_ROOT_GRACE_S": "0.02",
            "TRACEGW_DECISION_TIMEOUT_S": "0.5",  # rootless poison is decided (and written) quickly too
            "TRACEGW_BATCH_MAX_DELAY_S": "0.02",
            "TRACEGW_SHUTDOWN_GRACE_S": "5",
            # Random bytes parse into random experiment names: the per-process cap on distinct names
            # (a whole-request refusal, not the receivers' concern here) must not run out mid-fuzz.
            "TRACEGW_MAX_EXPERIMENTS": "1000000",
            # In-process, RSS is pytest's: keep the memory guard out of the way.
            "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
            "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
        }
    )
    errors = _Errors()
    logger = logging.getLogger("gateway")
    logger.addHandler(errors)
    writer = RecordingWriter()
    gateway = ThreadedGateway(config, writer)
    channel = grpc.insecure_channel(gateway.target)
    try:
        yield Rig(gateway, writer, channel, errors)
    finally:
        channel.close()
        gateway.stop(5)
        logger.removeHandler(errors)


def innocent_native(trace_id: bytes) -> list[spans_pb2.Span]:
    """A well-formed two-span trace (root last, as clients send it)."""
    start = 1_700_000_000_000_000_000
    child = spans_pb2.Span(
        trace_id=trace_id,
        span_id=b"child\x00\x00\x01",
        parent_span_id=b"root\x00\x00\x00\x01",
        name="llm_call",
        span_type="LLM",
        start_time_unix_nano=start + 10,
        end_time_unix_nano=start + 900,
        status_code=spans_pb2.SPAN_STATUS_CODE_OK,
        inputs_json='{"prompt": "こんにちは"}',
        outputs_json='{"text": "hi"}',
    )
    child.attributes["input_tokens"].int_value = 12
    child.attributes["output_tokens"].int_value = 3
    child.attributes["provider"].string_value = "bedrock"
    root = spans_pb2.Span(
        trace_id=trace_id,
        span_id=b"root\x00\x00\x00\x01",
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1000,
        status_code=spans_pb2.SPAN_STATUS_CODE_OK,
        inputs_json='{"message": "hello"}',
        trace_tags={"session_id": "s-1", "intent": "faq"},
    )
    return [child, root]


def innocent_otlp(scope: otlp_trace_pb2.ScopeSpans, trace_id: bytes) -> None:
    start = 1_700_000_000_000_000_000
    child = scope.spans.add(
        trace_id=trace_id,
        span_id=b"child\x00\x00\x01",
        parent_span_id=b"root\x00\x00\x00\x01",
        name="llm_call",
        start_time_unix_nano=start + 10,
        end_time_unix_nano=start + 900,
    )
    child.attributes.add(key="mlflow.spanType").value.string_value = '"LLM"'
    child.attributes.add(key="mlflow.spanInputs").value.string_value = '{"prompt": "こんにちは"}'
    root = scope.spans.add(
        trace_id=trace_id,
        span_id=b"root\x00\x00\x00\x01",
        name="otlp_root",
        start_time_unix_nano=start,
        end_time_unix_nano=start + 1000,
    )
    root.attributes.add(key="mlflow.traceTag.session_id").value.string_value = "s-1"
    root.status.code = otlp_trace_pb2.Status.STATUS_CODE_OK


# ---- 2. bytes ------------------------------------------------------------------------------

BAD_UTF8 = [
    b"\xed\xa0\x80",  # CESU-8 / WTF-8 lone high surrogate U+D800
    b"\xed\xbf\xbf",  # lone low surrogate U+DFFF
    b"\xed\xa0\xbd\xed\xb8\x80",  # a surrogate pair encoded one half at a time (CESU-8 emoji)
    b"\xff",
    b"\xc0\x80",  # overlong NUL
    b"\xf4\x90\x80\x80",  # past U+10FFFF
    b"\x80",  # a lone continuation byte
    b"\xe3\x81",  # truncated sequence
]
# Where each request carries a string two levels down: (outer field tag, inner string field tag).
STRING_PATHS = {
    NATIVE_SERVICE + "ExportSpans": (b"\x0a", b"\x22"),  # spans[0].name
    NATIVE_SERVICE + "RecordFeedback": (b"\x0a", b"\x0a"),  # events[0].event_id
    NATIVE_SERVICE + "RecordBundleEvents": (b"\x0a", b"\x32"),  # events[0].note
    OTLP_EXPORT: (b"\x0a", b"\x1a"),  # resource_spans[0].schema_url
}


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def length_delimited(tag: bytes, body: bytes) -> bytes:
    return tag + varint(len(body)) + body


@st.composite
def valid_request(draw: st.DrawFn, rpc: str) -> bytes:
    if rpc.endswith("/ExportSpans"):
        request: Message = trace_gateway_service_pb2.ExportSpansRequest(
            spans=draw(st.lists(native_span(), max_size=3)), experiment_name=draw(TEXT)
        )
    elif rpc.endswith("/RecordFeedback"):
        request = trace_gateway_service_pb2.RecordFeedbackRequest(events=draw(st.lists(feedback_event(), max_size=3)))
    elif rpc.endswith("/RecordBundleEvents"):
        request = draw(fill(trace_gateway_service_pb2.RecordBundleEventsRequest()))
    else:
        request = draw(otlp_request())
    return request.SerializeToString()


@st.composite
def wire_payload(draw: st.DrawFn) -> tuple[str, bytes]:
    """(rpc, request bytes): random, valid, truncated, mutated, with invalid UTF-8 in a string,
    or (OTLP) nested past protobuf's depth limit."""
    rpc = draw(st.sampled_from(sorted(REQUESTS)))
    how = draw(st.sampled_from(["random", "valid", "truncated", "flipped", "spliced", "bad_utf8", "deep"]))
    if how == "random":
        return rpc, draw(st.binary(max_size=4096))
    if how == "bad_utf8":
        outer, inner = STRING_PATHS[rpc]
        text = draw(TEXT).encode() + draw(st.sampled_from(BAD_UTF8)) + draw(TEXT).encode()
        return rpc, length_delimited(outer, length_delimited(inner, text))
    if how == "deep":
        rpc = OTLP_EXPORT
        request = good_otlp()
        v = request.resource_spans[0].scope_spans[0].spans[0].attributes.add(key="deep").value
        for _ in range(draw(st.integers(MAX_OTLP_NESTING, 400))):
            v = v.kvlist_value.values.add(key="k").value if draw(st.booleans()) else v.array_value.values.add()
        return rpc, request.SerializeToString()
    data = draw(valid_request(rpc))
    if how == "truncated" and data:
        return rpc, data[: draw(st.integers(0, len(data) - 1))]
    if how == "flipped" and data:
        out = bytearray(data)
        for _ in range(draw(st.integers(1, 4))):
            out[draw(st.integers(0, len(out) - 1))] = draw(st.integers(0, 255))
        return rpc, bytes(out)
    if how == "spliced":
        at = draw(st.integers(0, len(data)))
        return rpc, data[:at] + draw(st.binary(min_size=1, max_size=16)) + data[at:]
    return rpc, data


def parses(rpc: str, data: bytes) -> bool:
    try:
        REQUESTS[rpc].FromString(data)
    except (DecodeError, RecursionError, ValueError):
        return False
    return True


EVENT_RPCS = (NATIVE_SERVICE + "RecordFeedback", NATIVE_SERVICE + "RecordBundleEvents")


def expected_code(rig: Rig, rpc: str, data: bytes) -> grpc.StatusCode:
    """The answer the gateway documents for these bytes: RESOURCE_EXHAUSTED past a size bound,
    INVALID_ARGUMENT when protobuf cannot parse them (or, for ExportSpans, when they name an
    experiment longer than the bound, a whole-request refusal), OK otherwise."""
    limits = rig.gateway.running.config.limits
    event_max = getattr(limits, "max_event_message_bytes", None)
    if len(data) > rig.max_bytes or (event_max is not None and rpc in EVENT_RPCS and len(data) > event_max):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if not parses(rpc, data):
        return grpc.StatusCode.INVALID_ARGUMENT
    name_max = getattr(limits, "max_experiment_name_chars", None)
    if (
        name_max is not None
        and rpc.endswith("/ExportSpans")
        and len(trace_gateway_service_pb2.ExportSpansRequest.FromString(data).experiment_name) > name_max
    ):
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.OK


def test_any_bytes_answer_ok_or_invalid_argument_and_the_gateway_stays_healthy(rig: Rig) -> None:
    answers: dict[grpc.StatusCode, int] = {}
    unparseable: list[str] = []
    malformed_before = sum(
        rig.metric("tracegw_requests_malformed_total", {"rpc": r.rsplit("/", 1)[1]}) for r in REQUESTS
    )

    @settings(FUZZ, max_examples=300)
    @given(wire_payload())
    @example((NATIVE_SERVICE + "ExportSpans", b"\x0a\x05abc"))  # truncated: a length past the end
    @example((NATIVE_SERVICE + "ExportSpans", b"\x0a\x03\x22\x01\xff"))  # invalid UTF-8 in spans[0].name
    @example((NATIVE_SERVICE + "RecordFeedback", length_delimited(b"\x0a", length_delimited(b"\x0a", b"\xed\xa0\x80"))))
    @example((OTLP_EXPORT, b"\x0a" * 4096))
    @example((NATIVE_SERVICE + "RecordBundleEvents", bytes(range(256)) * 4))
    def fuzz(payload: tuple[str, bytes]) -> None:
        rpc, data = payload
        code = rig.call_raw(rpc, data)
        answers[code] = answers.get(code, 0) + 1
        if code == grpc.StatusCode.INVALID_ARGUMENT and not parses(rpc, data):
            unparseable.append(rpc)
        assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED)
        # and exactly the documented one: nothing parseable is refused, nothing unparseable taken
        assert code == expected_code(rig, rpc, data), (rpc, code, len(data))

    fuzz()
    assert answers.get(grpc.StatusCode.OK) and answers.get(grpc.StatusCode.INVALID_ARGUMENT), answers
    malformed = sum(rig.metric("tracegw_requests_malformed_total", {"rpc": r.rsplit("/", 1)[1]}) for r in REQUESTS)
    assert malformed - malformed_before == len(unparseable)  # each one counted
    rig.assert_healthy()


@pytest.mark.parametrize("bad", BAD_UTF8, ids=lambda b: b.hex())
def test_invalid_utf8_in_a_string_field_is_invalid_argument_on_every_rpc(rig: Rig, bad: bytes) -> None:
    for rpc, (outer, inner) in STRING_PATHS.items():
        data = length_delimited(outer, length_delimited(inner, b"ok" + bad))
        assert rig.call_raw(rpc, data) == grpc.StatusCode.INVALID_ARGUMENT, rpc
    rig.assert_healthy()


def sized(make: Callable[[int], Message], size: int) -> bytes:
    """``make(n)`` serialized, with ``n`` chosen so that it is exactly ``size`` bytes."""
    n = size
    for _ in range(10):  # the length prefixes shrink by a byte or two per step: converges at once
        data: bytes = make(n).SerializeToString()
        if len(data) == size:
            return data
        n += size - len(data)
    raise AssertionError(f"no request of exactly {size} bytes")


def test_a_request_over_the_size_bound_is_resource_exhausted_and_one_at_it_is_taken(rig: Rig) -> None:
    """The probe's boundary: exactly the bound is accepted, one byte more is refused whole."""

    def native(n: int) -> Message:
        return trace_gateway_service_pb2.ExportSpansRequest(service_name="x" * n)

    def otlp(n: int) -> Message:
        return ExportTraceServiceRequest(resource_spans=[otlp_trace_pb2.ResourceSpans(schema_url="x" * n)])

    for rpc, make in ((NATIVE_SERVICE + "ExportSpans", native), (OTLP_EXPORT, otlp)):
        assert rig.call_raw(rpc, sized(make, rig.max_bytes)) == grpc.StatusCode.OK, rpc
        assert rig.call_raw(rpc, sized(make, rig.max_bytes + 1)) == grpc.StatusCode.RESOURCE_EXHAUSTED, rpc
    rig.assert_healthy()


# ---- 3. end to end: an innocent trace beside any poison ----------------------------------------


@st.composite
def native_trace(draw: st.DrawFn) -> list[spans_pb2.Span]:
    """1-3 fuzzed spans of one (fuzzed) trace id."""
    trace_id = draw(TRACE_IDS)
    return draw(st.lists(native_span(trace_id=trace_id), min_size=1, max_size=3))


# Experiment names are a whole-request matter (a name past the bound refuses the request, innocent
# spans included, and the sender is told): the end-to-end fuzz uses a few valid, unusual ones.
EXPERIMENT_NAMES = st.sampled_from(["", "fuzz-experiment", "実験 (fuzz)\u202e", "e" * 256])
EXPERIMENT_HEADERS = st.sampled_from(["", "fuzz-experiment", "e" * 256])


# Each example goes through the gateway and waits for its innocent trace: fewer of them, and no
# shrinking (a failing example would wait INNOCENT_WAIT_S per shrink step, past pytest's timeout;
# the decoder-level tests above shrink what they find, and most bugs show there first).
E2E = settings(FUZZ, max_examples=40, phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target])


def native_poison(**fields: Any) -> list[spans_pb2.Span]:
    return [good_native(trace_id=b"poison-native-01", **fields)]


def test_native_innocent_trace_lands_beside_any_poison(rig: Rig) -> None:
    @settings(E2E)
    @given(native_trace(), st.integers(0, 3), EXPERIMENT_NAMES)
    @example(native_poison(inputs_json='{"m": "\\ud800"}'), 0, "")
    @example(native_poison(inputs_json="[" * 10_000 + "]" * 10_000), 1, "")
    @example(native_poison(outputs_json="9" * 5000), 0, "")
    @example(native_poison(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10), 1, "")
    @example([with_attribute(good_native(trace_id=b"poison-native-02"), json_value="[" * 60 + "]" * 60)], 0, "")
    @example([with_attribute(good_native(trace_id=b"poison-native-03"), json_value='"\\udfff"')], 1, "")
    @example([with_event_attribute(good_native(trace_id=b"poison-native-04"), json_value='"\\ud800"')], 0, "")
    @example([with_attributes(good_native(trace_id=b"poison-native-05"), 100_000, key_chars=6)], 0, "")
    @example(native_poison(parent_span_id=S2), 1, "実験 (fuzz)")  # rootless: decided at the timeout
    def fuzz(poison: list[spans_pb2.Span], position: int, experiment: str) -> None:
        trace_id = innocent_trace_id()
        assume(all(not s.trace_id.startswith(b"innocent") for s in poison))
        spans = poison[:position] + innocent_native(trace_id) + poison[position:]
        request = trace_gateway_service_pb2.ExportSpansRequest(spans=spans, experiment_name=experiment)
        assume(request.ByteSize() <= rig.max_bytes)  # a larger request is refused whole (test below)
        expected = decode_spans.decode_native_spans(spans, LIMITS).rejections
        answer = rig.native.ExportSpans(request, timeout=15).partial_success
        assert answer.rejected_count == len(expected)
        assert [(r.index, r.field) for r in answer.rejections] == [(r.index, r.field) for r in expected][:20]
        rig.wait_delivered(trace_id)

    fuzz()
    rig.assert_healthy()


@st.composite
def otlp_mixed(draw: st.DrawFn) -> tuple[ExportTraceServiceRequest, bytes]:
    """A fuzzed OTLP request whose spans share one fuzzed trace id, with an innocent trace
    added in one of its scopes or in a resource of its own; returns it and the innocent id."""
    request = draw(otlp_request(max_spans=2))
    poison_id = draw(TRACE_IDS)
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                s.trace_id = poison_id
    trace_id = innocent_trace_id()
    scopes = [ss for rs in request.resource_spans for ss in rs.scope_spans]
    where = draw(st.integers(0, len(scopes)))
    innocent_otlp(scopes[where] if where < len(scopes) else request.resource_spans.add().scope_spans.add(), trace_id)
    return request, trace_id


def otlp_poison(*attributes: tuple[str, str], **fields: Any) -> tuple[ExportTraceServiceRequest, bytes]:
    request = good_otlp(*attributes, **{"trace_id": b"poison-otlp-0001", **fields})
    trace_id = innocent_trace_id()
    innocent_otlp(request.resource_spans[0].scope_spans[0], trace_id)
    return request, trace_id


def test_otlp_innocent_trace_lands_beside_any_poison(rig: Rig) -> None:
    @settings(E2E)
    @given(otlp_mixed(), EXPERIMENT_HEADERS)
    @example(otlp_poison(("mlflow.spanInputs", '"\\udc00"')), "")
    @example(otlp_poison(("mlflow.spanInputs", "[" * 60 + "]" * 60)), "")
    @example(otlp_poison(("mlflow.spanOutputs", "[" * 10_000 + "]" * 10_000)), "")
    @example(otlp_poison(("mlflow.traceTag.x", '{"a": "\\ud800"}')), "")
    @example(otlp_poison(start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10), "")
    @example(otlp_poison(("k" * 10_000, "v")), "fuzz-experiment")
    def fuzz(mixed: tuple[ExportTraceServiceRequest, bytes], experiment: str) -> None:
        request, trace_id = mixed
        assume(all(not s.trace_id.startswith(b"innocent") or s.trace_id == trace_id for s in _otlp_spans(request)))
        assume(request.ByteSize() <= rig.max_bytes)  # a larger request is refused whole (test below)
        expected = decode_spans.decode_otlp_spans(request.resource_spans, LIMITS).rejections
        metadata = (("x-mlflow-experiment-name", experiment),) if experiment else ()
        answer = rig.otlp.Export(request, metadata=metadata, timeout=15).partial_success
        assert answer.rejected_spans == len(expected)
        rig.wait_delivered(trace_id)

    fuzz()
    rig.assert_healthy()


def _otlp_spans(request: ExportTraceServiceRequest) -> list[otlp_trace_pb2.Span]:
    return [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]


def test_the_probe_poisons_together_cost_only_themselves(rig: Rig) -> None:
    """Every probe poison in one native request and one OTLP request, innocents around them."""
    poisons = []
    for i, (span, where) in enumerate(native_probe_rejected().values()):
        if where != ".trace_id":  # each its own trace
            span.trace_id = b"probe-native-" + i.to_bytes(3, "big")
        poisons.append(span)
    first, last = innocent_trace_id(), innocent_trace_id()
    spans = innocent_native(first) + poisons + innocent_native(last)
    answer = rig.native.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(spans=spans), timeout=30)
    assert answer.partial_success.rejected_count == len(poisons)
    assert [r.index for r in answer.partial_success.rejections] == list(range(2, 2 + len(poisons)))[:20]

    request = ExportTraceServiceRequest()
    innocent = innocent_trace_id()
    otlp_poisons = otlp_probe_rejected()
    for i, (poison, _) in enumerate(otlp_poisons.values()):
        for span in _otlp_spans(poison):
            span.trace_id = b"probe-otlp-00" + i.to_bytes(3, "big")
        request.resource_spans.extend(poison.resource_spans)
    innocent_otlp(request.resource_spans.add().scope_spans.add(), innocent)
    otlp_answer = rig.otlp.Export(request, timeout=30)
    assert otlp_answer.partial_success.rejected_spans == len(otlp_poisons)
    for trace_id in (first, last, innocent):
        rig.wait_delivered(trace_id)
    rig.assert_healthy()


@pytest.mark.parametrize(("seconds", "nanos"), [(0, -1), (-62_135_596_801, 0), (253_402_300_800, 0), (1, 10**9)])
def test_an_out_of_range_timestamp_rejects_its_event_alone(seconds: int, nanos: int) -> None:
    # Found by this suite: protobuf's ToNanoseconds raised ValueError, the RPC answered UNKNOWN
    # and the valid events beside it were lost.
    good = feedback_pb2.FeedbackEvent(
        event_id="ok", response_id="resp_1", trace_id="ab" * 16, feedback=feedback_pb2.FEEDBACK_VALUE_THUMBS_UP
    )
    bad = feedback_pb2.FeedbackEvent(
        event_id="bad", response_id="resp_1", trace_id="ab" * 16, feedback=feedback_pb2.FEEDBACK_VALUE_THUMBS_UP
    )
    bad.time.seconds, bad.time.nanos = seconds, nanos
    records, rejections = decode_events.decode_feedback([good, bad])
    assert [r.event_id for r in records] == ["ok"]
    assert [(r.index, r.field) for r in rejections] == [(1, "events[1].time")]
    bundle = bundles_pb2.BundleEvent(event_id="b1", bundle_name="n", bundle_version="v", actor_id="pipeline")
    bundle.promoted.SetInParent()
    bundle.time.seconds, bundle.time.nanos = seconds, nanos
    records_b, rejections_b = decode_events.decode_bundle_events([bundle])
    assert records_b == [] and [r.field for r in rejections_b] == ["events[0].time"]
