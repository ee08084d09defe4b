"""The canary controller (spec §13): step a bundle through 1 → 10 → 50 → 100 % of sessions, judge
each step on live counts, advance, hold or roll back, and promote through the gate at the end.

``mangaassist-release canary start --bundle V`` requires V's offline and shadow evaluations to have
passed (``eval.offline``, ``eval.shadow``). For each step it moves the ``canary`` alias to V with
``canary.percent`` = the step (``Lifecycle.stage``); ``mangaassist-release follow`` exports it with
the step and the chatbots' routers serve that share of sessions, plus a control cohort of the
same size on prod. Every ``interval`` the controller reads the two cohorts' counts since the step
began (``orchestrator.rollout.metrics_source``: a real Prometheus, or the sidecars' ``/metrics``)
and asks the judge (``orchestrator.rollout.judge``), looking at most ``looks_per_step`` times per
step (the judge's Bonferroni budget):

- ``pass`` on ``passes_to_advance`` (3) consecutive looks: the next step (after 100 %:
  ``eval.canary=passed`` and ``promote`` through the gate). One pass is not enough: a pass means
  "no significant regression yet", and the cumulative counts of later looks have more power (a
  step is analysed for at least three intervals, as Flagger's iterations and Argo's counts do);
- ``inconclusive`` (too few samples: low traffic is a hold, never a failure): look again; after
  ``looks_per_step`` looks the canary is paused at 0 % and reported ``held`` (exit 3), neither
  promoted nor failed;
- ``fail``: **rollback within the interval**: ``canary.percent`` = 0 (the routers stop serving it
  at their next refresh), ``eval.canary=failed`` with the verdict's run, and a ``rolled_back``
  bundle event carrying the verdict and example trace ids. Prod is never moved by a canary, so
  "aliases restored" is the canary's share going to 0 (deleting the alias needs MANAGE);
- ``error`` (the metrics source cannot be read): hold; after ``abort_after`` consecutive errors,
  the same rollback with reason ``metrics source unreachable``.

``canary abort`` sets the tag ``canary.abort`` on the bundle; a running controller sees it at its
next look and rolls back; with no controller running, ``abort`` rolls back itself.
``canary status`` prints the tags the controller keeps (``canary.state``, ``canary.step``,
``canary.last_verdict``). Every look's verdict record is logged in one MLflow run per step
(``canary-<bundle>-<percent>``, artifact ``verdicts/look-N.json``, metric ``verdict_code``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.release.components import BUNDLE_MODEL
from orchestrator.release.registry import Bundle, ReleaseError, ReleaseRegistry
from orchestrator.rollout.judge import ErrorBudget, JudgeConfig, error_record, judge
from orchestrator.rollout.metrics_source import SourceError

STATE_TAG = "canary.state"
STEP_TAG = "canary.step"
LAST_VERDICT_TAG = "canary.last_verdict"
ABORT_TAG = "canary.abort"
DEFAULT_STEPS = (1.0, 10.0, 50.0, 100.0)
VERDICT_CODES = {"pass": 0, "fail": 1, "error": 2, "inconclusive": 3}


class Source(Protocol):
    def counts(self, canary_bundle: str, prod_bundle: str, start: float) -> dict[str, Any]: ...


class LifecycleLike(Protocol):
    def stage(self, bundle: Bundle, alias: str, percent: float | None = None) -> Bundle: ...

    def record_verdict(
        self, bundle: Bundle, stage: str, verdict: str, run_id: str | None = None, reason: str = ""
    ) -> dict[str, Any]: ...

    def promote(self, bundle: Bundle) -> Any: ...


@dataclass
class StepResult:
    percent: float
    verdict: str
    looks: int
    run_id: str
    record: dict[str, Any]


@dataclass
class CanaryResult:
    outcome: str  # promoted | rolled_back | held | aborted | gates_unmet
    steps: list[StepResult] = field(default_factory=list)
    reason: str = ""
    example_trace_ids: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return {"promoted": 0, "rolled_back": 1, "aborted": 1, "gates_unmet": 1, "held": 3}[self.outcome]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reason": self.reason,
            "example_trace_ids": self.example_trace_ids,
            "steps": [
                {"percent": s.percent, "verdict": s.verdict, "looks": s.looks, "run_id": s.run_id} for s in self.steps
            ],
        }


def require_passed(bundle: Bundle) -> None:
    missing = [
        f"eval.{stage}=passed" for stage in ("offline", "shadow") if bundle.tags.get(f"eval.{stage}") != "passed"
    ]
    if missing:
        raise ReleaseError(
            f"bundle {bundle.version} cannot start a canary: it lacks {' and '.join(missing)} "
            "(mangaassist-release evaluate / shadow-report --record)"
        )


class CanaryController:
    def __init__(
        self,
        registry: ReleaseRegistry,
        lifecycle: LifecycleLike,
        source: Source,
        *,
        interval_s: float = 60.0,
        steps: Sequence[float] = DEFAULT_STEPS,
        config: JudgeConfig | None = None,
        abort_after: int = 5,
        passes_to_advance: int = 3,
        progress: Callable[[str], None] = lambda _m: None,
        on_rollback: Callable[[Bundle, str, dict[str, Any], list[str]], None] | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not steps or any(not 0 < p <= 100 for p in steps) or list(steps) != sorted(steps):
            raise ReleaseError(f"canary steps must rise within (0, 100], got {list(steps)}")
        self.registry = registry
        self.lifecycle = lifecycle
        self.source = source
        self.interval_s = interval_s
        self.steps = tuple(steps)
        self.config = config or JudgeConfig()
        self.abort_after = abort_after
        if passes_to_advance < 1:
            raise ReleaseError("passes_to_advance must be at least 1")
        self.passes_to_advance = min(passes_to_advance, self.config.looks_per_step)
        self._progress = progress
        self._on_rollback = on_rollback
        self._clock = clock
        self._sleep = sleep

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, bundle: Bundle) -> CanaryResult:
        require_passed(bundle)
        prod = self.registry.resolve("prod")
        if prod.version == bundle.version:
            raise ReleaseError(f"bundle {bundle.version} already holds prod")
        result = CanaryResult("held")
        self._tags(bundle, {STATE_TAG: "running", ABORT_TAG: ""})
        for percent in self.steps:
            bundle = self.lifecycle.stage(bundle, "canary", percent)
            self._tags(bundle, {STEP_TAG: _fmt(percent)})
            reset = getattr(self.source, "reset", None)
            if callable(reset):
                reset()
            step = self._step(bundle, prod, percent)
            result.steps.append(step)
            if step.verdict == "pass":
                continue
            if step.verdict in ("fail", "abort", "aborted"):
                reason = step.record.get("_reason", "the judge failed the canary")
                examples = list(step.record.get("_examples", []))
                self._rollback(bundle, percent, step, reason, examples)
                result.outcome = "aborted" if step.verdict != "fail" else "rolled_back"
                result.reason, result.example_trace_ids = reason, examples
                return result
            # held past the step's looks: pause at 0 %, neither promoted nor failed
            self._pause(bundle)
            result.reason = f"inconclusive after {step.looks} looks at {_fmt(percent)}%: too few samples"
            self._tags(bundle, {STATE_TAG: "held"})
            return result
        last = result.steps[-1]
        self.lifecycle.record_verdict(bundle, "canary", "pass", last.run_id, "every step passed")
        bundle = self.registry.bundle(str(bundle.version))
        try:
            self.lifecycle.promote(bundle)
        except ReleaseError as exc:
            self._pause(bundle)
            self._tags(bundle, {STATE_TAG: "gates_unmet"})
            return CanaryResult("gates_unmet", result.steps, str(exc))
        self._pause(bundle)  # prod serves it now; the canary share is no longer needed
        self._tags(bundle, {STATE_TAG: "promoted"})
        return CanaryResult("promoted", result.steps)

    def _step(self, bundle: Bundle, prod: Bundle, percent: float) -> StepResult:
        start = self._clock()
        budget = ErrorBudget(self.abort_after)
        run_id = self._start_run(bundle, percent)
        record: dict[str, Any] = {}
        passes = 0
        for look in range(1, self.config.looks_per_step + 1):
            self._sleep(self.interval_s)
            if self._abort_requested(bundle):
                record = {"verdict": "abort", "_reason": "aborted by `mangaassist-release canary abort`"}
                self._log_look(run_id, look, record)
                return StepResult(percent, "aborted", look, run_id, record)
            try:
                counts = self.source.counts(bundle.bundle_version, prod.bundle_version, start)
                record = judge(counts, self.config)
            except (SourceError, ValueError) as exc:
                record = error_record(str(exc), self.config)
            verdict = record["verdict"]
            action = budget.observe(verdict)
            self._log_look(run_id, look, record)
            self._tags(bundle, {LAST_VERDICT_TAG: f"{verdict} at {_fmt(percent)}% look {look}"})
            self._progress(f"{_fmt(percent)}% look {look}: {verdict}{_why(record)}")
            passes = passes + 1 if action == "advance" else 0
            if passes >= self.passes_to_advance:
                return StepResult(percent, "pass", look, run_id, record)
            if action == "rollback":
                record["_reason"] = "the judge failed the canary: " + _why(record).strip(" ()")
                record["_examples"] = self._examples()
                return StepResult(percent, "fail", look, run_id, record)
            if action == "abort":
                record["_reason"] = f"metrics source unreachable for {budget.consecutive} consecutive looks"
                return StepResult(percent, "abort", look, run_id, record)
        return StepResult(percent, "inconclusive", self.config.looks_per_step, run_id, record)

    # -- effects --------------------------------------------------------------------------------------

    def _rollback(self, bundle: Bundle, percent: float, step: StepResult, reason: str, examples: list[str]) -> None:
        self._pause(bundle)
        client = self.registry.client
        client.log_text(
            step.run_id,
            json.dumps({"reason": reason, "example_trace_ids": examples}, indent=2),
            "verdicts/rollback.json",
        )
        client.set_tag(step.run_id, "canary.example_trace_ids", ",".join(examples)[:5000])
        self.lifecycle.record_verdict(bundle, "canary", "fail", step.run_id, reason)
        self._tags(bundle, {STATE_TAG: "rolled_back"})
        self._progress(f"rolled back at {_fmt(percent)}%: {reason}")
        if self._on_rollback is not None:
            self._on_rollback(bundle, reason, step.record, examples)

    def _pause(self, bundle: Bundle) -> None:
        self.registry.client.set_model_version_tag(BUNDLE_MODEL, str(bundle.version), "canary.percent", "0")

    def _tags(self, bundle: Bundle, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.registry.client.set_model_version_tag(BUNDLE_MODEL, str(bundle.version), key, value)

    def _abort_requested(self, bundle: Bundle) -> bool:
        mv = self.registry.client.get_model_version(BUNDLE_MODEL, str(bundle.version))
        return bool(dict(mv.tags).get(ABORT_TAG))

    def _examples(self) -> list[str]:
        examples = getattr(self.source, "examples", None) or {}
        out: list[str] = []
        for key in sorted(examples):
            if key.startswith("canary/") and not key.endswith(("/requests", "/sessions", "/cost_usd")):
                out += [t for t in examples[key] if t not in out]
        return out[:10]

    def _start_run(self, bundle: Bundle, percent: float) -> str:
        client = self.registry.client
        experiment_id = self.registry.ensure_experiment(self.registry.experiment_name)
        run = client.create_run(
            experiment_id,
            run_name=f"canary-{bundle.version}-{_fmt(percent)}pct",
            tags={
                "release.eval_kind": "canary",
                "release.bundle": bundle.bundle_version,
                "release.bundle_model_version": str(bundle.version),
                "canary.percent": _fmt(percent),
            },
        )
        return str(run.info.run_id)

    def _log_look(self, run_id: str, look: int, record: dict[str, Any]) -> None:
        client = self.registry.client
        verdict = str(record.get("verdict"))
        client.log_metric(run_id, "verdict_code", VERDICT_CODES.get(verdict, 1), step=look)
        public = {k: v for k, v in record.items() if not k.startswith("_")}
        client.log_text(run_id, json.dumps(public, indent=2, sort_keys=True), f"verdicts/look-{look}.json")
        client.set_tag(run_id, "canary.verdict", verdict)


def abort(registry: ReleaseRegistry, bundle: Bundle) -> None:
    """Ask a running controller to roll back at its next look (tag ``canary.abort``)."""
    registry.client.set_model_version_tag(BUNDLE_MODEL, str(bundle.version), ABORT_TAG, "requested")


def status(bundle: Bundle) -> dict[str, str]:
    keys = (STATE_TAG, STEP_TAG, LAST_VERDICT_TAG, ABORT_TAG, "canary.percent", "eval.canary")
    return {k: bundle.tags[k] for k in keys if bundle.tags.get(k)}


def _why(record: dict[str, Any]) -> str:
    failed = [
        f"{r.get('metric')}[{r.get('stratum')}]"
        for r in record.get("reasons", [])
        if r.get("verdict") in ("fail", "error")
    ]
    return f" ({', '.join(failed[:4])})" if failed else ""


def _fmt(percent: float) -> str:
    return f"{percent:g}"
