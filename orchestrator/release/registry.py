"""Registry layers and release bundles on MLflow 3.17's own objects (spec §12).

Objects (all found again by name, alias or tag, so ``bootstrap`` is idempotent):

======================================  ==============================================================
``manga-intent-classifier``,            external LoggedModel (params: endpoint and config, the offline
``manga-reranker``                      stand-in's id and source digest) -> registered model version,
                                        alias ``prod``
``ma-prompts.<route>``         one prompt per LLM-backed route in the prompt registry; the
                                        shipped template is its first version; aliases ``production``
                                        and ``candidate``
``mangaassist-rag-policy``,             external LoggedModels whose params are what the retriever and
``mangaassist-guardrails``              the guardrails read -> registered model versions, alias ``prod``
``mangaassist-chatbot-prod``            the release bundle: external LoggedModel
                                        (``model_type="release-bundle"``) whose params are the six
                                        component URIs (``prompt_pack`` is the JSON route -> prompt URI
                                        map, repeated as ``prompt.<route>`` params so a search can ask
                                        which bundles use a prompt version); one model version per
                                        bundle, model-version tag ``bundle_version``, aliases ``prod``
                                        and ``candidate``
======================================  ==============================================================

Each model version carries the tag ``mangaassist.params_digest`` (and its LoggedModel the same
tag): bootstrap looks a component up by that digest before creating anything, because
``register_model`` does not deduplicate. Bootstrap only *adds* aliases that do not exist yet; it
never moves one (moving ``prod`` is promotion, not bootstrap).

A bundle is *released* once it holds any alias other than ``candidate``; its params are then
sealed (:meth:`ReleaseRegistry.add_bundle_params` refuses). ``ModelVersion.model_id`` is ``None``
on the OSS registry, so a bundle's LoggedModel is found by parsing the version's ``source``
(``models:/m-…``).

The fluent APIs used (``create_external_model``, ``register_model``, ``genai.register_prompt``)
read MLflow's process-global tracking URI; every public method sets it for its own duration
(:func:`tracking_uri_scope`) and restores it, and the ``MLFLOW_TRACKING_URI`` variable that
``mlflow.set_tracking_uri`` rewrites, afterwards.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import mlflow
import mlflow.genai
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow.tracking._tracking_service import utils as _tracking_utils

from orchestrator.adapters import Providers, offline_providers
from orchestrator.adapters.base import Serving
from orchestrator.config import DEFAULT_RELEASE_BUNDLE, OrchestratorConfig, load
from orchestrator.release import components as comp
from orchestrator.release.components import BUNDLE_MODEL, COMPONENT_KEYS, MODEL_COMPONENTS, SETTABLE_KEYS, ModelSpec
from orchestrator.release.errors import ReleaseError as ReleaseError  # re-exported: the callers import it from here
from orchestrator.routes import DEFAULT_DOCUMENT, StaticRoutes

DEFAULT_EXPERIMENT = "mangaassist-local"
"""The traffic experiment when ``MLFLOW_EXPERIMENT_NAME`` is empty (the gateway's default): shadow
comparisons and canary runs are logged there, beside the traces they judge."""
MODELS_EXPERIMENT = "mangaassist-releases"
"""Where the LoggedModels live (``MANGAASSIST_RELEASE_EXPERIMENT``): not the traffic experiment,
because a LoggedModel's rights follow its experiment's and the gateway has EDIT on traffic (it could
tag a bundle kept there). ``search_traces(model_id=…)`` finds traces across experiments."""
DIGEST_TAG = "mangaassist.params_digest"
BUNDLE_VERSION_TAG = "bundle_version"
"""Model-version tag with the human-readable bundle version; the gateway accepts it or the number."""
FROM_TAG = "mangaassist.from_bundle"
COMPONENT_ALIAS = "prod"
PROMPT_ALIASES = ("production", "candidate")
BUNDLE_ALIASES = ("prod", "candidate")
CANDIDATE = "candidate"
CANARY_PERCENT_TAG = "canary.percent"
"""Model-version tag of the canary bundle: its share of sessions (``mangaassist-release stage``)."""
_BUNDLE_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,99}")
_MODEL_URI = re.compile(r"models:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))")
_PROMPT_URI = re.compile(r"prompts:/([^/@]+)(?:/(\d+)|@([A-Za-z0-9_-]+))")
_BEDROCK_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9.:_-]{0,199}")


@contextmanager
def tracking_uri_scope(uri: str) -> Iterator[None]:
    """Point MLflow's fluent APIs at ``uri`` for the block; restore the global and the env variable after.

    MLflow's own ``_use_tracking_uri`` restores the global but unsets ``MLFLOW_TRACKING_URI`` when
    the global was unset, which would send a later ``config.load()`` to the default database.
    """
    old_global: Any = _tracking_utils._tracking_uri  # str or None (unset)
    old_env = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(old_global)
        if old_env is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old_env


class SealedBundleError(ReleaseError):
    """The bundle is released (holds an alias other than ``candidate``): its params are sealed."""


class UnknownUriError(ReleaseError):
    """A component URI does not resolve to an existing model or prompt version."""


@dataclass(frozen=True, slots=True)
class Bundle:
    name: str
    version: int
    bundle_version: str
    aliases: tuple[str, ...]
    model_id: str
    components: dict[str, str]
    """The six component URIs; ``prompt_pack`` is the JSON of ``prompts``."""
    prompts: dict[str, str]
    tags: dict[str, str]

    @property
    def released(self) -> bool:
        return any(a != CANDIDATE for a in self.aliases)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "bundle_version": self.bundle_version,
            "aliases": list(self.aliases),
            "released": self.released,
            "model_id": self.model_id,
            "components": dict(self.components),
            "prompts": dict(self.prompts),
            "tags": dict(self.tags),
        }


@dataclass(slots=True)
class BootstrapReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    bundle: Bundle | None = None


def _not_found(exc: MlflowException) -> bool:
    return bool(exc.error_code == "RESOURCE_DOES_NOT_EXIST")


def _alias_missing(exc: MlflowException) -> bool:
    # An unknown alias on an existing model is INVALID_PARAMETER_VALUE ("Registered model alias prod not found.")
    return _not_found(exc) or (exc.error_code == "INVALID_PARAMETER_VALUE" and "alias" in str(exc).lower())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


class ReleaseRegistry:
    """Creates and reads the registry layers at one tracking URI (``sqlite:///`` or ``http(s)://``)."""

    def __init__(
        self,
        tracking_uri: str,
        experiment_name: str = DEFAULT_EXPERIMENT,
        progress: Callable[[str], None] = lambda _msg: None,
        models_experiment: str = MODELS_EXPERIMENT,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name or DEFAULT_EXPERIMENT
        self.models_experiment = models_experiment or MODELS_EXPERIMENT
        self._progress = progress
        self._client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None

    # -- plumbing ----------------------------------------------------------------------------

    @contextmanager
    def _mlflow(self) -> Iterator[MlflowClient]:
        with tracking_uri_scope(self.tracking_uri):
            yield self._client

    def _experiment(self) -> str:
        if self._experiment_id is None:
            self._experiment_id = self.ensure_experiment(self.models_experiment)
        return self._experiment_id

    def ensure_experiment(self, name: str) -> str:
        """The id of experiment ``name``, created when missing (embedded: artifacts next to the database)."""
        found = self._client.get_experiment_by_name(name)
        if found is not None:
            return str(found.experiment_id)
        location = None
        if self.tracking_uri.startswith("sqlite:///"):
            # Embedded: keep artifacts next to the database, not in the working directory.
            # sqlite:///relative.db or sqlite:////absolute.db (SQLAlchemy's convention)
            db = Path(unquote(self.tracking_uri.removeprefix("sqlite:///")).split("?", 1)[0])
            location = (db.parent.resolve() / "mlartifacts").as_uri()
        return str(self._client.create_experiment(name, location))

    @property
    def client(self) -> MlflowClient:
        """The MLflow client at this tracking URI (the lifecycle commands use it for tags and aliases)."""
        return self._client

    def alias_version(self, name: str, alias: str) -> int | None:
        """The version of ``name`` that holds ``alias``, or None when no version does."""
        return self._alias_version(name, alias)

    def _alias_version(self, name: str, alias: str) -> int | None:
        try:
            return int(self._client.get_model_version_by_alias(name, alias).version)
        except MlflowException as exc:
            if _alias_missing(exc):
                return None
            raise

    def _registered_model_exists(self, name: str) -> bool:
        try:
            self._client.get_registered_model(name)
        except MlflowException as exc:
            if _not_found(exc):
                return False
            raise
        return True

    # -- bootstrap -----------------------------------------------------------------------------

    def bootstrap(self, config: OrchestratorConfig, bundle_version: str = DEFAULT_RELEASE_BUNDLE) -> BootstrapReport:
        """Create every registry object from what the project ships; create nothing that exists."""
        report = BootstrapReport()
        with self._mlflow():
            uris: dict[str, str] = {}
            for key, spec in comp.model_specs(config).items():
                uris[key] = self._ensure_model(spec, report)
            prompts = {p.route: self._ensure_prompt(p, report) for p in comp.prompt_specs(config)}
            uris["bedrock_model_id"] = config.aws.bedrock_model_id
            params = _bundle_params(uris, prompts)
            version = self._ensure_bundle(params, bundle_version, report)
        report.bundle = self.bundle(str(version))
        return report

    def _ensure_model(self, spec: ModelSpec, report: BootstrapReport, alias: str | None = COMPONENT_ALIAS) -> str:
        c = self._client
        digest = spec.digest
        found = (
            c.search_model_versions(f"name = '{spec.name}' and tags.`{DIGEST_TAG}` = '{digest}'")
            if self._registered_model_exists(spec.name)
            else []
        )
        if found:
            version = min(int(mv.version) for mv in found)
            report.existing.append(f"models:/{spec.name}/{version}")
        else:
            model_id = self._find_or_create_logged_model(spec.name, spec.model_type, spec.params, digest)
            mv = mlflow.register_model(f"models:/{model_id}", spec.name, tags={DIGEST_TAG: digest})
            version = int(mv.version)
            report.created.append(f"models:/{spec.name}/{version}")
            self._progress(f"created models:/{spec.name}/{version} (LoggedModel {model_id})")
        if alias is not None and self._alias_version(spec.name, alias) is None:
            c.set_registered_model_alias(spec.name, alias, str(version))
            report.created.append(f"models:/{spec.name}@{alias}")
        return f"models:/{spec.name}/{version}"

    def _find_or_create_logged_model(self, name: str, model_type: str, params: dict[str, str], digest: str) -> str:
        """A LoggedModel left unregistered by an interrupted run is reused rather than duplicated."""
        eid = self._experiment()
        for lm in self._client.search_logged_models(
            [eid], filter_string=f"name = '{name}' AND tags.`{DIGEST_TAG}` = '{digest}'", max_results=10
        ):
            if not lm.tags.get("mlflow.modelVersions"):
                return str(lm.model_id)
        lm = mlflow.create_external_model(
            name=name, params=params, model_type=model_type, tags={DIGEST_TAG: digest}, experiment_id=eid
        )
        return str(lm.model_id)

    def _ensure_prompt(self, spec: comp.PromptSpec, report: BootstrapReport) -> str:
        c = self._client
        version: int | None = None
        if c.get_prompt(spec.name) is not None:
            for pv in c.search_prompt_versions(spec.name, max_results=1000):
                if pv.template == spec.template and (version is None or int(pv.version) < version):
                    version = int(pv.version)
        if version is not None:
            report.existing.append(f"prompts:/{spec.name}/{version}")
        else:
            pv = mlflow.genai.register_prompt(
                name=spec.name,
                template=spec.template,
                commit_message=f"shipped template {spec.shipped_version} (orchestrator/prompts.py)",
                tags={"mangaassist.route": spec.route},
            )
            version = int(pv.version)
            # per-version facts go on the version (register_prompt(tags=) also overwrites prompt-level tags)
            mlflow.genai.set_prompt_version_tag(spec.name, version, "mangaassist.shipped_as", spec.shipped_version)
            report.created.append(f"prompts:/{spec.name}/{version}")
            self._progress(f"created prompts:/{spec.name}/{version}")
        for alias in PROMPT_ALIASES:
            try:
                c.get_prompt_version_by_alias(spec.name, alias)
            except MlflowException as exc:
                if not _alias_missing(exc):
                    raise
                mlflow.genai.set_prompt_alias(spec.name, alias=alias, version=version)
                report.created.append(f"prompts:/{spec.name}@{alias}")
        return f"prompts:/{spec.name}/{version}"

    def _ensure_bundle(self, params: dict[str, str], bundle_version: str, report: BootstrapReport) -> int:
        _check_bundle_version(bundle_version)
        digest = comp.params_digest(params)
        found = (
            self._client.search_model_versions(f"name = '{BUNDLE_MODEL}' and tags.`{DIGEST_TAG}` = '{digest}'")
            if self._registered_model_exists(BUNDLE_MODEL)
            else []
        )
        if found:
            version = min(int(mv.version) for mv in found)
            report.existing.append(f"models:/{BUNDLE_MODEL}/{version}")
        else:
            if self._find_by_bundle_version(bundle_version) is not None:
                bundle_version = f"{bundle_version}+shipped.{digest[:8]}"
            version = self._create_bundle(params, bundle_version, digest, tags={})
            report.created.append(f"models:/{BUNDLE_MODEL}/{version}")
        for alias in BUNDLE_ALIASES:
            if self._alias_version(BUNDLE_MODEL, alias) is None:
                self._client.set_registered_model_alias(BUNDLE_MODEL, alias, str(version))
                report.created.append(f"models:/{BUNDLE_MODEL}@{alias}")
        return version

    def _create_bundle(self, params: dict[str, str], bundle_version: str, digest: str, tags: dict[str, str]) -> int:
        model_id = self._find_or_create_logged_model(BUNDLE_MODEL, "release-bundle", params, digest)
        self._client.set_logged_model_tags(model_id, {BUNDLE_VERSION_TAG: bundle_version, **tags})
        self._link_prompts(model_id, params)
        mv = mlflow.register_model(
            f"models:/{model_id}", BUNDLE_MODEL, tags={DIGEST_TAG: digest, BUNDLE_VERSION_TAG: bundle_version, **tags}
        )
        self._progress(f"created models:/{BUNDLE_MODEL}/{mv.version} bundle_version={bundle_version}")
        return int(mv.version)

    def _link_prompts(self, model_id: str, params: Mapping[str, str]) -> None:
        """The LoggedModel's ``mlflow.linkedPrompts`` tag, so the UI shows the bundle's prompt versions."""
        for uri in json.loads(params["prompt_pack"]).values():
            name, _, version = str(uri).removeprefix("prompts:/").rpartition("/")
            self._client.link_prompt_version_to_model(name, version, model_id)

    def _find_by_bundle_version(self, bundle_version: str) -> int | None:
        if not self._registered_model_exists(BUNDLE_MODEL):
            return None
        found = self._client.search_model_versions(
            f"name = '{BUNDLE_MODEL}' and tags.`{BUNDLE_VERSION_TAG}` = '{bundle_version}'"
        )
        return min((int(mv.version) for mv in found), default=None)

    # -- reading -------------------------------------------------------------------------------

    def resolve(self, alias: str) -> Bundle:
        """alias -> model version -> LoggedModel -> the six component URIs and per-route prompt URIs."""
        try:
            mv = self._client.get_model_version_by_alias(BUNDLE_MODEL, alias)
        except MlflowException as exc:
            if _alias_missing(exc):
                raise ReleaseError(f"no bundle holds alias {alias!r} on {BUNDLE_MODEL} (run bootstrap?)") from None
            raise
        return self._load(mv)

    def resolve_optional(self, alias: str) -> Bundle | None:
        """The bundle holding ``alias``, or ``None`` when no version holds it."""
        if self._alias_version(BUNDLE_MODEL, alias) is None:
            return None
        return self.resolve(alias)

    def bundle(self, ref: str) -> Bundle:
        """A bundle by registry version number (``3``) or by its ``bundle_version`` tag."""
        if ref.isdigit():
            try:
                return self._load(self._client.get_model_version(BUNDLE_MODEL, ref))
            except MlflowException as exc:
                if _not_found(exc):
                    raise ReleaseError(f"no version {ref} of {BUNDLE_MODEL}") from None
                raise
        _check_bundle_version(ref)
        version = self._find_by_bundle_version(ref)
        if version is None:
            raise ReleaseError(f"no version of {BUNDLE_MODEL} has {BUNDLE_VERSION_TAG}={ref!r}")
        return self._load(self._client.get_model_version(BUNDLE_MODEL, str(version)))

    def _load(self, mv: Any) -> Bundle:
        source = str(mv.source or "")
        if not source.startswith("models:/m-"):
            raise ReleaseError(f"{BUNDLE_MODEL} version {mv.version} has source {source!r}, not a bundle LoggedModel")
        model_id = source.removeprefix("models:/")
        lm = self._client.get_logged_model(model_id)
        params = dict(lm.params)
        missing = [k for k in COMPONENT_KEYS if k not in params]
        if missing:
            raise ReleaseError(f"bundle {BUNDLE_MODEL}/{mv.version} lacks params: {', '.join(missing)}")
        prompts = json.loads(params["prompt_pack"])
        drift = [r for r, uri in prompts.items() if params.get(f"prompt.{r}") != uri]
        if drift:
            raise ReleaseError(f"bundle {BUNDLE_MODEL}/{mv.version}: prompt_pack and prompt.<route> disagree: {drift}")
        tags = dict(mv.tags)
        return Bundle(
            name=BUNDLE_MODEL,
            version=int(mv.version),
            bundle_version=tags.get(BUNDLE_VERSION_TAG, ""),
            aliases=tuple(sorted(mv.aliases)),
            model_id=model_id,
            components={k: params[k] for k in COMPONENT_KEYS},
            prompts=dict(sorted(prompts.items())),
            tags=tags,
        )

    # -- candidates and sealing ---------------------------------------------------------------------

    def register(
        self,
        from_alias: str = "prod",
        set: Mapping[str, str] | None = None,  # the CLI's --set
        set_prompt: Mapping[str, str] | None = None,
        bundle_version: str | None = None,
    ) -> Bundle:
        """A candidate bundle: ``from_alias``'s components with ``set``/``set_prompt`` replaced, alias ``candidate``.

        Every URI must resolve; ``models:/NAME@ALIAS`` and ``prompts:/NAME@ALIAS`` are pinned to the
        version the alias names now. All problems are reported at once, before anything is created.
        """
        base = self.resolve(from_alias)
        components = dict(base.components)
        prompts = dict(base.prompts)
        problems: list[str] = []
        for key, uri in (set or {}).items():
            if key not in SETTABLE_KEYS:
                hint = " (use --set-prompt ROUTE=URI)" if key.startswith("prompt") else ""
                problems.append(f"unknown component {key!r}{hint}; one of {', '.join(SETTABLE_KEYS)}")
                continue
            resolved = self._resolve_bedrock(uri) if key == "bedrock_model_id" else self._resolve_model(uri)
            if resolved.startswith("error: "):
                problems.append(f"{key}={uri}: {resolved.removeprefix('error: ')}")
            else:
                components[key] = resolved
        for route, uri in (set_prompt or {}).items():
            if route not in prompts:
                problems.append(f"unknown route {route!r}; one of {', '.join(sorted(prompts))}")
                continue
            resolved = self._resolve_prompt(uri)
            if resolved.startswith("error: "):
                problems.append(f"{route}={uri}: {resolved.removeprefix('error: ')}")
            else:
                prompts[route] = resolved
        if bundle_version is not None:
            _check_bundle_version(bundle_version)
            if self._find_by_bundle_version(bundle_version) is not None:
                problems.append(f"{BUNDLE_VERSION_TAG} {bundle_version!r} already names a bundle")
        if problems:
            raise UnknownUriError("; ".join(problems))
        params = _bundle_params(components, prompts)
        digest = comp.params_digest(params)
        tags = {FROM_TAG: f"{base.version}"}
        with self._mlflow():
            # a fresh LoggedModel per candidate, even when its params equal an older bundle's
            lm = mlflow.create_external_model(
                name=BUNDLE_MODEL,
                params=params,
                model_type="release-bundle",
                tags={DIGEST_TAG: digest, **tags},
                experiment_id=self._experiment(),
            )
            self._link_prompts(lm.model_id, params)
            mv = mlflow.register_model(f"models:/{lm.model_id}", BUNDLE_MODEL, tags={DIGEST_TAG: digest, **tags})
            version = str(mv.version)
            label = bundle_version or f"{base.bundle_version or 'bundle'}+{version}"
            _check_bundle_version(label)
            self._client.set_model_version_tag(BUNDLE_MODEL, version, BUNDLE_VERSION_TAG, label)
            self._client.set_logged_model_tags(lm.model_id, {BUNDLE_VERSION_TAG: label})
            self._client.set_registered_model_alias(BUNDLE_MODEL, CANDIDATE, version)
        self._progress(f"created candidate models:/{BUNDLE_MODEL}/{version} bundle_version={label} from {from_alias}")
        return self.bundle(version)

    def add_bundle_params(self, ref: str, params: Mapping[str, str]) -> Bundle:
        """Add new params to an unreleased bundle; refuse on a released (sealed) one or on an existing key."""
        bundle = self.bundle(ref)
        if bundle.released:
            others = ", ".join(a for a in bundle.aliases if a != CANDIDATE)
            raise SealedBundleError(
                f"bundle {BUNDLE_MODEL}/{bundle.version} ({bundle.bundle_version}) is released (alias {others}): "
                "its params are sealed; register a new candidate instead"
            )
        lm = self._client.get_logged_model(bundle.model_id)
        clash = sorted(k for k in params if k in lm.params)
        if clash:
            raise ReleaseError(
                f"bundle {BUNDLE_MODEL}/{bundle.version} already has params {clash} (params are immutable)"
            )
        self._client.log_model_params(bundle.model_id, dict(params))
        return self.bundle(str(bundle.version))

    def set_bundle_tags(self, bundle: Bundle, tags: Mapping[str, str]) -> None:
        """Set tags on the bundle's model version (e.g. ``eval.offline``, ``eval.offline.run_id``)."""
        for key, value in tags.items():
            self._client.set_model_version_tag(BUNDLE_MODEL, str(bundle.version), key, value)

    def prompt_templates(self, bundle: Bundle) -> dict[str, tuple[str, str]]:
        """Route -> (prompt label ``NAME/VERSION``, template), loaded with ``mlflow.genai.load_prompt``.

        Inside an active run, ``load_prompt`` also links each prompt version to that run.
        """
        out: dict[str, tuple[str, str]] = {}
        with self._mlflow():
            for route, uri in sorted(bundle.prompts.items()):
                prompt = mlflow.genai.load_prompt(uri)
                template = prompt.template
                if not isinstance(template, str):
                    raise ReleaseError(f"prompt {uri} is a chat prompt; the chatbot's system prompts are text")
                out[route] = (f"{prompt.name}/{prompt.version}", template)
        return out

    def component_params(self, uri: str) -> dict[str, str]:
        """The params of the LoggedModel behind ``models:/NAME/VERSION`` (a component version)."""
        pinned = self._resolve_model(uri)
        if pinned.startswith("error:"):
            raise UnknownUriError(f"{uri}: {pinned.removeprefix('error: ')}")
        name, _, version = pinned.removeprefix("models:/").partition("/")
        source = str(self._client.get_model_version(name, version).source or "")
        if not source.startswith("models:/m-"):
            raise ReleaseError(f"{pinned} has source {source!r}, not a LoggedModel")
        return dict(self._client.get_logged_model(source.removeprefix("models:/")).params)

    def derive_component(self, name: str, from_ref: str, changes: Mapping[str, str]) -> str:
        """A new version of component ``name`` (a registered model of :data:`MODEL_COMPONENTS`):
        the params of version (or alias) ``from_ref`` with ``changes`` applied, checked by the
        code that will read them. Returns its ``models:/NAME/VERSION``; no alias moves. The same
        params again return the existing version (found by digest)."""
        from orchestrator.guardrails import GuardrailRuleset
        from orchestrator.retrieval import RetrievalPolicy

        if name not in MODEL_COMPONENTS.values():
            raise ReleaseError(f"{name!r} is not a component model ({', '.join(MODEL_COMPONENTS.values())})")
        base_uri = f"models:/{name}/{from_ref}" if from_ref.isdigit() else f"models:/{name}@{from_ref}"
        params = self.component_params(base_uri)
        # A new key is accepted in an open family (a new prompt_injection.<rule id>), not elsewhere.
        unknown = sorted(k for k in set(changes) - set(params) if not k.startswith("prompt_injection."))
        if unknown:
            raise ReleaseError(
                f"{name} has no param {', '.join(unknown)} (`mangaassist-release component --name {name}` lists them)"
            )
        params.update(changes)
        try:
            if name == comp.RETRIEVER_POLICY_MODEL:
                RetrievalPolicy.from_params(params)
            elif name == comp.GUARDRAIL_MODEL:
                GuardrailRuleset.from_params(params)
        except ValueError as exc:
            raise ReleaseError(str(exc)) from None
        spec = ModelSpec(name, comp.model_type(name), params)
        report = BootstrapReport()
        with self._mlflow():
            version = self._ensure_model(spec, report, alias=None)
        return version

    # -- URI validation ---------------------------------------------------------------------------

    def _resolve_model(self, uri: str) -> str:
        m = _MODEL_URI.fullmatch(uri)
        if not m:
            return "error: not a models:/NAME/VERSION or models:/NAME@ALIAS URI"
        name, version, alias = m.groups()
        try:
            mv = (
                self._client.get_model_version(name, version)
                if version
                else self._client.get_model_version_by_alias(name, alias)
            )
        except MlflowException as exc:
            if _not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
                return f"error: no such model version ({_one_line(exc)})"
            raise
        return f"models:/{name}/{mv.version}"

    def _resolve_prompt(self, uri: str) -> str:
        m = _PROMPT_URI.fullmatch(uri)
        if not m:
            return "error: not a prompts:/NAME/VERSION or prompts:/NAME@ALIAS URI"
        name, version, alias = m.groups()
        try:
            pv = (
                self._client.get_prompt_version(name, version)
                if version
                else self._client.get_prompt_version_by_alias(name, alias)
            )
        except MlflowException as exc:
            if _not_found(exc) or exc.error_code == "INVALID_PARAMETER_VALUE":
                return f"error: no such prompt version ({_one_line(exc)})"
            raise
        if pv is None:
            return "error: no such prompt version"
        return f"prompts:/{name}/{pv.version}"

    @staticmethod
    def _resolve_bedrock(model_id: str) -> str:
        # Not checked against Bedrock (offline): only its shape.
        return model_id if _BEDROCK_ID.fullmatch(model_id) else "error: not a Bedrock model id"


def _bundle_params(uris: Mapping[str, str], prompts: Mapping[str, str]) -> dict[str, str]:
    params = {k: uris[k] for k in COMPONENT_KEYS if k != "prompt_pack"}
    params["prompt_pack"] = json.dumps(dict(sorted(prompts.items())), separators=(",", ":"))
    params.update({f"prompt.{route}": uri for route, uri in sorted(prompts.items())})
    assert set(COMPONENT_KEYS) <= set(params) and set(MODEL_COMPONENTS) <= set(params)
    return params


def _check_bundle_version(value: str) -> None:
    if not _BUNDLE_VERSION.fullmatch(value) or value.isdigit():
        raise ReleaseError(
            f"bundle version {value!r} must match {_BUNDLE_VERSION.pattern} and not be a plain number "
            "(a plain number is the registry's own version)"
        )


def _route_document(bundle: Bundle, prompts: dict[str, tuple[str, str]], policy: Mapping[str, str]) -> dict[str, Any]:
    """The shipped route document with each of the bundle's routes naming its prompt label and
    model id, and every route's retrieval filters taken from the bundle's retriever policy
    (params ``route.<intent>.uses_retrieval|source_types|max_chunks_per_series``)."""
    document = copy.deepcopy(DEFAULT_DOCUMENT)
    routes = document["routes"]
    for route, (label, _template) in prompts.items():
        if route not in routes:
            raise ReleaseError(f"bundle {bundle.version} has a prompt for unknown route {route!r}")
        routes[route]["prompt_version"] = label
        routes[route]["model_id"] = bundle.components["bedrock_model_id"]
    for intent, route_doc in routes.items():
        prefix = f"route.{intent}."
        if prefix + "uses_retrieval" not in policy:
            raise ReleaseError(f"retriever policy {bundle.components['retriever_policy']} has no {prefix}* params")
        route_doc["uses_retrieval"] = policy[prefix + "uses_retrieval"] == "true"
        types = policy.get(prefix + "source_types", "any")
        route_doc["source_types"] = [] if types == "any" else types.split(",")
        route_doc["max_chunks_per_series"] = int(policy.get(prefix + "max_chunks_per_series", "2"))
    document["release_bundle"] = bundle.bundle_version or str(bundle.version)
    document["version"] = f"{bundle.name}/{bundle.version}"
    return document


def providers_for_bundle(
    registry: ReleaseRegistry, bundle: Bundle, config: OrchestratorConfig | None = None
) -> tuple[Providers, dict[str, tuple[str, str]]]:
    """Offline :class:`~orchestrator.adapters.Providers` serving ``bundle`` exactly as the chatbot
    serves its export (the same document through the same :func:`~orchestrator.bundle_file.parse_bundle`):
    its per-route prompts from the prompt registry, its model id, the classifier and reranker its
    component versions configure, its retriever policy and guardrail ruleset. Also returns the
    route -> (prompt label, template) map."""
    from orchestrator.bundle_file import parse_bundle

    config = config or load({})
    prompts = registry.prompt_templates(bundle)
    document = export_bundle(registry, bundle, prompts)
    base = offline_providers(config)
    try:
        served = parse_bundle(document, base, config.aws.bedrock_model_id)
    except ValueError as exc:
        raise ReleaseError(f"bundle {bundle.version} cannot be served by this build: {exc}") from None
    providers = dataclasses.replace(
        base, routes=StaticRoutes(served.table), prompts=served.prompts, bundle=_Fixed(served.serving)
    )
    return providers, prompts


@dataclass(frozen=True)
class _Fixed:
    """A bundle source that always serves one bundle (evaluation)."""

    fixed: Serving

    def serving(self, session_id: str = "") -> Serving:
        return self.fixed


def export_bundle(
    registry: ReleaseRegistry,
    bundle: Bundle,
    prompts: dict[str, tuple[str, str]] | None = None,
    alias: str | None = None,
) -> dict[str, Any]:
    """The bundle as the document the chatbot serves (``orchestrator.bundle_file``): the route
    document (:func:`_route_document`), the prompt templates by label (from the prompt registry),
    the component URIs, the params of the four component model versions and the LoggedModel id.
    Exported for ``alias="canary"``, it also carries the step (``rollout``: the model-version tag
    ``canary.percent`` and the salt ``mangaassist-chatbot-prod/<version>``)."""
    from orchestrator.bundle_file import FORMAT, MODEL_COMPONENT_KEYS

    prompts = prompts if prompts is not None else registry.prompt_templates(bundle)
    params = {key: registry.component_params(bundle.components[key]) for key in MODEL_COMPONENT_KEYS}
    document = _route_document(bundle, prompts, params["retriever_policy"])
    return {
        "format": FORMAT,
        "bundle_version": document["release_bundle"],
        "model_version": str(bundle.version),
        "logged_model_id": bundle.model_id,
        "components": bundle.components,
        "component_params": params,
        "routes": document,
        "prompts": {label: template for label, template in prompts.values()},
        **({"rollout": _rollout(bundle)} if alias == "canary" else {}),
    }


def _rollout(bundle: Bundle) -> dict[str, Any]:
    raw = bundle.tags.get(CANARY_PERCENT_TAG, "0")
    try:
        percent = float(raw)
    except ValueError:
        raise ReleaseError(f"bundle {bundle.version}: tag {CANARY_PERCENT_TAG}={raw!r} is not a number") from None
    if not 0 <= percent <= 100:
        raise ReleaseError(f"bundle {bundle.version}: tag {CANARY_PERCENT_TAG}={raw!r} is outside [0, 100]")
    return {"percent": percent, "salt": f"{bundle.name}/{bundle.version}"}
