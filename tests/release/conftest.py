"""Fixtures of the release suite: one bootstrapped embedded (``sqlite:///``) registry per module."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from orchestrator.config import OrchestratorConfig, load
from orchestrator.release.registry import BootstrapReport, ReleaseRegistry


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
