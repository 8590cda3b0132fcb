"""The proxy core in front of real backend processes, over loopback sockets.

Keep-alive both sides, streaming of large bodies with bounded memory, chunked encoding both
ways, 100-continue, bodiless answers, pipelining, websocket tunnels, the 502/504 answers,
retries (GET only), shadow requests and graceful shutdown.
"""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from changeover.proxy.http import Choice, Reject, RequestHead
from changeover.proxy.limits import Limits
from changeover.proxy.state import Instance
from support.backends import BLOCK, BackendProcess, free_port, start_backend
from support.proxy_harness import (
    ProxyThread,
    connect,
    first_not_excluded,
    get,
    read_response,
    request,
    running_proxy,
)

HARNESS = Path(__file__).resolve().parents[1] / "support" / "proxy_harness.py"
BIG = 1024**3  # 1 GiB
RSS_GROWTH_LIMIT = 100 * 1024**2


@pytest.fixture(scope="module")
def backend_a() -> Iterator[BackendProcess]:
    with start_backend("a") as process:
        yield process


@pytest.fixture(scope="module")
def backend_b() -> Iterator[BackendProcess]:
    with start_backend("b") as process:
        yield process


def inst(backend: BackendProcess, name: str | None = None) -> Instance:
    return Instance("legacy", name or backend.name, backend.host, backend.port)


def down_instance() -> Instance:
    return Instance("legacy", "down", "127.0.0.1", free_port())


def echo(body: bytes) -> dict[str, object]:
    result: dict[str, object] = json.loads(body)
    return result


def test_upstream_connection_is_reused_across_requests(backend_a: BackendProcess) -> None:
    with start_backend("fresh") as backend, running_proxy([inst(backend)]) as proxy:
        for _ in range(10):
            assert get(proxy.port, "/echo").status == 200
        sock, reader = connect(proxy.port)
        with sock:
            for _ in range(10):
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
                assert read_response(reader).status == 200
        assert backend.count()["connections"] == 2  # one via the proxy, one for /count


def test_forwarded_request_carries_proxy_headers_and_no_hop_by_hop(
    backend_a: BackendProcess,
) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        response = get(
            proxy.port,
            "/echo",
            "Connection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\n"
            "X-Forwarded-For: 10.0.0.1\r\nX-Request-Id: abc-123\r\nTE: trailers\r\n",
        )
    names = {k.lower(): v.strip() for k, v in echo(response.body)["headers"]}  # type: ignore[attr-defined]
    assert names["x-forwarded-for"] == "10.0.0.1, 127.0.0.1"
    assert names["x-forwarded-proto"] == "http"
    assert names["x-forwarded-host"] == "test"
    assert names["x-request-id"] == "abc-123"
    for hop in ("connection", "keep-alive", "x-secret", "te"):
        assert hop not in names


def test_chunked_request_body_is_reframed_to_the_upstream(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        response = request(
            proxy.port,
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n",
        )
    body = echo(response.body)
    assert body["body_length"] == 11
    assert body["sha256"] == hashlib.sha256(b"hello world").hexdigest()


def test_chunked_and_until_close_answers_reach_the_client_chunked(
    backend_a: BackendProcess,
) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        chunked = get(proxy.port, "/chunked?n=3")
        assert chunked.header("transfer-encoding") == "chunked"
        assert chunked.body == b"chunk 0\nchunk 1\nchunk 2\n"
        until_close = get(proxy.port, "/until-close?bytes=100000")
        assert until_close.header("transfer-encoding") == "chunked"
        assert until_close.body == (BLOCK * 2)[:100000]


def test_http10_client_gets_a_close_delimited_body(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            sock.sendall(b"GET /chunked?n=2 HTTP/1.0\r\n\r\n")
            response = read_response(reader)
            assert response.header("transfer-encoding") is None
            assert response.body == b"chunk 0\nchunk 1\n"


def test_http10_keep_alive_is_honoured(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            for _ in range(2):
                sock.sendall(b"GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                response = read_response(reader)
                assert response.status == 200
                assert response.header("connection") == "keep-alive"


def test_connection_close_is_honoured(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            response = read_response(reader)
            assert response.header("connection") == "close"
            assert reader.rest() == b""


def test_expect_100_continue_is_answered_before_the_body(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            sock.sendall(
                b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            assert reader.until(b"\r\n\r\n") == b"HTTP/1.1 100 Continue\r\n\r\n"
            sock.sendall(b"abcd")
            response = read_response(reader)
    assert echo(response.body)["body_length"] == 4


def test_head_204_and_304_have_no_body_and_keep_the_connection_in_step(
    backend_a: BackendProcess,
) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            sock.sendall(b"HEAD /head HTTP/1.1\r\nHost: t\r\n\r\n")
            head = read_response(reader, head_request=True)
            assert head.header("content-length") == "9"
            for path in ("/204", "/304", "/status/304"):
                sock.sendall(b"GET %s HTTP/1.1\r\nHost: t\r\n\r\n" % path.encode())
                assert read_response(reader).status == int(path[-3:])
            sock.sendall(b"GET /head HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(reader).body == b"head-body"
        # the upstream connection stayed usable after the HEAD answer
        assert get(proxy.port, "/head").body == b"head-body"


def test_pipelined_requests_are_answered_in_order(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            sock.sendall(
                b"GET /echo?n=1 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /slow?ms=200 HTTP/1.1\r\nHost: t\r\n\r\n"
                b"GET /echo?n=3 HTTP/1.1\r\nHost: t\r\n\r\n"
            )
            targets = [echo(read_response(reader).body)["target"] for _ in range(3)]
    assert targets == ["/echo?n=1", "/slow?ms=200", "/echo?n=3"]


def test_websocket_upgrade_becomes_a_tunnel(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        sock, reader = connect(proxy.port)
        with sock:
            sock.sendall(
                b"GET /ws HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\nearly"
            )
            response = read_response(reader)
            assert response.status == 101
            assert response.header("upgrade") == "websocket"
            sock.sendall(b" and late")
            got = b""
            while len(got) < len(b"early and late"):
                got += reader.buf or sock.recv(100)
                reader.buf = b""
            assert got == b"early and late"


def test_refused_instance_answers_502(backend_a: BackendProcess) -> None:
    with running_proxy([down_instance()]) as proxy:
        response = get(proxy.port, "/echo")
        assert response.status == 502
        assert response.header("x-request-id")
        failed = proxy.observer.of("failed")
    assert failed and failed[0][3] is False  # never reached the upstream


def test_reset_by_upstream_answers_502(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)]) as proxy:
        assert get(proxy.port, "/reset").status == 502


def test_slow_upstream_answers_504(backend_a: BackendProcess) -> None:
    with running_proxy([inst(backend_a)], Limits(upstream_timeout=0.2)) as proxy:
        started = time.monotonic()
        response = get(proxy.port, "/slow?ms=3000")
        assert response.status == 504
        assert time.monotonic() - started < 2
        assert proxy.observer.of("finished")[-1][2] == 504


def test_get_is_retried_on_the_next_instance_when_the_first_refuses(
    backend_a: BackendProcess,
) -> None:
    down = down_instance()
    with running_proxy([down, inst(backend_a)]) as proxy:
        response = get(proxy.port, "/echo")
        assert response.status == 200
        assert echo(response.body)["name"] == "a"
        assert proxy.observer.of("failed")[0][1] == down.key


def test_post_is_not_retried(backend_b: BackendProcess) -> None:
    before = backend_b.count()["requests"]
    with running_proxy([down_instance(), inst(backend_b)]) as proxy:
        response = request(
            proxy.port, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi"
        )
    assert response.status == 502
    assert backend_b.count()["requests"] == before


def test_reject_from_the_chooser_is_answered_and_the_connection_kept(
    backend_a: BackendProcess,
) -> None:
    async def refuse(head: RequestHead, attempt: int, exclude: frozenset[str]) -> Choice:
        raise Reject(503, "writes are held", (("Retry-After", "2"),))

    proxy = ProxyThread(refuse)
    try:
        sock, reader = connect(proxy.port)
        with sock:
            for _ in range(2):
                sock.sendall(b"GET /echo HTTP/1.1\r\nHost: t\r\n\r\n")
                response = read_response(reader)
                assert response.status == 503
                assert response.header("retry-after") == "2"
                assert b"writes are held" in response.body
    finally:
        proxy.close()


def test_mirror_gets_the_same_get_and_both_answers_are_reported(
    backend_a: BackendProcess, backend_b: BackendProcess
) -> None:
    with running_proxy([inst(backend_a)], mirror=inst(backend_b)) as proxy:
        response = get(proxy.port, "/echo?mirror=1")
        assert echo(response.body)["name"] == "a"
        deadline = time.monotonic() + 5
        while not proxy.observer.of("mirrored") and time.monotonic() < deadline:
            time.sleep(0.01)
        (_, target, primary, shadow, error) = proxy.observer.of("mirrored")[0]
    assert error is None
    assert target == "/echo?mirror=1"
    assert echo(primary.body)["name"] == "a"
    assert echo(shadow.body)["name"] == "b"


def test_graceful_close_finishes_in_flight_requests(backend_a: BackendProcess) -> None:
    proxy = ProxyThread(first_not_excluded([inst(backend_a)]))
    result: list[int] = []
    worker = threading.Thread(target=lambda: result.append(get(proxy.port, "/slow?ms=300").status))
    worker.start()
    time.sleep(0.1)
    proxy.close(grace=5)
    worker.join(5)
    assert result == [200]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", proxy.port), timeout=1).close()


# ---- big bodies through a proxy in its own process ----------------------------------------------
@pytest.fixture
def proxy_process(backend_a: BackendProcess) -> Iterator[tuple[int, psutil.Process]]:
    proc = subprocess.Popen(
        [sys.executable, str(HARNESS), f"{backend_a.host}:{backend_a.port}"],
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("PORT "), line
        yield int(line.split()[1]), psutil.Process(proc.pid)
    finally:
        proc.terminate()
        proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


class PeakRss:
    """Samples a process's RSS every few milliseconds while the block runs."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.start = process.memory_info().rss
        self.peak = self.start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _big_crc32(total: int) -> int:
    crc = 0
    for _ in range(total // len(BLOCK)):
        crc = zlib.crc32(BLOCK, crc)
    return crc


@pytest.mark.integration
def test_1gib_upload_streams_through_with_bounded_memory(
    proxy_process: tuple[int, psutil.Process],
) -> None:
    port, process = proxy_process
    sock, reader = connect(port, timeout=60)
    chunk = BLOCK * 16  # 1 MiB
    with sock, PeakRss(process) as rss:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % BIG)
        for _ in range(BIG // len(chunk)):
            sock.sendall(chunk)
        response = read_response(reader)
    body = echo(response.body)
    assert body["body_length"] == BIG
    assert body["crc32"] == _big_crc32(BIG)
    assert rss.peak - rss.start < RSS_GROWTH_LIMIT, (
        f"RSS grew by {(rss.peak - rss.start) >> 20} MiB"
    )


@pytest.mark.integration
def test_1gib_download_streams_through_with_bounded_memory(
    proxy_process: tuple[int, psutil.Process],
) -> None:
    port, process = proxy_process
    sock, reader = connect(port, timeout=60)
    buffer = bytearray(1 << 20)
    received = 0
    with sock, PeakRss(process) as rss:
        sock.sendall(b"GET /big?bytes=%d&chunked=1 HTTP/1.1\r\nHost: t\r\n\r\n" % BIG)
        head = reader.until(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert b"Transfer-Encoding: chunked" in head
        received = len(reader.buf)
        view = memoryview(buffer)
        while True:
            n = sock.recv_into(view)
            if n == 0:
                break
            received += n
            if buffer[max(0, n - 5) : n] == b"0\r\n\r\n" and received > BIG:
                break
    assert received > BIG  # the body plus chunk framing arrived
    assert rss.peak - rss.start < RSS_GROWTH_LIMIT, (
        f"RSS grew by {(rss.peak - rss.start) >> 20} MiB"
    )
