"""Serving a release bundle without MLflow on the request path.

``mangaassist-release export --alias prod --out FILE`` (once) or ``mangaassist-release follow
--dir DIR`` (every interval, one file per alias) resolves the alias in MLflow's registry and
writes the bundle as one JSON document (``FORMAT``): its route table (each route's prompt label,
model id and, from the retriever policy, its retrieval filters), the prompt templates by label,
the six component URIs, the params of the four component model versions (intent classifier,
reranker, retriever policy, guardrail ruleset) and the bundle's LoggedModel id.

The chatbot reads that file (``MANGAASSIST_BUNDLE_FILE``, or ``MANGAASSIST_BUNDLE_DIR/
<MANGAASSIST_RELEASE_ALIAS>.json``) and serves all of it: prompts, model id, the classifier and
reranker the component versions configure, the retriever policy and the guardrail ruleset. It
checks the file for a new export every ``MANGAASSIST_BUNDLE_REFRESH_S`` (10 s): an alias move
reaches running pods within the follow interval plus that refresh. A file that cannot be read or
does not validate is refused with a warning and the last good bundle keeps serving, so a
registry outage or a bad export never takes the chatbot down.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.base import IntentClassifier, Reranker, RouteTable, Serving
from orchestrator.guardrails import GuardrailRuleset
from orchestrator.retrieval import RetrievalPolicy
from orchestrator.routes import RouteConfigError, parse_routes

if TYPE_CHECKING:
    from orchestrator.adapters import Providers

FORMAT = "mangaassist-bundle/2"
MODEL_COMPONENT_KEYS = ("intent_classifier", "reranker", "retriever_policy", "guardrail_ruleset")
_LOGGED_MODEL_ID = re.compile(r"m-[0-9a-f]{32}")
log = logging.getLogger(__name__)


class BundleFileError(ValueError):
    """The bundle file cannot be served (unreadable, not JSON, wrong format, bad routes)."""


@dataclass(frozen=True)
class Rollout:
    """A canary step as exported with the ``canary`` alias: the share of sessions (``percent``)
    and the salt of their assignment (``orchestrator.rollout.router``)."""

    percent: float
    salt: str


@dataclass(frozen=True)
class ServedBundle:
    bundle_version: str
    model_version: str
    table: RouteTable
    prompts: Mapping[str, str]
    serving: Serving
    rollout: Rollout | None = None


def _rollout(document: Mapping[str, Any]) -> Rollout | None:
    raw = document.get("rollout")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise BundleFileError("'rollout' must be an object {percent, salt}")
    percent, salt = raw.get("percent"), raw.get("salt")
    if isinstance(percent, bool) or not isinstance(percent, (int, float)) or not 0 <= percent <= 100:
        raise BundleFileError(f"'rollout.percent' must be a number in [0, 100], got {percent!r}")
    if not isinstance(salt, str) or not salt:
        raise BundleFileError("'rollout.salt' must be a non-empty string")
    return Rollout(float(percent), salt)


def _configured(base: Any, params: Mapping[str, str], what: str) -> Any:
    configure = getattr(base, "configured", None)
    if configure is None:
        raise BundleFileError(f"{what}: {type(base).__name__} cannot be configured by a bundle")
    try:
        return configure(params)
    except ValueError as exc:
        raise BundleFileError(str(exc)) from None


def parse_bundle(document: Mapping[str, Any], base: Providers, default_model_id: str) -> ServedBundle:
    """Validate an exported bundle and build what it serves on ``base``'s providers."""
    if document.get("format") != FORMAT:
        raise BundleFileError(f"not a {FORMAT} document (format={document.get('format')!r})")
    prompts = document.get("prompts")
    if not isinstance(prompts, Mapping) or not all(isinstance(v, str) and v for v in prompts.values()):
        raise BundleFileError("'prompts' must map each prompt label to its template text")
    version = str(document.get("bundle_version") or "")
    if not version:
        raise BundleFileError("'bundle_version' is missing")
    try:
        table = parse_routes(document.get("routes") or {}, default_model_id, version)
    except RouteConfigError as exc:
        raise BundleFileError(str(exc)) from None
    missing = sorted(
        {r.prompt_version for r in table.routes.values() if r.uses_bedrock and r.prompt_version not in prompts}
    )
    if missing:
        raise BundleFileError(f"routes name prompts the file does not hold: {', '.join(missing)}")
    logged_model_id = str(document.get("logged_model_id") or "")
    if not _LOGGED_MODEL_ID.fullmatch(logged_model_id):
        raise BundleFileError(f"'logged_model_id' {logged_model_id!r} is not a LoggedModel id (m-<32 hex>)")
    components = document.get("components")
    if not isinstance(components, Mapping) or not all(isinstance(v, str) for v in components.values()):
        raise BundleFileError("'components' must map each component to its URI")
    raw = document.get("component_params")
    if not isinstance(raw, Mapping) or set(raw) != set(MODEL_COMPONENT_KEYS):
        raise BundleFileError(f"'component_params' must hold exactly {', '.join(MODEL_COMPONENT_KEYS)}")
    params: dict[str, dict[str, str]] = {}
    for key in MODEL_COMPONENT_KEYS:
        value = raw[key]
        if not isinstance(value, Mapping) or not all(isinstance(v, str) for v in value.values()):
            raise BundleFileError(f"'component_params.{key}' must map param names to strings")
        params[key] = dict(value)
    try:
        policy = RetrievalPolicy.from_params(params["retriever_policy"])
        ruleset = GuardrailRuleset.from_params(params["guardrail_ruleset"])
    except ValueError as exc:
        raise BundleFileError(str(exc)) from None
    embedding = params["retriever_policy"].get("embedding_model")
    if embedding != base.embedder.model_id:
        raise BundleFileError(
            f"retriever policy: embedding_model {embedding!r} is not the one the index is built with "
            f"({base.embedder.model_id!r})"
        )
    classifier: IntentClassifier = _configured(base.classifier, params["intent_classifier"], "intent classifier")
    reranker: Reranker = _configured(base.reranker, params["reranker"], "reranker")
    prompts = dict(prompts)
    serving = Serving(
        table,
        prompts,
        classifier,
        reranker,
        policy,
        ruleset,
        logged_model_id,
        {k: str(v) for k, v in components.items() if k != "prompt_pack"},
    )
    return ServedBundle(version, str(document.get("model_version", "")), table, prompts, serving, _rollout(document))


def read_bundle(path: str, base: Providers, default_model_id: str) -> ServedBundle:
    """Read and validate one exported bundle file; :class:`BundleFileError` names the file and why."""
    try:
        with open(path, encoding="utf-8") as f:
            document = json.load(f)
    except (OSError, ValueError) as exc:
        raise BundleFileError(f"{path}: {exc.__class__.__name__}: {exc}") from None
    if not isinstance(document, Mapping):
        raise BundleFileError(f"{path}: not a JSON object")
    try:
        return parse_bundle(document, base, default_model_id)
    except BundleFileError as exc:
        raise BundleFileError(f"{path}: {exc}") from None


class BundleFile:
    """A route source (``current()``) and a live prompt mapping (``prompts``) over one exported
    bundle file, re-read when it changes. Thread-safe; the check costs one ``stat`` per refresh."""

    def __init__(
        self, path: str, base: Providers, default_model_id: str, refresh_s: float, clock: Any = time.monotonic
    ) -> None:
        self.path = path
        self._base = base
        self._default_model_id = default_model_id
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp = self._stat()
        self._served = self._read()  # the first read must succeed: there is nothing else to serve
        self._checked = clock()
        self.prompts: Mapping[str, str] = _LivePrompts(self)

    def _stat(self) -> tuple[int, int]:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            raise BundleFileError(f"{self.path}: cannot read it ({exc.strerror})") from None
        return st.st_mtime_ns, st.st_size

    def _read(self) -> ServedBundle:
        return read_bundle(self.path, self._base, self._default_model_id)

    def served(self) -> ServedBundle:
        now = self._clock()
        with self._lock:
            if now - self._checked < self._refresh_s:
                return self._served
            self._checked = now
            try:
                stamp = self._stat()
                if stamp != self._stamp:
                    served = self._read()
                    was = self._served.bundle_version
                    log.info("bundle file re-read: now serving %s (was %s)", served.bundle_version, was)
                    self._served, self._stamp = served, stamp
            except BundleFileError as exc:
                log.warning("bundle file refused (%s); still serving %s", exc, self._served.bundle_version)
            return self._served

    def current(self) -> RouteTable:
        return self.served().table

    def serving(self, session_id: str = "") -> Serving:
        return self.served().serving


class OptionalBundleFile:
    """An exported bundle that may come and go (``canary.json``, ``shadow.json``): ``served()`` is
    ``None`` while the file does not exist; a file that appears is read at the next refresh; one that
    does not validate is refused with a warning and the last good one (or ``None``) stays."""

    def __init__(
        self, path: str, base: Providers, default_model_id: str, refresh_s: float, clock: Any = time.monotonic
    ) -> None:
        self.path = path
        self._base = base
        self._default_model_id = default_model_id
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._served: ServedBundle | None = None
        self._checked = -float("inf")

    def served(self) -> ServedBundle | None:
        now = self._clock()
        with self._lock:
            if now - self._checked < self._refresh_s:
                return self._served
            self._checked = now
            try:
                st = os.stat(self.path)
            except FileNotFoundError:
                if self._served is not None:
                    log.info("bundle file %s removed: no longer serving %s", self.path, self._served.bundle_version)
                self._served, self._stamp = None, None
                return None
            except OSError as exc:
                log.warning("bundle file %s cannot be checked (%s)", self.path, exc.strerror)
                return self._served
            stamp = (st.st_mtime_ns, st.st_size)
            if stamp != self._stamp:
                try:
                    served = read_bundle(self.path, self._base, self._default_model_id)
                except BundleFileError as exc:
                    log.warning("bundle file refused (%s)", exc)
                else:
                    log.info("bundle file %s read: %s", self.path, served.bundle_version)
                    self._served = served
                self._stamp = stamp
            return self._served


class _LivePrompts(Mapping[str, str]):
    def __init__(self, source: BundleFile) -> None:
        self._source = source

    def __getitem__(self, key: str) -> str:
        return self._source.served().prompts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._source.served().prompts)

    def __len__(self) -> int:
        return len(self._source.served().prompts)
