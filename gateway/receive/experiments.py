"""Which MLflow experiments a request may name (DESIGN §13): a length bound, an optional
allow-list (exact names, or prefixes written ``name*``) and a cap on distinct names per process,
so a careless or hostile client cannot create experiments without limit. A request that names
none goes to the gateway's default experiment, which is always allowed and not counted.
"""

from __future__ import annotations

from enum import StrEnum


class Refusal(StrEnum):
    TOO_LONG = "too_long"
    NOT_ALLOWED = "not_allowed"
    CAP = "cap"


class ExperimentPolicy:
    """``check(name)`` → None when spans may go to ``name``, else why not. Event loop only."""

    def __init__(self, default: str, allowed: tuple[str, ...], max_experiments: int, max_chars: int) -> None:
        self._default = default
        self._exact = frozenset(a for a in allowed if not a.endswith("*"))
        self._prefixes = tuple(a[:-1] for a in allowed if a.endswith("*"))
        self._restricted = bool(allowed)
        self._max = max_experiments
        self._max_chars = max_chars
        self._seen: set[str] = set()

    def check(self, name: str) -> Refusal | None:
        if not name or name == self._default or name in self._seen:
            return None
        if len(name) > self._max_chars:
            return Refusal.TOO_LONG
        if self._restricted and name not in self._exact and not name.startswith(self._prefixes):
            return Refusal.NOT_ALLOWED
        if len(self._seen) >= self._max:
            return Refusal.CAP
        self._seen.add(name)
        return None

    def explain(self, refusal: Refusal, name: str) -> str:
        shown = name[:40] + ("…" if len(name) > 40 else "")
        if refusal is Refusal.TOO_LONG:
            return (
                f"experiment name is {len(name)} characters; at most {self._max_chars} "
                "(TRACEGW_MAX_EXPERIMENT_NAME_CHARS)"
            )
        if refusal is Refusal.NOT_ALLOWED:
            return f"experiment {shown!r} is not in TRACEGW_ALLOWED_EXPERIMENTS"
        return (
            f"experiment {shown!r} would be distinct experiment number {self._max + 1}; this gateway "
            f"writes to at most {self._max} (TRACEGW_MAX_EXPERIMENTS)"
        )
