"""The span size estimate that bounds assembly and batching is honest about real memory."""

import gc
import json
import random
import tracemalloc

from clients.pb import spans_pb2
from gateway.model import SpanRecord, approx_span_bytes
from gateway.receive.decode_spans import decode_native_spans
from tests.gateway.test_rescue_buffer import realistic


def wire_spans(rng: random.Random, count: int) -> list[spans_pb2.Span]:
    """Realistic traces as the client sends them (every string its own object once decoded)."""
    out = []
    for i in range(count):
        trace = realistic(rng, i)
        for s in trace.spans:
            p = spans_pb2.Span(
                trace_id=bytes.fromhex(s.trace_id),
                span_id=bytes.fromhex(s.span_id),
                parent_span_id=bytes.fromhex(s.parent_span_id or ""),
                name=s.name,
                span_type=s.span_type,
                start_time_unix_nano=s.start_time_ns,
                end_time_unix_nano=s.end_time_ns,
                status_code=1,  # type: ignore[arg-type]
                inputs_json=json.dumps(s.inputs) if s.inputs else "",
                outputs_json=json.dumps(s.outputs) if s.outputs else "",
                trace_tags=trace.tags if s.parent_span_id is None else {},
            )
            for key, value in s.attributes.items():
                attr = p.attributes[key]
                if isinstance(value, bool):
                    attr.bool_value = value
                elif isinstance(value, int):
                    attr.int_value = value
                elif isinstance(value, float):
                    attr.double_value = value
                elif isinstance(value, list):
                    attr.string_list_value.values.extend(value)
                else:
                    attr.string_value = value
            for e in s.events:
                ev = p.events.add(name=e.name, time_unix_nano=e.time_ns)
                for key, value in e.attributes.items():
                    ev.attributes[key].int_value = value
            out.append(p)
    return out


def test_span_estimate_is_within_15_percent_of_tracemalloc() -> None:
    wire = wire_spans(random.Random(2), 300)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        spans = decode_native_spans(wire).spans
        gc.collect()
        real = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(spans) == 300 * 17
    estimate = sum(approx_span_bytes(s) for s in spans)
    assert 0.85 * estimate <= real <= 1.15 * estimate, (real, estimate)


def test_long_and_non_ascii_values_count() -> None:
    base = SpanRecord("a" * 32, "b" * 16, None, "n", "CHAIN", 1, 2)
    long = SpanRecord("a" * 32, "b" * 16, None, "n", "CHAIN", 1, 2, attributes={"k": "x" * 10_000})
    nested = SpanRecord("a" * 32, "b" * 16, None, "n", "CHAIN", 1, 2, inputs={"m": ["まんが" * 1000]})
    assert approx_span_bytes(long) >= approx_span_bytes(base) + 10_000
    assert approx_span_bytes(nested) >= approx_span_bytes(base) + 6_000


def test_the_decoder_counts_what_approx_span_bytes_counts() -> None:
    wire = wire_spans(random.Random(4), 20)
    wire[3].attributes["filters"].json_value = '{"lang": "ja", "tags": ["seinen", "historical"]}'
    wire[4].status_message = "timeout talking to the vector store"
    for span in decode_native_spans(wire).spans:
        decoded = span.approx_bytes
        span.approx_bytes = 0
        assert decoded == approx_span_bytes(span) > 0, span.name
