"""The demo's legacy app: synchronous Python on SQLite, like the apps teams migrate away from.

``python -m changeover.demo.apps.legacy --db PATH --port N [--secret-file F]
[--admin-token-file F] [--host 127.0.0.1]`` serves the sample API (``common.ROUTES``) from the
stdlib's ``ThreadingHTTPServer``, a thread and a SQLite connection per client connection
(HTTP/1.1 keep-alive). Prints ``legacy listening on http://HOST:PORT`` when ready. SIGTERM or
SIGINT: stop accepting, let requests in flight finish, close idle connections, exit 0.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import secrets
import signal
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from urllib.parse import parse_qsl, urlsplit

from changeover.demo.apps.common import (
    MAX_BODY_BYTES,
    ApiError,
    Call,
    Reply,
    Route,
    admin_reply,
    admit,
    health_reply,
    item_json,
    json_reply,
    match_route,
    metrics_reply,
    not_logged_in,
    order_json,
    order_missing,
    parse_login,
    parse_new_order,
    parse_page,
    parse_status,
    unknown_order_user,
    user_json,
    user_missing,
    users_reply,
)
from changeover.demo.apps.faults import FaultSwitch
from changeover.demo.apps.metrics import UNMATCHED, AppMetrics
from changeover.demo.apps.session import SessionSigner, cookie_from_header
from changeover.demo.apps.sqlite_store import OrderRows, SqliteStore, check_database
from changeover.demo.apps.startup import (
    Basics,
    add_common_arguments,
    announce,
    read_basics,
    run_main,
)
from changeover.errors import ChangeoverError

log = logging.getLogger("changeover.demo.apps.legacy")

APP = "legacy"
# A keep-alive connection with nothing to say is closed after this: longer than the proxy keeps
# an idle upstream connection (30 s), so the proxy never sends on one this app is closing —
# a write sent there could not be replayed and would fail with a 502.
IDLE_TIMEOUT_SECONDS = 75.0
Handler = Callable[[SqliteStore, Call], Reply]


class LegacyApp:
    """Everything the request handlers share: database path, cookie signer, faults, metrics."""

    def __init__(self, db: Path, basics: Basics) -> None:
        self.db = db
        self.signer = SessionSigner(basics.secret)
        self.admin_token = basics.admin_token
        self.faults = FaultSwitch()
        self.metrics = AppMetrics()
        self.write_lock = threading.Lock()
        self.handlers: dict[str, Handler] = {
            "login": self.login,
            "me": self.me,
            "users": self.users,
            "user": self.user,
            "items": self.items,
            "order": self.order,
            "create_order": self.create_order,
            "update_order": self.update_order,
        }

    def connect(self) -> SqliteStore:
        return SqliteStore(self.db, self.write_lock)

    def answer(self, store: SqliteStore, route: Route, call: Call) -> Reply:
        if route.kind == "admin":
            return admin_reply(route, call, self.faults)
        if route.name == "healthz":
            return self.healthz(store)
        if route.name == "metrics":
            return metrics_reply(self.metrics)
        return self.handlers[route.name](store, call)

    def healthz(self, store: SqliteStore) -> Reply:
        try:
            store.ping()
        except sqlite3.Error as exc:
            return health_reply(APP, APP, {"sqlite": str(exc)})
        return health_reply(APP, APP, {})

    def login(self, store: SqliteStore, call: Call) -> Reply:
        email = parse_login(call.body)
        user = store.user_by_email(email)
        if user is None:
            raise ApiError(404, f"no user with email {email}")
        issued = self.signer.issue(int(user[0]))
        store.add_session(secrets.token_hex(16), int(user[0]), issued.expires_at)
        return json_reply(200, {"user": user_json(user)}, [("Set-Cookie", issued.set_cookie())])

    def me(self, store: SqliteStore, call: Call) -> Reply:
        user_id = self.signer.verify(cookie_from_header(call.cookie))
        user = store.user(user_id) if user_id is not None else None
        if user is None:
            raise not_logged_in()
        return json_reply(200, {"user": user_json(user)})

    def users(self, store: SqliteStore, call: Call) -> Reply:
        page = parse_page(call.query)
        return users_reply(store.users(page), page)

    def user(self, store: SqliteStore, call: Call) -> Reply:
        user = store.user(call.id())
        if user is None:
            raise user_missing(call.id())
        return json_reply(200, user_json(user))

    def items(self, store: SqliteStore, call: Call) -> Reply:
        rows = store.items(parse_page(call.query).limit)
        return json_reply(200, {"items": [item_json(row) for row in rows]})

    def order(self, store: SqliteStore, call: Call) -> Reply:
        return _order_reply(store.order(call.id()), call.id())

    def create_order(self, store: SqliteStore, call: Call) -> Reply:
        order = parse_new_order(call.body)
        created = store.create_order(order)
        if created is None:
            raise unknown_order_user(order.user_id)
        return json_reply(201, order_json(*created))

    def update_order(self, store: SqliteStore, call: Call) -> Reply:
        status = parse_status(call.body)
        return _order_reply(store.set_status(call.id(), status), call.id())


def _order_reply(found: OrderRows | None, order_id: int) -> Reply:
    if found is None:
        raise order_missing(order_id)
    return json_reply(200, order_json(*found))


class _Server(ThreadingHTTPServer):
    """Joins its request threads on close; knows which connections sit idle between requests."""

    daemon_threads = False  # server_close() waits for requests in flight
    block_on_close = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], app: LegacyApp) -> None:
        self.app = app
        self.stopping = False
        self._idle: dict[socket.socket, bool] = {}
        self._idle_lock = threading.Lock()
        super().__init__(address, _Handler)

    def mark(self, conn: socket.socket, idle: bool | None) -> None:
        """Record a connection as idle, busy, or gone (None); idle while stopping: wake it."""
        with self._idle_lock:
            if idle is None:
                self._idle.pop(conn, None)
                return
            self._idle[conn] = idle
            wake = idle and self.stopping
        if wake:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)

    def close_idle(self) -> None:
        """Wake every thread blocked waiting for a next request; busy ones finish first."""
        with self._idle_lock:
            self.stopping = True
            idle = [conn for conn, is_idle in self._idle.items() if is_idle]
        for conn in idle:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RD)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as load generators and proxies expect
    # Headers and body leave in two writes; with Nagle on, the body waits for the client's
    # delayed ACK — 40 ms added to every answer on Linux.
    disable_nagle_algorithm = True
    server: _Server
    timeout = IDLE_TIMEOUT_SECONDS

    def setup(self) -> None:
        super().setup()
        self.store = self.server.app.connect()
        self.server.mark(self.connection, idle=True)

    def finish(self) -> None:
        self.server.mark(self.connection, idle=None)
        self.store.close()
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format: str, *args: object) -> None:
        pass  # no access log; errors go through ``log``

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PATCH = do_PUT = do_DELETE = do_OPTIONS = do_GET

    def _serve(self) -> None:
        self.server.mark(self.connection, idle=False)
        started = time.perf_counter()
        self._label = UNMATCHED  # the route template once the path matched one
        try:
            reply = self._reply()
        finally:
            self.server.mark(self.connection, idle=True)
        if self.server.stopping:
            self.close_connection = True
        self._send(reply)
        elapsed = time.perf_counter() - started
        self.server.app.metrics.observe(self.command, self._label, reply.status, elapsed)

    def _reply(self) -> Reply:
        app = self.server.app
        try:
            body = self._read_body()
            url = urlsplit(self.path)
            route, params = match_route(self.command, url.path)
            self._label = route.template
            admission = admit(route, self.headers.get("Authorization"), app.admin_token, app.faults)
            if admission.delay > 0:
                time.sleep(admission.delay)
            if admission.refusal is not None:
                raise admission.refusal
            call = Call(params, dict(parse_qsl(url.query)), body, self.headers.get("Cookie"))
            return app.answer(self.store, route, call)
        except ApiError as exc:
            return exc.reply()
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                return ApiError(503, "the legacy database is busy; retry shortly").reply()
            log.error("%s %s: SQLite error: %s", self.command, self.path, exc)
            return ApiError(500, f"database error: {exc}").reply()
        except Exception:
            log.exception("%s %s failed", self.command, self.path)
            return ApiError(500, "internal error (see the app's log)").reply()

    def _read_body(self) -> bytes:
        """The body by Content-Length; any other framing closes the connection after the answer."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length (chunked is not supported)")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        if not raw.strip().isdigit():
            self.close_connection = True
            raise ApiError(400, "Content-Length is not a number")
        length = int(raw)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        body = self.rfile.read(length)
        if len(body) < length:
            self.close_connection = True
            raise ApiError(400, "the body ended before Content-Length bytes")
        return body

    def _send(self, reply: Reply) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", reply.content_type)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("X-Backend", APP)
            for name, value in reply.headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            self.close_connection = True  # the client went away; nothing to tell it


def serve(db: Path, basics: Basics) -> int:
    """Run until SIGTERM or SIGINT; returns the exit code."""
    check_database(db)
    app = LegacyApp(db, basics)
    try:
        server = _Server((basics.host, basics.port), app)
    except OSError as exc:
        raise ChangeoverError(
            f"cannot listen on {basics.host}:{basics.port}: {exc.strerror or exc}"
        ) from exc
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    loop = threading.Thread(target=server.serve_forever, name="accept", daemon=True)
    loop.start()
    port = server.server_address[1]
    announce(f"{APP} listening on http://{basics.host}:{port}")
    while not stop.wait(0.5):
        pass
    log.info("stopping: finishing requests in flight")
    server.shutdown()  # no new connections
    server.close_idle()
    server.server_close()  # joins the request threads
    app.faults.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m changeover.demo.apps.legacy",
        description="The demo's legacy app: synchronous, on a SQLite file.",
    )
    parser.add_argument("--db", type=Path, required=True, help="the legacy SQLite database")
    add_common_arguments(parser)
    args = parser.parse_args()
    return serve(args.db, read_basics(args))


if __name__ == "__main__":
    run_main(APP, main)
