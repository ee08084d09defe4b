"""The canary router: monotonic, sticky session assignment with a concurrent control cohort of the
canary's size, served from the follower's directory, picked up and dropped without a restart."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clients import Tracer
from orchestrator.adapters import offline_providers
from orchestrator.config import load
from orchestrator.release.follow import follow_once
from orchestrator.release.registry import export_bundle
from orchestrator.rollout.router import bucket, cohort
from orchestrator.schema import ChatRequest, PageContext
from orchestrator.service import ChatService
from tests.release.conftest import Bootstrapped, TagRecorder

SESSIONS = [f"session-{i}" for i in range(4000)]


def test_assignment_is_monotonic_across_steps_and_control_matches_the_canary() -> None:
    salt = "mangaassist-chatbot-prod/7"
    previous: set[str] = set()
    for percent in (1, 10, 50):
        canary = {s for s in SESSIONS if cohort(salt, s, percent) == "canary"}
        control = {s for s in SESSIONS if cohort(salt, s, percent) == "control"}
        assert previous <= canary  # in the canary at 1 % stays in it at 10 % and 50 %
        assert not canary & control
        expected = len(SESSIONS) * percent / 100
        assert abs(len(canary) - expected) < 4 * expected**0.5 + 5
        assert abs(len(control) - len(canary)) < 4 * expected**0.5 + 5
        previous = canary
    full = [cohort(salt, s, 100) for s in SESSIONS]  # 100 %: every session but the 5 % hold-back
    assert set(full) == {"canary", "control"} and abs(full.count("control") - 200) < 60
    assert previous <= {s for s, c in zip(SESSIONS, full, strict=True) if c == "canary"}
    assert {cohort(salt, s, 0) for s in SESSIONS} == {""}
    other = {s for s in SESSIONS if cohort("mangaassist-chatbot-prod/8", s, 10) == "canary"}
    assert other != previous  # a new canary (new salt) draws its own sessions


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=1, max_size=40), st.floats(0, 100), st.floats(0, 100))
def test_a_session_never_leaves_the_canary_when_the_step_grows(session: str, a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0 <= bucket("salt", session) < 10_000
    if cohort("salt", session, low) == "canary":
        assert cohort("salt", session, high) == "canary"


def test_the_router_serves_the_canary_share_and_drops_it_when_the_file_goes(
    boot: Bootstrapped, tmp_path: Path, tracer: Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry, folder = boot.registry, tmp_path / "bundles"
    follow_once(registry, folder, ["prod"])
    providers = offline_providers(load({"MANGAASSIST_BUNDLE_DIR": str(folder), "MANGAASSIST_BUNDLE_REFRESH_S": "0.05"}))
    prod = registry.resolve("prod")
    assert {providers.serving(s).deployment_stage for s in SESSIONS[:200]} == {"prod"}

    candidate = registry.register("prod", {"bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0"}, {}, None)
    registry.client.set_model_version_tag("mangaassist-chatbot-prod", str(candidate.version), "canary.percent", "10")
    candidate = registry.bundle(str(candidate.version))
    document = export_bundle(registry, candidate, alias="canary")
    assert document["rollout"] == {"percent": 10.0, "salt": f"mangaassist-chatbot-prod/{candidate.version}"}
    (folder / "canary.json").write_text(json.dumps(document))
    time.sleep(0.1)
    served = [providers.serving(s) for s in SESSIONS]
    canary = [s for s in served if s.deployment_stage == "canary"]
    control = [s for s in served if s.cohort == "control"]
    assert 300 < len(canary) < 500 and 300 < len(control) < 500
    assert {s.logged_model_id for s in canary} == {candidate.model_id}
    assert {s.logged_model_id for s in control} == {prod.model_id}
    assert {s.table.release_bundle for s in canary} == {candidate.bundle_version}
    assert providers.serving(SESSIONS[0]) == providers.serving(SESSIONS[0])  # sticky

    recorder = TagRecorder(tracer, monkeypatch)
    service = ChatService(tracer, providers)
    page = PageContext("search", "en-US", None)
    for session in SESSIONS[:60]:
        service.handle(ChatRequest(session, "How long does shipping take?", page))
    stages = {(t["deployment_stage"], t.get("rollout_cohort", ""), t["release_bundle"]) for t in recorder.tags}
    assert ("canary", "canary", candidate.bundle_version) in stages
    assert ("prod", "control", prod.bundle_version) in stages and ("prod", "", prod.bundle_version) in stages

    (folder / "canary.json").unlink()  # rolled back: everyone is served prod at the next refresh
    time.sleep(0.1)
    assert {providers.serving(s).logged_model_id for s in SESSIONS[:500]} == {prod.model_id}
