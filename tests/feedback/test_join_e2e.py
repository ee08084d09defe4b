"""Feedback through the real gateway and a real MLflow server at sampling ratio 0.1.

Thumbs-down on a sampled-in trace, a sampled-out trace (rescued), a trace still in flight and an
unknown trace; each ends as the issue specifies: the first three found by ``search_traces`` on the
``user_feedback`` tag with the assessment present, the unknown one counted as orphan and still on
the stream. Then the daily aggregate of those events.
"""

from __future__ import annotations

import json
import random
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from clients import ClientConfig, FeedbackEvent, Tracer
from gateway.process.sampler import head_keep, ratio_bound
from orchestrator.jobs import feedback_daily
from orchestrator.tools.traffic import RELEASE_BUNDLE, handle_message, plan_requests
from tests.feedback.conftest import KinesisServer
from tests.support import MlflowServer, wait_for

BOUND = ratio_bound(0.1)
IN_FLIGHT_TAGS = {
    "intent": "faq",
    "prompt_version": "faq-2.0",
    "release_bundle": RELEASE_BUNDLE,
    "bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "deployment_stage": "prod",
    "session_id": "sess-inflight",
    "request_id": "req-inflight",
    "page_type": "product",
    "user_type": "guest",
    "cache_hit": "false",
}


def down(trace_id: str, response_id: str, session: str = "", value: str = "thumbs_down") -> FeedbackEvent:
    return FeedbackEvent(
        response_id=response_id,
        trace_id=trace_id,
        feedback=value,  # type: ignore[arg-type]
        reason_code="wrong_recommendation" if value == "thumbs_down" else "helpful",
        session_id=session,
    )


@pytest.mark.integration
@pytest.mark.usefixtures("aws_env")
def test_thumbs_down_joins_sampled_in_rescued_in_flight_and_counts_orphans(
    mlflow_server: MlflowServer, gateway_factory: Any, kinesis_server: KinesisServer, tmp_path: Path
) -> None:
    exp = f"feedback-e2e-{uuid.uuid4().hex[:6]}"
    stream = f"e2e-{uuid.uuid4().hex[:8]}"
    kinesis_server.create_stream(stream, shards=1)
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=mlflow_server.url,
        MLFLOW_EXPERIMENT_NAME=exp,
        MLFLOW_TRACE_SAMPLING_RATIO="0.1",
        TRACEGW_FEEDBACK_JOIN_WINDOW_S="3",
        TRACEGW_FEEDBACK_STREAM=stream,
        TRACEGW_KINESIS_ENDPOINT_URL=kinesis_server.url,
        TRACEGW_FEEDBACK_STREAM_MAX_DELAY_S="0.05",
    )
    reg = gw.metrics.registry
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))

    # complete traces with no tail policy (no errors or blocks, prod), until two of each head decision
    kept: list[tuple[Any, str]] = []
    dropped: list[tuple[Any, str]] = []
    for p in plan_requests(300, seed=5, error_rate=0, block_rate=0):
        if len(kept) >= 2 and dropped:
            break
        p = replace(p, deployment_stage="prod")
        tid = handle_message(tracer, p)
        (kept if head_keep(tid, BOUND) else dropped).append((p, tid))
    sent = len(kept) + len(dropped)
    assert tracer.flush(timeout_s=10)
    wait_for(
        lambda: reg.get_sample_value("tracegw_stage_traces_out_total", {"stage": "feedback_context"}) == sent,
        timeout_s=15,
        what="every trace decided",
    )
    assert reg.get_sample_value("tracegw_sampling_decisions_total", {"decision": "kept", "reason": "head"}) == len(kept)
    assert reg.get_sample_value("tracegw_rescue_traces") == len(dropped)

    # a trace still in flight: its root has not ended when the feedback arrives (head would drop it)
    with tracer.start_span("handle_message", span_type="CHAIN") as root:
        root.set_inputs({"message": "Do you ship manga to Canada?"})
        tracer.update_current_trace(tags=IN_FLIGHT_TAGS)
        for name in ("load_context", "intent_classification"):
            with tracer.start_span(name):
                pass
        in_flight = root.trace_id
        assert tracer.flush(timeout_s=10)
        wait_for(lambda: reg.get_sample_value("tracegw_assembly_traces_in_flight") == 1, what="trace in assembly")
        tracer.record_feedback(down(in_flight, "resp_inflight", "sess-inflight"))
        assert tracer.flush(timeout_s=10)
        wait_for(
            lambda: reg.get_sample_value("tracegw_feedback_joins_total", {"outcome": "in_flight"}) == 1,
            what="feedback while the trace is in flight",
        )
        root.set_outputs({"reply": "Yes, we ship to Canada."})

    (p_in, sampled_in), (p_up, thumbs_up) = kept[0], kept[1]
    p_out, sampled_out = dropped[0]
    unknown = random.randbytes(16).hex()
    for i, (tid, plan) in enumerate(((sampled_in, p_in), (sampled_out, p_out))):
        assert tracer.record_feedback(down(tid, f"resp_{i}", plan.session_id))
    assert tracer.record_feedback(down(thumbs_up, "resp_up", p_up.session_id, "thumbs_up"))
    assert tracer.record_feedback(down(unknown, "resp_unknown", "sess-unknown"))
    assert tracer.flush(timeout_s=10)

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=mlflow_server.url)
    exp_id = wait_for(lambda: client.get_experiment_by_name(exp), what="experiment").experiment_id  # type: ignore[union-attr]
    joined = {"tr-" + t for t in (sampled_in, sampled_out, in_flight)}

    def complaints() -> Any:
        found = client.search_traces(
            locations=[exp_id], filter_string="tags.user_feedback = 'thumbs_down'", include_spans=False
        )
        return found if {t.info.trace_id for t in found} == joined else None

    traces = {
        t.info.trace_id: t
        for t in wait_for(complaints, timeout_s=30, interval_s=0.25, what="three complaints searchable by tag")
    }
    for tr_id, t in traces.items():
        [assessment] = [a for a in t.info.assessments if a.name == "user_feedback"]
        assert assessment.value is False and assessment.rationale.startswith("wrong_recommendation"), tr_id
        assert assessment.source.source_type == "HUMAN"
    assert traces["tr-" + sampled_in].info.tags["sampling.reason"] == "head"
    assert traces["tr-" + sampled_out].info.tags["sampling.reason"] == "feedback"  # rescued
    assert "feedback" in traces["tr-" + in_flight].info.tags["sampling.reason"].split(",")
    assert traces["tr-" + in_flight].info.tags["intent"] == "faq"
    rescued_full = client.get_trace("tr-" + sampled_out)
    assert len(rescued_full.data.spans) >= 16  # the whole rescued trace, not a stub

    # the unknown trace: counted as orphan, dropped from MLflow after the join window, still streamed
    wait_for(
        lambda: (
            reg.get_sample_value("tracegw_events_dropped_total", {"kind": "feedback", "reason": "trace_not_found"}) == 1
        ),
        timeout_s=20,
        what="unknown trace's feedback given up in MLflow",
    )
    joins = {
        o: reg.get_sample_value("tracegw_feedback_joins_total", {"outcome": o})
        for o in ("sampled_in", "rescued", "in_flight", "orphan")
    }
    assert joins == {"sampled_in": 2, "rescued": 1, "in_flight": 1, "orphan": 1}
    assert (
        reg.get_sample_value(
            "mangaassist_feedback_total",
            {
                "intent": p_out.intent,
                "prompt_version": p_out.prompt_version,
                "release_bundle": RELEASE_BUNDLE,
                "bedrock_model_id": p_out.model_id,
                "deployment_stage": "prod",
                "rollout_cohort": "none",
                "feedback": "thumbs_down",
            },
        )
        >= 1
    )
    assert (
        reg.get_sample_value(
            "mangaassist_feedback_total",
            {
                "intent": "none",
                "prompt_version": "none",
                "release_bundle": "none",
                "bedrock_model_id": "none",
                "deployment_stage": "none",
                "rollout_cohort": "none",
                "feedback": "thumbs_down",
            },
        )
        == 1
    )  # the orphan: nothing known about its trace
    wait_for(
        lambda: reg.get_sample_value("tracegw_feedback_stream_records_total", {"outcome": "ok"}) == 5,
        timeout_s=15,
        what="five events on the stream",
    )
    events = {e["trace_id"]: e for e in (json.loads(r["data"]) for r in kinesis_server.read_all(stream))}
    assert events[unknown]["join"] == "orphan" and events[unknown]["intent"] == ""
    assert events[sampled_out]["join"] == "rescued" and events[sampled_out]["intent"] == p_out.intent
    assert events[in_flight]["join"] == "in_flight" and events[in_flight]["intent"] == "faq"
    assert events[sampled_in]["bedrock_model_id"] == p_in.model_id

    # the daily aggregate of today's feedback in this experiment matches what was sent
    day = datetime.now(UTC).date()
    daily_exp = f"daily-{uuid.uuid4().hex[:6]}"
    run_id, rows = feedback_daily.run_daily(client, day, daily_exp, [exp])
    expected: dict[tuple[str, ...], list[int]] = {}
    for pivots, value in (
        ((p_in.intent, p_in.prompt_version, RELEASE_BUNDLE, p_in.model_id), "down"),
        ((p_out.intent, p_out.prompt_version, RELEASE_BUNDLE, p_out.model_id), "down"),
        (("faq", "faq-2.0", RELEASE_BUNDLE, IN_FLIGHT_TAGS["bedrock_model_id"]), "down"),
        ((p_up.intent, p_up.prompt_version, RELEASE_BUNDLE, p_up.model_id), "up"),
    ):
        counts = expected.setdefault(pivots, [0, 0])
        counts[0 if value == "up" else 1] += 1
    got = {tuple(r[k] for k in feedback_daily.PIVOTS): [r["thumbs_up"], r["thumbs_down"]] for r in rows}
    assert got == expected
    run = client.get_run(run_id)
    assert run.data.metrics["feedback_count"] == 4 and run.data.metrics["thumbs_down_count"] == 3
    assert run.data.metrics["thumbs_down_rate"] == pytest.approx(0.75)
    table_path = Path(client.download_artifacts(run_id, "feedback_daily.json", str(tmp_path)))
    assert json.loads(table_path.read_text()) == rows
    again_id, again_rows = feedback_daily.run_daily(client, day, daily_exp, [exp])  # idempotent
    assert again_id == run_id and again_rows == rows
    daily_exp_id = client.get_experiment_by_name(daily_exp).experiment_id  # type: ignore[union-attr]
    assert len(client.search_runs([daily_exp_id])) == 1
    tracer.shutdown()
