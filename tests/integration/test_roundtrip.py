"""A request traced with the client reaches MLflow through the gateway, with its span tree and
trace tags: against a real ``mlflow server`` (SQLite and PostgreSQL) and on embedded defaults."""

from __future__ import annotations

import os
from typing import Any

import pytest

from clients import ClientConfig, FeedbackEvent, Tracer
from clients.events import Feedback
from orchestrator.tools.traffic import RELEASE_BUNDLE, handle_message, plan_requests
from tests.support import MlflowServer, wait_for

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

EXPECTED_PARENTS = {
    "handle_message": None,
    "load_context": "handle_message",
    "intent_classification": "handle_message",
    "route_intent": "handle_message",
    "retrieve_chunks": "handle_message",
    "build_prompt": "handle_message",
    "bedrock_generate": "handle_message",
    "apply_guardrails": "handle_message",
    "persist_response": "handle_message",
    "embed_query": "retrieve_chunks",
    "vector_search": "retrieve_chunks",
    "keyword_search": "retrieve_chunks",
    "rerank_chunks": "retrieve_chunks",
    "prompt_injection": "apply_guardrails",
    "pii_detection": "apply_guardrails",
    "grounding_check": "apply_guardrails",
    "format_validation": "apply_guardrails",
}


def mlflow_client(uri: str) -> Any:
    import mlflow

    return mlflow.MlflowClient(tracking_uri=uri)


def get_trace_when_complete(client: Any, trace_id: str, spans: int = 17) -> Any:
    def ready() -> Any:
        try:
            t = client.get_trace(trace_id)
        except Exception:
            return None
        return t if t is not None and len(t.data.spans) >= spans and t.info.tags.get("intent") else None

    return wait_for(ready, timeout_s=30, interval_s=0.2, what=f"trace {trace_id} in MLflow")


@pytest.fixture(params=["sqlite-server", pytest.param("postgres-server", marks=pytest.mark.postgres), "embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite-server":
        server: MlflowServer = request.getfixturevalue("mlflow_server")
        return server.url
    if request.param == "postgres-server":
        server = request.getfixturevalue("mlflow_server_pg")
        return server.url
    return f"sqlite:///{tmp_path / 'embedded.db'}"


@pytest.mark.integration
def test_client_trace_lands_in_mlflow_with_tree_tags_and_ids(backend: str, gateway_factory: Any) -> None:
    gw = gateway_factory(MLFLOW_TRACKING_URI=backend, MLFLOW_EXPERIMENT_NAME="roundtrip")
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
    plans = plan_requests(40, seed=5, error_rate=0.0, block_rate=0.0, feedback_rate=0.0)
    ok_plan = next(p for p in plans if p.uses_bedrock)
    err_plan = next(p for p in plans if p.uses_bedrock and p is not ok_plan)
    err_plan = type(err_plan)(**{**{f: getattr(err_plan, f) for f in err_plan.__slots__}, "fail_bedrock": True})
    ok_id = handle_message(tracer, ok_plan)
    err_id = handle_message(tracer, err_plan)
    assert tracer.flush(timeout_s=10)
    client = mlflow_client(backend)

    trace = get_trace_when_complete(client, "tr-" + ok_id)
    assert trace.info.trace_id == "tr-" + ok_id  # the id MLflow shows is the client's trace id
    assert trace.info.state.value == "OK"
    by_id = {s.span_id: s for s in trace.data.spans}
    names = {s.name: s for s in trace.data.spans}
    assert set(names) == set(EXPECTED_PARENTS) and len(trace.data.spans) == 17
    for name, parent in EXPECTED_PARENTS.items():
        span = names[name]
        assert (by_id[span.parent_id].name if span.parent_id else None) == parent, name
        assert span.start_time_ns <= span.end_time_ns
        if parent:
            assert names[parent].start_time_ns <= span.start_time_ns <= span.end_time_ns <= names[parent].end_time_ns
    root = names["handle_message"]
    assert root.inputs == {"message": ok_plan.message, "page_type": ok_plan.page_type}
    assert root.outputs["reply"] == ok_plan.reply
    assert names["bedrock_generate"].span_type == "LLM"
    assert names["bedrock_generate"].attributes["input_tokens"] == ok_plan.input_tokens
    tags = trace.info.tags
    for key, value in {
        "intent": ok_plan.intent,
        "release_bundle": RELEASE_BUNDLE,
        "session_id": ok_plan.session_id,
        "request_id": ok_plan.request_id,
        "prompt_version": ok_plan.prompt_version,
        "bedrock_model_id": ok_plan.model_id,
        "page_type": ok_plan.page_type,
    }.items():
        assert tags[key] == value, key
    assert trace.info.trace_metadata.get("mlflow.trace.session") == ok_plan.session_id
    assert trace.info.token_usage["input_tokens"] == ok_plan.input_tokens

    err = get_trace_when_complete(client, "tr-" + err_id)
    assert err.info.state.value == "ERROR"
    gen = next(s for s in err.data.spans if s.name == "bedrock_generate")
    assert gen.status.status_code.value == "ERROR" and "ThrottlingException" in gen.status.description
    assert any(e.name == "exception" for e in gen.events)

    exp = client.get_experiment_by_name("roundtrip")
    found = client.search_traces(
        locations=[exp.experiment_id], filter_string=f"tags.request_id = '{ok_plan.request_id}'"
    )
    assert [t.info.trace_id for t in found] == ["tr-" + ok_id]
    by_intent = client.search_traces(locations=[exp.experiment_id], filter_string=f"tags.intent = '{ok_plan.intent}'")
    assert "tr-" + ok_id in {t.info.trace_id for t in by_intent}
    tracer.shutdown()


@pytest.mark.integration
def test_feedback_joins_its_trace(backend: str, gateway_factory: Any) -> None:
    gw = gateway_factory(MLFLOW_TRACKING_URI=backend, MLFLOW_EXPERIMENT_NAME="feedback")
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
    plan = plan_requests(1, seed=9)[0]
    trace_id = handle_message(tracer, plan)
    # sent at once, before the trace can have reached MLflow: the gateway joins it when it lands
    assert tracer.record_feedback(
        FeedbackEvent(
            response_id="resp_1",
            trace_id=trace_id,
            feedback=Feedback.THUMBS_DOWN,
            reason_code="wrong_recommendation",
            session_id=plan.session_id,
        )
    )
    assert tracer.flush(timeout_s=10)
    client = mlflow_client(backend)

    def joined() -> Any:
        try:
            t = client.get_trace("tr-" + trace_id)
        except Exception:  # not stored yet
            return None
        return t if t is not None and t.info.tags.get("user_feedback") else None

    trace = wait_for(joined, timeout_s=30, interval_s=0.2, what="user_feedback tag")
    assert trace.info.tags["user_feedback"] == "thumbs_down"
    [assessment] = [a for a in trace.info.assessments if a.name == "user_feedback"]
    assert assessment.value is False
    assert assessment.rationale.startswith("wrong_recommendation")
    tracer.shutdown()


@pytest.mark.integration
def test_bundle_events_build_the_bundle_run(mlflow_server: MlflowServer, gateway_factory: Any) -> None:
    from clients import BundleEvent
    from clients.events import (
        BundleComponents,
        BundleEvaluated,
        BundlePromoted,
        BundleRegistered,
        EvaluationStage,
        EvaluationVerdict,
    )

    gw = gateway_factory(MLFLOW_TRACKING_URI=mlflow_server.url, TRACEGW_BUNDLE_EXPERIMENT="bundles-test")
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
    name, version = "mangaassist-chatbot-prod", "2026.11.26-rc3"
    client = mlflow_client(mlflow_server.url)
    # A promotion is history only for a version the model registry has (by number, or by its
    # bundle_version tag).
    client.create_registered_model(name)
    client.create_model_version(name, source=f"s3://bundles/{version}", tags={"bundle_version": version})
    actor = "release-pipeline"
    tracer.record_bundle_event(
        BundleEvent(
            name,
            version,
            BundleRegistered(
                BundleComponents(
                    "7", "rr-4", "recommendation-2.4", "anthropic.claude-3-5-haiku-20241022-v1:0", "rag-v5", "gr-12"
                )
            ),
            actor_id=actor,
        )
    )
    tracer.record_bundle_event(
        BundleEvent(
            name,
            version,
            BundleEvaluated(EvaluationStage.SHADOW, EvaluationVerdict.PASS, {"intent_accuracy": 0.95}),
            actor_id=actor,
        )
    )
    tracer.record_bundle_event(
        BundleEvent(name, "2026.12.01-never-registered", BundlePromoted(), actor_id=actor)
    )  # rejected: no such version
    tracer.record_bundle_event(
        BundleEvent(name, version, BundlePromoted(previous_version="2026.11.20-rc1"), actor_id=actor)
    )
    assert tracer.flush(timeout_s=10)

    def run() -> Any:
        exp = client.get_experiment_by_name("bundles-test")
        if exp is None:
            return None
        runs = client.search_runs([exp.experiment_id])
        if runs and runs[0].data.tags.get("lifecycle.status") == "promoted":
            return runs
        return None

    [bundle_run] = wait_for(run, timeout_s=30, interval_s=0.2, what="bundle run promoted")
    assert bundle_run.info.run_name == f"{name}@{version}"
    assert bundle_run.data.tags["component.prompt_version"] == "recommendation-2.4"
    assert bundle_run.data.tags["eval.shadow.verdict"] == "pass"
    assert bundle_run.data.metrics["shadow.intent_accuracy"] == pytest.approx(0.95)
    assert bundle_run.data.tags["lifecycle.previous_version"] == "2026.11.20-rc1"
    assert bundle_run.data.tags["promoted.recorded_by"] == "anonymous"  # loopback, no credentials configured
    assert tracer.stats().events_dropped["rejected"] == 1
    runs = client.search_runs([client.get_experiment_by_name("bundles-test").experiment_id])
    assert [r.info.run_name for r in runs] == [f"{name}@{version}"]  # the unregistered promotion left nothing
    tracer.shutdown()
