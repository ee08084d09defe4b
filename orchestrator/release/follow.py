"""``mangaassist-release follow``: keep one exported bundle per alias in a directory.

The chatbot never talks to MLflow (its request path imports no mlflow); it serves
``MANGAASSIST_BUNDLE_DIR/<MANGAASSIST_RELEASE_ALIAS>.json``. This loop is what keeps those files
true: every ``interval`` seconds it resolves each alias of ``mangaassist-chatbot-prod`` (default
``prod``, ``canary``, ``shadow``), exports the bundle it names (:func:`export_bundle`) and
replaces the alias's file atomically when the export changed. An alias that is no longer set has
its file removed (except ``prod``, which is never removed: a chatbot must always have something to
serve). When MLflow cannot be reached the files are left as they are and the round is retried, so
a registry outage never changes what the chatbot serves.

Staleness: an alias move reaches a chatbot within ``interval`` (this loop) plus
``MANGAASSIST_BUNDLE_REFRESH_S`` (the chatbot's check), 10 s + 10 s by default.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from orchestrator.release.registry import ReleaseError, ReleaseRegistry, export_bundle

DEFAULT_ALIASES = ("prod", "canary", "shadow")
NEVER_REMOVED = "prod"


def write_atomically(path: str | Path, text: str) -> None:
    """Readers see the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".bundle-", suffix=".json")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


@dataclass
class RoundReport:
    written: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unset: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def follow_once(registry: ReleaseRegistry, directory: Path, aliases: Sequence[str]) -> RoundReport:
    """One round: export every alias; an MLflow failure on one alias leaves its file untouched."""
    report = RoundReport()
    directory.mkdir(parents=True, exist_ok=True)
    for alias in aliases:
        path = directory / f"{alias}.json"
        try:
            bundle = registry.resolve_optional(alias)
            if bundle is None:
                if path.exists() and alias != NEVER_REMOVED:
                    path.unlink()
                    report.removed.append(alias)
                else:
                    report.unset.append(alias)
                continue
            text = (
                json.dumps(export_bundle(registry, bundle, alias=alias), indent=2, ensure_ascii=False, sort_keys=True)
                + "\n"
            )
        except (ReleaseError, OSError) as exc:
            report.errors.append(f"{alias}: {exc}")
            continue
        except Exception as exc:  # MLflow unreachable or failing: keep serving what is there
            report.errors.append(f"{alias}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
            continue
        try:
            same = path.read_text(encoding="utf-8") == text
        except OSError:
            same = False
        if same:
            report.unchanged.append(alias)
        else:
            write_atomically(path, text)
            report.written.append(f"{alias} -> bundle {bundle.version} ({bundle.bundle_version})")
    return report


def follow(
    registry: ReleaseRegistry,
    directory: Path,
    aliases: Sequence[str],
    interval_s: float,
    progress: Callable[[str], None],
    stop: threading.Event,
    max_rounds: int | None = None,
) -> int:
    """Rounds every ``interval_s`` until ``stop`` is set (or ``max_rounds``); exit status 0, or 2 when
    the last round had errors."""
    rounds, errors = 0, False
    while not stop.is_set():
        report = follow_once(registry, directory, aliases)
        rounds += 1
        for line in report.written:
            progress(f"wrote {line}")
        for alias in report.removed:
            progress(f"alias {alias} is not set: removed {alias}.json")
        for line in report.errors:
            progress(f"could not export {line} (its file is left as it was; retrying)")
        errors = bool(report.errors)
        if max_rounds is not None and rounds >= max_rounds:
            break
        stop.wait(interval_s)
    return 2 if errors else 0
