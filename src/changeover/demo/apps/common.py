"""What the demo's two sample apps share: the API's routes, its JSON in and out, the checks every
request passes before its handler (admin token, fault switch), and the answers of both.

The legacy app (``legacy.py``: threads, SQLite) and the new app (``new.py``: asyncio, PostgreSQL,
Redis) each do only their own I/O and call these for the rest, so both answer with the same
status codes and JSON shapes. Ids are integers, totals strings ("12.34"), timestamps ISO 8601 in
UTC ("2026-11-26T12:00:00Z"). The cookie is in ``session.py``, the fault switch in ``faults.py``,
Prometheus in ``metrics.py``, start-up basics in ``startup.py``.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from changeover.demo.apps.faults import (
    MAX_LATENCY_MS,
    MAX_LEAK_MB_PER_S,
    FaultSwitch,
)
from changeover.demo.apps.metrics import AppMetrics
from changeover.demo.apps.session import MAX_USER_ID
from changeover.secrets import REDACTOR

MAX_BODY_BYTES = 1 << 20
DEFAULT_PAGE = 20
MAX_PAGE = 100
MAX_ITEMS_PER_ORDER = 100
MAX_QUANTITY = 10_000
MAX_TEXT = 200
MAX_TOTAL = Decimal("9999999999.99")  # numeric(12,2)
CENT = Decimal("0.01")

# Column lists valid in both dialects, in the order the shape functions below read rows.
USER_COLUMNS = "id, email, name, created_at"
ORDER_COLUMNS = "id, user_id, status, total, placed_at"
LINE_COLUMNS = "line_no, sku, quantity"
ITEM_COLUMNS = "order_id, line_no, sku, quantity"


# --- answers -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One answer, before either app turns it into its server's response."""

    status: int
    body: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()


def dumps(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def json_reply(status: int, payload: Any, headers: Sequence[tuple[str, str]] = ()) -> Reply:
    return Reply(status, dumps(payload), headers=tuple(headers))


class ApiError(Exception):
    """A request answered with an error status and ``{"error": message}``."""

    def __init__(self, status: int, message: str, headers: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = tuple(headers)

    def reply(self) -> Reply:
        return json_reply(self.status, {"error": REDACTOR.scrub(self.message)}, self.headers)


# --- routes --------------------------------------------------------------------------------------

RouteKind = Literal["api", "ops", "admin"]
_PARAM = re.compile(r"\{(?P<name>[a-z_]+)\}")


@dataclass(frozen=True)
class Route:
    """One endpoint; ``template`` is both its path pattern and its metrics label."""

    method: str
    template: str
    name: str
    kind: RouteKind
    pattern: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        regex = _PARAM.sub(lambda m: f"(?P<{m['name']}>[0-9]+)", self.template)
        object.__setattr__(self, "pattern", re.compile(f"^{regex}$"))

    @property
    def write(self) -> bool:
        """An API write: what the read-only switch refuses."""
        return self.kind == "api" and self.method in ("POST", "PATCH", "PUT", "DELETE")

    @property
    def starlette_path(self) -> str:
        return _PARAM.sub(lambda m: f"{{{m['name']}:int}}", self.template)


ROUTES: tuple[Route, ...] = (
    Route("GET", "/healthz", "healthz", "ops"),
    Route("GET", "/metrics", "metrics", "ops"),
    Route("POST", "/api/v1/login", "login", "api"),
    Route("GET", "/api/v1/me", "me", "api"),
    Route("GET", "/api/v1/users", "users", "api"),
    Route("GET", "/api/v1/users/{id}", "user", "api"),
    Route("GET", "/api/v1/items", "items", "api"),
    Route("POST", "/api/v1/orders", "create_order", "api"),
    Route("GET", "/api/v1/orders/{id}", "order", "api"),
    Route("PATCH", "/api/v1/orders/{id}", "update_order", "api"),
    Route("GET", "/admin/faults", "get_faults", "admin"),
    Route("POST", "/admin/faults", "set_faults", "admin"),
    Route("POST", "/admin/readonly", "set_readonly", "admin"),
)


def not_found(path: str) -> ApiError:
    return ApiError(404, f"no such endpoint: {path}")


def method_not_allowed(method: str, allowed: Sequence[str]) -> ApiError:
    allow = ", ".join(sorted(set(allowed)))
    return ApiError(405, f"{method} is not allowed here (allowed: {allow})", [("Allow", allow)])


def match_route(method: str, path: str) -> tuple[Route, dict[str, int]]:
    """The route for a request and its path parameters; 404 / 405 as ``ApiError``."""
    allowed = []
    for route in ROUTES:
        found = route.pattern.match(path)
        if found is None:
            continue
        if route.method != method:
            allowed.append(route.method)
            continue
        return route, {name: int(value) for name, value in found.groupdict().items()}
    if allowed:
        raise method_not_allowed(method, allowed)
    raise not_found(path)


@dataclass(frozen=True)
class Call:
    """What a handler reads from its request, the same in both apps."""

    params: Mapping[str, int] = field(default_factory=dict)
    query: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    cookie: str | None = None  # the Cookie header

    def id(self) -> int:
        value = self.params["id"]
        if not 0 < value <= MAX_USER_ID:  # beyond bigint: no such row, not a database error
            raise ApiError(404, f"no object with id {value}")
        return value


# --- before the handler: admin token and faults ------------------------------------------------


@dataclass(frozen=True)
class Admission:
    """Wait ``delay`` seconds (latency fault), then refuse with ``refusal`` or run the handler."""

    delay: float = 0.0
    refusal: ApiError | None = None


def admit(
    route: Route, authorization: str | None, admin_token: bytes | None, faults: FaultSwitch
) -> Admission:
    if route.kind == "admin":
        return Admission(refusal=_admin_refusal(authorization, admin_token))
    if route.kind == "ops":
        return Admission()
    verdict = faults.verdict(write=route.write)
    refusal = None if verdict.status is None else ApiError(verdict.status, verdict.message)
    return Admission(verdict.delay, refusal)


def _admin_refusal(authorization: str | None, admin_token: bytes | None) -> ApiError | None:
    if admin_token is None:
        # No token configured: the admin API does not exist, as far as anyone can tell.
        return ApiError(404, "no such endpoint (no admin token is configured)")
    unauthorized = [("WWW-Authenticate", 'Bearer realm="changeover-demo"')]
    if not authorization:
        return ApiError(401, "missing 'Authorization: Bearer <admin token>'", unauthorized)
    scheme, _, given = authorization.partition(" ")
    if scheme.lower() != "bearer" or not given.strip():
        return ApiError(401, "expected 'Authorization: Bearer <admin token>'", unauthorized)
    if not hmac.compare_digest(given.strip().encode(), admin_token):
        return ApiError(401, "the admin token is not valid", unauthorized)
    return None


def admin_reply(route: Route, call: Call, switch: FaultSwitch) -> Reply:
    """The admin endpoints, which touch nothing but the fault switch."""
    if route.name == "set_faults":
        body = json_object(call.body)
        switch.set_faults(
            error_rate=_number(body, "error_rate", 0.0, 1.0),
            latency_ms=_number(body, "latency_ms", 0.0, MAX_LATENCY_MS),
            leak_mb_per_s=_number(body, "leak_mb_per_s", 0.0, MAX_LEAK_MB_PER_S),
        )
    elif route.name == "set_readonly":
        on = json_object(call.body).get("on")
        if not isinstance(on, bool):
            raise ApiError(400, "'on' must be true or false")
        switch.set_readonly(on)
    return json_reply(200, {**switch.faults.to_json(), "leaked_bytes": switch.leaked_bytes})


def _number(body: Mapping[str, Any], name: str, low: float, high: float) -> float:
    value = body.get(name, 0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ApiError(400, f"'{name}' must be a number")
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low:g} and {high:g}")
    return float(value)


def health_reply(app: str, instance: str, failed: Mapping[str, str]) -> Reply:
    """200 when nothing failed; 503 naming each dependency that did and why."""
    if failed:
        payload = {"ok": False, "app": app, "instance": instance, "failed": dict(failed)}
        return json_reply(503, payload)
    return json_reply(200, {"ok": True, "app": app, "instance": instance})


def metrics_reply(metrics: AppMetrics) -> Reply:
    body, content_type = metrics.exposition()
    return Reply(200, body, content_type)


# --- JSON in -------------------------------------------------------------------------------------


def json_object(body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise ApiError(400, "the request body is empty: send a JSON object")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(400, "the request body is not valid JSON") from None
    if not isinstance(value, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return value


def _text(body: Mapping[str, Any], name: str) -> str:
    value = body.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ApiError(400, f"'{name}' is required and must be a non-empty string")
    if len(value) > MAX_TEXT:
        raise ApiError(400, f"'{name}' must be at most {MAX_TEXT} characters")
    return value


def _integer(value: Any, what: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"{what} must be an integer")
    if not low <= value <= high:
        raise ApiError(400, f"{what} must be between {low} and {high}")
    return value


def parse_login(body: bytes) -> str:
    """The email to log in as."""
    return _text(json_object(body), "email")


@dataclass(frozen=True)
class NewOrder:
    user_id: int
    total: Decimal
    items: tuple[tuple[str, int], ...]  # (sku, quantity), numbered 1.. in this order


def parse_new_order(body: bytes) -> NewOrder:
    obj = json_object(body)
    if "user_id" not in obj:
        raise ApiError(400, "'user_id' is required")
    user_id = _integer(obj["user_id"], "'user_id'", 1, MAX_USER_ID)
    items = obj.get("items")
    if not isinstance(items, list) or not items:
        raise ApiError(400, "'items' must be a non-empty list of {sku, quantity}")
    if len(items) > MAX_ITEMS_PER_ORDER:
        raise ApiError(400, f"an order has at most {MAX_ITEMS_PER_ORDER} items")
    lines = []
    for number, item in enumerate(items, 1):
        if not isinstance(item, dict):
            raise ApiError(400, f"item {number} must be an object with 'sku' and 'quantity'")
        sku = _text(item, "sku")
        quantity = _integer(item.get("quantity"), f"item {number}'s 'quantity'", 1, MAX_QUANTITY)
        lines.append((sku, quantity))
    return NewOrder(user_id, _total(obj.get("total")), tuple(lines))


def _total(value: Any) -> Decimal:
    # A string keeps cents exact; a JSON number is accepted when it has no more than two places.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ApiError(400, "'total' is required, as a string like \"12.34\"")
    try:
        total = Decimal(str(value).strip())
    except InvalidOperation:
        raise ApiError(400, f"'total' is not a number: {str(value)[:40]!r}") from None
    if not total.is_finite() or total < 0 or total > MAX_TOTAL:
        raise ApiError(400, f"'total' must be between 0 and {MAX_TOTAL}")
    if total != total.quantize(CENT):
        raise ApiError(400, "'total' has more than two decimal places")
    return total.quantize(CENT)


def parse_status(body: bytes) -> str:
    return _text(json_object(body), "status")


@dataclass(frozen=True)
class Page:
    limit: int
    after: int


def parse_page(query: Mapping[str, str]) -> Page:
    """``limit`` (1..100, default 20) and ``after`` (the last id already seen, default 0)."""
    return Page(
        _query_int(query, "limit", DEFAULT_PAGE, 1, MAX_PAGE),
        _query_int(query, "after", 0, 0, MAX_USER_ID),
    )


def _query_int(query: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise ApiError(400, f"'{name}' must be a whole number")
    value = int(raw)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}")
    return value


# --- JSON out ------------------------------------------------------------------------------------


def timestamp_json(value: Any) -> str | None:
    """ISO 8601 in UTC with a Z, from SQLite's text ('2026-11-26 12:00:00') or a datetime."""
    if value is None:
        return None
    moment: datetime
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value))
        except ValueError:
            return str(value)  # not a timestamp SQLite wrote: show it as stored, never drop it
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # SQLite's CURRENT_TIMESTAMP is UTC
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def money_json(value: Any) -> str:
    """Two decimal places as text: SQLite keeps DECIMAL as REAL, PostgreSQL as numeric."""
    return str(Decimal(str(value)).quantize(CENT))


def user_json(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ``USER_COLUMNS``."""
    return {
        "id": int(row[0]),
        "email": row[1],
        "name": row[2],
        "created_at": timestamp_json(row[3]),
    }


def order_json(row: Sequence[Any], lines: Sequence[Sequence[Any]]) -> dict[str, Any]:
    """A row of ``ORDER_COLUMNS`` with its rows of ``LINE_COLUMNS``."""
    return {
        "id": int(row[0]),
        "user_id": int(row[1]),
        "status": row[2],
        "total": money_json(row[3]),
        "placed_at": timestamp_json(row[4]),
        "items": [
            {"line_no": int(line[0]), "sku": line[1], "quantity": int(line[2])} for line in lines
        ],
    }


def item_json(row: Sequence[Any]) -> dict[str, Any]:
    """A row of ``ITEM_COLUMNS``."""
    return {
        "order_id": int(row[0]),
        "line_no": int(row[1]),
        "sku": row[2],
        "quantity": int(row[3]),
    }


def users_reply(rows: Sequence[Sequence[Any]], page: Page) -> Reply:
    users = [user_json(row) for row in rows]
    next_after = users[-1]["id"] if len(users) == page.limit else None
    return json_reply(200, {"users": users, "next_after": next_after})


def user_missing(user_id: int) -> ApiError:
    return ApiError(404, f"no user with id {user_id}")


def order_missing(order_id: int) -> ApiError:
    return ApiError(404, f"no order with id {order_id}")


def unknown_order_user(user_id: int) -> ApiError:
    return ApiError(422, f"no user with id {user_id}: an order needs an existing user")


def not_logged_in() -> ApiError:
    return ApiError(401, "not logged in: no valid co_session cookie")
