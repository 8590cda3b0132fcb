"""Command probe: run a program (argv list, never a shell string) and judge its exit and output.

For checks no other probe covers (``go version``, ``migrate status``, a vendor CLI). Secrets in
``env`` are resolved at run time and scrubbed from everything the result carries; on timeout
the whole process group is killed, so no stray child outlives the check.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import time
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from changeover.plan.secretref import SecretRef
from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Unreachable,
)
from changeover.secrets import REDACTOR

#: bytes of each stream kept for regex matching (the tail, if the program says more)
KEEP_BYTES = 1 << 20
#: what the result shows of each stream
TAIL_LINES = 20
TAIL_CHARS = 2000

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class CommandParams(ProbeParams):
    argv: list[str] = Field(
        min_length=1,
        description="Program and arguments as a list, e.g. ['go', 'version']; no shell is used.",
    )
    cwd: str | None = Field(
        default=None, description="Working directory, relative to the plan (default: its folder)."
    )
    env: dict[str, SecretRef] = Field(
        default_factory=dict,
        description="Extra environment variables; values may be '${VAR}' or {file: path}.",
    )
    exit_code: int = Field(default=0, description="Exit status the command must end with.")
    stdout_regex: str | None = Field(
        default=None, description="Regular expression that must match somewhere in stdout."
    )
    stderr_regex: str | None = Field(
        default=None, description="Regular expression that must match somewhere in stderr."
    )

    @field_validator("argv", mode="before")
    @classmethod
    def _argv_is_a_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            raise ValueError("argv must be a list, e.g. ['go', 'version']")
        return value

    @field_validator("argv")
    @classmethod
    def _program_named(cls, value: list[str]) -> list[str]:
        if not value[0]:
            raise ValueError("argv[0] (the program) must not be empty")
        return value

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not an environment variable name")
        return value

    @field_validator("stdout_regex", "stderr_regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from None
        return value


@dataclass(frozen=True)
class CommandRaw:
    """How the command ended; outputs are already scrubbed of secrets."""

    argv: tuple[str, ...]
    exit_code: int
    duration_ms: float
    stdout: str
    stderr: str
    truncated: bool = False


class _Tail:
    """Keeps the last ``limit`` bytes of a stream, so a chatty program cannot exhaust memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.truncated = False

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(65536):
            self.data += chunk
            # Trim only past twice the limit, so trimming costs O(1) per byte read.
            if len(self.data) > 2 * self.limit:
                self._trim()
        self._trim()

    def _trim(self) -> None:
        if len(self.data) > self.limit:
            del self.data[: len(self.data) - self.limit]
            self.truncated = True

    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


def tail(text: str, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The last ``lines`` lines of ``text``, at most ``chars`` characters."""
    kept = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return kept if len(kept) <= chars else "…" + kept[-chars:]


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class Command(Probe[CommandParams, CommandRaw]):
    """A command exits with the expected status and its output matches what the plan expects."""

    name = "command"
    summary = "A command (argv list) exits with exit_code and its output matches"
    Params = CommandParams

    async def gather(self, params: CommandParams, ctx: ProbeContext) -> CommandRaw:
        env = dict(os.environ)
        for key, ref in params.env.items():
            env[key] = ctx.secret(ref, what=f"env.{key}")
        cwd = ctx.path(params.cwd) if params.cwd is not None else ctx.base_dir
        if not cwd.is_dir():
            raise Unreachable(f"working directory does not exist: {cwd}")
        program = params.argv[0]
        started = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *params.argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=cwd,
                env=env,
                # Its own process group, so a timeout can kill the children it spawned too.
                start_new_session=True,
            )
        except FileNotFoundError:
            raise Unreachable(
                f"command not found: {program} (is it installed and on PATH?)"
            ) from None
        except PermissionError:
            raise Unreachable(f"command is not executable: {program}") from None
        except OSError as exc:
            raise Unreachable(f"cannot run {program}: {exc.strerror or exc}") from None
        assert proc.stdout is not None and proc.stderr is not None
        out, err = _Tail(KEEP_BYTES), _Tail(KEEP_BYTES)
        try:
            await asyncio.gather(out.drain(proc.stdout), err.drain(proc.stderr))
            exit_code = await proc.wait()
        except BaseException:
            # Cancelled by the probe timeout (or anything else): leave no process behind.
            _kill_group(proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        duration = (time.perf_counter() - started) * 1000
        return CommandRaw(
            argv=tuple(params.argv),
            exit_code=exit_code,
            duration_ms=round(duration, 1),
            stdout=REDACTOR.scrub(out.text()),
            stderr=REDACTOR.scrub(err.text()),
            truncated=out.truncated or err.truncated,
        )

    def interpret(self, params: CommandParams, raw: CommandRaw) -> CheckResult:
        program = raw.argv[0]
        evidence = [
            Measure(
                "exit_code",
                raw.exit_code,
                expected=f"= {params.exit_code}",
                ok=raw.exit_code == params.exit_code,
            ),
            Measure("duration_ms", raw.duration_ms, unit="ms"),
        ]
        problems = []
        if raw.exit_code != params.exit_code:
            how = (
                f"was killed by signal {-raw.exit_code}"
                if raw.exit_code < 0
                else f"exited with {raw.exit_code}"
            )
            problems.append(f"{program} {how}, expected {params.exit_code}")
        for stream, pattern, text in (
            ("stdout", params.stdout_regex, raw.stdout),
            ("stderr", params.stderr_regex, raw.stderr),
        ):
            if pattern is None:
                continue
            matched = re.search(pattern, text, re.MULTILINE) is not None
            evidence.append(
                Measure(f"{stream}_matches", matched, expected=f"matches /{pattern}/", ok=matched)
            )
            if not matched:
                problems.append(f"{stream} of {program} does not match /{pattern}/")
        details: dict[str, Any] = {
            "argv": list(raw.argv),
            "stdout_tail": tail(raw.stdout),
            "stderr_tail": tail(raw.stderr),
        }
        if raw.truncated:
            details["note"] = f"output longer than {KEEP_BYTES} bytes: only its end was matched"
        return CheckResult.judge(
            evidence,
            passed=f"{program} exited with {raw.exit_code} in {raw.duration_ms:g} ms",
            failed="; ".join(problems) or None,
            details=details,
        )
