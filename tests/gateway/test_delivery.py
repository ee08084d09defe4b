"""Delivery with fakes: retries until success, poison isolation, dead letters, idempotent feedback."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from prometheus_client import CollectorRegistry

from gateway import config
from gateway.export.batcher import SpanBatch
from gateway.export.delivery import Delivery
from gateway.export.errors import PermanentWriteError, RetryableWriteError
from gateway.export.otlp_encode import encode_traces
from gateway.export.segments import Segment
from gateway.export.spool import Spool, TornSegment
from gateway.metrics import GatewayMetrics
from gateway.model import FeedbackRecord, FeedbackValue, SpanRecord, TraceRecord
from tests.fakes import FlakyWriter
from tests.support import wait_for


def cfg(**env: str) -> config.Config:
    return config.load(
        {"TRACEGW_RETRY_INITIAL_S": "0.01", "TRACEGW_RETRY_MAX_S": "0.05", "TRACEGW_BREAKER_COOLDOWN_S": "0.02", **env}
    )


def batch(*trace_ids: str) -> SpanBatch:
    traces = [
        TraceRecord(t, "e", [SpanRecord(t, "1" * 16, None, "handle_message", "CHAIN", 1, 2)], {}) for t in trace_ids
    ]
    return SpanBatch("e", traces, len(traces))


def make(tmp_path: Path, writer: FlakyWriter, **env: str) -> tuple[Delivery, GatewayMetrics]:
    c = cfg(**env)
    m = GatewayMetrics(CollectorRegistry())
    d = Delivery(writer, Spool(str(tmp_path / "spool"), 10**8, True, m), c.writer, c.retry, m, "bundles", 2)
    d.start()
    return d, m


def value(m: GatewayMetrics, name: str, **labels: str) -> float:
    return m.registry.get_sample_value(name, labels) or 0.0


def test_retryable_failures_are_retried_until_written(tmp_path: Path) -> None:
    w = FlakyWriter(fail_times=7)
    d, m = make(tmp_path, w)
    d.submit_batch(batch("a" * 32, "b" * 32))
    wait_for(lambda: w.written == ["a" * 32, "b" * 32], timeout_s=20, what="batch written after failures")
    assert value(m, "tracegw_write_retries_total", kind="spans") == 7
    assert value(m, "tracegw_circuit_transitions_total", to="open") >= 1
    wait_for(lambda: value(m, "tracegw_spool_segments") == 0, timeout_s=5, what="spool emptied")
    d.shutdown(2)


def test_a_poison_trace_is_isolated_and_dead_lettered(tmp_path: Path) -> None:
    ids = [f"{i:032x}" for i in range(1, 9)]
    w = FlakyWriter(poison=ids[5])
    d, m = make(tmp_path, w)
    d.submit_batch(batch(*ids))
    wait_for(lambda: len(w.written) == 7, timeout_s=20, what="the seven good traces")
    assert sorted(w.written) == sorted(set(ids) - {ids[5]})
    wait_for(
        lambda: value(m, "tracegw_spans_dropped_total", stage="write", reason="dead_letter") == 1,
        timeout_s=5,
        what="the poison trace counted",
    )
    dead = list((tmp_path / "spool" / "dead-letter").glob("*.seg"))
    assert len(dead) == 1 and value(m, "tracegw_batch_splits_total") >= 3
    d.shutdown(2)


def test_shutdown_leaves_undelivered_segments_in_the_spool_for_the_next_start(tmp_path: Path) -> None:
    w = FlakyWriter(fail_times=10**6)
    d, m = make(tmp_path, w)
    d.submit_batch(batch("c" * 32))
    wait_for(lambda: value(m, "tracegw_write_retries_total", kind="spans") >= 1, timeout_s=5, what="a retry")
    d.shutdown(0.5)
    assert len(list((tmp_path / "spool").glob("*.seg"))) == 1
    assert value(m, "tracegw_spans_dropped_total", stage="write", reason="shutdown") == 0
    w2 = FlakyWriter()
    d2, m2 = make(tmp_path, w2)
    wait_for(lambda: w2.written == ["c" * 32], timeout_s=10, what="replayed after restart")
    assert value(m2, "tracegw_spool_replayed_total") == 1
    d2.shutdown(2)


def test_retried_and_replayed_feedback_checks_for_an_existing_assessment(tmp_path: Path) -> None:
    w = FlakyWriter()
    d, _ = make(tmp_path, w)
    d.submit_feedback(FeedbackRecord("ev1", "resp", "d" * 32, FeedbackValue.THUMBS_DOWN, 0))
    wait_for(lambda: w.feedback == [("ev1", False)], timeout_s=5, what="first attempt without the check")
    d.shutdown(1)


def test_spool_disabled_still_delivers_from_memory(tmp_path: Path) -> None:
    w = FlakyWriter(fail_times=2)
    c = cfg()
    m = GatewayMetrics(CollectorRegistry())
    d = Delivery(w, Spool(None, 10**8, True, m), c.writer, c.retry, m, "bundles", 1)
    d.start()
    d.submit_batch(batch("e" * 32))
    wait_for(lambda: w.written == ["e" * 32], timeout_s=10, what="memory-only delivery")
    d.shutdown(1)


def test_encode_is_what_the_writer_receives() -> None:
    b = batch("f" * 32)
    request = ExportTraceServiceRequest.FromString(encode_traces(b.traces))
    assert request.resource_spans[0].scope_spans[0].spans[0].trace_id.hex() == "f" * 32


class GatedWriter(FlakyWriter):
    """Span writes block until ``release`` is set; records how many were in flight at once."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()
        self.span_started = threading.Event()
        self.in_flight = 0
        self.max_in_flight = 0

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        self.span_started.set()
        try:
            assert self.release.wait(10)
            super().write_spans(experiment_id, payload, span_count)
        finally:
            with self.lock:
                self.in_flight -= 1


def test_span_batches_take_turns_and_feedback_passes_beside_them(tmp_path: Path) -> None:
    writer = GatedWriter()
    d, m = make(tmp_path, writer)  # two sender threads
    try:
        d.submit_batch(batch("a" * 32))
        assert writer.span_started.wait(5)
        d.submit_batch(batch("b" * 32))
        d.submit_feedback(FeedbackRecord("ev-1", "resp", "a" * 32, FeedbackValue.THUMBS_DOWN, 0))
        # The feedback is written while the first span batch still holds the span turn...
        wait_for(lambda: writer.feedback == [("ev-1", False)], timeout_s=5, what="feedback beside a span write")
        # ...and the second batch waits in the queue, not in a sender blocked on the writer.
        assert writer.max_in_flight == 1
        assert value(m, "tracegw_writer_queue_batches") == 1
        writer.release.set()
        wait_for(lambda: sorted(writer.written) == ["a" * 32, "b" * 32], timeout_s=5, what="both batches")
        assert writer.max_in_flight == 1
    finally:
        writer.release.set()
        d.shutdown(5)


class TraceLaterWriter(FlakyWriter):
    """Feedback gets a 404 (trace not in MLflow yet) until ``trace_written`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.trace_written = threading.Event()
        self.feedback_calls = 0

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        with self.lock:
            self.feedback_calls += 1
        if not self.trace_written.is_set():
            raise PermanentWriteError("write feedback: HTTP 404 RESOURCE_DOES_NOT_EXIST", status=404)
        super().write_feedback(record, check_existing)


def test_shutdown_tries_feedback_awaiting_its_trace_once_more(tmp_path: Path) -> None:
    writer = TraceLaterWriter()
    d, _ = make(tmp_path, writer)
    d.submit_feedback(FeedbackRecord("ev-late", "resp", "e" * 32, FeedbackValue.THUMBS_DOWN, 0))
    wait_for(lambda: writer.feedback_calls >= 1, timeout_s=5, what="a first feedback attempt")
    writer.trace_written.set()  # e.g. its span batch was written meanwhile; the next retry is ~0.5 s+ away
    d.shutdown(5)
    assert writer.feedback == [("ev-late", True)]  # written at the drain, checking for a duplicate first
    assert not list((tmp_path / "spool").glob("*.seg"))


def test_shutdown_leaves_feedback_whose_trace_never_came_in_the_spool(tmp_path: Path) -> None:
    writer = TraceLaterWriter()
    d, _ = make(tmp_path, writer)
    d.submit_feedback(FeedbackRecord("ev-orphan", "resp", "f" * 32, FeedbackValue.THUMBS_DOWN, 0))
    wait_for(lambda: writer.feedback_calls >= 1, timeout_s=5, what="a first feedback attempt")
    started = time.monotonic()
    d.shutdown(5)
    assert time.monotonic() - started < 3  # one more try, then it stops waiting for this trace
    assert writer.feedback == []
    assert len(list((tmp_path / "spool").glob("*feedback*.seg"))) == 1  # kept for the next start


class FailFirstWriter(FlakyWriter):
    """The first span write waits for ``go`` and then fails as retryable; the rest succeed."""

    def __init__(self) -> None:
        super().__init__()
        self.go = threading.Event()
        self.first_started = threading.Event()
        self.tries = 0

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        with self.lock:
            self.tries += 1
            first = self.tries == 1
        if first:
            self.first_started.set()
            assert self.go.wait(10)
            raise RetryableWriteError("write spans: HTTP 503", status=503)
        super().write_spans(experiment_id, payload, span_count)


def test_a_span_batch_waiting_for_its_retry_is_not_overtaken(tmp_path: Path) -> None:
    # Order matters: a synthesized root must reach MLflow before a later real span with its id.
    writer = FailFirstWriter()
    d, _ = make(tmp_path, writer, TRACEGW_RETRY_INITIAL_S="0.3", TRACEGW_RETRY_MAX_S="0.3")
    try:
        d.submit_batch(batch("a" * 32))
        assert writer.first_started.wait(5)
        d.submit_batch(batch("b" * 32))
        wait_for(lambda: len(list((tmp_path / "spool").glob("*.seg"))) == 2, timeout_s=5, what="both spooled")
        writer.go.set()  # the first write of "a" fails now, with "b" ready behind it
        wait_for(lambda: len(writer.written) == 2, timeout_s=5, what="both written")
        assert writer.written == ["a" * 32, "b" * 32]
    finally:
        writer.go.set()
        d.shutdown(5)


def test_the_span_turn_is_idle_only_when_no_span_batch_is_written_or_waits(tmp_path: Path) -> None:
    writer = GatedWriter()
    d, _ = make(tmp_path, writer)
    try:
        assert d.span_turn_idle()
        d.submit_batch(batch("a" * 32))
        assert writer.span_started.wait(5)
        assert not d.span_turn_idle()  # being written
        d.submit_batch(batch("b" * 32))
        d.submit_feedback(FeedbackRecord("ev-1", "resp", "a" * 32, FeedbackValue.THUMBS_DOWN, 0))
        wait_for(lambda: writer.feedback == [("ev-1", False)], timeout_s=5, what="the feedback")
        assert not d.span_turn_idle()  # a batch still waits for its turn
        writer.release.set()
        wait_for(lambda: len(writer.written) == 2, timeout_s=5, what="both batches")
        wait_for(d.span_turn_idle, timeout_s=5, what="the span turn to be free again")
    finally:
        writer.release.set()
        d.shutdown(5)


class ProbeBreakingWriter(FlakyWriter):
    """Fails the first span write as retryable (the breaker opens), then raises ``unexpected`` once:
    the half-open probe ends with neither success nor failure."""

    def __init__(self) -> None:
        super().__init__(fail_times=1)
        self.unexpected = 1
        self.tries = 0

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        self.tries += 1
        if self.fail_times == 0 and self.unexpected > 0:
            self.unexpected -= 1
            raise RuntimeError("a bug in the writer, not an answer from MLflow")
        super().write_spans(experiment_id, payload, span_count)


def test_a_probe_that_raises_unexpectedly_does_not_stall_delivery(tmp_path: Path) -> None:
    w = ProbeBreakingWriter()
    d, m = make(tmp_path, w, TRACEGW_BREAKER_FAILURES="1")
    d.submit_batch(batch("d" * 32))
    # The probe raised: not an answer, so the segment is isolated (one trace: dead-lettered with
    # the exception's type) and the probe is given back instead of holding every sender.
    wait_for(
        lambda: value(m, "tracegw_dead_letter_total", kind="spans", reason="RUNTIME_ERROR") == 1,
        timeout_s=5,
        what="the segment the writer choked on, dead-lettered",
    )
    assert w.tries == 2 and w.written == []
    d.submit_batch(batch("e" * 32))
    wait_for(lambda: w.written == ["e" * 32], timeout_s=5, what="later batches flow")
    assert value(m, "tracegw_circuit_state") == 0  # the next probe succeeded: closed again
    d.shutdown(2)


class ChokingWriter(FlakyWriter):
    """Raises DecodeError (as MLflow's embedded store does on a payload protobuf cannot read) for
    any batch holding ``poison``."""

    def check(self, ids: list[str]) -> None:
        from google.protobuf.message import DecodeError

        if self.poison in ids:
            raise DecodeError("Exceeded upb_DecodeOptions_MaxDepth")


def test_a_batch_the_writer_chokes_on_costs_only_its_poison_trace(tmp_path: Path) -> None:
    ids = [f"{i:032x}" for i in range(1, 9)]
    w = ChokingWriter(poison=ids[2])
    d, m = make(tmp_path, w)
    d.submit_batch(batch(*ids))
    d.submit_batch(batch("9" * 32))  # behind it, in order
    wait_for(lambda: len(w.written) == 8, timeout_s=10, what="the seven innocent traces and the next batch")
    assert sorted(w.written) == sorted([*(set(ids) - {ids[2]}), "9" * 32])
    assert value(m, "tracegw_dead_letter_total", kind="spans", reason="DECODE_ERROR") == 1
    assert value(m, "tracegw_write_retries_total", kind="spans") == 0  # settled, never retried
    d.shutdown(2)


def test_a_trace_the_encoder_cannot_take_is_dropped_alone(tmp_path: Path) -> None:
    w = FlakyWriter()
    d, m = make(tmp_path, w)
    good, bad = batch("a" * 32, "c" * 32), batch("b" * 32)
    bad.traces[0].spans[0].attributes["x"] = "\ud800"  # a lone surrogate has no UTF-8 encoding
    mixed = SpanBatch("e", [good.traces[0], bad.traces[0], good.traces[1]], 3)
    d.submit_batch(mixed)
    wait_for(lambda: w.written == ["a" * 32, "c" * 32], timeout_s=5, what="the two encodable traces")
    assert value(m, "tracegw_spans_dropped_total", stage="write", reason="encode_failed") == 1
    assert value(m, "tracegw_spans_dropped_total", stage="write", reason="write_failed") == 0
    d.shutdown(2)


class RottingSpool(Spool):
    """A spool whose segments go bad on disk after their first read (a torn file met by the probe)."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.loads = 0

    def load(self, seg: Segment) -> bytes:
        self.loads += 1
        if self.loads == 2:
            raise TornSegment("checksum mismatch")
        return super().load(seg)


def test_a_probe_whose_segment_is_unreadable_does_not_stall_delivery(tmp_path: Path) -> None:
    w = FlakyWriter(fail_times=1)
    c = cfg(TRACEGW_BREAKER_FAILURES="1")
    m = GatewayMetrics(CollectorRegistry())
    d = Delivery(w, RottingSpool(str(tmp_path / "spool"), 10**8, True, m), c.writer, c.retry, m, "bundles", 2)
    d.start()
    d.submit_batch(batch("f" * 32))
    wait_for(
        lambda: value(m, "tracegw_spans_dropped_total", stage="write", reason="corrupt") == 1,
        timeout_s=5,
        what="the torn segment counted",
    )
    d.submit_batch(batch("0" * 31 + "1"))
    wait_for(lambda: w.written == ["0" * 31 + "1"], timeout_s=5, what="the next batch after the torn probe")
    d.shutdown(2)


class RefusesWriter(FlakyWriter):
    """Answers 500 (retryable) to every span write holding ``refused`` until ``heal`` is set, and
    records each write as (trace id, span ids)."""

    def __init__(self, refused: str) -> None:
        super().__init__()
        self.refused = refused
        self.heal = threading.Event()
        self.writes: list[tuple[str, list[str]]] = []
        self.refusals = 0

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        request = ExportTraceServiceRequest.FromString(payload)
        spans = [s for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans]
        ids = sorted({s.trace_id.hex() for s in spans})
        if self.refused in ids and not self.heal.is_set():
            with self.lock:
                self.refusals += 1
            raise RetryableWriteError("write spans: HTTP 500", status=500)
        with self.lock:
            self.writes.extend((t, sorted(s.span_id.hex() for s in spans if s.trace_id.hex() == t)) for t in ids)
        super().write_spans(experiment_id, payload, span_count)


def one_span_batch(trace_id: str, span_id: str, *, complete: bool = True, late: bool = False) -> SpanBatch:
    trace = TraceRecord(trace_id, "e", [SpanRecord(trace_id, span_id, None, "s", "CHAIN", 1, 2)], {}, late=late)
    trace.complete = complete
    return SpanBatch("e", [trace], 1)


def test_a_batch_mlflow_keeps_refusing_steps_aside_after_bounded_attempts(tmp_path: Path) -> None:
    a, b, c = "a" * 32, "b" * 32, "c" * 32
    writer = RefusesWriter(refused=a)
    d, m = make(tmp_path, writer, TRACEGW_SPAN_TURN_MAX_ATTEMPTS="3")
    try:
        for t in (a, b, c):
            d.submit_batch(batch(t))
        wait_for(lambda: [t for t, _ in writer.writes] == [b, c], timeout_s=10, what="later batches go on")
        assert writer.refusals >= 3 and value(m, "tracegw_span_turn_stepped_aside_total") == 1
        writer.heal.set()  # the refused batch kept retrying aside, and lands once MLflow takes it
        wait_for(lambda: len(writer.writes) == 3, timeout_s=10, what="the refused batch written at last")
    finally:
        writer.heal.set()
        d.shutdown(5)


def test_late_spans_never_overtake_the_stand_in_root_of_their_trace(tmp_path: Path) -> None:
    # A rootless trace's stand-in root (span 1…) is refused and steps aside; its real root arrives
    # late under the same span id. MLflow keeps the last write of a span, so the late batch must
    # wait for the stand-in, while an unrelated batch goes past both.
    a, c = "a" * 32, "c" * 32
    writer = RefusesWriter(refused=a)
    d, _ = make(tmp_path, writer, TRACEGW_SPAN_TURN_MAX_ATTEMPTS="2")
    try:
        d.submit_batch(one_span_batch(a, "1" * 16, complete=False))
        wait_for(lambda: writer.refusals >= 2, timeout_s=10, what="the stand-in refused twice")
        d.submit_batch(one_span_batch(a, "1" * 16, late=True))
        d.submit_batch(one_span_batch(c, "2" * 16))
        wait_for(lambda: [t for t, _ in writer.writes] == [c], timeout_s=10, what="the unrelated batch goes on")
        time.sleep(0.3)  # the late batch had several chances to go and must not have
        assert [t for t, _ in writer.writes] == [c]
        writer.heal.set()
        wait_for(lambda: len(writer.writes) == 3, timeout_s=10, what="stand-in, then the late root")
        headers = [t for t, _ in writer.writes]
        assert headers == [c, a, a]  # the stand-in first, the real span (last write) wins
    finally:
        writer.heal.set()
        d.shutdown(5)


def test_orphan_feedback_is_bounded_in_count_and_in_writes(tmp_path: Path) -> None:
    writer = TraceLaterWriter()  # every feedback write answers 404: its trace never comes
    d, m = make(
        tmp_path,
        writer,
        TRACEGW_FEEDBACK_AWAITING_MAX="2",
        TRACEGW_FEEDBACK_JOIN_MAX_ATTEMPTS="2",
        TRACEGW_FEEDBACK_JOIN_WINDOW_S="60",
    )
    try:
        for i in range(5):
            d.submit_feedback(FeedbackRecord(f"ev-{i}", "resp", f"{i + 1:032x}", FeedbackValue.THUMBS_DOWN, 0))
        # Two wait for their trace; three find no room and are counted at once. Each that waited
        # is written twice at most, then counted too: 5 + 2 writes, well inside the join window.
        wait_for(
            lambda: value(m, "tracegw_events_dropped_total", kind="feedback", reason="trace_not_found") == 5,
            timeout_s=10,
            what="every orphan counted",
        )
        assert writer.feedback_calls == 7
    finally:
        d.shutdown(2)


class AuthServerWriter(FlakyWriter):
    """A basic-auth MLflow server: feedback on a trace it does not have yet is refused with 403 (its
    auth layer cannot find the trace's experiment), not 404; span writes succeed, slowly."""

    def __init__(self) -> None:
        super().__init__()
        self.feedback_calls = 0

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        time.sleep(0.05)
        super().write_spans(experiment_id, payload, span_count)

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        with self.lock:
            self.feedback_calls += 1
            stored = record.trace_id in self.written
        if not stored:
            raise RetryableWriteError("write feedback: HTTP 403 PERMISSION_DENIED", status=403)
        super().write_feedback(record, check_existing)


def test_feedback_refused_403_before_its_trace_waits_for_it_and_never_opens_the_breaker(tmp_path: Path) -> None:
    """Found by the local stack's rehearsal: counting these 403s as server failures opened the breaker
    that the span writes share, so the traces the feedback waited for were never written."""
    writer = AuthServerWriter()
    d, m = make(tmp_path, writer, TRACEGW_BREAKER_FAILURES="3")
    traces = [f"{i:032x}" for i in range(1, 41)]
    for t in traces:  # each trace's thumbs-down arrives before its spans are written
        d.submit_feedback(FeedbackRecord(f"ev-{t}", "resp", t, FeedbackValue.THUMBS_DOWN, 0))
    for i in range(0, len(traces), 4):
        d.submit_batch(batch(*traces[i : i + 4]))
    wait_for(lambda: set(traces) <= set(writer.written), timeout_s=20, what="every trace written")
    wait_for(lambda: len(writer.feedback) == len(traces), timeout_s=30, what="every feedback written")
    d.shutdown(5)
    assert writer.feedback_calls > len(traces), "some feedback met the 403 first"
    assert value(m, "tracegw_circuit_transitions_total", to="open") == 0, "feedback 403s opened the breaker"
    assert value(m, "tracegw_write_auth_failures_total", kind="feedback", status="403") > 0
