"""The feedback event stream: boto3 against a real moto server over HTTP, and retry logic on a fake."""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import replace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clients import ClientConfig, FeedbackEvent, Tracer
from clients.events import Feedback
from gateway import config
from gateway.export.kinesis import FeedbackStreamPublisher, KinesisSink, RetryableStreamError
from gateway.metrics import GatewayMetrics
from orchestrator.tools.traffic import handle_message, plan_requests
from tests.feedback.conftest import REGION, KinesisServer
from tests.support import wait_for

pytestmark = pytest.mark.usefixtures("aws_env")


def feedback_config(**env: str) -> config.FeedbackConfig:
    return config.load({"TRACEGW_FEEDBACK_STREAM": "x", "TRACEGW_FEEDBACK_STREAM_MAX_DELAY_S": "0.05", **env}).feedback


def test_publisher_keeps_order_per_partition_key_on_moto(kinesis_server: KinesisServer) -> None:
    stream = f"fb-{uuid.uuid4().hex[:8]}"
    kinesis_server.create_stream(stream, shards=3)
    metrics = GatewayMetrics(CollectorRegistry())
    cfg = feedback_config(TRACEGW_FEEDBACK_STREAM_BATCH_RECORDS="50")
    pub = FeedbackStreamPublisher(cfg, KinesisSink(stream, REGION, kinesis_server.url), metrics)
    pub.start()
    sessions = [f"sess-{i}" for i in range(7)]
    sent = 0
    for n in range(40):  # interleaved sessions: several records of one key are queued at once
        for s in sessions:
            assert pub.offer(s, json.dumps({"session": s, "n": n}).encode())
            sent += 1
    pub.shutdown(20)
    records = kinesis_server.read_all(stream)
    assert len(records) == sent
    for s in sessions:
        mine = sorted((r for r in records if r["key"] == s), key=lambda r: r["seq"])
        assert len({r["shard"] for r in mine}) == 1
        assert [json.loads(r["data"])["n"] for r in mine] == list(range(40))
    reg = metrics.registry
    assert reg.get_sample_value("tracegw_feedback_stream_records_total", {"outcome": "ok"}) == sent
    assert (reg.get_sample_value("tracegw_feedback_stream_requests_total", {"outcome": "ok"}) or 0) >= 40


def test_missing_stream_is_a_counted_permanent_drop(kinesis_server: KinesisServer) -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    pub = FeedbackStreamPublisher(feedback_config(), KinesisSink("no-such-stream", REGION, kinesis_server.url), metrics)
    pub.start()
    pub.offer("s", b"{}")
    pub.shutdown(10)
    reg = metrics.registry
    assert (
        reg.get_sample_value("tracegw_events_dropped_total", {"kind": "feedback_stream", "reason": "stream_rejected"})
        == 1
    )
    assert reg.get_sample_value("tracegw_feedback_stream_requests_total", {"outcome": "permanent_error"}) == 1


class FlakySink:
    """Fails whole requests ``fail_requests`` times, then throttles the first record of the next
    ``throttle_first`` requests (as Kinesis reports in FailedRecordCount), then stores."""

    def __init__(self, fail_requests: int = 0, throttle_first: int = 0) -> None:
        self.fail_requests = fail_requests
        self.throttle_first = throttle_first
        self.stored: list[tuple[str, bytes]] = []
        self.requests: list[list[str]] = []
        self.lock = threading.Lock()

    def put_records(self, records: list[tuple[str, bytes]]) -> list[str | None]:
        with self.lock:
            self.requests.append([k for k, _ in records])
            if self.fail_requests:
                self.fail_requests -= 1
                raise RetryableStreamError("PutRecords: ProvisionedThroughputExceededException")
            out: list[str | None] = [None] * len(records)
            if self.throttle_first:
                self.throttle_first -= 1
                out[0] = "ProvisionedThroughputExceededException"
            self.stored += [r for r, err in zip(records, out, strict=True) if err is None]
            return out


def test_throttling_and_failed_records_are_resent_in_order() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    sink = FlakySink(fail_requests=2, throttle_first=3)
    pub = FeedbackStreamPublisher(feedback_config(), sink, metrics)
    for n in range(10):
        for s in ("a", "b", "c"):
            pub.offer(s, f"{s}{n}".encode())
    pub.start()
    wait_for(lambda: len(sink.stored) == 30, timeout_s=20, what="all records stored")
    pub.shutdown(5)
    for s in ("a", "b", "c"):
        assert [d.decode() for k, d in sink.stored if k == s] == [f"{s}{n}" for n in range(10)]
    assert all(len(keys) == len(set(keys)) for keys in sink.requests)  # one record per key per request
    reg = metrics.registry
    assert reg.get_sample_value("tracegw_feedback_stream_requests_total", {"outcome": "throttled"}) == 2
    assert reg.get_sample_value("tracegw_feedback_stream_requests_total", {"outcome": "partial"}) == 3
    assert reg.get_sample_value("tracegw_feedback_stream_records_total", {"outcome": "retried"}) == (
        len(sink.requests[0]) + len(sink.requests[1]) + 3
    )
    assert reg.get_sample_value("tracegw_feedback_stream_records_total", {"outcome": "ok"}) == 30


def test_queue_bound_and_retry_deadline_are_counted() -> None:
    metrics = GatewayMetrics(CollectorRegistry())
    sink = FlakySink(fail_requests=10**6)
    pub = FeedbackStreamPublisher(
        feedback_config(TRACEGW_FEEDBACK_STREAM_QUEUE_EVENTS="3", TRACEGW_FEEDBACK_STREAM_MAX_ELAPSED_S="0.3"),
        sink,
        metrics,
    )
    assert [pub.offer("k", b"x") for _ in range(4)] == [True, True, True, False]
    pub.start()
    reg = metrics.registry
    wait_for(
        lambda: (
            reg.get_sample_value(
                "tracegw_events_dropped_total", {"kind": "feedback_stream", "reason": "retry_exhausted"}
            )
            == 3
        ),
        timeout_s=10,
        what="records given up after the deadline",
    )
    pub.shutdown(1)
    assert (
        reg.get_sample_value("tracegw_events_dropped_total", {"kind": "feedback_stream", "reason": "writer_queue_full"})
        == 1
    )


def test_gateway_streams_enriched_feedback_in_session_order(
    kinesis_server: KinesisServer, gateway_factory: Any, tmp_path: Any
) -> None:
    stream = f"gw-{uuid.uuid4().hex[:8]}"
    kinesis_server.create_stream(stream, shards=2)
    gw = gateway_factory(
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'stream.db'}",
        TRACEGW_FEEDBACK_STREAM=stream,
        TRACEGW_KINESIS_ENDPOINT_URL=kinesis_server.url,
        TRACEGW_FEEDBACK_STREAM_MAX_DELAY_S="0.05",
    )
    tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
    plans = [replace(p, session_id=f"sess-{i % 3}") for i, p in enumerate(plan_requests(12, seed=21))]
    trace_ids = [handle_message(tracer, p) for p in plans]
    assert tracer.flush(timeout_s=10)
    reg = gw.metrics.registry
    wait_for(
        lambda: reg.get_sample_value("tracegw_stage_traces_out_total", {"stage": "feedback_context"}) == 12,
        timeout_s=10,
        what="12 traces decided",
    )
    for i, (p, tid) in enumerate(zip(plans, trace_ids, strict=True)):
        tracer.record_feedback(
            FeedbackEvent(
                response_id=f"resp_{i}",
                trace_id=tid,
                feedback=Feedback.THUMBS_DOWN if i % 2 else Feedback.THUMBS_UP,
                reason_code="wrong_recommendation" if i % 2 else "helpful",
                session_id=p.session_id,
                comment=f"#{i} mail me at a{i}@example.com",
            )
        )
    assert tracer.flush(timeout_s=10)
    wait_for(
        lambda: reg.get_sample_value("tracegw_feedback_stream_records_total", {"outcome": "ok"}) == 12,
        timeout_s=20,
        what="12 records on the stream",
    )
    records = kinesis_server.read_all(stream)
    assert len(records) == 12
    events = {json.loads(r["data"])["trace_id"]: (r, json.loads(r["data"])) for r in records}
    for i, (p, tid) in enumerate(zip(plans, trace_ids, strict=True)):
        rec, ev = events[tid]
        assert rec["key"] == p.session_id
        assert (ev["intent"], ev["prompt_version"], ev["release_bundle"], ev["bedrock_model_id"]) == (
            p.intent,
            p.prompt_version,
            "2026.11.20-rc1",
            p.model_id,
        )
        assert ev["response_id"] == f"resp_{i}" and ev["join"] == "sampled_in"
        assert "@example.com" not in ev["comment"]  # redacted before it leaves the gateway
    for s in ("sess-0", "sess-1", "sess-2"):
        mine = sorted((r for r in records if r["key"] == s), key=lambda r: r["seq"])
        assert [json.loads(r["data"])["response_id"] for r in mine] == [
            f"resp_{i}" for i, p in enumerate(plans) if p.session_id == s
        ]
    tracer.shutdown()


class CountingHold:
    def __init__(self) -> None:
        self.done_calls = 0

    def done(self) -> None:
        self.done_calls += 1


def test_stream_records_are_on_disk_before_the_wal_lets_go_and_a_restart_sends_them(tmp_path: Any) -> None:
    """Records reach ``<spool>/stream/`` first; the WAL hold is given back only then; a publisher
    that dies with records unsent (the sink refuses everything: as during a Kinesis outage) leaves
    them in its files, and the next one sends them and deletes the files."""
    directory = tmp_path / "stream"
    metrics = GatewayMetrics(CollectorRegistry())
    down = FlakySink(fail_requests=10**6)
    pub = FeedbackStreamPublisher(feedback_config(), down, metrics, spool_dir=directory)
    pub.start()
    holds = [CountingHold() for _ in range(5)]
    for n, hold in enumerate(holds):
        assert pub.offer(f"s{n % 2}", f"record-{n}".encode(), hold)
    wait_for(lambda: all(h.done_calls == 1 for h in holds), timeout_s=10, what="holds given back once on disk")
    assert list(directory.glob("*.stream"))
    pub.shutdown(0.2)  # records still unsent: kept in the files, not counted as dropped
    assert not metrics.registry.get_sample_value(
        "tracegw_events_dropped_total", {"kind": "feedback_stream", "reason": "shutdown"}
    )
    up = FlakySink()
    again_metrics = GatewayMetrics(CollectorRegistry())
    again = FeedbackStreamPublisher(feedback_config(), up, again_metrics, spool_dir=directory)
    again.start()
    wait_for(lambda: len(up.stored) == 5, timeout_s=10, what="the earlier run's records sent")
    again.shutdown(5)
    assert sorted(d.decode() for _, d in up.stored) == [f"record-{n}" for n in range(5)]
    assert not list(directory.glob("*.stream")), "files deleted once their records were stored"
    assert (
        again_metrics.registry.get_sample_value("tracegw_feedback_stream_records_total", {"outcome": "replayed"}) == 5
    )
    assert all(h.done_calls == 1 for h in holds)
