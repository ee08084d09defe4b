"""A pod that only sends events installs grpcio and protobuf, nothing heavier: the client runs
in a fresh virtualenv holding just those two, and importing and using it loads none of the
gateway's or orchestrator's dependencies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("mlflow", "boto3", "botocore", "opentelemetry", "prometheus_client", "requests", "sqlalchemy")

SCRIPT = f"""
import importlib.util, json, sys, time

import clients

heavy = {set(HEAVY)!r}
tracer = clients.Tracer(clients.ClientConfig(target=sys.argv[1], flush_interval_s=0.05))
with tracer.start_span("handle_message", span_type="CHAIN", attributes={{"request_id": "req-1"}}) as span:
    span.set_inputs({{"message": "hello"}})
started = time.monotonic()
tracer.shutdown(timeout_s=2)
stats = tracer.stats()
print(json.dumps({{
    "loaded": sorted(m for m in sys.modules if m.split('.')[0] in heavy),
    "installed": sorted(name for name in heavy if importlib.util.find_spec(name) is not None),
    "clients_file": clients.__file__,
    "shutdown_s": time.monotonic() - started,
    "spans_enqueued": stats.spans_enqueued,
    "spans_dropped_total": stats.spans_dropped_total,
    "errors": stats.errors,
}}))
"""


def _run(
    args: list[str], timeout_s: float, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout_s, check=False, env=env, cwd=cwd)


@pytest.mark.integration
def test_client_runs_with_only_grpcio_and_protobuf(tmp_path: Path) -> None:
    venv = tmp_path / "client-venv"
    made = _run([sys.executable, "-m", "venv", str(venv)], 120)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--quiet", "grpcio", "protobuf"], 300)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    listed = _run([str(python), "-m", "pip", "list", "--format=json"], 60)
    packages = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"grpcio", "protobuf"} <= packages
    assert packages <= {"grpcio", "protobuf", "typing-extensions", "typing_extensions", "pip", "setuptools", "wheel"}

    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PYTHONPATH"] = str(REPO_ROOT)
    result = _run([str(python), "-c", SCRIPT, f"127.0.0.1:{free_port()}"], 60, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["clients_file"].startswith(str(REPO_ROOT))
    assert report["installed"] == []  # none of them is even importable in this venv
    assert report["loaded"] == []
    assert report["spans_enqueued"] == 1
    assert report["spans_dropped_total"] == 1  # nothing listens: the span is dropped and counted
    assert report["errors"] == 0
    assert report["shutdown_s"] < 3.0
