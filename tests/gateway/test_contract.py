from prometheus_client import CollectorRegistry

from gateway.config import ContractConfig
from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord, TraceRecord
from gateway.process.contract import VIOLATIONS_TAG, ContractChecker

TAGS = {
    "session_id": "s",
    "request_id": "r1",
    "intent": "faq",
    "page_type": "product",
    "release_bundle": "b1",
    "cache_hit": "false",
    "prompt_version": "faq-2.0",
    "bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0",
}


def span(sid: str, parent: str | None, name: str, span_type: str = "CHAIN") -> SpanRecord:
    return SpanRecord("ab" * 16, sid * 16, parent * 16 if parent else None, name, span_type, 1, 2)


def good_trace(tid: str = "ab" * 16, **tags: str) -> TraceRecord:
    spans = [
        span("1", None, "handle_message"),
        span("2", "1", "intent_classification"),
        span("3", "1", "retrieve_chunks"),
        span("4", "3", "vector_search"),
        span("5", "1", "bedrock_generate", "LLM"),
        span("6", "1", "apply_guardrails"),
        span("7", "6", "grounding_check"),
    ]
    merged = {**TAGS, **tags}
    return TraceRecord(tid, "e", spans, {k: v for k, v in merged.items() if v != "<absent>"})


def checker(mode: str = "warn") -> tuple[ContractChecker, GatewayMetrics]:
    metrics = GatewayMetrics(CollectorRegistry())
    return ContractChecker(ContractConfig(mode), metrics), metrics


def test_a_conforming_trace_has_no_violations() -> None:
    c, _ = checker()
    assert c.check(good_trace()) == []


def test_required_and_conditional_tags() -> None:
    c, _ = checker()
    t = good_trace(intent="<absent>", cache_hit="<absent>", prompt_version="none", bedrock_model_id="<absent>")
    assert c.check(t) == [
        "missing_tag.intent",
        "missing_tag.cache_hit",
        "missing_tag.prompt_version",
        "missing_tag.bedrock_model_id",
    ]
    no_llm = good_trace("cd" * 16, request_id="r2", prompt_version="none", bedrock_model_id="none")
    no_llm.spans = [s for s in no_llm.spans if s.name != "bedrock_generate"]
    assert c.check(no_llm) == []


def test_tree_rules_and_one_trace_per_request() -> None:
    c, _ = checker()
    t = good_trace()
    t.spans.append(span("8", "3", "web_search"))
    t.spans[0].name = "chat"
    assert c.check(t) == ["root_name", "unexpected_child"]
    dup = good_trace("ef" * 16)  # same request_id, another trace
    assert "duplicate_request" in c.check(dup)
    rootless = good_trace("12" * 16, request_id="r9")
    rootless.spans = rootless.spans[1:]
    rootless.complete = False
    assert "root_missing" in c.check(rootless)


def test_violations_are_counted_tagged_and_strict_mode_rejects() -> None:
    c, metrics = checker("warn")
    t = good_trace(intent="<absent>")
    assert c.process([t]) == [t]
    assert t.tags[VIOLATIONS_TAG] == "missing_tag.intent"
    assert metrics.registry.get_sample_value("tracegw_contract_violations_total", {"rule": "missing_tag.intent"}) == 1
    strict, _ = checker("strict")
    assert strict.process([good_trace(intent="<absent>")]) == []
    off, _ = checker("off")
    assert len(off.process([good_trace(intent="<absent>")])) == 1
