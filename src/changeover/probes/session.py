"""The http.session probe: a session created on one app (legacy) is accepted by another (new).

While the load balancer moves users from legacy to new, a user logged in on legacy must stay
logged in on new. The probe logs in on the first target, carries every cookie the login set (and
a bearer token from its JSON answer) to the second target, and judges that answer. Cookie values
and tokens are registered with the redactor and never appear in reasons or evidence.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar
from urllib.parse import urlencode

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from changeover.plan.secretref import FileRef, SecretRef
from changeover.probes.base import (
    CheckResult,
    Measure,
    Probe,
    ProbeContext,
    ProbeParams,
    Unreachable,
)
from changeover.probes.http import (
    MISSING,
    Exchange,
    HttpTarget,
    HttpTargetParams,
    Session,
    json_lookup,
    safe_url,
)
from changeover.secrets import REDACTOR, has_reference

KINDS = ("app", "http")


def _valid_statuses(value: int | list[int]) -> int | list[int]:
    codes = value if isinstance(value, list) else [value]
    if not codes or any(not 100 <= code <= 599 for code in codes):
        raise ValueError("status codes are between 100 and 599")
    return value


Statuses = Annotated[int | list[int], AfterValidator(_valid_statuses)]

# Keys of a login body whose values are credentials: written as references, never literally.
_CREDENTIAL_KEY = re.compile(r"pass|secret|token|api.?key|credential", re.IGNORECASE)


class SessionRequest(BaseModel):
    """One request of the probe: where it goes (as in the `http` probe), what it must answer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    system: str | None = Field(
        default=None, description="Name of an `app` or `http` system of the plan."
    )
    instance: str | None = Field(
        default=None, description="Name of one instance of the `app` system (default: its url)."
    )
    url: SecretRef | None = Field(
        default=None, description="A full URL instead of a system, e.g. '${LEGACY_URL}'."
    )
    path: str = Field(description="Path appended to the base URL, e.g. '/login'.")
    method: str = Field(default="GET", description="HTTP method.")
    headers: dict[str, SecretRef] = Field(
        default_factory=dict, description="Extra request headers (values may be '${TOKEN}')."
    )
    status: Statuses = Field(default=200, description="Expected status code(s).")

    @field_validator("method")
    @classmethod
    def _upper(cls, value: str) -> str:
        return value.upper()

    @model_validator(mode="after")
    def _one_target(self) -> SessionRequest:
        if (self.system is None) == (self.url is None):
            raise ValueError("give exactly one of `system` or `url`")
        if self.instance is not None and self.system is None:
            raise ValueError("`instance` needs `system` (the app the instance belongs to)")
        return self

    @property
    def statuses(self) -> list[int]:
        return self.status if isinstance(self.status, list) else [self.status]

    def target(self, timeout: float) -> HttpTargetParams:
        """The target for ``Session``, with the share of the probe's timeout this request gets."""
        return HttpTargetParams(
            system=self.system, instance=self.instance, url=self.url, timeout=timeout
        )


class LoginRequest(SessionRequest):
    method: str = Field(default="POST", description="HTTP method.")
    json_: dict[str, Any] | None = Field(
        default=None,
        alias="json",
        description="JSON body; a string value may be a '${LOGIN_PASSWORD}' reference, a value "
        "{file: path} is read from the file.",
    )
    form: dict[str, SecretRef] | None = Field(
        default=None, description="Form body (urlencoded); values may be references."
    )
    token_json_path: str | None = Field(
        default="token",
        description="Where a bearer token is in the login's JSON answer (carried as "
        "`Authorization: Bearer`, when present); null: never carry one.",
    )

    @model_validator(mode="after")
    def _one_body_without_literal_credentials(self) -> LoginRequest:
        if self.json_ is not None and self.form is not None:
            raise ValueError("give `json` or `form` (the login body), not both")
        bodies = (("json", self.json_ or {}), ("form", self.form or {}))
        for where, body in bodies:
            for path, value in _leaves(body, where):
                key = path.rsplit(".", 1)[-1]
                literal = isinstance(value, str) and not has_reference(value)
                if literal and _CREDENTIAL_KEY.search(key):
                    raise ValueError(
                        f"{path} is a credential written in the plan; write a reference such "
                        "as '${LOGIN_PASSWORD}' (or {file: path})"
                    )
        return self


def _leaves(value: Any, path: str) -> list[tuple[str, Any]]:
    if isinstance(value, Mapping):
        return [leaf for k, v in value.items() for leaf in _leaves(v, f"{path}.{k}")]
    if isinstance(value, list):
        return [leaf for i, v in enumerate(value) for leaf in _leaves(v, f"{path}.{i}")]
    return [(path, value)]


class UseRequest(SessionRequest):
    json_path: str | None = Field(
        default=None,
        description="Dotted path that must exist in the JSON answer, e.g. 'user.id'.",
    )


class SessionParams(ProbeParams):
    login: LoginRequest = Field(
        description="The login on the first target (e.g. legacy): {system | url, instance, "
        "path, method: POST, json | form, headers, status: 200, token_json_path: token}."
    )
    use: UseRequest = Field(
        description="A request on the second target (e.g. new) that needs the session: "
        "{system | url, instance, path, method: GET, headers, status: 200, json_path}."
    )
    same_json_path: str | None = Field(
        default=None,
        description="Dotted path whose value must be equal in the login answer and the `use` "
        "answer, e.g. 'user.id': the same user on both.",
    )


@dataclass(frozen=True)
class SessionAttempt:
    """The login, what it gave to carry, and the request carrying it (None when not sent)."""

    login_target: str  # "legacy", "new instance go-1" or a URL without credentials
    login: Exchange
    cookies: tuple[str, ...]  # names of the cookies the login set; their values are not kept
    token: bool  # the login gave a bearer token
    use_target: str
    use: Exchange | None


def set_cookies(header: str) -> dict[str, str]:
    """Cookie name → value from Set-Cookie headers joined with ", " (as ``Exchange`` has them).

    A comma followed by ``name=`` starts the next cookie; the comma inside an ``Expires`` date
    does not. Cookies the answer deletes (empty value, ``Max-Age`` ≤ 0) are left out.
    """
    cookies: dict[str, str] = {}
    for piece in re.split(r",\s*(?=[^;,\s=]+=)", header):
        pair, *attributes = (part.strip() for part in piece.split(";"))
        name, equals, value = pair.partition("=")
        if not equals or not name.strip():
            continue
        deleted = not value.strip() or any(
            re.fullmatch(r"max-age\s*=\s*(-\d+|0+)", attribute, re.IGNORECASE)
            for attribute in attributes
        )
        if deleted:
            cookies.pop(name.strip(), None)
        else:
            cookies[name.strip()] = value.strip()
    return cookies


def bearer_token(body: str, path: str | None) -> str | None:
    """The token at ``path`` in a JSON body, when there is one (a non-empty string)."""
    if path is None:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    token = json_lookup(document, path)
    return token if isinstance(token, str) and token else None


class HttpSessionProbe(Probe[SessionParams, SessionAttempt]):
    """Log in on one target and use the session (cookies, bearer token) on another."""

    name = "http.session"
    summary = (
        "A session created on one app (legacy) is accepted by another (new): the login's "
        "cookies and token work there, for the same user."
    )
    Params = SessionParams
    system_kinds: ClassVar[tuple[str, ...]] = KINDS

    async def gather(self, params: SessionParams, ctx: ProbeContext) -> SessionAttempt:
        loop = asyncio.get_running_loop()
        started = loop.time()
        login = params.login
        async with Session(login.target(params.timeout), ctx, KINDS, login.headers) as session:
            login_target = _label(login, session.target)
            body, content_type = _login_body(login, ctx)
            headers = dict(session.target.headers)
            if content_type and not any(k.lower() == "content-type" for k in headers):
                headers["Content-Type"] = content_type
            try:
                answer = await session.send(login.method, login.path, headers, body)
            except Unreachable as exc:
                raise Unreachable(f"the login on {login_target} failed: {exc}") from None
        cookies = set_cookies(answer.headers.get("set-cookie", ""))
        token = bearer_token(answer.body, login.token_json_path)
        for secret in (*cookies.values(), token or ""):
            REDACTOR.register(secret, ephemeral=True)  # a new one at every look

        use = params.use
        # The second request gets what the first left of the timeout (Session stops at 70%).
        remaining = max(params.timeout - (loop.time() - started), 0.1)
        async with Session(use.target(remaining), ctx, KINDS, use.headers) as session:
            use_target = _label(use, session.target)
            if answer.status not in login.statuses or not (cookies or token):
                return SessionAttempt(
                    login_target, answer, tuple(cookies), token is not None, use_target, None
                )
            carried = {"cookie"} | ({"authorization"} if token else set())
            headers = {k: v for k, v in session.target.headers.items() if k.lower() not in carried}
            if cookies:
                headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
            if token:
                headers["Authorization"] = f"Bearer {token}"
            try:
                used = await session.send(use.method, use.path, headers)
            except Unreachable as exc:
                raise Unreachable(
                    f"the request carrying the session from {login_target} to {use_target} "
                    f"failed: {exc}"
                ) from None
        return SessionAttempt(
            login_target, answer, tuple(cookies), token is not None, use_target, used
        )

    def interpret(self, params: SessionParams, raw: SessionAttempt) -> CheckResult:
        return judge_session(params, raw)


def _label(request: SessionRequest, target: HttpTarget) -> str:
    if request.system is None:
        return safe_url(target.base_url)
    if request.instance is None:
        return request.system
    return f"{request.system} instance {request.instance}"


def _login_body(login: LoginRequest, ctx: ProbeContext) -> tuple[str | None, str | None]:
    """The login body with its references resolved, and its content type."""
    if login.json_ is not None:
        return json.dumps(_resolve(login.json_, ctx, "login.json")), "application/json"
    if login.form is not None:
        fields = {k: ctx.secret(v, what=f"login.form.{k}") for k, v in login.form.items()}
        return urlencode(fields), "application/x-www-form-urlencoded"
    return None, None


def _resolve(value: Any, ctx: ProbeContext, what: str) -> Any:
    """A JSON value with its references resolved: ``${VAR}`` in strings, ``{file: path}``."""
    if isinstance(value, str):
        return ctx.secret(value, what=what)
    if isinstance(value, Mapping) and set(value) == {"file"} and isinstance(value["file"], str):
        return ctx.secret(FileRef(file=value["file"]), what=what)
    if isinstance(value, Mapping):
        return {k: _resolve(v, ctx, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, ctx, f"{what}.{i}") for i, v in enumerate(value)]
    return value


def _json_value(body: str, path: str) -> Any:
    try:
        return json_lookup(json.loads(body), path)
    except ValueError:
        return MISSING


def _expected(codes: list[int]) -> str:
    return " or ".join(map(str, codes))


def judge_session(params: SessionParams, raw: SessionAttempt) -> CheckResult:
    """Pure: the verdict on a login and the request that carried its session."""
    login, use = raw.login, raw.use
    login_codes = params.login.statuses
    evidence = [
        Measure(
            f"login status ({raw.login_target})",
            login.status,
            expected=_expected(login_codes),
            ok=login.status in login_codes,
        ),
        Measure("cookies set by the login", ", ".join(raw.cookies) or "(none)"),
        Measure("bearer token from the login", raw.token),
    ]
    if login.status not in login_codes:
        return CheckResult.fail(
            f"the login on {raw.login_target} failed: {login.method} {login.url} answered "
            f"{login.status} (expected {_expected(login_codes)})",
            *evidence,
        )
    if use is None:
        return CheckResult.fail(
            f"the login on {raw.login_target} answered {login.status} but set no cookie and "
            f"gave no token: there is no session to carry to {raw.use_target}",
            *evidence,
        )

    use_codes = params.use.statuses
    use_ok = use.status in use_codes
    evidence.append(
        Measure(
            f"use status ({raw.use_target})",
            use.status,
            expected=_expected(use_codes),
            ok=use_ok,
        )
    )
    carried = _carried(raw)
    request = f"{use.method} {use.url}"
    if not use_ok:
        # 401/403, or a redirect (to the login page), is the new app saying "not logged in".
        refused = use.status in (401, 403) or 300 <= use.status < 400
        verb = "refused" if refused else "not accepted"
        return CheckResult.fail(
            f"the session ({carried}) from {raw.login_target} was {verb} by {raw.use_target}: "
            f"{request} answered {use.status} (expected {_expected(use_codes)})",
            *evidence,
        )
    problems = []
    if params.use.json_path is not None:
        found = _json_value(use.body, params.use.json_path) is not MISSING
        evidence.append(
            Measure(
                f"json {params.use.json_path} ({raw.use_target})",
                "present" if found else "(absent)",
                expected="present",
                ok=found,
            )
        )
        if not found:
            problems.append(f"{request} answered without {params.use.json_path} in its JSON body")
    if params.same_json_path is not None:
        path = params.same_json_path
        before = _json_value(login.body, path)
        after = _json_value(use.body, path)
        same = before is not MISSING and before == after
        evidence.append(
            Measure(
                f"same {path}",
                _shown(after),
                expected=f"{_shown(before)} (as on {raw.login_target})",
                ok=same,
            )
        )
        if before is MISSING:
            problems.append(f"the login on {raw.login_target} answered without {path}")
        elif after is MISSING:
            problems.append(f"{request} answered without {path}")
        elif not same:
            problems.append(
                f"{raw.use_target} answered for another user: {path} = {_shown(after)} on "
                f"{raw.use_target}, {_shown(before)} on {raw.login_target}"
            )
    if problems:
        return CheckResult.fail(
            f"the session ({carried}) from {raw.login_target} reached {raw.use_target}, but "
            + "; ".join(problems),
            *evidence,
        )
    return CheckResult.passed(
        f"the session ({carried}) from {raw.login_target} was accepted by {raw.use_target} "
        f"({request} answered {use.status})",
        *evidence,
    )


def _carried(raw: SessionAttempt) -> str:
    """What carries the session, by name only: "cookie sid", "cookies a, b and bearer token"."""
    parts = []
    if raw.cookies:
        noun = "cookie" if len(raw.cookies) == 1 else "cookies"
        parts.append(f"{noun} {', '.join(raw.cookies)}")
    if raw.token:
        parts.append("bearer token")
    return " and ".join(parts)


def _shown(value: Any) -> Any:
    return "(absent)" if value is MISSING else value
