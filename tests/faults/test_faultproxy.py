"""The fault proxy itself, against a trivial loopback upstream: every mode does what it says,
keep-alive connections survive, and the counters count."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from tests.faultproxy import FaultProxy, body_contains, posts_to


class _Echo(BaseHTTPRequestHandler):
    """Answers every request with JSON naming its method, path and body length."""

    protocol_version = "HTTP/1.1"

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.hits += 1  # type: ignore[attr-defined]
        payload = json.dumps(
            {"method": self.command, "path": self.path, "body_bytes": len(body), "body": body.decode("latin-1")}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def upstream() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    server.hits = 0  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def proxy(upstream: ThreadingHTTPServer) -> Iterator[FaultProxy]:
    p = FaultProxy(upstream.server_address[1]).start()
    yield p
    p.stop()


@pytest.fixture
def session() -> Iterator[requests.Session]:
    s = requests.Session()
    yield s
    s.close()


def test_pass_through_relays_requests_on_one_keep_alive_connection(
    proxy: FaultProxy, upstream: ThreadingHTTPServer, session: requests.Session
) -> None:
    for i in range(5):
        resp = session.post(proxy.url + "/v1/traces?x=1", data=b"\x00\x01" * (1000 + i), timeout=5)
        assert resp.status_code == 200
        assert resp.json() == {
            "method": "POST",
            "path": "/v1/traces?x=1",
            "body_bytes": 2 * (1000 + i),
            "body": ("\x00\x01" * (1000 + i)),
        }
    assert session.get(proxy.url + "/health", timeout=5).json()["method"] == "GET"
    # A chunked request body (a generator) is de-chunked and forwarded with a Content-Length.
    resp = session.post(proxy.url + "/chunked", data=iter([b"abc", b"defg"]), timeout=5)
    assert resp.json()["body"] == "abcdefg"

    assert upstream.hits == 7  # type: ignore[attr-defined]
    assert proxy.seen("POST", "/v1/traces") == 5
    assert proxy.seen("GET") == 1
    assert proxy.seen() == 7
    assert proxy.answered(200) == 7
    assert proxy.faulted() == 0


def test_delay_forwards_each_request_late(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.delay(0.4)
    started = time.monotonic()
    assert session.get(proxy.url + "/slow", timeout=5).status_code == 200
    assert session.get(proxy.url + "/slow", timeout=5).status_code == 200
    assert time.monotonic() - started >= 0.8
    assert proxy.faulted("delay") == 2

    proxy.pass_through()
    started = time.monotonic()
    assert session.get(proxy.url + "/fast", timeout=5).status_code == 200
    assert time.monotonic() - started < 0.4


def test_respond_injects_a_status_for_the_next_n_requests(
    proxy: FaultProxy, upstream: ThreadingHTTPServer, session: requests.Session
) -> None:
    proxy.respond(503, times=2, retry_after=3)
    for _ in range(2):
        resp = session.post(proxy.url + "/v1/traces", data=b"x", timeout=5)
        assert resp.status_code == 503
        assert resp.headers["Retry-After"] == "3"
        assert resp.json()["error_code"] == "TEMPORARILY_UNAVAILABLE"
    assert not proxy.fault_pending
    assert session.post(proxy.url + "/v1/traces", data=b"x", timeout=5).status_code == 200
    assert upstream.hits == 1  # type: ignore[attr-defined]
    assert proxy.answered(503) == 2 and proxy.answered(200) == 1


def test_respond_only_hits_matching_requests_until_changed(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.respond(400, match=posts_to("/v1/traces"))
    assert session.get(proxy.url + "/v1/traces", timeout=5).status_code == 200
    assert session.post(proxy.url + "/api/2.0/mlflow/experiments/create", json={}, timeout=5).status_code == 200
    for _ in range(3):
        resp = session.post(proxy.url + "/v1/traces", data=b"payload", timeout=5)
        assert resp.status_code == 400
        assert resp.json()["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "Retry-After" not in resp.headers

    marker = bytes.fromhex("00ff10ab" * 4)
    proxy.respond(400, match=body_contains(marker, prefix="/v1/traces"))
    assert session.post(proxy.url + "/v1/traces", data=b"a" + marker + b"z", timeout=5).status_code == 400
    assert session.post(proxy.url + "/v1/traces", data=b"a" + marker[:-1] + b"z", timeout=5).status_code == 200
    assert session.post(proxy.url + "/other", data=marker, timeout=5).status_code == 200
    assert proxy.faulted("respond") == 4


def test_blackhole_reads_and_never_answers(proxy: FaultProxy, session: requests.Session) -> None:
    proxy.blackhole(times=1)
    with pytest.raises(requests.ReadTimeout):
        session.post(proxy.url + "/v1/traces", data=b"x" * 10_000, timeout=(2, 0.5))
    assert proxy.seen("POST", "/v1/traces") == 1
    assert proxy.answered() == 0
    # The black hole was for one request: the next is forwarded.
    assert session.get(proxy.url + "/after", timeout=5).status_code == 200


def test_reset_closes_the_connection_abruptly(proxy: FaultProxy, session: requests.Session) -> None:
    assert session.get(proxy.url + "/warm", timeout=5).status_code == 200  # a pooled keep-alive connection
    proxy.reset()
    with pytest.raises(requests.ConnectionError):
        session.post(proxy.url + "/v1/traces", data=b"x", timeout=5)
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as raw:
        raw.sendall(b"GET /raw HTTP/1.1\r\nHost: x\r\n\r\n")
        with pytest.raises(ConnectionResetError):
            while raw.recv(1024):  # a RST, not an orderly close (which would end this loop)
                pass
    assert proxy.faulted("reset") >= 2
    proxy.pass_through()
    assert session.get(proxy.url + "/after", timeout=5).status_code == 200


def test_down_refuses_connections_and_up_listens_again_on_the_same_port(
    proxy: FaultProxy, session: requests.Session
) -> None:
    port = proxy.port
    assert session.get(proxy.url + "/warm", timeout=5).status_code == 200
    proxy.down()
    assert not proxy.is_up
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    # The pooled keep-alive connection was cut too: the session cannot get through.
    with pytest.raises(requests.ConnectionError):
        session.get(proxy.url + "/while-down", timeout=2)

    proxy.up()
    assert proxy.port == port and proxy.is_up
    assert session.get(proxy.url + "/back", timeout=5).status_code == 200


def test_upstream_gone_is_a_502_and_stop_is_idempotent(upstream: ThreadingHTTPServer) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    p = FaultProxy(dead_port).start()
    try:
        resp = requests.get(p.url + "/x", timeout=5)
        assert resp.status_code == 502
        assert resp.json()["error_code"] == "BAD_GATEWAY"
    finally:
        p.stop()
        p.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(p.url + "/x", timeout=2)
