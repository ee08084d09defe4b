"""Fault tests: gateway down, slow, full or rejecting; the request path never notices."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from clients import Feedback, FeedbackEvent
from clients.retry_info import retry_delay_from_status
from tests.clients.conftest import MakeTracer
from tests.clients.fake_gateway import FakeGateway
from tests.clients.manga_tree import trace_manga_request
from tests.support import wait_for

_SLOW_TO_ENCODE = {"items": [{"a": i, "b": "y" * 20} for i in range(3000)]}
"""Inputs that take the sender a while to serialise, so shutdown finds it mid-pass."""


def test_gateway_down_never_blocks_and_drops_are_counted(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(target=dead_target, max_queue_spans=40, max_batch_spans=16)
    started = time.monotonic()
    for i in range(10):
        trace_manga_request(tracer, request_id=f"r{i}")
    assert time.monotonic() - started < 0.5  # 170 spans recorded without waiting on the network
    wait_for(
        lambda: tracer.stats().spans_dropped["unavailable"] > 0,
        timeout_s=5,
        interval_s=0.005,
        what="the sender's count",
    )
    t0 = time.monotonic()
    tracer.shutdown(5.0)
    assert time.monotonic() - t0 < 2.0
    stats = tracer.stats()
    assert stats.spans_sent == 0 and stats.spans_pending == 0
    assert stats.spans_dropped["unavailable"] > 0
    assert stats.spans_dropped["queue_full"] + stats.spans_enqueued == 170
    assert stats.spans_dropped_total == 170
    assert stats.errors == 0
    assert stats.last_error is not None and "unavailable" in stats.last_error


def test_queue_bound_accounts_for_every_span(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(
        target=dead_target, max_queue_spans=5, flush_interval_s=60.0, encode_interval_s=60.0, max_batch_spans=512
    )
    for _ in range(4):
        trace_manga_request(tracer)
    stats = tracer.stats()
    assert stats.spans_enqueued == 5  # the sender sleeps: nothing left the queue
    assert stats.spans_dropped["queue_full"] == 4 * 17 - 5
    assert stats.spans_enqueued + stats.spans_dropped["queue_full"] == 4 * 17
    tracer.shutdown(2.0)
    after = tracer.stats()
    assert after.spans_enqueued + after.spans_dropped["queue_full"] == 4 * 17
    assert after.spans_sent + after.spans_dropped_total == 4 * 17


def test_gateway_recovers_after_backoff(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    gateway.exhausted = True
    gateway.retry_delay_s = 0.05
    tracer = make_tracer(target=gateway.target, backoff_initial_s=0.01, backoff_max_s=0.1)
    trace_manga_request(tracer)
    wait_for(
        lambda: tracer.stats().spans_dropped["resource_exhausted"] == 17,
        timeout_s=5,
        interval_s=0.005,
        what="the sender's count",
    )
    gateway.exhausted = False
    trace_manga_request(tracer)
    assert gateway.wait_for(lambda: len(gateway.spans()) == 17)
    assert tracer.flush(5.0)
    stats = tracer.stats()
    assert stats.spans_sent == 17 and stats.spans_dropped_total == 17


def test_slow_gateway_counts_deadline_exceeded(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    gateway.delay_s = 5.0
    tracer = make_tracer(target=gateway.target, rpc_timeout_s=0.1)
    with tracer.start_span("slow"):
        pass
    wait_for(
        lambda: tracer.stats().spans_dropped["deadline_exceeded"] == 1,
        timeout_s=5,
        interval_s=0.005,
        what="the sender's count",
    )
    assert tracer.stats().spans_sent == 0


def test_full_gateway_counts_resource_exhausted_and_honours_retry_info(
    make_tracer: MakeTracer, gateway: FakeGateway
) -> None:
    gateway.exhausted = True
    gateway.retry_delay_s = 30.0
    tracer = make_tracer(target=gateway.target, backoff_max_s=60.0)
    with tracer.start_span("first"):
        pass
    wait_for(
        lambda: tracer.stats().spans_dropped["resource_exhausted"] == 1,
        timeout_s=5,
        interval_s=0.005,
        what="the sender's count",
    )
    calls = gateway.calls
    with tracer.start_span("second"):
        pass
    # The sender now waits the server's 30 s before the next call: flush cannot complete.
    assert not tracer.flush(0.3)
    assert gateway.calls == calls
    t0 = time.monotonic()
    tracer.shutdown(2.0)  # shutdown cuts the pause short
    assert time.monotonic() - t0 < 2.0
    assert tracer.stats().spans_dropped["resource_exhausted"] == 2


def test_partial_rejections_are_counted(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    gateway.reject_per_request = 2
    tracer = make_tracer(target=gateway.target)
    trace_manga_request(tracer)
    assert tracer.flush(5.0)
    stats = tracer.stats()
    requests = len(gateway.export_requests)
    assert stats.spans_dropped["rejected"] == 2 * requests
    assert stats.spans_sent == 17 - 2 * requests
    assert stats.last_error is not None and "rejected" in stats.last_error


def test_shutdown_is_idempotent_and_later_spans_are_counted(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    tracer = make_tracer(target=gateway.target)
    with tracer.start_span("before"):
        pass
    tracer.shutdown(2.0)
    tracer.shutdown(2.0)
    assert [span.name for span in gateway.spans()] == ["before"]
    with tracer.start_span("after"):
        pass
    stats = tracer.stats()
    assert stats.spans_sent == 1 and stats.spans_dropped["shutdown"] == 1
    assert tracer.flush(0.1)  # nothing left to ship


def _signal_encodes(monkeypatch: pytest.MonkeyPatch, entered: threading.Event, release: threading.Event) -> None:
    """The sender's encode sets ``entered`` when a pass starts encoding, then waits for ``release``."""
    import clients.sender as sender_module

    real_encode = sender_module.encode_spans_chunk  # type: ignore[attr-defined]

    def encode(batch: list[Any]) -> tuple[bytes, int]:
        entered.set()
        release.wait(10.0)
        return real_encode(batch)

    monkeypatch.setattr(sender_module, "encode_spans_chunk", encode)


def test_shutdown_during_a_pass_counts_every_span(
    make_tracer: MakeTracer, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Shutdown closes the channel under a pass that is still encoding and sending (a call on a
    closed channel raises ValueError, not an RpcError): whatever it held is counted too."""
    entered, go_on = threading.Event(), threading.Event()
    go_on.set()  # encodes run at their own (slow) pace; the event only says one has begun
    _signal_encodes(monkeypatch, entered, go_on)
    tracer = make_tracer(target=gateway.target)
    for _ in range(600):
        with tracer.start_span("heavy") as span:
            span.set_inputs(_SLOW_TO_ENCODE)
    assert entered.wait(5.0), "the sender never started a pass"
    tracer.shutdown(0.01)
    stats = tracer.stats()
    assert stats.spans_pending == 0
    assert stats.spans_enqueued + stats.spans_dropped["queue_full"] == 600
    assert stats.spans_sent + stats.spans_dropped_total == 600
    assert stats.spans_dropped["shutdown"] > 0


@pytest.mark.parametrize("stuck_in", ["encode", "call", "event_call"])
def test_shutdown_counts_what_a_stuck_sender_holds_once(
    make_tracer: MakeTracer, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch, stuck_in: str
) -> None:
    """A sender thread stuck past shutdown's window (in an encode, or in a call that ignores the
    channel's close and then succeeds) is orphaned: shutdown returns with every span and event
    counted, and when the thread comes back it counts nothing more."""
    import clients.sender as sender_module
    from clients.pb import trace_gateway_service_pb2 as svc_pb2

    entered, release = threading.Event(), threading.Event()
    tracer = make_tracer(target=gateway.target)
    if stuck_in == "encode":
        real_encode = sender_module.encode_spans_chunk  # type: ignore[attr-defined]

        def stuck_encode(batch: list[Any]) -> tuple[bytes, int]:
            entered.set()
            release.wait(10.0)
            data, bad = real_encode(batch)
            return data, bad + 1  # counted as an encode error if the thread still counted

        monkeypatch.setattr(sender_module, "encode_spans_chunk", stuck_encode)
    elif stuck_in == "call":

        def stuck_call(payload: bytes, timeout: float) -> svc_pb2.ExportSpansResponse:
            entered.set()
            release.wait(10.0)
            return svc_pb2.ExportSpansResponse()  # accepted: counted as sent if the thread still counted

        monkeypatch.setattr(tracer._sender, "_export", stuck_call)
    else:

        def stuck_event_call(request: Any, timeout: float) -> svc_pb2.RecordFeedbackResponse:
            entered.set()
            release.wait(10.0)
            return svc_pb2.RecordFeedbackResponse()

        monkeypatch.setattr(tracer._sender, "_feedback", stuck_event_call)
    try:
        for i in range(40):
            with tracer.start_span(f"s{i}"):
                pass
        assert tracer.record_feedback(FeedbackEvent("resp_1", "ab" * 16, Feedback.THUMBS_DOWN))
        tracer.flush(0.0)  # wake the sender now rather than at the encode interval
        assert entered.wait(5.0)
        flushed: list[bool] = []
        waiter = threading.Thread(target=lambda: flushed.append(tracer.flush(30.0)))
        waiter.start()  # waits on the stuck thread until shutdown has counted everything
        started = time.monotonic()
        tracer.shutdown(0.05)
        assert time.monotonic() - started < 2.0
        waiter.join(2.0)
        assert flushed == [True]
        after_shutdown = tracer.stats()
        assert after_shutdown.spans_pending == 0 and after_shutdown.events_pending == 0
        assert after_shutdown.spans_enqueued == 40 and after_shutdown.events_enqueued == 1
        spans_sent = 40 if stuck_in == "event_call" else 0  # the spans went before the events
        assert after_shutdown.spans_sent == spans_sent
        assert after_shutdown.spans_dropped["shutdown"] == 40 - spans_sent
        assert after_shutdown.events_dropped["shutdown"] == 1 and after_shutdown.events_sent == 0
    finally:
        release.set()
    wait_for(lambda: not tracer._sender._thread.is_alive(), timeout_s=5, interval_s=0.005, what="the sender's count")
    assert tracer.stats() == after_shutdown
    assert len(gateway.spans()) == spans_sent


def test_a_flush_waiting_when_shutdown_cuts_the_drain_short_returns(
    make_tracer: MakeTracer, gateway: FakeGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A flush() waiting on the sender returns as soon as shutdown has counted everything, not
    after its own timeout."""
    entered, release = threading.Event(), threading.Event()
    _signal_encodes(monkeypatch, entered, release)  # the sender's first encode waits for the test
    tracer = make_tracer(target=gateway.target, flush_interval_s=60.0)
    for _ in range(200):
        with tracer.start_span("heavy") as span:
            span.set_inputs(_SLOW_TO_ENCODE)
    results: list[tuple[bool, float]] = []

    def flush() -> None:
        started = time.monotonic()
        results.append((tracer.flush(30.0), time.monotonic() - started))

    waiter = threading.Thread(target=flush)
    waiter.start()
    # flush() wakes the idle sender (its interval is 60 s), whose pass is then held mid-encode.
    assert entered.wait(5.0), "flush() did not start a pass"
    tracer.shutdown(0.0)
    waiter.join(10.0)
    assert results and results[0][0] and results[0][1] < 5.0, results
    stats = tracer.stats()
    assert stats.spans_pending == 0 and stats.spans_sent + stats.spans_dropped_total == 200
    release.set()  # the orphaned sender goes on, counts nothing more, and ends
    wait_for(lambda: not tracer._sender._thread.is_alive(), timeout_s=20, what="the orphaned sender to end")
    assert tracer.stats() == stats


def test_a_span_that_ends_as_shutdown_closes_is_counted(make_tracer: MakeTracer, gateway: FakeGateway) -> None:
    """A span an application thread appended after shutdown drained the queue (it passed the
    queue's bound check just before the bound dropped to 0) is counted at the next stats()."""
    tracer = make_tracer(target=gateway.target)
    with tracer.start_span("late") as late:
        tracer.shutdown(1.0)
    assert tracer.stats().spans_dropped["shutdown"] == 1  # the queue was closed when it ended
    tracer._sink.queue.append(late)  # what the race leaves behind
    stats = tracer.stats()
    assert stats.spans_pending == 0 and stats.spans_dropped["shutdown"] == 2


def test_retry_info_decoding_matches_google_rpc() -> None:
    from google.protobuf import any_pb2, duration_pb2
    from google.rpc import error_details_pb2, status_pb2

    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)))
    other = any_pb2.Any()
    other.Pack(error_details_pb2.ErrorInfo(reason="FULL", domain="gw"))
    status = status_pb2.Status(code=8, message="full", details=[other, detail])
    assert retry_delay_from_status(status.SerializeToString()) == 2.5
    assert retry_delay_from_status(status_pb2.Status(code=8).SerializeToString()) is None
    assert retry_delay_from_status(b"\x1a\xff") is None  # truncated: ignored, not raised
