"""The write-ahead log: an RPC is acknowledged only once its bytes are on disk.

Without it, what sits in assembly and in open batches (about two seconds of traffic) is only in
memory, and a SIGKILL, an OOM kill or a node crash loses spans the gateway had acknowledged. With
it, each export RPC (native or OTLP), feedback RPC and bundle-event RPC is appended, as the bytes
it arrived in, to the current WAL segment before it is answered::

    receiver (event loop) → append: a segment and a future → WAL thread: encrypt, write, one
        fsync for every record that arrived meanwhile (group commit) → the futures resolve on the
        event loop → the receiver hands the request on and answers

The event loop never touches the disk. A segment is closed at ``TRACEGW_WAL_SEGMENT_BYTES`` or
after ``SEGMENT_AGE_S`` and deleted once everything it holds is settled: every trace with spans in
it decided and its kept batch in the spool (or sampled out, or dropped with a counted reason),
every event in the spool. Settling is counted with **holds**: each trace, batch and event that
came out of a segment holds it (``hold``), and gives it back once settled (``release``). On start
``open()`` returns every record still in the log, which the gateway feeds through its pipeline
again before it serves (sampling is deterministic by trace id and MLflow upserts spans, so a trace
that was already spooled does not duplicate).

**No PII at rest**: the log holds raw, unredacted spans, so every record is encrypted with
AES-256-GCM. The key comes from ``TRACEGW_WAL_KEY_FILE`` (a mounted Secret keeps it off the disk
altogether) or is generated into ``<wal dir>/wal.key`` at first start (it then sits beside the log:
it keeps the log's files unreadable on their own, not against someone holding the whole disk).

Segment file ``<seq>.wal``::

    b"TGWL" | version:u8 | key_id:8 | nonce_prefix:8 | record*
    record = length:u32 | index:u32 | ciphertext (length bytes: AES-GCM of the body, tag included)
    body   = kind:u8 | experiment_len:u16 | experiment (UTF-8) | payload

A record's nonce is the segment's random prefix and the record's index (a counter never reused in
a segment, not even for a write the disk refused); its associated data is the segment's number,
so a record cannot be moved to another file unnoticed. A torn tail (a
write the process died in, never acknowledged) ends the segment's replay, counted; a segment
written under another key is set aside in ``<wal dir>/quarantine/``, counted, never deleted.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import hashlib
import logging
import os
import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.metrics import GatewayMetrics

if TYPE_CHECKING:
    from gateway.config import Config

log = logging.getLogger(__name__)

MAGIC = b"TGWL"
VERSION = 1
SUFFIX = ".wal"
KEY_NAME = "wal.key"
SEGMENT_AGE_S = 1.0
_FILE_HEAD = struct.Struct(">4sB8s8s")
_REC = struct.Struct(">II")
_BODY_HEAD = struct.Struct(">BH")
_SEG = struct.Struct(">Q")
_NONCE_INDEX = struct.Struct(">I")
TAG_BYTES = 16
RECORD_OVERHEAD = _REC.size + TAG_BYTES + _BODY_HEAD.size


class RecordKind(enum.IntEnum):
    """What a WAL record holds: the request bytes of one RPC (bundle events: the accepted records)."""

    NATIVE_SPANS = 1
    OTLP_SPANS = 2
    FEEDBACK = 3
    BUNDLE = 4


class WalFull(Exception):
    """The record does not fit under ``TRACEGW_WAL_MAX_BYTES``: the RPC is refused, not taken."""


class WalWriteError(Exception):
    """The disk refused the record (no space, I/O error): the RPC is refused, not taken."""


class WalKeyError(Exception):
    """The key file is missing, unreadable or not 32 bytes."""


@dataclass(slots=True)
class Record:
    """One record read back at start."""

    segment: int
    kind: RecordKind
    experiment: str
    payload: bytes


def read_key(path: Path) -> bytes:
    """The 32-byte key in ``path``: raw bytes, hex or base64 (whitespace ignored)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise WalKeyError(f"cannot read the WAL key {path} ({exc.strerror or exc})") from None
    if len(data) == 32:
        return data
    text = data.strip()
    for decode in (binascii.unhexlify, base64.b64decode):
        try:
            key = decode(text)
        except (binascii.Error, ValueError):
            continue
        if len(key) == 32:
            return key
    raise WalKeyError(f"the WAL key {path} must hold 32 bytes (raw, 64 hex characters or base64); it does not")


def load_or_create_key(key_file: str, directory: Path) -> bytes:
    """The configured key, or the one generated into ``<directory>/wal.key`` (created at first start)."""
    if key_file:
        return read_key(Path(key_file))
    path = directory / KEY_NAME
    if path.exists():
        return read_key(path)
    key = AESGCM.generate_key(bit_length=256)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it meanwhile
        return read_key(path)
    try:
        os.write(fd, key)
        os.fsync(fd)
    finally:
        os.close(fd)
    return key


class Hold:
    """Holds on WAL segments for one settled-together unit (a batch, an event), shared by the parts
    it may be split into: the segments are released when the last part is done."""

    __slots__ = ("_refs", "_segments", "_wal")

    def __init__(self, wal: Wal, segments: list[int]) -> None:
        self._wal = wal
        self._segments = segments
        self._refs = 1

    def share(self) -> Hold:
        """One more part to wait for (call before handing the part on)."""
        with self._wal._cond:
            self._refs += 1
        return self

    def done(self) -> None:
        """This part is settled (any thread); the last one gives the segments back."""
        wal = self._wal
        with wal._cond:
            self._refs -= 1
            if self._refs or not self._segments:
                return
            segments, self._segments = self._segments, []
            wal._release_locked(segments)


@dataclass(slots=True)
class _Append:
    segment: int
    kind: RecordKind
    experiment: bytes
    payload: bytes
    future: asyncio.Future[None]


class _OpenFile:
    __slots__ = ("fd", "offset", "prefix", "records")

    def __init__(self, fd: int, prefix: bytes, offset: int) -> None:
        self.fd = fd
        self.prefix = prefix
        self.records = 0
        self.offset = offset


class Wal:
    """The log. ``open()`` once (replay), ``start(loop)``, then ``append`` from the event loop and
    ``hold``/``release`` from any thread; ``close()`` at the end.
    """

    def __init__(
        self,
        directory: Path,
        key: bytes,
        max_bytes: int,
        fsync: bool,
        segment_bytes: int,
        metrics: GatewayMetrics,
    ) -> None:
        self._dir = directory
        self._aead = AESGCM(key)
        self._key_id = hashlib.sha256(b"tracegw-wal-key-id" + key).digest()[:8]
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._segment_bytes = segment_bytes
        self._m = metrics
        self._cond = threading.Condition()
        self._queue: list[_Append] = []
        self._holds: dict[int, int] = {}  # segment → outstanding holds
        self._sizes: dict[int, int] = {}  # segment → bytes (written and queued)
        self._bytes = 0
        self._current = 0  # the segment appends go to (0: none yet)
        self._current_opened = 0.0
        self._seq = 0
        self._files: dict[int, _OpenFile] = {}  # touched by the WAL thread only
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def directory(self) -> Path:
        return self._dir

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def segments(self) -> int:
        with self._cond:
            return len(self._sizes)

    # -- start: what is still in the log ---------------------------------------------------------

    def open(self) -> list[Record]:
        """Every record still in the log, in order. Each segment holding them keeps one hold until
        ``replayed()``: the caller takes its own holds while feeding them through, then calls it."""
        self._dir.mkdir(parents=True, exist_ok=True)
        records: list[Record] = []
        for path in sorted(self._dir.glob("*" + SUFFIX)):
            try:
                seg = int(path.name[: -len(SUFFIX)])
                data = path.read_bytes()
            except (ValueError, OSError) as exc:
                self._set_aside(path, "corrupt", str(exc))
                continue
            found, problem = self._decode_segment(seg, data)
            if problem == "wrong_key":
                self._set_aside(path, problem, "written under another key")
                continue
            if problem:
                self._m.wal_unreadable.labels(problem).inc()
                log.warning("wal: segment %d ends in a %s record; replaying the %d before it", seg, problem, len(found))
            records.extend(found)
            with self._cond:
                self._seq = max(self._seq, seg)
                self._sizes[seg] = len(data)
                self._holds[seg] = 1
                self._bytes += len(data)
        if records:
            self._m.wal_replayed_records.inc(len(records))
            log.info("wal: %d records in %d segments to replay (%d bytes)", len(records), len(self._sizes), self._bytes)
        self._update()
        return records

    def replayed(self) -> None:
        """The replayed records are in the pipeline now (holding what they need): drop open()'s holds."""
        with self._cond:
            segments = list(self._holds)
        self.release(segments)

    def _decode_segment(self, seg: int, data: bytes) -> tuple[list[Record], str]:
        if len(data) < _FILE_HEAD.size:
            return [], "torn"
        magic, version, key_id, prefix = _FILE_HEAD.unpack_from(data)
        if magic != MAGIC or version != VERSION:
            return [], "corrupt"
        if key_id != self._key_id:
            return [], "wrong_key"
        out: list[Record] = []
        aad = _SEG.pack(seg)
        off = _FILE_HEAD.size
        while off < len(data):
            if off + _REC.size > len(data):
                return out, "torn"
            length, index = _REC.unpack_from(data, off)
            start = off + _REC.size
            if start + length > len(data):
                return out, "torn"
            try:
                body = self._aead.decrypt(prefix + _NONCE_INDEX.pack(index), data[start : start + length], aad)
                kind, exp_len = _BODY_HEAD.unpack_from(body)
                experiment = body[_BODY_HEAD.size : _BODY_HEAD.size + exp_len].decode()
                payload = body[_BODY_HEAD.size + exp_len :]
                out.append(Record(seg, RecordKind(kind), experiment, payload))
            except (InvalidTag, ValueError, struct.error):
                return out, "corrupt"
            off = start + length
        return out, ""

    def _set_aside(self, path: Path, reason: str, why: str) -> None:
        target = self._dir / "quarantine"
        target.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):
            os.replace(path, target / path.name)
        self._m.wal_unreadable.labels(reason).inc()
        log.error("wal: set %s aside in %s (%s); its records were not replayed", path.name, target, why)

    # -- appending (event loop) ------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name="tracegw-wal", daemon=True)
        self._thread.start()

    def append(self, kind: RecordKind, payload: bytes, experiment: str = "") -> tuple[int, asyncio.Future[None]]:
        """Queue one record: its segment (held until ``release``) and a future that resolves once the
        record is on disk (``WalWriteError`` if the disk refused it). ``WalFull`` past the bound."""
        assert self._loop is not None, "start() first"
        exp = experiment.encode()
        size = RECORD_OVERHEAD + len(exp) + len(payload)
        now = time.monotonic()
        future: asyncio.Future[None] = self._loop.create_future()
        with self._cond:
            if self._bytes + size > self._max_bytes:
                self._m.wal_appends.labels("full").inc()
                raise WalFull(
                    f"the write-ahead log is full ({self._bytes} of {self._max_bytes} bytes, TRACEGW_WAL_MAX_BYTES)"
                )
            if (
                not self._current
                or self._sizes[self._current] + size > self._segment_bytes
                or now - self._current_opened >= SEGMENT_AGE_S
            ):
                self._rotate(now)
            seg = self._current
            self._sizes[seg] += size
            self._holds[seg] += 1
            self._bytes += size
            self._queue.append(_Append(seg, kind, exp, payload, future))
            self._cond.notify()
        return seg, future

    def _rotate(self, now: float) -> None:
        """With ``_cond`` held: start a new segment; the old one may go at once if nothing holds it."""
        old = self._current
        self._seq += 1
        self._current, self._current_opened = self._seq, now
        self._sizes[self._current] = _FILE_HEAD.size
        self._holds[self._current] = 0
        self._bytes += _FILE_HEAD.size
        if old and self._holds.get(old) == 0:
            self._forget(old)

    # -- holds (any thread) ----------------------------------------------------------------------

    def hold(self, segment: int, count: int = 1) -> None:
        with self._cond:
            self._holds[segment] += count

    def release(self, segments: list[int]) -> None:
        """Give back one hold on each of ``segments`` (a segment may repeat)."""
        with self._cond:
            self._release_locked(segments)

    def _release_locked(self, segments: list[int]) -> None:
        for seg in segments:
            left = self._holds[seg] - 1
            self._holds[seg] = left
            if left == 0 and seg != self._current:
                self._forget(seg)

    def hold_of(self, segments: list[int], parts: int = 1) -> Hold | None:
        """One hold on ``segments`` (already held by the caller) that ``parts`` parts must each give
        back with ``done()``; None when there are no segments."""
        if not segments:
            return None
        hold = Hold(self, segments)
        hold._refs = parts
        return hold

    def tick(self) -> None:
        """Close the current segment once it is old and nothing holds it (a quiet gateway's last
        records would otherwise stay until the next append, and be replayed after a restart)."""
        with self._cond:
            seg = self._current
            if seg and self._holds[seg] == 0 and time.monotonic() - self._current_opened >= SEGMENT_AGE_S:
                self._current = 0
                self._forget(seg)

    def _forget(self, seg: int) -> None:
        """With ``_cond`` held: nothing holds ``seg`` and nothing more goes to it: delete it."""
        del self._holds[seg]
        self._bytes -= self._sizes.pop(seg)
        # The WAL thread may still have it open (it closes it when it next writes): unlinking an
        # open file is fine on POSIX, and no record can be queued for a segment with no holds.
        try:
            (self._dir / f"{seg:016d}{SUFFIX}").unlink(missing_ok=True)
        except OSError as exc:
            log.warning("wal: could not delete segment %d (%s)", seg, exc.strerror or exc)
        self._m.wal_segments_released.inc()
        self._m.wal_bytes.set(self._bytes)
        self._m.wal_segments.set(len(self._sizes))

    # -- the WAL thread: group commit ------------------------------------------------------------

    def _run(self) -> None:
        _name_os_thread(b"tracegw-wal")
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    break
                group, self._queue = self._queue, []
            self._commit(group)
        for f in self._files.values():
            os.close(f.fd)
        self._files.clear()

    def _commit(self, group: list[_Append]) -> None:
        """Write a group (its records go to one segment, or two across a rotation: each segment's
        part is written and fsynced before the next segment's file is opened), then resolve it."""
        failed: dict[int, str] = {}
        fsyncs = 0
        try:
            run: list[_Append] = []
            for item in group:
                if run and item.segment != run[0].segment:
                    fsyncs += self._write_run(run, failed)
                    run = []
                run.append(item)
            if run:
                fsyncs += self._write_run(run, failed)
        except Exception as exc:  # a bug must refuse the group's RPCs, never leave them waiting
            log.exception("wal: group commit failed")
            for item in group:
                failed.setdefault(item.segment, type(exc).__name__)
        if fsyncs:
            self._m.wal_fsyncs.inc(fsyncs)
        self._m.wal_group_size.observe(len(group))
        ok = [i.future for i in group if i.segment not in failed]
        bad = [(i.future, failed[i.segment]) for i in group if i.segment in failed]
        self._m.wal_appends.labels("ok").inc(len(ok))
        if bad:
            self._m.wal_appends.labels("error").inc(len(bad))
            log.warning(
                "wal: %d records not written (%s); their RPCs are refused", len(bad), next(iter(failed.values()))
            )
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(_settle, ok, bad)
        self._update()

    def _write_run(self, run: list[_Append], failed: dict[int, str]) -> int:
        """Encrypt, write and fsync the records of one segment; returns the fsyncs made (0 or 1)."""
        seg = run[0].segment
        try:
            f = self._file(seg)
        except OSError as exc:
            failed[seg] = exc.strerror or type(exc).__name__
            return 0
        aad = _SEG.pack(seg)
        parts: list[bytes] = []
        for item in run:
            body = _BODY_HEAD.pack(item.kind, len(item.experiment)) + item.experiment + item.payload
            item.payload = b""  # the request's bytes go as soon as they are sealed (memory: large RPCs)
            index = f.records + len(parts) // 2
            sealed = self._aead.encrypt(f.prefix + _NONCE_INDEX.pack(index), body, aad)
            del body
            parts += (_REC.pack(len(sealed), index), sealed)
        size = sum(map(len, parts))
        f.records += len(run)  # even if the write fails: a nonce is never used twice, not even for a cut record
        try:
            _write_all(f.fd, parts)
            del parts
            if self._fsync:
                os.fsync(f.fd)
        except OSError as exc:
            failed[seg] = exc.strerror or type(exc).__name__
            self._undo(seg, f)
            return 0
        f.offset += size
        return 1 if self._fsync else 0

    def _file(self, seg: int) -> _OpenFile:
        f = self._files.get(seg)
        if f is not None:
            return f
        for old, of in list(self._files.items()):  # appends only go to the newest segment
            os.close(of.fd)
            del self._files[old]
        path = self._dir / f"{seg:016d}{SUFFIX}"
        prefix = os.urandom(8)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, _FILE_HEAD.pack(MAGIC, VERSION, self._key_id, prefix))
            if self._fsync:
                os.fsync(fd)
                dfd = os.open(self._dir, os.O_RDONLY)
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except OSError:
            os.close(fd)
            raise
        f = self._files[seg] = _OpenFile(fd, prefix, _FILE_HEAD.size)
        return f

    def _undo(self, seg: int, f: _OpenFile) -> None:
        """A failed write may have left part of a group behind: cut the file back to its last good end
        (or, if that fails too, stop writing to it: later records go to a new segment)."""
        try:
            os.ftruncate(f.fd, f.offset)
        except OSError:
            with self._cond:
                if self._current == seg:
                    self._rotate(time.monotonic())

    def close(self, timeout_s: float = 5.0) -> None:
        """Write what is queued, stop the WAL thread, and delete the current segment if nothing holds it."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
        with self._cond:  # a drained gateway leaves nothing to replay
            seg = self._current
            if seg and self._holds[seg] == 0:
                self._current = 0
                self._forget(seg)

    def _update(self) -> None:
        with self._cond:
            size, count = self._bytes, len(self._sizes)
        self._m.wal_bytes.set(size)
        self._m.wal_segments.set(count)


def _write_all(fd: int, parts: list[bytes]) -> None:
    """Write ``parts`` in order with as few syscalls as the OS allows (no joined copy of them)."""
    views = [memoryview(p) for p in parts]
    while views:
        written = os.writev(fd, views[:1024])  # IOV_MAX
        while views and written >= len(views[0]):
            written -= len(views[0])
            views.pop(0)
        if written:
            views[0] = views[0][written:]


def _name_os_thread(name: bytes) -> None:
    """Give this thread its name in the OS too (``top -H``, ``/proc/<pid>/task/*/comm``); Linux only."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(15, name[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


def _settle(ok: list[asyncio.Future[None]], bad: list[tuple[asyncio.Future[None], str]]) -> None:
    for future in ok:
        if not future.done():
            future.set_result(None)
    for future, why in bad:
        if not future.done():
            future.set_exception(WalWriteError(f"the write-ahead log could not be written ({why})"))


def make_wal(config: Config, metrics: GatewayMetrics) -> Wal | None:
    """The WAL the configuration asks for: None when ``TRACEGW_WAL=false`` or when there is no
    directory for it (no ``TRACEGW_WAL_DIR`` and no spool: a memory-only gateway)."""
    cfg = config.wal
    if not cfg.enabled:
        return None
    directory = cfg.directory or (str(Path(config.spool.directory) / "wal") if config.spool.directory else "")
    if not directory:
        return None
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    return Wal(path, load_or_create_key(cfg.key_file, path), cfg.max_bytes, cfg.fsync, cfg.segment_bytes, metrics)
