"""Shadow traffic: a sampled request is answered again by the shadow bundle after the primary's
answer, on the primary's own inputs and retrieval snapshot, with no side effects; failures,
overload, the cost cap and the kill switch are counted, never raised into the primary."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import defaultdict
from pathlib import Path

import pytest

from clients import Tracer
from orchestrator.adapters import Providers, offline_providers
from orchestrator.adapters.base import Generation, GenerationRequest, Serving
from orchestrator.config import load
from orchestrator.release.follow import follow_once, write_atomically
from orchestrator.release.registry import export_bundle
from orchestrator.rollout.router import Router
from orchestrator.rollout.shadow import ShadowConfig, ShadowRunner
from orchestrator.schema import ChatRequest, PageContext
from orchestrator.service import ChatService
from tests.release.conftest import Bootstrapped, TagRecorder
from tests.release.test_registry import new_prompt_version

CITE = "Cite each fact with its chunk id in square brackets, e.g. [faq_003]. "
QUESTIONS = [
    "How long does shipping take?",
    "What is your return policy for damaged volumes?",
    "Recommend a manga like Berserk",
    "Is One Piece volume 107 in stock?",
    "Do you ship to Canada?",
    "Can I return an opened box set?",
    "What manga is similar to Naruto?",
    "How much is Chainsaw Man volume 1?",
]


@pytest.fixture(scope="module")
def folder(boot: Bootstrapped, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """prod.json and shadow.json: the shadow is a candidate whose faq prompt drops citations."""
    registry = boot.registry
    out = tmp_path_factory.mktemp("bundles")
    follow_once(registry, out, ["prod"])
    prod = registry.resolve("prod")
    faq = registry.prompt_templates(prod)["faq"][1]
    candidate = registry.register("prod", {}, {"faq": new_prompt_version(boot, "faq", faq.replace(CITE, ""))}, None)
    write_atomically(out / "shadow.json", json.dumps(export_bundle(registry, candidate)))
    return out


def shadow_service(folder: Path, tracer: Tracer, **config: object) -> tuple[ChatService, ShadowRunner, Providers]:
    providers = offline_providers(load({"MANGAASSIST_BUNDLE_DIR": str(folder)}))
    router = providers.bundle
    assert isinstance(router, Router)
    service = ChatService(tracer, providers)
    settings = dataclasses.replace(ShadowConfig(share=1.0, rate_per_s=1000.0, burst=100), **config)  # type: ignore[arg-type]
    runner = ShadowRunner(service, router.shadow_serving, settings)
    service.shadow = runner
    return service, runner, providers


def ask(service: ChatService, n: int, session: str = "s-shadow") -> list[str]:
    replies = []
    for i in range(n):
        page = PageContext("search", "en-US", None)
        replies.append(service.handle(ChatRequest(session, QUESTIONS[i % len(QUESTIONS)], page)).reply)
    return replies


def test_pairs_share_one_snapshot_and_the_shadow_writes_nothing(
    folder: Path, tracer: Tracer, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = TagRecorder(tracer, monkeypatch)
    service, runner, _ = shadow_service(folder, tracer, noise_every=4)
    replies = ask(service, 8)
    assert runner.drain(30)
    by_pair: dict[str, dict[str, dict[str, str]]] = defaultdict(dict)
    for tags in recorder.tags:
        if "shadow_pair_id" in tags:
            by_pair[tags["shadow_pair_id"]].setdefault(tags["shadow_role"], {}).update(tags)
    assert len(by_pair) == 8
    noise = 0
    for roles in by_pair.values():
        primary, shadow = roles["primary"], roles["candidate"]
        assert primary["deployment_stage"] == "prod" and shadow["deployment_stage"] == "shadow"
        assert shadow["release_bundle"] != primary["release_bundle"]  # the candidate answered
        assert shadow["retrieval_snapshot_hash"] == primary["retrieval_snapshot_hash"]  # one snapshot
        if "noise" in roles:
            noise += 1
            assert roles["noise"]["release_bundle"] == primary["release_bundle"]
            assert roles["noise"]["retrieval_snapshot_hash"] == primary["retrieval_snapshot_hash"]
    assert noise == 2  # every 4th pair replays the stable bundle: the noise floor
    counts = runner.counts()
    assert counts["runs"]["completed"] == 10 and counts["runs"]["failed"] == 0
    assert counts["side_effects_stubbed"]["persist"] == 10
    # nothing of the shadow reached the session or the response store: 8 customer turns only
    assert len(service._responses) == 8 and len(service._history["s-shadow"]) == 8
    assert all(r for r in replies)


def test_a_failing_shadow_is_counted_and_the_primary_is_untouched(folder: Path, tracer: Tracer) -> None:
    service, runner, providers = shadow_service(folder, tracer)

    class Broken:
        model_name = "broken"

        def classify(self, message: str, page_type: str, locale: str) -> object:
            raise RuntimeError("shadow classifier down")

    router = providers.bundle
    assert isinstance(router, Router)
    real = router.shadow_serving

    def broken() -> Serving | None:
        served = real()
        return dataclasses.replace(served, classifier=Broken()) if served else None  # type: ignore[arg-type]

    runner._shadow = broken
    assert all(ask(service, 3))
    assert runner.drain(30) and runner.counts()["runs"]["failed"] == 3


def test_overload_sheds_the_shadow_first(folder: Path, tracer: Tracer) -> None:
    release = threading.Event()
    service, runner, providers = shadow_service(folder, tracer, queue_max=1)
    real = providers.generator

    class SlowInShadow:
        provider = "offline"

        def generate(self, request: GenerationRequest) -> Generation:
            if threading.current_thread().name == "mangaassist-shadow":
                release.wait(10)  # the shadow is stuck; the primary must not notice
            return real.generate(request)

    service.providers = dataclasses.replace(providers, generator=SlowInShadow())
    started = time.monotonic()
    assert all(ask(service, 6))
    assert time.monotonic() - started < 8  # 6 primaries answered while the shadow was blocked
    release.set()
    assert runner.drain(30)
    assert runner.counts()["runs"]["shed"] >= 3


def test_kill_switch_cost_cap_and_missing_bundle(folder: Path, tracer: Tracer, tmp_path: Path) -> None:
    kill = tmp_path / "shadow.off"
    service, runner, _ = shadow_service(folder, tracer, kill_file=str(kill))
    kill.write_text("")
    ask(service, 2)
    assert runner.counts()["runs"]["killed"] == 2 and runner.counts()["runs"]["completed"] == 0

    service, runner, _ = shadow_service(folder, tracer, cost_cap_usd_per_hour=1e-9)
    ask(service, 1)
    assert runner.drain(30)  # its cost is booked: the cap is reached
    ask(service, 2)
    assert runner.counts()["runs"]["completed"] == 1 and runner.counts()["runs"]["cost_capped"] == 2

    empty = tmp_path / "only-prod"
    empty.mkdir()
    (empty / "prod.json").write_text((folder / "prod.json").read_text())
    service, runner, _ = shadow_service(empty, tracer)
    ask(service, 2)
    assert runner.counts()["runs"]["no_bundle"] == 2
