"""The gateway as the real ``tracegw serve`` process: health and reflection on its gRPC port,
JSON log lines without payloads, a SIGTERM drain that delivers what assembly still held, and
the command line's help and configuration errors."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from clients import ClientConfig, Tracer
from orchestrator.tools.traffic import handle_message, plan_requests
from tests.support import free_port, wait_for

NATIVE_SERVICE = "mangaassist.tracegateway.v1.TraceGatewayService"
OTLP_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
HEALTH_SERVICE = "grpc.health.v1.Health"
SHUTDOWN_GRACE_S = 20.0
EXPERIMENT = "sidecar"


def _clean_env(**settings: str) -> dict[str, str]:
    """The test process's environment without any gateway or MLflow setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEGW_", "MLFLOW_"))}
    env.update(PYTHONUNBUFFERED="1", **settings)
    return env


def _tracegw() -> list[str]:
    script = shutil.which("tracegw", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-m", "gateway.cli"]


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    target: str
    metrics_url: str
    tracking_uri: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def health(self, service: str = "") -> Any:
        with grpc.insecure_channel(self.target) as channel:
            return (
                health_pb2_grpc.HealthStub(channel)
                .Check(health_pb2.HealthCheckRequest(service=service), timeout=2)
                .status
            )

    def scrape(self, metric: str) -> float | None:
        from prometheus_client.parser import text_string_to_metric_families

        with urllib.request.urlopen(self.metrics_url, timeout=5) as resp:
            body = resp.read().decode()
        for family in text_string_to_metric_families(body):
            for sample in family.samples:
                if sample.name == metric:
                    return float(sample.value)
        return None


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[Sidecar]:
    grpc_port, metrics_port = free_port(), free_port()
    tracking_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = _clean_env(
        TRACEGW_LISTEN_ADDRESS=f"127.0.0.1:{grpc_port}",
        TRACEGW_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
        TRACEGW_REFLECTION="true",  # off by default; the test below lists services with it
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        TRACEGW_ARTIFACT_ROOT=str(tmp_path / "art"),
        TRACEGW_SPOOL_DIR=str(tmp_path / "spool"),
        # Long enough that every trace is still in assembly when SIGTERM arrives: only the
        # drain can deliver them.
        TRACEGW_ROOT_GRACE_S="30",
        TRACEGW_DECISION_TIMEOUT_S="60",
        TRACEGW_SHUTDOWN_GRACE_S=str(SHUTDOWN_GRACE_S),
    )
    log_path = tmp_path / "tracegw.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    car = Sidecar(proc, f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{metrics_port}/metrics", tracking_uri, log_path)

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"tracegw exited with {proc.returncode}:\n{car.log()[-3000:]}")
        try:
            return bool(car.health() == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    try:
        wait_for(serving, timeout_s=60, interval_s=0.1, what="tracegw health SERVING")
        yield car
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.mark.integration
def test_sigterm_drains_assembly_into_mlflow_and_exits_0(sidecar: Sidecar) -> None:
    plans = plan_requests(20, seed=21, feedback_rate=0.0)
    tracer = Tracer(ClientConfig(target=sidecar.target, flush_interval_s=0.05))
    try:
        expected_spans = {"tr-" + handle_message(tracer, p): p.span_count for p in plans}
        trace_ids = set(expected_spans)
        assert tracer.flush(timeout_s=10)
        stats = tracer.stats()
    finally:
        tracer.shutdown(timeout_s=2)
    assert stats.spans_sent == sum(p.span_count for p in plans) and stats.spans_dropped_total == 0
    # Nothing is written yet: the root grace (30 s) holds every trace in assembly.
    sent = sum(p.span_count for p in plans)
    assert wait_for(
        lambda: sidecar.scrape("tracegw_spans_received_total") == sent, timeout_s=10, what="gateway received every span"
    )
    assert sidecar.scrape("tracegw_assembly_traces_in_flight") == 20
    assert not sidecar.scrape("tracegw_spans_written_total")

    sidecar.proc.send_signal(signal.SIGTERM)
    try:
        returncode = sidecar.proc.wait(timeout=SHUTDOWN_GRACE_S + 5)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"tracegw still running after SIGTERM:\n{sidecar.log()[-3000:]}") from None
    assert returncode == 0, sidecar.log()[-3000:]

    import mlflow

    client = mlflow.MlflowClient(tracking_uri=sidecar.tracking_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    assert exp is not None
    traces = client.search_traces(locations=[exp.experiment_id], max_results=100)
    assert {t.info.trace_id for t in traces} == trace_ids
    for t in traces:
        full = client.get_trace(t.info.trace_id)
        assert len(full.data.spans) == expected_spans[t.info.trace_id], t.info.trace_id
        assert "tracegw.incomplete" not in full.info.tags

    log = sidecar.log()
    lines = [line for line in log.splitlines() if line.strip()]
    json_lines = [json.loads(line) for line in lines]  # every line is JSON, MLflow's included
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in json_lines)
    assert any("drained" in entry["msg"] for entry in json_lines), log
    for p in plans:
        assert p.message not in log
        assert p.reply not in log


@pytest.mark.integration
def test_health_and_reflection_on_the_running_sidecar(sidecar: Sidecar) -> None:
    assert sidecar.health("") == health_pb2.HealthCheckResponse.SERVING
    assert sidecar.health(NATIVE_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    assert sidecar.health(OTLP_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    with pytest.raises(grpc.RpcError) as unknown:
        sidecar.health("no.such.Service")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND

    with grpc.insecure_channel(sidecar.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = list(
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=5)
        )
    [response] = responses
    services = {s.name for s in response.list_services_response.service}
    assert {NATIVE_SERVICE, OTLP_SERVICE, HEALTH_SERVICE} <= services


@pytest.mark.integration
def test_help_names_the_settings_and_a_bad_setting_exits_2(tmp_path: Path) -> None:
    env = _clean_env()
    top = subprocess.run([*_tracegw(), "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert top.returncode == 0, top.stderr
    assert "serve" in top.stdout and "tracegw config" in top.stdout

    serve = subprocess.run(
        [*_tracegw(), "serve", "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60
    )
    assert serve.returncode == 0, serve.stderr
    for setting in (
        "TRACEGW_LISTEN_ADDRESS",
        "TRACEGW_METRICS_ADDRESS",
        "MLFLOW_TRACKING_URI",
        "MLFLOW_EXPERIMENT_NAME",
        "MLFLOW_TRACE_SAMPLING_RATIO",
        "TRACEGW_LOG_LEVEL",
    ):
        assert setting in serve.stdout, setting

    bad = subprocess.run(
        [*_tracegw(), "serve"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=60,
        env=_clean_env(
            MLFLOW_TRACE_SAMPLING_RATIO="2",
            TRACEGW_LISTEN_ADDRESS=f"127.0.0.1:{free_port()}",
            TRACEGW_METRICS_ADDRESS="",
            MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'never.db'}",
        ),
    )
    assert bad.returncode == 2
    assert "MLFLOW_TRACE_SAMPLING_RATIO" in bad.stderr
    assert "between 0.0 and 1.0" in bad.stderr
    assert not (tmp_path / "never.db").exists()  # refused before touching the store
