"""The gateway core: receive → assemble → stages (sample, redact) → batch → writers.

``Gateway`` owns the stateful components and a ticker task on the event loop that hands ready
traces on. Receivers call ``accept_*`` from the event loop; each call only validates, records
and returns, so the application's RPCs are answered in microseconds whatever MLflow does.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.assembler import Assembler
from gateway.config import Config
from gateway.delivery import Batcher, WriterPool
from gateway.metrics import GatewayMetrics
from gateway.model import BundleRecord, FeedbackRecord, SpanRecord, TraceRecord
from gateway.pipeline import StageChain
from gateway.redactor import Redactor
from gateway.sampler import Sampler
from gateway.writer import TraceWriter

log = logging.getLogger(__name__)

TICK_S = 0.05


class Gateway:
    def __init__(self, config: Config, metrics: GatewayMetrics, writer: TraceWriter) -> None:
        self.config = config
        self.metrics = metrics
        self._assembler = Assembler(config.assembly, metrics)
        self._chain = StageChain([Sampler(config.sampling), Redactor(config.redaction)], metrics)
        concurrency = 1 if config.mlflow.embedded else config.writer.concurrency
        self._pool = WriterPool(writer, config.writer, metrics, config.mlflow.bundle_experiment_name,
                                feedback_join_window_s=config.writer.feedback_join_window_s,
                                concurrency=concurrency)
        self._batcher = Batcher(config.batch, self._pool.submit_batch)
        self._ticker: asyncio.Task[None] | None = None
        self._accepting = False

    @property
    def accepting(self) -> bool:
        return self._accepting

    async def start(self) -> None:
        self._pool.start()
        self._ticker = asyncio.create_task(self._tick(), name="tracegw-ticker")
        self._accepting = True

    def accept_spans(self, spans: list[SpanRecord], experiment_name: str) -> None:
        evicted = self._assembler.add(spans, experiment_name or self.config.mlflow.experiment_name)
        if evicted:
            self._hand_on(evicted)

    def accept_feedback(self, records: list[FeedbackRecord]) -> None:
        for record in records:
            self._pool.submit_feedback(record)

    def accept_bundle_events(self, records: list[BundleRecord]) -> None:
        for record in records:
            self._pool.submit_bundle_event(record)

    def _hand_on(self, traces: list[TraceRecord]) -> None:
        kept = self._chain.run(traces)
        if kept:
            self._batcher.add(kept)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            try:
                ready = self._assembler.poll()
                if ready:
                    self._hand_on(ready)
                self._batcher.poll()
                self._pool.poll_deferred()
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
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None
        held = self._assembler.drain()
        self._hand_on(held)
        self._batcher.flush()
        remaining = max(0.1, timeout_s - (time.monotonic() - started))
        await asyncio.to_thread(self._pool.shutdown, remaining)
        log.info("gateway drained: traces_decided_at_shutdown=%d", len(held))
