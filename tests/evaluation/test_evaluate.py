"""``mangaassist-release evaluate`` and ``compare`` against an embedded ``sqlite:///`` MLflow (spec §11, issue 19 Bar).

One bootstrapped registry per module; the evaluations use subsets of the golden set to keep the
suite short (the full 408-case run is measured by hand, see BENCHMARKS.md / the evaluation report).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import mlflow.genai
import pytest
from mlflow import MlflowClient

from orchestrator.config import load
from orchestrator.evaluation.evaluate import SPEC_METRICS, load_thresholds, selected_case_ids
from orchestrator.prompts import SYSTEM_PROMPTS
from orchestrator.release import cli
from orchestrator.release.components import BUNDLE_MODEL
from orchestrator.release.registry import ReleaseRegistry, providers_for_bundle, tracking_uri_scope

# mlflow.types.responses infers a schema from its own pydantic models when mlflow.pyfunc is first
# imported (mlflow.genai.evaluate imports it) and warns about their Any fields; MLflow's, not ours.
# Two pandas-3 deprecations inside MLflow's own code: mlflow/data/digest_utils.py calls
# ``DataFrame.all(0)`` (positional argument) for the evaluation data's digest, and
# ``MlflowClient.log_table`` calls ``select_dtypes(include=["object"])`` on string columns.
pytestmark = [
    pytest.mark.filterwarnings("ignore:.*Any type hint is inferred as AnyType:UserWarning"),
    pytest.mark.filterwarnings("ignore:Starting with pandas version 4.0 all arguments of all will be keyword-only"),
    pytest.mark.filterwarnings("ignore:For backward compatibility, 'str' dtypes are included by select_dtypes"),
]

REC_PROMPT = "ma-prompts.recommendation"
CITE_SENTENCE = "Cite each fact with its chunk id in square brackets, e.g. [faq_003]. "
SAMPLE = ["--limit", "60"]  # an evenly spaced sample over all kinds and routes
REC_SUBSET = ["--subset", "route=recommendation"]


@dataclass
class Env:
    uri: str
    registry: ReleaseRegistry
    client: MlflowClient


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    folder: Path = tmp_path_factory.mktemp("evaluate")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        registry = ReleaseRegistry(uri, "release-tests")
        registry.bootstrap(load({"MLFLOW_TRACKING_URI": uri}))
        yield Env(uri, registry, MlflowClient(tracking_uri=uri, registry_uri=uri))


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.run(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _candidate(env: Env, template: str, label: str) -> int:
    """A candidate whose recommendation prompt is a new version made with MLflow's own prompt API."""
    with tracking_uri_scope(env.uri):
        pv = mlflow.genai.register_prompt(name=REC_PROMPT, template=template, commit_message=label)
    return env.registry.register("prod", set_prompt={"recommendation": f"prompts:/{REC_PROMPT}/{pv.version}"}).version


def test_thresholds_file_is_versioned_and_names_every_spec_metric() -> None:
    version, thresholds = load_thresholds()
    assert version == "thresholds-v1"
    assert {t.metric for t in thresholds} == set(SPEC_METRICS)


def test_subset_and_limit_select_deterministically() -> None:
    rec = selected_case_ids({"route": ["recommendation"]}, None)
    assert len(rec) == 46
    sample = selected_case_ids({}, 60)
    assert len(sample) == 60 and sample == selected_case_ids({}, 60)
    assert len({c[:7] for c in sample}) > 1  # spread over the file, not its head


def test_providers_for_bundle_use_the_bundles_prompts_and_model(env: Env) -> None:
    bundle = env.registry.resolve("prod")
    providers, prompts = providers_for_bundle(env.registry, bundle)
    table = providers.routes.current()
    rec = table.routes["recommendation"]
    assert rec.prompt_version == prompts["recommendation"][0] == f"{REC_PROMPT}/1"
    assert providers.prompts[rec.prompt_version] == SYSTEM_PROMPTS["recommendation-2.4"]
    assert rec.model_id == bundle.components["bedrock_model_id"]
    assert table.routes["small_talk"].prompt_version == "none"


def test_shipped_bundle_passes_logs_spec_metrics_artifacts_and_tags(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = _cli(capsys, "evaluate", "--alias", "prod", *SAMPLE, "--json")
    assert code == 0, out + err
    result = json.loads(out)
    assert result["verdict"] == "passed" and not result["missed"]
    run = env.client.get_run(result["run_id"])
    assert set(SPEC_METRICS) <= set(run.data.metrics)
    assert run.data.metrics["grounded_answer_rate"] == pytest.approx(run.data.metrics["grounded_answer/mean"])
    assert run.data.metrics["p95_latency_ms"] == pytest.approx(run.data.metrics["latency_ms/p95"], rel=1e-4)
    assert run.data.tags["mlflow.runType"] == "genai_evaluate"
    assert run.data.tags["release.gate.offline"] == "passed"
    run_id = run.info.run_id
    paths = {a.path for top in ("", "prompts", "eval", "dataset") for a in env.client.list_artifacts(run_id, top)}
    for expected in (
        "prompts/recommendation.txt",
        "prompts/index.json",
        "dataset/version.json",
        "eval/per_case.json",
        "eval/failures.json",
        "eval/confusion_matrix.json",
        "eval/cost_summary.json",
        "eval/thresholds.json",
    ):
        assert expected in paths, (expected, sorted(paths))
    with tracking_uri_scope(env.uri):
        per_case = env.client.load_table(run.info.experiment_id, "eval/per_case.json", run_ids=[run_id])
        traces = mlflow.search_traces(locations=[run.info.experiment_id], run_id=run_id, return_type="list")
    assert len(per_case) == 60 and per_case["case_id"].is_unique
    assert len(traces) == 60
    assert {t.info.tags.get("case_id") for t in traces} == set(per_case["case_id"])
    assert all(t.info.request_metadata.get("mlflow.modelId") == env.registry.resolve("prod").model_id for t in traces)
    assert "MLFLOW_EXPERIMENT_ID" not in os.environ  # evaluate's set_experiment does not leak to subprocesses
    tags = env.client.get_model_version(BUNDLE_MODEL, "1").tags
    assert tags["eval.offline"] == "passed" and tags["eval.offline.run_id"] == run.info.run_id


def test_the_bar_uncited_recommendations_fail_and_a_harmless_rewording_passes(
    env: Env, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped = SYSTEM_PROMPTS["recommendation-2.4"]
    assert CITE_SENTENCE in shipped
    uncited = _candidate(env, shipped.replace(CITE_SENTENCE, ""), "drop the citation instruction")
    code, out, err = _cli(capsys, "evaluate", "--bundle", str(uncited), *REC_SUBSET)
    assert code == 1, out + err
    missed = [line for line in out.splitlines() if line.startswith("MISSED")]
    assert any(line.startswith("MISSED grounded_answer_rate = 0,") for line in missed), out
    assert "gold-0" in missed[0]  # the worst cases, by case_id
    assert env.client.get_model_version(BUNDLE_MODEL, str(uncited)).tags["eval.offline"] == "failed"

    harmless = _candidate(
        env, shipped.replace("You are MangaAssist.", "You are MangaAssist, the store's helper."), "wording"
    )
    code, out, err = _cli(capsys, "evaluate", "--bundle", str(harmless), *REC_SUBSET)
    assert code == 0, out + err
    assert "MISSED" not in out
    assert env.client.get_model_version(BUNDLE_MODEL, str(harmless)).tags["eval.offline"] == "passed"

    # compare: the candidate that dropped citations against the harmless one, by bundle
    code, out, err = _cli(capsys, "compare", "--bundle", str(uncited), "--against", str(harmless), "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["metrics"]["grounded_answer_rate"]["delta"] == pytest.approx(-1.0)
    changed = {c["case_id"]: c for c in report["changed_cases"]}
    assert changed and all(c["route"] == "recommendation" for c in changed.values())
    assert any(c["change"] == "regressed" for c in changed.values())
    comparison = env.client.get_run(report["comparison_run_id"])
    assert comparison.data.metrics["delta.grounded_answer_rate"] == pytest.approx(-1.0)
    # the table form
    code, out, _ = _cli(capsys, "compare", "--bundle", str(uncited), "--against", str(harmless), "--no-log")
    assert code == 0 and "grounded_answer_rate" in out and next(iter(changed)) in out


@pytest.mark.parametrize(
    "argv",
    [
        ["evaluate", "--subset", "flavour=spicy"],
        ["evaluate", "--subset", "route=nowhere"],
        ["evaluate", "--bundle", "999"],
        ["compare", "--bundle", "1", "--against", "999"],
        ["compare", "--bundle", "0123456789abcdef0123456789abcdef", "--against", "1"],
    ],
)
def test_usage_and_infrastructure_errors_exit_2_in_one_line(
    env: Env, capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code, _out, err = _cli(capsys, *argv)
    assert code == 2
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in err
