"""The 17-span MangaAssist request tree (spec section 5), as the tests build it."""

from __future__ import annotations

from clients import Tracer

TREE: list[tuple[str, str, list[str]]] = [
    ("load_context", "RETRIEVER", []),
    ("intent_classification", "LLM", []),
    ("route_intent", "CHAIN", []),
    ("retrieve_chunks", "RETRIEVER", ["embed_query", "vector_search", "keyword_search", "rerank_chunks"]),
    ("build_prompt", "PARSER", []),
    ("bedrock_generate", "LLM", []),
    ("apply_guardrails", "GUARDRAIL", ["prompt_injection", "pii_detection", "grounding_check", "format_validation"]),
    ("persist_response", "TOOL", []),
]
SPAN_NAMES = ["handle_message"] + [name for name, _, kids in TREE for name in [name, *kids]]
TAGS = {f"tag_{i}": f"value_{i}" for i in range(9)} | {"intent": "recommendation"}


def trace_manga_request(tracer: Tracer, request_id: str = "r1") -> str:
    """Trace one request; returns its 32-hex trace id."""
    with tracer.start_span("handle_message", span_type="CHAIN", attributes={"request_id": request_id}) as root:
        root.set_inputs({"message": "Recommend a manga like Vinland Saga"})
        for name, span_type, children in TREE:
            with tracer.start_span(name, span_type=span_type, attributes={"component": name, "k": 3}) as span:
                if name == "route_intent":
                    tracer.update_current_trace(tags=TAGS)
                if name == "bedrock_generate":
                    span.set_inputs({"prompt": "system: ..."})
                    span.set_outputs({"text": "Try Vagabond."})
                for child in children:
                    with tracer.start_span(child, span_type=span_type, attributes={"component": child}):
                        pass
        root.set_outputs({"response": "Try Vagabond."})
        return root.trace_id
