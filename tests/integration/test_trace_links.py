"""Stored traces are linked to their release bundle's LoggedModel and to their prompt version:
against a real ``mlflow server`` (the HTTP writer, link calls failing with 503 through the fault
proxy first) and on the embedded writer (its link calls held back by a wrapper first). Either way
the trace is read while it is stored but not linked yet, and again once linked: MLflow's
StartTraceV3 merge rewrites timestamp, duration, state and experiment, so every one of them, the
tags, spans and previews must be what they were."""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import mlflow
import pytest
from mlflow import MlflowClient

from clients.pb import spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import config
from gateway.export.errors import RetryableWriteError
from gateway.export.links import TraceLink
from gateway.export.mlflow_embedded import EmbeddedMlflowWriter
from gateway.server import ThreadedGateway
from tests.faultproxy import FaultProxy
from tests.support import MlflowServer, wait_for

pytestmark = pytest.mark.integration

LINK_PATHS = ("/api/3.0/mlflow/traces", "/api/2.0/mlflow/traces/link-prompts")


@contextlib.contextmanager
def tracking(uri: str) -> Iterator[None]:
    """MLflow's fluent API pointed at ``uri`` for the block (it also sets MLFLOW_TRACKING_URI)."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(before or "")
        if before is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)


def trace_spans(tags: dict[str, str], error: bool = False) -> list[spans_pb2.Span]:
    """A small chatbot-shaped trace: a root with inputs/outputs and tags, two children."""
    tid, root_id = random.randbytes(16), random.randbytes(8)
    start = time.time_ns() - 2_345_678_901
    root = spans_pb2.Span(
        trace_id=tid,
        span_id=root_id,
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=start + 123_456,  # not on a millisecond: the rounding must match MLflow's
        end_time_unix_nano=start + 1_234_567_891,
        status_code=spans_pb2.SPAN_STATUS_CODE_ERROR if error else spans_pb2.SPAN_STATUS_CODE_OK,
        status_message="boom" if error else "",
        inputs_json='{"message": "おすすめの漫画は?"}',
        outputs_json='{"reply": "ワンピースはいかがですか"}',
        trace_tags={"intent": "recommendation", "session_id": "s-1", **tags},
    )
    children = [
        spans_pb2.Span(
            trace_id=tid,
            span_id=random.randbytes(8),
            parent_span_id=root_id,
            name=name,
            span_type=kind,
            start_time_unix_nano=start + offset,
            end_time_unix_nano=start + offset + 100_000_000,
            status_code=spans_pb2.SPAN_STATUS_CODE_OK,
        )
        for name, kind, offset in (("retrieve_chunks", "RETRIEVER", 5_000_000), ("bedrock_generate", "LLM", 9_999_999))
    ]
    return [*children, root]


def snapshot(client: MlflowClient, trace_id: str) -> dict[str, Any]:
    """Everything of a stored trace a link must not change."""
    trace = client.get_trace(trace_id)
    info = trace.info
    return {
        "experiment": info.experiment_id,
        "timestamp_ms": info.request_time,
        "execution_ms": info.execution_duration,
        "state": info.state.value,
        "client_request_id": info.client_request_id,
        "request_preview": info.request_preview,
        "response_preview": info.response_preview,
        "tags": dict(info.tags),
        "spans": sorted(
            (s.span_id, s.name, s.start_time_ns, s.end_time_ns, s.status.status_code.value) for s in trace.data.spans
        ),
        "session": info.trace_metadata.get("mlflow.trace.session"),
    }


def sample(gw: ThreadedGateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


class Bundle:
    """A real LoggedModel and a real prompt version in a fresh experiment of ``uri``."""

    def __init__(self, uri: str) -> None:
        suffix = random.randrange(10**9)
        self.experiment = f"links-{suffix}"
        with tracking(uri):
            self.experiment_id = mlflow.create_experiment(self.experiment)
            self.model_id = mlflow.create_external_model(
                name="mangaassist-chatbot-prod", model_type="release-bundle", experiment_id=self.experiment_id
            ).model_id
            # "<name>/<version>" within MLflow's 36 characters (PostgreSQL enforces them)
            self.prompt = f"ma-prompts.r{suffix % 10**6:06d}"
            version = mlflow.genai.register_prompt(name=self.prompt, template="Recommend from {{context}}.")
        self.prompt_version = f"{self.prompt}/{version.version}"

    def search(self, uri: str, **kwargs: Any) -> set[str]:
        with tracking(uri):
            found = mlflow.search_traces(
                locations=[self.experiment_id], return_type="list", include_spans=False, **kwargs
            )
        return {t.info.trace_id for t in found}


def send(gw: ThreadedGateway, experiment: str, traces: list[list[spans_pb2.Span]]) -> list[str]:
    with grpc.insecure_channel(gw.target) as channel:
        native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
        spans = [s for t in traces for s in t]
        answer = native.ExportSpans(
            trace_gateway_service_pb2.ExportSpansRequest(spans=spans, experiment_name=experiment), timeout=10
        )
        assert answer.partial_success.rejected_count == 0
    return ["tr-" + t[0].trace_id.hex() for t in traces]


def settings(tmp_path: Path, uri: str, experiment: str, **env: str) -> config.Config:
    values = {
        "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
        "TRACEGW_METRICS_ADDRESS": "",
        "MLFLOW_TRACKING_URI": uri,
        "MLFLOW_EXPERIMENT_NAME": experiment,
        "TRACEGW_ARTIFACT_ROOT": str(tmp_path / "artifacts"),
        "TRACEGW_ROOT_GRACE_S": "0.05",
        "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
        "TRACEGW_SPOOL_DIR": str(tmp_path / "spool"),
        "TRACEGW_RETRY_INITIAL_S": "0.1",
        "TRACEGW_RETRY_MAX_S": "0.5",
        "TRACEGW_BREAKER_COOLDOWN_S": "0.2",
        "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
        "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
        **env,
    }
    return config.load(values)


class HeldLinks(EmbeddedMlflowWriter):
    """The embedded writer whose link calls fail as retryable (503) until ``release`` is set."""

    def __init__(self, tracking_uri: str, artifact_root: str) -> None:
        super().__init__(tracking_uri, artifact_root)
        self.release = threading.Event()
        self.refused = 0

    def _held(self) -> None:
        if not self.release.is_set():
            self.refused += 1
            raise RetryableWriteError("link: HTTP 503 (held by the test)", status=503)

    def link_model(self, experiment_id: str, link: TraceLink) -> None:
        self._held()
        super().link_model(experiment_id, link)

    def link_prompt(self, trace_id: str, name: str, version: str) -> None:
        self._held()
        super().link_prompt(trace_id, name, version)


@pytest.fixture(params=["sqlite-server", pytest.param("postgres-server", marks=pytest.mark.postgres), "embedded"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param in ("sqlite-server", "postgres-server"):
        server: MlflowServer = request.getfixturevalue(
            "mlflow_server" if request.param == "sqlite-server" else "mlflow_server_pg"
        )
        return server.url
    return f"sqlite:///{tmp_path / 'embedded.db'}"


def test_stored_traces_are_linked_to_their_model_and_prompt_and_keep_everything_else(
    backend: str, tmp_path: Path
) -> None:
    bundle = Bundle(backend)
    proxy: FaultProxy | None = None
    writer: HeldLinks | None = None
    if backend.startswith("http"):
        proxy = FaultProxy(int(backend.rsplit(":", 1)[1])).start()
        proxy.respond(503, times=None, match=lambda method, path, _body: method == "POST" and path in LINK_PATHS)
        gw = ThreadedGateway(settings(tmp_path, proxy.url, bundle.experiment))
    else:
        writer = HeldLinks(backend, str(tmp_path / "artifacts"))
        gw = ThreadedGateway(settings(tmp_path, backend, bundle.experiment), writer=writer)
    client = MlflowClient(tracking_uri=backend)
    try:
        both, error_model_only, bad_model, neither = send(
            gw,
            bundle.experiment,
            [
                trace_spans({"release_model_id": bundle.model_id, "prompt_version": bundle.prompt_version}),
                trace_spans({"release_model_id": bundle.model_id, "prompt_version": "rec-v3"}, error=True),
                trace_spans({"release_model_id": "m-bad id'; --", "prompt_version": bundle.prompt_version}),
                trace_spans({"release_model_id": "none", "prompt_version": "none"}),
            ],
        )
        ids = (both, error_model_only, bad_model, neither)
        # Stored, links refused for now: read each trace as the span write left it.
        wait_for(lambda: sample(gw, "tracegw_traces_written_total") >= 4, timeout_s=30, what="spans written")
        wait_for(
            lambda: sample(gw, "tracegw_trace_links_total", kind="model", outcome="retried") >= 2,
            timeout_s=30,
            what="a retried link",
        )
        before = {tid: snapshot(client, tid) for tid in ids}
        assert sample(gw, "tracegw_trace_links_total", kind="model", outcome="invalid") == 1
        assert sample(gw, "tracegw_trace_links_total", kind="model", outcome="ok") == 0

        if proxy is not None:
            proxy.pass_through()
        else:
            assert writer is not None
            writer.release.set()
        wait_for(
            lambda: (
                sample(gw, "tracegw_trace_links_total", kind="model", outcome="ok") == 2
                and sample(gw, "tracegw_trace_links_total", kind="prompt", outcome="ok") == 2
            ),
            timeout_s=30,
            what="links made",
        )
        assert sample(gw, "tracegw_trace_links_total", kind="model", outcome="failed") == 0
        assert sample(gw, "tracegw_trace_links_total", kind="prompt", outcome="failed") == 0
        assert sample(gw, "tracegw_write_retries_total", kind="links") >= 1

        assert bundle.search(backend, model_id=bundle.model_id) == {both, error_model_only}
        assert bundle.search(backend, filter_string=f"prompt = '{bundle.prompt_version}'") == {both, bad_model}
        after = {tid: snapshot(client, tid) for tid in ids}
        assert after == before  # nothing the merge overwrites has moved
        assert before[error_model_only]["state"] == "ERROR" and before[both]["state"] == "OK"
        assert len(before[both]["spans"]) == 3 and before[both]["request_preview"]
        info = client.get_trace(both).info
        assert info.trace_metadata["mlflow.modelId"] == bundle.model_id
        assert "mlflow.modelId" not in client.get_trace(bad_model).info.trace_metadata
        assert "mlflow.modelId" not in client.get_trace(neither).info.trace_metadata
    finally:
        gw.stop(10)
        if proxy is not None:
            proxy.stop()


def test_links_can_be_turned_off(mlflow_server: MlflowServer, tmp_path: Path) -> None:
    bundle = Bundle(mlflow_server.url)
    gw = ThreadedGateway(settings(tmp_path, mlflow_server.url, bundle.experiment, TRACEGW_TRACE_LINKS="false"))
    try:
        (tid,) = send(
            gw,
            bundle.experiment,
            [trace_spans({"release_model_id": bundle.model_id, "prompt_version": bundle.prompt_version})],
        )
        wait_for(lambda: sample(gw, "tracegw_traces_written_total") >= 1, timeout_s=30, what="spans written")
        gw.stop(10)  # drained: anything it would have linked is done by now
        assert tid in bundle.search(mlflow_server.url)
        assert bundle.search(mlflow_server.url, model_id=bundle.model_id) == set()
        assert sample(gw, "tracegw_trace_links_total", kind="model", outcome="ok") == 0
    finally:
        gw.stop(10)


@pytest.mark.postgres
def test_a_prompt_link_longer_than_mlflow_stores_fails_on_postgres_counted(
    mlflow_server_pg: MlflowServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # MLflow 3.17 keeps "<prompt>/<version>" in entity_associations.destination_id, a VARCHAR(36):
    # SQLite stores a longer one, PostgreSQL refuses it (why the route prompts are ma-prompts.<route>).
    bundle = Bundle(mlflow_server_pg.url)
    gw = ThreadedGateway(settings(tmp_path, mlflow_server_pg.url, bundle.experiment))
    try:
        send(
            gw,
            bundle.experiment,
            [
                trace_spans(
                    {"release_model_id": bundle.model_id, "prompt_version": "mangaassist-prompts.product_question/1"}
                )
            ],
        )
        wait_for(
            lambda: (
                sample(gw, "tracegw_trace_links_total", kind="prompt", outcome="failed") == 1
                and sample(gw, "tracegw_trace_links_total", kind="model", outcome="ok") == 1
            ),
            timeout_s=30,
            what="the model linked, the prompt link refused",
        )
        assert "VARCHAR(36)" in caplog.text
    finally:
        gw.stop(10)
