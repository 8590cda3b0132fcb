"""``changeover dashboard`` as an operator runs it: the bind rule, a taken port, and a real
process that serves, keeps its token out of its output and stops cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from changeover.cli import main
from dashboard.conftest import write_plan
from support.process import free_port, stop


@pytest.fixture(autouse=True)
def _no_tokens_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CHANGEOVER_DASHBOARD_TOKEN", raising=False)
    monkeypatch.delenv("CHANGEOVER_DASHBOARD_VIEWER_TOKEN", raising=False)


def test_listening_beyond_loopback_without_a_viewer_token_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["dashboard", "--plan", str(write_plan(tmp_path)), "--host", "0.0.0.0"])
    captured = capsys.readouterr()
    assert code == 2
    assert "refusing to listen on 0.0.0.0" in captured.err
    assert "--viewer-token-file" in captured.err and "Traceback" not in captured.err


def test_a_taken_port_is_a_plain_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["dashboard", "--plan", str(write_plan(tmp_path)), "--port", str(port)])
    captured = capsys.readouterr()
    assert code == 3
    assert f"cannot listen on 127.0.0.1:{port}" in captured.err and "--port" in captured.err


def test_the_command_serves_until_sigterm_and_never_prints_its_token(tmp_path: Path) -> None:
    plan = write_plan(tmp_path)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHANGEOVER_DASHBOARD")}
    process = subprocess.Popen(
        [sys.executable, "-m", "changeover", "dashboard", "--plan", str(plan), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                state = httpx.get(f"http://127.0.0.1:{port}/api/state", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "the dashboard did not answer within 30 s"
                time.sleep(0.2)
        assert state.status_code == 200
        assert state.json()["sections"]["plan"]["name"] == "dashboard test"
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=15)
    finally:
        stop(process)
    token = (tmp_path / ".changeover" / "dashboard-token").read_text().strip()
    assert process.returncode == 0, err
    assert f"dashboard on http://127.0.0.1:{port}" in out.decode()
    assert "dashboard-token" in out.decode()  # where the token is, not the token
    assert token not in out.decode() + err.decode()
    assert b"Traceback" not in err and b"dashboard stopped" in err
