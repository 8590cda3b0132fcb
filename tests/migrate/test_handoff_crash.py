"""kill -9 of ``migrate handoff`` at several points while an app writes through the built-in proxy.

The handoff runs as a real process in its own session and its whole process group gets SIGKILL
right after it reports a chosen step (its step lines on stderr make the point deterministic).
Writes the proxy holds meanwhile wait; running the command again finishes the handoff and
releases them. At the end every acknowledged write exists exactly once on both sides and verify
is equal. (kill -9 of ``migrate sync`` under writes is covered by test_crash.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from changeover.migrate.handoff import read_handoff
from migrate.test_handoff_proxy import (
    Stage,
    assert_every_acknowledged_write_is_there_once,
    catch_up_and_verify,
    following,
    stage,
)
from support.write_apps import Writer

pytestmark = pytest.mark.integration

GAP = 0.5  # seconds between the kill and the rerun: writes pile up in the proxy's hold


def handoff_argv(s: Stage, *, back: bool) -> list[str]:
    return [
        sys.executable,
        "-m",
        "changeover",
        "migrate",
        "handoff",
        "--source",
        str(s.db),
        "--target",
        "${TARGET_URL}",
        "--proxy",
        s.proxy.admin,
        "--proxy-token",
        "${PROXY_TOKEN}",
        *(["--back"] if back else []),
    ]


def environment(s: Stage) -> dict[str, str]:
    return {**os.environ, "TARGET_URL": s.pg_url, "PROXY_TOKEN": s.proxy.token}


def kill_after_step(s: Stage, step: str, *, back: bool) -> str:
    """Start the handoff, SIGKILL its process group once it reports ``step``; its stderr."""
    process = subprocess.Popen(
        handoff_argv(s, back=back),
        env=environment(s),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        assert process.stderr is not None
        deadline = time.monotonic() + 30
        for line in process.stderr:
            seen.append(line)
            if line.strip().startswith(f"{step}:"):
                break
            assert time.monotonic() < deadline, "".join(seen)
        else:
            raise AssertionError(f"the handoff ended before {step!r}:\n{''.join(seen)}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL, "".join(seen)
    return "".join(seen)


def rerun(s: Stage, *, back: bool) -> str:
    done = subprocess.run(
        handoff_argv(s, back=back), env=environment(s), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize(
    ("kill_to_new", "kill_back"),
    [
        # before anything changed inside the pause; and before the reverse changelog drained
        ("hold writes", "hold writes"),
        # verified, capture not swapped yet; and capture swapped, owner not flipped yet
        ("verify changed keys", "swap capture"),
        # capture swapped (PostgreSQL says new), the proxy still routes to legacy, holding
        ("stop forward capture", "drain reverse changelog"),
    ],
)
def test_handoff_killed_while_holding_writes_finishes_on_rerun_and_loses_nothing(
    tmp_path: Path, pg_url: str, kill_to_new: str, kill_back: str
) -> None:
    kills: list[float] = []
    with stage(tmp_path, pg_url, max_hold="20s") as s, following(s.db, pg_url, s.plan) as errors:
        writer = Writer(s.proxy.url, rate=200, seconds=20, prefix="crash").start()
        try:
            for step, back, owner in ((kill_to_new, False, "new"), (kill_back, True, "legacy")):
                time.sleep(0.8)
                kill_after_step(s, step, back=back)
                killed = time.monotonic()
                assert s.proxy.admin_call("GET", "/v1/state")["holding"] is True
                time.sleep(GAP)
                rerun(s, back=back)
                kills.append(killed)
                assert read_handoff(pg_url).owner == owner
                state = s.proxy.admin_call("GET", "/v1/state")
                assert (state["holding"], state["write_owner"]) == (False, owner)
            time.sleep(0.5)
        finally:
            writer.stop()
            writer.join()
    assert not errors, f"migrate sync failed: {errors[0]!r}"
    for killed in kills:
        # Sent before the kill, answered after the gap in which no handoff ran: held across it.
        held = [o for o in writer.outcomes if o.sent < killed and o.sent + o.seconds > killed + GAP]
        # How many depends on the writer's pace on a loaded machine; a few prove the point.
        assert len(held) >= 3, f"only {len(held)} writes were held across the kill"
    catch_up_and_verify(s)
    assert_every_acknowledged_write_is_there_once(s, writer)
    assert {o.app for o in writer.outcomes} == {"legacy", "new"}
