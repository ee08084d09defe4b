"""Orchestrator configuration: the only orchestrator module that reads the environment.

``load(os.environ)`` parses every variable once into frozen dataclasses nested by concern and
raises :class:`ConfigError` listing every problem at once. Variables (defaults in brackets):

=================================== ======================================================
``MANGAASSIST_ENV``                 deployment environment name [``dev``]
``MANGAASSIST_REGION``              AWS region of Bedrock, SageMaker, AppConfig [``us-east-1``]
``MANGAASSIST_PROVIDERS``           ``offline`` (shipped deterministic providers) or ``aws`` [``offline``]
``MANGAASSIST_DEPLOYMENT_STAGE``    ``dev``, ``prod``, ``canary`` or ``shadow`` (trace tag) [``dev``]
``MANGAASSIST_RELEASE_BUNDLE``      release bundle served when route config names none [``2026.11.20-rc1``]
``MANGAASSIST_HOST`` / ``_PORT``    HTTP API listen address [``127.0.0.1`` / ``8080``]
``MANGAASSIST_BEDROCK_MODEL_ID``    default generation model [Claude 3.5 Haiku]
``MANGAASSIST_EMBEDDING_MODEL_ID``  Bedrock embedding model [``amazon.titan-embed-text-v2:0``]
``MANGAASSIST_EMBEDDING_DIMENSIONS`` Titan v2 output size: 256, 512 or 1024 [256]
``MANGAASSIST_INTENT_ENDPOINT``     SageMaker intent classifier endpoint [``manga-intent-classifier``]
``MANGAASSIST_RERANKER_ENDPOINT``   SageMaker reranker endpoint [``manga-reranker``]
``MANGAASSIST_APPCONFIG_APPLICATION`` / ``_ENVIRONMENT`` / ``_PROFILE``
                                    AppConfig route configuration [``mangaassist`` / env / ``routes``]
``MANGAASSIST_AWS_MAX_ATTEMPTS``    attempts per AWS call on throttling [3]
``MANGAASSIST_AWS_TIMEOUT_S``       read timeout of AWS calls [10]
``MANGAASSIST_CACHE_TTL_S``         response cache entry lifetime [300]
``MANGAASSIST_CACHE_MAX_ENTRIES``   response cache size [2000]
``TRACEGW_CLIENT_TARGET``           gateway sidecar gRPC address [``127.0.0.1:4317``]
``MLFLOW_EXPERIMENT_NAME``          MLflow experiment for the traces [the gateway's default]
=================================== ======================================================
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_MODEL_ID = "anthropic.claude-3-5-haiku-20241022-v1:0"
DEFAULT_RELEASE_BUNDLE = "2026.11.20-rc1"
PROVIDERS = ("offline", "aws")
DEPLOYMENT_STAGES = ("dev", "prod", "canary", "shadow")
TITAN_DIMENSIONS = (256, 512, 1024)


class ConfigError(ValueError):
    """The environment holds invalid settings; the message lists every problem."""


@dataclass(frozen=True, slots=True)
class AwsConfig:
    region: str = "us-east-1"
    bedrock_model_id: str = DEFAULT_MODEL_ID
    embedding_model_id: str = "amazon.titan-embed-text-v2:0"
    embedding_dimensions: int = 256
    intent_endpoint: str = "manga-intent-classifier"
    reranker_endpoint: str = "manga-reranker"
    appconfig_application: str = "mangaassist"
    appconfig_environment: str = "dev"
    appconfig_profile: str = "routes"
    max_attempts: int = 3
    timeout_s: float = 10.0


@dataclass(frozen=True, slots=True)
class CacheConfig:
    ttl_s: float = 300.0
    max_entries: int = 2000


@dataclass(frozen=True, slots=True)
class ApiConfig:
    host: str = "127.0.0.1"
    port: int = 8080


@dataclass(frozen=True, slots=True)
class TracingConfig:
    gateway_target: str = "127.0.0.1:4317"
    experiment_name: str = ""


@dataclass(frozen=True, slots=True)
class OrchestratorConfig:
    env: str = "dev"
    providers: str = "offline"
    deployment_stage: str = "dev"
    release_bundle: str = DEFAULT_RELEASE_BUNDLE
    aws: AwsConfig = field(default_factory=AwsConfig)
    cache: CacheConfig = field(default_factory=CacheConfig)
    api: ApiConfig = field(default_factory=ApiConfig)
    tracing: TracingConfig = field(default_factory=TracingConfig)

    def validate(self) -> list[str]:
        """Every problem with this configuration (empty when valid)."""
        problems: list[str] = []
        if self.providers not in PROVIDERS:
            problems.append(f"MANGAASSIST_PROVIDERS must be one of {'|'.join(PROVIDERS)}, got {self.providers!r}")
        if self.deployment_stage not in DEPLOYMENT_STAGES:
            problems.append(f"MANGAASSIST_DEPLOYMENT_STAGE must be one of {'|'.join(DEPLOYMENT_STAGES)}, "
                            f"got {self.deployment_stage!r}")
        for name, value in (("MANGAASSIST_ENV", self.env), ("MANGAASSIST_REGION", self.aws.region),
                            ("MANGAASSIST_RELEASE_BUNDLE", self.release_bundle),
                            ("MANGAASSIST_BEDROCK_MODEL_ID", self.aws.bedrock_model_id),
                            ("MANGAASSIST_EMBEDDING_MODEL_ID", self.aws.embedding_model_id),
                            ("MANGAASSIST_INTENT_ENDPOINT", self.aws.intent_endpoint),
                            ("MANGAASSIST_RERANKER_ENDPOINT", self.aws.reranker_endpoint),
                            ("TRACEGW_CLIENT_TARGET", self.tracing.gateway_target)):
            if not value.strip():
                problems.append(f"{name} must not be empty")
        if self.aws.embedding_dimensions not in TITAN_DIMENSIONS:
            problems.append(f"MANGAASSIST_EMBEDDING_DIMENSIONS must be one of {TITAN_DIMENSIONS}, "
                            f"got {self.aws.embedding_dimensions}")
        if self.aws.max_attempts < 1:
            problems.append(f"MANGAASSIST_AWS_MAX_ATTEMPTS must be >= 1, got {self.aws.max_attempts}")
        if not self.aws.timeout_s > 0:
            problems.append(f"MANGAASSIST_AWS_TIMEOUT_S must be > 0, got {self.aws.timeout_s}")
        if self.cache.ttl_s < 0:
            problems.append(f"MANGAASSIST_CACHE_TTL_S must be >= 0, got {self.cache.ttl_s}")
        if self.cache.max_entries < 0:
            problems.append(f"MANGAASSIST_CACHE_MAX_ENTRIES must be >= 0, got {self.cache.max_entries}")
        if not 0 <= self.api.port <= 65535:
            problems.append(f"MANGAASSIST_PORT must be in 0..65535, got {self.api.port}")
        return problems


def load(environ: Mapping[str, str] | None = None) -> OrchestratorConfig:
    """Parse the environment (``os.environ`` by default); raise :class:`ConfigError` on any problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    def text(name: str, default: str) -> str:
        return env.get(name, "").strip() or default

    def number(name: str, default: float, kind: type[int] | type[float]) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            return kind(raw)
        except ValueError:
            problems.append(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}")
            return default

    env_name = text("MANGAASSIST_ENV", "dev")
    config = OrchestratorConfig(
        env=env_name,
        providers=text("MANGAASSIST_PROVIDERS", "offline").lower(),
        deployment_stage=text("MANGAASSIST_DEPLOYMENT_STAGE", "dev").lower(),
        release_bundle=text("MANGAASSIST_RELEASE_BUNDLE", DEFAULT_RELEASE_BUNDLE),
        aws=AwsConfig(
            region=text("MANGAASSIST_REGION", "us-east-1"),
            bedrock_model_id=text("MANGAASSIST_BEDROCK_MODEL_ID", DEFAULT_MODEL_ID),
            embedding_model_id=text("MANGAASSIST_EMBEDDING_MODEL_ID", "amazon.titan-embed-text-v2:0"),
            embedding_dimensions=int(number("MANGAASSIST_EMBEDDING_DIMENSIONS", 256, int)),
            intent_endpoint=text("MANGAASSIST_INTENT_ENDPOINT", "manga-intent-classifier"),
            reranker_endpoint=text("MANGAASSIST_RERANKER_ENDPOINT", "manga-reranker"),
            appconfig_application=text("MANGAASSIST_APPCONFIG_APPLICATION", "mangaassist"),
            appconfig_environment=text("MANGAASSIST_APPCONFIG_ENVIRONMENT", env_name),
            appconfig_profile=text("MANGAASSIST_APPCONFIG_PROFILE", "routes"),
            max_attempts=int(number("MANGAASSIST_AWS_MAX_ATTEMPTS", 3, int)),
            timeout_s=float(number("MANGAASSIST_AWS_TIMEOUT_S", 10.0, float)),
        ),
        cache=CacheConfig(ttl_s=float(number("MANGAASSIST_CACHE_TTL_S", 300.0, float)),
                          max_entries=int(number("MANGAASSIST_CACHE_MAX_ENTRIES", 2000, int))),
        api=ApiConfig(host=text("MANGAASSIST_HOST", "127.0.0.1"), port=int(number("MANGAASSIST_PORT", 8080, int))),
        tracing=TracingConfig(gateway_target=text("TRACEGW_CLIENT_TARGET", "127.0.0.1:4317"),
                              experiment_name=env.get("MLFLOW_EXPERIMENT_NAME", "").strip()),
    )
    problems.extend(config.validate())
    if problems:
        raise ConfigError("invalid orchestrator configuration: " + "; ".join(problems))
    return config
