"""Chat requests over real HTTP → orchestrator (offline providers) → real gateway → a real
``mlflow server``: one complete trace per response, every tag, zero contract violations, the
response's trace id resolving to its trace and its chunk snapshot; guardrail blocks and
rewrites visible stage by stage; feedback joined to its trace."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from orchestrator.adapters import offline_providers
from orchestrator.adapters.base import Generation, GenerationRequest
from orchestrator.guardrails import FALLBACK_EN
from orchestrator.retrieval import SNAPSHOT_ATTRIBUTE
from orchestrator.schema import PAGE_TYPES
from orchestrator.tools.scenarios import INJECTIONS, chat_body, every_intent_and_page
from tests.orchestrator.stack import EXPECTED_TREE, LLM_TREE, NO_RETRIEVAL, REQUIRED_TAGS, orchestrator_stack
from tests.support import MlflowServer, wait_for

pytestmark = pytest.mark.integration


def assert_tree(trace: Any, expected: dict[str, str | None]) -> dict[str, Any]:
    spans = trace.data.spans
    by_id = {s.span_id: s for s in spans}
    names = {s.name: s for s in spans}
    assert sorted(s.name for s in spans) == sorted(expected), "span tree"
    for name, parent in expected.items():
        span = names[name]
        assert (by_id[span.parent_id].name if span.parent_id else None) == parent, name
    return names


def test_every_intent_and_page_type_lands_as_one_complete_trace(
    mlflow_server: MlflowServer, gateway_factory: Any
) -> None:
    with orchestrator_stack(gateway_factory, mlflow_server.url, "orchestrator-e2e") as stack:
        plans = every_intent_and_page()
        responses = [stack.chat(p.body) for p in plans]
        repeat = stack.chat({**plans[0].body, "session_id": "sess-repeat"})  # same question: the cache answers
        assert stack.tracer.flush(timeout_s=10)

        assert {r["intent"] for r in responses} == set(EXPECTED_TREE)
        assert {p.body["page_context"]["page_type"] for p in plans} == set(PAGE_TYPES)
        for plan, resp in zip(plans, responses, strict=True):
            assert resp["intent"] == plan.intent
            assert len(resp["trace_id"]) == 32 and resp["response_id"].startswith("resp_")
            assert resp["release_bundle"] == "2026.11.20-rc1"
            expected = EXPECTED_TREE[plan.intent]
            trace = stack.trace(resp["trace_id"], len(expected))
            assert trace.info.trace_id == "tr-" + resp["trace_id"]
            names = assert_tree(trace, expected)
            tags = trace.info.tags
            assert all(tags.get(t) for t in REQUIRED_TAGS), {t: tags.get(t) for t in REQUIRED_TAGS}
            assert tags["request_id"] == resp["request_id"] and tags["session_id"] == plan.body["session_id"]
            assert tags["page_type"] == plan.body["page_context"]["page_type"]
            assert tags["intent"] == plan.intent and tags["deployment_stage"] == "canary"
            assert tags["prompt_version"] == resp["prompt_version"]
            assert tags["cache_hit"] == "false"
            assert "contract.violations" not in tags
            root = names["handle_message"]
            assert root.attributes["customer_locale"] == plan.body["page_context"]["locale"]
            assert resp["response_id"] in str(root.outputs)  # outputs may be a capped preview string
            if expected is LLM_TREE:
                gen = names["bedrock_generate"]
                assert gen.span_type == "LLM"
                assert tags["bedrock_model_id"] == gen.attributes["bedrock_model_id"] != "none"
                for key in (
                    "provider",
                    "prompt_hash",
                    "prompt_chars",
                    "temperature",
                    "max_tokens",
                    "input_tokens",
                    "output_tokens",
                    "stop_reason",
                    "latency_ms",
                    "input_cost_usd",
                    "output_cost_usd",
                ):
                    assert key in gen.attributes, key
                assert gen.attributes["input_cost_usd"] > 0 and gen.attributes["prompt_preview"]
                assert resp["prompt_version"] == gen.attributes["prompt_version"] != "none"
            else:
                assert tags["prompt_version"] == "none" and tags["bedrock_model_id"] == "none"
            if expected is not NO_RETRIEVAL:
                retrieve = names["retrieve_chunks"]
                snapshot = retrieve.attributes[SNAPSHOT_ATTRIBUTE]
                assert snapshot["trace_id"] == resp["trace_id"]
                assert snapshot["chunk_ids"] == retrieve.attributes["chunk_ids"]
                assert snapshot["source_types"] == retrieve.attributes["chunk_source_types"]
                assert snapshot["retriever_policy_version"] == "rag-v5"
                assert [c["chunk_id"] for c in snapshot["chunks"]] == snapshot["chunk_ids"]
                assert all(c["text"] for c in snapshot["chunks"])
                for key in ("query_hash", "embedding_model", "filters", "candidate_count", "reranker_version"):
                    assert key in retrieve.attributes, key
                assert set(resp["citations"]) <= set(snapshot["chunk_ids"])
            for stage in ("prompt_injection", "pii_detection", "grounding_check", "format_validation"):
                assert names[stage].attributes["passed"] is True and "latency_ms" in names[stage].attributes

        cached = stack.trace(repeat["trace_id"], len(NO_RETRIEVAL))
        assert repeat["cache_hit"] is True and repeat["reply"] == responses[0]["reply"]
        assert cached.info.tags["cache_hit"] == "true"
        assert assert_tree(cached, NO_RETRIEVAL)["grounding_check"].attributes["passed"] is True

        # one trace per response, no more
        client = stack.mlflow()
        exp = client.get_experiment_by_name("orchestrator-e2e")
        found = client.search_traces(locations=[exp.experiment_id], max_results=500)
        request_ids = sorted(t.info.tags["request_id"] for t in found)
        assert request_ids == sorted(r["request_id"] for r in [*responses, repeat])
        assert stack.violations() == {}
        received = stack.gateway.metrics.registry.get_sample_value("tracegw_traces_written_total")
        assert received is None or received >= len(responses)


class UngroundedGenerator:
    """A model that makes things up (and leaks an address when asked about support)."""

    provider = "bedrock"

    def generate(self, request: GenerationRequest) -> Generation:
        if "support" in request.prompt:
            text = (
                "Open Help > Contact us for chat or email at help.desk@example.com. "
                "Support is available 24 hours a day in English. [faq_029]"
            )
        else:
            text = "Every One Piece volume is free this week and ships to Mars for $0.01 with a golden bookmark."
        return Generation(text=text, input_tokens=900, output_tokens=30, stop_reason="end_turn")


def test_injection_and_ungrounded_answers_are_blocked_stage_by_stage(
    mlflow_server: MlflowServer, gateway_factory: Any
) -> None:
    providers = dataclasses.replace(offline_providers(), generator=UngroundedGenerator())
    with orchestrator_stack(gateway_factory, mlflow_server.url, "orchestrator-guardrails", providers) as stack:
        injected = stack.chat(chat_body(INJECTIONS[0], "search", "sess-attack"))
        injected_ja = stack.chat(chat_body(INJECTIONS[1], "product", "sess-attack", "product_naruto_v001"))
        ungrounded = stack.chat(
            chat_body("How much is One Piece volume 107?", "product", "sess-u", "product_one-piece_v107")
        )
        leaky = stack.chat(chat_body("How do I contact customer support?", "cart", "sess-u"))
        assert stack.tracer.flush(timeout_s=10)

        assert injected["reply"] == FALLBACK_EN and injected["guardrail_action"] == "block"
        assert "申し訳ありません" in injected_ja["reply"]
        for resp in (injected, injected_ja):
            names = assert_tree(stack.trace(resp["trace_id"], len(NO_RETRIEVAL)), NO_RETRIEVAL)  # never reached a model
            attack = names["prompt_injection"].attributes
            assert attack["passed"] is False and attack["action"] == "block" and attack["fallback_triggered"] is True
            assert attack["rule_id"].startswith("pi-") and attack["score"] == 1.0 and "latency_ms" in attack
            assert names["apply_guardrails"].attributes["fallback_triggered"] is True
            assert "skipped" in names["grounding_check"].attributes["reason"]

        assert ungrounded["reply"] == FALLBACK_EN and ungrounded["guardrail_action"] == "block"
        trace = stack.trace(ungrounded["trace_id"], len(LLM_TREE))
        names = assert_tree(trace, LLM_TREE)
        assert "Every One Piece volume is free" in str(names["bedrock_generate"].outputs)
        assert names["prompt_injection"].attributes["passed"] is True
        assert names["pii_detection"].attributes["passed"] is True
        grounding = names["grounding_check"].attributes
        assert grounding["passed"] is False and grounding["action"] == "block"
        assert grounding["fallback_triggered"] is True and grounding["rule_id"] == "grounding-001"
        assert grounding["score"] < 0.8 and "not supported" in grounding["reason"]
        assert names["apply_guardrails"].attributes["action"] == "block"
        assert FALLBACK_EN[:60] in str(names["handle_message"].outputs)

        # a PII leak in a grounded-looking answer is rewritten, not blocked (visible as action=redact)
        trace = stack.trace(leaky["trace_id"], len(LLM_TREE))
        names = assert_tree(trace, LLM_TREE)
        pii = names["pii_detection"].attributes
        assert pii["passed"] is False and pii["action"] == "redact" and pii["fallback_triggered"] is False
        assert leaky["guardrail_action"] == "redact" and "help.desk@example.com" not in leaky["reply"]
        assert "email at [redacted email]." in leaky["reply"]
        assert names["grounding_check"].attributes["passed"] is True  # the rest of the answer is grounded
        assert names["apply_guardrails"].attributes["action"] == "redact"
        assert stack.violations() == {}


def test_feedback_endpoint_reaches_the_trace(mlflow_server: MlflowServer, gateway_factory: Any) -> None:
    from tests.orchestrator.stack import post

    with orchestrator_stack(gateway_factory, mlflow_server.url, "orchestrator-feedback") as stack:
        resp = stack.chat(chat_body("Recommend a manga like Vinland Saga for a teenager", "category", "sess-fb"))
        status, out = post(
            stack.url + "/v1/feedback",
            {
                "response_id": resp["response_id"],
                "trace_id": resp["trace_id"],
                "feedback": "thumbs_down",
                "timestamp": "2026-03-24T21:05:00Z",
                "reason_code": "wrong_recommendation",
            },
        )
        assert status == 202 and out["accepted"] is True
        assert stack.tracer.flush(timeout_s=10)
        client = stack.mlflow()

        def joined() -> Any:
            try:
                t = client.get_trace("tr-" + resp["trace_id"])
            except Exception:
                return None
            return t if t is not None and t.info.tags.get("user_feedback") else None

        trace = wait_for(joined, timeout_s=60, interval_s=0.2, what="user_feedback on the trace")
        assert trace.info.tags["user_feedback"] == "thumbs_down"
        [assessment] = [a for a in trace.info.assessments if a.name == "user_feedback"]
        assert assessment.rationale.startswith("wrong_recommendation")
