"""Every Prometheus metric of the gateway, built on an injected registry (a fresh one per
test). Names follow Prometheus conventions: counters end in ``_total``, durations are
``_seconds``, sizes ``_bytes``; every drop carries a ``reason`` label from a known set.

Pipeline self-metrics (what each stage took in, passed on and dropped) sit beside delivery
metrics (write requests, their latency, spans written) and the business metrics of spec
section 14 (``mangaassist_*``), which ``process/measure.py`` and ``process/feedback_join.py``
update on 100% of traffic before sampling. Which module updates which metric: the docstring
of each subpackage (``gateway/receive``, ``gateway/process``, ``gateway/export``).
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

PREFIX = "tracegw"
BUSINESS_PREFIX = "mangaassist"
# The dimensions of every business metric (spec §14's investigation pivot).
BUSINESS_LABELS = (
    "intent",
    "release_bundle",
    "prompt_version",
    "bedrock_model_id",
    "deployment_stage",
    "rollout_cohort",
)
# rollout_cohort: canary / control (the router's concurrent comparison cohort) / none; the canary
# judge selects its two cohorts by deployment_stage, rollout_cohort and release_bundle.
# The dimensions of feedback counters (spec §10's daily aggregates), plus the verdict.
FEEDBACK_LABELS = (
    "intent",
    "prompt_version",
    "release_bundle",
    "bedrock_model_id",
    "deployment_stage",
    "rollout_cohort",
    "feedback",
)
LATENCY_BUCKETS_S = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0, 30.0)

# Every reason a span, trace or event can be dropped; labels outside this set are a bug.
DROP_REASONS = frozenset(
    {
        "invalid",  # rejected at receive (partial success names the field)
        "span_limit",  # more spans in one trace than allowed
        "sampled_out",  # head/tail sampling chose not to store the trace
        "writer_queue_full",  # no room for another batch waiting for a writer
        "write_failed",  # MLflow answered an error or could not be reached
        "encode_failed",  # a trace the OTLP encoder could not take (dropped alone, its batch goes on)
        "shutdown",  # still held when the drain deadline passed
        "trace_not_found",  # feedback whose trace never reached MLflow within the join window
        "contract_violation",  # strict contract mode: a trace that breaks the contract is not stored
        "spool_full",  # spool unavailable (full, disk error) and the in-memory queue full too
        "dead_letter",  # MLflow rejected it permanently, or retries ran out: kept in the dead-letter dir
        "corrupt",  # a spooled segment became unreadable
        "memory_shed",  # sampled-out trace not kept for rescue because memory is above the soft limit
        "stream_rejected",  # the feedback event stream (Kinesis) refused a record permanently
        "retry_exhausted",  # the feedback event stream kept failing past TRACEGW_FEEDBACK_STREAM_MAX_ELAPSED_S
        "duplicate",  # a feedback or bundle event whose event_id was accepted recently (a retry): counted once
    }
)


class GatewayMetrics:
    """All metric objects, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # *_created series double the scrape for nothing
        self.registry = registry
        p = PREFIX
        self.spans_received = Counter(
            f"{p}_spans_received_total", "Spans received, by receiver (native, otlp).", ["receiver"], registry=registry
        )
        self.spans_rejected = Counter(
            f"{p}_spans_rejected_total",
            "Spans rejected at receive as invalid, by receiver.",
            ["receiver"],
            registry=registry,
        )
        self.reserved_keys_stripped = Counter(
            f"{p}_reserved_keys_stripped_total",
            "Application-sent attributes or tags under the reserved mlflow. prefix that were removed.",
            registry=registry,
        )
        self.stage_in = Counter(
            f"{p}_stage_traces_in_total", "Traces entering a pipeline stage.", ["stage"], registry=registry
        )
        self.stage_out = Counter(
            f"{p}_stage_traces_out_total", "Traces leaving a pipeline stage.", ["stage"], registry=registry
        )
        self.dropped_spans = Counter(
            f"{p}_spans_dropped_total", "Spans dropped, by stage and reason.", ["stage", "reason"], registry=registry
        )
        self.traces_assembled = Counter(
            f"{p}_traces_assembled_total",
            "Traces handed on by assembly, by how they ended (root, timeout, evicted_count, evicted_bytes, late).",
            ["outcome"],
            registry=registry,
        )
        self.traces_in_flight = Gauge(
            f"{p}_assembly_traces_in_flight", "Traces waiting in assembly.", registry=registry
        )
        self.spans_in_flight = Gauge(f"{p}_assembly_spans_in_flight", "Spans held in assembly.", registry=registry)
        self.assembly_bytes = Gauge(f"{p}_assembly_bytes", "Approximate bytes held in assembly.", registry=registry)
        self.batches_queued = Gauge(f"{p}_writer_queue_batches", "Batches waiting for a writer.", registry=registry)
        self.write_requests = Counter(
            f"{p}_write_requests_total",
            "Write requests to MLflow, by kind and outcome.",
            ["kind", "outcome"],
            registry=registry,
        )
        self.write_duration = Histogram(
            f"{p}_write_duration_seconds",
            "Duration of one write request to MLflow.",
            ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.spans_written = Counter(f"{p}_spans_written_total", "Spans MLflow acknowledged.", registry=registry)
        self.traces_written = Counter(
            f"{p}_traces_written_total", "Traces whose spans MLflow acknowledged.", registry=registry
        )
        self.events_received = Counter(
            f"{p}_events_received_total", "Feedback and bundle events received, by kind.", ["kind"], registry=registry
        )
        self.events_rejected = Counter(
            f"{p}_events_rejected_total",
            "Feedback and bundle events rejected as invalid, by kind.",
            ["kind"],
            registry=registry,
        )
        self.events_written = Counter(
            f"{p}_events_written_total", "Feedback and bundle events written, by kind.", ["kind"], registry=registry
        )
        self.events_dropped = Counter(
            f"{p}_events_dropped_total",
            "Feedback and bundle events dropped, by kind and reason.",
            ["kind", "reason"],
            registry=registry,
        )
        self.redactions = Counter(
            f"{p}_redactions_total",
            "PII values replaced before leaving the gateway, by entity (never the values).",
            ["entity"],
            registry=registry,
        )

        # -- sampling, rescue, contract ------------------------------------------------------
        self.sampling_decisions = Counter(
            f"{p}_sampling_decisions_total",
            "Sampling decisions on whole traces: kept with its first reason, or dropped (reason ratio).",
            ["decision", "reason"],
            registry=registry,
        )
        self.decision_latency = Histogram(
            f"{p}_decision_latency_seconds",
            "From a trace's first span arriving to its sampling decision.",
            buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0),
            registry=registry,
        )
        self.gc_pause = Histogram(
            f"{p}_gc_pause_seconds",
            "Garbage collections run by the sidecar's clock (TRACEGW_GC_INTERVAL_S), by generation (1 young, 2 full).",
            ["generation"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        self.rescue_traces = Gauge(
            f"{p}_rescue_traces", "Sampled-out traces held (redacted) for promotion by feedback.", registry=registry
        )
        self.rescue_bytes = Gauge(
            f"{p}_rescue_bytes", "Approximate bytes held by the rescue buffer.", registry=registry
        )
        self.rescue_evicted = Counter(
            f"{p}_rescue_evicted_total",
            "Traces that left the rescue buffer unpromoted, by reason (age, bytes).",
            ["reason"],
            registry=registry,
        )
        self.rescue_promoted = Counter(
            f"{p}_rescue_promoted_total",
            "Sampled-out traces promoted to stored, by reason (feedback).",
            ["reason"],
            registry=registry,
        )
        self.contract_violations = Counter(
            f"{p}_contract_violations_total",
            "Trace contract violations (spec §5), by rule.",
            ["rule"],
            registry=registry,
        )
        self.label_overflow = Counter(
            f"{p}_metric_label_overflow_total",
            "Business-metric label values reported as 'other' because the label reached its cap.",
            ["label"],
            registry=registry,
        )

        # -- business metrics on 100% of traffic, before sampling (spec §14) ---------------
        b, labels = BUSINESS_PREFIX, BUSINESS_LABELS
        self.requests = Counter(
            f"{b}_requests_total", "Customer-visible responses (one top-level trace each).", labels, registry=registry
        )
        self.request_errors = Counter(
            f"{b}_request_errors_total", "Responses whose trace has an ERROR span.", labels, registry=registry
        )
        self.sessions = Counter(
            f"{b}_sessions_total",
            "Distinct sessions seen per label set (cost per session's denominator); a session seen again after "
            "the gateway forgot it (TRACEGW_FEEDBACK_JOIN_MAX_TRACES-sized memory, or a restart) counts again.",
            labels,
            registry=registry,
        )
        self.request_latency = Histogram(
            f"{b}_request_latency_seconds",
            "Duration of the top-level handle_message span; exemplars carry trace_id.",
            labels,
            buckets=LATENCY_BUCKETS_S,
            registry=registry,
        )
        self.guardrail_verdicts = Counter(
            f"{b}_guardrail_verdicts_total",
            "Guardrail stage verdicts (pass, fail, block, redact), per stage.",
            ("stage", "verdict", *labels),
            registry=registry,
        )
        self.guardrail_fallbacks = Counter(
            f"{b}_guardrail_fallbacks_total",
            "Responses where a guardrail triggered the fallback answer.",
            labels,
            registry=registry,
        )
        self.grounding_failures = Counter(
            f"{b}_grounding_failures_total", "Responses whose grounding_check did not pass.", labels, registry=registry
        )
        self.bedrock_input_tokens = Counter(
            f"{b}_bedrock_input_tokens_total", "Bedrock input tokens.", labels, registry=registry
        )
        self.bedrock_output_tokens = Counter(
            f"{b}_bedrock_output_tokens_total", "Bedrock output tokens.", labels, registry=registry
        )
        self.bedrock_cost = Counter(
            f"{b}_bedrock_cost_usd_total",
            "Bedrock cost in US dollars, from the adapter's price table.",
            labels,
            registry=registry,
        )

        self.example_traces = Gauge(
            f"{b}_example_trace",
            "Example trace ids of stored traces per alert reason and pivot, for alert payloads (value: the "
            "Unix time the trace was kept; at most 3 per reason and pivot, 32 pivots; gateway/process/examples.py).",
            ["reason", "release_bundle", "prompt_version", "bedrock_model_id", "trace_id"],
            registry=registry,
        )

        # -- feedback (spec §10): business counter, joins, event stream -----------------------
        self.feedback = Counter(
            f"{b}_feedback_total",
            "Feedback events by the trace's intent, prompt version, release bundle, Bedrock model and verdict.",
            FEEDBACK_LABELS,
            registry=registry,
        )
        self.feedback_joins = Counter(
            f"{p}_feedback_joins_total",
            "Feedback by what the gateway knew of its trace: sampled_in, rescued, in_flight, orphan.",
            ["outcome"],
            registry=registry,
        )
        self.feedback_stream_records = Counter(
            f"{p}_feedback_stream_records_total",
            "Feedback records sent to the event stream, by outcome (ok, retried, dropped; replayed: found in its "
            "files at start, to send again).",
            ["outcome"],
            registry=registry,
        )
        self.feedback_stream_requests = Counter(
            f"{p}_feedback_stream_requests_total",
            "PutRecords requests, by outcome (ok, partial, throttled, retryable_error, permanent_error).",
            ["outcome"],
            registry=registry,
        )
        self.feedback_stream_duration = Histogram(
            f"{p}_feedback_stream_request_duration_seconds",
            "Duration of one PutRecords request.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=registry,
        )
        self.feedback_stream_queue = Gauge(
            f"{p}_feedback_stream_queue_events", "Feedback events waiting for the event stream.", registry=registry
        )

        # -- durable delivery -------------------------------------------------------------
        self.spool_segments = Gauge(
            f"{p}_spool_segments", "Segments (batches, events) in the disk spool awaiting MLflow.", registry=registry
        )
        self.spool_bytes = Gauge(f"{p}_spool_bytes", "Bytes in the disk spool.", registry=registry)
        self.spool_writes = Counter(
            f"{p}_spool_writes_total", "Spool writes by outcome (ok, full, error).", ["outcome"], registry=registry
        )
        self.spool_replayed = Counter(
            f"{p}_spool_replayed_total", "Segments found in the spool at start and replayed.", registry=registry
        )
        self.spool_quarantined = Counter(
            f"{p}_spool_quarantined_total", "Spool files set aside as torn or corrupt.", ["reason"], registry=registry
        )
        # -- write-ahead log (gateway/export/wal.py) ----------------------------------------
        self.wal_appends = Counter(
            f"{p}_wal_appends_total",
            "RPC records appended to the write-ahead log, by outcome (ok; full: refused, over "
            "TRACEGW_WAL_MAX_BYTES; error: the disk refused, RPC refused).",
            ["outcome"],
            registry=registry,
        )
        self.wal_refused = Counter(
            f"{p}_wal_refused_items_total",
            "Spans and events refused because the WAL could not take their RPC (full; error: the disk refused).",
            ["kind", "reason"],
            registry=registry,
        )
        self.wal_fsyncs = Counter(f"{p}_wal_fsyncs_total", "Group-commit fsyncs of the WAL.", registry=registry)
        self.wal_group_size = Histogram(
            f"{p}_wal_group_records",
            "Records made durable by one group commit.",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
            registry=registry,
        )
        self.wal_bytes = Gauge(f"{p}_wal_bytes", "Bytes in the write-ahead log.", registry=registry)
        self.wal_segments = Gauge(f"{p}_wal_segments", "Segments in the write-ahead log.", registry=registry)
        self.wal_segments_released = Counter(
            f"{p}_wal_segments_released_total",
            "WAL segments deleted because everything they held was settled.",
            registry=registry,
        )
        self.wal_unreadable = Counter(
            f"{p}_wal_unreadable_total",
            "WAL segments that could not be replayed whole (torn: a tail the process died writing, never "
            "acknowledged; corrupt; wrong_key: set aside in <wal dir>/quarantine; undecodable: one record skipped).",
            ["reason"],
            registry=registry,
        )
        self.wal_replayed_records = Counter(
            f"{p}_wal_replayed_records_total", "WAL records found at start and fed through again.", registry=registry
        )
        self.wal_replayed_spans = Counter(
            f"{p}_wal_replayed_spans_total",
            "Spans fed through again from the WAL at start (not counted in spans_received or business metrics).",
            registry=registry,
        )
        self.wal_replayed_events = Counter(
            f"{p}_wal_replayed_events_total",
            "Feedback and bundle events fed through again from the WAL at start.",
            ["kind"],
            registry=registry,
        )
        self.wal_replay_seconds = Gauge(
            f"{p}_wal_replay_seconds", "How long the last start's WAL replay took.", registry=registry
        )
        self.wal_kept = Counter(
            f"{p}_wal_kept_at_shutdown_total",
            "Items not delivered or spooled by the shutdown deadline that stay in the WAL for the next start "
            "(not lost: without the WAL they would count as dropped, reason shutdown).",
            ["kind"],
            registry=registry,
        )
        self.dead_letter = Counter(
            f"{p}_dead_letter_total",
            "Segments moved to the dead-letter directory, by kind and reason.",
            ["kind", "reason"],
            registry=registry,
        )
        self.write_retries = Counter(
            f"{p}_write_retries_total",
            "Retries scheduled after retryable MLflow errors, by kind.",
            ["kind"],
            registry=registry,
        )
        self.write_auth_failures = Counter(
            f"{p}_write_auth_failures_total",
            "Writes the tracking server refused for the gateway's own MLflow credentials (HTTP 401 "
            "unauthenticated, 403 permission denied), by kind and status; retried like an outage.",
            ["kind", "status"],
            registry=registry,
        )
        self.trace_links = Counter(
            f"{p}_trace_links_total",
            "Links of stored traces to their release bundle's LoggedModel (kind model) and prompt version "
            "(kind prompt), by outcome (ok, retried, failed, invalid).",
            ["kind", "outcome"],
            registry=registry,
        )
        self.trace_links_pending = Gauge(
            f"{p}_trace_links_pending",
            "Stored traces whose links wait to be made (bounded by TRACEGW_TRACE_LINKS_MAX_PENDING).",
            registry=registry,
        )
        self.batch_splits = Counter(
            f"{p}_batch_splits_total",
            "Batches MLflow rejected that were split to isolate a poison trace.",
            registry=registry,
        )
        self.circuit_state = Gauge(
            f"{p}_circuit_state", "Circuit breaker towards MLflow: 0 closed, 1 half-open, 2 open.", registry=registry
        )
        self.circuit_transitions = Counter(
            f"{p}_circuit_transitions_total", "Circuit breaker state changes, by new state.", ["to"], registry=registry
        )
        self.requests_malformed = Counter(
            f"{p}_requests_malformed_total",
            "Requests protobuf could not parse (answered INVALID_ARGUMENT), by RPC.",
            ["rpc"],
            registry=registry,
        )
        self.requests_unauthorized = Counter(
            f"{p}_requests_unauthorized_total",
            "RPCs refused for their credentials, by RPC and reason (unauthenticated, permission_denied).",
            ["rpc", "reason"],
            registry=registry,
        )
        self.requests_too_large = Counter(
            f"{p}_requests_too_large_total",
            "Event requests over TRACEGW_MAX_EVENT_MESSAGE_BYTES (answered RESOURCE_EXHAUSTED), by RPC.",
            ["rpc"],
            registry=registry,
        )
        self.experiments_refused = Counter(
            f"{p}_experiments_refused_total",
            "Spans rejected for the experiment their request named, by reason (not_allowed, cap).",
            ["reason"],
            registry=registry,
        )
        self.span_turn_stepped_aside = Counter(
            f"{p}_span_turn_stepped_aside_total",
            "Span batches that failed TRACEGW_SPAN_TURN_MAX_ATTEMPTS writes and stopped holding later batches back.",
            registry=registry,
        )
        self.redaction_offloaded = Counter(
            f"{p}_redaction_offloaded_traces_total",
            "Traces larger than TRACEGW_REDACTION_OFFLOAD_BYTES, redacted on a worker thread.",
            registry=registry,
        )
        self.events_refused = Counter(
            f"{p}_events_refused_total",
            "Feedback and bundle events refused with RESOURCE_EXHAUSTED before they were acknowledged, "
            "by kind and reason (memory, queue_full).",
            ["kind", "reason"],
            registry=registry,
        )
        self.refused = Counter(
            f"{p}_refused_total",
            "Requests refused with RESOURCE_EXHAUSTED (memory limit), by receiver.",
            ["receiver"],
            registry=registry,
        )
        self.refused_spans = Counter(
            f"{p}_refused_spans_total",
            "Spans in requests refused with RESOURCE_EXHAUSTED, by receiver.",
            ["receiver"],
            registry=registry,
        )
        self.metrics_http_refused = Counter(
            f"{p}_metrics_http_refused_total",
            "Connections to the /metrics port closed without their answer, by reason (connections, "
            "timeout, too_large, bad_request, write_timeout).",
            ["reason"],
            registry=registry,
        )
        self.memory_rss = Gauge(f"{p}_memory_rss_bytes", "Resident memory of the gateway process.", registry=registry)
        self.memory_state = Gauge(
            f"{p}_memory_state",
            "Memory guard: 0 ok, 1 shedding sampled-out traces, 2 refusing new data.",
            registry=registry,
        )

    def drop_spans(self, stage: str, reason: str, count: int) -> None:
        assert reason in DROP_REASONS, reason
        if count:
            self.dropped_spans.labels(stage, reason).inc(count)


class Children:
    """A labelled metric's children, each looked up once: ``labels()`` costs ~1 µs, too much for
    a call per trace on the pipeline's hot path. ``Children(metric)("root").inc()``."""

    __slots__ = ("_children", "_metric")

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def __call__(self, *values: str) -> Any:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self._metric.labels(*values)
        return child
