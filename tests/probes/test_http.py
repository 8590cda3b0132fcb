"""The http, http.auth and http.cors probes against a real HTTP server on a loopback port."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from changeover.plan.systems import AppSystem, HttpSystem, Instance, PostgresSystem
from changeover.probes.base import CheckResult, ProbeContext, Status, run_probe
from changeover.probes.http import (
    MISSING,
    Exchange,
    HttpAuthParams,
    HttpCorsParams,
    HttpParams,
    Preflight,
    join_url,
    json_lookup,
    judge_cors,
    judge_exchange,
    safe_url,
)
from support.certs import make_ca, make_leaf

HEALTH = {"status": "ok", "checks": {"db": {"status": "ok"}}, "items": [{"id": 7}]}
DEGRADED = {"status": "degraded", "checks": {"db": {"status": "down"}}}
TOKENS = {"Bearer alice-token": "alice", "Bearer bob-token": "bob"}
APP_ORIGIN = "https://app.example"


class Handler(BaseHTTPRequestHandler):
    """A small API: health endpoints, per-user resources and CORS answers good and bad."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: Any = b"", headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode() if not isinstance(body, bytes) else body
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        user = TOKENS.get(self.headers.get("Authorization", ""))
        owner = path.rsplit("/", 1)[-1]
        if path == "/healthz":
            self._send(200, HEALTH, {"Content-Type": "application/json", "X-Version": "2.4.1"})
        elif path == "/degraded":
            self._send(503, DEGRADED, {"Content-Type": "application/json"})
        elif path == "/slow":
            time.sleep(0.3)
            self._send(200, b"finally")
        elif path == "/text":
            self._send(200, b"pong\n")
        elif path == "/echo-headers":
            self._send(200, {k.lower(): v for k, v in self.headers.items()})
        elif path.startswith("/api/users/"):  # protected and scoped to the owner
            if user is None:
                self._send(401, {"error": "unauthorized"})
            elif user != owner:
                self._send(403, {"error": "forbidden"})
            else:
                self._send(200, {"user": owner})
        elif path.startswith("/open/users/"):  # forgot authentication entirely
            self._send(200, {"user": owner})
        elif path.startswith("/leaky/users/"):  # authenticates but never checks the owner
            self._send(401 if user is None else 200, {"user": owner})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self._send(200, self.rfile.read(length))

    def do_OPTIONS(self) -> None:
        origin = self.headers.get("Origin", "")
        path = self.path.split("?")[0]
        headers: dict[str, str] = {"Vary": "Origin"}
        if path == "/cors-good" and origin == APP_ORIGIN:
            headers |= {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, POST, PUT",
                "Access-Control-Allow-Headers": "Content-Type, Authorization",
            }
        elif path == "/cors-wildcard-credentials":
            headers |= {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, PUT",
            }
        elif path == "/cors-reflect":
            headers |= {
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Credentials": "true",
                "Access-Control-Allow-Methods": "GET, PUT",
            }
        elif path == "/cors-public":
            headers |= {
                "Access-Control-Allow-Origin": "*",
                "Access-Control-Allow-Methods": "*",
                "Access-Control-Allow-Headers": "*",
            }
        self._send(204, b"", headers)


def _serve(server: ThreadingHTTPServer) -> Iterator[str]:
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    port = server.server_address[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    for address in _serve(ThreadingHTTPServer(("127.0.0.1", 0), Handler)):
        yield f"http://{address}"


@pytest.fixture
def closed_port() -> int:
    """A loopback port on which nothing listens (bound once to get it, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def probe(name: str, params: Any, ctx: ProbeContext | None = None) -> CheckResult:
    return asyncio.run(run_probe(name, params, ctx or ProbeContext()))


def failed(result: CheckResult) -> list[str]:
    return [m.name for m in result.evidence if m.ok is False]


# --- http -------------------------------------------------------------------------------------


def test_http_passes_when_health_endpoint_answers_expected_json_and_headers(
    base_url: str,
) -> None:
    result = probe(
        "http",
        HttpParams(
            url=base_url,
            path="/healthz",
            json_path="checks.db.status",
            json_equals="ok",
            body_regex=r'"status":\s*"ok"',
            expect_headers={"X-Version": r"^2\."},
            max_latency="2s",
        ),
    )
    assert result.status is Status.PASS, result.reason
    values = {m.name: m.value for m in result.evidence}
    assert values["status"] == 200
    assert values["json checks.db.status"] == "ok"
    assert values["header X-Version"] == "2.4.1"
    assert values["latency_ms"] < 2000
    assert "answered 200" in result.reason


def test_http_follows_json_path_into_lists(base_url: str) -> None:
    ok = probe(
        "http", HttpParams(url=base_url, path="/healthz", json_path="items.0.id", json_equals=7)
    )
    missing = probe("http", HttpParams(url=base_url, path="/healthz", json_path="items.3.id"))
    assert ok.status is Status.PASS, ok.reason
    assert missing.status is Status.FAIL
    assert "json items.3.id = (absent) (expected present)" in missing.reason


def test_http_fails_when_status_is_not_expected(base_url: str) -> None:
    result = probe("http", HttpParams(url=base_url, path="/degraded"))
    assert result.status is Status.FAIL
    assert result.reason == f"GET {base_url}/degraded: status = 503 (expected 200)"


def test_http_accepts_any_of_several_statuses(base_url: str) -> None:
    result = probe("http", HttpParams(url=base_url, path="/degraded", status=[200, 503]))
    assert result.status is Status.PASS, result.reason


def test_http_fails_when_json_value_differs(base_url: str) -> None:
    result = probe(
        "http",
        HttpParams(
            url=base_url,
            path="/degraded",
            status=503,
            json_path="checks.db.status",
            json_equals="ok",
        ),
    )
    assert result.status is Status.FAIL
    assert 'json checks.db.status = down (expected "ok")' in result.reason


def test_http_fails_when_body_is_not_json(base_url: str) -> None:
    result = probe("http", HttpParams(url=base_url, path="/text", json_path="status"))
    assert result.status is Status.FAIL
    assert "(body is not JSON)" in result.reason


def test_http_fails_when_body_or_header_do_not_match(base_url: str) -> None:
    result = probe(
        "http",
        HttpParams(
            url=base_url,
            path="/healthz",
            body_regex="maintenance",
            expect_headers={"X-Version": r"^3\.", "X-Missing": "."},
        ),
    )
    assert result.status is Status.FAIL
    assert failed(result) == ["body", "header X-Version", "header X-Missing"]
    assert "header X-Missing = (absent)" in result.reason


def test_http_fails_when_slower_than_max_latency(base_url: str) -> None:
    result = probe("http", HttpParams(url=base_url, path="/slow", max_latency="100ms"))
    assert result.status is Status.FAIL
    assert failed(result) == ["latency_ms"]
    latency = next(m for m in result.evidence if m.name == "latency_ms")
    assert latency.value >= 300
    assert latency.expected == "< 100"


def test_http_sends_method_and_body(base_url: str) -> None:
    result = probe(
        "http",
        HttpParams(
            url=base_url, path="/echo", method="post", body="hello cutover", body_regex="cutover"
        ),
    )
    assert result.status is Status.PASS, result.reason
    assert result.reason.startswith("POST ")


def test_http_reports_connection_refused_in_plain_words(closed_port: int) -> None:
    result = probe("http", HttpParams(url=f"http://127.0.0.1:{closed_port}", path="/healthz"))
    assert result.status is Status.FAIL
    assert result.reason == (
        f"cannot connect to http://127.0.0.1:{closed_port}/healthz: connection refused"
    )


def test_http_reports_a_server_that_never_answers() -> None:
    # Listening without ever accepting: the kernel completes the connection, no answer follows.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        result = probe("http", HttpParams(url=f"http://127.0.0.1:{port}/healthz", timeout=2))
    assert result.status is Status.FAIL
    assert result.reason == f"no answer from http://127.0.0.1:{port}/healthz within 2s"


def test_http_failure_reason_hides_credentials_and_query(closed_port: int) -> None:
    environ = {"HEALTH_PW": "s3cret-password", "HEALTH_TOKEN": "tok-123456"}
    url = f"http://ops:${{HEALTH_PW}}@127.0.0.1:{closed_port}/healthz?token=${{HEALTH_TOKEN}}"
    result = probe("http", HttpParams(url=url), ProbeContext(environ=environ))
    assert result.status is Status.FAIL
    text = json.dumps(result.to_json())
    for leak in ("s3cret-password", "tok-123456", "token=", "ops:"):
        assert leak not in text
    assert f"http://127.0.0.1:{closed_port}/healthz: connection refused" in result.reason


def test_http_uses_system_url_and_resolved_headers(base_url: str) -> None:
    # The URL is not a secret here: a registered secret would be scrubbed from other tests' output.
    systems = {
        "api": HttpSystem(url="${API_URL:-" + base_url + "}", headers={"X-Api-Key": "${API_KEY}"})
    }
    ctx = ProbeContext(systems, environ={"API_KEY": "key-for-tests-42"})
    result = probe(
        "http",
        HttpParams(
            system="api",
            path="/echo-headers",
            headers={"X-Request": "from-params"},
            json_path="x-api-key",
            json_equals="key-for-tests-42",
        ),
        ctx,
    )
    assert result.status is Status.PASS, result.reason
    assert "key-for-tests-42" not in json.dumps(result.to_json())


def test_http_targets_a_named_instance_of_an_app(base_url: str, closed_port: int) -> None:
    app = AppSystem(
        instances=[
            Instance(name="go-1", url=base_url),
            Instance(name="go-2", url=f"http://127.0.0.1:{closed_port}"),
        ]
    )
    ctx = ProbeContext({"new": app})
    up = probe("http", HttpParams(system="new", instance="go-1", path="/healthz"), ctx)
    down = probe("http", HttpParams(system="new", instance="go-2", path="/healthz"), ctx)
    unknown = probe("http", HttpParams(system="new", instance="go-9"), ctx)
    no_url = probe("http", HttpParams(system="new"), ctx)
    assert up.status is Status.PASS, up.reason
    assert down.status is Status.FAIL
    assert "connection refused" in down.reason
    assert unknown.status is Status.ERROR
    assert unknown.reason == "system 'new' has no instance 'go-9' (instances: go-1, go-2)"
    assert no_url.status is Status.ERROR
    assert "name one of its instances" in no_url.reason


def test_http_refuses_a_system_of_another_kind() -> None:
    ctx = ProbeContext({"postgres": PostgresSystem(url="${PG_URL}")})
    result = probe("http", HttpParams(system="postgres"), ctx)
    assert result.status is Status.ERROR
    assert result.reason == "system 'postgres' is a postgres, expected app or http"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "exactly one of `system` or `url`"),
        ({"system": "api", "url": "http://x"}, "exactly one of `system` or `url`"),
        ({"url": "http://x", "instance": "go-1"}, "`instance` needs `system`"),
        ({"url": "http://x", "json_equals": "ok"}, "`json_equals` needs `json_path`"),
        ({"url": "http://x", "body_regex": "("}, "invalid regular expression"),
        ({"url": "http://x", "status": 42}, "between 100 and 599"),
        ({"url": "http://user:hunter2@x"}, "literal password"),
        ({"url": "http://x", "max_latency": "soon"}, "expected a duration"),
    ],
)
def test_http_params_reject_invalid_combinations(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        HttpParams.model_validate(params)


def test_http_verifies_tls_with_the_systems_ca_file(tmp_path: Path) -> None:
    ca = make_ca(tmp_path)
    leaf = make_leaf(tmp_path, "leaf", ["localhost", "127.0.0.1"], ca=ca)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(leaf.cert_file, leaf.key_file)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    for address in _serve(server):
        url = f"https://{address}"
        systems = {
            "trusted": HttpSystem(url=url, ca_file=str(ca.cert_file)),
            "default": HttpSystem(url=url),
            "unverified": HttpSystem(url=url, verify_tls=False),
        }
        ctx = ProbeContext(systems)
        trusted = probe("http", HttpParams(system="trusted", path="/healthz"), ctx)
        default = probe("http", HttpParams(system="default", path="/healthz"), ctx)
        unverified = probe("http", HttpParams(system="unverified", path="/healthz"), ctx)
    assert trusted.status is Status.PASS, trusted.reason
    assert default.status is Status.FAIL
    assert default.reason.startswith(
        f"cannot connect to {url}/healthz: TLS certificate not trusted"
    )
    assert unverified.status is Status.PASS, unverified.reason


# --- http.auth --------------------------------------------------------------------------------

AUTH_ENV = {"ALICE_TOKEN": "alice-token", "WRONG_TOKEN": "nobody-token"}


def auth(base_url: str, prefix: str, token: str = "ALICE_TOKEN", other: bool = True) -> CheckResult:
    params = HttpAuthParams(
        url=base_url,
        path=f"{prefix}/users/alice",
        credentials=f"Bearer ${{{token}}}",
        other_path=f"{prefix}/users/bob" if other else None,
    )
    return probe("http.auth", params, ProbeContext(environ=AUTH_ENV))


def test_http_auth_passes_when_resources_are_protected_and_scoped(base_url: str) -> None:
    result = auth(base_url, "/api")
    assert result.status is Status.PASS, result.reason
    assert [m.value for m in result.evidence] == [401, 200, 403]
    assert all(m.ok for m in result.evidence)
    assert "alice-token" not in json.dumps(result.to_json())


def test_http_auth_fails_when_resource_is_not_protected(base_url: str) -> None:
    result = auth(base_url, "/open", other=False)
    assert result.status is Status.FAIL
    assert result.reason == (
        f"GET {base_url}/open/users/alice without credentials answered 200 "
        "(expected 401 or 403): the resource is not protected"
    )


def test_http_auth_fails_when_credentials_reach_another_users_resource(base_url: str) -> None:
    result = auth(base_url, "/leaky")
    assert result.status is Status.FAIL
    assert "these credentials reach another user's data" in result.reason
    assert [m.ok for m in result.evidence] == [True, True, False]


def test_http_auth_fails_when_credentials_are_refused(base_url: str) -> None:
    result = auth(base_url, "/api", token="WRONG_TOKEN", other=False)
    assert result.status is Status.FAIL
    assert "with credentials answered 401 (expected 2xx)" in result.reason
    assert "nobody-token" not in result.reason


def test_http_auth_drops_the_systems_credentials_for_the_anonymous_request(base_url: str) -> None:
    systems = {"api": HttpSystem(url=base_url, headers={"authorization": "Bearer ${ALICE_TOKEN}"})}
    params = HttpAuthParams(
        system="api", path="/api/users/alice", credentials="Bearer ${ALICE_TOKEN}"
    )
    result = probe("http.auth", params, ProbeContext(systems, environ=AUTH_ENV))
    assert result.status is Status.PASS, result.reason


def test_http_auth_reports_unreachable_server(closed_port: int) -> None:
    params = HttpAuthParams(
        url=f"http://127.0.0.1:{closed_port}", path="/api/users/alice", credentials="${ALICE_TOKEN}"
    )
    result = probe("http.auth", params, ProbeContext(environ=AUTH_ENV))
    assert result.status is Status.FAIL
    assert result.reason.endswith("connection refused")


# --- http.cors --------------------------------------------------------------------------------


def cors(base_url: str, path: str, **extra: Any) -> CheckResult:
    params = HttpCorsParams(url=base_url, path=path, allowed_origin=APP_ORIGIN, **extra)
    return probe("http.cors", params)


def test_http_cors_passes_with_a_correct_configuration(base_url: str) -> None:
    result = cors(
        base_url, "/cors-good", method="PUT", request_headers=["Content-Type", "Authorization"]
    )
    assert result.status is Status.PASS, result.reason
    values = {m.name: m.value for m in result.evidence}
    assert values[f"Allow-Origin for {APP_ORIGIN}"] == APP_ORIGIN
    assert values["Allow-Origin for https://not-allowed.example"] == "(absent)"


def test_http_cors_fails_on_wildcard_with_credentials(base_url: str) -> None:
    result = cors(base_url, "/cors-wildcard-credentials")
    assert result.status is Status.FAIL
    assert result.reason.startswith(
        "the server answers Access-Control-Allow-Origin: * together with "
        "Access-Control-Allow-Credentials: true"
    )


def test_http_cors_fails_when_any_origin_is_echoed(base_url: str) -> None:
    result = cors(base_url, "/cors-reflect")
    assert result.status is Status.FAIL
    assert "disallowed origin https://not-allowed.example is allowed" in result.reason


def test_http_cors_fails_when_method_or_header_is_not_allowed(base_url: str) -> None:
    result = cors(base_url, "/cors-good", method="DELETE", request_headers=["X-Trace"])
    assert result.status is Status.FAIL
    assert "method DELETE is not in Access-Control-Allow-Methods" in result.reason
    assert "header(s) X-Trace not in Access-Control-Allow-Headers" in result.reason


def test_http_cors_fails_when_the_allowed_origin_is_refused(base_url: str) -> None:
    params = HttpCorsParams(url=base_url, path="/cors-good", allowed_origin="https://admin.example")
    result = probe("http.cors", params)
    assert result.status is Status.FAIL
    assert "allowed origin https://admin.example is not allowed" in result.reason


def test_http_cors_accepts_a_public_wildcard_without_credentials(base_url: str) -> None:
    result = cors(base_url, "/cors-public", method="DELETE", request_headers=["X-Trace"])
    assert result.status is Status.PASS, result.reason


# --- pure parts -------------------------------------------------------------------------------


def exchange(status: int = 200, headers: dict[str, str] | None = None, body: str = "") -> Exchange:
    return Exchange("OPTIONS", "https://api.example/x", status, 5.0, headers or {}, body)


def preflights(
    allowed: dict[str, str], disallowed: dict[str, str] | None = None
) -> list[Preflight]:
    return [
        Preflight(APP_ORIGIN, exchange(204, allowed)),
        Preflight("https://not-allowed.example", exchange(204, disallowed or {})),
    ]


def test_cors_safelisted_method_needs_no_allow_methods() -> None:
    params = HttpCorsParams(url="https://api.example", allowed_origin=APP_ORIGIN, method="GET")
    result = judge_cors(params, preflights({"access-control-allow-origin": APP_ORIGIN}))
    assert result.status is Status.PASS, result.reason


def test_cors_wildcard_headers_do_not_cover_authorization_or_credentials() -> None:
    params = HttpCorsParams(
        url="https://api.example", allowed_origin=APP_ORIGIN, request_headers=["Authorization"]
    )
    wildcard = {"access-control-allow-origin": "*", "access-control-allow-headers": "*"}
    result = judge_cors(params, preflights(wildcard, wildcard))
    assert result.status is Status.FAIL
    assert "header(s) Authorization not in" in result.reason


def test_cors_fails_when_preflight_is_refused() -> None:
    params = HttpCorsParams(url="https://api.example", allowed_origin=APP_ORIGIN)
    raw = [
        Preflight(APP_ORIGIN, exchange(405, {})),
        Preflight("https://not-allowed.example", exchange(405, {})),
    ]
    result = judge_cors(params, raw)
    assert result.status is Status.FAIL
    assert result.reason.startswith(f"preflight from {APP_ORIGIN} answered 405")


def test_json_equals_null_is_checked_when_given() -> None:
    params = HttpParams(url="http://x", json_path="error", json_equals=None)
    assert judge_exchange(params, exchange(body='{"error": null}')).status is Status.PASS
    assert judge_exchange(params, exchange(body='{"error": "boom"}')).status is Status.FAIL


def test_max_latency_is_a_strict_upper_bound() -> None:
    params = HttpParams(url="http://x", max_latency=timedelta(milliseconds=5))
    assert judge_exchange(params, exchange()).status is Status.FAIL


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b", 1),
        ("list.1", "y"),
        ("list.-1", "y"),
        ("list.2", MISSING),
        ("a.b.c", MISSING),
        ("missing", MISSING),
        ("", {"a": {"b": 1}, "list": ["x", "y"]}),
    ],
)
def test_json_lookup_follows_dotted_paths(path: str, expected: Any) -> None:
    document = {"a": {"b": 1}, "list": ["x", "y"]}
    assert json_lookup(document, path) == expected


@pytest.mark.parametrize(
    ("base", "path", "expected"),
    [
        ("http://h:8000", "/", "http://h:8000/"),
        ("http://h:8000", "/healthz", "http://h:8000/healthz"),
        ("http://h/api/", "/v1/users", "http://h/api/v1/users"),
        ("http://h/healthz", "/", "http://h/healthz"),
        ("http://h/x?key=1", "/y?page=2", "http://h/x/y?key=1&page=2"),
    ],
)
def test_join_url_appends_paths(base: str, path: str, expected: str) -> None:
    assert join_url(base, path) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://user:pw@h:8000/p?token=t#frag", "http://h:8000/p"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("https://api.example/", "https://api.example/"),
    ],
)
def test_safe_url_drops_credentials_query_and_fragment(url: str, expected: str) -> None:
    assert safe_url(url) == expected
