"""The gateway's own MLflow credentials, against a real tracking server running MLflow's
basic-auth app: the admin creates a user ``gateway`` with EDIT on the traffic experiment only.

- without credentials (or with a wrong password) span writes are refused with 401, counted, and
  kept in the spool, not dead-lettered; after a restart with the right password they land, and
  a password file that changes is re-read without a restart;
- with the credentials the gateway writes traces, links them (StartTraceV3 and link-prompts
  both pass on EDIT on the trace's experiment) and joins feedback to them;
- the same credentials cannot move a bundle alias, tag a prompt version or move a prompt alias,
  nor tag or add params to the bundle's LoggedModel (403) — as long as that LoggedModel lives in
  an experiment of its own: a LoggedModel's rights follow its experiment's, and EDIT on the
  traffic experiment lets the gateway tag a LoggedModel kept there (measured, pinned below). The
  trace→model link works across experiments (``search_traces(locations=[traffic], model_id=…)``).
  It can also create experiments of its own (any basic-auth user can): bound the names with
  ``TRACEGW_ALLOWED_EXPERIMENTS``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import mlflow
import mlflow.server
import pytest
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from clients.pb import feedback_pb2, spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway import config
from gateway.server import ThreadedGateway
from tests.support import MlflowServer, wait_for

pytestmark = [
    pytest.mark.integration,
    # importing mlflow.server (for its auth client) imports the server's app, which uses a deprecated starlette module
    pytest.mark.filterwarnings("ignore:starlette.middleware.wsgi is deprecated"),
]

ADMIN_PASSWORD = "admin-" + secrets.token_hex(8)
GATEWAY_PASSWORD = "gw-" + secrets.token_hex(8)
BUNDLE_MODEL = "mangaassist-chatbot-prod"


@contextlib.contextmanager
def as_user(user: str, password: str, uri: str) -> Iterator[None]:
    """MLflow's client (and its fluent API) as ``user`` against ``uri`` for the block."""
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_URI")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(MLFLOW_TRACKING_USERNAME=user, MLFLOW_TRACKING_PASSWORD=password)
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        mlflow.set_tracking_uri(before["MLFLOW_TRACKING_URI"] or "")


class Plane:
    """The release plane the admin set up: experiment, bundle LoggedModel and registered model, prompt."""

    def __init__(self, server: MlflowServer) -> None:
        self.url = server.url
        suffix = random.randrange(10**9)
        self.experiment = f"traffic-{suffix}"
        with as_user("admin", ADMIN_PASSWORD, server.url):
            self.experiment_id = mlflow.create_experiment(self.experiment)
            bundles = mlflow.create_experiment(f"bundles-{suffix}")
            model = mlflow.create_external_model(name=BUNDLE_MODEL, model_type="release-bundle", experiment_id=bundles)
            self.model_id = model.model_id
            self.model_in_traffic = mlflow.create_external_model(
                name="bundle-kept-in-traffic", model_type="release-bundle", experiment_id=self.experiment_id
            ).model_id
            self.model_version = mlflow.register_model(f"models:/{self.model_id}", BUNDLE_MODEL).version
            self.prompt = f"ma-prompts.r{suffix % 10**6:06d}"
            self.prompt_version = mlflow.genai.register_prompt(name=self.prompt, template="Recommend {{x}}.").version
            auth = mlflow.server.get_app_client("basic-auth", tracking_uri=server.url)
            auth.create_user("gateway", GATEWAY_PASSWORD)
            auth.grant_user_permission("gateway", "experiment", self.experiment_id, "EDIT")

    def stored(self, model_id: str | None = None, filter_string: str | None = None) -> set[str]:
        with as_user("admin", ADMIN_PASSWORD, self.url):
            found = mlflow.search_traces(
                locations=[self.experiment_id],
                model_id=model_id,
                filter_string=filter_string,
                return_type="list",
                include_spans=False,
            )
        return {t.info.trace_id for t in found}


@pytest.fixture(scope="module")
def auth_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MlflowServer]:
    workdir = tmp_path_factory.mktemp("mlflow-basic-auth")
    server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir, admin_password=ADMIN_PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def plane(auth_server: MlflowServer) -> Plane:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    return Plane(auth_server)


def gateway(tmp_path: Path, plane: Plane, spool: str, **env: str) -> ThreadedGateway:
    return ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                "TRACEGW_METRICS_ADDRESS": "",
                "MLFLOW_TRACKING_URI": plane.url,
                "MLFLOW_EXPERIMENT_NAME": plane.experiment,
                "TRACEGW_ROOT_GRACE_S": "0.05",
                "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
                "TRACEGW_SPOOL_DIR": str(tmp_path / spool),
                "TRACEGW_RETRY_INITIAL_S": "0.1",
                "TRACEGW_RETRY_MAX_S": "0.5",
                "TRACEGW_BREAKER_COOLDOWN_S": "0.2",
                "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
                "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
                **env,
            }
        )
    )


def send(gw: ThreadedGateway, plane: Plane) -> str:
    tid, now = random.randbytes(16), time.time_ns()
    root = spans_pb2.Span(
        trace_id=tid,
        span_id=random.randbytes(8),
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=now - 50_000_000,
        end_time_unix_nano=now,
        status_code=spans_pb2.SPAN_STATUS_CODE_OK,
        inputs_json='{"message": "hi"}',
        trace_tags={
            "release_model_id": plane.model_id,
            "prompt_version": f"{plane.prompt}/{plane.prompt_version}",
        },
    )
    with grpc.insecure_channel(gw.target) as channel:
        stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
        stub.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(spans=[root]), timeout=10)
    return "tr-" + tid.hex()


def sample(gw: ThreadedGateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


def spooled(tmp_path: Path, spool: str) -> list[str]:
    return sorted(p.name.split("-", 1)[1] for p in (tmp_path / spool).glob("*.seg"))


def test_refused_writes_wait_in_the_spool_and_land_with_the_gateway_credentials(
    tmp_path: Path, plane: Plane, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway")
    anonymous = gateway(tmp_path, plane, "spool")
    try:
        waiting = send(anonymous, plane)
        wait_for(
            lambda: sample(anonymous, "tracegw_write_auth_failures_total", kind="spans", status="401") >= 2,
            timeout_s=20,
            what="refusals counted",
        )
        assert sample(anonymous, "tracegw_traces_written_total") == 0
    finally:
        anonymous.stop(0.5)
    assert spooled(tmp_path, "spool") == ["spans.seg"]  # kept for the next start, not dead-lettered
    assert not (tmp_path / "spool" / "dead-letter").exists()
    assert waiting not in plane.stored()

    password_file = tmp_path / "gateway-password"
    password_file.write_text("not-the-password\n")
    gw = gateway(
        tmp_path, plane, "spool", TRACEGW_MLFLOW_USERNAME="gateway", TRACEGW_MLFLOW_PASSWORD_FILE=str(password_file)
    )
    try:
        wait_for(
            lambda: sample(gw, "tracegw_write_auth_failures_total", kind="spans", status="401") >= 1,
            timeout_s=20,
            what="a wrong password refused",
        )
        password_file.write_text(GATEWAY_PASSWORD + "\n")  # rotated: re-read without a restart
        fresh = send(gw, plane)
        wait_for(lambda: {waiting, fresh} <= plane.stored(), timeout_s=30, interval_s=0.3, what="both traces stored")
        wait_for(
            lambda: (
                sample(gw, "tracegw_trace_links_total", kind="prompt", outcome="ok") == 2
                and sample(gw, "tracegw_trace_links_total", kind="model", outcome="ok") == 2
            ),
            timeout_s=20,
            what="links made with the gateway's rights",
        )
        assert plane.stored(model_id=plane.model_id) == {waiting, fresh}
        assert plane.stored(filter_string=f"prompt = '{plane.prompt}/{plane.prompt_version}'") == {waiting, fresh}
        assert sample(gw, "tracegw_trace_links_total", kind="model", outcome="failed") == 0
        assert sample(gw, "tracegw_write_auth_failures_total", kind="links", status="403") == 0

        # feedback on a stored trace: an assessment and a tag, on the same EDIT
        with grpc.insecure_channel(gw.target) as channel:
            stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
            event = feedback_pb2.FeedbackEvent(
                event_id="fb-1",
                trace_id=fresh.removeprefix("tr-"),
                response_id="resp-1",
                feedback=feedback_pb2.FEEDBACK_VALUE_THUMBS_DOWN,
            )
            stub.RecordFeedback(trace_gateway_service_pb2.RecordFeedbackRequest(events=[event]), timeout=10)
        wait_for(
            lambda: sample(gw, "tracegw_events_written_total", kind="feedback") == 1, timeout_s=20, what="feedback"
        )
        with as_user("admin", ADMIN_PASSWORD, plane.url):
            assert MlflowClient(tracking_uri=plane.url).get_trace(fresh).info.tags["user_feedback"] == "thumbs_down"
    finally:
        gw.stop(5)
    assert spooled(tmp_path, "spool") == []
    assert "MLflow password file re-read" in caplog.text  # the log is captured, and holds no password
    assert GATEWAY_PASSWORD not in caplog.text and "not-the-password" not in caplog.text


def refused(call: Any) -> int:
    with pytest.raises(MlflowException) as err:
        call()
    return int(err.value.get_http_status_code())


def test_the_gateway_credentials_write_traces_and_nothing_else(plane: Plane) -> None:
    with as_user("gateway", GATEWAY_PASSWORD, plane.url):
        client = MlflowClient(tracking_uri=plane.url)
        assert refused(lambda: client.set_registered_model_alias(BUNDLE_MODEL, "prod", plane.model_version)) == 403
        assert (
            refused(lambda: mlflow.genai.set_prompt_version_tag(plane.prompt, plane.prompt_version, "eval", "ok"))
            == 403
        )
        assert refused(lambda: mlflow.genai.set_prompt_alias(plane.prompt, "production", plane.prompt_version)) == 403
        assert refused(lambda: mlflow.set_logged_model_tags(plane.model_id, {"eval.offline": "passed"})) == 403
        assert refused(lambda: mlflow.log_model_params({"guardrail_ruleset_version": "gr-9"}, plane.model_id)) == 403
        # Measured: a LoggedModel's rights are its experiment's, so one kept in the traffic experiment
        # is the gateway's to tag. Keep bundles in an experiment of their own.
        mlflow.set_logged_model_tags(plane.model_in_traffic, {"tampered": "yes"})
        # Measured: basic-auth lets any user create an experiment (and own it), so the gateway can
        # store traces in experiments it makes itself; TRACEGW_ALLOWED_EXPERIMENTS bounds which.
        assert client.create_experiment(f"gateway-made-{random.randrange(10**9)}")
        # reads stay open (default READ): the gateway can resolve its experiment
        traffic = client.get_experiment_by_name(plane.experiment)
        assert traffic is not None and traffic.experiment_id == plane.experiment_id
    with as_user("admin", ADMIN_PASSWORD, plane.url):
        assert MlflowClient(tracking_uri=plane.url).get_registered_model(BUNDLE_MODEL).aliases == {}
