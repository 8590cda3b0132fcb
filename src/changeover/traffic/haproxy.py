"""Drive HAProxy through its runtime API (the stats socket with ``level admin``).

Model: one HAProxy backend (``app`` by default) holds the servers of both logical backends
(``legacy-1``, ``legacy-2``, ``new-1``); a backend's percentage becomes server weights
(``set server app/new-1 weight 56``), read back with ``get weight``. Stickiness is HAProxy's
job, configured by the operator; the recommended setup (used in the tests) is::

    backend app
        balance hash req.cook(co_session)   # the app's session cookie
        hash-type consistent                # weights are honoured; weight 0 leaves the ring
        server legacy-1 10.0.0.1:8000 weight 1
        server new-1    10.0.0.2:8101 weight 1

A session keeps its server while the weights are unchanged and moves only towards a backend
whose share grows; weight 0 (rollback to 0 %) moves every session off that backend. Requests
without the cookie are spread by weight. (``cookie SERVERID insert`` would pin sessions harder,
but HAProxy keeps sending cookie holders to a weight-0 server, so a rollback would not move
them.) Commands go over one short connection each; names are checked so no command can be
smuggled in, and every runtime API answer other than success becomes a ``RouterError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from changeover.secrets import REDACTOR
from changeover.traffic.router import (
    RESPONSE_CLASSES,
    InstanceStats,
    RouterError,
    RouterStats,
    Server,
    ServerStatus,
    WeightMismatch,
    Weights,
    normalise_percent,
    server_weights,
    servers_by_backend,
    shares,
)

# HAProxy proxy and server names are identifiers; anything else could inject a second command.
_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")
_GET_WEIGHT = re.compile(r"^(\d+) \(initial \d+\)$")


@dataclass(frozen=True)
class ServerRow:
    """One server's line of ``show stat``."""

    name: str
    status: ServerStatus
    weight: int
    current_sessions: int
    requests: int
    responses: dict[str, int]


class HaproxyRouter:
    """A ``Router`` over HAProxy's runtime API at ``admin`` (a unix socket path or TCP address).

    ``admin`` forms: ``/run/haproxy/admin.sock``, ``unix@/path``, ``ipv4@127.0.0.1:9999``,
    ``tcp://127.0.0.1:9999`` or ``127.0.0.1:9999``. ``proxy`` is the HAProxy backend that
    holds every server; each ``Server.name`` is a ``server`` line in it. Servers in DRAIN or
    MAINT get weight 0 and their backend's share goes to its other servers; a server DOWN by
    health check keeps its weight (HAProxy skips it until it is back) and ``weights()`` shows
    the share actually taken, so the gap is visible.
    """

    def __init__(
        self,
        admin: str,
        servers: Sequence[Server],
        *,
        proxy: str = "app",
        timeout: float = 5.0,
    ) -> None:
        for name in [proxy, *(server.name for server in servers)]:
            if not _NAME.match(name):
                raise RouterError(f"HAProxy name {name!r} may only hold letters, digits, _.:-")
        if not servers:
            raise RouterError("an HAProxy router needs at least one server")
        self.admin = admin
        self.proxy = proxy
        self.timeout = timeout
        self._servers = list(servers)
        self._by_backend = servers_by_backend(servers)
        self._backend_of = {server.name: server.backend for server in servers}
        self._desired: dict[str, float] | None = None
        self._lock = asyncio.Lock()

    # -- the Router protocol -------------------------------------------------------------

    async def set_weights(self, weights: Mapping[str, float]) -> Weights:
        percent = normalise_percent(weights, list(self._by_backend))
        async with self._lock:
            await self._apply(percent, redistribute=False)
            self._desired = percent
            return await self._observed()

    async def weights(self) -> Weights:
        return await self._observed()

    async def drain(self, backend: str, instance: str) -> None:
        await self._set_state(backend, instance, "drain")

    async def ready(self, backend: str, instance: str) -> None:
        await self._set_state(backend, instance, "ready")

    async def stats(self) -> RouterStats:
        rows = await self.show_stat()
        return RouterStats(
            tuple(
                InstanceStats(
                    backend=self._backend_of[row.name],
                    instance=row.name,
                    status=row.status,
                    weight=row.weight,
                    current_sessions=row.current_sessions,
                    requests=row.requests,
                    responses=row.responses,
                )
                for row in rows.values()
            )
        )

    async def close(self) -> None:
        """Nothing to release: every command uses its own connection."""

    # -- runtime API ---------------------------------------------------------------------

    async def command(self, line: str) -> str:
        """Send one runtime API command and return HAProxy's answer (socket I/O only)."""
        if "\n" in line or ";" in line:
            raise RouterError(
                f"refusing to send a runtime API command with ';' or a newline: {line!r}"
            )
        try:
            async with asyncio.timeout(self.timeout):
                reader, writer = await self._connect()
                try:
                    writer.write(line.encode() + b"\n")
                    await writer.drain()
                    data = await reader.read()  # HAProxy closes after one non-interactive answer
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            raise self._error(f"no answer within {self.timeout:g} s to '{line}'") from None
        except PermissionError as exc:
            raise self._error(f"permission denied opening the socket ({exc.strerror})") from exc
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise self._error(
                f"cannot connect ({exc.strerror}); is HAProxy running with "
                "'stats socket ... level admin'?"
            ) from exc
        except OSError as exc:
            raise self._error(f"cannot talk to it: {exc.strerror or exc}") from exc
        return data.decode("utf-8", errors="replace")

    async def show_stat(self) -> dict[str, ServerRow]:
        """``show stat`` rows of this router's servers; a missing server is a ``RouterError``."""
        text = await self.command("show stat")
        if not text.startswith("# pxname"):
            raise self._error(_first_line(text) or "empty answer to 'show stat'")
        rows = parse_show_stat(text, self.proxy)
        missing = [server.name for server in self._servers if server.name not in rows]
        if missing:
            if not _has_proxy(text, self.proxy):
                raise self._error(f"no such backend {self.proxy}")
            raise self._error(f"no such server {self.proxy}/{missing[0]}")
        return {server.name: rows[server.name] for server in self._servers}

    async def get_weight(self, server: str) -> int:
        answer = (await self.command(f"get weight {self.proxy}/{server}")).strip()
        match = _GET_WEIGHT.match(answer)
        if match is None:
            raise self._error(self._translate(answer, server))
        return int(match.group(1))

    async def _run(self, line: str, server: str | None = None) -> None:
        """A command that answers nothing on success; any text back is the error message."""
        answer = (await self.command(line)).strip()
        if answer:
            raise self._error(f"{self._translate(answer, server)} (command: {line})")

    # -- internals -----------------------------------------------------------------------

    async def _apply(self, percent: Mapping[str, float], *, redistribute: bool) -> None:
        """Give each backend its share over the servers in service; drained ones get 0.

        With ``redistribute`` (after a drain), a backend left without a server in service is
        dropped and the others keep their proportions, instead of failing.
        """
        rows = await self.show_stat()
        in_service = {
            backend: [name for name in names if rows[name].status not in ("DRAIN", "MAINT")]
            for backend, names in self._by_backend.items()
        }
        if redistribute:
            percent = {b: p for b, p in percent.items() if in_service[b]}
            total = sum(percent.values())
            if total <= 0:
                return
            percent = {b: p * 100.0 / total for b, p in percent.items()}
        target = server_weights(percent, in_service)
        for server in self._servers:
            target.setdefault(server.name, 0)
        # Lower weights first: the shrinking backend gives way before the growing one takes,
        # so no intermediate state sends a backend more than its old or new share.
        order = sorted(target, key=lambda name: target[name] - rows[name].weight)
        for name in order:
            await self._run(f"set server {self.proxy}/{name} weight {target[name]}", name)
        for name in order:
            seen = await self.get_weight(name)
            if seen != target[name]:
                raise WeightMismatch(
                    f"HAProxy runtime API at {self._where}: {self.proxy}/{name} shows weight "
                    f"{seen} after it was set to {target[name]}"
                )

    async def _set_state(self, backend: str, instance: str, state: str) -> None:
        if self._backend_of.get(instance) != backend:
            raise RouterError(
                f"{backend}/{instance} is not a server of this router "
                f"(known: {', '.join(f'{b}/{n}' for n, b in self._backend_of.items())})"
            )
        async with self._lock:
            desired = self._desired or dict((await self._observed()).percent)
            await self._run(f"set server {self.proxy}/{instance} state {state}", instance)
            if sum(desired.values()) > 0:
                await self._apply(desired, redistribute=True)

    async def _observed(self) -> Weights:
        rows = await self.show_stat()
        taking = {name: row.weight for name, row in rows.items() if row.status == "UP"}
        return Weights(
            percent=shares(taking, self._by_backend),
            servers={name: row.weight for name, row in rows.items()},
        )

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        kind, target = parse_address(self.admin)
        if kind == "unix":
            return await asyncio.open_unix_connection(target)
        host, _, port = target.rpartition(":")
        return await asyncio.open_connection(host.strip("[]"), int(port))

    @property
    def _where(self) -> str:
        return REDACTOR.scrub(self.admin)

    def _error(self, message: str) -> RouterError:
        return RouterError(REDACTOR.scrub(f"HAProxy runtime API at {self.admin}: {message}"))

    def _translate(self, answer: str, server: str | None) -> str:
        first = _first_line(answer)
        if first.startswith("No such server"):
            return f"no such server {self.proxy}/{server}" if server else "no such server"
        if first.startswith("No such backend"):
            return f"no such backend {self.proxy}"
        if first.startswith("Unknown command"):
            return "unknown command (is this HAProxy's runtime API?)"
        if "Permission denied" in first:
            return "permission denied: the stats socket needs 'level admin'"
        return first


def parse_address(admin: str) -> tuple[str, str]:
    """``("unix", path)`` or ``("tcp", "host:port")`` from an HAProxy-style socket address."""
    if admin.startswith("unix://"):
        return "unix", admin.removeprefix("unix://")
    if admin.startswith(("unix@", "unix:")):
        return "unix", admin[5:]
    if admin.startswith(("ipv4@", "ipv6@")):
        return "tcp", _host_port(admin, admin[5:])
    if admin.startswith("tcp://"):
        return "tcp", _host_port(admin, admin.removeprefix("tcp://"))
    if admin.startswith(("/", ".", "~")) or ":" not in admin:
        return "unix", admin
    return "tcp", _host_port(admin, admin)


def _host_port(admin: str, target: str) -> str:
    _host, _, port = target.rpartition(":")
    if not port.isdigit():
        raise RouterError(
            f"HAProxy runtime API address {REDACTOR.scrub(admin)!r}: expected a socket path "
            "or host:port"
        )
    return target


def parse_show_stat(text: str, proxy: str) -> dict[str, ServerRow]:
    """Server rows of ``proxy`` from ``show stat`` CSV (pure; header names, not positions)."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    reader = csv.DictReader(io.StringIO("\n".join([lines[0][2:], *lines[1:]])))
    rows: dict[str, ServerRow] = {}
    for record in reader:
        if record.get("pxname") != proxy or record.get("svname") in ("FRONTEND", "BACKEND"):
            continue
        name = record["svname"]
        rows[name] = ServerRow(
            name=name,
            status=parse_status(record.get("status", "")),
            weight=_int(record.get("weight")),
            current_sessions=_int(record.get("scur")),
            requests=_int(record.get("stot")),
            responses={klass: _int(record.get(f"hrsp_{klass}")) for klass in RESPONSE_CLASSES},
        )
    return rows


def parse_status(text: str) -> ServerStatus:
    """HAProxy's status column → UP/DOWN/DRAIN/MAINT (``UP 1/3`` is still up, going down)."""
    status = text.strip().upper()
    if status.startswith("MAINT"):
        return "MAINT"
    if status.startswith(("DRAIN", "NOLB")):
        return "DRAIN"
    if status.startswith("UP") or status == "NO CHECK":
        return "UP"
    return "DOWN"


def _has_proxy(text: str, proxy: str) -> bool:
    return any(line.startswith(f"{proxy},") for line in text.splitlines())


def _int(value: str | None) -> int:
    try:
        return int(value) if value else 0
    except ValueError:
        return 0


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "")
