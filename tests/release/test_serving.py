"""A bundle's six components all act: the chatbot serves the retriever policy, guardrail ruleset,
intent classifier and reranker its component versions configure (not only prompts and model id),
tags every trace with the bundle's LoggedModel and component URIs, and `follow` keeps one export
per alias for MANGAASSIST_BUNDLE_DIR / MANGAASSIST_RELEASE_ALIAS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients import Tracer
from orchestrator.adapters import Providers, offline_providers
from orchestrator.bundle_file import BundleFileError, parse_bundle
from orchestrator.config import load
from orchestrator.release import cli
from orchestrator.release.follow import follow_once
from orchestrator.release.registry import (
    Bundle,
    ReleaseError,
    ReleaseRegistry,
    export_bundle,
    providers_for_bundle,
)
from orchestrator.schema import ChatRequest, ChatResponse, PageContext
from orchestrator.service import ChatService
from tests.release.conftest import Bootstrapped, TagRecorder
from tests.support import free_port

POLICY, GUARDRAILS, CLASSIFIER = "mangaassist-rag-policy", "mangaassist-guardrails", "manga-intent-classifier"


def candidate_with(boot: Bootstrapped, **components: str) -> Bundle:
    return boot.registry.register("prod", components, {}, None)


def ask(providers: Providers, tracer: Tracer, message: str, page: str = "search") -> ChatResponse:
    return ChatService(tracer, providers).handle(ChatRequest("s-serving", message, PageContext(page, "en-US", None)))


def retrieved(providers: Providers, tracer: Tracer, message: str) -> int:
    service = ChatService(tracer, providers)
    serving = providers.serving()
    route = serving.table.route_for("recommendation")
    with tracer.start_span("test"):
        return len(service.retriever.retrieve(message, route, None, serving.policy, serving.reranker).chunks)


def test_a_derived_retriever_policy_changes_what_is_retrieved(boot: Bootstrapped, tracer: Tracer) -> None:
    registry = boot.registry
    uri = registry.derive_component(POLICY, "prod", {"final_k": "2", "reranker": "off"})
    assert uri == f"models:/{POLICY}/2"
    assert registry.derive_component(POLICY, "prod", {"final_k": "2", "reranker": "off"}) == uri  # by digest
    prod_providers, _ = providers_for_bundle(registry, registry.resolve("prod"))
    cand_providers, _ = providers_for_bundle(registry, candidate_with(boot, retriever_policy=uri))
    question = "Recommend a dark fantasy manga like Berserk"
    assert retrieved(prod_providers, tracer, question) == 4
    assert retrieved(cand_providers, tracer, question) == 2
    policy = cand_providers.serving().policy
    assert policy is not None and policy.final_k == 2 and not policy.rerank


def test_a_derived_policy_or_ruleset_is_checked_by_the_code_that_reads_it(boot: Bootstrapped) -> None:
    with pytest.raises(ReleaseError, match="final_k=0 is outside"):
        boot.registry.derive_component(POLICY, "prod", {"final_k": "0"})
    with pytest.raises(ReleaseError, match="has no param no_such_param"):
        boot.registry.derive_component(POLICY, "prod", {"no_such_param": "1"})
    with pytest.raises(ReleaseError, match=r"prompt_injection\.pi-001 is not a valid pattern"):
        boot.registry.derive_component(GUARDRAILS, "prod", {"prompt_injection.pi-001": "(unclosed"})


def test_a_derived_guardrail_ruleset_blocks_what_prod_lets_through(boot: Bootstrapped, tracer: Tracer) -> None:
    registry = boot.registry
    # A stricter ruleset: a new injection rule, and a lower support bar stays within range.
    uri = registry.derive_component(
        GUARDRAILS, "prod", {"prompt_injection.pi-900": r"(?i)\bcoupon codes?\b", "ruleset_version": "guardrails-13"}
    )
    prod_providers, _ = providers_for_bundle(registry, registry.resolve("prod"))
    cand_providers, _ = providers_for_bundle(registry, candidate_with(boot, guardrail_ruleset=uri))
    message = "Do you have a coupon code for One Piece volume 107?"
    assert ask(prod_providers, tracer, message).guardrail_action != "block"
    blocked = ask(cand_providers, tracer, message)
    assert blocked.guardrail_action == "block" and "Sorry" in blocked.reply


def test_the_classifier_versions_config_acts_and_a_foreign_model_is_refused(boot: Bootstrapped, tracer: Tracer) -> None:
    registry = boot.registry
    prior = json.loads(registry.component_params(f"models:/{CLASSIFIER}@prod")["offline.page_prior"])
    prior["product"] = "recommendation"
    uri = registry.derive_component(CLASSIFIER, "prod", {"offline.page_prior": json.dumps(prior, sort_keys=True)})
    prod_providers, _ = providers_for_bundle(registry, registry.resolve("prod"))
    cand_providers, _ = providers_for_bundle(registry, candidate_with(boot, intent_classifier=uri))
    message = "Tell me more"  # no cue: the page prior decides
    assert ask(prod_providers, tracer, message, page="product").intent == "product_question"
    assert ask(cand_providers, tracer, message, page="product").intent == "recommendation"

    foreign = registry.derive_component(CLASSIFIER, "prod", {"offline.model_id": "offline-keyword-intent-9"})
    bundle = candidate_with(boot, intent_classifier=foreign)
    with pytest.raises(BundleFileError, match="pins offline model 'offline-keyword-intent-9'"):
        parse_bundle(export_bundle(registry, bundle), offline_providers(), "m")
    with pytest.raises(ReleaseError, match="cannot be served by this build"):
        providers_for_bundle(registry, bundle)


def test_every_trace_is_tagged_with_the_bundles_logged_model_and_components(
    boot: Bootstrapped, tracer: Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = boot.registry.resolve("prod")
    providers, _ = providers_for_bundle(boot.registry, prod)
    recorder = TagRecorder(tracer, monkeypatch)
    ask(providers, tracer, "How long does shipping take?")
    tags = recorder.tags[-1]
    assert tags["release_model_id"] == prod.model_id
    assert tags["release_bundle"] == prod.bundle_version
    for key in ("intent_classifier", "reranker", "retriever_policy", "guardrail_ruleset", "bedrock_model_id"):
        assert tags[f"component.{key}"] == prod.components[key]
    assert tags["prompt_version"] == prod.prompts["faq"].removeprefix("prompts:/")  # NAME/VERSION: a prompt link

    recorder.tags.clear()
    ask(offline_providers(), tracer, "How long does shipping take?")  # no registered bundle: no link tags
    assert "release_model_id" not in recorder.tags[-1]


def test_follow_keeps_one_export_per_alias_and_the_chatbot_serves_its_alias(
    boot: Bootstrapped, tmp_path: Path, tracer: Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, folder = boot.registry, tmp_path / "bundles"
    candidate = registry.register("prod", {"bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"}, {}, None)
    report = follow_once(registry, folder, ["prod", "candidate", "canary"])
    assert sorted(line.split(" ")[0] for line in report.written) == ["candidate", "prod"]
    assert report.unset == ["canary"] and not report.errors
    assert follow_once(registry, folder, ["prod", "candidate"]).unchanged == ["prod", "candidate"]

    config = load({"MANGAASSIST_BUNDLE_DIR": str(folder), "MANGAASSIST_RELEASE_ALIAS": "candidate"})
    providers = offline_providers(config)
    assert providers.serving().table.release_bundle == candidate.bundle_version
    assert providers.serving().logged_model_id == candidate.model_id

    client = registry.client
    client.delete_registered_model_alias("mangaassist-chatbot-prod", "candidate")
    assert follow_once(registry, folder, ["prod", "candidate"]).removed == ["candidate"]
    assert (folder / "prod.json").exists() and not (folder / "candidate.json").exists()

    # MLflow unreachable: the round fails for every alias and leaves the files as they were.
    before = (folder / "prod.json").read_text()
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = ReleaseRegistry(f"http://127.0.0.1:{free_port()}", "release-tests")
    report = follow_once(down, folder, ["prod"])
    assert report.errors and (folder / "prod.json").read_text() == before


def test_follow_and_component_on_the_command_line(
    boot: Bootstrapped, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", boot.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "release-tests")
    assert cli.run(["component", "--name", POLICY, "--from", "prod", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["final_k"] == "4"
    assert cli.run(["component", "--name", POLICY, "--set-param", "final_k=3"]) == 0
    assert capsys.readouterr().out.strip().startswith(f"models:/{POLICY}/")
    assert cli.run(["component", "--name", POLICY, "--set-param", "final_k=99"]) == 2
    assert "final_k=99 is outside [1, 20]" in capsys.readouterr().err
    folder = tmp_path / "out"
    assert cli.run(["follow", "--dir", str(folder), "--aliases", "prod", "--once"]) == 0
    assert json.loads((folder / "prod.json").read_text())["format"] == "mangaassist-bundle/2"
    assert "wrote prod -> bundle" in capsys.readouterr().err
