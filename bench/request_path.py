"""Request-path cost of tracing one MangaAssist request: no tracing, this client, MLflow's SDK.

One ``mlflow server`` (SQLite, one worker) sits behind a loopback fault proxy
(``tests/faultproxy.py``); every writer talks to the proxy, which is healthy, adds 500 ms to
every request, or is down (connection refused). The cells, each in its own subprocess (MLflow's
configuration is process-global):

- ``none``          the same request code with a no-op tracer (what the application pays anyway;
                    against its own control it shows how much the pairing cancels: cost ≈ 0);
- ``floor``         a minimal hand-written tracer (contextvar, ``time_ns``, ``getrandbits``, the span
                    object appended to a deque; no bound, no error handling, no sender): what
                    recording these 17 spans costs at the least in this interpreter on this machine.
                    Its deque is emptied between timed calls on the cadence at which the client's
                    sender takes spans (at ``max_batch_spans`` spans or ``encode_interval_s`` after
                    the last emptying), so its spans live as long as the client's and cost the
                    garbage collector as much: a tracer that ships in the background holds what it
                    recorded for a while, and the collections that scan those objects run on the
                    request path. With ``--floor-frees-each-request`` it is emptied after every
                    request instead;
- ``client``        ``clients.Tracer`` -> a real gateway subprocess (``python -m gateway.cli serve``)
                    -> proxy -> server;
- ``mlflow_async``  ``mlflow.start_span`` / ``mlflow.update_current_trace`` with async trace export;
- ``mlflow_sync``   the same with synchronous export (bounded lower: every request waits on the server).

The request is ``orchestrator.tools.traffic.handle_message`` on Bedrock-route plans (the spec §5 tree,
17 spans, the orchestrator's real attributes, tags, inputs and outputs); failure injection is
off (``error_rate=0``) because MLflow's ``LiveSpan.set_status`` takes no message.

Every cell interleaves its traced requests with untraced ones (the no-op tracer, same plan), in
the same process, each at its own paced slot: tracing's **cost** for a request is its traced time
minus its untraced twin's. On a shared VM a request that follows an idle sleep can take three
times as long as one that follows a busy moment, traced or not, and that varies from one run to
the next (the untraced request's p50 was 34 µs in one run and 123 µs in another on the same
machine), so differences of separately measured cells are mostly that noise. (Keeping the CPU
busy between slots with a ``sleep(0)`` loop was tried: the untraced request stayed as slow, so the
slowness is not the CPU waking up; the rate is what changes it: ``--rate 500``.) Each cell is
bounded by count and time, each subprocess by a timeout.
Prints p50/p99 per request, tracing's cost, and the ratios to MLflow async in the same condition;
each cell's line also gives the garbage collector's passes per generation while it ran (their
count and time), which is where a tracer's tail comes from.

MLflow's SDK cells run with ``MLFLOW_HTTP_REQUEST_MAX_RETRIES=0`` and ``MLFLOW_HTTP_REQUEST_TIMEOUT=2``
(its defaults retry for minutes against a dead server). Async vs sync is chosen with
``MLFLOW_ENABLE_ASYNC_TRACE_LOGGING`` (what MLflow 3.17's trace exporter reads;
``MLFLOW_ENABLE_ASYNC_LOGGING`` is set too but only governs run logging).

    python bench/request_path.py [--requests 500] [--rate 50] [--sync-requests 100]
"""

from __future__ import annotations

import argparse
import contextvars
import dataclasses
import gc
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import deque
from pathlib import Path
from typing import Any, Literal

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # tests/ is not an installed package
    sys.path.insert(0, str(ROOT))

from clients.config import ClientConfig  # noqa: E402 - after the path set-up above

CELLS = ("none", "floor", "client", "mlflow_async", "mlflow_sync")
CONDITIONS = ("healthy", "slow", "down")
SLOW_S = 0.5
EXPERIMENT = "bench-request-path"
_CLIENT_DEFAULTS = {f.name: f.default for f in dataclasses.fields(ClientConfig)}
FLOOR_BATCH_SPANS: int = _CLIENT_DEFAULTS["max_batch_spans"]
FLOOR_HOLD_S: float = _CLIENT_DEFAULTS["encode_interval_s"]


# -- the traced request ---------------------------------------------------------------------


class _NullSpan:
    trace_id = "0" * 32

    def __enter__(self) -> _NullSpan:
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        return False

    def set_inputs(self, value: Any) -> None:
        pass

    def set_outputs(self, value: Any) -> None:
        pass

    def set_attribute(self, key: str, value: Any) -> None:
        pass

    def set_attributes(self, attributes: Any) -> None:
        pass


_NULL_SPAN = _NullSpan()


class NullTracer:
    """The no-tracing baseline: the same calls and arguments, nothing recorded."""

    def start_span(self, name: str, span_type: str = "UNKNOWN", attributes: Any = None) -> _NullSpan:
        return _NULL_SPAN

    def update_current_trace(self, tags: Any = None) -> None:
        pass


class _FloorSpan:
    __slots__ = (
        "attrs",
        "end",
        "inputs",
        "name",
        "outputs",
        "parent",
        "sid",
        "span_type",
        "start",
        "status",
        "tags",
        "token",
        "trace",
        "tracer",
    )

    def __init__(self, tracer: FloorTracer, name: str, span_type: str, attrs: Any) -> None:
        parent = tracer.current.get()
        if parent is None:
            self.trace = [random.getrandbits(128), None]  # trace id, tags
            self.parent = 0
        else:
            self.trace = parent.trace
            self.parent = parent.sid
        self.sid = random.getrandbits(64)
        self.tracer, self.name, self.span_type, self.attrs, self.start = tracer, name, span_type, attrs, time.time_ns()

    @property
    def trace_id(self) -> str:
        return f"{self.trace[0]:032x}"

    def __enter__(self) -> _FloorSpan:
        self.token = self.tracer.current.set(self)
        return self

    def __exit__(self, *exc: object) -> Literal[False]:
        self.tracer.current.reset(self.token)
        del self.token  # a held Token is one more object for the garbage collector to scan
        self.end = time.time_ns()
        if not self.parent:
            self.tags = self.trace[1]
        self.tracer.queue.append(self)
        return False

    def set_inputs(self, value: Any) -> None:
        self.inputs = value

    def set_outputs(self, value: Any) -> None:
        self.outputs = value

    def set_attribute(self, key: str, value: Any) -> None:
        self.attrs = {**self.attrs, key: value} if self.attrs else {key: value}

    def set_attributes(self, attributes: Any) -> None:
        self.attrs = {**self.attrs, **attributes} if self.attrs else attributes

    def set_status(self, status: str, message: str = "") -> None:
        self.status = (status, message)


class FloorTracer:
    """The least a tracer can do to record the same spans (see the module docstring)."""

    def __init__(self) -> None:
        self.current: contextvars.ContextVar[Any] = contextvars.ContextVar("floor", default=None)
        self.queue: deque[_FloorSpan] = deque()

    def start_span(self, name: str, span_type: str = "UNKNOWN", attributes: Any = None) -> _FloorSpan:
        return _FloorSpan(self, name, span_type, attributes)

    def update_current_trace(self, tags: Any = None) -> None:
        trace = self.current.get().trace
        trace[1] = {**trace[1], **tags} if trace[1] else dict(tags)


class MlflowTracer:
    """MLflow's own fluent API behind the two calls ``handle_message`` makes on a tracer."""

    def __init__(self, experiment_id: str) -> None:
        import mlflow
        from mlflow.entities.trace_location import MlflowExperimentLocation

        # What ``mlflow.set_experiment`` at start-up amounts to, without a server round trip (the
        # server may be down in this cell). Not ``MLFLOW_EXPERIMENT_ID``: with only that set,
        # MLflow 3.17 calls GetExperiment on the server at the start of *every* trace.
        mlflow.tracing.set_destination(MlflowExperimentLocation(experiment_id=experiment_id))
        self._mlflow = mlflow

    def start_span(self, name: str, span_type: str = "UNKNOWN", attributes: Any = None) -> Any:
        return self._mlflow.start_span(name, span_type=span_type, attributes=attributes)

    def update_current_trace(self, tags: Any = None) -> None:
        self._mlflow.update_current_trace(tags=tags)


def bedrock_plans(count: int, seed: int) -> list[Any]:
    from orchestrator.tools.traffic import plan_requests

    plans = [p for p in plan_requests(count * 3, seed, error_rate=0.0) if p.uses_bedrock][:count]
    assert len(plans) == count and all(p.span_count == 17 for p in plans)
    return plans


class _CountingHandler(logging.Handler):
    """Counts MLflow's warnings (failed exports, a full async queue) without printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.queue_full = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if "queue is full" in record.getMessage():
            self.queue_full += 1


def run_cell(
    cell: str,
    requests: int,
    rate: float,
    max_seconds: float,
    gateway: str,
    experiment_id: str,
    seed: int,
    free_each: bool = False,
    client_options: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Child-process mode: ``requests`` pairs of paced requests, one traced through ``cell`` and
    one untraced (``NullTracer``), interleaved (traced first in every other pair) so both see the
    same machine at the same moments; returns the figures.

    ``cost`` is each pair's traced minus untraced time: what tracing added to that request, with
    the machine's own moment-to-moment noise (a request after an idle sleep can take 3x one
    after a busy moment, untraced or not) mostly cancelled.
    """
    from orchestrator.tools.traffic import handle_message

    warmup = 2 if cell == "mlflow_sync" else 30
    plans = bedrock_plans(requests + warmup, seed)
    extra: dict[str, Any] = {}
    tracer: Any
    control: Any = NullTracer()  # handle_message is typed for the client Tracer
    handler = _CountingHandler()
    if cell == "none":
        tracer = NullTracer()
    elif cell == "floor":
        tracer = FloorTracer()
    elif cell == "client":
        from clients import ClientConfig, Tracer

        tracer = Tracer(
            ClientConfig(
                target=gateway, experiment_name=EXPERIMENT, service_name="bench-request-path", **(client_options or {})
            )
        )
    else:
        tracer = MlflowTracer(experiment_id)
        mlflow_log = logging.getLogger("mlflow")
        mlflow_log.addHandler(handler)
        mlflow_log.propagate = False
    floor_queue = tracer.queue if cell == "floor" else None
    freed_at = time.perf_counter()
    for p in plans[:warmup]:
        handle_message(tracer, p)
        handle_message(control, p)
    traced: list[int] = []
    untraced: list[int] = []
    pauses = GcPauses()
    gc.callbacks.append(pauses)
    period = 1.0 / rate
    sleep = time.sleep
    clock = time.perf_counter
    start = clock()
    stop_at = start + max_seconds
    slot = 0

    def timed(t: Any, plan: Any) -> int:
        nonlocal slot
        target = start + slot * period
        slot += 1
        now = clock()
        if target > now:
            sleep(target - now)
        t0 = time.perf_counter_ns()
        handle_message(t, plan)
        return time.perf_counter_ns() - t0

    for i, p in enumerate(plans[warmup:]):
        if clock() > stop_at:
            break
        if i % 2:
            traced.append(timed(tracer, p))
            untraced.append(timed(control, p))
        else:
            untraced.append(timed(control, p))
            traced.append(timed(tracer, p))
        if floor_queue is not None and (
            free_each or len(floor_queue) >= FLOOR_BATCH_SPANS or clock() - freed_at >= FLOOR_HOLD_S
        ):
            floor_queue.clear()  # what a sender would do, outside the timed calls
            freed_at = clock()
    elapsed = clock() - start
    gc.callbacks.remove(pauses)
    if cell == "client":
        flush_start = clock()
        tracer.flush(2.0)
        stats = tracer.stats()
        tracer.shutdown(2.0)
        extra = {
            "enqueued": stats.spans_enqueued,
            "sent": stats.spans_sent,
            "dropped": {k: v for k, v in stats.spans_dropped.items() if v},
            "errors": stats.errors,
            "flush_shutdown_s": round(clock() - flush_start, 3),
        }
    elif cell.startswith("mlflow"):
        extra = {"mlflow_warnings": handler.count, "queue_full_warnings": handler.queue_full}
    cost = sorted(t - u for t, u in zip(traced, untraced, strict=True))
    ordered = sorted(traced)
    base = sorted(untraced)
    return {
        "cell": cell,
        "n": len(ordered),
        "elapsed_s": round(elapsed, 2),
        "p50_us": pct(ordered, 0.50),
        "p99_us": pct(ordered, 0.99),
        "max_us": ordered[-1] / 1000,
        "untraced_p50_us": pct(base, 0.50),
        "untraced_p99_us": pct(base, 0.99),
        "cost_p50_us": pct(cost, 0.50),
        "cost_p99_us": pct(cost, 0.99),
        "gc": pauses.summary(),
        **extra,
    }


class GcPauses:
    """A ``gc.callbacks`` entry: the garbage collector's passes by generation, and their time."""

    def __init__(self) -> None:
        self._started = 0
        self.count = [0, 0, 0]
        self.total_ns = [0, 0, 0]
        self.max_ns = [0, 0, 0]

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter_ns()
            return
        took = time.perf_counter_ns() - self._started
        gen = info["generation"]
        self.count[gen] += 1
        self.total_ns[gen] += took
        self.max_ns[gen] = max(self.max_ns[gen], took)

    def summary(self) -> dict[str, str]:
        """Per generation: passes, total ms, longest µs (over the timed requests and the gaps)."""
        return {
            f"gen{g}": f"{self.count[g]} passes, {self.total_ns[g] / 1e6:.1f} ms, max {self.max_ns[g] / 1e3:.0f} µs"
            for g in range(3)
            if self.count[g]
        }


def pct(ordered: list[int], q: float) -> float:
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000


# -- the parent: server, proxy, gateway, cells ---------------------------------------------


def cell_env(cell: str, tracking_uri: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    if cell.startswith("mlflow"):
        async_mode = "true" if cell == "mlflow_async" else "false"
        env.update(
            MLFLOW_TRACKING_URI=tracking_uri,
            MLFLOW_ENABLE_ASYNC_LOGGING=async_mode,
            MLFLOW_ENABLE_ASYNC_TRACE_LOGGING=async_mode,
            MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
            MLFLOW_HTTP_REQUEST_TIMEOUT="2",
        )
    return env


def create_experiment(url: str) -> str:
    req = urllib.request.Request(
        url + "/api/2.0/mlflow/experiments/create",
        data=json.dumps({"name": EXPERIMENT}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        return str(json.loads(resp.read())["experiment_id"])


def start_gateway(tracking_uri: str, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    import grpc

    from tests.support import free_port

    port = free_port()
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=tracking_uri,
        MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
        TRACEGW_LISTEN_ADDRESS=f"127.0.0.1:{port}",
        TRACEGW_METRICS_ADDRESS="",
        TRACEGW_SPOOL_DIR=str(workdir / "spool"),
        TRACEGW_LOG_LEVEL="WARNING",
        TRACEGW_MLFLOW_REQUEST_TIMEOUT_S="5",
    )
    log = open(workdir / "gateway.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve"], env=env, stdout=log, stderr=subprocess.STDOUT, cwd=workdir
    )
    target = f"127.0.0.1:{port}"
    with grpc.insecure_channel(target) as channel:
        grpc.channel_ready_future(channel).result(timeout=60)
    return proc, target


def run_child(
    cell: str,
    condition: str,
    args: argparse.Namespace,
    env: dict[str, str],
    gateway: str,
    experiment_id: str,
    workdir: Path,
) -> dict[str, Any]:
    sync = cell == "mlflow_sync"
    requests = args.sync_requests if sync else args.requests
    max_s = args.sync_max_seconds if sync else args.max_seconds
    cmd = [
        sys.executable,
        __file__,
        "--cell",
        cell,
        "--requests",
        str(requests),
        "--rate",
        str(args.rate),
        "--max-seconds",
        str(max_s),
        "--gateway",
        gateway,
        "--experiment-id",
        experiment_id,
        "--seed",
        str(args.seed),
        *(["--pin"] if args.pin else []),
        *(["--floor-frees-each-request"] if args.floor_frees_each_request else []),
        *[arg for option in args.client_option for arg in ("--client-option", option)],
    ]
    with open(workdir / f"{cell}-{condition}.log", "wb") as err:
        try:
            out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=err, timeout=max_s + 120, check=False)
        except subprocess.TimeoutExpired:
            return {"cell": cell, "error": f"timed out after {max_s + 120:.0f}s"}
    lines = out.stdout.decode().strip().splitlines()
    if out.returncode != 0 or not lines:
        last = Path(err.name).read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        return {"cell": cell, "error": f"exit {out.returncode}: {last[0][:200]}"}  # its log goes with the temp dir
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def parse_client_options(parser: argparse.ArgumentParser, options: list[str]) -> dict[str, Any]:
    """``FIELD=VALUE`` pairs as ClientConfig keyword arguments, each value of its field's type."""
    fixed = {"target", "experiment_name", "service_name"}  # the cell sets these
    fields = {f.name: type(_CLIENT_DEFAULTS[f.name]) for f in dataclasses.fields(ClientConfig) if f.name not in fixed}
    out: dict[str, Any] = {}
    for option in options:
        name, sep, text = option.partition("=")
        if not sep or name not in fields:
            known = ", ".join(sorted(fields))
            parser.error(f"--client-option {option!r}: expected FIELD=VALUE, FIELD one of {known}")
        try:
            out[name] = fields[name](text)
        except ValueError:
            parser.error(f"--client-option {option!r}: {text!r} is not a {fields[name].__name__}")
    return out


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(results: dict[str, dict[str, dict[str, Any]]]) -> None:
    print(
        "\n| condition | tracer | n | p50 | p99 | untraced twin p50 | cost p50 | cost p99 | cost p50 / floor's "
        "| MLflow async ÷ this, cost p50 | MLflow async ÷ this, p99 |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for condition, cells in results.items():
        ref = cells.get("mlflow_async", {})
        floor = cells.get("floor", {})
        for cell, r in cells.items():
            if "error" in r:
                print(f"| {condition} | {cell} | – | {r['error']} | | | | | | | |")
                continue
            by_cost = ratio(ref.get("cost_p50_us"), r["cost_p50_us"])
            by_p99 = ratio(ref.get("p99_us"), r["p99_us"])
            to_floor = ratio(r["cost_p50_us"], floor.get("cost_p50_us"))
            print(
                f"| {condition} | {cell} | {r['n']} | {fmt_us(r['p50_us'])} | {fmt_us(r['p99_us'])} "
                f"| {fmt_us(r['untraced_p50_us'])} | {fmt_us(r['cost_p50_us'])} | {fmt_us(r['cost_p99_us'])} "
                f"| {to_floor} | {by_cost} | {by_p99} |"
            )


def ratio(a: float | None, b: float | None) -> str:
    """``a / b`` with a times sign, or a dash when either is missing or ``b`` is below 1 µs."""
    if a is None or b is None or b < 1.0:
        return "–"
    return f"{a / b:,.2f}×"


def fmt_us(us: float) -> str:
    return f"{us / 1000:,.1f} ms" if abs(us) >= 10_000 else f"{us:,.1f} µs"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--requests",
        type=int,
        default=500,
        help="traced requests per cell, each with an untraced twin (default %(default)s)",
    )
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=45.0, help="time bound per cell (default %(default)s)")
    parser.add_argument("--sync-requests", type=int, default=100, help="requests for MLflow sync cells")
    parser.add_argument("--sync-max-seconds", type=float, default=60.0, help="time bound for MLflow sync cells")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated subset of " + ",".join(CELLS))
    parser.add_argument("--conditions", default=",".join(CONDITIONS), help="subset of " + ",".join(CONDITIONS))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="run each cell (the application, with its tracer) alone on CPU 0 and the gateway, the proxy and "
        "the MLflow server on CPU 1: the figures of a pod whose sidecar has CPU of its own",
    )
    parser.add_argument(
        "--floor-frees-each-request",
        action="store_true",
        help="empty the floor tracer's deque after every request (its spans then die young and cost the garbage "
        "collector nothing) instead of on the cadence at which the client's sender takes spans",
    )
    parser.add_argument(
        "--client-option",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="set a ClientConfig field in the client cell (repeatable), e.g. encode_interval_s=0.2",
    )
    parser.add_argument("--cell", help=argparse.SUPPRESS)
    parser.add_argument("--gateway", default="", help=argparse.SUPPRESS)
    parser.add_argument("--experiment-id", default="0", help=argparse.SUPPRESS)
    args = parser.parse_args()
    client_options = parse_client_options(parser, args.client_option)

    if args.pin:  # inherited by the threads and processes started from here on
        os.sched_setaffinity(0, {0} if args.cell else {1})
    if args.cell:
        result = run_cell(
            args.cell,
            args.requests,
            args.rate,
            args.max_seconds,
            args.gateway,
            args.experiment_id,
            args.seed,
            args.floor_frees_each_request,
            client_options,
        )
        print(json.dumps(result), flush=True)
        os._exit(0)  # do not wait for MLflow's exit-time flush against a slow or dead server

    from tests.faultproxy import FaultProxy
    from tests.support import MlflowServer

    cells = [c for c in args.cells.split(",") if c]
    results: dict[str, dict[str, dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-request-path-") as tmp:
        workdir = Path(tmp)
        server = MlflowServer(f"sqlite:///{workdir / 'mlflow.db'}", workdir).start()
        proxy = FaultProxy(server.port).start()
        gateway_proc = None
        try:
            experiment_id = create_experiment(server.url)
            gateway_proc, gateway = start_gateway(proxy.url, workdir)
            print(f"mlflow server {server.url}, proxy {proxy.url}, gateway {gateway}; load average {load_average()}")
            for condition in [c for c in args.conditions.split(",") if c]:
                if condition == "slow":
                    proxy.up()
                    proxy.delay(SLOW_S)
                elif condition == "down":
                    proxy.down()
                else:
                    proxy.up()
                    proxy.pass_through()
                results[condition] = {}
                for cell in cells:
                    t0 = time.perf_counter()
                    r = run_child(cell, condition, args, cell_env(cell, proxy.url), gateway, experiment_id, workdir)
                    results[condition][cell] = r
                    shown = {k: v for k, v in r.items() if k != "cell"}
                    print(
                        f"  {condition:8s} {cell:13s} {time.perf_counter() - t0:5.1f}s  {shown}"
                        f"  (load {load_average()})",
                        flush=True,
                    )
        finally:
            proxy.up()
            proxy.pass_through()
            if gateway_proc is not None:
                gateway_proc.terminate()
                try:
                    gateway_proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    gateway_proc.kill()
            proxy.stop()
            server.stop()
    pinned = "; cells on CPU 0, the rest on CPU 1" if args.pin else ""
    print(
        f"\n17-span tree, paced at {args.rate:g}/s{pinned}; {args.requests} traced + {args.requests} "
        "untraced requests per cell "
        f"({args.sync_requests} / {args.sync_max_seconds:g}s for MLflow sync); slow = +{SLOW_S * 1000:.0f} ms per "
        "HTTP request; down = connection refused"
    )
    print_table(results)


if __name__ == "__main__":
    main()
