"""The pod's real shutdown sequence on loopback: a real chatbot process (``orchestrator.api.main``,
what ``mangaassist-orchestrator`` runs) pointed at a real gateway process (``tracegw serve``) in
front of a real ``mlflow server`` behind a fault proxy that delays every request (a slow MLflow,
so the sidecar's flush has real work), chat traffic with requests in flight at the SIGTERM.

Kubelet order (native sidecar, deploy/k8s/base/mangaassist.yaml): SIGTERM the chatbot, wait for
it to exit (its drain + tracer flush), only then SIGTERM the gateway and wait for it. The whole
sequence must fit the budget the manifests compute for terminationGracePeriodSeconds (same
formula as tests/contracts/test_k8s_manifests.py, from the settings passed here, no preStop on
loopback), both must exit 0, every chat answered 200 must have its trace in MLflow once the
gateway drained (what it left in its spool or WAL counts after a restart on the same spool, and
is reported apart), and nothing may be dropped by the chatbot's client or by the gateway.

Wrong order (a plain second container: the sidecar has no preStop, so it gets SIGTERM first and
is gone while the chatbot still drains): the chatbot's tracer cannot reach it, its spans are
dropped by the client and counted (> 0), still no span is lost uncounted.

The chatbot's client counters live in the chatbot process: the test runs ``orchestrator.api.main``
through a few lines (``CHATBOT``) that wrap the tracer's ``shutdown`` to print its counters once
it has flushed (uvicorn re-raises the SIGTERM after its graceful shutdown, so nothing after
``main`` would run)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway import config as gateway_config
from gateway.server import RPC_GRACE_S
from orchestrator import config as orchestrator_config
from orchestrator.api import TRACER_FLUSH_S
from orchestrator.tools.scenarios import plan_chats
from tests.contracts.test_k8s_manifests import MARGIN_S, TRACER_OVERSHOOT_S
from tests.faults.harness import REPORTED, SYNTHESIZED_LIKE, GatewayProcess, Metrics, Rig, clean_env, segment_files
from tests.support import free_port, wait_for

pytestmark = pytest.mark.integration

CHATBOT_GRACE_S = "3"  # MANGAASSIST_SHUTDOWN_GRACE_S (uvicorn rounds it to whole seconds)
MLFLOW_DELAY_S = 1.5  # every request to MLflow waits this long in the proxy
WORKERS = 4  # chat client threads
WORKER_RATE_PER_S = 8.0  # each: ~32 chats/s in all, ~500 spans/s
BEFORE_TERM_S = 2.5  # traffic before the first SIGTERM
AFTER_GATEWAY_S = 1.0  # wrong order: traffic the chatbot still serves after the sidecar exited
HELD = 3  # requests whose body is half sent at the SIGTERM: in flight for sure
HELD_FOR_S = 0.5  # they finish this long after the chatbot's SIGTERM

CHATBOT = r"""
import json, sys
from orchestrator import api

_build = api.build

def build(*args, **kwargs):
    service, tracer = _build(*args, **kwargs)
    shutdown = tracer.shutdown

    def observed_shutdown(*a, **k):
        shutdown(*a, **k)
        s = tracer.stats()
        line = {"sent": s.spans_sent, "pending": s.spans_pending, "dropped": dict(s.spans_dropped),
                "errors": s.errors, "last_error": s.last_error}
        print("CLIENT-STATS " + json.dumps(line), flush=True)

    tracer.shutdown = observed_shutdown
    return service, tracer

api.build = build
sys.exit(api.main([]))
"""


def grace_budget_s(chatbot: orchestrator_config.OrchestratorConfig, gateway: gateway_config.Config) -> float:
    """terminationGracePeriodSeconds as the manifests' contract test computes it (no preStop here)."""
    chatbot_s = chatbot.api.shutdown_grace_s + TRACER_FLUSH_S + TRACER_OVERSHOOT_S
    gateway_s = RPC_GRACE_S + gateway.shutdown_grace_s  # SIGTERM only once the chatbot stopped
    return chatbot_s + gateway_s + MARGIN_S


# -- the chatbot process ---------------------------------------------------------------------


class ChatbotProcess:
    """The orchestrator's real entry point on a free loopback port, pointed at ``gateway_target``."""

    def __init__(self, workdir: Path, gateway_target: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in clean_env().items() if not k.startswith("MANGAASSIST_")}
        self.env = {
            **env,
            "MANGAASSIST_HOST": "127.0.0.1",
            "MANGAASSIST_PORT": str(self.port),
            "MANGAASSIST_SHUTDOWN_GRACE_S": CHATBOT_GRACE_S,
            "TRACEGW_CLIENT_TARGET": gateway_target,  # the experiment: the gateway's default
        }
        self.config = orchestrator_config.load(self.env)
        self.log_path = workdir / f"chatbot-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> ChatbotProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHATBOT],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        wait_for(self._healthy, timeout_s=timeout_s, interval_s=0.1, what=f"chatbot on {self.url}")
        return self

    def _healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"chatbot exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def log(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace") if self.log_path.exists() else ""

    def sigterm(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"chatbot still running {timeout_s}s after SIGTERM:\n{self.log()[-3000:]}") from None

    def client_stats(self) -> dict[str, Any]:
        lines = [ln for ln in self.log().splitlines() if ln.startswith("CLIENT-STATS ")]
        assert lines, f"the chatbot's tracer never shut down:\n{self.log()[-3000:]}"
        return dict(json.loads(lines[-1].split(" ", 1)[1]))

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


# -- chat traffic ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Answer:
    status: int  # 0: no HTTP answer (refused, reset)
    trace_id: str
    started: float
    ended: float


def _post_chat(port: int, body: dict[str, Any]) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/v1/chat", json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, (json.loads(data).get("trace_id", "") if resp.status == 200 else "")
    except (OSError, http.client.HTTPException):
        return 0, ""
    finally:
        conn.close()


class Traffic:
    """``WORKERS`` threads posting chats at ``WORKER_RATE_PER_S`` each until ``stop()``,
    ``max_requests`` or ``max_seconds``."""

    def __init__(self, port: int, max_requests: int = 2000, max_seconds: float = 30.0) -> None:
        self.port = port
        self.max_seconds = max_seconds
        self._plans = plan_chats(max_requests, seed=23)
        self._next = iter(range(max_requests))
        self._lock = threading.Lock()
        self.answers: list[Answer] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"chat-{i}", daemon=True) for i in range(WORKERS)]
        self.started_at = 0.0

    def start(self) -> Traffic:
        self.started_at = time.monotonic()
        for t in self._threads:
            t.start()
        return self

    def _run(self) -> None:
        interval = 1.0 / WORKER_RATE_PER_S
        while not self._stop.is_set() and time.monotonic() - self.started_at < self.max_seconds:
            with self._lock:
                i = next(self._next, None)
            if i is None:
                return
            started = time.monotonic()
            status, trace_id = _post_chat(self.port, self._plans[i].body)
            with self._lock:
                self.answers.append(Answer(status, trace_id, started, time.monotonic()))
            self._stop.wait(max(0.0, interval - (time.monotonic() - started)))  # pacing

    def ok(self) -> int:
        with self._lock:
            return sum(a.status == 200 for a in self.answers)

    def stop(self) -> Traffic:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=35)
            assert not t.is_alive(), "a chat thread did not stop"
        return self


class HeldRequest:
    """A chat whose headers and half its body are sent now, the rest on ``finish()``: uvicorn has
    started it (it is in flight) but the application cannot answer before the body is whole."""

    def __init__(self, port: int, body: dict[str, Any]) -> None:
        self.data = json.dumps(body).encode()
        self.started = time.monotonic()
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=30)
        head = (
            f"POST /v1/chat HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.data)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + self.data[: len(self.data) // 2])

    def finish(self) -> Answer:
        resp: http.client.HTTPResponse | None = None
        try:
            self.sock.sendall(self.data[len(self.data) // 2 :])
            resp = http.client.HTTPResponse(self.sock)
            resp.begin()
            data = resp.read()
            trace_id = json.loads(data).get("trace_id", "") if resp.status == 200 else ""
            return Answer(resp.status, trace_id, self.started, time.monotonic())
        except (OSError, http.client.HTTPException):
            return Answer(0, "", self.started, time.monotonic())
        finally:
            if resp is not None:
                resp.close()
            self.sock.close()


# -- what MLflow holds -----------------------------------------------------------------------


def experiment_spans(db_path: Path, experiment: str, exclude: set[str]) -> int:
    """Distinct spans stored in ``experiment`` (synthesized roots and ``exclude`` traces left out)."""
    conn = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(
            "SELECT s.trace_id, COUNT(DISTINCT s.span_id) FROM spans s JOIN experiments e "
            "ON s.experiment_id = e.experiment_id WHERE e.name = ? AND s.content NOT LIKE ? GROUP BY s.trace_id",
            [experiment, SYNTHESIZED_LIKE],
        ).fetchall()
    finally:
        conn.close()
    return sum(n for tid, n in rows if tid[3:] not in exclude)


def wal_segments(spool_dir: Path) -> list[Path]:
    wal = spool_dir / "wal"
    return sorted(wal.glob("*.wal")) if wal.is_dir() else []


def gateway_drops(metrics: Metrics | None) -> dict[str, float]:
    return metrics.by_label("tracegw_spans_dropped_total", "stage", "reason") if metrics else {}


def logged_in_memory_drops(log: str) -> list[int]:
    """From each drain's ``delivery stopped: N segments left ..., M in-memory dropped`` line."""
    return [int(m) for m in re.findall(r"delivery stopped: \d+ segments left .*?, (\d+) in-memory dropped", log)]


# -- one shutdown sequence --------------------------------------------------------------------


@dataclass
class Run:
    order: str
    answers: list[Answer]
    t_term: float  # the first SIGTERM
    t_chatbot_term: float
    t_chatbot_exit: float
    t_gateway_exit: float
    chatbot_rc: int
    gateway_rc: int
    client: dict[str, Any]
    before_term: Metrics | None  # the gateway's last scrape before its SIGTERM
    at_exit: Metrics | None  # its last scrape while it drained
    budget_s: float
    chatbot_budget_s: float  # its share: drain + tracer flush
    spooled_segments: int
    wal_left: int
    landed_at_exit: int  # spans of the chatbot's traces in MLflow right after the gateway drained
    landed_in_budget_ids: set[str]
    restarted: Metrics | None = None
    landed_final: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> list[Answer]:
        return [a for a in self.answers if a.status == 200]

    @property
    def total_s(self) -> float:
        """From the first SIGTERM until both processes had exited."""
        return max(self.t_gateway_exit, self.t_chatbot_exit) - self.t_term

    @property
    def client_dropped(self) -> dict[str, int]:
        return {k: v for k, v in self.client["dropped"].items() if v}

    def in_flight(self) -> int:
        """Chats answered 200 that had started before the chatbot's SIGTERM and ended after it."""
        return sum(1 for a in self.ok if a.started < self.t_chatbot_term < a.ended)

    def line(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in self.extra.items())
        gw_dropped = gateway_drops(self.restarted or self.at_exit)
        return (
            f"[shutdown-order] {self.order}: chats_200={len(self.ok)} in_flight_at_sigterm={self.in_flight()} "
            f"refused={sum(a.status != 200 for a in self.answers)} client_sent={self.client['sent']} "
            f"client_dropped={self.client_dropped or 0} gateway_dropped={gw_dropped or 0} "
            f"total={self.total_s:.1f}s (chatbot exited at {self.t_chatbot_exit - self.t_term:.1f}s, gateway at "
            f"{self.t_gateway_exit - self.t_term:.1f}s) budget={self.budget_s:.1f}s "
            f"exit=chatbot:{self.chatbot_rc}/gateway:{self.gateway_rc} "
            f"landed_within_budget={self.landed_at_exit} spans/{len(self.landed_in_budget_ids)} traces "
            f"left_for_next_start={self.landed_final - self.landed_at_exit} spans "
            f"(spool {self.spooled_segments} segments, wal {self.wal_left} segments){extra}"
        )


def shutdown_sequence(rig: Rig, order: str) -> Run:
    """Start gateway, chatbot and traffic; shut down in ``order`` ("kubelet": chatbot first;
    "sidecar-first": the gateway first); restart the gateway on its spool if it left anything."""
    t_setup = time.monotonic()
    gw = rig.start_gateway()
    warm_ids = set(rig.warm_up())
    chatbot = ChatbotProcess(rig.workdir, gw.target).start()
    setup_s = time.monotonic() - t_setup
    try:
        gw_cfg = gateway_config.load(gw.env)
        budget = grace_budget_s(chatbot.config, gw_cfg)
        chatbot_s = chatbot.config.api.shutdown_grace_s + TRACER_FLUSH_S + TRACER_OVERSHOOT_S
        chatbot_wait_s = chatbot_s + MARGIN_S
        gateway_wait_s = RPC_GRACE_S + gw_cfg.shutdown_grace_s + MARGIN_S
        rig.proxy.delay(MLFLOW_DELAY_S)
        traffic = Traffic(chatbot.port).start()
        wait_for(lambda: traffic.ok() >= 10, timeout_s=20, interval_s=0.05, what="chats answered")
        time.sleep(max(0.0, BEFORE_TERM_S - (time.monotonic() - traffic.started_at)))  # steady traffic, not sync
        held_plans = plan_chats(HELD, seed=31)

        def chatbot_down() -> tuple[float, int, list[Answer]]:
            held = [HeldRequest(chatbot.port, p.body) for p in held_plans]
            time.sleep(0.2)  # uvicorn has read their headers: the requests are in flight
            t = time.monotonic()
            chatbot.sigterm()
            time.sleep(HELD_FOR_S)
            answers = [h.finish() for h in held]
            rc = chatbot.wait(chatbot_wait_s - HELD_FOR_S)
            return t, rc, answers

        if order == "kubelet":
            before = gw.try_metrics()
            t_term, chatbot_rc, held_answers = chatbot_down()
            t_chatbot_term = t_term
            t_chatbot_exit = time.monotonic()
            traffic.stop()
            before = gw.try_metrics() or before  # the last scrape before the gateway's SIGTERM
            gateway_rc = gw.terminate(timeout_s=gateway_wait_s)
            t_gateway_exit = time.monotonic()
        else:
            before = gw.try_metrics()
            t_term = time.monotonic()
            gateway_rc = gw.terminate(timeout_s=gateway_wait_s)
            t_gateway_exit = time.monotonic()
            time.sleep(AFTER_GATEWAY_S)  # the chatbot keeps serving: its spans have nowhere to go
            t_chatbot_term, chatbot_rc, held_answers = chatbot_down()
            t_chatbot_exit = time.monotonic()
            traffic.stop()
        at_exit = gw.final_metrics
        client = chatbot.client_stats()
    finally:
        chatbot.stop()

    answers = traffic.answers + held_answers
    ok_ids = {a.trace_id for a in answers if a.status == 200}
    time.sleep(MLFLOW_DELAY_S + 0.5)  # writes the proxy still holds reach MLflow (sent within the budget)
    spooled, wal_left = segment_files(rig.spool_dir), wal_segments(rig.spool_dir)
    landed_at_exit = experiment_spans(rig.store.db_path, rig.experiment, warm_ids)
    landed_ids = set(rig.store.landed(ok_ids))
    run = Run(
        order,
        answers,
        t_term,
        t_chatbot_term,
        t_chatbot_exit,
        t_gateway_exit,
        chatbot_rc,
        gateway_rc,
        client,
        before,
        at_exit,
        budget,
        chatbot_s,
        len(spooled),
        len(wal_left),
        landed_at_exit,
        landed_ids,
        landed_final=landed_at_exit,
    )
    run.extra["setup_s"] = round(setup_s, 1)
    t_restart = time.monotonic()
    if spooled or wal_left:  # the next start on the same spool delivers it
        rig.proxy.pass_through()
        restarted = rig.start_gateway()
        expected = client["sent"]

        def caught_up() -> bool:
            m = restarted.try_metrics()
            drops = sum(gateway_drops(m).values())
            return experiment_spans(rig.store.db_path, rig.experiment, warm_ids) + drops >= expected

        with contextlib.suppress(AssertionError):  # asserted by the caller, with the figures
            wait_for(caught_up, timeout_s=30, interval_s=0.25, what="the spool replayed")
        run.restarted = restarted.try_metrics()
        run.landed_final = experiment_spans(rig.store.db_path, rig.experiment, warm_ids)
        run.extra["replay_s"] = round(time.monotonic() - t_restart, 1)
        assert restarted.terminate(timeout_s=gateway_wait_s) == 0, restarted.log()[-3000:]
    run.extra["proxy_delayed"] = rig.proxy.faulted("delay")
    line = run.line()
    REPORTED.append(line)
    print(line, flush=True)
    return run


def missing_traces(rig: Rig, run: Run) -> list[str]:
    ok_ids = [a.trace_id for a in run.ok]
    return sorted(set(ok_ids) - rig.store.trace_infos(ok_ids))


def assert_accounted(run: Run, gw: GatewayProcess) -> None:
    """Every span the chatbot's client sent is in MLflow or counted as dropped by the gateway."""
    drops = sum(gateway_drops(run.restarted or run.at_exit).values())
    assert run.client["pending"] == 0, run.client
    assert run.landed_final + drops == run.client["sent"], run.line() + "\n" + gw.log()[-3000:]


# -- the tests ---------------------------------------------------------------------------------


def test_kubelet_order_chatbot_then_sidecar_loses_nothing_within_the_grace_budget(rig: Rig) -> None:
    run = shutdown_sequence(rig, "kubelet")
    assert rig.gateway is not None
    gw = rig.gateway
    assert run.extra["proxy_delayed"] > 0, "MLflow was never slow"
    assert len(run.ok) >= 30, run.line()
    assert run.in_flight() >= HELD, f"only {run.in_flight()} chats in flight at the SIGTERM"
    assert run.t_chatbot_exit - run.t_term <= run.chatbot_budget_s, run.line()  # the gateway's share is left whole
    assert run.total_s <= run.budget_s, run.line()
    assert run.gateway_rc == 0, gw.log()[-3000:]
    # Nothing dropped: not by the chatbot's client (the sidecar was there for its whole drain) ...
    assert run.client_dropped == {}, run.client
    assert run.client["errors"] == 0, run.client
    # ... nor by the gateway: its scrapes before and while draining, its log, the restarted one.
    for metrics in (run.before_term, run.at_exit, run.restarted):
        assert not gateway_drops(metrics), gateway_drops(metrics)
    logged = logged_in_memory_drops(gw.log())
    assert logged and not any(logged), logged
    # Every chat answered 200 has its trace in MLflow: delivered within the budget or replayed
    # from the spool/WAL by the next start.
    assert not missing_traces(rig, run), missing_traces(rig, run)[:5]
    assert_accounted(run, gw)
    # Last, so that everything above is checked anyway.
    assert run.chatbot_rc == 0, (
        f"the chatbot exited {run.chatbot_rc} after a complete graceful drain (uvicorn re-raises the "
        f"SIGTERM it caught once it has shut down):\n{run.line()}"
    )


def test_sidecar_first_the_chatbots_spans_are_dropped_by_its_client_and_counted(rig: Rig) -> None:
    run = shutdown_sequence(rig, "sidecar-first")
    assert rig.gateway is not None
    gw = rig.gateway
    assert run.gateway_rc == 0, gw.log()[-3000:]
    assert len(run.ok) >= 30, run.line()
    # The cost of the wrong order: what the chatbot traced after the sidecar left is dropped by
    # its client (the sidecar was unreachable), counted, never silently lost.
    dropped = sum(run.client_dropped.values())
    assert dropped > 0, run.client
    assert set(run.client_dropped) <= {"unavailable", "shutdown", "deadline_exceeded"}, run.client
    late = [a for a in run.ok if a.started > run.t_gateway_exit]
    assert late, "no chat answered after the sidecar exited"
    assert missing_traces(rig, run), "every trace reached MLflow although the sidecar was gone"
    assert not gateway_drops(run.restarted or run.at_exit), gateway_drops(run.restarted or run.at_exit)
    assert_accounted(run, gw)
