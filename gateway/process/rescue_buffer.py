"""The rescue buffer: sampled-out traces kept (already redacted, in memory only) for a window,
so that feedback on a trace that sampling dropped can still bring it into MLflow.

Bounded by age (``rescue_window_s``) and bytes (oldest first); every trace that leaves
unpromoted is counted with its reason (``age``, ``bytes``, ``memory``, or ``unserializable``
for a trace holding a value that cannot be serialized, which no decoder produces). Nothing here
is written to disk. Not thread-safe: the gateway uses it from its event loop.

Held traces are not kept as Python objects: a decoded span costs about 1.3 KB of object
headers, dicts and strings, and every one of those objects is one more for the garbage
collector to walk on each full collection. Each trace is serialized with ``marshal`` instead
(about 220 bytes per span, ~1 µs per span), and once ``GROUP_BYTES`` of them have gathered they
are compressed together with Zstandard level 1 (about 30 bytes per span for MangaAssist traces;
zlib level 1, used before, took 5.5 times as long and wrote 1.5 times the bytes: ~0.8 µs per
span against ~0.14, which was 2 to 3% of the gateway's CPU at full load). The byte bound
counts exactly those bytes plus a measured overhead per object, so it is the memory really held
(``tests/gateway/test_rescue_buffer.py`` checks it against ``tracemalloc``). Promoting a trace from
a compressed group decompresses that group (well under a millisecond); feedback is rare next to
spans, so that cost is paid where it is cheap.
"""

from __future__ import annotations

import marshal
import pickle
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import zstandard

from gateway.metrics import Children, GatewayMetrics
from gateway.model import SpanEvent, SpanRecord, SpanStatus, TraceRecord

GROUP_BYTES = 128 * 1024
"""Serialized traces gathered before they are compressed together (a compressor call has a fixed
cost and compresses small inputs poorly; one group decompresses in well under a millisecond)."""
COMPRESSION_LEVEL = 1
BLOB_OVERHEAD_BYTES = 48
"""A bytes object's header and allocator rounding."""
ENTRY_OVERHEAD_BYTES = 200
"""Per held trace: its entry object, its slot in the index, the trace-id key, the timestamp
(measured with tracemalloc)."""

_STATUSES = (SpanStatus.UNSET, SpanStatus.OK, SpanStatus.ERROR)
_STATUS_INDEX = {status: i for i, status in enumerate(_STATUSES)}
_MARSHAL, _PICKLE = b"m", b"p"
_MARSHAL_VERSION = 2
"""Without the back-references of versions 3 and 4: every span field is referenced twice while a
trace is packed (its record and the packed tuple), so version 4 looked each one up in a table.
Version 2 packs ~13% faster for 4% more bytes once compressed."""


def pack_trace(trace: TraceRecord) -> bytes:
    """``trace`` as compact bytes (``unpack_trace`` restores an equal ``TraceRecord``).

    Span values are plain Python values, which ``marshal`` writes fast and small; anything it
    cannot write (a value some future stage puts there) falls back to ``pickle``.
    """
    spans = [
        (
            s.span_id,
            s.parent_span_id,
            s.name,
            s.span_type,
            s.start_time_ns,
            s.end_time_ns,
            _STATUS_INDEX[s.status],
            s.status_message,
            s.attributes,
            [(e.name, e.time_ns, e.attributes) for e in s.events] if s.events else (),
            s.inputs,
            s.outputs,
            s.trace_tags,
        )
        for s in trace.spans
    ]
    state = (
        trace.trace_id,
        trace.experiment_name,
        trace.tags,
        trace.complete,
        trace.reasons,
        trace.late,
        trace.first_seen,
        trace.approx_bytes,
        spans,
    )
    try:
        return _MARSHAL + marshal.dumps(state, _MARSHAL_VERSION)
    except ValueError:
        return _PICKLE + pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)


def unpack_trace(blob: bytes) -> TraceRecord:
    state = marshal.loads(blob[1:]) if blob[:1] == _MARSHAL else pickle.loads(blob[1:])
    trace_id, experiment, tags, complete, reasons, late, first_seen, approx, spans = state
    records = [
        SpanRecord(
            trace_id,
            span_id,
            parent,
            name,
            span_type,
            start,
            end,
            _STATUSES[status],
            message,
            attributes,
            [SpanEvent(*e) for e in events] if events else (),
            inputs,
            outputs,
            trace_tags,
        )
        for (
            span_id,
            parent,
            name,
            span_type,
            start,
            end,
            status,
            message,
            attributes,
            events,
            inputs,
            outputs,
            trace_tags,
        ) in spans
    ]
    return TraceRecord(trace_id, experiment, records, tags, complete, list(reasons), late, first_seen, approx)


@dataclass(slots=True)
class _Group:
    """Serialized traces added one after another: a list while open, one compressed blob once sealed."""

    blobs: list[bytes | None] | None
    packed: bytes = b""
    live: int = 0
    open_bytes: int = 0


@dataclass(slots=True)
class _Entry:
    group: _Group
    slot: int
    added_at: float
    late: list[bytes] | None = None
    """Late spans of the trace, joined when it is promoted."""


def _blob_bytes(blob: bytes) -> int:
    return len(blob) + BLOB_OVERHEAD_BYTES


class RescueBuffer:
    def __init__(
        self, window_s: float, max_bytes: int, metrics: GatewayMetrics, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window_s = window_s
        self._max_bytes = max_bytes
        self._clock = clock
        self._held: OrderedDict[str, _Entry] = OrderedDict()
        self._open: _Group | None = None
        self._bytes = 0
        # One of each per buffer: zstandard's (de)compressor objects are not for concurrent use, and
        # the buffer is only ever used from one thread.
        self._compress = zstandard.ZstdCompressor(level=COMPRESSION_LEVEL).compress
        self._decompress = zstandard.ZstdDecompressor().decompress
        self._evicted = Children(metrics.rescue_evicted)
        # The gauges are read when scraped, not set on every trace added.
        metrics.rescue_traces.set_function(self.__len__)
        metrics.rescue_bytes.set_function(lambda: self._bytes)

    def __contains__(self, trace_id: str) -> bool:
        return trace_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    @property
    def held_bytes(self) -> int:
        """The memory the held traces take (serialized and compressed bytes plus overheads)."""
        return self._bytes

    def add(self, trace: TraceRecord) -> None:
        """Hold a sampled-out trace (late spans of a held trace join it)."""
        try:
            blob = pack_trace(trace)
        except (TypeError, ValueError, AttributeError, pickle.PicklingError):
            # A value neither marshal nor pickle can write: not holdable, but never a reason to
            # fail the stage that is handing on the kept traces of the same tick.
            self._evicted("unserializable").inc()
            return
        size = _blob_bytes(blob)
        entry = self._held.get(trace.trace_id)
        if entry is not None:
            if entry.late is None:
                entry.late = []
            entry.late.append(blob)
            self._bytes += size
        else:
            group = self._open
            if group is None:
                group = self._open = _Group([])
            assert group.blobs is not None
            self._held[trace.trace_id] = _Entry(group, len(group.blobs), self._clock())
            group.blobs.append(blob)
            group.live += 1
            group.open_bytes += size
            self._bytes += size + ENTRY_OVERHEAD_BYTES
            if group.open_bytes >= GROUP_BYTES:
                self._seal(group)
        while self._bytes > self._max_bytes and self._held:
            self._drop_oldest("bytes")

    def promote(self, trace_id: str) -> TraceRecord | None:
        """Take the trace out to be stored after all; None if it is not (or no longer) held."""
        entry = self._held.pop(trace_id, None)
        if entry is None:
            return None
        blob = self._release(entry, want=True)
        assert blob is not None
        trace = unpack_trace(blob)
        for late in entry.late or ():
            trace.spans.extend(unpack_trace(late).spans)
        trace.approx_bytes = 0  # recomputed for the joined spans when needed
        return trace

    def clear(self, reason: str) -> None:
        """Let everything go (memory pressure), counted with ``reason``."""
        while self._held:
            self._drop_oldest(reason)

    def expire(self) -> None:
        """Drop traces older than the window (call periodically)."""
        cutoff = self._clock() - self._window_s
        while self._held:
            oldest = next(iter(self._held.values()))
            if oldest.added_at > cutoff:
                break
            self._drop_oldest("age")

    def _seal(self, group: _Group) -> None:
        assert group.blobs is not None
        # Copied: zstandard hands back a bytes object that still owns its worst-case output buffer
        # (the input's size and more), ~6 times what the compressed data needs.
        group.packed = bytes(memoryview(self._compress(marshal.dumps(group.blobs))))
        group.blobs = None
        self._bytes += _blob_bytes(group.packed) - group.open_bytes
        group.open_bytes = 0
        self._open = None

    def _release(self, entry: _Entry, want: bool) -> bytes | None:
        """Forget ``entry``'s bytes; return its serialized trace when ``want``."""
        group = entry.group
        blob: bytes | None = None
        if group.blobs is not None:  # still open
            blob = group.blobs[entry.slot]
            group.blobs[entry.slot] = None
            assert blob is not None
            size = _blob_bytes(blob)
            group.open_bytes -= size
            self._bytes -= size
        elif want:
            blob = marshal.loads(self._decompress(group.packed))[entry.slot]
        group.live -= 1
        if group.live == 0:
            if group.blobs is None:
                self._bytes -= _blob_bytes(group.packed)
                group.packed = b""
            elif group is self._open:
                self._open = None  # start afresh rather than grow a list of empty slots
        self._bytes -= ENTRY_OVERHEAD_BYTES
        for late in entry.late or ():
            self._bytes -= _blob_bytes(late)
        return blob

    def _drop_oldest(self, reason: str) -> None:
        _, entry = self._held.popitem(last=False)
        self._release(entry, want=False)
        self._evicted(reason).inc()
