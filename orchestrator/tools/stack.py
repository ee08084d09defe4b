"""``python -m orchestrator.tools.stack``: a local production-like stack on loopback (``make stack``).

``up`` starts, each in its own process group, and waits (bounded) until each is healthy:

- a moto server (``moto_server``) standing in for S3, with the artifact bucket;
- ``--mlflow-replicas`` MLflow tracking servers (``mlflow server --app-name basic-auth``) on one
  PostgreSQL database of the machine's server (created if missing), artifacts proxied to the moto
  S3 bucket, an auth database and config in the workdir; the admin creates the traffic
  experiment and a ``gateway`` user with EDIT on it (``mangaassist-release grant --role gateway``);
- two gateways (``tracegw serve``, a spool dir and ports each, the ``gateway`` user's
  credentials), split across the MLflow replicas;
- two chatbots (``mangaassist-orchestrator``, offline providers), each sending to its own gateway;
- a small round-robin HTTP proxy in front of the chatbots, sticky by session (a session's first
  request picks the next chatbot, later ones and feedback on its answers follow it);
- Prometheus scraping both gateways and both chatbots, with deploy/prometheus/alerts.yaml and
  rollout-rules.yaml loaded and exemplar storage on;
- the traffic driver: ``--traffic`` chat requests (with feedback) through the proxy at
  ``--traffic-rate``, bounded in count and time, then it exits.

It writes ``<workdir>/state.json`` (every pid, process group, start time, port, URL and log) as
it goes, prints how to open each part and exits, leaving the stack running. ``down`` stops
exactly the processes named in the state file (SIGTERM to each group, a bounded wait, then
SIGKILL; a pid whose start time no longer matches is left alone), in order: driver, proxy,
chatbots, gateways (they drain), Prometheus, MLflow, moto. ``status`` says what is alive.

``rehearse`` is the scale-out rehearsal: a fresh stack with two MLflow replicas on the same
PostgreSQL database, N requests through the proxy, a bounded wait until their traces are in
MLflow, then delivery and loss (traces the driver got an answer for vs trace ids found in
PostgreSQL's ``trace_info``, ``search_traces`` through basic-auth, the gateways' span counters),
and ``down``.

Everything listens on 127.0.0.1 only. Needs ``make setup`` (Prometheus in .tools/) and
PostgreSQL on 127.0.0.1:5432 (``--pg-dsn``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import OrderedDict
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_BIN = REPO / ".tools" / "prometheus" / "usr" / "bin" / "prometheus"
RULE_FILES = (REPO / "deploy" / "prometheus" / "alerts.yaml", REPO / "deploy" / "prometheus" / "rollout-rules.yaml")
EXPERIMENT = "mangaassist-stack"
BUCKET = "mangaassist-stack"
DEFAULT_PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
GATEWAY_USER = "gateway"
# Stop order for ``down``: what sends first, what stores last.
TIERS = ("driver", "proxy", "chatbot", "gateway", "prometheus", "mlflow", "moto")
DUMMY_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


class StackError(Exception):
    """A part did not come up (or the machine lacks something); the message names it."""


# --------------------------------------------------------------------------- processes and state


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks) of ``pid`` from /proc, or None if gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (comm) "
    return fields[0], int(fields[2]), int(fields[19])


def _alive(pid: int, start_ticks: int) -> bool:
    """``pid`` is still the process we started (same start time) and not a zombie."""
    st = _proc_stat(pid)
    return st is not None and st[0] not in ("Z", "X") and st[2] == start_ticks


def _group_members(pgid: int, since_ticks: int) -> list[int]:
    """Live processes in process group ``pgid`` started no earlier than its leader (our children)."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        st = _proc_stat(int(entry.name))
        if st is not None and st[1] == pgid and st[0] not in ("Z", "X") and st[2] >= since_ticks:
            out.append(int(entry.name))
    return out


@dataclass
class Proc:
    name: str
    tier: str
    pid: int
    pgid: int
    start_ticks: int
    log: str
    cmd: list[str]

    def members(self) -> list[int]:
        return _group_members(self.pgid, self.start_ticks)

    def alive(self) -> bool:
        return _alive(self.pid, self.start_ticks) or bool(self.members())


@dataclass
class State:
    workdir: Path
    processes: list[Proc] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return self.workdir / "state.json"

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        doc = {"workdir": str(self.workdir), "processes": [vars(p) for p in self.processes], **self.info}
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(self.path)

    @classmethod
    def load(cls, workdir: Path) -> State | None:
        path = workdir / "state.json"
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        procs = [Proc(**p) for p in doc.pop("processes")]
        doc.pop("workdir", None)
        return cls(workdir, procs, doc)

    def spawn(self, name: str, tier: str, cmd: list[str], env: dict[str, str], cwd: Path) -> Proc:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            popen = subprocess.Popen(
                cmd,
                env=env,
                cwd=cwd,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: `down` signals the group, Ctrl-C here does not
            )
        st = _proc_stat(popen.pid)
        proc = Proc(name, tier, popen.pid, popen.pid, st[2] if st else 0, str(log_path), cmd)
        self.processes.append(proc)
        self.save()
        return proc


def _log_tail(proc: Proc, chars: int = 2500) -> str:
    try:
        return Path(proc.log).read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def stop_processes(procs: list[Proc], timeout_s: float = 30.0, say: Callable[[str], None] = print) -> list[str]:
    """SIGTERM each tier's process groups, wait up to ``timeout_s``, SIGKILL what is left.

    Returns the names of the processes that had to be killed."""
    killed: list[str] = []
    by_tier = sorted(procs, key=lambda p: TIERS.index(p.tier) if p.tier in TIERS else len(TIERS))
    for tier in dict.fromkeys(p.tier for p in by_tier):
        group = [p for p in by_tier if p.tier == tier and p.alive()]
        if not group:
            continue
        say(f"  stopping {', '.join(p.name for p in group)} (SIGTERM) ...")
        for p in group:
            for pid in p.members():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(p.alive() for p in group):
            time.sleep(0.1)
        for p in group:
            left = p.members()
            if left:
                killed.append(p.name)
                say(f"  {p.name} did not stop within {timeout_s:.0f}s: SIGKILL {left}")
                for pid in left:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(p.alive() for p in group):
            time.sleep(0.1)
    return killed


# --------------------------------------------------------------------------- health checks


def _http_status(url: str, timeout_s: float = 2.0, auth: tuple[str, str] | None = None) -> int:
    req = urllib.request.Request(url)
    if auth is not None:
        import base64

        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except (OSError, ValueError):
        return 0


def _answers_200(url: str) -> Callable[[], bool]:
    return lambda: _http_status(url) == 200


def wait_healthy(part: str, check: Callable[[], bool], timeout_s: float, proc: Proc | None = None) -> float:
    """Poll ``check`` until true; raise StackError naming ``part`` (with its log) after ``timeout_s``."""
    started = time.monotonic()
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and not proc.alive():
            raise StackError(f"{part} exited while starting; last lines of {proc.log}:\n{_log_tail(proc)}")
        try:
            if check():
                return time.monotonic() - started
        except Exception:  # a check that cannot answer yet is "not healthy yet"
            pass
        time.sleep(0.25)
    tail = f"; last lines of {proc.log}:\n{_log_tail(proc)}" if proc is not None else ""
    raise StackError(f"{part} did not become healthy within {timeout_s:.0f}s{tail}")


def scrape(url: str) -> dict[str, float]:
    """Every sample of a /metrics page by ``name{labels}``."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#") and " " in line:
            key, _, value = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                out[key] = float(value)
    return out


def _sum(metrics: dict[str, float], name: str) -> float:
    return sum(v for k, v in metrics.items() if k == name or k.startswith(name + "{"))


# --------------------------------------------------------------------------- the proxy


class Proxy:
    """A small HTTP/1.1 reverse proxy: round-robin over ``backends``, sticky by session.

    A POST whose JSON body names a ``session_id`` goes to the chatbot that session first went to
    (round-robin for a new session); feedback naming a ``trace_id`` goes to the chatbot that
    answered it (its gateway holds the trace). Other requests go round-robin. A backend that
    refuses the connection is skipped for the next one. One request per client connection
    (``Connection: close``). ``GET /proxy/status`` answers counts per backend."""

    MAX_REMEMBERED = 100_000
    MAX_BODY = 1 << 20

    def __init__(self, backends: list[str]) -> None:
        self.backends = backends
        self._next = 0
        self.sessions: OrderedDict[str, int] = OrderedDict()
        self.traces: OrderedDict[str, int] = OrderedDict()
        self.counts = {b: {"requests": 0, "errors": 0, "failovers": 0} for b in backends}

    @staticmethod
    def _remember(table: OrderedDict[str, int], key: str, value: int) -> None:
        table[key] = value
        table.move_to_end(key)
        while len(table) > Proxy.MAX_REMEMBERED:
            table.popitem(last=False)

    def pick(self, body: bytes) -> int:
        session = trace = None
        if body[:1] == b"{":
            with contextlib.suppress(ValueError, AttributeError):
                doc = json.loads(body)
                session, trace = doc.get("session_id"), doc.get("trace_id")
        if isinstance(trace, str) and trace in self.traces:
            return self.traces[trace]
        if isinstance(session, str) and session in self.sessions:
            self.sessions.move_to_end(session)
            return self.sessions[session]
        index = self._next % len(self.backends)
        self._next += 1
        if isinstance(session, str):
            self._remember(self.sessions, session, index)
        return index

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await self._handle(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers = [tuple(h.split(":", 1)) for h in lines[1:] if ":" in h]
        length = next((int(v) for k, v in headers if k.strip().lower() == "content-length"), 0)
        if any(k.strip().lower() == "transfer-encoding" for k, _ in headers) or length > self.MAX_BODY:
            writer.write(b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            return
        body = await asyncio.wait_for(reader.readexactly(length), 30) if length else b""
        if target == "/proxy/status":
            doc = json.dumps({"backends": self.counts, "sessions": len(self.sessions)}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n"
                + f"Content-Length: {len(doc)}\r\n\r\n".encode()
                + doc
            )
            await writer.drain()
            return
        keep = [f"{k}:{v}" for k, v in headers if k.strip().lower() not in ("connection", "keep-alive")]
        peer = writer.get_extra_info("peername")
        request = "\r\n".join(
            [f"{method} {target} HTTP/1.1", *keep, f"X-Forwarded-For: {peer[0] if peer else ''}", "Connection: close"]
        )
        payload = request.encode("latin-1") + b"\r\n\r\n" + body
        first = self.pick(body) if method == "POST" else self._round_robin()
        for attempt in range(len(self.backends)):
            index = (first + attempt) % len(self.backends)
            backend = self.backends[index]
            host, port = backend.rsplit(":", 1)
            try:
                up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 5)
            except (OSError, TimeoutError):
                self.counts[backend]["failovers"] += 1
                continue
            try:
                up_writer.write(payload)
                await up_writer.drain()
                response = await asyncio.wait_for(up_reader.read(), 120)
            finally:
                up_writer.close()
            self.counts[backend]["requests"] += 1
            await self._reply(writer, response, index, target)
            return
        self.counts[self.backends[first]]["errors"] += 1
        writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()

    def _round_robin(self) -> int:
        index = self._next % len(self.backends)
        self._next += 1
        return index

    async def _reply(self, writer: asyncio.StreamWriter, response: bytes, index: int, target: str) -> None:
        head, sep, rest = response.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        kept = [h for h in lines[1:] if not h.lower().startswith((b"connection:", b"keep-alive:"))]
        if target.startswith("/v1/chat") and b" 200 " in lines[0] + b" ":
            with contextlib.suppress(ValueError, AttributeError, TypeError):
                trace_id = json.loads(rest).get("trace_id")
                if isinstance(trace_id, str):
                    self._remember(self.traces, trace_id, index)
        out = [lines[0], *kept, f"X-Stack-Backend: chatbot-{index + 1}".encode(), b"Connection: close"]
        writer.write(b"\r\n".join(out) + (sep or b"\r\n\r\n") + rest)
        await writer.drain()


def run_proxy(listen: str, backends: list[str]) -> int:
    proxy = Proxy(backends)
    host, port = listen.rsplit(":", 1)

    async def main() -> None:
        server = await asyncio.start_server(proxy.handle, host, int(port), limit=1 << 16)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"proxy on {listen} -> {', '.join(backends)}", flush=True)
        async with server:
            await stop.wait()
        print("proxy stopped", flush=True)

    asyncio.run(main())
    return 0


# --------------------------------------------------------------------------- the traffic driver


@dataclass
class DriveReport:
    planned: int
    answered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    trace_ids: list[str] = field(default_factory=list)
    feedback_sent: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    duration_s: float = 0.0
    backends: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        lat = sorted(self.latencies_ms) or [0.0]
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        return (
            f"{self.answered} of {self.planned} chat requests answered in {self.duration_s:.1f}s "
            f"({self.answered / max(self.duration_s, 1e-9):.1f}/s), {self.feedback_sent} feedback, "
            f"errors {self.errors or 0}; latency p50 {statistics.median(lat):.0f} ms p99 {p99:.0f} ms; "
            f"by chatbot {self.backends}"
        )


def _post_json(url: str, body: dict[str, Any], timeout_s: float = 30.0) -> tuple[dict[str, Any], str]:
    req = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(req, timeout=timeout_s) as resp:
        return dict(json.loads(resp.read() or b"{}")), str(resp.headers.get("X-Stack-Backend", "?"))


def drive(
    url: str,
    requests: int,
    rate_per_s: float,
    max_seconds: float,
    seed: int = 23,
    workers: int = 16,
    feedback_rate: float = 0.1,
) -> DriveReport:
    """``requests`` MangaAssist chats (``orchestrator/tools/scenarios.py``, with their feedback) to
    ``url`` at about ``rate_per_s``, a few in flight at once; stops sending after ``max_seconds``."""
    from orchestrator.tools.scenarios import plan_chats

    plans = plan_chats(requests, seed=seed, feedback_rate=feedback_rate)
    report = DriveReport(planned=len(plans))
    lock = threading.Lock()

    def one(plan: Any) -> None:
        t0 = time.perf_counter()
        try:
            resp, backend = _post_json(url + "/v1/chat", plan.body)
        except urllib.error.HTTPError as exc:
            with lock:
                report.errors[str(exc.code)] = report.errors.get(str(exc.code), 0) + 1
            return
        except OSError as exc:
            with lock:
                report.errors[type(exc).__name__] = report.errors.get(type(exc).__name__, 0) + 1
            return
        with lock:
            report.latencies_ms.append((time.perf_counter() - t0) * 1000)
            report.answered += 1
            report.trace_ids.append(str(resp["trace_id"]))
            report.backends[backend] = report.backends.get(backend, 0) + 1
        if plan.feedback:
            fb = {
                "response_id": resp["response_id"],
                "trace_id": resp["trace_id"],
                "session_id": plan.body["session_id"],
                "feedback": plan.feedback,
                "reason_code": "wrong_recommendation" if plan.feedback == "thumbs_down" else "helpful",
            }
            with contextlib.suppress(OSError):
                _post_json(url + "/v1/feedback", fb)
                with lock:
                    report.feedback_sent += 1

    started = time.monotonic()
    interval = 1.0 / rate_per_s
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for i, plan in enumerate(plans):
            at = started + i * interval
            if at - started > max_seconds:
                report.errors["not_sent_time_bound"] = len(plans) - i
                break
            delay = at - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the load
            pool.submit(one, plan)
    report.duration_s = time.monotonic() - started
    return report


# --------------------------------------------------------------------------- up


@dataclass
class UpOptions:
    workdir: Path
    pg_dsn: str = DEFAULT_PG_DSN
    database: str = "mangaassist_stack"
    mlflow_replicas: int = 1
    traffic: int = 300
    traffic_rate: float = 5.0
    traffic_max_s: float = 300.0
    fresh: bool = False
    scrape_interval_s: float = 2.0
    timeout_s: float = 120.0


def _pg_connect(dsn: str) -> Any:
    import psycopg2

    return psycopg2.connect(dsn, connect_timeout=5)


def _ensure_database(dsn: str, name: str, fresh: bool) -> str:
    if not name.replace("_", "").isalnum():
        raise StackError(f"--database must be letters, digits and underscores, got {name!r}")
    try:
        conn = _pg_connect(dsn)
    except Exception as exc:
        raise StackError(
            f"PostgreSQL is not reachable at {dsn} ({str(exc).strip()}); the stack needs the machine's PostgreSQL "
            "on 127.0.0.1:5432 (trust auth, user postgres) or --pg-dsn"
        ) from None
    conn.autocommit = True
    with conn.cursor() as cur:
        if fresh:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
        if cur.fetchone() is None:
            cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = dsn.rsplit("/", 1)[0]
    return f"{base}/{name}"


def _secret(workdir: Path, name: str) -> Path:
    path = workdir / "secrets" / f"{name}.password"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.parent.chmod(0o700)
        path.write_text(f"{name}-{secrets.token_hex(12)}\n")
        path.chmod(0o600)
    return path


def _bin(name: str) -> str:
    return shutil.which(name, path=str(Path(sys.executable).parent)) or name


def _base_env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for key in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "AWS_PROFILE"):
        env.pop(key, None)
    return env


@contextlib.contextmanager
def _as_admin(url: str, password: str) -> Iterator[None]:
    keys = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_HTTP_REQUEST_MAX_RETRIES")
    before = {k: os.environ.get(k) for k in keys}
    os.environ.update(MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _s3_client(endpoint: str) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def up(opts: UpOptions, say: Callable[[str], None] = print) -> State:
    """Start the stack (see the module docstring); on any failure stop what was started and raise."""
    workdir = opts.workdir.resolve()
    previous = State.load(workdir)
    if previous is not None:
        alive = [p.name for p in previous.processes if p.alive()]
        if alive:
            raise StackError(f"a stack from {previous.path} is still running ({', '.join(alive)}): run `down` first")
        previous.path.unlink()
    if opts.fresh and workdir.exists():
        shutil.rmtree(workdir)
    if not PROMETHEUS_BIN.exists():
        raise StackError(f"Prometheus is missing: {PROMETHEUS_BIN} (`make setup` unpacks Debian's prometheus package)")
    workdir.mkdir(parents=True, exist_ok=True)
    state = State(workdir)
    state.info = {"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "database": opts.database}
    state.save()
    try:
        _up(state, opts, say)
    except BaseException:
        say("stack up failed; stopping what was started ...")
        stop_processes(state.processes, timeout_s=15, say=say)
        raise
    return state


def _up(state: State, opts: UpOptions, say: Callable[[str], None]) -> None:
    workdir = state.workdir
    t_start = time.monotonic()
    backend_uri = _ensure_database(opts.pg_dsn, opts.database, opts.fresh).replace(
        "postgresql://", "postgresql+psycopg2://", 1
    )
    say(f"PostgreSQL: database {opts.database} ({backend_uri})")
    admin_pw = _secret(workdir, "admin").read_text().strip()
    gateway_pw_file = _secret(workdir, GATEWAY_USER)
    base_env = _base_env()

    # S3: a moto server, and the bucket MLflow proxies artifacts to
    moto_port = _free_port()
    s3_url = f"http://127.0.0.1:{moto_port}"
    moto = state.spawn(
        "moto-s3", "moto", [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(moto_port)], base_env, workdir / "moto"
    )
    s3 = _s3_client(s3_url)
    wait_healthy("moto S3 server", lambda: s3.list_buckets() is not None, 30, moto)
    if BUCKET not in {b["Name"] for b in s3.list_buckets()["Buckets"]}:
        s3.create_bucket(Bucket=BUCKET)
    say(f"S3 (moto): {s3_url}, bucket {BUCKET}")

    # MLflow replicas: one PostgreSQL database, one auth database, artifacts proxied to S3
    auth_db = "sqlite:///" + str(workdir / "mlflow-auth.db")
    ini = workdir / "basic-auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = READ\n"
        f"database_uri = {auth_db}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    flask_key = _secret(workdir, "flask-secret-key").read_text().strip()
    mlflow_env = dict(
        base_env,
        **DUMMY_AWS,
        MLFLOW_S3_ENDPOINT_URL=s3_url,
        MLFLOW_AUTH_CONFIG_PATH=str(ini),
        MLFLOW_AUTH_ADMIN_PASSWORD=admin_pw,
        MLFLOW_FLASK_SERVER_SECRET_KEY=flask_key,
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",  # no huey job-runner processes
    )
    mlflow_urls: list[str] = []
    for i in range(opts.mlflow_replicas):
        port = _free_port()
        url = f"http://127.0.0.1:{port}"
        proc = state.spawn(
            f"mlflow-{i + 1}",
            "mlflow",
            [
                _bin("mlflow"),
                "server",
                "--app-name",
                "basic-auth",
                "--backend-store-uri",
                backend_uri,
                "--artifacts-destination",
                f"s3://{BUCKET}/artifacts",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            mlflow_env,
            workdir / f"mlflow-{i + 1}",
        )
        # one at a time: each runs the schema migrations of both databases at start
        took = wait_healthy(f"MLflow replica {i + 1}", _answers_200(url + "/health"), 150, proc)
        mlflow_urls.append(url)
        say(f"MLflow replica {i + 1}: {url} (healthy after {took:.1f}s)")
    state.info["mlflow_urls"] = mlflow_urls
    state.save()

    # the admin's side: the traffic experiment, the gateway user with EDIT on it, an S3 round trip
    experiment_id = _admin_setup(mlflow_urls[0], admin_pw, gateway_pw_file.read_text().strip(), s3, say)
    state.info.update(
        experiment=EXPERIMENT,
        experiment_id=experiment_id,
        admin_password_file=str(workdir / "secrets" / "admin.password"),
    )
    state.save()

    # gateways (split over the replicas) and their chatbots
    gateways: list[dict[str, Any]] = []
    chatbots: list[dict[str, Any]] = []
    for i in range(2):
        grpc_port, metrics_port, health_port = (_free_port() for _ in range(3))
        mlflow_url = mlflow_urls[i % len(mlflow_urls)]
        gw_dir = workdir / f"gateway-{i + 1}"
        env = dict(
            base_env,
            TRACEGW_LISTEN_ADDRESS=f"127.0.0.1:{grpc_port}",
            TRACEGW_METRICS_ADDRESS=f"127.0.0.1:{metrics_port}",
            TRACEGW_HEALTH_ADDRESS=f"127.0.0.1:{health_port}",
            MLFLOW_TRACKING_URI=mlflow_url,
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            TRACEGW_ALLOWED_EXPERIMENTS=EXPERIMENT,
            TRACEGW_MLFLOW_USERNAME=GATEWAY_USER,
            TRACEGW_MLFLOW_PASSWORD_FILE=str(gateway_pw_file),
            TRACEGW_SPOOL_DIR=str(gw_dir / "spool"),
            TRACEGW_SHUTDOWN_GRACE_S="15",
            MANGAASSIST_ENV="stack",
        )
        proc = state.spawn(f"gateway-{i + 1}", "gateway", [_bin("tracegw"), "serve"], env, gw_dir)
        gateways.append(
            {
                "name": proc.name,
                "grpc": f"127.0.0.1:{grpc_port}",
                "metrics": f"http://127.0.0.1:{metrics_port}/metrics",
                "health": f"http://127.0.0.1:{health_port}/healthz",
                "mlflow": mlflow_url,
                "spool": str(gw_dir / "spool"),
                "proc": proc,
            }
        )
    for gw in gateways:
        took = wait_healthy(gw["name"], _answers_200(gw["health"]), 60, gw["proc"])
        say(f"{gw['name']}: gRPC {gw['grpc']}, {gw['metrics']} -> MLflow {gw['mlflow']} (healthy after {took:.1f}s)")
    ui = mlflow_urls[0]
    for i, gw in enumerate(gateways):
        api_port = _free_port()
        env = dict(
            base_env,
            MANGAASSIST_HOST="127.0.0.1",
            MANGAASSIST_PORT=str(api_port),
            MANGAASSIST_ENV="stack",
            MANGAASSIST_DEPLOYMENT_STAGE="prod",
            MANGAASSIST_SHUTDOWN_GRACE_S="5",
            TRACEGW_CLIENT_TARGET=gw["grpc"],
            MLFLOW_EXPERIMENT_NAME=EXPERIMENT,
            MANGAASSIST_MLFLOW_UI_URL=ui,
            MANGAASSIST_MLFLOW_EXPERIMENT_ID=experiment_id,
        )
        proc = state.spawn(
            f"chatbot-{i + 1}", "chatbot", [_bin("mangaassist-orchestrator")], env, workdir / f"chatbot-{i + 1}"
        )
        chatbots.append({"name": proc.name, "url": f"http://127.0.0.1:{api_port}", "gateway": gw["name"], "proc": proc})
    for cb in chatbots:
        took = wait_healthy(cb["name"], _answers_200(cb["url"] + "/healthz"), 90, cb["proc"])
        say(f"{cb['name']}: {cb['url']}/ -> {cb['gateway']} (healthy after {took:.1f}s)")

    proxy_port = _free_port()
    proxy_url = f"http://127.0.0.1:{proxy_port}"
    backends = [c["url"].removeprefix("http://") for c in chatbots]
    proxy = state.spawn(
        "proxy",
        "proxy",
        [sys.executable, "-m", "orchestrator.tools.stack", "proxy", "--listen", f"127.0.0.1:{proxy_port}", *backends],
        base_env,
        workdir / "proxy",
    )
    wait_healthy("the proxy", lambda: _http_status(proxy_url + "/healthz") == 200, 30, proxy)
    say(f"proxy: {proxy_url}/ (round-robin, sticky by session) -> {', '.join(backends)}")

    # Prometheus: both gateways and both chatbots, the alert and rollout rules, exemplars
    prom_port = _free_port()
    prom_url = f"http://127.0.0.1:{prom_port}"
    prom_dir = workdir / "prometheus"
    prom_dir.mkdir(parents=True, exist_ok=True)
    gw_targets = [g["metrics"].removeprefix("http://").removesuffix("/metrics") for g in gateways]
    cb_targets = backends
    config = prom_dir / "prometheus.yml"
    config.write_text(
        f"global:\n  scrape_interval: {opts.scrape_interval_s:g}s\n  evaluation_interval: {opts.scrape_interval_s:g}s\n"
        "rule_files:\n" + "".join(f"  - {p}\n" for p in RULE_FILES) + "scrape_configs:\n"
        "  - job_name: tracegw\n    static_configs:\n"
        + "".join(
            f"      - targets: ['{t}']\n        labels: {{gateway: 'gateway-{n + 1}'}}\n"
            for n, t in enumerate(gw_targets)
        )
        + "  - job_name: mangaassist-chatbot\n    static_configs:\n"
        + "".join(
            f"      - targets: ['{t}']\n        labels: {{chatbot: 'chatbot-{n + 1}'}}\n"
            for n, t in enumerate(cb_targets)
        )
    )
    prom = state.spawn(
        "prometheus",
        "prometheus",
        [
            str(PROMETHEUS_BIN),
            f"--config.file={config}",
            f"--storage.tsdb.path={prom_dir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
            "--enable-feature=exemplar-storage",
        ],
        base_env,
        prom_dir,
    )
    wait_healthy("Prometheus", lambda: _http_status(prom_url + "/-/ready") == 200, 60, prom)
    wait_healthy(
        "Prometheus scraping every target (query `up`)",
        # this run's targets only: a kept TSDB still has the last run's (other ports) for a while
        lambda: all(prometheus_up(prom_url).get(t) == 1.0 for t in [*gw_targets, *cb_targets]),
        max(30.0, 6 * opts.scrape_interval_s),
        prom,
    )
    rules = prometheus_rule_groups(prom_url)
    say(f"Prometheus: {prom_url} (every target up; rule groups {', '.join(rules)})")

    state.info.update(
        s3=s3_url,
        bucket=BUCKET,
        prometheus=prom_url,
        proxy=proxy_url,
        gateways=[{k: v for k, v in g.items() if k != "proc"} for g in gateways],
        chatbots=[{k: v for k, v in c.items() if k != "proc"} for c in chatbots],
        up_seconds=round(time.monotonic() - t_start, 1),
    )
    state.save()
    if opts.traffic > 0:
        state.spawn(
            "traffic-driver",
            "driver",
            [
                sys.executable,
                "-m",
                "orchestrator.tools.stack",
                "drive",
                "--url",
                proxy_url,
                "--requests",
                str(opts.traffic),
                "--rate",
                str(opts.traffic_rate),
                "--max-seconds",
                str(opts.traffic_max_s),
            ],
            base_env,
            workdir / "driver",
        )
        say(
            f"traffic driver: {opts.traffic} chats at {opts.traffic_rate:g}/s through the proxy "
            f"(at most {opts.traffic_max_s:.0f}s)"
        )


def _admin_setup(url: str, admin_pw: str, gateway_pw: str, s3: Any, say: Callable[[str], None]) -> str:
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        import mlflow

    from orchestrator.release import rights

    with _as_admin(url, admin_pw):
        client = mlflow.MlflowClient(tracking_uri=url)

        def ensure(name: str) -> str:
            exp = client.get_experiment_by_name(name)
            return str(exp.experiment_id) if exp is not None else str(client.create_experiment(name))

        try:
            experiment_id = ensure(EXPERIMENT)
            report = rights.grant(url, "gateway", GATEWAY_USER, gateway_pw, [], EXPERIMENT, ensure)
            admin = rights.admin_client(url)
            admin.update_user_password(GATEWAY_USER, gateway_pw)  # a workdir made anew keeps the database's users
            # the artifact path: a run's text artifact goes through the server to the S3 bucket
            run = client.create_run(experiment_id, run_name="stack-artifact-check")
            client.log_text(run.info.run_id, "the stack's S3 artifact check\n", "stack-check.txt")
            with contextlib.redirect_stdout(io.StringIO()):  # MLflow prints the run's URL
                client.set_terminated(run.info.run_id)
        except Exception as exc:
            raise StackError(f"MLflow admin setup on {url} failed: {exc}") from None
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    if not any(k.endswith(f"{run.info.run_id}/artifacts/stack-check.txt") for k in keys):
        raise StackError(f"MLflow artifacts did not reach the S3 bucket {BUCKET} (objects: {keys[:5]})")
    say(
        f"MLflow: experiment {EXPERIMENT} (id {experiment_id}); user {GATEWAY_USER}: "
        f"{', '.join(report.granted)}; artifacts land in s3://{BUCKET}/artifacts"
    )
    return experiment_id


def prometheus_up(prom_url: str) -> dict[str, float]:
    """``up`` per scrape target (``instance``) from the Prometheus HTTP API."""
    q = urllib.parse.quote("up")
    with urllib.request.urlopen(f"{prom_url}/api/v1/query?query={q}", timeout=5) as resp:
        doc = json.loads(resp.read())
    return {r["metric"]["instance"]: float(r["value"][1]) for r in doc["data"]["result"]}


def prometheus_rule_groups(prom_url: str) -> list[str]:
    with urllib.request.urlopen(f"{prom_url}/api/v1/rules", timeout=5) as resp:
        doc = json.loads(resp.read())
    return [g["name"] for g in doc["data"]["groups"]]


def how_to_open(state: State) -> str:
    info = state.info
    exp = info.get("experiment_id", "")
    lines = ["", "How to open each part:"]
    for n, url in enumerate(info.get("mlflow_urls", []), 1):
        lines.append(f"  MLflow UI (replica {n}): {url}/#/experiments/{exp}/traces")
    if info.get("mlflow_urls"):
        lines.append(f"    user admin, password: cat {info.get('admin_password_file')}")
    if info.get("prometheus"):
        p = info["prometheus"]
        lines.append(f"  Prometheus:    {p}/targets   alerts {p}/alerts   e.g. {p}/graph?g0.expr=up")
    if info.get("proxy"):
        lines.append(f"  Chat page via the proxy: {info['proxy']}/   (counts: {info['proxy']}/proxy/status)")
    for cb in info.get("chatbots", []):
        lines.append(f"  Chat page on {cb['name']}: {cb['url']}/   (-> {cb['gateway']})")
    for gw in info.get("gateways", []):
        lines.append(f"  {gw['name']} metrics: {gw['metrics']}   (spool {gw['spool']})")
    if info.get("s3"):
        lines.append(f"  S3 (moto): {info['s3']}  bucket {info.get('bucket')}  (AWS keys: testing/testing)")
    lines.append(f"  logs: {state.workdir / 'logs'}/   state: {state.path}")
    where = "" if state.workdir == (REPO / ".stack") else f" --workdir {state.workdir}"
    lines.append(f"Stop it with: make stack-down   (.venv/bin/python -m orchestrator.tools.stack down{where})")
    return "\n".join(lines)


# --------------------------------------------------------------------------- down, status


def down(workdir: Path, say: Callable[[str], None] = print, timeout_s: float = 30.0) -> int:
    state = State.load(workdir.resolve())
    if state is None:
        say(f"no stack state in {workdir.resolve() / 'state.json'}: nothing to stop")
        return 0
    killed = stop_processes(state.processes, timeout_s=timeout_s, say=say)
    left = [p.name for p in state.processes if p.alive()]
    if left:
        say(f"still alive after SIGKILL: {', '.join(left)} (state kept in {state.path})")
        return 1
    stopped = state.path.with_name("state.stopped.json")
    state.path.replace(stopped)
    say(
        f"stopped {len(state.processes)} processes{f' ({len(killed)} killed)' if killed else ''}; "
        f"state moved to {stopped.name}; data kept in {state.workdir} and database {state.info.get('database')}"
    )
    return 0


def status(workdir: Path) -> int:
    state = State.load(workdir.resolve())
    if state is None:
        print(f"no stack running from {workdir.resolve()} (no state.json)")
        return 1
    for p in state.processes:
        print(f"  {p.name:<16} pid {p.pid:<8} {'alive' if p.alive() else 'gone '}  log {p.log}")
    print(how_to_open(state))
    return 0 if all(p.alive() for p in state.processes if p.tier != "driver") else 1


# --------------------------------------------------------------------------- rehearse


def _stored_trace_ids(dsn: str, database: str, experiment_id: str) -> set[str]:
    conn = _pg_connect(dsn.rsplit("/", 1)[0] + "/" + database)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT request_id FROM trace_info WHERE experiment_id = %s", (int(experiment_id),))
            return {str(r[0]).removeprefix("tr-") for r in cur.fetchall()}
    finally:
        conn.close()


def rehearse(args: argparse.Namespace) -> int:
    workdir = Path(args.workdir).resolve()
    opts = UpOptions(
        workdir=workdir,
        pg_dsn=args.pg_dsn,
        database=args.database,
        mlflow_replicas=args.mlflow_replicas,
        traffic=0,
        fresh=True,
    )
    print(f"[1/4] a fresh stack with {opts.mlflow_replicas} MLflow replicas on database {opts.database} ...")
    state = up(opts)
    result: dict[str, Any] = {}
    try:
        proxy = state.info["proxy"]
        print(f"[2/4] {args.requests} chats at {args.rate:g}/s through the proxy (at most {args.max_seconds:.0f}s) ...")
        report = drive(proxy, args.requests, args.rate, args.max_seconds, feedback_rate=args.feedback_rate)
        print("      " + report.summary())
        sent = set(report.trace_ids)
        print(f"[3/4] waiting (at most {args.wait_s:.0f}s) for their traces in MLflow (PostgreSQL trace_info) ...")
        t0 = time.monotonic()
        found: set[str] = set()
        while time.monotonic() - t0 < args.wait_s:
            found = sent & _stored_trace_ids(opts.pg_dsn, opts.database, state.info["experiment_id"])
            if found == sent:
                break
            time.sleep(1.0)
        landed_s = time.monotonic() - t0
        searched = _search_count(state, sent)
        gateways = []
        for gw in state.info["gateways"]:
            m = scrape(gw["metrics"])
            dropped = {
                k.split("reason=")[1].split('"')[1]: v
                for k, v in m.items()
                if k.startswith("tracegw_spans_dropped_total{") and v and "reason=" in k
            }
            gateways.append(
                {
                    "name": gw["name"],
                    "mlflow": gw["mlflow"],
                    "spans_received": _sum(m, "tracegw_spans_received_total"),
                    "spans_written": _sum(m, "tracegw_spans_written_total"),
                    "traces_written": _sum(m, "tracegw_traces_written_total"),
                    "spans_dropped": dropped,
                    "write_retries": _sum(m, "tracegw_write_retries_total"),
                    "spool_segments": _sum(m, "tracegw_spool_segments"),
                    "circuit_state": _sum(m, "tracegw_circuit_state"),
                    "write_auth_failures": _sum(m, "tracegw_write_auth_failures_total"),
                    "feedback_received": _sum(m, 'tracegw_events_received_total{kind="feedback"}'),
                    "feedback_written": _sum(m, 'tracegw_events_written_total{kind="feedback"}'),
                }
            )
        missing = len(sent) - len(found)
        result = {
            "requests_planned": args.requests,
            "rate_per_s": args.rate,
            "feedback_rate": args.feedback_rate,
            "mlflow_replicas": opts.mlflow_replicas,
            "answered": report.answered,
            "http_errors": report.errors,
            "feedback_sent": report.feedback_sent,
            "drive_seconds": round(report.duration_s, 1),
            "by_chatbot": report.backends,
            "latency_p50_ms": round(statistics.median(report.latencies_ms or [0.0]), 1),
            "traces_sent": len(sent),
            "traces_in_postgres": len(found),
            "traces_via_search_traces": searched,
            "traces_missing": missing,
            "loss_ratio": round(missing / max(1, len(sent)), 6),
            "all_landed": missing == 0,
            "waited_s": round(landed_s, 1),
            "wait_bound_s": args.wait_s,
            "stored_traces_per_s": round(len(found) / max(1e-9, report.duration_s + landed_s), 2),
            "gateways": gateways,
            "stack_up_seconds": state.info.get("up_seconds"),
        }
        (workdir / "rehearsal.json").write_text(json.dumps(result, indent=2) + "\n")
        print("[4/4] delivery:")
        print(
            f"      traces sent (answered by a chatbot) {len(sent)}, in PostgreSQL {len(found)}, via search_traces "
            f"(basic-auth, replica {len(state.info['mlflow_urls'])}) {searched}; missing {missing} "
            f"(loss {100 * missing / max(1, len(sent)):.3f}%) "
            + (
                f"- all landed {landed_s:.1f}s after the last request"
                if missing == 0
                else f"after the whole {landed_s:.0f}s wait (the rest still in the gateways' spools)"
            )
        )
        print(f"      stored {result['stored_traces_per_s']:.1f} traces/s from the first request to the last check")
        for g in gateways:
            print(
                f"      {g['name']} -> {g['mlflow']}: spans received {g['spans_received']:.0f}, written "
                f"{g['spans_written']:.0f}, traces written {g['traces_written']:.0f}, "
                f"dropped {g['spans_dropped'] or 0}, retries {g['write_retries']:.0f}, spool segments "
                f"{g['spool_segments']:.0f}, circuit {g['circuit_state']:.0f}, 401/403 {g['write_auth_failures']:.0f}, "
                f"feedback {g['feedback_written']:.0f}/{g['feedback_received']:.0f} written"
            )
        print(f"      (written to {workdir / 'rehearsal.json'})")
    finally:
        if not args.keep:
            print("stopping the stack ...")
            down(workdir)
        else:
            print(how_to_open(state))
    return 0 if result and result["traces_missing"] == 0 and not report.errors else 1


def _search_count(state: State, sent: set[str]) -> int:
    """How many of ``sent`` MLflow's ``search_traces`` finds, as admin through the last replica."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="starlette.middleware.wsgi is deprecated")
        import mlflow

    url = state.info["mlflow_urls"][-1]
    admin_pw = Path(state.info["admin_password_file"]).read_text().strip()
    with _as_admin(url, admin_pw):
        client = mlflow.MlflowClient(tracking_uri=url)
        ids: set[str] = set()
        token = None
        while True:
            page = client.search_traces(
                locations=[state.info["experiment_id"]], max_results=500, page_token=token, include_spans=False
            )
            ids.update(t.info.trace_id.removeprefix("tr-") for t in page)
            token = page.token
            if not token:
                break
    return len(ids & sent)


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.tools.stack",
        description=doc.split("\n\n")[0],
        epilog="\n\n".join(doc.split("\n\n")[1:]),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{up,down,status,rehearse}")

    def common(p: argparse.ArgumentParser, workdir: str = ".stack") -> None:
        p.add_argument("--workdir", default=workdir, help="state, logs, spools, secrets (default %(default)s)")

    def stack_args(p: argparse.ArgumentParser, database: str) -> None:
        p.add_argument(
            "--pg-dsn", default=DEFAULT_PG_DSN, help="PostgreSQL to create the database on (default %(default)s)"
        )
        p.add_argument(
            "--database", default=database, help="the MLflow database, created if missing (default %(default)s)"
        )
        p.add_argument(
            "--mlflow-replicas", type=int, default=1, help="MLflow servers on that database (default %(default)s)"
        )

    p_up = sub.add_parser("up", help="start the stack, wait until each part is healthy, print how to open it")
    common(p_up)
    stack_args(p_up, "mangaassist_stack")
    p_up.add_argument(
        "--traffic",
        type=int,
        default=300,
        help="chats the driver sends through the proxy; 0: none (default %(default)s)",
    )
    p_up.add_argument(
        "--traffic-rate", type=float, default=5.0, help="the driver's requests per second (default %(default)s)"
    )
    p_up.add_argument(
        "--traffic-max-seconds",
        type=float,
        default=300.0,
        help="the driver stops after this long (default %(default)s)",
    )
    p_up.add_argument("--fresh", action="store_true", help="drop the database and the workdir first")
    p_up.add_argument(
        "--scrape-interval", type=float, default=2.0, help="Prometheus scrape interval, s (default %(default)s)"
    )

    p_down = sub.add_parser("down", help="stop exactly the processes in <workdir>/state.json (SIGTERM, wait, SIGKILL)")
    common(p_down)
    p_down.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per tier before SIGKILL (default %(default)s)"
    )

    p_status = sub.add_parser("status", help="which of the stack's processes are alive, and where to open each part")
    common(p_status)

    p_reh = sub.add_parser("rehearse", help="scale-out rehearsal: 2 MLflow replicas, N chats, delivery and loss")
    common(p_reh, ".stack-rehearsal")
    stack_args(p_reh, "mangaassist_stack_rehearsal")
    p_reh.set_defaults(mlflow_replicas=2)
    p_reh.add_argument("--requests", type=int, default=2000, help="chats to send (default %(default)s)")
    p_reh.add_argument("--rate", type=float, default=25.0, help="requests per second (default %(default)s)")
    p_reh.add_argument(
        "--max-seconds", type=float, default=240.0, help="stop sending after this long (default %(default)s)"
    )
    p_reh.add_argument(
        "--wait-s", type=float, default=300.0, help="wait at most this long for the traces (default %(default)s)"
    )
    p_reh.add_argument(
        "--feedback-rate", type=float, default=0.1, help="share of chats followed by feedback (default %(default)s)"
    )
    p_reh.add_argument("--keep", action="store_true", help="leave the stack running afterwards")

    p_proxy = sub.add_parser("proxy", help=argparse.SUPPRESS)
    p_proxy.add_argument("--listen", required=True)
    p_proxy.add_argument("backends", nargs="+")

    p_drive = sub.add_parser("drive", help=argparse.SUPPRESS)
    p_drive.add_argument("--url", required=True)
    p_drive.add_argument("--requests", type=int, default=300)
    p_drive.add_argument("--rate", type=float, default=5.0)
    p_drive.add_argument("--max-seconds", type=float, default=300.0)

    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            if args.mlflow_replicas < 1 or args.traffic < 0 or args.traffic_rate <= 0:
                parser.error("--mlflow-replicas must be >= 1, --traffic >= 0, --traffic-rate > 0")
            state = up(
                UpOptions(
                    workdir=Path(args.workdir),
                    pg_dsn=args.pg_dsn,
                    database=args.database,
                    mlflow_replicas=args.mlflow_replicas,
                    traffic=args.traffic,
                    traffic_rate=args.traffic_rate,
                    traffic_max_s=args.traffic_max_seconds,
                    fresh=args.fresh,
                    scrape_interval_s=args.scrape_interval,
                )
            )
            print(f"\nstack up in {state.info.get('up_seconds')}s (state {state.path})")
            print(how_to_open(state))
            return 0
        if args.command == "down":
            return down(Path(args.workdir), timeout_s=args.timeout)
        if args.command == "status":
            return status(Path(args.workdir))
        if args.command == "rehearse":
            if args.requests <= 0 or args.rate <= 0:
                parser.error("--requests and --rate must be positive")
            return rehearse(args)
        if args.command == "proxy":
            return run_proxy(args.listen, args.backends)
        if args.command == "drive":
            report = drive(args.url, args.requests, args.rate, args.max_seconds)
            print(report.summary(), flush=True)
            return 0
    except StackError as exc:
        print(f"stack {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2


if __name__ == "__main__":
    sys.exit(main())
