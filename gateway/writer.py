"""Writers: deliver OTLP span batches and feedback to MLflow. The only modules that talk to
MLflow are this one and ``embedded_store``; only they translate its errors.

Error tree (the writer alone decides which is which)::

    WriteError
    ├── RetryableWriteError   connection refused/reset, timeout, HTTP 429 and 5xx
    │                         (``retry_after_s`` carries a server's Retry-After)
    └── PermanentWriteError   any other 4xx, or a request MLflow cannot parse (422)

Two implementations of one small interface (``TraceWriter``):

- ``HttpMlflowWriter`` POSTs OTLP/HTTP protobuf to ``<tracking_uri>/v1/traces`` with the
  ``x-mlflow-experiment-id`` header (MLflow 3.17 persists one request all-or-nothing), and
  uses MLflow's REST API for experiments, assessments and trace tags. No retries happen
  inside a call: retrying is the delivery layer's job, so a dead server fails fast.
  The delivery layer sends span writes one at a time and in order (``Delivery._next``):
  the server persists a request in one ``log_spans`` transaction, and two at once only
  contend for its database (``bench/delivery.py``; see BENCHMARKS.md).
- ``EmbeddedMlflowWriter`` (``embedded_store.py``) calls a SQLAlchemy store in-process for
  a ``sqlite:///`` URI: the laptop default, no server needed.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Protocol

import requests

from gateway import bundle_ledger
from gateway.model import BundleRecord, FeedbackRecord

log = logging.getLogger(__name__)

OTLP_PATH = "/v1/traces"
EXPERIMENT_HEADER = "x-mlflow-experiment-id"


class WriteError(Exception):
    """A write to MLflow failed."""

    def __init__(self, reason: str, *, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class RetryableWriteError(WriteError):
    """Worth retrying later: the server is down, slow, overloaded or failing."""

    def __init__(self, reason: str, *, status: int | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(reason, status=status)
        self.retry_after_s = retry_after_s


class PermanentWriteError(WriteError):
    """Retrying the same request cannot succeed (bad request, unknown trace, ...)."""


class TraceWriter(Protocol):
    """What the delivery layer needs from a writer. Calls block; run them off the event loop."""

    def experiment_id(self, name: str) -> str:
        """The id of experiment ``name``, created if missing (cached)."""
        ...

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        """Persist one serialized ``ExportTraceServiceRequest``."""
        ...

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        """Attach a feedback assessment and the ``user_feedback`` tag to its trace.

        ``check_existing`` (a retry or a replay): skip the assessment if one with the same
        feedback event id is already there, so at-least-once delivery stays idempotent.
        """
        ...

    def write_bundle_event(self, record: BundleRecord, experiment_name: str) -> None:
        """Apply a bundle lifecycle event to the bundle's run in ``experiment_name``."""
        ...

    def close(self) -> None: ...


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
        raise RetryableWriteError(reason, status=code, retry_after_s=_retry_after(response))
    raise PermanentWriteError(reason, status=code)


class HttpMlflowWriter:
    """Writes to an MLflow tracking server over HTTP."""

    def __init__(self, tracking_uri: str, timeout_s: float) -> None:
        self._base = tracking_uri.rstrip("/")
        self._timeout_s = timeout_s
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
        try:
            return self._session().request(method, self._base + path, timeout=self._timeout_s, **kwargs)  # type: ignore[arg-type]
        except requests.Timeout:
            raise RetryableWriteError(f"{what}: timeout after {self._timeout_s}s") from None
        except requests.ConnectionError as exc:
            raise RetryableWriteError(f"{what}: connection failed ({type(exc).__name__})") from None

    def experiment_id(self, name: str) -> str:
        with self._lock:
            cached = self._experiments.get(name)
        if cached:
            return cached
        resp = self._call("GET", "/api/2.0/mlflow/experiments/get-by-name", "get experiment",
                          params={"experiment_name": name})
        if resp.status_code == 404:
            resp = self._call("POST", "/api/2.0/mlflow/experiments/create", "create experiment",
                              json={"name": name})
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
        resp = self._call("POST", OTLP_PATH, "write spans", data=payload, headers={
            "Content-Type": "application/x-protobuf", EXPERIMENT_HEADER: experiment_id})
        classify(resp, f"write {span_count} spans")

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        trace_id = "tr-" + record.trace_id
        if not (check_existing and self._has_feedback(trace_id, record.event_id)):
            body = {"assessment": feedback_assessment(record)}
            resp = self._call("POST", f"/api/3.0/mlflow/traces/{trace_id}/assessments", "log feedback", json=body)
            classify(resp, "log feedback")
        resp = self._call("PATCH", f"/api/2.0/mlflow/traces/{trace_id}/tags", "tag feedback",
                          json={"key": "user_feedback", "value": record.value.value})
        classify(resp, "tag feedback")

    def _has_feedback(self, trace_id: str, event_id: str) -> bool:
        resp = self._call("GET", f"/api/3.0/mlflow/traces/{trace_id}", "read trace")
        classify(resp, "read trace")
        info = resp.json().get("trace", {}).get("trace_info", {})
        return any((a.get("metadata") or {}).get("feedback_event_id") == event_id
                   for a in info.get("assessments") or [])

    def write_bundle_event(self, record: BundleRecord, experiment_name: str) -> None:
        exp_id = self.experiment_id(experiment_name)
        run_name, identity = bundle_ledger.run_identity(record)
        metrics, tags = bundle_ledger.updates(record)
        with self._bundle_lock:
            flt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in identity.items())
            resp = self._call("POST", "/api/2.0/mlflow/runs/search", "find bundle run",
                              json={"experiment_ids": [exp_id], "filter": flt, "max_results": 1})
            classify(resp, "find bundle run")
            runs = resp.json().get("runs") or []
            if runs:
                run_id = runs[0]["info"]["run_id"]
            else:
                resp = self._call("POST", "/api/2.0/mlflow/runs/create", "create bundle run", json={
                    "experiment_id": exp_id, "run_name": run_name, "start_time": record.time_ns // 1_000_000,
                    "tags": [{"key": k, "value": v} for k, v in identity.items()]})
                classify(resp, "create bundle run")
                run_id = resp.json()["run"]["info"]["run_id"]
        ts = record.time_ns // 1_000_000
        resp = self._call("POST", "/api/2.0/mlflow/runs/log-batch", "log bundle event", json={
            "run_id": run_id,
            "metrics": [{"key": k, "value": v, "timestamp": ts, "step": 0} for k, v in metrics.items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()]})
        classify(resp, "log bundle event")

    def close(self) -> None:
        session = getattr(self._local, "session", None)
        if session is not None:
            session.close()


FEEDBACK_SOURCE_ID = "mangaassist-ui"


def feedback_details(record: FeedbackRecord) -> tuple[str, dict[str, str]]:
    """The rationale and metadata stored with a feedback assessment (both writers use them)."""
    rationale = record.reason_code + (f": {record.comment}" if record.comment else "")
    metadata = {"response_id": record.response_id, "feedback_event_id": record.event_id,
                "reason_code": record.reason_code, "session_id": record.session_id,
                "feedback_time_ms": str(record.time_ns // 1_000_000) if record.time_ns else ""}
    return rationale, {k: v for k, v in metadata.items() if v}


def feedback_assessment(record: FeedbackRecord) -> dict[str, object]:
    """The MLflow ``Assessment`` (feedback) for ``record``, as MLflow's REST JSON."""
    rationale, metadata = feedback_details(record)
    return {
        "trace_id": "tr-" + record.trace_id,
        "assessment_name": "user_feedback",
        "source": {"source_type": "HUMAN", "source_id": FEEDBACK_SOURCE_ID},
        "feedback": {"value": record.value.value == "thumbs_up"},
        "rationale": rationale,
        "metadata": metadata,
    }


def make_writer(tracking_uri: str, timeout_s: float, artifact_root: str) -> TraceWriter:
    """The writer for ``tracking_uri``: HTTP for a server, in-process for ``sqlite:///``."""
    if tracking_uri.startswith("sqlite:"):
        from gateway.embedded_store import EmbeddedMlflowWriter

        return EmbeddedMlflowWriter(tracking_uri, artifact_root)
    return HttpMlflowWriter(tracking_uri, timeout_s)


__all__ = [
    "HttpMlflowWriter", "PermanentWriteError", "RetryableWriteError", "TraceWriter", "WriteError",
    "classify", "feedback_assessment", "make_writer",
]
