"""Compare two offline evaluations (``mangaassist-release compare --bundle A --against B``).

Each side is an evaluation run id (32 hex digits) or a bundle (registry version number or
``bundle_version``), which stands for the bundle's latest offline evaluation: the run named by its
model-version tag ``eval.offline.run_id``. The report has, per metric, both values and the delta
``A - B``; and the cases whose outcome changed, joined on ``case_id`` from each run's
``eval/per_case.json`` table: a case changed when what it fails differs — ``outcomes.check``'s
failed checks plus the ``grounded`` and ``guardrail`` verdicts of the metrics (an uncited
recommendation passes every golden check but is not grounded). ``regressed``: A fails more than B.
Cases evaluated on one side only are listed as such (different subsets).

Unless told not to, the comparison is logged as a run of the evaluation experiment (tag
``release.eval_kind=compare``; metrics ``delta.<metric>``; artifacts ``compare/report.json`` and
``compare/changed_cases.json``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import mlflow

from orchestrator.evaluation.evaluate import (
    EVAL_EXPERIMENT,
    EVAL_KIND_TAG,
    PER_CASE_ARTIFACT,
    SPEC_METRICS,
    EvaluationError,
)
from orchestrator.release.registry import ReleaseRegistry, tracking_uri_scope

_RUN_ID = re.compile(r"[0-9a-f]{32}")
EXTRA_METRICS = ("p95_model_latency_ms", "p95_pipeline_ms", "total_cost_usd", "case_count")


@dataclass(frozen=True, slots=True)
class Side:
    ref: str
    run_id: str
    label: str
    metrics: dict[str, float]
    cases: dict[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class Comparison:
    a: Side
    b: Side
    deltas: dict[str, dict[str, float | None]]
    changed: list[dict[str, str]]
    run_id: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "a": {"ref": self.a.ref, "run_id": self.a.run_id, "label": self.a.label},
            "b": {"ref": self.b.ref, "run_id": self.b.run_id, "label": self.b.label},
            "metrics": self.deltas,
            "changed_cases": self.changed,
            "changed_count": len(self.changed),
            "comparison_run_id": self.run_id,
        }

    def render(self) -> str:
        lines = [
            f"A = {self.a.label} (run {self.a.run_id})",
            f"B = {self.b.label} (run {self.b.run_id})",
            "",
            f"{'metric':<24} {'A':>12} {'B':>12} {'A - B':>12}",
        ]
        for name, d in self.deltas.items():
            cells = [("-" if d[k] is None else f"{d[k]:.4g}") for k in ("a", "b", "delta")]
            lines.append(f"{name:<24} {cells[0]:>12} {cells[1]:>12} {cells[2]:>12}")
        lines += ["", f"{len(self.changed)} cases changed outcome (A vs B):"]
        for c in self.changed:
            lines.append(
                f"  {c['case_id']:<10} {c['route']:<17} {c['change']:<18} "
                f"A failed: {c['a_failed'] or '-'}; B failed: {c['b_failed'] or '-'}"
            )
        if self.run_id:
            lines += ["", f"logged as run {self.run_id}"]
        return "\n".join(lines)


def _run_for(registry: ReleaseRegistry, ref: str) -> tuple[str, str]:
    if _RUN_ID.fullmatch(ref):
        return ref, f"run {ref}"
    bundle = registry.bundle(ref)
    run_id = bundle.tags.get("eval.offline.run_id")
    if not run_id:
        raise EvaluationError(f"bundle {bundle.version} ({bundle.bundle_version}) has no offline evaluation yet")
    return run_id, f"bundle {bundle.version} ({bundle.bundle_version}, eval.offline={bundle.tags.get('eval.offline')})"


def _side(registry: ReleaseRegistry, ref: str) -> Side:
    run_id, label = _run_for(registry, ref)
    client = mlflow.MlflowClient(tracking_uri=registry.tracking_uri)
    try:
        run = client.get_run(run_id)
    except mlflow.exceptions.MlflowException as exc:
        raise EvaluationError(f"no evaluation run {run_id}: {str(exc).splitlines()[0][:200]}") from None
    if run.data.tags.get(EVAL_KIND_TAG) != "offline":
        raise EvaluationError(f"run {run_id} is not an offline evaluation (tag {EVAL_KIND_TAG} != offline)")
    # the client form: the fluent one searches the *current* experiment, not the run's
    table = client.load_table(run.info.experiment_id, PER_CASE_ARTIFACT, run_ids=[run_id])
    cases = {str(r["case_id"]): {k: str(v) for k, v in r.items()} for r in table.to_dict(orient="records")}
    return Side(ref, run_id, label, {k: float(v) for k, v in run.data.metrics.items()}, cases)


def _failing(row: dict[str, str]) -> frozenset[str]:
    """What a case fails: ``outcomes.check``'s failed checks, plus ``grounded`` and ``guardrail`` verdicts."""
    failing = {c for c in row["failed_checks"].split(",") if c}
    if row.get("grounded") == "False":
        failing.add("grounded")
    if row.get("guardrail_pass") == "False":
        failing.add("guardrail")
    return frozenset(failing)


def _changed(a: Side, b: Side) -> list[dict[str, str]]:
    out = []
    for case_id in sorted(set(a.cases) | set(b.cases)):
        ca, cb = a.cases.get(case_id), b.cases.get(case_id)
        if ca is None or cb is None:
            one = ca or cb
            assert one is not None
            change = "only in A" if cb is None else "only in B"
            out.append({"case_id": case_id, "route": one["route"], "change": change, "a_failed": "", "b_failed": ""})
            continue
        fa, fb = _failing(ca), _failing(cb)
        if fa == fb:
            continue
        change = "regressed" if fa > fb else "fixed" if fa < fb else "checks differ"
        out.append(
            {
                "case_id": case_id,
                "route": ca["route"],
                "change": change,
                "a_failed": ",".join(sorted(fa)),
                "b_failed": ",".join(sorted(fb)),
                "a_reply": ca["reply"][:200],
                "b_reply": cb["reply"][:200],
            }
        )
    return out


def compare(
    registry: ReleaseRegistry, a_ref: str, b_ref: str, *, log_run: bool = True, experiment: str = EVAL_EXPERIMENT
) -> Comparison:
    with tracking_uri_scope(registry.tracking_uri):
        a, b = _side(registry, a_ref), _side(registry, b_ref)
        deltas: dict[str, dict[str, float | None]] = {}
        for name in (*SPEC_METRICS, *EXTRA_METRICS):
            va, vb = a.metrics.get(name), b.metrics.get(name)
            deltas[name] = {"a": va, "b": vb, "delta": None if va is None or vb is None else round(va - vb, 6)}
        changed = _changed(a, b)
        run_id = None
        comparison = Comparison(a, b, deltas, changed, None)
        if log_run:
            eid = registry.ensure_experiment(experiment)
            with mlflow.start_run(experiment_id=eid, run_name=f"compare {a_ref} vs {b_ref}") as run:
                run_id = run.info.run_id
                mlflow.set_tags({EVAL_KIND_TAG: "compare", "compare.run_a": a.run_id, "compare.run_b": b.run_id})
                mlflow.log_metrics(
                    {
                        **{f"delta.{k}": float(d["delta"]) for k, d in deltas.items() if d["delta"] is not None},
                        "changed_cases": float(len(changed)),
                    }
                )
                comparison = Comparison(a, b, deltas, changed, run_id)
                mlflow.log_dict(comparison.to_json(), "compare/report.json")
                if changed:
                    names = sorted({k for c in changed for k in c})
                    mlflow.log_table({n: [c.get(n, "") for c in changed] for n in names}, "compare/changed_cases.json")
    return comparison
