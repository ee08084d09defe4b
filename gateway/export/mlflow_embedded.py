"""The embedded writer: MLflow's SQLAlchemy store in-process, for a ``sqlite:///`` URI.

This is the laptop default: no server to start, and ``mlflow ui`` opens the same file. It
decodes the same OTLP payload the HTTP writer sends and converts spans with MLflow's own
``Span.from_otel_proto``, so both paths store identical traces. SQLite allows one writer at a
time, so the pipeline runs a single writer thread in this mode.

Trace links (``links.py``) call the store's own methods, as the server's handlers do:
``start_trace`` (StartTraceV3's merge: ``mlflow.modelId`` metadata, with the trace's own time,
duration, state and experiment written back) and ``link_prompts_to_trace``.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from mlflow.entities import AssessmentSource, Feedback, Metric, RunTag, TraceInfo, TraceLocation, TraceState, ViewType
from mlflow.entities.model_registry import PromptVersion
from mlflow.entities.span import Span
from mlflow.exceptions import MlflowException
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gateway import logs
from gateway.export import bundle_ledger
from gateway.export.assessments import FEEDBACK_SOURCE_ID, feedback_details
from gateway.export.errors import PermanentWriteError, RetryableWriteError
from gateway.export.links import MODEL_ID_METADATA, TraceLink
from gateway.model import BundleRecord, FeedbackRecord

log = logging.getLogger(__name__)
logs.adopt("mlflow")  # importing mlflow replaced our handling of its logger


def _translate(exc: MlflowException, what: str) -> Exception:
    code = exc.get_http_status_code()
    reason = f"{what}: {exc.error_code}"
    if code == 429 or code >= 500:
        return RetryableWriteError(reason, status=code, code=str(exc.error_code))
    return PermanentWriteError(reason, status=code, code=str(exc.error_code))


class EmbeddedMlflowWriter:
    def __init__(self, tracking_uri: str, artifact_root: str) -> None:
        root = Path(artifact_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        self._store = SqlAlchemyStore(tracking_uri, root.as_uri())
        self._uri = tracking_uri
        self._experiments: dict[str, str] = {}
        self._lock = threading.Lock()

    def experiment_id(self, name: str) -> str:
        with self._lock:
            cached = self._experiments.get(name)
            if cached:
                return cached
            try:
                exp = self._store.get_experiment_by_name(name)
                exp_id = exp.experiment_id if exp is not None else self._store.create_experiment(name)
            except MlflowException as exc:
                raise _translate(exc, "resolve experiment") from None
            self._experiments[name] = exp_id
            return exp_id

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        request = ExportTraceServiceRequest.FromString(payload)
        spans = [
            Span.from_otel_proto(span) for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans
        ]
        try:
            with self._lock:
                self._store.log_spans(experiment_id, spans)
        except MlflowException as exc:
            raise _translate(exc, f"write {span_count} spans") from None

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        trace_id = "tr-" + record.trace_id
        if check_existing:
            try:
                with self._lock:
                    info = self._store.get_trace_info(trace_id)
            except MlflowException as exc:
                raise _translate(exc, "read trace") from None
            if any((a.metadata or {}).get("feedback_event_id") == record.event_id for a in info.assessments):
                with self._lock:
                    self._store.set_trace_tag(trace_id, "user_feedback", record.value.value)
                return
        rationale, metadata = feedback_details(record)
        feedback = Feedback(
            name="user_feedback",
            value=record.value.value == "thumbs_up",
            source=AssessmentSource(source_type="HUMAN", source_id=FEEDBACK_SOURCE_ID),
            trace_id=trace_id,
            rationale=rationale,
            metadata=metadata,
        )
        try:
            with self._lock:
                self._store.create_assessment(feedback)
                self._store.set_trace_tag(trace_id, "user_feedback", record.value.value)
        except MlflowException as exc:
            raise _translate(exc, "log feedback") from None

    def write_bundle_event(self, record: BundleRecord, experiment_name: str) -> None:
        exp_id = self.experiment_id(experiment_name)
        run_name, identity = bundle_ledger.run_identity(record)
        metrics, tags = bundle_ledger.updates(record)
        ts = record.time_ns // 1_000_000
        flt = bundle_ledger.run_filter(identity)
        try:
            with self._lock:
                runs = self._store.search_runs([exp_id], flt, ViewType.ACTIVE_ONLY, max_results=1)
                if runs:
                    run_id = runs[0].info.run_id
                else:
                    run = self._store.create_run(
                        exp_id, "tracegw", ts, [RunTag(k, v) for k, v in identity.items()], run_name
                    )
                    run_id = run.info.run_id
                self._store.log_batch(
                    run_id,
                    [Metric(k, v, ts, 0) for k, v in metrics.items()],
                    [],
                    [RunTag(k, v) for k, v in tags.items()],
                )
        except MlflowException as exc:
            raise _translate(exc, "log bundle event") from None

    def bundle_version_known(self, name: str, version: str) -> bool:
        from mlflow.tracking import MlflowClient

        client = MlflowClient(tracking_uri=self._uri, registry_uri=self._uri)
        try:
            if client.search_model_versions(bundle_ledger.version_filter(name, version), max_results=1):
                return True
            if not version.isdigit():
                return False
            client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise _translate(exc, "look up bundle version") from None
        return True

    def link_model(self, experiment_id: str, link: TraceLink) -> None:
        info = TraceInfo(
            trace_id=link.mlflow_trace_id,
            trace_location=TraceLocation.from_experiment_id(experiment_id),
            request_time=link.request_time_ms,
            execution_duration=link.execution_ms,
            state=TraceState(link.state),
            trace_metadata={MODEL_ID_METADATA: link.model_id},
        )
        try:
            with self._lock:
                self._store.start_trace(info)
        except MlflowException as exc:
            raise _translate(exc, "link model") from None

    def link_prompt(self, trace_id: str, name: str, version: str) -> None:
        try:
            with self._lock:
                version_ref = PromptVersion(name, int(version), template="")  # type: ignore[abstract]  # as MLflow's handler does
                self._store.link_prompts_to_trace(trace_id, [version_ref])
        except MlflowException as exc:
            raise _translate(exc, "link prompt") from None

    def close(self) -> None:
        engine = getattr(self._store, "engine", None)
        if engine is not None:
            engine.dispose()
