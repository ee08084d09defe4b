"""What the fault matrix and ``bench/fault_matrix.py`` share: a real gateway process pointed at a
:class:`~tests.faultproxy.FaultProxy` in front of a real ``mlflow server``, a paced load
generator on the real client, and the accounting that ends every scenario.

    with Rig(mlflow, workdir, "outage") as rig:
        gw = rig.start_gateway()
        load = Load(rig.tracer(), rate_per_s=50).start()
        rig.proxy.down(); hold(15); rig.proxy.up()
        load.stop()
        figures = rig.settle(load, "mlflow down 15 s")
        print(figures.line())

Accounting (spans, since the client and the gateway count spans):

    produced = client sent (acknowledged by the gateway) + client drops by reason
    client sent = landed in MLflow + gateway drops by reason (``tracegw_spans_dropped_total``)
    lost = client sent - landed - gateway drops            (must be 0)

"Landed" is read straight from the tracking server's SQLite file (``spans`` rows per
``tr-<hex>`` trace id, without the stand-in roots the gateway synthesizes for traces whose
root it never received), so it sees exactly what MLflow persisted of what the client sent.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from clients import ClientConfig, Tracer
from orchestrator.tools.traffic import Plan, handle_message, plan_requests
from tests.faultproxy import FaultProxy
from tests.support import MlflowServer, free_port, wait_for

DEAD_LETTER_DIR = "dead-letter"
# A stand-in root the gateway adds to a trace whose root it never received is not a span the
# client sent: "landed" leaves it out (``gateway.process.assembler.SYNTHESIZED_ATTRIBUTE``).
SYNTHESIZED_LIKE = '%"tracegw.synthesized_root": "true"%'
QUARANTINE_DIR = "quarantine"

# Short timings so scenarios take seconds: retries every 0.2-1 s, the breaker opens after 3
# failures and probes every 0.5 s, SIGTERM drains within 5 s, a trace whose root never comes (cut
# by a restart) is decided after 5 s. The MLflow request timeout stays
# at its default (10 s): a 2,000-span batch can take seconds on a busy 2-core machine.
FAST_GATEWAY_ENV = {
    "MLFLOW_TRACE_SAMPLING_RATIO": "1.0",
    "TRACEGW_SPOOL_FSYNC": "always",
    "TRACEGW_RETRY_INITIAL_S": "0.2",
    "TRACEGW_RETRY_MAX_S": "1",
    "TRACEGW_BREAKER_FAILURES": "3",
    "TRACEGW_BREAKER_COOLDOWN_S": "0.5",
    "TRACEGW_SHUTDOWN_GRACE_S": "5",
    "TRACEGW_ROOT_GRACE_S": "0.5",
    "TRACEGW_DECISION_TIMEOUT_S": "5",
    "TRACEGW_BATCH_MAX_DELAY_S": "0.2",
    "TRACEGW_LOG_LEVEL": "INFO",
}


def clean_env(**settings: str) -> dict[str, str]:
    """This process's environment without any gateway or MLflow setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACEGW_", "MLFLOW_"))}
    env.update(PYTHONUNBUFFERED="1", **settings)
    return env


def start_mlflow(workdir: Path) -> tuple[MlflowServer, Path]:
    """A real ``mlflow server`` on SQLite in ``workdir``; returns it and its database file."""
    workdir.mkdir(parents=True, exist_ok=True)
    db = workdir / "mlflow.db"
    return MlflowServer(f"sqlite:///{db}", workdir).start(), db


def hold(seconds: float, every_s: float = 0.1, on_tick: Callable[[], None] | None = None) -> None:
    """Keep a fault in place for ``seconds``, calling ``on_tick`` (e.g. a metrics poll) meanwhile."""
    deadline = time.monotonic() + seconds
    tick = threading.Event()
    while (left := deadline - time.monotonic()) > 0:
        if on_tick is not None:
            on_tick()
        tick.wait(min(every_s, max(0.0, left)))


# -- metrics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Metrics:
    """One parsed Prometheus scrape."""

    samples: tuple[tuple[str, tuple[tuple[str, str], ...], float], ...] = ()

    def value(self, name: str, **labels: str) -> float:
        """Sum of the samples called ``name`` whose labels include ``labels``."""
        return sum(v for n, ls, v in self.samples if n == name and set(labels.items()) <= set(ls))

    def by_label(self, name: str, *label_names: str) -> dict[str, float]:
        """Non-zero samples of ``name`` keyed by their ``label_names`` values joined with '/'."""
        out: dict[str, float] = {}
        for n, ls, v in self.samples:
            if n == name and v:
                d = dict(ls)
                key = "/".join(d.get(label, "") for label in label_names)
                out[key] = out.get(key, 0.0) + v
        return out


def scrape(url: str, timeout_s: float = 5.0) -> Metrics:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(url, timeout=timeout_s) as resp:
        body = resp.read().decode()
    samples = []
    for family in text_string_to_metric_families(body):
        for s in family.samples:
            samples.append((s.name, tuple(sorted(s.labels.items())), float(s.value)))
    return Metrics(tuple(samples))


# -- the gateway process ---------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in bytes (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


class GatewayProcess:
    """``python -m gateway.cli serve`` on fixed loopback ports (kept across restarts)."""

    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.grpc_port, self.metrics_port = free_port(), free_port()
        self.target = f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.env = clean_env(
            TRACEGW_LISTEN_ADDRESS=self.target, TRACEGW_METRICS_ADDRESS=f"127.0.0.1:{self.metrics_port}", **env
        )
        self.log_path = workdir / f"tracegw-{self.grpc_port}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.final_metrics: Metrics | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def start(self, timeout_s: float = 60.0) -> GatewayProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"--- start #{self.starts} ---\n".encode())
            log.flush()
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.workdir,
                start_new_session=True,
            )
        wait_for(self._serving, timeout_s=timeout_s, interval_s=0.1, what=f"tracegw on {self.target} SERVING")
        return self

    def _serving(self) -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"tracegw exited with {self.proc.returncode}:\n{self.log()[-4000:]}")
        try:
            with grpc.insecure_channel(self.target) as channel:
                status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
            if status != health_pb2.HealthCheckResponse.SERVING:
                return False
            self.metrics()
            return True
        except (grpc.RpcError, OSError):
            return False

    def metrics(self) -> Metrics:
        return scrape(self.metrics_url)

    def try_metrics(self) -> Metrics | None:
        try:
            return self.metrics()
        except (OSError, urllib.error.URLError):
            return None

    def rss_bytes(self) -> int:
        return _status_kb(self.pid, "VmRSS")

    def peak_rss_bytes(self) -> int:
        """The kernel's high-water mark of this process's resident memory (VmHWM)."""
        return _status_kb(self.pid, "VmHWM")

    def terminate(self, timeout_s: float) -> int:
        """SIGTERM and wait; the exit code (fails if it is still running after ``timeout_s``).

        Scrapes the metrics while the gateway drains (they are served until it exits), so
        ``final_metrics`` holds its last counters."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        tick = threading.Event()
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.final_metrics = self.try_metrics() or self.final_metrics
            tick.wait(0.05)
        try:
            return self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise AssertionError(f"tracegw still running {timeout_s}s after SIGTERM:\n{self.log()[-4000:]}") from None

    def kill(self) -> None:
        """SIGKILL (no drain) and reap."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        """Make sure the process is gone (fixture teardown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


class PeakRss:
    """Samples a process's resident memory every ``every_s`` in a thread; ``peak`` is the max."""

    def __init__(self, pid: int, every_s: float = 0.05) -> None:
        self._pid = pid
        self._every_s = every_s
        self._stop = threading.Event()
        self.peak = 0
        self.samples: list[tuple[float, int]] = []
        self._thread = threading.Thread(target=self._run, name="peak-rss", daemon=True)

    def start(self) -> PeakRss:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            rss = _status_kb(self._pid, "VmRSS")
            if rss:
                self.peak = max(self.peak, rss)
                self.samples.append((time.monotonic(), rss))
            self._stop.wait(self._every_s)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(timeout=5)
        return self.peak


# -- the load --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sent:
    """One traced request: its trace id, span count, when it ran and what tracing cost it."""

    trace_id: str
    spans: int
    started: float  # time.monotonic()
    ended: float
    cost_us: float


class Load:
    """``handle_message`` at ``rate_per_s`` (None: as fast as possible) in a thread, until
    ``stop()``, ``max_requests`` or ``max_seconds``, whichever comes first."""

    def __init__(
        self,
        tracer: Tracer,
        rate_per_s: float | None = 50.0,
        seed: int = 7,
        max_requests: int = 100_000,
        max_seconds: float = 300.0,
        distinct_plans: int = 2000,
        on_sent: Callable[[int, Sent], None] | None = None,
    ) -> None:
        self.tracer = tracer
        self._on_sent = on_sent
        self.rate_per_s = rate_per_s
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self._plans = plan_requests(min(distinct_plans, max_requests), seed=seed, feedback_rate=0.0)
        self.sent: list[Sent] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-load", daemon=True)
        self.started_at = 0.0
        self.stopped_at = 0.0

    def start(self) -> Load:
        self.started_at = time.monotonic()
        self._thread.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / self.rate_per_s if self.rate_per_s else 0.0
        next_at = self.started_at
        plans: Iterable[Plan] = itertools.islice(itertools.cycle(self._plans), self.max_requests)
        for i, plan in enumerate(plans):
            if self._stop.is_set() or time.monotonic() - self.started_at > self.max_seconds:
                break
            started = time.monotonic()
            t0 = time.perf_counter_ns()
            trace_id = handle_message(self.tracer, plan)
            cost_us = (time.perf_counter_ns() - t0) / 1000
            record = Sent(trace_id, plan.span_count, started, time.monotonic(), cost_us)
            self.sent.append(record)
            if self._on_sent is not None:
                self._on_sent(i, record)
            if interval:
                next_at += interval
                delay = next_at - time.monotonic()
                if delay > 0:
                    self._stop.wait(delay)  # pacing, not synchronisation
        self.stopped_at = time.monotonic()

    def wait_for_requests(self, count: int, timeout_s: float = 30.0) -> None:
        wait_for(lambda: len(self.sent) >= count, timeout_s=timeout_s, what=f"{count} requests sent")

    def wait_done(self, timeout_s: float) -> Load:
        """Wait until ``max_requests`` or ``max_seconds`` ended the load."""
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), f"load still running after {timeout_s}s"
        return self

    def stop(self, timeout_s: float = 10.0) -> Load:
        self._stop.set()
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), "load thread did not stop"
        return self

    def costs(self, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [s.cost_us for s in self.sent if since <= s.started < until]

    @property
    def spans(self) -> int:
        return sum(s.spans for s in self.sent)


def cost_summary(costs_us: list[float]) -> str:
    if not costs_us:
        return "no requests"
    ordered = sorted(costs_us)
    p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
    return f"n={len(costs_us)} p50={statistics.median(costs_us):.0f}µs p99={p99:.0f}µs"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- what landed -----------------------------------------------------------------------------


class MlflowStore:
    """Reads the tracking server's SQLite file directly (read-only)."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = db_path

    def landed(self, trace_ids: Iterable[str]) -> dict[str, int]:
        """Spans stored per trace id (hex, without ``tr-``), for the ids that have any; synthesized
        roots are not counted."""
        wanted = ["tr-" + t for t in trace_ids]
        out: dict[str, int] = {}
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT trace_id, COUNT(DISTINCT CASE WHEN content NOT LIKE ? THEN span_id END) FROM spans "
                    f"WHERE trace_id IN ({marks}) GROUP BY trace_id",
                    [SYNTHESIZED_LIKE, *chunk],
                ).fetchall()
                out.update({tid[3:]: n for tid, n in rows})
        finally:
            conn.close()
        return out

    def span_ids(self, trace_ids: Iterable[str]) -> set[tuple[str, str]]:
        """The ``(trace id hex, span id)`` pairs stored for ``trace_ids`` (span ids as MLflow keeps
        them: 16 hex digits), without synthesized roots: per-span accounting, not only totals."""
        wanted = ["tr-" + t for t in trace_ids]
        out: set[tuple[str, str]] = set()
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT trace_id, span_id FROM spans WHERE trace_id IN ({marks}) AND content NOT LIKE ?",
                    [*chunk, SYNTHESIZED_LIKE],
                ).fetchall()
                out.update((tid[3:], sid) for tid, sid in rows)
        finally:
            conn.close()
        return out

    def trace_infos(self, trace_ids: Iterable[str]) -> set[str]:
        wanted = ["tr-" + t for t in trace_ids]
        found: set[str] = set()
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(
                    r[0][3:]
                    for r in conn.execute(f"SELECT request_id FROM trace_info WHERE request_id IN ({marks})", chunk)
                )
        finally:
            conn.close()
        return found


@dataclass(frozen=True)
class DeadLetters:
    """What ``<spool>/dead-letter/`` holds: segment files, their reasons, the trace ids inside."""

    files: tuple[Path, ...]
    reasons: tuple[dict[str, Any], ...]
    trace_ids: frozenset[str]

    @classmethod
    def read(cls, spool_dir: Path, known_trace_ids: Iterable[str]) -> DeadLetters:
        import json

        directory = spool_dir / DEAD_LETTER_DIR
        if not directory.is_dir():
            return cls((), (), frozenset())
        files = tuple(sorted(p for p in directory.iterdir() if p.is_file() and not p.name.endswith(".reason.json")))
        reasons = tuple(json.loads(p.read_text()) for p in sorted(directory.glob("*.reason.json")))
        blobs = [p.read_bytes() for p in files]
        # The OTLP payload carries each span's raw 16-byte trace id, whatever the file framing.
        ids = frozenset(t for t in known_trace_ids if any(bytes.fromhex(t) in b for b in blobs))
        return cls(files, reasons, ids)


# -- one scenario's figures ------------------------------------------------------------------


@dataclass
class Figures:
    """The accounting that ends a scenario (spans unless said otherwise)."""

    scenario: str
    traces: int
    produced: int
    client_sent: int
    client_dropped: dict[str, int]
    landed: int
    gateway_dropped: dict[str, float]
    traces_landed: int
    incomplete: dict[str, int]  # trace id -> spans landed, for traces not fully in MLflow
    drain_s: float | None
    peak_rss_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)
    settled: bool = True  # False: the scenario ended with data still held, so ``lost`` means nothing

    @property
    def gateway_dropped_total(self) -> int:
        return int(sum(self.gateway_dropped.values()))

    @property
    def lost(self) -> int:
        """Spans the gateway acknowledged that are neither in MLflow nor counted as dropped."""
        return self.client_sent - self.landed - self.gateway_dropped_total

    def line(self) -> str:
        drops = {
            **{f"client:{k}": v for k, v in self.client_dropped.items() if v},
            **{f"gw:{k}": int(v) for k, v in self.gateway_dropped.items() if v},
        }
        rss = f" peak_rss={self.peak_rss_bytes / 2**20:.0f}MiB" if self.peak_rss_bytes else ""
        drain = f"{self.drain_s:.1f}s" if self.drain_s is not None else "n/a"
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        return (
            f"[fault-matrix] {self.scenario}: traces={self.traces} sent={self.client_sent} "
            f"landed={self.landed} ({self.traces_landed} traces) dropped={drops or '{}'} "
            f"lost={self.lost_text()} drain={drain}{rss}{extra}"
        )

    def lost_text(self) -> str:
        if not self.settled:
            return "n/a (not settled: data still held by the gateway)"
        return f"{self.lost} spans/{len(self.incomplete)} incomplete traces"


def account(
    scenario: str,
    sent: list[Sent],
    tracer: Tracer,
    store: MlflowStore,
    metrics: Metrics | None,
    drain_s: float | None,
    peak_rss_bytes: int = 0,
    **extra: Any,
) -> Figures:
    """The scenario's figures: what the client produced and sent, what landed, what was dropped."""
    stats = tracer.stats()
    expected = {s.trace_id: s.spans for s in sent}
    landed = store.landed(expected)
    gateway_dropped = metrics.by_label("tracegw_spans_dropped_total", "stage", "reason") if metrics else {}
    incomplete = {t: landed.get(t, 0) for t, n in expected.items() if landed.get(t, 0) != n}
    return Figures(
        scenario=scenario,
        traces=len(expected),
        produced=sum(expected.values()),
        client_sent=stats.spans_sent,
        client_dropped={k: v for k, v in stats.spans_dropped.items() if v},
        landed=sum(landed.values()),
        gateway_dropped=gateway_dropped,
        traces_landed=len(expected) - len(incomplete),
        incomplete=incomplete,
        drain_s=drain_s,
        peak_rss_bytes=peak_rss_bytes,
        extra=dict(extra),
    )


REPORTED: list[str] = []


def report(figures: Figures) -> Figures:
    """Print the scenario's one-line figures (and keep them for the end-of-run summary)."""
    line = figures.line()
    REPORTED.append(line)
    print(line, flush=True)
    return figures


# -- the rig -----------------------------------------------------------------------------------


class Rig:
    """A fault proxy in front of ``mlflow``, gateway processes behind it, tracers; all closed on exit."""

    def __init__(self, mlflow: MlflowServer, db_path: Path, workdir: Path, experiment: str) -> None:
        self.mlflow = mlflow
        self.store = MlflowStore(db_path)
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.experiment = experiment
        self.spool_dir = workdir / "spool"
        self.proxy = FaultProxy(mlflow.port).start()
        self.gateway: GatewayProcess | None = None
        self._tracers: list[Tracer] = []

    def gateway_env(self, **env: str) -> dict[str, str]:
        return {
            **FAST_GATEWAY_ENV,
            "MLFLOW_TRACKING_URI": self.proxy.url,
            "MLFLOW_EXPERIMENT_NAME": self.experiment,
            "TRACEGW_SPOOL_DIR": str(self.spool_dir),
            "TRACEGW_ARTIFACT_ROOT": str(self.workdir / "art"),
            **env,
        }

    def start_gateway(self, **env: str) -> GatewayProcess:
        """Start the gateway (a second call restarts the same one: same ports, same spool)."""
        if self.gateway is None:
            self.gateway = GatewayProcess(self.workdir, self.gateway_env(**env))
        return self.gateway.start()

    def tracer(self, **config: Any) -> Tracer:
        assert self.gateway is not None
        tracer = Tracer(ClientConfig(target=self.gateway.target, **config))
        self._tracers.append(tracer)
        return tracer

    def warm_up(self, count: int = 5, timeout_s: float = 30.0) -> list[str]:
        """Send ``count`` traces on a tracer of their own and wait until they are in MLflow
        (experiment created, writer connected), so the scenario's counts start clean."""
        assert self.gateway is not None
        plans = plan_requests(count, seed=99, feedback_rate=0.0)
        with Tracer(ClientConfig(target=self.gateway.target, flush_interval_s=0.05)) as tracer:
            ids = {handle_message(tracer, p): p.span_count for p in plans}
            tracer.flush(timeout_s=10)
        wait_for(
            lambda: self.store.landed(ids) == ids, timeout_s=timeout_s, interval_s=0.2, what="warm-up traces in MLflow"
        )
        return list(ids)

    def settle(
        self, sent: list[Sent], tracer: Tracer, timeout_s: float = 60.0, stall_s: float = 5.0
    ) -> tuple[Metrics | None, float]:
        """Flush the client, then poll until every span the gateway acknowledged is in MLflow or
        counted as dropped — or, when some were lost, until the gateway is idle (nothing in
        assembly or the spool) and nothing changed for ``stall_s`` — or ``timeout_s`` passed.
        Returns the last scrape and when it settled (``time.monotonic()``)."""
        assert self.gateway is not None
        deadline = time.monotonic() + timeout_s
        tracer.flush(timeout_s=10)
        client_sent = tracer.stats().spans_sent
        expected = [s.trace_id for s in sent]
        metrics: Metrics | None = None
        progress, changed_at = -1.0, time.monotonic()
        idle_since: float | None = None
        tick = threading.Event()
        while time.monotonic() < deadline:
            metrics = self.gateway.try_metrics()
            if metrics is not None:
                now = sum(self.store.landed(expected).values()) + metrics.value("tracegw_spans_dropped_total")
                if now >= client_sent:
                    break
                if now != progress:
                    progress, changed_at = now, time.monotonic()
                # Idle means nothing held anywhere on the way to MLflow. It must last ``stall_s``
                # on its own: a trace that has just left assembly is in an open batch for up to
                # the batch delay, visible in no gauge, and then still has to be written.
                idle = (
                    metrics.value("tracegw_spool_segments") == 0
                    and metrics.value("tracegw_writer_queue_batches") == 0
                    and metrics.value("tracegw_assembly_traces_in_flight") == 0
                )
                idle_since = (idle_since or time.monotonic()) if idle else None
                if (
                    idle_since is not None
                    and time.monotonic() - idle_since >= stall_s
                    and time.monotonic() - changed_at >= stall_s
                ):
                    break
            tick.wait(0.25)
        return metrics, time.monotonic()

    def close(self) -> None:
        for tracer in self._tracers:
            tracer.shutdown(timeout_s=2)
        if self.gateway is not None:
            self.gateway.stop()
        self.proxy.stop()

    def __enter__(self) -> Rig:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def segment_files(spool_dir: Path) -> list[Path]:
    return sorted(spool_dir.glob("*.seg")) if spool_dir.is_dir() else []


# -- the headline scenarios (shared by the tests and bench/fault_matrix.py) ---------------------


class Poll:
    """Scrapes the gateway on every tick of a ``hold`` and keeps the extremes seen."""

    def __init__(self, rig: Rig) -> None:
        self.rig = rig
        self.circuit_states: set[int] = set()
        self.max_spool_segments = 0.0
        self.max_spool_bytes = 0.0
        self.last: Metrics | None = None

    def __call__(self) -> None:
        assert self.rig.gateway is not None
        m = self.rig.gateway.try_metrics()
        if m is None:
            return
        self.last = m
        self.circuit_states.add(int(m.value("tracegw_circuit_state")))
        self.max_spool_segments = max(self.max_spool_segments, m.value("tracegw_spool_segments"))
        self.max_spool_bytes = max(self.max_spool_bytes, m.value("tracegw_spool_bytes"))


@dataclass
class Outcome:
    """A scenario's figures plus what its assertions need: the load and named instants."""

    figures: Figures
    load: Load
    marks: dict[str, float]  # name -> time.monotonic()
    metrics: Metrics | None
    poll: Poll | None = None


def run_outage(
    rig: Rig,
    name: str,
    outage_s: float,
    rate_per_s: float,
    before_s: float = 3.0,
    after_s: float = 2.0,
    settle_timeout_s: float = 90.0,
) -> Outcome:
    """MLflow unreachable (proxy down) for ``outage_s`` under steady load, then back."""
    gw = rig.start_gateway()
    rig.warm_up()
    tracer = rig.tracer()
    poll = Poll(rig)
    load = Load(tracer, rate_per_s=rate_per_s, max_seconds=before_s + outage_s + after_s + 30).start()
    hold(before_s)
    t_down = time.monotonic()
    rig.proxy.down()
    hold(outage_s, on_tick=poll)
    t_up = time.monotonic()
    rig.proxy.up()
    hold(after_s)
    load.stop()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=settle_timeout_s)
    before, during = load.costs(until=t_down), load.costs(since=t_down, until=t_up)
    after = load.costs(since=t_up)
    f = account(
        name,
        load.sent,
        tracer,
        rig.store,
        metrics,
        settled_at - t_up,
        gw.peak_rss_bytes(),
        cost_before=f"'{cost_summary(before)}'",
        cost_during=f"'{cost_summary(during)}'",
        cost_after=f"'{cost_summary(after)}'",
        max_spool_segments=int(poll.max_spool_segments),
    )
    return Outcome(f, load, {"down": t_down, "up": t_up, "settled": settled_at}, metrics, poll)


def wait_for_wal_fsync(pid: int, timeout_s: float) -> bool:
    """Spin until the gateway's WAL thread is inside fsync (x86_64 syscalls 74 and 75, read from
    ``/proc/<pid>/task/<tid>/syscall``), so that a SIGKILL sent now lands in the middle of a group
    commit. An fsync here takes ~0.2 ms, so the file is read in a tight loop. False on timeout."""
    tid = next(
        (t for t in Path(f"/proc/{pid}/task").iterdir() if (t / "comm").read_text().strip() == "tracegw-wal"), None
    )
    if tid is None:
        return False
    path = tid / "syscall"
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if path.read_bytes()[:3] in (b"74 ", b"75 "):
                return True
        except OSError:
            return False
    return False


def run_sigkill(
    rig: Rig,
    name: str,
    rate_per_s: float,
    before_s: float = 3.0,
    after_s: float = 2.0,
    settle_timeout_s: float = 60.0,
    mlflow_down_s: float = 0.0,
    during_fsync: bool = False,
) -> Outcome:
    """SIGKILL the gateway under steady load (WAL and spool fsync ``always``), restart it on the same
    spool. ``mlflow_down_s``: MLflow is unreachable from before the kill until that long after it
    (so nothing of the window is in MLflow yet when the gateway dies). ``during_fsync``: the kill
    waits (up to 10 s) until the WAL thread is inside a group commit's fsync.

    With the write-ahead log nothing the gateway acknowledged may be lost: ``figures.lost`` is 0.
    """
    gw = rig.start_gateway(TRACEGW_SPOOL_FSYNC="always", TRACEGW_WAL_FSYNC="always")
    rig.warm_up()
    tracer = rig.tracer()
    load = Load(tracer, rate_per_s=rate_per_s, max_seconds=before_s + after_s + mlflow_down_s + 60).start()
    hold(before_s)
    if mlflow_down_s:
        rig.proxy.down()
        hold(1.0)
    in_fsync = during_fsync and wait_for_wal_fsync(gw.pid, timeout_s=10.0)
    t_kill = time.monotonic()
    gw.kill()
    rig.start_gateway()
    t_ready = time.monotonic()
    if mlflow_down_s:
        hold(max(0.0, mlflow_down_s - (t_ready - t_kill)))
        rig.proxy.up()
    hold(after_s)
    load.stop()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=settle_timeout_s)
    f = account(name, load.sent, tracer, rig.store, metrics, settled_at - t_ready, fsync="always")
    f.extra["lost_traces"] = len([s for s in load.sent if s.ended <= t_kill and s.trace_id in f.incomplete])
    f.extra["replayed_records"] = int(metrics.value("tracegw_wal_replayed_records_total")) if metrics else 0
    f.extra["replayed_spans"] = int(metrics.value("tracegw_wal_replayed_spans_total")) if metrics else 0
    f.extra["replay_s"] = round(metrics.value("tracegw_wal_replay_seconds"), 3) if metrics else 0.0
    f.extra["killed_in_fsync"] = in_fsync
    return Outcome(f, load, {"kill": t_kill, "ready": t_ready}, metrics)


def run_sigterm(
    rig: Rig,
    name: str,
    rate_per_s: float,
    before_s: float = 2.0,
    down_s: float = 2.0,
    after_s: float = 2.0,
    settle_timeout_s: float = 90.0,
) -> Outcome:
    """SIGTERM the gateway under steady load while MLflow is unreachable (so the drain must leave a
    backlog in the spool), restart it on the same spool with MLflow back, let it replay.

    ``figures.extra`` holds what the two gateway processes received (the first one's counters
    from its last scrape, taken while it drained) and what the first one dropped."""
    gw = rig.start_gateway()
    rig.warm_up()
    warm = gw.metrics()
    tracer = rig.tracer()
    load = Load(tracer, rate_per_s=rate_per_s, max_seconds=before_s + down_s + after_s + 60).start()
    hold(before_s)
    rig.proxy.down()  # a backlog the drain cannot deliver: it must stay in the spool
    hold(down_s)
    t_term = time.monotonic()
    grace_s = float(rig.gateway_env()["TRACEGW_SHUTDOWN_GRACE_S"])
    returncode = gw.terminate(timeout_s=grace_s + 15)
    t_exit = time.monotonic()
    first = gw.final_metrics
    spooled = segment_files(rig.spool_dir)
    rig.proxy.up()
    rig.start_gateway()
    t_ready = time.monotonic()
    hold(after_s)
    load.stop()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=settle_timeout_s)
    assert metrics is not None and first is not None, "no metrics from the gateways"
    received = (
        first.value("tracegw_spans_received_total")
        - warm.value("tracegw_spans_received_total")
        + metrics.value("tracegw_spans_received_total")
    )
    f = account(
        name,
        load.sent,
        tracer,
        rig.store,
        metrics,
        settled_at - t_ready,
        exit_code=returncode,
        term_to_exit_s=f"{t_exit - t_term:.1f}",
        spooled_at_exit=len(spooled),
        replayed=int(metrics.value("tracegw_spool_replayed_total")),
        received_by_gateways=int(received),
        first_gateway_dropped=first.by_label("tracegw_spans_dropped_total", "stage", "reason") or {},
    )
    return Outcome(f, load, {"term": t_term, "exit": t_exit, "ready": t_ready}, metrics)


def run_overload(
    rig: Rig, name: str, soft_bytes: int, hard_bytes: int, rate_per_s: float, sustain_s: float, max_s: float = 60.0
) -> Outcome:
    """Traces wait 30 s in assembly and MLflow is slow, so the gateway's memory only grows: load
    it until the guard refuses, keep the load on for ``sustain_s``, sample RSS throughout."""
    gw = rig.start_gateway(
        TRACEGW_MEMORY_SOFT_LIMIT_BYTES=str(soft_bytes),
        TRACEGW_MEMORY_HARD_LIMIT_BYTES=str(hard_bytes),
        # Limits this tight leave no room for 16 x 4 MiB requests in flight (``tracegw check``
        # refuses that); the client's requests are far smaller anyway.
        TRACEGW_MAX_RECEIVE_MESSAGE_BYTES=str(min(4 << 20, (hard_bytes - soft_bytes) // 32)),
        TRACEGW_ROOT_GRACE_S="30",
        TRACEGW_DECISION_TIMEOUT_S="60",
        TRACEGW_MAX_ASSEMBLY_BYTES=str(2**31),
        TRACEGW_MAX_TRACES_IN_FLIGHT="1000000",
        TRACEGW_SHUTDOWN_GRACE_S="10",
    )
    baseline = gw.rss_bytes()
    rss = PeakRss(gw.pid).start()
    tracer = rig.tracer()
    rig.proxy.delay(1.0)
    load = Load(tracer, rate_per_s=rate_per_s, max_seconds=max_s).start()
    t_refused = time.monotonic() + max_s
    with contextlib.suppress(AssertionError):  # the test asserts on the refusal count instead
        wait_for(
            lambda: (m := gw.try_metrics()) is not None and m.value("tracegw_refused_total") > 0,
            timeout_s=max_s - 5,
            interval_s=0.2,
            what="the gateway refusing new spans",
        )
        t_refused = time.monotonic()
        hold(sustain_s)
    load.stop()
    tracer.flush(timeout_s=10)
    peak = max(rss.stop(), gw.peak_rss_bytes())
    metrics = gw.metrics()
    costs = load.costs()
    f = account(
        name,
        load.sent,
        tracer,
        rig.store,
        metrics,
        None,
        peak,
        baseline_rss_mib=round(baseline / 2**20),
        soft_mib=soft_bytes // 2**20,
        hard_mib=hard_bytes // 2**20,
        refused_requests=int(metrics.value("tracegw_refused_total")),
        refused_spans=int(metrics.value("tracegw_refused_spans_total")),
        cost=f"'{cost_summary(costs)}'",
    )
    f.settled = False  # traces wait 30 s in assembly: this scenario measures memory, not delivery
    return Outcome(f, load, {"refused": t_refused, "baseline_rss": baseline}, metrics)
