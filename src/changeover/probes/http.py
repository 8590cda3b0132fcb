"""HTTP probes: an endpoint answers as expected (`http`), protects its resources (`http.auth`)
and allows exactly the right browser origins (`http.cors`).

Every probe here targets either a plan system (kind `app` or `http`, optionally one named
instance) or a full `url`; ``Session`` (through ``resolve_target``) turns either into a base URL,
headers and a TLS setting in one place, and sends the requests. URLs shown to the operator lose
their credentials and query strings.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import ssl
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import SplitResult, urlsplit, urlunsplit

import httpx
from pydantic import Field, field_validator, model_validator

from changeover.errors import UsageError
from changeover.plan.secretref import SecretRef
from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Status,
    Unreachable,
)
from changeover.probes.tls import system_trust, trust_context
from changeover.units import Duration

# --- the target: a system of the plan or a full URL ------------------------------------------


class HttpTargetParams(ProbeParams):
    """Where an HTTP probe goes: `system` (and optionally `instance`) or `url`, exactly one."""

    system: str | None = Field(
        default=None, description="Name of an `app` or `http` system of the plan."
    )
    instance: str | None = Field(
        default=None, description="Name of one instance of the `app` system (default: its url)."
    )
    url: SecretRef | None = Field(
        default=None,
        description="A full URL instead of a system, e.g. 'https://api.example.com' or "
        "'${HEALTH_URL}'.",
    )

    @model_validator(mode="after")
    def _one_target(self) -> HttpTargetParams:
        if (self.system is None) == (self.url is None):
            raise ValueError("give exactly one of `system` or `url`")
        if self.instance is not None and self.system is None:
            raise ValueError("`instance` needs `system` (the app the instance belongs to)")
        return self


@dataclass(frozen=True)
class HttpTarget:
    """A resolved target. ``base_url`` and ``headers`` may hold secrets: never show them."""

    base_url: str
    headers: Mapping[str, str]
    verify: ssl.SSLContext | bool

    def url(self, path: str) -> str:
        return join_url(self.base_url, path)


def resolve_target(
    params: HttpTargetParams,
    ctx: ProbeContext,
    kinds: Sequence[str],
    extra_headers: Mapping[str, Any] | None = None,
) -> HttpTarget:
    """Resolve `system`/`instance` or `url` (secrets included) into a base URL and headers."""
    headers: dict[str, str] = {}
    verify: ssl.SSLContext | bool = True
    if params.system is not None:
        system = ctx.system(params.system, kinds)
        where = f"systems.{params.system}"
        raw_url = _system_url(system, params.system, params.instance)
        url = ctx.secret(raw_url, what=f"{where}.url")
        for name, value in system.headers.items():
            headers[name] = ctx.secret(value, what=f"{where}.headers.{name}")
        if not system.verify_tls:
            verify = False
        elif system.ca_file is not None:
            verify = trust_context(ctx.path(system.ca_file), what=f"{where}.ca_file")
    else:
        url = ctx.secret(params.url, what="url")
    for name, value in (extra_headers or {}).items():
        _drop_header(headers, name)
        headers[name] = ctx.secret(value, what=f"headers.{name}")
    if urlsplit(url).scheme not in ("http", "https"):
        raise UsageError(f"{safe_url(url)} is not an http:// or https:// URL")
    if verify is True:
        # The operating system's trust store, as the tls probe uses (not httpx's certifi bundle).
        verify = system_trust()
    return HttpTarget(url, headers, verify)


def _system_url(system: Any, name: str, instance: str | None) -> Any:
    instances = getattr(system, "instances", [])
    if instance is not None:
        for candidate in instances:
            if candidate.name == instance:
                return candidate.url
        known = ", ".join(i.name for i in instances) or "none"
        raise UsageError(f"system {name!r} has no instance {instance!r} (instances: {known})")
    if system.url is None:
        names = ", ".join(i.name for i in instances)
        raise UsageError(f"system {name!r} has no url; name one of its instances ({names})")
    return system.url


def _drop_header(headers: dict[str, str], name: str) -> None:
    for key in [k for k in headers if k.lower() == name.lower()]:
        del headers[key]


def join_url(base: str, path: str) -> str:
    """``base`` with ``path`` appended to its path; "/" or "" leaves the base's path as it is."""
    parts = urlsplit(base)
    extra = urlsplit(path)
    new_path = parts.path or "/"
    if extra.path not in ("", "/"):
        new_path = parts.path.rstrip("/") + "/" + extra.path.lstrip("/")
    query = "&".join(q for q in (parts.query, extra.query) if q)
    return urlunsplit(SplitResult(parts.scheme, parts.netloc, new_path, query, ""))


def safe_url(url: str) -> str:
    """The URL without user, password, query string and fragment (any of them may hold a token)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = f"{host}:{port}" if port is not None else host
    return urlunsplit(SplitResult(parts.scheme, netloc, parts.path, "", ""))


# --- talking HTTP, with failures in plain words -----------------------------------------------


@dataclass(frozen=True)
class Exchange:
    """One request and what came back (headers with lower-case names)."""

    method: str
    url: str  # safe to show
    status: int
    latency_ms: float
    headers: Mapping[str, str]
    body: str


class Session:
    """Requests to one resolved target with one connection pool; failures in plain words.

    The session gives up at 70% of the probe's timeout, counted from its creation, before
    ``run_probe`` does, so that the message can name the URL that did not answer.
    """

    def __init__(
        self,
        params: HttpTargetParams,
        ctx: ProbeContext,
        kinds: Sequence[str],
        extra_headers: Mapping[str, Any] | None = None,
    ) -> None:
        self.timeout = params.timeout
        self.deadline = asyncio.get_running_loop().time() + params.timeout * 0.7
        self.target = resolve_target(params, ctx, kinds, extra_headers)
        # Redirects are not followed: a redirect is an answer the operator may want to check.
        self._client = httpx.AsyncClient(
            verify=self.target.verify,
            timeout=params.timeout,
            follow_redirects=False,
            trust_env=False,
        )

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._client.aclose()

    async def send(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str] | None = None,
        body: str | None = None,
    ) -> Exchange:
        """Send one request to ``path`` under the target (with the target's headers by default)."""
        url = self.target.url(path)
        shown = safe_url(url)
        content = body.encode() if body is not None else None
        sent_headers = dict(self.target.headers if headers is None else headers)
        started = time.perf_counter()
        try:
            async with asyncio.timeout_at(self.deadline):
                response = await self._client.request(
                    method, url, headers=sent_headers, content=content
                )
        except (TimeoutError, httpx.TimeoutException) as exc:
            raise Unreachable(f"no answer from {shown} within {self.timeout:g}s") from exc
        except httpx.ConnectError as exc:
            raise Unreachable(f"cannot connect to {shown}: {describe_error(exc)}") from exc
        except httpx.HTTPError as exc:
            raise Unreachable(f"{method} {shown} failed: {describe_error(exc)}") from exc
        latency_ms = (time.perf_counter() - started) * 1000
        seen = {k.lower(): ", ".join(response.headers.get_list(k)) for k in response.headers}
        return Exchange(method, shown, response.status_code, latency_ms, seen, response.text)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def describe_error(exc: BaseException) -> str:
    """The root cause of an httpx error in a few plain words ("connection refused")."""
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return f"TLS certificate not trusted: {cause.verify_message or cause.reason}"
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return f"TLS handshake failed: {cause.reason or cause}"
        if isinstance(cause, socket.gaierror):
            return "host name not found"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno is not None:
            return os.strerror(cause.errno).lower()
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"the server broke the HTTP protocol ({exc})"
    return str(exc) or type(exc).__name__


# --- http: one request, checked -------------------------------------------------------------


class HttpParams(HttpTargetParams):
    path: str = Field(default="/", description="Path appended to the base URL.")
    method: str = Field(default="GET", description="HTTP method.")
    headers: dict[str, SecretRef] = Field(
        default_factory=dict, description="Extra request headers (values may be '${TOKEN}')."
    )
    body: str | None = Field(default=None, description="Request body.")
    status: int | list[int] = Field(default=200, description="Expected status code(s).")
    json_path: str | None = Field(
        default=None,
        description="Dotted path into the JSON body that must exist, e.g. 'checks.db.status' "
        "or 'items.0.id'.",
    )
    json_equals: Any | None = Field(
        default=None, description="Value expected at `json_path` (compared as JSON)."
    )
    body_regex: str | None = Field(default=None, description="Regex the body must match.")
    expect_headers: dict[str, str] = Field(
        default_factory=dict, description="Response header → regex its value must match."
    )
    max_latency: Duration | None = Field(
        default=None, description="Slowest acceptable answer, e.g. '200ms'."
    )

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @field_validator("status")
    @classmethod
    def _status_codes(cls, value: int | list[int]) -> int | list[int]:
        codes = value if isinstance(value, list) else [value]
        if not codes or any(not 100 <= code <= 599 for code in codes):
            raise ValueError("status codes are between 100 and 599")
        return value

    @field_validator("body_regex")
    @classmethod
    def _body_regex(cls, value: str | None) -> str | None:
        return _valid_regex(value) if value is not None else None

    @field_validator("expect_headers")
    @classmethod
    def _header_regexes(cls, value: dict[str, str]) -> dict[str, str]:
        for pattern in value.values():
            _valid_regex(pattern)
        return value

    @model_validator(mode="after")
    def _equals_needs_path(self) -> HttpParams:
        if "json_equals" in self.model_fields_set and self.json_path is None:
            raise ValueError("`json_equals` needs `json_path` (where in the body to look)")
        return self

    @property
    def statuses(self) -> list[int]:
        return self.status if isinstance(self.status, list) else [self.status]


def _valid_regex(pattern: str) -> str:
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from exc
    return pattern


class HttpProbe(Probe[HttpParams, Exchange]):
    """Send one request and check status, JSON body, body text, headers and latency."""

    name = "http"
    summary = "An HTTP endpoint answers with the expected status, body, headers and latency."
    Params = HttpParams
    system_kinds: ClassVar[tuple[str, ...]] = ("app", "http")

    async def gather(self, params: HttpParams, ctx: ProbeContext) -> Exchange:
        async with Session(params, ctx, self.system_kinds, params.headers) as session:
            return await session.send(params.method, params.path, body=params.body)

    def interpret(self, params: HttpParams, raw: Exchange) -> CheckResult:
        return judge_exchange(params, raw)


MISSING = object()


def judge_exchange(params: HttpParams, raw: Exchange) -> CheckResult:
    """Pure: the evidence of one exchange against every expectation of ``params``."""
    codes = params.statuses
    latency = round(raw.latency_ms, 1)
    evidence = [
        Measure("status", raw.status, expected=" or ".join(map(str, codes)), ok=raw.status in codes)
    ]
    if params.max_latency is None:
        evidence.append(Measure("latency_ms", latency, unit="ms"))
    else:
        limit_ms = params.max_latency.total_seconds() * 1000
        evidence.append(
            Measure(
                "latency_ms",
                latency,
                expected=f"< {limit_ms:g}",
                ok=raw.latency_ms < limit_ms,
                unit="ms",
            )
        )
    if params.json_path is not None:
        evidence.append(_json_measure(params, raw.body))
    if params.body_regex is not None:
        found = re.search(params.body_regex, raw.body) is not None
        evidence.append(
            Measure(
                "body",
                _excerpt(raw.body) if not found else "matches",
                expected=f"matches /{params.body_regex}/",
                ok=found,
            )
        )
    for header, pattern in params.expect_headers.items():
        value = raw.headers.get(header.lower())
        evidence.append(
            Measure(
                f"header {header}",
                value if value is not None else "(absent)",
                expected=f"matches /{pattern}/",
                ok=value is not None and re.search(pattern, value) is not None,
            )
        )
    request = f"{raw.method} {raw.url}"
    bad = [m for m in evidence if m.ok is False]
    if not bad:
        return CheckResult.judge(
            evidence, passed=f"{request} answered {raw.status} in {raw.latency_ms:.0f} ms"
        )
    problems = "; ".join(f"{m.name} = {m.value} (expected {m.expected})" for m in bad)
    return CheckResult.judge(evidence, passed="", failed=f"{request}: {problems}")


def _json_measure(params: HttpParams, body: str) -> Measure:
    path = params.json_path or ""
    name = f"json {path}"
    check_value = "json_equals" in params.model_fields_set
    expected = json.dumps(params.json_equals) if check_value else "present"
    try:
        document = json.loads(body)
    except ValueError:
        return Measure(name, "(body is not JSON)", expected=expected, ok=False)
    value = json_lookup(document, path)
    if value is MISSING:
        return Measure(name, "(absent)", expected=expected, ok=False)
    ok = value == params.json_equals if check_value else True
    return Measure(name, value, expected=expected, ok=ok)


def json_lookup(document: Any, path: str) -> Any:
    """Follow a dotted path ("items.0.id") into parsed JSON; ``MISSING`` when it leads nowhere."""
    current = document
    for key in path.split(".") if path else []:
        if isinstance(current, dict) and key in current:
            current = current[key]
        elif isinstance(current, list) and re.fullmatch(r"-?\d+", key):
            index = int(key)
            if not -len(current) <= index < len(current):
                return MISSING
            current = current[index]
        else:
            return MISSING
    return current


def _excerpt(text: str, limit: int = 200) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"


# --- http.auth: resources are protected and scoped to their owner ----------------------------


class HttpAuthParams(HttpTargetParams):
    path: str = Field(description="A resource of the user whose credentials are given.")
    header: str = Field(default="Authorization", description="Header that carries credentials.")
    credentials: SecretRef = Field(
        description="The header's value, e.g. 'Bearer ${API_TOKEN}' (a reference, never a value)."
    )
    other_path: str | None = Field(
        default=None,
        description="A resource of another user, which these credentials must not reach.",
    )


@dataclass(frozen=True)
class AuthAttempt:
    label: str  # "without credentials", "with credentials", "other user's resource"
    expected: tuple[int, ...] | None  # None: any 2xx
    exchange: Exchange


class HttpAuthProbe(Probe[HttpAuthParams, list[AuthAttempt]]):
    """Request a resource without and with credentials, and another user's resource."""

    name = "http.auth"
    summary = (
        "A resource refuses requests without credentials (401/403), serves its owner (2xx) "
        "and refuses another user's resource (403/404)."
    )
    Params = HttpAuthParams
    system_kinds: ClassVar[tuple[str, ...]] = ("app", "http")

    async def gather(self, params: HttpAuthParams, ctx: ProbeContext) -> list[AuthAttempt]:
        async with Session(params, ctx, self.system_kinds) as session:
            anonymous = dict(session.target.headers)
            _drop_header(anonymous, params.header)
            authenticated = {
                **anonymous,
                params.header: ctx.secret(params.credentials, what="credentials"),
            }
            plan: list[tuple[str, tuple[int, ...] | None, str, dict[str, str]]] = [
                ("without credentials", (401, 403), params.path, anonymous),
                ("with credentials", None, params.path, authenticated),
            ]
            if params.other_path is not None:
                plan.append(("other user's resource", (403, 404), params.other_path, authenticated))
            attempts = []
            for label, expected, path, headers in plan:
                exchange = await session.send("GET", path, headers)
                attempts.append(AuthAttempt(label, expected, exchange))
        return attempts

    def interpret(self, params: HttpAuthParams, raw: list[AuthAttempt]) -> CheckResult:
        evidence = []
        problems = []
        for attempt in raw:
            status = attempt.exchange.status
            if attempt.expected is None:
                ok, expected = 200 <= status < 300, "2xx"
            else:
                ok, expected = status in attempt.expected, " or ".join(map(str, attempt.expected))
            evidence.append(
                Measure(
                    f"{attempt.label}: GET {attempt.exchange.url}", status, expected=expected, ok=ok
                )
            )
            if not ok:
                problems.append(_auth_problem(attempt, expected))
        if problems:
            return CheckResult.fail("; ".join(problems), *evidence)
        return CheckResult.passed(
            "refused without credentials, served with them"
            + (", refused another user's resource" if params.other_path else ""),
            *evidence,
        )


def _auth_problem(attempt: AuthAttempt, expected: str) -> str:
    exchange = attempt.exchange
    what = f"GET {exchange.url} {attempt.label} answered {exchange.status} (expected {expected})"
    ok_status = 200 <= exchange.status < 300
    if attempt.label == "without credentials" and ok_status:
        return f"{what}: the resource is not protected"
    if attempt.label == "other user's resource" and ok_status:
        return f"{what}: these credentials reach another user's data"
    return what


# --- http.cors: preflight answers for an allowed and a disallowed origin ---------------------


class HttpCorsParams(HttpTargetParams):
    path: str = Field(default="/", description="Path the browser would call.")
    allowed_origin: str = Field(description="An origin that must be allowed, e.g. a web app.")
    disallowed_origin: str = Field(
        default="https://not-allowed.example", description="An origin that must not be allowed."
    )
    method: str = Field(default="GET", description="Method of the cross-origin request.")
    request_headers: list[str] = Field(
        default_factory=list, description="Headers the browser will send (preflight asks for them)."
    )

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()


@dataclass(frozen=True)
class Preflight:
    origin: str
    exchange: Exchange


class HttpCorsProbe(Probe[HttpCorsParams, list[Preflight]]):
    """Send a CORS preflight (OPTIONS) from an allowed and from a disallowed origin."""

    name = "http.cors"
    summary = (
        "CORS preflight allows the allowed origin (method and headers included), refuses "
        "another origin, and never combines '*' with credentials."
    )
    Params = HttpCorsParams
    system_kinds: ClassVar[tuple[str, ...]] = ("app", "http")

    async def gather(self, params: HttpCorsParams, ctx: ProbeContext) -> list[Preflight]:
        results = []
        async with Session(params, ctx, self.system_kinds) as session:
            for origin in (params.allowed_origin, params.disallowed_origin):
                headers = {
                    **session.target.headers,
                    "Origin": origin,
                    "Access-Control-Request-Method": params.method,
                }
                if params.request_headers:
                    headers["Access-Control-Request-Headers"] = ", ".join(params.request_headers)
                exchange = await session.send("OPTIONS", params.path, headers)
                results.append(Preflight(origin, exchange))
        return results

    def interpret(self, params: HttpCorsParams, raw: list[Preflight]) -> CheckResult:
        return judge_cors(params, raw)


# The Fetch standard lets these through without being listed in the preflight answer.
_SAFELISTED_METHODS = frozenset({"GET", "HEAD", "POST"})
_SAFELISTED_HEADERS = frozenset({"accept", "accept-language", "content-language"})


def judge_cors(params: HttpCorsParams, raw: list[Preflight]) -> CheckResult:
    """Pure: the verdict on the two preflight answers (allowed origin first)."""
    allowed, disallowed = raw
    evidence: list[Measure] = []
    problems: list[str] = []

    for preflight in raw:
        headers = preflight.exchange.headers
        if headers.get("access-control-allow-origin", "").strip() == "*" and _credentials(headers):
            problems.append(
                "the server answers Access-Control-Allow-Origin: * together with "
                "Access-Control-Allow-Credentials: true (browsers reject it; name the origins)"
            )
            break

    a = allowed.exchange
    a_origin = a.headers.get("access-control-allow-origin")
    creds = _credentials(a.headers)
    origin_ok = a_origin == params.allowed_origin or (a_origin == "*" and not creds)
    status_ok = 200 <= a.status < 300
    evidence.append(
        Measure(f"preflight status ({params.allowed_origin})", a.status, "2xx", ok=status_ok)
    )
    if not status_ok:
        problems.append(f"preflight from {params.allowed_origin} answered {a.status}")
    evidence.append(
        Measure(
            f"Allow-Origin for {params.allowed_origin}",
            a_origin if a_origin is not None else "(absent)",
            expected=params.allowed_origin,
            ok=origin_ok,
        )
    )
    if not origin_ok:
        problems.append(
            f"allowed origin {params.allowed_origin} is not allowed "
            f"(Access-Control-Allow-Origin: {a_origin or 'absent'})"
        )
    methods = _tokens(a.headers.get("access-control-allow-methods", ""))
    method_ok = (
        params.method in _SAFELISTED_METHODS
        or params.method.lower() in methods
        or ("*" in methods and not creds)
    )
    evidence.append(
        Measure(
            "Allow-Methods",
            a.headers.get("access-control-allow-methods", "(absent)"),
            expected=f"includes {params.method}",
            ok=method_ok,
        )
    )
    if not method_ok:
        problems.append(f"method {params.method} is not in Access-Control-Allow-Methods")
    if params.request_headers:
        listed = _tokens(a.headers.get("access-control-allow-headers", ""))
        missing = [
            h
            for h in params.request_headers
            if h.lower() not in listed
            and h.lower() not in _SAFELISTED_HEADERS
            # '*' covers every header except Authorization, and only without credentials.
            and not ("*" in listed and not creds and h.lower() != "authorization")
        ]
        evidence.append(
            Measure(
                "Allow-Headers",
                a.headers.get("access-control-allow-headers", "(absent)"),
                expected=f"includes {', '.join(params.request_headers)}",
                ok=not missing,
            )
        )
        if missing:
            problems.append(f"header(s) {', '.join(missing)} not in Access-Control-Allow-Headers")

    d = disallowed.exchange
    d_origin = d.headers.get("access-control-allow-origin")
    leaked = d_origin == params.disallowed_origin or (d_origin == "*" and _credentials(d.headers))
    evidence.append(
        Measure(
            f"Allow-Origin for {params.disallowed_origin}",
            d_origin if d_origin is not None else "(absent)",
            expected=f"not {params.disallowed_origin}",
            ok=not leaked,
        )
    )
    if d_origin == params.disallowed_origin:
        problems.append(
            f"disallowed origin {params.disallowed_origin} is allowed "
            "(the server seems to echo any Origin)"
        )

    if problems:
        return CheckResult(Status.FAIL, "; ".join(problems), tuple(evidence))
    return CheckResult.passed(
        f"{params.allowed_origin} may call {params.method} {a.url}; "
        f"{params.disallowed_origin} may not",
        *evidence,
    )


def _credentials(headers: Mapping[str, str]) -> bool:
    return headers.get("access-control-allow-credentials", "").strip().lower() == "true"


def _tokens(value: str) -> set[str]:
    return {token.strip().lower() for token in value.split(",") if token.strip()}
