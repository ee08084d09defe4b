"""Offline evaluation of a release bundle over the golden dataset (spec §11), on ``mlflow.genai.evaluate``.

:func:`evaluate_bundle` does, in the evaluation experiment (default ``mangaassist-evaluation``):

1. publishes the golden set to the MLflow evaluation dataset ``mangaassist-golden-v1``
   (``dataset.to_mlflow``, idempotent) and reads the records back from it, optionally a subset
   (``select()``'s filters) and an evenly spaced sample of ``limit`` cases;
2. opens ``mlflow.start_run()`` and builds the chatbot the bundle configures
   (``registry.providers_for_bundle``: the bundle's per-route prompts, loaded with
   ``mlflow.genai.load_prompt`` inside the run so they are linked to it, and its Bedrock model id,
   on the offline stand-ins);
3. runs ``mlflow.genai.evaluate(data=records, predict_fn=…, scorers=scorers.SCORERS,
   model_id=<bundle LoggedModel>)``. ``predict_fn`` is the chatbot's own pipeline
   (``ChatService.handle``, replaying a multi-turn case's earlier turns in its session first);
   MLflow records one trace per case itself (linked to the run and to the bundle's LoggedModel,
   tagged with the record's ``case_id``; ``predict_fn`` adds ``release_bundle`` and
   ``prompt_version`` tags). The chatbot's own ``clients.Tracer`` points at a gateway port nobody
   listens on: its spans are counted and dropped, never blocking — so the MLflow traces of an
   evaluation are MLflow's per-row ``predict_fn`` traces, not the chatbot's span tree;
4. logs the spec §11 metrics under their spec names (``mlflow.log_metrics``, also on the bundle's
   LoggedModel through ``model_id``), and the artifacts ``evaluate`` does not log: ``prompts/``
   (each route's template and the URIs), ``dataset/version.json``, ``eval/per_case.json``
   (``log_table``), ``eval/failures.json``, ``eval/confusion_matrix.json``,
   ``eval/cost_summary.json``, ``eval/thresholds.json``;
5. compares the metrics with the thresholds file (``thresholds-v1.json``; ``min``/``max``) and
   records the verdict as run tag ``release.gate.offline`` and as model-version tags
   ``eval.offline=passed|failed`` and ``eval.offline.run_id`` on the bundle.

The gate compares the spec-named metrics itself rather than calling
``mlflow.validate_evaluation_results``: that reads only the ``<scorer>/<aggregation>`` metrics of
the result, while the thresholds are on the spec names (token averages are not scorers).

Metric definitions are in ``scorers.py``. Notes: the response cache is off (every case calls the
model it routes to); ``avg_input_tokens``/``avg_output_tokens`` average the cases whose final turn
called the model; ``p95_latency_ms`` is the 95th percentile over all cases of the generation's
*reported* model latency (the offline profile's simulated Bedrock latency, 0 on rule-based
routes) plus the *measured* wall time of the pipeline for the final turn; the two parts are logged
as ``p95_model_latency_ms`` and ``p95_pipeline_ms``. Offline figures measure the deterministic
stand-ins, not Bedrock.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import mlflow.genai

from orchestrator.adapters import Providers
from orchestrator.adapters.base import Generation, GenerationRequest, Generator
from orchestrator.cache import ResponseCache
from orchestrator.evaluation import scorers as sc
from orchestrator.evaluation.dataset import DEFAULT_VERSION, golden_path, load_golden, select, to_mlflow
from orchestrator.evaluation.outcomes import offline_tracer
from orchestrator.prices import cost_usd
from orchestrator.release.registry import (
    Bundle,
    ReleaseError,
    ReleaseRegistry,
    providers_for_bundle,
    tracking_uri_scope,
)
from orchestrator.schema import ChatRequest, PageContext
from orchestrator.service import ChatService

EVAL_EXPERIMENT = "mangaassist-evaluation"
THRESHOLDS_PATH = Path(__file__).with_name("thresholds-v1.json")
SPEC_METRICS = (
    "intent_accuracy",
    "grounded_answer_rate",
    "guardrail_pass_rate",
    "thumbs_up_proxy_score",
    "avg_input_tokens",
    "avg_output_tokens",
    "p95_latency_ms",
)
EVAL_KIND_TAG = "release.eval_kind"
BUNDLE_VERSION_TAG = "release.bundle_model_version"
GATE_TAG = "release.gate.offline"
SUBSET_KEYS = ("route", "intent", "kind", "component", "language", "page_type", "case_ids")
PER_CASE_ARTIFACT = "eval/per_case.json"
WORST = 8


class EvaluationError(ReleaseError):
    """The evaluation cannot run (bad subset, thresholds file, no cases); one line for the operator."""


@dataclass(frozen=True, slots=True)
class Threshold:
    metric: str
    bound: str  # "min" or "max"
    value: float

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.bound == "min" else measured <= self.value


def load_thresholds(path: Path = THRESHOLDS_PATH) -> tuple[str, list[Threshold]]:
    try:
        raw = json.loads(path.read_text("utf-8"))
        out = []
        for metric, spec in raw["metrics"].items():
            if metric not in SPEC_METRICS:
                raise EvaluationError(f"{path.name}: unknown metric {metric!r}; one of {', '.join(SPEC_METRICS)}")
            ((bound, value),) = spec.items()
            if bound not in ("min", "max"):
                raise EvaluationError(f"{path.name}: {metric}: bound must be 'min' or 'max', got {bound!r}")
            out.append(Threshold(metric, bound, float(value)))
        return str(raw["version"]), out
    except EvaluationError:
        raise
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise EvaluationError(f"thresholds file {path}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True, slots=True)
class Missed:
    threshold: Threshold
    measured: float
    worst: tuple[str, ...]
    """Case ids that pull the metric the wrong way (failing cases, or the highest values for a max)."""

    def line(self) -> str:
        op = ">=" if self.threshold.bound == "min" else "<="
        return (
            f"{self.threshold.metric} = {self.measured:.4g}, threshold {op} {self.threshold.value:g}; "
            f"worst cases: {', '.join(self.worst) or '-'}"
        )


@dataclass(slots=True)
class EvalOutcome:
    run_id: str
    experiment_id: str
    bundle: Bundle
    metrics: dict[str, float]
    missed: list[Missed]
    not_measured: list[str]
    rows: list[dict[str, Any]]
    wall_s: float
    thresholds_version: str
    scorer_metrics: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return not self.missed


# -- the chatbot under evaluation --------------------------------------------------------------


class _RecordingGenerator:
    """Wraps the generator; remembers each thread's last generation (the final turn's, per case)."""

    def __init__(self, inner: Generator) -> None:
        self._inner = inner
        self.provider = inner.provider
        self._local = threading.local()

    def generate(self, request: GenerationRequest) -> Generation:
        generation = self._inner.generate(request)
        self._local.last = (request.model_id, generation)
        return generation

    def reset(self) -> None:
        self._local.last = None

    def last(self) -> tuple[str, Generation] | None:
        value: tuple[str, Generation] | None = getattr(self._local, "last", None)
        return value


class BundleChatbot:
    """``predict_fn`` for ``mlflow.genai.evaluate``: the chatbot pipeline configured by one bundle."""

    def __init__(self, providers: Providers, release_bundle: str) -> None:
        import dataclasses

        self._generator = _RecordingGenerator(providers.generator)
        self._tracer = offline_tracer()
        self._release_bundle = release_bundle
        self._lock = threading.Lock()
        self.outputs: dict[str, dict[str, Any]] = {}
        """session_id -> outputs: the per-case results, kept here rather than read back from MLflow's traces."""
        self.service = ChatService(
            self._tracer,
            dataclasses.replace(providers, generator=self._generator),
            deployment_stage="offline-eval",
            cache=ResponseCache(max_entries=0),  # every case calls its model: no cross-case cache hits
        )

    def close(self) -> None:
        self._tracer.shutdown(timeout_s=1)

    def predict(
        self, message: str, page_context: dict[str, Any], history: list[dict[str, Any]], session_id: str
    ) -> dict[str, Any]:
        page = PageContext(str(page_context["page_type"]), str(page_context["locale"]), page_context.get("product_id"))
        for turn in history:
            self.service.handle(ChatRequest(session_id=session_id, message=str(turn["content"]), page_context=page))
        self._generator.reset()
        started = time.perf_counter()
        response = self.service.handle(ChatRequest(session_id=session_id, message=message, page_context=page))
        pipeline_ms = (time.perf_counter() - started) * 1000
        last = self._generator.last()
        model_id, generation = last if last is not None else ("none", None)
        in_tok = generation.input_tokens if generation else 0
        out_tok = generation.output_tokens if generation else 0
        cost_in, cost_out = cost_usd(model_id, in_tok, out_tok) if generation else (0.0, 0.0)
        outputs = {
            "reply": response.reply,
            "intent": response.intent,
            "citations": list(response.citations),
            "guardrail_action": response.guardrail_action,
            "prompt_version": response.prompt_version,
            "release_bundle": response.release_bundle,
            "model_id": model_id,
            "generated": generation is not None,
            "input_tokens": in_tok,
            "output_tokens": out_tok,
            "model_latency_ms": float(generation.model_latency_ms or 0.0) if generation else 0.0,
            "pipeline_ms": round(pipeline_ms, 3),
            "cost_usd": round(cost_in + cost_out, 8),
        }
        span = mlflow.get_current_active_span()
        if span is not None:
            outputs["trace_id"] = span.trace_id
            mlflow.update_current_trace(
                tags={"release_bundle": self._release_bundle, "prompt_version": response.prompt_version}
            )
        with self._lock:
            self.outputs[session_id] = outputs
        return outputs


# -- case selection ------------------------------------------------------------------------------


def parse_subset(values: Sequence[str] | None) -> dict[str, list[str]]:
    """``["route=recommendation,faq", "language=ja"]`` -> ``{"route": [...], "language": [...]}``."""
    out: dict[str, list[str]] = {}
    for raw in values or ():
        key, sep, value = raw.partition("=")
        key = key.strip()
        items = [v.strip() for v in value.split(",") if v.strip()]
        if not sep or key not in SUBSET_KEYS or not items:
            raise EvaluationError(
                f"--subset expects KEY=V1[,V2…] with KEY one of {', '.join(SUBSET_KEYS)}; got {raw!r}"
            )
        if key in out:
            raise EvaluationError(f"--subset names {key!r} twice (give its values comma-separated)")
        out[key] = items
    return out


def selected_case_ids(
    subset: Mapping[str, Sequence[str]], limit: int | None, version: str = DEFAULT_VERSION
) -> list[str]:
    """The case ids of the subset (``select()``'s AND of filters), then an evenly spaced sample of ``limit``."""
    try:
        chosen = select(load_golden(version), **{k: list(v) for k, v in subset.items()})
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    if limit is not None:
        if limit < 1:
            raise EvaluationError("--limit must be >= 1")
        if limit < len(chosen):
            step = len(chosen) / limit
            chosen = [chosen[int(i * step)] for i in range(limit)]
    if not chosen:
        raise EvaluationError(f"the subset {dict(subset)} selects no golden case")
    return [c.case_id for c in chosen]


# -- metrics ------------------------------------------------------------------------------------------


def _mean(values: Sequence[float | bool | None]) -> float | None:
    present = [float(v) for v in values if v is not None]
    return sum(present) / len(present) if present else None


def case_row(
    case_id: str, tags: Mapping[str, Any], expectations: Mapping[str, Any], outputs: Mapping[str, Any] | None
) -> dict[str, Any]:
    """One row of the per-case table (the compare join key is ``case_id``)."""
    base = {
        "case_id": case_id,
        "route": str(tags.get("route", "")),
        "kind": str(tags.get("kind", "")),
        "language": str(tags.get("language", "")),
        "expected_intent": str(expectations.get("intent") or "none"),
    }
    if outputs is None:  # predict_fn raised: every check fails
        return {
            **base,
            "intent": "error",
            "passed": False,
            "failed_checks": "predict_error",
            "intent_correct": False if expectations.get("intent") is not None else None,
            "grounded": False if sc.expects_grounded_answer(expectations) else None,
            "guardrail_pass": False,
            "generated": False,
            "input_tokens": 0,
            "output_tokens": 0,
            "model_latency_ms": 0.0,
            "pipeline_ms": 0.0,
            "latency_ms": 0.0,
            "cost_usd": 0.0,
            "model_id": "none",
            "prompt_version": "none",
            "guardrail_action": "error",
            "citations": "",
            "reply": "",
            "trace_id": "",
        }
    checks = sc.case_checks(outputs, expectations)
    return {
        **base,
        "intent": str(outputs["intent"]),
        "passed": all(checks.values()),
        "failed_checks": ",".join(k for k, ok in checks.items() if not ok),
        "intent_correct": sc.intent_correct(outputs, expectations),
        "grounded": sc.grounded(outputs, expectations),
        "guardrail_pass": sc.guardrail_ok(outputs, expectations),
        "generated": bool(outputs["generated"]),
        "input_tokens": int(outputs["input_tokens"]),
        "output_tokens": int(outputs["output_tokens"]),
        "model_latency_ms": float(outputs["model_latency_ms"]),
        "pipeline_ms": float(outputs["pipeline_ms"]),
        "latency_ms": round(sc.latency_of(outputs), 3),
        "cost_usd": float(outputs["cost_usd"]),
        "model_id": str(outputs["model_id"]),
        "prompt_version": str(outputs["prompt_version"]),
        "guardrail_action": str(outputs["guardrail_action"]),
        "citations": ",".join(outputs["citations"]),
        "reply": str(outputs["reply"])[:400],
        "trace_id": str(outputs.get("trace_id", "")),
    }


def spec_metrics(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    generated = [r for r in rows if r["generated"]]
    values: dict[str, float | None] = {
        "intent_accuracy": _mean([r["intent_correct"] for r in rows]),
        "grounded_answer_rate": _mean([r["grounded"] for r in rows]),
        "guardrail_pass_rate": _mean([r["guardrail_pass"] for r in rows]),
        "thumbs_up_proxy_score": _mean([r["passed"] for r in rows]),
        "avg_input_tokens": _mean([r["input_tokens"] for r in generated]),
        "avg_output_tokens": _mean([r["output_tokens"] for r in generated]),
        "p95_latency_ms": sc.p95([r["latency_ms"] for r in rows]) if rows else None,
        # context, not gated
        "p95_model_latency_ms": sc.p95([r["model_latency_ms"] for r in rows]) if rows else None,
        "p95_pipeline_ms": sc.p95([r["pipeline_ms"] for r in rows]) if rows else None,
        "case_count": float(len(rows)),
        "generated_case_count": float(len(generated)),
        "total_cost_usd": round(sum(r["cost_usd"] for r in rows), 8),
    }
    return {k: round(v, 6) for k, v in values.items() if v is not None}


def _worst(metric: str, rows: Sequence[Mapping[str, Any]]) -> tuple[str, ...]:
    per_case: dict[str, Callable[[Mapping[str, Any]], bool]] = {
        "intent_accuracy": lambda r: r["intent_correct"] is False,
        "grounded_answer_rate": lambda r: r["grounded"] is False,
        "guardrail_pass_rate": lambda r: r["guardrail_pass"] is False,
        "thumbs_up_proxy_score": lambda r: r["passed"] is False,
    }
    if metric in per_case:
        return tuple(r["case_id"] for r in rows if per_case[metric](r))[:WORST]
    key = {"avg_input_tokens": "input_tokens", "avg_output_tokens": "output_tokens", "p95_latency_ms": "latency_ms"}[
        metric
    ]
    return tuple(r["case_id"] for r in sorted(rows, key=lambda r: -float(r[key])))[:WORST]


def gate(
    metrics: Mapping[str, float], thresholds: Sequence[Threshold], rows: Sequence[Mapping[str, Any]]
) -> tuple[list[Missed], list[str]]:
    missed, not_measured = [], []
    for t in thresholds:
        if t.metric not in metrics:
            not_measured.append(t.metric)  # e.g. no case of the subset expects a grounded answer
        elif not t.met(metrics[t.metric]):
            missed.append(Missed(t, metrics[t.metric], _worst(t.metric, rows)))
    return missed, not_measured


def _columns(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[str]]:
    """``log_table``'s dict form (column -> values), every value a string (None -> "")."""
    names = list(rows[0]) if rows else ["case_id", "passed", "failed_checks"]
    return {n: ["" if r.get(n) is None else str(r[n]) for r in rows] for n in names}


def _confusion(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    matrix: dict[str, Counter[str]] = defaultdict(Counter)
    for r in rows:
        matrix[r["expected_intent"]][r["intent"]] += 1
    labels = sorted({*matrix, *(p for c in matrix.values() for p in c)})
    return {
        "labels": labels,
        "rows": "expected intent",
        "columns": "predicted intent",
        "matrix": {e: {p: int(matrix[e][p]) for p in labels} for e in labels if e in matrix},
    }


def _cost_summary(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    by_model: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    by_route: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for r in rows:
        if not r["generated"]:
            continue
        for group in (by_model[r["model_id"]], by_route[r["route"]]):
            group["calls"] += 1
            group["input_tokens"] += r["input_tokens"]
            group["output_tokens"] += r["output_tokens"]
            group["cost_usd"] = round(group["cost_usd"] + r["cost_usd"], 8)
    total = round(sum(r["cost_usd"] for r in rows), 8)
    return {
        "currency": "USD",
        "prices": "orchestrator/prices.py (on-demand, per 1k tokens); token counts are the offline estimates",
        "cases": len(rows),
        "model_calls": sum(1 for r in rows if r["generated"]),
        "total_cost_usd": total,
        "cost_per_case_usd": round(total / len(rows), 8) if rows else 0.0,
        "by_model": {k: dict(v) for k, v in by_model.items()},
        "by_route": {k: dict(v) for k, v in by_route.items()},
        "note": "final turn of each case only (multi-turn history turns are not counted)",
    }


# -- the run ----------------------------------------------------------------------------------------


@contextmanager
def _eval_workers(tracking_uri: str) -> Iterator[None]:
    """MLflow's evaluation thread pools, sized for the store unless the operator set them.

    On an embedded ``sqlite:///`` store, MLflow's defaults (10 row workers, up to 10 scorer workers
    each) exhaust SQLAlchemy's connection pool ("QueuePool limit … reached") and traces are lost;
    code scorers are cheap, so one scorer worker per row is enough everywhere.
    """
    defaults = {"MLFLOW_GENAI_EVAL_MAX_SCORER_WORKERS": "1"}
    if tracking_uri.startswith("sqlite:"):
        defaults["MLFLOW_GENAI_EVAL_MAX_WORKERS"] = os.environ.get("MANGAASSIST_EVAL_SQLITE_WORKERS", "4")
    added = [k for k in defaults if k not in os.environ]
    os.environ.update({k: defaults[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextmanager
def _experiment_scope(experiment_id: str) -> Iterator[None]:
    """``mlflow.set_experiment`` for the block (``evaluate`` puts its traces in the active experiment).

    ``set_experiment`` also exports ``MLFLOW_EXPERIMENT_ID`` to the environment, which a later
    subprocess or a client of another tracking server would inherit: both are restored after.
    """
    from mlflow.tracking import fluent

    old_active, old_env = fluent._active_experiment_id, os.environ.get("MLFLOW_EXPERIMENT_ID")
    mlflow.set_experiment(experiment_id=experiment_id)
    try:
        yield
    finally:
        fluent._active_experiment_id = old_active
        if old_env is None:
            os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
        else:
            os.environ["MLFLOW_EXPERIMENT_ID"] = old_env


def _file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def evaluate_bundle(
    registry: ReleaseRegistry,
    bundle: Bundle,
    *,
    subset: Mapping[str, Sequence[str]] | None = None,
    limit: int | None = None,
    thresholds_path: Path = THRESHOLDS_PATH,
    experiment: str = EVAL_EXPERIMENT,
    progress: Callable[[str], None] = lambda _m: None,
) -> EvalOutcome:
    """Evaluate ``bundle`` offline over the golden set (or a subset) and record the verdict on it."""
    started = time.perf_counter()
    thresholds_version, thresholds = load_thresholds(thresholds_path)
    subset = dict(subset or {})
    wanted = selected_case_ids(subset, limit)
    eid = registry.ensure_experiment(experiment)
    with tracking_uri_scope(registry.tracking_uri), _experiment_scope(eid):
        dataset = to_mlflow(experiment_id=eid)
        records = dataset.to_df()
        records["case_id"] = records["tags"].map(lambda t: (t or {}).get("case_id"))
        order = {case_id: i for i, case_id in enumerate(wanted)}
        records = records[records["case_id"].isin(order)]
        records = records.assign(_order=records["case_id"].map(order)).sort_values("_order")
        if len(records) != len(wanted):
            raise EvaluationError(
                f"dataset {dataset.name} has {len(records)} of the {len(wanted)} selected cases (stale dataset?)"
            )
        by_session = {
            str(row.inputs["session_id"]): (row.case_id, row.tags, row.expectations) for row in records.itertuples()
        }
        data = [
            {"inputs": row.inputs, "expectations": {sc.GOLDEN_KEY: row.expectations}, "tags": row.tags}
            for row in records.itertuples()
        ]
        run_name = f"offline-eval {bundle.bundle_version or bundle.version}"
        with mlflow.start_run(experiment_id=eid, run_name=run_name) as run:
            run_id = run.info.run_id
            mlflow.set_tags(
                {
                    EVAL_KIND_TAG: "offline",
                    BUNDLE_VERSION_TAG: str(bundle.version),
                    "release.bundle_version": bundle.bundle_version,
                    "release.bundle_model_id": bundle.model_id,
                    "release.thresholds_version": thresholds_version,
                    "release.dataset": dataset.name,
                    "release.subset": json.dumps({**subset, "limit": limit}, sort_keys=True),
                }
            )
            mlflow.log_params(
                {
                    **{f"bundle.{k}": v for k, v in bundle.components.items() if k != "prompt_pack"},
                    **{f"prompt.{r}": uri for r, uri in bundle.prompts.items()},
                    "cases": len(wanted),
                }
            )
            providers, prompts = providers_for_bundle(registry, bundle)
            for route, (_label, template) in prompts.items():
                mlflow.log_text(template, f"prompts/{route}.txt")
            mlflow.log_dict(
                {r: {"uri": bundle.prompts[r], "label": label} for r, (label, _t) in prompts.items()},
                "prompts/index.json",
            )
            mlflow.log_dict(
                {
                    "name": dataset.name,
                    "dataset_id": dataset.dataset_id,
                    "digest": dataset.digest,
                    "golden_version": DEFAULT_VERSION,
                    "golden_file": golden_path().name,
                    "golden_file_sha256": _file_sha256(golden_path()),
                    "subset": subset,
                    "limit": limit,
                    "case_ids": wanted,
                },
                "dataset/version.json",
            )
            chatbot = BundleChatbot(providers, bundle.bundle_version)
            progress(f"evaluating {len(wanted)} cases of {dataset.name} on bundle {bundle.version} (run {run_id})")
            try:
                # MLflow prints its "Evaluation completed" banner to stdout: keep stdout for results
                with _eval_workers(registry.tracking_uri), redirect_stdout(sys.stderr):
                    result = mlflow.genai.evaluate(
                        data=data,
                        predict_fn=chatbot.predict,
                        scorers=sc.SCORERS,
                        model_id=bundle.model_id,
                    )
            finally:
                chatbot.close()
            rows = [
                case_row(case_id, tags or {}, expectations or {}, chatbot.outputs.get(session))
                for session, (case_id, tags, expectations) in by_session.items()
            ]
            metrics = spec_metrics(rows)
            mlflow.log_metrics(metrics, model_id=bundle.model_id)
            missed, not_measured = gate(metrics, thresholds, rows)
            verdict = "failed" if missed else "passed"
            mlflow.log_table(_columns(rows), PER_CASE_ARTIFACT)
            mlflow.log_table(_columns([r for r in rows if not r["passed"]]), "eval/failures.json")
            mlflow.log_dict(_confusion(rows), "eval/confusion_matrix.json")
            mlflow.log_dict(_cost_summary(rows), "eval/cost_summary.json")
            mlflow.log_dict(
                {
                    "version": thresholds_version,
                    "file": thresholds_path.name,
                    "thresholds": [{"metric": t.metric, t.bound: t.value} for t in thresholds],
                    "verdict": verdict,
                    "missed": [m.line() for m in missed],
                    "not_measured": not_measured,
                },
                "eval/thresholds.json",
            )
            mlflow.set_tag(GATE_TAG, verdict)
        registry.set_bundle_tags(bundle, {"eval.offline": verdict, "eval.offline.run_id": run_id})
    return EvalOutcome(
        run_id=run_id,
        experiment_id=eid,
        bundle=bundle,
        metrics=metrics,
        missed=missed,
        not_measured=not_measured,
        rows=rows,
        wall_s=time.perf_counter() - started,
        thresholds_version=thresholds_version,
        scorer_metrics={k: float(v) for k, v in result.metrics.items()},
    )
