"""Simulated customers (a simulation, named so): they vote on the answer they really got.

Used by the rollout demo and the rollout tests instead of fixed votes, so that a worse bundle
really draws more complaints. A customer votes on ``vote_rate`` of answers; a vote is a
thumbs-down with probability

    base  +  0.55 if an informational answer cites nothing (ungrounded)
          +  0.45 if the reply is not in the customer's language
          +  0.55 if a guardrail blocked an ordinary question (refused when it should answer)
          +  0.30 if the answer took longer than ``slow_ms``

capped at 0.95, else a thumbs-up. Everything comes from the chat response (``citations``,
``guardrail_action``, ``reply``) and the measured latency; the random draws come from a seeded
generator, so a run is reproducible.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

WEIGHTS = {"ungrounded": 0.55, "wrong_language": 0.45, "refused": 0.55, "slow": 0.30}
REASON_CODES = {
    "ungrounded": "not_grounded",
    "wrong_language": "wrong_language",
    "refused": "incomplete",
    "slow": "too_slow",
}
"""What the customer picks in the UI for each complaint (``clients.feedback_rules.REASON_CODES``)."""
INFORMATIONAL = frozenset({"product_question", "recommendation", "return_policy", "faq"})
_JAPANESE = re.compile(r"[\u3040-\u30ff\u4e00-\u9fff]")


@dataclass(frozen=True)
class Customers:
    seed: int = 7
    vote_rate: float = 0.3
    base: float = 0.04
    slow_ms: float = 2000.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rng", random.Random(self.seed))

    def reasons(self, intent: str, message: str, response: dict[str, Any], latency_ms: float) -> list[str]:
        """Why this customer would be unhappy with ``response`` (empty: nothing wrong)."""
        out = []
        blocked = response.get("guardrail_action") == "block"
        if intent in INFORMATIONAL and not blocked and not response.get("citations"):
            out.append("ungrounded")
        if bool(_JAPANESE.search(message)) != bool(_JAPANESE.search(str(response.get("reply", "")))):
            out.append("wrong_language")
        if blocked and intent != "prompt_injection":
            out.append("refused")
        if latency_ms > self.slow_ms:
            out.append("slow")
        return out

    def vote(self, intent: str, message: str, response: dict[str, Any], latency_ms: float) -> tuple[str, str] | None:
        """``(feedback, reason_code)`` or ``None`` when this customer does not vote."""
        rng: random.Random = self._rng  # type: ignore[attr-defined]
        if rng.random() >= self.vote_rate:
            return None
        reasons = self.reasons(intent, message, response, latency_ms)
        p_down = min(0.95, self.base + sum(WEIGHTS[r] for r in reasons))
        if rng.random() < p_down:
            return "thumbs_down", REASON_CODES[reasons[0]] if reasons else "other"
        return "thumbs_up", "helpful"
