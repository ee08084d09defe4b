"""Bundle events from ``mangaassist-release``: each lifecycle step told to the gateway, never blocking it.

After a step has succeeded in MLflow, the CLI hands one :class:`clients.BundleEvent` to
:meth:`ReleaseEvents.send`, which makes one ``RecordBundleEvents`` call with a short deadline
(``MANGAASSIST_RELEASE_EVENTS_TIMEOUT_S``), through the ``clients`` package's channel and token
(``TRACEGW_CLIENT_TARGET``, ``TRACEGW_CLIENT_TOKEN_FILE`` holding the gateway's *bundle* token,
``TRACEGW_CLIENT_TLS_*``). Each event settles on one of three paths:

- **delivered**: the gateway accepted it;
- **rejected**: the gateway answered and refused it (partial success: it fails validation or names
  a version the registry lacks). Permanent, so it is reported on stderr and not kept;
- **pending**: the call failed (gateway down, deadline, no or wrong bundle token, registry
  unreachable from the gateway): the event is appended to the outbox, a JSON-lines file
  (``MANGAASSIST_RELEASE_OUTBOX``), and :meth:`ReleaseEvents.resend` at the start of the next
  command sends it again, oldest first, stopping at the first failure. The event id is kept,
  so a re-send the gateway already took is dropped there as a duplicate.

Nothing here raises into the caller: a failure of this module costs the event (pending), never
the MLflow step that already happened. The outbox is locked (``fcntl.flock``) while it is read
or written, so two commands at once neither lose nor duplicate lines.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from clients.config import ClientConfig
from clients.encode import encode_bundle_event
from clients.events import (
    BundleComponents,
    BundleEvaluated,
    BundleEvent,
    BundlePromoted,
    BundleRegistered,
    BundleRolledBack,
    BundleSignedOff,
    EvaluationStage,
    EvaluationVerdict,
    SignOffArea,
)
from clients.pb import bundles_pb2
from clients.pb import trace_gateway_service_pb2 as svc_pb2

if TYPE_CHECKING:
    from orchestrator.release.registry import Bundle

log = logging.getLogger(__name__)

_METHOD = "/mangaassist.tracegateway.v1.TraceGatewayService/RecordBundleEvents"
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+:/-]{0,127}")
"""The gateway's rule for names and versions in bundle events (``decode_events.BUNDLE_KEY``)."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one event settled: ``delivered``, ``rejected`` or ``pending`` (with why)."""

    state: str
    detail: str = ""


def events_enabled(setting: str, tracking_uri: str) -> bool:
    """``on``/``off``; ``auto`` is on for an ``http(s)://`` MLflow and off for embedded ``sqlite:///``."""
    if setting == "auto":
        return tracking_uri.startswith(("http://", "https://"))
    return setting == "on"


class ReleaseEvents:
    """Sends bundle events to the gateway, one call each, and keeps the undelivered ones in the outbox."""

    def __init__(
        self,
        client_config: ClientConfig,
        outbox: Path,
        timeout_s: float,
        say: Callable[[str], None] = lambda _m: None,
    ) -> None:
        self._config = client_config
        self.outbox = outbox
        self._timeout_s = timeout_s
        self._say = say

    # -- public ---------------------------------------------------------------------------------

    def send(self, event: BundleEvent) -> Outcome:
        """Deliver ``event`` now, or keep it in the outbox; never raises."""
        try:
            message = encode_bundle_event(event)
        except Exception as exc:  # a bad event is the tool's bug: say so, keep the step's result
            log.warning("bundle event %s could not be encoded", event.event_id, exc_info=True)
            return Outcome("rejected", f"cannot encode it: {type(exc).__name__}: {exc}")
        outcome = self._deliver(message)
        if outcome.state == "pending":
            try:
                self._append(message, outcome.detail)
            except OSError as exc:
                outcome = Outcome("lost", f"{outcome.detail}; and the outbox {self.outbox} cannot be written: {exc}")
        self._report(_kind(message), outcome)
        return outcome

    def resend(self) -> tuple[int, int]:
        """Send what the outbox holds, oldest first, until one fails; (delivered or settled, still pending)."""
        if not self.outbox.exists():
            return 0, 0
        settled = 0
        try:
            with self._locked() as f:
                lines = [line for line in f.read().splitlines() if line.strip()]
                keep: list[str] = []
                failed = False
                for line in lines:
                    if failed:
                        keep.append(line)
                        continue
                    try:
                        message = bundles_pb2.BundleEvent.FromString(base64.b64decode(json.loads(line)["event"]))
                    except (ValueError, KeyError, TypeError):
                        self._say(f"release events: dropped an unreadable outbox line ({line[:60]!r})")
                        settled += 1
                        continue
                    outcome = self._deliver(message)
                    if outcome.state == "pending":
                        failed = True
                        keep.append(line)
                    else:
                        settled += 1
                        if outcome.state == "rejected":
                            self._report(_kind(message), outcome)
                f.seek(0)
                f.truncate()
                f.write("".join(f"{line}\n" for line in keep))
        except OSError as exc:
            self._say(f"release events: cannot read the outbox {self.outbox}: {exc}")
            return settled, self.pending()
        if lines:
            self._say(f"release events: re-sent {settled} from the outbox, {len(keep)} still pending ({self.outbox})")
        return settled, len(keep)

    def pending(self) -> int:
        """Events waiting in the outbox."""
        try:
            with open(self.outbox, encoding="utf-8") as f:
                return sum(1 for line in f if line.strip())
        except FileNotFoundError:
            return 0

    # -- plumbing -------------------------------------------------------------------------------

    def _deliver(self, message: bundles_pb2.BundleEvent) -> Outcome:
        """One ``RecordBundleEvents`` call on a channel of its own (a command sends a handful)."""
        import grpc

        from clients.security import TokenMetadata, make_channel
        from clients.sender import CHANNEL_OPTIONS

        channel = None
        try:
            kwargs = TokenMetadata(self._config.token_file).call_kwargs()
            channel = make_channel(self._config, list(CHANNEL_OPTIONS))
            call = channel.unary_unary(
                _METHOD,
                request_serializer=svc_pb2.RecordBundleEventsRequest.SerializeToString,
                response_deserializer=svc_pb2.RecordBundleEventsResponse.FromString,
            )
            response = call(svc_pb2.RecordBundleEventsRequest(events=[message]), timeout=self._timeout_s, **kwargs)
        except grpc.RpcError as err:
            code = err.code() if isinstance(err, grpc.Call) else None
            details = err.details() if isinstance(err, grpc.Call) else ""
            name = code.name if code is not None else type(err).__name__
            return Outcome("pending", f"{name} {(details or '')[:200]}".strip())
        except Exception as exc:  # e.g. an unreadable token file or TLS file
            return Outcome("pending", f"{type(exc).__name__}: {exc}")
        finally:
            if channel is not None:
                channel.close()
        if response.partial_success.rejected_count:
            return Outcome("rejected", response.partial_success.error_message[:300])
        return Outcome("delivered")

    def _append(self, message: bundles_pb2.BundleEvent, why: str) -> None:
        line = json.dumps(
            {
                "event_id": message.event_id,
                "kind": _kind(message),
                "bundle": f"{message.bundle_name}@{message.bundle_version}",
                "queued_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "why": why,
                "event": base64.b64encode(message.SerializeToString()).decode("ascii"),
            },
            separators=(",", ":"),
        )
        with self._locked() as f:
            f.seek(0, os.SEEK_END)
            f.write(line + "\n")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[IO[str]]:
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        with open(self.outbox, "a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0)
                yield f
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _report(self, kind: str, outcome: Outcome) -> None:
        if outcome.state == "delivered":
            self._say(f"release events: {kind} event delivered to the gateway at {self._config.target}")
        elif outcome.state == "rejected":
            self._say(f"release events: the gateway rejected the {kind} event (not kept): {outcome.detail}")
        else:
            self._say(
                f"release events: {kind} event not delivered to {self._config.target} ({outcome.detail}); "
                f"{self.pending()} pending in {self.outbox}, re-sent by the next command"
            )


def _kind(message: bundles_pb2.BundleEvent) -> str:
    return str(message.WhichOneof("kind") or "unknown")


# -- the events of each lifecycle step ------------------------------------------------------------


def bundle_ref(bundle: Bundle) -> str:
    """How an event names the bundle: its ``bundle_version`` tag, else the registry's version number."""
    return bundle.bundle_version or str(bundle.version)


def _short(uri: str) -> str:
    """``models:/NAME/3`` (fits the gateway's 128-character plain-key rule) or a digest of a longer value."""
    if _KEY.fullmatch(uri):
        return uri
    return "sha256:" + hashlib.sha256(uri.encode()).hexdigest()[:16]


def prompt_pack_label(prompts: dict[str, str]) -> str:
    """``faq/1+product_question/2+…`` (route/version), or a digest when that would not fit."""
    parts = []
    for route, uri in sorted(prompts.items()):
        name, _, version = uri.removeprefix("prompts:/").rpartition("/")
        parts.append(f"{route}/{version}" if name.endswith(f".{route}") else f"{name}/{version}")
    return _short("+".join(parts))


def registered(bundle: Bundle, actor_id: str, note: str = "") -> BundleEvent:
    c = bundle.components
    components = BundleComponents(
        intent_classifier_version=_short(c["intent_classifier"]),
        reranker_version=_short(c["reranker"]),
        prompt_version=prompt_pack_label(bundle.prompts),
        bedrock_model_id=_short(c["bedrock_model_id"]),
        retriever_policy_version=_short(c["retriever_policy"]),
        guardrail_ruleset_version=_short(c["guardrail_ruleset"]),
    )
    return BundleEvent(bundle.name, bundle_ref(bundle), BundleRegistered(components), actor_id=actor_id, note=note)


def evaluated(
    bundle: Bundle,
    stage: str,
    verdict: str,
    actor_id: str,
    *,
    metrics: dict[str, float] | None = None,
    run_id: str = "",
    dataset_version: str = "",
    percent: float = 0.0,
    note: str = "",
) -> BundleEvent:
    kind = BundleEvaluated(
        stage=EvaluationStage(stage),
        verdict=EvaluationVerdict(verdict),
        metrics={k: float(v) for k, v in (metrics or {}).items() if math.isfinite(float(v))},
        dataset_version=dataset_version,
        traffic_percent=percent,
        run_id=run_id,
    )
    return BundleEvent(bundle.name, bundle_ref(bundle), kind, actor_id=actor_id, note=note[:4000])


def signed_off(bundle: Bundle, area: str, actor_id: str, note: str = "") -> BundleEvent:
    kind = BundleSignedOff(area=SignOffArea(area), approver_id=actor_id)
    return BundleEvent(bundle.name, bundle_ref(bundle), kind, actor_id=actor_id, note=note[:4000])


def promoted(bundle: Bundle, previous: Bundle | None, actor_id: str) -> BundleEvent:
    kind = BundlePromoted(previous_version=bundle_ref(previous) if previous else "")
    return BundleEvent(bundle.name, bundle_ref(bundle), kind, actor_id=actor_id)


def rolled_back(from_bundle: Bundle, to_bundle: Bundle, reason: str, actor_id: str) -> BundleEvent:
    kind = BundleRolledBack(to_version=bundle_ref(to_bundle), reason=reason[:1000])
    return BundleEvent(from_bundle.name, bundle_ref(from_bundle), kind, actor_id=actor_id)
