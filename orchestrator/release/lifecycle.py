"""Promotion gates, sign-offs, stage moves, promotion and rollback of release bundles (spec §12, §13, §15).

Aliases on ``mangaassist-chatbot-prod``: ``candidate`` (``register``), ``shadow`` and ``canary``
(:meth:`Lifecycle.stage`; the canary's traffic share is the model-version tag ``canary.percent``),
``prod`` and ``prod-previous`` (:meth:`Lifecycle.promote`, :meth:`Lifecycle.rollback`).

Where each fact lives (every stamp is ``{"by", "at", ...}`` JSON written by this tool):

=========================================  =====================================================
bundle model version, ``eval.offline``     ``passed``/``failed`` with ``eval.offline.run_id`` (written
                                           by ``evaluate``)
bundle model version, ``eval.shadow``,     ``passed``/``failed``, ``eval.<stage>.run_id`` (optional),
``eval.canary``                            ``eval.<stage>.stamp`` (who, when, reason, percent)
prompt version ``ma-prompts.R/N``  ``signoff.prompt.bundle.<V>``: a prompt owner signed
                                           that version for bundle version ``V``
guardrail model version                    ``signoff.guardrail.bundle.<V>``: a guardrail owner signed
``mangaassist-guardrails/N``               that ruleset for bundle ``V``
bundle model version, ``promoted``,        who promoted it and from which version; who rolled it
``rolled_back``                            back, to which version, and why
=========================================  =====================================================

MLflow records no author of a tag (research note §3). A sign-off is trusted because of *where* it
is written: with the basic-auth server (:mod:`orchestrator.release.rights`) only a prompt's owners
can write its version tags and only guardrail owners the ruleset's, while release owners, who
move the aliases, can write neither. The stamp's ``by`` is the authenticated MLflow user
(``MLFLOW_TRACKING_USERNAME``); embedded (``sqlite:///``) has no users and no rights, so it stamps
``local:<os user>``, and such a stamp does not count when the user checking the gates is an
authenticated MLflow user (it was written past the server's rights, straight into its database).

Gates of :meth:`Lifecycle.gates` (all must be ``passed`` for ``promote``): ``not-prod``,
``offline-eval`` (``eval.offline=passed`` and its run exists), ``shadow``, ``canary``,
``prompt-signoff:<route>`` for each route whose prompt version differs from prod's, and
``guardrail-signoff`` when the guardrail ruleset differs from prod's.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import Any

from mlflow.environment_variables import MLFLOW_TRACKING_USERNAME
from mlflow.exceptions import MlflowException

from orchestrator.release.components import BUNDLE_MODEL, GUARDRAIL_MODEL
from orchestrator.release.registry import Bundle, ReleaseError, ReleaseRegistry

PROD = "prod"
PROD_PREVIOUS = "prod-previous"
STAGES = ("shadow", "canary")
LIFECYCLE_ALIASES = ("candidate", "shadow", "canary", "prod", "prod-previous")
CANARY_PERCENT_TAG = "canary.percent"
PROMOTED_TAG = "promoted"
ROLLED_BACK_TAG = "rolled_back"
AREAS = ("prompt", "guardrail")
PASSED, MISSING, FAILED = "passed", "missing", "failed"
_MODEL_VERSION_URI = re.compile(r"models:/([^/@]+)/(\d+)")
_PROMPT_VERSION_URI = re.compile(r"prompts:/([^/@]+)/(\d+)")


class GatesNotMet(ReleaseError):
    """``promote`` refused: at least one gate is not passed (exit status 1, every unmet gate listed)."""

    def __init__(self, report: GateReport) -> None:
        self.report = report
        super().__init__(f"bundle {report.bundle.version} cannot be promoted: {len(report.unmet)} gates not passed")


class PermissionRefused(ReleaseError):
    """MLflow answered 401 or 403: the user lacks the right (the message names it and the grant)."""


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def actor(tracking_uri: str) -> str:
    """Who acts: the authenticated MLflow user, or ``local:<os user>`` for embedded (no users, no rights)."""
    user = str(MLFLOW_TRACKING_USERNAME.get() or "").strip()  # type: ignore[no-untyped-call]
    if tracking_uri.startswith(("http://", "https://")) and user:
        return user
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return f"local:{name}"


@contextmanager
def credentials_checked(user: str) -> Iterator[None]:
    """Turn a 401 anywhere in a step (and a 403 no narrower check named) into one line about the user."""
    try:
        yield
    except MlflowException as exc:
        code = str(exc.error_code)
        if code == "UNAUTHENTICATED":
            raise PermissionRefused(
                f"MLflow did not accept the credentials of user {user!r} (HTTP 401): "
                "check MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD"
            ) from None
        if code == "PERMISSION_DENIED":
            raise PermissionRefused(
                f"MLflow refused a request (HTTP 403) for user {user!r}: {_first_line(exc)}"
            ) from None
        raise


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


def signoff_key(area: str, bundle_version: int) -> str:
    return f"signoff.{area}.bundle.{bundle_version}"


@dataclass(frozen=True, slots=True)
class Gate:
    name: str
    state: str
    """``passed``, ``missing`` or ``failed``."""
    detail: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def line(self) -> str:
        return f"{self.name}: {self.state} - {self.detail}"

    def to_json(self) -> dict[str, Any]:
        return {"gate": self.name, "state": self.state, "detail": self.detail, "evidence": dict(self.evidence)}


@dataclass(frozen=True, slots=True)
class SignOff:
    area: str
    component: str
    """The version the owners signed (``prompts:/…/N`` or ``models:/mangaassist-guardrails/N``)."""
    stamp: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"area": self.area, "component": self.component, **self.stamp}


@dataclass(frozen=True, slots=True)
class GateReport:
    bundle: Bundle
    prod_version: int | None
    gates: tuple[Gate, ...]
    signoffs: tuple[SignOff, ...]

    @property
    def unmet(self) -> list[Gate]:
        return [g for g in self.gates if g.state != PASSED]

    @property
    def passed(self) -> bool:
        return not self.unmet

    def to_json(self) -> dict[str, Any]:
        return {
            "compared_with_prod": self.prod_version,
            "promotable": self.passed,
            "gates": [g.to_json() for g in self.gates],
            "signoffs": [s.to_json() for s in self.signoffs],
        }


@dataclass(frozen=True, slots=True)
class Promotion:
    bundle: Bundle
    previous: Bundle | None
    report: GateReport


@dataclass(frozen=True, slots=True)
class Rollback:
    from_bundle: Bundle
    to_bundle: Bundle
    reason: str


class Lifecycle:
    """The lifecycle steps on one :class:`ReleaseRegistry`; every write names the right it needs."""

    def __init__(self, registry: ReleaseRegistry, progress: Callable[[str], None] = lambda _m: None) -> None:
        self.registry = registry
        self._c = registry.client
        self._progress = progress
        self.actor = actor(registry.tracking_uri)
        self.authenticated = not self.actor.startswith("local:")
        """The acting user is an MLflow user (basic-auth); then a ``local:`` stamp does not count."""

    # -- rights ---------------------------------------------------------------------------------

    @contextmanager
    def _needs(self, action: str, right: str, role: str) -> Iterator[None]:
        """Turn MLflow's 401/403 into one line naming the missing right and the grant that gives it."""
        try:
            yield
        except MlflowException as exc:
            if str(exc.error_code) == "PERMISSION_DENIED":
                raise PermissionRefused(
                    f"MLflow refused to {action} (HTTP 403) for user {self.actor!r}: it needs {right}; "
                    f"grant it with: mangaassist-release grant --role {role} --user {self.actor}"
                ) from None
            raise  # 401 and the rest: credentials_checked() or the CLI says what it is

    # -- stages and verdicts ----------------------------------------------------------------------

    def stage(self, bundle: Bundle, alias: str, percent: float | None = None) -> Bundle:
        """Move ``shadow`` or ``canary`` to ``bundle`` (canary: tag ``canary.percent``, default 1)."""
        if alias not in STAGES:
            raise ReleaseError(f"stage alias must be one of {', '.join(STAGES)}, got {alias!r}")
        if alias == "shadow" and percent is not None:
            raise ReleaseError("--percent is the canary's traffic share; shadow traffic is mirrored, not split")
        share = _percent(1.0 if percent is None else percent) if alias == "canary" else None
        with self._needs(f"move alias {alias}", f"EDIT on registered model {BUNDLE_MODEL}", "release-owner"):
            if share is not None:
                self._c.set_model_version_tag(BUNDLE_MODEL, str(bundle.version), CANARY_PERCENT_TAG, _fmt(share))
            self._c.set_registered_model_alias(BUNDLE_MODEL, alias, str(bundle.version))
        self._progress(f"alias {alias} -> bundle {bundle.version}" + (f" at {_fmt(share)}%" if share else ""))
        tags = {**bundle.tags, CANARY_PERCENT_TAG: _fmt(share)} if share is not None else bundle.tags
        return replace(bundle, aliases=tuple(sorted({*bundle.aliases, alias})), tags=tags)

    def record_verdict(
        self, bundle: Bundle, stage: str, verdict: str, run_id: str | None = None, reason: str = ""
    ) -> dict[str, Any]:
        """Tag ``eval.<stage>=passed|failed`` (+ run id, stamp) on the bundle; returns the stamp."""
        if stage not in STAGES:
            raise ReleaseError(f"--stage must be one of {', '.join(STAGES)}, got {stage!r}")
        if verdict not in ("pass", "fail"):
            raise ReleaseError(f"--verdict must be pass or fail, got {verdict!r}")
        stamp: dict[str, Any] = {"by": self.actor, "at": utc_now(), "verdict": verdict}
        if reason:
            stamp["reason"] = reason[:500]
        if stage == "canary":
            raw = bundle.tags.get(CANARY_PERCENT_TAG)
            if raw is None:
                raise ReleaseError(
                    f"bundle {bundle.version} has no {CANARY_PERCENT_TAG}: stage it first "
                    "(mangaassist-release stage --alias canary --percent P)"
                )
            stamp["percent"] = float(raw)
        if run_id:
            self._check_run(run_id)
            stamp["run_id"] = run_id
        tags = {f"eval.{stage}": PASSED if verdict == "pass" else FAILED, f"eval.{stage}.stamp": _dumps(stamp)}
        if run_id:
            tags[f"eval.{stage}.run_id"] = run_id
        with self._needs(f"record the {stage} verdict", f"EDIT on registered model {BUNDLE_MODEL}", "release-owner"):
            self.registry.set_bundle_tags(bundle, tags)
        return stamp

    def _check_run(self, run_id: str) -> None:
        try:
            self._c.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                raise ReleaseError(f"no MLflow run {run_id!r}") from None
            raise

    # -- sign-offs --------------------------------------------------------------------------------

    def sign_off(self, bundle: Bundle, area: str) -> list[SignOff]:
        """Stamp a sign-off for ``bundle`` on each component version of ``area`` that differs from prod's."""
        if area not in AREAS:
            raise ReleaseError(f"--area must be one of {', '.join(AREAS)}, got {area!r}")
        prod = self._prod()
        stamp = {
            "by": self.actor,
            "at": utc_now(),
            "bundle": f"{BUNDLE_MODEL}/{bundle.version}",
            "bundle_version": bundle.bundle_version,
        }
        key = signoff_key(area, bundle.version)
        done: list[SignOff] = []
        if area == "prompt":
            changed = _changed_prompts(bundle, prod)
            if not changed:
                raise ReleaseError(f"bundle {bundle.version} serves prod's prompt versions: there is nothing to sign")
            for route, (name, version) in changed.items():
                with self._needs(
                    f"sign prompts:/{name}/{version}", f"EDIT on prompt {name} (its owners' right)", "prompt-owner"
                ):
                    self._c.set_prompt_version_tag(name, version, key, _dumps({**stamp, "route": route}))
                done.append(SignOff("prompt", f"prompts:/{name}/{version}", {**stamp, "route": route}))
        else:
            ruleset = _changed_guardrail(bundle, prod)
            if ruleset is None:
                raise ReleaseError(f"bundle {bundle.version} serves prod's guardrail ruleset: there is nothing to sign")
            name, version = ruleset
            with self._needs(
                f"sign models:/{name}/{version}",
                f"EDIT on registered model {name} (the guardrail owners' right)",
                "guardrail-owner",
            ):
                self._c.set_model_version_tag(name, version, key, _dumps(stamp))
            done.append(SignOff("guardrail", f"models:/{name}/{version}", stamp))
        return done

    # -- gates ------------------------------------------------------------------------------------

    def _prod(self) -> Bundle | None:
        try:
            return self.registry.resolve(PROD)
        except ReleaseError:
            if self.registry.alias_version(BUNDLE_MODEL, PROD) is None:
                return None  # no prod yet (the first bundle's promotion)
            raise

    def gates(self, bundle: Bundle, prod: Bundle | None = None, prod_known: bool = False) -> GateReport:
        """Every gate of ``bundle``'s promotion with its state and evidence (reads only)."""
        if not prod_known:
            prod = self._prod()
        tags = bundle.tags
        gates: list[Gate] = []
        if prod is not None and prod.version == bundle.version:
            gates.append(Gate("not-prod", FAILED, f"bundle {bundle.version} already holds alias prod"))
        else:
            where = f"prod is bundle {prod.version}" if prod else "no bundle holds prod yet"
            gates.append(Gate("not-prod", PASSED, where))
        gates.append(self._offline_gate(tags))
        for stage in STAGES:
            gates.append(_verdict_gate(stage, tags))
        signoffs: list[SignOff] = []
        for route, (name, version) in _changed_prompts(bundle, prod).items():
            pv = self._c.get_prompt_version(name, version)
            component = f"prompts:/{name}/{version}"
            gate, signoff = self._signoff_gate(
                f"prompt-signoff:{route}", "prompt", component, dict(pv.tags) if pv else {}, bundle
            )
            gates.append(gate)
            if signoff:
                signoffs.append(signoff)
        ruleset = _changed_guardrail(bundle, prod)
        if ruleset is not None:
            name, version = ruleset
            mv = self._c.get_model_version(name, version)
            gate, signoff = self._signoff_gate(
                "guardrail-signoff", "guardrail", f"models:/{name}/{version}", dict(mv.tags), bundle
            )
            gates.append(gate)
            if signoff:
                signoffs.append(signoff)
        return GateReport(bundle, prod.version if prod else None, tuple(gates), tuple(signoffs))

    def _offline_gate(self, tags: dict[str, str]) -> Gate:
        verdict = tags.get("eval.offline")
        run_id = tags.get("eval.offline.run_id", "")
        evidence = {"run_id": run_id} if run_id else {}
        if verdict is None:
            return Gate("offline-eval", MISSING, "no offline evaluation (mangaassist-release evaluate --bundle V)")
        if verdict != PASSED:
            return Gate("offline-eval", FAILED, f"eval.offline={verdict} (run {run_id or '?'})", evidence)
        if not run_id:
            return Gate("offline-eval", FAILED, "eval.offline=passed but no eval.offline.run_id names its run")
        try:
            self._c.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
                return Gate("offline-eval", FAILED, f"eval.offline=passed but run {run_id} does not exist", evidence)
            raise
        return Gate("offline-eval", PASSED, f"run {run_id}", evidence)

    def _signoff_gate(
        self, name: str, area: str, component: str, tags: dict[str, str], bundle: Bundle
    ) -> tuple[Gate, SignOff | None]:
        owners = "a prompt owner" if area == "prompt" else "a guardrail owner"
        raw = tags.get(signoff_key(area, bundle.version))
        if raw is None:
            return Gate(
                name, MISSING, f"{component} differs from prod's and {owners} has not signed it for this bundle"
            ), None
        try:
            stamp = json.loads(raw)
            by = str(stamp["by"])
        except (ValueError, KeyError, TypeError):
            return Gate(name, FAILED, f"{component}: the sign-off tag is not a stamp this tool wrote"), None
        evidence = {"component": component, **stamp}
        if stamp.get("bundle") != f"{BUNDLE_MODEL}/{bundle.version}":
            return Gate(name, FAILED, f"{component}: the sign-off names {stamp.get('bundle')!r}", evidence), None
        if self.authenticated and by.startswith("local:"):
            return Gate(
                name, FAILED, f"{component}: signed by {by} without authentication (embedded access)", evidence
            ), None
        return Gate(name, PASSED, f"{component} signed by {by} at {stamp.get('at')}", evidence), SignOff(
            area, component, stamp
        )

    # -- promote and roll back --------------------------------------------------------------------

    def promote(self, bundle: Bundle) -> Promotion:
        """``prod-previous`` -> the current prod, ``prod`` -> ``bundle``; only when every gate passes."""
        prod = self._prod()
        report = self.gates(bundle, prod, prod_known=True)
        if not report.passed:
            raise GatesNotMet(report)
        right = f"EDIT on registered model {BUNDLE_MODEL}"
        with self._needs("move alias prod", right, "release-owner"):
            if prod is not None:
                self._c.set_registered_model_alias(BUNDLE_MODEL, PROD_PREVIOUS, str(prod.version))
            self._c.set_registered_model_alias(BUNDLE_MODEL, PROD, str(bundle.version))
            stamp = {"by": self.actor, "at": utc_now(), "previous": prod.version if prod else None}
            self.registry.set_bundle_tags(bundle, {PROMOTED_TAG: _dumps(stamp)})
        self._progress(f"prod -> bundle {bundle.version}" + (f", prod-previous -> {prod.version}" if prod else ""))
        return Promotion(bundle, prod, report)

    def rollback(self, reason: str, to: str | None = None) -> Rollback:
        """``prod`` back to ``prod-previous`` (or to bundle ``to``) in one alias move; the reason is tagged."""
        if not reason.strip():
            raise ReleaseError("--reason must say why (it is recorded on the bundle rolled back from)")
        current = self._prod()
        if current is None:
            raise ReleaseError(f"no bundle holds alias prod on {BUNDLE_MODEL}: nothing to roll back")
        if to is None:
            previous = self.registry.alias_version(BUNDLE_MODEL, PROD_PREVIOUS)
            if previous is None:
                raise ReleaseError(f"no bundle holds alias {PROD_PREVIOUS}: name the version with --to V")
            target = self.registry.bundle(str(previous))
        else:
            target = self.registry.bundle(to)  # must name a registered version
        if target.version == current.version:
            raise ReleaseError(f"bundle {target.version} already holds prod: nothing to roll back")
        with self._needs("move alias prod", f"EDIT on registered model {BUNDLE_MODEL}", "release-owner"):
            self._c.set_registered_model_alias(BUNDLE_MODEL, PROD, str(target.version))
            stamp = {"by": self.actor, "at": utc_now(), "to": target.version, "reason": reason.strip()[:500]}
            self.registry.set_bundle_tags(current, {ROLLED_BACK_TAG: _dumps(stamp)})
        self._progress(f"prod -> bundle {target.version} (rolled back from {current.version})")
        return Rollback(current, target, reason)


def _changed_prompts(bundle: Bundle, prod: Bundle | None) -> dict[str, tuple[str, str]]:
    """Route -> (prompt name, version) for each prompt version of ``bundle`` that prod does not serve."""
    out: dict[str, tuple[str, str]] = {}
    for route, uri in sorted(bundle.prompts.items()):
        if prod is not None and prod.prompts.get(route) == uri:
            continue
        m = _PROMPT_VERSION_URI.fullmatch(uri)
        if not m:
            raise ReleaseError(f"bundle {bundle.version}: prompt {uri!r} of route {route} is not pinned to a version")
        out[route] = (m.group(1), m.group(2))
    return out


def _changed_guardrail(bundle: Bundle, prod: Bundle | None) -> tuple[str, str] | None:
    uri = bundle.components["guardrail_ruleset"]
    if prod is not None and prod.components["guardrail_ruleset"] == uri:
        return None
    m = _MODEL_VERSION_URI.fullmatch(uri)
    if not m or m.group(1) != GUARDRAIL_MODEL:
        raise ReleaseError(f"bundle {bundle.version}: guardrail ruleset {uri!r} is not models:/{GUARDRAIL_MODEL}/N")
    return m.group(1), m.group(2)


def _verdict_gate(stage: str, tags: dict[str, str]) -> Gate:
    verdict = tags.get(f"eval.{stage}")
    evidence: dict[str, Any] = {}
    if tags.get(f"eval.{stage}.run_id"):
        evidence["run_id"] = tags[f"eval.{stage}.run_id"]
    with suppress(ValueError):
        evidence.update(json.loads(tags.get(f"eval.{stage}.stamp", "{}")))
    if verdict is None:
        return Gate(stage, MISSING, f"no {stage} verdict (mangaassist-release record-verdict --stage {stage})")
    who = f" by {evidence['by']} at {evidence.get('at')}" if "by" in evidence else ""
    if verdict != PASSED:
        return Gate(stage, FAILED, f"eval.{stage}={verdict}{who}", evidence)
    return Gate(stage, PASSED, f"eval.{stage}=passed{who}", evidence)


def _percent(value: float) -> float:
    if not 0 < value <= 100:
        raise ReleaseError(f"--percent must be in (0, 100], got {value:g}")
    return value


def _fmt(value: float) -> str:
    return f"{value:g}"


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True)
