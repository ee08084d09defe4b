"""The gateway core: receive → assemble → measure → contract → redact → feedback join → sample
→ batch → write. The composition root of the pipeline; ``server.py`` wires it to the network.

``Gateway`` owns the stateful components and a ticker task on the event loop that hands ready
traces on. Receivers call ``accept_*`` from the event loop; each call only validates, records
and returns, so the application's RPCs are answered in microseconds whatever MLflow does.

Measuring comes first (metrics see 100% of traffic), redaction before sampling (so the rescue
buffer only ever holds redacted traces). Feedback promotes its trace out of the rescue buffer,
or, if the trace is still being assembled, marks it to be kept; either way it is counted by its
trace's pivots and, when a stream is configured, published enriched (``feedback_join``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from gateway.config import Config
from gateway.export.batcher import Batcher, SpanBatch
from gateway.export.delivery import Delivery
from gateway.export.errors import TraceWriter
from gateway.export.kinesis import make_publisher
from gateway.export.segments import Kind
from gateway.export.spool import Spool
from gateway.export.wal import Hold, Record, Wal, make_wal
from gateway.memory_guard import MemoryGuard
from gateway.metrics import GatewayMetrics
from gateway.model import BundleRecord, FeedbackRecord, SpanRecord, TraceRecord, approx_trace_bytes
from gateway.process.assembler import Assembler
from gateway.process.chain import StageChain
from gateway.process.contract import ContractChecker
from gateway.process.examples import ExampleTraces
from gateway.process.feedback_join import FeedbackJoin, TraceContext, context_of
from gateway.process.measure import Measure
from gateway.process.recent import RecentMap
from gateway.process.redactor import Redactor
from gateway.process.rescue_buffer import RescueBuffer
from gateway.process.sampler import REASON_TAG, Sampler

log = logging.getLogger(__name__)

TICK_S = 0.05
FEEDBACK_FORCED_MAX = 100_000
# Event ids remembered per kind to drop a re-sent event (a client's or a browser's retry): the
# last 50,000 to 100,000 of each kind (RecentMap's two generations).
SEEN_EVENTS_MAX = 100_000
FEEDBACK_HOLD_MARGIN_S = 5.0
MAX_REGISTRY_LOOKUPS = 32
TOO_MANY_LOOKUPS = f"more than {MAX_REGISTRY_LOOKUPS} distinct versions to check in one request; send fewer"


class Gateway:
    """The pipeline's components and the ticker that moves traces through them.

    ``start()`` starts delivery and the ticker; ``accept_*`` take decoded records from the
    receivers (on the event loop, never blocking); ``shutdown(timeout_s)`` decides every held
    trace and delivers within the timeout.
    """

    def __init__(self, config: Config, metrics: GatewayMetrics, writer: TraceWriter) -> None:
        self.config = config
        self.metrics = metrics
        self._writer = writer
        self._assembler = Assembler(config.assembly, metrics)
        self.rescue = RescueBuffer(config.sampling.rescue_window_s, config.sampling.rescue_max_bytes, metrics)
        # Traces that got feedback before their sampling decision: the sampler keeps them.
        self._feedback_forced: RecentMap[str, None] = RecentMap(FEEDBACK_FORCED_MAX)
        self._seen_feedback: RecentMap[str, None] = RecentMap(SEEN_EVENTS_MAX)
        self._seen_bundle_events: RecentMap[str, None] = RecentMap(SEEN_EVENTS_MAX)
        self._memory = MemoryGuard(config.memory, metrics)
        self.examples = ExampleTraces(metrics)
        self.wal: Wal | None = make_wal(config, metrics)
        if self.wal is None:
            log.warning("write-ahead log off: a kill loses what is in assembly and open batches (about 2 s)")
        elif not config.wal.fsync:
            log.warning("TRACEGW_WAL_FSYNC=never: a machine crash or power loss can lose acknowledged spans")
        self._sampler = Sampler(
            config.sampling, metrics, on_dropped=self._sampled_out, forced=self._feedback_forced.__contains__
        )
        self._redactor = Redactor(config.redaction, metrics)
        spool_dir = config.spool.directory
        self._stream = make_publisher(
            config.feedback,
            config.region,
            metrics,
            (Path(spool_dir) / "stream") if spool_dir else None,
            config.spool.fsync,
        )
        self._feedback = FeedbackJoin(
            metrics,
            config.feedback.context_max_traces,
            config.metrics.max_label_values,
            hold_s=config.assembly.decision_timeout_s + config.assembly.root_grace_s + FEEDBACK_HOLD_MARGIN_S,
            publish=self._stream.offer if self._stream is not None else None,
            environment=config.environment,
            max_label_sets=config.metrics.max_label_sets,
            max_label_chars=config.metrics.max_label_chars,
            region=config.region,
            examples=self.examples,
        )
        # The chain in three parts, so that redacting a large trace can leave the event loop:
        # measure and check, redact, then feedback join and sampling.
        self._before_redaction = StageChain(
            [
                Measure(
                    metrics,
                    config.metrics.max_label_values,
                    config.metrics.max_label_sets,
                    config.metrics.max_label_chars,
                    self.examples,
                    config.sampling.latency_threshold_s,
                    config.metrics.example_costly_usd,
                ),
                ContractChecker(config.contract, metrics),
            ],
            metrics,
            self._settled,
        )
        self._redaction = StageChain([self._redactor], metrics, self._settled)
        # Its own redactor (and clean cache): the worker thread shares no mutable state with the loop.
        self._offload_redaction = StageChain([Redactor(config.redaction, metrics)], metrics, self._settled)
        self._after_redaction = StageChain([self._feedback, self._sampler], metrics, self._settled)
        self._offload_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tracegw-redact")
        self._offloads: set[asyncio.Task[None]] = set()
        self._offloading: Counter[str] = Counter()  # trace ids being redacted on the worker thread
        concurrency = 1 if config.mlflow.embedded else config.writer.concurrency
        spool = Spool(config.spool.directory or None, config.spool.max_bytes, config.spool.fsync, metrics)
        self._delivery = Delivery(
            writer, spool, config.writer, config.retry, metrics, config.mlflow.bundle_experiment_name, concurrency
        )
        self._batcher = Batcher(config.batch, self._submit_batch)
        self._ticker: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    def event_room(self, kind: Kind) -> int:
        """How many more feedback or bundle events delivery takes now; beyond it RPCs are refused."""
        return self._delivery.room(kind)

    @property
    def refusing(self) -> bool:
        """Memory is over the limit: new spans get RESOURCE_EXHAUSTED."""
        return self._memory.refusing

    async def start(self) -> None:
        """Start delivery (the spool's segments first), replay the WAL, then tick: the caller serves
        only after this returns, so what a killed gateway had acknowledged is in the pipeline before
        anything new."""
        self._delivery.start()
        if self._stream is not None:
            self._stream.start()
        if self.wal is not None:
            records = await asyncio.to_thread(self.wal.open)
            self.wal.start(asyncio.get_running_loop())
            self._replay(records)
            self.wal.replayed()
        self._ticker = asyncio.create_task(self._tick(), name="tracegw-ticker")
        self._accepting = True

    def _replay(self, records: list[Record]) -> None:
        """Feed what the WAL still holds through the pipeline again, counted apart (business metrics
        skip it: a trace measured before the kill must not count twice)."""
        if not records:
            return
        from gateway.receive.replay import decode_record  # proto types stay in receive/

        started = time.monotonic()
        spans_in = events_in = 0
        for record in records:
            try:
                kind, items = decode_record(record, self.config.limits)
            except Exception as exc:  # it decoded when it arrived: a bug or a foreign file, never a stop
                self.metrics.wal_unreadable.labels("undecodable").inc()
                log.error("wal: a record of segment %d could not be decoded (%s); skipped", record.segment, exc)
                continue
            if kind is Kind.SPANS:
                spans_in += len(items)
                self.accept_spans(items, record.experiment, record.segment, replayed=True)  # type: ignore[arg-type]
            elif kind is Kind.FEEDBACK:
                events_in += len(items)
                self.metrics.wal_replayed_events.labels(kind).inc(len(items))
                self.accept_feedback(items, record.segment, replayed=True)  # type: ignore[arg-type]
            else:
                events_in += len(items)
                self.metrics.wal_replayed_events.labels(kind).inc(len(items))
                self.accept_bundle_events(items, record.segment)  # type: ignore[arg-type]
        self.metrics.wal_replayed_spans.inc(spans_in)
        took = time.monotonic() - started
        self.metrics.wal_replay_seconds.set(took)
        log.info(
            "wal replay: %d records, %d spans, %d events fed through again in %.2fs",
            len(records),
            spans_in,
            events_in,
            took,
        )

    def accept_spans(
        self, spans: list[SpanRecord], experiment_name: str, wal_segment: int = 0, replayed: bool = False
    ) -> None:
        """Take decoded spans. ``wal_segment``: the WAL segment they were logged in (the caller holds
        it until this returns; each trace they touch takes its own hold)."""
        evicted = self._assembler.add(
            spans, experiment_name or self.config.mlflow.experiment_name, wal_segment, replayed
        )
        if wal_segment and self._assembler.last_holds:
            assert self.wal is not None
            self.wal.hold(wal_segment, self._assembler.last_holds)
        if evicted:
            self._hand_on(evicted)

    def _event_hold(self, wal_segment: int, parts: int) -> Hold | None:
        """A WAL hold for one event (``parts``: how many consumers must each give it back)."""
        if not wal_segment or self.wal is None:
            return None
        self.wal.hold(wal_segment)
        return self.wal.hold_of([wal_segment], parts)

    def accept_feedback(self, records: list[FeedbackRecord], wal_segment: int = 0, replayed: bool = False) -> None:
        for record in records:
            if self._duplicate(self._seen_feedback, record.event_id, Kind.FEEDBACK):
                continue
            redacted = self._redactor.redact_feedback(record)
            outcome, context = self._keep_trace_for_feedback(record.trace_id)
            hold = self._event_hold(wal_segment, 2)  # delivery, and the stream's side of the join
            self._delivery.submit_feedback(redacted, hold)
            self._feedback.accept(redacted, outcome, context, hold, replayed)

    def _keep_trace_for_feedback(self, trace_id: str) -> tuple[str, TraceContext | None]:
        """Make sure the trace a customer reacted to is stored, whatever sampling said.

        Returns what the gateway knew of it (``feedback_join.JOIN_OUTCOMES``) and its pivot tags
        when known already.
        """
        rescued = self.rescue.promote(trace_id)
        if rescued is not None:
            rescued.tags[REASON_TAG] = "feedback"
            self._sampler.remember_promoted(trace_id)
            self.metrics.rescue_promoted.labels("feedback").inc()
            self._batcher.add([rescued])
            return "rescued", context_of(rescued)
        decided = self._sampler.decided_keep(trace_id)
        if decided is not None:  # kept (sampled in), or dropped and gone from the rescue buffer
            return ("sampled_in" if decided else "orphan"), self._feedback.lookup(trace_id)
        # Not decided: still in assembly, or its spans have not arrived (yet): keep it if they do.
        self._feedback_forced[trace_id] = None
        if self._assembler.holds(trace_id) or trace_id in self._offloading:
            return "in_flight", None
        return "orphan", self._feedback.lookup(trace_id)

    async def unknown_bundle_versions(self, records: list[BundleRecord]) -> dict[int, tuple[str, str]]:
        """``id(record)`` → (field, reason) for the ``promoted`` and ``rolled_back`` events among
        ``records`` that name a version the model registry lacks (bundle events are history: a
        promotion of a version nobody registered did not happen). Asks the registry off the event
        loop, once per distinct version and at most ``MAX_REGISTRY_LOOKUPS`` times per request
        (events past that are rejected, so one request cannot hammer the registry); raises
        ``RetryableWriteError`` when it cannot tell."""
        unknown: dict[int, tuple[str, str]] = {}
        known: dict[tuple[str, str], bool] = {}
        for record in records:
            checks = []
            if record.kind in ("promoted", "rolled_back"):
                checks.append(("bundle_version", record.bundle_version))
            if record.kind == "rolled_back":
                checks.append(("rolled_back.to_version", str(record.details.get("to_version", ""))))
            for field, version in checks:
                key = (record.bundle_name, version)
                if key not in known:
                    if len(known) >= MAX_REGISTRY_LOOKUPS:
                        unknown[id(record)] = (field, TOO_MANY_LOOKUPS)
                        break
                    known[key] = await asyncio.to_thread(self._writer.bundle_version_known, *key)
                if not known[key]:
                    unknown[id(record)] = (field, "names a version the model registry does not have")
                    break
        return unknown

    def accept_bundle_events(self, records: list[BundleRecord], wal_segment: int = 0) -> None:
        for record in records:
            if self._duplicate(self._seen_bundle_events, record.event_id, Kind.BUNDLE):
                continue
            self._delivery.submit_bundle_event(self._redactor.redact_bundle(record), self._event_hold(wal_segment, 1))

    def _duplicate(self, seen: RecentMap[str, None], event_id: str, kind: Kind) -> bool:
        """True (and counted as ``duplicate``) for an event id already accepted recently."""
        if event_id in seen:
            self.metrics.events_dropped.labels(kind, "duplicate").inc()
            return True
        seen[event_id] = None
        return False

    def _settled(self, traces: list[TraceRecord]) -> None:
        """Traces a stage dropped or sampled out (counted by the chain): give back their WAL holds."""
        if self.wal is None:
            return
        segments = []
        for trace in traces:
            if trace.wal:
                segments.extend(trace.wal)
                trace.wal = []
        if segments:
            self.wal.release(segments)

    def _submit_batch(self, batch: SpanBatch) -> None:
        """A batch to delivery with one WAL hold for all its traces (given back once it is spooled)."""
        hold = None
        if self.wal is not None:
            segments = []
            for trace in batch.traces:
                if trace.wal:
                    segments.extend(trace.wal)
                    trace.wal = []
            hold = self.wal.hold_of(segments)
        self._delivery.submit_batch(batch, hold)

    def _sampled_out(self, trace: TraceRecord) -> None:
        if self._memory.shedding:
            self.metrics.rescue_evicted.labels("memory").inc()
        else:
            self.rescue.add(trace)

    def _hand_on(self, traces: list[TraceRecord]) -> None:
        checked = self._before_redaction.run(traces)
        limit = self.config.redaction.offload_bytes
        heavy = [t for t in checked if t.trace_id in self._offloading or approx_trace_bytes(t) > limit]
        if heavy:
            # Large traces are redacted on the worker thread so that health checks and receivers
            # keep answering; late spans of a trace being redacted there follow it the same way,
            # so a trace's batches keep their order (one worker: first in, first out).
            ids = {id(t) for t in heavy}
            checked = [t for t in checked if id(t) not in ids]
            self._offload(heavy)
        self._after_redacted(self._redaction.run(checked))

    def _after_redacted(self, traces: list[TraceRecord]) -> None:
        kept = self._after_redaction.run(traces)
        if kept:
            for trace in kept:
                self.examples.stored(trace.trace_id)
            self._batcher.add(kept)

    def _offload(self, traces: list[TraceRecord]) -> None:
        self.metrics.redaction_offloaded.inc(len(traces))
        self._offloading.update(t.trace_id for t in traces)
        loop = asyncio.get_running_loop()
        redacted = loop.run_in_executor(self._offload_pool, self._offload_redaction.run, traces)

        async def finish() -> None:
            try:
                done = await redacted
            except Exception:  # counted like any trace a stage loses; never raised into the loop
                log.exception("redaction on the worker thread failed; %d traces dropped", len(traces))
                self.metrics.drop_spans("redact", "invalid", sum(len(t.spans) for t in traces))
                self._settled(traces)
                done = []
            finally:
                self._offloading.subtract(t.trace_id for t in traces)
                self._offloading += Counter()  # forget ids at zero
            self._after_redacted(done)

        task = asyncio.create_task(finish(), name="tracegw-redact")
        self._offloads.add(task)
        task.add_done_callback(self._offloads.discard)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                ready = self._assembler.poll()
                if ready:
                    self._hand_on(ready)
                if self.config.batch.flush_when_idle and self._delivery.span_turn_idle():
                    self._batcher.flush()  # the writer waits for work: partial batches go now
                else:
                    self._batcher.poll()
                self.rescue.expire()
                if self.wal is not None:
                    self.wal.tick()
                if self._memory.update(holding=self._assembler.spans_in_flight > 0) >= 1 and len(self.rescue):
                    self.rescue.clear("memory")
            except Exception:  # loop boundary: keep ticking, but say so loudly
                log.exception("pipeline tick failed")

    async def shutdown_receiving(self) -> None:
        """Refuse new data (receivers answer UNAVAILABLE); what is held stays for ``shutdown``."""
        self._accepting = False

    async def shutdown(self, timeout_s: float) -> None:
        """Stop accepting, decide everything held, deliver within ``timeout_s``, count the rest."""
        if self._ticker is None:
            return
        self._accepting = False
        started = time.monotonic()
        self._ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._ticker
        self._ticker = None
        held = self._assembler.drain()
        self._hand_on(held)
        if self._offloads:
            await asyncio.gather(*list(self._offloads), return_exceptions=True)
        self._offload_pool.shutdown(wait=False)
        self._feedback.flush()
        self._batcher.flush()
        remaining = max(0.1, timeout_s - (time.monotonic() - started))
        if self._stream is not None:
            await asyncio.gather(
                asyncio.to_thread(self._delivery.shutdown, remaining),
                asyncio.to_thread(self._stream.shutdown, remaining),
            )
        else:
            await asyncio.to_thread(self._delivery.shutdown, remaining)
        if self.wal is not None:
            await asyncio.to_thread(self.wal.close)
            if self.wal.segments():
                log.info(
                    "wal: %d segments kept for the next start (%d bytes)", self.wal.segments(), self.wal.size_bytes
                )
        log.info("gateway drained: traces_decided_at_shutdown=%d", len(held))
