"""The HTTP writer: deliver OTLP span batches, feedback and bundle events to an MLflow
tracking server. The only modules that talk to MLflow are this one and ``mlflow_embedded``;
only they translate its errors into the tree of ``errors.py``.

Two implementations of one small interface (``errors.TraceWriter``):

- ``HttpMlflowWriter`` POSTs OTLP/HTTP protobuf to ``<tracking_uri>/v1/traces`` with the
  ``x-mlflow-experiment-id`` header (MLflow 3.17 persists one request all-or-nothing), and
  uses MLflow's REST API for experiments, assessments and trace tags. No retries happen
  inside a call: retrying is the delivery layer's job, so a dead server fails fast.
  The delivery layer sends span writes one at a time and in order (``Delivery._next``):
  the server persists a request in one ``log_spans`` transaction, and two at once only
  contend for its database (``bench/delivery.py``; see BENCHMARKS.md).
- ``EmbeddedMlflowWriter`` (``mlflow_embedded.py``) calls a SQLAlchemy store in-process for
  a ``sqlite:///`` URI: the laptop default, no server needed.

Credentials: against a tracking server running MLflow's ``basic-auth`` app, every request
carries HTTP basic credentials, the gateway's own user (``TRACEGW_MLFLOW_USERNAME``) and the
password in ``TRACEGW_MLFLOW_PASSWORD_FILE`` (``PasswordFile``: re-read when the file changes,
so a rotated secret is used without a restart; never logged). A 401 or 403 is retryable
(``errors.py``): the credentials are an operator's fix, and the data waits in the spool.

Trace links (``links.py``): ``link_model`` is StartTraceV3 (``POST /api/3.0/mlflow/traces``)
with the trace's own time, duration, state and experiment and the ``mlflow.modelId`` metadata;
``link_prompt`` is ``POST /api/2.0/mlflow/traces/link-prompts``. MLflow has no batch form of
either: one call per trace.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime

import requests

from gateway.export import bundle_ledger
from gateway.export.assessments import feedback_assessment
from gateway.export.errors import PermanentWriteError, RetryableWriteError
from gateway.export.links import MODEL_ID_METADATA, TraceLink
from gateway.logs import RateLimitedLog
from gateway.model import BundleRecord, FeedbackRecord

log = logging.getLogger(__name__)

OTLP_PATH = "/v1/traces"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def classify(response: requests.Response, what: str) -> None:
    """Raise the right ``WriteError`` for a failed response; return for a 2xx."""
    code = response.status_code
    if 200 <= code < 300:
        return
    error_code = ""
    with contextlib.suppress(ValueError):
        error_code = str(response.json().get("error_code", ""))
    reason = f"{what}: HTTP {code}" + (f" {error_code}" if error_code else "")
    if code == 429 or code >= 500:
        raise RetryableWriteError(reason, status=code, code=error_code, retry_after_s=_retry_after(response))
    if code in (401, 403):  # the gateway's credentials: an operator's fix, so keep the data and retry
        error_code = error_code or ("UNAUTHENTICATED" if code == 401 else "PERMISSION_DENIED")
        raise RetryableWriteError(reason, status=code, code=error_code, retry_after_s=_retry_after(response))
    raise PermanentWriteError(reason, status=code, code=error_code)


class PasswordFile:
    """The password kept in ``path`` (surrounding whitespace dropped), re-read when the file's
    size or modification time changes (looked at no more than once per ``check_every_s``). A
    file that cannot be read any more keeps the previous password, with a warning."""

    def __init__(self, path: str, check_every_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._path = path
        self._every_s = check_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._warn = RateLimitedLog(log, every_s=60.0)
        self._stamp = self._stat()
        self._password = self._read()
        self._checked = clock()

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self._path)
        return st.st_mtime_ns, st.st_size

    def _read(self) -> str:
        with open(self._path, encoding="utf-8") as f:
            return f.read().strip()

    def get(self) -> str:
        with self._lock:
            now = self._clock()
            if now - self._checked < self._every_s:
                return self._password
            self._checked = now
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    self._password, self._stamp = self._read(), stamp
                    log.info("MLflow password file re-read")
            except OSError as exc:
                self._warn.warning(
                    "password_file", "MLflow password file unreadable (%s); keeping the last password", exc.strerror
                )
            return self._password


class HttpMlflowWriter:
    """Writes to an MLflow tracking server over HTTP."""

    def __init__(self, tracking_uri: str, timeout_s: float, username: str = "", password_file: str = "") -> None:
        self._base = tracking_uri.rstrip("/")
        self._timeout_s = timeout_s
        self._username = username
        self._password = PasswordFile(password_file) if username and password_file else None
        self._local = threading.local()
        self._experiments: dict[str, str] = {}
        self._lock = threading.Lock()
        self._bundle_lock = threading.Lock()

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
        return session

    def _call(self, method: str, path: str, what: str, **kwargs: object) -> requests.Response:
        if self._password is not None:
            kwargs["auth"] = (self._username, self._password.get())
        try:
            return self._session().request(method, self._base + path, timeout=self._timeout_s, **kwargs)  # type: ignore[arg-type]
        except requests.Timeout:
            raise RetryableWriteError(f"{what}: timeout after {self._timeout_s}s", code="TIMEOUT") from None
        except requests.ConnectionError as exc:
            reason = f"{what}: connection failed ({type(exc).__name__})"
            raise RetryableWriteError(reason, code="CONNECTION_FAILED") from None

    def experiment_id(self, name: str) -> str:
        with self._lock:
            cached = self._experiments.get(name)
        if cached:
            return cached
        resp = self._call(
            "GET", "/api/2.0/mlflow/experiments/get-by-name", "get experiment", params={"experiment_name": name}
        )
        if resp.status_code == 404:
            resp = self._call("POST", "/api/2.0/mlflow/experiments/create", "create experiment", json={"name": name})
            if resp.status_code == 400 and "RESOURCE_ALREADY_EXISTS" in resp.text:
                return self.experiment_id(name)  # created concurrently by another gateway
            classify(resp, "create experiment")
            exp_id = str(resp.json()["experiment_id"])
            log.info("created MLflow experiment id=%s", exp_id)
        else:
            classify(resp, "get experiment")
            exp_id = str(resp.json()["experiment"]["experiment_id"])
        with self._lock:
            self._experiments[name] = exp_id
        return exp_id

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        resp = self._call(
            "POST",
            OTLP_PATH,
            "write spans",
            data=payload,
            headers={"Content-Type": "application/x-protobuf", EXPERIMENT_HEADER: experiment_id},
        )
        classify(resp, f"write {span_count} spans")

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        trace_id = "tr-" + record.trace_id
        if not (check_existing and self._has_feedback(trace_id, record.event_id)):
            body = {"assessment": feedback_assessment(record)}
            resp = self._call("POST", f"/api/3.0/mlflow/traces/{trace_id}/assessments", "log feedback", json=body)
            classify(resp, "log feedback")
        resp = self._call(
            "PATCH",
            f"/api/2.0/mlflow/traces/{trace_id}/tags",
            "tag feedback",
            json={"key": "user_feedback", "value": record.value.value},
        )
        classify(resp, "tag feedback")

    def _has_feedback(self, trace_id: str, event_id: str) -> bool:
        resp = self._call("GET", f"/api/3.0/mlflow/traces/{trace_id}", "read trace")
        classify(resp, "read trace")
        info = resp.json().get("trace", {}).get("trace_info", {})
        return any(
            (a.get("metadata") or {}).get("feedback_event_id") == event_id for a in info.get("assessments") or []
        )

    def write_bundle_event(self, record: BundleRecord, experiment_name: str) -> None:
        exp_id = self.experiment_id(experiment_name)
        run_name, identity = bundle_ledger.run_identity(record)
        metrics, tags = bundle_ledger.updates(record)
        with self._bundle_lock:
            flt = bundle_ledger.run_filter(identity)
            resp = self._call(
                "POST",
                "/api/2.0/mlflow/runs/search",
                "find bundle run",
                json={"experiment_ids": [exp_id], "filter": flt, "max_results": 1},
            )
            classify(resp, "find bundle run")
            runs = resp.json().get("runs") or []
            if runs:
                run_id = runs[0]["info"]["run_id"]
            else:
                resp = self._call(
                    "POST",
                    "/api/2.0/mlflow/runs/create",
                    "create bundle run",
                    json={
                        "experiment_id": exp_id,
                        "run_name": run_name,
                        "start_time": record.time_ns // 1_000_000,
                        "tags": [{"key": k, "value": v} for k, v in identity.items()],
                    },
                )
                classify(resp, "create bundle run")
                run_id = resp.json()["run"]["info"]["run_id"]
        ts = record.time_ns // 1_000_000
        resp = self._call(
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            "log bundle event",
            json={
                "run_id": run_id,
                "metrics": [{"key": k, "value": v, "timestamp": ts, "step": 0} for k, v in metrics.items()],
                "tags": [{"key": k, "value": v} for k, v in tags.items()],
            },
        )
        classify(resp, "log bundle event")

    def bundle_version_known(self, name: str, version: str) -> bool:
        resp = self._call(
            "GET",
            "/api/2.0/mlflow/model-versions/search",
            "look up bundle version",
            params={"filter": bundle_ledger.version_filter(name, version), "max_results": 1},
        )
        classify(resp, "look up bundle version")
        if resp.json().get("model_versions"):
            return True
        if not version.isdigit():
            return False
        resp = self._call(
            "GET",
            "/api/2.0/mlflow/model-versions/get",
            "look up bundle version",
            params={"name": name, "version": version},
        )
        if resp.status_code in (400, 404) and "RESOURCE_DOES_NOT_EXIST" in resp.text:
            return False
        classify(resp, "look up bundle version")
        return True

    def link_model(self, experiment_id: str, link: TraceLink) -> None:
        info = {
            "trace_id": link.mlflow_trace_id,
            "trace_location": {"type": "MLFLOW_EXPERIMENT", "mlflow_experiment": {"experiment_id": experiment_id}},
            "request_time": _rfc3339(link.request_time_ms),
            "execution_duration": f"{link.execution_ms // 1000}.{link.execution_ms % 1000:03d}s",
            "state": link.state,
            "trace_metadata": {MODEL_ID_METADATA: link.model_id},
            "tags": {},
        }
        resp = self._call("POST", "/api/3.0/mlflow/traces", "link model", json={"trace": {"trace_info": info}})
        classify(resp, "link model")

    def link_prompt(self, trace_id: str, name: str, version: str) -> None:
        resp = self._call(
            "POST",
            "/api/2.0/mlflow/traces/link-prompts",
            "link prompt",
            json={"trace_id": trace_id, "prompt_versions": [{"name": name, "version": version}]},
        )
        classify(resp, "link prompt")

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


def _rfc3339(ms: int) -> str:
    """A protobuf ``Timestamp`` in JSON for epoch milliseconds, to the millisecond."""
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


__all__ = ["HttpMlflowWriter", "PasswordFile", "classify"]
