"""The small interfaces every provider implements, with the values they exchange.

Two implementations each: ``aws_*`` modules (boto3; the only modules that import it) and
``offline_*`` modules (deterministic, shipped with the project).

Errors::

    ProviderError            a provider call failed; not worth retrying (bad request, access denied)
    └── ProviderThrottled    throttled or unavailable, still so after the adapter's own retries
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from orchestrator.guardrails import GuardrailRuleset
    from orchestrator.retrieval import RetrievalPolicy


class ProviderError(Exception):
    """A provider call failed permanently; ``code`` is the service's error code when known."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code


class ProviderThrottled(ProviderError):
    """Throttled (or temporarily unavailable) on every attempt; the caller may retry later."""


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    model_id: str
    system: str
    prompt: str
    temperature: float
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Generation:
    text: str
    input_tokens: int
    output_tokens: int
    stop_reason: str
    model_latency_ms: float | None = None
    """Latency the service reported (Converse ``metrics.latencyMs``), when it did."""


@dataclass(frozen=True, slots=True)
class IntentPrediction:
    intent: str
    confidence: float
    model_version: str


class Generator(Protocol):
    """Text generation (Bedrock Converse or the offline extractive writer)."""

    provider: str

    def generate(self, request: GenerationRequest) -> Generation: ...


class Embedder(Protocol):
    """Text embeddings; vectors are L2-normalised, all of length ``dimensions``."""

    model_id: str
    dimensions: int

    def embed(self, text: str) -> list[float]: ...


class IntentClassifier(Protocol):
    model_name: str

    def classify(self, message: str, page_type: str, locale: str) -> IntentPrediction: ...


class Reranker(Protocol):
    version: str

    def score(self, query: str, documents: list[str]) -> list[float]:
        """One relevance score per document, higher is better."""
        ...


class RouteSource(Protocol):
    """The active route configuration (prompt versions, models), e.g. from AppConfig."""

    def current(self) -> RouteTable: ...


@dataclass(frozen=True, slots=True)
class Route:
    intent: str
    uses_bedrock: bool
    uses_retrieval: bool
    prompt_version: str
    model_id: str
    temperature: float = 0.2
    max_tokens: int = 512
    source_types: tuple[str, ...] = ()
    """Retrieval filter: the chunk source types this route may use (empty: all)."""
    max_chunks_per_series: int = 2
    """Diversity: at most this many final chunks about one series."""


@dataclass(frozen=True, slots=True)
class RouteTable:
    release_bundle: str
    config_version: str
    routes: dict[str, Route]

    def route_for(self, intent: str) -> Route:
        """The route of ``intent``; unknown intents fall back to ``faq``."""
        return self.routes.get(intent) or self.routes["faq"]


@dataclass(frozen=True, slots=True)
class Serving:
    """Everything one request is served with, read once at its start so a bundle switch never
    splits a request: the route table, the system prompts by label, the intent classifier and
    reranker the bundle configures, its retriever policy and guardrail ruleset (``None``: the
    shipped ones), the bundle's LoggedModel id (``""`` when no registered bundle is served) and
    its component URIs (trace tags ``component.<key>``)."""

    table: RouteTable
    prompts: Mapping[str, str]
    classifier: IntentClassifier
    reranker: Reranker
    policy: RetrievalPolicy | None = None
    ruleset: GuardrailRuleset | None = None
    logged_model_id: str = ""
    components: Mapping[str, str] = field(default_factory=dict)
    deployment_stage: str = ""
    """``prod``, ``canary`` or ``shadow`` when a rollout router chose this bundle; ``""``: the
    chatbot's configured ``MANGAASSIST_DEPLOYMENT_STAGE``."""
    cohort: str = ""
    """Rollout cohort of the session: ``canary``, ``control`` (prod, the judge's concurrent
    comparison group, as large as the canary) or ``""`` (everyone else, or no rollout)."""
