"""The trace contract of spec §5, checked on every trace before sampling.

Rules (each a bounded metric label):

- ``missing_tag.<tag>``: a required tag is absent (``session_id``, ``request_id``, ``intent``,
  ``page_type``, ``release_bundle``, ``cache_hit``); ``prompt_version`` is required when the
  trace has an LLM span, ``bedrock_model_id`` when it calls Bedrock ("none" counts as absent);
- ``root_missing``: the root never arrived; ``multiple_roots``; ``root_name``: the top-level span
  is not ``handle_message``;
- ``unexpected_child``: a child of ``handle_message``, ``retrieve_chunks`` or
  ``apply_guardrails`` that the standard tree does not have;
- ``duplicate_request``: a second top-level trace for the same ``request_id`` (one response,
  one trace).

Violations are counted per rule and tagged on the trace (``contract.violations``). Modes:
``warn`` keeps the trace (a tail policy stores it), ``strict`` does not store it (counted as
``contract_violation``), ``off`` skips the checks.
"""

from __future__ import annotations

from gateway.config import ContractConfig
from gateway.metrics import GatewayMetrics
from gateway.model import TraceRecord
from gateway.process.recent import RecentMap

VIOLATIONS_TAG = "contract.violations"
ROOT_NAME = "handle_message"
REQUIRED_TAGS = ("session_id", "request_id", "intent", "page_type", "release_bundle", "cache_hit")
STANDARD_CHILDREN = {
    "handle_message": frozenset(
        {
            "load_context",
            "intent_classification",
            "route_intent",
            "retrieve_chunks",
            "build_prompt",
            "bedrock_generate",
            "apply_guardrails",
            "persist_response",
        }
    ),
    "retrieve_chunks": frozenset({"embed_query", "vector_search", "keyword_search", "rerank_chunks"}),
    "apply_guardrails": frozenset({"prompt_injection", "pii_detection", "grounding_check", "format_validation"}),
}
RECENT_REQUESTS = 100_000


def _present(value: str | None) -> bool:
    return bool(value) and value != "none"


class ContractChecker:
    name = "contract"
    drop_reason = "contract_violation"

    def __init__(self, config: ContractConfig, metrics: GatewayMetrics) -> None:
        self._mode = config.mode
        self._metrics = metrics
        self._requests: RecentMap[str, str] = RecentMap(RECENT_REQUESTS)

    def check(self, trace: TraceRecord) -> list[str]:
        """The rules ``trace`` breaks, in a stable order."""
        tags = trace.tags
        rules = []
        for t in REQUIRED_TAGS:
            if not tags.get(t):
                rules.append(f"missing_tag.{t}")
        llm = bedrock = False
        roots = []
        names = {}
        for s in trace.spans:  # one pass collects what the rules below need
            names[s.span_id] = s.name
            if s.parent_span_id is None:
                roots.append(s)
            if s.span_type == "LLM":
                llm = True
            if s.name == "bedrock_generate" or (s.attributes and s.attributes.get("provider") == "bedrock"):
                bedrock = True
        if llm and not _present(tags.get("prompt_version")):
            rules.append("missing_tag.prompt_version")
        if bedrock and not _present(tags.get("bedrock_model_id")):
            rules.append("missing_tag.bedrock_model_id")
        if not trace.complete:
            rules.append("root_missing")
        elif len(roots) > 1:
            rules.append("multiple_roots")
        if trace.complete and roots and roots[0].name != ROOT_NAME:
            rules.append("root_name")
        for span in trace.spans:
            allowed = STANDARD_CHILDREN.get(names.get(span.parent_span_id or "", ""))
            if allowed is not None and span.name not in allowed:
                rules.append("unexpected_child")
                break
        request_id = tags.get("request_id")
        if request_id:
            seen = self._requests.get(request_id)
            if seen is not None and seen != trace.trace_id:
                rules.append("duplicate_request")
            else:
                self._requests[request_id] = trace.trace_id
        return rules

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        if self._mode == "off":
            return traces
        out = []
        for trace in traces:
            if trace.late:
                out.append(trace)
                continue
            rules = self.check(trace)
            if rules:
                for rule in rules:
                    self._metrics.contract_violations.labels(rule).inc()
                trace.tags[VIOLATIONS_TAG] = ",".join(rules)
                if self._mode == "strict":
                    continue
            out.append(trace)
        return out
