"""The chatbot serves an exported bundle without MLflow on its request path: the export holds the
bundle's routes and prompts, the chat service follows them, a new export is picked up at the
next refresh, and a bad one is refused while the last good bundle keeps serving."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from clients import ClientConfig, Tracer
from orchestrator.adapters import offline_providers
from orchestrator.bundle_file import FORMAT, BundleFileError
from orchestrator.config import load
from orchestrator.release import cli
from orchestrator.release.registry import export_bundle
from orchestrator.schema import ChatRequest, PageContext
from orchestrator.service import ChatService
from tests.release.conftest import Bootstrapped
from tests.release.test_registry import new_prompt_version
from tests.support import free_port

CITE = "Cite each fact with its chunk id in square brackets, e.g. [faq_003]. "


def test_an_exported_bundle_is_served_and_a_new_export_replaces_it(
    boot: Bootstrapped, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prod = boot.registry.resolve("prod")
    faq = boot.registry.prompt_templates(prod)["faq"][1]
    assert CITE in faq
    uri = new_prompt_version(boot, "faq", faq.replace(CITE, ""))
    candidate = boot.registry.register("prod", {}, {"faq": uri}, None)
    served_file = tmp_path / "bundle.json"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", boot.uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "release-tests")
    assert cli.run(["export", "--bundle", str(candidate.version), "--out", str(served_file)]) == 0
    assert f"wrote bundle {candidate.version}" in capsys.readouterr().out
    document = json.loads(served_file.read_text())
    assert document["bundle_version"] == candidate.bundle_version and document["model_version"] == str(
        candidate.version
    )

    config = load({"MANGAASSIST_BUNDLE_FILE": str(served_file), "MANGAASSIST_BUNDLE_REFRESH_S": "0.05"})
    providers = offline_providers(config)
    tracer = Tracer(ClientConfig(target=f"127.0.0.1:{free_port()}", backoff_max_s=0.2))
    try:
        service = ChatService(tracer, providers)
        request = ChatRequest("s", "How long does shipping take?", PageContext("search", "en-US", None))
        uncited = service.handle(request)
        assert uncited.citations == () and "[" not in uncited.reply  # the candidate's faq prompt
        assert providers.routes.current().release_bundle == candidate.bundle_version

        served_file.write_text("{ not json")  # a bad export is refused; the candidate keeps serving
        time.sleep(0.1)
        assert providers.routes.current().release_bundle == candidate.bundle_version

        served_file.write_text(json.dumps(export_bundle(boot.registry, prod)))
        time.sleep(0.1)
        assert providers.routes.current().release_bundle == prod.bundle_version
        cited = service.handle(ChatRequest("s2", "How long does shipping take?", PageContext("search", "en-US", None)))
        assert cited.citations and "[" in cited.reply  # prod's prompt again, without a restart
    finally:
        tracer.shutdown(timeout_s=1)


def test_a_bundle_file_that_cannot_be_served_fails_at_start(tmp_path: Path) -> None:
    bad = tmp_path / "bundle.json"
    bad.write_text(json.dumps({"format": FORMAT, "bundle_version": "x", "routes": {}, "prompts": {}}))
    with pytest.raises(BundleFileError, match="routes"):
        offline_providers(load({"MANGAASSIST_BUNDLE_FILE": str(bad)}))
    bad.write_text(json.dumps({"format": "mangaassist-bundle/1", "bundle_version": "x", "routes": {}, "prompts": {}}))
    with pytest.raises(BundleFileError, match="not a mangaassist-bundle/2 document"):
        offline_providers(load({"MANGAASSIST_BUNDLE_FILE": str(bad)}))
    with pytest.raises(BundleFileError, match="cannot read"):
        offline_providers(load({"MANGAASSIST_BUNDLE_FILE": str(tmp_path / "missing.json")}))
