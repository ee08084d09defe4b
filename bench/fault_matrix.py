"""The fault matrix's headline scenarios with bigger numbers, as a table.

Starts a real ``mlflow server`` (SQLite, in a temporary directory), a loopback fault proxy in
front of it and real gateway processes behind the proxy, then runs:

- ``outage``:   MLflow unreachable for 60 s under steady load, then back; the application's
                per-request tracing cost before, during and after the outage;
- ``sigterm``:  the gateway SIGTERMed under steady load while MLflow is unreachable, restarted
                with MLflow back: the drain's backlog replayed from the spool;
- ``sigkill``:  the gateway SIGKILLed under steady load (spool fsync ``always``) and restarted;
                the loss, against what was not yet durable at the kill;
- ``overload``: more traffic than the memory limit allows; peak RSS against the hard limit,
                refusals, and the application's cost;
- ``sigkill-otel``: OpenTelemetry's own Python SDK (BatchSpanProcessor + OTLP/gRPC exporter) sends
                ``--otel-traces`` traces at ``--rate``; MLflow unreachable for 30 s, the gateway
                SIGKILLed 10 s into it and restarted on the same spool (WAL replay). Counted per
                span id: acknowledged (export() SUCCESS) or given up by the client, against MLflow's
                ``spans`` table; acknowledged but not landed is LOST (must be 0).

    python bench/fault_matrix.py [--outage-s 60] [--rate 50] [--only outage,sigterm,sigkill,overload,sigkill-otel]

Prints one line per scenario as it ends, then a table: scenario, sent, landed, dropped by
reason, lost, peak RSS, time to drain (spans unless said otherwise).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opentelemetry import trace as otel_trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Status, StatusCode, format_span_id, format_trace_id

# The scenarios live beside the tests (tests/faults/harness.py); run from a checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orchestrator.tools.traffic import Plan, plan_requests, trace_tags
from tests.faults.harness import (
    Figures,
    Poll,
    Rig,
    hold,
    run_outage,
    run_overload,
    run_sigkill,
    run_sigterm,
    start_mlflow,
)

SCENARIOS = ("outage", "sigterm", "sigkill", "overload", "sigkill-otel")


# -- sigkill-otel: the OpenTelemetry SDK's own exporter through a SIGKILL during an MLflow outage --


class RetryLog(logging.Handler):
    """Counts the OTLP exporter's own log records instead of printing them: each "Transient error
    ... retrying" warning is one retry (kept with its ``time.monotonic()``)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.retries: list[float] = []
        self.errors = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR:
            self.errors += 1
        elif record.getMessage().startswith("Transient error"):
            self.retries.append(time.monotonic())


class CountingExporter(SpanExporter):
    """Delegates to ``OTLPSpanExporter`` and records, per span, whether the gateway acknowledged the
    batch it was in (``export()`` returned SUCCESS) or the exporter gave up on it (FAILURE, after its
    own retries), with when each batch was tried (``time.monotonic()``)."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner
        self.acked: set[tuple[str, str]] = set()
        self.gave_up: set[tuple[str, str]] = set()
        self.batches: list[tuple[float, float, bool, list[tuple[str, str]]]] = []
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        t0 = time.monotonic()
        try:
            result = self.inner.export(spans)
        except Exception:  # counted as given up, as the BatchSpanProcessor would drop it
            result = SpanExportResult.FAILURE
        t1 = time.monotonic()
        ids = [(format_trace_id(s.context.trace_id), format_span_id(s.context.span_id)) for s in spans if s.context]
        ok = result is SpanExportResult.SUCCESS
        with self._lock:
            (self.acked if ok else self.gave_up).update(ids)
            self.batches.append((t0, t1, ok, ids))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


@dataclass(frozen=True, slots=True)
class OtelSent:
    trace_id: str
    span_ids: tuple[str, ...]
    started: float  # time.monotonic()
    ended: float


def _otel_message(tracer: otel_trace.Tracer, p: Plan) -> tuple[str, list[str]]:
    """``orchestrator.tools.traffic.handle_message``'s span tree (17 spans, 16 without Bedrock) on
    the OpenTelemetry API, with MLflow's attribute keys (span type, inputs/outputs, trace tags)."""
    ids: list[str] = []

    @contextlib.contextmanager
    def span(name: str, span_type: str = "UNKNOWN", **attrs: Any) -> Iterator[otel_trace.Span]:
        with tracer.start_as_current_span(name, attributes={"mlflow.spanType": json.dumps(span_type), **attrs}) as s:
            ids.append(format_span_id(s.get_span_context().span_id))
            yield s

    tags = trace_tags(p)
    with span(
        "handle_message",
        "CHAIN",
        request_id=p.request_id,
        session_id=p.session_id,
        page_type=p.page_type,
        customer_locale=p.locale,
        **{"mlflow.spanInputs": json.dumps({"message": p.message, "page_type": p.page_type})},
    ) as root:
        with span("load_context", history_turns=2):
            pass
        with span("intent_classification", "CHAIN", classifier="manga-intent-classifier", confidence=0.93):
            pass
        root.set_attributes({f"mlflow.traceTag.{k}": v for k, v in tags.items()})
        with span("route_intent", route=p.intent, uses_bedrock=p.uses_bedrock):
            pass
        with span("retrieve_chunks", "RETRIEVER", query_hash=p.request_id[-8:], retriever_policy_version="rag-v5") as r:
            with span("embed_query", "EMBEDDING", dimensions=1024):
                pass
            with span("vector_search", "RETRIEVER", k=20, candidates=20):
                pass
            with span("keyword_search", "RETRIEVER", k=20, candidates=14):
                pass
            with span("rerank_chunks", "RERANKER", reranker_model_version="manga-reranker-4", kept=len(p.chunk_ids)):
                pass
            r.set_attributes({"chunk_ids": list(p.chunk_ids), "chunk_source_types": list(p.chunk_sources)})
        with span("build_prompt", prompt_version=p.prompt_version):
            pass
        reply = p.reply
        if p.uses_bedrock:
            with span("bedrock_generate", "LLM", provider="bedrock", bedrock_model_id=p.model_id) as gen:
                if p.fail_bedrock:
                    gen.set_status(Status(StatusCode.ERROR, "ThrottlingException: rate exceeded"))
                    root.set_status(Status(StatusCode.ERROR, "bedrock_generate failed: throttled"))
                    reply = "Sorry, I could not answer that right now."
                else:
                    gen.set_attributes({"input_tokens": p.input_tokens, "output_tokens": p.output_tokens})
        with span("apply_guardrails", "GUARDRAIL"):
            for stage in ("prompt_injection", "pii_detection", "grounding_check", "format_validation"):
                blocked = p.guardrail_block and stage == "grounding_check"
                with span(stage, "GUARDRAIL", passed=not blocked, score=0.2 if blocked else 0.97):
                    pass
        with span("persist_response", store="dynamodb"):
            pass
        root.set_attribute("mlflow.spanOutputs", json.dumps({"reply": reply}))
        return format_trace_id(root.get_span_context().trace_id), ids


class OtelLoad:
    """``_otel_message`` at ``rate_per_s`` in a thread: ``max_traces`` traces, at most ``max_seconds``."""

    def __init__(self, tracer: otel_trace.Tracer, rate_per_s: float, max_traces: int, max_seconds: float) -> None:
        self.tracer = tracer
        self.rate_per_s = rate_per_s
        self.max_seconds = max_seconds
        self._plans = plan_requests(max_traces, seed=11, feedback_rate=0.0)
        self.sent: list[OtelSent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="otel-load", daemon=True)
        self.started_at = 0.0

    def start(self) -> OtelLoad:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        next_at = self.started_at
        for plan in self._plans:
            if self._stop.is_set() or time.monotonic() - self.started_at > self.max_seconds:
                break
            started = time.monotonic()
            trace_id, ids = _otel_message(self.tracer, plan)
            self.sent.append(OtelSent(trace_id, tuple(ids), started, time.monotonic()))
            next_at += 1.0 / self.rate_per_s
            if (delay := next_at - time.monotonic()) > 0:
                self._stop.wait(delay)

    def wait_done(self, timeout_s: float) -> None:
        self._thread.join(timeout=timeout_s)
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join(timeout=10)


def run_sigkill_otel(
    rig: Rig,
    traces: int,
    rate_per_s: float,
    exporter_timeout_s: float,
    before_s: float = 10.0,
    down_s: float = 30.0,
    kill_after_s: float = 10.0,
    land_timeout_s: float = 120.0,
) -> tuple[str, Figures]:
    """OpenTelemetry's Python SDK (BatchSpanProcessor + OTLP/gRPC exporter) sends ``traces`` traces
    at ``rate_per_s``; MLflow unreachable for ``down_s`` from ``before_s`` in; ``kill_after_s`` into
    the outage the gateway is SIGKILLed and restarted on the same spool. Accounting per span id:
    what the gateway acknowledged against what is in MLflow's ``spans`` table."""
    exporter_log = logging.getLogger("opentelemetry.exporter.otlp.proto.grpc.exporter")
    retry_log = RetryLog()
    exporter_log.addHandler(retry_log)
    exporter_log.propagate = False
    gw = rig.start_gateway(TRACEGW_SPOOL_FSYNC="always", TRACEGW_WAL_FSYNC="always")
    rig.warm_up()
    counting = CountingExporter(OTLPSpanExporter(endpoint=gw.target, insecure=True, timeout=exporter_timeout_s))
    provider = TracerProvider(resource=Resource.create({"service.name": "mangaassist-orchestrator"}))
    # A queue that cannot fill (3,000 traces are ~50,000 spans): every span the SDK produced reaches
    # the exporter, so produced = acknowledged + given up (``sdk_unexported`` checks it).
    processor = BatchSpanProcessor(
        counting, max_queue_size=1 << 17, schedule_delay_millis=200, max_export_batch_size=512
    )
    provider.add_span_processor(processor)
    poll = Poll(rig)
    load = OtelLoad(provider.get_tracer("mangaassist"), rate_per_s, traces, max_seconds=traces / rate_per_s + 60)
    load.start()
    hold(before_s)
    t_down = time.monotonic()
    rig.proxy.down()
    hold(kill_after_s, on_tick=poll)
    before_kill = poll.last
    t_kill = time.monotonic()
    gw.kill()
    rig.start_gateway()
    t_ready = time.monotonic()
    hold(max(0.0, down_s - (time.monotonic() - t_down)))
    rig.proxy.up()
    t_up = time.monotonic()
    load.wait_done(timeout_s=traces / rate_per_s + 90)
    t_flush = time.monotonic()
    provider.force_flush()
    provider.shutdown()
    t_flushed = time.monotonic()
    exporter_log.removeHandler(retry_log)
    exporter_log.propagate = True

    trace_ids = [s.trace_id for s in load.sent]
    produced = {(s.trace_id, sid) for s in load.sent for sid in s.span_ids}
    acked, gave_up = counting.acked & produced, counting.gave_up & produced
    deadline = time.monotonic() + land_timeout_s
    landed = rig.store.span_ids(trace_ids)
    while acked - landed and time.monotonic() < deadline:
        time.sleep(1.0)
        landed = rig.store.span_ids(trace_ids)
    t_landed = time.monotonic()
    metrics = gw.try_metrics()
    lost = acked - landed
    extras = landed - acked
    gw_dropped = metrics.by_label("tracegw_spans_dropped_total", "stage", "reason") if metrics else {}
    dropped_before = before_kill.by_label("tracegw_spans_dropped_total", "stage", "reason") if before_kill else {}
    gave_up_batches = [(t0, t1) for t0, t1, ok, _ in counting.batches if not ok]
    slowest = max(counting.batches, key=lambda b: b[1] - b[0])
    retries = retry_log.retries
    retried = (
        f"{len(retries)} retries at {min(retries) - t_kill:+.1f}..{max(retries) - t_kill:+.1f}s from the kill"
        if retries
        else "0 retries"
    )
    line = (
        f"[fault-matrix] sigkill-otel: traces={len(load.sent)} spans={len(produced)} acked={len(acked)} "
        f"gave_up={len(gave_up)} landed={len(landed)} LOST={len(lost)} (acked, not in MLflow, by span id) "
        f"extras={len(extras)} (in MLflow, not acked; {len(extras & gave_up)} of them given up by the client) "
        f"sdk_unexported={len(produced - acked - gave_up)} "
        f"wal_replayed_records={int(metrics.value('tracegw_wal_replayed_records_total')) if metrics else '?'} "
        f"wal_replayed_spans={int(metrics.value('tracegw_wal_replayed_spans_total')) if metrics else '?'} "
        f"wal_replay_s={round(metrics.value('tracegw_wal_replay_seconds'), 3) if metrics else '?'} "
        f"gw_dropped={ {k: int(v) for k, v in gw_dropped.items()} } "
        f"gw_dropped_before_kill={ {k: int(v) for k, v in dropped_before.items()} } "
        f"exporter_timeout={exporter_timeout_s:g}s (UNAVAILABLE retried with backoff within it, then given up: "
        f"{retried}, {len(gave_up_batches)} batches given up; slowest export {slowest[1] - slowest[0]:.1f}s "
        f"from {slowest[0] - t_kill:+.1f}s) restart_gap={t_ready - t_kill:.1f}s "
        f"kill_at={t_kill - load.started_at:.1f}s mlflow_down={t_down - load.started_at:.1f}-"
        f"{t_up - load.started_at:.1f}s flush={t_flushed - t_flush:.1f}s landed_after={t_landed - t_flushed:.1f}s"
    )
    if lost:
        held = (
            f"  after {land_timeout_s:g}s the gateway still held: spool segments "
            f"{metrics.value('tracegw_spool_segments'):g}, "
            f"writer batches {metrics.value('tracegw_writer_queue_batches'):g}, "
            f"traces in assembly {metrics.value('tracegw_assembly_traces_in_flight'):g} (non-zero: late, not lost)"
            if metrics
            else "  no metrics from the restarted gateway"
        )
        line += "\n" + held + "\n" + _explain_lost(lost, counting, load, t_kill, t_ready)
    incomplete_traces = {t for t, _ in lost}
    figures = Figures(
        scenario="sigkill-otel",
        traces=len(load.sent),
        produced=len(produced),
        client_sent=len(acked),
        client_dropped={"gave_up": len(gave_up)} if gave_up else {},
        landed=len(acked & landed),
        gateway_dropped=gw_dropped,
        traces_landed=len(load.sent) - len(incomplete_traces),
        incomplete={t: 0 for t in incomplete_traces},
        drain_s=t_landed - t_up,
        extra={"extras": len(extras)},
    )
    return line, figures


def _explain_lost(
    lost: set[tuple[str, str]], counting: CountingExporter, load: OtelLoad, t_kill: float, t_ready: float
) -> str:
    """Where the lost spans were: the batches that carried them, timed against the kill."""
    ended = {s.trace_id: s.ended for s in load.sent}
    out = []
    for t0, t1, ok, ids in counting.batches:
        hit = lost & set(ids)
        if hit:
            out.append(
                f"  batch of {len(ids)} ({'acked' if ok else 'given up'}) "
                f"tried {t0 - t_kill:+.2f}s..{t1 - t_kill:+.2f}s "
                f"from the kill (gateway ready at {t_ready - t_kill:+.2f}s): {len(hit)} lost spans of "
                f"{len({t for t, _ in hit})} traces ending {min(ended[t] for t, _ in hit) - t_kill:+.2f}s.."
                f"{max(ended[t] for t, _ in hit) - t_kill:+.2f}s"
            )
    return "\n".join(out)


def _table(rows: list[Figures]) -> str:
    header = ("scenario", "traces", "sent", "landed", "dropped by reason", "lost", "peak RSS", "drain")
    lines = [header]
    for f in rows:
        drops = (
            ", ".join(
                [f"client {k}={v}" for k, v in f.client_dropped.items() if v]
                + [f"gw {k}={int(v)}" for k, v in f.gateway_dropped.items() if v]
            )
            or "-"
        )
        lines.append(
            (
                f.scenario,
                str(f.traces),
                str(f.client_sent),
                str(f.landed),
                drops,
                f.lost_text(),
                f"{f.peak_rss_bytes / 2**20:.0f} MiB" if f.peak_rss_bytes else "-",
                f"{f.drain_s:.1f} s" if f.drain_s is not None else "-",
            )
        )
    widths = [max(len(row[i]) for row in lines) for i in range(len(header))]
    out = ["| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) + " |" for row in lines]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fault_matrix", description=__doc__.split("\n\n")[0])
    parser.add_argument("--outage-s", type=float, default=60.0, help="MLflow outage length (default %(default)s)")
    parser.add_argument("--rate", type=float, default=50.0, help="steady load, requests/s (default %(default)s)")
    parser.add_argument("--overload-rate", type=float, default=250.0, help="overload, requests/s (default %(default)s)")
    parser.add_argument("--soft-mib", type=int, default=150, help="memory soft limit (default %(default)s)")
    parser.add_argument("--hard-mib", type=int, default=200, help="memory hard limit (default %(default)s)")
    parser.add_argument("--otel-traces", type=int, default=3000, help="sigkill-otel traces (default %(default)s)")
    parser.add_argument(
        "--otel-timeout-s",
        type=float,
        default=30.0,
        help="sigkill-otel: the OTLP exporter's timeout, its retries included (default %(default)s)",
    )
    parser.add_argument("--only", default=",".join(SCENARIOS), help=f"comma list of {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(SCENARIOS))
    if unknown:
        parser.error(f"unknown scenarios: {', '.join(unknown)}")

    rows: list[Figures] = []
    with tempfile.TemporaryDirectory(prefix="fault-matrix-") as tmp:
        workdir = Path(tmp)
        server, db = start_mlflow(workdir / "mlflow")
        try:
            for name in chosen:
                with Rig(server, db, workdir / name, experiment=f"fault-matrix-{name}") as rig:
                    if name == "sigkill-otel":
                        line, figures = run_sigkill_otel(
                            rig, args.otel_traces, args.rate, exporter_timeout_s=args.otel_timeout_s
                        )
                        print(line, flush=True)
                        rows.append(figures)
                        continue
                    if name == "outage":
                        out = run_outage(
                            rig,
                            f"mlflow down {args.outage_s:g}s",
                            outage_s=args.outage_s,
                            rate_per_s=args.rate,
                            before_s=10,
                            after_s=5,
                            settle_timeout_s=300,
                        )
                    elif name == "sigterm":
                        out = run_sigterm(
                            rig,
                            "gateway SIGTERM + restart",
                            rate_per_s=args.rate,
                            before_s=10,
                            down_s=5,
                            after_s=5,
                            settle_timeout_s=180,
                        )
                    elif name == "sigkill":
                        out = run_sigkill(
                            rig,
                            "gateway SIGKILL + restart",
                            rate_per_s=args.rate,
                            before_s=10,
                            after_s=5,
                            settle_timeout_s=120,
                        )
                    else:
                        out = run_overload(
                            rig,
                            "overload above memory limit",
                            args.soft_mib * 2**20,
                            args.hard_mib * 2**20,
                            rate_per_s=args.overload_rate,
                            sustain_s=15,
                            max_s=90,
                        )
                print(out.figures.line(), flush=True)
                rows.append(out.figures)
        finally:
            server.stop()
    print()
    print(_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
