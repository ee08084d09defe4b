"""The sidecar process: gRPC server (native service, OTLP, health, reflection), Prometheus
``/metrics``, and graceful shutdown.

``create_server(address, gateway)`` binds and starts the gRPC server and returns it with its
port (port 0 picks a free one, as tests do). ``serve(config)`` runs the whole sidecar until
SIGTERM or SIGINT, then drains: health goes NOT_SERVING, new RPCs are refused, in-flight RPCs
finish, assembly and batches are flushed and delivered within ``TRACEGW_SHUTDOWN_GRACE_S``,
and the process exits 0. ``ThreadedGateway`` runs the same thing on a background event loop,
for tests and benchmarks.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from prometheus_client import CollectorRegistry

from clients.pb import trace_gateway_service_pb2
from gateway.config import AuthConfig, Config
from gateway.core import Gateway
from gateway.export.errors import TraceWriter
from gateway.export.mlflow_http import HttpMlflowWriter
from gateway.gc_policy import tune_process
from gateway.metrics import GatewayMetrics
from gateway.metrics_http import HttpLimits, MetricsHttpServer
from gateway.receive import servicers

log = logging.getLogger(__name__)

NATIVE_SERVICE = trace_gateway_service_pb2.DESCRIPTOR.services_by_name["TraceGatewayService"].full_name
OTLP_SERVICE = trace_service_pb2.DESCRIPTOR.services_by_name["TraceService"].full_name
RPC_GRACE_S = 2.0


def make_writer(
    tracking_uri: str, timeout_s: float, artifact_root: str, username: str = "", password_file: str = ""
) -> TraceWriter:
    """The writer for ``tracking_uri``: HTTP for a server (with the gateway's own basic-auth
    credentials when given), in-process for ``sqlite:///``."""
    if tracking_uri.startswith("sqlite:"):
        from gateway.export.mlflow_embedded import EmbeddedMlflowWriter  # imports mlflow: only when used

        return EmbeddedMlflowWriter(tracking_uri, artifact_root)
    return HttpMlflowWriter(tracking_uri, timeout_s, username, password_file)


async def create_server(
    address: str, gateway: Gateway, max_receive_message_bytes: int, health: HealthServicer
) -> tuple[grpc.aio.Server, int]:
    # Bytes in flight are bounded before they are allocated: gRPC refuses a message over
    # max_receive_message_length from its length prefix, and an RPC beyond maximum_concurrent_rpcs
    # with RESOURCE_EXHAUSTED, so at most (concurrency x message size) request bytes are held.
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_receive_message_bytes),
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=gateway.config.limits.max_concurrent_rpcs,
    )
    servicers.register(server, gateway)
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    auth = gateway.config.auth
    if auth.reflection:  # off by default: it tells anyone who connects what the gateway serves
        reflection.enable_server_reflection(
            (
                NATIVE_SERVICE,
                OTLP_SERVICE,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
    port = server.add_secure_port(address, server_credentials(auth)) if auth.tls else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"cannot listen on {address}")
    await server.start()
    for service in ("", NATIVE_SERVICE, OTLP_SERVICE):
        await health.set(service, health_pb2.HealthCheckResponse.SERVING)
    return server, port


class _CertificateFiles:
    """The listener's certificate, key and client CA, re-read when a file changes: gRPC asks
    on each new connection, so a rotated certificate is served without a restart."""

    def __init__(self, auth: AuthConfig) -> None:
        self._paths = [p for p in (auth.tls_cert_file, auth.tls_key_file, auth.tls_client_ca_file) if p]
        self._auth = auth
        self._stamp = self._stat()

    def _stat(self) -> tuple[int, ...]:
        return tuple(os.stat(p).st_mtime_ns for p in self._paths)

    def configuration(self) -> Any:
        a = self._auth
        with open(a.tls_key_file, "rb") as k, open(a.tls_cert_file, "rb") as c:
            pair = (k.read(), c.read())
        ca = None
        if a.tls_client_ca_file:
            with open(a.tls_client_ca_file, "rb") as f:
                ca = f.read()
        return grpc.ssl_server_certificate_configuration([pair], root_certificates=ca)

    def fetch(self) -> Any:
        """A new configuration when a file changed since the last one, else None (keep it)."""
        try:
            stamp = self._stat()
            if stamp == self._stamp:
                return None
            config = self.configuration()
        except (OSError, ValueError) as exc:
            log.warning("TLS files changed but cannot be read (%s); keeping the previous certificate", exc)
            return None
        self._stamp = stamp
        log.info("TLS certificate re-read")
        return config


def server_credentials(auth: AuthConfig) -> grpc.ServerCredentials:
    files = _CertificateFiles(auth)
    return grpc.dynamic_ssl_server_credentials(
        files.configuration(), files.fetch, require_client_authentication=bool(auth.tls_client_ca_file)
    )


@dataclass
class Running:
    """A started sidecar: its ports and the handles needed to stop it."""

    config: Config
    gateway: Gateway
    metrics: GatewayMetrics
    grpc_port: int
    metrics_port: int | None
    _server: grpc.aio.Server
    _health: HealthServicer
    _http: list[MetricsHttpServer] = field(default_factory=list)
    health_port: int | None = None
    _health_grpc: grpc.aio.Server | None = None
    health_grpc_port: int | None = None
    _stopped: bool = field(default=False)

    async def stop(self, timeout_s: float | None = None) -> None:
        if self._stopped:
            return
        self._stopped = True
        budget = self.config.shutdown_grace_s if timeout_s is None else timeout_s
        log.info("shutting down: draining for up to %.1fs", budget)
        await self._health.enter_graceful_shutdown()
        await self.gateway.shutdown_receiving()
        await self._server.stop(min(RPC_GRACE_S, budget / 4))
        await self.gateway.shutdown(budget)
        if self._health_grpc is not None:
            await self._health_grpc.stop(0)
        for httpd in self._http:
            await httpd.close()
        log.info("stopped")


async def start(
    config: Config, writer: TraceWriter | None = None, registry: CollectorRegistry | None = None
) -> Running:
    registry = registry or CollectorRegistry()
    metrics = GatewayMetrics(registry)
    m = config.mlflow
    writer = writer or make_writer(m.tracking_uri, m.request_timeout_s, m.artifact_root, m.username, m.password_file)
    gateway = Gateway(config, metrics, writer)
    await gateway.start()  # replays the WAL and the spool first
    # The span port before the health port: /healthz must not say ready (a pod's startup probe)
    # before the sidecar accepts spans.
    health = HealthServicer()
    server, grpc_port = await create_server(
        config.listen.grpc_address, gateway, config.listen.max_receive_message_bytes, health
    )
    listen = config.listen
    limits = HttpLimits(listen.metrics_max_connections, listen.metrics_read_timeout_s, listen.metrics_write_timeout_s)
    http_servers: list[MetricsHttpServer] = []
    ports: dict[str, int | None] = {"metrics": None, "health": None}
    for role, address in (("metrics", listen.metrics_address), ("health", listen.health_address)):
        if not address:
            continue
        host, _, port = address.rpartition(":")
        httpd = MetricsHttpServer(
            registry,
            host.strip("[]"),
            int(port),
            metrics.metrics_http_refused,
            lambda: gateway.accepting,
            limits,
            serve_metrics=role == "metrics",
            serve_health=role == "health",
        )
        ports[role] = await httpd.start()
        http_servers.append(httpd)
    metrics_port = ports["metrics"]
    health_grpc, health_grpc_port = None, None
    if listen.health_grpc_address:  # bound after the span port: SERVING only once spans are accepted
        health_grpc = grpc.aio.server()
        health_pb2_grpc.add_HealthServicer_to_server(health, health_grpc)
        health_grpc_port = health_grpc.add_insecure_port(listen.health_grpc_address)
        if health_grpc_port == 0:
            raise OSError(f"cannot listen on {listen.health_grpc_address}")
        await health_grpc.start()
    log.info(
        "listening grpc=%s:%d metrics_port=%s tracking=%s mlflow_user=%s experiment=%s sampling_ratio=%s",
        config.listen.grpc_address.rpartition(":")[0],
        grpc_port,
        metrics_port,
        _safe_uri(config.mlflow.tracking_uri),
        config.mlflow.username or "-",
        config.mlflow.experiment_name,
        config.sampling.ratio,
    )
    return Running(
        config,
        gateway,
        metrics,
        grpc_port,
        metrics_port,
        server,
        health,
        http_servers,
        ports["health"],
        health_grpc,
        health_grpc_port,
    )


def _safe_uri(uri: str) -> str:
    """The tracking URI without credentials, for logs."""
    scheme, sep, rest = uri.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        rest = rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


async def serve(config: Config) -> int:
    """Run until SIGTERM/SIGINT, then drain and return the exit code."""
    running = await start(config)
    # This process is the sidecar: its collector runs on a clock once the start-up objects exist.
    tune_process(config.memory.gc_interval_s, running.metrics.gc_pause)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await running.stop()
    return 0


class ThreadedGateway:
    """A sidecar on its own event loop thread (tests, demo). ``stop()`` drains it."""

    def __init__(
        self, config: Config, writer: TraceWriter | None = None, registry: CollectorRegistry | None = None
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tracegw-loop", daemon=True)
        self._thread.start()
        self.running: Running = asyncio.run_coroutine_threadsafe(start(config, writer, registry), self._loop).result(
            timeout=60
        )

    @property
    def grpc_port(self) -> int:
        return self.running.grpc_port

    @property
    def target(self) -> str:
        host = self.running.config.listen.grpc_address.rpartition(":")[0]
        return f"{host}:{self.grpc_port}"

    @property
    def metrics(self) -> GatewayMetrics:
        return self.running.metrics

    def call(self, fn: Any) -> Any:
        """Run ``fn()`` on the gateway's loop thread and return its result."""

        async def _run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(_run(), self._loop).result(timeout=30)

    def stop(self, timeout_s: float | None = None) -> None:
        if not self._loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.running.stop(timeout_s), self._loop).result(timeout=120)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
