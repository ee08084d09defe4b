"""Feedback joining: what the gateway knows of a feedback's trace, for metrics and the stream.

A pipeline stage (``process``, placed after redaction and before sampling, so it sees every
decided trace) remembers the four pivot tags of recently decided traces — ``intent``,
``prompt_version``, ``release_bundle``, ``bedrock_model_id`` — plus the session id, in a
bounded cache (``TRACEGW_FEEDBACK_CONTEXT_TRACES``). Its per-trace cost is a few dict lookups.

Each accepted feedback event is then, by what the gateway knew of its trace when it arrived:

=============  ====================================================================================
``sampled_in``  the trace was decided and kept: enriched from the cache at once
``rescued``     sampling had dropped it and it was in the rescue buffer: enriched from that trace
``in_flight``   the trace is still being assembled: the event waits until the trace is decided
                (at most the decision timeout plus a margin), then is enriched
``orphan``      unknown here (older than the rescue window, or its spans went to another replica):
                counted, streamed with the feedback's own prompt version and release bundle
=============  ====================================================================================

and, once enriched, counted in ``mangaassist_feedback_total`` by the four pivots and the verdict,
and offered to the event stream as one JSON record whose partition key is the session id (else
the trace id). Not thread-safe: the gateway calls it from its event loop.
"""

from __future__ import annotations

import json
import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.metrics import GatewayMetrics
from gateway.model import FeedbackRecord, FeedbackValue, Settles, TraceRecord
from gateway.process.examples import ExampleTraces
from gateway.process.measure import LabelCap
from gateway.process.recent import RecentMap

PIVOTS = ("intent", "prompt_version", "release_bundle", "bedrock_model_id", "deployment_stage", "rollout_cohort")
AWAITING_MAX = 10_000
JOIN_OUTCOMES = ("sampled_in", "rescued", "in_flight", "orphan")
STORED_OUTCOMES = frozenset({"sampled_in", "rescued", "in_flight"})  # the trace is (or will be) in MLflow
_Waiting = tuple[float, FeedbackRecord, Settles | None, bool]


@dataclass(frozen=True, slots=True)
class TraceContext:
    intent: str
    prompt_version: str
    release_bundle: str
    bedrock_model_id: str
    session_id: str
    deployment_stage: str = ""
    rollout_cohort: str = ""


def context_of(trace: TraceRecord) -> TraceContext:
    tags = trace.tags
    return TraceContext(
        sys.intern(tags.get("intent") or ""),
        sys.intern(tags.get("prompt_version") or ""),
        sys.intern(tags.get("release_bundle") or ""),
        sys.intern(tags.get("bedrock_model_id") or ""),
        tags.get("session_id") or "",
        sys.intern(tags.get("deployment_stage") or ""),
        sys.intern(tags.get("rollout_cohort") or ""),
    )


def stream_event(
    record: FeedbackRecord, outcome: str, ctx: TraceContext | None, environment: str, region: str
) -> tuple[str, bytes]:
    """(partition key, JSON record) for the event stream. ``record`` is already redacted."""
    session = record.session_id or (ctx.session_id if ctx else "")
    when = datetime.fromtimestamp(record.time_ns / 1e9, UTC) if record.time_ns else datetime.now(UTC)
    event = {
        "event_id": record.event_id,
        "response_id": record.response_id,
        "trace_id": record.trace_id,
        "session_id": session,
        "feedback": record.value.value,
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "reason_code": record.reason_code,
        "comment": record.comment,
        "intent": ctx.intent if ctx else "",
        "prompt_version": (ctx.prompt_version if ctx else "") or record.prompt_version,
        "release_bundle": (ctx.release_bundle if ctx else "") or record.release_bundle,
        "bedrock_model_id": ctx.bedrock_model_id if ctx else "",
        "join": outcome,
        "environment": environment,
        "region": region,
    }
    return session or record.trace_id, json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


class FeedbackJoin:
    name = "feedback_context"
    drop_reason = None

    def __init__(
        self,
        metrics: GatewayMetrics,
        max_traces: int,
        max_label_values: int,
        hold_s: float,
        publish: Callable[[str, bytes, Settles | None], bool] | None = None,
        environment: str = "",
        region: str = "",
        clock: Callable[[], float] = time.monotonic,
        max_label_sets: int = 1000,
        max_label_chars: int = 128,
        examples: ExampleTraces | None = None,
    ) -> None:
        self._m = metrics
        self._examples = examples
        self._max = max_traces
        self._cap = LabelCap(max_label_values, metrics, max_label_sets, max_label_chars)
        self._hold_s = hold_s
        self._publish = publish
        self._env = environment
        self._region = region
        self._clock = clock
        # The newest max_traces / 2 .. max_traces contexts (a dict that forgot its oldest key on
        # every insert kept a table sized for 3x its keys: ~16 MB at steady state).
        self._contexts: RecentMap[str, TraceContext] = RecentMap(max_traces)
        # Feedback waiting for its trace's decision: (since, record, its WAL hold, replayed).
        self._awaiting: OrderedDict[str, list[_Waiting]] = OrderedDict()

    # -- stage ------------------------------------------------------------------------------------

    def process(self, traces: list[TraceRecord]) -> list[TraceRecord]:
        contexts = self._contexts
        for trace in traces:
            if trace.late:
                continue
            ctx = context_of(trace)
            contexts[trace.trace_id] = ctx
            if self._awaiting:
                waiting = self._awaiting.pop(trace.trace_id, None)
                if waiting:
                    for _, record, hold, replayed in waiting:
                        self._emit(record, "in_flight", ctx, hold, replayed)
        if self._awaiting:
            self.expire()
        return traces

    # -- feedback ---------------------------------------------------------------------------------

    def lookup(self, trace_id: str) -> TraceContext | None:
        return self._contexts.get(trace_id)

    def accept(
        self,
        record: FeedbackRecord,
        outcome: str,
        ctx: TraceContext | None,
        hold: Settles | None = None,
        replayed: bool = False,
    ) -> None:
        """Count the join outcome; emit now, or (``in_flight`` without a context) when the trace is
        decided. ``hold`` (its WAL record's) is given back once the stream has the event; a replayed
        event (fed again from the WAL at start) is not counted again in the business metrics."""
        if not replayed:
            self._m.feedback_joins.labels(outcome).inc()
        if outcome == "in_flight" and ctx is None:
            self._awaiting.setdefault(record.trace_id, []).append((self._clock(), record, hold, replayed))
            if len(self._awaiting) > AWAITING_MAX:
                _, oldest = self._awaiting.popitem(last=False)
                for _, r, h, again in oldest:
                    self._emit(r, "in_flight", None, h, again)
            return
        self._emit(record, outcome, ctx, hold, replayed)
        if self._awaiting:
            self.expire()

    def expire(self) -> None:
        """Emit, unenriched, events that waited longer than the hold (their trace was never decided here)."""
        cutoff = self._clock() - self._hold_s
        while self._awaiting:
            trace_id, waiting = next(iter(self._awaiting.items()))
            if waiting[0][0] > cutoff:
                break
            del self._awaiting[trace_id]
            for _, record, hold, replayed in waiting:
                self._emit(record, "in_flight", self._contexts.get(trace_id), hold, replayed)

    def flush(self) -> None:
        """Shutdown: emit everything still waiting."""
        while self._awaiting:
            trace_id, waiting = self._awaiting.popitem(last=False)
            for _, record, hold, replayed in waiting:
                self._emit(record, "in_flight", self._contexts.get(trace_id), hold, replayed)

    @property
    def awaiting(self) -> int:
        return sum(len(v) for v in self._awaiting.values())

    def _emit(
        self, record: FeedbackRecord, outcome: str, ctx: TraceContext | None, hold: Settles | None, replayed: bool
    ) -> None:
        if self._publish is not None:
            key, data = stream_event(record, outcome, ctx, self._env, self._region)
            self._publish(key, data, hold)
        elif hold is not None:
            hold.done()
        if replayed:
            return
        cap = self._cap
        values = (
            ctx.intent if ctx else "",
            (ctx.prompt_version if ctx else "") or record.prompt_version,
            (ctx.release_bundle if ctx else "") or record.release_bundle,
            ctx.bedrock_model_id if ctx else "",
            ctx.deployment_stage if ctx else "",
            ctx.rollout_cohort if ctx else "",
        )
        labels = cap.label_set(PIVOTS, values)
        self._m.feedback.labels(*labels, record.value.value).inc(exemplar={"trace_id": record.trace_id})
        if (
            self._examples is not None
            and ctx is not None
            and outcome in STORED_OUTCOMES
            and record.value is FeedbackValue.THUMBS_DOWN
        ):
            self._examples.thumbs_down(record.trace_id, (labels[2], labels[1], labels[3]))
