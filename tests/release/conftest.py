"""Fixtures of the release suite: one bootstrapped embedded (``sqlite:///``) registry per module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from clients import ClientConfig, Tracer
from orchestrator.config import OrchestratorConfig, load
from orchestrator.release.registry import BootstrapReport, ReleaseRegistry
from tests.support import free_port


@dataclass
class Bootstrapped:
    uri: str
    config: OrchestratorConfig
    registry: ReleaseRegistry
    report: BootstrapReport
    progress: list[str]


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bootstrapped]:
    folder: Path = tmp_path_factory.mktemp("release")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    config = load({"MLFLOW_TRACKING_URI": uri})
    progress: list[str] = []
    registry = ReleaseRegistry(uri, "release-tests", progress.append)
    report = registry.bootstrap(config)
    yield Bootstrapped(uri, config, registry, report, progress)


@pytest.fixture(scope="module")
def tracer() -> Iterator[Tracer]:
    t = Tracer(ClientConfig(target=f"127.0.0.1:{free_port()}", backoff_max_s=0.2))  # nobody listens: spans are dropped
    yield t
    t.shutdown(timeout_s=1)


class TagRecorder:
    """Captures the trace tags the chat service sets (what the gateway receives as the trace's tags)."""

    def __init__(self, tracer: Tracer, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tags: list[dict[str, str]] = []
        real = tracer.update_current_trace

        def record(**kwargs: Any) -> None:
            self.tags.append(dict(kwargs.get("tags") or {}))
            real(**kwargs)

        monkeypatch.setattr(tracer, "update_current_trace", record)
