"""gRPC receivers: the native ``TraceGatewayService`` and OTLP ``TraceService/Export``.

Proto types stop here. A request that is wrong as a whole gets ``INVALID_ARGUMENT`` naming
the field; bad items inside a batch are reported in the partial-success field and counted;
a gateway that is shutting down answers ``UNAVAILABLE``.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from clients.pb import common_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway.core import Gateway
from gateway.export.errors import RetryableWriteError
from gateway.export.segments import Kind
from gateway.export.wal import RecordKind, WalFull, WalWriteError
from gateway.logs import RateLimitedLog
from gateway.receive import decode_events, decode_spans
from gateway.receive.auth import ANONYMOUS, Authenticator, Principal
from gateway.receive.experiments import ExperimentPolicy, Refusal
from gateway.receive.replay import events_payload

log = logging.getLogger(__name__)
_MALFORMED_LOG = RateLimitedLog(log)

MAX_REJECTIONS_LISTED = 20
RETRY_AFTER_S = 1
_FULL_MESSAGE = "gateway memory is above its limit; retry later"


def _retry_info_details() -> bytes:
    info = error_details_pb2.RetryInfo()
    info.retry_delay.seconds = RETRY_AFTER_S
    status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=_FULL_MESSAGE)
    status.details.add().Pack(info)
    details: bytes = status.SerializeToString()
    return details


_RETRY_DETAILS = _retry_info_details()
# The authenticated caller of the RPC being handled (set by ``_guarded``).
CALLER: contextvars.ContextVar[Principal] = contextvars.ContextVar("tracegw_caller", default=ANONYMOUS)
BUNDLE_RPC = "RecordBundleEvents"
SPAN_RPCS = frozenset({"ExportSpans", "Export"})
EXPERIMENT_METADATA_KEY = "x-mlflow-experiment-name"


def _partial(rejections: list[decode_spans.Rejection]) -> common_pb2.PartialSuccess:
    out = common_pb2.PartialSuccess()
    if not rejections:
        return out
    out.rejected_count = len(rejections)
    first = rejections[0]
    out.error_message = f"{len(rejections)} item(s) rejected; first: {first.field} {first.reason}"
    for r in rejections[:MAX_REJECTIONS_LISTED]:
        out.rejections.add(index=r.index, field=r.field, reason=r.reason)
    return out


async def _refuse_if_closed(gateway: Gateway, context: grpc.aio.ServicerContext) -> None:
    if not gateway.accepting:
        await context.abort(grpc.StatusCode.UNAVAILABLE, "gateway is shutting down")


async def _refuse_if_full(gateway: Gateway, context: grpc.aio.ServicerContext, receiver: str, spans: int) -> None:
    """Back-pressure: RESOURCE_EXHAUSTED with a RetryInfo, never a blocked caller."""
    if gateway.refusing:
        gateway.metrics.refused.labels(receiver).inc()
        gateway.metrics.refused_spans.labels(receiver).inc(spans)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            _FULL_MESSAGE,
            trailing_metadata=(("grpc-status-details-bin", _RETRY_DETAILS),),
        )


_EXPERIMENT_STATUS = {
    Refusal.TOO_LONG: grpc.StatusCode.INVALID_ARGUMENT,
    Refusal.NOT_ALLOWED: grpc.StatusCode.PERMISSION_DENIED,
    Refusal.CAP: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def experiment_policy(gateway: Gateway) -> ExperimentPolicy:
    cfg = gateway.config
    return ExperimentPolicy(
        cfg.mlflow.experiment_name,
        cfg.mlflow.allowed_experiments,
        cfg.mlflow.max_experiments,
        cfg.limits.max_experiment_name_chars,
    )


async def _refuse_experiment(
    gateway: Gateway, policy: ExperimentPolicy, context: grpc.aio.ServicerContext, name: str, spans: int
) -> None:
    """The whole request is refused (nothing taken) when it names an experiment it may not."""
    refusal = policy.check(name)
    if refusal is None:
        return
    gateway.metrics.experiments_refused.labels(refusal).inc(spans)
    await context.abort(_EXPERIMENT_STATUS[refusal], policy.explain(refusal, name))


async def _refuse_events_if_full(gateway: Gateway, context: grpc.aio.ServicerContext, kind: Kind, events: int) -> None:
    """Before acknowledging events: RESOURCE_EXHAUSTED with a RetryInfo when memory is over its
    limit or delivery's queue for ``kind`` has no room for all of them (none is taken then)."""
    if gateway.refusing:
        reason, message = "memory", _FULL_MESSAGE
    elif events > gateway.event_room(kind):
        reason = "queue_full"
        message = f"the gateway's {kind} queue has no room for {events} events now; retry later, or send fewer per call"
    else:
        return
    gateway.metrics.events_refused.labels(kind, reason).inc(events)
    await context.abort(
        grpc.StatusCode.RESOURCE_EXHAUSTED, message, trailing_metadata=(("grpc-status-details-bin", _RETRY_DETAILS),)
    )


async def _durable(
    gateway: Gateway,
    context: grpc.aio.ServicerContext,
    kind: RecordKind,
    payload: bytes,
    experiment: str,
    what: str,
    count: int,
) -> int:
    """Append an RPC to the write-ahead log and wait until it is on disk (the group commit), before
    anything is taken or acknowledged. Returns its segment, held for the caller to ``release`` once
    it has handed the request on (0: the WAL is off). When the log is full or the disk refuses, the
    RPC is refused with nothing taken: the caller's retry is safe."""
    wal = gateway.wal
    if wal is None:
        return 0
    try:
        segment, written = wal.append(kind, payload, experiment)
        del payload  # the WAL's queue holds the bytes until they are written, then lets them go
    except WalFull as exc:
        gateway.metrics.wal_refused.labels(what, "full").inc(count)
        await context.abort(
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"{exc}; nothing was recorded, retry later",
            trailing_metadata=(("grpc-status-details-bin", _RETRY_DETAILS),),
        )
        raise  # not reached: abort raises
    try:
        await written
    except WalWriteError as exc:
        wal.release([segment])
        gateway.metrics.wal_refused.labels(what, "error").inc(count)
        await context.abort(grpc.StatusCode.UNAVAILABLE, f"{exc}; nothing was recorded, retry later")
    except BaseException:  # cancelled (the caller gave up): not acknowledged, not taken
        wal.release([segment])
        raise
    return segment


@contextlib.contextmanager
def _handing_on(gateway: Gateway, segment: int) -> Iterator[None]:
    """Around handing a logged request on: its parts take their own holds on ``segment``, then the
    RPC's own hold (taken by ``_durable``) is given back."""
    try:
        yield
    finally:
        if segment:
            assert gateway.wal is not None
            gateway.wal.release([segment])


class NativeReceiver(trace_gateway_service_pb2_grpc.TraceGatewayServiceServicer):
    def __init__(self, gateway: Gateway, experiments: ExperimentPolicy) -> None:
        self._gw = gateway
        self._m = gateway.metrics
        self._experiments = experiments

    async def ExportSpans(
        self,
        request: trace_gateway_service_pb2.ExportSpansRequest,
        context: grpc.aio.ServicerContext,
        raw: Received | None = None,
    ) -> trace_gateway_service_pb2.ExportSpansResponse:
        await _refuse_if_closed(self._gw, context)
        await _refuse_if_full(self._gw, context, "native", len(request.spans))
        await _refuse_experiment(self._gw, self._experiments, context, request.experiment_name, len(request.spans))
        decoded = decode_spans.decode_native_spans(request.spans, self._gw.config.limits)
        self._m.spans_received.labels("native").inc(len(request.spans))
        if decoded.rejections:
            self._m.spans_rejected.labels("native").inc(len(decoded.rejections))
            self._m.drop_spans("receive", "invalid", len(decoded.rejections))
        if decoded.stripped_keys:
            self._m.reserved_keys_stripped.inc(decoded.stripped_keys)
        if decoded.spans:
            segment = await _durable(
                self._gw,
                context,
                RecordKind.NATIVE_SPANS,
                _bytes_of(raw, request),
                request.experiment_name,
                "spans",
                len(decoded.spans),
            )
            with _handing_on(self._gw, segment):
                self._gw.accept_spans(decoded.spans, request.experiment_name, segment)
        return trace_gateway_service_pb2.ExportSpansResponse(partial_success=_partial(decoded.rejections))

    async def RecordFeedback(
        self, request: trace_gateway_service_pb2.RecordFeedbackRequest, context: grpc.aio.ServicerContext
    ) -> trace_gateway_service_pb2.RecordFeedbackResponse:
        await _refuse_if_closed(self._gw, context)
        await _refuse_events_if_full(self._gw, context, Kind.FEEDBACK, len(request.events))
        records, rejections = decode_events.decode_feedback(request.events)
        self._count_events("feedback", len(request.events), rejections)
        if records:
            segment = await _durable(
                self._gw, context, RecordKind.FEEDBACK, events_payload(records), "", "feedback", len(records)
            )
            with _handing_on(self._gw, segment):
                self._gw.accept_feedback(records, segment)
        return trace_gateway_service_pb2.RecordFeedbackResponse(partial_success=_partial(rejections))

    async def RecordBundleEvents(
        self, request: trace_gateway_service_pb2.RecordBundleEventsRequest, context: grpc.aio.ServicerContext
    ) -> trace_gateway_service_pb2.RecordBundleEventsResponse:
        await _refuse_if_closed(self._gw, context)
        await _refuse_events_if_full(self._gw, context, Kind.BUNDLE, len(request.events))
        records, rejections = decode_events.decode_bundle_events(request.events)
        rejected = {r.index for r in rejections}
        indexed = list(zip((i for i in range(len(request.events)) if i not in rejected), records, strict=True))
        try:
            unknown = await self._gw.unknown_bundle_versions(records)
        except RetryableWriteError as exc:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"cannot check the model registry now ({exc.code}); nothing was recorded, retry later",
                trailing_metadata=(("grpc-status-details-bin", _RETRY_DETAILS),),
            )
        if unknown:
            for i, record in indexed:
                why = unknown.get(id(record))
                if why is not None:
                    rejections.append(decode_spans.Rejection(i, f"events[{i}].{why[0]}", why[1]))
            rejections.sort(key=lambda r: r.index)
            records = [r for r in records if id(r) not in unknown]
        caller = CALLER.get().identity
        records = [dataclasses.replace(r, recorded_by=caller) for r in records]
        self._count_events("bundle", len(request.events), rejections)
        if records:
            segment = await _durable(
                self._gw, context, RecordKind.BUNDLE, events_payload(records), "", "bundle", len(records)
            )
            with _handing_on(self._gw, segment):
                self._gw.accept_bundle_events(records, segment)
        return trace_gateway_service_pb2.RecordBundleEventsResponse(partial_success=_partial(rejections))

    def _count_events(self, kind: str, received: int, rejections: list[decode_spans.Rejection]) -> None:
        self._m.events_received.labels(kind).inc(received)
        if rejections:
            self._m.events_rejected.labels(kind).inc(len(rejections))


class OtlpReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    """OTLP/gRPC ``TraceService/Export``: any OpenTelemetry SDK can point at the sidecar.

    The MLflow experiment comes from the ``x-mlflow-experiment-name`` request metadata, else
    the gateway's default.
    """

    def __init__(self, gateway: Gateway, experiments: ExperimentPolicy) -> None:
        self._gw = gateway
        self._m = gateway.metrics
        self._experiments = experiments

    async def Export(
        self,
        request: trace_service_pb2.ExportTraceServiceRequest,
        context: grpc.aio.ServicerContext,
        raw: Received | None = None,
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        await _refuse_if_closed(self._gw, context)
        spans = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
        await _refuse_if_full(self._gw, context, "otlp", spans)
        experiment = ""
        for key, value in context.invocation_metadata() or ():
            if key == EXPERIMENT_METADATA_KEY:
                experiment = value if isinstance(value, str) else value.decode()
        await _refuse_experiment(self._gw, self._experiments, context, experiment, spans)
        decoded = decode_spans.decode_otlp_spans(request.resource_spans, self._gw.config.limits)
        total = len(decoded.spans) + len(decoded.rejections)
        self._m.spans_received.labels("otlp").inc(total)
        if decoded.rejections:
            self._m.spans_rejected.labels("otlp").inc(len(decoded.rejections))
            self._m.drop_spans("receive", "invalid", len(decoded.rejections))
        if decoded.stripped_keys:
            self._m.reserved_keys_stripped.inc(decoded.stripped_keys)
        if decoded.spans:
            segment = await _durable(
                self._gw,
                context,
                RecordKind.OTLP_SPANS,
                _bytes_of(raw, request),
                experiment,
                "spans",
                len(decoded.spans),
            )
            with _handing_on(self._gw, segment):
                self._gw.accept_spans(decoded.spans, experiment, segment)
        response = trace_service_pb2.ExportTraceServiceResponse()
        if decoded.rejections:
            response.partial_success.rejected_spans = len(decoded.rejections)
            first = decoded.rejections[0]
            response.partial_success.error_message = f"{first.field} {first.reason}"
        return response


# ---- registration: protobuf parsing that cannot fail the RPC in gRPC's internals ----------------


class Malformed:
    """What a request's bytes became when protobuf could not parse them (random or truncated
    bytes, invalid UTF-8 in a string, nesting past protobuf's depth limit)."""

    __slots__ = ("error",)

    def __init__(self, error: str) -> None:
        self.error = error


class Received:
    """A span request as parsed, with the bytes it arrived in (the WAL logs those as they are)."""

    __slots__ = ("data", "message")

    def __init__(self, message: Any, data: bytes) -> None:
        self.message = message
        self.data = data


def _bytes_of(raw: Received | None, request: Any) -> bytes:
    """The request's bytes as they arrived, taken out of ``raw`` (so that only the WAL's queue holds
    them while the RPC waits for its group commit: a 4 MiB request is not kept twice), else
    serialized again (the WAL turned on while the server kept plain deserializers)."""
    if raw is not None and raw.data:
        data, raw.data = raw.data, b""
        return data
    payload: bytes = request.SerializeToString()
    return payload


class TooLarge:
    """A request larger than its RPC's bound (``TRACEGW_MAX_EVENT_MESSAGE_BYTES``), left unparsed."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size


def _lenient(
    parse: Callable[[bytes], Any], max_bytes: int | None = None, keep_bytes: bool = False
) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        if max_bytes is not None and len(data) > max_bytes:
            return TooLarge(len(data))
        try:
            message = parse(data)
        except Exception as exc:  # DecodeError, RecursionError: the request is bad, not the gateway
            return Malformed(type(exc).__name__)
        return Received(message, data) if keep_bytes else message

    return deserialize


def _guarded(
    rpc: str,
    handler: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
    gateway: Gateway,
    auth: Authenticator,
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    bundles = rpc == BUNDLE_RPC

    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        principal = auth.authenticate(context)
        if principal is None:
            gateway.metrics.requests_unauthorized.labels(rpc, "unauthenticated").inc()
            _MALFORMED_LOG.warning("unauthenticated_" + rpc, "%s call without valid credentials refused", rpc)
            await context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "this gateway needs a bearer token (authorization metadata) or a client certificate",
            )
        assert principal is not None
        if not (principal.may_record_bundles if bundles else principal.may_ingest):
            gateway.metrics.requests_unauthorized.labels(rpc, "permission_denied").inc()
            _MALFORMED_LOG.warning("denied_" + rpc, "%s refused to %s (no right to it)", rpc, principal.identity)
            what = "record bundle events" if bundles else "send spans or feedback"
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"{principal.identity} may not {what}")
        CALLER.set(principal)
        if request.__class__ is Received:
            return await handler(request.message, context, request)  # type: ignore[call-arg]
        if request.__class__ is TooLarge:
            gateway.metrics.requests_too_large.labels(rpc).inc()
            _MALFORMED_LOG.warning("too_large_" + rpc, "%s request of %d bytes refused (too large)", rpc, request.size)
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"the {rpc} request is {request.size} bytes; this gateway takes at most "
                f"{gateway.config.limits.max_event_message_bytes} (TRACEGW_MAX_EVENT_MESSAGE_BYTES): "
                "send fewer events per call",
            )
        if request.__class__ is Malformed:
            gateway.metrics.requests_malformed.labels(rpc).inc()
            _MALFORMED_LOG.warning("malformed_" + rpc, "malformed %s request (%s) refused", rpc, request.error)
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"the {rpc} request is not a valid protobuf message ({request.error})"
            )
        return await handler(request, context)

    return guarded


def register(server: grpc.aio.Server, gateway: Gateway, auth: Authenticator | None = None) -> tuple[str, str]:
    """Add the native and OTLP services to ``server``; returns their full names (for health and
    reflection). Like the generated ``add_*_to_server``, except that a request protobuf cannot
    parse answers INVALID_ARGUMENT (counted, one rate-limited log line) instead of UNKNOWN with
    a traceback per request."""
    auth = auth or Authenticator(gateway.config.auth)
    experiments = experiment_policy(gateway)  # one policy: the cap counts names from both receivers
    native, otlp = NativeReceiver(gateway, experiments), OtlpReceiver(gateway, experiments)
    svc = trace_gateway_service_pb2
    services: dict[str, dict[str, tuple[Any, Any, Any]]] = {
        svc.DESCRIPTOR.services_by_name["TraceGatewayService"].full_name: {
            "ExportSpans": (native.ExportSpans, svc.ExportSpansRequest, svc.ExportSpansResponse),
            "RecordFeedback": (native.RecordFeedback, svc.RecordFeedbackRequest, svc.RecordFeedbackResponse),
            "RecordBundleEvents": (
                native.RecordBundleEvents,
                svc.RecordBundleEventsRequest,
                svc.RecordBundleEventsResponse,
            ),
        },
        trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name: {
            "Export": (
                otlp.Export,
                trace_service_pb2.ExportTraceServiceRequest,
                trace_service_pb2.ExportTraceServiceResponse,
            ),
        },
    }
    # Span RPCs are bounded by gRPC itself (TRACEGW_MAX_RECEIVE_MESSAGE_BYTES, refused before the
    # bytes are read); event RPCs carry small records, so they get a tighter bound of their own.
    event_max = gateway.config.limits.max_event_message_bytes
    bounded = {"RecordFeedback": event_max, "RecordBundleEvents": event_max}
    for service, methods in services.items():
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                _guarded(name, fn, gateway, auth),
                request_deserializer=_lenient(
                    request.FromString, bounded.get(name), keep_bytes=name in SPAN_RPCS and gateway.wal is not None
                ),
                response_serializer=response.SerializeToString,
            )
            for name, (fn, request, response) in methods.items()
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service, handlers),))
    native_name, otlp_name = services
    return native_name, otlp_name
