"""The demo's traffic: an open-model load through the proxy, and the proof no write was lost.

The load runs as ``changeover loadtest`` in its own process. The mix is what a shop API sees:
mostly reads of a hot set of users and orders (so the new app's cache has something to hit),
some item listings, a signed-in ``/api/v1/me`` (the cookie is valid on both apps), and one
request in ten an order written. Every write and its answer is recorded; ``check_writes`` then
looks up every order the load was told was created (a 201 with an id) in PostgreSQL, field by
field: an acknowledged write missing there is a lost write.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg

from changeover.demo.apps.session import SessionSigner
from changeover.demo.plan import HOT_USERS
from changeover.secrets import REDACTOR

WRITE_SHARE = 0.1
COOKIE_ENV = "CHANGEOVER_DEMO_COOKIE"  # the mix refers to it: the cookie stays out of files


def demo_mix() -> list[dict[str, Any]]:
    """Reads of the hot set, listings, a signed-in request and order writes (10 %), as a
    ``changeover loadtest --mix`` file's entries."""
    reads: list[dict[str, Any]] = []
    for user in HOT_USERS:
        reads.append({"method": "GET", "path": f"/api/v1/users/{user}", "weight": 3})
        reads.append({"method": "GET", "path": f"/api/v1/orders/{user}", "weight": 2})
    reads.append({"method": "GET", "path": "/api/v1/items?limit=10", "weight": len(HOT_USERS) / 2})
    reads.append(
        {
            "method": "GET",
            "path": "/api/v1/me",
            "headers": {"Cookie": "co_session=${" + COOKIE_ENV + "}"},
            "weight": len(HOT_USERS) / 2,
        }
    )
    read_weight = sum(float(r["weight"]) for r in reads)
    writers = HOT_USERS[:10]
    for user in writers:
        reads.append(
            {
                "method": "POST",
                "path": "/api/v1/orders",
                "body": {"user_id": user, "items": [{"sku": "DEMO-1", "quantity": 1}],
                         "total": "19.90"},
                "weight": read_weight * WRITE_SHARE / (1 - WRITE_SHARE) / len(writers),
            }
        )  # fmt: skip
    return reads


class LoadProcess:
    """``changeover loadtest`` in its own process (the proxy and the controller keep this one):
    progress read from its JSON lines, stopped with Ctrl-C's signal, its summary at the end."""

    def __init__(self, url: str, rate: float, workdir: Path, session_secret: str) -> None:
        os.environ[COOKIE_ENV] = SessionSigner(session_secret.encode()).issue(HOT_USERS[0]).value
        REDACTOR.register(os.environ[COOKIE_ENV])
        self.mix = workdir / "mix.json"
        self.mix.write_text(json.dumps(demo_mix(), indent=1), encoding="utf-8")
        self.record = workdir / "writes.jsonl"
        self.argv = [
            sys.executable, "-m", "changeover", "loadtest", url, "--rate", f"{rate:g}",
            "--duration", "3600s", "--mix", str(self.mix), "--record", str(self.record),
            "--processes", "1", "--connections", "128", "--json",
        ]  # fmt: skip
        self.progress: dict[str, Any] | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._process = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read_progress())

    async def _read_progress(self) -> None:
        assert self._process is not None and self._process.stderr is not None
        async for raw in self._process.stderr:
            with contextlib.suppress(ValueError):
                line = json.loads(raw)
                if isinstance(line, dict) and "progress" in line:
                    self.progress = line["progress"]

    async def stop(self, timeout: float = 30.0) -> dict[str, Any] | None:
        """Stop sending (SIGINT: it reports what it measured) and return its summary."""
        process = self._process
        if process is None or process.stdout is None:
            return None
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
        try:
            stdout = await asyncio.wait_for(process.stdout.read(), timeout)
            await asyncio.wait_for(process.wait(), timeout)
        except TimeoutError:
            process.kill()
            await process.wait()
            return None
        finally:
            if self._reader is not None:
                with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                    await asyncio.wait_for(self._reader, 5)
        with contextlib.suppress(ValueError):
            summary = json.loads(stdout or b"null")
            return summary if isinstance(summary, dict) else None
        return None


@dataclass(frozen=True)
class WriteCheck:
    acknowledged: int  # orders the load was told were created (201 with an id)
    refused: int  # writes answered with another status (not acknowledged: nothing promised)
    failed: int  # writes with no answer at all
    missing: list[int]  # acknowledged orders not in PostgreSQL
    different: list[int]  # in PostgreSQL but not as acknowledged

    @property
    def lost(self) -> int:
        return len(self.missing) + len(self.different)

    def to_json(self) -> dict[str, Any]:
        return {
            "acknowledged": self.acknowledged,
            "refused": self.refused,
            "failed": self.failed,
            "lost": self.lost,
            "missing": self.missing[:20],
            "different": self.different[:20],
        }


def check_writes(record: Path, pg_url: str) -> WriteCheck:
    """Every acknowledged order from the load's record, looked up in PostgreSQL."""
    acknowledged: dict[int, dict[str, Any]] = {}
    refused = failed = 0
    with record.open(encoding="utf-8") as fp:
        for line in fp:
            entry = json.loads(line)
            if entry.get("status") is None:
                failed += 1
                continue
            if entry["status"] != 201:
                refused += 1
                continue
            order = json.loads(entry["body"])
            acknowledged[int(order["id"])] = order
    missing: list[int] = []
    different: list[int] = []
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT id, user_id, total FROM orders WHERE id = ANY(%s)", [list(acknowledged)]
        ).fetchall()
    found = {int(r[0]): (int(r[1]), Decimal(str(r[2]))) for r in rows}
    for order_id, order in sorted(acknowledged.items()):
        stored = found.get(order_id)
        if stored is None:
            missing.append(order_id)
        elif stored != (int(order["user_id"]), Decimal(str(order["total"]))):
            different.append(order_id)
    return WriteCheck(len(acknowledged), refused, failed, missing, different)
