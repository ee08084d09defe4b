"""Every Prometheus metric of the gateway, built on an injected registry (a fresh one per
test). Names follow Prometheus conventions: counters end in ``_total``, durations are
``_seconds``, sizes ``_bytes``; every drop carries a ``reason`` label from a known set.

Pipeline self-metrics (what each stage took in, passed on and dropped) sit beside delivery
metrics (write requests, their latency, spans written). The business metrics of spec section 14,
computed on 100% of traffic before sampling, come with the sampling issue.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

PREFIX = "tracegw"

# Every reason a span, trace or event can be dropped; labels outside this set are a bug.
DROP_REASONS = frozenset({
    "invalid",            # rejected at receive (partial success names the field)
    "span_limit",         # more spans in one trace than allowed
    "sampled_out",        # head/tail sampling chose not to store the trace
    "writer_queue_full",  # no room for another batch waiting for a writer
    "write_failed",       # MLflow answered an error or could not be reached
    "shutdown",           # still held when the drain deadline passed
    "trace_not_found",    # feedback whose trace never reached MLflow within the join window
})


class GatewayMetrics:
    """All metric objects, registered on ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        disable_created_metrics()  # *_created series double the scrape for no use here
        self.registry = registry
        p = PREFIX
        self.spans_received = Counter(
            f"{p}_spans_received_total", "Spans received, by receiver (native, otlp).",
            ["receiver"], registry=registry)
        self.spans_rejected = Counter(
            f"{p}_spans_rejected_total", "Spans rejected at receive as invalid, by receiver.",
            ["receiver"], registry=registry)
        self.reserved_keys_stripped = Counter(
            f"{p}_reserved_keys_stripped_total",
            "Application-sent attributes or tags under the reserved mlflow. prefix that were removed.",
            registry=registry)
        self.stage_in = Counter(
            f"{p}_stage_traces_in_total", "Traces entering a pipeline stage.", ["stage"], registry=registry)
        self.stage_out = Counter(
            f"{p}_stage_traces_out_total", "Traces leaving a pipeline stage.", ["stage"], registry=registry)
        self.dropped_spans = Counter(
            f"{p}_spans_dropped_total", "Spans dropped, by stage and reason.", ["stage", "reason"],
            registry=registry)
        self.traces_assembled = Counter(
            f"{p}_traces_assembled_total",
            "Traces handed on by assembly, by how they ended (root, timeout, evicted, late).",
            ["outcome"], registry=registry)
        self.traces_in_flight = Gauge(
            f"{p}_assembly_traces_in_flight", "Traces waiting in assembly.", registry=registry)
        self.spans_in_flight = Gauge(
            f"{p}_assembly_spans_in_flight", "Spans held in assembly.", registry=registry)
        self.batches_queued = Gauge(
            f"{p}_writer_queue_batches", "Batches waiting for a writer.", registry=registry)
        self.write_requests = Counter(
            f"{p}_write_requests_total", "Write requests to MLflow, by kind and outcome.",
            ["kind", "outcome"], registry=registry)
        self.write_duration = Histogram(
            f"{p}_write_duration_seconds", "Duration of one write request to MLflow.", ["kind"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0), registry=registry)
        self.spans_written = Counter(
            f"{p}_spans_written_total", "Spans MLflow acknowledged.", registry=registry)
        self.traces_written = Counter(
            f"{p}_traces_written_total", "Traces whose spans MLflow acknowledged.", registry=registry)
        self.events_received = Counter(
            f"{p}_events_received_total", "Feedback and bundle events received, by kind.", ["kind"],
            registry=registry)
        self.events_rejected = Counter(
            f"{p}_events_rejected_total", "Feedback and bundle events rejected as invalid, by kind.",
            ["kind"], registry=registry)
        self.events_written = Counter(
            f"{p}_events_written_total", "Feedback and bundle events written, by kind.", ["kind"],
            registry=registry)
        self.events_dropped = Counter(
            f"{p}_events_dropped_total", "Feedback and bundle events dropped, by kind and reason.",
            ["kind", "reason"], registry=registry)

    def drop_spans(self, stage: str, reason: str, count: int) -> None:
        assert reason in DROP_REASONS, reason
        if count:
            self.dropped_spans.labels(stage, reason).inc(count)
