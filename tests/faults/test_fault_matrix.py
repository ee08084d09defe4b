"""The fault matrix: real traffic through the client and a real gateway process into a real
``mlflow server`` behind a fault proxy, one fault per scenario, each ending with accounting.

Every scenario checks the same identity (``harness`` module docstring): the spans the gateway
acknowledged are in MLflow or counted as dropped with a reason — ``lost == 0`` — and, where
nothing may be dropped, every trace the application produced is in MLflow with all its spans.
Each prints one ``[fault-matrix]`` line (sent, landed, dropped by reason, lost, time to drain),
repeated in the run's summary. The long versions (a 60 s outage, bigger loads) are in
``bench/fault_matrix.py``.
"""

from __future__ import annotations

import json
import os
import statistics
import time

import pytest

from tests.faultproxy import posts_to
from tests.faults.harness import (
    QUARANTINE_DIR,
    DeadLetters,
    Figures,
    Load,
    Outcome,
    Poll,
    Rig,
    Sent,
    account,
    cost_summary,
    hold,
    percentile,
    report,
    run_outage,
    run_overload,
    run_sigkill,
    run_sigterm,
    segment_files,
)
from tests.support import wait_for

pytestmark = pytest.mark.integration

RATE = 50.0  # requests per second, ~850 spans per second


def assert_nothing_lost(f: Figures) -> None:
    """The accounting identity, and every trace whole in MLflow (for scenarios that drop nothing)."""
    assert f.produced == f.client_sent, f"client dropped spans: {f.client_dropped}"
    assert f.gateway_dropped_total == 0, f"gateway dropped spans: {f.gateway_dropped}"
    assert f.lost == 0, f.line()
    assert not f.incomplete, f"{len(f.incomplete)} traces not whole in MLflow, e.g. {list(f.incomplete.items())[:3]}"


def dropped_by_reason(f: Figures, reason: str) -> int:
    return int(sum(v for k, v in f.gateway_dropped.items() if k.endswith("/" + reason)))


# -- 1. MLflow down under steady load -----------------------------------------------------------


def test_mlflow_down_under_steady_load_all_traces_land_and_the_app_pays_nothing(rig: Rig) -> None:
    out = run_outage(rig, "mlflow down 15s", outage_s=15, rate_per_s=RATE)
    f = report(out.figures)
    assert out.poll is not None
    load, t_down, t_up = out.load, out.marks["down"], out.marks["up"]
    before, during = load.costs(until=t_down), load.costs(since=t_down, until=t_up)
    assert f.client_dropped == {}, f"the application's client dropped spans: {f.client_dropped}"
    assert_nothing_lost(f)
    assert out.poll.max_spool_segments >= 1, "nothing was spooled during the outage"
    assert len(during) >= 0.8 * RATE * 15, f"only {len(during)} requests during the outage"
    # The application's tracing cost does not depend on MLflow: no waiting, no blocking.
    assert statistics.median(during) <= 3 * statistics.median(before) + 200, (
        cost_summary(before),
        cost_summary(during),
    )
    assert max(during) < 500_000, f"a request waited {max(during) / 1000:.0f} ms on tracing"


# -- 2. MLflow answering 503 --------------------------------------------------------------------


def test_mlflow_503_retries_open_the_circuit_and_everything_lands(rig: Rig) -> None:
    gw = rig.start_gateway()
    rig.warm_up()
    tracer = rig.tracer()
    poll = Poll(rig)
    load = Load(tracer, rate_per_s=RATE, max_seconds=60).start()
    hold(1)
    rig.proxy.respond(503)
    hold(10, on_tick=poll)
    t_clear = time.monotonic()
    rig.proxy.pass_through()
    hold(1)
    load.stop()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=60)

    assert metrics is not None
    retries = metrics.value("tracegw_write_retries_total")
    f = report(
        account(
            "mlflow 503 10s",
            load.sent,
            tracer,
            rig.store,
            metrics,
            settled_at - t_clear,
            gw.peak_rss_bytes(),
            answered_503=rig.proxy.answered(503),
            write_retries=int(retries),
            circuit_states=sorted(poll.circuit_states),
            circuit_opened=int(metrics.value("tracegw_circuit_transitions_total", to="open")),
        )
    )
    assert rig.proxy.answered(503) > 0
    assert_nothing_lost(f)
    assert retries > 0
    assert 2 in poll.circuit_states, f"circuit never seen open during the fault: {poll.circuit_states}"
    assert metrics.value("tracegw_circuit_state") == 0, "circuit not closed again after MLflow recovered"


# -- 3. MLflow answering 400 --------------------------------------------------------------------


def test_one_400_answer_is_isolated_and_nothing_is_lost(rig: Rig) -> None:
    rig.start_gateway()
    rig.warm_up()
    tracer = rig.tracer()
    rig.proxy.respond(400, times=1, match=posts_to("/v1/traces"))
    load = Load(tracer, rate_per_s=RATE, max_requests=40).start().wait_done(timeout_s=30)
    t_end = time.monotonic()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=60)

    assert metrics is not None
    dead = DeadLetters.read(rig.spool_dir, [s.trace_id for s in load.sent])
    f = report(
        account(
            "mlflow 400 once",
            load.sent,
            tracer,
            rig.store,
            metrics,
            settled_at - t_end,
            dead_lettered_traces=len(dead.trace_ids),
            dead_letter_total=int(metrics.value("tracegw_dead_letter_total")),
            batch_splits=int(metrics.value("tracegw_batch_splits_total")),
        )
    )
    assert rig.proxy.faulted("respond") == 1, "the 400 was never answered"
    assert f.produced == f.client_sent and f.lost == 0, f.line()
    # Every trace is whole in MLflow or dead-lettered (with its reason, counted).
    assert set(f.incomplete) <= dead.trace_ids, set(f.incomplete) - dead.trace_ids
    dead_spans = sum(s.spans for s in load.sent if s.trace_id in dead.trace_ids)
    assert f.client_sent == f.landed + dead_spans
    assert dropped_by_reason(f, "dead_letter") == dead_spans
    if dead.trace_ids:
        assert metrics.value("tracegw_dead_letter_total") >= 1
        assert dead.reasons and all("400" in json.dumps(r) for r in dead.reasons), dead.reasons


def test_a_poison_trace_is_dead_lettered_alone_and_all_others_land(rig: Rig) -> None:
    rig.start_gateway()
    rig.warm_up()
    tracer = rig.tracer()
    poison: list[bytes] = []

    def pick(i: int, sent: Sent) -> None:
        if i == 20:  # its spans are still in the client or in assembly: no request carries them yet
            poison.append(bytes.fromhex(sent.trace_id))

    rig.proxy.respond(
        400,
        match=lambda method, path, body: (
            method == "POST" and path.startswith("/v1/traces") and bool(poison) and poison[0] in body
        ),
    )
    load = Load(tracer, rate_per_s=RATE, max_requests=41 + 40, on_sent=pick).start().wait_done(timeout_s=30)
    t_end = time.monotonic()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=60)

    assert metrics is not None
    victim = poison[0].hex()
    dead = DeadLetters.read(rig.spool_dir, [s.trace_id for s in load.sent])
    f = report(
        account(
            "mlflow 400 poison trace",
            load.sent,
            tracer,
            rig.store,
            metrics,
            settled_at - t_end,
            rejected_400=rig.proxy.answered(400),
            dead_lettered_traces=len(dead.trace_ids),
            dead_letter_total=int(metrics.value("tracegw_dead_letter_total")),
            batch_splits=int(metrics.value("tracegw_batch_splits_total")),
        )
    )
    assert rig.proxy.answered(400) >= 1
    assert dead.trace_ids == {victim}, f"dead-lettered {sorted(dead.trace_ids)}, expected only {victim}"
    assert set(f.incomplete) == {victim}, f"not whole in MLflow: {sorted(f.incomplete)}"
    assert victim not in rig.store.trace_infos([victim])
    victim_spans = next(s.spans for s in load.sent if s.trace_id == victim)
    assert f.lost == 0 and f.client_sent == f.landed + victim_spans, f.line()
    assert dropped_by_reason(f, "dead_letter") == victim_spans, f.gateway_dropped
    assert metrics.value("tracegw_dead_letter_total") >= 1
    assert dead.reasons and all("400" in json.dumps(r) for r in dead.reasons), dead.reasons


# -- 4. MLflow slow -----------------------------------------------------------------------------


def test_mlflow_slow_2s_per_request_everything_lands(rig: Rig) -> None:
    gw = rig.start_gateway()
    rig.warm_up()
    tracer = rig.tracer()
    rig.proxy.delay(2.0)
    load = Load(tracer, rate_per_s=RATE, max_seconds=4).start().wait_done(timeout_s=30)
    t_end = time.monotonic()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=90)

    f = report(
        account(
            "mlflow slow 2s/request",
            load.sent,
            tracer,
            rig.store,
            metrics,
            settled_at - t_end,
            gw.peak_rss_bytes(),
            delayed_requests=rig.proxy.faulted("delay"),
        )
    )
    assert rig.proxy.faulted("delay") >= 1
    assert_nothing_lost(f)


# -- 5. gateway SIGTERM mid-load, restart ---------------------------------------------------------


def test_gateway_sigterm_mid_load_then_restart_replays_the_spool(rig: Rig) -> None:
    out = run_sigterm(rig, "gateway SIGTERM + restart", rate_per_s=RATE)
    f = report(out.figures)
    load, t_term, t_ready = out.load, out.marks["term"], out.marks["ready"]
    received = f.extra["received_by_gateways"]
    assert f.extra["exit_code"] == 0, rig.gateway.log()[-3000:] if rig.gateway else ""
    assert f.extra["spooled_at_exit"], "nothing in the spool after a drain with MLflow down"
    assert f.extra["replayed"] >= 1
    first_dropped = f.extra["first_gateway_dropped"]
    assert not first_dropped, f"the draining gateway dropped spans: {first_dropped}"
    by_id = {x.trace_id: x for x in load.sent}
    short = sorted(
        (round(by_id[t].ended - t_term, 2), got - by_id[t].spans)
        for t, got in f.incomplete.items()
        if 0 < got < by_id[t].spans
    )
    extra = sorted(
        (round(by_id[t].ended - t_term, 2), got - by_id[t].spans)
        for t, got in f.incomplete.items()
        if got > by_id[t].spans
    )
    detail = f"; short traces (ended-after-SIGTERM s, spans) {short[:20]}; with extra spans {extra[:10]}"
    assert f.gateway_dropped_total == 0, f.gateway_dropped
    assert f.produced == f.client_sent + sum(f.client_dropped.values())
    assert not segment_files(rig.spool_dir), "segments left in the spool after the drain"
    # Only requests made while the gateway was away may miss spans (dropped and counted by the client).
    # The client keeps backing off (up to ClientConfig.backoff_max_s) after the gateway is back, so the
    # gap ends that much after the restart.
    gap_end = t_ready + load.tracer.config.backoff_max_s + 1.0
    gap = [s for s in load.sent if s.trace_id in f.incomplete and not (t_term - 1.0 <= s.ended <= gap_end)]
    assert not gap, f"{len(gap)} incomplete traces outside the restart gap"
    assert f.landed == received, f"the gateways received {received} spans, {f.landed} landed" + detail
    assert f.lost == 0, f.line() + detail


# -- 6. gateway SIGKILL mid-load, restart: the write-ahead log loses nothing acknowledged ----------


def assert_nothing_acknowledged_lost(out: Outcome) -> None:
    """Every span the gateway acknowledged landed. ``lost`` (acknowledged - landed - dropped) may go
    below 0: an RPC the kill cut after its WAL write but before its answer is counted by the client
    as not sent (``client_dropped``), yet replayed and stored (at least once, never less). So: no
    negative loss hiding a positive one, every trace that ended a second before the kill is whole
    (acknowledged long before it), and the restart did replay the WAL."""
    f = report(out.figures)
    assert f.gateway_dropped_total == 0, f"gateway dropped spans: {f.gateway_dropped}"
    assert f.lost <= 0, f"{f.lost} acknowledged spans lost: {f.line()}"
    assert f.landed <= f.produced, f.line()
    t_kill = out.marks["kill"]
    cut = [s.trace_id for s in out.load.sent if s.ended < t_kill - 1.0 and s.trace_id in f.incomplete]
    assert not cut, f"{len(cut)} traces acknowledged before the kill are not whole in MLflow, e.g. {cut[:3]}"
    assert f.extra["replayed_records"] > 0, "the restart replayed nothing: the kill hit no window"


def test_gateway_sigkill_mid_load_loses_nothing_acknowledged(rig: Rig) -> None:
    assert_nothing_acknowledged_lost(run_sigkill(rig, "gateway SIGKILL + restart", rate_per_s=RATE))


def test_gateway_sigkill_while_mlflow_is_down_loses_nothing_acknowledged(rig: Rig) -> None:
    out = run_sigkill(rig, "gateway SIGKILL + restart, MLflow down", rate_per_s=RATE, mlflow_down_s=4.0)
    assert_nothing_acknowledged_lost(out)


def test_gateway_sigkill_inside_a_wal_group_commit_loses_nothing_acknowledged(rig: Rig) -> None:
    out = run_sigkill(rig, "gateway SIGKILL inside the WAL fsync", rate_per_s=RATE, during_fsync=True)
    assert out.figures.extra["killed_in_fsync"], "the WAL thread was never seen inside fsync within 10 s"
    assert_nothing_acknowledged_lost(out)


# -- 7. spool full --------------------------------------------------------------------------------


def test_spool_full_the_policy_is_counted_and_everything_is_accounted(rig: Rig) -> None:
    max_bytes = 64 * 1024
    gw = rig.start_gateway(TRACEGW_SPOOL_MAX_BYTES=str(max_bytes))
    rig.warm_up()
    tracer = rig.tracer()
    poll = Poll(rig)
    load = Load(tracer, rate_per_s=RATE, max_seconds=60).start()
    rig.proxy.down()
    hold(8, on_tick=poll)
    t_up = time.monotonic()
    rig.proxy.up()
    hold(1)
    load.stop()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=90)

    assert metrics is not None
    spool_full = metrics.value("tracegw_spool_writes_total", outcome="full")
    f = report(
        account(
            "spool full (64 KiB)",
            load.sent,
            tracer,
            rig.store,
            metrics,
            settled_at - t_up,
            gw.peak_rss_bytes(),
            spool_writes_full=int(spool_full),
            max_spool_bytes=int(poll.max_spool_bytes),
        )
    )
    assert spool_full >= 1, "the spool never reported itself full"
    assert poll.max_spool_bytes <= max_bytes, f"spool held {poll.max_spool_bytes} bytes > {max_bytes}"
    assert f.produced == f.client_sent + sum(f.client_dropped.values())
    assert f.lost == 0, f.line()
    assert f.client_sent == f.landed + f.gateway_dropped_total
    # Whatever was not delivered was counted with a reason.
    missing = sum(s.spans - f.incomplete[s.trace_id] for s in load.sent if s.trace_id in f.incomplete)
    assert missing == sum(f.client_dropped.values()) + f.gateway_dropped_total


# -- 8. a torn spool file -------------------------------------------------------------------------


def test_a_torn_spool_file_is_quarantined_and_the_rest_is_delivered(rig: Rig) -> None:
    gw = rig.start_gateway()
    rig.warm_up()
    tracer = rig.tracer()
    rig.proxy.down()
    load = Load(tracer, rate_per_s=RATE, max_seconds=3).start().wait_done(timeout_s=30)
    assert tracer.flush(timeout_s=10)
    sent_spans = tracer.stats().spans_sent
    wait_for(
        lambda: (m := gw.try_metrics()) is not None and m.value("tracegw_spans_received_total") >= sent_spans,
        timeout_s=20,
        what="the gateway received every span",
    )
    assert gw.terminate(timeout_s=20) == 0, gw.log()[-3000:]
    real = segment_files(rig.spool_dir)
    assert real, "no segment spooled while MLflow was down"

    last_seq = max(int(p.name.split("-", 1)[0]) for p in real)
    torn = rig.spool_dir / f"{last_seq + 1:016d}-spans.seg"
    torn.write_bytes(real[-1].read_bytes()[: real[-1].stat().st_size // 2])  # a write cut in half
    garbage = rig.spool_dir / f"{last_seq + 2:016d}-spans.seg"
    garbage.write_bytes(os.urandom(4096))

    rig.proxy.up()
    t_start = time.monotonic()
    rig.start_gateway()
    metrics, settled_at = rig.settle(load.sent, tracer, timeout_s=60)

    assert metrics is not None
    quarantined = metrics.value("tracegw_spool_quarantined_total")
    f = report(
        account(
            "torn spool file",
            load.sent,
            tracer,
            rig.store,
            metrics,
            settled_at - t_start,
            real_segments=len(real),
            quarantined=int(quarantined),
            replayed=int(metrics.value("tracegw_spool_replayed_total")),
        )
    )
    assert quarantined >= 2
    for bad in (torn, garbage):
        assert not bad.exists(), f"{bad.name} still in the spool"
        assert (rig.spool_dir / QUARANTINE_DIR / bad.name).exists(), f"{bad.name} not kept in quarantine"
    assert metrics.value("tracegw_spool_replayed_total") >= len(real)
    assert_nothing_lost(f)
    wait_for(lambda: not segment_files(rig.spool_dir), timeout_s=10, what="spool emptied after delivery")


# -- 9. sustained overload above the memory limit -------------------------------------------------


SOFT_LIMIT = 100 * 2**20
HARD_LIMIT = 150 * 2**20
OVERLOAD_RATE = 250.0  # requests per second, ~4,200 spans per second: what one client thread can ship


def test_overload_keeps_rss_under_the_hard_limit_and_the_app_unaffected(rig: Rig) -> None:
    out = run_overload(rig, "overload above memory limit", SOFT_LIMIT, HARD_LIMIT, OVERLOAD_RATE, sustain_s=4, max_s=40)
    f = report(out.figures)
    assert out.marks["baseline_rss"] < SOFT_LIMIT, f"the idle gateway already uses {out.marks['baseline_rss']} B"
    assert out.metrics is not None
    stats = out.load.tracer.stats()
    costs = out.load.costs()
    assert f.peak_rss_bytes < HARD_LIMIT, f"peak RSS {f.peak_rss_bytes / 2**20:.0f} MiB >= hard limit"
    assert out.metrics.value("tracegw_refused_total") > 0, "the gateway never refused: the load did not reach the limit"
    assert stats.spans_dropped["resource_exhausted"] > 0, dict(stats.spans_dropped)
    assert stats.errors == 0, stats.last_error
    assert f.produced == f.client_sent + sum(f.client_dropped.values())
    # The application is unaffected: no request waits on tracing.
    assert percentile(costs, 0.99) < 20_000, cost_summary(costs)
    assert max(costs) < 500_000, f"a request waited {max(costs) / 1000:.0f} ms on tracing"
