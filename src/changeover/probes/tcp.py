"""TCP reachability probe: ports that must accept connections, and ports a firewall must close.

``tcp`` connects to every endpoint at once and records what happened (open, refused, timeout,
unreachable, unresolvable); ``interpret`` holds each outcome against what the plan expects. A
closed port that accepts is the firewall finding the checklist asks for.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import os
import re
import socket
import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from changeover.probes.base import CheckResult, Measure, Probe, ProbeContext, ProbeParams
from changeover.units import Duration, format_duration, parse_duration

_ENDPOINT = re.compile(r"^(?:\[(?P<v6>[^\]\s]+)\]|(?P<host>[^\s:\[\]]+)):(?P<port>\d+)$")

Outcome = Literal["open", "refused", "timeout", "unreachable", "unresolvable", "error"]


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"db.internal:5432"`` / ``"[::1]:80"`` → ``(host, port)``; ValueError with a hint."""
    match = _ENDPOINT.match(text.strip())
    if match is None:
        if text.count(":") > 1 and not text.startswith("["):
            raise ValueError(f"{text!r}: write IPv6 addresses in brackets, e.g. '[::1]:80'")
        raise ValueError(f"{text!r} is not host:port, e.g. '10.0.0.5:6379' or '[::1]:80'")
    port = int(match.group("port"))
    if match.group("v6"):
        try:
            ipaddress.IPv6Address(match.group("v6"))
        except ValueError:
            raise ValueError(f"{text!r}: {match.group('v6')!r} is not an IPv6 address") from None
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port must be between 1 and 65535")
    return (match.group("v6") or match.group("host")), port


class TcpParams(ProbeParams):
    open: list[str] = Field(
        default_factory=list,
        description="host:port endpoints that must accept a TCP connection ('[::1]:80' for IPv6).",
    )
    closed: list[str] = Field(
        default_factory=list,
        description="host:port endpoints that must NOT accept a connection (firewall rules).",
    )
    connect_timeout: Duration = Field(
        default=parse_duration("2s"),
        description="How long one connection attempt may take; no answer counts as closed.",
    )

    @field_validator("open", "closed")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        for endpoint in value:
            parse_endpoint(endpoint)
        return value

    @model_validator(mode="after")
    def _something_to_check(self) -> TcpParams:
        if not self.open and not self.closed:
            raise ValueError("give at least one endpoint under 'open' or 'closed'")
        if set(self.open) & set(self.closed):
            both = ", ".join(sorted(set(self.open) & set(self.closed)))
            raise ValueError(f"{both} is listed as both open and closed")
        seconds = self.connect_timeout.total_seconds()
        if seconds <= 0:
            raise ValueError("connect_timeout must be positive, e.g. '2s'")
        if seconds >= self.timeout:
            raise ValueError(
                f"connect_timeout ({format_duration(self.connect_timeout)}) must be shorter "
                f"than timeout ({self.timeout:g}s)"
            )
        return self


@dataclass(frozen=True)
class Attempt:
    """What happened when connecting to one endpoint."""

    endpoint: str
    outcome: Outcome
    connect_ms: float
    error: str | None = None


async def connect_once(endpoint: str, timeout: float) -> Attempt:
    """Try one TCP connection and close it straight away; never raises for network errors."""
    host, port = parse_endpoint(endpoint)
    started = time.perf_counter()

    def done(outcome: Outcome, error: str | None = None) -> Attempt:
        return Attempt(endpoint, outcome, round((time.perf_counter() - started) * 1000, 2), error)

    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return done("timeout")
    except socket.gaierror:
        return done("unresolvable", "the host name does not resolve")
    except ConnectionRefusedError:
        return done("refused")
    except OSError as exc:
        unreachable = (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL)
        text = os.strerror(exc.errno).lower() if exc.errno else str(exc)
        return done("unreachable" if exc.errno in unreachable else "error", text)
    attempt = done("open")
    writer.close()
    with contextlib.suppress(OSError):  # the peer reset a connection we were closing anyway
        await writer.wait_closed()
    return attempt


class Tcp(Probe[TcpParams, list[Attempt]]):
    """Listed ports accept TCP connections, and ports that must be firewalled do not."""

    name = "tcp"
    summary = "TCP ports that must be open accept connections; closed ones do not"
    Params = TcpParams

    async def gather(self, params: TcpParams, ctx: ProbeContext) -> list[Attempt]:
        timeout = params.connect_timeout.total_seconds()
        endpoints = [*params.open, *params.closed]
        return list(await asyncio.gather(*(connect_once(e, timeout) for e in endpoints)))

    def interpret(self, params: TcpParams, raw: list[Attempt]) -> CheckResult:
        timeout = format_duration(params.connect_timeout)
        want_open = set(params.open)
        evidence = []
        details: list[dict[str, Any]] = []
        problems = []
        for attempt in raw:
            expected = "open" if attempt.endpoint in want_open else "closed"
            if expected == "open":
                ok = attempt.outcome == "open"
            else:
                # A name that does not resolve proves nothing about the firewall.
                ok = attempt.outcome not in ("open", "unresolvable", "error")
            evidence.append(Measure(attempt.endpoint, attempt.outcome, expected=expected, ok=ok))
            entry: dict[str, Any] = {
                "endpoint": attempt.endpoint,
                "expected": expected,
                "observed": attempt.outcome,
                "connect_ms": attempt.connect_ms,
            }
            if attempt.error:
                entry["error"] = attempt.error
            details.append(entry)
            if not ok:
                problems.append(_problem(attempt, expected, timeout))
        n_open, n_closed = len(params.open), len(params.closed)
        return CheckResult.judge(
            evidence,
            passed=f"{n_open} endpoint(s) open and {n_closed} closed, as expected",
            failed="; ".join(problems) or None,
            details={"endpoints": details},
        )


def _problem(attempt: Attempt, expected: str, timeout: str) -> str:
    where = attempt.endpoint
    if attempt.outcome == "open":
        return f"firewall: {where} is reachable but must be closed"
    if attempt.outcome == "unresolvable":
        return f"cannot check {where}: the host name does not resolve"
    if expected == "closed":
        return f"cannot check {where}: {attempt.error}"
    if attempt.outcome == "refused":
        return f"{where} must accept connections but refused the connection"
    if attempt.outcome == "timeout":
        return f"{where} must accept connections but did not answer within {timeout}"
    return f"{where} must accept connections but is {attempt.error or attempt.outcome}"
