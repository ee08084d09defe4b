"""The chat pipeline: one customer message in, one traced, guarded, grounded answer out.

Order (each step a span of the spec §5 tree, under the middleware's ``handle_message``):
``load_context`` → ``intent_classification`` → (prompt-injection screen, route and cache
lookup; trace tags set) → ``route_intent`` → ``retrieve_chunks`` → ``build_prompt`` →
``bedrock_generate`` → ``apply_guardrails`` → ``persist_response``. Rule-based routes
(``order_status``, ``small_talk``) answer from templates without ``build_prompt`` and
``bedrock_generate``; a cache hit or a blocked message skips retrieval and generation too.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clients import Feedback, FeedbackEvent, Tracer
from orchestrator.adapters import Providers
from orchestrator.adapters.base import IntentClassifier, IntentPrediction, ProviderError, Serving
from orchestrator.cache import CachedAnswer, ResponseCache, cache_key
from orchestrator.corpus import Document, load_documents
from orchestrator.generation import traced_generate
from orchestrator.guardrails import Guardrails
from orchestrator.middleware import RequestTrace, request_trace
from orchestrator.prompts import build_prompt
from orchestrator.retrieval import Retriever
from orchestrator.schema import ChatRequest, ChatResponse, new_response_id
from orchestrator.text import is_japanese

_log = logging.getLogger(__name__)

UNAVAILABLE_EN = "Sorry, I could not answer that right now. Please try again in a moment."
UNAVAILABLE_JA = "申し訳ありません。ただいま回答できません。しばらくしてからもう一度お試しください。"
MAX_SESSIONS = 10_000
MAX_RESPONSES = 50_000


class ShadowHook(Protocol):
    def sample(self, request: ChatRequest) -> str | None: ...

    def submit(self, request: ChatRequest, serving: Serving, run: Run, response: ChatResponse) -> None: ...

    def counts(self) -> dict[str, Any]: ...


class FeedbackMismatch(ValueError):
    """The feedback's trace_id is not the trace of that response."""


@dataclass(frozen=True, slots=True)
class ResponseRecord:
    trace_id: str
    session_id: str
    prompt_version: str
    release_bundle: str


def _bundle_tags(serving: Serving, run: Run) -> dict[str, str]:
    """Trace tags naming the served bundle's LoggedModel (the gateway links the stored trace to it),
    its component versions and rollout cohort, and a shadow pair's ids; none of the bundle ones
    when the shipped configuration is served."""
    tags: dict[str, str] = {}
    if serving.logged_model_id:
        tags = {f"component.{key}": uri for key, uri in serving.components.items()}
        tags["release_model_id"] = serving.logged_model_id
    if serving.cohort:
        tags["rollout_cohort"] = serving.cohort
    if run.pair_id is not None:
        tags["shadow_pair_id"] = run.pair_id
        tags["shadow_role"] = "primary"
    if run.replay is not None:
        tags["shadow_of"] = run.replay.primary_trace_id
        tags["shadow_role"] = run.replay.role
    return tags


def snapshot_hash(chunks: Sequence[Document]) -> str:
    """A digest of the exact chunk payloads an answer was built from (the shadow pair's check)."""
    payload = json.dumps([c.payload() for c in chunks], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Replay:
    """A shadow run's inputs, taken from its primary: history, retrieval snapshot, ids."""

    history: tuple[str, ...]
    chunks: tuple[Document, ...]
    primary_trace_id: str
    pair_id: str
    snapshot_hash: str
    role: str = "candidate"
    """``candidate`` (the shadow bundle) or ``noise`` (the stable bundle again: the noise floor)."""


@dataclass(slots=True)
class Run:
    """What one answer used and cost, for the shadow runner."""

    pair_id: str | None = None
    replay: Replay | None = None
    history: tuple[str, ...] = ()
    chunks: tuple[Document, ...] = ()
    cost_usd: float = 0.0
    stubbed: tuple[str, ...] = ()


def _japanese(locale: str, message: str) -> bool:
    return locale.startswith("ja") or is_japanese(message)


def rule_answer(intent: str, message: str, locale: str, chunks: Sequence[Document]) -> str:
    """Template answers of the rule-based routes (approved text, no model)."""
    ja = _japanese(locale, message)
    if intent == "order_status":
        head = (
            "チャットでは注文の詳細を確認できません。注文履歴から配送状況と追跡番号をご確認ください。"
            if ja
            else "I can't see order details in chat. Open Your Orders to see each order's status and tracking link."
        )
        tip = next((c for c in chunks if c.source_type == "policy"), chunks[0] if chunks else None)
        return f"{head}\n{tip.text} [{tip.doc_id}]" if tip else head
    lowered = message.lower()
    if "thank" in lowered or "ありがとう" in message:
        return "どういたしまして。楽しい読書を！" if ja else "You're welcome! Happy reading."
    if any(w in lowered for w in ("bye", "that's all", "thats all")):
        return "ご利用ありがとうございました。" if ja else "Thanks for chatting. See you next time!"
    return (
        "こんにちは！MangaAssistです。作品探し、巻数や価格、配送や返品についてお気軽にどうぞ。"
        if ja
        else "Hi! I'm MangaAssist. Ask me about series, volumes and prices, recommendations, shipping or returns."
    )


class ChatService:
    def __init__(
        self,
        tracer: Tracer,
        providers: Providers,
        *,
        deployment_stage: str = "dev",
        documents: Sequence[Document] | None = None,
        cache: ResponseCache | None = None,
        guardrails: Guardrails | None = None,
    ) -> None:
        self._tracer = tracer
        self.providers = providers
        self._stage = deployment_stage
        self.retriever = Retriever(
            tracer, documents if documents is not None else load_documents(), providers.embedder, providers.reranker
        )
        self.cache = cache if cache is not None else ResponseCache()
        self.guardrails = guardrails or Guardrails(tracer)
        self._lock = threading.Lock()
        self._history: OrderedDict[str, deque[str]] = OrderedDict()
        self._responses: OrderedDict[str, ResponseRecord] = OrderedDict()
        self.shadow: ShadowHook | None = None
        """A shadow runner (``orchestrator.rollout.shadow.ShadowRunner``), attached by the app."""

    # -- chat -----------------------------------------------------------------------------

    def handle(self, request: ChatRequest) -> ChatResponse:
        """Answer one message inside exactly one ``handle_message`` trace; when a shadow runner is
        attached and samples the request, a copy runs against the shadow bundle after the answer
        is returned (``orchestrator.rollout.shadow``)."""
        serving = self.providers.serving(request.session_id)  # one read: a bundle switch never splits a request
        shadow = self.shadow
        pair_id = shadow.sample(request) if shadow is not None else None
        run = Run(pair_id=pair_id)
        with request_trace(self._tracer, request, serving.deployment_stage or self._stage) as trace:
            response = self._orchestrate(trace, serving, run)
        if shadow is not None and pair_id is not None:
            shadow.submit(request, serving, run, response)
        return response

    def replay(self, request: ChatRequest, serving: Serving, replay: Replay) -> tuple[ChatResponse, Run]:
        """Answer ``request`` again with ``serving`` on the primary's inputs (its history and
        retrieval snapshot), with no side effects: nothing is cached, remembered or answerable by
        feedback. The trace is tagged ``deployment_stage=shadow`` and the pair's ids."""
        run = Run(pair_id=replay.pair_id, replay=replay)
        # its own request id: the gateway's trace contract rejects a request id seen twice
        request = dataclasses.replace(request, request_id=f"{request.request_id}.{replay.role}")
        with request_trace(self._tracer, request, "shadow") as trace:
            response = self._orchestrate(trace, serving, run)
        return response, run

    def _classify(self, req: ChatRequest, classifier: IntentClassifier) -> IntentPrediction:
        ctx = req.page_context
        with self._tracer.start_span(
            "intent_classification", span_type="CHAIN", attributes={"classifier": classifier.model_name}
        ) as span:
            try:
                prediction = classifier.classify(req.message, ctx.page_type, ctx.locale)
            except ProviderError as exc:  # degrade to the general-help route, visibly
                span.set_attributes({"degraded": True, "error_code": exc.code})
                prediction = IntentPrediction("faq", 0.0, "unavailable")
            span.set_attributes(
                {
                    "intent": prediction.intent,
                    "confidence": prediction.confidence,
                    "model_version": prediction.model_version,
                }
            )
        return prediction

    def _orchestrate(self, trace: RequestTrace, serving: Serving, run: Run) -> ChatResponse:
        tracer, req = self._tracer, trace.request
        ctx = req.page_context
        replay = run.replay
        guardrails = self.guardrails.for_ruleset(serving.ruleset)
        with tracer.start_span("load_context") as span:
            if replay is not None:
                history = list(replay.history)
            else:
                with self._lock:
                    history = list(self._history.get(req.session_id, ()))
            span.set_attributes({"history_turns": len(history) // 2, "locale": ctx.locale})
        run.history = tuple(history)
        intent = self._classify(req, serving.classifier).intent
        table = serving.table
        route = table.route_for(intent)
        verdict = guardrails.screen_input(req.message)
        key = cache_key(
            req.message, intent, ctx.page_type, ctx.product_id, ctx.locale, route.prompt_version, route.model_id
        )
        cached = self.cache.get(key) if route.uses_bedrock and verdict.passed and replay is None else None
        generate = route.uses_bedrock and verdict.passed and cached is None
        prompt_version = route.prompt_version if (generate or cached) else "none"
        model_id = route.model_id if generate else cached.model_id if cached else "none"
        trace.tag(
            intent, table.release_bundle, prompt_version, model_id, cached is not None, _bundle_tags(serving, run)
        )
        with tracer.start_span(
            "route_intent",
            attributes={
                "route": route.intent,
                "uses_bedrock": route.uses_bedrock,
                "uses_retrieval": route.uses_retrieval,
                "prompt_version": route.prompt_version,
                "route_config_version": table.config_version,
                "cache_hit": cached is not None,
                "input_blocked": not verdict.passed,
            },
        ):
            pass

        chunks: Sequence[Document] = ()
        reply, grounded, failed = "", False, False
        if cached is not None:
            chunks, reply, grounded = cached.chunks, cached.reply, True
        elif verdict.passed:
            if route.uses_retrieval and replay is not None:
                chunks = replay.chunks
                with tracer.start_span(
                    "retrieve_chunks",
                    span_type="RETRIEVER",
                    attributes={
                        "replayed_from": replay.primary_trace_id,
                        "chunk_ids": [c.doc_id for c in chunks],
                        "retrieval_snapshot_hash": replay.snapshot_hash,
                    },
                ):
                    pass
            elif route.uses_retrieval:
                chunks = self.retriever.retrieve(
                    req.message, route, ctx.product_id, serving.policy, serving.reranker
                ).chunks
            if generate:
                with tracer.start_span(
                    "build_prompt", attributes={"prompt_version": route.prompt_version, "chunk_count": len(chunks)}
                ) as span:
                    prompt = build_prompt(
                        route.prompt_version,
                        intent,
                        req.message,
                        chunks,
                        ctx.page_type,
                        ctx.product_id,
                        history,
                        serving.prompts or None,
                    )
                    span.set_attributes({"prompt_hash": prompt.prompt_hash, "prompt_chars": prompt.chars})
                try:
                    generation, cost = traced_generate(
                        tracer, self.providers.generator, prompt, route.model_id, route.temperature, route.max_tokens
                    )
                    reply, grounded = generation.text, True
                    run.cost_usd = cost
                except ProviderError as exc:
                    _log.warning("generation failed for %s: %s", req.request_id, exc.code)
                    trace.root.set_status("ERROR", f"bedrock_generate failed: {exc.code or type(exc).__name__}")
                    reply, failed = (UNAVAILABLE_JA if _japanese(ctx.locale, req.message) else UNAVAILABLE_EN), True
            else:
                reply = rule_answer(intent, req.message, ctx.locale, chunks)
        run.chunks = tuple(chunks)
        if run.pair_id is not None:
            pair = {"shadow_pair_id": run.pair_id, "shadow_role": replay.role if replay else "primary"}
            tracer.update_current_trace(tags={"retrieval_snapshot_hash": snapshot_hash(chunks), **pair})
        outcome = guardrails.apply(req.message, reply, chunks, ctx.locale, grounded, verdict)

        response_id = new_response_id()
        if replay is not None:  # a shadow answer: nothing persisted, cached or open to feedback
            with tracer.start_span("persist_response", attributes={"store": "none", "stubbed": "shadow run"}):
                run.stubbed = ("persist", "cache") if generate else ("persist",)
        else:
            with tracer.start_span("persist_response", attributes={"store": "memory", "response_id": response_id}):
                self._remember(req, response_id, trace.trace_id, prompt_version, table.release_bundle, outcome.reply)
                if generate and not failed and not outcome.blocked and not outcome.rewritten:
                    self.cache.put(
                        key,
                        CachedAnswer(outcome.reply, route.prompt_version, route.model_id, tuple(chunks), response_id),
                    )
        citations = tuple(c.doc_id for c in chunks if f"[{c.doc_id}]" in outcome.reply)
        action = "block" if outcome.blocked else "redact" if outcome.rewritten else "none"
        trace.root.set_attributes({"response_id": response_id, "intent": intent, "guardrail_action": action})
        trace.root.set_outputs({"response_id": response_id, "reply": outcome.reply})  # id first: previews are capped
        return ChatResponse(
            reply=outcome.reply,
            response_id=response_id,
            trace_id=trace.trace_id,
            prompt_version=prompt_version,
            release_bundle=table.release_bundle,
            request_id=req.request_id,
            intent=intent,
            cache_hit=cached is not None,
            citations=citations,
            guardrail_action=action,
        )

    def _remember(
        self, req: ChatRequest, response_id: str, trace_id: str, prompt_version: str, bundle: str, reply: str
    ) -> None:
        with self._lock:
            turns = self._history.setdefault(req.session_id, deque(maxlen=8))
            self._history.move_to_end(req.session_id)
            turns.extend((f"customer: {req.message}", f"assistant: {reply}"))
            while len(self._history) > MAX_SESSIONS:
                self._history.popitem(last=False)
            self._responses[response_id] = ResponseRecord(trace_id, req.session_id, prompt_version, bundle)
            while len(self._responses) > MAX_RESPONSES:
                self._responses.popitem(last=False)

    # -- feedback -------------------------------------------------------------------------

    def record_feedback(
        self,
        response_id: str,
        trace_id: str,
        feedback: str,
        reason_code: str = "",
        comment: str = "",
        session_id: str = "",
        timestamp_s: float | None = None,
        event_id: str | None = None,
    ) -> tuple[bool, str]:
        """Forward a feedback event to the gateway; ``(accepted, event_id)``.

        ``event_id`` defaults to one derived from the event itself, so the same click posted
        twice (a browser retry) is one event: the gateway deduplicates event ids.

        When the response is known here, its trace id must match and its session, prompt version
        and release bundle are filled in; feedback on older responses is forwarded as given.
        """
        with self._lock:
            record = self._responses.get(response_id)
        if record is not None and record.trace_id != trace_id:
            raise FeedbackMismatch(f"trace_id does not match response {response_id}")
        if event_id is None:
            basis = "\x1f".join((response_id, trace_id, feedback, reason_code, comment, repr(timestamp_s)))
            event_id = "fb_" + hashlib.sha256(basis.encode()).hexdigest()[:32]
        event = FeedbackEvent(
            event_id=event_id,
            response_id=response_id,
            trace_id=trace_id,
            feedback=Feedback(feedback),
            reason_code=reason_code,
            comment=comment,
            session_id=session_id or (record.session_id if record else ""),
            prompt_version=record.prompt_version if record else "",
            release_bundle=record.release_bundle if record else "",
            time_unix_nano=int((timestamp_s if timestamp_s is not None else time.time()) * 1e9),
        )
        return self._tracer.record_feedback(event), event.event_id
