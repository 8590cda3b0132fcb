"""A tiny app instance for the cache-warm tests: answers GETs on a loopback port with a status
chosen per path (200 unless told otherwise) and records every path it was asked for."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class WarmTarget:
    url: str
    statuses: dict[str, int] = field(default_factory=dict)  # path (with query) → status
    seen: list[str] = field(default_factory=list)  # paths asked for, in order


@contextlib.contextmanager
def warm_target() -> Iterator[WarmTarget]:
    """Serve until the block ends; the server thread is stopped and joined on the way out."""
    target = WarmTarget(url="")
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            with lock:
                target.seen.append(self.path)
                status = target.statuses.get(self.path, 200)
            body = b'{"items": []}'
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    target.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield target
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
