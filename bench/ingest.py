"""Gateway ingest on one core: spans/s through the real pipeline into a null writer, CPU and RSS.

The gateway runs in a child process pinned to CPU 0 (``gateway.server.start`` with a writer that
acknowledges every write at once and keeps nothing); the load generator runs in another child
process pinned to CPU 1 and sends ``ExportSpansRequest``s over gRPC. The gateway is configured as
in production with an HTTP tracking URI (``http://127.0.0.1:9``, never contacted, so ``mlflow`` is
not imported): assembly, measure, contract, redaction, sampling at ratio 0.1 with the rescue
buffer, batching, and the disk spool (fsync ``always``) in front of the null writer.

Payloads: 17-span MangaAssist traces recorded with ``clients.Tracer`` running
``orchestrator.tools.traffic.handle_message`` on Bedrock-route plans (a third of them with an e-mail
address and a phone number in the customer's message), encoded with the client's own encoder;
each request carries 30 traces (510 spans, like the client's 512-span batches). Templates are
built before the clock starts; each send only patches fresh trace ids into the template bytes.

Phase 1 (throughput): send as fast as the gateway accepts (``--inflight`` RPCs outstanding),
bounded by ``--spans`` and ``--max-seconds``, then wait for assembly to drain. Reports spans/s
through the pipeline, CPU µs per span (the whole gateway process: gRPC, decode, pipeline,
spool, delivery threads) and peak RSS.

Phase 3 (``--phases 3``, scale-out): two gateway processes, one pinned to each core, each fed by
its own unpinned load generator (which then shares the cores with them): what a second process
on the second core adds.

Phase 2 (memory): a fresh gateway, load paced at ``--steady-rate`` spans/s for
``--steady-seconds``; RSS and the rescue buffer's bytes sampled every 2 s, and the window of
sampled-out traces the full rescue buffer covers.

    python bench/ingest.py [--spans 1000000] [--max-seconds 30] [--steady-rate 10000] [--steady-seconds 240]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

TRACES_PER_REQUEST = 30
TEMPLATES = 60
EXPERIMENT = "bench-ingest"
PII_SUFFIX = " (I'm taro.yamada@example.com, call me on +81 90-1234-5678 if it is out of stock)"
REQUEST_MARK = "#" * 12  # replaced in every copy, so that request ids stay unique (the contract checks)
EXPORT_METHOD = "/mangaassist.tracegateway.v1.TraceGatewayService/ExportSpans"


# -- the gateway child ----------------------------------------------------------------------


def _null_writer() -> Any:
    """``tests/fakes.NullWriter`` from this bench's own tree, loaded by path: with ``--b-rev`` the
    ``gateway`` (and ``tests``) packages on the path are an older tree's."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "_bench_fakes", Path(__file__).resolve().parents[1] / "tests/fakes.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.NullWriter()


def _setting(text: str) -> str:
    """A ``NAME=VALUE`` gateway setting (argparse type)."""
    name, sep, _ = text.partition("=")
    if not sep or not name.startswith(("TRACEGW_", "MLFLOW_")):
        raise argparse.ArgumentTypeError(f"expected TRACEGW_NAME=VALUE, got {text!r}")
    return text


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MB, from /proc."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                fields[key] = int(value.split()[0]) / 1024
    return fields["VmRSS"], fields["VmHWM"]


def serve_gateway(
    workdir: str, ratio: float, cpu: int = 0, gc_interval: str = "", settings: list[str] | None = None
) -> None:
    """Child-process mode: run the gateway with the null writer; answer ``stats`` lines on stdin."""
    from prometheus_client import CollectorRegistry

    from gateway import config as config_mod
    from gateway import logs
    from gateway.server import start

    try:
        from gateway.gc_policy import tune_process
    except ImportError:  # an older tree (bench/ingest_ab.py --b-rev): its own tuning, no clock
        from gateway.service import tune_gc  # type: ignore[import-not-found]  # the layout before gateway/core.py

        def tune_process(interval_s: float, pause_histogram: Any = None) -> Any:  # type: ignore[misc]
            tune_gc()
            return None

    os.sched_setaffinity(0, {cpu})
    cfg = config_mod.load(
        {
            "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
            "MLFLOW_EXPERIMENT_NAME": EXPERIMENT,
            "MLFLOW_TRACE_SAMPLING_RATIO": str(ratio),
            "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
            "TRACEGW_METRICS_ADDRESS": "",
            "TRACEGW_SPOOL_DIR": str(Path(workdir) / "spool"),
            "TRACEGW_LOG_LEVEL": "WARNING",
            **({"TRACEGW_GC_INTERVAL_S": gc_interval} if gc_interval else {}),
            **dict(item.split("=", 1) for item in settings or ()),
        }
    )
    logs.configure(cfg.log_level)
    registry = CollectorRegistry()
    writer = _null_writer()

    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return registry.get_sample_value(name, labels or {}) or 0.0

    def stats() -> dict[str, Any]:
        rss, hwm = rss_mb()
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "pid": os.getpid(),
            "t": time.monotonic(),
            "cpu_s": time.process_time(),
            "utime_s": usage.ru_utime,
            "stime_s": usage.ru_stime,
            "rss_mb": rss,
            "peak_rss_mb": hwm,
            "mlflow_imported": "mlflow" in sys.modules,
            "received": sample("tracegw_spans_received_total", {"receiver": "native"}),
            "traces_in_pipeline": sample("tracegw_stage_traces_in_total", {"stage": "measure"}),
            "traces_kept": sample("tracegw_stage_traces_out_total", {"stage": "sample"}),
            "in_assembly": sample("tracegw_assembly_traces_in_flight"),
            "rescue_traces": sample("tracegw_rescue_traces"),
            "rescue_evicted": sample("tracegw_rescue_evicted_total", {"reason": "bytes"}),
            "rescue_mb": sample("tracegw_rescue_bytes") / 2**20,
            "written_spans": writer.spans,
            "written_batches": writer.batches,
            "gc_collections": collector.collections if collector else 0,
            "gc_found": collector.collected_objects if collector else 0,
            "gc_young_s": sample("tracegw_gc_pause_seconds_sum", {"generation": "1"}),
            "gc_full_s": sample("tracegw_gc_pause_seconds_sum", {"generation": "2"}),
            "gc_full_n": sample("tracegw_gc_pause_seconds_count", {"generation": "2"}),
            "wal_mb": sample("tracegw_wal_bytes") / 2**20,
            "wal_appends": sample("tracegw_wal_appends_total", {"outcome": "ok"}),
            "wal_fsyncs": sample("tracegw_wal_fsyncs_total"),
            "wal_replayed_spans": sample("tracegw_wal_replayed_spans_total"),
            "wal_replay_s": sample("tracegw_wal_replay_seconds"),
        }

    collector = None

    async def main() -> None:
        running = await start(cfg, writer=writer, registry=registry)
        nonlocal collector
        collector = tune_process(
            getattr(cfg.memory, "gc_interval_s", 0.0),  # as gateway.server.serve does
            getattr(running.metrics, "gc_pause", None),
        )
        loop = asyncio.get_running_loop()
        print(json.dumps({"port": running.grpc_port}), flush=True)
        done = asyncio.Event()

        def control() -> None:
            for line in sys.stdin:
                if line.strip() == "stats":
                    print(json.dumps(stats()), flush=True)
                elif line.strip() == "rss":  # cheap: no metrics collection while under load
                    print(json.dumps({"rss_mb": rss_mb()[0]}), flush=True)
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=control, daemon=True).start()
        await done.wait()
        await running.stop(5.0)

    asyncio.run(main())


def serve_floor(cpu: int = 0) -> None:
    """Child-process mode: the floor, a ``grpc.aio`` server that only decodes each request's spans
    into the gateway's records (as DESIGN §8's "converts ~113k spans/s per core") and drops them.
    Answers ``stats`` lines on stdin like ``serve_gateway``."""
    import grpc

    from clients.pb import trace_gateway_service_pb2 as svc_pb2
    from clients.pb import trace_gateway_service_pb2_grpc as svc_grpc
    from gateway.receive.decode_spans import decode_native_spans

    os.sched_setaffinity(0, {cpu})
    decoded = [0]

    class Floor(svc_grpc.TraceGatewayServiceServicer):
        async def ExportSpans(self, request: Any, context: Any) -> Any:
            decoded[0] += len(decode_native_spans(request.spans).spans)
            return svc_pb2.ExportSpansResponse()

    def stats() -> dict[str, Any]:
        return {
            "t": time.monotonic(),
            "cpu_s": time.process_time(),
            "rss_mb": rss_mb()[0],
            "traces_in_pipeline": decoded[0] / 17,
            "in_assembly": 0,
        }

    async def main() -> None:
        server = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 2**20)])
        svc_grpc.add_TraceGatewayServiceServicer_to_server(Floor(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        loop = asyncio.get_running_loop()
        print(json.dumps({"port": port}), flush=True)
        done = asyncio.Event()

        def control() -> None:
            for line in sys.stdin:
                if line.strip() in ("stats", "rss"):
                    print(json.dumps(stats()), flush=True)
            loop.call_soon_threadsafe(done.set)

        threading.Thread(target=control, daemon=True).start()
        await done.wait()
        await server.stop(1.0)

    asyncio.run(main())


class GatewayChild:
    def __init__(
        self,
        workdir: Path,
        ratio: float,
        cpu: int = 0,
        gc_interval: str = "",
        tree: Path | None = None,
        floor: bool = False,
        settings: list[str] | None = None,
    ) -> None:
        """``tree``: import the gateway from that source tree instead of this one; ``floor``: run
        ``serve_floor`` (decoding only) instead of the gateway."""
        env = {**os.environ, "PYTHONPATH": str(tree)} if tree else None
        mode = (
            ["--serve-floor"]
            if floor
            else ["--serve-gateway", str(workdir), "--ratio", str(ratio), "--gc-interval", gc_interval]
            + [f"--gateway-env={item}" for item in settings or ()]
        )
        self.proc = subprocess.Popen(
            [sys.executable, __file__, *mode, "--cpu", str(cpu)],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(json.loads(self._line())["port"])

    def _line(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("gateway child exited")
        return line

    def stats(self, what: str = "stats") -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(what + "\n")
        self.proc.stdin.flush()
        result: dict[str, Any] = json.loads(self._line())
        return result

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- the load generator child ---------------------------------------------------------------


def build_templates(count: int, seed: int) -> list[tuple[bytes, bytes]]:
    """``count`` 17-span traces as (serialised partial ``ExportSpansRequest``, its 16-byte trace id)."""
    from clients import ClientConfig, Tracer
    from clients.encode import encode_spans_chunk
    from orchestrator.tools.traffic import handle_message, plan_requests

    plans = [p for p in plan_requests(count * 3, seed) if p.uses_bedrock][:count]
    plans = [
        dataclasses.replace(
            p, request_id=f"req-{REQUEST_MARK}-{i:06d}", message=p.message + PII_SUFFIX if i % 3 == 0 else p.message
        )
        for i, p in enumerate(plans)
    ]
    # A tracer whose sender never wakes (long interval, batch larger than what is recorded):
    # the finished spans are taken from its queue and encoded with the client's own encoder.
    tracer = Tracer(
        ClientConfig(
            target="127.0.0.1:9",
            flush_interval_s=3600.0,
            encode_interval_s=3600.0,
            max_queue_spans=100_000,
            max_batch_spans=100_000,
        )
    )
    templates = []
    for p in plans:
        handle_message(tracer, p)
        spans = list(tracer._sink.queue)
        tracer._sink.queue.clear()
        assert len(spans) == 17, len(spans)
        body, failed = encode_spans_chunk(spans)
        assert not failed
        templates.append((body, spans[0]._trace.trace_id.to_bytes(16, "big")))
    tracer.shutdown(0.1)
    return templates


def run_load(
    target: str, spans: int, max_seconds: float, rate: float, inflight: int, seed: int, cpu: int = 1
) -> dict[str, Any]:
    """Child-process mode: send requests to ``target``; ``rate`` 0 means as fast as accepted."""
    import grpc

    from clients.encode import export_header
    from clients.pb import trace_gateway_service_pb2 as svc_pb2

    if cpu >= 0:
        os.sched_setaffinity(0, {cpu})
    templates = build_templates(TEMPLATES, seed)
    header = export_header(EXPERIMENT, "bench-ingest")
    rng = random.Random(seed)
    channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 * 2**20)])
    export = channel.unary_unary(
        EXPORT_METHOD, request_serializer=None, response_deserializer=svc_pb2.ExportSpansResponse.FromString
    )
    grpc.channel_ready_future(channel).result(timeout=30)

    mark = REQUEST_MARK.encode()
    copies = 0

    def next_request() -> bytes:
        nonlocal copies
        parts = [header]
        for _ in range(TRACES_PER_REQUEST):
            body, tid = templates[rng.randrange(len(templates))]
            copies += 1
            unique = f"{seed % 10}{copies:011d}".encode()
            parts.append(body.replace(tid, rng.getrandbits(128).to_bytes(16, "big")).replace(mark, unique))
        return b"".join(parts)

    spans_per_request = 17 * TRACES_PER_REQUEST
    total_requests = spans // spans_per_request
    sent = refused = errors = 0
    pending: list[Any] = []
    period = spans_per_request / rate if rate > 0 else 0.0
    start = time.monotonic()
    stop_at = start + max_seconds
    i = 0
    while i < total_requests and time.monotonic() < stop_at:
        if period:
            delay = start + i * period - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        pending.append(export.future(next_request(), timeout=30))
        i += 1
        while len(pending) >= inflight or (pending and pending[0].done()):
            fut = pending.pop(0)
            try:
                fut.result()
                sent += spans_per_request
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    refused += 1
                else:
                    errors += 1
    for fut in pending:
        try:
            fut.result()
            sent += spans_per_request
        except grpc.RpcError:
            errors += 1
    elapsed = time.monotonic() - start
    channel.close()
    return {"spans_accepted": sent, "requests": i, "refused": refused, "errors": errors, "elapsed_s": elapsed}


def start_load(
    target: str, spans: int, max_seconds: float, rate: float, inflight: int, seed: int, cpu: int = 1
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--load",
            target,
            "--spans",
            str(spans),
            "--max-seconds",
            str(max_seconds),
            "--rate",
            str(rate),
            "--inflight",
            str(inflight),
            "--seed",
            str(seed),
            "--cpu",
            str(cpu),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def finish_load(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=timeout_s)
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


# -- the parent -----------------------------------------------------------------------------


def wait_drained(gw: GatewayChild, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        s = gw.stats()
        if s["in_assembly"] == 0 or time.monotonic() > deadline:
            return s
        time.sleep(0.1)


def throughput_phase(args: argparse.Namespace, workdir: Path) -> None:
    gw = GatewayChild(workdir / "throughput", args.ratio, gc_interval=args.gc_interval, settings=args.gateway_env)
    try:
        # Warm-up: a few thousand spans so imports, regex compilation and allocator growth are done.
        finish_load(start_load(f"127.0.0.1:{gw.port}", 20 * 510, 30, 0, args.inflight, 1), 120)
        wait_drained(gw, 10)
        before = gw.stats()
        t0 = time.monotonic()
        load = start_load(f"127.0.0.1:{gw.port}", args.spans, args.max_seconds, 0, args.inflight, 2)
        peak = before["rss_mb"]
        while load.poll() is None:
            time.sleep(0.5)
            peak = max(peak, gw.stats("rss")["rss_mb"])
        sent = finish_load(load, 60)
        after = wait_drained(gw, 30)
        wall = after["t"] - before["t"]
        spans = (after["traces_in_pipeline"] - before["traces_in_pipeline"]) * 17
        cpu = after["cpu_s"] - before["cpu_s"]
        print(
            f"Phase 1, as fast as accepted ({args.inflight} RPCs in flight, {TRACES_PER_REQUEST} traces x 17 spans "
            f"per request, ratio {args.ratio}), measured {time.monotonic() - t0:.1f}s:"
        )
        print(f"  load generator: {sent}")
        print(
            f"  gateway: {spans:,.0f} spans through the pipeline in {wall:.2f}s = {spans / wall:,.0f} spans/s; "
            f"CPU {cpu:.2f}s (user {after['utime_s'] - before['utime_s']:.2f}, "
            f"sys {after['stime_s'] - before['stime_s']:.2f}) = {cpu / spans * 1e6:.1f} µs/span; "
            f"CPU utilisation {cpu / wall:.0%} of one core"
        )
        print(
            f"  kept {after['traces_kept'] - before['traces_kept']:,.0f} of "
            f"{after['traces_in_pipeline'] - before['traces_in_pipeline']:,.0f} traces; written to the null writer: "
            f"{after['written_spans'] - before['written_spans']:,} spans in "
            f"{after['written_batches'] - before['written_batches']} batches"
        )
        print(
            f"  RSS {after['rss_mb']:.0f} MB at the end, peak sampled {peak:.0f} MB, "
            f"VmHWM {after['peak_rss_mb']:.0f} MB; rescue buffer {after['rescue_traces']:,.0f} traces / "
            f"{after['rescue_mb']:.1f} MB (estimated); "
            f"mlflow imported: {after['mlflow_imported']}"
        )
        print(
            f"  garbage collections on the clock: {after['gc_collections'] - before['gc_collections']}, "
            f"unreachable objects found {after['gc_found'] - before['gc_found']:,}; pauses: young "
            f"{after['gc_young_s'] - before['gc_young_s']:.2f} s, "
            f"full {after['gc_full_s'] - before['gc_full_s']:.2f} s in {after['gc_full_n'] - before['gc_full_n']:.0f}"
        )
    finally:
        gw.stop()


def scale_out_phase(args: argparse.Namespace, workdir: Path) -> None:
    """Two gateway processes, one pinned to each core, each fed by its own (unpinned) load generator."""
    gws = [
        GatewayChild(workdir / f"scale{i}", args.ratio, cpu=i, gc_interval=args.gc_interval, settings=args.gateway_env)
        for i in range(2)
    ]
    try:
        for gw in gws:
            finish_load(start_load(f"127.0.0.1:{gw.port}", 20 * 510, 30, 0, args.inflight, 1, cpu=-1), 120)
            wait_drained(gw, 10)
        before = [gw.stats() for gw in gws]
        loads = [
            start_load(f"127.0.0.1:{gw.port}", args.spans, args.max_seconds, 0, args.inflight, 4 + i, cpu=-1)
            for i, gw in enumerate(gws)
        ]
        sent = [finish_load(load, args.max_seconds + 120) for load in loads]
        after = [wait_drained(gw, 30) for gw in gws]
        wall = max(a["t"] for a in after) - min(b["t"] for b in before)
        spans = [(a["traces_in_pipeline"] - b["traces_in_pipeline"]) * 17 for a, b in zip(after, before, strict=True)]
        cpu = [a["cpu_s"] - b["cpu_s"] for a, b in zip(after, before, strict=True)]
        print(f"\nPhase 3, two gateway processes (CPU 0 and CPU 1) and two unpinned load generators, {wall:.1f}s:")
        for i in range(2):
            print(f"  gateway {i}: {spans[i]:,.0f} spans, {cpu[i] / spans[i] * 1e6:.1f} µs CPU/span; load: {sent[i]}")
        print(f"  together: {sum(spans) / wall:,.0f} spans/s")
    finally:
        for gw in gws:
            gw.stop()


def steady_phase(args: argparse.Namespace, workdir: Path) -> None:
    gw = GatewayChild(workdir / "steady", args.ratio, gc_interval=args.gc_interval, settings=args.gateway_env)
    try:
        first = gw.stats()
        spans = int(args.steady_rate * args.steady_seconds)
        load = start_load(f"127.0.0.1:{gw.port}", spans, args.steady_seconds + 10, args.steady_rate, args.inflight, 3)
        samples = []
        while load.poll() is None:
            time.sleep(2.0)
            samples.append(gw.stats())
        sent = finish_load(load, 60)
        last = wait_drained(gw, 30)
        samples.append(last)
        wall = last["t"] - first["t"]
        processed = (last["traces_in_pipeline"] - first["traces_in_pipeline"]) * 17
        print(
            f"\nPhase 2, paced at {args.steady_rate:,.0f} spans/s for {args.steady_seconds:.0f}s "
            f"(fresh gateway, ratio {args.ratio}): load generator {sent}"
        )
        print(
            f"  gateway: {processed:,.0f} spans through the pipeline; CPU {last['cpu_s'] - first['cpu_s']:.1f}s over "
            f"{wall:.1f}s = {(last['cpu_s'] - first['cpu_s']) / wall:.0%} of one core"
        )
        print(
            f"  RSS at start {first['rss_mb']:.0f} MB; every 2 s (MB): "
            + " ".join(f"{s['rss_mb']:.0f}" for s in samples)
        )
        print("  rescue buffer (MB, the gateway's own estimate): " + " ".join(f"{s['rescue_mb']:.0f}" for s in samples))
        print(
            f"  max RSS {max(s['rss_mb'] for s in samples):.0f} MB, VmHWM {last['peak_rss_mb']:.0f} MB; "
            f"mlflow imported: {last['mlflow_imported']}"
        )
        dropped = (last["traces_in_pipeline"] - first["traces_in_pipeline"]) - (
            last["traces_kept"] - first["traces_kept"]
        )
        if last["rescue_evicted"] and dropped:
            window = last["rescue_traces"] / (dropped / wall)
            print(
                f"  rescue window: {last['rescue_traces']:,.0f} traces held, {last['rescue_mb']:.1f} MB, at "
                f"{dropped / wall:,.0f} sampled-out traces/s = the last {window:.0f} s of them"
            )
    finally:
        gw.stop()


def replay_phase(args: argparse.Namespace, workdir: Path) -> None:
    """Phase 4: SIGKILL the gateway under load paced at ``--steady-rate``, start a new one on the same
    spool and write-ahead log, and report how long the replay took and what it fed through; then
    load the new gateway and check that everything it received went through."""
    directory = workdir / "replay"
    gw = GatewayChild(directory, args.ratio, gc_interval=args.gc_interval, settings=args.gateway_env)
    try:
        load = start_load(f"127.0.0.1:{gw.port}", int(args.steady_rate * 30), 30, args.steady_rate, args.inflight, 4)
        time.sleep(8.0)
        before = gw.stats()
        gw.proc.kill()
        gw.proc.wait()
        t_kill = time.monotonic()
        load.kill()
        load.wait()
    finally:
        gw.stop()
    again = GatewayChild(directory, args.ratio, gc_interval=args.gc_interval, settings=args.gateway_env)
    try:
        serving_s = time.monotonic() - t_kill
        first = again.stats()
        load = start_load(f"127.0.0.1:{again.port}", int(args.steady_rate * 5), 10, args.steady_rate, args.inflight, 5)
        sent = finish_load(load, 60)
        last = wait_drained(again, 30)
        print(
            f"\nPhase 4, SIGKILL at {args.steady_rate:,.0f} spans/s (WAL {before['wal_mb']:.1f} MB, "
            f"{before['wal_fsyncs']:,.0f} fsyncs for {before['wal_appends']:,.0f} RPCs before the kill):"
        )
        print(
            f"  restart: replayed {first['wal_replayed_spans']:,.0f} spans in {first['wal_replay_s']:.3f} s; "
            f"serving {serving_s:.1f} s after the kill (a new process: imports included; the port opens "
            "after the replay, so nothing is received while it runs)"
        )
        received = last["received"] - first["received"]
        processed = (last["traces_in_pipeline"] - first["traces_in_pipeline"]) * 17 - first["wal_replayed_spans"]
        print(
            f"  then {sent}: received {received:,.0f} spans, through the pipeline {processed:,.0f} "
            f"(beside the replayed ones); in assembly at the end {last['in_assembly']:.0f} traces"
        )
    finally:
        again.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spans", type=int, default=1_000_000, help="phase 1 bound in spans (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="phase 1 bound in seconds")
    parser.add_argument("--inflight", type=int, default=4, help="RPCs outstanding from the load generator")
    parser.add_argument("--ratio", type=float, default=0.1, help="head sampling ratio (default %(default)s)")
    parser.add_argument("--steady-rate", type=float, default=10_000.0, help="phase 2 spans/s (0 skips phase 2)")
    parser.add_argument(
        "--steady-seconds",
        type=float,
        default=240.0,
        help="phase 2 duration (default %(default)s: long enough at 10k spans/s for the rescue buffer and the "
        "100k-trace decision caches to fill, so the RSS is the steady state)",
    )
    parser.add_argument(
        "--phases",
        default="1,2",
        help="which phases to run (default %(default)s; 3: two gateway processes; 4: SIGKILL and WAL replay)",
    )
    parser.add_argument(
        "--gc-interval", default="", help="the gateway's TRACEGW_GC_INTERVAL_S (default: the gateway's default)"
    )
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        type=_setting,
        help="a gateway setting for this run, e.g. TRACEGW_WAL=false (repeatable)",
    )
    parser.add_argument("--serve-gateway", metavar="WORKDIR", help=argparse.SUPPRESS)
    parser.add_argument("--serve-floor", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--load", metavar="TARGET", help=argparse.SUPPRESS)
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, default=-2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_floor:
        serve_floor(max(args.cpu, 0))
        return
    if args.serve_gateway:
        serve_gateway(args.serve_gateway, args.ratio, max(args.cpu, 0), args.gc_interval, args.gateway_env)
        return
    if args.load:
        cpu = 1 if args.cpu == -2 else args.cpu
        print(json.dumps(run_load(args.load, args.spans, args.max_seconds, args.rate, args.inflight, args.seed, cpu)))
        return
    if os.cpu_count() is None or (os.cpu_count() or 0) < 2:
        sys.exit("needs two CPUs: the gateway is pinned to CPU 0 and the load generator to CPU 1")
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        phases = args.phases.split(",")
        if "1" in phases:
            throughput_phase(args, Path(tmp))
        if "2" in phases and args.steady_rate > 0:
            steady_phase(args, Path(tmp))
        if "3" in phases:
            scale_out_phase(args, Path(tmp))
        if "4" in phases:
            replay_phase(args, Path(tmp))
    print(f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
