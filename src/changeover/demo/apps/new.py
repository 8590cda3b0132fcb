"""The demo's new app: asyncio on PostgreSQL (psycopg's pool) with a Redis cache.

``python -m changeover.demo.apps.new --pg-url URL --schema app --redis-url URL --port N
--instance NAME [--secret-file F] [--admin-token-file F] [--pool-size 8] [--cache-ttl 30]``
serves the same API as the legacy app (``common.ROUTES``) with Starlette on uvicorn (uvloop,
httptools, one worker, no access log). The URLs may come from ``$CHANGEOVER_DEMO_PG_URL`` and
``$CHANGEOVER_DEMO_REDIS_URL`` instead, which keeps passwords out of the process list. Prints
``new <instance> listening on http://HOST:PORT`` when ready; SIGTERM or SIGINT: stop accepting,
finish requests in flight, exit 0. /healthz checks the pool (SELECT 1) and Redis (PING).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import psycopg
import redis.asyncio as aioredis
import uvicorn
import uvloop
from prometheus_client import Gauge
from psycopg_pool import AsyncConnectionPool, PoolTimeout
from redis.backoff import NoBackoff
from redis.exceptions import RedisError
from redis.retry import Retry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from changeover.demo.apps.cache import Cache
from changeover.demo.apps.common import (
    MAX_BODY_BYTES,
    ROUTES,
    ApiError,
    Call,
    Reply,
    Route,
    admin_reply,
    admit,
    dumps,
    health_reply,
    item_json,
    json_object,
    json_reply,
    match_route,
    metrics_reply,
    not_found,
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
from changeover.demo.apps.pg_store import OrderRows, PgStore, check_database, connection_kwargs
from changeover.demo.apps.session import SessionSigner, cookie_from_header
from changeover.demo.apps.startup import (
    Basics,
    add_common_arguments,
    announce,
    read_basics,
    run_main,
)
from changeover.errors import ChangeoverError, UsageError
from changeover.secrets import REDACTOR

log = logging.getLogger("changeover.demo.apps.new")

APP = "new"
PG_URL_ENV = "CHANGEOVER_DEMO_PG_URL"
REDIS_URL_ENV = "CHANGEOVER_DEMO_REDIS_URL"
HEALTH_TIMEOUT_SECONDS = 1.0
POOL_WAIT_SECONDS = 5.0  # a request waits this long for a free connection, then answers 503
REDIS_TIMEOUT_SECONDS = 0.5
GRACEFUL_SECONDS = 10
ROUTE_KEY = "changeover.route"  # the matched route's template, left in the ASGI scope
Handler = Callable[[Call], Awaitable[Reply]]


class NewApp:
    """The handlers over one pool, one Redis client, the cookie signer, faults and metrics."""

    def __init__(
        self,
        instance: str,
        pool: AsyncConnectionPool[Any],
        redis: aioredis.Redis,
        basics: Basics,
        schema: str,
        cache_ttl: int,
    ) -> None:
        self.instance = instance
        self.pool = pool
        self.redis = redis
        self.store = PgStore(pool)
        self.signer = SessionSigner(basics.secret)
        self.admin_token = basics.admin_token
        self.faults = FaultSwitch()
        self.metrics = AppMetrics()
        self.cache = Cache(redis, schema, cache_ttl, self.metrics.registry)
        pool_size = Gauge(
            "app_db_pool_size", "Connections the pool holds.", registry=self.metrics.registry
        )
        pool_size.set_function(lambda: pool.get_stats().get("pool_size", 0))
        available = Gauge(
            "app_db_pool_available",
            "Idle connections ready in the pool.",
            registry=self.metrics.registry,
        )
        available.set_function(lambda: pool.get_stats().get("pool_available", 0))
        self.handlers: dict[str, Handler] = {
            "healthz": self.healthz,
            "metrics": self.prometheus,
            "login": self.login,
            "me": self.me,
            "users": self.users,
            "user": self.user,
            "items": self.items,
            "order": self.order,
            "create_order": self.create_order,
            "update_order": self.update_order,
        }

    async def answer(self, route: Route, call: Call) -> Reply:
        if route.kind == "admin":
            return self.admin(route, call)
        return await self.handlers[route.name](call)

    def admin(self, route: Route, call: Call) -> Reply:
        """The shared fault switch, plus this app's own: ``skip_invalidation`` (the cache)."""
        if route.name != "set_faults":
            return admin_reply(route, call, self.faults)
        skip = json_object(call.body).get("skip_invalidation", False)
        if not isinstance(skip, bool):
            raise ApiError(400, "'skip_invalidation' must be true or false")
        reply = admin_reply(route, call, self.faults)  # validates the rest first
        self.cache.skip_invalidation = skip
        return json_reply(200, {**json.loads(reply.body), "skip_invalidation": skip})

    # --- ops -------------------------------------------------------------------------------

    async def healthz(self, call: Call) -> Reply:
        checks = {"postgres": self.store.ping(), "redis": self.redis.ping()}
        outcomes = await asyncio.gather(
            *(_within(HEALTH_TIMEOUT_SECONDS, check) for check in checks.values())
        )
        failed = {name: why for name, why in zip(checks, outcomes, strict=True) if why}
        return health_reply(APP, self.instance, failed)

    async def prometheus(self, call: Call) -> Reply:
        return metrics_reply(self.metrics)

    # --- API -------------------------------------------------------------------------------

    async def login(self, call: Call) -> Reply:
        email = parse_login(call.body)
        user = await self.store.user_by_email(email)
        if user is None:
            raise ApiError(404, f"no user with email {email}")
        issued = self.signer.issue(int(user[0]))
        await self.store.add_session(secrets.token_hex(16), int(user[0]), issued.expires_at)
        return json_reply(200, {"user": user_json(user)}, [("Set-Cookie", issued.set_cookie())])

    async def me(self, call: Call) -> Reply:
        user_id = self.signer.verify(cookie_from_header(call.cookie))
        user = await self.store.user(user_id) if user_id is not None else None
        if user is None:
            raise not_logged_in()
        return json_reply(200, {"user": user_json(user)})

    async def users(self, call: Call) -> Reply:
        page = parse_page(call.query)
        return users_reply(await self.store.users(page), page)

    async def user(self, call: Call) -> Reply:
        key = self.cache.key("user", call.id())
        cached = await self.cache.get(key)
        if cached is not None:
            return Reply(200, cached)
        user = await self.store.user(call.id())
        if user is None:
            raise user_missing(call.id())
        body = dumps(user_json(user))
        await self.cache.put(key, body)
        return Reply(200, body)

    async def items(self, call: Call) -> Reply:
        rows = await self.store.items(parse_page(call.query).limit)
        return json_reply(200, {"items": [item_json(row) for row in rows]})

    async def order(self, call: Call) -> Reply:
        key = self.cache.key("order", call.id())
        cached = await self.cache.get(key)
        if cached is not None:
            return Reply(200, cached)
        # A write landing between this read and the put below leaves the old answer cached
        # until the TTL: the usual cache-aside window, bounded by --cache-ttl.
        body = _order_body(await self.store.order(call.id()), call.id())
        await self.cache.put(key, body)
        return Reply(200, body)

    async def create_order(self, call: Call) -> Reply:
        order = parse_new_order(call.body)
        created = await self.store.create_order(order)
        if created is None:
            raise unknown_order_user(order.user_id)
        await self.cache.invalidate(self.cache.key("order", int(created[0][0])))
        return json_reply(201, order_json(*created))

    async def update_order(self, call: Call) -> Reply:
        status = parse_status(call.body)
        updated = await self.store.set_status(call.id(), status)
        if updated is not None:
            await self.cache.invalidate(self.cache.key("order", call.id()))
        return Reply(200, _order_body(updated, call.id()))


def _order_body(found: OrderRows | None, order_id: int) -> bytes:
    if found is None:
        raise order_missing(order_id)
    return dumps(order_json(*found))


async def _within(seconds: float, check: Awaitable[object]) -> str | None:
    """None when ``check`` succeeded in time, else why not (for /healthz)."""
    try:
        await asyncio.wait_for(check, seconds)
    except TimeoutError:
        return f"no answer within {seconds:g} s"
    except (psycopg.Error, PoolTimeout, RedisError, OSError) as exc:
        return REDACTOR.scrub(str(exc).strip() or type(exc).__name__)
    return None


# --- HTTP ----------------------------------------------------------------------------------------


def _endpoint(app: NewApp, route: Route) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        request.scope[ROUTE_KEY] = route.template
        try:
            body = await _read_body(request)
            authorization = request.headers.get("authorization")
            admission = admit(route, authorization, app.admin_token, app.faults)
            if admission.delay > 0:
                await asyncio.sleep(admission.delay)
            if admission.refusal is not None:
                raise admission.refusal
            call = Call(
                request.path_params,
                dict(request.query_params),
                body,
                request.headers.get("cookie"),
            )
            reply = await app.answer(route, call)
        except ApiError as exc:
            reply = exc.reply()
        except PoolTimeout:
            reply = ApiError(503, "every database connection is busy; retry shortly").reply()
        except psycopg.OperationalError as exc:
            log.error("%s %s: PostgreSQL: %s", request.method, request.url.path, exc)
            reply = ApiError(503, f"PostgreSQL is unavailable: {exc}".strip()).reply()
        except Exception:
            log.exception("%s %s failed", request.method, request.url.path)
            reply = ApiError(500, "internal error (see the app's log)").reply()
        return _response(reply)

    return endpoint


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ApiError(413, f"the body is larger than {MAX_BODY_BYTES} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def _response(reply: Reply) -> Response:
    response = Response(reply.body, reply.status, media_type=reply.content_type)
    for name, value in reply.headers:
        response.headers.append(name, value)
    return response


async def _no_route(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405, answered as the legacy app answers them (same matcher)."""
    try:
        match_route(request.method, request.url.path)
    except ApiError as error:
        return _response(error.reply())
    # Both match the same table, so this is only reached for what Starlette alone refuses.
    return _response(not_found(request.url.path).reply())


class _Observe:
    """Counts and times every answer by route template and names the instance (X-Backend)."""

    def __init__(self, app: ASGIApp, metrics: AppMetrics, instance: str) -> None:
        self.app = app
        self.metrics = metrics
        self.backend = (b"x-backend", instance.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_backend(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), self.backend]
            await send(message)

        try:
            await self.app(scope, receive, send_with_backend)
        finally:
            route = scope.get(ROUTE_KEY, UNMATCHED)
            self.metrics.observe(scope["method"], route, status, time.perf_counter() - started)


def build_app(app: NewApp) -> ASGIApp:
    """The Starlette app: one route per ``common.ROUTES`` entry, JSON 404 / 405."""
    routes = [
        StarletteRoute(route.starlette_path, _endpoint(app, route), methods=[route.method])
        for route in ROUTES
    ]
    starlette = Starlette(routes=routes, exception_handlers={404: _no_route, 405: _no_route})
    starlette.router.redirect_slashes = False  # the legacy app does not redirect either
    return _Observe(starlette, app.metrics, app.instance)


KEEP_ALIVE_SECONDS = 75


class _Server(uvicorn.Server):
    """uvicorn that prints the ready line once listening and leaves signals to ``serve``."""

    def __init__(self, config: uvicorn.Config, ready_line: str) -> None:
        super().__init__(config)
        self.ready_line = ready_line

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # ``serve`` handles SIGTERM/SIGINT from the start; uvicorn's own handling would
        # re-raise the signal after a clean shutdown and turn exit 0 into death by SIGTERM.
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            announce(self.ready_line)


# --- process -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    basics: Basics
    pg_url: str
    redis_url: str
    schema: str
    instance: str
    pool_size: int
    cache_ttl: int


async def serve(settings: Settings, sock: socket.socket) -> int:
    """Open the pool and Redis, serve until SIGTERM/SIGINT, close everything; the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    server: _Server | None = None

    def on_signal(signum: int) -> None:
        stop.set()
        if server is not None:
            server.handle_exit(signum, None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)
    kwargs = connection_kwargs(settings.schema, settings.instance)
    await check_database(settings.pg_url, kwargs, settings.schema)
    redis = aioredis.Redis.from_url(
        settings.redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 0),  # a cache that is down is skipped, not retried
    )
    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        settings.pg_url,
        min_size=settings.pool_size,
        max_size=settings.pool_size,
        kwargs=kwargs,
        timeout=POOL_WAIT_SECONDS,
        # After a failover every pooled connection is dead: checked before each use, a dead
        # one is replaced instead of failing a request (a multi-host URL with
        # target_session_attrs=read-write then reaches the promoted server).
        check=AsyncConnectionPool.check_connection,
        name=f"new-{settings.instance}",
        open=False,
    )
    try:
        try:
            await redis.ping()
        except RedisError as exc:
            where = _where(settings.redis_url)
            raise ChangeoverError(f"cannot reach Redis at {where}: {exc}") from exc
        try:
            await pool.open(wait=True, timeout=10)
        except PoolTimeout as exc:
            raise ChangeoverError("PostgreSQL did not fill the connection pool in 10 s") from exc
        app = NewApp(
            settings.instance,
            pool,
            redis,
            settings.basics,
            settings.schema,
            settings.cache_ttl,
        )
        config = uvicorn.Config(
            build_app(app),
            loop="uvloop",  # what main() runs on; serve() is called on that loop
            http="httptools",
            workers=1,
            access_log=False,
            log_level="warning",
            lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SECONDS,
            # longer than the proxy keeps an idle upstream connection (30 s): uvicorn's 5 s
            # closed connections the proxy was about to send a write on (a 502 it cannot replay)
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
        port = sock.getsockname()[1]
        ready = f"{APP} {settings.instance} listening on http://{settings.basics.host}:{port}"
        server = _Server(config, ready)
        if not stop.is_set():
            await server.serve(sockets=[sock])
        app.faults.close()
    finally:
        await pool.close()
        await redis.aclose()
    return 0


def _where(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port or 6379}{parts.path or ''}"


def _bind(host: str, port: int) -> socket.socket:
    """Bind here, so a taken port is a plain error rather than uvicorn exiting from its task."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ChangeoverError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    return sock


def _register_password(url: str) -> None:
    password = urlsplit(url).password
    if password:
        REDACTOR.register(password)


def main() -> int:
    parser = argparse.ArgumentParser(
        prog="python -m changeover.demo.apps.new",
        description="The demo's new app: asyncio, PostgreSQL pool, Redis cache.",
    )
    parser.add_argument("--pg-url", help=f"PostgreSQL URL (else ${PG_URL_ENV})")
    parser.add_argument("--schema", default="app", help="schema holding the app's tables")
    parser.add_argument("--redis-url", help=f"Redis URL (else ${REDIS_URL_ENV})")
    parser.add_argument("--instance", required=True, help="this instance's name, e.g. new-1")
    parser.add_argument("--pool-size", type=int, default=8, help="PostgreSQL connections")
    parser.add_argument("--cache-ttl", type=int, default=30, help="seconds a cached answer lives")
    add_common_arguments(parser)
    args = parser.parse_args()
    pg_url = args.pg_url or os.environ.get(PG_URL_ENV, "")
    redis_url = args.redis_url or os.environ.get(REDIS_URL_ENV, "")
    if not pg_url or not redis_url:
        raise UsageError(f"pass --pg-url and --redis-url (or set ${PG_URL_ENV}, ${REDIS_URL_ENV})")
    _register_password(pg_url)
    _register_password(redis_url)
    if not 1 <= args.pool_size <= 100:
        raise UsageError("--pool-size must be between 1 and 100")
    if not 1 <= args.cache_ttl <= 86400:
        raise UsageError("--cache-ttl must be between 1 and 86400 seconds")
    settings = Settings(
        read_basics(args),
        pg_url,
        redis_url,
        args.schema,
        args.instance,
        args.pool_size,
        args.cache_ttl,
    )
    sock = _bind(settings.basics.host, settings.basics.port)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(settings, sock))


if __name__ == "__main__":
    run_main(APP, main)
