"""The orchestrator wired to a real gateway, served over real HTTP on a free loopback port."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from clients import ClientConfig, Tracer
from orchestrator.adapters import Providers, offline_providers
from orchestrator.api import create_app, serve_in_thread
from orchestrator.service import ChatService
from tests.support import wait_for

os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")

LLM_TREE = {
    "handle_message": None,
    "load_context": "handle_message",
    "intent_classification": "handle_message",
    "route_intent": "handle_message",
    "retrieve_chunks": "handle_message",
    "build_prompt": "handle_message",
    "bedrock_generate": "handle_message",
    "apply_guardrails": "handle_message",
    "persist_response": "handle_message",
    "embed_query": "retrieve_chunks",
    "vector_search": "retrieve_chunks",
    "keyword_search": "retrieve_chunks",
    "rerank_chunks": "retrieve_chunks",
    "prompt_injection": "apply_guardrails",
    "pii_detection": "apply_guardrails",
    "grounding_check": "apply_guardrails",
    "format_validation": "apply_guardrails",
}
NO_GENERATION = {k: v for k, v in LLM_TREE.items() if k not in ("build_prompt", "bedrock_generate")}
NO_RETRIEVAL = {
    k: v
    for k, v in NO_GENERATION.items()
    if k not in ("retrieve_chunks", "embed_query", "vector_search", "keyword_search", "rerank_chunks")
}
EXPECTED_TREE = {
    "product_question": LLM_TREE,
    "recommendation": LLM_TREE,
    "return_policy": LLM_TREE,
    "faq": LLM_TREE,
    "order_status": NO_GENERATION,
    "small_talk": NO_RETRIEVAL,
}
REQUIRED_TAGS = (
    "session_id",
    "request_id",
    "intent",
    "page_type",
    "release_bundle",
    "cache_hit",
    "prompt_version",
    "bedrock_model_id",
    "user_type",
    "deployment_stage",
)


def post(url: str, body: Any, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@dataclass
class Stack:
    url: str
    gateway: Any
    tracer: Tracer
    service: ChatService
    tracking_uri: str
    experiment: str

    def chat(self, body: dict[str, Any]) -> dict[str, Any]:
        status, out = post(self.url + "/v1/chat", body)
        assert status == 200, out
        return out

    def mlflow(self) -> Any:
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri)

    def trace(self, trace_id: str, spans: int) -> Any:
        client = self.mlflow()

        def ready() -> Any:
            try:
                t = client.get_trace("tr-" + trace_id)
            except Exception:  # not written yet
                return None
            return t if t is not None and len(t.data.spans) >= spans and t.info.tags.get("intent") else None

        return wait_for(ready, timeout_s=60, interval_s=0.2, what=f"trace {trace_id} in MLflow")

    def violations(self) -> dict[str, float]:
        out = {}
        for metric in self.gateway.metrics.registry.collect():
            for sample in metric.samples:
                if sample.name.startswith("tracegw_contract_violations") and sample.name.endswith("_total"):
                    out[sample.labels.get("rule", "")] = sample.value
        return {rule: value for rule, value in out.items() if value > 0}


@contextmanager
def orchestrator_stack(
    gateway_factory: Any,
    tracking_uri: str,
    experiment: str,
    providers: Providers | None = None,
    app_options: dict[str, Any] | None = None,
) -> Iterator[Stack]:
    """``app_options`` go to ``create_app`` (e.g. the chat page's ``mlflow_ui_url``)."""
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=tracking_uri, MLFLOW_EXPERIMENT_NAME=experiment, MLFLOW_TRACE_SAMPLING_RATIO="1.0"
    )
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05, service_name="orchestrator-e2e"))
    service = ChatService(tracer, providers or offline_providers(), deployment_stage="canary")
    api = serve_in_thread(create_app(service, **(app_options or {})))
    try:
        yield Stack(api.url, gw, tracer, service, tracking_uri, experiment)
    finally:
        api.stop()
        tracer.shutdown(timeout_s=5)
