"""The dashboard under test: a real server on a loopback port, in a thread with its own loop.

``served(plan, tokens)`` opens the plan's runbook, starts ``Dashboard`` on 127.0.0.1:0 and
yields it running; ``page_session(client)`` loads the page as a browser would and returns the
CSRF token its session cookie is bound to.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from changeover.dashboard.app import Dashboard
from changeover.dashboard.auth import Tokens
from changeover.engine.runbook import Runbook

PLAN = """
version: 1
name: dashboard test
cutover_at: 2026-12-01T02:00:00Z
contacts:
  - {role: lead, title: Deployment Lead, name: Ana, phone: "+1 555 0100"}
war_room: {slack_channel: "#cutover", conference_bridge: "https://meet.example.test/cutover"}
systems:
  legacy: {kind: app, url: "http://127.0.0.1:1"}
  new: {kind: app, url: "http://127.0.0.1:2"}
  api: {kind: http, url: "http://127.0.0.1:3", headers: {Authorization: "${DASHBOARD_TEST_SECRET}"}}
stages:
  - id: pre
    title: Pre-deployment
    window: {opens: -72h, due: -24h}
    sections:
      - title: Team
        steps:
          - id: war-room
            title: War room open
            manual: {role: lead}
  - id: canary
    title: Phase 10%
    phase:
      weight: 10
      bake: {min: 1s, max: 20s}
      decision: {title: go on, mode: manual}
    sections:
      - title: Monitoring
        steps:
          - id: canary-errors
            title: Error rate < 3%
            gate: {metric: error_rate, of: new, below: 3%}
rollback:
  immediate:
    - id: rollback-error-rate
      title: Error rate > 5% sustained
      gate: {metric: error_rate, of: new, above: 5%, sustained: 1s}
"""


def write_plan(tmp_path: Path) -> Path:
    path = tmp_path / "changeover.yaml"
    path.write_text(PLAN, encoding="utf-8")
    return path


def new_tokens(viewer: bool = False) -> Tokens:
    return Tokens(secrets.token_urlsafe(24), secrets.token_urlsafe(24) if viewer else None, "test")


@contextlib.contextmanager
def served(plan: Path, tokens: Tokens, *, poll_s: float = 0.1) -> Iterator[Dashboard]:
    """The dashboard serving ``plan`` on a free loopback port until the block ends."""
    started = threading.Event()
    failure: list[BaseException] = []
    holder: dict[str, object] = {}

    async def main() -> None:
        stop = asyncio.Event()
        holder["loop"], holder["stop"] = asyncio.get_running_loop(), stop
        with Runbook.open(plan) as runbook:
            board = Dashboard(runbook, tokens, host="127.0.0.1", port=0, poll_s=poll_s)
            holder["board"] = board
            await board.start()
            started.set()
            try:
                await stop.wait()
            finally:
                await board.close()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            failure.append(exc)
            started.set()

    thread = threading.Thread(target=run, name="dashboard", daemon=True)
    thread.start()
    assert started.wait(30), "the dashboard did not start within 30 s"
    if failure:
        raise failure[0]
    try:
        board = holder["board"]
        assert isinstance(board, Dashboard)
        yield board
    finally:
        loop, stop = holder["loop"], holder["stop"]
        assert isinstance(loop, asyncio.AbstractEventLoop) and isinstance(stop, asyncio.Event)
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive(), "the dashboard did not stop within 30 s"
        if failure:
            raise failure[0]


def page_session(client: httpx.Client, **headers: str) -> str:
    """Load the page (which sets the session cookie) and return its CSRF token."""
    page = client.get("/", headers=headers)
    assert page.status_code == 200, page.text
    found = re.search(r'<meta name="csrf-token" content="([^"]+)">', page.text)
    assert found, "the page carries no CSRF token"
    return found.group(1)
