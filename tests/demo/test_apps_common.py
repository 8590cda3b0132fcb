"""The sample apps' shared parts, no servers: cookie, fault decisions, routes, JSON in and out."""

from __future__ import annotations

import random
import time
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from changeover.demo.apps.common import (
    ROUTES,
    ApiError,
    Call,
    admit,
    json_object,
    match_route,
    money_json,
    parse_new_order,
    parse_page,
    timestamp_json,
)
from changeover.demo.apps.faults import Faults, FaultSwitch, decide
from changeover.demo.apps.session import SessionSigner, cookie_from_header

SECRET = b"a-secret-of-at-least-16-bytes"


# --- session cookie ------------------------------------------------------------------------------


def test_a_cookie_verifies_under_the_same_secret_only() -> None:
    value = SessionSigner(SECRET).issue(42).value
    assert SessionSigner(SECRET).verify(value) == 42
    assert SessionSigner(b"some-other-secret-entirely").verify(value) is None


@pytest.mark.parametrize(
    "mutate",
    [
        lambda v: v.replace(v.split(".")[0], "43", 1),  # another user
        lambda v: ".".join([*v.split(".")[:2], "0" * 64]),  # another signature
        lambda v: v.split(".")[0] + "." + str(int(v.split(".")[1]) + 1) + "." + v.split(".")[2],
        lambda v: v + ".x",
        lambda v: "",
        lambda v: "abc.def.ghi",
    ],
)
def test_a_tampered_or_malformed_cookie_is_refused(mutate: object) -> None:
    value = SessionSigner(SECRET).issue(42).value
    assert callable(mutate)
    assert SessionSigner(SECRET).verify(mutate(value)) is None


def test_a_cookie_expires_after_its_lifetime() -> None:
    now = [1_000_000.0]
    signer = SessionSigner(SECRET, lifetime=60, clock=lambda: now[0])
    issued = signer.issue(7)
    assert issued.expires_at == datetime.fromtimestamp(1_000_060, UTC)
    now[0] += 59
    assert signer.verify(issued.value) == 7
    now[0] += 1
    assert signer.verify(issued.value) is None


def test_the_set_cookie_header_is_http_only_and_same_site_lax() -> None:
    header = SessionSigner(SECRET).issue(1).set_cookie()
    assert header.startswith("co_session=1.")
    assert "HttpOnly" in header and "SameSite=Lax" in header and "Path=/" in header


def test_the_cookie_is_found_among_others_in_a_cookie_header() -> None:
    assert cookie_from_header("a=1; co_session=5.6.7; b=2") == "5.6.7"
    assert cookie_from_header("a=1") is None
    assert cookie_from_header(None) is None


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SessionSigner(b"short")


# --- faults --------------------------------------------------------------------------------------


def test_fault_decisions() -> None:
    healthy = Faults()
    assert decide(healthy, write=True, draw=0.0).status is None
    assert decide(Faults(error_rate=0.5), write=False, draw=0.49).status == 500
    assert decide(Faults(error_rate=0.5), write=False, draw=0.5).status is None
    assert decide(Faults(error_rate=1.0), write=False, draw=0.999).status == 500
    assert decide(Faults(latency_ms=250), write=False, draw=0.9).delay == 0.25
    readonly = Faults(readonly=True)
    assert decide(readonly, write=True, draw=0.9).status == 503
    assert decide(readonly, write=False, draw=0.9).status is None


def test_an_error_rate_fails_about_that_share_of_requests() -> None:
    switch = FaultSwitch(random.Random(3))
    switch.set_faults(error_rate=0.2, latency_ms=0, leak_mb_per_s=0)
    failed = sum(switch.verdict(write=False).status == 500 for _ in range(5000))
    assert 900 <= failed <= 1100


def test_the_leak_grows_while_on_and_is_given_back_when_off() -> None:
    switch = FaultSwitch()
    try:
        switch.set_faults(error_rate=0, latency_ms=0, leak_mb_per_s=20)
        deadline = time.monotonic() + 5
        while switch.leaked_bytes < 4 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert switch.leaked_bytes >= 4 * 2**20
        switch.set_faults(error_rate=0, latency_ms=0, leak_mb_per_s=0)
        assert switch.leaked_bytes == 0
    finally:
        switch.close()


def test_health_metrics_and_admin_are_never_faulted_and_admin_needs_the_token() -> None:
    switch = FaultSwitch()
    switch.set_faults(error_rate=1.0, latency_ms=500, leak_mb_per_s=0)
    routes = {route.name: route for route in ROUTES}
    for name in ("healthz", "metrics"):
        assert admit(routes[name], None, b"token", switch).refusal is None
        assert admit(routes[name], None, b"token", switch).delay == 0
    api = admit(routes["user"], None, b"token", switch)
    assert (api.delay, api.refusal and api.refusal.status) == (0.5, 500)

    faults = routes["set_faults"]
    assert admit(faults, "Bearer token", b"token", switch).refusal is None
    for header in (None, "Bearer nope", "Basic token", "Bearer "):
        refusal = admit(faults, header, b"token", switch).refusal
        assert refusal is not None and refusal.status == 401, header
    unconfigured = admit(faults, "Bearer token", None, switch).refusal
    assert unconfigured is not None and unconfigured.status == 404


# --- routes --------------------------------------------------------------------------------------


def test_routes_match_by_template_with_integer_ids() -> None:
    route, params = match_route("GET", "/api/v1/orders/12")
    assert (route.name, route.template, params) == ("order", "/api/v1/orders/{id}", {"id": 12})
    assert match_route("PATCH", "/api/v1/orders/12")[0].name == "update_order"
    assert route.starlette_path == "/api/v1/orders/{id:int}"
    with pytest.raises(ApiError) as not_found:
        match_route("GET", "/api/v1/orders/abc")
    assert not_found.value.status == 404
    with pytest.raises(ApiError) as not_allowed:
        match_route("DELETE", "/api/v1/orders/12")
    assert not_allowed.value.status == 405
    assert ("Allow", "GET, PATCH") in not_allowed.value.headers


def test_only_api_writes_count_as_writes() -> None:
    writes = {route.name for route in ROUTES if route.write}
    assert writes == {"login", "create_order", "update_order"}


def test_an_id_beyond_bigint_is_not_found_rather_than_a_database_error() -> None:
    with pytest.raises(ApiError) as error:
        Call(params={"id": 2**63}).id()
    assert error.value.status == 404


# --- JSON in and out -----------------------------------------------------------------------------


def test_a_new_order_is_parsed_and_checked() -> None:
    order = parse_new_order(
        b'{"user_id": 3, "items": [{"sku": "A", "quantity": 2}], "total": "12.3"}'
    )
    assert (order.user_id, order.total, order.items) == (3, Decimal("12.30"), (("A", 2),))
    assert parse_new_order(b'{"user_id": 3, "items": [{"sku": "A", "quantity": 1}], "total": 5}')


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "empty"),
        (b"{", "not valid JSON"),
        (b"[1]", "JSON object"),
        (b'{"items": [{"sku": "A", "quantity": 1}], "total": "1"}', "'user_id' is required"),
        (b'{"user_id": "3", "items": [{"sku": "A", "quantity": 1}], "total": "1"}', "integer"),
        (b'{"user_id": 3, "items": [], "total": "1"}', "non-empty list"),
        (b'{"user_id": 3, "items": [{"sku": "", "quantity": 1}], "total": "1"}', "'sku'"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": 0}], "total": "1"}', "quantity"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": true}], "total": "1"}', "quantity"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": 1}]}', "'total' is required"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": 1}], "total": "1.234"}', "two"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": 1}], "total": "-1"}', "between"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": 1}], "total": "NaN"}', "between"),
        (b'{"user_id": 3, "items": [{"sku": "A", "quantity": 1}], "total": "x"}', "not a number"),
    ],
)
def test_a_bad_order_is_a_400_that_says_what_is_wrong(body: bytes, message: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_new_order(body)
    assert error.value.status == 400
    assert message in error.value.message


def test_pages_default_to_20_and_stop_at_100() -> None:
    assert parse_page({}) == parse_page({"limit": "", "after": ""})
    assert parse_page({}).limit == 20 and parse_page({}).after == 0
    assert parse_page({"limit": "100", "after": "7"}).limit == 100
    for bad in ({"limit": "0"}, {"limit": "101"}, {"limit": "-1"}, {"after": "x"}):
        with pytest.raises(ApiError):
            parse_page(bad)


def test_both_databases_timestamps_and_totals_print_the_same() -> None:
    sqlite_text = "2026-11-26 12:00:00"
    postgres_value = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
    assert timestamp_json(sqlite_text) == timestamp_json(postgres_value) == "2026-11-26T12:00:00Z"
    assert timestamp_json("not a time") == "not a time"
    assert timestamp_json(None) is None
    # SQLite keeps DECIMAL(12,2) as REAL or INTEGER; PostgreSQL as numeric.
    assert money_json(999.9) == money_json(Decimal("999.90")) == "999.90"
    assert money_json(12) == money_json(Decimal("12.00")) == "12.00"


def test_json_object_refuses_non_objects() -> None:
    assert json_object(b'{"a": 1}') == {"a": 1}
    for body in (b"1", b'"x"', b"\xff", b"{"):
        with pytest.raises(ApiError):
            json_object(body)
