"""The rollout judge: one pure function from counts to a verdict, for shadow and every canary step.

``judge(inputs, config) -> record``. ``inputs`` is the counts document of
:mod:`orchestrator.rollout.counts` (cumulative since the step began); the record is self-contained
(the judge's name and version, the config, the inputs, one reason per metric and stratum) and
:func:`dumps` writes it byte for byte the same for the same input (sorted keys, computed floats
rounded to 6 significant digits), so ``mangaassist-release judge --replay`` gives the verdict the
live run recorded. No mlflow here: the controller stores the record on the bundle.

Verdicts. Per metric and stratum: ``inconclusive`` when either cohort is below the metric's
minimum sample (never ``fail``); otherwise ``fail`` or ``pass``. Per metric: ``fail`` when any
judged stratum fails; else ``inconclusive`` when the ``_total`` stratum is below the minimum; else
``pass``. Overall: any ``fail`` -> ``fail``; else any ``inconclusive`` -> ``inconclusive`` (the
step holds: no promotion, no rollback); else ``pass``. ``error`` is the caller's, for a metrics
source that cannot be read (:func:`error_record`); :class:`ErrorBudget` holds on it and aborts
after N consecutive errors (Argo's ``consecutiveErrorLimit``).

Rare-event rates (error, guardrail block, grounding failure: per request; thumbs-down: per vote).
H0 "canary rate <= (1 + r) x stable rate" against "canary worse than that", by the exact
conditional test for two counts (``scipy.stats.binomtest``): given the ``m`` events of both
cohorts, the canary's share is Binomial(m, pi0), pi0 = (1+r) n_c / ((1+r) n_c + n_s), at the
boundary of H0. It is the classical exact test of a rate ratio (the rare-event form of Fisher's
exact test): no large-sample approximation (sparse counts are where z-tests are wrong), unequal
cohort sizes and a relative margin handled exactly, ~30 us a test; for binomial counts at higher
rates it is conservative (their variance is below Poisson's). Boschloo's and Barnard's tests were
measured at 7-23 s per table at 800-1,200 requests a side: too slow to run every interval. A
``fail`` also needs the observed ``canary rate - stable rate`` above an absolute practical margin
``a``, so a tiny difference made significant by a large sample does not roll back.

Repeated looks. The live judge re-checks the cumulative counts every analysis interval, at most
``looks_per_step`` (K) times per step, holds included (the controller counts its maximum hold in
K). Every look tests at ``alpha_look = alpha / K``: by the union bound the probability of a false
``fail`` at any of the K looks is at most ``alpha``, whatever the stopping rule and however the
cumulative counts are correlated (correlation only makes it conservative). Within a metric the
strata (``_total`` and every intent) are Holm-adjusted at ``alpha_look``: family-wise, because
any one false stratum failure is a rollback. So the four rare metrics roll back an unchanged
canary in at most 4 x 0.0025 = 1 % of steps, by construction. (An always-valid mixture SPRT would
not need K; it was not needed: the judge cannot see the look index, and a step's number of
intervals is the controller's setting, recorded in the config. Each look past K adds
``alpha_look``.)

Zero-baseline rule (the sparse regression). No valid test within that budget can fail Kayenta's
sparse example (canary errors [0,1,2,1,0,0] per interval against zeros: 4 events to 0 at 800
requests a side): with equal cohorts 4 to 0 is weak evidence, p = 1/16 for this test, 0.062
Fisher, 0.058 Boschloo, 0.023 Barnard (measured), against a per-look level of 0.00025; a level
that let it fail would roll back several per cent of unchanged canaries. So the ``_total``
stratum also fails when the stable cohort has no event in at least
``zero_baseline_min_denominator`` (500) and the canary has at least ``zero_baseline_min_events``
(4), above the practical margin: a failure mode the stable bundle does not show. This rule is
not covered by ``alpha``, and it is the judge's only measured source of false rollbacks:
``bench/judge_power.py`` (10 looks of 200 requests a side) finds 0.15 % of unchanged canaries
rolled back by it at a 1 % error rate and 3-4 % at true rates of 0.1-0.5 % (the stable cohort
can sit at zero while the canary reaches 4); without it, 0 of 4,000.
``zero_baseline_min_events = 0`` turns it off.

Latency: the ``quantile`` (p95) of each cohort from its cumulative buckets, interpolated as
Prometheus' ``histogram_quantile`` does; the bound is stable x (1 + rel) + abs_s. ``fail`` when
the canary's quantile is above the bound **and** the share of canary requests slower than the
bound (interpolated in the buckets the same way) is significantly above 1 - quantile (one-sided
binomial test, Holm across strata, ``alpha_look``): the tolerance says how much worse is too
much, the test keeps bucket noise at a few hundred requests from rolling back. Approximate: the
bound comes from the stable cohort's own estimate (the tolerance absorbs its noise).

Cost per session: ``cost_usd / sessions`` per cohort; the bound is stable x (1 + rel) + abs_usd.
``fail`` when the canary's mean is above it and a one-sided z-test agrees; the counts carry no
per-session variance, so the standard error assumes a coefficient of variation per session
(``assumed_cv``, 1.0, in the config): approximate, like the latency check.

Strata: every metric is judged on ``_total`` (all intents) and on each intent, so a regression
confined to one intent is not averaged away. An intent below the minimum is ``inconclusive`` for
its stratum and reported, but does not hold the step when ``_total`` has enough samples: a rare
intent would otherwise hold every step of a low-traffic canary forever (the field's "low traffic
read as failure", turned into "read as a hold"). The price: a regression confined to an intent
too rare to reach the minimum is caught only through ``_total``, or once the intent has the
samples.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import scipy
from scipy import stats

from orchestrator.rollout.counts import (
    TOTAL,
    Cohorts,
    bound_label,
    histogram_cdf,
    histogram_quantile,
    parse,
)

JUDGE_NAME = "mangaassist-rollout-judge"
JUDGE_VERSION = "1.0"
VERDICTS = ("pass", "fail", "inconclusive", "error")
EXIT_CODES = {"pass": 0, "fail": 1, "error": 2, "inconclusive": 3}
SIGNIFICANT = 6  # floats in a record are rounded to this many significant digits


@dataclass(frozen=True)
class RateRule:
    """A rare-event rate ``numerator / denominator`` and how much worse the canary may be."""

    metric: str
    numerator: str
    denominator: str
    relative_margin: float  # r: H0 is canary rate <= (1 + r) * stable rate
    absolute_margin: float  # a: a fail also needs canary rate - stable rate > a
    min_denominator: int  # per cohort, per stratum


@dataclass(frozen=True)
class LatencyRule:
    quantile: float = 0.95
    relative_tolerance: float = 0.2
    absolute_tolerance_s: float = 0.05
    min_requests: int = 200


@dataclass(frozen=True)
class CostRule:
    relative_tolerance: float = 0.15
    absolute_tolerance_usd: float = 0.0
    min_sessions: int = 30
    assumed_cv: float = 1.0  # per-session cost spread the z-test assumes (the counts carry no variance)


DEFAULT_RATES = (
    RateRule("error_rate", "errors", "requests", 0.2, 0.002, 50),
    RateRule("guardrail_block_rate", "guardrail_blocks", "requests", 0.2, 0.005, 50),
    RateRule("grounding_failure_rate", "grounding_failures", "requests", 0.2, 0.005, 50),
    RateRule("thumbs_down_rate", "thumbs_down", "feedback", 0.2, 0.02, 20),
)


@dataclass(frozen=True)
class JudgeConfig:
    """Thresholds, margins and minimums; part of every record, so a replay judges with the same ones."""

    alpha: float = 0.0025  # per rare metric per step: false-fail probability over all looks
    looks_per_step: int = 10
    rates: tuple[RateRule, ...] = DEFAULT_RATES
    latency: LatencyRule = field(default_factory=LatencyRule)
    cost: CostRule = field(default_factory=CostRule)
    zero_baseline_min_events: int = 4  # 0 turns the zero-baseline rule off
    zero_baseline_min_denominator: int = 500

    @property
    def alpha_look(self) -> float:
        return self.alpha / self.looks_per_step

    def validate(self) -> list[str]:
        """Every problem at once (empty when valid)."""
        problems = []
        if not 0 < self.alpha < 1:
            problems.append(f"alpha must be in (0, 1), got {self.alpha}")
        if self.looks_per_step < 1:
            problems.append(f"looks_per_step must be >= 1, got {self.looks_per_step}")
        names = [r.metric for r in self.rates]
        if len(set(names)) != len(names):
            problems.append(f"rates: metric names repeat: {names}")
        for r in self.rates:
            if r.numerator not in AT_MOST_DENOMINATOR or AT_MOST_DENOMINATOR[r.numerator] != r.denominator:
                problems.append(f"rates.{r.metric}: {r.numerator}/{r.denominator} is not a rate of the counts")
            if r.relative_margin < 0 or r.absolute_margin < 0 or r.min_denominator < 1:
                problems.append(f"rates.{r.metric}: margins must be >= 0 and min_denominator >= 1")
        if not 0 < self.latency.quantile < 1 or self.latency.min_requests < 1:
            problems.append("latency: quantile must be in (0, 1) and min_requests >= 1")
        if self.latency.relative_tolerance < 0 or self.latency.absolute_tolerance_s < 0:
            problems.append("latency: tolerances must be >= 0")
        if self.cost.relative_tolerance < 0 or self.cost.absolute_tolerance_usd < 0 or self.cost.min_sessions < 1:
            problems.append("cost: tolerances must be >= 0 and min_sessions >= 1")
        if self.zero_baseline_min_events < 0 or self.zero_baseline_min_denominator < 1:
            problems.append("zero_baseline: min_events must be >= 0 and min_denominator >= 1")
        return problems

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["rates"] = [dataclasses.asdict(r) for r in self.rates]
        out["alpha_look"] = _round(self.alpha_look)
        return out

    @classmethod
    def from_json(cls, raw: Any) -> JudgeConfig:
        """The config a record carries; raises ``ValueError`` naming what is wrong."""
        if not isinstance(raw, Mapping):
            raise ValueError("config must be an object")
        try:
            values = {k: v for k, v in raw.items() if k != "alpha_look"}
            values["rates"] = tuple(RateRule(**r) for r in values.get("rates", ()))
            values["latency"] = LatencyRule(**values.get("latency", {}))
            values["cost"] = CostRule(**values.get("cost", {}))
            config = cls(**values)
            problems = config.validate()
        except TypeError as exc:  # a field missing, unknown or of the wrong type
            raise ValueError(f"config: {exc}") from None
        if problems:
            raise ValueError("config: " + "; ".join(problems))
        return config


AT_MOST_DENOMINATOR = {
    "errors": "requests",
    "guardrail_blocks": "requests",
    "grounding_failures": "requests",
    "thumbs_down": "feedback",
}


def judge(inputs: Mapping[str, Any], config: JudgeConfig | None = None) -> dict[str, Any]:
    """The verdict record for a counts document; raises ``CountsError`` for an invalid one."""
    config = config or JudgeConfig()
    problems = config.validate()
    if problems:
        raise ValueError("config: " + "; ".join(problems))
    cohorts = parse(inputs)
    strata = [TOTAL, *cohorts.intents()]
    reasons: list[dict[str, Any]] = []
    metrics: dict[str, str] = {}
    for rule in config.rates:
        rows = _decide([_rate_row(rule, cohorts, s, config) for s in strata], config)
        _zero_baseline(rows[0], rule, config)  # rows[0] is _total
        metrics[rule.metric] = _metric_verdict(rows)
        reasons += rows
    for metric, check in (("latency", _latency_row), ("cost_per_session", _cost_row)):
        rows = _decide([check(cohorts, s, config) for s in strata], config)
        metrics[metric] = _metric_verdict(rows)
        reasons += rows
    verdicts = set(metrics.values())
    verdict = "fail" if "fail" in verdicts else "inconclusive" if "inconclusive" in verdicts else "pass"
    record = _clean({"judge": _identity(), "verdict": verdict, "metrics": metrics, "reasons": reasons})
    record["config"] = _clean(config.to_json())
    record["inputs"] = cohorts.to_json()  # as given, not rounded: a replay judges exactly these
    assert isinstance(record, dict)
    return record


def error_record(reason: str, config: JudgeConfig | None = None) -> dict[str, Any]:
    """The record of an analysis that could not read its counts (the metrics source is unreachable)."""
    record: dict[str, Any] = _clean(
        {
            "judge": _identity(),
            "verdict": "error",
            "metrics": {},
            "reasons": [{"metric": "metrics_source", "stratum": TOTAL, "verdict": "error", "detail": reason}],
            "config": (config or JudgeConfig()).to_json(),
            "inputs": None,
        }
    )
    return record


def dumps(record: Mapping[str, Any]) -> str:
    """The canonical text of a record: sorted keys, two-space indent, a final newline."""
    return json.dumps(record, sort_keys=True, indent=2, ensure_ascii=False, allow_nan=False) + "\n"


def exit_code(verdict: str) -> int:
    return EXIT_CODES[verdict]


class ErrorBudget:
    """Hold on ``error``, abort after ``abort_after`` consecutive ones; any other verdict resets the count.

    ``observe(verdict)`` gives the controller's action: ``advance`` (pass), ``hold`` (inconclusive,
    or an error within the budget), ``rollback`` (fail), ``abort`` (the budget is spent).
    """

    ACTIONS = {"pass": "advance", "inconclusive": "hold", "fail": "rollback"}

    def __init__(self, abort_after: int = 5) -> None:
        if abort_after < 1:
            raise ValueError("abort_after must be >= 1")
        self.abort_after = abort_after
        self.consecutive = 0

    def observe(self, verdict: str) -> str:
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        if verdict != "error":
            self.consecutive = 0
            return self.ACTIONS[verdict]
        self.consecutive += 1
        return "abort" if self.consecutive >= self.abort_after else "hold"


# --- the checks -------------------------------------------------------------------------------


def _rate_row(rule: RateRule, cohorts: Cohorts, s: str, config: JudgeConfig) -> dict[str, Any]:
    stable, canary = cohorts.stratum(s)
    xs, ns = stable.get(rule.numerator), stable.get(rule.denominator)
    xc, nc = canary.get(rule.numerator), canary.get(rule.denominator)
    rs, rc = (xs / ns if ns else 0.0), (xc / nc if nc else 0.0)
    row: dict[str, Any] = {
        "metric": rule.metric,
        "stratum": s,
        "test": "exact conditional binomial test of the rate ratio, one-sided, Holm across strata",
        "statistic": rc - rs,
        "canary_rate": rc,
        "stable_rate": rs,
        "events": {"stable": xs, "canary": xc},
        "samples": {"stable": ns, "canary": nc, "minimum": rule.min_denominator, "unit": rule.denominator},
        "threshold": {
            "alpha_look": config.alpha_look,
            "relative_margin": rule.relative_margin,
            "absolute_margin": rule.absolute_margin,
        },
    }
    if min(ns, nc) < rule.min_denominator:
        return _inconclusive(row)
    weighted = (1 + rule.relative_margin) * nc
    pi0 = weighted / (weighted + ns)  # the canary's share of the events at the boundary of H0
    p = 1.0 if xc + xs == 0 else float(stats.binomtest(xc, xc + xs, pi0, alternative="greater").pvalue)
    row.update(p_value_raw=p, breach=rc - rs > rule.absolute_margin)
    row["detail"] = (
        f"canary {xc}/{nc} = {rc:.4%} vs stable {xs}/{ns} = {rs:.4%}; "
        f"H0 canary <= {1 + rule.relative_margin:g} x stable, practical margin {rule.absolute_margin:g}"
    )
    return row


def _zero_baseline(row: dict[str, Any], rule: RateRule, config: JudgeConfig) -> None:
    """Turn a passing ``_total`` row into a fail when the stable cohort has no event and the canary several."""
    k = config.zero_baseline_min_events
    if not (
        row["verdict"] == "pass"
        and k > 0
        and row["events"]["stable"] == 0
        and row["samples"]["stable"] >= config.zero_baseline_min_denominator
        and row["events"]["canary"] >= k
        and row["statistic"] > rule.absolute_margin
    ):
        return
    row.update(
        verdict="fail",
        test="zero-baseline rule: the stable cohort has no event",
        detail=f"stable has 0 {rule.numerator} in {row['samples']['stable']} {rule.denominator} (>= "
        f"{config.zero_baseline_min_denominator}), canary has {row['events']['canary']} in "
        f"{row['samples']['canary']} (>= {k}): a failure mode the stable bundle does not show",
    )


def _latency_row(cohorts: Cohorts, s: str, config: JudgeConfig) -> dict[str, Any]:
    rule = config.latency
    stable, canary = cohorts.stratum(s)
    bounds = ",".join(bound_label(b) for b, _ in (stable.buckets or canary.buckets))
    label = f"p{rule.quantile * 100:g}"
    row: dict[str, Any] = {
        "metric": "latency",
        "stratum": s,
        "test": f"{label} from histogram buckets (Prometheus histogram_quantile) against a tolerance; "
        "binomial test of the canary's requests slower than the bound, Holm across strata",
        "statistic": None,
        "bound": None,
        "samples": {"stable": stable.requests, "canary": canary.requests, "minimum": rule.min_requests},
        "threshold": {
            "quantile": rule.quantile,
            "relative_tolerance": rule.relative_tolerance,
            "absolute_tolerance_s": rule.absolute_tolerance_s,
            "alpha_look": config.alpha_look,
        },
        "bucket_bounds_s": bounds,
    }
    if min(stable.requests, canary.requests) < rule.min_requests:
        return _inconclusive(row)
    qs, qc = histogram_quantile(rule.quantile, stable.buckets), histogram_quantile(rule.quantile, canary.buckets)
    if not (math.isfinite(qs) and math.isfinite(qc)):
        return _inconclusive(row, "no finite bucket bound: the histogram has only '+Inf'")
    bound = qs * (1 + rule.relative_tolerance) + rule.absolute_tolerance_s
    slower = math.floor(canary.requests * (1 - histogram_cdf(bound, canary.buckets)) + 1e-9)
    p = float(stats.binomtest(slower, canary.requests, 1 - rule.quantile, alternative="greater").pvalue)
    row.update(statistic=qc, stable_value=qs, bound=bound, slower_than_bound=slower, p_value_raw=p, breach=qc > bound)
    row["detail"] = (
        f"{label} canary {qc:.3f} s {'>' if qc > bound else '<='} bound {bound:.3f} s = stable {qs:.3f} s x "
        f"{1 + rule.relative_tolerance:g} + {rule.absolute_tolerance_s:g} s; {slower}/{canary.requests} canary "
        f"requests slower than the bound (H0 <= {1 - rule.quantile:.0%}); buckets {bounds}"
    )
    return row


def _cost_row(cohorts: Cohorts, s: str, config: JudgeConfig) -> dict[str, Any]:
    rule = config.cost
    stable, canary = cohorts.stratum(s)
    row: dict[str, Any] = {
        "metric": "cost_per_session",
        "stratum": s,
        "test": "mean cost_usd per session against a tolerance; one-sided z-test with an assumed "
        "per-session coefficient of variation, Holm across strata",
        "statistic": None,
        "bound": None,
        "samples": {"stable": stable.sessions, "canary": canary.sessions, "minimum": rule.min_sessions},
        "threshold": {
            "relative_tolerance": rule.relative_tolerance,
            "absolute_tolerance_usd": rule.absolute_tolerance_usd,
            "assumed_cv": rule.assumed_cv,
            "alpha_look": config.alpha_look,
        },
    }
    if min(stable.sessions, canary.sessions) < rule.min_sessions:
        return _inconclusive(row)
    ms, mc = stable.cost_usd / stable.sessions, canary.cost_usd / canary.sessions
    bound = ms * (1 + rule.relative_tolerance) + rule.absolute_tolerance_usd
    # H0: canary mean <= stable mean x (1 + rel) + abs; the standard error from the assumed CV
    se = rule.assumed_cv * math.hypot(
        mc / math.sqrt(canary.sessions), (1 + rule.relative_tolerance) * ms / math.sqrt(stable.sessions)
    )
    p = 1.0 if se == 0 else float(stats.norm.sf((mc - bound) / se))
    row.update(statistic=mc, stable_value=ms, bound=bound, p_value_raw=p, breach=mc > bound)
    row["detail"] = (
        f"canary {mc:.6f} USD/session {'>' if mc > bound else '<='} bound {bound:.6f} = stable {ms:.6f} x "
        f"{1 + rule.relative_tolerance:g} + {rule.absolute_tolerance_usd:g}"
    )
    return row


def _decide(rows: list[dict[str, Any]], config: JudgeConfig) -> list[dict[str, Any]]:
    """Holm-adjust the judged strata of one metric; fail = a breach significant at ``alpha_look``."""
    adjusted = holm({r["stratum"]: r["p_value_raw"] for r in rows if "p_value_raw" in r})
    for row in rows:
        if row["stratum"] not in adjusted:
            continue
        p = row["p_value"] = adjusted[row["stratum"]]
        row["verdict"] = "fail" if row.pop("breach") and p <= config.alpha_look else "pass"
        row["detail"] += f"; Holm p {p:.3g} {'<=' if p <= config.alpha_look else '>'} {config.alpha_look:.3g}"
    return rows


def _inconclusive(row: dict[str, Any], why: str = "") -> dict[str, Any]:
    n = row["samples"]
    detail = why or f"below the minimum sample: stable {n['stable']}, canary {n['canary']} (need {n['minimum']} each)"
    return {**row, "verdict": "inconclusive", "p_value": None, "detail": detail}


def holm(p_values: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (scipy has only BH/BY, ``false_discovery_control``)."""
    order = sorted(p_values, key=lambda k: (p_values[k], k))
    m, running, out = len(order), 0.0, {}
    for i, key in enumerate(order):
        running = max(running, min(1.0, (m - i) * p_values[key]))
        out[key] = running
    return out


def _metric_verdict(rows: Sequence[Mapping[str, Any]]) -> str:
    if any(r["verdict"] == "fail" for r in rows):
        return "fail"
    total = next(r for r in rows if r["stratum"] == TOTAL)
    return "inconclusive" if total["verdict"] == "inconclusive" else "pass"


def _identity() -> dict[str, str]:
    return {"name": JUDGE_NAME, "version": JUDGE_VERSION, "scipy": scipy.__version__}


def _round(x: float) -> float:
    return float(f"{x:.{SIGNIFICANT}g}")


def _clean(value: Any) -> Any:
    """Floats rounded to :data:`SIGNIFICANT` digits (non-finite ones become None), recursively."""
    if isinstance(value, float):
        return _round(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value
