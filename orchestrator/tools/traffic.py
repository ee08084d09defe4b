"""``mangaassist-traffic``: realistic MangaAssist requests traced through the client.

A stand-in for the orchestrator (its own issue) that behaves like it on the wire: one
``handle_message`` trace per response with the spec §5 span tree (17 spans on Bedrock-backed
routes, 16 on rule-based ones that skip ``bedrock_generate``), the required
trace tags set right after intent classification, Bedrock token counts and cost, guardrail
verdicts, an occasional failure or guardrail block, and thumbs-up/down feedback on some
responses. Everything goes through ``clients.Tracer`` exactly as application code would.

Requests are planned before the clock starts, so the measured per-request time is the
tracing cost alone: what the application pays for tracing, gateway up or down.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from dataclasses import dataclass

from clients import ClientConfig, FeedbackEvent, SpanHandle, Tracer
from clients.events import Feedback

INTENTS = {
    # intent: (route uses Bedrock, prompt version, sample messages in English and Japanese)
    "product_question": (
        True,
        "product-qa-3.1",
        [
            "Is the Chainsaw Man box set the English edition?",
            "ワンピース 107巻は通常版ですか？",
            "How many volumes does the Frieren hardcover collection have?",
        ],
    ),
    "recommendation": (
        True,
        "recommendation-2.4",
        [
            "Recommend a manga like Vinland Saga for a teenager",
            "スパイファミリーが好きな人におすすめの漫画は？",
            "Something cozy like Yotsuba&! please",
        ],
    ),
    "order_status": (
        False,
        "none",
        [
            "Where is my order? It said it would arrive yesterday",
            "注文した呪術廻戦がまだ届きません",
        ],
    ),
    "return_policy": (
        True,
        "policy-qa-1.7",
        [
            "Can I return a damaged volume of Berserk Deluxe?",
            "返品の期限は何日ですか？",
        ],
    ),
    "faq": (
        True,
        "faq-2.0",
        [
            "Do you ship manga to Canada?",
            "Is there a preorder bonus for the new Dandadan volume?",
        ],
    ),
    "small_talk": (False, "none", ["hi!", "こんにちは", "thanks, that's all"]),
}
PAGE_TYPES = ("product", "search", "category", "cart")
USER_TYPES = ("guest", "signed_in", "prime")
MODELS = {
    "anthropic.claude-3-5-haiku-20241022-v1:0": (0.0008, 0.004),
    "anthropic.claude-3-5-sonnet-20241022-v2:0": (0.003, 0.015),
}
RELEASE_BUNDLE = "2026.11.20-rc1"
CHUNK_SOURCES = ("faq", "policy", "product_description", "review_summary")


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything one request will record, decided before timing starts."""

    session_id: str
    request_id: str
    message: str
    intent: str
    uses_bedrock: bool
    prompt_version: str
    model_id: str
    page_type: str
    user_type: str
    locale: str
    deployment_stage: str
    cache_hit: bool
    chunk_ids: tuple[str, ...]
    chunk_sources: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    input_cost: float
    output_cost: float
    reply: str
    fail_bedrock: bool
    guardrail_block: bool
    feedback: str | None

    @property
    def span_count(self) -> int:
        """Spans this request's trace has: 17, or 16 on routes that answer without Bedrock."""
        return 17 if self.uses_bedrock else 16


def trace_tags(p: Plan) -> dict[str, str]:
    """The spec's trace tags of one planned request (the pivots the metrics and alerts use)."""
    return {
        "session_id": p.session_id,
        "request_id": p.request_id,
        "intent": p.intent,
        "page_type": p.page_type,
        "release_bundle": RELEASE_BUNDLE,
        "prompt_version": p.prompt_version,
        "bedrock_model_id": p.model_id,
        "cache_hit": "true" if p.cache_hit else "false",
        "user_type": p.user_type,
        "deployment_stage": p.deployment_stage,
    }


def plan_requests(
    count: int, seed: int, error_rate: float = 0.02, block_rate: float = 0.02, feedback_rate: float = 0.1
) -> list[Plan]:
    rng = random.Random(seed)
    sessions = [f"sess-{rng.getrandbits(48):012x}" for _ in range(max(1, count // 4))]
    plans = []
    for i in range(count):
        intent = rng.choice(list(INTENTS))
        uses_bedrock, prompt_version, messages = INTENTS[intent]
        message = rng.choice(messages)
        model_id = rng.choice(list(MODELS)) if uses_bedrock else "none"
        in_tok = rng.randint(600, 2400) if uses_bedrock else 0
        out_tok = rng.randint(40, 400) if uses_bedrock else 0
        in_price, out_price = MODELS.get(model_id, (0.0, 0.0))
        n_chunks = rng.randint(3, 6) if uses_bedrock else 0
        plans.append(
            Plan(
                session_id=rng.choice(sessions),
                request_id=f"req-{seed}-{i:06d}",
                message=message,
                intent=intent,
                uses_bedrock=uses_bedrock,
                prompt_version=prompt_version,
                model_id=model_id,
                page_type=rng.choice(PAGE_TYPES),
                user_type=rng.choice(USER_TYPES),
                locale="ja-JP" if any(ord(c) > 0x3000 for c in message) else "en-US",
                deployment_stage="canary" if rng.random() < 0.05 else "prod",
                cache_hit=rng.random() < 0.15,
                chunk_ids=tuple(
                    f"{rng.choice(('faq', 'policy', 'product'))}_{rng.randint(1, 400)}" for _ in range(n_chunks)
                ),
                chunk_sources=tuple(rng.choice(CHUNK_SOURCES) for _ in range(n_chunks)),
                input_tokens=in_tok,
                output_tokens=out_tok,
                input_cost=round(in_tok / 1000 * in_price, 6),
                output_cost=round(out_tok / 1000 * out_price, 6),
                reply=f"Here is what I found about {intent.replace('_', ' ')}.",
                fail_bedrock=uses_bedrock and rng.random() < error_rate,
                guardrail_block=rng.random() < block_rate,
                feedback=(rng.choice(("thumbs_down", "thumbs_up")) if rng.random() < feedback_rate else None),
            )
        )
    return plans


class BedrockThrottled(Exception):
    """Stand-in for a Bedrock ThrottlingException."""


def _generate(tracer: Tracer, p: Plan, root: SpanHandle) -> str:
    try:
        with tracer.start_span(
            "bedrock_generate",
            span_type="LLM",
            attributes={
                "provider": "bedrock",
                "bedrock_model_id": p.model_id,
                "temperature": 0.2,
                "max_tokens": 512,
                "prompt_chars": 3000 + p.input_tokens,
            },
        ) as gen:
            if p.fail_bedrock:
                raise BedrockThrottled("ThrottlingException: rate exceeded")
            gen.set_attributes(
                {
                    "input_tokens": p.input_tokens,
                    "output_tokens": p.output_tokens,
                    "stop_reason": "end_turn",
                    "input_cost_usd": p.input_cost,
                    "output_cost_usd": p.output_cost,
                }
            )
            gen.set_outputs({"text": p.reply})
        return p.reply
    except BedrockThrottled:
        root.set_status("ERROR", "bedrock_generate failed: throttled")
        return "Sorry, I could not answer that right now."


def handle_message(tracer: Tracer, p: Plan) -> str:
    """One traced request with the spec §5 span tree. Returns the trace id."""
    with tracer.start_span(
        "handle_message",
        span_type="CHAIN",
        attributes={
            "request_id": p.request_id,
            "session_id": p.session_id,
            "page_type": p.page_type,
            "customer_locale": p.locale,
        },
    ) as root:
        root.set_inputs({"message": p.message, "page_type": p.page_type})
        with tracer.start_span("load_context", attributes={"history_turns": 2}):
            pass
        with tracer.start_span(
            "intent_classification",
            span_type="CHAIN",
            attributes={"classifier": "manga-intent-classifier", "model_version": "7", "confidence": 0.93},
        ):
            pass
        tracer.update_current_trace(tags=trace_tags(p))
        with tracer.start_span("route_intent", attributes={"route": p.intent, "uses_bedrock": p.uses_bedrock}):
            pass
        with tracer.start_span(
            "retrieve_chunks",
            span_type="RETRIEVER",
            attributes={
                "query_hash": p.request_id[-8:],
                "embedding_model": "amazon.titan-embed-text-v2:0",
                "retriever_policy_version": "rag-v5",
            },
        ) as retrieve:
            with tracer.start_span("embed_query", span_type="EMBEDDING", attributes={"dimensions": 1024}):
                pass
            with tracer.start_span("vector_search", span_type="RETRIEVER", attributes={"k": 20, "candidates": 20}):
                pass
            with tracer.start_span("keyword_search", span_type="RETRIEVER", attributes={"k": 20, "candidates": 14}):
                pass
            with tracer.start_span(
                "rerank_chunks",
                span_type="RERANKER",
                attributes={"reranker_model_version": "manga-reranker-4", "kept": len(p.chunk_ids)},
            ):
                pass
            retrieve.set_attributes({"chunk_ids": list(p.chunk_ids), "chunk_source_types": list(p.chunk_sources)})
        with tracer.start_span("build_prompt", attributes={"prompt_version": p.prompt_version}):
            pass
        reply = p.reply
        if p.uses_bedrock:  # rule-based routes (order status, small talk) answer without an LLM
            reply = _generate(tracer, p, root)
        with tracer.start_span("apply_guardrails", span_type="GUARDRAIL") as guard:
            for stage in ("prompt_injection", "pii_detection", "grounding_check", "format_validation"):
                blocked = p.guardrail_block and stage == "grounding_check"
                with tracer.start_span(
                    stage,
                    span_type="GUARDRAIL",
                    attributes={
                        "passed": not blocked,
                        "score": 0.2 if blocked else 0.97,
                        "rule_id": f"{stage}-v3",
                        "latency_ms": 1.5,
                    },
                ) as g:
                    if blocked:
                        g.set_attributes({"action": "block", "reason": "answer not grounded in chunks"})
            if p.guardrail_block:
                guard.set_attributes({"action": "block", "fallback_triggered": True})
                reply = "I'm not sure about that one. Let me connect you with support."
        with tracer.start_span("persist_response", attributes={"store": "dynamodb"}):
            pass
        root.set_outputs({"reply": reply, "response_id": "resp_" + p.request_id[-10:]})
        return root.trace_id


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@dataclass
class RunResult:
    costs_us: list[float]
    trace_ids: list[str]
    feedback_sent: int

    def summary(self) -> str:
        if not self.costs_us:
            return "no requests"
        return (
            f"{len(self.costs_us)} requests, tracing cost per request: "
            f"p50 {statistics.median(self.costs_us):.1f} µs, p99 {percentile(self.costs_us, 0.99):.1f} µs"
        )


def run(tracer: Tracer, plans: list[Plan], rate_per_s: float, max_seconds: float = 300.0) -> RunResult:
    """Send ``plans`` at about ``rate_per_s``; bounded by count and by ``max_seconds``."""
    costs: list[float] = []
    trace_ids: list[str] = []
    feedback = 0
    interval = 1.0 / rate_per_s if rate_per_s > 0 else 0.0
    started = time.monotonic()
    next_at = started
    for p in plans:
        if time.monotonic() - started > max_seconds:
            break
        t0 = time.perf_counter_ns()
        trace_id = handle_message(tracer, p)
        costs.append((time.perf_counter_ns() - t0) / 1000)
        trace_ids.append(trace_id)
        if p.feedback:
            tracer.record_feedback(
                FeedbackEvent(
                    response_id="resp_" + p.request_id[-10:],
                    trace_id=trace_id,
                    feedback=Feedback(p.feedback),
                    reason_code="wrong_recommendation" if p.feedback == "thumbs_down" else "helpful",
                    session_id=p.session_id,
                    prompt_version=p.prompt_version,
                    release_bundle=RELEASE_BUNDLE,
                )
            )
            feedback += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
    return RunResult(costs, trace_ids, feedback)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mangaassist-traffic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="127.0.0.1:4317", help="gateway gRPC address (default %(default)s)")
    parser.add_argument("--requests", type=int, default=500, help="how many requests (default %(default)s)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default %(default)s)")
    parser.add_argument("--seed", type=int, default=7, help="random seed for the request mix (default %(default)s)")
    parser.add_argument("--experiment", default="", help="MLflow experiment (default: the gateway's)")
    args = parser.parse_args(argv)
    if args.requests <= 0 or args.rate <= 0:
        parser.error("--requests and --rate must be positive")
    tracer = Tracer(
        ClientConfig(target=args.target, experiment_name=args.experiment, service_name="mangaassist-traffic")
    )
    result = run(tracer, plan_requests(args.requests, args.seed), args.rate)
    tracer.flush(timeout_s=10)
    stats = tracer.stats()
    tracer.shutdown(timeout_s=5)
    print(result.summary())
    print(f"client: {stats}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
