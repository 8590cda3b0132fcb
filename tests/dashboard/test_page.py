"""The page in a real browser during a real local cutover: Debian's Chromium driven by Playwright.

A controller runs the plan's phases in a background thread (stand-in apps behind the built-in
proxy, bounded load on loopback, a sample every 0.5 s, a manual decision at each phase) while
the page is open: its numbers change as samples arrive, approving without the token is refused
on the page, approving with it lets the controller proceed, and a confirmed rollback rolls the
controller back. Screenshots at desktop and phone width go to .ci/artifacts/.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from changeover.engine.runbook import Runbook
from changeover.loadgen.client import send
from changeover.rollout.controller import Controller, RunResult
from changeover.rollout.state import APPROVED, PHASE_STARTED, ROLLBACK_REQUESTED
from dashboard.conftest import new_tokens, served
from rollout.test_controller import reader, rig, write_plan
from support.browser import artifact

DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}


class Cutover:
    """A real local cutover in a thread of its own, until it ends or ``stop`` is called."""

    def __init__(self, tmp_path: Path, plan: Path) -> None:
        self.tmp_path, self.plan = tmp_path, plan
        self.result: RunResult | None = None
        self.error: BaseException | None = None
        self.weights: dict[str, float] = {}
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cutover", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._abort.set()
        self._thread.join(30)
        assert not self._thread.is_alive(), "the cutover did not stop within 30 s"

    def wait(self, what: str, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Poll ``done`` until it holds; a failed cutover fails at once, saying why."""
        deadline = time.monotonic() + timeout
        while not done():
            assert self.error is None, f"the cutover failed: {self.error!r}"
            assert time.monotonic() < deadline, f"timed out after {timeout:g} s: {what}"
            time.sleep(0.1)

    def _run(self) -> None:
        try:
            asyncio.run(self._scenario())
        except BaseException as exc:
            self.error = exc

    async def _scenario(self) -> None:
        async with rig(self.tmp_path) as r:
            stop = asyncio.Event()
            traffic = asyncio.create_task(_paced_load(r.url, stop))
            with Runbook.open(self.plan) as runbook:
                controller = Controller(
                    runbook, r.router, reader(r.source), interval=0.2, sample_s=0.5
                )
                run = asyncio.create_task(controller.run())
                try:
                    while not run.done() and not self._abort.is_set():
                        self.weights = dict((await r.router.weights()).percent)
                        await asyncio.sleep(0.1)
                    if run.done():
                        self.result = run.result()
                        self.weights = dict((await r.router.weights()).percent)
                finally:
                    run.cancel()
                    stop.set()
                    await asyncio.gather(run, traffic, return_exceptions=True)


async def _paced_load(url: str, stop: asyncio.Event, deadline_s: float = 90.0) -> None:
    """A few hundred requests a second on loopback: enough for the charts, light on the CPU
    the browser shares."""
    ends = time.monotonic() + deadline_s
    while not stop.is_set() and time.monotonic() < ends:
        await send(url, 40, concurrency=4)
        await asyncio.sleep(0.1)


@pytest.fixture
def cutover(tmp_path: Path) -> Iterator[Cutover]:
    running = Cutover(tmp_path, write_plan(tmp_path, ("manual", "manual", "auto")))
    running.start()
    try:
        yield running
    finally:
        running.stop()


def _events(plan: Path, kind: str) -> list[Any]:
    with Runbook.open(plan) as runbook:
        return list(runbook.journal.events(kinds=[kind]))


def test_the_page_follows_a_live_cutover_approves_with_the_token_and_rolls_back(
    browser: Any, cutover: Cutover
) -> None:
    tokens = new_tokens()
    with served(cutover.plan, tokens, poll_s=0.25) as board:
        context = browser.new_context(viewport=DESKTOP)
        page = context.new_page()
        page.goto(board.url)

        # Live: the requests/s of the new app and the gate's value change between two reads.
        rps = page.locator("#rps-new")
        rps.wait_for(timeout=20_000)
        cutover.wait("a first number", lambda: rps.text_content() not in ("", "–"))
        first = rps.text_content()
        cutover.wait("the next sample", lambda: rps.text_content() != first, timeout=10)
        gate = page.locator("#gate-canary-errors .observed")
        cutover.wait("a gate value", lambda: gate.text_content() not in ("", "–"), timeout=10)

        # The canary waits for a decision: approving without the token is refused on the page.
        approve = page.locator("#approve-btn")
        approve.wait_for(state="visible", timeout=20_000)
        assert approve.text_content() == "Approve canary…"
        approve.click()
        page.fill("#f-by", "alice")
        page.fill("#f-token", "")
        page.click("#confirm-ok")
        error = page.locator("#confirm-error")
        cutover.wait("the refusal", lambda: "operator token" in (error.text_content() or ""))
        assert page.locator("#confirm").is_visible()
        assert _events(cutover.plan, APPROVED) == [] and cutover.weights.get("new") == 10

        # With the token the controller proceeds to the next phase.
        page.fill("#f-token", tokens.operator)
        page.click("#confirm-ok")
        page.locator("#confirm").wait_for(state="hidden", timeout=5_000)
        cutover.wait("phase staged at 50 %", lambda: cutover.weights.get("new") == 50)
        (approved,) = _events(cutover.plan, APPROVED)
        assert approved.actor == "alice" and approved.payload == {"phase": "canary"}
        assert [e.payload["phase"] for e in _events(cutover.plan, PHASE_STARTED)] == [
            "canary",
            "staged",
        ]
        cutover.wait("the page to show phase staged", lambda: "staged" in page.inner_text("#phase"))
        page.screenshot(path=str(artifact("dashboard-desktop.png")), full_page=True)

        # Roll back (confirmed, immediate): the controller rolls back.
        page.click("#rollback-btn")
        page.check('input[name="mode"][value="immediate"]')
        page.fill("#f-reason", "checkout errors reported by support")
        assert page.input_value("#f-token") == tokens.operator  # kept for this page only
        page.click("#confirm-ok")
        page.locator("#confirm").wait_for(state="hidden", timeout=5_000)
        cutover.wait("the controller to roll back", lambda: cutover.result is not None, timeout=30)
        assert cutover.error is None, cutover.error
        assert cutover.result is not None and cutover.result.outcome == "rolled_back"
        assert cutover.result.rollback is not None
        assert cutover.result.rollback["reason"] == "checkout errors reported by support"
        assert cutover.weights.get("new") == 0
        (request,) = _events(cutover.plan, ROLLBACK_REQUESTED)
        assert request.actor == "alice"
        status = page.locator("#status")
        cutover.wait(
            "the page showing the rollback", lambda: status.text_content() == "rolled back"
        )
        page.screenshot(path=str(artifact("dashboard-desktop-rolled-back.png")), full_page=True)
        context.close()

        # Phone width: the same page, stacked, still showing the state.
        phone = browser.new_context(viewport=PHONE, is_mobile=True, has_touch=True)
        small = phone.new_page()
        small.goto(board.url)
        small_status = small.locator("#status")
        cutover.wait("the phone page", lambda: small_status.text_content() == "rolled back")
        width = small.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page is {width}px wide at phone width"
        small.screenshot(path=str(artifact("dashboard-phone.png")), full_page=True)
        phone.close()
