"""What the project ships, as registry params: read from the code that really runs.

Pure (no MLflow): each function returns the ``params`` of one registry object, taken from the
constants, defaults and class attributes the request path reads, so a code change shows up as a
different params digest and ``bootstrap`` registers a new version instead of silently reusing
the old one.

- hosted models: the SageMaker endpoint name (``MANGAASSIST_INTENT_ENDPOINT`` /
  ``MANGAASSIST_RERANKER_ENDPOINT``) and the offline stand-in's id plus a digest of its source
  (and of the cue table the keyword classifier reads);
- retriever policy: ``Retriever``'s constructor defaults (``candidates_k``, ``final_k``), the
  fusion constant, the embedding model, and per route the ``source_types`` filter, whether the
  route retrieves, and ``max_chunks_per_series`` (from the shipped route document);
- guardrail ruleset: the stage order, every prompt-injection rule, the PII patterns, the
  grounding thresholds and the format limits;
- prompts: one template per LLM-backed route (``orchestrator/prompts.py``'s ``SYSTEM_PROMPTS``
  entry that the shipped route document names).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Mapping
from dataclasses import dataclass

from orchestrator import guardrails, retrieval
from orchestrator.adapters import offline_models
from orchestrator.config import OrchestratorConfig
from orchestrator.prompts import SYSTEM_PROMPTS
from orchestrator.routes import DEFAULT_DOCUMENT, parse_routes

INTENT_MODEL = "manga-intent-classifier"
RERANKER_MODEL = "manga-reranker"
RETRIEVER_POLICY_MODEL = "mangaassist-rag-policy"
GUARDRAIL_MODEL = "mangaassist-guardrails"
BUNDLE_MODEL = "mangaassist-chatbot-prod"
PROMPT_PREFIX = "ma-prompts."
"""Prompt names are ``ma-prompts.<route>``: MLflow's prompt-name rule is
``^[a-zA-Z0-9_.-]+$`` (``mlflow/prompt/constants.py``), so the dot is accepted and keeps the pack
name visible as a prefix, while ``/`` (URI separator) and ``@`` (alias separator) are not
allowed. Prompts share the registered-model namespace, so no registered model may use these names.
The pack's prefix is short because MLflow 3.17 stores a trace's prompt link ``<name>/<version>`` in a
36-character column that PostgreSQL enforces: ``ma-prompts.product_question/999`` is 31 characters,
``mangaassist-prompts.product_question/1`` was 38 and could not be linked on a PostgreSQL server."""

COMPONENT_KEYS = (
    "intent_classifier",
    "reranker",
    "prompt_pack",
    "bedrock_model_id",
    "retriever_policy",
    "guardrail_ruleset",
)
"""The six bundle components: the bundle LoggedModel's params carry one URI (or id) each."""
MODEL_COMPONENTS = {
    "intent_classifier": INTENT_MODEL,
    "reranker": RERANKER_MODEL,
    "retriever_policy": RETRIEVER_POLICY_MODEL,
    "guardrail_ruleset": GUARDRAIL_MODEL,
}
"""Components that are registered models (``models:/NAME/VERSION``), with the model bootstrap creates."""
SETTABLE_KEYS = tuple(k for k in COMPONENT_KEYS if k != "prompt_pack")
"""What ``register --set KEY=URI`` accepts; the prompt pack changes one route at a time (``--set-prompt``)."""
SETTABLE_KEYS_HELP = """\
--set keys:
  intent_classifier   models:/manga-intent-classifier/VERSION (or @ALIAS)
  reranker            models:/manga-reranker/VERSION
  retriever_policy    models:/mangaassist-rag-policy/VERSION
  guardrail_ruleset   models:/mangaassist-guardrails/VERSION
  bedrock_model_id    a Bedrock model id, e.g. anthropic.claude-3-5-haiku-20241022-v1:0 (shape checked only)
--set-prompt routes: the bundle's prompt routes (see `show`), URI prompts:/ma-prompts.ROUTE/VERSION (or @ALIAS)
"""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    model_type: str
    params: dict[str, str]

    @property
    def digest(self) -> str:
        return params_digest(self.params)


@dataclass(frozen=True, slots=True)
class PromptSpec:
    route: str
    name: str
    template: str
    shipped_version: str  # the key in orchestrator/prompts.py's SYSTEM_PROMPTS


def params_digest(params: Mapping[str, str]) -> str:
    return hashlib.sha256(json.dumps(dict(params), sort_keys=True).encode()).hexdigest()[:16]


def _source_digest(*objects: object) -> str:
    h = hashlib.sha256()
    for obj in objects:
        h.update(inspect.getsource(obj).encode() if inspect.isclass(obj) else json.dumps(obj, sort_keys=True).encode())
    return h.hexdigest()[:16]


def intent_classifier(config: OrchestratorConfig) -> ModelSpec:
    clf = offline_models.KeywordIntentClassifier
    return ModelSpec(
        INTENT_MODEL,
        model_type(INTENT_MODEL),
        {
            "endpoint_name": config.aws.intent_endpoint,
            "providers": config.providers,
            "region": config.aws.region,
            "offline.model_name": clf.model_name,
            "offline.model_id": clf.model_version,
            "offline.page_prior": json.dumps(offline_models._PAGE_PRIOR, sort_keys=True),
            "offline.source_sha256": _source_digest(clf, offline_models._CUES),
        },
    )


def reranker(config: OrchestratorConfig) -> ModelSpec:
    rr = offline_models.OverlapReranker
    return ModelSpec(
        RERANKER_MODEL,
        model_type(RERANKER_MODEL),
        {
            "endpoint_name": config.aws.reranker_endpoint,
            "providers": config.providers,
            "region": config.aws.region,
            "offline.model_id": rr.version,
            "offline.source_sha256": _source_digest(rr),
        },
    )


def retriever_policy(config: OrchestratorConfig) -> ModelSpec:
    table = parse_routes(DEFAULT_DOCUMENT, config.aws.bedrock_model_id, config.release_bundle)
    embedding = (
        config.aws.embedding_model_id
        if config.providers == "aws"
        else offline_models.HashingEmbedder(config.aws.embedding_dimensions).model_id
    )
    params = {
        **retrieval.RetrievalPolicy().params(),
        "embedding_model": embedding,
        "embedding_dimensions": str(config.aws.embedding_dimensions),
        "routes_document": str(DEFAULT_DOCUMENT.get("version", "unversioned")),
    }
    for intent, route in sorted(table.routes.items()):
        params[f"route.{intent}.uses_retrieval"] = str(route.uses_retrieval).lower()
        params[f"route.{intent}.source_types"] = ",".join(route.source_types) or "any"
        params[f"route.{intent}.max_chunks_per_series"] = str(route.max_chunks_per_series)
    return ModelSpec(RETRIEVER_POLICY_MODEL, model_type(RETRIEVER_POLICY_MODEL), params)


def guardrail_ruleset() -> ModelSpec:
    """The shipped ruleset's params: exactly what :class:`guardrails.GuardrailRuleset` reads back."""
    return ModelSpec(GUARDRAIL_MODEL, model_type(GUARDRAIL_MODEL), guardrails.GuardrailRuleset().params())


def model_type(name: str) -> str:
    """The LoggedModel ``model_type`` of component model ``name``."""
    return {
        INTENT_MODEL: "hosted-model",
        RERANKER_MODEL: "hosted-model",
        RETRIEVER_POLICY_MODEL: "retriever-policy",
        GUARDRAIL_MODEL: "guardrail-ruleset",
    }[name]


def model_specs(config: OrchestratorConfig) -> dict[str, ModelSpec]:
    """Component key -> what bootstrap registers for it."""
    return {
        "intent_classifier": intent_classifier(config),
        "reranker": reranker(config),
        "retriever_policy": retriever_policy(config),
        "guardrail_ruleset": guardrail_ruleset(),
    }


def prompt_specs(config: OrchestratorConfig) -> list[PromptSpec]:
    """One prompt per LLM-backed route of the shipped route document, in route order."""
    table = parse_routes(DEFAULT_DOCUMENT, config.aws.bedrock_model_id, config.release_bundle)
    specs = []
    for intent, route in sorted(table.routes.items()):
        if route.uses_bedrock:
            specs.append(
                PromptSpec(intent, PROMPT_PREFIX + intent, SYSTEM_PROMPTS[route.prompt_version], route.prompt_version)
            )
    return specs
