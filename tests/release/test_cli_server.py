"""``mangaassist-release`` as a subprocess against a real ``mlflow server`` (SQLite backend)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orchestrator.config import DEFAULT_RELEASE_BUNDLE
from tests.support import MlflowServer

ROOT = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).parent / "mangaassist-release"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[MlflowServer]:
    srv = MlflowServer(f"sqlite:///{tmp_path / 'server.db'}", tmp_path).start()
    try:
        yield srv
    finally:
        srv.stop()


def release(server: MlflowServer, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, MLFLOW_TRACKING_URI=server.url, MLFLOW_EXPERIMENT_NAME="release-cli")
    command = [str(CLI)] if CLI.exists() else [sys.executable, "-m", "orchestrator.release.cli"]
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.integration
def test_bootstrap_and_show_over_http(server: MlflowServer, tmp_path: Path) -> None:
    first = release(server, tmp_path, "bootstrap", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert report["existing"] == [] and "models:/mangaassist-chatbot-prod@prod" in report["created"]
    assert f"MLflow at {server.url}" in first.stderr

    again = release(server, tmp_path, "bootstrap", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["created"] == []

    shown = release(server, tmp_path, "show", "--alias", "prod", "--json")
    assert shown.returncode == 0, shown.stderr
    bundle = json.loads(shown.stdout)
    assert bundle == report["bundle"]
    assert bundle["version"] == 1 and bundle["bundle_version"] == DEFAULT_RELEASE_BUNDLE
    assert bundle["aliases"] == ["candidate", "prod"]
    assert bundle["components"]["reranker"] == "models:/manga-reranker/1"
    assert bundle["prompts"]["recommendation"] == "prompts:/ma-prompts.recommendation/1"
    assert not list(tmp_path.glob("mlruns")) and not (tmp_path / "mlflow.db").exists()

    bad = release(server, tmp_path, "register", "--set-prompt", "faq=prompts:/ma-prompts.faq/7")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("mangaassist-release: error: faq=prompts:/")
    assert "Traceback" not in bad.stderr


def test_an_unreachable_server_fails_fast_with_exit_2(tmp_path: Path) -> None:
    dead = MlflowServer("sqlite:///unused.db", tmp_path)  # never started: a free port nobody listens on
    result = release(dead, tmp_path, "show", "--json")
    assert result.returncode == 2 and result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    assert last == f"mangaassist-release: error: cannot reach MLflow at {dead.url}: [Errno 111] Connection refused"
    assert "Traceback" not in result.stderr
