"""Join latency of feedback: thumbs-down sent → its assessment readable from MLflow (DESIGN §8: p99 ≤ 5 s).

Starts a real ``mlflow server`` (SQLite, one worker) on loopback and an in-process gateway at
sampling ratio 0.1 with its default timings, sends complete MangaAssist traces (no tail policy
applies: no errors or blocks, deployment_stage prod) until it has ``--per-class`` head-kept
("sampled_in") and head-dropped ("rescued") traces, waits until every trace is decided, then sends
a thumbs-down on each of them at ``--rate`` events/s, interleaved. The assessment is "readable"
when its row is committed in MLflow's store (polled every 50 ms, read-only, new rows only); at the end every one
is also checked through MLflow's REST API (``search_traces`` on the ``user_feedback`` tag).

    python bench/feedback_join.py [--per-class 500] [--rate 50] [--max-seconds 300]
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clients import ClientConfig, FeedbackEvent, Tracer
from clients.events import Feedback
from gateway import config
from gateway.process.sampler import head_keep, ratio_bound
from gateway.server import ThreadedGateway
from orchestrator.tools.traffic import handle_message, percentile, plan_requests
from tests.support import MlflowServer, wait_for

RATIO = 0.1


class AssessmentWatcher:
    """Polls the MLflow store read-only; records when each trace's user_feedback first appears."""

    def __init__(self, db: Path) -> None:
        self._db = db
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-watcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        conn = sqlite3.connect(f"file:{self._db}?mode=ro", uri=True, timeout=5)
        last = 0
        while not self._stop.is_set():
            try:  # only new rows: a short read, so the server's writes are not held up
                rows = conn.execute(
                    "SELECT rowid, trace_id FROM assessments WHERE rowid > ? AND name = 'user_feedback'", (last,)
                ).fetchall()
            except sqlite3.OperationalError:  # locked or not created yet
                rows = []
            now = time.monotonic()
            for rowid, tid in rows:
                last = max(last, rowid)
                self.seen.setdefault(tid, now)
            self._stop.wait(0.05)
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=500, help="feedback events per class (default %(default)s)")
    parser.add_argument("--rate", type=float, default=50.0, help="feedback events per second (default %(default)s)")
    parser.add_argument("--max-seconds", type=float, default=300.0, help="overall bound (default %(default)s)")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a gateway setting (repeatable), e.g. TRACEGW_BATCH_FLUSH_WHEN_IDLE=false",
    )
    args = parser.parse_args(argv)
    overrides = {}
    for item in args.gateway_env:
        key, sep, value = item.partition("=")
        if not sep or not key:
            parser.error(f"--gateway-env takes KEY=VALUE, got {item!r}")
        overrides[key] = value
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="tracegw-feedback-bench-"))
    db = work / "mlflow.db"
    server = MlflowServer(f"sqlite:///{db}", work).start()
    gw = ThreadedGateway(
        config.load(
            {
                "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
                "TRACEGW_METRICS_ADDRESS": "",
                "MLFLOW_TRACKING_URI": server.url,
                "MLFLOW_EXPERIMENT_NAME": "feedback-bench",
                "MLFLOW_TRACE_SAMPLING_RATIO": str(RATIO),
                "TRACEGW_SPOOL_DIR": str(work / "spool"),
                "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
                "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
                **overrides,
            }
        )
    )
    watcher = AssessmentWatcher(db)
    watcher.start()
    try:
        tracer = Tracer(ClientConfig(target=gw.target, flush_interval_s=0.05))
        bound = ratio_bound(RATIO)
        classes: dict[str, list[tuple[str, str]]] = {"sampled_in": [], "rescued": []}
        sent = 0
        seed = 0
        while min(len(v) for v in classes.values()) < args.per_class and sent < 40 * args.per_class:
            seed += 1
            for p in plan_requests(100, seed=seed, error_rate=0, block_rate=0):
                tid = handle_message(tracer, replace(p, deployment_stage="prod"))
                sent += 1
                cls = classes["sampled_in" if head_keep(tid, bound) else "rescued"]
                if len(cls) < args.per_class:
                    cls.append((tid, p.session_id))
            tracer.flush(timeout_s=30)  # paced: the client's queue is bounded and drops when full
        reg = gw.metrics.registry
        wait_for(
            lambda: reg.get_sample_value("tracegw_assembly_traces_in_flight") == 0,
            timeout_s=120,
            interval_s=0.2,
            what="every trace decided",
        )
        decided = int(reg.get_sample_value("tracegw_stage_traces_out_total", {"stage": "feedback_context"}) or 0)
        dropped = tracer.stats().spans_dropped if hasattr(tracer, "stats") else {}
        if decided != sent:
            print(f"warning: {sent} traces sent, {decided} decided; client drops: {dropped}")
        kept_total = int(
            reg.get_sample_value("tracegw_sampling_decisions_total", {"decision": "kept", "reason": "head"}) or 0
        )
        wait_for(
            lambda: (reg.get_sample_value("tracegw_traces_written_total") or 0) >= kept_total,
            timeout_s=120,
            interval_s=0.2,
            what="sampled-in traces written",
        )
        print(
            f"{sent} traces sent ({kept_total} kept by the head sampler); "
            f"{len(classes['sampled_in'])} sampled-in and {len(classes['rescued'])} sampled-out chosen"
        )
        order = [
            (c, tid, s)
            for pair in zip(classes["sampled_in"], classes["rescued"], strict=False)
            for c, (tid, s) in zip(("sampled_in", "rescued"), pair, strict=True)
        ]
        sent_at: dict[str, tuple[str, float]] = {}
        interval = 1.0 / args.rate
        next_at = time.monotonic()
        for i, (cls_name, tid, session) in enumerate(order):
            tracer.record_feedback(
                FeedbackEvent(
                    response_id=f"resp_{i}",
                    trace_id=tid,
                    feedback=Feedback.THUMBS_DOWN,
                    reason_code="wrong_recommendation",
                    session_id=session,
                )
            )
            sent_at["tr-" + tid] = (cls_name, time.monotonic())
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        tracer.flush(timeout_s=30)
        deadline = started + args.max_seconds
        while time.monotonic() < deadline and not set(sent_at) <= set(watcher.seen):
            time.sleep(0.1)
        watcher.stop()
        import mlflow

        client = mlflow.MlflowClient(tracking_uri=server.url)
        exp_id = client.get_experiment_by_name("feedback-bench").experiment_id  # type: ignore[union-attr]
        found: set[str] = set()
        token = None
        while True:
            page = client.search_traces(
                locations=[exp_id],
                filter_string="tags.user_feedback = 'thumbs_down'",
                max_results=500,
                page_token=token,
                include_spans=False,
            )
            found |= {
                t.info.trace_id
                for t in page
                if any(a.name == "user_feedback" and a.value is False for a in t.info.assessments)
            }
            token = page.token
            if not token:
                break
        print(f"feedback join latency (sent -> assessment readable), rate {args.rate:.0f}/s, ratio {RATIO}:")
        for cls_name in ("sampled_in", "rescued"):
            lat = [watcher.seen[t] - at for t, (c, at) in sent_at.items() if c == cls_name and t in watcher.seen]
            total = sum(1 for c, _ in sent_at.values() if c == cls_name)
            via_rest = sum(1 for t, (c, _) in sent_at.items() if c == cls_name and t in found)
            if lat:
                print(
                    f"  {cls_name:10s} n={total:4d} joined={len(lat) / total:7.2%} (REST {via_rest / total:7.2%})  "
                    f"p50 {percentile(lat, 0.5) * 1000:7.0f} ms  p99 {percentile(lat, 0.99) * 1000:7.0f} ms  "
                    f"max {max(lat) * 1000:7.0f} ms"
                )
            else:
                print(f"  {cls_name:10s} n={total:4d} joined=0")
        print(
            f"  orphans counted: {reg.get_sample_value('tracegw_feedback_joins_total', {'outcome': 'orphan'})}, "
            f"bench time {time.monotonic() - started:.0f} s"
        )
        tracer.shutdown()
    finally:
        watcher.stop()
        gw.stop()
        server.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
