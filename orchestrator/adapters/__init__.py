"""Provider adapters: interfaces in ``base``, AWS implementations in ``aws_*`` (the only
modules importing boto3), offline deterministic ones in ``offline_*``.

``build_providers(config)`` picks the set named by ``MANGAASSIST_PROVIDERS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from orchestrator.adapters.base import Embedder, Generator, IntentClassifier, Reranker, RouteSource, Serving
from orchestrator.config import OrchestratorConfig, load


class BundleSource(Protocol):
    """A served release bundle (``orchestrator.bundle_file.BundleFile``)."""

    def serving(self, session_id: str = "") -> Serving: ...


@dataclass(frozen=True, slots=True)
class Providers:
    generator: Generator
    embedder: Embedder
    classifier: IntentClassifier
    reranker: Reranker
    routes: RouteSource
    kind: str
    prompts: Mapping[str, str] = field(default_factory=dict)
    """System prompts by prompt version; empty: the shipped ``orchestrator.prompts.SYSTEM_PROMPTS``."""
    bundle: BundleSource | None = None
    """The served release bundle, when one is (``MANGAASSIST_BUNDLE_FILE`` or ``_DIR``); it then
    supplies routes, prompts, classifier, reranker, retriever policy and guardrail ruleset."""

    def serving(self, session_id: str = "") -> Serving:
        """What the next request (of ``session_id``) is served with: one consistent read."""
        if self.bundle is not None:
            return self.bundle.serving(session_id)
        return Serving(self.routes.current(), self.prompts, self.classifier, self.reranker)


def _served_bundle(providers: Providers, config: OrchestratorConfig) -> Providers:
    """``providers`` serving an exported release bundle: ``MANGAASSIST_BUNDLE_FILE``, or
    ``MANGAASSIST_BUNDLE_DIR/<MANGAASSIST_RELEASE_ALIAS>.json`` (what ``mangaassist-release
    follow`` writes), when either is set. Serving ``prod`` from the directory goes through the
    canary router (``orchestrator.rollout.router``): while ``canary.json`` exists, its step's share
    of sessions is served the canary."""
    path = config.bundle_path
    if not path:
        return providers
    import dataclasses

    from orchestrator.bundle_file import BundleFile

    if not config.bundle_file and config.release_alias == "prod":
        # Serving prod from the follower's directory: a canary there gets its share of sessions.
        from orchestrator.rollout.router import Router

        router = Router(config.bundle_dir, providers, config.aws.bedrock_model_id, config.bundle_refresh_s)
        return dataclasses.replace(providers, routes=router, prompts=router.prompts, bundle=router)
    served = BundleFile(path, providers, config.aws.bedrock_model_id, config.bundle_refresh_s)
    return dataclasses.replace(providers, routes=served, prompts=served.prompts, bundle=served)


def offline_providers(config: OrchestratorConfig | None = None) -> Providers:
    from orchestrator.adapters.offline_generator import ExtractiveGenerator
    from orchestrator.adapters.offline_models import HashingEmbedder, KeywordIntentClassifier, OverlapReranker
    from orchestrator.routes import StaticRoutes

    config = config or load({})
    providers = Providers(
        generator=ExtractiveGenerator(),
        embedder=HashingEmbedder(config.aws.embedding_dimensions),
        classifier=KeywordIntentClassifier(),
        reranker=OverlapReranker(),
        routes=StaticRoutes.default(config.aws.bedrock_model_id, config.release_bundle),
        kind="offline",
    )
    return _served_bundle(providers, config)


def aws_providers(config: OrchestratorConfig) -> Providers:
    from orchestrator.adapters.aws_appconfig import AppConfigRoutes
    from orchestrator.adapters.aws_bedrock import BedrockEmbedder, BedrockGenerator
    from orchestrator.adapters.aws_sagemaker import SageMakerIntentClassifier, SageMakerReranker

    aws = config.aws
    common = (aws.region, aws.timeout_s, aws.max_attempts)
    providers = Providers(
        generator=BedrockGenerator.create(*common),
        embedder=BedrockEmbedder.create(*common, aws.embedding_model_id, aws.embedding_dimensions),
        classifier=SageMakerIntentClassifier.create(*common, aws.intent_endpoint),
        reranker=SageMakerReranker.create(*common, aws.reranker_endpoint),
        routes=AppConfigRoutes.create(
            *common,
            aws.appconfig_application,
            aws.appconfig_environment,
            aws.appconfig_profile,
            aws.bedrock_model_id,
            config.release_bundle,
        ),
        kind="aws",
    )
    return _served_bundle(providers, config)


def build_providers(config: OrchestratorConfig) -> Providers:
    return aws_providers(config) if config.providers == "aws" else offline_providers(config)
