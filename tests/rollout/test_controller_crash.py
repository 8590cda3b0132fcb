"""kill -9 of `changeover run` at 20 random moments: every restart resumes, nothing repeats.

Real processes: two backends, the built-in proxy (`changeover proxy serve`), the controller
(`changeover run`) in its own session killed with SIGKILL; bounded load on loopback meanwhile.
"""

from __future__ import annotations

import collections
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from changeover.engine.runbook import Runbook
from changeover.journal import ACTION_INTENT, ACTION_OUTCOME
from changeover.rollout.state import PHASE_PASSED, RolloutState
from support.backends import start_backend
from support.proxy_process import run_proxy, write_config

PLAN = """
version: 1
name: crash test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Deployment Lead}}]
systems:
  router: {{kind: router, type: builtin, admin: "{admin}", token: "${{PROXY_TOKEN}}"}}
  legacy: {{kind: app, url: "http://127.0.0.1:1"}}
  new: {{kind: app, url: "http://127.0.0.1:2"}}
stages:
{stages}
"""
STAGE = """
  - id: {id}
    title: Phase {weight}%
    phase:
      weight: {weight}
      bake: {{min: 1s, max: 30s}}
      decision: {{title: go on, mode: auto}}
    sections:
      - title: Deployment
        steps:
          - id: {id}-route
            title: Route {weight}%
            action: {{route: {{weight: {weight}}}}}
      - title: Monitoring
        steps:
          - id: {id}-errors
            title: Error rate < 3%
            gate: {{metric: error_rate, of: new, below: 3%}}
"""


def test_kill_9_at_twenty_moments_resumes_to_the_end_without_repeating_an_action(
    tmp_path: Path,
) -> None:
    with start_backend("legacy") as legacy, start_backend("new") as new:
        config = write_config(tmp_path, {"legacy": [legacy], "new": [new]})
        with run_proxy(config) as proxy:
            stages = "".join(
                STAGE.format(id=name, weight=weight)
                for name, weight in (("canary", 10), ("staged", 50), ("full", 100))
            )
            plan = tmp_path / "changeover.yaml"
            plan.write_text(PLAN.format(admin=proxy.admin, stages=stages), encoding="utf-8")
            env = {**os.environ, "PROXY_TOKEN": proxy.token}
            stop = threading.Event()
            load = threading.Thread(target=_load, args=(proxy.url, stop))
            load.start()
            rng = random.Random(20)
            kills = 0
            try:
                while kills < 20:
                    controller = _start(plan, env)
                    time.sleep(rng.uniform(0.3, 2.0))
                    if controller.poll() is not None:
                        break  # finished before this kill: the rest of the test checks it
                    os.killpg(controller.pid, signal.SIGKILL)
                    controller.wait(10)
                    kills += 1
                final = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "changeover",
                        "run",
                        "--plan",
                        str(plan),
                        "--interval",
                        "0.2",
                        "--json",
                    ],
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=180,
                )
            finally:
                stop.set()
                load.join()
            assert final.returncode == 0, final.stdout + final.stderr
            assert kills >= 10, "the run ended before most kills: the test tested little"
            weights = proxy.admin_call("GET", "/v1/state")
            assert weights["weights"] == {"legacy": 0, "new": 100} or weights["weights"] == {
                "legacy": 0.0,
                "new": 100.0,
            }, weights
            with Runbook.open(plan) as runbook:
                events = list(runbook.journal.events())
            state = RolloutState.from_events(events)
            assert state.done and state.passed == ["canary", "staged", "full"]
            # No action completed twice, and each phase passed exactly once.
            done = collections.Counter(
                e.payload.get("step")
                for e in events
                if e.kind == ACTION_OUTCOME and e.payload.get("ok") and e.payload.get("step")
            )
            assert all(count == 1 for count in done.values()), done
            assert set(done) == {"canary-route", "staged-route", "full-route"}
            passed = [e.payload["phase"] for e in events if e.kind == PHASE_PASSED]
            assert passed == ["canary", "staged", "full"]
            # an action cut off between intent and outcome was finished by the next run
            intents = {e.payload.get("step") for e in events if e.kind == ACTION_INTENT}
            assert {"canary-route", "staged-route", "full-route"} <= intents


def _start(plan: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "changeover", "run", "--plan", str(plan), "--interval", "0.2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _load(url: str, stop: threading.Event) -> None:
    """Bounded load on loopback until stopped (at most five minutes)."""
    deadline = time.monotonic() + 300
    with httpx.Client(timeout=5) as client:
        while not stop.is_set() and time.monotonic() < deadline:
            client.cookies.clear()  # each request a new session, so the weights split them
            try:
                client.get(f"{url}/echo")
            except httpx.HTTPError:
                time.sleep(0.01)
