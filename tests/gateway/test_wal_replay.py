"""The write-ahead log through a real gateway: what a killed gateway had acknowledged is replayed by
the next one, whole, counted apart from live traffic, and then let go.

A SIGKILL is what ``tests/faults`` does to a gateway process. Here the same disk state is made in
process: while gateway A holds acknowledged traces in assembly (a long root grace), its WAL
directory is copied; that copy is exactly what a kill at that moment leaves, since every record was
on disk before its RPC was answered. Gateway B starts on the copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from clients import ClientConfig, FeedbackEvent, Tracer
from clients.events import Feedback
from gateway import config
from gateway.server import ThreadedGateway
from orchestrator.tools.traffic import handle_message, plan_requests
from tests.fakes import ROOMY, RecordingWriter
from tests.support import wait_for


def settings(spool: Path, **extra: str) -> config.Config:
    return config.load(
        {
            "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
            **ROOMY,
            "TRACEGW_METRICS_ADDRESS": "",
            "MLFLOW_TRACE_SAMPLING_RATIO": "1.0",
            "TRACEGW_SPOOL_DIR": str(spool),
            "TRACEGW_BATCH_MAX_DELAY_S": "0.05",
            **extra,
        }
    )


def sample(gw: ThreadedGateway, name: str, **labels: str) -> float:
    return gw.metrics.registry.get_sample_value(name, labels) or 0.0


def business_requests(gw: ThreadedGateway) -> float:
    return sum(
        s.value
        for family in gw.metrics.registry.collect()
        if family.name == "mangaassist_requests"
        for s in family.samples
        if s.name == "mangaassist_requests_total"
    )


def test_a_killed_gateways_acknowledged_traces_and_feedback_are_replayed_once_and_counted_apart(
    tmp_path: Path,
) -> None:
    a_writer = RecordingWriter()
    # A keeps every trace in assembly (root grace 60 s): nothing is spooled, all of it is only in the WAL.
    a = ThreadedGateway(settings(tmp_path / "a", TRACEGW_ROOT_GRACE_S="60", TRACEGW_DECISION_TIMEOUT_S="120"), a_writer)
    plans = plan_requests(20, seed=5, feedback_rate=0.0)
    try:
        with Tracer(ClientConfig(target=a.target, flush_interval_s=0.05)) as tracer:
            trace_ids = [handle_message(tracer, p) for p in plans]
            for i, tid in enumerate(trace_ids[:4]):
                tracer.record_feedback(
                    FeedbackEvent(
                        response_id=f"resp_{i}",
                        trace_id=tid,
                        feedback=Feedback.THUMBS_DOWN,
                        reason_code="wrong_recommendation",
                        session_id=plans[i].session_id,
                    )
                )
            assert tracer.flush(timeout_s=10)
            spans_sent = tracer.stats().spans_sent
        assert sample(a, "tracegw_assembly_traces_in_flight") == 20, "A has decided nothing yet"
        assert not a_writer.written and not list((tmp_path / "a").glob("*-spans.seg"))
        shutil.copytree(tmp_path / "a" / "wal", tmp_path / "b" / "wal")  # what a SIGKILL leaves
    finally:
        a.stop(1.0)

    b_writer = RecordingWriter()
    b = ThreadedGateway(settings(tmp_path / "b", TRACEGW_ROOT_GRACE_S="0.05"), b_writer)
    try:
        wait_for(lambda: set(trace_ids) <= set(b_writer.written), timeout_s=20, what="the replayed traces written")
        wait_for(lambda: len(b_writer.feedback) == 4, timeout_s=20, what="the replayed feedback written")
        assert sample(b, "tracegw_wal_replayed_spans_total") == spans_sent
        assert sample(b, "tracegw_wal_replayed_events_total", kind="feedback") == 4
        assert sample(b, "tracegw_spans_received_total", receiver="native") == 0, "replay is not receipt"
        assert business_requests(b) == 0, "a replayed trace may have been counted before the kill"
        assert sorted(e for e, _ in b_writer.feedback) == sorted(set(e for e, _ in b_writer.feedback))
        assert len(b_writer.written) == len(set(b_writer.written)) == 20
        # Everything is in B's spool or MLflow now: the replayed segments are let go.
        wait_for(lambda: sample(b, "tracegw_wal_bytes") == 0, timeout_s=10, what="the WAL empty")
        assert not list((tmp_path / "b" / "wal").glob("*.wal"))
        # New traffic after the replay is measured as usual.
        with Tracer(ClientConfig(target=b.target, flush_interval_s=0.05)) as tracer:
            fresh = [handle_message(tracer, p) for p in plan_requests(3, seed=6, feedback_rate=0.0)]
            assert tracer.flush(timeout_s=10)
        wait_for(lambda: set(fresh) <= set(b_writer.written), timeout_s=20, what="fresh traces written")
        assert business_requests(b) == 3
    finally:
        b.stop(5.0)


def test_a_clean_shutdown_leaves_an_empty_wal(tmp_path: Path) -> None:
    writer = RecordingWriter()
    gw = ThreadedGateway(settings(tmp_path, TRACEGW_ROOT_GRACE_S="0.05"), writer)
    with Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05)) as tracer:
        ids = [handle_message(tracer, p) for p in plan_requests(10, seed=7, feedback_rate=0.0)]
        assert tracer.flush(timeout_s=10)
    gw.stop(5.0)
    assert set(ids) <= set(writer.written)
    assert not list((tmp_path / "wal").glob("*.wal")), "every segment released at a drained shutdown"
    assert sample(gw, "tracegw_wal_appends_total", outcome="ok") >= 1
