"""Checking a chatbot response against a golden case's expectations, and an offline run.

``check(case, response)`` applies every expectation (see ``dataset.py``) and returns one
:class:`CaseOutcome` with a verdict per check; a case passes when all its checks pass.
``run_offline(cases)`` drives the shipped chatbot (``ChatService`` with ``offline_providers()``,
a tracer whose gateway is absent: spans are recorded and dropped) over the cases, replaying each
case's ``history`` in its session first. ``pass_rates(outcomes)`` summarises by kind (or any tag).

Offline figures measure the deterministic stand-ins (keyword classifier, hashing embedder,
extractive generator), not Bedrock; ``MANGAASSIST_PROVIDERS=aws`` providers run the same path.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from clients import ClientConfig, Tracer
from orchestrator.adapters import Providers, offline_providers
from orchestrator.adapters.offline_generator import DONT_KNOW
from orchestrator.evaluation.dataset import GoldenCase
from orchestrator.guardrails import FALLBACK_EN, FALLBACK_JA
from orchestrator.schema import ChatRequest, ChatResponse, PageContext
from orchestrator.service import UNAVAILABLE_EN, UNAVAILABLE_JA, ChatService

REFUSALS = (*DONT_KNOW.values(), FALLBACK_EN, FALLBACK_JA, UNAVAILABLE_EN, UNAVAILABLE_JA)


def is_refusal(reply: str) -> bool:
    """The reply is a "do not know", the guardrail fallback or the unavailable message."""
    return any(r in reply for r in REFUSALS)


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    case_id: str
    kind: str
    passed: bool
    checks: dict[str, bool]
    reply: str
    intent: str
    citations: tuple[str, ...]
    guardrail_action: str
    failed: tuple[str, ...] = field(default=())


def check(case: GoldenCase, response: ChatResponse) -> CaseOutcome:
    exp = case.expectations
    reply = response.reply
    folded = reply.casefold()
    checks: dict[str, bool] = {}
    if exp["intent"] is not None:
        checks["intent"] = response.intent == exp["intent"]
    checks["block"] = (response.guardrail_action == "block") == exp["expect_block"]
    checks["refusal"] = is_refusal(reply) == exp["expect_refusal"]
    if exp["must_cite"]:
        checks["must_cite"] = set(exp["must_cite"]) <= set(response.citations)
    if exp["cite_any"]:
        checks["cite_any"] = bool(set(exp["cite_any"]) & set(response.citations))
    if exp["facts"]:
        checks["facts"] = all(f.casefold() in folded for f in exp["facts"])
    if exp["facts_any"]:
        checks["facts_any"] = any(f.casefold() in folded for f in exp["facts_any"])
    if exp["must_not_contain"]:
        checks["must_not_contain"] = not any(s.casefold() in folded for s in exp["must_not_contain"])
    failed = tuple(name for name, ok in checks.items() if not ok)
    return CaseOutcome(
        case.case_id,
        case.kind,
        not failed,
        checks,
        reply,
        response.intent,
        response.citations,
        response.guardrail_action,
        failed,
    )


def request_for(case: GoldenCase, message: str | None = None) -> ChatRequest:
    page = case.page_context
    return ChatRequest(
        session_id=str(case.inputs["session_id"]),
        message=message if message is not None else case.message,
        page_context=PageContext(str(page["page_type"]), str(page["locale"]), page.get("product_id")),
    )


def answer(service: ChatService, case: GoldenCase) -> ChatResponse:
    """Replay the case's earlier customer turns in its session, then send its message."""
    for turn in case.history:
        service.handle(request_for(case, turn))
    return service.handle(request_for(case))


def _unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def offline_tracer() -> Tracer:
    """A tracer pointed at a port nobody listens on: spans are recorded and dropped, never raised."""
    return Tracer(ClientConfig(target=f"127.0.0.1:{_unused_port()}", backoff_max_s=0.2))


def run_offline(
    cases: Iterable[GoldenCase], tracer: Tracer | None = None, providers: Providers | None = None
) -> list[CaseOutcome]:
    """Run the shipped chatbot offline over ``cases`` (one fresh service, so no earlier state)."""
    own = tracer is None
    tracer = tracer or offline_tracer()
    try:
        service = ChatService(tracer, providers or offline_providers())
        return [check(case, answer(service, case)) for case in cases]
    finally:
        if own:
            tracer.shutdown(timeout_s=1)


def pass_rates(outcomes: Sequence[CaseOutcome], by: str = "kind") -> dict[str, tuple[int, int]]:
    """``{group: (passed, total)}`` grouped by ``kind`` (or by ``check`` name: per-check pass counts)."""
    out: dict[str, tuple[int, int]] = {}
    for o in outcomes:
        groups = [(o.kind, o.passed)] if by == "kind" else list(o.checks.items())
        for group, ok in groups:
            passed, total = out.get(group, (0, 0))
            out[group] = (passed + ok, total + 1)
    return dict(sorted(out.items()))
