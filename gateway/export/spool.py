"""The disk spool: kept batches and events survive an MLflow outage and a gateway restart.

A segment is one write to MLflow (an OTLP span batch, or one feedback or bundle event). It is
written to ``<dir>/<seq>-<kind>.seg.tmp``, fsynced (policy ``always``; ``never`` leaves it to
the OS), renamed to ``.seg`` and only then counts as accepted for delivery. It is deleted once
MLflow acknowledged it, and replayed in order when the gateway starts. File layout::

    b"TGWS" | version:u8 | header_len:u32 | header (JSON) | payload_len:u64 | payload | crc32:u32

A file whose lengths or CRC do not add up (a torn or corrupt write) is moved to
``<dir>/quarantine/`` and counted; it never blocks the rest. Permanent failures go to
``<dir>/dead-letter/`` with a ``.reason.json`` beside them. The spool is bounded by bytes: a
segment that does not fit is not spooled (``write`` returns False and the caller keeps it in
memory, counted as ``full``); an OS error (disk full) is handled the same way.
"""

from __future__ import annotations

import json
import logging
import os
import struct
import threading
import time
import zlib
from pathlib import Path
from typing import Any

from gateway.export.segments import Kind, Segment
from gateway.metrics import GatewayMetrics

log = logging.getLogger(__name__)

MAGIC = b"TGWS"
VERSION = 1
_HEAD = struct.Struct(">4sBI")
_PLEN = struct.Struct(">Q")
_CRC = struct.Struct(">I")
SUFFIX = ".seg"


class TornSegment(Exception):
    """A segment file that cannot be trusted (truncated, bad magic, bad CRC)."""


def encode(seg: Segment) -> bytes:
    assert seg.payload is not None
    header = json.dumps(seg.header, separators=(",", ":")).encode()
    body = _HEAD.pack(MAGIC, VERSION, len(header)) + header + _PLEN.pack(len(seg.payload)) + seg.payload
    return body + _CRC.pack(zlib.crc32(body))


def decode(data: bytes) -> tuple[dict[str, Any], bytes]:
    """(header, payload) of a segment file's bytes; ``TornSegment`` if they do not add up."""
    if len(data) < _HEAD.size + _PLEN.size + _CRC.size:
        raise TornSegment("shorter than the fixed fields")
    magic, version, hlen = _HEAD.unpack_from(data)
    if magic != MAGIC or version != VERSION:
        raise TornSegment("bad magic or version")
    off = _HEAD.size + hlen
    if off + _PLEN.size > len(data):
        raise TornSegment("header runs past the end")
    (plen,) = _PLEN.unpack_from(data, off)
    end = off + _PLEN.size + plen
    if end + _CRC.size != len(data):
        raise TornSegment("length mismatch")
    (crc,) = _CRC.unpack_from(data, end)
    if zlib.crc32(data[:end]) != crc:
        raise TornSegment("checksum mismatch")
    try:
        header = json.loads(data[_HEAD.size : off])
    except ValueError:
        raise TornSegment("header is not JSON") from None
    return header, data[off + _PLEN.size : end]


class Spool:
    """Segments on disk. Thread-safe. ``directory=None`` disables it (memory only)."""

    def __init__(self, directory: str | None, max_bytes: int, fsync: bool, metrics: GatewayMetrics) -> None:
        self._dir = Path(directory) if directory else None
        self._max_bytes = max_bytes
        self._fsync = fsync
        self._m = metrics
        self._lock = threading.Lock()
        self._seq = 0
        self._bytes = 0
        self._count = 0

    @property
    def directory(self) -> Path | None:
        return self._dir

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def open(self) -> list[Segment]:
        """Scan the directory: the valid segments in order (payloads not loaded); torn ones quarantined."""
        if self._dir is None:
            return []
        self._dir.mkdir(parents=True, exist_ok=True)
        for tmp in self._dir.glob("*" + SUFFIX + ".tmp"):  # never renamed: not accepted, not counted
            tmp.unlink(missing_ok=True)
        found: list[Segment] = []
        for path in sorted(self._dir.glob("*" + SUFFIX)):
            try:
                data = path.read_bytes()
                header, _payload = decode(data)
                seq = int(path.name.split("-", 1)[0])
                kind = Kind(header.get("kind", "spans"))
            except (TornSegment, ValueError, OSError) as exc:
                self._quarantine(path, str(exc))
                continue
            found.append(Segment(seq, kind, header, None, path, len(data), replayed=True))
        with self._lock:
            self._seq = max([self._seq, *(s.seq for s in found)])
            self._bytes = sum(s.size for s in found)
            self._count = len(found)
        self._update()
        if found:
            log.info("spool: replaying %d segments (%d bytes)", len(found), self._bytes)
            self._m.spool_replayed.inc(len(found))
        return found

    def write(self, seg: Segment) -> bool:
        """Make ``seg`` durable; False when the spool is disabled, full or the disk refused it."""
        if self._dir is None:
            return False
        data = encode(seg)
        with self._lock:
            if self._bytes + len(data) > self._max_bytes:
                self._m.spool_writes.labels("full").inc()
                return False
            self._bytes += len(data)
            self._count += 1
        path = self._dir / f"{seg.seq:016d}-{seg.kind}{SUFFIX}"
        tmp = path.with_name(path.name + ".tmp")
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                if self._fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
            if self._fsync:
                self._fsync_dir()
        except OSError as exc:
            with self._lock:
                self._bytes -= len(data)
                self._count -= 1
            tmp.unlink(missing_ok=True)
            self._m.spool_writes.labels("error").inc()
            log.warning("spool write failed (%s); segment %d kept in memory only", exc.strerror or exc, seg.seq)
            return False
        seg.path, seg.size = path, len(data)
        self._m.spool_writes.labels("ok").inc()
        self._update()
        return True

    def load(self, seg: Segment) -> bytes:
        """The payload of a durable segment (read from disk); ``TornSegment`` if it went bad."""
        if seg.payload is not None:
            return seg.payload
        assert seg.path is not None
        _header, payload = decode(seg.path.read_bytes())
        return payload

    def delete(self, seg: Segment) -> None:
        """MLflow acknowledged ``seg``: remove it."""
        if seg.path is None:
            return
        seg.path.unlink(missing_ok=True)
        with self._lock:
            self._bytes -= seg.size
            self._count -= 1
        seg.path = None
        self._update()

    def dead_letter(self, seg: Segment, reason: str, payload: bytes) -> Path | None:
        """Keep a permanently failed segment aside with its reason."""
        target_dir = (self._dir / "dead-letter") if self._dir else None
        stored: Path | None = None
        if target_dir is not None:
            try:
                target_dir.mkdir(parents=True, exist_ok=True)
                stored = target_dir / f"{seg.seq:016d}-{seg.kind}{SUFFIX}"
                stored.write_bytes(encode(Segment(seg.seq, seg.kind, seg.header, payload)))
                (target_dir / (stored.name + ".reason.json")).write_text(
                    json.dumps(
                        {
                            "reason": reason,
                            "kind": seg.kind,
                            "seq": seg.seq,
                            "span_count": seg.span_count,
                            "attempts": seg.attempts,
                            "dead_lettered_at": time.time(),
                        }
                    )
                )
            except OSError as exc:
                log.warning("dead-letter write failed for segment %d: %s", seg.seq, exc.strerror or exc)
                stored = None
        self.delete(seg)
        return stored

    def _quarantine(self, path: Path, why: str) -> None:
        assert self._dir is not None
        target = self._dir / "quarantine"
        target.mkdir(exist_ok=True)
        try:
            os.replace(path, target / path.name)
        except OSError:
            path.unlink(missing_ok=True)
        reason = "torn" if "length" in why or "shorter" in why or "past the end" in why else "corrupt"
        self._m.spool_quarantined.labels(reason).inc()
        log.warning("spool: quarantined %s (%s)", path.name, why)

    def _fsync_dir(self) -> None:
        assert self._dir is not None
        fd = os.open(self._dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def _update(self) -> None:
        self._m.spool_segments.set(self._count)
        self._m.spool_bytes.set(self._bytes)
