"""Fixtures of the fault matrix: one real ``mlflow server`` per module, a :class:`Rig` (fault proxy,
gateway process, tracers) per test, and the scenarios' figures repeated at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.harness import REPORTED, Rig, start_mlflow
from tests.support import MlflowServer


@pytest.fixture(scope="module")
def mlflow_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MlflowServer, Path]]:
    server, db = start_mlflow(tmp_path_factory.mktemp("fault-mlflow"))
    yield server, db
    server.stop()


@pytest.fixture
def rig(mlflow_db: tuple[MlflowServer, Path], tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Rig]:
    server, db = mlflow_db
    with Rig(server, db, tmp_path, experiment=f"faults-{request.node.name[:60]}") as r:
        yield r


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTED:
        terminalreporter.section("fault matrix figures")
        for line in REPORTED:
            terminalreporter.write_line(line)
