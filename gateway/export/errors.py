"""What can go wrong writing to MLflow, and the one interface every writer implements.

Error tree (only the writers, ``mlflow_http`` and ``mlflow_embedded``, decide which is which)::

    WriteError                ``reason`` (free text, for logs), ``status``, ``code`` (bounded)
    ├── RetryableWriteError   connection refused/reset, timeout, HTTP 429 and 5xx
    │                         (``retry_after_s`` carries a server's Retry-After); also HTTP
    │                         401/403: the gateway's own MLflow credentials are missing, wrong
    │                         or lack a right. That is an operator's fix, not a bad request, so
    │                         the data waits in the spool (the breaker opens, the outage alert
    │                         fires, ``tracegw_write_auth_failures_total`` says why) instead of
    │                         being dead-lettered at once
    └── PermanentWriteError   any other 4xx, or a request MLflow cannot parse (422)

``code`` labels metrics (``tracegw_dead_letter_total{reason}``), so it is bounded by
construction: MLflow's own error code when it looks like one (``INVALID_PARAMETER_VALUE``),
else ``HTTP_<status>``, else ``UNKNOWN``.
"""

from __future__ import annotations

import re
from typing import Protocol

from gateway.model import BundleRecord, FeedbackRecord

_ERROR_CODE = re.compile(r"[A-Z][A-Z0-9_]{1,39}")


def code_of(exc: BaseException) -> str:
    """A label-safe code for an exception that is not a ``WriteError``: its class name in upper
    snake case (``DecodeError`` → ``DECODE_ERROR``), bounded like every code."""
    name = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type(exc).__name__).upper()
    return bounded_code(name[:40], None)


def bounded_code(code: str, status: int | None) -> str:
    """A label-safe error code: an MLflow-style code as is, else ``HTTP_<status>``, else ``UNKNOWN``."""
    if _ERROR_CODE.fullmatch(code):
        return code
    if status is not None and 100 <= status <= 599:
        return f"HTTP_{status}"
    return "UNKNOWN"


class WriteError(Exception):
    """A write to MLflow failed. ``reason`` is for logs; ``code`` is a bounded label (metrics)."""

    def __init__(self, reason: str, *, status: int | None = None, code: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status
        self.code = bounded_code(code, status)


class RetryableWriteError(WriteError):
    """Worth retrying later: the server is down, slow, overloaded or failing."""

    def __init__(
        self, reason: str, *, status: int | None = None, code: str = "", retry_after_s: float | None = None
    ) -> None:
        super().__init__(reason, status=status, code=code)
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

    def bundle_version_known(self, name: str, version: str) -> bool:
        """Whether the model registry has version ``version`` of registered model ``name``
        (raises ``RetryableWriteError`` when it cannot tell)."""
        ...

    def close(self) -> None: ...
