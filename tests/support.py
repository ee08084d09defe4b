"""Test helpers shared by the suites: free ports, polling with a deadline, real MLflow servers."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

PG_DSN = os.environ.get("TRACEGW_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(check: Callable[[], T], timeout_s: float = 20.0, interval_s: float = 0.05, what: str = "condition") -> T:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after the deadline."""
    deadline = time.monotonic() + timeout_s
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what} (last value: {last!r})")


def stop_process_group(proc: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM a server started with ``start_new_session=True`` and its children; SIGKILL after 15 s."""
    if proc is None or proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


class MlflowServer:
    """A real ``mlflow server`` subprocess on a free loopback port (one worker, see DESIGN §4).

    ``admin_password`` starts it with ``--app-name basic-auth`` (``mlflow[auth]``): an auth store
    in ``workdir``, ``default_permission = READ`` and the admin user ``admin`` with that password;
    every request then needs credentials (``MLFLOW_TRACKING_USERNAME``/``PASSWORD``)."""

    def __init__(self, backend_uri: str, workdir: Path, admin_password: str | None = None) -> None:
        self.backend_uri = backend_uri
        self.workdir = workdir
        self.admin_password = admin_password
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"mlflow-server-{self.port}.log"

    def start(self, timeout_s: float = 90.0) -> MlflowServer:
        mlflow_bin = shutil.which("mlflow", path=str(Path(sys.executable).parent)) or "mlflow"
        artifacts = self.workdir / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        # No huey job-runner processes: tests do not use MLflow's background jobs, and on a
        # 2-core machine those workers compete with the server for CPU.
        env = dict(os.environ, MLFLOW_TRACKING_URI="", PYTHONUNBUFFERED="1", MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
        auth_args: list[str] = []
        if self.admin_password is not None:
            ini = self.workdir / f"basic-auth-{self.port}.ini"
            auth_db = (self.workdir / f"basic-auth-{self.port}.db").as_uri().replace("file:", "sqlite:", 1)
            ini.write_text(
                "[mlflow]\ndefault_permission = READ\n"
                f"database_uri = {auth_db}\nadmin_username = admin\n"
                "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            )
            env.update(
                MLFLOW_AUTH_CONFIG_PATH=str(ini),
                MLFLOW_AUTH_ADMIN_PASSWORD=self.admin_password,
                MLFLOW_FLASK_SERVER_SECRET_KEY=secrets.token_hex(16),  # CSRF key the auth app requires
            )
            auth_args = ["--app-name", "basic-auth"]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    mlflow_bin,
                    "server",
                    "--backend-store-uri",
                    self.backend_uri,
                    "--default-artifact-root",
                    artifacts.as_uri(),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    "--workers",
                    "1",
                    *auth_args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=self.workdir,
                start_new_session=True,
            )
        try:
            wait_for(self._healthy, timeout_s=timeout_s, interval_s=0.25, what=f"mlflow server on {self.url}")
        except AssertionError:
            self.stop()
            raise AssertionError(f"mlflow server did not start; log:\n{self.log_path.read_text()[-3000:]}") from None
        return self

    def _healthy(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"mlflow server exited: {self.log_path.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(self.url + "/health", timeout=1) as resp:
                return bool(resp.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self) -> None:
        stop_process_group(self.proc)


def create_pg_database(name: str) -> str:
    """Create a fresh PostgreSQL database and return its SQLAlchemy URI."""
    import psycopg2

    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
        cur.execute(f'CREATE DATABASE "{name}"')
    conn.close()
    base = PG_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg2://", 1)
    return f"{base}/{name}"


def drop_pg_database(name: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_DSN)
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    conn.close()


PROMETHEUS_BIN = Path(__file__).resolve().parents[1] / ".tools" / "prometheus" / "usr" / "bin" / "prometheus"


class PrometheusServer:
    """A real Prometheus (Debian's package, unpacked by ``make setup``) on a free loopback port,
    scraping ``targets`` (``host:port``) every second, exemplar storage on."""

    def __init__(self, targets: list[str], workdir: Path, rule_files: list[Path] | None = None) -> None:
        assert PROMETHEUS_BIN.exists(), f"{PROMETHEUS_BIN} is missing: `make setup` unpacks Debian's prometheus package"
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"prometheus-{self.port}.yml"
        rules = "".join(f"  - {p}\n" for p in rule_files or [])
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + "scrape_configs:\n  - job_name: tracegw\n    static_configs:\n"
            + f"      - targets: [{', '.join(repr(t) for t in targets)}]\n"
        )
        self.log_path = workdir / f"prometheus-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> PrometheusServer:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(PROMETHEUS_BIN),
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.workdir / f'tsdb-{self.port}'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--enable-feature=exemplar-storage",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        def ready() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as resp:
                    return bool(resp.status == 200)
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                return False

        wait_for(ready, timeout_s=timeout_s, interval_s=0.2, what=f"prometheus on {self.url}")
        return self

    def stop(self) -> None:
        stop_process_group(self.proc)
