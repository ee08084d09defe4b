"""Fixtures for the whole suite: real MLflow servers (SQLite and PostgreSQL) and gateways.

What each folder is for (folders mirror the packages; cross-cutting suites have their own):

- ``gateway/`` — the sidecar's modules one by one, with fakes (``tests/fakes.py``); seconds.
- ``clients/`` — the client library against ``FakeGateway``, a real gRPC server on loopback.
- ``orchestrator/`` — the chatbot: config, pipeline, HTTP API, AWS adapters (botocore Stubber,
  moto), and end to end through a real gateway.
- ``contracts/`` — what must not drift: generated stubs, buf lint, deploy manifests, the
  gateway's import layers.
- ``integration/`` — the gateway as users run it: real ``mlflow server`` subprocesses (SQLite,
  PostgreSQL), the OpenTelemetry SDK, the sidecar process, sampling and availability.
- ``feedback/``, ``redaction/`` — one feature each, end to end (feedback join and Kinesis
  stream; the labelled PII corpus).
- ``faults/`` — the fault matrix: MLflow down, slow or failing, the gateway killed, the spool
  full or torn, overload (``faultproxy.py`` sits between gateway and MLflow).

Markers: ``integration`` (starts servers), ``postgres`` (needs 127.0.0.1:5432), ``slow``
(left out of ``make test-fast``). ``make test`` runs everything.

Servers are started once per session and stopped at the end; gateways are per test. Nothing
is skipped when a service is missing: a test that needs PostgreSQL fails loudly if it cannot
reach 127.0.0.1:5432 (``.ci/run`` starts it).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support import MlflowServer, create_pg_database, drop_pg_database


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` with a SQLite backend."""
    workdir = tmp_path_factory.mktemp("mlflow-sqlite")
    server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mlflow_server_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on the machine's PostgreSQL, in a fresh database."""
    name = f"tracegw_test_{os.getpid()}"
    uri = create_pg_database(name)
    workdir = tmp_path_factory.mktemp("mlflow-pg")
    server = MlflowServer(uri, workdir).start()
    yield server
    server.stop()
    drop_pg_database(name)


@pytest.fixture
def gateway_factory(tmp_path: Path) -> Iterator[Callable[..., object]]:
    """Start in-process gateways (real gRPC on 127.0.0.1:0) with env-style overrides."""
    from gateway import config
    from gateway.server import ThreadedGateway

    started: list[ThreadedGateway] = []

    def make(**env: str) -> ThreadedGateway:
        settings = {
            "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
            "TRACEGW_METRICS_ADDRESS": "127.0.0.1:0",
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'embedded.db'}",
            "TRACEGW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
            "TRACEGW_ROOT_GRACE_S": "0.05",
            "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
            "TRACEGW_SHUTDOWN_GRACE_S": "10",
            "TRACEGW_SPOOL_DIR": str(tmp_path / f"spool-{len(started)}"),
            # In-process, RSS is pytest's (with MLflow loaded), not a sidecar's: keep the guard out
            # of the way unless a test is about it.
            "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
            "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
        }
        settings.update(env)
        gw = ThreadedGateway(config.load(settings))
        started.append(gw)
        return gw

    yield make
    for gw in started:
        gw.stop()
