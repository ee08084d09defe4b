"""Cost per span of the gateway's in-process stages: assembly, measure, contract, redact, sample.

Builds realistic 17-span MangaAssist traces as the receivers would hand them on (already
decoded; here assembly computes each span's size estimate, which the native decoder does in
production), then times each stage over the same traces on one core. Prints µs per span per
stage, the total, and the spans/s one core sustains for these stages (DESIGN §8 asks
≥ 50,000 spans/s for ingest with assembly, metrics, sampling and redaction; decoding and the
gRPC receive path are not included here). "sample" includes holding the sampled-out traces in
the rescue buffer (serialized and compressed) at its configured bound.

    python bench/pipeline_stages.py [--traces 3000] [--ratio 0.1] [--repeat 5]
    python bench/pipeline_stages.py --wire    # bench/ingest.py's requests, with parse, decode and the encodes

With ``--wire`` the traces are ``bench/ingest.py``'s recorded ones, sent as its load generator
sends them (30 traces per ``ExportSpansRequest``), and the list starts with what the receiver does
(protobuf parse, decode into records, the WAL record's AES-GCM seal of the request bytes) and ends
with what the spooler does for the kept traces (OTLP encode, the segment file's bytes and CRC),
each per ingested span; what is still missing from ``bench/ingest.py``'s CPU per span then is gRPC,
asyncio, the threads' hand-offs, the file system calls (write, fsync, rename) and the collector.
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time

from prometheus_client import CollectorRegistry

from gateway import config
from gateway.gc_policy import tune_process
from gateway.metrics import GatewayMetrics
from gateway.model import SpanRecord, SpanStatus, TraceRecord
from gateway.process.assembler import Assembler
from gateway.process.contract import ContractChecker
from gateway.process.measure import Measure
from gateway.process.redactor import Redactor
from gateway.process.rescue_buffer import RescueBuffer
from gateway.process.sampler import Sampler

TREE = [
    ("handle_message", None),
    ("load_context", 0),
    ("intent_classification", 0),
    ("route_intent", 0),
    ("retrieve_chunks", 0),
    ("embed_query", 4),
    ("vector_search", 4),
    ("keyword_search", 4),
    ("rerank_chunks", 4),
    ("build_prompt", 0),
    ("bedrock_generate", 0),
    ("apply_guardrails", 0),
    ("prompt_injection", 11),
    ("pii_detection", 11),
    ("grounding_check", 11),
    ("format_validation", 11),
    ("persist_response", 0),
]
TAGS = {
    "session_id": "sess-1",
    "request_id": "",
    "intent": "recommendation",
    "page_type": "product",
    "release_bundle": "2026.11.20-rc1",
    "prompt_version": "recommendation-2.4",
    "cache_hit": "false",
    "bedrock_model_id": "anthropic.claude-3-5-haiku-20241022-v1:0",
    "deployment_stage": "prod",
    "user_type": "guest",
}


def make_spans(rng: random.Random, i: int) -> list[SpanRecord]:
    tid = f"{rng.getrandbits(128):032x}"
    ids = [f"{rng.getrandbits(64):016x}" for _ in TREE]
    t0 = time.time_ns()
    spans = []
    for k, (name, parent) in enumerate(TREE):
        attrs: dict[str, object] = {"rule_id": f"{name}-v3", "latency_ms": 1.5, "passed": True}
        span = SpanRecord(
            tid,
            ids[k],
            None if parent is None else ids[parent],
            name,
            "LLM" if name == "bedrock_generate" else "CHAIN",
            t0 + k,
            t0 + 10_000_000 - k,
            SpanStatus.OK,
            "",
            attrs,
        )
        if k == 0:
            span.inputs = {"message": "Recommend a manga like Vinland Saga for a teenager", "page_type": "product"}
            span.outputs = {"reply": "You might enjoy Kingdom or Berserk.", "response_id": f"resp_{i:010d}"}
            span.trace_tags = {**TAGS, "request_id": f"req-{i}"}
        if name == "bedrock_generate":
            span.attributes.update(
                {
                    "provider": "bedrock",
                    "input_tokens": 1200,
                    "output_tokens": 150,
                    "input_cost_usd": 0.00096,
                    "output_cost_usd": 0.0006,
                }
            )
        spans.append(span)
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--traces", type=int, default=3000)
    parser.add_argument("--ratio", type=float, default=0.1)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--wire", action="store_true", help="bench/ingest.py's requests, from the wire bytes on")
    args = parser.parse_args()
    if args.wire:
        wire(args)
        return
    cfg = config.load({"MLFLOW_TRACE_SAMPLING_RATIO": str(args.ratio), "TRACEGW_ROOT_GRACE_S": "0"})
    tune_process(cfg.memory.gc_interval_s)  # as the sidecar process does at start (gateway.server.serve)
    rng = random.Random(1)
    base = [make_spans(rng, i) for i in range(args.traces)]
    n_spans = sum(len(s) for s in base)
    results: dict[str, list[float]] = {}
    for _ in range(args.repeat):
        metrics = GatewayMetrics(CollectorRegistry())
        rescue = RescueBuffer(cfg.sampling.rescue_window_s, cfg.sampling.rescue_max_bytes, metrics)
        stages = [
            ("measure", Measure(metrics, 50)),
            ("contract", ContractChecker(cfg.contract, metrics)),
            ("redact", Redactor(cfg.redaction)),
            ("sample", Sampler(cfg.sampling, metrics, rescue.add)),
        ]
        batches = copy.deepcopy(base)
        assembler = Assembler(cfg.assembly, metrics)
        t = time.perf_counter()
        for spans in batches:
            assembler.add(spans, "e")
        traces: list[TraceRecord] = assembler.poll()
        results.setdefault("assemble", []).append((time.perf_counter() - t) / n_spans * 1e6)
        assert len(traces) == args.traces
        for name, stage in stages:
            t = time.perf_counter()
            traces = stage.process(traces)
            results.setdefault(name, []).append((time.perf_counter() - t) / n_spans * 1e6)
    total = 0.0
    print(f"{args.traces} traces x {len(TREE)} spans, ratio {args.ratio}, median of {args.repeat} runs (one core):")
    for name, values in results.items():
        med = statistics.median(values)
        total += med
        print(f"  {name:<9} {med:6.2f} µs/span")
    print(f"  {'total':<9} {total:6.2f} µs/span  =  {1e6 / total:,.0f} spans/s on one core for these stages")


def wire(args: argparse.Namespace) -> None:
    """``--wire``: parse, decode, assemble, the stages, then encode, over ``bench/ingest.py``'s requests."""
    import os
    import sys
    from pathlib import Path

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import ingest

    from clients.encode import export_header
    from clients.pb import trace_gateway_service_pb2 as svc_pb2
    from gateway.export import spool
    from gateway.export.otlp_encode import encode_traces
    from gateway.export.segments import Kind, Segment
    from gateway.receive.decode_spans import decode_native_spans

    cfg = config.load({"MLFLOW_TRACE_SAMPLING_RATIO": str(args.ratio), "TRACEGW_ROOT_GRACE_S": "0"})
    tune_process(cfg.memory.gc_interval_s)
    templates = ingest.build_templates(ingest.TEMPLATES, 1)
    header = export_header(ingest.EXPERIMENT, "bench-ingest")
    rng = random.Random(1)
    mark = ingest.REQUEST_MARK.encode()
    requests, copies = [], 0
    for _ in range(max(1, args.traces // ingest.TRACES_PER_REQUEST)):
        parts = [header]
        for _ in range(ingest.TRACES_PER_REQUEST):
            body, tid = templates[rng.randrange(len(templates))]
            copies += 1
            unique = f"1{copies:011d}".encode()
            parts.append(body.replace(tid, rng.getrandbits(128).to_bytes(16, "big")).replace(mark, unique))
        requests.append(b"".join(parts))
    aead = AESGCM(os.urandom(32))
    results: dict[str, list[float]] = {}

    def timed(name: str, n: int, t: float) -> None:
        results.setdefault(name, []).append((time.perf_counter() - t) / n * 1e6)

    for r in range(args.repeat):
        metrics = GatewayMetrics(CollectorRegistry())
        rescue = RescueBuffer(cfg.sampling.rescue_window_s, cfg.sampling.rescue_max_bytes, metrics)
        t = time.perf_counter()
        parsed = [svc_pb2.ExportSpansRequest.FromString(b) for b in requests]
        n = sum(len(p.spans) for p in parsed)
        timed("parse", n, t)
        t = time.perf_counter()
        decoded = [decode_native_spans(p.spans, cfg.limits).spans for p in parsed]
        timed("decode", n, t)
        t = time.perf_counter()
        for i, b in enumerate(requests):  # the WAL's record: the request bytes, sealed
            aead.encrypt(r.to_bytes(4, "big") + i.to_bytes(8, "big"), b, b"")
        timed("wal seal", n, t)
        assembler = Assembler(cfg.assembly, metrics)
        t = time.perf_counter()
        for spans in decoded:
            assembler.add(spans, "e")
        traces: list[TraceRecord] = assembler.poll()
        timed("assemble", n, t)
        for name, stage in [
            ("measure", Measure(metrics, 50)),
            ("contract", ContractChecker(cfg.contract, metrics)),
            ("redact", Redactor(cfg.redaction)),
            ("sample", Sampler(cfg.sampling, metrics, rescue.add)),
        ]:
            t = time.perf_counter()
            traces = stage.process(traces)
            timed(name, n, t)
        kept = len(traces)
        t = time.perf_counter()
        payloads = [encode_traces(traces[i : i + 64]) for i in range(0, len(traces), 64)]
        timed("otlp encode", n, t)
        t = time.perf_counter()
        for i, payload in enumerate(payloads):
            spool.encode(Segment(i, Kind.SPANS, {"kind": "spans", "span_count": 0}, payload))
        timed("spool bytes", n, t)
    total = 0.0
    print(
        f"{len(requests)} requests x {ingest.TRACES_PER_REQUEST} traces of bench/ingest.py, ratio {args.ratio}, "
        f"median of {args.repeat} runs (one core), {kept} of {len(requests) * ingest.TRACES_PER_REQUEST} traces "
        "kept, µs per ingested span:"
    )
    for name, values in results.items():
        med = statistics.median(values)
        total += med
        print(f"  {name:<11} {med:6.2f} µs/span")
    print(f"  {'total':<11} {total:6.2f} µs/span  =  {1e6 / total:,.0f} spans/s on one core for these stages")


if __name__ == "__main__":
    main()
