"""Proto → model for feedback and bundle events: validate them and convert them to
``gateway.model.FeedbackRecord`` / ``BundleRecord``.

Like spans, a bad event is not fatal to its request: it becomes a ``Rejection`` naming the
field and the reason, and the rest are accepted (partial success).
"""

from __future__ import annotations

import time
from typing import Any

from clients import feedback_rules
from gateway.model import BundleRecord, FeedbackRecord, FeedbackValue
from gateway.receive.decode_spans import Rejection

_FEEDBACK = {1: FeedbackValue.THUMBS_UP, 2: FeedbackValue.THUMBS_DOWN}
_HEX = frozenset("0123456789abcdef")
# One definition with the applications in front of the gateway (clients/feedback_rules.py).
FEEDBACK_REASON_CODES = feedback_rules.REASON_CODES
MAX_FEEDBACK_ID_CHARS = feedback_rules.MAX_ID_CHARS
MAX_FEEDBACK_COMMENT_CHARS = feedback_rules.MAX_COMMENT_CHARS
MAX_FEEDBACK_CONTEXT_CHARS = feedback_rules.MAX_CONTEXT_CHARS


# google.protobuf.Timestamp's valid range: 0001-01-01 to 9999-12-31, nanos in [0, 1e9).
_MIN_SECONDS, _MAX_SECONDS = -62_135_596_800, 253_402_300_799
TIME_RANGE_REASON = "must be a valid Timestamp (years 1 to 9999, nanos 0 to 999,999,999)"


def timestamp_ns(ts: Any) -> int | None:
    """A ``google.protobuf.Timestamp`` in nanoseconds, or None when it is out of its valid range
    (protobuf's own ``ToNanoseconds`` raises ValueError then)."""
    seconds, nanos = ts.seconds, ts.nanos
    if not (_MIN_SECONDS <= seconds <= _MAX_SECONDS and 0 <= nanos < 1_000_000_000):
        return None
    return int(seconds) * 1_000_000_000 + int(nanos)


def _feedback_problem(e: Any, where: str, trace_id: str, now_ns: int) -> tuple[str, str] | None:
    """(field, reason) for the first thing wrong with one feedback event, or None."""
    if not e.event_id:
        return f"{where}.event_id", "must not be empty"
    if len(e.event_id) > MAX_FEEDBACK_ID_CHARS:
        return f"{where}.event_id", f"must be at most {MAX_FEEDBACK_ID_CHARS} characters"
    if len(trace_id) != 32 or not set(trace_id) <= _HEX or trace_id == feedback_rules.ZERO_TRACE_ID:
        return f"{where}.trace_id", "must be 32 hex characters, not all zero"
    if e.feedback not in _FEEDBACK:
        return f"{where}.feedback", "must be THUMBS_UP or THUMBS_DOWN"
    if not e.response_id:
        return f"{where}.response_id", "must not be empty (the response the feedback is about)"
    if len(e.response_id) > MAX_FEEDBACK_ID_CHARS:
        return f"{where}.response_id", f"must be at most {MAX_FEEDBACK_ID_CHARS} characters"
    problem = feedback_rules.reason_code_problem(e.reason_code)
    if problem:
        return f"{where}.reason_code", problem
    if len(e.comment) > MAX_FEEDBACK_COMMENT_CHARS:
        return f"{where}.comment", f"must be at most {MAX_FEEDBACK_COMMENT_CHARS} characters"
    for name in ("session_id", "prompt_version", "release_bundle"):
        if len(getattr(e, name)) > MAX_FEEDBACK_CONTEXT_CHARS:
            return f"{where}.{name}", f"must be at most {MAX_FEEDBACK_CONTEXT_CHARS} characters"
    if e.HasField("time"):
        at = timestamp_ns(e.time)
        if at is None:
            return f"{where}.time", TIME_RANGE_REASON
        problem = feedback_rules.time_problem(at / 1e9, now_ns / 1e9)
        if problem:
            return f"{where}.time", problem
    return None


def decode_feedback(events: Any) -> tuple[list[FeedbackRecord], list[Rejection]]:
    """Validate feedback events (spec §10). An event without ``time`` is stamped with its arrival."""
    records: list[FeedbackRecord] = []
    rejections: list[Rejection] = []
    now_ns = time.time_ns()
    for i, e in enumerate(events):
        where = f"events[{i}]"
        trace_id = e.trace_id.lower()
        problem = _feedback_problem(e, where, trace_id, now_ns)
        if problem is not None:
            rejections.append(Rejection(i, *problem))
            continue
        records.append(
            FeedbackRecord(
                event_id=e.event_id,
                response_id=e.response_id,
                trace_id=trace_id,
                value=_FEEDBACK[e.feedback],
                time_ns=(timestamp_ns(e.time) or 0) if e.HasField("time") else now_ns,
                reason_code=e.reason_code,
                comment=e.comment,
                session_id=e.session_id,
                prompt_version=e.prompt_version,
                release_bundle=e.release_bundle,
            )
        )
    return records, rejections


def decode_bundle_events(events: Any) -> tuple[list[BundleRecord], list[Rejection]]:
    from google.protobuf.json_format import MessageToDict

    records: list[BundleRecord] = []
    rejections: list[Rejection] = []
    for i, e in enumerate(events):
        where = f"events[{i}]"
        kind = e.WhichOneof("kind")
        if not e.event_id:
            rejections.append(Rejection(i, f"{where}.event_id", "must not be empty"))
        elif not e.bundle_name or not e.bundle_version:
            rejections.append(Rejection(i, f"{where}.bundle_name", "bundle_name and bundle_version are required"))
        elif kind is None:
            rejections.append(
                Rejection(
                    i, f"{where}.kind", "one of registered, evaluated, signed_off, promoted, rolled_back must be set"
                )
            )
        elif e.HasField("time") and timestamp_ns(e.time) is None:
            rejections.append(Rejection(i, f"{where}.time", TIME_RANGE_REASON))
        else:
            try:
                details = MessageToDict(getattr(e, kind), preserving_proto_field_name=True)
            except ValueError:  # e.g. a Timestamp inside the details out of its range
                rejections.append(Rejection(i, f"{where}.{kind}", "holds a value protobuf cannot render"))
                continue
            records.append(
                BundleRecord(
                    event_id=e.event_id,
                    bundle_name=e.bundle_name,
                    bundle_version=e.bundle_version,
                    kind=kind,
                    time_ns=(timestamp_ns(e.time) or 0) if e.HasField("time") else 0,
                    actor_id=e.actor_id,
                    note=e.note,
                    details=details,
                )
            )
    return records, rejections
