"""The shadow comparison: pairs of traces in MLflow, their differences, the noise floor, a verdict.

The chatbot tags a shadowed request's trace ``shadow_role=primary`` and its shadow copy
``shadow_role=candidate`` (and, for every N-th pair, a replay of the stable bundle
``shadow_role=noise``), all with the same ``shadow_pair_id`` and ``retrieval_snapshot_hash``
(``orchestrator.rollout.shadow``). :func:`collect` reads the three roles of a time window from the
traffic experiment and joins them by pair id; :func:`compare` measures, for candidate against
primary and for noise against primary (the floor: what the stable bundle differs from *itself*
on the same inputs):

- ``answer_agreement``: share of pairs whose replies are the same after whitespace and case are
  normalised, or share at least 0.9 of their word tokens (Jaccard);
- ``citation_overlap``: mean Jaccard of the chunk ids cited in the two replies (pairs where
  neither cites count as 1);
- ``intent_mismatch``, ``refusal_mismatch`` (one blocked by a guardrail and the other not),
  ``grounding_failure_rate`` of the other side (a grounded route's answer that cites nothing or
  fails the grounding check);
- ``latency_delta_ms`` (median of other - primary), ``tokens_delta`` and ``cost_delta_usd``
  (mean per pair);
- ``snapshot_mismatches``: pairs whose two traces do not carry the same snapshot hash (must be
  0 for pairs on a retrieval route: it is asserted and reported).

The **verdict** is the rollout judge's (``orchestrator.rollout.judge``), the same function as
every canary step: the primaries are the stable cohort, the candidates the canary cohort, with
per-intent counts of requests, errors, guardrail blocks, grounding failures, cost and latency
buckets (shadow answers get no feedback, so feedback counts are 0).
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from orchestrator.rollout.judge import JudgeConfig

SHADOW_CONFIG = dataclasses.replace(
    JudgeConfig(), rates=tuple(r for r in JudgeConfig().rates if r.metric != "thumbs_down_rate")
)
"""The judge's config for shadow pairs: customers never see a shadow answer, so there is no feedback
to judge; everything else is the canary's config."""
_CITE = re.compile(r"\[([A-Za-z0-9_.:-]+)\]")
_WORD = re.compile(r"\w+", re.UNICODE)
LATENCY_BOUNDS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
ROLES = ("primary", "candidate", "noise")


@dataclass(frozen=True)
class Answer:
    """What the comparison reads of one trace."""

    trace_id: str
    pair_id: str
    role: str
    release_bundle: str
    intent: str
    reply: str
    blocked: bool
    grounded_route: bool
    grounding_failed: bool
    error: bool
    latency_ms: float
    tokens: int
    cost_usd: float
    snapshot_hash: str
    session_id: str
    cache_hit: bool = False

    @property
    def citations(self) -> frozenset[str]:
        return frozenset(_CITE.findall(self.reply))


@dataclass
class Pair:
    pair_id: str
    answers: dict[str, Answer] = field(default_factory=dict)


def answer_of(trace: Any) -> Answer | None:
    """An :class:`Answer` from an MLflow ``Trace`` (``None`` when it is not a shadow-pair trace)."""
    tags = trace.info.tags
    pair, role = tags.get("shadow_pair_id"), tags.get("shadow_role")
    if not pair or role not in ROLES:
        return None
    spans = trace.data.spans
    root = next((s for s in spans if s.parent_id is None), None)
    outputs = root.outputs if root is not None and isinstance(root.outputs, Mapping) else {}
    attrs = root.attributes if root is not None else {}
    by_name: dict[str, Any] = {}
    for s in spans:
        by_name.setdefault(s.name, s)
    grounding = by_name.get("grounding_check")
    generations = [s for s in spans if s.name == "bedrock_generate"]
    reply = str(outputs.get("reply", ""))
    grounded_route = "retrieve_chunks" in by_name and bool(generations)
    grounding_failed = grounded_route and (
        (grounding is not None and grounding.attributes.get("passed") is False) or not _CITE.search(reply)
    )
    return Answer(
        trace_id=trace.info.trace_id,
        pair_id=pair,
        role=role,
        release_bundle=tags.get("release_bundle", ""),
        intent=tags.get("intent", "unknown"),
        reply=reply,
        blocked=attrs.get("guardrail_action") == "block",
        grounded_route=grounded_route,
        grounding_failed=grounding_failed,
        error=str(trace.info.state).endswith("ERROR"),
        latency_ms=float(trace.info.execution_duration or 0),
        tokens=sum(
            int(g.attributes.get("input_tokens", 0)) + int(g.attributes.get("output_tokens", 0)) for g in generations
        ),
        cost_usd=sum(float(g.attributes.get("cost_usd", 0.0)) for g in generations),
        snapshot_hash=tags.get("retrieval_snapshot_hash", ""),
        session_id=tags.get("session_id", ""),
        cache_hit=tags.get("cache_hit") == "true",
    )


def collect(client: Any, experiment_ids: list[str], since_ms: int, max_results: int = 5000) -> list[Pair]:
    """The shadow pairs whose traces started after ``since_ms`` (three searches, one per role)."""
    pairs: dict[str, Pair] = {}
    for role in ROLES:
        token, seen = None, 0
        while seen < max_results:  # the server answers at most 500 per page
            page = client.search_traces(
                locations=experiment_ids,
                filter_string=f"tags.shadow_role = '{role}' AND timestamp_ms > {int(since_ms)}",
                max_results=min(500, max_results - seen),
                page_token=token,
            )
            for trace in page:
                answer = answer_of(trace)
                if answer is not None:
                    pairs.setdefault(answer.pair_id, Pair(answer.pair_id)).answers[role] = answer
            seen += len(page)
            token = getattr(page, "token", None)
            if not token or not page:
                break
    return [p for p in pairs.values() if "primary" in p.answers and len(p.answers) > 1]


def comparable(pairs: Iterable[Pair]) -> tuple[list[Pair], int]:
    """The pairs whose primary really answered (not from the response cache, which a shadow run
    never uses: a cached primary costs nothing and is fast, so it would flatter the stable side),
    and how many were left out."""
    kept = [p for p in pairs if not p.answers["primary"].cache_hit]
    return kept, sum(1 for p in pairs if p.answers["primary"].cache_hit)


def _tokens(text: str) -> set[str]:
    return set(_WORD.findall(_CITE.sub("", text).lower()))


def _agree(a: str, b: str) -> bool:
    if " ".join(a.lower().split()) == " ".join(b.lower().split()):
        return True
    ta, tb = _tokens(a), _tokens(b)
    return bool(ta | tb) and len(ta & tb) / len(ta | tb) >= 0.9


def _overlap(a: frozenset[str], b: frozenset[str]) -> float:
    return 1.0 if not a and not b else len(a & b) / len(a | b)


def side_metrics(pairs: Iterable[Pair], role: str) -> dict[str, float]:
    """``role`` (candidate or noise) against the primary, over the pairs that have it."""
    both = [(p.answers["primary"], p.answers[role]) for p in pairs if role in p.answers]
    if not both:
        return {"pairs": 0.0}
    n = len(both)
    snapshot_pairs = [(a, b) for a, b in both if a.grounded_route and b.grounded_route]
    return {
        "pairs": float(n),
        "answer_agreement": sum(_agree(a.reply, b.reply) for a, b in both) / n,
        "citation_overlap": sum(_overlap(a.citations, b.citations) for a, b in both) / n,
        "intent_mismatch": sum(a.intent != b.intent for a, b in both) / n,
        "refusal_mismatch": sum(a.blocked != b.blocked for a, b in both) / n,
        "grounding_failure_rate": sum(b.grounding_failed for _, b in both) / n,
        "primary_grounding_failure_rate": sum(a.grounding_failed for a, _ in both) / n,
        "latency_delta_ms": statistics.median(b.latency_ms - a.latency_ms for a, b in both),
        "tokens_delta": sum(b.tokens - a.tokens for a, b in both) / n,
        "cost_delta_usd": sum(b.cost_usd - a.cost_usd for a, b in both) / n,
        "snapshot_mismatches": float(sum(a.snapshot_hash != b.snapshot_hash for a, b in snapshot_pairs)),
    }


def _counts(answers: Iterable[Answer]) -> dict[str, dict[str, Any]]:
    per: dict[str, dict[str, Any]] = defaultdict(
        lambda: {
            "requests": 0,
            "errors": 0,
            "guardrail_blocks": 0,
            "grounding_failures": 0,
            "feedback": 0,
            "thumbs_down": 0,
            "sessions": set(),
            "cost_usd": 0.0,
            "latency_buckets": {**{str(b): 0 for b in LATENCY_BOUNDS_S}, "+Inf": 0},
        }
    )
    for a in answers:
        c = per[a.intent]
        c["requests"] += 1
        c["errors"] += a.error
        c["guardrail_blocks"] += a.blocked
        c["grounding_failures"] += a.grounding_failed
        c["sessions"].add(a.session_id)
        c["cost_usd"] += a.cost_usd
        for bound in LATENCY_BOUNDS_S:
            if a.latency_ms / 1000 <= bound:
                c["latency_buckets"][str(bound)] += 1
        c["latency_buckets"]["+Inf"] += 1
    return {
        intent: {**c, "sessions": len(c["sessions"]), "cost_usd": round(c["cost_usd"], 8)} for intent, c in per.items()
    }


def judge_input(pairs: Iterable[Pair]) -> dict[str, Any]:
    """The judge's input document: primaries as the stable cohort, candidates as the canary
    (over the :func:`comparable` pairs)."""
    with_candidate = [p for p in comparable(pairs)[0] if "candidate" in p.answers]
    return {
        "cohorts": {
            "stable": _counts(p.answers["primary"] for p in with_candidate),
            "canary": _counts(p.answers["candidate"] for p in with_candidate),
        }
    }


def compare(pairs: list[Pair]) -> dict[str, Any]:
    """Both sides' metrics and the pairs' trace ids (the report logged with the verdict), over the
    :func:`comparable` pairs."""
    all_pairs = pairs
    pairs, cached = comparable(pairs)
    return {
        "excluded_cached_primaries": cached,
        "candidate": side_metrics(pairs, "candidate"),
        "noise_floor": side_metrics(pairs, "noise"),
        "pairs": [
            {"pair_id": p.pair_id, **{role: a.trace_id for role, a in sorted(p.answers.items())}}
            for p in sorted(pairs, key=lambda p: p.pair_id)
        ],
        "bundles": sorted({f"{a.role}:{a.release_bundle}" for p in all_pairs for a in p.answers.values()}),
    }
