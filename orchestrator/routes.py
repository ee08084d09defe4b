"""Route configuration: which intents use Bedrock and retrieval, with which prompt and model.

The same JSON document shape is served by AppConfig (``aws_appconfig``) and shipped as the
offline default (``DEFAULT_DOCUMENT``)::

    {"release_bundle": "2026.11.20-rc1", "version": "routes-14",
     "routes": {"recommendation": {"uses_bedrock": true, "uses_retrieval": true,
                                   "prompt_version": "recommendation-2.4", "model_id": "...",
                                   "temperature": 0.4, "max_tokens": 600,
                                   "source_types": ["product_description", "review_summary"]}, ...}}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from orchestrator.adapters.base import Route, RouteTable
from orchestrator.config import DEFAULT_MODEL_ID

INTENTS = ("product_question", "recommendation", "order_status", "return_policy", "faq", "small_talk")
PRODUCT_SOURCES = ["product_description", "review_summary"]

DEFAULT_DOCUMENT: dict[str, Any] = {
    "version": "routes-offline-1",
    "routes": {
        "product_question": {
            "uses_bedrock": True,
            "uses_retrieval": True,
            "prompt_version": "product-qa-3.1",
            "temperature": 0.1,
            "max_tokens": 400,
            "source_types": [*PRODUCT_SOURCES, "faq"],
        },
        "recommendation": {
            "uses_bedrock": True,
            "uses_retrieval": True,
            "prompt_version": "recommendation-2.4",
            "temperature": 0.4,
            "max_tokens": 600,
            "source_types": PRODUCT_SOURCES,
            "max_chunks_per_series": 1,
        },
        "return_policy": {
            "uses_bedrock": True,
            "uses_retrieval": True,
            "prompt_version": "policy-qa-1.7",
            "temperature": 0.0,
            "max_tokens": 400,
            "source_types": ["policy", "faq"],
        },
        "faq": {
            "uses_bedrock": True,
            "uses_retrieval": True,
            "prompt_version": "faq-2.0",
            "temperature": 0.1,
            "max_tokens": 400,
            "source_types": ["faq", "policy"],
        },
        "order_status": {
            "uses_bedrock": False,
            "uses_retrieval": True,
            "prompt_version": "none",
            "source_types": ["policy", "faq"],
        },
        "small_talk": {"uses_bedrock": False, "uses_retrieval": False, "prompt_version": "none"},
    },
}


class RouteConfigError(ValueError):
    """A route document is malformed; the message lists every problem."""


def parse_routes(document: Mapping[str, Any], default_model_id: str, default_bundle: str) -> RouteTable:
    """Validate a route document and build the table; raise :class:`RouteConfigError` listing every problem."""
    problems: list[str] = []
    raw_routes = document.get("routes")
    if not isinstance(raw_routes, Mapping):
        raise RouteConfigError("route config: 'routes' must be an object")
    routes: dict[str, Route] = {}
    for intent, raw in raw_routes.items():
        if not isinstance(raw, Mapping):
            problems.append(f"routes.{intent} must be an object")
            continue
        uses_bedrock = bool(raw.get("uses_bedrock", False))
        prompt_version = str(raw.get("prompt_version") or "none")
        if uses_bedrock and prompt_version == "none":
            problems.append(f"routes.{intent}.prompt_version is required on an LLM-backed route")
        try:
            temperature = float(raw.get("temperature", 0.2))
            max_tokens = int(raw.get("max_tokens", 512))
        except (TypeError, ValueError):
            problems.append(f"routes.{intent}: temperature and max_tokens must be numbers")
            continue
        if not 0.0 <= temperature <= 1.0:
            problems.append(f"routes.{intent}.temperature must be in 0..1")
        if max_tokens < 1:
            problems.append(f"routes.{intent}.max_tokens must be >= 1")
        routes[str(intent)] = Route(
            intent=str(intent),
            uses_bedrock=uses_bedrock,
            uses_retrieval=bool(raw.get("uses_retrieval", False)),
            prompt_version=prompt_version,
            model_id=str(raw.get("model_id") or default_model_id) if uses_bedrock else "none",
            temperature=temperature,
            max_tokens=max_tokens,
            source_types=tuple(str(s) for s in raw.get("source_types", ())),
            max_chunks_per_series=int(raw.get("max_chunks_per_series", 2)),
        )
    missing = [i for i in INTENTS if i not in routes]
    if missing:
        problems.append(f"routes missing for intents: {', '.join(missing)}")
    if problems:
        raise RouteConfigError("route config: " + "; ".join(problems))
    return RouteTable(
        release_bundle=str(document.get("release_bundle") or default_bundle),
        config_version=str(document.get("version", "unversioned")),
        routes=routes,
    )


class StaticRoutes:
    """The offline route source: one fixed table."""

    def __init__(self, table: RouteTable) -> None:
        self._table = table

    @classmethod
    def default(cls, model_id: str = DEFAULT_MODEL_ID, release_bundle: str = "2026.11.20-rc1") -> StaticRoutes:
        return cls(parse_routes(DEFAULT_DOCUMENT, model_id, release_bundle))

    def current(self) -> RouteTable:
        return self._table
