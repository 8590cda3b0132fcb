"""``changeover dashboard``: the war-room page, its live stream and its actions, on uvicorn.

Routes: ``GET /`` the page (or the viewer's login form), ``POST /login``, ``GET /events``
(server-sent events: a snapshot, then updates), ``GET /api/state`` (the snapshot as JSON),
``POST /api/approve|signoff|rollback`` (the operator token, the page's CSRF token, same origin),
``/static`` (the page's own CSS and JavaScript: nothing from a CDN). Every answer passes the
redactor; a refused request gets a status and a sentence, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from changeover.dashboard import actions
from changeover.dashboard.auth import (
    Refused,
    Role,
    Session,
    Sessions,
    Tokens,
    bearer,
    check_bind,
    register_plan_secrets,
)
from changeover.dashboard.board import Board, Update
from changeover.dashboard.csrf import allowed_hosts, check_csrf, check_host, check_origin
from changeover.dashboard.feed import Feed, live_lag
from changeover.engine.runbook import Runbook
from changeover.errors import ChangeoverError, ServiceError
from changeover.secrets import REDACTOR

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
MAX_BODY = 16 * 1024  # an action is a few short fields
KEEPALIVE_S = 15.0  # a comment line on an idle stream, so proxies and phones keep it open
RETRY_MS = 2000  # how soon a page's EventSource reconnects
SECURITY_HEADERS = {
    # Only the page's own files: no inline script, no CDN, no framing by another site.
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

Handler = Callable[[Request], Awaitable[Response]]


@dataclass
class Context:
    runbook: Runbook
    feed: Feed
    tokens: Tokens
    sessions: Sessions
    hosts: frozenset[str] | None

    @property
    def open_reads(self) -> bool:
        """Without a viewer token the dashboard is on loopback (``check_bind``): open to read."""
        return self.tokens.viewer is None

    def session(self, request: Request) -> Session | None:
        return self.sessions.read(request.cookies.get(Sessions.COOKIE))

    def can_read(self, request: Request) -> bool:
        if self.open_reads or self.tokens.role_of(bearer(request.headers)) >= Role.VIEWER:
            return True
        session = self.session(request)
        return session is not None and session.role >= Role.VIEWER


def build_app(ctx: Context) -> _HostCheck:
    """The dashboard's routes over a running ``Feed`` and an open ``Runbook``."""

    async def page(request: Request) -> Response:
        if not ctx.can_read(request):
            return _login_page(ctx, 401)
        session = ctx.session(request)
        cookie = None
        if session is None:
            session, cookie = ctx.sessions.new(Role.NONE)
        html = _page_html().replace("__CSRF_TOKEN__", ctx.sessions.csrf(session))
        html = html.replace("__PLAN_NAME__", _escape(ctx.runbook.plan.name))
        response = HTMLResponse(html, headers=SECURITY_HEADERS)
        if cookie is not None:
            _set_cookie(response, cookie)
        return response

    async def login(request: Request) -> Response:
        check_origin(request.headers)
        body = await _body(request)
        token = parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0]
        if ctx.tokens.role_of(token.strip()) < Role.VIEWER:
            return _login_page(ctx, 401, "That token is not valid for this dashboard.")
        # Logging in grants reading only: acting still needs the operator token each time.
        _, cookie = ctx.sessions.new(Role.VIEWER)
        response = RedirectResponse("/", status_code=303, headers=SECURITY_HEADERS)
        _set_cookie(response, cookie)
        return response

    async def state(request: Request) -> Response:
        _need_read(ctx, request)
        return _json((await ctx.feed.snapshot()).to_json())

    async def events(request: Request) -> Response:
        _need_read(ctx, request)

        async def stream() -> AsyncIterator[str]:
            # Subscribed here, not before: a page gone before its stream began leaves nothing.
            queue, snapshot = await ctx.feed.subscribe()
            try:
                yield f"retry: {RETRY_MS}\n\n"
                yield _sse("snapshot", snapshot)
                while True:
                    try:
                        update = await asyncio.wait_for(queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if update is None:
                        return  # the server stops, or this page fell behind: it reconnects
                    yield _sse("update", update)
            finally:
                ctx.feed.unsubscribe(queue)

        headers = {**SECURITY_HEADERS, "X-Accel-Buffering": "no"}
        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    def action(do: Callable[[Runbook, Mapping[str, Any]], str]) -> Handler:
        async def handle(request: Request) -> Response:
            check_origin(request.headers)
            role = ctx.tokens.role_of(bearer(request.headers))
            if role is Role.NONE:
                raise Refused(
                    401,
                    "this needs the operator token"
                    + (" (the one given was not valid)" if bearer(request.headers) else ""),
                )
            if role is not Role.OPERATOR:
                raise Refused(
                    403, "the viewer token can only read; acting needs the operator token"
                )
            check_csrf(request.headers, ctx.session(request), ctx.sessions)
            body = _json_body(await _body(request))
            message = await asyncio.to_thread(do, ctx.runbook, body)
            head = await asyncio.to_thread(ctx.runbook.journal.head)
            return _json({"ok": True, "message": message, "seq": head.seq})

        return handle

    routes = [
        Route("/", page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/events", events, methods=["GET"]),
        Route("/api/state", state, methods=["GET"]),
        Route("/api/approve", action(actions.approve), methods=["POST"]),
        Route("/api/signoff", action(actions.signoff), methods=["POST"]),
        Route("/api/rollback", action(actions.rollback), methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={Refused: _refused, ChangeoverError: _failed},
    )
    return _HostCheck(app, ctx.hosts)


class _HostCheck:
    """Every request names a host this dashboard answers to (DNS rebinding), before routing."""

    def __init__(self, app: Any, hosts: frozenset[str] | None) -> None:
        self.app = app
        self.hosts = hosts

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
            try:
                check_host(headers, self.hosts)
            except Refused as exc:
                await _refused_response(exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _need_read(ctx: Context, request: Request) -> None:
    if not ctx.can_read(request):
        raise Refused(401, "this dashboard needs its viewer token: open the page and log in")


async def _body(request: Request) -> bytes:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise Refused(413, f"the request is larger than {MAX_BODY // 1024} KiB")
    return body


def _json_body(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body or b"{}")
    except ValueError as exc:
        raise Refused(400, "the request body is not JSON") from exc
    if not isinstance(data, dict):
        raise Refused(400, "the request body must be a JSON object")
    return data


def _json(data: Any, status: int = 200) -> JSONResponse:
    return JSONResponse(REDACTOR.scrub_value(data), status_code=status, headers=SECURITY_HEADERS)


def _sse(event: str, update: Update) -> str:
    data = json.dumps(REDACTOR.scrub_value(update.to_json()), ensure_ascii=False)
    return f"event: {event}\nid: {update.seq}\ndata: {data}\n\n"


def _refused_response(exc: Refused) -> Response:
    headers = dict(SECURITY_HEADERS)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="changeover dashboard"'
    return JSONResponse(
        {"ok": False, "error": REDACTOR.scrub(exc.message)}, status_code=exc.status, headers=headers
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return _refused_response(exc)


async def _failed(request: Request, exc: Exception) -> Response:
    """A foreseeable failure behind the request (the journal cannot be written): 503."""
    message = REDACTOR.scrub(str(exc))
    log.warning("dashboard request failed: %s", message)
    return _json({"ok": False, "error": message}, 503)


def _set_cookie(response: Response, cookie: str) -> None:
    # HttpOnly: page scripts never see it; Strict: no other site's request carries it.
    response.set_cookie(Sessions.COOKIE, cookie, httponly=True, samesite="strict", path="/")


def _page_html() -> str:
    return (STATIC / "index.html").read_text(encoding="utf-8")


def _login_page(ctx: Context, status: int, error: str = "") -> HTMLResponse:
    html = (STATIC / "login.html").read_text(encoding="utf-8")
    html = html.replace("__PLAN_NAME__", _escape(ctx.runbook.plan.name))
    html = html.replace("__ERROR__", _escape(error))
    return HTMLResponse(html, status_code=status, headers=SECURITY_HEADERS)


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


# --- the server --------------------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn inside our loop; ``Dashboard`` owns the signals."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Dashboard:
    """The running dashboard: its socket, poller and web server; ``start`` then ``close``."""

    def __init__(
        self,
        runbook: Runbook,
        tokens: Tokens,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        poll_s: float = 0.5,
    ) -> None:
        check_bind(host, tokens)
        for token in (tokens.operator, tokens.viewer):
            if token is not None:
                REDACTOR.register(token)
        register_plan_secrets(runbook.plan, runbook.loaded.base_dir)
        self.runbook = runbook
        self.tokens = tokens
        self.host = host
        self.requested_port = port
        self.port = port
        self.feed = Feed(runbook.journal, Board(runbook.plan), poll_s=poll_s, lag=live_lag(runbook))
        self._server: _Server | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        sock = _bind(self.host, self.requested_port)
        self.port = int(sock.getsockname()[1])
        await self.feed.catch_up()  # the first page already shows the journal as it is
        ctx = Context(
            self.runbook, self.feed, self.tokens, Sessions(), allowed_hosts(self.host, self.port)
        )
        config = uvicorn.Config(
            build_app(ctx),
            log_level="warning",
            access_log=False,  # a login or bearer header never reaches a log line this way
            lifespan="off",
            loop="none",
            timeout_graceful_shutdown=1,
        )
        self._server = _Server(config)
        serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        self._tasks = [serving, asyncio.create_task(self.feed.run())]
        while not self._server.started:
            if serving.done():
                sock.close()
                await self.close()
                raise ServiceError(f"the dashboard could not start on {self.url}")
            await asyncio.sleep(0.01)

    async def close(self) -> None:
        self.feed.close()  # ends the open streams, so the server can stop at once
        if self._server is not None:
            self._server.should_exit = True
        tasks, self._tasks = self._tasks, []
        if len(tasks) > 1:
            tasks[1].cancel()  # the poller; the server stops by itself (should_exit)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


def _bind(host: str, port: int) -> socket.socket:
    """Bind here, so a taken port is a plain error rather than uvicorn exiting from its task."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ServiceError(
            f"the dashboard cannot listen on {host}:{port}: {exc.strerror or exc} "
            "(another dashboard there? choose one with --port)"
        ) from exc
    except BaseException:
        sock.close()
        raise
    return sock
