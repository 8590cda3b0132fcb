"""Real local endpoints for notification tests: an HTTP webhook receiver and an SMTP server.

Both listen on loopback free ports, record what they receive and stop at the end of the test.
The webhook receiver answers with a status the test chooses (200, or 500 to refuse).
"""

from __future__ import annotations

import asyncio
import functools
import json
import socket
import threading
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from changeover.journal import Journal, open_journal
from support.process import free_port


@dataclass
class Receiver:
    """What the webhook receiver got: (path, JSON body) per request; ``status`` to answer."""

    port: int
    status: int = 200
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def url(self, scheme: str = "json", path: str = "/hook") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            state.requests.append((self.path, json.loads(body or b"{}")))
            state.arrived.set()
            self.send_response(state.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections (the kernel's backlog) but never answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    try:
        yield int(sock.getsockname()[1])
    finally:
        sock.close()


@dataclass
class Mailbox:
    port: int
    user: str
    password: str
    messages: list[Envelope] = field(default_factory=list)

    def url(self, to: str = "oncall@example.org") -> str:
        return (
            f"mailto://{self.user}:{self.password}@127.0.0.1:{self.port}"
            f"?from=changeover@example.org&to={to}&mode=insecure"
        )


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    """An SMTP server (aiosmtpd) requiring login; the password is a canary for leak tests."""
    box = Mailbox(port=free_port(), user="changeover", password="smtp-CANARY-pw-7f3a91")

    class Handler:
        async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
            box.messages.append(envelope)
            return "250 OK"

    def authenticate(
        server: Any, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and data.password == box.password.encode()
        return AuthResult(success=ok)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        authenticator=authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    store = open_journal(None, tmp_path)
    try:
        yield store
    finally:
        store.close()


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop, bounded to 30 s (no pytest-asyncio here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(asyncio.wait_for(test(*args, **kwargs), 30))

    return run
