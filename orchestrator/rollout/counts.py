"""The judge's input: per-cohort, per-intent counts, validated, and the quantile of a histogram.

The input is the one issue 20 fixes, built the same way by the live judge (from Prometheus or the
sidecars' ``/metrics``) and by a replay file::

    {"cohorts": {"stable": {INTENT: COUNTS, ...}, "canary": {INTENT: COUNTS, ...}}}

    COUNTS = {"requests", "errors", "guardrail_blocks", "grounding_failures", "feedback",
              "thumbs_down", "sessions", "cost_usd",
              "latency_buckets": {"0.1": n, "0.25": n, ..., "+Inf": n}}

Counts are cumulative since the step began, Prometheus style: every ``latency_buckets`` value is
the number of requests at most that many seconds long, so the values never decrease with the
bound and ``"+Inf"`` equals ``requests``. ``feedback`` counts served responses that received a
thumbs vote (per served response, not per wall-clock window, so late votes land in the cohort that
earned them); hence ``errors``, ``guardrail_blocks``, ``grounding_failures``, ``feedback`` and
``sessions`` are at most ``requests`` and ``thumbs_down`` at most ``feedback``.

:func:`parse` checks all of it and raises one :class:`CountsError` listing every problem, each
naming the field (``cohorts.canary.faq.errors: 7 > requests 5``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

COHORTS = ("stable", "canary")
TOTAL = "_total"  # the stratum of all intents together; not an allowed intent name
INT_FIELDS = ("requests", "errors", "guardrail_blocks", "grounding_failures", "feedback", "thumbs_down", "sessions")
FIELDS = (*INT_FIELDS, "cost_usd", "latency_buckets")
# field -> the field it may not exceed
AT_MOST = {
    "errors": "requests",
    "guardrail_blocks": "requests",
    "grounding_failures": "requests",
    "feedback": "requests",
    "sessions": "requests",
    "thumbs_down": "feedback",
}


class CountsError(ValueError):
    """The input is not a valid counts document; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


@dataclass(frozen=True)
class Counts:
    """One cohort's counts in one stratum; ``buckets`` are ``(upper bound s, cumulative count)``, sorted."""

    requests: int = 0
    errors: int = 0
    guardrail_blocks: int = 0
    grounding_failures: int = 0
    feedback: int = 0
    thumbs_down: int = 0
    sessions: int = 0
    cost_usd: float = 0.0
    buckets: tuple[tuple[float, int], ...] = ()

    def get(self, field: str) -> int:
        value = getattr(self, field)
        assert isinstance(value, int)
        return value

    def __add__(self, other: Counts) -> Counts:
        merged: dict[float, int] = dict(self.buckets)
        for bound, n in other.buckets:
            merged[bound] = merged.get(bound, 0) + n
        summed = {f: self.get(f) + other.get(f) for f in INT_FIELDS}
        return Counts(**summed, cost_usd=self.cost_usd + other.cost_usd, buckets=tuple(sorted(merged.items())))

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {f: self.get(f) for f in INT_FIELDS}
        out["cost_usd"] = self.cost_usd
        out["latency_buckets"] = {bound_label(b): n for b, n in self.buckets}
        return out


@dataclass(frozen=True)
class Cohorts:
    """Both cohorts, per intent; :meth:`stratum` gives either side of one stratum (intent or ``_total``)."""

    stable: Mapping[str, Counts]
    canary: Mapping[str, Counts]

    def intents(self) -> list[str]:
        return sorted(set(self.stable) | set(self.canary))

    def stratum(self, name: str) -> tuple[Counts, Counts]:
        """``(stable, canary)`` for an intent (zeros where a cohort has none) or for ``_total``."""
        if name == TOTAL:
            return sum(self.stable.values(), Counts()), sum(self.canary.values(), Counts())
        return self.stable.get(name, Counts()), self.canary.get(name, Counts())

    def to_json(self) -> dict[str, Any]:
        return {
            "cohorts": {
                "stable": {k: v.to_json() for k, v in sorted(self.stable.items())},
                "canary": {k: v.to_json() for k, v in sorted(self.canary.items())},
            }
        }


def bound_label(bound: float) -> str:
    """Prometheus' ``le`` label for a bucket bound: ``+Inf``, or the shortest float text (``0.25``, ``1``)."""
    if math.isinf(bound):
        return "+Inf"
    return f"{bound:g}" if float(f"{bound:g}") == bound else repr(bound)


def parse(document: Any) -> Cohorts:
    """Validate a counts document (see the module docstring) into :class:`Cohorts`, or raise :class:`CountsError`."""
    problems: list[str] = []
    if not isinstance(document, Mapping):
        raise CountsError([f"the input must be a JSON object with 'cohorts', got {type(document).__name__}"])
    extra = sorted(set(document) - {"cohorts"})
    if extra:
        problems.append(f"unknown top-level field(s) {', '.join(map(repr, extra))}: expected only 'cohorts'")
    cohorts = document.get("cohorts")
    if not isinstance(cohorts, Mapping):
        raise CountsError([*problems, "cohorts: missing or not an object with 'stable' and 'canary'"])
    for name in sorted(set(cohorts) - set(COHORTS)):
        problems.append(f"cohorts.{name}: unknown cohort (expected 'stable' and 'canary')")
    parsed: dict[str, dict[str, Counts]] = {}
    layouts: dict[tuple[float, ...], str] = {}
    for cohort in COHORTS:
        intents = cohorts.get(cohort)
        if not isinstance(intents, Mapping):
            problems.append(f"cohorts.{cohort}: missing or not an object of INTENT: COUNTS")
            continue
        parsed[cohort] = {}
        for intent, raw in intents.items():
            where = f"cohorts.{cohort}.{intent}"
            if not isinstance(intent, str) or not intent.strip() or intent == TOTAL:
                problems.append(f"{where}: an intent name must be a non-empty string other than {TOTAL!r}")
                continue
            counts = _counts(raw, where, problems)
            if counts is None:
                continue
            parsed[cohort][intent] = counts
            if counts.buckets:
                layouts.setdefault(tuple(b for b, _ in counts.buckets), where)
    if len(layouts) > 1:
        shown = "; ".join(f"{w}: {', '.join(bound_label(b) for b in lay)}" for lay, w in layouts.items())
        problems.append(f"latency_buckets: every COUNTS must use the same bucket bounds, found {shown}")
    if problems:
        raise CountsError(problems)
    return Cohorts(stable=parsed["stable"], canary=parsed["canary"])


def _counts(raw: Any, where: str, problems: list[str]) -> Counts | None:
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: COUNTS must be an object, got {type(raw).__name__}")
        return None
    before = len(problems)
    for name in sorted(set(raw) - set(FIELDS)):
        problems.append(f"{where}.{name}: unknown field (expected {', '.join(FIELDS)})")
    ints: dict[str, int] = {}
    for name in INT_FIELDS:
        value = raw.get(name)
        if value is None:
            problems.append(f"{where}.{name}: missing")
        elif isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{where}.{name}: must be a whole number, got {value!r}")
        elif value < 0:
            problems.append(f"{where}.{name}: negative ({value})")
        else:
            ints[name] = value
    for name, limit in AT_MOST.items():
        if name in ints and limit in ints and ints[name] > ints[limit]:
            problems.append(f"{where}.{name}: {ints[name]} > {limit} {ints[limit]}")
    cost = raw.get("cost_usd")
    if cost is None:
        problems.append(f"{where}.cost_usd: missing")
    elif isinstance(cost, bool) or not isinstance(cost, (int, float)) or not math.isfinite(cost):
        problems.append(f"{where}.cost_usd: must be a finite number, got {cost!r}")
    elif cost < 0:
        problems.append(f"{where}.cost_usd: negative ({cost})")
    buckets = _buckets(raw.get("latency_buckets"), f"{where}.latency_buckets", ints.get("requests"), problems)
    if len(problems) > before:
        return None
    assert isinstance(cost, (int, float)) and buckets is not None
    return Counts(**ints, cost_usd=float(cost), buckets=buckets)


def _buckets(raw: Any, where: str, requests: int | None, problems: list[str]) -> tuple[tuple[float, int], ...] | None:
    if raw is None:
        problems.append(f"{where}: missing")
        return None
    if not isinstance(raw, Mapping):
        problems.append(f"{where}: must be an object of bound: cumulative count, got {type(raw).__name__}")
        return None
    if not raw:
        if requests:
            problems.append(f"{where}: empty, but requests is {requests} (expected '+Inf': {requests})")
            return None
        return ()
    pairs: dict[float, int] = {}
    ok = True
    for label, n in raw.items():
        try:
            bound = float(label)
        except (TypeError, ValueError):
            bound = math.nan
        if math.isnan(bound) or bound == -math.inf or (math.isinf(bound) and label != "+Inf"):
            problems.append(f"{where}: bucket bound {label!r} is not a number of seconds or '+Inf'")
            ok = False
        elif bound in pairs:
            problems.append(f"{where}: bucket bound {label!r} appears twice")
            ok = False
        elif isinstance(n, bool) or not isinstance(n, int) or n < 0:
            problems.append(f"{where}.{label}: must be a non-negative whole number, got {n!r}")
            ok = False
        else:
            pairs[bound] = n
    if not ok:
        return None
    ordered = sorted(pairs.items())
    if not math.isinf(ordered[-1][0]):
        problems.append(f"{where}: no '+Inf' bucket")
        return None
    for (b0, n0), (b1, n1) in itertools.pairwise(ordered):
        if n1 < n0:
            problems.append(
                f"{where}: not cumulative: {bound_label(b1)} has {n1} < {n0} at {bound_label(b0)} "
                "(counts must not decrease as the bound grows)"
            )
            return None
    if requests is not None and ordered[-1][1] != requests:
        problems.append(f"{where}.+Inf: {ordered[-1][1]} != requests {requests}")
        return None
    return tuple(ordered)


def histogram_quantile(q: float, buckets: tuple[tuple[float, int], ...]) -> float:
    """The ``q`` quantile of cumulative ``buckets`` exactly as Prometheus' ``histogram_quantile``.

    Linear interpolation inside the bucket holding rank ``q * count``; the first bucket starts at 0
    (when its bound is positive); a rank in the ``+Inf`` bucket gives the highest finite bound.
    NaN when there are no observations or fewer than two buckets.
    """
    if not buckets or not math.isinf(buckets[-1][0]) or len(buckets) < 2:
        return math.nan
    observations = buckets[-1][1]
    if observations == 0:
        return math.nan
    rank = q * observations
    b = next((i for i, (_, n) in enumerate(buckets[:-1]) if n >= rank), len(buckets) - 1)
    if b == len(buckets) - 1:
        return buckets[-2][0]
    if b == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[b][0], buckets[b][1]
    if b > 0:
        start = buckets[b - 1][0]
        count -= buckets[b - 1][1]
        rank -= buckets[b - 1][1]
    return start + (end - start) * (rank / count)


def histogram_cdf(x: float, buckets: tuple[tuple[float, int], ...]) -> float:
    """The share of observations at most ``x``, interpolated inside a bucket like :func:`histogram_quantile`.

    Its inverse on the finite buckets; above the highest finite bound it is that bound's share.
    """
    total = buckets[-1][1] if buckets else 0
    if total == 0:
        return math.nan
    start, below = 0.0, 0
    for bound, n in buckets:
        if math.isinf(bound):
            return below / total
        if x <= bound:
            return (below + (n - below) * max(0.0, x - start) / (bound - start)) / total if bound > start else n / total
        start, below = bound, n
    return below / total
