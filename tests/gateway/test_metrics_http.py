"""The metrics port (gateway/metrics_http.py) over real sockets on 127.0.0.1: the exposition in
both formats, gzip, health, and what a scrape storm, a stalled client and shutdown cost."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from gateway.metrics import BUSINESS_LABELS, GatewayMetrics
from gateway.metrics_http import HttpLimits, MetricsHttpServer

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
HALF_REQUEST = b"GET /metrics HTTP/1.1\r\nHo"


def run(coro: Coroutine[Any, Any, None], timeout_s: float = 30.0) -> None:
    asyncio.run(asyncio.wait_for(coro, timeout_s))


class Served:
    def __init__(self, server: MetricsHttpServer, port: int, metrics: GatewayMetrics) -> None:
        self.server, self.port, self.metrics = server, port, metrics

    def refused(self, reason: str) -> float:
        value = self.metrics.registry.get_sample_value("tracegw_metrics_http_refused_total", {"reason": reason})
        return value or 0.0


@contextlib.asynccontextmanager
async def serving(healthy: Callable[[], bool] = lambda: True, **limits: Any) -> AsyncIterator[Served]:
    metrics = GatewayMetrics(CollectorRegistry())
    server = MetricsHttpServer(
        metrics.registry, "127.0.0.1", 0, metrics.metrics_http_refused, healthy, HttpLimits(**limits)
    )
    port = await server.start()
    try:
        yield Served(server, port, metrics)
    finally:
        await server.close()


def request(path: str = "/metrics", method: str = "GET", **headers: str) -> bytes:
    lines = [
        f"{method} {path} HTTP/1.1",
        "Host: 127.0.0.1",
        *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def parse_response(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


async def fetch(port: int, raw: bytes, timeout_s: float = 5.0) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(raw)
        await writer.drain()
        async with asyncio.timeout(timeout_s):
            data = await reader.read()  # the server closes after its answer
    finally:
        writer.close()
    return parse_response(data)


async def wait_until(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class GatedCollector:
    """A collector whose collect() counts its calls and can be held until released."""

    def __init__(self, value: str = "x") -> None:
        self.calls = 0
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()
        self.value = value

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(10)
        family = GaugeMetricFamily("test_gated", "A test gauge.", labels=["v"])
        family.add_metric([self.value], 1.0)
        yield family


# -- what a scrape returns ----------------------------------------------------------------------


def test_text_and_openmetrics_expositions_parse_and_openmetrics_carries_exemplars() -> None:
    async def main() -> None:
        async with serving() as s:
            latency = s.metrics.request_latency.labels(*("x" for _ in BUSINESS_LABELS))
            latency.observe(0.3, exemplar={"trace_id": TRACE_ID})
            s.metrics.spans_received.labels("native").inc(7)

            status, headers, body = await fetch(s.port, request())
            assert status == 200
            assert headers["content-type"].startswith("text/plain; version=0.0.4")
            assert headers["connection"] == "close"
            assert int(headers["content-length"]) == len(body)
            families = {f.name: f for f in parse_text(body.decode())}
            assert [x.value for x in families["tracegw_spans_received"].samples] == [7.0]
            assert "mangaassist_request_latency_seconds" in families
            assert TRACE_ID not in body.decode()  # the text format has no exemplars

            accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            status, headers, body = await fetch(s.port, request(Accept=accept))
            assert status == 200
            assert headers["content-type"].startswith("application/openmetrics-text; version=1.0.0")
            text = body.decode()
            assert text.endswith("# EOF\n")
            exemplars = [
                sample.exemplar
                for family in parse_openmetrics(text)
                if family.name == "mangaassist_request_latency_seconds"
                for sample in family.samples
                if sample.exemplar is not None
            ]
            assert [e.labels for e in exemplars] == [{"trace_id": TRACE_ID}]

            status, headers, body = await fetch(s.port, request(method="HEAD"))
            assert (status, body) == (200, b"")
            assert int(headers["content-length"]) > 0

    run(main())


def test_gzip_when_accepted() -> None:
    async def main() -> None:
        async with serving() as s:
            s.metrics.spans_received.labels("otlp").inc(3)
            status, headers, body = await fetch(s.port, request(Accept_Encoding="deflate, gzip;q=0.9"))
            assert status == 200
            assert headers["content-encoding"] == "gzip"
            families = {f.name: f for f in parse_text(gzip.decompress(body).decode())}
            assert [x.value for x in families["tracegw_spans_received"].samples] == [3.0]

            status, headers, body = await fetch(
                s.port, request(Accept="application/openmetrics-text", Accept_Encoding="gzip")
            )
            assert (status, headers["content-encoding"]) == (200, "gzip")
            assert gzip.decompress(body).decode().endswith("# EOF\n")

            _, headers, body = await fetch(s.port, request())
            assert "content-encoding" not in headers
            assert body.startswith(b"# HELP")

    run(main())


def test_unknown_paths_are_404_and_other_methods_405() -> None:
    async def main() -> None:
        async with serving() as s:
            assert (await fetch(s.port, request("/")))[0] == 404
            assert (await fetch(s.port, request("/metricsx")))[0] == 404
            assert (await fetch(s.port, request("/metrics?name[]=x")))[0] == 200
            status, headers, _ = await fetch(s.port, request(method="POST"))
            assert (status, headers["allow"]) == (405, "GET, HEAD")
            assert (await fetch(s.port, request("/healthz", method="DELETE")))[0] == 405
            assert s.refused("bad_request") == 0  # answered, not refused

    run(main())


def test_healthz_is_200_while_accepting_and_503_while_draining() -> None:
    accepting = [True]

    async def main() -> None:
        async with serving(healthy=lambda: accepting[0]) as s:
            assert (await fetch(s.port, request("/healthz")))[::2] == (200, b"ok\n")
            accepting[0] = False
            assert (await fetch(s.port, request("/healthz")))[0] == 503
            assert (await fetch(s.port, request("/healthz", method="HEAD")))[::2] == (503, b"")

    run(main())


# -- bad clients cost a count, not a thread or a traceback --------------------------------------


def test_malformed_and_oversized_requests_are_counted_without_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.metrics_http")

    async def main() -> None:
        async with serving() as s:
            for raw in (b"\x16\x03\x01\x02\x00\x01\r\n\r\n", b"GET /metrics\r\n\r\n", b"GET / HTTP/1.1\r\nbad\r\n\r\n"):
                assert (await fetch(s.port, raw))[0] == 400
            assert s.refused("bad_request") == 3
            huge = request(X_Padding="a" * 9000)
            assert (await fetch(s.port, huge))[0] == 431
            many = b"GET /metrics HTTP/1.1\r\n" + b"X-A: b\r\n" * 1200 + b"\r\n"
            assert (await fetch(s.port, many))[0] == 431
            assert s.refused("too_large") == 2

            # The probe's half-sent scrape: request line and a header, no blank line, then close.
            for _ in range(20):
                _, writer = await asyncio.open_connection("127.0.0.1", s.port)
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                await writer.drain()
                writer.close()
            await wait_until(lambda: s.refused("bad_request") == 23)
            # A TCP probe (connect, close) is not counted.
            _, writer = await asyncio.open_connection("127.0.0.1", s.port)
            writer.close()
            await asyncio.sleep(0.05)
            await wait_until(lambda: s.server.open_connections == 0)
            assert s.refused("bad_request") == 23
            assert (await fetch(s.port, request()))[0] == 200

    run(main())
    records = [r for r in caplog.records if r.name == "gateway.metrics_http"]
    assert not any(r.exc_info for r in records)
    assert len(records) <= 2  # one line per reason per 10 s: bad_request, too_large


def test_concurrent_scrapes_share_one_build_and_closed_half_scrapes_build_nothing() -> None:
    collector = GatedCollector()

    async def main() -> None:
        async with serving(max_connections=16) as s:
            s.metrics.registry.register(collector)
            collector.gate.clear()
            scrapes = [asyncio.create_task(fetch(s.port, request()))]
            await wait_until(collector.entered.is_set)
            scrapes += [asyncio.create_task(fetch(s.port, request())) for _ in range(9)]
            await wait_until(lambda: s.server.open_connections == 10)
            await asyncio.sleep(0.2)  # let the nine reach the build in flight
            collector.gate.set()
            answers = await asyncio.gather(*scrapes)
            assert {status for status, _, _ in answers} == {200}
            assert len({body for _, _, body in answers}) == 1
            assert collector.calls == 1

            for _ in range(20):
                _, writer = await asyncio.open_connection("127.0.0.1", s.port)
                writer.write(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
                await writer.drain()
                writer.close()
            await wait_until(lambda: s.refused("bad_request") == 20)
            assert collector.calls == 1
            await fetch(s.port, request())
            assert collector.calls == 2  # a later scrape builds afresh: nothing is cached

    run(main())


def test_scrape_storm_is_refused_then_a_scrape_succeeds_without_threads_or_memory_growing() -> None:
    async def main() -> None:
        async with serving(max_connections=8, read_timeout_s=0.5) as s:
            assert (await fetch(s.port, request()))[0] == 200  # the build's executor thread exists now
            threads, rss = threading.active_count(), rss_bytes()

            async def stall() -> tuple[float, bytes]:
                reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
                started = time.monotonic()
                with contextlib.suppress(ConnectionError):
                    writer.write(HALF_REQUEST)
                    await writer.drain()
                data = b""
                with contextlib.suppress(ConnectionError):
                    async with asyncio.timeout(5):
                        data = await reader.read()
                writer.close()
                return time.monotonic() - started, data

            storm = [asyncio.create_task(stall()) for _ in range(50)]
            await wait_until(lambda: s.refused("connections") == 42)
            assert s.server.open_connections == 8
            # A real scrape during the storm is refused too, at once, with a hint to retry.
            status, headers, _ = await fetch(s.port, request(), timeout_s=1)
            assert (status, headers["retry-after"]) == (503, "1")
            assert threading.active_count() <= threads + 2
            assert rss_bytes() - rss < 64 << 20

            results = await asyncio.gather(*storm)
            timed_out = [t for t, data in results if data.startswith(b"HTTP/1.1 408")]
            refused = [t for t, data in results if not data.startswith(b"HTTP/1.1 408")]  # 503, or closed
            assert all(data.startswith((b"HTTP/1.1 503", b"HTTP/1.1 408")) or data == b"" for _, data in results)
            assert len(timed_out) == 8
            assert max(refused) < min(timed_out), "refusals must not wait for the read timeout"
            assert min(timed_out) >= 0.4
            assert (s.refused("connections"), s.refused("timeout")) == (43, 8)

            status, _, body = await fetch(s.port, request())
            assert status == 200
            assert "tracegw_metrics_http_refused_total" in body.decode()
            assert threading.active_count() <= threads + 2

    run(main())


def test_a_client_that_does_not_read_is_cut_off_at_the_write_timeout() -> None:
    big = GatedCollector(value="v" * (16 << 20))  # a 16 MiB exposition: more than socket buffers take

    async def main() -> None:
        async with serving(write_timeout_s=0.3) as s:
            s.metrics.registry.register(big)
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", s.port))
            _, writer = await asyncio.open_connection(sock=sock)
            writer.write(request())
            await writer.drain()  # and never read
            await wait_until(lambda: s.refused("write_timeout") == 1, timeout_s=5)
            await wait_until(lambda: s.server.open_connections == 0, timeout_s=1)
            writer.close()

    run(main())


def test_close_with_half_open_clients_returns_promptly() -> None:
    async def main() -> None:
        async with serving(read_timeout_s=30) as s:
            clients = []
            for _ in range(6):
                reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
                writer.write(HALF_REQUEST)
                await writer.drain()
                clients.append((reader, writer))
            await wait_until(lambda: s.server.open_connections == 6)
            started = time.monotonic()
            await s.server.close()
            assert time.monotonic() - started < 1.0
            assert s.server.open_connections == 0
            for reader, writer in clients:
                with contextlib.suppress(ConnectionError):
                    async with asyncio.timeout(1):
                        assert await reader.read() == b""
                writer.close()
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", s.port)
            await s.server.close()  # idempotent

    run(main())


# -- as the sidecar wires it --------------------------------------------------------------------


def test_settings_reach_the_sidecars_metrics_port_and_stop_closes_it() -> None:
    from gateway import config
    from gateway.server import ThreadedGateway
    from tests.fakes import NullWriter

    assert config.load({}).listen.metrics_max_connections == 8
    with pytest.raises(config.ConfigError):
        config.load({"TRACEGW_METRICS_MAX_CONNECTIONS": "0", "TRACEGW_METRICS_READ_TIMEOUT_S": "-1"})
    settings = {
        "TRACEGW_LISTEN_ADDRESS": "127.0.0.1:0",
        "TRACEGW_METRICS_ADDRESS": "127.0.0.1:0",
        "TRACEGW_HEALTH_ADDRESS": "127.0.0.1:0",
        "TRACEGW_METRICS_MAX_CONNECTIONS": "2",
        "TRACEGW_METRICS_READ_TIMEOUT_S": "30",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:9",
        "TRACEGW_SPOOL_DIR": "",
        "TRACEGW_MEMORY_SOFT_LIMIT_BYTES": str(8 << 30),
        "TRACEGW_MEMORY_HARD_LIMIT_BYTES": str(12 << 30),
    }
    gw = ThreadedGateway(config.load(settings), writer=NullWriter())
    port, health_port = gw.running.metrics_port, gw.running.health_port
    assert port and health_port and port != health_port
    stalled = []
    try:
        # probes on the health port, only /metrics on the metrics port
        for where, path, status in (
            (health_port, "/healthz", b"200 OK"),
            (health_port, "/livez", b"200 OK"),
            (health_port, "/metrics", b"404 Not Found"),
            (port, "/healthz", b"404 Not Found"),
            (port, "/metrics", b"200 OK"),
        ):
            with socket.create_connection(("127.0.0.1", where), timeout=5) as probe:
                probe.sendall(request(path))
                assert probe.recv(4096).startswith(b"HTTP/1.1 " + status), (where, path)
        for _ in range(2):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(HALF_REQUEST)
            stalled.append(sock)
        deadline = time.monotonic() + 5
        while gw.call(lambda: gw.running._http[0].open_connections) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with socket.create_connection(("127.0.0.1", port), timeout=5) as third:
            third.sendall(request())
            assert third.recv(4096).startswith(b"HTTP/1.1 503 Service Unavailable")
        assert gw.metrics.registry.get_sample_value("tracegw_metrics_http_refused_total", {"reason": "connections"})
        started = time.monotonic()
        gw.stop(timeout_s=5)
        assert time.monotonic() - started < 5
        for sock in stalled:
            with contextlib.suppress(ConnectionError):
                assert sock.recv(4096) == b""
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
    finally:
        for sock in stalled:
            sock.close()
        gw.stop()
