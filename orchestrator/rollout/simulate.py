"""Simulated canary steps for the judge's tests and ``bench/judge_power.py``: counts, not customers.

:func:`simulate_step` yields the judge's input document at each of ``looks`` analysis intervals,
cumulative since the step began, for a stable and a canary cohort of the same size
(``requests_per_look`` each per interval), split across intents by ``shares``. Each request is an
error, a guardrail block or a grounding failure with its intent's :class:`Profile` probability,
gets a vote with ``feedback_rate`` (a thumbs-down with ``thumbs_down_rate``), a lognormal latency
counted into the chatbot's histogram buckets (``gateway/metrics.py``), and sessions of
``requests_per_session`` requests cost gamma-distributed dollars. Seeded ``numpy`` generators make
every run reproducible.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats

from orchestrator.rollout.counts import bound_label

BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 30.0)  # chatbot_request_latency_seconds
SHARES = {"recommendation": 0.35, "product_question": 0.25, "order_tracking": 0.2, "return_request": 0.12, "faq": 0.08}


@dataclass(frozen=True)
class Profile:
    """How one intent of one cohort behaves."""

    error_rate: float = 0.01
    guardrail_block_rate: float = 0.02
    grounding_failure_rate: float = 0.03
    feedback_rate: float = 0.25  # share of responses that get a vote
    thumbs_down_rate: float = 0.12  # share of votes that are thumbs-down
    requests_per_session: float = 3.0
    cost_per_session_usd: float = 0.004
    latency_median_s: float = 0.9
    latency_sigma: float = 0.5

    def bucket_probabilities(self) -> np.ndarray[Any, np.dtype[np.float64]]:
        """P(latency in each bucket), the last one being (30 s, +Inf)."""
        cdf = stats.lognorm.cdf(BUCKETS_S, s=self.latency_sigma, scale=self.latency_median_s)
        edges = np.concatenate([[0.0], cdf, [1.0]])
        return np.asarray(np.diff(edges), dtype=np.float64)


def cohort(base: Profile | None = None, **per_intent: Profile) -> dict[str, Profile]:
    """Every intent of :data:`SHARES` with ``base``, except those named."""
    base = base or Profile()
    return {intent: per_intent.get(intent, base) for intent in SHARES}


def worse(profile: Profile, **changes: float) -> Profile:
    return dataclasses.replace(profile, **changes)


def simulate_step(
    rng: np.random.Generator,
    stable: Mapping[str, Profile],
    canary: Mapping[str, Profile],
    requests_per_look: int = 200,
    looks: int = 10,
    shares: Mapping[str, float] = SHARES,
) -> Iterator[dict[str, Any]]:
    """The cumulative counts document after each of ``looks`` intervals."""
    intents = sorted(shares)
    p = np.array([shares[i] for i in intents]) / sum(shares.values())
    totals: dict[str, dict[str, np.ndarray[Any, Any]]] = {}
    profiles = {"stable": stable, "canary": canary}
    probabilities = {c: {i: profiles[c][i].bucket_probabilities() for i in intents} for c in profiles}
    for _ in range(looks):
        for c in ("stable", "canary"):
            split = rng.multinomial(requests_per_look, p)
            for intent, n in zip(intents, split, strict=True):
                prof = profiles[c][intent]
                fb = rng.binomial(n, prof.feedback_rate)
                sessions = rng.binomial(n, 1 / prof.requests_per_session)
                cost = rng.gamma(2.0 * sessions, prof.cost_per_session_usd / 2.0) if sessions else 0.0
                row = np.array(
                    [
                        n,
                        rng.binomial(n, prof.error_rate),
                        rng.binomial(n, prof.guardrail_block_rate),
                        rng.binomial(n, prof.grounding_failure_rate),
                        fb,
                        rng.binomial(fb, prof.thumbs_down_rate),
                        sessions,
                    ],
                    dtype=np.int64,
                )
                hist = rng.multinomial(n, probabilities[c][intent])
                acc = totals.setdefault(c, {}).setdefault(intent, np.zeros(7 + 1 + len(hist)))
                acc += np.concatenate([row, [cost], hist])
        yield {"cohorts": {c: {i: _document(totals[c][i]) for i in intents} for c in ("stable", "canary")}}


def _document(acc: np.ndarray[Any, Any]) -> dict[str, Any]:
    n, errors, blocks, grounding, feedback, thumbs_down, sessions = (int(v) for v in acc[:7])
    cumulative = np.cumsum(acc[8:]).astype(np.int64)
    buckets = {bound_label(b): int(c) for b, c in zip((*BUCKETS_S, math.inf), cumulative, strict=True)}
    return {
        "requests": n,
        "errors": errors,
        "guardrail_blocks": blocks,
        "grounding_failures": grounding,
        "feedback": feedback,
        "thumbs_down": thumbs_down,
        "sessions": sessions,
        "cost_usd": float(acc[7]),
        "latency_buckets": buckets,
    }
