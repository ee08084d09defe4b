"""Typed, non-blocking client for the MangaAssist trace gateway, with an MLflow-like tracer.

Depends on grpcio and protobuf only (never mlflow, boto3, opentelemetry or prometheus_client).

    from clients import ClientConfig, Tracer

    tracer = Tracer(ClientConfig.from_env())
    with tracer.start_span("handle_message", span_type="CHAIN", attributes={"request_id": rid}) as span:
        span.set_inputs({"message": text})
        tracer.update_current_trace(tags={"intent": "recommendation"})
    tracer.shutdown()
"""

from clients.config import ClientConfig
from clients.events import (
    BundleComponents,
    BundleEvaluated,
    BundleEvent,
    BundleKind,
    BundlePromoted,
    BundleRegistered,
    BundleRolledBack,
    BundleSignedOff,
    EvaluationStage,
    EvaluationVerdict,
    Feedback,
    FeedbackEvent,
    SignOffArea,
)
from clients.span import SpanHandle
from clients.stats import DROP_REASONS, ClientStats
from clients.tracer import Tracer

__all__ = [
    "DROP_REASONS",
    "BundleComponents",
    "BundleEvaluated",
    "BundleEvent",
    "BundleKind",
    "BundlePromoted",
    "BundleRegistered",
    "BundleRolledBack",
    "BundleSignedOff",
    "ClientConfig",
    "ClientStats",
    "EvaluationStage",
    "EvaluationVerdict",
    "Feedback",
    "FeedbackEvent",
    "SignOffArea",
    "SpanHandle",
    "Tracer",
]
