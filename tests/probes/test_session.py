"""The http.session probe: a login on one real local app, its session used on another.

Two small apps on loopback ports sign their session cookies and tokens with a key: apps that
share the key accept each other's sessions (the cutover done right), apps with different keys
do not. The pure parts (cookie parsing, the verdict) are tested without servers.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
from pydantic import ValidationError

from changeover.errors import PlanError
from changeover.plan.load import parse_plan_text
from changeover.plan.systems import AppSystem, Instance
from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.http import Exchange
from changeover.probes.session import (
    SessionAttempt,
    SessionParams,
    bearer_token,
    judge_session,
    set_cookies,
)
from changeover.secrets import REDACTOR

PASSWORD = "correct-horse-battery"
USER_IDS = {"alice": 7, "bob": 8}
SHARED_KEY = b"key-shared-by-legacy-and-new"
OTHER_KEY = b"a-key-only-this-app-knows"


def sign(key: bytes, user: str) -> str:
    return f"{user}.{hmac.new(key, user.encode(), hashlib.sha256).hexdigest()}"


def app(key: bytes) -> type[BaseHTTPRequestHandler]:
    """An app whose sessions (cookie ``sid`` or a bearer token) are signed with ``key``."""

    class App(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: Any, cookies: tuple[str, ...] = ()) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            for cookie in cookies:
                self.send_header("Set-Cookie", cookie)
            if 300 <= status < 400:
                self.send_header("Location", "/login")
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _credentials(self) -> dict[str, str]:
            data = self.rfile.read(int(self.headers.get("Content-Length", "0"))).decode()
            if self.headers.get("Content-Type") == "application/json":
                return dict(json.loads(data))
            return {k: v[0] for k, v in parse_qs(data).items()}

        def do_POST(self) -> None:
            given = self._credentials()
            user = given.get("user", "")
            if user not in USER_IDS or given.get("password") != PASSWORD:
                self._send(401, {"error": "wrong user or password"})
                return
            answer = {"user": {"id": USER_IDS[user], "name": user}}
            if self.path == "/login":
                self._send(
                    200,
                    answer,
                    (
                        # An Expires date holds a comma; a deleted cookie must not be carried.
                        f"sid={sign(key, user)}; Path=/; HttpOnly; "
                        "Expires=Wed, 21 Oct 2037 07:28:00 GMT",
                        "csrf=c5rf-t0ken; Path=/",
                        "remember=; Max-Age=0",
                    ),
                )
            elif self.path == "/login-token":
                self._send(200, {**answer, "token": sign(key, user)})
            else:  # /login-nothing: answers 200 and creates no session at all
                self._send(200, answer)

        def do_GET(self) -> None:
            cookies = set_cookies(self.headers.get("Cookie", "").replace("; ", ", "))
            bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
            user = next((u for u in USER_IDS if sign(key, u) in (cookies.get("sid"), bearer)), None)
            if user is None:
                self._send(302 if self.path == "/me-redirect" else 401, {"error": "log in"})
            elif self.path == "/me-other":  # a bug: answers for another user
                self._send(200, {"user": {"id": 8}})
            elif self.path == "/me-csrf" and cookies.get("csrf") != "c5rf-t0ken":
                self._send(403, {"error": "csrf"})
            else:
                self._send(200, {"user": {"id": USER_IDS[user], "name": user}})

    return App


def _serve(key: bytes) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), app(key))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def legacy() -> Iterator[str]:
    yield from _serve(SHARED_KEY)


@pytest.fixture(scope="module")
def new() -> Iterator[str]:
    yield from _serve(SHARED_KEY)


@pytest.fixture(scope="module")
def new_other_key() -> Iterator[str]:
    yield from _serve(OTHER_KEY)


@pytest.fixture
def closed_port() -> int:
    """A loopback port on which nothing listens (bound once to get it, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def systems(legacy_url: str, new_url: str) -> ProbeContext:
    """The plan's way: two app systems, the login password a ``${LOGIN_PASSWORD}`` reference."""
    return ProbeContext(
        {
            "legacy": AppSystem(url=legacy_url),
            "new": AppSystem(instances=[Instance(name="go-1", url=new_url)]),
        },
        environ={"LOGIN_PASSWORD": PASSWORD},
    )


def session_params(
    login_path: str = "/login",
    use_path: str = "/me",
    user: str = "alice",
    **extra: Any,
) -> SessionParams:
    return SessionParams.model_validate(
        {
            "login": {
                "system": "legacy",
                "path": login_path,
                "json": {"user": user, "password": "${LOGIN_PASSWORD}"},
            },
            "use": {"system": "new", "instance": "go-1", "path": use_path, "json_path": "user.id"},
            "same_json_path": "user.id",
            **extra,
        }
    )


def probe(params: SessionParams, ctx: ProbeContext) -> CheckResult:
    return asyncio.run(run_probe("http.session", params, ctx))


def evidence(result: CheckResult) -> dict[str, Any]:
    return {m.name: m.value for m in result.evidence}


# --- against real apps --------------------------------------------------------------------------


def test_session_from_legacy_is_accepted_by_new_sharing_the_signing_key(
    legacy: str, new: str
) -> None:
    result = probe(session_params(use_path="/me-csrf"), systems(legacy, new))
    assert result.status is Status.PASS, result.reason
    assert result.reason.startswith(
        "the session (cookies sid, csrf) from legacy was accepted by new instance go-1 "
        f"(GET {new}/me-csrf answered 200)"
    )
    shown = evidence(result)
    assert shown["cookies set by the login"] == "sid, csrf"  # the deleted cookie is not carried
    assert shown["same user.id"] == 7
    text = json.dumps(result.to_json())
    for secret in (sign(SHARED_KEY, "alice"), PASSWORD):
        assert secret not in text
        assert REDACTOR.scrub(f"x {secret} y") == "x *** y"


def test_session_is_refused_by_an_app_with_another_signing_key(
    legacy: str, new_other_key: str
) -> None:
    result = probe(session_params(), systems(legacy, new_other_key))
    assert result.status is Status.FAIL
    assert result.reason == (
        "the session (cookies sid, csrf) from legacy was refused by new instance go-1: "
        f"GET {new_other_key}/me answered 401 (expected 200)"
    )
    assert evidence(result)["use status (new instance go-1)"] == 401


def test_a_redirect_to_the_login_page_counts_as_refused(legacy: str, new_other_key: str) -> None:
    result = probe(session_params(use_path="/me-redirect"), systems(legacy, new_other_key))
    assert result.status is Status.FAIL
    assert "was refused by new instance go-1" in result.reason
    assert "answered 302 (expected 200)" in result.reason


def test_bearer_token_from_the_login_answer_is_carried(
    legacy: str, new: str, new_other_key: str
) -> None:
    params = session_params(login_path="/login-token")
    accepted = probe(params, systems(legacy, new))
    refused = probe(params, systems(legacy, new_other_key))
    assert accepted.status is Status.PASS, accepted.reason
    assert accepted.reason.startswith("the session (bearer token) from legacy was accepted")
    assert evidence(accepted)["bearer token from the login"] is True
    assert refused.status is Status.FAIL
    assert refused.reason.startswith("the session (bearer token) from legacy was refused")
    assert sign(SHARED_KEY, "alice") not in json.dumps(accepted.to_json())


def test_failed_login_names_the_login_step(legacy: str, new: str) -> None:
    ctx = systems(legacy, new)
    result = probe(session_params(user="mallory"), ctx)
    assert result.status is Status.FAIL
    assert result.reason == (
        f"the login on legacy failed: POST {legacy}/login answered 401 (expected 200)"
    )
    assert "use status (new instance go-1)" not in evidence(result)


def test_login_that_creates_no_session_fails(legacy: str, new: str) -> None:
    result = probe(session_params(login_path="/login-nothing"), systems(legacy, new))
    assert result.status is Status.FAIL
    assert result.reason == (
        "the login on legacy answered 200 but set no cookie and gave no token: there is no "
        "session to carry to new instance go-1"
    )


def test_answer_for_another_user_fails_on_same_json_path(legacy: str, new: str) -> None:
    result = probe(session_params(use_path="/me-other"), systems(legacy, new))
    assert result.status is Status.FAIL
    assert result.reason.endswith(
        "reached new instance go-1, but new instance go-1 answered for another user: "
        "user.id = 8 on new instance go-1, 7 on legacy"
    )


def test_form_login_with_urls_instead_of_systems(legacy: str, new: str) -> None:
    params = SessionParams.model_validate(
        {
            "login": {
                "url": legacy,
                "path": "/login",
                "form": {"user": "bob", "password": "${LOGIN_PASSWORD}"},
            },
            "use": {"url": new, "path": "/me"},
            "same_json_path": "user.id",
        }
    )
    result = probe(params, ProbeContext(environ={"LOGIN_PASSWORD": PASSWORD}))
    assert result.status is Status.PASS, result.reason
    assert f"from {legacy} was accepted by {new} (GET {new}/me answered 200)" in result.reason


def test_unreachable_login_or_use_target_fails_in_plain_words(
    legacy: str, closed_port: int
) -> None:
    down = f"http://127.0.0.1:{closed_port}"
    login_down = probe(session_params(), systems(down, legacy))
    use_down = probe(session_params(), systems(legacy, down))
    assert login_down.status is Status.FAIL
    assert login_down.reason == (
        f"the login on legacy failed: cannot connect to {down}/login: connection refused"
    )
    assert use_down.status is Status.FAIL
    assert use_down.reason == (
        "the request carrying the session from legacy to new instance go-1 failed: "
        f"cannot connect to {down}/me: connection refused"
    )
    assert "Traceback" not in login_down.reason + use_down.reason


def test_unknown_system_or_missing_secret_is_an_error(legacy: str, new: str) -> None:
    no_secret = ProbeContext(systems(legacy, new).systems, environ={})
    result = probe(session_params(), no_secret)
    assert result.status is Status.ERROR
    assert "environment variable LOGIN_PASSWORD is not set" in result.reason
    other = session_params().model_copy(
        update={"use": session_params().use.model_copy(update={"system": "neww"})}
    )
    result = probe(other, systems(legacy, new))
    assert result.status is Status.ERROR
    assert result.reason == "unknown system 'neww'"


# --- parameters and the plan --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("login", "message"),
    [
        ({"path": "/login"}, "exactly one of `system` or `url`"),
        ({"url": "http://x", "instance": "a", "path": "/"}, "`instance` needs `system`"),
        ({"url": "http://x", "path": "/", "json": {}, "form": {}}, "`json` or `form`"),
        (
            {"url": "http://x", "path": "/", "json": {"user": "a", "password": "hunter2"}},
            "json.password is a credential written in the plan",
        ),
        (
            {"url": "http://x", "path": "/", "form": {"api_key": "k-123"}},
            "form.api_key is a credential written in the plan",
        ),
        ({"url": "http://x", "path": "/", "status": 99}, "between 100 and 599"),
        ({"url": "http://x", "path": "/", "jsn": {}}, "Extra inputs are not permitted"),
    ],
)
def test_params_reject_mistakes(login: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SessionParams.model_validate({"login": login, "use": {"url": "http://y", "path": "/"}})


PLAN = """\
version: 1
name: Test cutover
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: lead, title: Deployment lead}]
systems:
  legacy: {kind: app, url: "${LEGACY_URL}"}
  new: {kind: app, instances: [{name: go-1, url: "${NEW_URL}"}]}
stages:
  - id: rollout
    title: Rollout
    sections:
      - title: Sessions
        steps:
          - id: sessions-survive
            title: A session created on legacy is valid on new
            gate:
              metric: session_continuity
              check:
                http.session:
                  login:
                    system: legacy
                    path: /login
                    json: {user: canary, password: "${CANARY_PASSWORD}"}
                  use: {system: new, instance: go-1, path: /me, json_path: user.id}
                  same_json_path: user.id
"""


def test_plan_accepts_the_probe_as_a_synthetic_gate() -> None:
    (step,) = parse_plan_text(PLAN, "changeover.yaml").all_steps()
    (call,) = step.gates[0].checks
    assert call.probe == "http.session"
    params = call.typed
    assert isinstance(params, SessionParams)
    assert params.use.instance == "go-1"


def test_plan_with_a_literal_password_names_the_place() -> None:
    text = PLAN.replace('"${CANARY_PASSWORD}"', "hunter2")
    with pytest.raises(PlanError) as caught:
        parse_plan_text(text, "changeover.yaml")
    (issue,) = caught.value.issues
    assert issue.file == "changeover.yaml" and issue.line is not None
    assert "json.password is a credential written in the plan" in str(issue)
    assert "hunter2" not in str(issue)


# --- pure: cookies and the verdict --------------------------------------------------------------


def test_set_cookies_splits_joined_headers_but_not_expires_dates() -> None:
    header = (
        "sid=abc.def; Path=/; Expires=Wed, 21 Oct 2037 07:28:00 GMT; HttpOnly, "
        "csrf=x=y; SameSite=Lax, gone=; Path=/, old=1; max-age=0, keep=2; Max-Age=60"
    )
    assert set_cookies(header) == {"sid": "abc.def", "csrf": "x=y", "keep": "2"}
    assert set_cookies("") == {}


def test_bearer_token_is_a_non_empty_string_at_its_path() -> None:
    assert bearer_token('{"token": "t-1"}', "token") == "t-1"
    assert bearer_token('{"auth": {"access_token": "t-2"}}', "auth.access_token") == "t-2"
    assert bearer_token('{"token": ""}', "token") is None
    assert bearer_token('{"token": {"v": 1}}', "token") is None
    assert bearer_token("<html>", "token") is None
    assert bearer_token('{"token": "t-1"}', None) is None


def exchange(status: int, body: Any = None, method: str = "GET", path: str = "/me") -> Exchange:
    text = json.dumps(body) if body is not None else ""
    return Exchange(method, f"http://new.example{path}", status, 3.0, {}, text)


def attempt(use: Exchange | None, login_status: int = 200) -> SessionAttempt:
    login = exchange(login_status, {"user": {"id": 7}}, "POST", "/login")
    return SessionAttempt("legacy", login, ("sid",), False, "new", use)


def test_verdict_accepts_any_of_several_expected_statuses() -> None:
    params = session_params().model_copy(
        update={"use": session_params().use.model_copy(update={"status": [200, 204]})}
    )
    result = judge_session(params, attempt(exchange(200, {"user": {"id": 7}})))
    assert result.status is Status.PASS, result.reason
    assert result.reason.startswith("the session (cookie sid) from legacy was accepted by new")


def test_verdict_on_a_server_error_says_not_accepted_rather_than_refused() -> None:
    result = judge_session(session_params(), attempt(exchange(500, {"error": "boom"})))
    assert result.status is Status.FAIL
    assert result.reason == (
        "the session (cookie sid) from legacy was not accepted by new: "
        "GET http://new.example/me answered 500 (expected 200)"
    )


def test_verdict_fails_when_the_answer_lacks_the_json_path() -> None:
    result = judge_session(session_params(), attempt(exchange(200, {"name": "alice"})))
    assert result.status is Status.FAIL
    assert "answered without user.id in its JSON body" in result.reason
    assert evidence(result)["same user.id"] == "(absent)"
