"""Segments: the unit of delivery (one MLflow write), and the payload codecs of each kind.

A segment is a span batch (an OTLP ``ExportTraceServiceRequest``), one feedback event, one
bundle event (JSON), or the trace links of a written span batch (JSON rows, ``links.py``).
``spool.py`` keeps segments on disk; ``delivery.py`` moves them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.model import BundleRecord, FeedbackRecord, FeedbackValue

if TYPE_CHECKING:
    from gateway.export.wal import Hold


class Kind(StrEnum):
    """What a segment carries; also the ``kind`` label of the delivery metrics."""

    SPANS = "spans"
    FEEDBACK = "feedback"
    BUNDLE = "bundle"
    LINKS = "links"


@dataclass(slots=True)
class Segment:
    """One unit of delivery. ``payload`` is None while it rests on disk (replayed at start)."""

    seq: int
    kind: Kind
    header: dict[str, Any]
    payload: bytes | None
    path: Path | None = None
    size: int = 0
    replayed: bool = False  # read back from the spool at start
    memory_only: bool = False  # not in the spool (disabled, full or refused): counts against the memory bound
    awaiting_trace: bool = False  # feedback whose trace MLflow does not have yet
    aside: bool = False  # a span batch past TRACEGW_SPAN_TURN_MAX_ATTEMPTS: retried without holding the turn
    settled: set[str] = field(default_factory=set)  # links segment: "<trace id>:<kind>" done, across retries
    hold: Hold | None = None  # memory only: its WAL records, given back once it is delivered or dropped

    @property
    def durable(self) -> bool:
        return self.path is not None

    @property
    def span_count(self) -> int:
        return int(self.header.get("span_count", 0))

    @property
    def attempts(self) -> int:
        return int(self.header.get("attempts", 0))

    @property
    def standins(self) -> list[str]:
        """Trace ids of the stand-in roots this span batch carries (rootless traces)."""
        return list(self.header.get("standins", ()))

    @property
    def late(self) -> list[str]:
        """Trace ids of the late spans this span batch carries."""
        return list(self.header.get("late", ()))


def feedback_to_json(record: FeedbackRecord) -> bytes:
    d = asdict(record)
    d["value"] = record.value.value
    return json.dumps(d).encode()


def feedback_from_json(payload: bytes) -> FeedbackRecord:
    return feedback_from_dict(json.loads(payload))


def feedback_from_dict(d: dict[str, Any]) -> FeedbackRecord:
    return FeedbackRecord(**{**d, "value": FeedbackValue(d["value"])})


def bundle_to_json(record: BundleRecord) -> bytes:
    return json.dumps(asdict(record)).encode()


def bundle_from_json(payload: bytes) -> BundleRecord:
    return BundleRecord(**json.loads(payload))
