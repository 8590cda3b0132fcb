"""``changeover watch`` end to end on a compressed schedule: real stub apps over HTTP, the real
journal, the real notifier posting to a local webhook receiver, the daemon as a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from changeover.cli import main
from notify.conftest import Receiver
from support.process import stop
from watch.conftest import Stub, events, wait_for, wait_receiver, write_plan

HOUR = timedelta(hours=1)


def start_watch(plan: Path, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "changeover", "watch", "--plan", str(plan), *extra]
    return subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ}
    )


def finish(process: subprocess.Popen[bytes], timeout: float = 40) -> tuple[int, str]:
    try:
        _, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        stop(process)
        raise
    return process.returncode, err.decode()


def test_compressed_schedule_alerts_escalates_unacknowledged_and_not_acknowledged(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, new = apps
    watch = "{every: 1h, from: 0h, until: 5h, escalate_after: 6h}"
    plan = write_plan(tmp_path, new, legacy, receiver.url(), watch=watch)
    new.break_after = 2  # the feature breaks after the second round
    process = start_watch(plan, "--compress", "3600")  # an hour per second: 5 rounds
    try:
        first = wait_for(tmp_path, "watch.alert", 1)[0]
        assert (
            main(["watch", "ack", first.payload["alert"], "--by", "alice", "--plan", str(plan)])
            == 0
        )
    finally:
        code, err = finish(process)
    assert code == 1, err  # rounds failed
    rounds = [e.payload for e in events(tmp_path, "watch.round")]
    anchor = datetime.fromisoformat("2026-12-01T02:00:00+00:00")
    assert [r["due"] for r in rounds] == [(anchor + HOUR * h).isoformat() for h in range(5)]
    assert [bool(r["failed"]) for r in rounds[:2]] == [False, False]
    assert all(r["failed"][0]["step"] == "feature-works" for r in rounds[2:])
    assert all(r["steps"] == 2 and r["missed"] == [] for r in rounds)
    assert "500" in rounds[-1]["failed"][0]["reason"]

    alerts = [e.payload for e in events(tmp_path, "watch.alert")]
    assert len(alerts) == 3 and all(a["role"] == "on-call" for a in alerts)
    escalated = [e.payload for e in events(tmp_path, "watch.escalated")]
    # The acknowledged alert goes no further; the two others reach the manager after 6 h.
    assert sorted(e["alert"] for e in escalated) == sorted(a["alert"] for a in alerts[1:])
    assert all(e["role"] == "escalation" and e["after"] == "6h" for e in escalated)
    for alert in alerts[1:]:
        at = next(
            datetime.fromisoformat(e["at"]) for e in escalated if e["alert"] == alert["alert"]
        )
        assert at - datetime.fromisoformat(alert["raised_at"]) >= 6 * HOUR
    ack = events(tmp_path, "watch.ack")[0]
    assert ack.payload == {"alert": first.payload["alert"], "by": "alice"} and ack.actor == "alice"

    bodies = wait_receiver(receiver, 5)
    titles = [b["title"] for b in bodies]
    assert sum("failed" in t and "ESCALATED" not in t for t in titles) == 3, titles
    assert sum(t.startswith("ESCALATED") for t in titles) == 2, titles
    first_alert = next(b for b in bodies if "failed" in b["title"])
    assert "On-Call (Olga, +1 555 0100)" in first_alert["message"]
    assert "feature-works" in first_alert["message"]
    assert "changeover watch ack" in first_alert["message"]
    escalation = next(b for b in bodies if b["title"].startswith("ESCALATED"))
    assert "Escalation (Manager)" in escalation["message"]
    assert first.payload["alert"] not in " ".join(
        b["title"] for b in bodies if "ESCALATED" in b["title"]
    )
    assert "round due" in err and "escalated to escalation" in err


def test_sigterm_stops_between_rounds_and_a_restart_resumes_without_repeating_a_round(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver
) -> None:
    legacy, new = apps
    plan = write_plan(tmp_path, new, legacy, receiver.url(), watch="{every: 1h, until: 8h}")
    process = start_watch(plan, "--compress", "3600")
    wait_for(tmp_path, "watch.round", 3)
    process.send_signal(signal.SIGTERM)
    code, err = finish(process)
    assert code == 0, err
    stopped = events(tmp_path, "watch.stopped")
    assert [e.payload["reason"] for e in stopped] == ["SIGTERM"]
    before = [e.payload["due"] for e in events(tmp_path, "watch.round")]
    assert 3 <= len(before) < 8

    code, err = finish(start_watch(plan, "--compress", "3600"))
    assert code == 0, err
    dues = [e.payload["due"] for e in events(tmp_path, "watch.round")]
    anchor = datetime.fromisoformat("2026-12-01T02:00:00+00:00")
    assert dues == [(anchor + HOUR * h).isoformat() for h in range(8)]  # each once, in order
    started = [e.payload for e in events(tmp_path, "watch.started")]
    assert [s["rounds_done"] for s in started] == [0, len(before)]
    assert receiver.requests == []  # nothing failed: nobody was alerted


def test_once_runs_only_the_round_due_now_names_the_missed_ones_and_never_repeats(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, new = apps
    cutover = (datetime.now(UTC) - timedelta(minutes=95)).replace(microsecond=0)
    plan = write_plan(
        tmp_path,
        new,
        legacy,
        receiver.url(),
        watch="{every: 30m, until: 2h}",
        cutover_at=cutover.isoformat().replace("+00:00", "Z"),
    )
    assert main(["watch", "--once", "--plan", str(plan)]) == 0
    rounds = [e.payload for e in events(tmp_path, "watch.round")]
    assert [r["due"] for r in rounds] == [(cutover + timedelta(minutes=90)).isoformat()]
    assert rounds[0]["missed"] == [
        (cutover + timedelta(minutes=m)).isoformat() for m in (0, 30, 60)
    ]
    assert rounds[0]["offset"] == "90m"
    assert main(["watch", "--once", "--plan", str(plan)]) == 0
    assert len(events(tmp_path, "watch.round")) == 1
    assert "watch schedule complete" in capsys.readouterr().out


def test_once_before_the_cutover_runs_nothing_and_says_when_the_first_round_is(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, new = apps
    plan = write_plan(tmp_path, new, legacy, receiver.url(), cutover_at="2099-01-01T00:00:00Z")
    assert main(["watch", "--once", "--plan", str(plan)]) == 0
    assert events(tmp_path, "watch.round") == []
    assert "next round due at 2099-01-01T00:00:00+00:00" in capsys.readouterr().out


def test_a_journaled_rollout_done_anchors_the_schedule(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver
) -> None:
    from changeover.journal import open_journal

    legacy, new = apps
    plan = write_plan(tmp_path, new, legacy, receiver.url(), cutover_at="2099-01-01T00:00:00Z")
    with open_journal(None, tmp_path) as journal:
        done = journal.append("rollout.done", {"phases": ["full"]})
    assert main(["watch", "--once", "--plan", str(plan)]) == 0
    rounds = [e.payload for e in events(tmp_path, "watch.round")]
    assert [r["due"] for r in rounds] == [done.time.isoformat()]


def test_ack_of_an_unknown_alert_is_a_plain_error(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver, capsys: pytest.CaptureFixture[str]
) -> None:
    legacy, new = apps
    plan = write_plan(tmp_path, new, legacy, receiver.url())
    assert main(["watch", "ack", "nope", "--by", "alice", "--plan", str(plan)]) == 2
    assert "no watch alert 'nope' in the journal" in capsys.readouterr().err
