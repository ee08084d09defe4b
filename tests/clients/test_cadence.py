"""The sender's two clocks: spans are encoded (and their objects freed) on a short cadence, and
sent in batches on the long one, so the application never holds finished spans for long and
the gateway does not get an RPC per encoding pass."""

from __future__ import annotations

import time
import weakref

from clients import Feedback, FeedbackEvent, Tracer
from tests.clients.conftest import MakeTracer
from tests.clients.fake_gateway import FakeGateway, start_fake_gateway
from tests.clients.manga_tree import trace_manga_request
from tests.support import wait_for


def test_spans_are_freed_on_the_encode_cadence_and_sent_on_the_batch_one(
    make_tracer: MakeTracer, gateway: FakeGateway
) -> None:
    tracer = make_tracer(target=gateway.target, encode_interval_s=0.01, flush_interval_s=2.0)
    with tracer.start_span("first"):
        pass
    assert tracer.flush(5.0) and len(gateway.export_requests) == 1
    # The sender takes the span within an encode interval or so and lets go of the object.
    _wait_released(_record(tracer, "held"))
    stats = tracer.stats()
    assert stats.spans_pending == 1 and stats.spans_sent == 1  # encoded, waiting for its batch
    assert len(gateway.export_requests) == 1
    for i in range(5):  # five requests over ~50 ms, five encoding passes: one RPC
        trace_manga_request(tracer, request_id=f"r{i}")
        time.sleep(0.01)
    assert tracer.flush(5.0)
    assert len(gateway.export_requests) == 2
    assert len(gateway.spans()) == 2 + 5 * 17
    stats = tracer.stats()
    assert (stats.spans_enqueued, stats.spans_sent, stats.spans_pending) == (2 + 5 * 17, 2 + 5 * 17, 0)


class _Marker:
    """Set as a span's inputs: it lives exactly as long as the span object does."""

    def __str__(self) -> str:
        return "marker"


def _record(tracer: Tracer, name: str) -> weakref.ref[_Marker]:
    """End a span named ``name`` and return a reference that dies when the sender frees it."""
    marker = _Marker()
    with tracer.start_span(name) as span:
        span.set_inputs(marker)
    return weakref.ref(marker)


def _wait_released(marker: weakref.ref[_Marker]) -> None:
    wait_for(lambda: marker() is None, 5.0, 0.002, "the sender to release the span")


def test_a_pass_that_finds_no_spans_keeps_the_short_cadence(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    """Spans arriving more slowly than the encode cadence (some passes find the queue empty) are
    still freed within about an encode interval: the sender falls back to its long sleep only
    after a whole batch interval without spans."""
    tracer = make_tracer(target=gateway.target, encode_interval_s=0.01, flush_interval_s=0.5)
    with tracer.start_span("first"):
        pass
    assert tracer.flush(5.0)
    held_for = []
    for i in range(40):  # over a second: batches are sent, and the passes after a send find nothing
        marker = _record(tracer, f"s{i}")
        ended = time.monotonic()
        _wait_released(marker)
        held_for.append(time.monotonic() - ended)
        time.sleep(0.025)  # slower than the 10 ms cadence: the next pass finds nothing
    assert max(held_for) < 0.25, held_for  # not the 0.5 s batch interval
    assert tracer.flush(5.0) and len(gateway.spans()) == 41


def test_held_spans_go_when_the_batch_interval_ends(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    tracer = make_tracer(target=gateway.target, encode_interval_s=0.01, flush_interval_s=0.2)
    started = time.monotonic()
    trace_manga_request(tracer)
    assert gateway.wait_for(lambda: len(gateway.spans()) == 17, 5.0)
    assert time.monotonic() - started < 2.0
    assert len(gateway.export_requests) == 1


def test_spans_recorded_while_the_sender_sleeps_wait_one_interval_not_two(
    make_tracer: MakeTracer, gateway: FakeGateway
) -> None:
    tracer = make_tracer(target=gateway.target, encode_interval_s=0.01, flush_interval_s=1.0)
    time.sleep(0.05)  # the sender's first pass found nothing: it sleeps for a whole interval
    with tracer.start_span("after-idle"):
        pass
    ended = time.monotonic()
    assert gateway.wait_for(lambda: len(gateway.spans()) == 1, 5.0)
    # Sent one interval after the span ended (~1.0 s), not one interval after the sender woke.
    assert time.monotonic() - ended < 1.5


def test_a_full_batch_goes_at_once(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    tracer = make_tracer(target=gateway.target, encode_interval_s=0.01, flush_interval_s=60.0, max_batch_spans=34)
    for i in range(3):
        trace_manga_request(tracer, request_id=f"r{i}")
    assert gateway.wait_for(lambda: len(gateway.spans()) >= 34, 5.0)  # long before the 60 s interval
    assert all(len(request.spans) <= 34 for request in gateway.export_requests)
    assert tracer.flush(5.0)
    assert len(gateway.spans()) == 51


def test_held_spans_and_events_are_counted_when_the_gateway_is_gone(make_tracer: MakeTracer) -> None:
    server, gateway = start_fake_gateway()
    try:
        tracer = make_tracer(target=gateway.target, encode_interval_s=0.01, flush_interval_s=60.0)
        with tracer.start_span("first"):
            pass
        assert tracer.flush(5.0)  # the sender is now on the encode cadence
        trace_manga_request(tracer)
        last = _record(tracer, "last")
        assert tracer.record_feedback(FeedbackEvent("resp_1", "ab" * 16, Feedback.THUMBS_DOWN))
        _wait_released(last)
        stats = tracer.stats()  # encoded and held for a batch: neither sent nor lost
        assert (stats.spans_pending, stats.spans_sent, stats.spans_dropped_total) == (18, 1, 0)
        assert stats.events_pending == 1
    finally:
        gateway.release()
        server.stop(0).wait(5)
    tracer.shutdown(2.0)
    stats = tracer.stats()
    assert (stats.spans_enqueued, stats.spans_sent, stats.spans_pending) == (19, 1, 0)
    assert stats.spans_dropped_total == 18 and stats.spans_dropped["unavailable"] == 18
    assert stats.events_dropped_total == 1 and stats.events_pending == 0
