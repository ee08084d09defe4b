"""Trace middleware (spec §6): the ``handle_message`` trace is created at the boundary.

``request_trace`` opens exactly one top-level span per customer-visible response, with its
attributes set at the start; ``RequestTrace.tag`` sets the spec §5 trace tags (called right
after intent classification); an exception escaping the request marks the trace ERROR and
propagates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from clients import SpanHandle, Tracer
from orchestrator.schema import ChatRequest


@dataclass(slots=True)
class RequestTrace:
    tracer: Tracer
    root: SpanHandle
    request: ChatRequest
    deployment_stage: str

    @property
    def trace_id(self) -> str:
        return self.root.trace_id

    def tag(
        self,
        intent: str,
        release_bundle: str,
        prompt_version: str,
        bedrock_model_id: str,
        cache_hit: bool,
        bundle_tags: Mapping[str, str] | None = None,
    ) -> None:
        req = self.request
        self.tracer.update_current_trace(
            tags={
                "session_id": req.session_id,
                "request_id": req.request_id,
                "intent": intent,
                "page_type": req.page_context.page_type,
                "release_bundle": release_bundle,
                "prompt_version": prompt_version,
                "bedrock_model_id": bedrock_model_id,
                "cache_hit": "true" if cache_hit else "false",
                "user_type": req.user_type,
                "deployment_stage": self.deployment_stage,
                **(bundle_tags or {}),
            }
        )


@contextmanager
def request_trace(tracer: Tracer, request: ChatRequest, deployment_stage: str) -> Iterator[RequestTrace]:
    ctx = request.page_context
    with tracer.start_span(
        "handle_message",
        span_type="CHAIN",
        attributes={
            "request_id": request.request_id,
            "session_id": request.session_id,
            "page_type": ctx.page_type,
            "customer_locale": ctx.locale,
            "user_type": request.user_type,
            **({"product_id": ctx.product_id} if ctx.product_id else {}),
        },
    ) as root:
        root.set_inputs({"message": request.message, "page_type": ctx.page_type, "locale": ctx.locale})
        yield RequestTrace(tracer, root, request, deployment_stage)
