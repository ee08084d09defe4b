"""The background sender: one daemon thread ships the queued spans and events to the gateway.

One pass every ``encode_interval_s`` (20 ms) while spans arrive::

    span queue → take a batch → encode, a chunk at a time (the span objects go) → held bytes
        → ExportSpans when a batch is full, when it is due, or on flush()/shutdown()
            ↘ failed: drop the batch (counted by reason), pause, probe with one chunk
    event queue → RecordFeedback / RecordBundleEvents, on the same clock

    each span and event: queued → taken → held → in a call → sent | dropped   (clients.ledger)

- Cadence: spans are encoded ``encode_chunk_spans`` at a time, yielding the GIL between chunks,
  so the application holds its finished spans for ~20 ms: every object a span keeps alive is
  scanned by the garbage collector's passes, which run on the application's threads (measured:
  holding them for the whole 0.2 s put most of the request path's p99 into those passes).
- Batches: the bytes are sent when ``max_batch_spans`` are held, ``flush_interval_s`` after the
  oldest of them ended, or on ``flush``/``shutdown``; so the RPC cadence is the batch's. Events
  ride the same clock.
- Idle: a pass that finds the queue empty keeps the short cadence (at 50 requests/s most 20 ms
  passes do); only after a whole ``flush_interval_s`` without spans does the thread sleep
  ``flush_interval_s``, or less when the span queue reaches ``max_batch_spans``. Spans recorded
  meanwhile are held until it wakes (few, at such a rate), still sent ``flush_interval_s`` after
  they ended.
- Failures: a failed batch is dropped, counted by reason and followed by a pause (exponential
  backoff with jitter, or the gateway's RetryInfo delay) while the queues fill up to their
  bounds. Nothing is retried: the gateway is a loopback sidecar, the queues are the buffer. The
  next batch is probed with its first chunk alone; if that fails too, the rest of the batch is
  dropped unencoded, so a dead gateway costs one chunk's encoding per pause and the queue keeps
  draining.
- Shutdown: a failed RPC ends the drain at once (the rest is dropped with the same reason), and
  encoding and sending stop at shutdown's deadline, so a dead gateway cannot hold the process
  up. A thread still busy 0.5 s later (a chunk too slow to encode) is orphaned: shutdown counts
  what it took as dropped, and the thread counts nothing more.
- Accounting: every count the thread changes, and every race with shutdown over them, is in
  :class:`~clients.ledger.Ledger`; this module is the cadence loop (``_run``, ``_drain``) and
  the calls.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import grpc

from clients.config import ClientConfig
from clients.encode import encode_bundle_event, encode_feedback, encode_spans_chunk, export_header
from clients.events import BundleEvent, Event, FeedbackEvent
from clients.ledger import Ledger
from clients.pb import trace_gateway_service_pb2 as svc_pb2
from clients.retry_info import retry_delay_from_metadata
from clients.security import TokenMetadata, make_channel
from clients.span import SpanHandle
from clients.stats import ClientStats, Counters

_log = logging.getLogger(__name__)

_SERVICE: Final = svc_pb2.DESCRIPTOR.services_by_name["TraceGatewayService"].full_name
_YIELD_S: Final = 0.0002
"""Pause between encode chunks and batches: long enough for a waiting thread to take the GIL."""
_LOG_EVERY_S: Final = 30.0

_REASONS: Final = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "deadline_exceeded",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "resource_exhausted",
}

# Loopback sidecar: reconnect quickly after a gateway restart instead of grpc's 1 s .. 120 s.
CHANNEL_OPTIONS: Final = (
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.enable_retries", 0),
)


class _RateLimitedLog:
    """Logs one warning per key every ``_LOG_EVERY_S`` seconds, with how many were skipped."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._skipped: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < _LOG_EVERY_S:
            self._skipped[key] = self._skipped.get(key, 0) + 1
            return
        skipped = self._skipped.pop(key, 0)
        self._last[key] = now
        _log.warning(msg + " (%d similar messages suppressed)", *args, skipped, exc_info=exc_info)


class _Failure(Exception):
    """A batch failed; ``reason`` is a drop reason, ``delay_s`` the server's RetryInfo if any."""

    def __init__(self, reason: str, detail: str, delay_s: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.detail = detail
        self.delay_s = delay_s


class Sender:
    """Ships the span and event queues to the gateway from one daemon thread.

    ``start()`` once; ``flush(timeout_s)`` and ``shutdown(timeout_s)`` from any thread.
    """

    def __init__(
        self,
        config: ClientConfig,
        spans: deque[SpanHandle],
        events: deque[Event],
        wake: threading.Event,
        counters: Counters,
        channel_factory: Callable[[str], grpc.Channel] | None = None,
    ) -> None:
        self._config = config
        self._spans = spans
        self._events = events
        self._wake = wake
        self._counters = counters
        self._ledger = Ledger(spans, events, counters)  # where each span and event taken is
        factory = channel_factory or (lambda _target: make_channel(config, list(CHANNEL_OPTIONS)))
        self._channel = factory(config.target)
        self._token = TokenMetadata(config.token_file)
        self._export = self._channel.unary_unary(
            f"/{_SERVICE}/ExportSpans",
            request_serializer=None,  # the request is serialised chunk by chunk (encode_spans_chunk)
            response_deserializer=svc_pb2.ExportSpansResponse.FromString,
        )
        self._feedback = self._channel.unary_unary(
            f"/{_SERVICE}/RecordFeedback",
            request_serializer=svc_pb2.RecordFeedbackRequest.SerializeToString,
            response_deserializer=svc_pb2.RecordFeedbackResponse.FromString,
        )
        self._bundles = self._channel.unary_unary(
            f"/{_SERVICE}/RecordBundleEvents",
            request_serializer=svc_pb2.RecordBundleEventsRequest.SerializeToString,
            response_deserializer=svc_pb2.RecordBundleEventsResponse.FromString,
        )
        self._header = export_header(config.experiment_name, config.service_name)
        self._log = _RateLimitedLog()
        self._thread = threading.Thread(target=self._run, name="tracegw-client-sender", daemon=True)
        self._stop = threading.Event()
        self._stop_deadline = 0.0
        self._backoff_s = 0.0
        self._resume_at = 0.0
        self._probe = False
        self._due = 0.0  # monotonic time by which what is held must be sent; 0 = nothing held
        self._flush_cond = threading.Condition()
        self._flush_requested = 0
        self._flush_done = 0
        self._shutdown_lock = threading.Lock()
        self._shut_down = False
        self._closed = False  # shutdown has returned

    # -- control (any thread) ---------------------------------------------------------------

    @property
    def held_spans(self) -> int:
        """Spans taken from the queue and neither sent nor dropped yet (being encoded, held
        for a batch, or in the call that sends them)."""
        return self._ledger.pending

    def stats(self) -> ClientStats:
        """The counters, read consistently with what the thread holds. After shutdown, spans
        that an application thread appended as it closed are counted as dropped first."""
        if self._closed and self._spans:
            self._ledger.drop_rest("shutdown")
        return self._ledger.snapshot()

    def start(self) -> None:
        """Start the sender thread."""
        self._thread.start()

    def flush(self, timeout_s: float) -> bool:
        """Wait until everything queued before the call was shipped or counted as dropped."""
        if not self._thread.is_alive() or self._ledger.frozen:
            return not self._spans and not self._events and not self.held_spans
        with self._flush_cond:
            self._flush_requested += 1
            generation = self._flush_requested
        self._wake.set()
        deadline = time.monotonic() + max(timeout_s, 0.0)
        with self._flush_cond:
            while self._flush_done < generation:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return self._flush_done >= generation
                self._flush_cond.wait(remaining)
        return True

    def shutdown(self, timeout_s: float) -> None:
        """Drain what fits in ``timeout_s``, stop the thread, close the channel; idempotent."""
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
        deadline = time.monotonic() + max(timeout_s, 0.0)
        self._stop_deadline = deadline
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(max(deadline - time.monotonic(), 0.0))
        self._channel.close()  # cancels an RPC still in flight, the thread then exits
        if self._thread.is_alive():
            self._thread.join(0.5)
        if self._thread.is_alive():
            # Still encoding a chunk (or in a call that ignores the close): the thread is
            # orphaned, so that whatever it took is counted by the time shutdown returns.
            self._ledger.freeze()
        self._closed = True
        self._close_out()  # a flush() still waiting on an orphaned thread returns too

    # -- the thread -----------------------------------------------------------------------

    def _run(self) -> None:
        cfg = self._config
        encode_every = min(cfg.encode_interval_s, cfg.flush_interval_s)
        last_spans = -math.inf  # when a pass last found spans queued
        while True:
            try:
                stopping = self._stop.is_set()
                pause = self._resume_at - time.monotonic()
                if pause > 0 and not stopping:
                    self._stop.wait(pause)  # backing off; only shutdown cuts it short
                    continue
                generation = self._flush_requested
                if self._spans:
                    last_spans = time.monotonic()
                drained = self._drain(stopping, send_all=stopping or generation > self._flush_done)
                if stopping:
                    self._close_out()
                    return
                if drained and generation > self._flush_done:  # all queued before it went
                    self._flushed(generation)
                if drained:
                    # The short cadence while spans keep coming (and for one interval after the
                    # last ones), so none are held longer than ~encode_every; idle, the long sleep.
                    active = self._ledger.held or time.monotonic() - last_spans < cfg.flush_interval_s
                    timeout = encode_every if active else cfg.flush_interval_s
                    if self._due:
                        timeout = min(timeout, max(self._due - time.monotonic(), 0.0))
                    self._wake.wait(timeout)
                    self._wake.clear()
            except Exception as exc:  # worker-loop boundary: never let the thread die
                self._counters.error("sender", type(exc).__name__)
                self._log.warning("loop", "trace client sender failed: %s", type(exc).__name__, exc_info=True)
                self._ledger.drop_taking("error", events=True)  # what the failure cut short is counted, not lost
                if self._stop.wait(self._next_backoff(None)):
                    self._close_out()
                    return

    def _close_out(self) -> None:
        """Count everything still queued or held as dropped (``shutdown``), then release every
        ``flush()`` caller: all they waited for is counted."""
        self._ledger.drop_rest("shutdown")
        self._flushed(self._flush_requested)

    def _flushed(self, generation: int) -> None:
        """Tell ``flush()`` callers up to ``generation`` that what they waited for is counted."""
        with self._flush_cond:
            self._flush_done = max(self._flush_done, generation)
            self._flush_cond.notify_all()

    def _drain(self, stopping: bool, send_all: bool) -> bool:
        """One pass: encode every queued span (freeing it), and send what is held when a batch
        is full, when it is due or when ``send_all``; False when a batch failed."""
        spans, events, ledger = self._spans, self._events, self._ledger
        cfg = self._config
        max_spans, max_events = cfg.max_batch_spans, cfg.max_batch_events
        if not self._due and (spans or events):
            self._start_clock()
        send_all = send_all or 0 < self._due <= time.monotonic()
        while True:
            send_events = bool(events) and (send_all or len(events) >= max_events)
            if not (spans or send_events or (send_all and ledger.held)):
                break
            if self._past_deadline():
                return False  # also when shutdown began during this pass
            try:
                if spans:
                    batch = ledger.take_spans(max_spans)
                    if batch is None:
                        return False  # orphaned
                    if self._probe:
                        batch = self._probe_with(batch)
                    self._encode_spans(batch)
                    del batch  # the span objects go now, before the batch is sent
                    if self._past_deadline():
                        return False  # what was not encoded is dropped with the rest
                if ledger.held and (ledger.held >= max_spans or (send_all and not spans)):
                    self._send_held()
                if send_events:
                    batch_events = ledger.take_events(max_events)
                    if batch_events is None:
                        return False  # orphaned
                    self._ship_events(batch_events)
            except _Failure as failure:
                self._probe = True
                self._counters.note_failure("send", f"{failure.reason}: {failure.detail}")
                if failure.reason != "shutdown":  # counted like the rest of what shutdown drops
                    self._log.warning(
                        failure.reason,
                        "trace gateway %s: %s; dropping batches for a while",
                        failure.reason,
                        failure.detail,
                    )
                if stopping:
                    ledger.drop_rest(failure.reason)
                    return True
                delay = self._next_backoff(failure.delay_s)
                self._resume_at = time.monotonic() + delay
                return False
            self._backoff_s = 0.0
            time.sleep(_YIELD_S)
        if not ledger.held and not events:
            self._due = 0.0
        elif not self._due:  # what is held now, and events waiting, go one interval from now
            self._due = time.monotonic() + cfg.flush_interval_s
        return True

    def _start_clock(self) -> None:
        """Set when what is about to be held must be sent: ``flush_interval_s`` after the oldest
        queued span ended or event was recorded (so spans that arrived while the thread slept
        are not held for a second interval), and never later than one interval from now."""
        interval = self._config.flush_interval_s
        oldest = time.time_ns()
        try:
            if self._spans:
                oldest = min(oldest, self._spans[0]._end_ns)
            if self._events:
                oldest = min(oldest, self._events[0].time_unix_nano)
        except IndexError:  # emptied by a concurrent shutdown
            pass
        waited = min((time.time_ns() - oldest) / 1e9, interval)
        self._due = time.monotonic() + interval - waited

    def _past_deadline(self) -> bool:
        return self._stop.is_set() and time.monotonic() >= self._stop_deadline

    def _next_backoff(self, server_delay_s: float | None) -> float:
        cfg = self._config
        self._backoff_s = min(max(self._backoff_s * 2, cfg.backoff_initial_s), cfg.backoff_max_s)
        if server_delay_s is not None:
            return min(server_delay_s, cfg.backoff_max_s)
        return self._backoff_s * random.uniform(0.8, 1.2)

    def _encode_spans(self, batch: list[SpanHandle]) -> None:
        """Convert ``batch`` to wire bytes, a chunk at a time, held in the ledger."""
        chunk = self._config.encode_chunk_spans
        hold = self._ledger.hold
        for start in range(0, len(batch), chunk):
            if start:
                if self._past_deadline():
                    return  # the rest stay taken and are dropped as ``shutdown``
                time.sleep(_YIELD_S)
            data, bad = encode_spans_chunk(batch[start : start + chunk])
            if not hold(data, min(chunk, len(batch) - start), bad):
                return  # orphaned
            if bad:
                self._counters.error("encode_span", f"{bad} spans could not be encoded")

    def _probe_with(self, batch: list[SpanHandle]) -> list[SpanHandle]:
        """After a failure, send the first chunk alone: a dead gateway then costs one chunk's
        encoding, and the rest of the batch is dropped with the same reason, unencoded."""
        chunk = self._config.encode_chunk_spans
        self._encode_spans(batch[:chunk])
        try:
            self._send_held()
        except _Failure as failure:
            self._ledger.drop_taking(failure.reason)
            raise
        return batch[chunk:]

    def _send_held(self) -> None:
        """One ExportSpans call with every held span; they are sent or counted as dropped.
        (They are in the call until it returns, so ``stats()`` shows them as pending.)"""
        ledger = self._ledger
        call = ledger.start_call(self._header)
        if call is None:
            return  # orphaned
        payload, good = call
        self._due = 0.0  # the next spans held start a new interval
        try:
            if self._past_deadline():
                raise _Failure("shutdown", "deadline passed")
            response = self._export(payload, timeout=self._config.rpc_timeout_s, **self._token.call_kwargs())
        except Exception as err:
            failure = err if isinstance(err, _Failure) else self._call_failure(err)
            ledger.call_failed(failure.reason)
            raise failure from None
        self._probe = False
        rejected = min(max(response.partial_success.rejected_count, 0), good)
        if not ledger.call_answered(rejected):
            return  # orphaned
        if rejected:
            self._counters.note_failure(
                "ExportSpans", f"rejected {rejected}: {response.partial_success.error_message[:200]}"
            )

    def _call_failure(self, err: Exception) -> _Failure:
        """The drop reason for a failed call: from its gRPC status, or ``shutdown`` when the
        channel was closed under it (which raises ValueError, not an RpcError)."""
        if isinstance(err, grpc.RpcError):
            return _failure(err)
        reason = "shutdown" if self._stop.is_set() else "error"
        return _Failure(reason, type(err).__name__)

    def _ship_events(self, batch: list[Event]) -> None:
        """One call per event kind; every event taken is sent or counted as dropped."""
        settle = self._ledger.settle_events
        feedback: list[Any] = []
        bundles: list[Any] = []
        for event in batch:
            try:
                if isinstance(event, FeedbackEvent):
                    feedback.append(encode_feedback(event))
                elif isinstance(event, BundleEvent):
                    bundles.append(encode_bundle_event(event))
                else:
                    raise TypeError(type(event).__name__)
            except Exception as exc:
                settle(1, "error")
                self._counters.error("encode_event", type(exc).__name__)
        failure: _Failure | None = None
        for method, request, count in (
            (self._feedback, svc_pb2.RecordFeedbackRequest(events=feedback), len(feedback)),
            (self._bundles, svc_pb2.RecordBundleEventsRequest(events=bundles), len(bundles)),
        ):
            if not count:
                continue
            if failure is not None:  # the first call failed: do not hammer the gateway
                settle(count, failure.reason)
                continue
            try:
                response = method(request, timeout=self._config.rpc_timeout_s, **self._token.call_kwargs())
            except Exception as err:
                failure = self._call_failure(err)
                settle(count, failure.reason)
                continue
            rejected = min(max(response.partial_success.rejected_count, 0), count)
            if rejected:
                settle(rejected, "rejected")
                message = response.partial_success.error_message[:200]
                self._counters.note_failure("events", f"rejected {rejected}: {message}")
            settle(count - rejected, None)
        if failure is not None:
            raise failure


def _failure(err: grpc.RpcError) -> _Failure:
    code = err.code() if isinstance(err, grpc.Call) else None
    reason = _REASONS.get(code, "error") if code is not None else "error"
    delay = None
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and isinstance(err, grpc.Call):
        delay = retry_delay_from_metadata(err.trailing_metadata())
    name = code.name if code is not None else type(err).__name__
    details = err.details() if isinstance(err, grpc.Call) else ""
    return _Failure(reason, f"{name} {(details or '')[:200]}".strip(), delay)
