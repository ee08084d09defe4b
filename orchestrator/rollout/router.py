"""Canary routing: which bundle serves a session (spec §13), without MLflow on the request path.

The router serves ``DIR/prod.json`` and, while it exists, ``DIR/canary.json`` (both kept by
``mangaassist-release follow``; the canary's export carries its step as ``rollout``: the share of
sessions and the assignment salt). A session's place is ``bucket = sha256(salt, session_id) mod
10000``:

- ``bucket < canary% * 100``: the **canary** cohort, served the canary bundle
  (``deployment_stage=canary``); canary% is the step, at most 95 %;
- ``bucket ≥ 10000 - control% * 100``: the **control** cohort, served prod
  (``deployment_stage=prod``, ``rollout_cohort=control``): concurrent, the canary's size while the
  canary is at most half the traffic, then the rest, at least 5 % (the hold-back: at the 100 %
  step 95 % of sessions get the canary and 5 % stay on prod, so even that step is judged against
  a cohort of the same period, not before with after); see :func:`shares`;
- everyone else: prod.

Monotonic across steps: with the same salt a session's bucket never changes, so a session in the
canary at 1 % is in it at 10 % and 50 %; sticky for a session's life for the same reason. A new
canary bundle brings a new salt (its registry version), so each canary draws its own sessions.
Rolled back (``canary.json`` removed), every session is served prod within the refresh.

Staleness: an alias or step change reaches the router within ``mangaassist-release follow``'s
interval plus ``MANGAASSIST_BUNDLE_REFRESH_S``; when the registry is unreachable the follower
leaves the files alone, so the router keeps serving what it serves (prod at the least).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.adapters.base import Serving
from orchestrator.bundle_file import BundleFile, OptionalBundleFile, ServedBundle

if TYPE_CHECKING:
    from orchestrator.adapters import Providers

BUCKETS = 10_000
HOLDBACK = 5.0
"""Percent of sessions kept on prod as the control cohort even at the 100 % step."""


def bucket(salt: str, session_id: str) -> int:
    """The session's fixed place in ``[0, 10000)`` under ``salt``."""
    digest = hashlib.sha256(f"{salt}\x00{session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS


def shares(percent: float) -> tuple[float, float]:
    """(canary %, control %) at a step of ``percent``: the control is as large as the canary while
    the canary is at most half, then the rest, and never below the :data:`HOLDBACK` (so a 100 %
    step still has a concurrent comparison: 95 % canary, 5 % control)."""
    if percent <= 0:
        return 0.0, 0.0
    canary = min(percent, 100 - HOLDBACK)
    return canary, min(percent, 100 - canary)


def cohort(salt: str, session_id: str, percent: float) -> str:
    """``canary``, ``control`` or ``""`` for a session at a step of ``percent``."""
    b = bucket(salt, session_id)
    canary, control = shares(percent)
    if b < canary * 100:
        return "canary"
    if b >= BUCKETS - control * 100:
        return "control"
    return ""


class Router:
    """A bundle source (``Providers.bundle``) that serves prod and, per session, the canary."""

    def __init__(
        self,
        directory: str | Path,
        base: Providers,
        default_model_id: str,
        refresh_s: float,
        clock: Any = time.monotonic,
    ) -> None:
        folder = Path(directory)
        self.prod = BundleFile(str(folder / "prod.json"), base, default_model_id, refresh_s, clock)
        self.canary = OptionalBundleFile(str(folder / "canary.json"), base, default_model_id, refresh_s, clock)
        self.shadow = OptionalBundleFile(str(folder / "shadow.json"), base, default_model_id, refresh_s, clock)
        self.prompts = self.prod.prompts

    def shadow_serving(self) -> Serving | None:
        """The shadow bundle (``shadow.json``), or ``None`` when no shadow is set."""
        served = self.shadow.served()
        return dataclasses.replace(served.serving, deployment_stage="shadow") if served is not None else None

    def current(self) -> Any:  # RouteSource: prod's route table (what /healthz reports)
        return self.prod.current()

    def serving(self, session_id: str = "") -> Serving:
        prod = self.prod.serving()
        canary: ServedBundle | None = self.canary.served()
        rollout = canary.rollout if canary is not None else None
        if canary is None or rollout is None or not session_id:
            return dataclasses.replace(prod, deployment_stage="prod")
        place = cohort(rollout.salt, session_id, rollout.percent)
        if place == "canary":
            return dataclasses.replace(canary.serving, deployment_stage="canary", cohort="canary")
        return dataclasses.replace(prod, deployment_stage="prod", cohort=place)
