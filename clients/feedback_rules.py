"""What a valid feedback event is: one definition for the gateway, which enforces it, and for
the applications in front of it (the orchestrator's ``/v1/feedback``), which reject the same
events up front with a 4xx instead of forwarding what the gateway would refuse.

Spec §10: a thumbs up or down on one response, with an optional reason code from the list the
MangaAssist UI offers, an optional comment, and the ids that join it to its trace.
"""

from __future__ import annotations

# The reason codes the MangaAssist UI offers; empty means the customer gave none.
REASON_CODES = frozenset(
    {
        "",
        "helpful",
        "accurate",
        "wrong_recommendation",
        "wrong_answer",
        "not_grounded",
        "irrelevant",
        "incomplete",
        "outdated",
        "wrong_price_or_stock",
        "wrong_language",
        "too_slow",
        "unsafe",
        "offensive",
        "other",
    }
)
MAX_ID_CHARS = 128  # event_id, response_id
MAX_COMMENT_CHARS = 2000
MAX_CONTEXT_CHARS = 128  # session_id, prompt_version, release_bundle (they become metric labels and tags)
MAX_FUTURE_S = 24 * 3600  # a feedback time at most this far ahead of the receiver's clock
ZERO_TRACE_ID = "0" * 32


def reason_code_problem(code: str) -> str | None:
    """Why ``code`` is not an accepted reason code, or None."""
    if code in REASON_CODES:
        return None
    known = ", ".join(sorted(c for c in REASON_CODES if c))
    return f"unknown reason code {code[:40]!r}; known: {known}"


def time_problem(time_s: float, now_s: float) -> str | None:
    """Why a feedback time (Unix seconds) is not accepted, or None."""
    if time_s <= 0:
        return "must be after 1970-01-01"
    if time_s > now_s + MAX_FUTURE_S:
        return "must not be more than a day in the future"
    return None
