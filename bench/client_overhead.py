"""Request-path overhead of the trace client on the 17-span MangaAssist tree.

Starts a tiny recording gRPC gateway on 127.0.0.1:0 in a child process, then traces paced
requests, interleaved so that all scenarios see the same machine noise:

- the floor: a minimal hand-written tracer making the same calls (start/enter/exit, inputs,
  outputs, one added attribute, trace tags), each with the least work that records it;
- the client with its sender thread idle (it never wakes; its queue is emptied between
  requests, untimed): the cost of the span API alone;
- the client with the gateway up (the sender encodes and ships, competing for the GIL);
- the client with nothing listening.

Prints p50/p99/p99.9 per request and the clients' counters.

    python bench/client_overhead.py [--requests 2000] [--rate 500]
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc

from clients import ClientConfig, ClientStats, Tracer
from clients.pb import trace_gateway_service_pb2 as svc_pb2
from clients.pb import trace_gateway_service_pb2_grpc as svc_grpc

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # bench/ is not an installed package
    sys.path.insert(0, str(ROOT))

from bench.request_path import FloorTracer  # noqa: E402

CHILDREN: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("load_context", "RETRIEVER", []),
    ("intent_classification", "LLM", []),
    ("route_intent", "CHAIN", []),
    (
        "retrieve_chunks",
        "RETRIEVER",
        [
            ("embed_query", "EMBEDDING"),
            ("vector_search", "RETRIEVER"),
            ("keyword_search", "RETRIEVER"),
            ("rerank_chunks", "RERANKER"),
        ],
    ),
    ("build_prompt", "PARSER", []),
    ("bedrock_generate", "LLM", []),
    (
        "apply_guardrails",
        "GUARDRAIL",
        [
            ("prompt_injection", "GUARDRAIL"),
            ("pii_detection", "GUARDRAIL"),
            ("grounding_check", "GUARDRAIL"),
            ("format_validation", "GUARDRAIL"),
        ],
    ),
    ("persist_response", "TOOL", []),
]
TAGS = {f"tag_{i}": f"value_{i}" for i in range(9)} | {"intent": "recommendation"}
MESSAGE = {"message": "Recommend me a manga like Vinland Saga", "session_id": "s-123"}
ANSWER = {"response": "You might enjoy Berserk and Vagabond.", "response_id": "resp_1"}
PROMPT = {"prompt": "system: you are MangaAssist...\nuser: Recommend me a manga like Vinland Saga"}


def trace_request(tracer: Tracer | FloorTracer, i: int) -> None:
    """One MangaAssist request: 17 spans, ~3 attributes each, inputs/outputs, 10 trace tags."""
    with tracer.start_span(
        "handle_message", span_type="CHAIN", attributes={"request_id": "r1", "session_id": "s-123", "turn": i}
    ) as root:
        root.set_inputs(MESSAGE)
        for name, span_type, grandchildren in CHILDREN:
            with tracer.start_span(
                name, span_type=span_type, attributes={"component": name, "latency_budget_ms": 50, "cache_hit": False}
            ) as span:
                if name == "bedrock_generate":
                    span.set_inputs(PROMPT)
                    span.set_outputs(ANSWER)
                    span.set_attribute("output_tokens", 87)
                elif name == "route_intent":
                    tracer.update_current_trace(tags=TAGS)
                for child, child_type in grandchildren:
                    with tracer.start_span(
                        child, span_type=child_type, attributes={"component": child, "top_k": 8, "score": 0.87}
                    ):
                        pass
        root.set_outputs(ANSWER)


# -- the floor: a minimal hand-written tracer ------------------------------------------------
#
# ``bench/request_path.py``'s FloorTracer: the same calls as trace_request with the least work
# that records the same information (a slotted span appended to a deque on exit, ids from
# getrandbits, time_ns, a contextvar, trace tags merged per trace). No bounded queue, no error
# handling, no sender.

# -- a recording gateway ----------------------------------------------------------------------


class _RecordingGateway(svc_grpc.TraceGatewayServiceServicer):
    def __init__(self) -> None:
        self.spans = 0
        self.requests = 0

    def ExportSpans(self, request: Any, context: Any) -> svc_pb2.ExportSpansResponse:
        self.requests += 1
        self.spans += len(request.spans)
        return svc_pb2.ExportSpansResponse()


def serve() -> None:
    """Child-process mode: run the recording gateway, print its port, and when stdin closes
    print ``<spans> <requests>``. A separate process keeps its protobuf parsing off the
    benchmark's GIL, as with the real sidecar."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    gateway = _RecordingGateway()
    svc_grpc.add_TraceGatewayServiceServicer_to_server(gateway, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()
    server.stop(0)
    print(gateway.spans, gateway.requests, flush=True)


class GatewayProcess:
    """The recording gateway in a child process (``serve``)."""

    def __init__(self) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, __file__, "--serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._proc.stdout is not None
        self.port = int(self._proc.stdout.readline())

    def stop(self) -> tuple[int, int]:
        """Stop the gateway; returns (spans, requests) it received."""
        out, _ = self._proc.communicate(timeout=10)
        spans, requests = out.split()
        return int(spans), int(requests)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- measurement ------------------------------------------------------------------------------


def run_paced(
    fns: dict[str, Callable[[int], None]],
    requests: int,
    rate: float,
    max_seconds: float,
    housekeeping: Callable[[], None] = lambda: None,
) -> dict[str, list[int]]:
    """Every 1/rate s call each of ``fns`` once, in rotating order, ``requests`` times (bounded by
    ``max_seconds``), then ``housekeeping`` (untimed). Interleaving puts the floor and the client
    scenarios under the same machine noise. Returns the per-call durations in ns, by name."""
    names = list(fns)
    for i in range(50):  # warm-up
        for fn in fns.values():
            fn(i)
        housekeeping()
    durations: dict[str, list[int]] = {name: [] for name in names}
    period = 1.0 / rate
    start = time.perf_counter()
    stop_at = start + max_seconds
    for i in range(requests):
        target = start + i * period
        now = time.perf_counter()
        if now > stop_at:
            break
        if target > now:
            time.sleep(target - now)
        for k in range(len(names)):
            name = names[(i + k) % len(names)]
            fn = fns[name]
            t0 = time.perf_counter_ns()
            fn(i)
            durations[name].append(time.perf_counter_ns() - t0)
        housekeeping()
    return durations


def percentiles(durations: list[int]) -> str:
    ordered = sorted(durations)

    def pct(p: float) -> float:
        return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] / 1000

    return (
        f"n={len(ordered)}  p50={pct(50):6.1f} us  p99={pct(99):6.1f} us  "
        f"p99.9={pct(99.9):7.1f} us  max={ordered[-1] / 1000:7.1f} us"
    )


def describe(stats: ClientStats) -> str:
    spans_dropped = {k: v for k, v in stats.spans_dropped.items() if v}
    return (
        f"enqueued={stats.spans_enqueued} sent={stats.spans_sent} pending={stats.spans_pending} "
        f"dropped={spans_dropped} errors={stats.errors} last_error={stats.last_error!r}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=500.0, help="requests per second per scenario")
    parser.add_argument("--max-seconds", type=float, default=20.0)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.serve:
        serve()
        return

    gateway = GatewayProcess()
    up = Tracer(ClientConfig(target=f"127.0.0.1:{gateway.port}"))
    down = Tracer(ClientConfig(target=f"127.0.0.1:{free_port()}"))
    # Its sender never wakes (it would only find a dead address anyway); the queue is emptied
    # between requests, so this is the span API's own cost, without GIL contention.
    idle = Tracer(
        ClientConfig(
            target=f"127.0.0.1:{free_port()}",
            flush_interval_s=3600.0,
            encode_interval_s=3600.0,
            max_batch_spans=100_000,
        )
    )
    idle_queue = idle._sink.queue

    floor = FloorTracer()

    def housekeeping() -> None:
        # What a sender would do for the floor and the idle client, outside the timed calls.
        floor.queue.clear()
        idle_queue.clear()

    try:
        durations = run_paced(
            {
                "floor (hand-written tracer)": lambda i: trace_request(floor, i),
                "client, sender idle": lambda i: trace_request(idle, i),
                "client, gateway up": lambda i: trace_request(up, i),
                "client, nothing listening": lambda i: trace_request(down, i),
            },
            args.requests,
            args.rate,
            args.max_seconds,
            housekeeping,
        )
        up.flush(5.0)
    finally:
        up.shutdown(5.0)
        idle.shutdown(0.0)
        t0 = time.perf_counter()
        down.shutdown(5.0)
        shutdown_ms = (time.perf_counter() - t0) * 1000
        received, rpcs = gateway.stop()
    floor_p50 = sorted(durations["floor (hand-written tracer)"])[len(durations["floor (hand-written tracer)"]) // 2]
    print(f"17-span tree, {args.requests} requests at {args.rate:.0f}/s per scenario, interleaved")
    for name, values in durations.items():
        ratio = sorted(values)[len(values) // 2] / floor_p50
        print(f"  {name:28s} {percentiles(values)}  p50 vs floor {ratio:.2f}x")
    print(f"  gateway up:        {describe(up.stats())}; gateway received {received} spans in {rpcs} RPCs")
    print(f"  nothing listening: {describe(down.stats())}; shutdown took {shutdown_ms:.0f} ms")


if __name__ == "__main__":
    main()
