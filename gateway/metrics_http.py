"""The Prometheus port and the health port: a small HTTP/1.1 server on the gateway's event loop.

The sidecar runs two: ``/metrics`` only on ``TRACEGW_METRICS_ADDRESS``, and ``/healthz`` (200
while taking data, 503 while draining: readiness) and ``/livez`` (200 while the loop answers:
liveness) only on ``TRACEGW_HEALTH_ADDRESS``, for the kubelet's probes.

prometheus_client's ``start_http_server`` runs a thread per connection with neither a limit nor
a timeout: 300 half-sent scrapes took the sidecar to 5.9 GB and past its SIGTERM (issue 17).
This server costs a few kilobytes and no thread per connection, and refuses a storm instead
of serving it:

- it holds at most ``max_connections`` connections at once; one more is answered ``503`` with
  ``Retry-After: 1`` at once, without reading its request, and closed;
- a connection has ``read_timeout_s`` to send its request line and headers (``max_head_bytes``
  at most), then ``write_timeout_s`` to take the whole response; past either it is closed;
- a connection it answered (or refused with a status) is half-closed and its input discarded for
  ``LINGER_S`` at most before the socket closes, so the client reads the answer rather than a
  reset; the slot is already free by then, and at most ``MAX_LINGERING`` connections linger;
- ``GET``/``HEAD /metrics`` is the registry's exposition: OpenMetrics (exemplars carry
  ``trace_id``) when ``Accept`` names ``application/openmetrics-text``, else the Prometheus
  text format (``text/plain; version=0.0.4``, as prometheus_client answers such a request),
  gzipped when ``Accept-Encoding`` allows it; ``/healthz`` is ``200 ok`` while the gateway takes
  data and ``503 draining`` after; any other path is 404, any other method 405; every response
  ends the connection (``Connection: close``);
- the exposition is built off the loop (``asyncio.to_thread``), and scrapes that arrive while a
  build of the same format is in flight share it: a storm of N scrapes is not N builds;
- ``close()`` stops listening and aborts every open connection, half-open ones included.

A connection closed early is counted in ``tracegw_metrics_http_refused_total{reason}``
(``REFUSE_REASONS``) and logged once per reason every 10 s, without a traceback. A connection
that closes before sending a byte (a TCP probe) is not counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

from gateway.logs import RateLimitedLog

log = logging.getLogger(__name__)

# Why a connection was closed without the answer it asked for.
REFUSE_REASONS = (
    "connections",  # over max_connections: answered 503 + Retry-After: 1 at once, without reading
    "timeout",  # request line and headers not complete within read_timeout_s: 408
    "too_large",  # request line and headers over max_head_bytes: 431
    "bad_request",  # not an HTTP/1.x request, or the client closed mid-request: 400 where it can be sent
    "write_timeout",  # the client did not take the response within write_timeout_s: aborted
)
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
CLOSE_TIMEOUT_S = 1.0
LINGER_S = 0.25
MAX_LINGERING = 64
GZIP_LEVEL = 6


@dataclass(frozen=True)
class HttpLimits:
    """What one metrics port grants its clients (``TRACEGW_METRICS_*`` in gateway/config.py)."""

    max_connections: int = 8
    read_timeout_s: float = 5.0
    write_timeout_s: float = 10.0
    max_head_bytes: int = 8192


class _Refused(Exception):
    """Close the connection, counted under ``reason``, after a short answer if ``status``."""

    def __init__(self, reason: str, status: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class _Gone(Exception):
    """The client closed the connection before sending anything: nothing to count."""


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    headers: dict[str, str]


class MetricsHttpServer:
    """``await start()`` → bound port; ``await close()`` stops it (idempotent)."""

    def __init__(
        self,
        registry: Collector,
        host: str,
        port: int,
        refused: Counter,
        healthy: Callable[[], bool],
        limits: HttpLimits | None = None,
        *,
        serve_metrics: bool = True,
        serve_health: bool = True,
    ) -> None:
        self._paths = frozenset(
            (("/metrics",) if serve_metrics else ()) + (("/healthz", "/livez") if serve_health else ())
        )
        self._registry = registry
        self._host = host
        self._port = port
        self._refused = {reason: refused.labels(reason) for reason in REFUSE_REASONS}
        self._healthy = healthy
        self._limits = limits or HttpLimits()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._lingering: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}
        self._builds: dict[tuple[bool, bool], asyncio.Future[bytes]] = {}
        self._closing = False
        self._warn = RateLimitedLog(log, 10.0)

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def start(self) -> int:
        self._server = await asyncio.start_server(
            self._on_connection, self._host, self._port, limit=self._limits.max_head_bytes
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def close(self) -> None:
        """Stop listening, abort open connections, wait (briefly) for in-flight builds."""
        if self._closing:
            return
        self._closing = True
        if self._server is None:
            return
        self._server.close()
        tasks = [*self._connections, *self._lingering]
        for task, writer in [*self._connections.items(), *self._lingering.items()]:
            writer.transport.abort()
            task.cancel()
        pending = [*tasks, *self._builds.values()]
        if pending:
            await asyncio.wait(pending, timeout=CLOSE_TIMEOUT_S)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self._server.wait_closed()

    # -- one connection ---------------------------------------------------------------------

    async def _on_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        try:
            if self._closing or task is None:
                return
            # No write buffer in user space: drain() returns once everything is in the kernel's.
            writer.transport.set_write_buffer_limits(high=0)
            if len(self._connections) >= self._limits.max_connections:
                answered = self._refuse(writer, _Refused("connections", HTTPStatus.SERVICE_UNAVAILABLE))
            else:
                self._connections[task] = writer
                try:
                    answered = await self._serve(reader, writer)
                except _Refused as refusal:
                    answered = self._refuse(writer, refusal)
                finally:
                    self._connections.pop(task, None)  # the slot is free before the linger
            if answered:
                await self._linger(task, reader, writer)
        except (_Gone, ConnectionError, asyncio.CancelledError):
            # Gone, or close(): nothing awaits this task (and Python 3.11's streams log a cancelled one).
            pass
        except Exception:  # a bug here must cost one connection, not the loop
            self._warn.warning("unexpected", "metrics http: connection failed", exc_info=True)
        finally:
            writer.transport.abort()  # its buffer is empty by now: this only closes the socket

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        request = await self._read_request(reader)
        status, headers, body = await self._answer(request)
        head = _head(status, [*headers, ("Content-Length", str(len(body)))])
        try:
            async with asyncio.timeout(self._limits.write_timeout_s):
                writer.write(head)
                if request.method != "HEAD":
                    writer.write(body)
                await writer.drain()
        except TimeoutError:
            raise _Refused("write_timeout") from None
        return True

    def _refuse(self, writer: asyncio.StreamWriter, refusal: _Refused) -> bool:
        """Count and log a refusal; write its short answer, if it has one (True)."""
        self._refused[refusal.reason].inc()
        self._warn.warning(
            refusal.reason, "metrics http: closed a connection from %s (%s)", _peer(writer), refusal.reason
        )
        if refusal.status is None:
            return False
        extra = [("Retry-After", "1")] if refusal.reason == "connections" else []
        # A few bytes into an empty socket buffer: in the kernel at once, no waiting on the client.
        writer.write(_head(refusal.status, [*extra, ("Content-Length", "0")]))
        return True

    async def _linger(
        self, task: asyncio.Task[Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Half-close after an answer and discard what the client still sends, for ``LINGER_S`` at
        most: closing with unread input would reset the connection, and the client could lose the
        answer. At most ``MAX_LINGERING`` connections linger; beyond, they are closed at once."""
        if len(self._lingering) >= MAX_LINGERING or not writer.can_write_eof():
            return
        self._lingering[task] = writer
        try:
            async with asyncio.timeout(LINGER_S):
                await writer.drain()
                writer.write_eof()
                while await reader.read(4096):
                    pass
        except TimeoutError:
            pass
        finally:
            self._lingering.pop(task, None)

    async def _read_request(self, reader: asyncio.StreamReader) -> _Request:
        lines: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self._limits.read_timeout_s):
                while True:
                    try:
                        line = await reader.readline()
                    except ValueError:  # one line longer than the reader's limit
                        raise _Refused("too_large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE) from None
                    size += len(line)
                    if size > self._limits.max_head_bytes:
                        raise _Refused("too_large", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE)
                    if not line.endswith(b"\n"):  # end of stream before the head ended
                        if size == 0:
                            raise _Gone
                        raise _Refused("bad_request")
                    if line in (b"\r\n", b"\n"):
                        if lines:
                            break
                        continue  # empty lines before the request line are allowed (RFC 9112 §2.2)
                    lines.append(line)
        except TimeoutError:
            raise _Refused("timeout", HTTPStatus.REQUEST_TIMEOUT) from None
        return _parse(lines)

    async def _answer(self, request: _Request) -> tuple[int, list[tuple[str, str]], bytes]:
        plain = [("Content-Type", "text/plain; charset=utf-8")]
        if request.path not in self._paths:
            return HTTPStatus.NOT_FOUND, plain, b"not found\n"
        if request.method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, [*plain, ("Allow", "GET, HEAD")], b"method not allowed\n"
        if request.path == "/livez":  # the event loop answers: the process is alive
            return HTTPStatus.OK, plain, b"ok\n"
        if request.path == "/healthz":
            if self._healthy():
                return HTTPStatus.OK, plain, b"ok\n"
            return HTTPStatus.SERVICE_UNAVAILABLE, plain, b"draining\n"
        om = _wants_openmetrics(request.headers.get("accept", ""))
        gz = text_format.gzip_accepted(request.headers.get("accept-encoding", ""))
        try:
            body = await self._exposition(om, gz)
        except Exception:
            self._warn.warning("exposition", "metrics http: building the exposition failed", exc_info=True)
            return HTTPStatus.INTERNAL_SERVER_ERROR, plain, b"exposition failed\n"
        headers = [("Content-Type", openmetrics.CONTENT_TYPE_LATEST if om else TEXT_CONTENT_TYPE)]
        if gz:
            headers.append(("Content-Encoding", "gzip"))
        return HTTPStatus.OK, headers, body

    # -- the exposition, shared by concurrent scrapes --------------------------------------

    async def _exposition(self, om: bool, gz: bool) -> bytes:
        key = (om, gz)
        build = self._builds.get(key)
        if build is None:
            build = asyncio.ensure_future(asyncio.to_thread(self._build, om, gz))
            self._builds[key] = build
            build.add_done_callback(lambda done: self._build_done(key, done))
        return await asyncio.shield(build)  # one scrape gone does not cancel the others' build

    def _build(self, om: bool, gz: bool) -> bytes:
        if om:
            body: bytes = openmetrics.generate_latest(self._registry)  # type: ignore[no-untyped-call]
        else:
            body = text_format.generate_latest(self._registry)
        return gzip.compress(body, GZIP_LEVEL) if gz else body

    def _build_done(self, key: tuple[bool, bool], build: asyncio.Future[bytes]) -> None:
        if self._builds.get(key) is build:
            del self._builds[key]
        if not build.cancelled():
            build.exception()  # retrieved here, so a build no scrape waits for any more is not reported


def _parse(lines: list[bytes]) -> _Request:
    try:
        request_line = lines[0].decode("ascii").strip()
        method, target, version = request_line.split(" ")
        if not version.startswith("HTTP/1.") or not method.isalpha():
            raise ValueError(version)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.decode("latin-1").partition(":")
            if not sep or not name.strip() or name != name.strip():
                raise ValueError(name)
            headers[name.lower()] = value.strip()
        path = urlsplit(target).path if "://" in target else target.partition("?")[0]
    except ValueError:  # UnicodeDecodeError included
        raise _Refused("bad_request", HTTPStatus.BAD_REQUEST) from None
    return _Request(method, path, headers)


def _wants_openmetrics(accept: str) -> bool:
    return any(part.split(";")[0].strip() == "application/openmetrics-text" for part in accept.split(","))


def _head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", *(f"{k}: {v}" for k, v in headers)]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) and len(peer) >= 2 else "unknown"
