"""Feedback validation (spec §10) and the pure parts of the daily aggregate."""

from __future__ import annotations

import time
from datetime import date
from types import SimpleNamespace

from clients.pb import feedback_pb2
from gateway.model import FeedbackRecord, FeedbackValue
from gateway.process.feedback_join import stream_event
from gateway.receive import decode_events
from orchestrator.jobs import feedback_daily

TID = "ab" * 16


def event(**kw: object) -> feedback_pb2.FeedbackEvent:
    fields: dict[str, object] = {
        "event_id": "e",
        "trace_id": TID,
        "feedback": 2,
        "response_id": "resp_1",
        "reason_code": "wrong_recommendation",
    }
    fields.update(kw)
    return feedback_pb2.FeedbackEvent(**fields)  # type: ignore[arg-type]


def test_each_problem_is_rejected_naming_its_field() -> None:
    future = feedback_pb2.FeedbackEvent(event_id="x")
    future.time.FromNanoseconds(time.time_ns() + 3 * 86_400 * 10**9)
    bad = [
        event(event_id=""),
        event(trace_id="0" * 32),
        event(feedback=0),
        event(response_id=""),
        event(reason_code="because"),
        event(comment="x" * 3000),
        event(time=future.time),
    ]
    records, rejections = decode_events.decode_feedback([event(), *bad])
    assert len(records) == 1
    assert [r.field for r in rejections] == [
        f"events[{i}].{f}"
        for i, f in enumerate(
            ("event_id", "trace_id", "feedback", "response_id", "reason_code", "comment", "time"), start=1
        )
    ]
    reason = rejections[4].reason
    assert "'because'" in reason and "wrong_recommendation" in reason  # says what is allowed


def test_reason_code_may_be_empty_and_time_defaults_to_arrival() -> None:
    before = time.time_ns()
    [record], rejections = decode_events.decode_feedback([event(reason_code="", feedback=1)])
    assert not rejections
    assert record.value is FeedbackValue.THUMBS_UP and record.time_ns >= before


def test_stream_event_falls_back_to_the_feedback_fields_and_keys_by_session() -> None:
    record = FeedbackRecord(
        "e1",
        "resp_1",
        TID,
        FeedbackValue.THUMBS_DOWN,
        1_764_115_200_000_000_000,
        "wrong_answer",
        "<EMAIL>",
        "",
        "faq-2.0",
        "2026.11.20-rc1",
    )
    key, data = stream_event(record, "orphan", None, "prod", "ap-northeast-1")
    assert key == TID  # no session: the trace id keeps the order
    import json

    ev = json.loads(data)
    assert ev["timestamp"] == "2025-11-26T00:00:00.000Z"
    assert (ev["prompt_version"], ev["release_bundle"], ev["intent"], ev["join"]) == (
        "faq-2.0",
        "2026.11.20-rc1",
        "",
        "orphan",
    )


def _trace(tid: str, tags: dict[str, str], *assessments: object) -> SimpleNamespace:
    return SimpleNamespace(info=SimpleNamespace(trace_id=tid, tags=tags, assessments=list(assessments)))


def _fb(value: bool, when_ms: int, event_id: str) -> SimpleNamespace:
    return SimpleNamespace(
        name="user_feedback",
        feedback=SimpleNamespace(value=value),
        create_time_ms=when_ms,
        metadata={"feedback_event_id": event_id},
        assessment_id="a-" + event_id,
    )


def test_daily_table_groups_by_the_four_pivots_within_the_day() -> None:
    start, end = feedback_daily.day_bounds_ms(date(2026, 11, 26))
    tags = {"intent": "faq", "prompt_version": "faq-2.0", "release_bundle": "b1", "bedrock_model_id": "m:0"}
    traces = [
        _trace("tr-1", tags, _fb(False, start + 5, "e1"), _fb(True, start - 1, "e0")),  # e0: the day before
        _trace("tr-2", tags, _fb(True, end - 1, "e2")),
        _trace("tr-2", tags, _fb(True, end - 1, "e2")),  # found twice (both tag searches): counted once
        _trace("tr-3", {**tags, "intent": "recommendation"}, _fb(False, start, "e3")),
    ]
    rows = feedback_daily.table(feedback_daily.facts_from_traces(traces, start, end))
    assert [(r["intent"], r["thumbs_up"], r["thumbs_down"], r["thumbs_down_rate"]) for r in rows] == [
        ("faq", 1, 1, 0.5),
        ("recommendation", 0, 1, 1.0),
    ]
    m = feedback_daily.metrics(rows)
    assert m["feedback_count"] == 3 and m["thumbs_down_rate"] == 2 / 3
    assert m["intent/faq/thumbs_down_rate"] == 0.5
    assert m["bedrock_model_id/m_0/feedback_count"] == 3  # ':' is not allowed in a metric key
    assert feedback_daily.to_csv(rows).splitlines()[0] == (
        "intent,prompt_version,release_bundle,bedrock_model_id,thumbs_up,thumbs_down,feedback,thumbs_down_rate"
    )
