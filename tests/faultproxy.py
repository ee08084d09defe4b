"""A loopback HTTP fault proxy for tests: put it in front of a real server and make that
server slow, failing, silent, rude or gone, one request at a time.

    proxy = FaultProxy(upstream_port).start()      # 127.0.0.1:<free port>, forwards everything
    proxy.respond(503, times=None, match=posts_to("/v1/traces"))
    proxy.down()                                   # connection refused, same port kept
    proxy.up()
    proxy.stop()

Modes (one at a time; each call replaces the previous one, ``pass_through()`` clears it):

``pass_through()``        forward every request to the upstream
``delay(s)``              forward each request after ``s`` seconds
``respond(status, ...)``  answer with ``status`` and a JSON MLflow-style error body instead of
                          forwarding (optionally a ``Retry-After`` header)
``blackhole()``           read requests and never answer
``reset()``               read a request, then close the connection with a TCP RST
``down()`` / ``up()``     stop listening (and cut open connections) / listen again

``delay``, ``respond``, ``blackhole`` and ``reset`` take ``times`` (the next N matching
requests, None = until changed; the proxy returns to pass-through after the N-th) and
``match``, a predicate on ``(method, path, body)`` choosing which requests the fault hits;
the others are forwarded. Counters: requests seen per (method, path), answers per status.

HTTP/1.1 is handled well enough for ``requests`` and ``urllib``: keep-alive connections,
``Content-Length`` or chunked request bodies, responses relayed with ``Content-Length``. One
thread per client connection, each with its own upstream connection.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

Match = Callable[[str, str, bytes], bool]
_Response = tuple[int, list[tuple[str, str]], bytes]  # status, headers, body

_MAX_HEAD_BYTES = 64 * 1024
_POLL_S = 0.1
_SEND_TIMEOUT_S = 10.0
_HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)
_ERROR_CODES = {
    400: "INVALID_PARAMETER_VALUE",
    404: "RESOURCE_DOES_NOT_EXIST",
    429: "REQUEST_LIMIT_EXCEEDED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "TEMPORARILY_UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}


def posts_to(prefix: str) -> Match:
    """Match POST requests whose path starts with ``prefix`` (e.g. ``/v1/traces``)."""
    return lambda method, path, _body: method == "POST" and path.startswith(prefix)


def body_contains(marker: bytes, prefix: str = "") -> Match:
    """Match requests whose path starts with ``prefix`` and whose body contains ``marker``."""
    return lambda _method, path, body: path.startswith(prefix) and marker in body


@dataclass
class _Fault:
    action: str  # "delay", "respond", "blackhole", "reset"
    times: int | None
    match: Match | None
    seconds: float = 0.0
    status: int = 0
    retry_after: float | None = None


class _Closed(Exception):
    """The client closed its connection (or the proxy is cutting it)."""


@dataclass
class _Request:
    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    @property
    def keep_alive(self) -> bool:
        connection = (self.header("Connection") or "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 in front of ``upstream_host:upstream_port``."""

    def __init__(
        self, upstream_port: int, upstream_host: str = "127.0.0.1", port: int = 0, upstream_timeout_s: float = 60.0
    ) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = port
        self._upstream_timeout_s = upstream_timeout_s
        self._lock = threading.Lock()
        self._fault: _Fault | None = None
        self._seen: Counter[tuple[str, str]] = Counter()
        self._answered: Counter[int] = Counter()
        self._faulted: Counter[str] = Counter()
        self._listener: socket.socket | None = None
        self._accept_thread: threading.Thread | None = None
        self._accepting = threading.Event()
        self._stopping = threading.Event()
        self._clients: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FaultProxy:
        self._stopping.clear()
        self._listen()
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop listening, cut every connection and join the threads; idempotent."""
        self._stopping.set()
        self._close_listener()
        self._cut_clients()
        deadline = time.monotonic() + timeout_s
        with self._lock:
            threads = list(self._threads)
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))

    def down(self) -> None:
        """Stop listening (new connections are refused) and cut the open ones."""
        self._close_listener()
        self._cut_clients()

    def up(self) -> None:
        """Listen again on the same port."""
        if self._listener is None:
            self._listen()

    @property
    def is_up(self) -> bool:
        return self._listener is not None

    # -- modes ------------------------------------------------------------------------------

    def pass_through(self) -> None:
        with self._lock:
            self._fault = None

    def delay(self, seconds: float, times: int | None = None, match: Match | None = None) -> None:
        self._set(_Fault("delay", times, match, seconds=seconds))

    def respond(
        self, status: int, times: int | None = None, match: Match | None = None, retry_after: float | None = None
    ) -> None:
        self._set(_Fault("respond", times, match, status=status, retry_after=retry_after))

    def blackhole(self, times: int | None = None, match: Match | None = None) -> None:
        self._set(_Fault("blackhole", times, match))

    def reset(self, times: int | None = None, match: Match | None = None) -> None:
        self._set(_Fault("reset", times, match))

    def _set(self, fault: _Fault) -> None:
        if fault.times is not None and fault.times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._fault = fault

    @property
    def fault_pending(self) -> bool:
        """True while a fault is set (``times`` not used up yet)."""
        with self._lock:
            return self._fault is not None

    # -- counters ---------------------------------------------------------------------------

    def seen(self, method: str | None = None, prefix: str = "") -> int:
        """Requests read from clients, optionally only ``method`` and paths under ``prefix``."""
        with self._lock:
            return sum(
                n for (m, p), n in self._seen.items() if (method is None or m == method) and p.startswith(prefix)
            )

    def answered(self, status: int | None = None) -> int:
        """Responses sent to clients (forwarded or injected), optionally only ``status``."""
        with self._lock:
            return sum(n for s, n in self._answered.items() if status is None or s == status)

    def faulted(self, action: str | None = None) -> int:
        """Requests a fault was applied to (``delay``, ``respond``, ``blackhole``, ``reset``)."""
        with self._lock:
            return sum(n for a, n in self._faulted.items() if action is None or a == action)

    def counters(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {
                "seen": {f"{m} {p}": n for (m, p), n in sorted(self._seen.items())},
                "answered": {str(s): n for s, n in sorted(self._answered.items())},
                "faulted": dict(self._faulted),
            }

    # -- internals --------------------------------------------------------------------------

    def _listen(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(128)
        sock.settimeout(_POLL_S)
        self.port = sock.getsockname()[1]
        self._listener = sock
        accepting = threading.Event()
        accepting.set()
        self._accepting = accepting
        self._accept_thread = threading.Thread(
            target=self._accept_loop, args=(sock, accepting), name=f"faultproxy-accept-{self.port}", daemon=True
        )
        self._accept_thread.start()

    def _close_listener(self) -> None:
        sock, thread = self._listener, self._accept_thread
        self._listener, self._accept_thread = None, None
        self._accepting.clear()
        if thread is not None:
            thread.join(timeout=5)
        if sock is not None:
            sock.close()

    def _cut_clients(self) -> None:
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)

    def _accept_loop(self, sock: socket.socket, accepting: threading.Event) -> None:
        while accepting.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            thread = threading.Thread(target=self._serve, args=(conn,), name="faultproxy-conn", daemon=True)
            with self._lock:
                self._clients.add(conn)
                self._threads.add(thread)
            thread.start()

    def _take_fault(self, request: _Request) -> _Fault | None:
        with self._lock:
            self._seen[(request.method, request.path)] += 1
            fault = self._fault
            if fault is None:
                return None
            if fault.match is not None and not fault.match(request.method, request.path, request.body):
                return None
            if fault.times is not None:
                fault.times -= 1
                if fault.times <= 0:
                    self._fault = None
            self._faulted[fault.action] += 1
            return fault

    def _serve(self, conn: socket.socket) -> None:
        reader = _Reader(conn, self._stopping)
        upstream: http.client.HTTPConnection | None = None
        try:
            while not self._stopping.is_set():
                request = reader.read_request()
                if request is None:
                    return
                fault = self._take_fault(request)
                if fault is not None and fault.action == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    return
                if fault is not None and fault.action == "blackhole":
                    reader.drain_until_closed()
                    return
                if fault is not None and fault.action == "respond":
                    status, headers, body = _error_response(fault.status, fault.retry_after)
                else:
                    if fault is not None and fault.action == "delay" and self._stopping.wait(fault.seconds):
                        return
                    upstream, (status, headers, body) = self._forward(upstream, request)
                with self._lock:  # counted before sending, so a client that got it sees it counted
                    self._answered[status] += 1
                conn.settimeout(_SEND_TIMEOUT_S)
                conn.sendall(_render(status, headers, body, request.keep_alive))
                conn.settimeout(_POLL_S)
                if not request.keep_alive:
                    return
        except (_Closed, OSError):
            return
        finally:
            if upstream is not None:
                upstream.close()
            with self._lock:
                self._clients.discard(conn)
                self._threads.discard(threading.current_thread())
            with contextlib.suppress(OSError):
                conn.close()

    def _forward(
        self, upstream: http.client.HTTPConnection | None, request: _Request
    ) -> tuple[http.client.HTTPConnection | None, _Response]:
        headers = {k: v for k, v in request.headers if k.lower() not in _HOP_BY_HOP}
        headers["Content-Length"] = str(len(request.body))
        for attempt in (1, 2):  # a pooled upstream connection may have been closed meanwhile
            if upstream is None:
                upstream = http.client.HTTPConnection(*self.upstream, timeout=self._upstream_timeout_s)
            try:
                upstream.request(request.method, request.target, body=request.body, headers=headers)
                resp = upstream.getresponse()
                body = resp.read()
                relayed = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP_BY_HOP]
                if resp.will_close:
                    upstream.close()
                    upstream = None
                return upstream, (resp.status, relayed, body)
            except (OSError, http.client.HTTPException) as exc:
                upstream.close()  # type: ignore[union-attr]
                upstream = None
                if attempt == 2 or not isinstance(
                    exc, http.client.RemoteDisconnected | ConnectionResetError | BrokenPipeError
                ):
                    return None, _error_response(502, None, f"upstream unreachable: {type(exc).__name__}")
        raise AssertionError("unreachable")


class _Reader:
    """Reads HTTP/1.1 requests from a client socket, polling so the proxy can stop it."""

    def __init__(self, conn: socket.socket, stopping: threading.Event) -> None:
        self._conn = conn
        self._stopping = stopping
        self._buf = b""
        conn.settimeout(_POLL_S)

    def _recv(self) -> bytes:
        while True:
            if self._stopping.is_set():
                raise _Closed
            try:
                data = self._conn.recv(65536)
            except TimeoutError:
                continue
            if not data:
                raise _Closed
            return data

    def _read_until(self, marker: bytes, limit: int) -> bytes:
        while marker not in self._buf:
            if len(self._buf) > limit:
                raise _Closed
            self._buf += self._recv()
        head, _, self._buf = self._buf.partition(marker)
        return head

    def _read_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            self._buf += self._recv()
        data, self._buf = self._buf[:n], self._buf[n:]
        return data

    def read_request(self) -> _Request | None:
        """The next request, or None when the client closed between requests."""
        if not self._buf:
            try:
                self._buf = self._recv()
            except _Closed:
                return None
        head = self._read_until(b"\r\n\r\n", _MAX_HEAD_BYTES).decode("latin-1")
        request_line, *header_lines = head.split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers = []
        for line in header_lines:
            key, _, value = line.partition(":")
            headers.append((key.strip(), value.strip()))
        request = _Request(method, target, version, headers, b"")
        if (request.header("Transfer-Encoding") or "").lower() == "chunked":
            request.body = self._read_chunked()
        else:
            request.body = self._read_exact(int(request.header("Content-Length") or 0))
        return request

    def _read_chunked(self) -> bytes:
        body = b""
        while True:
            size = int(self._read_until(b"\r\n", 1024).split(b";", 1)[0], 16)
            if size == 0:
                while self._read_until(b"\r\n", _MAX_HEAD_BYTES):  # trailers end with an empty line
                    pass
                return body
            body += self._read_exact(size)
            self._read_exact(2)

    def drain_until_closed(self) -> None:
        """Read and discard until the client hangs up or the proxy stops (the black hole)."""
        with contextlib.suppress(_Closed):
            while True:
                self._recv()


def _error_response(status: int, retry_after: float | None, message: str | None = None) -> _Response:
    error_code = _ERROR_CODES.get(status, "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR")
    body = json.dumps({"error_code": error_code, "message": message or f"injected by faultproxy: {status}"})
    headers = [("Content-Type", "application/json")]
    if retry_after is not None:
        headers.append(("Retry-After", f"{retry_after:g}"))
    return status, headers, body.encode()


def _render(status: int, headers: list[tuple[str, str]], body: bytes, keep_alive: bool) -> bytes:
    reason = http.client.responses.get(status, "Unknown")
    lines = [
        f"HTTP/1.1 {status} {reason}",
        *(f"{k}: {v}" for k, v in headers),
        f"Content-Length: {len(body)}",
        f"Connection: {'keep-alive' if keep_alive else 'close'}",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
