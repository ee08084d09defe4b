"""Spans recorded by the tracer arrive at a real (fake) gateway with the right shape."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import json
import threading

import pytest

from clients import SpanHandle
from clients.pb import spans_pb2
from tests.clients.conftest import MakeTracer
from tests.clients.fake_gateway import FakeGateway
from tests.clients.manga_tree import SPAN_NAMES, TAGS, trace_manga_request


def _by_name(spans: list[spans_pb2.Span]) -> dict[str, spans_pb2.Span]:
    return {span.name: span for span in spans}


def test_span_tree_arrives_with_ids_links_times_and_tags(gateway: FakeGateway, make_tracer: MakeTracer) -> None:
    tracer = make_tracer(target=gateway.target, experiment_name="exp", service_name="svc")
    trace_id = trace_manga_request(tracer)
    assert tracer.flush(5.0)

    spans = gateway.spans()
    assert sorted(span.name for span in spans) == sorted(SPAN_NAMES)
    assert {request.experiment_name for request in gateway.export_requests} == {"exp"}
    assert {request.service_name for request in gateway.export_requests} == {"svc"}
    by_name = _by_name(spans)
    root = by_name["handle_message"]
    assert root.trace_id.hex() == trace_id and len(root.trace_id) == 16
    assert root.parent_span_id == b""
    for span in spans:
        assert span.trace_id == root.trace_id
        assert len(span.span_id) == 8 and span.span_id != bytes(8)
        assert span.start_time_unix_nano <= span.end_time_unix_nano
        assert span.status_code == spans_pb2.SPAN_STATUS_CODE_OK
    assert len({span.span_id for span in spans}) == 17
    assert by_name["retrieve_chunks"].parent_span_id == root.span_id
    assert by_name["vector_search"].parent_span_id == by_name["retrieve_chunks"].span_id
    assert by_name["grounding_check"].parent_span_id == by_name["apply_guardrails"].span_id
    assert root.start_time_unix_nano <= by_name["load_context"].start_time_unix_nano
    assert by_name["persist_response"].end_time_unix_nano <= root.end_time_unix_nano
    assert by_name["load_context"].end_time_unix_nano <= by_name["persist_response"].start_time_unix_nano
    assert root.span_type == "CHAIN" and by_name["bedrock_generate"].span_type == "LLM"
    # Trace tags travel on the root span (and on the span that was current when set).
    assert dict(root.trace_tags) == TAGS
    assert dict(by_name["route_intent"].trace_tags) == TAGS
    assert not by_name["load_context"].trace_tags
    assert json.loads(root.inputs_json) == {"message": "Recommend a manga like Vinland Saga"}
    assert json.loads(by_name["bedrock_generate"].outputs_json) == {"text": "Try Vagabond."}
    assert by_name["load_context"].inputs_json == ""
    assert root.attributes["request_id"].string_value == "r1"
    stats = tracer.stats()
    assert (stats.spans_enqueued, stats.spans_sent, stats.spans_dropped_total) == (17, 17, 0)


def test_attributes_events_and_status_are_typed(gateway: FakeGateway, make_tracer: MakeTracer) -> None:
    tracer = make_tracer(target=gateway.target)
    with tracer.start_span("typed", attributes={"given": "x"}) as span:
        span.set_attribute("flag", True)
        span.set_attribute("count", 3)
        span.set_attribute("huge", 2**70)
        span.set_attribute("score", 0.25)
        span.set_attributes(
            {
                "chunk_ids": ["c1", "c2"],
                "filters": {"genre": "seinen"},
                "mixed": [1, "a"],
                "skipped": None,
                "obj": object.__name__,
            }
        )
        span.add_event("cache_miss", {"key": "k1", "attempt": 2})
        span.set_status("ERROR", "upstream said no")
        span.set_outputs(None)
    assert tracer.flush(5.0)
    (sent,) = gateway.spans()
    attrs = sent.attributes
    assert attrs["given"].string_value == "x"
    assert attrs["flag"].WhichOneof("value") == "bool_value" and attrs["flag"].bool_value is True
    assert attrs["count"].WhichOneof("value") == "int_value" and attrs["count"].int_value == 3
    assert attrs["huge"].WhichOneof("value") == "double_value"
    assert attrs["score"].double_value == 0.25
    assert list(attrs["chunk_ids"].string_list_value.values) == ["c1", "c2"]
    assert json.loads(attrs["filters"].json_value) == {"genre": "seinen"}
    assert json.loads(attrs["mixed"].json_value) == [1, "a"]
    assert "skipped" not in attrs
    assert sent.status_code == spans_pb2.SPAN_STATUS_CODE_ERROR
    assert sent.status_message == "upstream said no"
    assert sent.outputs_json == "null" and sent.inputs_json == ""
    (event,) = sent.events
    assert event.name == "cache_miss" and event.attributes["attempt"].int_value == 2
    assert sent.start_time_unix_nano <= event.time_unix_nano <= sent.end_time_unix_nano


def test_caller_attribute_dict_is_not_mutated(gateway: FakeGateway, make_tracer: MakeTracer) -> None:
    tracer = make_tracer(target=gateway.target)
    shared = {"component": "x"}
    with tracer.start_span("a", attributes=shared) as span:
        span.set_attribute("extra", 1)
    assert shared == {"component": "x"}
    assert tracer.flush(5.0)
    assert set(gateway.spans()[0].attributes) == {"component", "extra"}


def test_exception_sets_error_records_event_and_is_reraised(gateway: FakeGateway, make_tracer: MakeTracer) -> None:
    tracer = make_tracer(target=gateway.target)
    with pytest.raises(KeyError), tracer.start_span("outer"), tracer.start_span("inner"):
        raise KeyError("missing")
    assert tracer.get_current_span() is None
    assert tracer.flush(5.0)
    by_name = _by_name(gateway.spans())
    for name in ("inner", "outer"):
        span = by_name[name]
        assert span.status_code == spans_pb2.SPAN_STATUS_CODE_ERROR
        assert span.status_message == "KeyError: 'missing'"
        (event,) = span.events
        assert event.name == "exception"
        assert event.attributes["exception.type"].string_value == "KeyError"
        assert event.attributes["exception.message"].string_value == "'missing'"
        assert "raise KeyError" in event.attributes["exception.stacktrace"].string_value


def test_current_span_and_ids(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(target=dead_target)
    assert tracer.get_current_span() is None
    with tracer.start_span("root") as root:
        assert tracer.get_current_span() is root
        assert isinstance(root, SpanHandle)
        assert len(root.trace_id) == 32 and int(root.trace_id, 16) != 0
        assert len(root.span_id) == 16 and root.parent_span_id is None
        with tracer.start_span("child") as child:
            assert tracer.get_current_span() is child
            assert child.trace_id == root.trace_id and child.parent_span_id == root.span_id
        assert tracer.get_current_span() is root
    assert tracer.get_current_span() is None
    with tracer.start_span("next") as other:
        assert other.trace_id != root.trace_id


def test_an_ended_span_holds_no_context_token(make_tracer: MakeTracer, dead_target: str) -> None:
    """A queued span waits for the sender; what it still references the garbage collector scans
    on the application's threads, so the contextvar token goes as the span ends."""
    tracer = make_tracer(target=dead_target)
    with tracer.start_span("root") as root, tracer.start_span("child") as child:
        assert any(isinstance(ref, contextvars.Token) for ref in gc.get_referents(child))
    for span in (root, child):
        assert not any(isinstance(ref, contextvars.Token) for ref in gc.get_referents(span))
    with root:  # re-entering an ended span still restores the current span on exit
        assert tracer.get_current_span() is root
    assert tracer.get_current_span() is None


def test_threads_follow_contextvars(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(target=dead_target)
    seen: dict[str, SpanHandle] = {}

    def work(key: str) -> None:
        with tracer.start_span(key) as span:
            seen[key] = span

    with tracer.start_span("root") as root:
        plain = threading.Thread(target=work, args=("plain",))
        copied_ctx = contextvars.copy_context()
        copied = threading.Thread(target=copied_ctx.run, args=(work, "copied"))
        for thread in (plain, copied):
            thread.start()
            thread.join(5)
    assert seen["plain"].trace_id != root.trace_id and seen["plain"].parent_span_id is None
    assert seen["copied"].trace_id == root.trace_id and seen["copied"].parent_span_id == root.span_id


def test_asyncio_tasks_nest_under_the_span_that_created_them(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(target=dead_target)

    async def step(name: str) -> SpanHandle:
        with tracer.start_span(name) as span:
            await asyncio.sleep(0)
            return span

    async def main() -> tuple[SpanHandle, list[SpanHandle]]:
        with tracer.start_span("root") as root:
            children = await asyncio.gather(step("a"), step("b"))
        return root, list(children)

    root, children = asyncio.run(main())
    for child in children:
        assert child.trace_id == root.trace_id and child.parent_span_id == root.span_id


def test_misuse_never_raises_and_is_counted(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(target=dead_target)
    tracer.update_current_trace(tags={"x": "y"})  # no current span
    with tracer.start_span("s") as span:
        span.set_status("MAYBE")
        span.set_attribute(["unhashable"], 1)  # type: ignore[arg-type]
    span.set_attribute("after_end", 1)  # ignored
    span.end()  # idempotent
    stats = tracer.stats()
    assert stats.errors == 3
    assert stats.last_error is not None and "set_attribute" in stats.last_error
