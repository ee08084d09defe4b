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
partial failure cannot reorder a session.

Durable: with a spool directory, the publisher thread writes every record it is offered to
``<spool dir>/stream/<seq>.stream`` (one file per group, fsynced) before anything else, and
deletes a file once each of its records was stored or dropped with a counted reason; a restart
sends what those files still hold. Until a record is in such a file, its feedback's
write-ahead-log record holds (a ``wal.Hold``), so a SIGKILL at any point loses no record on its way
to the stream (a record may be sent twice after a kill: consumers dedupe on ``event_id``). The
records are the enriched, already redacted events: nothing unredacted is written.

Errors (``StreamSink.put_records``)::

    StreamError
    ├── RetryableStreamError   throttling, KMS throttling, 5xx, connection failure, timeout
    └── PermanentStreamError   any other error (missing stream, access denied, validation)
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from gateway.config import FeedbackConfig
from gateway.export.retry import backoff_s
from gateway.logs import RateLimitedLog
from gateway.metrics import GatewayMetrics
from gateway.model import Settles

log = logging.getLogger(__name__)
STREAM_SUFFIX = ".stream"

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


class _StreamFile:
    """One file of persisted records; deleted when the last of them is settled."""

    __slots__ = ("path", "remaining")

    def __init__(self, path: Path, remaining: int) -> None:
        self.path = path
        self.remaining = remaining


@dataclass(slots=True)
class _Item:
    key: str
    data: bytes
    first_at: float
    attempts: int = 0
    not_before: float = 0.0
    hold: Settles | None = None  # its feedback's WAL record, until the record is in a stream file
    file: _StreamFile | None = None


class FeedbackStreamPublisher:
    """``start()``, non-blocking ``offer()`` from any thread, idempotent ``shutdown(timeout_s)``."""

    def __init__(
        self,
        config: FeedbackConfig,
        sink: StreamSink,
        metrics: GatewayMetrics,
        clock: Callable[[], float] = time.monotonic,
        spool_dir: Path | None = None,
        fsync: bool = True,
    ) -> None:
        self._cfg = config
        self._sink = sink
        self._m = metrics
        self._clock = clock
        self._dir = spool_dir
        self._fsync = fsync
        self._seq = 0
        self._unsaved: list[_Item] = []  # offered, not yet in a stream file (guarded by _lock)
        self._pending: deque[_Item] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._closing = False
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self._warn = RateLimitedLog(log)

    def start(self) -> None:
        self._load()
        self._thread = threading.Thread(target=self._loop, name="tracegw-feedback-stream", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        """Queue what the stream files of an earlier run still hold (before anything new)."""
        if self._dir is None:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        loaded = 0
        for path in sorted(self._dir.glob("*" + STREAM_SUFFIX)):
            try:
                rows = [json.loads(line) for line in path.read_text().splitlines() if line]
                items = [_Item(str(r["k"]), base64.b64decode(r["d"]), self._clock()) for r in rows]
                self._seq = max(self._seq, int(path.name[: -len(STREAM_SUFFIX)]))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                # A torn file is one the process died writing: its records' WAL holds were not
                # given back, so the WAL's replay publishes them again. Nothing is lost with it.
                log.warning("feedback stream: %s unreadable (%s); removed (the WAL replays it)", path.name, exc)
                path.unlink(missing_ok=True)
                continue
            f = _StreamFile(path, len(items))
            for item in items:
                item.file = f
            self._pending.extend(items)
            loaded += len(items)
            if not items:
                path.unlink(missing_ok=True)
        if loaded:
            self._m.feedback_stream_records.labels("replayed").inc(loaded)
            log.info("feedback stream: %d records from an earlier run to send", loaded)
            self._m.feedback_stream_queue.set(len(self._pending))

    def _persist(self) -> None:
        """Write the records offered since the last call to a stream file of their own (publisher thread)."""
        with self._lock:
            items, self._unsaved = self._unsaved, []
        if not items:
            return
        if self._dir is not None:
            self._seq += 1
            path = self._dir / f"{self._seq:016d}{STREAM_SUFFIX}"
            lines = "".join(
                json.dumps({"k": i.key, "d": base64.b64encode(i.data).decode()}, separators=(",", ":")) + "\n"
                for i in items
            )
            try:
                with open(path, "w", encoding="utf-8") as fh:
                    fh.write(lines)
                    if self._fsync:
                        fh.flush()
                        os.fsync(fh.fileno())
            except OSError as exc:  # the WAL holds stay: a restart still publishes these
                path.unlink(missing_ok=True)
                self._warn.warning("stream_spool", "feedback stream file not written (%s)", exc.strerror or exc)
                return
            f = _StreamFile(path, len(items))
            with self._lock:
                for item in items:
                    item.file = f
            for item in items:  # on disk now: the WAL need not keep them any more
                if item.hold is not None:
                    item.hold.done()
                    item.hold = None

    def offer(self, partition_key: str, data: bytes, hold: Settles | None = None) -> bool:
        """Queue one record; False (and counted) when the queue is full, the record too big or
        closing. ``hold`` is given back once the record is on disk (or settled, without a spool)."""
        reason = None
        if len(data) + len(partition_key) > MAX_RECORD_BYTES:
            reason = "stream_rejected"
        with self._lock:
            if reason is None and self._closing:
                reason = "shutdown"
            elif reason is None and len(self._pending) >= self._cfg.stream_queue_max_events:
                reason = "writer_queue_full"
            if reason is None:
                item = _Item(partition_key[:256] or "-", data, self._clock(), hold=hold)
                self._pending.append(item)
                self._unsaved.append(item)
                size = len(self._pending)
        if reason is not None:
            self._drop(reason, 1)
            if hold is not None:
                hold.done()
            return False
        self._m.feedback_stream_queue.set(size)
        self._wake.set()  # to the stream file now, not at the next batch
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
            left = list(self._pending)
            self._pending.clear()
        kept = sum(1 for i in left if i.file is not None)  # in stream files: the next start sends them
        in_wal = sum(1 for i in left if i.file is None and i.hold is not None)  # the WAL replays them
        if kept or in_wal:
            log.info("feedback stream stopped with %d records unsent, kept for the next start", kept + in_wal)
        if in_wal:
            self._m.wal_kept.labels("feedback_stream").inc(in_wal)
        if len(left) > kept + in_wal:
            self._drop("shutdown", len(left) - kept - in_wal)
            log.warning("feedback stream stopped with %d records unsent", len(left) - kept - in_wal)
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
                self._persist()
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
        for item in items:
            if item.hold is not None:  # never reached a stream file (no spool, or it failed)
                item.hold.done()
                item.hold = None
            f = item.file
            if f is not None:
                f.remaining -= 1
                if f.remaining == 0:
                    f.path.unlink(missing_ok=True)
        self._m.feedback_stream_queue.set(size)
        if dropped is None:
            self._m.feedback_stream_records.labels("ok").inc(len(items))
        else:
            self._drop(dropped, len(items))

    def _drop(self, reason: str, count: int) -> None:
        self._m.feedback_stream_records.labels("dropped").inc(count)
        self._m.events_dropped.labels("feedback_stream", reason).inc(count)


def make_publisher(
    config: FeedbackConfig, region: str, metrics: GatewayMetrics, spool_dir: Path | None = None, fsync: bool = True
) -> FeedbackStreamPublisher | None:
    """The publisher for the configured stream, or None when the stream is off. With ``spool_dir``
    its records are kept on disk until the stream has them."""
    if not config.stream_enabled:
        return None
    sink = KinesisSink(config.stream_name, region, config.kinesis_endpoint_url)
    return FeedbackStreamPublisher(config, sink, metrics, spool_dir=spool_dir, fsync=fsync)
