"""Release bundle events → what they change on the bundle's MLflow run.

Each (bundle name, version) has one run in the bundle experiment, found by its tags
``bundle.name`` and ``bundle.version``. Registration pins component versions as tags;
evaluations add metrics ``<stage>.<metric>`` and verdict tags; sign-offs, promotion and
rollback set lifecycle tags. Every event leaves ``event.<event_id>`` so a re-delivered event
is recognisable (writes are idempotent: tags and metrics are overwritten with equal values).
This module is pure; the writers apply its output through MLflow's runs API.
"""

from __future__ import annotations

import re

from gateway.model import BundleRecord

NAME_TAG = "bundle.name"
VERSION_TAG = "bundle.version"
# What decode lets through for names and versions (``decode_events.BUNDLE_KEY``); checked
# again here because these values go into an MLflow search filter.
_FILTER_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:/-]{0,127}")


VERSION_TAG_KEY = "bundle_version"
"""The model-version tag that names a bundle version (``2026.11.26-rc3``) beside the registry's
own version number: a bundle event may name either."""


def version_filter(name: str, version: str) -> str:
    """The model-version search that finds bundle version ``version`` of registered model ``name``."""
    for value in (name, version):
        if not _FILTER_SAFE.fullmatch(value):
            raise ValueError("a bundle name or version holds characters a filter cannot carry")
    return f"name = '{name}' and tags.`{VERSION_TAG_KEY}` = '{version}'"


def run_filter(identity: dict[str, str]) -> str:
    """The MLflow filter string that finds the bundle's run. Values are never spliced in raw:
    anything outside the plain charset (a quote, a backtick, a space) is refused."""
    for key, value in identity.items():
        if not (_FILTER_SAFE.fullmatch(key) and _FILTER_SAFE.fullmatch(value)):
            raise ValueError(f"bundle identity {key!r} holds characters a filter cannot carry")
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in identity.items())


def run_identity(record: BundleRecord) -> tuple[str, dict[str, str]]:
    """The run name and identifying tags of the bundle's run."""
    return (
        f"{record.bundle_name}@{record.bundle_version}",
        {NAME_TAG: record.bundle_name, VERSION_TAG: record.bundle_version},
    )


def updates(record: BundleRecord) -> tuple[dict[str, float], dict[str, str]]:
    """(metrics, tags) that ``record`` sets on the bundle's run."""
    d = record.details
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {f"event.{record.event_id}": record.kind}
    if record.actor_id:
        tags[f"{record.kind}.actor_id"] = record.actor_id
    if record.recorded_by:  # who the gateway authenticated, whatever actor_id claims
        tags[f"{record.kind}.recorded_by"] = record.recorded_by
    if record.note:
        tags[f"{record.kind}.note"] = record.note
    if record.kind == "registered":
        for key, value in (d.get("components") or {}).items():
            tags[f"component.{key}"] = str(value)
        tags["lifecycle.status"] = "registered"
    elif record.kind == "evaluated":
        stage = str(d.get("stage", "EVALUATION_STAGE_UNSPECIFIED")).removeprefix("EVALUATION_STAGE_").lower()
        for name, value in (d.get("metrics") or {}).items():
            metrics[f"{stage}.{name}"] = float(value)
        verdict = str(d.get("verdict", "")).removeprefix("EVALUATION_VERDICT_").lower()
        tags[f"eval.{stage}.verdict"] = verdict or "unspecified"
        for key in ("dataset_version", "run_id", "traffic_percent"):
            if d.get(key) not in (None, ""):
                tags[f"eval.{stage}.{key}"] = str(d[key])
    elif record.kind == "signed_off":
        area = str(d.get("area", "")).removeprefix("SIGN_OFF_AREA_").lower() or "unspecified"
        tags[f"signoff.{area}"] = str(d.get("approver_id", ""))
    elif record.kind == "promoted":
        tags["lifecycle.status"] = "promoted"
        if d.get("previous_version"):
            tags["lifecycle.previous_version"] = str(d["previous_version"])
    elif record.kind == "rolled_back":
        tags["lifecycle.status"] = "rolled_back"
        tags["lifecycle.rolled_back_to"] = str(d.get("to_version", ""))
        if d.get("reason"):
            tags["lifecycle.rollback_reason"] = str(d["reason"])
    return metrics, tags
