"""Trace links: a stored trace tied to its release bundle's LoggedModel and its prompt version.

OTLP cannot carry either link (``mlflow-3.17-release-eval.md`` §1, §2), so once MLflow has
acknowledged a span batch, delivery hands the batch's links on as a small segment of its own
(``Kind.LINKS``: spooled, retried with the same backoff and elapsed bound as any write, waiting
for an open breaker but never opening it, and sent only when no span batch or event is ready, in
slices of ``delivery.LINK_SLICE_S``). Two trace tags, from the chatbot's root span, say what to
link:

- ``release_model_id`` — the bundle's LoggedModel id (``m-…``): trace metadata
  ``mlflow.modelId``, so ``search_traces(model_id=…)`` finds the trace. MLflow sets metadata
  only through StartTraceV3 (``store.start_trace``), whose merge into an existing trace
  **overwrites** its experiment, timestamp, duration, state and client request id: ``TraceLink``
  carries them as MLflow computed them from the same spans (``min start // 1 ms``,
  ``max end // 1 ms``, the root's status), so the merge writes back what is there. A value that
  is not ``m-`` plus ``[A-Za-z0-9_-]`` is counted ``invalid`` and not linked.
- ``prompt_version`` of the shape ``<prompt name>/<digits>`` — the prompt-registry version:
  MLflow's trace→prompt-version association (``link-prompts``), which ``prompt = 'name/3'``
  searches. Other values (``none``, ``rec-v3``) are not links. MLflow 3.17 keeps
  ``name/version`` in a 36-character column: on PostgreSQL a longer one is refused (400, counted
  ``failed``, logged with that reason), e.g. ``mangaassist-prompts.product_question/1`` (38;
  why the project's prompts are ``ma-prompts.<route>``).

Only a complete trace whose spans all went in the batch (not late spans, not a stand-in root)
is linked: its time range is known. The merge also marks the trace's info as final in
MLflow 3.17 (``mlflow.trace.infoFinalized``): spans of it that arrive after the link no longer
widen its time range.

Each link settles once: ``ok``, ``failed`` (MLflow refused it for good, retries ran out, or it
did not fit in ``TRACEGW_TRACE_LINKS_MAX_PENDING``; logged with the trace id and a bounded
reason), or ``invalid``; every retry of a link is counted ``retried``. Metrics:
``tracegw_trace_links_total{kind,outcome}``, ``tracegw_trace_links_pending``. A failed link
never costs the spans: they are already stored.

Cost (measured, 2 cores, ``mlflow server --workers 1`` on SQLite): StartTraceV3 merge p50
27-38 ms, link-prompts p50 15-24 ms per trace, against 6-12 ms per trace for the spans in
batches of 100; MLflow has no batch form of either call.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from gateway.export.errors import PermanentWriteError, RetryableWriteError
from gateway.logs import RateLimitedLog
from gateway.metrics import GatewayMetrics
from gateway.model import SpanStatus, TraceRecord

log = logging.getLogger(__name__)

MODEL_ID_TAG = "release_model_id"
PROMPT_VERSION_TAG = "prompt_version"
MODEL_ID_METADATA = "mlflow.modelId"
MODEL = "model"
PROMPT = "prompt"
_MODEL_ID = re.compile(r"m-[A-Za-z0-9_-]{1,128}")
_PROMPT_VERSION = re.compile(r"(?P<name>[A-Za-z0-9][A-Za-z0-9._-]{0,254})/(?P<version>[1-9][0-9]{0,8})")
# entity_associations.destination_id is String(36) (mlflow/store/tracking/dbmodels/models.py):
# PostgreSQL refuses a longer "<prompt name>/<version>" (HTTP 400), SQLite stores it.
MLFLOW_ASSOCIATION_ID_CHARS = 36
_NOT_SET = frozenset({"", "none", "null", "unknown"})
# Refusals that cannot succeed by retrying this link: the gateway's MLflow user lacks the right.
_DENIED = frozenset({403})


@dataclass(frozen=True, slots=True)
class TraceLink:
    """What one stored trace is linked to, with the trace info the model link must write back."""

    trace_id: str  # 32 hex, as the gateway knows it (MLflow's id is "tr-" + it)
    request_time_ms: int
    execution_ms: int
    state: str  # "OK" or "ERROR", as MLflow derived it from the root span
    model_id: str = ""
    prompt_name: str = ""
    prompt_version: str = ""

    @property
    def mlflow_trace_id(self) -> str:
        return "tr-" + self.trace_id

    def to_json(self) -> list[object]:
        return [
            self.trace_id,
            self.request_time_ms,
            self.execution_ms,
            self.state,
            self.model_id,
            self.prompt_name,
            self.prompt_version,
        ]

    @classmethod
    def from_json(cls, row: list[object]) -> TraceLink:
        tid, start, duration, state, model, name, version = row
        return cls(str(tid), int(str(start)), int(str(duration)), str(state), str(model), str(name), str(version))


@runtime_checkable
class TraceLinker(Protocol):
    """What a writer offers to link stored traces (both MLflow writers do; a fake may not)."""

    def link_model(self, experiment_id: str, link: TraceLink) -> None:
        """Merge ``mlflow.modelId`` into the stored trace, writing its own info back unchanged."""
        ...

    def link_prompt(self, trace_id: str, name: str, version: str) -> None:
        """Associate prompt version ``name``/``version`` with the stored trace ``tr-…``."""
        ...


def prompt_of(value: str) -> tuple[str, str] | None:
    """(name, version) when a ``prompt_version`` tag names a prompt-registry version, else None."""
    match = _PROMPT_VERSION.fullmatch(value)
    return (match["name"], match["version"]) if match else None


def valid_model_id(value: str) -> bool:
    return _MODEL_ID.fullmatch(value) is not None


def link_of(trace: TraceRecord) -> tuple[TraceLink | None, bool]:
    """The links of a trace about to be written, and whether its model id was invalid."""
    if trace.late or not trace.complete or not trace.spans:
        return None, False
    tags = trace.tags
    model = tags.get(MODEL_ID_TAG, "").strip()
    invalid = False
    if model.lower() in _NOT_SET:
        model = ""
    elif not valid_model_id(model):
        model, invalid = "", True
    prompt = prompt_of(tags.get(PROMPT_VERSION_TAG, "").strip())
    if not model and prompt is None:
        return None, invalid
    root = trace.root
    start_ms = min(s.start_time_ns for s in trace.spans) // 1_000_000
    end_ms = max(s.end_time_ns for s in trace.spans) // 1_000_000
    state = "ERROR" if root is not None and root.status is SpanStatus.ERROR else "OK"
    name, version = prompt or ("", "")
    return TraceLink(trace.trace_id, start_ms, max(0, end_ms - start_ms), state, model, name, version), invalid


def plan(traces: Iterable[TraceRecord], metrics: GatewayMetrics) -> list[list[object]]:
    """The links of a span batch, as the JSON rows its segment header carries; counts invalid ids."""
    rows = []
    for trace in traces:
        link, invalid = link_of(trace)
        if invalid:
            metrics.trace_links.labels(MODEL, "invalid").inc()
            _warn.warning(
                "invalid_model_id", "trace %s: %s is not a LoggedModel id; not linked", trace.trace_id, MODEL_ID_TAG
            )
        if link is not None:
            rows.append(link.to_json())
    return rows


def only(rows: list[list[object]], trace_ids: set[str]) -> list[list[object]]:
    """The rows of ``rows`` whose trace is in ``trace_ids`` (a split batch keeps its half's links)."""
    return [row for row in rows if row[0] in trace_ids]


def encode(rows: list[list[object]]) -> bytes:
    return json.dumps(rows, separators=(",", ":")).encode()


def decode(payload: bytes) -> list[TraceLink]:
    return [TraceLink.from_json(row) for row in json.loads(payload)]


def parts(link: TraceLink) -> list[str]:
    """The link kinds ``link`` asks for."""
    return [k for k, wanted in ((MODEL, link.model_id), (PROMPT, link.prompt_name)) if wanted]


_warn = RateLimitedLog(log)


class LinkWriter:
    """Applies one links segment: each trace's model link, then its prompt link.

    ``done`` (kept on the segment while it is retried) names the links already settled, so a
    retry, or the next slice of a segment that ran out of time, redoes none. A retryable error
    stops the pass and is raised for delivery to retry the rest; a refusal (4xx, or 403 for
    missing rights) settles that one link as ``failed``."""

    def __init__(self, writer: TraceLinker, metrics: GatewayMetrics) -> None:
        self._writer = writer
        self._m = metrics

    def write(self, experiment_id: str, links: list[TraceLink], done: set[str], slice_s: float | None = None) -> bool:
        """Make the open links of ``links``; False when ``slice_s`` ran out first (the rest later)."""
        deadline = None if slice_s is None else time.monotonic() + slice_s
        for link in links:
            for kind in parts(link):
                key = f"{link.trace_id}:{kind}"
                if key in done:
                    continue
                if deadline is not None and time.monotonic() >= deadline:
                    return False
                try:
                    if kind == MODEL:
                        self._writer.link_model(experiment_id, link)
                    else:
                        self._writer.link_prompt(link.mlflow_trace_id, link.prompt_name, link.prompt_version)
                except RetryableWriteError as exc:
                    if exc.status not in _DENIED:
                        self._m.trace_links.labels(kind, "retried").inc()
                        raise
                    self._m.write_auth_failures.labels("links", str(exc.status)).inc()
                    self._failed(link, kind, exc.code, done, key)
                except PermanentWriteError as exc:
                    self._failed(link, kind, exc.code, done, key)
                else:
                    self._m.trace_links.labels(kind, "ok").inc()
                    done.add(key)
        return True

    def _failed(self, link: TraceLink, kind: str, code: str, done: set[str], key: str) -> None:
        done.add(key)
        self._m.trace_links.labels(kind, "failed").inc()
        hint = ""
        target = f"{link.prompt_name}/{link.prompt_version}"
        if kind == PROMPT and len(target) > MLFLOW_ASSOCIATION_ID_CHARS:
            hint = (
                f"; '<prompt>/<version>' is {len(target)} characters and MLflow 3.17 keeps it in a "
                f"VARCHAR({MLFLOW_ASSOCIATION_ID_CHARS}) that PostgreSQL enforces: shorten the prompt name"
            )
        _warn.warning(
            "link_failed_" + kind, "trace %s: %s link refused (%s)%s; not linked", link.trace_id, kind, code, hint
        )

    def abandon(self, links: list[TraceLink], done: set[str], why: str) -> None:
        """The segment will not be written (retries ran out, shutdown, no room): count what is left."""
        left = [(link, kind) for link in links for kind in parts(link) if f"{link.trace_id}:{kind}" not in done]
        for link, kind in left:
            self._m.trace_links.labels(kind, "failed").inc()
            done.add(f"{link.trace_id}:{kind}")
        if left:
            _warn.warning(
                "links_abandoned",
                "%d trace links not made (%s); first trace %s",
                len(left),
                why,
                left[0][0].trace_id,
            )


__all__ = [
    "MODEL_ID_METADATA",
    "MODEL_ID_TAG",
    "PROMPT_VERSION_TAG",
    "LinkWriter",
    "TraceLink",
    "TraceLinker",
    "link_of",
    "plan",
    "prompt_of",
    "valid_model_id",
]
