"""The proxy's admin API: a small Starlette app over an ``AdminController`` (the running proxy).

Served by uvicorn in the proxy's own event loop, on its own port. Every change needs
``Authorization: Bearer <token>`` (compared in constant time) and answers the new routing state
with its version; reads need the token too unless the proxy opened them (admin on loopback).
Input is checked here, so the controller only ever sees known backends and valid numbers.
The token never appears in an answer or a log line. ``POST /v1/hold`` with
``{"wait_writes": s}`` also waits up to s seconds for the writes routed before the hold to end.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from changeover.errors import ChangeoverError
from changeover.proxy.state import Instance, RoutingState
from changeover.secrets import REDACTOR

log = logging.getLogger(__name__)

MAX_BODY = 64 * 1024  # admin requests are tiny JSON objects
WEIGHT_TOLERANCE = 1e-6
MAX_WAIT_WRITES = 60.0  # seconds; a hold longer than this is an outage, not a handoff


class AdminController(Protocol):
    """What the admin API asks of the running proxy.

    Each change applies, persists (``persist.StateStore.commit``) and returns the new state;
    if it cannot, it raises ``AdminRefused`` (or a ``ChangeoverError``) and changes nothing.
    """

    def state(self) -> RoutingState: ...
    def instances(self) -> Sequence[Instance]: ...
    async def set_weights(self, weights: dict[str, float]) -> RoutingState: ...
    async def set_write_owner(self, backend: str) -> RoutingState: ...
    async def hold(self) -> RoutingState: ...
    async def release(self) -> RoutingState: ...
    def writes_in_flight(self) -> dict[str, int]: ...  # per backend, routed and not yet ended
    async def wait_writes(self, timeout: float) -> bool: ...  # True once none is in flight
    async def set_mirror_share(self, share: float) -> RoutingState: ...
    async def set_drained(self, instance: Instance, drained: bool) -> RoutingState: ...
    def stats(self, window_s: int | None) -> dict[str, Any]: ...  # ProxyStats.snapshot
    def metrics(self) -> bytes: ...  # ProxyStats.render_prometheus
    def shadow_report(self) -> dict[str, Any]: ...
    def health(self) -> dict[str, Any]: ...


class AdminRefused(Exception):
    """A request the admin API (or the controller) refuses: answered ``status`` + message."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


Handler = Callable[[Request], Awaitable[Response]]


def build_admin_app(
    controller: AdminController, *, token: str | None, open_reads: bool = False
) -> Starlette:
    """The admin API over ``controller``.

    ``token``: the bearer token for changes; None refuses every change (403) — a proxy must not
    be steerable by anyone who can reach the port. ``open_reads``: reads without a token (set it
    when the admin API listens on loopback only). ``/healthz`` is always open.
    """
    api = _Api(controller, token, open_reads)
    routes = [
        Route("/healthz", api.healthz, methods=["GET"]),
        Route("/metrics", api.read(api.metrics), methods=["GET"]),
        Route("/v1/state", api.read(api.get_state), methods=["GET"]),
        Route("/v1/stats", api.read(api.get_stats), methods=["GET"]),
        Route("/v1/shadow", api.read(api.get_shadow), methods=["GET"]),
        Route("/v1/health", api.read(api.get_health), methods=["GET"]),
        Route("/v1/weights", api.change(api.put_weights), methods=["PUT"]),
        Route("/v1/write-owner", api.change(api.put_write_owner), methods=["PUT"]),
        Route("/v1/hold", api.change(api.post_hold), methods=["POST"]),
        Route("/v1/release", api.change(api.post_release), methods=["POST"]),
        Route("/v1/mirror", api.change(api.put_mirror), methods=["PUT"]),
        Route("/v1/instances/{backend}/{name}/drain", api.change(api.drain), methods=["POST"]),
        Route("/v1/instances/{backend}/{name}/ready", api.change(api.ready), methods=["POST"]),
    ]
    return Starlette(routes=routes)


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    body: dict[str, Any] = {"error": REDACTOR.scrub(message)}
    if field is not None:
        body["field"] = field
    headers = {"WWW-Authenticate": 'Bearer realm="changeover-proxy"'} if status == 401 else None
    return JSONResponse(body, status_code=status, headers=headers)


class _Api:
    def __init__(self, controller: AdminController, token: str | None, open_reads: bool) -> None:
        self.controller = controller
        self._token = token.encode() if token else None
        self.open_reads = open_reads

    # --- authentication and error boundary ---------------------------------------------------

    def _check(self, request: Request, *, change: bool) -> None:
        header = request.headers.get("authorization")
        if header is None and not change and self.open_reads:
            return
        if change and self._token is None:
            raise AdminRefused(
                403, "changes are disabled: no admin token is configured (set admin.token)"
            )
        if header is None:
            raise AdminRefused(401, "missing 'Authorization: Bearer <token>'")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise AdminRefused(401, "expected 'Authorization: Bearer <token>'")
        if self._token is None or not hmac.compare_digest(given.strip().encode(), self._token):
            raise AdminRefused(401, "the token is not valid")

    def read(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            return await self._run(request, handler, change=False)

        return guarded

    def change(self, handler: Handler) -> Handler:
        async def guarded(request: Request) -> Response:
            return await self._run(request, handler, change=True)

        return guarded

    async def _run(self, request: Request, handler: Handler, *, change: bool) -> Response:
        peer = request.client.host if request.client else "?"
        try:
            self._check(request, change=change)
            response = await handler(request)
        except AdminRefused as exc:
            if exc.status in (401, 403):
                log.warning(
                    "admin: %s %s from %s refused: %s",
                    request.method,
                    request.url.path,
                    peer,
                    exc.message,
                )
            return _error(exc.status, exc.message, exc.field)
        except ChangeoverError as exc:
            log.error("admin: %s %s failed: %s", request.method, request.url.path, exc)
            return _error(500, str(exc))
        except Exception:
            log.exception("admin: %s %s failed", request.method, request.url.path)
            return _error(500, "internal error in the admin API; see the proxy's log")
        if change:
            log.info(
                "admin: %s %s from %s -> version %s",
                request.method,
                request.url.path,
                peer,
                self.controller.state().version,
            )
        return response

    # --- reads -------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return JSONResponse({"ok": True})

    async def metrics(self, request: Request) -> Response:
        return Response(self.controller.metrics(), media_type=CONTENT_TYPE_LATEST)

    async def get_state(self, request: Request) -> Response:
        answer = self.controller.state().to_json()
        answer["writes_in_flight"] = self.controller.writes_in_flight()
        return JSONResponse(answer)

    async def get_stats(self, request: Request) -> Response:
        text = request.query_params.get("window", "10")
        window: int | None
        if text in ("all", "0"):
            window = None
        else:
            try:
                window = int(text)
            except ValueError:
                window = -1
            if not 1 <= window <= 60:
                raise AdminRefused(
                    400, f"window is 1 to 60 seconds, or 'all' (got {text[:20]!r})", "window"
                )
        return JSONResponse(self.controller.stats(window))

    async def get_shadow(self, request: Request) -> Response:
        return JSONResponse(self.controller.shadow_report())

    async def get_health(self, request: Request) -> Response:
        return JSONResponse(self.controller.health())

    # --- changes -----------------------------------------------------------------------------

    async def put_weights(self, request: Request) -> Response:
        body = await _json_object(request)
        known = list(self.controller.state().weights)
        weights = dict.fromkeys(known, 0.0)
        for backend, value in body.items():
            if backend not in weights:
                raise AdminRefused(404, _unknown_backend(backend, known), backend)
            weights[backend] = _number(value, backend, 0, 100, "a weight in percent, 0 to 100")
        total = sum(weights.values())
        if abs(total - 100) > WEIGHT_TOLERANCE:
            raise AdminRefused(400, f"weights must sum to 100 (they sum to {total:g})", "weights")
        return _state(await self.controller.set_weights(weights))

    async def put_write_owner(self, request: Request) -> Response:
        body = await _json_object(request)
        backend = body.get("backend")
        if not isinstance(backend, str):
            raise AdminRefused(400, 'expected {"backend": "<name>"}', "backend")
        known = list(self.controller.state().weights)
        if backend not in known:
            raise AdminRefused(404, _unknown_backend(backend, known), "backend")
        return _state(await self.controller.set_write_owner(backend))

    async def post_hold(self, request: Request) -> Response:
        body = await _json_object(request, empty_ok=True)
        for key in body:
            if key != "wait_writes":
                raise AdminRefused(
                    400, f'unknown field {key[:40]!r}; expected {{"wait_writes": <seconds>}}', key
                )
        wait = None
        if "wait_writes" in body:
            wait = _number(
                body["wait_writes"],
                "wait_writes",
                0,
                MAX_WAIT_WRITES,
                f"seconds to wait for writes in flight, 0 to {MAX_WAIT_WRITES:g}",
            )
        state = await self.controller.hold()
        answer = state.to_json()
        if wait is not None:
            settled = await self.controller.wait_writes(wait)
            answer = self.controller.state().to_json()  # it may have changed while we waited
            answer["writes_settled"] = settled
        answer["writes_in_flight"] = self.controller.writes_in_flight()
        return JSONResponse(answer)

    async def post_release(self, request: Request) -> Response:
        return _state(await self.controller.release())

    async def put_mirror(self, request: Request) -> Response:
        body = await _json_object(request)
        if "share" not in body:
            raise AdminRefused(400, 'expected {"share": <0 to 1>}', "share")
        share = _number(body["share"], "share", 0, 1, "a share from 0 to 1 (0.05 is 5%)")
        return _state(await self.controller.set_mirror_share(share))

    async def drain(self, request: Request) -> Response:
        return _state(await self.controller.set_drained(self._instance(request), True))

    async def ready(self, request: Request) -> Response:
        return _state(await self.controller.set_drained(self._instance(request), False))

    def _instance(self, request: Request) -> Instance:
        backend = request.path_params["backend"]
        name = request.path_params["name"]
        instances = self.controller.instances()
        for instance in instances:
            if instance.backend == backend and instance.name == name:
                return instance
        known = [i.key for i in instances]
        raise AdminRefused(
            404, f"no instance {backend}/{name} (instances: {', '.join(known)})", "instance"
        )


def _state(state: RoutingState) -> JSONResponse:
    return JSONResponse(state.to_json())


async def _json_object(request: Request, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; with ``empty_ok`` no body at all is an empty object."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise AdminRefused(413, f"the request body is over {MAX_BODY} bytes")
    if empty_ok and not body.strip():
        return {}
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise AdminRefused(400, "the request body is not JSON", "body") from None
    if not isinstance(data, dict):
        raise AdminRefused(400, "the request body must be a JSON object", "body")
    return data


def _number(value: Any, field: str, low: float, high: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise AdminRefused(400, f"{field}: expected {what} (got {json.dumps(value)[:40]})", field)
    if not low <= value <= high:
        raise AdminRefused(400, f"{field}: expected {what} (got {value:g})", field)
    return float(value)


def _unknown_backend(backend: str, known: list[str]) -> str:
    return f"unknown backend {backend[:40]!r} (backends: {', '.join(known)})"


__all__ = ["MAX_BODY", "MAX_WAIT_WRITES", "AdminController", "AdminRefused", "build_admin_app"]
