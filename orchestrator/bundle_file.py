"""Serving a release bundle without MLflow on the request path.

``mangaassist-release export --alias prod --out FILE`` resolves the alias in MLflow's registry
and writes the bundle as one JSON document (``FORMAT``): its route table (each route's prompt
label and model id), the prompt templates by label, and the component URIs. The chatbot reads
that file (``MANGAASSIST_BUNDLE_FILE``) and checks it for a new export every
``MANGAASSIST_BUNDLE_REFRESH_S`` (10 s): an alias move reaches running pods within the export
interval plus that refresh. A file that cannot be read or does not validate is refused with a
warning and the last good bundle keeps serving, so a registry outage or a bad export never takes
the chatbot down.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from orchestrator.adapters.base import RouteTable
from orchestrator.routes import RouteConfigError, parse_routes

FORMAT = "mangaassist-bundle/1"
log = logging.getLogger(__name__)


class BundleFileError(ValueError):
    """The bundle file cannot be served (unreadable, not JSON, wrong format, bad routes)."""


@dataclass(frozen=True)
class ServedBundle:
    bundle_version: str
    model_version: str
    table: RouteTable
    prompts: Mapping[str, str]


def parse_bundle(document: Mapping[str, Any], default_model_id: str) -> ServedBundle:
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
    return ServedBundle(version, str(document.get("model_version", "")), table, dict(prompts))


class BundleFile:
    """A route source (``current()``) and a live prompt mapping (``prompts``) over one exported
    bundle file, re-read when it changes. Thread-safe; the check costs one ``stat`` per refresh."""

    def __init__(self, path: str, default_model_id: str, refresh_s: float, clock: Any = time.monotonic) -> None:
        self.path = path
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
        try:
            with open(self.path, encoding="utf-8") as f:
                document = json.load(f)
        except (OSError, ValueError) as exc:
            raise BundleFileError(f"{self.path}: {exc.__class__.__name__}: {exc}") from None
        if not isinstance(document, Mapping):
            raise BundleFileError(f"{self.path}: not a JSON object")
        return parse_bundle(document, self._default_model_id)

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


class _LivePrompts(Mapping[str, str]):
    def __init__(self, source: BundleFile) -> None:
        self._source = source

    def __getitem__(self, key: str) -> str:
        return self._source.served().prompts[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._source.served().prompts)

    def __len__(self) -> int:
        return len(self._source.served().prompts)
