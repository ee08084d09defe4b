"""Proto → model for feedback and bundle events: validate them and convert them to
``gateway.model.FeedbackRecord`` / ``BundleRecord``.

Like spans, a bad event is not fatal to its request: it becomes a ``Rejection`` naming the
field and the reason, and the rest are accepted (partial success).
"""

from __future__ import annotations

import math
import re
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


# Bundle events are release history: every field is checked, by kind (DESIGN §12, §13).
# Names and versions also go into MLflow searches, so they keep to a plain charset.
BUNDLE_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:/-]{0,127}")
MAX_BUNDLE_ID_CHARS = 128
MAX_BUNDLE_TEXT_CHARS = 1024
MAX_BUNDLE_NOTE_CHARS = 4096
MAX_EVAL_METRICS = 100
MAX_METRIC_NAME_CHARS = 250
RUN_ID = re.compile(r"[0-9a-f]{32}")
STAGES = {1: "EVALUATION_STAGE_OFFLINE", 2: "EVALUATION_STAGE_SHADOW", 3: "EVALUATION_STAGE_CANARY"}
VERDICTS = {1: "EVALUATION_VERDICT_PASS", 2: "EVALUATION_VERDICT_FAIL"}
AREAS = {1: "SIGN_OFF_AREA_PROMPT", 2: "SIGN_OFF_AREA_GUARDRAIL", 3: "SIGN_OFF_AREA_RELEASE"}
COMPONENTS = (
    "intent_classifier_version",
    "reranker_version",
    "prompt_version",
    "bedrock_model_id",
    "retriever_policy_version",
    "guardrail_ruleset_version",
)
_KEY_REASON = "must be 1-128 characters of letters, digits and . _ @ + : / - (starting with a letter or digit)"


def _id_problem(value: str, name: str, where: str, required: bool = True) -> tuple[str, str] | None:
    if not value:
        return (f"{where}.{name}", "must not be empty") if required else None
    if len(value) > MAX_BUNDLE_ID_CHARS:
        return f"{where}.{name}", f"must be at most {MAX_BUNDLE_ID_CHARS} characters"
    return None


def _key_problem(value: str, name: str, where: str, required: bool = True) -> tuple[str, str] | None:
    if not value:
        return (f"{where}.{name}", "must not be empty") if required else None
    return None if BUNDLE_KEY.fullmatch(value) else (f"{where}.{name}", _KEY_REASON)


def _bundle_problem(e: Any, where: str, now_ns: int) -> tuple[str, str] | None:
    """(field, reason) for the first thing wrong with one bundle event, or None."""
    problem = (
        _id_problem(e.event_id, "event_id", where)
        or _key_problem(e.bundle_name, "bundle_name", where)
        or _key_problem(e.bundle_version, "bundle_version", where)
        or _id_problem(e.actor_id, "actor_id", where)
    )
    if problem:
        return problem
    if len(e.note) > MAX_BUNDLE_NOTE_CHARS:
        return f"{where}.note", f"must be at most {MAX_BUNDLE_NOTE_CHARS} characters"
    if e.HasField("time"):
        at = timestamp_ns(e.time)
        if at is None:
            return f"{where}.time", TIME_RANGE_REASON
        why = feedback_rules.time_problem(at / 1e9, now_ns / 1e9)
        if why:
            return f"{where}.time", why
    kind = e.WhichOneof("kind")
    if kind is None:
        return f"{where}.kind", "one of registered, evaluated, signed_off, promoted, rolled_back must be set"
    here = f"{where}.{kind}"
    if kind == "registered":
        for name in COMPONENTS:
            value = getattr(e.registered.components, name)
            problem = _key_problem(value, name, f"{here}.components")
            if problem:
                return problem
    elif kind == "evaluated":
        ev = e.evaluated
        if ev.stage not in STAGES:
            return f"{here}.stage", "must be OFFLINE, SHADOW or CANARY"
        if ev.verdict not in VERDICTS:
            return f"{here}.verdict", "must be PASS or FAIL"
        if len(ev.metrics) > MAX_EVAL_METRICS:
            return f"{here}.metrics", f"must hold at most {MAX_EVAL_METRICS} metrics"
        for name, value in ev.metrics.items():
            if not name or len(name) > MAX_METRIC_NAME_CHARS or not BUNDLE_KEY.fullmatch(name[:128]):
                return f"{here}.metrics", f"names must be 1-{MAX_METRIC_NAME_CHARS} plain characters"
            if not math.isfinite(value):
                return f"{here}.metrics", "values must be finite numbers"
        share = ev.traffic_percent
        if not math.isfinite(share) or not 0 <= share <= 100:
            return f"{here}.traffic_percent", "must be between 0 and 100"
        if ev.stage == 3 and share <= 0:
            return f"{here}.traffic_percent", "a canary evaluation must say its share of traffic (0 < % <= 100)"
        if ev.stage == 1 and share != 0:
            return f"{here}.traffic_percent", "an offline evaluation serves no traffic (must be 0)"
        if len(ev.dataset_version) > MAX_BUNDLE_ID_CHARS:
            return f"{here}.dataset_version", f"must be at most {MAX_BUNDLE_ID_CHARS} characters"
        if ev.run_id and not RUN_ID.fullmatch(ev.run_id):
            return f"{here}.run_id", "must be an MLflow run id (32 lowercase hex characters)"
    elif kind == "signed_off":
        if e.signed_off.area not in AREAS:
            return f"{here}.area", "must be PROMPT, GUARDRAIL or RELEASE"
        problem = _id_problem(e.signed_off.approver_id, "approver_id", here)
        if problem:
            return problem
    elif kind == "promoted":
        problem = _key_problem(e.promoted.previous_version, "previous_version", here, required=False)
        if problem:
            return problem
    elif kind == "rolled_back":
        problem = _key_problem(e.rolled_back.to_version, "to_version", here)
        if problem:
            return problem
        if len(e.rolled_back.reason) > MAX_BUNDLE_TEXT_CHARS:
            return f"{here}.reason", f"must be at most {MAX_BUNDLE_TEXT_CHARS} characters"
    return None


def decode_bundle_events(events: Any) -> tuple[list[BundleRecord], list[Rejection]]:
    """Validate bundle events fully (enums, ranges, required fields by kind)."""
    from google.protobuf.json_format import MessageToDict

    records: list[BundleRecord] = []
    rejections: list[Rejection] = []
    now_ns = time.time_ns()
    for i, e in enumerate(events):
        where = f"events[{i}]"
        problem = _bundle_problem(e, where, now_ns)
        if problem is not None:
            rejections.append(Rejection(i, *problem))
            continue
        kind = e.WhichOneof("kind")
        try:
            details = MessageToDict(getattr(e, kind), preserving_proto_field_name=True)
        except ValueError:  # defensive: every field was checked above
            rejections.append(Rejection(i, f"{where}.{kind}", "holds a value protobuf cannot render"))
            continue
        records.append(
            BundleRecord(
                event_id=e.event_id,
                bundle_name=e.bundle_name,
                bundle_version=e.bundle_version,
                kind=kind,
                time_ns=(timestamp_ns(e.time) or now_ns) if e.HasField("time") else now_ns,
                actor_id=e.actor_id,
                note=e.note,
                details=details,
            )
        )
    return records, rejections
