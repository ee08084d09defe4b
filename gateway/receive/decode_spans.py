"""Proto → model for spans, the gateway's hot path: validate incoming spans and convert them
to ``gateway.model.SpanRecord``.

Both receivers use it: the native ``TraceGatewayService`` and OTLP ``TraceService/Export``.
Bad items are not fatal to a batch: each one becomes a ``Rejection`` naming the field and the
reason, and the rest of the batch is accepted (partial success). Feedback and bundle events
are validated in ``decode_events``.

Keys under ``mlflow.`` are reserved to the gateway, which writes MLflow's own attribute
conventions itself; an application-sent ``mlflow.*`` attribute or trace tag is stripped and
counted (one such tag made a trace unreadable in MLflow 3.17). From OTLP, the few MLflow keys
that MLflow's own SDK sends with a known meaning are understood instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from gateway.config import InputLimits
from gateway.model import (
    ATTRIBUTE_BYTES,
    SPAN_OVERHEAD_BYTES,
    SpanEvent,
    SpanRecord,
    SpanStatus,
    rest_of_span_bytes,
    value_bytes,
)

RESERVED_PREFIX = "mlflow."
MAX_NAME_CHARS = 256
# JSON values (inputs, outputs, json_value attributes) are re-encoded as OTLP AnyValues: a JSON
# object level becomes three message levels (AnyValue, KeyValueList, KeyValue), under six of the
# request's own, and protobuf's decoder (MLflow's, and poison isolation's) stops at 100. Deeper
# values are rejected here, where they cost only their own span.
MAX_JSON_DEPTH = 24
# MLflow stores span times as int64 nanoseconds; from 2^63 (the year 2262) its store fails.
MAX_TIME_NS = 2**63 - 1
MAX_TAG_KEY_CHARS = 250
MAX_TAG_VALUE_CHARS = 8000

# MLflow span attributes (mlflow/tracing/constant.py, SpanAttributeKey) that OTLP senders such
# as MLflow's own SDK may set and that the gateway passes through unchanged.
_OTLP_PASSTHROUGH = frozenset(
    {
        "mlflow.chat.tokenUsage",
        "mlflow.llm.cost",
        "mlflow.llm.model",
        "mlflow.llm.provider",
        "mlflow.message.format",
        "mlflow.spanFunctionName",
    }
)
_TRACE_TAG_PREFIX = "mlflow.traceTag."
_OTLP_IO_KEYS = frozenset({"mlflow.spanInputs", "mlflow.spanOutputs"})
_SURROGATE = re.compile("[\ud800-\udfff]")
DEFAULT_LIMITS = InputLimits()


def _short(key: str) -> str:
    """A key as a rejection names it: never more than 40 characters of it (keys can be megabytes)."""
    return repr(key) if len(key) <= 40 else repr(key[:40]) + "…"


def _too_long(what: str, n: int) -> str:
    return f"{what} longer than {n} characters"


# Span status codes: the native enum and OTLP's StatusCode share their numbers.
_STATUS = {0: SpanStatus.UNSET, 1: SpanStatus.OK, 2: SpanStatus.ERROR}


@dataclass(frozen=True, slots=True)
class Rejection:
    index: int
    field: str
    reason: str


@dataclass(slots=True)
class Decoded:
    """The outcome of decoding one request."""

    spans: list[SpanRecord] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    stripped_keys: int = 0


class _Reject(Exception):
    def __init__(self, field_name: str, reason: str) -> None:
        super().__init__(reason)
        self.field = field_name
        self.reason = reason


def _check_id(raw: bytes, size: int, where: str, *, optional: bool = False) -> str | None:
    if not raw and optional:
        return None
    if len(raw) != size:
        raise _Reject(where, f"must be {size} bytes, got {len(raw)}")
    if raw == bytes(size):
        raise _Reject(where, "must not be all zero")
    return raw.hex()


def _check_times(start: int, end: int, where: str) -> None:
    if start <= 0:
        raise _Reject(f"{where}.start_time_unix_nano", "must be set (Unix epoch nanoseconds)")
    if end < start:
        raise _Reject(f"{where}.end_time_unix_nano", "must not be before start_time_unix_nano")
    if end > MAX_TIME_NS:
        raise _Reject(f"{where}.end_time_unix_nano", "must be before 2262 (below 2^63 nanoseconds)")


def _check_name(name: str, where: str) -> None:
    if not name:
        raise _Reject(f"{where}.name", "must not be empty")
    if len(name) > MAX_NAME_CHARS:
        raise _Reject(f"{where}.name", f"longer than {MAX_NAME_CHARS} characters")


def _json(text: str, where: str) -> Any:
    if not text:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Reject(where, f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
    except (ValueError, RecursionError):  # an integer past Python's digit limit, or nesting past its stack
        raise _Reject(where, "is not valid JSON here (an integer over 4300 digits, or nested too deep)") from None
    if _json_suspect(text):
        problem = _json_problem(value)
        if problem:
            raise _Reject(where, problem)
    return value


def _json_suspect(text: str) -> bool:
    """Whether parsed ``text`` may nest deeper than ``MAX_JSON_DEPTH`` or hold a lone surrogate:
    two scans in C, so the walk below runs only for the few values that need it. (Protobuf
    strings are valid UTF-8, so a surrogate can only come from a ``\\uD800``-style escape.)"""
    return "\\ud" in text or "\\uD" in text or text.count("[") + text.count("{") > MAX_JSON_DEPTH


def _json_problem(value: Any) -> str | None:
    """Why a parsed JSON value cannot be stored, or None: too deep, or a lone surrogate (which
    has no UTF-8 encoding) in a key or a string."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return "holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not valid UTF-8"
        elif isinstance(item, (dict, list)):
            if depth >= MAX_JSON_DEPTH:
                return f"nests deeper than {MAX_JSON_DEPTH} levels"
            if isinstance(item, dict):
                stack.extend((k, depth + 1) for k in item)
                stack.extend((v, depth + 1) for v in item.values())
            else:
                stack.extend((v, depth + 1) for v in item)
    return None


def _clean_tags(tags: Any, where: str, out: dict[str, str]) -> int:
    stripped = 0
    for key in tags:
        if key.startswith(RESERVED_PREFIX):
            stripped += 1
            continue
        if not key or len(key) > MAX_TAG_KEY_CHARS:
            raise _Reject(f"{where}[{_short(key)}]", f"tag key must be 1..{MAX_TAG_KEY_CHARS} characters")
        value = tags[key]
        if len(value) > MAX_TAG_VALUE_CHARS:
            raise _Reject(f"{where}[{_short(key)}]", f"tag value longer than {MAX_TAG_VALUE_CHARS} characters")
        out[key] = value
    return stripped


# ---- native TraceGatewayService ------------------------------------------------------------
#
# The hot path of the gateway (every span of every request passes here), so it is written for
# speed: one cheap test per field on the valid path, and the strings that name a field only
# built when something is wrong (``_native_problem`` then repeats the checks in order to name
# the first one). Maps are iterated by key (``ItemsView`` over a protobuf map is pure Python).

_PLAIN_KINDS = frozenset({"string_value", "bool_value", "int_value", "double_value"})
_ZERO_TRACE_ID = bytes(16)
_ZERO_SPAN_ID = bytes(8)


def _native_value(v: Any, where: str, lim: InputLimits) -> Any:
    kind = v.WhichOneof("value")
    if kind in _PLAIN_KINDS:
        return getattr(v, kind)
    if kind == "string_list_value":
        values = v.string_list_value.values
        if sum(map(len, values)) > lim.max_value_chars:
            raise _Reject(where, _too_long("list (all its strings together)", lim.max_value_chars))
        return list(values)
    if kind == "json_value":
        if len(v.json_value) > lim.max_value_chars:
            raise _Reject(where, _too_long("json_value", lim.max_value_chars))
        return _json(v.json_value, where)
    raise _Reject(where, "attribute value has no value set")


def _native_attributes(attrs: Any, where: str, out: dict[str, Any], lim: InputLimits) -> int:
    """Convert an attribute map into ``out``; returns how many reserved keys it stripped."""
    if len(attrs) > lim.max_attributes:
        raise _Reject(where, f"more than {lim.max_attributes} attributes")
    stripped = 0
    for key in attrs:
        if key.startswith(RESERVED_PREFIX):
            stripped += 1
            continue
        if len(key) > lim.max_key_chars:
            raise _Reject(f"{where}[{_short(key)}]", _too_long("attribute key", lim.max_key_chars))
        v = attrs[key]
        kind = v.WhichOneof("value")
        if kind == "string_value" and len(v.string_value) > lim.max_value_chars:
            raise _Reject(f"{where}[{_short(key)}]", _too_long("value", lim.max_value_chars))
        if kind in _PLAIN_KINDS:
            out[key] = getattr(v, kind)
        else:
            out[key] = _native_value(v, f"{where}[{_short(key)}]", lim)
    return stripped


def _native_problem(s: Any) -> _Reject:
    """The first thing wrong with a span's scalar fields, named (only called when one is)."""
    try:
        _check_id(s.trace_id, 16, ".trace_id")
        _check_id(s.span_id, 8, ".span_id")
        _check_id(s.parent_span_id, 8, ".parent_span_id", optional=True)
        _check_name(s.name, "")
        _check_times(s.start_time_unix_nano, s.end_time_unix_nano, "")
        if s.status_code not in _STATUS:
            return _Reject(".status_code", f"unknown value {s.status_code}")
    except _Reject as r:
        return r
    return _Reject("", "invalid span")  # unreachable while the fast checks mirror the ones above


def _native_span(s: Any, trace_ids: dict[bytes, str], lim: InputLimits) -> tuple[SpanRecord, int]:
    """One span; raises ``_Reject`` with a field path relative to the span (``.name``).

    ``trace_ids`` maps raw trace ids to their hex already made for this request, so the spans
    of one trace share one string (less to allocate, ~80 bytes less per span held).
    """
    trace_id = s.trace_id
    span_id = s.span_id
    parent_id = s.parent_span_id
    name = s.name
    start = s.start_time_unix_nano
    end = s.end_time_unix_nano
    status = _STATUS.get(s.status_code)
    if (
        len(trace_id) != 16
        or trace_id == _ZERO_TRACE_ID
        or len(span_id) != 8
        or span_id == _ZERO_SPAN_ID
        or (parent_id and (len(parent_id) != 8 or parent_id == _ZERO_SPAN_ID))
        or not name
        or len(name) > MAX_NAME_CHARS
        or start <= 0
        or end < start
        or end > MAX_TIME_NS
        or status is None
    ):
        raise _native_problem(s)
    attributes: dict[str, Any] = {}
    status_message = s.status_message
    span_type = s.span_type
    if len(status_message) > lim.max_status_chars:
        raise _Reject(".status_message", _too_long("status message", lim.max_status_chars))
    if len(span_type) > lim.max_key_chars:
        raise _Reject(".span_type", _too_long("span type", lim.max_key_chars))
    size = len(name) + len(status_message)  # approx_span_bytes, counted on the way
    stripped = 0
    attrs = s.attributes
    if attrs:
        if len(attrs) > lim.max_attributes:
            raise _Reject(".attributes", f"more than {lim.max_attributes} attributes")
        max_key, max_value = lim.max_key_chars, lim.max_value_chars
        # _native_attributes inlined (the per-span hot path), with the size counted on the way.
        for key in attrs:
            if key.startswith(RESERVED_PREFIX):
                stripped += 1
                continue
            if len(key) > max_key:
                raise _Reject(f".attributes[{_short(key)}]", _too_long("attribute key", max_key))
            v = attrs[key]
            kind = v.WhichOneof("value")
            if kind == "string_value":
                value = v.string_value
                if len(value) > max_value:
                    raise _Reject(f".attributes[{_short(key)}]", _too_long("value", max_value))
                size += len(value)
            elif kind in _PLAIN_KINDS:
                value = getattr(v, kind)
            else:
                value = _native_value(v, f".attributes[{_short(key)}]", lim)
                size += value_bytes(value)
            attributes[key] = value
            size += len(key)
        size += ATTRIBUTE_BYTES * len(attributes)
    events: list[SpanEvent] | tuple[()] = ()
    if s.events:
        if len(s.events) > lim.max_events:
            raise _Reject(".events", f"more than {lim.max_events} events")
        events = []
        for j, e in enumerate(s.events):
            if len(e.name) > lim.max_key_chars:
                raise _Reject(f".events[{j}].name", _too_long("event name", lim.max_key_chars))
            ev_attrs: dict[str, Any] = {}
            stripped += _native_attributes(e.attributes, f".events[{j}].attributes", ev_attrs, lim)
            events.append(SpanEvent(e.name or "event", e.time_unix_nano, ev_attrs))
    tags: dict[str, str] = {}
    raw_tags = s.trace_tags
    if raw_tags:
        stripped += _clean_tags(raw_tags, ".trace_tags", tags)
    text = s.inputs_json
    if len(text) > lim.max_io_json_chars:
        raise _Reject(".inputs_json", _too_long("inputs_json", lim.max_io_json_chars))
    inputs = _json(text, ".inputs_json") if text else None
    text = s.outputs_json
    if len(text) > lim.max_io_json_chars:
        raise _Reject(".outputs_json", _too_long("outputs_json", lim.max_io_json_chars))
    outputs = _json(text, ".outputs_json") if text else None
    trace_hex = trace_ids.get(trace_id)
    if trace_hex is None:
        trace_hex = trace_ids[trace_id] = trace_id.hex()
    # Positional on purpose (once per span, the hot path): the order is SpanRecord's fields in gateway/model.py.
    record = SpanRecord(
        trace_hex,
        span_id.hex(),
        parent_id.hex() if parent_id else None,
        name,
        span_type or "UNKNOWN",
        start,
        end,
        status,
        status_message,
        attributes,
        events,
        inputs,
        outputs,
        tags,
    )
    if events or inputs is not None or outputs is not None or tags:
        record.approx_bytes = size + rest_of_span_bytes(record)
    else:
        record.approx_bytes = size + SPAN_OVERHEAD_BYTES
    return record, stripped


def decode_native_spans(spans: Any, limits: InputLimits = DEFAULT_LIMITS) -> Decoded:
    """Decode ``ExportSpansRequest.spans``."""
    result = Decoded()
    out = result.spans
    stripped = 0
    trace_ids: dict[bytes, str] = {}
    for i, s in enumerate(spans):
        try:
            record, n = _native_span(s, trace_ids, limits)
        except _Reject as r:
            result.rejections.append(Rejection(i, f"spans[{i}]{r.field}", r.reason))
            continue
        stripped += n
        out.append(record)
    result.stripped_keys = stripped
    return result


# ---- OTLP TraceService/Export ---------------------------------------------------------------


def _any_value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind)


def _maybe_json(value: Any, where: str) -> Any:
    """A string attribute that MLflow's SDK JSON-encodes, decoded; text that is not JSON stays text."""
    if isinstance(value, str):
        try:
            parsed = json.loads(value)
        except (ValueError, RecursionError):
            return value
        if _json_suspect(value):
            problem = _json_problem(parsed)
            if problem:
                raise _Reject(where, problem)
        return parsed
    return value


def decode_otlp_spans(resource_spans: Any, limits: InputLimits = DEFAULT_LIMITS) -> Decoded:
    """Decode ``ExportTraceServiceRequest.resource_spans`` (indexes count spans in order)."""
    result = Decoded()
    index = -1
    for r, rs in enumerate(resource_spans):
        for s_i, ss in enumerate(rs.scope_spans):
            for k, s in enumerate(ss.spans):
                index += 1
                where = f"resource_spans[{r}].scope_spans[{s_i}].spans[{k}]"
                try:
                    record, stripped = _otlp_span(s, where, limits)
                except _Reject as rej:
                    result.rejections.append(Rejection(index, rej.field, rej.reason))
                    continue
                result.stripped_keys += stripped
                result.spans.append(record)
    return result


def _otlp_span(s: Any, where: str, lim: InputLimits) -> tuple[SpanRecord, int]:
    trace_id = _check_id(s.trace_id, 16, f"{where}.trace_id")
    span_id = _check_id(s.span_id, 8, f"{where}.span_id")
    parent = _check_id(s.parent_span_id, 8, f"{where}.parent_span_id", optional=True)
    _check_name(s.name, where)
    _check_times(s.start_time_unix_nano, s.end_time_unix_nano, where)
    attributes: dict[str, Any] = {}
    tags: dict[str, str] = {}
    span_type = "UNKNOWN"
    inputs: Any = None
    outputs: Any = None
    stripped = 0
    if len(s.attributes) > lim.max_attributes:
        raise _Reject(f"{where}.attributes", f"more than {lim.max_attributes} attributes")
    if len(s.status.message) > lim.max_status_chars:
        raise _Reject(f"{where}.status.message", _too_long("status message", lim.max_status_chars))
    if len(s.events) > lim.max_events:
        raise _Reject(f"{where}.events", f"more than {lim.max_events} events")
    for kv in s.attributes:
        key = kv.key
        if len(key) > lim.max_key_chars:
            raise _Reject(f"{where}.attributes[{_short(key)}]", _too_long("attribute key", lim.max_key_chars))
        value = _any_value(kv.value)
        if value.__class__ is str:
            bound = lim.max_io_json_chars if key in _OTLP_IO_KEYS else lim.max_value_chars
            if len(value) > bound:
                raise _Reject(f"{where}.attributes[{_short(key)}]", _too_long("value", bound))
        if not key.startswith(RESERVED_PREFIX):
            attributes[key] = value
        elif key == "mlflow.spanType":
            span_type = str(_maybe_json(value, f"{where}.attributes[{key!r}]"))
        elif key == "mlflow.spanInputs":
            inputs = _maybe_json(value, f"{where}.attributes[{key!r}]")
        elif key == "mlflow.spanOutputs":
            outputs = _maybe_json(value, f"{where}.attributes[{key!r}]")
        elif key.startswith(_TRACE_TAG_PREFIX):
            stripped += _clean_tags(
                {key[len(_TRACE_TAG_PREFIX) :]: str(_maybe_json(value, f"{where}.attributes"))},
                f"{where}.attributes",
                tags,
            )
        elif key in _OTLP_PASSTHROUGH:
            attributes[key] = _maybe_json(value, f"{where}.attributes[{key!r}]")
        else:
            stripped += 1
    for j, e in enumerate(s.events):
        if len(e.name) > lim.max_key_chars:
            raise _Reject(f"{where}.events[{j}].name", _too_long("event name", lim.max_key_chars))
        if len(e.attributes) > lim.max_attributes:
            raise _Reject(f"{where}.events[{j}].attributes", f"more than {lim.max_attributes} attributes")
    events = (
        [
            SpanEvent(
                e.name or "event",
                e.time_unix_nano,
                {kv.key: _any_value(kv.value) for kv in e.attributes if not kv.key.startswith(RESERVED_PREFIX)},
            )
            for e in s.events
        ]
        if s.events
        else ()
    )
    record = SpanRecord(
        trace_id=trace_id or "",
        span_id=span_id or "",
        parent_span_id=parent,
        name=s.name,
        span_type=span_type,
        start_time_ns=s.start_time_unix_nano,
        end_time_ns=s.end_time_unix_nano,
        status=_STATUS.get(s.status.code, SpanStatus.UNSET),
        status_message=s.status.message,
        attributes=attributes,
        events=events,
        inputs=inputs,
        outputs=outputs,
        trace_tags=tags,
    )
    return record, stripped
