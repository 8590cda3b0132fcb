"""A small world for the watch: stub apps on loopback that can start failing, a plan around them,
the webhook receiver of the notification tests, and a way to wait for journal events.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from changeover.journal import open_journal
from changeover.journal.events import Event
from notify.conftest import Receiver, receiver  # noqa: F401  (the fixture, shared)


@dataclass
class Stub:
    """An app answering /healthz and /api/feature; ``broken`` makes the feature answer 500
    (from the start, or once it answered ``break_after`` feature requests)."""

    name: str
    port: int = 0
    broken: bool = False
    break_after: int | None = None  # answer this many feature requests, then break
    feature_hits: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def serve(stub: Stub) -> Iterator[Stub]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status = 200
            if self.path.startswith("/api/feature"):
                stub.feature_hits += 1
                if stub.break_after is not None and stub.feature_hits > stub.break_after:
                    stub.broken = True
            if self.path.startswith("/api/feature") and stub.broken:
                status = 500
            elif not self.path.startswith(("/healthz", "/api/feature")):
                status = 404
            body = json.dumps({"ok": status == 200, "app": stub.name}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    stub.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def apps() -> Iterator[tuple[Stub, Stub]]:
    """The legacy and the new app, both healthy."""
    with serve(Stub("legacy")) as legacy, serve(Stub("new")) as new:
        yield legacy, new


def write_plan(
    tmp_path: Path,
    new: Stub,
    legacy: Stub,
    hook: str,
    *,
    watch: str = "{every: 1h, from: 0h, until: 5h, escalate_after: 3h}",
    cutover_at: str = "2026-12-01T02:00:00Z",
) -> Path:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        f"""\
version: 1
name: watch test
cutover_at: {cutover_at}
notify: ["{hook}"]
contacts:
  - {{role: on-call, title: On-Call, name: Olga, phone: "+1 555 0100"}}
  - {{role: escalation, title: Escalation, name: Manager}}
systems:
  legacy: {{kind: app, url: "{legacy.url}"}}
  new: {{kind: app, url: "{new.url}"}}
stages:
  - id: post-cutover
    title: Post-Cutover
    sections:
      - title: Watch
        steps:
          - {{id: watch-hourly, title: Check metrics hourly, action: {{watch: {watch}}}}}
          - id: new-healthy
            title: New app healthy
            check: {{http: {{system: new, path: /healthz, timeout: 3}}}}
          - id: feature-works
            title: Main feature works
            check: {{http: {{system: new, path: /api/feature, timeout: 3}}}}
""",
        encoding="utf-8",
    )
    return plan


def events(tmp_path: Path, *kinds: str) -> list[Event]:
    with open_journal(None, tmp_path) as journal:
        return list(journal.events(kinds=kinds or None))


def wait_for(tmp_path: Path, kind: str, count: int = 1, timeout: float = 30) -> list[Event]:
    """Poll the plan's journal until ``count`` events of ``kind`` are there."""
    deadline = time.monotonic() + timeout
    found: list[Event] = []
    while time.monotonic() < deadline:
        if (tmp_path / ".changeover" / "journal.db").exists():
            found = events(tmp_path, kind)
            if len(found) >= count:
                return found
        time.sleep(0.05)
    raise AssertionError(f"only {len(found)} {kind} events after {timeout} s")


def wait_receiver(hook: Receiver, count: int, timeout: float = 15) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(hook.requests) < count:
        time.sleep(0.05)
    return [body for _, body in hook.requests]
