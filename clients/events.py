"""Typed feedback and release-bundle events (``feedback.proto``, ``bundles.proto``).

Plain frozen dataclasses; the sender converts them to protobuf. ``event_id`` (for idempotent
at-least-once delivery) and the time default to a fresh uuid4 and now. Enum-typed fields also
accept their string values (``"thumbs_down"``); an unknown value raises ``ValueError`` at
construction.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from clients.pb import bundles_pb2, feedback_pb2


def _new_event_id() -> str:
    return uuid.uuid4().hex


def _coerce(obj: object, name: str, enum: type[StrEnum]) -> None:
    value = getattr(obj, name)
    if not isinstance(value, enum):
        object.__setattr__(obj, name, enum(value))


class Feedback(StrEnum):
    """The customer's verdict on a response."""

    THUMBS_UP = "thumbs_up"
    THUMBS_DOWN = "thumbs_down"

    @property
    def proto_value(self) -> int:
        """The ``FeedbackValue`` number."""
        return int(feedback_pb2.FeedbackValue.Value(f"FEEDBACK_VALUE_{self.name}"))


class EvaluationStage(StrEnum):
    """Where a candidate bundle was evaluated."""

    OFFLINE = "offline"
    SHADOW = "shadow"
    CANARY = "canary"

    @property
    def proto_value(self) -> int:
        """The ``EvaluationStage`` number."""
        return int(bundles_pb2.EvaluationStage.Value(f"EVALUATION_STAGE_{self.name}"))


class EvaluationVerdict(StrEnum):
    """Whether an evaluation met its thresholds."""

    PASS = "pass"
    FAIL = "fail"

    @property
    def proto_value(self) -> int:
        """The ``EvaluationVerdict`` number."""
        return int(bundles_pb2.EvaluationVerdict.Value(f"EVALUATION_VERDICT_{self.name}"))


class SignOffArea(StrEnum):
    """What a sign-off covers."""

    PROMPT = "prompt"
    GUARDRAIL = "guardrail"
    RELEASE = "release"

    @property
    def proto_value(self) -> int:
        """The ``SignOffArea`` number."""
        return int(bundles_pb2.SignOffArea.Value(f"SIGN_OFF_AREA_{self.name}"))


@dataclass(frozen=True, slots=True)
class FeedbackEvent:
    """A thumbs up or down on one response, joined by the gateway to its trace."""

    response_id: str
    """The response as returned to the UI (``resp_...``)."""
    trace_id: str
    """The 32-hex trace id returned with that response."""
    feedback: Feedback
    """Thumbs up or down (``"thumbs_up"`` / ``"thumbs_down"`` accepted)."""
    reason_code: str = ""
    comment: str = ""
    """Free text; the gateway redacts it before storing."""
    session_id: str = ""
    prompt_version: str = ""
    release_bundle: str = ""
    event_id: str = field(default_factory=_new_event_id)
    time_unix_nano: int = field(default_factory=time.time_ns)

    def __post_init__(self) -> None:
        _coerce(self, "feedback", Feedback)


@dataclass(frozen=True, slots=True)
class BundleComponents:
    """The versions a release bundle pins."""

    intent_classifier_version: str = ""
    reranker_version: str = ""
    prompt_version: str = ""
    bedrock_model_id: str = ""
    retriever_policy_version: str = ""
    guardrail_ruleset_version: str = ""


@dataclass(frozen=True, slots=True)
class BundleRegistered:
    """The bundle was registered with the versions it pins."""

    components: BundleComponents


@dataclass(frozen=True, slots=True)
class BundleEvaluated:
    """The bundle was evaluated at one stage."""

    stage: EvaluationStage
    verdict: EvaluationVerdict
    metrics: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    dataset_version: str = ""
    traffic_percent: float = 0.0
    run_id: str = ""

    def __post_init__(self) -> None:
        _coerce(self, "stage", EvaluationStage)
        _coerce(self, "verdict", EvaluationVerdict)


@dataclass(frozen=True, slots=True)
class BundleSignedOff:
    """Someone signed off the bundle for one area."""

    area: SignOffArea
    approver_id: str
    """An id, not a name or e-mail."""

    def __post_init__(self) -> None:
        _coerce(self, "area", SignOffArea)


@dataclass(frozen=True, slots=True)
class BundlePromoted:
    """The bundle was promoted to serve production traffic."""

    previous_version: str = ""


@dataclass(frozen=True, slots=True)
class BundleRolledBack:
    """Production was rolled back from the bundle to ``to_version``."""

    to_version: str
    reason: str = ""


BundleKind = BundleRegistered | BundleEvaluated | BundleSignedOff | BundlePromoted | BundleRolledBack
"""What happened to a bundle; exactly one per event."""

_KIND_TYPES: tuple[type[Any], ...] = (
    BundleRegistered,
    BundleEvaluated,
    BundleSignedOff,
    BundlePromoted,
    BundleRolledBack,
)


@dataclass(frozen=True, slots=True)
class BundleEvent:
    """One event in a release bundle's life (registered, evaluated, signed off, promoted,
    rolled back)."""

    bundle_name: str
    bundle_version: str
    kind: BundleKind
    actor_id: str = ""
    """A user id or pipeline name."""
    note: str = ""
    """Free text; the gateway redacts it before storing."""
    event_id: str = field(default_factory=_new_event_id)
    time_unix_nano: int = field(default_factory=time.time_ns)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, _KIND_TYPES):
            raise ValueError(f"kind must be one of {', '.join(t.__name__ for t in _KIND_TYPES)}")


Event = FeedbackEvent | BundleEvent
"""Anything the event queue carries."""
