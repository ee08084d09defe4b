"""Delivery: every kept batch and event reaches MLflow, or is counted with a reason.

A chain of small parts, in the spirit of the OpenTelemetry Collector's exporter helper::

    submit (event loop) → intake queue → spooler thread: encode, write to the disk spool
        → ready queue → sender threads: circuit breaker → write → ack (delete from spool)
                                        ↘ retryable: back off (deferred heap), retry until
                                          TRACEGW_RETRY_MAX_ELAPSED_S, then dead-letter
                                        ↘ permanent: split a multi-trace batch in halves and
                                          retry each (isolates a poison trace); one trace, or an
                                          event, goes to the dead-letter directory
                                        ↘ feedback whose trace is not in MLflow yet: wait for it
                                          within the join window
        span batch acknowledged → its trace links (``links.py``) as a segment of their own,
        spooled and sent beside the events, so a link never holds the span turn

A segment counts as accepted once it is in the spool; unacknowledged segments are replayed
when the gateway starts. When the spool is disabled, full or the disk refuses, a segment is
delivered from memory (bounded; beyond the bound it is dropped and counted) — durability is
lost for it, delivery is not. On shutdown, senders keep delivering until the deadline; what is
spooled stays for the next start, what is only in memory is counted as ``shutdown``.

Writes are idempotent: MLflow 3.17's SQL store upserts spans on (trace_id, span_id), bundle
events set tags and metrics to the same values, a retried feedback first checks whether
its assessment already exists, and a re-sent trace link merges the same metadata (the prompt
association is skipped when it exists).
"""

from __future__ import annotations

import heapq
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import cast

from gateway.config import RetryConfig, WriterConfig
from gateway.export import links as trace_links
from gateway.export.batcher import SpanBatch
from gateway.export.errors import PermanentWriteError, RetryableWriteError, TraceWriter, WriteError, code_of
from gateway.export.intake import Intake
from gateway.export.links import LinkWriter, TraceLinker
from gateway.export.otlp_encode import encode_traces, split_spans, trace_ids
from gateway.export.retry import CLOSED, STATE_NAMES, CircuitBreaker, Permit, backoff_s
from gateway.export.segments import (
    Kind,
    Segment,
    bundle_from_json,
    bundle_to_json,
    feedback_from_json,
    feedback_to_json,
)
from gateway.export.spool import Spool, TornSegment
from gateway.export.wal import Hold
from gateway.logs import RateLimitedLog
from gateway.metrics import GatewayMetrics
from gateway.model import BundleRecord, FeedbackRecord, TraceRecord

log = logging.getLogger(__name__)

FEEDBACK_RETRY_FIRST_S = 0.5
FEEDBACK_RETRY_MAX_S = 30.0
# A span batch names the rootless and late traces it carries (for the ordering rule in
# ``_next``); past this many of either it names none and keeps the strict order instead.
ORDER_IDS_MAX = 1000
# A links segment holds a sender this long at most per turn (a link costs 20-60 ms on a server),
# then waits behind whatever else is ready; its settled links are not redone.
LINK_SLICE_S = 0.5


class Delivery:
    """Spooler thread plus ``concurrency`` sender threads. ``start()`` replays the spool."""

    def __init__(
        self,
        writer: TraceWriter,
        spool: Spool,
        writer_cfg: WriterConfig,
        retry: RetryConfig,
        metrics: GatewayMetrics,
        bundle_experiment: str,
        concurrency: int,
    ) -> None:
        self._writer = writer
        self._spool = spool
        self._cfg = writer_cfg
        self._retry = retry
        self._m = metrics
        self._bundle_experiment = bundle_experiment
        self._concurrency = concurrency
        self._intake = Intake(
            {
                Kind.SPANS: writer_cfg.queue_max_batches,
                Kind.FEEDBACK: writer_cfg.event_queue_max,
                Kind.BUNDLE: writer_cfg.event_queue_max,
            }
        )
        # Ready segments in arrival order: span batches, and events (feedback, bundles) apart, so
        # that an event can go out while a span batch holds the writer's one span turn; trace links
        # apart again, last in line (best effort: they never delay a span batch or an event).
        self._ready: deque[Segment] = deque()
        self._ready_events: deque[Segment] = deque()
        self._ready_links: deque[Segment] = deque()
        self._deferred: list[tuple[float, int, Segment]] = []
        self._cond = threading.Condition()
        self._in_flight = 0
        self._spans_in_flight = 0
        self._spans_deferred = 0  # deferred span batches that still hold the span turn (not aside)
        self._awaiting = 0  # feedback deferred until its trace is in MLflow
        self._memory_only = 0
        self._stop = threading.Event()
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._warn = RateLimitedLog(log)
        self._server_back = False  # set when the breaker closes; the next acknowledgement retries the deferred
        self._breaker = CircuitBreaker(
            retry.breaker_failures, retry.breaker_cooldown_s, retry.max_s, on_change=self._breaker_changed
        )
        self._links = (
            LinkWriter(writer, metrics) if writer_cfg.trace_links and isinstance(writer, TraceLinker) else None
        )
        self._links_pending = 0  # traces whose links wait in links segments (bounded)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        for seg in self._spool.open():
            self._queue_of(seg).append(seg)
            if seg.kind is Kind.LINKS:
                self._links_pending += int(seg.header.get("link_count", 0))
        self._m.trace_links_pending.set(self._links_pending)
        self._m.circuit_state.set(self._breaker.state)
        threads = [threading.Thread(target=self._spool_loop, name="tracegw-spooler", daemon=True)]
        threads += [
            threading.Thread(target=self._send_loop, name=f"tracegw-sender-{i}", daemon=True)
            for i in range(self._concurrency)
        ]
        for t in threads:
            t.start()
        self._threads = threads

    def shutdown(self, timeout_s: float) -> None:
        """Spool what is queued, deliver until ``timeout_s``, leave the rest in the spool."""
        if self._closed:
            return
        self._closed = True
        deadline = time.monotonic() + timeout_s
        self._intake.close()  # the spooler drains the intake, then stops
        self._threads[0].join(timeout=max(0.1, deadline - time.monotonic()))
        if self._threads[0].is_alive():  # out of time before everything was spooled: count what was not
            for kind, entry in self._intake.drain():
                item, hold = cast(tuple[object, Hold | None], entry)
                self._count_drop(kind, "shutdown", getattr(item, "span_count", 1), hold)
        with self._cond:
            self._wait_until_idle(deadline)
            # Feedback still waiting for its trace: the drain has now written every span batch it
            # could, so its trace is probably in MLflow. Try each once more instead of leaving it
            # in the spool for a next start that may never come (a deleted pod's emptyDir).
            awaiting = [g for _, _, g in self._deferred if g.awaiting_trace]
            if awaiting:
                for g in awaiting:
                    g.awaiting_trace = False
                self._awaiting -= len(awaiting)
                self._retry_deferred_now(lambda g: g in awaiting)
                self._wait_until_idle(deadline)
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        for t in self._threads[1:]:
            t.join(timeout=max(0.5, deadline - time.monotonic()))
        left = (
            list(self._ready)
            + list(self._ready_events)
            + list(self._ready_links)
            + [item[2] for item in self._deferred]
        )
        spooled = sum(1 for s in left if s.durable)
        for seg in left:
            if not seg.durable:
                self._drop(seg, "shutdown")  # or, when the WAL has it, kept there for the next start
        self._writer.close()
        log.info(
            "delivery stopped: %d segments left in the spool for the next start, %d in-memory dropped",
            spooled,
            len(left) - spooled,
        )

    def _wait_until_idle(self, deadline: float) -> None:
        """With ``_cond`` held: wait until nothing is ready, in flight or due to be retried."""
        while (
            self._ready or self._ready_events or self._ready_links or self._in_flight or self._due_deferred_pending()
        ) and time.monotonic() < deadline:
            self._cond.wait(0.05)

    def _due_deferred_pending(self) -> bool:
        """Deferred retries still worth waiting for during a drain (not feedback awaiting its trace)."""
        return any(not seg.awaiting_trace for _, _, seg in self._deferred)

    def _retry_deferred_now(self, which: Callable[[Segment], bool]) -> None:
        """With ``_cond`` held: make the deferred segments ``which`` selects due now."""
        self._deferred = [(0.0, s, g) if which(g) else (d, s, g) for d, s, g in self._deferred]
        heapq.heapify(self._deferred)
        self._cond.notify_all()

    # -- intake (event loop) ------------------------------------------------------------------

    def submit_batch(self, batch: SpanBatch, hold: Hold | None = None) -> None:
        """Hand a batch on; ``hold`` (its WAL records) is given back once it is spooled, delivered
        or dropped (and counted)."""
        self._offer(batch, Kind.SPANS, batch.span_count, hold)

    def submit_feedback(self, record: FeedbackRecord, hold: Hold | None = None) -> None:
        self._offer(record, Kind.FEEDBACK, 1, hold)

    def submit_bundle_event(self, record: BundleRecord, hold: Hold | None = None) -> None:
        self._offer(record, Kind.BUNDLE, 1, hold)

    def room(self, kind: Kind) -> int:
        """How many more items of ``kind`` the intake takes now (receivers refuse beyond it)."""
        return self._intake.room(kind)

    def _offer(self, item: object, kind: Kind, count: int, hold: Hold | None) -> None:
        if self._closed:
            self._count_drop(kind, "shutdown", count, hold)
            return
        if not self._intake.offer(kind, (item, hold)):
            self._count_drop(kind, "writer_queue_full", count, hold)
            self._warn.warning("intake_full", "delivery intake full: dropped a %s item of %d", kind, count)

    def span_turn_idle(self) -> bool:
        """True when no span batch is being written, ready, waiting for a retry or being spooled:
        a batch handed over now would be written at once."""
        with self._cond:
            return not (self._ready or self._spans_in_flight or self._spans_deferred) and self._intake.empty(Kind.SPANS)

    # -- spooler --------------------------------------------------------------------------------

    def _spool_loop(self) -> None:
        while True:
            taken = self._intake.take()
            if taken is None:
                return
            kind, entry = taken
            item, hold = cast(tuple[object, Hold | None], entry)
            try:
                seg = self._segment(item)
                if seg is None:  # every trace of the batch failed to encode (counted)
                    if hold is not None:
                        hold.done()
                    continue
                if self._spool.write(seg):
                    if hold is not None:  # durable in the spool: the WAL need not keep it
                        hold.done()
                else:
                    seg.hold = hold  # memory only: the WAL keeps it until it is delivered
                    if not self._admit_memory_only(seg):
                        continue
                with self._cond:
                    self._queue_of(seg).append(seg)
                    self._cond.notify()
            except Exception:  # loop boundary: count, log, keep going
                log.exception("spooler failed on an item")
                self._count_drop(kind, "write_failed", getattr(item, "span_count", 1), hold)

    def _segment(self, item: object) -> Segment | None:
        now = time.time()
        if isinstance(item, SpanBatch):
            traces = item.traces
            try:
                payload = encode_traces(traces)
            except Exception:  # one trace the encoder cannot take must not cost the batch
                traces = self._encodable(traces)
                if not traces:
                    return None
                payload = encode_traces(traces)
            header = {
                "kind": Kind.SPANS.value,
                "experiment_name": item.experiment_name,
                "span_count": sum(len(t.spans) for t in traces),
                "trace_count": len(traces),
                "first_at": now,
                "attempts": 0,
            }
            standins = [t.trace_id for t in traces if not t.complete]
            late = [t.trace_id for t in traces if t.late]
            if standins:
                header["standins"] = standins if len(standins) <= ORDER_IDS_MAX else []
                header["strict"] = len(standins) > ORDER_IDS_MAX
            if late:
                header["late"] = late if len(late) <= ORDER_IDS_MAX else []
                header["strict"] = header.get("strict", False) or len(late) > ORDER_IDS_MAX
            if self._links is not None and (rows := trace_links.plan(traces, self._m)):
                header["links"] = rows
            return Segment(self._spool.next_seq(), Kind.SPANS, header, payload)
        if isinstance(item, FeedbackRecord):
            header = {"kind": Kind.FEEDBACK.value, "span_count": 0, "first_at": now, "attempts": 0}
            return Segment(self._spool.next_seq(), Kind.FEEDBACK, header, feedback_to_json(item))
        assert isinstance(item, BundleRecord)
        header = {"kind": Kind.BUNDLE.value, "span_count": 0, "first_at": now, "attempts": 0}
        return Segment(self._spool.next_seq(), Kind.BUNDLE, header, bundle_to_json(item))

    def _encodable(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        """The traces that encode on their own; the others are dropped and counted (``encode_failed``)."""
        good = []
        for trace in traces:
            try:
                encode_traces([trace])
            except Exception as exc:
                self._count_drop(Kind.SPANS, "encode_failed", len(trace.spans))
                self._warn.warning(
                    "encode_failed", "trace %s could not be encoded (%s); dropped", trace.trace_id, type(exc).__name__
                )
            else:
                good.append(trace)
        return good

    def _admit_memory_only(self, seg: Segment) -> bool:
        with self._cond:
            if self._memory_only >= self._cfg.queue_max_batches:
                admitted = False
            else:
                self._memory_only += 1
                seg.memory_only = True
                admitted = True
        if not admitted:
            self._drop(seg, "spool_full")
            self._warn.warning("spool_full", "spool unavailable and memory queue full: dropped segment %d", seg.seq)
        return admitted

    # -- senders --------------------------------------------------------------------------------

    def _queue_of(self, seg: Segment) -> deque[Segment]:
        if seg.kind is Kind.SPANS:
            return self._ready
        return self._ready_links if seg.kind is Kind.LINKS else self._ready_events

    def _next(self) -> Segment | None:
        """The next segment to try, waiting briefly; None when there is nothing due.

        Span batches go **one at a time and in order**: a batch waiting for its retry keeps its
        turn, so no later batch overtakes it. Two concurrent span writes only contend for the
        server's database (``gateway/export/mlflow_http.py``), and the order matters: a stand-in root the
        assembler synthesized for a rootless trace is written before the real span that may
        arrive later under the same id (across a restart too: the spool replays in sequence
        order, and new segments get later numbers), so the real span always wins MLflow's upsert.

        A batch that failed ``TRACEGW_SPAN_TURN_MAX_ATTEMPTS`` writes steps **aside**: it keeps
        retrying (until ``TRACEGW_RETRY_MAX_ELAPSED_S``) but no longer holds later batches back,
        so one batch MLflow keeps refusing costs only itself. The stand-in-root order is then kept
        by name: a batch carrying late spans of a trace whose stand-in root is in an earlier
        batch not yet written waits for that batch (``_blocked_by``).

        While the span turn is taken, a free sender takes only events (feedback, bundles), so they
        do not queue behind a span backlog; otherwise the oldest ready segment goes first."""
        with self._cond:
            self._m.batches_queued.set(
                len(self._ready) + len(self._ready_events) + len(self._ready_links) + len(self._deferred)
            )
            now = time.monotonic()
            span_retry_may_go = self._spans_in_flight == 0
            next_span_may_go = span_retry_may_go and self._spans_deferred == 0
            seg: Segment | None = None
            if (
                self._deferred
                and self._deferred[0][0] <= now
                and (span_retry_may_go or self._deferred[0][2].kind is not Kind.SPANS)
            ):
                seg = heapq.heappop(self._deferred)[2]
                if seg.kind is Kind.SPANS:
                    if not seg.aside:
                        self._spans_deferred -= 1
                    seg = self._unless_blocked(seg, now)
                elif seg.awaiting_trace:
                    self._awaiting -= 1
            elif self._ready_events and not (
                next_span_may_go and self._ready and self._ready[0].seq < self._ready_events[0].seq
            ):
                seg = self._ready_events.popleft()
            elif next_span_may_go and self._ready:
                seg = self._unless_blocked(self._ready.popleft(), now)
            elif self._ready_links:  # nothing else to do: trace links (in slices, see _attempt)
                seg = self._ready_links.popleft()
            if seg is None:
                wait = 0.1 if not self._deferred else min(0.1, self._deferred[0][0] - now)
                self._cond.wait(max(0.005, wait))
                return None
            self._in_flight += 1
            if seg.kind is Kind.SPANS:
                self._spans_in_flight += 1
            return seg

    def _unless_blocked(self, seg: Segment, now: float) -> Segment | None:
        """With ``_cond`` held: ``seg``, or None when it must wait for an earlier batch (then it is
        deferred aside until that batch's next attempt, without counting an attempt)."""
        blocker = self._blocked_by(seg)
        if blocker is None:
            return seg
        seg.aside = True
        heapq.heappush(self._deferred, (max(now, blocker) + 0.001, seg.seq, seg))
        return None

    def _blocked_by(self, seg: Segment) -> float | None:
        """With ``_cond`` held: the due time of an earlier deferred span batch that ``seg`` must not
        overtake — it holds the stand-in root of a trace whose late spans ``seg`` carries (or either
        batch named too many traces to tell, ``strict``) — else None."""
        late = seg.late
        strict = bool(seg.header.get("strict"))
        if not late and not strict:
            return None
        wanted = set(late)
        for due, seq, other in self._deferred:
            if other.kind is not Kind.SPANS or seq >= seg.seq:
                continue
            if strict or other.header.get("strict") or wanted.intersection(other.standins):
                return due
        return None

    def _send_loop(self) -> None:
        while not self._stop.is_set():
            seg = self._next()
            if seg is None:
                continue
            try:
                permit = self._breaker.acquire(self._stop, max_wait_s=0.5)
                if permit is None:
                    with self._cond:  # not allowed yet: put it back at the front
                        self._queue_of(seg).appendleft(seg)
                    continue
                with permit:  # a permit left unsettled gives its probe back
                    self._attempt(seg, permit)
            except Exception:  # loop boundary
                log.exception("sender failed on segment %d; retrying later", seg.seq)
                self._schedule_retry(seg, None)
            finally:
                with self._cond:
                    self._in_flight -= 1
                    if seg.kind is Kind.SPANS:
                        self._spans_in_flight -= 1
                    self._cond.notify_all()

    def _attempt(self, seg: Segment, permit: Permit) -> None:
        try:
            payload = self._spool.load(seg)
        except (TornSegment, OSError) as exc:
            log.warning("spooled segment %d unreadable (%s); counted as corrupt", seg.seq, exc)
            self._m.spool_quarantined.labels("corrupt").inc()
            self._spool.delete(seg)
            self._drop(seg, "corrupt")
            return
        started = time.perf_counter()
        try:
            finished = self._write(seg, payload)
        except RetryableWriteError as exc:
            self._observe(seg, "retryable_error", started)
            if exc.status in (401, 403):
                self._m.write_auth_failures.labels(seg.kind, str(exc.status)).inc()
            if seg.kind is Kind.FEEDBACK and exc.status == 403:
                # MLflow's basic-auth layer answers 403, not 404, for an assessment on a trace it
                # cannot find yet (it looks the trace's experiment up to check the right). Wait for
                # the trace as for a 404, and leave the breaker the span writes share alone: feedback
                # retries holding it open would keep the very traces they wait for from being written.
                permit.release()
                self._permanent(seg, payload, PermanentWriteError(exc.reason, status=404, code=exc.code))
                return
            if seg.kind is Kind.LINKS:
                # A link's failure must not hold spans back: if the server is down the span writes
                # open the breaker themselves; links only wait for it.
                permit.release()
            else:
                permit.failure()
            self._warn.warning("retry_" + seg.kind, "%s write failed (%s); will retry", seg.kind, exc.reason)
            self._schedule_retry(seg, exc.retry_after_s)
            return
        except PermanentWriteError as exc:
            self._observe(seg, "permanent_error", started)
            permit.success()  # the server answered
            self._permanent(seg, payload, exc)
            return
        except WriteError as exc:  # unclassified: treat as retryable
            self._observe(seg, "retryable_error", started)
            permit.failure()
            self._schedule_retry(seg, None)
            log.warning("%s write failed (%s); will retry", seg.kind, exc.reason)
            return
        except Exception as exc:  # not an answer from MLflow: this segment's data (or a bug) makes
            # the writer fail. Retrying would fail the same way and hold the span turn for
            # everyone behind it: settle it as permanent (split, then dead-letter), no answer for
            # the breaker either way.
            self._observe(seg, "unexpected_error", started)
            self._warn.warning(
                "unexpected_" + seg.kind,
                "%s write of segment %d raised %s; isolating it",
                seg.kind,
                seg.seq,
                type(exc).__name__,
                exc_info=True,
            )
            self._permanent(seg, payload, PermanentWriteError(f"writer raised {type(exc).__name__}", code=code_of(exc)))
            return
        self._observe(seg, "ok", started)
        permit.success()
        if finished:
            self._acknowledge(seg)
        else:  # a links segment that used its slice: the rest of it after everything else waiting
            with self._cond:
                self._ready_links.append(seg)
                self._cond.notify()

    def _write(self, seg: Segment, payload: bytes) -> bool:
        """One write of ``seg``; False when a links segment stopped after its time slice."""
        h = seg.header
        if seg.kind is Kind.SPANS:
            exp_id = self._writer.experiment_id(str(h.get("experiment_name", "")))
            self._writer.write_spans(exp_id, payload, seg.span_count)
        elif seg.kind is Kind.FEEDBACK:
            retried = seg.attempts > 0 or seg.replayed
            self._writer.write_feedback(feedback_from_json(payload), check_existing=retried)
        elif seg.kind is Kind.LINKS:
            if self._links is None:  # spooled before TRACEGW_TRACE_LINKS was turned off
                return True
            exp_id = self._writer.experiment_id(str(h.get("experiment_name", "")))
            return self._links.write(exp_id, trace_links.decode(payload), seg.settled, LINK_SLICE_S)
        else:
            self._writer.write_bundle_event(bundle_from_json(payload), self._bundle_experiment)
        return True

    def _acknowledge(self, seg: Segment) -> None:
        if seg.kind is Kind.SPANS and seg.header.get("links"):
            self._queue_links(seg)  # before the batch leaves the spool: a crash in between re-links
        self._spool.delete(seg)
        self._release_memory(seg)
        if seg.kind is Kind.SPANS:
            self._m.spans_written.inc(seg.span_count)
            self._m.traces_written.inc(int(seg.header.get("trace_count", 0)))
        elif seg.kind is Kind.LINKS:  # links count themselves (tracegw_trace_links_total)
            self._links_settled(seg)
        else:
            self._m.events_written.labels(seg.kind).inc()
        if self._server_back:  # the breaker just closed: retry everything now, not at its backoff
            self._server_back = False
            with self._cond:
                self._retry_deferred_now(lambda g: not g.awaiting_trace)

    def _queue_links(self, spans: Segment) -> None:
        """The links of a written span batch, as a segment of their own (spooled, then sent)."""
        rows = spans.header["links"]
        header = {
            "kind": Kind.LINKS.value,
            "experiment_name": spans.header.get("experiment_name", ""),
            "span_count": 0,
            "link_count": len(rows),
            "first_at": time.time(),
            "attempts": 0,
        }
        seg = Segment(self._spool.next_seq(), Kind.LINKS, header, trace_links.encode(rows))
        with self._cond:
            room = self._links_pending + len(rows) <= self._cfg.trace_links_max_pending
            if room:
                self._links_pending += len(rows)
                self._m.trace_links_pending.set(self._links_pending)
        if not room:
            assert self._links is not None
            self._links.abandon(
                trace_links.decode(seg.payload or b"[]"), seg.settled, "TRACEGW_TRACE_LINKS_MAX_PENDING"
            )
            return
        # Not spooled (disabled, full, refused): kept in memory, bounded by the pending bound above,
        # not by the memory-only slots that span batches need.
        self._spool.write(seg)
        with self._cond:
            self._ready_links.append(seg)
            self._cond.notify()

    def _schedule_retry(self, seg: Segment, retry_after_s: float | None) -> None:
        if seg.kind is Kind.LINKS and seg.attempts == 0:  # links may wait long behind the rest:
            seg.header["first_at"] = time.time()  # their retry time counts from their first failure
        seg.header["attempts"] = seg.attempts + 1
        self._m.write_retries.labels(seg.kind).inc()
        if time.time() - float(seg.header.get("first_at", time.time())) > self._retry.max_elapsed_s:
            self._dead_letter(seg, "retry_exhausted", "RETRY_EXHAUSTED")
            return
        if seg.kind is Kind.SPANS and not seg.aside and seg.attempts >= self._retry.span_turn_max_attempts:
            seg.aside = True
            self._m.span_turn_stepped_aside.inc()
            self._warn.warning(
                "span_turn_aside",
                "span segment %d failed %d writes; retrying it aside, later batches go on",
                seg.seq,
                seg.attempts,
            )
        delay = backoff_s(seg.attempts, self._retry.initial_s, self._retry.max_s, retry_after_s)
        self._defer(seg, delay)

    def _defer(self, seg: Segment, delay_s: float) -> None:
        with self._cond:
            heapq.heappush(self._deferred, (time.monotonic() + delay_s, seg.seq, seg))
            if seg.kind is Kind.SPANS and not seg.aside:
                self._spans_deferred += 1
            elif seg.awaiting_trace:
                self._awaiting += 1
            self._cond.notify()

    def _permanent(self, seg: Segment, payload: bytes, exc: PermanentWriteError) -> None:
        if seg.kind is Kind.FEEDBACK and exc.status == 404:
            # The trace is not in MLflow yet (in assembly, a batch, or a retry): wait for it.
            seg.header["attempts"] = seg.attempts + 1
            waited = time.time() - float(seg.header.get("first_at", time.time()))
            with self._cond:
                room = self._awaiting < self._cfg.feedback_awaiting_max
            if (
                waited <= self._cfg.feedback_join_window_s
                and seg.attempts < self._cfg.feedback_join_max_attempts
                and room
            ):
                seg.awaiting_trace = True
                self._defer(seg, min(FEEDBACK_RETRY_MAX_S, FEEDBACK_RETRY_FIRST_S * 2 ** (seg.attempts - 1)))
                return
            self._spool.delete(seg)
            self._drop(seg, "trace_not_found")
            self._warn.warning(
                "feedback_orphan",
                "feedback segment %d: its trace was not in MLflow after %.0fs and %d writes%s",
                seg.seq,
                waited,
                seg.attempts,
                "" if room else " (TRACEGW_FEEDBACK_AWAITING_MAX reached)",
            )
            return
        if seg.kind is Kind.SPANS:
            try:
                parts = split_spans(payload)
            except Exception as split_exc:  # the payload itself cannot be read back: keep it aside
                self._dead_letter(
                    seg, f"{exc.reason}; split raised {type(split_exc).__name__}", code_of(split_exc), payload
                )
                return
            if parts:
                self._split(seg, parts)
                return
        self._dead_letter(seg, exc.reason, exc.code, payload)

    def _split(self, seg: Segment, parts: list[tuple[bytes, int, int]]) -> None:
        """Isolate a poison trace: retry each half of a rejected batch on its own."""
        halves = []
        for data, spans, traces in parts:
            header = {**seg.header, "span_count": spans, "trace_count": traces}
            if header.get("links"):
                header["links"] = trace_links.only(header["links"], set(trace_ids(data)))
            half = Segment(self._spool.next_seq(), Kind.SPANS, header, data)
            if not self._spool.write(half):
                half.memory_only = True
                if seg.hold is not None:
                    half.hold = seg.hold.share()
                with self._cond:
                    self._memory_only += 1
            halves.append(half)
        self._spool.delete(seg)
        self._release_memory(seg)
        self._m.batch_splits.inc()
        with self._cond:
            for half in reversed(halves):
                self._ready.appendleft(half)
            self._cond.notify_all()

    def _dead_letter(self, seg: Segment, reason: str, code: str, payload: bytes | None = None) -> None:
        """Keep ``seg`` aside: ``reason`` is written beside it, ``code`` (bounded) labels the count."""
        if payload is None:
            try:
                payload = self._spool.load(seg)
            except (TornSegment, OSError):
                payload = b""
        self._spool.dead_letter(seg, reason, payload)
        self._release_memory(seg)
        self._m.dead_letter.labels(seg.kind, code).inc()
        if seg.kind is Kind.LINKS:
            self._abandon_links(seg, "dead_letter", payload)
        else:
            self._drop(seg, "dead_letter")
        self._warn.warning("dead_letter", "%s segment %d dead-lettered: %s", seg.kind, seg.seq, reason)

    # -- accounting -----------------------------------------------------------------------------

    def _release_memory(self, seg: Segment) -> None:
        """``seg`` is delivered or dropped: give back its memory-only slot and its WAL hold."""
        if seg.memory_only:
            seg.memory_only = False
            with self._cond:
                self._memory_only -= 1
        if seg.hold is not None:
            hold, seg.hold = seg.hold, None
            hold.done()

    def _drop(self, seg: Segment, reason: str) -> None:
        if seg.kind is Kind.LINKS:
            self._abandon_links(seg, reason)
            return
        hold, seg.hold = seg.hold, None
        self._count_drop(seg.kind, reason, seg.span_count or 1, hold)
        self._release_memory(seg)

    def _links_settled(self, seg: Segment) -> None:
        with self._cond:
            self._links_pending -= int(seg.header.get("link_count", 0))
            self._m.trace_links_pending.set(self._links_pending)

    def _abandon_links(self, seg: Segment, reason: str, payload: bytes | None = None) -> None:
        """A links segment that will not be written: each of its open links counts as failed."""
        self._links_settled(seg)
        if self._links is None:
            return
        try:
            data = payload if payload is not None else seg.payload
            if data is None and seg.durable:
                data = self._spool.load(seg)
            rows = trace_links.decode(data) if data else []
        except (TornSegment, OSError, ValueError):
            rows = []
        self._links.abandon(rows, seg.settled, reason)

    def _count_drop(self, kind: Kind, reason: str, count: int, hold: Hold | None = None) -> None:
        """Count a drop and give back its WAL hold; at shutdown, an item the WAL holds is not dropped
        but kept there for the next start (counted apart)."""
        if hold is not None:
            if reason == "shutdown":
                self._m.wal_kept.labels(kind).inc(count)
                return
            hold.done()
        if kind is Kind.SPANS:
            self._m.drop_spans("write", reason, count)
        else:
            self._m.events_dropped.labels(kind, reason).inc(count)

    def _observe(self, seg: Segment, outcome: str, started: float) -> None:
        self._m.write_requests.labels(seg.kind, outcome).inc()
        self._m.write_duration.labels(seg.kind).observe(time.perf_counter() - started)

    def _breaker_changed(self, state: int) -> None:
        if state == CLOSED:
            self._server_back = True
        self._m.circuit_state.set(state)
        self._m.circuit_transitions.labels(STATE_NAMES[state]).inc()
        log.info("circuit breaker %s", STATE_NAMES[state])
