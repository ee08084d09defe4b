"""Feedback and bundle events reach the gateway with every field."""

from __future__ import annotations

import pytest

from clients import (
    BundleComponents,
    BundleEvaluated,
    BundleEvent,
    BundleKind,
    BundlePromoted,
    BundleRegistered,
    BundleRolledBack,
    BundleSignedOff,
    EvaluationStage,
    Feedback,
    FeedbackEvent,
    SignOffArea,
)
from clients.pb import bundles_pb2, feedback_pb2
from tests.clients.conftest import MakeTracer
from tests.clients.fake_gateway import FakeGateway


def test_feedback_arrives_with_its_fields(gateway: FakeGateway, make_tracer: MakeTracer) -> None:
    tracer = make_tracer(target=gateway.target)
    event = FeedbackEvent(
        response_id="resp_1",
        trace_id="ab" * 16,
        feedback="thumbs_down",  # type: ignore[arg-type]
        reason_code="wrong_recommendation",
        comment="not what I asked",
        session_id="s1",
        prompt_version="p3",
        release_bundle="2026.03.24-rc2",
        time_unix_nano=1_700_000_000_123_456_789,
    )
    assert event.feedback is Feedback.THUMBS_DOWN
    assert tracer.record_feedback(event)
    assert tracer.flush(5.0)
    (request,) = gateway.feedback_requests
    (sent,) = request.events
    assert sent.event_id == event.event_id and len(sent.event_id) == 32
    assert (sent.response_id, sent.trace_id) == ("resp_1", "ab" * 16)
    assert sent.feedback == feedback_pb2.FEEDBACK_VALUE_THUMBS_DOWN
    assert (sent.reason_code, sent.comment, sent.session_id) == ("wrong_recommendation", "not what I asked", "s1")
    assert (sent.prompt_version, sent.release_bundle) == ("p3", "2026.03.24-rc2")
    assert (sent.time.seconds, sent.time.nanos) == (1_700_000_000, 123_456_789)
    stats = tracer.stats()
    assert (stats.events_enqueued, stats.events_sent) == (1, 1)


def test_every_bundle_event_kind_arrives(gateway: FakeGateway, make_tracer: MakeTracer) -> None:
    tracer = make_tracer(target=gateway.target)
    components = BundleComponents(
        intent_classifier_version="ic-7",
        reranker_version="rr-2",
        prompt_version="p3",
        bedrock_model_id="anthropic.claude",
        retriever_policy_version="rp-1",
        guardrail_ruleset_version="g-4",
    )
    kinds: list[BundleKind] = [
        BundleRegistered(components=components),
        BundleEvaluated(
            stage=EvaluationStage.CANARY,
            verdict="pass",  # type: ignore[arg-type]
            metrics={"intent_accuracy": 0.93},
            dataset_version="golden-v2",
            traffic_percent=10.0,
            run_id="run1",
        ),
        BundleSignedOff(area=SignOffArea.PROMPT, approver_id="u42"),
        BundlePromoted(),
        BundleRolledBack(to_version="2026.03.01", reason="latency alarm"),
    ]
    for kind in kinds:
        assert tracer.record_bundle_event(
            BundleEvent(
                bundle_name="mangaassist-chatbot-prod",
                bundle_version="2026.03.24-rc2",
                kind=kind,
                actor_id="pipeline",
                note="n",
            )
        )
    assert tracer.flush(5.0)
    sent = [event for request in gateway.bundle_requests for event in request.events]
    assert [event.WhichOneof("kind") for event in sent] == [
        "registered",
        "evaluated",
        "signed_off",
        "promoted",
        "rolled_back",
    ]
    registered, evaluated, signed_off, _promoted, rolled_back = sent
    assert registered.bundle_name == "mangaassist-chatbot-prod" and registered.actor_id == "pipeline"
    assert registered.registered.components.guardrail_ruleset_version == "g-4"
    assert registered.registered.components.bedrock_model_id == "anthropic.claude"
    assert evaluated.evaluated.stage == bundles_pb2.EVALUATION_STAGE_CANARY
    assert evaluated.evaluated.verdict == bundles_pb2.EVALUATION_VERDICT_PASS
    assert dict(evaluated.evaluated.metrics) == pytest.approx({"intent_accuracy": 0.93})
    assert evaluated.evaluated.traffic_percent == 10.0 and evaluated.evaluated.run_id == "run1"
    assert signed_off.signed_off.area == bundles_pb2.SIGN_OFF_AREA_PROMPT
    assert signed_off.signed_off.approver_id == "u42"
    assert rolled_back.rolled_back.to_version == "2026.03.01" and rolled_back.rolled_back.reason == "latency alarm"
    assert len({event.event_id for event in sent}) == 5
    assert tracer.stats().events_sent == 5


def test_events_are_bounded_and_wrong_types_are_counted(make_tracer: MakeTracer, dead_target: str) -> None:
    tracer = make_tracer(target=dead_target, max_queue_events=2, flush_interval_s=60.0, max_batch_events=100)
    results = [tracer.record_feedback(FeedbackEvent("r", "t", Feedback.THUMBS_UP)) for _ in range(3)]
    assert results == [True, True, False]
    assert not tracer.record_bundle_event("not an event")  # type: ignore[arg-type]
    stats = tracer.stats()
    assert stats.events_enqueued == 2
    assert stats.events_dropped["queue_full"] == 1 and stats.events_dropped["error"] == 1


def test_invalid_enum_values_are_rejected_at_construction() -> None:
    with pytest.raises(ValueError):
        FeedbackEvent("r", "t", "meh")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        BundleEvent("b", "v", kind="promoted")  # type: ignore[arg-type]
