"""``mangaassist-demo``: the gateway sidecar with realistic traffic, on embedded defaults.

What it does, in order, printing as it goes:

0. bootstraps the release registry (``mangaassist-release bootstrap``) in the same store and
   exports the ``prod`` bundle for the chatbot, which serves it (prompts from the prompt
   registry, its component versions; every trace tagged with the bundle's LoggedModel);
1. starts the gateway as a real sidecar process (``tracegw serve``) on free loopback ports,
   writing to a SQLite MLflow store in the working directory (or, with ``--mlflow-server``, to
   a local ``mlflow server`` it starts on a free port);
2. starts the MangaAssist orchestrator (its HTTP API on a free loopback port, offline
   providers: intent classifier, embeddings, BM25 and vector search over the shipped corpus,
   reranker, extractive generator, guardrails, response cache) and sends it realistic chat
   requests across every intent and page type, plus thumbs-up/down through ``/v1/feedback``
   and the bundle's ``registered`` event;
3. with ``--mlflow-server``: stops the MLflow server while traffic keeps flowing, and prints
   the request latency with MLflow up and with it down;
4. stops the gateway with SIGTERM (it drains what it holds and exits 0), then sends a few
   requests with no gateway at all: the application keeps working, drops are counted;
5. reads MLflow back and prints what landed, how many traces ``search_traces(model_id=<the
   bundle's LoggedModel>)`` and ``prompt = '<name>/<version>'`` find, and how to open it in
   ``mlflow ui``;
6. then ``make release-demo``'s steps on the same store: a candidate with one changed prompt
   (made with MLflow's prompt API), its offline evaluation and the comparison with prod
   (``--skip-release`` stops before this).

No AWS, no server started by hand. Everything it serves listens on 127.0.0.1 only.

``--serve`` (``make demo-serve``) does none of that: it starts a local ``mlflow server``, the
gateway writing to it and the chatbot, prints the chat page's address (``GET /``, every answer
linked to its trace in that MLflow UI) and keeps them running until Ctrl-C (or SIGTERM), then
stops them: the chatbot first, the gateway with SIGTERM (it drains), MLflow last.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clients import ClientConfig, ClientStats, Tracer
from orchestrator.adapters import offline_providers
from orchestrator.api import RunningApi, create_app, serve_in_thread
from orchestrator.config import load
from orchestrator.release import events
from orchestrator.release.follow import follow_once
from orchestrator.release.registry import ReleaseRegistry
from orchestrator.service import ChatService
from orchestrator.tools.scenarios import ChatPlan, plan_chats
from orchestrator.tools.traffic import percentile

EXPERIMENT = "mangaassist-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_mlflow_server(workdir: Path, backend_uri: str, port: int, log_path: Path) -> subprocess.Popen[bytes]:
    """A local ``mlflow server`` on 127.0.0.1 (one worker, no job runner), in its own process group."""
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            [
                shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow",
                "server",
                "--backend-store-uri",
                backend_uri,
                "--default-artifact-root",
                (workdir / "mlartifacts").as_uri(),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false"),
        )


def _wait(check: Callable[[], object], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise SystemExit(f"demo: timed out after {timeout_s:.0f}s waiting for {what}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _grpc_serving(target: str) -> bool:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    try:
        with grpc.insecure_channel(target) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
            return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def scrape(metrics_url: str) -> dict[str, float]:
    """Sum every ``tracegw_*`` sample by metric name and labels, from a real scrape."""
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("tracegw_") and " " in line:
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    return values


def _wait_written(metrics_url: str, timeout_s: float) -> float:
    """Seconds until the gateway has written everything it received (MLflow is slower than the app)."""
    started = time.monotonic()

    def done() -> bool:
        m = scrape(metrics_url)
        received = sum(v for k, v in m.items() if k.startswith("tracegw_spans_received_total"))
        settled = sum(v for k, v in m.items() if k.startswith("tracegw_spans_dropped_total"))
        return received > 0 and m.get("tracegw_spans_written_total", 0.0) + settled >= received

    _wait(done, timeout_s, "the gateway to write what it received")
    return time.monotonic() - started


@dataclass
class DriveResult:
    latencies_ms: list[float] = field(default_factory=list)
    trace_ids: list[str] = field(default_factory=list)
    feedback_sent: int = 0
    cache_hits: int = 0
    blocked: int = 0


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return dict(json.loads(resp.read()))


def drive(api_url: str, plans: list[ChatPlan], rate_per_s: float) -> DriveResult:
    """POST each plan to ``/v1/chat`` at about ``rate_per_s``, then its feedback to ``/v1/feedback``."""
    out = DriveResult()
    interval = 1.0 / rate_per_s
    next_at = time.monotonic()
    for plan in plans:
        t0 = time.perf_counter()
        resp = _post(api_url + "/v1/chat", plan.body)
        out.latencies_ms.append((time.perf_counter() - t0) * 1000)
        out.trace_ids.append(resp["trace_id"])
        out.cache_hits += bool(resp["cache_hit"])
        out.blocked += resp["guardrail_action"] == "block"
        if plan.feedback:
            _post(
                api_url + "/v1/feedback",
                {
                    "response_id": resp["response_id"],
                    "trace_id": resp["trace_id"],
                    "feedback": plan.feedback,
                    "reason_code": "wrong_recommendation" if plan.feedback == "thumbs_down" else "helpful",
                },
            )
            out.feedback_sent += 1
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)  # pacing the load, not synchronising
    return out


def _cost_line(label: str, result: DriveResult) -> str:
    c = result.latencies_ms
    return (
        f"  {label:<28} {len(c):>5} requests   latency p50 {statistics.median(c):6.1f} ms"
        f"   p99 {percentile(c, 0.99):6.1f} ms   ({result.cache_hits} cache hits, {result.blocked} blocked)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mangaassist-demo",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n\n".join(__doc__.split("\n\n")[1:]),
    )
    parser.add_argument("--requests", type=int, default=400, help="requests while MLflow is up (default %(default)s)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default %(default)s)")
    parser.add_argument("--workdir", default=".", help="where mlflow.db and logs go (default: current directory)")
    parser.add_argument(
        "--mlflow-server", action="store_true", help="write through a local `mlflow server` and stop it mid-run"
    )
    parser.add_argument(
        "--skip-release", action="store_true", help="stop after the traffic part (no candidate, evaluation, compare)"
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="no traffic: keep the chat page (and its gateway and MLflow UI) running on 127.0.0.1 until Ctrl-C",
    )
    parser.add_argument("--port", type=int, default=0, help="with --serve: the chat page's port (default: a free one)")
    args = parser.parse_args(argv)
    if args.requests <= 0 or args.rate <= 0:
        parser.error("--requests and --rate must be positive")

    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.serve:
        return serve(workdir, args.port)
    db_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    procs: list[subprocess.Popen[bytes]] = []
    apis: list[RunningApi] = []
    mlflow_proc = None
    try:
        tracking_uri = db_uri
        if args.mlflow_server:
            port = _free_port()
            tracking_uri = f"http://127.0.0.1:{port}"
            print(f"[1/5] starting mlflow server on {tracking_uri} (SQLite {workdir / 'mlflow.db'}) ...")
            mlflow_proc = start_mlflow_server(workdir, db_uri, port, workdir / "mlflow-server.log")
            procs.append(mlflow_proc)
            _wait(lambda: _http_ok(tracking_uri + "/health"), 120, "mlflow server")
        started_ms = int(time.time() * 1000)
        print(f"[release] bootstrapping the registry in {tracking_uri} and exporting prod for the chatbot ...")
        registry = ReleaseRegistry(tracking_uri, EXPERIMENT)  # through the server when there is one
        registry.bootstrap(load({"MLFLOW_TRACKING_URI": tracking_uri}))
        bundle_dir = workdir / "bundles"
        follow_once(registry, bundle_dir, ["prod"])
        prod = registry.resolve("prod")
        print(f"      prod = bundle {prod.version} ({prod.bundle_version}), LoggedModel {prod.model_id}")
        grpc_port, metrics_port = _free_port(), _free_port()
        target = f"127.0.0.1:{grpc_port}"
        metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
        env = dict(
            os.environ,
            TRACEGW_LISTEN_ADDRESS=target,
            TRACEGW_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
            MLFLOW_TRACKING_URI=tracking_uri,
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            TRACEGW_ARTIFACT_ROOT=str(workdir / "mlartifacts"),
        )
        gw_log_path = workdir / "tracegw.log"
        print(
            f"[{'2' if args.mlflow_server else '1'}/5] starting the gateway sidecar on {target} "
            f"(metrics {metrics_url}, log {gw_log_path.name}) ..."
        )
        gw_log = open(gw_log_path, "ab")  # noqa: SIM115
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve"],
            env=env,
            cwd=workdir,
            stdout=gw_log,
            stderr=subprocess.STDOUT,
        )
        procs.append(gateway)
        _wait(lambda: _grpc_serving(target), 60, "gateway health SERVING")

        tracer = Tracer(ClientConfig(target=target, service_name="mangaassist-orchestrator"))
        providers = offline_providers(load({"MANGAASSIST_BUNDLE_DIR": str(bundle_dir)}))
        service = ChatService(tracer, providers, deployment_stage="dev")
        api = serve_in_thread(create_app(service))
        apis.append(api)
        print(f"      orchestrator API on {api.url} (offline providers; POST /v1/chat, /v1/feedback)")
        print(f"      sending {args.requests} chat requests at {args.rate:.0f}/s ...")
        plans = plan_chats(args.requests + args.requests // 2 + 100, seed=11)
        up = drive(api.url, plans[: args.requests], args.rate)
        tracer.record_bundle_event(events.registered(prod, "release-pipeline", "make demo: the bootstrapped bundle"))
        tracer.flush(timeout_s=10)
        cost_lines = [_cost_line("gateway up, MLflow up", up)]
        caught_up_s = _wait_written(metrics_url, timeout_s=120)
        print(f"      MLflow has every span the gateway received ({caught_up_s:.1f}s after the last request)")

        if mlflow_proc is not None:
            print("[3/5] stopping the MLflow server while traffic keeps flowing ...")
            os.killpg(mlflow_proc.pid, signal.SIGTERM)
            mlflow_proc.wait(timeout=30)
            down = drive(api.url, plans[args.requests : args.requests + args.requests // 2], args.rate)
            tracer.flush(timeout_s=10)
            cost_lines.append(_cost_line("gateway up, MLflow DOWN", down))

        before_stop = scrape(metrics_url)
        print("[4/5] stopping the gateway with SIGTERM (drain) ...")
        gateway.send_signal(signal.SIGTERM)
        code = gateway.wait(timeout=120)
        print(f"      gateway exited with code {code}")
        no_gw = drive(api.url, plans[-100:], args.rate)
        tracer.flush(timeout_s=2)
        cost_lines.append(_cost_line("gateway DOWN", no_gw))
        api.stop()
        tracer.shutdown(timeout_s=2)
        stats = tracer.stats()

        print("[5/5] reading MLflow back ...\n")
        _report(db_uri, workdir, cost_lines, before_stop, stats, up.feedback_sent)
        _links(db_uri, prod, started_ms)
        if args.skip_release:
            return 0 if code == 0 else 1
        from orchestrator.tools import release_demo

        print("\n[release] a candidate with one changed prompt, its evaluation and comparison (make release-demo):")
        released = release_demo.run(db_uri, step="  ")
        return 0 if code == 0 and released == 0 else 1
    finally:
        for running in apis:
            running.stop()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def serve(workdir: Path, port: int = 0) -> int:
    """The chat page with a real gateway and MLflow UI behind it, until SIGINT or SIGTERM."""
    import mlflow

    db_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    mlflow_proc: subprocess.Popen[bytes] | None = None
    gateway: subprocess.Popen[bytes] | None = None
    api: RunningApi | None = None
    tracer: Tracer | None = None
    stopping = False

    def interrupt(_signum: int, _frame: Any) -> None:
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        ui_port = _free_port()
        ui_url = f"http://127.0.0.1:{ui_port}"
        print(f"starting mlflow server on {ui_url} (SQLite {workdir / 'mlflow.db'}) ...", flush=True)
        mlflow_proc = start_mlflow_server(workdir, db_uri, ui_port, workdir / "mlflow-server.log")
        _wait(lambda: _http_ok(ui_url + "/health"), 120, "mlflow server")
        client = mlflow.MlflowClient(tracking_uri=ui_url)
        exp = client.get_experiment_by_name(EXPERIMENT)
        experiment_id = exp.experiment_id if exp is not None else client.create_experiment(EXPERIMENT)

        grpc_port, metrics_port = _free_port(), _free_port()
        target = f"127.0.0.1:{grpc_port}"
        env = dict(
            os.environ,
            TRACEGW_LISTEN_ADDRESS=target,
            TRACEGW_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
            MLFLOW_TRACKING_URI=ui_url,
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            MLFLOW_TRACE_SAMPLING_RATIO="1.0",
            TRACEGW_ARTIFACT_ROOT=str(workdir / "mlartifacts"),
            TRACEGW_SPOOL_DIR=str(workdir / "spool"),
        )
        print(f"starting the gateway sidecar on {target} (log tracegw.log) ...", flush=True)
        with open(workdir / "tracegw.log", "ab") as gw_log:
            gateway = subprocess.Popen(
                [sys.executable, "-m", "gateway.cli", "serve"],
                env=env,
                cwd=workdir,
                stdout=gw_log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches this process only; it stops the gateway in order
            )
        _wait(lambda: _grpc_serving(target), 60, "gateway health SERVING")

        tracer = Tracer(ClientConfig(target=target, service_name="mangaassist-orchestrator"))
        service = ChatService(tracer, offline_providers(), deployment_stage="dev")
        service.retriever.warm_up()
        app = create_app(service, mlflow_ui_url=ui_url, mlflow_experiment_id=experiment_id)
        api = serve_in_thread(app, host="127.0.0.1", port=port)
        print(f"\nChat page: {api.url}/", flush=True)
        print(f"MLflow UI: {ui_url}/#/experiments/{experiment_id}/traces (experiment '{EXPERIMENT}')")
        print("Press Ctrl-C to stop.", flush=True)
        while api.thread.is_alive() and gateway.poll() is None and mlflow_proc.poll() is None:
            time.sleep(0.5)  # waiting for Ctrl-C; also notices a server that died
        print("demo: a server stopped on its own; shutting down", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping: chatbot, gateway (drain), mlflow server ...", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not cut the cleanup short
        if api is not None:
            api.stop()
        if tracer is not None:
            tracer.shutdown(timeout_s=5)
        if gateway is not None and gateway.poll() is None:
            gateway.send_signal(signal.SIGTERM)
            try:
                gateway.wait(timeout=60)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait(timeout=5)
        if mlflow_proc is not None and mlflow_proc.poll() is None:
            os.killpg(mlflow_proc.pid, signal.SIGTERM)
            try:
                mlflow_proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(mlflow_proc.pid, signal.SIGKILL)
                mlflow_proc.wait(timeout=5)
        signal.signal(signal.SIGTERM, previous)
        print("stopped.", flush=True)


def _report(
    db_uri: str, workdir: Path, cost_lines: list[str], metrics: dict[str, float], stats: ClientStats, feedback_sent: int
) -> None:
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    import mlflow

    mlflow.set_tracking_uri(db_uri)
    client = mlflow.MlflowClient()
    exp = client.get_experiment_by_name(EXPERIMENT)
    traces = client.search_traces(locations=[exp.experiment_id], max_results=5000) if exp else []
    intents = Counter(t.info.tags.get("intent", "?") for t in traces)
    errors = sum(1 for t in traces if t.info.state.value == "ERROR")
    with_feedback = sum(1 for t in traces if t.info.tags.get("user_feedback"))
    spans = sum(len(t.data.spans) for t in traces)
    received = sum(v for k, v in metrics.items() if k.startswith("tracegw_spans_received_total"))
    written = metrics.get("tracegw_spans_written_total", 0.0)
    dropped = {k: v for k, v in metrics.items() if k.startswith("tracegw_spans_dropped_total")}
    gens = [s for t in traces for s in t.data.spans if s.name == "bedrock_generate"]
    model_cost = sum(float(s.attributes.get("cost_usd", 0.0)) for s in gens)
    tokens_in = sum(int(s.attributes.get("input_tokens", 0)) for s in gens)
    tokens_out = sum(int(s.attributes.get("output_tokens", 0)) for s in gens)
    violations = sum(v for k, v in metrics.items() if k.startswith("tracegw_contract_violations_total"))
    print("What a chat request took, end to end over HTTP (the request path never waits on MLflow):")
    for line in cost_lines:
        print(line)
    print(
        f"  client counters: {stats.spans_enqueued} spans enqueued, {stats.spans_sent} sent, "
        f"dropped {dict((k, v) for k, v in stats.spans_dropped.items() if v) or 0}"
    )
    print("\nWhat the gateway did (scraped from /metrics before shutdown):")
    print(f"  spans received {received:.0f}, written to MLflow {written:.0f}; drops: {dropped or 'none'}")
    print(f"\nWhat landed in MLflow (experiment '{EXPERIMENT}', {db_uri}):")
    print(
        f"  {len(traces)} traces, {spans} spans; {errors} with ERROR status; {with_feedback} with user_feedback "
        f"(of {feedback_sent} feedback events sent)"
    )
    print("  by intent: " + ", ".join(f"{k} {v}" for k, v in intents.most_common()))
    if traces:
        print(
            f"  model cost (price table × tokens; offline tokens are estimates): {len(gens)} generations, "
            f"{tokens_in} input / {tokens_out} output tokens, ${model_cost:.4f} total, "
            f"${model_cost / len(traces):.6f} per request"
        )
    print(f"  trace contract violations counted by the gateway: {violations:.0f}")
    if traces:
        sample = traces[0]
        snap = next(
            (
                s.attributes.get("retrieval.snapshot")
                for t in traces
                for s in t.data.spans
                if s.name == "retrieve_chunks"
            ),
            None,
        )
        print(
            f"  e.g. {sample.info.trace_id}: {len(sample.data.spans)} spans, tags "
            f"intent={sample.info.tags.get('intent')} release_bundle={sample.info.tags.get('release_bundle')}"
        )
        if isinstance(snap, dict):
            print(
                f"  chunk snapshot on retrieve_chunks (attribute retrieval.snapshot), e.g. trace {snap['trace_id']}: "
                f"{', '.join(snap['chunk_ids'])}"
            )
    print("\nOpen it in the MLflow UI:")
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    print(f"  {mlflow_bin} ui --backend-store-uri {db_uri} --port 5000   # then http://127.0.0.1:5000")
    print(f"  search traces with: tags.intent = 'recommendation'   (experiment '{EXPERIMENT}')")


def _links(db_uri: str, prod: Any, since_ms: int) -> None:
    """How this run's stored traces link to the served bundle's LoggedModel and prompt versions."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=db_uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    if exp is None:
        return
    recent = f"timestamp_ms > {since_ms}"
    stored = client.search_traces(locations=[exp.experiment_id], filter_string=recent, max_results=5000)
    linked = [
        t
        for t in mlflow.search_traces(
            locations=[exp.experiment_id], model_id=prod.model_id, max_results=5000, return_type="list"
        )
        if t.info.request_time > since_ms
    ]
    print("\nLinked to the release bundle (the gateway adds mlflow.modelId and prompt links to stored traces):")
    print(f"  search_traces(model_id={prod.model_id}): {len(linked)} of {len(stored)} stored traces")
    for route, uri in sorted(prod.prompts.items()):
        label = uri.removeprefix("prompts:/")
        found = client.search_traces(
            locations=[exp.experiment_id], filter_string=f"prompt = '{label}'", max_results=5000
        )
        print(f"  prompt = '{label}': {len(found)} traces ({route})")


if __name__ == "__main__":
    sys.exit(main())
