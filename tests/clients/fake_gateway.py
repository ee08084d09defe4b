"""A recording fake of the trace gateway: a real gRPC server storing what it receives.

Knobs (set before or during a test): ``exhausted`` answers RESOURCE_EXHAUSTED, with a
RetryInfo delay when ``retry_delay_s`` is set; ``delay_s`` makes ExportSpans slow (beyond the
client's deadline); ``reject_per_request`` reports that many spans per request as rejected.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import error_details_pb2, status_pb2

from clients.pb import common_pb2, spans_pb2
from clients.pb import trace_gateway_service_pb2 as svc_pb2
from clients.pb import trace_gateway_service_pb2_grpc as svc_grpc


class FakeGateway(svc_grpc.TraceGatewayServiceServicer):
    """Stores every request; thread-safe; ``wait_for`` blocks on a condition, not a sleep."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._release = threading.Event()
        self.export_requests: list[svc_pb2.ExportSpansRequest] = []
        self.feedback_requests: list[svc_pb2.RecordFeedbackRequest] = []
        self.bundle_requests: list[svc_pb2.RecordBundleEventsRequest] = []
        self.calls = 0
        self.exhausted = False
        self.retry_delay_s: float | None = None
        self.delay_s = 0.0
        self.reject_per_request = 0
        self.target = ""

    # -- service ------------------------------------------------------------------------

    def ExportSpans(
        self, request: svc_pb2.ExportSpansRequest, context: grpc.ServicerContext
    ) -> svc_pb2.ExportSpansResponse:
        self._count_call()
        if self.delay_s:
            self._release.wait(self.delay_s)
        if self.exhausted:
            self._abort_exhausted(context)
        rejected = min(self.reject_per_request, len(request.spans))
        self._record(self.export_requests, request)
        return svc_pb2.ExportSpansResponse(
            partial_success=common_pb2.PartialSuccess(
                rejected_count=rejected, error_message="fake rejection" if rejected else ""
            )
        )

    def RecordFeedback(
        self, request: svc_pb2.RecordFeedbackRequest, context: grpc.ServicerContext
    ) -> svc_pb2.RecordFeedbackResponse:
        self._count_call()
        if self.exhausted:
            self._abort_exhausted(context)
        self._record(self.feedback_requests, request)
        return svc_pb2.RecordFeedbackResponse()

    def RecordBundleEvents(
        self, request: svc_pb2.RecordBundleEventsRequest, context: grpc.ServicerContext
    ) -> svc_pb2.RecordBundleEventsResponse:
        self._count_call()
        if self.exhausted:
            self._abort_exhausted(context)
        self._record(self.bundle_requests, request)
        return svc_pb2.RecordBundleEventsResponse()

    # -- test helpers ---------------------------------------------------------------------

    def spans(self) -> list[spans_pb2.Span]:
        """Every span received so far."""
        with self._cond:
            return [span for request in self.export_requests for span in request.spans]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float = 5.0) -> bool:
        """Wait until ``predicate()`` holds (checked on every received call) or time runs out."""
        with self._cond:
            return self._cond.wait_for(predicate, timeout_s)

    def release(self) -> None:
        """End every pending slow call now (used at teardown)."""
        self._release.set()

    def _count_call(self) -> None:
        with self._cond:
            self.calls += 1
            self._cond.notify_all()

    def _record(self, store: list[Any], request: Any) -> None:
        with self._cond:
            store.append(request)
            self._cond.notify_all()

    def _abort_exhausted(self, context: grpc.ServicerContext) -> None:
        status = status_pb2.Status(code=grpc.StatusCode.RESOURCE_EXHAUSTED.value[0], message="gateway full")
        if self.retry_delay_s is not None:
            detail = any_pb2.Any()
            seconds = int(self.retry_delay_s)
            detail.Pack(
                error_details_pb2.RetryInfo(
                    retry_delay=duration_pb2.Duration(seconds=seconds, nanos=int((self.retry_delay_s - seconds) * 1e9))
                )
            )
            status.details.append(detail)
        context.set_trailing_metadata((("grpc-status-details-bin", status.SerializeToString()),))
        context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, "gateway full")


def start_fake_gateway() -> tuple[grpc.Server, FakeGateway]:
    """Start a FakeGateway on 127.0.0.1:0; its ``target`` says where it listens."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4, thread_name_prefix="fake-gateway"))
    gateway = FakeGateway()
    svc_grpc.add_TraceGatewayServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    gateway.target = f"127.0.0.1:{port}"
    return server, gateway
