"""The feedback event stream: every accepted feedback event, enriched, to Kinesis (spec §10).

The only gateway module that imports ``boto3`` (lazily, when a stream is configured). One
named worker thread drains an in-memory queue into ``PutRecords`` requests::

    offer (event loop) → bounded queue → publisher thread: batch (≤ 500 records, ≤ 5 MB,
        at most one record per partition key) → PutRecords → ok: done
                                               ↘ throttled / 5xx / connection: back off, resend
                                               ↘ per-record failure (FailedRecordCount): back off,
                                                 resend that record, before any later record
                                                 of its partition key
                                               ↘ permanent error, or retrying past
                                                 ``stream_max_elapsed_s``: dropped, counted

Ordering per partition key (the session id): a request never carries two records of one key,
and a record is only sent once the records of its key before it were acknowledged, so a
partial failure cannot reorder a session. Records are in memory only (bounded, every drop
counted with a reason): the disk spool covers MLflow delivery, not the stream.

Errors (``StreamSink.put_records``)::

    StreamError
    ├── RetryableStreamError   throttling, KMS throttling, 5xx, connection failure, timeout
    └── PermanentStreamError   any other error (missing stream, access denied, validation)
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.config import FeedbackConfig
from gateway.export.retry import backoff_s
from gateway.logs import RateLimitedLog
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 5 * 1024 * 1024
MAX_RECORD_BYTES = 1024 * 1024
RETRY_INITIAL_S = 0.1
RETRY_MAX_S = 5.0
_RETRYABLE_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "LimitExceededException",
        "KMSThrottlingException",
        "InternalFailure",
        "InternalFailureException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)


class StreamError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class RetryableStreamError(StreamError):
    """Worth resending later."""


class PermanentStreamError(StreamError):
    """Resending the same records cannot succeed."""


class StreamSink(Protocol):
    def put_records(self, records: list[tuple[str, bytes]]) -> list[str | None]:
        """Send ``(partition_key, data)`` records; per record ``None`` (stored) or its error code."""
        ...


def retryable_code(code: str) -> bool:
    return code in _RETRYABLE_CODES


class KinesisSink:
    """``PutRecords`` through boto3. botocore's own retries are off: the publisher retries."""

    def __init__(self, stream_name: str, region: str, endpoint_url: str = "", timeout_s: float = 5.0) -> None:
        import boto3
        from botocore.config import Config as BotoConfig

        self._stream = stream_name
        self._client = boto3.client(
            "kinesis",
            region_name=region,
            endpoint_url=endpoint_url or None,
            config=BotoConfig(
                retries={"max_attempts": 1, "mode": "standard"}, connect_timeout=timeout_s, read_timeout=timeout_s
            ),
        )

    def put_records(self, records: list[tuple[str, bytes]]) -> list[str | None]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            resp = self._client.put_records(
                StreamName=self._stream, Records=[{"PartitionKey": k, "Data": d} for k, d in records]
            )
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if retryable_code(code) or status == 429 or status >= 500:
                raise RetryableStreamError(f"PutRecords: {code or status}") from None
            raise PermanentStreamError(f"PutRecords: {code or status}") from None
        except BotoCoreError as exc:  # connection refused/reset, timeouts
            raise RetryableStreamError(f"PutRecords: {type(exc).__name__}") from None
        out: list[str | None] = [r.get("ErrorCode") or None for r in resp.get("Records", [])]
        if len(out) != len(records):
            raise RetryableStreamError("PutRecords: answer does not match the request")
        return out


@dataclass(slots=True)
class _Item:
    key: str
    data: bytes
    first_at: float
    attempts: int = 0
    not_before: float = 0.0


class FeedbackStreamPublisher:
    """``start()``, non-blocking ``offer()`` from any thread, idempotent ``shutdown(timeout_s)``."""

    def __init__(
        self,
        config: FeedbackConfig,
        sink: StreamSink,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._cfg = config
        self._sink = sink
        self._m = metrics
        self._clock = clock
        self._pending: deque[_Item] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._warn = RateLimitedLog(log)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tracegw-feedback-stream", daemon=True)
        self._thread.start()

    def offer(self, partition_key: str, data: bytes) -> bool:
        """Queue one record; False (and counted) when the queue is full, the record too big or closing."""
        reason = None
        if len(data) + len(partition_key) > MAX_RECORD_BYTES:
            reason = "stream_rejected"
        with self._lock:
            if reason is None and self._closing:
                reason = "shutdown"
            elif reason is None and len(self._pending) >= self._cfg.stream_queue_max_events:
                reason = "writer_queue_full"
            if reason is None:
                self._pending.append(_Item(partition_key[:256] or "-", data, self._clock()))
                size = len(self._pending)
        if reason is not None:
            self._drop(reason, 1)
            return False
        self._m.feedback_stream_queue.set(size)
        if size >= self._cfg.stream_batch_max_records:
            self._wake.set()
        return True

    def shutdown(self, timeout_s: float) -> None:
        """Send what is queued until ``timeout_s``; count what is left as ``shutdown``."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._deadline = self._clock() + timeout_s
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s + 1.0)
        with self._lock:
            left = len(self._pending)
            self._pending.clear()
        if left:
            self._drop("shutdown", left)
            log.warning("feedback stream stopped with %d records unsent", left)
        self._m.feedback_stream_queue.set(0)

    @property
    def queued(self) -> int:
        return len(self._pending)

    # -- worker ---------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._lock:
                closing, deadline, empty = self._closing, self._deadline, not self._pending
            now = self._clock()
            if closing and (empty or now >= deadline):
                return
            try:
                batch, wait_s = self._take(now, closing)
                if batch:
                    self._send(batch)
                    continue
            except Exception:  # loop boundary: keep publishing, say so loudly
                log.exception("feedback stream publisher failed; continuing")
                wait_s = RETRY_INITIAL_S
            self._wake.wait(wait_s)
            self._wake.clear()

    def _take(self, now: float, closing: bool) -> tuple[list[_Item], float]:
        """The next batch if one is due, else ([], how long to sleep)."""
        cfg = self._cfg
        batch: list[_Item] = []
        keys: set[str] = set()
        size = 0
        oldest = None
        soonest_retry = None
        with self._lock:
            for item in self._pending:
                if item.key in keys:
                    continue  # a record of this key is ahead of it
                keys.add(item.key)
                if item.not_before > now:
                    soonest_retry = item.not_before if soonest_retry is None else min(soonest_retry, item.not_before)
                    continue
                if size + len(item.data) + len(item.key) > MAX_REQUEST_BYTES:
                    break
                batch.append(item)
                size += len(item.data) + len(item.key)
                oldest = item.first_at if oldest is None else min(oldest, item.first_at)
                if len(batch) >= cfg.stream_batch_max_records:
                    break
        if batch and (
            closing
            or len(batch) >= cfg.stream_batch_max_records
            or size * 2 > MAX_REQUEST_BYTES
            or any(i.attempts for i in batch)
            or now - (oldest or now) >= cfg.stream_max_delay_s
        ):
            return batch, 0.0
        waits = [cfg.stream_max_delay_s - (now - oldest) if oldest is not None else cfg.stream_max_delay_s]
        if soonest_retry is not None:
            waits.append(soonest_retry - now)
        return [], max(0.005, min(waits))

    def _send(self, batch: list[_Item]) -> None:
        started = time.perf_counter()
        try:
            results = self._sink.put_records([(i.key, i.data) for i in batch])
        except RetryableStreamError as exc:
            self._m.feedback_stream_requests.labels(
                "throttled" if "Throughput" in exc.reason or "Throttl" in exc.reason else "retryable_error"
            ).inc()
            self._retry(batch, exc.reason)
            return
        except PermanentStreamError as exc:
            self._m.feedback_stream_requests.labels("permanent_error").inc()
            self._finish(batch, dropped="stream_rejected")
            self._warn.warning("refused_request", "feedback stream refused %d records: %s", len(batch), exc.reason)
            return
        finally:
            self._m.feedback_stream_duration.observe(time.perf_counter() - started)
        ok = [i for i, err in zip(batch, results, strict=True) if err is None]
        retry = [i for i, err in zip(batch, results, strict=True) if err is not None and retryable_code(err)]
        refused = [i for i, err in zip(batch, results, strict=True) if err is not None and not retryable_code(err)]
        self._m.feedback_stream_requests.labels("ok" if len(ok) == len(batch) else "partial").inc()
        self._finish(ok)
        if refused:
            self._finish(refused, dropped="stream_rejected")
            self._warn.warning(
                "refused_records",
                "feedback stream refused %d records (%s)",
                len(refused),
                next(err for err in results if err is not None and not retryable_code(err)),
            )
        if retry:
            self._retry(retry, "FailedRecordCount")

    def _retry(self, items: list[_Item], reason: str) -> None:
        now = self._clock()
        expired = [i for i in items if now - i.first_at > self._cfg.stream_max_elapsed_s]
        if expired:
            self._finish(expired, dropped="retry_exhausted")
        again = [i for i in items if now - i.first_at <= self._cfg.stream_max_elapsed_s]
        for item in again:
            item.attempts += 1
            item.not_before = now + backoff_s(item.attempts, RETRY_INITIAL_S, RETRY_MAX_S)
        if again:
            self._m.feedback_stream_records.labels("retried").inc(len(again))
            self._warn.warning("resend", "feedback stream: %d records to resend (%s)", len(again), reason)

    def _finish(self, items: list[_Item], dropped: str | None = None) -> None:
        if not items:
            return
        done = {id(i) for i in items}
        with self._lock:
            self._pending = deque(i for i in self._pending if id(i) not in done)
            size = len(self._pending)
        self._m.feedback_stream_queue.set(size)
        if dropped is None:
            self._m.feedback_stream_records.labels("ok").inc(len(items))
        else:
            self._drop(dropped, len(items))

    def _drop(self, reason: str, count: int) -> None:
        self._m.feedback_stream_records.labels("dropped").inc(count)
        self._m.events_dropped.labels("feedback_stream", reason).inc(count)


def make_publisher(config: FeedbackConfig, region: str, metrics: GatewayMetrics) -> FeedbackStreamPublisher | None:
    """The publisher for the configured stream, or None when the stream is off."""
    if not config.stream_enabled:
        return None
    sink = KinesisSink(config.stream_name, region, config.kinesis_endpoint_url)
    return FeedbackStreamPublisher(config, sink, metrics)
