"""Test doubles shared by the suites (and by ``bench/``): fakes, not mocks.

- ``FakeClock`` — a ``clock=`` argument that moves only when told.
- ``NullWriter`` — a ``TraceWriter`` that keeps nothing and acknowledges at once (benchmarks).
- ``RecordingWriter`` — a ``TraceWriter`` that records what it was asked to write; span
  writes wait while ``hold`` is clear, so a test can keep the writer busy without sleeping.
- ``FlakyWriter`` — a ``RecordingWriter`` that fails the first ``fail_times`` span writes as
  retryable and rejects, as MLflow would, any batch holding the ``poison`` trace.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

if TYPE_CHECKING:
    from gateway.model import BundleRecord, FeedbackRecord

# No gateway import at run time outside FlakyWriter: ``bench/ingest.py`` loads this file beside
# an older gateway tree (``bench/ingest_ab.py --b-rev``), whose modules may live elsewhere.


class FakeClock:
    """Returns ``now`` when called; tests move it with ``advance`` (or by setting ``now``)."""

    def __init__(self, start: float = 0.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def trace_ids(payload: bytes) -> list[str]:
    """The distinct trace ids (hex) of a serialized OTLP request, sorted."""
    request = ExportTraceServiceRequest.FromString(payload)
    return sorted({s.trace_id.hex() for rs in request.resource_spans for ss in rs.scope_spans for s in ss.spans})


class NullWriter:
    """Keeps nothing and acknowledges every write at once; counts what it was given."""

    def __init__(self) -> None:
        self.spans = 0
        self.batches = 0

    def experiment_id(self, name: str) -> str:
        return "1"

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        self.spans += span_count
        self.batches += 1

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        pass

    def write_bundle_event(self, record: BundleRecord, experiment_name: str) -> None:
        pass

    def bundle_version_known(self, name: str, version: str) -> bool:
        return True

    def close(self) -> None:
        pass


class RecordingWriter:
    """Records every write. ``batches`` holds the trace ids of each span write, in order;
    ``written`` all of them; ``calls`` counts span writes begun (before ``hold`` is waited on)."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.written: list[str] = []
        self.feedback: list[tuple[str, bool]] = []
        self.bundles: list[BundleRecord] = []
        self.registry: set[tuple[str, str]] | None = None
        self.calls = 0
        self.hold = threading.Event()
        self.hold.set()
        self.lock = threading.Lock()

    def experiment_id(self, name: str) -> str:
        return "1"

    def write_spans(self, experiment_id: str, payload: bytes, span_count: int) -> None:
        with self.lock:
            self.calls += 1
        assert self.hold.wait(30), "the test never released the writer"
        ids = trace_ids(payload)
        with self.lock:
            self.check(ids)
            self.batches.append(ids)
            self.written.extend(ids)

    def check(self, ids: list[str]) -> None:
        """Called with the lock held before a span write is recorded; raise to fail it."""

    def write_feedback(self, record: FeedbackRecord, check_existing: bool = False) -> None:
        with self.lock:
            self.feedback.append((record.event_id, check_existing))

    def write_bundle_event(self, record: BundleRecord, experiment_name: str) -> None:
        with self.lock:
            self.bundles.append(record)

    def bundle_version_known(self, name: str, version: str) -> bool:
        """Every version, unless ``registry`` lists the known (name, version) pairs."""
        return self.registry is None or (name, version) in self.registry

    def close(self) -> None:
        pass


class FlakyWriter(RecordingWriter):
    """Fails the first ``fail_times`` span writes as retryable; rejects any batch holding ``poison``."""

    def __init__(self, fail_times: int = 0, poison: str | None = None) -> None:
        super().__init__()
        self.fail_times = fail_times
        self.poison = poison

    def check(self, ids: list[str]) -> None:
        from gateway.export.errors import PermanentWriteError, RetryableWriteError

        if self.fail_times > 0:
            self.fail_times -= 1
            raise RetryableWriteError("write spans: HTTP 503", status=503)
        if self.poison in ids:
            raise PermanentWriteError(
                "write spans: HTTP 400 INVALID_PARAMETER_VALUE", status=400, code="INVALID_PARAMETER_VALUE"
            )


__all__ = ["FakeClock", "FlakyWriter", "NullWriter", "RecordingWriter", "trace_ids"]


# Memory limits for an in-process gateway: the test process's own RSS (hundreds of MB late in a full
# run) must not make the gateway shed or refuse what a test sends.
ROOMY = {"TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30), "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30)}
