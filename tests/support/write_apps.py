"""Two tiny order-taking apps (legacy on SQLite, new on PostgreSQL) and a paced writer, for the
zero-loss handoff tests and benchmark.

Both apps speak the same API: ``POST /orders`` with ``{"sku": "..."}`` inserts an order and its
one item (the client-chosen ``sku``, so every acknowledged write can be found again) in one
transaction and answers 201 ``{"id", "sku", "app"}``; ``GET /orders/<id>`` reads it back;
``GET /healthz`` is for the proxy's health checks. ``start_app`` runs one as its own process on a
free loopback port (stdlib ThreadingHTTPServer); the PostgreSQL URL is passed in the environment,
never on the command line. ``Writer`` sends POSTs on a fixed schedule (open model: a held write
does not delay the next one) for a bounded time and records every answer.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import queue
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

PLACED_AT = "2026-11-26 12:00:00"


class _Store:
    def create(self, sku: str) -> int:
        raise NotImplementedError

    def read(self, order_id: int) -> str | None:
        raise NotImplementedError


class SqliteStore(_Store):
    """The legacy app's writes: one connection per server thread, BEGIN IMMEDIATE per order."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.local = threading.local()
        # One writer at a time inside the app: SQLite's busy handler sleeps in growing steps
        # when writers collide, which at 200 writes/s turns into seconds of latency.
        self.write_lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.local.conn = conn
        return conn

    def create(self, sku: str) -> int:
        conn = self._conn()
        with self.write_lock:
            return self._create(conn, sku)

    def _create(self, conn: sqlite3.Connection, sku: str) -> int:
        conn.execute("BEGIN IMMEDIATE")
        try:
            cursor = conn.execute(
                "INSERT INTO orders (user_id, status, total, placed_at) VALUES (1, 'new', 0, ?)",
                (PLACED_AT,),
            )
            order_id = int(cursor.lastrowid or 0)
            conn.execute(
                "INSERT INTO order_items VALUES (?, 1, ?, 1, 9.99)",
                (order_id, sku),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return order_id

    def read(self, order_id: int) -> str | None:
        row = (
            self._conn()
            .execute("SELECT sku FROM order_items WHERE order_id = ?", (order_id,))
            .fetchone()
        )
        return None if row is None else str(row[0])


class PostgresStore(_Store):
    """The new app's writes: one psycopg connection per server thread, a transaction per order."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.local = threading.local()

    def _conn(self) -> Any:
        import psycopg

        conn = getattr(self.local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.url, autocommit=True)
            self.local.conn = conn
        return conn

    def create(self, sku: str) -> int:
        conn = self._conn()
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO orders (user_id, status, total, placed_at) "
                "VALUES (1, 'new', 0, %s::timestamptz) RETURNING id",
                (PLACED_AT + "+00",),
            ).fetchone()
            order_id = int(row[0])
            conn.execute(
                "INSERT INTO order_items VALUES (%s, 1, %s, 1, 9.99)",
                (order_id, sku),
            )
        return order_id

    def read(self, order_id: int) -> str | None:
        row = (
            self._conn()
            .execute("SELECT sku FROM order_items WHERE order_id = %s", (order_id,))
            .fetchone()
        )
        return None if row is None else str(row[0])


def _handler(store: _Store, app: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out as two writes

        def log_message(self, format: str, *args: Any) -> None:  # quiet: no line per request
            pass

        def _answer(self, status: int, body: dict[str, object]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-App", app)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                self._answer(200, {"app": app})
                return
            if self.path.startswith("/orders/"):
                try:
                    sku = store.read(int(self.path.removeprefix("/orders/")))
                except ValueError:
                    sku = None
                if sku is not None:
                    self._answer(200, {"sku": sku, "app": app})
                    return
            self._answer(404, {"error": "not found", "app": app})

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            if self.path != "/orders":
                self._answer(404, {"error": "not found", "app": app})
                return
            try:
                sku = str(json.loads(body)["sku"])
                order_id = store.create(sku)
            except Exception as exc:  # the writer counts a 500 as not acknowledged
                self._answer(500, {"error": str(exc)[:200], "app": app})
                return
            self._answer(201, {"id": order_id, "sku": sku, "app": app})

    return Handler


def serve(kind: str, db: str | None, port: int) -> None:
    store: _Store
    if kind == "legacy":
        assert db is not None
        store = SqliteStore(db)
    else:
        store = PostgresStore(os.environ["WRITE_APP_PG_URL"])
    # A released hold sends a burst of writes that opens many connections at once: the default
    # listen backlog of 5 overflows and the kernel resets them (the proxy answers 502).
    ThreadingHTTPServer.request_queue_size = 1024
    server = ThreadingHTTPServer(("127.0.0.1", port), _handler(store, kind))
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever(poll_interval=0.05)


# ---- used by the tests --------------------------------------------------------------------------


@dataclass
class AppProcess:
    """A running app; ``name`` and ``port`` fit ``support.proxy_process.write_config``."""

    name: str
    port: int
    proc: subprocess.Popen[bytes]


@contextlib.contextmanager
def start_app(
    kind: str, *, db: Path | None = None, pg_url: str | None = None
) -> Iterator[AppProcess]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--kind", kind, "--port", "0"]
    env = dict(os.environ)
    if db is not None:
        argv += ["--db", str(db)]
    if pg_url is not None:
        env["WRITE_APP_PG_URL"] = pg_url
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        if not line.startswith("PORT "):
            raise RuntimeError(f"{kind} app did not start: {line!r}")
        yield AppProcess(f"{kind}-1", int(line.split()[1]), proc)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Outcome:
    sku: str
    sent: float  # monotonic time the write was due
    seconds: float  # latency from ``sent``
    status: int  # 0: no answer (connection error or timeout)
    order_id: int | None = None
    app: str | None = None
    error: str = ""  # what came back instead of an acknowledgement


@dataclass
class Writer:
    """POSTs ``rate`` orders per second to ``url`` for ``seconds`` (or until ``stop``), then stops.

    A dispatcher thread puts each write on a queue at its due time; ``workers`` threads, each
    with its own keep-alive connection, send them. Latency counts from the due time, so writes
    held by the proxy show as latency, not as a lower rate.
    """

    url: str
    rate: float = 200.0
    seconds: float = 3.0
    prefix: str = "w"
    timeout: float = 15.0
    workers: int = 32
    outcomes: list[Outcome] = field(default_factory=list)
    sent: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Writer:
        jobs: queue.Queue[tuple[str, float] | None] = queue.Queue()
        self._threads = [threading.Thread(target=self._dispatch, args=(jobs,), daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, args=(jobs,), daemon=True)
            for _ in range(self.workers)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def join(self) -> list[Outcome]:
        deadline = time.monotonic() + self.seconds + self.timeout + 5
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self._threads), (
            f"the writer did not stop: {self.sent - len(self.outcomes)} writes still unanswered"
        )
        return self.outcomes

    @property
    def acknowledged(self) -> list[Outcome]:
        return [o for o in self.outcomes if 200 <= o.status < 300]

    def _dispatch(self, jobs: queue.Queue[tuple[str, float] | None]) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = start + i / self.rate
            if due - start >= self.seconds:
                break
            delay = due - time.monotonic()
            if delay > 0:
                self._stop.wait(delay)
            jobs.put((f"{self.prefix}-{i:06d}", due))
            i += 1
            self.sent = i
        for _ in range(self.workers):
            jobs.put(None)

    def _work(self, jobs: queue.Queue[tuple[str, float] | None]) -> None:
        where = urlsplit(self.url)
        conn: http.client.HTTPConnection | None = None
        while (job := jobs.get()) is not None:
            sku, due = job
            if conn is None:
                conn = http.client.HTTPConnection(
                    where.hostname or "127.0.0.1", where.port, timeout=self.timeout
                )
            try:
                conn.request(
                    "POST",
                    "/orders",
                    body=json.dumps({"sku": sku}),
                    headers={"Content-Type": "application/json"},
                )
                response = conn.getresponse()
                raw = response.read()
            except (OSError, http.client.HTTPException) as exc:
                conn.close()
                conn = None
                self.outcomes.append(Outcome(sku, due, time.monotonic() - due, 0, error=repr(exc)))
                continue
            data: dict[str, Any] = {}
            with contextlib.suppress(ValueError):
                data = json.loads(raw)
            order_id = data.get("id")
            app = data.get("app")
            self.outcomes.append(
                Outcome(
                    sku,
                    due,
                    time.monotonic() - due,
                    response.status,
                    order_id if isinstance(order_id, int) else None,
                    app if isinstance(app, str) else None,
                    "" if 200 <= response.status < 300 else raw[:300].decode(errors="replace"),
                )
            )
            if response.will_close:
                conn.close()
                conn = None
        if conn is not None:
            conn.close()


def skus_in_sqlite(db: Path, prefix: str) -> dict[str, list[int]]:
    """Every order id holding each ``prefix``-sku in the SQLite file (more than one: duplicated)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute(
            "SELECT sku, order_id FROM order_items WHERE sku LIKE ? ORDER BY order_id",
            (prefix + "-%",),
        ).fetchall()
    finally:
        conn.close()
    found: dict[str, list[int]] = {}
    for sku, order_id in rows:
        found.setdefault(str(sku), []).append(int(order_id))
    return found


def skus_in_postgres(pg_url: str, prefix: str) -> dict[str, list[int]]:
    """The same for PostgreSQL."""
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            "SELECT sku, order_id FROM order_items WHERE sku LIKE %s ORDER BY order_id",
            (prefix + "-%",),
        ).fetchall()
    found: dict[str, list[int]] = {}
    for sku, order_id in rows:
        found.setdefault(str(sku), []).append(int(order_id))
    return found


@dataclass(frozen=True)
class WriteAudit:
    acknowledged: int
    lost: list[str]  # acknowledged, not in the database
    duplicated: list[str]  # in the database more than once (acknowledged or not)
    moved: list[str]  # acknowledged with an order id the database does not hold it under


def audit_writes(outcomes: list[Outcome], found: dict[str, list[int]]) -> WriteAudit:
    """Compare the writer's acknowledged writes with the skus found in one database."""
    acked = [o for o in outcomes if 200 <= o.status < 300]
    lost = [o.sku for o in acked if o.sku not in found]
    moved = [o.sku for o in acked if o.sku in found and found[o.sku] != [o.order_id]]
    duplicated = [sku for sku, ids in found.items() if len(ids) > 1]
    return WriteAudit(len(acked), lost, duplicated, moved)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--kind", choices=("legacy", "new"), required=True)
    parser.add_argument("--db")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    serve(args.kind, args.db, args.port)
