"""The command probe running real programs: exit codes, output matching, timeouts, secrets."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

import psutil
import pytest
from pydantic import ValidationError

from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.command import Command, CommandParams, CommandRaw, tail

PY = sys.executable


def check(ctx: ProbeContext | None = None, **params: object) -> CheckResult:
    return asyncio.run(
        run_probe("command", CommandParams.model_validate(params), ctx or ProbeContext())
    )


def test_passes_when_exit_code_and_output_match() -> None:
    result = check(
        argv=[PY, "-c", "import sys; print('go version go1.22.3 linux/amd64')"],
        stdout_regex=r"go1\.2[2-9]",
    )
    assert result.status is Status.PASS, result.reason
    assert result.evidence[0].value == 0
    assert result.details["stdout_tail"] == "go version go1.22.3 linux/amd64"


def test_fails_on_unexpected_exit_code() -> None:
    result = check(argv=[PY, "-c", "import sys; sys.stderr.write('boom\\n'); sys.exit(3)"])
    assert result.status is Status.FAIL
    assert result.reason == f"{PY} exited with 3, expected 0"
    assert result.details["stderr_tail"] == "boom"


def test_passes_when_expected_nonzero_exit_code_is_seen() -> None:
    result = check(argv=[PY, "-c", "raise SystemExit(2)"], exit_code=2)
    assert result.status is Status.PASS, result.reason


def test_fails_when_stdout_does_not_match() -> None:
    result = check(argv=[PY, "-c", "print('go1.19')"], stdout_regex=r"go1\.2[2-9]")
    assert result.status is Status.FAIL
    assert result.reason == rf"stdout of {PY} does not match /go1\.2[2-9]/"


def test_matches_stderr_line_by_line() -> None:
    script = "import sys; sys.stderr.write('warming up\\nmigrations: 0 pending\\n')"
    result = check(argv=[PY, "-c", script], stderr_regex=r"^migrations: 0 pending$")
    assert result.status is Status.PASS, result.reason


def test_fails_plainly_when_program_is_not_installed() -> None:
    result = check(argv=["no-such-program-xyz", "version"])
    assert result.status is Status.FAIL
    assert result.reason == "command not found: no-such-program-xyz (is it installed and on PATH?)"


def test_runs_in_cwd_relative_to_the_plan(tmp_path: Path) -> None:
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / "VERSION").write_text("2.4.0\n")
    result = check(
        ProbeContext(base_dir=tmp_path),
        argv=[PY, "-c", "print(open('VERSION').read())"],
        cwd="deploy",
        stdout_regex=r"^2\.4\.0$",
    )
    assert result.status is Status.PASS, result.reason


def test_fails_when_cwd_does_not_exist(tmp_path: Path) -> None:
    result = check(ProbeContext(base_dir=tmp_path), argv=[PY, "-V"], cwd="nowhere")
    assert result.status is Status.FAIL
    assert result.reason == f"working directory does not exist: {tmp_path / 'nowhere'}"


def test_timeout_kills_the_command_and_its_children(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    # The shell starts `sleep 30` as a child and waits: killing only the shell would leave it.
    script = f"sleep 30 & echo $! > {pid_file}; wait"
    started = time.monotonic()
    result = check(argv=["sh", "-c", script], timeout=1)
    assert result.status is Status.FAIL
    assert "timeout" in result.reason
    assert time.monotonic() - started < 5
    child = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _running(child):
        time.sleep(0.05)
    assert not _running(child), "sleep 30 survived the probe timeout"


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_secret_from_env_never_appears_in_the_result(tmp_path: Path) -> None:
    token = "tok-3f9a7c1e-canary"
    token_file = tmp_path / "token"
    token_file.write_text("file-secret-88d2b1\n")
    ctx = ProbeContext(base_dir=tmp_path, environ={"DEPLOY_TOKEN": token})
    script = (
        "import os, sys\n"
        "print('token is', os.environ['API_TOKEN'])\n"
        "sys.stderr.write('file secret ' + os.environ['FILE_TOKEN'] + '\\n')\n"
        "sys.exit(1)\n"
    )
    result = check(
        ctx,
        argv=[PY, "-c", script],
        env={"API_TOKEN": "${DEPLOY_TOKEN}", "FILE_TOKEN": {"file": "token"}},
        stdout_regex="never",
    )
    assert result.status is Status.FAIL
    assert result.details["stdout_tail"] == "token is ***"  # the command did see and echo it
    everything = repr(result) + json.dumps(result.to_json())
    assert token not in everything
    assert "file-secret-88d2b1" not in everything


def test_missing_env_secret_is_an_error_naming_the_variable() -> None:
    result = check(ProbeContext(environ={}), argv=[PY, "-V"], env={"API_TOKEN": "${NOT_SET}"})
    assert result.status is Status.ERROR
    assert "NOT_SET is not set" in result.reason


def test_rejects_a_shell_string_for_argv() -> None:
    with pytest.raises(ValidationError, match=r"argv must be a list, e.g. \['go', 'version'\]"):
        CommandParams.model_validate({"argv": "go version"})


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"argv": []}, "at least 1 item"),
        ({"argv": [""]}, "must not be empty"),
        ({"argv": ["go"], "stdout_regex": "go(1"}, "not a valid regular expression"),
        ({"argv": ["go"], "stderr_regex": "["}, "not a valid regular expression"),
        ({"argv": ["go"], "env": {"URL": "postgres://u:hunter2@db/x"}}, "literal password"),
        ({"argv": ["go"], "env": {"A=B": "x"}}, "not an environment variable name"),
    ],
)
def test_rejects_bad_parameters(params: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CommandParams.model_validate(params)


def test_interpret_names_the_signal_that_killed_the_command() -> None:
    raw = CommandRaw(("migrate",), -9, 12.0, "", "")
    result = Command().interpret(CommandParams(argv=["migrate"]), raw)
    assert result.reason == "migrate was killed by signal 9, expected 0"


def test_tail_keeps_the_last_lines_and_caps_their_size() -> None:
    text = "".join(f"line {i}\n" for i in range(100))
    assert tail(text, lines=3) == "line 97\nline 98\nline 99"
    capped = tail("x" * 5000, chars=100)
    assert len(capped) == 101 and capped.startswith("…")


def test_long_output_is_kept_bounded_and_matched_at_its_end() -> None:
    script = "import sys\nfor i in range(100000): print('noise', i)\nprint('DONE')"
    result = check(argv=[PY, "-c", script], stdout_regex="^DONE$")
    assert result.status is Status.PASS, result.reason
    assert "only its end was matched" in result.details["note"]
    assert result.details["stdout_tail"].endswith("DONE")
