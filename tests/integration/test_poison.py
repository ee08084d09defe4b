"""One bad span costs only itself: poison sent beside innocent traces, through a real ``mlflow
server`` (the HTTP writer, the production path), and a restart on a spool that already holds a
segment MLflow cannot read. Every innocent trace lands; each poison is rejected or set aside,
named and counted.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import grpc
import pytest
from mlflow import MlflowClient
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from clients.pb import spans_pb2, trace_gateway_service_pb2, trace_gateway_service_pb2_grpc
from gateway.export.otlp_encode import encode_traces
from gateway.export.segments import Kind, Segment
from gateway.export.spool import encode as encode_segment
from gateway.model import SpanRecord, TraceRecord
from tests.support import MlflowServer, wait_for

pytestmark = pytest.mark.integration


def root(trace_id: bytes, **fields: Any) -> spans_pb2.Span:
    now = time.time_ns()
    base: dict[str, Any] = dict(
        trace_id=trace_id,
        span_id=random.randbytes(8),
        name="handle_message",
        span_type="CHAIN",
        start_time_unix_nano=now,
        end_time_unix_nano=now + 1000,
        status_code=1,
        inputs_json='{"message": "hello"}',
    )
    base.update(fields)
    return spans_pb2.Span(**base)


def poisons() -> dict[str, spans_pb2.Span]:
    out = {
        "surrogate in inputs": root(random.randbytes(16), inputs_json='{"m": "\\ud800"}'),
        "60-deep json inputs": root(random.randbytes(16), inputs_json="[" * 60 + "]" * 60),
        "10000-deep json inputs": root(random.randbytes(16), inputs_json="[" * 10_000 + "]" * 10_000),
        "5000-digit integer": root(random.randbytes(16), outputs_json="9" * 5000),
        "time past 2^63": root(random.randbytes(16), start_time_unix_nano=2**63 + 5, end_time_unix_nano=2**63 + 10),
    }
    deep = root(random.randbytes(16))
    deep.attributes["j"].json_value = "[" * 60 + "]" * 60
    out["60-deep json_value"] = deep
    surrogate_attr = root(random.randbytes(16))
    surrogate_attr.attributes["j"].json_value = '"\\udfff"'
    out["surrogate in json_value"] = surrogate_attr
    return out


def stored(client: MlflowClient, experiment: str) -> set[str]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return set()
    return {t.info.trace_id for t in client.search_traces(locations=[exp.experiment_id], max_results=500)}


def test_poison_beside_innocent_traces_costs_only_itself(
    mlflow_server: MlflowServer, gateway_factory: Any, tmp_path: Path
) -> None:
    experiment = f"poison-{random.randrange(10**9)}"
    spool = str(tmp_path / "spool")
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME=experiment, TRACEGW_SPOOL_DIR=spool
    )
    channel = grpc.insecure_channel(gw.target)
    native = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(channel)
    otlp = trace_service_pb2_grpc.TraceServiceStub(channel)
    innocent: list[bytes] = []

    def innocents(n: int) -> list[spans_pb2.Span]:
        made = [root(random.randbytes(16)) for _ in range(n)]
        innocent.extend(s.trace_id for s in made)
        return made

    bad = poisons()
    mixed = [*innocents(3), *bad.values(), *innocents(3)]
    answer = native.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(spans=mixed), timeout=10)
    assert answer.partial_success.rejected_count == len(bad)
    assert sorted(r.index for r in answer.partial_success.rejections) == list(range(3, 3 + len(bad)))

    # OTLP: MLflow's own SDK puts inputs in mlflow.spanInputs
    request = trace_service_pb2.ExportTraceServiceRequest()
    scope = request.resource_spans.add().scope_spans.add()
    for text in ('"\\udc00"', "[" * 60 + "]" * 60, '{"fine": true}'):
        now = time.time_ns()
        trace_id = random.randbytes(16)
        s = scope.spans.add(
            trace_id=trace_id,
            span_id=random.randbytes(8),
            name="otlp_root",
            start_time_unix_nano=now,
            end_time_unix_nano=now + 1,
        )
        s.attributes.add(key="mlflow.spanInputs").value.string_value = text
        if text.startswith("{"):
            innocent.append(trace_id)
    otlp_answer = otlp.Export(request, metadata=(("x-mlflow-experiment-name", experiment),), timeout=10)
    assert otlp_answer.partial_success.rejected_spans == 2

    for _ in range(4):  # innocent traffic afterwards
        native.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(spans=innocents(5)), timeout=10)

    client = MlflowClient(tracking_uri=mlflow_server.url)
    expected = {"tr-" + t.hex() for t in innocent}
    wait_for(lambda: expected <= stored(client, experiment), timeout_s=60, interval_s=0.5, what="every innocent trace")
    assert gw.metrics.registry.get_sample_value("tracegw_spans_rejected_total", {"receiver": "native"}) == len(bad)
    channel.close()
    gw.stop(10)


def test_a_poisoned_spool_replayed_at_start_blocks_nobody(
    mlflow_server: MlflowServer, gateway_factory: Any, tmp_path: Path
) -> None:
    """A segment written before decode knew better (an older gateway): 60-deep JSON that MLflow
    rejects and protobuf cannot split. Replayed first at start, it is set aside at once."""
    experiment = f"poison-replay-{random.randrange(10**9)}"
    spool = tmp_path / "spool"
    spool.mkdir()
    deep: object = "leaf"
    for _ in range(60):
        deep = [deep]
    poisoned = [
        TraceRecord(
            t, experiment, [SpanRecord(t, "1" * 16, None, "handle_message", "CHAIN", 1, 2, attributes={"j": deep})], {}
        )
        for t in (random.randbytes(16).hex(), random.randbytes(16).hex())
    ]
    header = {
        "kind": "spans",
        "experiment_name": experiment,
        "span_count": 2,
        "trace_count": 2,
        "first_at": time.time(),
        "attempts": 0,
    }
    segment = Segment(1, Kind.SPANS, header, encode_traces(poisoned))
    (spool / "0000000000000001-spans.seg").write_bytes(encode_segment(segment))

    gw = gateway_factory(
        MLFLOW_TRACKING_URI=mlflow_server.url, MLFLOW_EXPERIMENT_NAME=experiment, TRACEGW_SPOOL_DIR=str(spool)
    )
    stub = trace_gateway_service_pb2_grpc.TraceGatewayServiceStub(grpc.insecure_channel(gw.target))
    after = [root(random.randbytes(16)) for _ in range(10)]
    stub.ExportSpans(trace_gateway_service_pb2.ExportSpansRequest(spans=after), timeout=10)
    client = MlflowClient(tracking_uri=mlflow_server.url)
    expected = {"tr-" + s.trace_id.hex() for s in after}
    wait_for(
        lambda: expected <= stored(client, experiment), timeout_s=60, interval_s=0.5, what="traffic after the replay"
    )
    wait_for(
        lambda: (
            sum(
                s.value
                for metric in gw.metrics.registry.collect()
                if metric.name == "tracegw_dead_letter"
                for s in metric.samples
                if s.name == "tracegw_dead_letter_total"
            )
            >= 1
        ),
        timeout_s=20,
        what="the poisoned segment dead-lettered",
    )
    assert list((spool / "dead-letter").glob("*.seg"))
    gw.stop(10)
