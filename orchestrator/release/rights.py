"""Who may do what on the basic-auth MLflow server (spec §15: "restrict registry promotion rights").

Run by an MLflow admin (``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``) through
``mlflow.server.get_app_client("basic-auth", …)``. Every grant names one resource (never the
wildcard-only version tiers, which would reach every model of the server), on top of the server's
``default_permission = READ``:

=================  ==============================================================================
role               grant
=================  ==============================================================================
release-owner      EDIT on registered model ``mangaassist-chatbot-prod``: move its aliases
                   (stage, promote, roll back), tag its versions (verdicts, eval results), register
                   candidates
prompt-owner       EDIT on each prompt ``ma-prompts.<route>`` (resource type ``prompt``: a
                   ``registered_model`` grant on the same name does not reach prompts): sign and
                   create prompt versions, move prompt aliases
guardrail-owner    EDIT on registered model ``mangaassist-guardrails``: sign ruleset versions
gateway            EDIT on the traffic experiment (traces and the bundle history runs)
=================  ==============================================================================

Measured against 3.17.2 (``tests/release/test_rights.py``): a release owner gets 403 on a prompt
version tag, a prompt owner 403 on the bundle's aliases and on other prompts, a viewer 403 on
every write; a wrong password is 401. Granting what a user already holds answers
``RESOURCE_ALREADY_EXISTS``; it is then re-granted (revoke, grant) so the permission is EDIT.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mlflow.exceptions import MlflowException

from orchestrator.release.components import BUNDLE_MODEL, GUARDRAIL_MODEL, PROMPT_PREFIX
from orchestrator.release.registry import ReleaseError

ROLES = ("release-owner", "prompt-owner", "guardrail-owner", "gateway")


@dataclass(slots=True)
class GrantReport:
    user: str
    role: str
    created_user: bool = False
    granted: list[str] = field(default_factory=list)
    """``resource_type:name=PERMISSION`` per grant written."""

    def to_json(self) -> dict[str, Any]:
        return {"user": self.user, "role": self.role, "created_user": self.created_user, "granted": self.granted}


def _code(exc: MlflowException) -> str:
    return str(exc.error_code)


def grant(
    tracking_uri: str,
    role: str,
    user: str,
    password: str | None,
    prompt_names: list[str],
    experiment_name: str,
    ensure_experiment: Callable[[str], str],
) -> GrantReport:
    """Give ``user`` (created when missing, with ``password``) the grants of ``role``."""
    if not tracking_uri.startswith(("http://", "https://")):
        raise ReleaseError(
            "grant needs the basic-auth tracking server (MLFLOW_TRACKING_URI=http(s)://…); "
            "embedded sqlite:/// has no users and no rights"
        )
    if role not in ROLES:
        raise ReleaseError(f"--role must be one of {', '.join(ROLES)}, got {role!r}")
    admin = admin_client(tracking_uri)
    report = GrantReport(user, role)
    try:
        admin.get_user(user)
    except MlflowException as exc:
        if _code(exc) != "RESOURCE_DOES_NOT_EXIST":
            raise _translate(exc) from None
        if not password:
            raise ReleaseError(f"user {user!r} does not exist: pass --password-file to create it") from None
        try:
            admin.create_user(user, password)
        except MlflowException as exc2:
            raise _translate(exc2) from None
        report.created_user = True
    if role == "release-owner":
        targets = [("registered_model", BUNDLE_MODEL)]
    elif role == "guardrail-owner":
        targets = [("registered_model", GUARDRAIL_MODEL)]
    elif role == "prompt-owner":
        names = sorted(n for n in prompt_names if n.startswith(PROMPT_PREFIX))
        if not names:
            raise ReleaseError(f"no prompt named {PROMPT_PREFIX}<route> exists yet (run bootstrap first)")
        targets = [("prompt", n) for n in names]
    else:
        targets = [("experiment", ensure_experiment(experiment_name))]
    for resource_type, resource in targets:
        try:
            admin.grant_user_permission(user, resource_type, resource, "EDIT")
        except MlflowException as exc:
            if _code(exc) != "RESOURCE_ALREADY_EXISTS":
                raise _translate(exc) from None
            admin.revoke_user_permission(user, resource_type, resource)
            admin.grant_user_permission(user, resource_type, resource, "EDIT")
        label = f"experiment {experiment_name} (id {resource})" if resource_type == "experiment" else resource
        report.granted.append(f"{resource_type}:{label}=EDIT")
    return report


def admin_client(tracking_uri: str) -> Any:
    """MLflow's ``AuthServiceClient`` for ``tracking_uri`` (credentials from ``MLFLOW_TRACKING_USERNAME/PASSWORD``)."""
    with warnings.catch_warnings():
        # mlflow.server (and its auth app) imports starlette.middleware.wsgi, which warns it is deprecated
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        from mlflow.server import get_app_client

        return get_app_client("basic-auth", tracking_uri=tracking_uri)


def _translate(exc: MlflowException) -> ReleaseError:
    code = _code(exc)
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED") or " 401 " in str(exc) or " 403 " in str(exc):
        return ReleaseError(
            "managing users and grants needs an MLflow admin: set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD "
            f"to the admin's credentials ({code})"
        )
    return ReleaseError(f"MLflow auth API: {code}: {str(exc).splitlines()[0][:300]}")
