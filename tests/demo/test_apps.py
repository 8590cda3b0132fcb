"""The demo's sample apps as real processes: the legacy app on a seeded SQLite file and the new app
on a copy of it in PostgreSQL (schema ``app``) with a real Redis; every app is started as a
subprocess on a loopback port and always stopped.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from changeover.demo.apps.session import SessionSigner
from changeover.demo.data import seed_legacy_db
from changeover.migrate.copy import copy_database
from changeover.migrate.schema import plan_schema
from changeover.migrate.sqlite import introspect
from changeover.services import start_redis
from support.process import accepts, free_port, log_tail, stop

USERS = 30  # seeded users; as many orders (ids 1..30), two items each
SECRET = "demo-session-secret-0123456789"
ADMIN_TOKEN = "demo-admin-token-abcdef"
READY_SECONDS = 20


@dataclass
class App:
    """A started sample app: its base URL and process."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10, **kwargs)

    def admin(self, path: str, body: dict[str, Any]) -> httpx.Response:
        with self.client() as client:
            return client.post(path, json=body, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})


@dataclass
class Demo:
    """A seeded legacy database, its copy in PostgreSQL, secrets, and a way to start apps."""

    tmp: Path
    db: Path
    pg_url: str
    redis_url: str
    secret_file: Path
    admin_file: Path

    @contextlib.contextmanager
    def legacy(self, *, admin: bool = True) -> Iterator[App]:
        argv = ["--db", str(self.db), "--secret-file", str(self.secret_file)]
        if admin:
            argv += ["--admin-token-file", str(self.admin_file)]
        with start_app("legacy", argv, {}, self.tmp / "legacy.log") as app:
            yield app

    @contextlib.contextmanager
    def new(self, instance: str = "new-1", *, redis_url: str | None = None) -> Iterator[App]:
        argv = ["--schema", "app", "--instance", instance, "--pool-size", "4"]
        argv += ["--secret-file", str(self.secret_file)]
        argv += ["--admin-token-file", str(self.admin_file)]
        # The URLs through the environment: passwords stay out of the process list.
        env = {
            "CHANGEOVER_DEMO_PG_URL": self.pg_url,
            "CHANGEOVER_DEMO_REDIS_URL": redis_url or self.redis_url,
        }
        with start_app("new", argv, env, self.tmp / f"{instance}.log") as app:
            yield app


@contextlib.contextmanager
def start_app(kind: str, argv: list[str], env: dict[str, str], log: Path) -> Iterator[App]:
    """``python -m changeover.demo.apps.<kind> --port N …``; waits for its ready line."""
    port = free_port()
    command = [sys.executable, "-m", f"changeover.demo.apps.{kind}", "--port", str(port), *argv]
    with log.open("ab") as stderr:
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, **env}
        )
    try:
        line = _ready_line(process, log)
        expected_end = f"listening on http://127.0.0.1:{port}"
        assert line.startswith(f"{kind} ") and line.endswith(expected_end), line
        yield App(kind, f"http://127.0.0.1:{port}", process, log)
    finally:
        stop(process)
        assert process.stdout is not None
        process.stdout.close()


def _ready_line(process: subprocess.Popen[bytes], log: Path) -> str:
    assert process.stdout is not None
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        readable, _, _ = select.select([process.stdout], [], [], 0.1)
        if readable:
            line = process.stdout.readline().decode().strip()
            if line:
                return line
        if process.poll() is not None:
            break
    raise AssertionError(f"the app did not get ready:\n{log_tail(log)}")


@pytest.fixture
def demo(tmp_path: Path, pg_url: str, redis_url: str) -> Demo:
    """The demo's data step in small: seed SQLite, copy it live (capture on) into schema app."""
    db = tmp_path / "legacy.db"
    seed_legacy_db(db, USERS)
    copy_database(db, pg_url, plan_schema(introspect(db)), schema="app", capture=True)
    secret_file = tmp_path / "session.secret"
    secret_file.write_text(SECRET + "\n")
    admin_file = tmp_path / "admin.token"
    admin_file.write_text(ADMIN_TOKEN + "\n")
    return Demo(tmp_path, db, pg_url, redis_url, secret_file, admin_file)


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


# --- the same API on both sides --------------------------------------------------------------

SAME_ANSWERS = [
    ("GET", "/api/v1/users/1", None),
    ("GET", "/api/v1/users/30", None),
    ("GET", "/api/v1/users/31", None),
    ("GET", "/api/v1/users?limit=5&after=3", None),
    ("GET", "/api/v1/users?limit=100&after=28", None),
    ("GET", "/api/v1/users?limit=101", None),
    ("GET", "/api/v1/orders/1", None),
    ("GET", "/api/v1/orders/17", None),
    ("GET", "/api/v1/orders/99999999999999999999", None),
    ("GET", "/api/v1/items?limit=3", None),
    ("GET", "/api/v1/me", None),
    ("GET", "/api/v1/does-not-exist", None),
    ("PUT", "/api/v1/orders/1", None),
    ("POST", "/api/v1/orders", b"{not json"),
    ("POST", "/api/v1/orders", b'{"user_id": 1, "items": []}'),
    ("POST", "/api/v1/orders", b'{"user_id": 1, "items": [{"sku": "A", "quantity": 1}]}'),
    (
        "POST",
        "/api/v1/orders",
        b'{"user_id": 999, "items": [{"sku": "A", "quantity": 1}], "total": "1.00"}',
    ),
    ("POST", "/api/v1/login", b'{"email": "nobody@example.com"}'),
    ("PATCH", "/api/v1/orders/999", b'{"status": "paid"}'),
]


def test_both_apps_answer_users_orders_items_and_errors_identically(demo: Demo) -> None:
    with demo.legacy() as legacy, demo.new() as new, legacy.client() as old, new.client() as fresh:
        for method, path, body in SAME_ANSWERS:
            a = old.request(method, path, content=body)
            b = fresh.request(method, path, content=body)
            assert (a.status_code, a.json()) == (b.status_code, b.json()), (method, path)
            assert a.headers["content-type"].startswith("application/json"), path
        order = old.get("/api/v1/orders/17").json()
        assert order["total"].count(".") == 1 and len(order["total"].split(".")[1]) == 2
        assert [i["line_no"] for i in order["items"]] == [1, 2]
        page = old.get("/api/v1/users?limit=5&after=3").json()
        assert [u["id"] for u in page["users"]] == [4, 5, 6, 7, 8] and page["next_after"] == 8
        assert old.get("/api/v1/users?after=28").json()["next_after"] is None
        assert old.get("/healthz").json() == {"ok": True, "app": "legacy", "instance": "legacy"}
        assert fresh.get("/healthz").json() == {"ok": True, "app": "new", "instance": "new-1"}
        assert old.get("/healthz").headers["x-backend"] == "legacy"
        assert fresh.get("/healthz").headers["x-backend"] == "new-1"


def test_a_legacy_login_cookie_is_valid_on_the_new_app_and_a_foreign_one_is_not(
    demo: Demo,
) -> None:
    with demo.legacy() as legacy, demo.new() as new, legacy.client() as old, new.client() as fresh:
        login = old.post("/api/v1/login", json={"email": "user4@example.com"})
        assert login.status_code == 200
        assert login.json()["user"]["id"] == 5
        set_cookie = login.headers["set-cookie"]
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie
        session = login.cookies["co_session"]

        me = fresh.get("/api/v1/me", headers={"Cookie": f"co_session={session}"})
        assert me.status_code == 200
        assert me.json() == {"user": old.get("/api/v1/users/5").json()}

        forged = SessionSigner(b"another-secret-of-sufficient-size").issue(5).value
        tampered = session.replace(session.split(".")[0], "6", 1)
        for bad in (forged, tampered, "garbage"):
            for client in (old, fresh):
                answer = client.get("/api/v1/me", headers={"Cookie": f"co_session={bad}"})
                assert answer.status_code == 401, (client.base_url, bad)
                assert "error" in answer.json()

        # The login is a write: the legacy app recorded the session row.
        with contextlib.closing(sqlite3.connect(demo.db)) as conn:
            rows = conn.execute("SELECT count(*) FROM sessions WHERE user_id = 5").fetchone()
        assert rows == (2,)  # the seeded one and this login's


def test_an_order_written_on_new_is_read_through_the_cache_and_a_patch_invalidates_it(
    demo: Demo,
) -> None:
    with demo.new() as new, new.client() as client:
        body = {
            "user_id": 3,
            "items": [{"sku": "BOOK-1", "quantity": 2}, {"sku": "PEN-9", "quantity": 1}],
            "total": "42.50",
        }
        created = client.post("/api/v1/orders", json=body)
        assert created.status_code == 201, created.text
        order = created.json()
        assert order["id"] > USERS  # the identity continues after the copied ids
        assert (order["status"], order["total"]) == ("new", "42.50")
        assert [(i["line_no"], i["sku"]) for i in order["items"]] == [(1, "BOOK-1"), (2, "PEN-9")]
        path = f"/api/v1/orders/{order['id']}"

        assert client.get(path).json() == order  # a miss: read from PostgreSQL, then cached
        with psycopg.connect(demo.pg_url) as conn:
            # Behind the app's back: a cached answer does not see this.
            conn.execute(
                "UPDATE app.orders SET status = 'changed-in-db' WHERE id = %s", (order["id"],)
            )
        assert client.get(path).json()["status"] == "new"  # a hit
        metrics = client.get("/metrics").text
        assert metric(metrics, "app_cache_hits_total") == 1
        assert metric(metrics, "app_cache_misses_total") == 1

        patched = client.patch(path, json={"status": "shipped"})
        assert patched.status_code == 200 and patched.json()["status"] == "shipped"
        assert client.get(path).json()["status"] == "shipped"  # the PATCH deleted the stale key
        with psycopg.connect(demo.pg_url) as conn:
            row = conn.execute(
                "SELECT status, total::text, (SELECT count(*) FROM app.order_items "
                "WHERE order_id = o.id) FROM app.orders o WHERE id = %s",
                (order["id"],),
            ).fetchone()
        assert row == ("shipped", "42.50", 2)


def test_an_order_written_on_legacy_gets_a_sqlite_id_and_an_unknown_user_writes_nothing(
    demo: Demo,
) -> None:
    with demo.legacy() as legacy, legacy.client() as client:
        created = client.post(
            "/api/v1/orders",
            json={"user_id": 2, "items": [{"sku": "MUG", "quantity": 3}], "total": 7},
        )
        assert created.status_code == 201, created.text
        assert created.json()["id"] == USERS + 1
        assert created.json()["total"] == "7.00"
        refused = client.post(
            "/api/v1/orders",
            json={"user_id": 999, "items": [{"sku": "MUG", "quantity": 1}], "total": "1"},
        )
        assert refused.status_code == 422
    with contextlib.closing(sqlite3.connect(demo.db)) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (USERS + 1,)
        items = conn.execute("SELECT sku, quantity FROM order_items WHERE order_id = ?", (31,))
        assert items.fetchall() == [("MUG", 3)]


@pytest.mark.parametrize("kind", ["legacy", "new"])
def test_the_fault_switch_errors_slows_and_makes_writes_read_only(demo: Demo, kind: str) -> None:
    start = demo.legacy if kind == "legacy" else demo.new
    with start() as app, app.client() as client:
        assert client.post("/admin/faults", json={"error_rate": 1}).status_code == 401
        wrong = {"Authorization": "Bearer not-the-token"}
        assert client.get("/admin/faults", headers=wrong).status_code == 401

        assert app.admin("/admin/faults", {"error_rate": 1.0}).status_code == 200
        assert {client.get("/api/v1/users/1").status_code for _ in range(5)} == {500}
        assert client.get("/healthz").status_code == 200  # health and metrics are not faulted

        assert app.admin("/admin/faults", {"latency_ms": 300}).json()["error_rate"] == 0
        started = time.monotonic()
        assert client.get("/api/v1/users/1").status_code == 200
        assert time.monotonic() - started >= 0.3

        app.admin("/admin/faults", {})
        assert app.admin("/admin/readonly", {"on": True}).json()["readonly"] is True
        order = {"user_id": 1, "items": [{"sku": "X", "quantity": 1}], "total": "1.00"}
        assert client.post("/api/v1/orders", json=order).status_code == 503
        assert client.patch("/api/v1/orders/1", json={"status": "x"}).status_code == 503
        assert client.get("/api/v1/orders/1").status_code == 200
        shown = client.get("/admin/faults", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert shown.json()["readonly"] is True
        app.admin("/admin/readonly", {"on": False})
        assert client.post("/api/v1/orders", json=order).status_code == 201

        assert app.admin("/admin/faults", {"error_rate": 2}).status_code == 400


def test_the_leak_fault_grows_resident_memory_and_switching_it_off_frees_it(demo: Demo) -> None:
    with demo.legacy() as app, app.client() as client:
        before = metric(client.get("/metrics").text, "process_resident_memory_bytes")
        assert before is not None
        app.admin("/admin/faults", {"leak_mb_per_s": 100})
        time.sleep(0.6)
        leaked = client.get("/admin/faults", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
        assert leaked.json()["leaked_bytes"] >= 30 * 2**20
        after = metric(client.get("/metrics").text, "process_resident_memory_bytes")
        assert after is not None and after - before >= 30 * 2**20
        assert app.admin("/admin/faults", {"leak_mb_per_s": 0}).json()["leaked_bytes"] == 0


def test_without_an_admin_token_the_admin_api_does_not_exist(demo: Demo) -> None:
    with demo.legacy(admin=False) as app, app.client() as client:
        answer = client.post(
            "/admin/faults",
            json={"error_rate": 1},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert answer.status_code == 404
        assert client.get("/api/v1/users/1").status_code == 200


@pytest.mark.parametrize("kind", ["legacy", "new"])
def test_metrics_parse_and_count_requests_by_route_template(demo: Demo, kind: str) -> None:
    start = demo.legacy if kind == "legacy" else demo.new
    with start() as app, app.client() as client:
        for user_id in (1, 2, 3):
            assert client.get(f"/api/v1/users/{user_id}").status_code == 200
        client.get("/nowhere")
        answer = client.get("/metrics")
        assert answer.status_code == 200
        text = answer.text
        route = "/api/v1/users/{id}"
        assert metric(text, "http_requests_total", method="GET", route=route, code="200") == 3
        assert metric(text, "http_request_duration_seconds_count", route=route) == 3
        assert metric(text, "http_requests_total", route="unmatched", code="404") == 1
        assert not any("/api/v1/users/1" in line for line in text.splitlines())
        assert (metric(text, "process_resident_memory_bytes") or 0) > 0
        if kind == "new":
            assert metric(text, "app_db_pool_size") == 4
            assert metric(text, "app_db_pool_available") is not None
            assert metric(text, "app_cache_misses_total") == 3


def test_new_healthz_answers_503_naming_redis_when_redis_stops(demo: Demo) -> None:
    own_redis = start_redis(demo.tmp / "redis")
    try:
        with demo.new(redis_url=own_redis.url_for(0)) as app, app.client() as client:
            assert client.get("/healthz").status_code == 200
            own_redis.stop()
            health = client.get("/healthz")
            assert health.status_code == 503
            failed = health.json()["failed"]
            assert set(failed) == {"redis"} and failed["redis"]
            # Reads go on without the cache.
            assert client.get("/api/v1/users/2").status_code == 200
    finally:
        own_redis.stop()


@pytest.mark.parametrize("kind", ["legacy", "new"])
def test_sigterm_finishes_the_request_in_flight_and_exits_0(demo: Demo, kind: str) -> None:
    start = demo.legacy if kind == "legacy" else demo.new
    with start() as app, app.client() as idle:
        # A keep-alive connection with nothing more to ask must not hold the shutdown up.
        assert idle.get("/healthz").status_code == 200
        app.admin("/admin/faults", {"latency_ms": 800})
        answers: list[int] = []

        def slow_request() -> None:
            with app.client() as client:
                answers.append(client.get("/api/v1/users/1").status_code)

        thread = threading.Thread(target=slow_request)
        thread.start()
        time.sleep(0.3)
        app.process.send_signal(signal.SIGTERM)
        thread.join(timeout=10)
        assert answers == [200]
        assert app.process.wait(timeout=5) == 0, log_tail(app.log)
        assert not accepts(int(app.url.rsplit(":", 1)[1]))


RunApp = Callable[[list[str], dict[str, str]], subprocess.CompletedProcess[str]]


def _run(kind: str) -> RunApp:
    def run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", f"changeover.demo.apps.{kind}", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **env},
            check=False,
        )

    return run


def test_startup_problems_are_one_plain_line_and_an_exit_code(demo: Demo) -> None:
    legacy, new = _run("legacy"), _run("new")
    no_secret = legacy(["--db", str(demo.db), "--port", "0"], {})
    assert no_secret.returncode == 2
    assert no_secret.stderr.strip().startswith("legacy: error: no session secret")
    missing_db = legacy(
        ["--db", str(demo.tmp / "nope.db"), "--port", "0", "--secret-file", str(demo.secret_file)],
        {},
    )
    assert (missing_db.returncode, "no legacy database" in missing_db.stderr) == (2, True)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        busy = legacy(
            ["--db", str(demo.db), "--port", port, "--secret-file", str(demo.secret_file)], {}
        )
    assert busy.returncode == 3 and "cannot listen" in busy.stderr
    no_tables = new(
        ["--schema", "nothing_here", "--instance", "n", "--port", "0"],
        {
            "CHANGEOVER_DEMO_PG_URL": demo.pg_url,
            "CHANGEOVER_DEMO_REDIS_URL": demo.redis_url,
            "CHANGEOVER_DEMO_SESSION_SECRET": SECRET,
        },
    )
    assert no_tables.returncode == 2, no_tables.stderr
    assert "schema 'nothing_here' has no users" in no_tables.stderr
    for result in (no_secret, missing_db, busy, no_tables):
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    password = psycopg.conninfo.conninfo_to_dict(demo.pg_url).get("password")
    if password:
        assert str(password) not in no_tables.stderr
