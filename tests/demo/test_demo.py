"""``changeover demo`` end to end: a real subprocess, embedded servers, the real controller.

Each run starts PostgreSQL (+ replica), Redis, the legacy app on 100k rows, the proxy, load
and three new-app instances, and takes a minute or two; the three tests are the issue's
"done when": a clean cutover ends on new with every row and write accounted for, an injected
error spike rolls back with nothing lost, and Ctrl-C leaves no process behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

DEMO_TIMEOUT_S = 420  # the demo's own goal is 5 minutes; CI shares two cores with other tests


def _demo(workdir: Path, *extra: str) -> tuple[int, list[dict[str, Any]], str]:
    proc = subprocess.run(
        [sys.executable, "-m", "changeover", "demo", "--json", "--workdir", str(workdir), *extra],
        capture_output=True,
        text=True,
        timeout=DEMO_TIMEOUT_S,
        check=False,
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc.returncode, events, proc.stderr


def _done(events: list[dict[str, Any]], stderr: str) -> dict[str, Any]:
    done = [e for e in events if e["event"] == "done"]
    assert done, f"no 'done' event; last events {events[-3:]}; stderr {stderr[-2000:]}"
    return done[0]


def test_the_demo_cuts_over_to_new_with_every_row_verified_and_no_write_lost(
    tmp_path: Path,
) -> None:
    code, events, stderr = _demo(tmp_path)
    done = _done(events, stderr)
    assert code == 0, (done, stderr[-2000:])
    assert done["outcome"] == "completed" and done["phases_passed"] == ["canary", "staged", "full"]
    assert done["weights"] == {"legacy": 0.0, "new": 100.0}
    assert done["verify"]["equal"] and done["verify"]["percent_equal"] == 100.0
    assert done["verify"]["rows"] >= 100_000
    writes = done["writes"]
    assert writes["acknowledged"] > 100 and writes["lost"] == 0, writes
    assert done["sync_drained"] and done["journal_ok"]
    assert Path(done["report"]).is_file()
    # the night's documents: the runbook and the monitoring exports, made from the demo plan
    documents = {name: Path(path) for name, path in done["documents"].items()}
    assert set(documents) == {"runbook", "prometheus_rules", "grafana_dashboard"}
    assert "migrate-handoff" in documents["runbook"].read_text(encoding="utf-8")
    assert "alert: CutoverRollbackErrorRate" in documents["prometheus_rules"].read_text("utf-8")
    assert json.loads(documents["grafana_dashboard"].read_text("utf-8"))["panels"]

    kinds = [e["event"] for e in events]
    for kind in ("services", "checks", "rollout.phase-started", "rollout.done"):
        assert kind in kinds, kind
    assert all(r["status"] == "pass" for r in events[kinds.index("checks")]["results"])
    actions = {e["action"]: e for e in events if e["event"] == "action.outcome"}
    assert actions["migrate.copy"]["detail"]["copied"] >= 100_000
    assert actions["migrate.handoff"]["ok"] and actions["migrate.handoff"]["detail"]["owner"] == (
        "new"
    )
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and {p["phase"] for p in progress} >= {"canary", "staged", "full"}
    assert any((p.get("sync_lag") or {}).get("head", 0) > 0 for p in progress)
    assert done["load"]["errors"] == 0 and done["load"]["achieved_rate"] > 0


def test_an_error_spike_in_phase_two_rolls_back_with_every_row_verified(tmp_path: Path) -> None:
    code, events, stderr = _demo(tmp_path, "--fault", "error-spike")
    done = _done(events, stderr)
    assert code == 0, (done, stderr[-2000:])
    assert done["outcome"] == "rolled_back" and done["phases_passed"] == ["canary"]
    assert done["rollback"]["mode"] == "immediate", done["rollback"]
    assert "error" in done["rollback"]["reason"]
    assert done["weights"] == {"legacy": 100.0, "new": 0.0}
    assert done["verify"]["equal"] and done["verify"]["percent_equal"] == 100.0
    assert done["writes"]["acknowledged"] > 0 and done["writes"]["lost"] == 0


def test_ctrl_c_mid_demo_stops_every_process_it_started(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "changeover", "demo", "--json", "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    started: set[int] = set()
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 180
        began = False
        for line in proc.stdout:
            # collect the process tree while it grows: servers, apps, proxy, load, follower
            started |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
            began = '"rollout.phase-started"' in line
            if began or time.monotonic() > deadline:
                break
        assert began, "the canary never began"
        time.sleep(3)  # mid-phase: the instance, the sync follower and the load are running
        started |= {c.pid for c in psutil.Process(proc.pid).children(recursive=True)}
        assert len(started) >= 6, started
        os.kill(proc.pid, signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130
    deadline = time.monotonic() + 10
    alive = [pid for pid in started if _running(pid)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [pid for pid in started if _running(pid)]
    assert not alive, [_describe(pid) for pid in alive]


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _describe(pid: int) -> str:
    try:
        return " ".join(psutil.Process(pid).cmdline())[:200]
    except psutil.NoSuchProcess:
        return f"{pid} (gone)"


pytestmark = pytest.mark.timeout(DEMO_TIMEOUT_S + 60)
