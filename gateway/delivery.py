"""Delivery: batch kept traces by experiment and hand them to writer threads.

``Batcher`` (event-loop side) groups traces into batches bounded by spans, approximate bytes
and age. ``WriterPool`` runs ``concurrency`` named threads that take batches from a bounded
queue, encode them as OTLP and write them through a ``TraceWriter``; feedback events share
the queue. A full queue drops the batch and counts it (``writer_queue_full``); a failed write
is counted (``write_failed``) and logged with its reason, rate-limited.

Retries with backoff, the circuit breaker, the disk spool and poison-batch isolation are the
durable-delivery issue's; they slot in between ``WriterPool._deliver`` and the writer.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.config import BatchConfig, WriterConfig
from gateway.metrics import GatewayMetrics
from gateway.mlflow_otlp import encode_traces
from gateway.model import BundleRecord, FeedbackRecord, TraceRecord, approx_trace_bytes
from gateway.writer import PermanentWriteError, TraceWriter, WriteError

log = logging.getLogger(__name__)

@dataclass(slots=True)
class SpanBatch:
    experiment_name: str
    traces: list[TraceRecord] = field(default_factory=list)
    span_count: int = 0
    approx_bytes: int = 0
    opened_at: float = 0.0


class Batcher:
    """Groups traces by experiment; ``emit`` receives each full or aged batch."""

    def __init__(self, config: BatchConfig, emit: Callable[[SpanBatch], None],
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._cfg = config
        self._emit = emit
        self._clock = clock
        self._open: dict[str, SpanBatch] = {}

    def add(self, traces: list[TraceRecord]) -> None:
        for trace in traces:
            batch = self._open.get(trace.experiment_name)
            if batch is None:
                batch = SpanBatch(trace.experiment_name, opened_at=self._clock())
                self._open[trace.experiment_name] = batch
            batch.traces.append(trace)
            batch.span_count += len(trace.spans)
            batch.approx_bytes += approx_trace_bytes(trace)
            if batch.span_count >= self._cfg.max_spans or batch.approx_bytes >= self._cfg.max_bytes:
                del self._open[trace.experiment_name]
                self._emit(batch)

    def poll(self) -> None:
        now = self._clock()
        for name, batch in list(self._open.items()):
            if now - batch.opened_at >= self._cfg.max_delay_s:
                del self._open[name]
                self._emit(batch)

    def flush(self) -> None:
        for name in list(self._open):
            self._emit(self._open.pop(name))


class _RateLimitedLog:
    def __init__(self, every_s: float = 10.0) -> None:
        self._every_s = every_s
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def warning(self, key: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(key, -1e9) < self._every_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        log.warning(msg + " (%d similar suppressed)", *args, suppressed)


_STOP = object()
FEEDBACK_RETRY_FIRST_S = 0.5
FEEDBACK_RETRY_MAX_S = 8.0


@dataclass(slots=True)
class EventItem:
    """A feedback or bundle event on its way, with its delivery attempts so far."""

    record: FeedbackRecord | BundleRecord
    first_at: float
    attempts: int = 0


class WriterPool:
    """Named writer threads taking span batches and feedback from one bounded queue."""

    def __init__(self, writer: TraceWriter, config: WriterConfig, metrics: GatewayMetrics,
                 bundle_experiment: str, feedback_join_window_s: float = 120.0,
                 concurrency: int | None = None) -> None:
        self._writer = writer
        self._join_window_s = feedback_join_window_s
        self._deferred: list[tuple[float, int, EventItem]] = []
        self._deferred_lock = threading.Lock()
        self._seq = 0
        self._bundle_experiment = bundle_experiment
        self._metrics = metrics
        self._concurrency = concurrency or config.concurrency
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.queue_max_batches)
        self._threads: list[threading.Thread] = []
        self._idle = threading.Condition()
        self._busy = 0
        self._stopped = False
        self._warn = _RateLimitedLog()

    def start(self) -> None:
        for i in range(self._concurrency):
            t = threading.Thread(target=self._run, name=f"tracegw-writer-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def submit_batch(self, batch: SpanBatch) -> None:
        self._offer(batch, "spans", batch.span_count)

    def submit_feedback(self, record: FeedbackRecord) -> None:
        self._offer(EventItem(record, time.monotonic()), "feedback", 1)

    def submit_bundle_event(self, record: BundleRecord) -> None:
        self._offer(EventItem(record, time.monotonic()), "bundle", 1)

    def poll_deferred(self, force: bool = False) -> None:
        """Re-queue feedback whose trace was not in MLflow yet, once its retry is due (or now)."""
        now = float("inf") if force else time.monotonic()
        due: list[EventItem] = []
        with self._deferred_lock:
            while self._deferred and self._deferred[0][0] <= now:
                due.append(heapq.heappop(self._deferred)[2])
        for item in due:
            self._offer(item, _kind(item), 1)

    @property
    def deferred_count(self) -> int:
        with self._deferred_lock:
            return len(self._deferred)

    def _defer(self, item: EventItem) -> bool:
        """Schedule a retry for feedback whose trace is not stored yet; False once out of time."""
        item.attempts += 1
        delay = min(FEEDBACK_RETRY_MAX_S, FEEDBACK_RETRY_FIRST_S * 2 ** (item.attempts - 1))
        if time.monotonic() + delay - item.first_at > self._join_window_s:
            return False
        with self._deferred_lock:
            self._seq += 1
            heapq.heappush(self._deferred, (time.monotonic() + delay, self._seq, item))
        return True

    def _offer(self, item: object, kind: str, count: int) -> None:
        if self._stopped:
            self._count_drop(kind, "shutdown", count)
            return
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count_drop(kind, "writer_queue_full", count)
            self._warn.warning("queue_full", "writer queue full: dropped %s item of %d", kind, count)
        self._metrics.batches_queued.set(self._queue.qsize())

    def _count_drop(self, kind: str, reason: str, count: int) -> None:
        if kind == "spans":
            self._metrics.drop_spans("write", reason, count)
        else:
            self._metrics.events_dropped.labels(kind, reason).inc(count)

    def wait_idle(self, timeout_s: float) -> bool:
        """True once the queue is empty and no write is in progress."""
        deadline = time.monotonic() + timeout_s
        with self._idle:
            while self._queue.unfinished_tasks or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._idle.wait(min(remaining, 0.05))
        return True

    def shutdown(self, timeout_s: float) -> None:
        """Deliver what is queued within ``timeout_s``; count the rest as ``shutdown`` drops."""
        if self._stopped:
            return
        deadline = time.monotonic() + timeout_s
        self.wait_idle(timeout_s)  # everything queued, span batches first
        for _ in range(3):  # then deferred feedback gets a prompt last chance, its traces now written
            if not self.deferred_count or time.monotonic() >= deadline:
                break
            self.poll_deferred(force=True)
            self.wait_idle(max(0.0, deadline - time.monotonic()))
        self._stopped = True
        with self._deferred_lock:
            for _, _, deferred in self._deferred:
                self._count_drop(_kind(deferred), "shutdown", 1)
            self._deferred.clear()
        while True:
            try:
                leftover = self._queue.get_nowait()
            except queue.Empty:
                break
            if isinstance(leftover, SpanBatch):
                self._count_drop("spans", "shutdown", leftover.span_count)
            else:
                self._count_drop(_kind(leftover), "shutdown", 1)
            self._queue.task_done()
        for _ in self._threads:
            self._queue.put(_STOP)
        for t in self._threads:
            t.join(timeout=max(0.1, timeout_s))
        self._writer.close()

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                self._queue.task_done()
                return
            with self._idle:
                self._busy += 1
            try:
                if isinstance(item, SpanBatch):
                    self._deliver(item)
                elif isinstance(item, EventItem):
                    self._deliver_event(item)
            except Exception:  # worker-loop boundary: never let the thread die
                log.exception("writer thread failed on an item; counted as write_failed")
                if isinstance(item, SpanBatch):
                    self._count_drop("spans", "write_failed", item.span_count)
                else:
                    self._count_drop(_kind(item), "write_failed", 1)
            finally:
                self._queue.task_done()
                with self._idle:
                    self._busy -= 1
                    self._idle.notify_all()
                self._metrics.batches_queued.set(self._queue.qsize())

    def _deliver(self, batch: SpanBatch) -> None:
        started = time.perf_counter()
        try:
            exp_id = self._writer.experiment_id(batch.experiment_name)
            payload = encode_traces(batch.traces).SerializeToString()
            self._writer.write_spans(exp_id, payload, batch.span_count)
        except WriteError as exc:
            outcome = "permanent_error" if isinstance(exc, PermanentWriteError) else "retryable_error"
            self._metrics.write_requests.labels("spans", outcome).inc()
            self._count_drop("spans", "write_failed", batch.span_count)
            self._warn.warning("write_spans", "write failed: %s; dropped %d spans of %d traces",
                               exc.reason, batch.span_count, len(batch.traces))
            return
        finally:
            self._metrics.write_duration.labels("spans").observe(time.perf_counter() - started)
        self._metrics.write_requests.labels("spans", "ok").inc()
        self._metrics.spans_written.inc(batch.span_count)
        self._metrics.traces_written.inc(len(batch.traces))

    def _deliver_event(self, item: EventItem) -> None:
        kind = _kind(item)
        record = item.record
        started = time.perf_counter()
        try:
            if isinstance(record, FeedbackRecord):
                self._writer.write_feedback(record)
            elif isinstance(record, BundleRecord):
                self._writer.write_bundle_event(record, self._bundle_experiment)
        except WriteError as exc:
            outcome = "permanent_error" if isinstance(exc, PermanentWriteError) else "retryable_error"
            self._metrics.write_requests.labels(kind, outcome).inc()
            if kind == "feedback" and exc.status == 404:
                # The trace is not in MLflow yet (still in assembly or a batch): join it later.
                if self._defer(item):
                    return
                self._count_drop(kind, "trace_not_found", 1)
                self._warn.warning("feedback_orphan", "feedback %s: its trace was not in MLflow after %.0fs",
                                   item.record.event_id, self._join_window_s)
                return
            self._count_drop(kind, "write_failed", 1)
            self._warn.warning("write_" + kind, "%s write failed: %s", kind, exc.reason)
            return
        finally:
            self._metrics.write_duration.labels(kind).observe(time.perf_counter() - started)
        self._metrics.write_requests.labels(kind, "ok").inc()
        self._metrics.events_written.labels(kind).inc()


def _kind(item: object) -> str:
    record = item.record if isinstance(item, EventItem) else item
    return "feedback" if isinstance(record, FeedbackRecord) else "bundle"
