"""Registry layers and release bundles against an embedded ``sqlite:///`` MLflow (issue 19 items 1 and 8).

One module-scoped bootstrap (``conftest.boot``) is shared; tests that add candidates never move
``prod``, and the idempotency test compares counts before and after its own second bootstrap.
"""

from __future__ import annotations

import json

import mlflow
import mlflow.genai
import pytest
from mlflow import MlflowClient

from orchestrator import guardrails, retrieval
from orchestrator.adapters.offline_models import KeywordIntentClassifier, OverlapReranker
from orchestrator.config import DEFAULT_MODEL_ID, DEFAULT_RELEASE_BUNDLE
from orchestrator.prompts import SYSTEM_PROMPTS
from orchestrator.release import cli
from orchestrator.release.components import COMPONENT_KEYS
from orchestrator.release.registry import (
    BUNDLE_VERSION_TAG,
    ReleaseError,
    SealedBundleError,
    UnknownUriError,
    tracking_uri_scope,
)
from tests.release.conftest import Bootstrapped

MODELS = ("manga-intent-classifier", "manga-reranker", "mangaassist-rag-policy", "mangaassist-guardrails")
ROUTE_PROMPTS = {
    "product_question": "product-qa-3.1",
    "recommendation": "recommendation-2.4",
    "return_policy": "policy-qa-1.7",
    "faq": "faq-2.0",
}
BUNDLE = "mangaassist-chatbot-prod"


def client(boot: Bootstrapped) -> MlflowClient:
    return MlflowClient(tracking_uri=boot.uri, registry_uri=boot.uri)


def params_of(boot: Bootstrapped, name: str, alias: str = "prod") -> dict[str, str]:
    c = client(boot)
    mv = c.get_model_version_by_alias(name, alias)
    return dict(c.get_logged_model(str(mv.source).removeprefix("models:/")).params)


def counts(boot: Bootstrapped) -> dict[str, int]:
    c = client(boot)
    experiments = [e.experiment_id for e in c.search_experiments()]
    out = {"logged_models": len(c.search_logged_models(experiments, max_results=1000))}
    for name in (*MODELS, BUNDLE):
        out[name] = len(c.search_model_versions(f"name = '{name}'"))
    for route in ROUTE_PROMPTS:
        out[route] = len(c.search_prompt_versions(f"ma-prompts.{route}", max_results=1000))
    return out


def new_prompt_version(boot: Bootstrapped, route: str, template: str) -> str:
    """A new prompt version made with MLflow's own prompt API (not the project's)."""
    with tracking_uri_scope(boot.uri):
        pv = mlflow.genai.register_prompt(name=f"ma-prompts.{route}", template=template)
    return str(pv.uri)


def test_bootstrap_creates_every_object_with_its_params_and_aliases(boot: Bootstrapped) -> None:
    c = client(boot)
    for name in MODELS:
        mv = c.get_model_version_by_alias(name, "prod")
        assert int(mv.version) == 1
        lm = c.get_logged_model(str(mv.source).removeprefix("models:/"))
        assert lm.tags["mlflow.model.isExternal"] == "true" and lm.name == name

    intent = params_of(boot, "manga-intent-classifier")
    assert intent["endpoint_name"] == "manga-intent-classifier"
    assert intent["offline.model_id"] == KeywordIntentClassifier.model_version
    assert params_of(boot, "manga-reranker")["offline.model_id"] == OverlapReranker.version

    policy = params_of(boot, "mangaassist-rag-policy")
    assert policy["policy_version"] == retrieval.RETRIEVER_POLICY_VERSION
    assert (policy["candidates_k"], policy["final_k"], policy["fusion_k"]) == ("20", "4", "60")
    assert policy["route.recommendation.source_types"] == "product_description,review_summary"
    assert policy["route.recommendation.max_chunks_per_series"] == "1"
    assert policy["route.small_talk.uses_retrieval"] == "false"

    rules = params_of(boot, "mangaassist-guardrails")
    assert rules["ruleset_version"] == guardrails.RULESET_VERSION
    assert rules["grounding.sentence_coverage"] == "0.7" and rules["grounding.answer_support"] == "0.8"
    assert rules["format.max_chars"] == "1500"
    assert rules["prompt_injection.pi-006"] == guardrails.PromptInjectionStage.RULES[-1][1].pattern

    for route, shipped in ROUTE_PROMPTS.items():
        name = f"ma-prompts.{route}"
        for alias in ("production", "candidate"):
            pv = c.get_prompt_version_by_alias(name, alias)
            assert int(pv.version) == 1 and pv.template == SYSTEM_PROMPTS[shipped]
        assert c.get_prompt_version(name, 1).tags["mangaassist.shipped_as"] == shipped

    prod = c.get_model_version_by_alias(BUNDLE, "prod")
    assert sorted(prod.aliases) == ["candidate", "prod"]
    assert prod.tags[BUNDLE_VERSION_TAG] == DEFAULT_RELEASE_BUNDLE
    lm = c.get_logged_model(str(prod.source).removeprefix("models:/"))
    assert lm.model_type == "release-bundle"
    assert {k: lm.params[k] for k in COMPONENT_KEYS if k != "prompt_pack"} == {
        "intent_classifier": "models:/manga-intent-classifier/1",
        "reranker": "models:/manga-reranker/1",
        "bedrock_model_id": DEFAULT_MODEL_ID,
        "retriever_policy": "models:/mangaassist-rag-policy/1",
        "guardrail_ruleset": "models:/mangaassist-guardrails/1",
    }
    pack = {r: f"prompts:/ma-prompts.{r}/1" for r in sorted(ROUTE_PROMPTS)}
    assert json.loads(lm.params["prompt_pack"]) == pack
    assert all(lm.params[f"prompt.{r}"] == uri for r, uri in pack.items())
    linked = {(p["name"], str(p["version"])) for p in json.loads(lm.tags["mlflow.linkedPrompts"])}
    assert linked == {(f"ma-prompts.{r}", "1") for r in ROUTE_PROMPTS}

    bundle = boot.registry.resolve("prod")
    assert bundle.prompts == pack and bundle.version == 1 and bundle.released
    assert boot.report.existing == [] and f"models:/{BUNDLE}@prod" in boot.report.created
    assert any("created models:/mangaassist-chatbot-prod/1" in line for line in boot.progress)


def test_bootstrap_twice_creates_nothing_and_moves_no_alias(boot: Bootstrapped) -> None:
    before = counts(boot)
    candidate_before = boot.registry.resolve("candidate").version
    again = boot.registry.bootstrap(boot.config)
    assert again.created == []
    assert again.bundle is not None and again.bundle.version == 1
    assert counts(boot) == before
    assert boot.registry.resolve("prod").version == 1
    assert boot.registry.resolve("candidate").version == candidate_before


def test_show_json_has_version_aliases_components_prompts_tags(
    boot: Bootstrapped, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", boot.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "release-tests")
    assert cli.run(["show", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert set(shown) == {
        "name",
        "version",
        "bundle_version",
        "aliases",
        "released",
        "model_id",
        "components",
        "prompts",
        "tags",
        # the lifecycle's view (orchestrator.release.lifecycle): gate states and sign-offs
        "compared_with_prod",
        "promotable",
        "gates",
        "signoffs",
    }
    assert shown["name"] == BUNDLE and shown["version"] == 1 and "prod" in shown["aliases"]
    assert shown["bundle_version"] == DEFAULT_RELEASE_BUNDLE and shown["released"] is True
    assert list(shown["components"]) == list(COMPONENT_KEYS)
    assert sorted(shown["prompts"]) == sorted(ROUTE_PROMPTS)
    assert shown["tags"][BUNDLE_VERSION_TAG] == DEFAULT_RELEASE_BUNDLE
    assert cli.run(["show", "--bundle", DEFAULT_RELEASE_BUNDLE, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == shown


def test_register_with_one_changed_prompt_differs_from_prod_only_there(
    boot: Bootstrapped, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    no_citations = SYSTEM_PROMPTS["recommendation-2.4"].replace(
        "Cite each fact with its chunk id in square brackets, e.g. [faq_003]. ", ""
    )
    uri = new_prompt_version(boot, "recommendation", no_citations)
    assert uri != "prompts:/ma-prompts.recommendation/1"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", boot.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "release-tests")
    assert cli.run(["register", "--from", "prod", "--set-prompt", f"recommendation={uri}", "--json"]) == 0
    out = capsys.readouterr()
    candidate = json.loads(out.out)
    assert "created candidate" in out.err

    prod = boot.registry.resolve("prod")
    assert candidate["version"] > prod.version and candidate["aliases"] == ["candidate"]
    assert candidate["released"] is False and candidate["model_id"] != prod.model_id
    assert candidate["prompts"]["recommendation"] == uri
    assert {r: u for r, u in candidate["prompts"].items() if r != "recommendation"} == {
        r: u for r, u in prod.prompts.items() if r != "recommendation"
    }
    assert {k: v for k, v in candidate["components"].items() if k != "prompt_pack"} == {
        k: v for k, v in prod.components.items() if k != "prompt_pack"
    }
    assert candidate["bundle_version"] == f"{DEFAULT_RELEASE_BUNDLE}+{candidate['version']}"
    assert boot.registry.resolve("candidate").version == candidate["version"]
    assert sorted(prod.aliases) == ["prod"]  # candidate moved off the bootstrap bundle; prod did not move
    assert boot.registry.bundle(candidate["bundle_version"]).version == candidate["version"]


def test_register_pins_alias_uris_to_versions(boot: Bootstrapped) -> None:
    candidate = boot.registry.register(
        "prod",
        set={"reranker": "models:/manga-reranker@prod", "bedrock_model_id": "anthropic.claude-3-7-sonnet"},
        set_prompt={"faq": "prompts:/ma-prompts.faq@production"},
        bundle_version="2026.12.03-pin",
    )
    assert candidate.components["reranker"] == "models:/manga-reranker/1"
    assert candidate.components["bedrock_model_id"] == "anthropic.claude-3-7-sonnet"
    assert candidate.prompts["faq"] == "prompts:/ma-prompts.faq/1"
    assert candidate.bundle_version == "2026.12.03-pin"


def test_a_released_bundle_is_sealed_and_a_candidate_is_not(boot: Bootstrapped) -> None:
    with pytest.raises(SealedBundleError, match=r"is released \(alias prod\): its params are sealed"):
        boot.registry.add_bundle_params("1", {"note": "late change"})
    with pytest.raises(SealedBundleError):
        boot.registry.add_bundle_params(DEFAULT_RELEASE_BUNDLE, {"note": "late change"})
    candidate = boot.registry.register("prod", bundle_version="2026.12.03-seal")
    boot.registry.add_bundle_params(str(candidate.version), {"note": "still a candidate"})
    lm = client(boot).get_logged_model(candidate.model_id)
    assert lm.params["note"] == "still a candidate"
    with pytest.raises(ReleaseError, match="already has params"):
        boot.registry.add_bundle_params(str(candidate.version), {"reranker": "models:/manga-reranker/1"})
    client(boot).set_registered_model_alias(BUNDLE, "shadow", str(candidate.version))
    with pytest.raises(SealedBundleError, match="alias shadow"):
        boot.registry.add_bundle_params(str(candidate.version), {"another": "x"})


def test_unknown_uris_are_refused_all_at_once_before_anything_is_created(boot: Bootstrapped) -> None:
    before = counts(boot)
    with pytest.raises(UnknownUriError) as caught:
        boot.registry.register(
            "prod",
            set={
                "reranker": "models:/manga-reranker/99",
                "retriever_policy": "models:/no-such-policy@prod",
                "guardrails": "models:/mangaassist-guardrails/1",
            },
            set_prompt={
                "recommendation": "prompts:/ma-prompts.recommendation/42",
                "checkout": "prompts:/ma-prompts.faq/1",
                "faq": "ma-prompts.faq/1",
            },
        )
    message = str(caught.value)
    assert "reranker=models:/manga-reranker/99: no such model version" in message
    assert "retriever_policy=models:/no-such-policy@prod: no such model version" in message
    assert "unknown component 'guardrails'" in message
    assert "recommendation=prompts:/ma-prompts.recommendation/42: no such prompt version" in message
    assert "unknown route 'checkout'" in message and "faq=ma-prompts.faq/1: not a prompts:/" in message
    assert "\n" not in message
    assert counts(boot) == before


def test_cli_errors_are_one_line_with_exit_2(
    boot: Bootstrapped, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", boot.uri)
    assert cli.run(["register", "--set", "reranker=models:/manga-reranker/99"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("mangaassist-release: error: reranker=models:/manga-reranker/99: no such model version")
    assert not any("Traceback" in line for line in err)
    assert cli.run(["register", "--set", "reranker"]) == 2
    assert capsys.readouterr().err.strip().endswith("--set expects KEY=VALUE, got 'reranker'")
    assert cli.run(["show", "--alias", "canary"]) == 2
    assert "no bundle holds alias 'canary'" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "file:///tmp/nowhere")
    assert cli.run(["show"]) == 2
    assert "MLFLOW_TRACKING_URI must be http(s)://host:port or sqlite:///path" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        cli.run(["show", "--alias", "prod", "--bundle", "1"])
    assert usage.value.code == 2
