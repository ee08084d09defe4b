"""Delivery into a real MLflow server: traces/s landed and traces lost, three ways.

Each alternative writes the same N realistic MangaAssist traces (``orchestrator.tools.traffic``'s
Bedrock-route plans: the spec §5 tree, 17 spans, tags, inputs, outputs) into a **fresh**
``mlflow server`` (SQLite, ``--workers 1``, no job runner; ``tests.support.MlflowServer``):

- ``ceiling-n``     the server's own batched ingest: the traces, pre-built by the gateway's own
                    stages (assembly, measure, contract, redaction, sampling at 1.0) and encoded
                    with its OTLP encoder (``gateway.export.otlp_encode``), POSTed to ``/v1/traces`` in
                    requests of 100 traces by n threads (one cell per ``--ceiling-senders`` value)
                    as fast as the server answers. Payloads are built before the clock starts.
- ``gateway``       this project's client (``clients.Tracer``) -> a ``tracegw serve`` subprocess
                    (``tests.faults.harness.GatewayProcess``; sampling 1.0, disk spool, every other
                    setting at its default unless ``--gateway-env`` says otherwise) -> the server;
                    ``--variant`` adds gateway cells with other settings, for tuning.
- ``mlflow_async``  MLflow 3.17's own SDK in a child process, ``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=true``
                    (driven as in ``bench/request_path.py``), writing to the server.

The application side offers the traces at ``--rate`` traces/s (far above what the server
ingests, so the server is the bottleneck; the ceiling has no producer). Before the clock starts
each alternative lands ``WARMUP`` traces (experiment created, connections open).

Landed: a trace with a ``trace_info`` row, all its 17 spans and its ``intent`` tag, read from
the server's SQLite file. Throughput: landed traces ÷ (last landed - first send), where "last
landed" is the moment a poller (every ``POLL_S``) last saw the trace or span row count change.
Lost: sent - landed - counted as dropped (the client's and the gateway's drop counters; MLflow's
SDK counts nothing, it logs one "queue is full" warning per 30 s; the bench shows the export
tasks its queue discarded, by wrapping ``AsyncTraceExportQueue.put``, but cannot map them to
traces). A trace that landed partially counts as lost. The settle ends when all traces landed,
when nothing changed for ``--stall-s``, or after ``--settle-timeout-s``. Each cell also reports
the CPU the server (and the gateway) used while the traces landed, from ``/proc``.

``--pin`` (the default on two or more CPUs) gives the server CPU 1 to itself and puts everything
else on CPU 0, as if the server ran on a host of its own, as it does in production: unpinned,
the application and the gateway of the gateway cell take CPU time and cache from the server on
this 2-core machine while the ceiling's pre-built requests take none, and the server then spent
1 to 16% more CPU per trace in the gateway cells than in the ceiling's (seen in three runs).

Alternatives are interleaved over ``--rounds`` rounds (the order rotates); the table gives
medians and the ratios of the medians; the bar compares the gateway with the best ceiling.

    python bench/delivery.py [--traces 2000] [--rounds 3] [--rate 300] [--only ceiling,gateway,mlflow_async]
                             [--ceiling-senders 1,2] [--variant NAME:TRACEGW_X=V,...] [--no-pin]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests/ and bench/ are not installed packages
    sys.path.insert(0, str(ROOT))

ALTERNATIVES = ("ceiling", "gateway", "mlflow_async")
EXPERIMENT = "bench-delivery"
SPANS_PER_TRACE = 17
TRACES_PER_REQUEST = 100
WARMUP = 5
POLL_S = 0.1
SEED = 23


# -- the traces -------------------------------------------------------------------------------


def plans(count: int, seed: int) -> list[Any]:
    from bench.request_path import bedrock_plans

    return bedrock_plans(count, seed)


def paced(items: list[Any], rate: float, max_seconds: float, fn: Callable[[Any], Any]) -> tuple[list[Any], float]:
    """Call ``fn`` on each item at ``rate``/s (no catching up faster), bounded by ``max_seconds``.
    Returns the results and the wall-clock time of the first call."""
    out = []
    period = 1.0 / rate
    tick = threading.Event()
    start = time.perf_counter()
    t_first = time.time()
    for i, item in enumerate(items):
        now = time.perf_counter()
        if now - start > max_seconds:
            break
        target = start + i * period
        if target > now:
            tick.wait(target - now)
        out.append(fn(item))
    return out, t_first


def ceiling_payloads(count: int, seed: int, per_request: int) -> tuple[list[bytes], list[str]]:
    """The traces as the gateway would write them: recorded with the client, decoded, assembled,
    through the gateway's stages at ratio 1.0, encoded by ``gateway.export.otlp_encode`` ``per_request``
    traces per request. Returns the serialized requests and the trace ids."""
    from prometheus_client import CollectorRegistry

    from clients import ClientConfig, Tracer
    from clients.encode import encode_span
    from gateway import config as config_mod
    from gateway.export.otlp_encode import encode_traces
    from gateway.metrics import GatewayMetrics
    from gateway.process.assembler import Assembler
    from gateway.process.chain import StageChain
    from gateway.process.contract import ContractChecker
    from gateway.process.measure import Measure
    from gateway.process.redactor import Redactor
    from gateway.process.sampler import Sampler
    from gateway.receive.decode_spans import decode_native_spans
    from orchestrator.tools.traffic import handle_message

    cfg = config_mod.load({"MLFLOW_TRACE_SAMPLING_RATIO": "1.0", "MLFLOW_EXPERIMENT_NAME": EXPERIMENT})
    metrics = GatewayMetrics(CollectorRegistry())
    # A tracer whose sender never wakes: the finished spans are taken from its queue.
    tracer = Tracer(
        ClientConfig(
            target="127.0.0.1:9",
            flush_interval_s=3600.0,
            encode_interval_s=3600.0,
            max_queue_spans=10**6,
            max_batch_spans=10**6,
        )
    )
    wire: list[Any] = []
    for p in plans(count, seed):
        handle_message(tracer, p)
        wire.extend(encode_span(s) for s in tracer._sink.queue)
        tracer._sink.queue.clear()
    tracer.shutdown(0.1)
    decoded = decode_native_spans(wire)
    assert not decoded.rejections, decoded.rejections[:3]
    assembler = Assembler(cfg.assembly, metrics)
    assembler.add(decoded.spans, EXPERIMENT)
    chain = StageChain(
        [
            Measure(metrics, cfg.metrics.max_label_values),
            ContractChecker(cfg.contract, metrics),
            Redactor(cfg.redaction, metrics),
            Sampler(cfg.sampling, metrics),
        ],
        metrics,
    )
    traces = chain.run(assembler.drain())
    assert len(traces) == count and all(len(t.spans) == SPANS_PER_TRACE for t in traces)
    payloads = [encode_traces(traces[i : i + per_request]) for i in range(0, len(traces), per_request)]
    return payloads, [t.trace_id for t in traces]


# -- what landed ------------------------------------------------------------------------------


class Landing:
    """Polls the server's SQLite file every ``POLL_S`` in a thread: row counts and when they last
    changed (wall clock)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path
        self.traces = 0
        self.spans = 0
        self.changed_at = 0.0
        self.first_change_at = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="landing-poll", daemon=True)

    def _query(self, sql: str) -> list[Any]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql).fetchall()
        finally:
            conn.close()

    def counts(self) -> tuple[int, int]:
        rows = self._query("SELECT (SELECT COUNT(*) FROM trace_info), (SELECT COUNT(*) FROM spans)")
        return int(rows[0][0]), int(rows[0][1])

    def start(self) -> Landing:
        self.traces, self.spans = self.counts()
        self.changed_at = time.time()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                counts = self.counts()
            except sqlite3.Error:
                counts = (self.traces, self.spans)
            if counts != (self.traces, self.spans):
                self.traces, self.spans = counts
                self.changed_at = time.time()
                self.first_change_at = self.first_change_at or self.changed_at
            self._stop.wait(POLL_S)

    def settle(self, expected_traces: int, stall_s: float, timeout_s: float) -> None:
        """Until ``expected_traces`` rows and their spans are there, nothing changed for
        ``stall_s``, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        tick = threading.Event()
        while time.monotonic() < deadline:
            if self.traces >= expected_traces and self.spans >= expected_traces * SPANS_PER_TRACE:
                break
            if time.time() - self.changed_at >= stall_s:
                break
            tick.wait(POLL_S)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def complete(self) -> tuple[int, int]:
        """(traces with all their spans and the ``intent`` tag, trace_info rows)."""
        rows = self._query(
            "SELECT COUNT(*) FROM trace_info t WHERE "
            f"(SELECT COUNT(DISTINCT s.span_id) FROM spans s WHERE s.trace_id = t.request_id) >= {SPANS_PER_TRACE} "
            "AND EXISTS (SELECT 1 FROM trace_tags g WHERE g.request_id = t.request_id AND g.key = 'intent')"
        )
        return int(rows[0][0]), self.counts()[0]


@dataclass
class Result:
    alternative: str
    round: int
    sent: int = 0
    landed: int = 0
    partial: int = 0  # trace_info rows without all spans or tags
    dropped: dict[str, int] = field(default_factory=dict)
    elapsed_s: float = 0.0
    first_landed_s: float = 0.0  # first send -> first rows seen (the pipeline's start-up delay)
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.landed / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def lost(self) -> int:
        return self.sent - self.landed - sum(self.dropped.values())

    def line(self) -> str:
        drops = ", ".join(f"{k}={v}" for k, v in self.dropped.items() if v) or "none"
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"  round {self.round} {self.alternative:12s} sent={self.sent} landed={self.landed} "
            f"partial={self.partial} dropped[{drops}] lost={self.lost} in {self.elapsed_s:.2f}s "
            f"(first landed after {self.first_landed_s:.2f}s) "
            f"-> {self.rate:.1f} traces/s{extra}{(' ' + self.note) if self.note else ''}"
        )


def finish(result: Result, landing: Landing, t_first: float, args: argparse.Namespace, baseline: int) -> Result:
    landing.settle(baseline + result.sent - sum(result.dropped.values()), args.stall_s, args.settle_timeout_s)
    landing.stop()
    complete, rows = landing.complete()
    result.landed = complete - baseline
    result.partial = rows - complete
    result.elapsed_s = landing.changed_at - t_first
    result.first_landed_s = landing.first_change_at - t_first if landing.first_change_at else 0.0
    return result


def group_stats(pgid: int) -> dict[int, list[str]]:
    """The ``/proc/<pid>/stat`` fields after ``(comm)`` (state ppid pgrp ...) of each live
    process of process group ``pgid``, read once."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            found[int(entry)] = fields
    return found


def group_pids(pgid: int) -> list[int]:
    """The live processes of process group ``pgid``."""
    return list(group_stats(pgid))


def group_cpu_s(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``."""
    ticks = sum(int(fields[11]) + int(fields[12]) for fields in group_stats(pgid).values())  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


SERVER_CPU = 1
"""With ``--pin``: the MLflow server's CPU; everything else (this process, the gateway, the
clients, MLflow's SDK) runs on the other one, CPU 0, as if the server had a host of its own."""


def pin_group(pgid: int, cpus: set[int]) -> int:
    """Pin every thread of process group ``pgid`` to ``cpus`` (threads it starts later inherit
    it); returns how many threads were pinned."""
    pinned = 0
    for pid in group_pids(pgid):
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, cpus)
                pinned += 1
            except OSError:  # exited meanwhile
                continue
    return pinned


class CpuMeter:
    """CPU seconds used by the MLflow server (and the gateway, when given) from ``start()`` on."""

    def __init__(self, server_pgid: int, gateway_pgid: int | None = None) -> None:
        self._groups = {"server": server_pgid, **({"gateway": gateway_pgid} if gateway_pgid else {})}
        self._start: dict[str, float] = {}

    def start(self) -> CpuMeter:
        self._start = {name: group_cpu_s(pgid) for name, pgid in self._groups.items()}
        return self

    def record(self, result: Result) -> None:
        """Share of one core used while the traces were landing (``elapsed_s``), per process."""
        for name, pgid in self._groups.items():
            used = group_cpu_s(pgid) - self._start[name]
            result.extra[f"{name}_cpu"] = f"{used / result.elapsed_s:.0%}" if result.elapsed_s > 0 else "-"
            result.extra[f"{name}_cpu_ms_per_trace"] = round(1000 * used / max(1, result.landed), 1)


# -- the server -------------------------------------------------------------------------------


def create_experiment(url: str) -> str:
    req = urllib.request.Request(
        url + "/api/2.0/mlflow/experiments/create",
        data=json.dumps({"name": EXPERIMENT}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(json.loads(resp.read())["experiment_id"])


def wait_landed(landing: Landing, traces: int, timeout_s: float = 60.0) -> None:
    from tests.support import wait_for

    wait_for(
        lambda: landing.counts()[0] >= traces and landing.complete()[0] >= traces,
        timeout_s=timeout_s,
        interval_s=0.2,
        what=f"{traces} warm-up traces in MLflow",
    )


# -- the alternatives -------------------------------------------------------------------------


def run_ceiling(
    server: Any, db: Path, args: argparse.Namespace, rnd: int, prepared: tuple[list[bytes], Any], senders: int
) -> Result:
    import requests

    payloads, _ = prepared
    exp_id = create_experiment(server.url)
    headers = {"Content-Type": "application/x-protobuf", "x-mlflow-experiment-id": exp_id}
    warm, _ = ceiling_payloads(WARMUP, SEED + 1000 + rnd, WARMUP)
    requests.post(server.url + "/v1/traces", data=warm[0], headers=headers, timeout=60).raise_for_status()
    landing = Landing(db)
    wait_landed(landing, WARMUP)
    landing.start()
    cpu = CpuMeter(server.proc.pid).start()
    result = Result(f"ceiling-{senders}", rnd, sent=args.traces)
    failed = {"http_error": 0}
    lock = threading.Lock()
    local = threading.local()

    def post(payload: bytes) -> None:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        resp = session.post(server.url + "/v1/traces", data=payload, headers=headers, timeout=120)
        if resp.status_code != 200:
            with lock:
                failed["http_error"] += TRACES_PER_REQUEST

    t_first = time.time()
    with ThreadPoolExecutor(max_workers=senders) as pool:
        list(pool.map(post, payloads))
    result.extra["post_s"] = round(time.time() - t_first, 2)
    result.dropped = failed  # refused by the server, counted (not lost)
    finish(result, landing, t_first, args, WARMUP)
    cpu.record(result)
    return result


def gateway_env(server_url: str, workdir: Path, overrides: dict[str, str]) -> dict[str, str]:
    env = {
        "MLFLOW_TRACKING_URI": server_url,
        "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
        "MLFLOW_TRACE_SAMPLING_RATIO": "1.0",
        "TRACEGW_SPOOL_DIR": str(workdir / "spool"),
        "TRACEGW_ARTIFACT_ROOT": str(workdir / "art"),
        "TRACEGW_LOG_LEVEL": "WARNING",
    }
    env.update(overrides)
    return env


def run_gateway(
    server: Any,
    db: Path,
    args: argparse.Namespace,
    rnd: int,
    workdir: Path,
    name: str = "gateway",
    variant: dict[str, str] | None = None,
) -> Result:
    from clients import ClientConfig, Tracer
    from orchestrator.tools.traffic import handle_message
    from tests.faults.harness import GatewayProcess

    create_experiment(server.url)
    gw = GatewayProcess(workdir, gateway_env(server.url, workdir, {**args.gateway_env, **(variant or {})})).start()
    try:
        landing = Landing(db)
        with Tracer(ClientConfig(target=gw.target, experiment_name=EXPERIMENT, flush_interval_s=0.05)) as warm:
            for p in plans(WARMUP, SEED + 1000 + rnd):
                handle_message(warm, p)
            warm.flush(timeout_s=10)
        wait_landed(landing, WARMUP)
        landing.start()
        cpu = CpuMeter(server.proc.pid, gw.pid).start()
        work = plans(args.traces, SEED)
        tracer = Tracer(ClientConfig(target=gw.target, experiment_name=EXPERIMENT, service_name="bench-delivery"))
        try:
            sent, t_first = paced(work, args.rate, args.max_send_s, lambda p: handle_message(tracer, p))
            tracer.flush(timeout_s=30)
            stats = tracer.stats()
        finally:
            tracer.shutdown(timeout_s=5)
        result = Result(name, rnd, sent=len(sent))
        result.dropped = {f"client_{k}": -(-v // SPANS_PER_TRACE) for k, v in stats.spans_dropped.items() if v}
        settle_target = WARMUP + len(sent)
        landing.settle(settle_target, args.stall_s, args.settle_timeout_s)
        metrics = gw.metrics()
        for key, spans in metrics.by_label("tracegw_spans_dropped_total", "stage", "reason").items():
            result.dropped["gw_" + key] = -(-int(spans) // SPANS_PER_TRACE)
        result.extra["requests"] = int(metrics.value("tracegw_write_requests_total", kind="spans"))
        result.extra["retries"] = int(metrics.value("tracegw_write_retries_total"))
        finish(result, landing, t_first, args, WARMUP)
        cpu.record(result)
        return result
    finally:
        gw.terminate(timeout_s=60)


def run_mlflow_async(server: Any, db: Path, args: argparse.Namespace, rnd: int, workdir: Path) -> Result:
    exp_id = create_experiment(server.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "TRACEGW_"))}
    env.update(
        PYTHONPATH=str(ROOT),
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_ENABLE_ASYNC_LOGGING="true",
        MLFLOW_ENABLE_ASYNC_TRACE_LOGGING="true",
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="10",
    )
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--experiment-id",
        exp_id,
        "--traces",
        str(args.traces),
        "--rate",
        str(args.rate),
        "--max-send-s",
        str(args.max_send_s),
        "--round",
        str(rnd),
    ]
    with open(workdir / "mlflow-child.log", "wb") as err:
        child = subprocess.Popen(cmd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        assert child.stdin is not None and child.stdout is not None
        try:
            json.loads(child.stdout.readline() or b"{}")  # {"ready": ...}: warm-up traced and flushed
            landing = Landing(db)
            wait_landed(landing, WARMUP)
            landing.start()
            cpu = CpuMeter(server.proc.pid).start()
            child.stdin.write(b"go\n")
            child.stdin.flush()
            sent = json.loads(child.stdout.readline() or b"{}")
            result = Result("mlflow_async", rnd, sent=int(sent.get("sent", 0)))
            # MLflow counts nothing per trace; the export tasks its full queue discarded are shown.
            result.extra["discarded_tasks"] = int(sent.get("discarded_tasks", 0))
            result.extra["queue_full_warnings"] = int(sent.get("queue_full_warnings", 0))
            finish(result, landing, float(sent.get("t_first", time.time())), args, WARMUP)
            cpu.record(result)
            return result
        finally:
            child.kill()
            child.wait(timeout=10)


def child_main(args: argparse.Namespace) -> None:
    """MLflow's SDK in async mode (a child process: MLflow's configuration is process-global)."""
    import logging

    import mlflow
    from mlflow.tracing.export import async_export_queue

    from bench.request_path import MlflowTracer, _CountingHandler
    from orchestrator.tools.traffic import handle_message

    discarded = [0]
    original_put = async_export_queue.AsyncTraceExportQueue.put

    def counting_put(self: Any, task: Any) -> None:
        if self.is_active() and self._queue.full():
            discarded[0] += 1
        original_put(self, task)

    async_export_queue.AsyncTraceExportQueue.put = counting_put  # type: ignore[method-assign]
    handler = _CountingHandler()
    mlflow_log = logging.getLogger("mlflow")
    mlflow_log.addHandler(handler)
    mlflow_log.propagate = False
    tracer: Any = MlflowTracer(args.experiment_id)
    for p in plans(WARMUP, SEED + 1000 + args.round):
        handle_message(tracer, p)
    mlflow.flush_trace_async_logging()
    discarded[0] = 0
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()
    work = plans(args.traces, SEED)
    sent, t_first = paced(work, args.rate, args.max_send_s, lambda p: handle_message(tracer, p))
    print(
        json.dumps(
            {
                "sent": len(sent),
                "t_first": t_first,
                "discarded_tasks": discarded[0],
                "queue_full_warnings": handler.queue_full,
            }
        ),
        flush=True,
    )
    mlflow.flush_trace_async_logging(terminate=True)
    os._exit(0)


# -- the parent -------------------------------------------------------------------------------


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def print_table(results: list[Result], args: argparse.Namespace) -> None:
    by: dict[str, list[Result]] = {}
    for r in sorted(
        results,
        key=lambda r: (r.alternative.startswith("mlflow"), r.alternative.startswith("gateway"), r.alternative, r.round),
    ):
        by.setdefault(r.alternative, []).append(r)
    rate = {alt: median([r.rate for r in rs]) for alt, rs in by.items()}
    gw = rate.get("gateway")
    ceilings = {alt: v for alt, v in rate.items() if alt.startswith("ceiling")}
    best = max(ceilings, key=lambda a: ceilings[a]) if ceilings else None
    rounds = max((len(rs) for rs in by.values()), default=0)
    print(
        f"\n{args.traces} traces × {SPANS_PER_TRACE} spans per cell, offered at {args.rate:g} traces/s; "
        f"{rounds} interleaved rounds, a fresh server each; "
        + (f"server pinned to CPU {SERVER_CPU}, the rest to CPU 0; " if args.pin else "not pinned; ")
        + "median of the rounds (each round)\n"
    )
    print(
        "| alternative | traces/s landed | each round | first landed after | landed / sent | dropped (counted) "
        "| lost | gateway ÷ this |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for alt, rs in by.items():
        rates = ", ".join(f"{r.rate:.1f}" for r in rs)
        landed = ", ".join(f"{r.landed}/{r.sent}" for r in rs)
        dropped = ", ".join(str(sum(r.dropped.values())) for r in rs)
        lost = ", ".join(str(r.lost) for r in rs)
        ratio = f"{gw / rate[alt]:.2f}×" if gw and rate[alt] else "–"
        first = f"{median([r.first_landed_s for r in rs]):.1f} s"
        print(f"| {alt} | **{rate[alt]:.1f}** | {rates} | {first} | {landed} | {dropped} | {lost} | {ratio} |")
    if gw and best:
        gw_lost = sum(r.lost for r in by.get("gateway", []))
        verdict = "met" if gw >= 0.9 * ceilings[best] and gw_lost == 0 else "NOT met"
        print(
            f"\ngateway ÷ best ceiling ({best}) = {gw / ceilings[best]:.3f}; gateway lost {gw_lost} traces; "
            f"bar (≥ 0.90, 0 lost): {verdict}"
        )
    if gw and rate.get("mlflow_async"):
        print(f"gateway ÷ MLflow async = {gw / rate['mlflow_async']:.2f}")


def parse_env(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.startswith(("TRACEGW_", "MLFLOW_")):
            raise SystemExit(f"--gateway-env wants KEY=VALUE with a TRACEGW_/MLFLOW_ key, got {pair!r}")
        out[key] = value
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=2000, help="traces per alternative (default %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default %(default)s)")
    parser.add_argument(
        "--rate", type=float, default=300.0, help="traces/s the application offers (default %(default)s)"
    )
    parser.add_argument(
        "--max-send-s", type=float, default=60.0, help="time bound of the sending (default %(default)s)"
    )
    parser.add_argument(
        "--ceiling-senders",
        default="1,2",
        help="concurrent POSTs in the ceiling, one ceiling-<n> per value (default %(default)s)",
    )
    parser.add_argument(
        "--stall-s",
        type=float,
        default=15.0,
        help="settle ends when nothing landed for this long (default %(default)s)",
    )
    parser.add_argument("--settle-timeout-s", type=float, default=180.0, help="settle bound (default %(default)s)")
    parser.add_argument("--only", default=",".join(ALTERNATIVES), help="comma list of " + ", ".join(ALTERNATIVES))
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="gateway setting for every gateway cell (repeatable), e.g. TRACEGW_WRITER_CONCURRENCY=1",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        metavar="NAME:KEY=VALUE[,KEY=VALUE]",
        help="an extra gateway cell 'gateway:NAME' with these settings on top (repeatable)",
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help=f"run the MLflow server alone on CPU {SERVER_CPU} and everything else on CPU 0, as if "
        "the server had its own host (default: on with 2 or more CPUs)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--experiment-id", default="0", help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    args.gateway_env = parse_env(args.gateway_env)
    if args.pin:
        os.sched_setaffinity(0, {0})  # inherited by the threads and children started from here on
    variants = {}
    for v in args.variant:
        name, _, pairs = v.partition(":")
        variants["gateway:" + name] = parse_env([p for p in pairs.split(",") if p])
    chosen = [a.strip() for a in args.only.split(",") if a.strip()]
    unknown = sorted(set(chosen) - set(ALTERNATIVES))
    if unknown:
        parser.error(f"unknown alternatives: {', '.join(unknown)}")
    senders = [int(n) for n in args.ceiling_senders.split(",") if n.strip()]
    cells = [c for alt in chosen for c in ([f"ceiling-{n}" for n in senders] if alt == "ceiling" else [alt])]
    cells += list(variants)

    from tests.faults.harness import start_mlflow

    prepared = ceiling_payloads(args.traces, SEED, TRACES_PER_REQUEST) if "ceiling" in chosen else ([], [])
    if args.gateway_env or variants:
        print(f"gateway settings: {args.gateway_env}; variants: {variants}")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-delivery-") as tmp:
        for rnd in range(args.rounds):
            order = cells[rnd % len(cells) :] + cells[: rnd % len(cells)]
            for alt in order:
                workdir = Path(tmp) / f"{alt.replace(':', '-')}-{rnd}"
                server, db = start_mlflow(workdir / "mlflow")
                if args.pin:
                    pin_group(server.proc.pid, {SERVER_CPU})
                try:
                    if alt.startswith("ceiling-"):
                        result = run_ceiling(server, db, args, rnd, prepared, int(alt.split("-")[1]))
                    elif alt.startswith("gateway"):
                        result = run_gateway(server, db, args, rnd, workdir, alt, variants.get(alt, {}))
                    else:
                        result = run_mlflow_async(server, db, args, rnd, workdir)
                finally:
                    server.stop()
                results.append(result)
                print(result.line() + f" (load {' '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    print_table(results, args)


if __name__ == "__main__":
    main()
