"""Routing decisions: weights, stickiness, write pinning, read-your-writes, health, mirror."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from changeover.proxy.balance import (
    Balancer,
    NoRoute,
    RecentWrites,
    WriteRules,
    backend_for_point,
    session_point,
)
from changeover.proxy.health import HealthTracker
from changeover.proxy.http import Reject, RequestHead
from changeover.proxy.state import Instance, RoutingState

L1 = Instance("legacy", "l1", "127.0.0.1", 8001)
L2 = Instance("legacy", "l2", "127.0.0.1", 8002)
N1 = Instance("new", "n1", "127.0.0.1", 9001)
N2 = Instance("new", "n2", "127.0.0.1", 9002)
BACKENDS = {"legacy": [L1, L2], "new": [N1, N2]}
ORDER = ("new", "legacy")


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Unhealthy:
    """A health view with a fixed set of unhealthy instance keys."""

    def __init__(self, *keys: str) -> None:
        self.down = set(keys)
        self.routed_to: list[str] = []

    def is_healthy(self, key: str, now: float | None = None) -> bool:
        return key not in self.down

    def routed(self, key: str, now: float | None = None) -> None:
        self.routed_to.append(key)


def make(new: float = 10.0, owner: str = "legacy", **options: Any) -> Balancer:
    ids = itertools.count()
    options.setdefault("clock", FakeClock())
    options.setdefault("new_session_id", lambda: f"session-{next(ids)}")
    state = RoutingState({"legacy": 100.0 - new, "new": new}, owner)
    return Balancer(state, BACKENDS, **options)


def set_weights(lb: Balancer, new: float) -> None:
    lb.state = replace(lb.state, weights={"legacy": 100.0 - new, "new": new})


def cookie(session: str) -> dict[str, str]:
    return {"co_session": session}


def session_on(backend: str, new: float = 10.0) -> str:
    """A session id that the weights send to ``backend``."""
    for i in itertools.count():
        session = f"probe-{i}"
        if backend_for_point(session_point(session), {"legacy": 100 - new, "new": new}, ORDER) == (
            backend
        ):
            return session
    raise AssertionError("unreachable")


# -- weights and stickiness -------------------------------------------------------------------


@pytest.mark.parametrize("new", [10.0, 50.0, 90.0])
def test_weights_are_honoured_within_two_points_over_ten_thousand_sessions(new: float) -> None:
    lb = make(new, new_session_id=None, rng=random.Random(1))
    counts = Counter(lb.decide("GET", "/", {}).instance.backend for _ in range(10_000))
    assert abs(counts["new"] / 100 - new) <= 2.0, counts


@pytest.mark.parametrize("new", [0.0, 100.0])
def test_zero_and_full_weights_are_absolute(new: float) -> None:
    lb = make(new)
    backends = {lb.decide("GET", "/", {}).instance.backend for _ in range(2000)}
    assert backends == {"new" if new == 100 else "legacy"}


def test_a_session_keeps_its_backend_while_weights_are_unchanged() -> None:
    lb = make(50.0)
    moved = 0
    for s in range(1000):
        first = lb.decide("GET", "/", cookie(f"user-{s}")).instance.backend
        for _ in range(20):
            decision = lb.decide("GET", "/page", cookie(f"user-{s}"))
            moved += decision.instance.backend != first
            assert decision.reason == "sticky" and decision.set_cookie is None
    assert moved == 0


def test_a_new_session_gets_a_cookie_and_then_sticks() -> None:
    lb = make(50.0)
    first = lb.decide("GET", "/", {})
    assert first.reason == "new-session"
    assert first.set_cookie == f"co_session={first.session}; Path=/; HttpOnly; SameSite=Lax"
    for _ in range(50):
        again = lb.decide("GET", "/", cookie(first.session))
        assert again.instance.backend == first.instance.backend
        assert again.set_cookie is None


def test_the_cookie_name_is_configurable() -> None:
    lb = make(50.0, cookie_name="sticky")
    decision = lb.decide("GET", "/", {"co_session": "ignored"})
    assert decision.set_cookie is not None and decision.set_cookie.startswith("sticky=")
    assert lb.decide("GET", "/", {"sticky": "abc"}).reason == "sticky"


@pytest.mark.parametrize("value", ["", "x" * 129, "a b", "a;b", "é", "a,b"])
def test_a_malformed_session_cookie_is_replaced(value: str) -> None:
    decision = make().decide("GET", "/", cookie(value))
    assert decision.reason == "new-session" and decision.session != value


def test_session_points_spread_over_the_range() -> None:
    points = [session_point(f"s{i}") for i in range(10_000)]
    assert all(0 <= p < 100 for p in points)
    assert len({round(p, 9) for p in points}) == 10_000


def test_session_points_are_fixed_across_processes_and_versions() -> None:
    # A restarted (or upgraded) proxy must put every session where it was.
    assert session_point("a") == pytest.approx(4.035255250210294, abs=1e-12)
    assert session_point("co-session-0") == pytest.approx(34.69467663298619, abs=1e-12)


@given(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_raising_the_new_weight_never_moves_a_session_from_new_to_legacy(
    session: str, w1: float, w2: float
) -> None:
    low, high = sorted((w1, w2))
    point = session_point(session)
    before = backend_for_point(point, {"legacy": 100 - low, "new": low}, ORDER)
    after = backend_for_point(point, {"legacy": 100 - high, "new": high}, ORDER)
    if before == "new":
        assert after == "new"
    if after == "legacy":
        assert before == "legacy"


def test_migration_10_50_100_only_moves_sessions_towards_new() -> None:
    lb = make(10.0)
    sessions = [f"user-{i}" for i in range(5000)]
    placed = {s: lb.decide("GET", "/", cookie(s)).instance.backend for s in sessions}
    for new in (50.0, 100.0):
        set_weights(lb, new)
        now = {s: lb.decide("GET", "/", cookie(s)).instance.backend for s in sessions}
        assert not [s for s in sessions if placed[s] == "new" and now[s] == "legacy"]
        placed = now
    assert set(placed.values()) == {"new"}


@pytest.mark.parametrize(
    ("point", "weights", "expected"),
    [
        (0.0, {"legacy": 90, "new": 10}, "new"),
        (9.999, {"legacy": 90, "new": 10}, "new"),
        (10.0, {"legacy": 90, "new": 10}, "legacy"),
        (99.999, {"legacy": 90, "new": 10}, "legacy"),
        (50.0, {"legacy": 0, "new": 0}, None),
        (50.0, {"legacy": -5, "new": 0}, None),
        (60.0, {"legacy": 1, "new": 1}, "legacy"),  # scaled: weights need not sum to 100
        (40.0, {"legacy": 1, "new": 1}, "new"),
        (99.9999999, {"legacy": 33.3, "new": 66.6}, "legacy"),
        (5.0, {"legacy": 50, "new": 0, "extra": 50}, "legacy"),
        (55.0, {"legacy": 50, "new": 0, "extra": 50}, "extra"),  # names outside ORDER go last
    ],
)
def test_backend_for_point(point: float, weights: dict[str, float], expected: str | None) -> None:
    assert backend_for_point(point, weights, ORDER) == expected


def test_the_new_backend_owns_the_low_end_by_default() -> None:
    assert make().order == ("new", "legacy")


# -- writes -----------------------------------------------------------------------------------


def test_write_rules_default_to_unsafe_methods() -> None:
    rules = WriteRules()
    for method in ("POST", "PUT", "PATCH", "DELETE", "post"):
        assert rules.is_write(method, "/x")
    for method in ("GET", "HEAD", "OPTIONS", "TRACE"):
        assert not rules.is_write(method, "/x")


def test_write_rules_with_path_patterns() -> None:
    rules = WriteRules(
        include=["/api/*", r"re:^/v\d+/orders$"],
        exclude=["/api/search", "/api/*/preview"],
        also=["GET /logout", "/rpc/*"],
    )
    assert rules.is_write("POST", "/api/orders")
    assert rules.is_write("POST", "/api/a/b")  # * crosses /
    assert rules.is_write("PUT", "/v2/orders")
    assert not rules.is_write("PUT", "/v2/orders/1")
    assert not rules.is_write("POST", "/static/upload")  # not included
    assert not rules.is_write("POST", "/api/search")  # excluded
    assert not rules.is_write("POST", "/api/x/preview")
    assert rules.is_write("GET", "/logout")
    assert not rules.is_write("HEAD", "/logout")
    assert rules.is_write("GET", "/rpc/anything")
    assert not rules.is_write("GET", "/api/orders")


def test_a_bad_regular_expression_is_refused_plainly() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        WriteRules(include=["re:/api/(unclosed"])


def test_every_write_goes_to_the_write_owner() -> None:
    lb = make(90.0, owner="legacy")
    for i in range(2000):
        method = ("POST", "PUT", "PATCH", "DELETE")[i % 4]
        decision = lb.decide(method, "/orders", cookie(f"user-{i}"))
        assert decision.instance.backend == "legacy"
        assert decision.reason == "write-owner"
        assert decision.mirror is None
    lb.state = replace(lb.state, write_owner="new")
    assert {lb.decide("POST", "/", cookie(f"u{i}")).instance.backend for i in range(500)} == {"new"}


def test_a_write_without_a_session_gets_one() -> None:
    decision = make().decide("POST", "/orders", {})
    assert decision.set_cookie is not None and decision.reason == "write-owner"


def test_reads_after_a_write_go_to_the_owner_for_the_window() -> None:
    clock = FakeClock()
    lb = make(10.0, owner="legacy", clock=clock)
    session = session_on("new")
    assert lb.decide("GET", "/", cookie(session)).instance.backend == "new"
    lb.decide("POST", "/orders", cookie(session))
    clock.now += 1.999
    decision = lb.decide("GET", "/orders/1", cookie(session))
    assert (decision.instance.backend, decision.reason) == ("legacy", "read-your-writes")
    clock.now += 0.001
    decision = lb.decide("GET", "/orders/1", cookie(session))
    assert (decision.instance.backend, decision.reason) == ("new", "sticky")


def test_read_your_writes_does_not_touch_other_sessions() -> None:
    clock = FakeClock()
    lb = make(10.0, clock=clock)
    writer, reader = session_on("new"), session_on("new") + "x"
    while backend_for_point(session_point(reader), {"legacy": 90, "new": 10}, ORDER) != "new":
        reader += "x"
    lb.decide("POST", "/", cookie(writer))
    assert lb.decide("GET", "/", cookie(reader)).instance.backend == "new"


def test_the_read_your_writes_window_is_configurable() -> None:
    clock = FakeClock()
    lb = make(10.0, clock=clock, ryw_window=10.0)
    session = session_on("new")
    lb.decide("POST", "/", cookie(session))
    clock.now += 9
    assert lb.decide("GET", "/", cookie(session)).reason == "read-your-writes"


def test_recent_writes_are_bounded() -> None:
    recent = RecentWrites(window=2.0, max_sessions=3)
    for i, session in enumerate("abcd"):
        recent.note(session, 100.0 + i * 0.1)
    assert len(recent) == 3
    assert not recent.recent("a", 100.5)
    assert all(recent.recent(s, 100.5) for s in "bcd")


def test_recent_writes_forget_expired_sessions() -> None:
    recent = RecentWrites(window=2.0)
    for i in range(100):
        recent.note(f"s{i}", 0.0)
    for i in range(100):
        recent.note(f"t{i}", 10.0)
    assert len(recent) == 100, "each new note drops expired ones from the old end"


# -- instances, drain, health -----------------------------------------------------------------


def test_instances_take_turns() -> None:
    lb = make(0.0)
    picks = [lb.decide("GET", "/", cookie("s")).instance for _ in range(6)]
    assert picks == [L1, L2] * 3


def test_least_in_flight_wins_when_counts_are_given() -> None:
    in_flight = {"legacy/l1": 5, "legacy/l2": 1}
    lb = make(0.0, in_flight=lambda key: in_flight.get(key, 0))
    assert {lb.decide("GET", "/", cookie("s")).instance for _ in range(10)} == {L2}
    in_flight["legacy/l2"] = 9
    assert lb.decide("GET", "/", cookie("s")).instance == L1


def test_a_drained_instance_is_never_chosen() -> None:
    lb = make(50.0)
    lb.state = replace(lb.state, drained=frozenset({"legacy/l1", "new/n2"}))
    chosen = {
        lb.decide(m, "/", cookie(f"u{i}")).instance for i in range(3000) for m in ("GET", "POST")
    }
    assert chosen == {L2, N1}


def test_a_drained_backend_sends_reads_elsewhere() -> None:
    lb = make(0.0, owner="new")
    lb.state = replace(lb.state, drained=frozenset({"legacy/l1", "legacy/l2"}))
    decision = lb.decide("GET", "/", cookie("s"))
    assert decision.instance.backend == "new"
    assert decision.reason == "fallback: no healthy instance in legacy"


def test_writes_never_leave_the_owner_and_fail_when_it_is_fully_drained() -> None:
    lb = make(50.0, owner="legacy")
    lb.state = replace(lb.state, drained=frozenset({"legacy/l1", "legacy/l2"}))
    with pytest.raises(NoRoute, match="write owner 'legacy'"):
        lb.decide("POST", "/", cookie("s"))


def test_unhealthy_backend_sends_reads_to_the_other_one() -> None:
    lb = make(0.0, health=Unhealthy("legacy/l1", "legacy/l2"))
    decision = lb.decide("GET", "/", cookie("s"))
    assert decision.instance.backend == "new"
    assert decision.reason == "fallback: no healthy instance in legacy"


def test_unhealthy_instance_is_skipped_within_a_backend() -> None:
    lb = make(0.0, health=Unhealthy("legacy/l1"))
    assert {lb.decide("GET", "/", cookie("s")).instance for _ in range(10)} == {L2}


def test_writes_to_an_unhealthy_owner_are_tried_anyway() -> None:
    lb = make(50.0, health=Unhealthy("legacy/l1", "legacy/l2"))
    decision = lb.decide("POST", "/", cookie("s"))
    assert decision.instance.backend == "legacy"
    assert decision.reason.startswith("panic: no healthy instance in legacy")


def test_with_nothing_healthy_reads_are_tried_on_their_own_backend() -> None:
    lb = make(0.0, health=Unhealthy("legacy/l1", "legacy/l2", "new/n1", "new/n2"))
    decision = lb.decide("GET", "/", cookie("s"))
    assert decision.instance.backend == "legacy"
    assert decision.reason.startswith("panic: no healthy instance in any backend")


def test_everything_drained_is_no_route() -> None:
    lb = make(50.0)
    lb.state = replace(lb.state, drained=frozenset(i.key for b in BACKENDS.values() for i in b))
    with pytest.raises(NoRoute, match="all drained or down"):
        lb.decide("GET", "/", cookie("s"))


def test_retries_exclude_failed_instances() -> None:
    lb = make(0.0)
    assert lb.decide("GET", "/", cookie("s"), exclude=frozenset({"legacy/l1"})).instance == L2
    retry = lb.decide("GET", "/", cookie("s"), exclude=frozenset({"legacy/l1", "legacy/l2"}))
    assert retry.instance.backend == "new"


def test_a_half_open_instance_gets_one_trial_request() -> None:
    clock = FakeClock()
    health = HealthTracker(clock=clock)
    lb = make(0.0, clock=clock, health=health)
    health.record_failure("legacy/l1", "connect")
    health.record_failure("legacy/l1", "connect")
    assert {lb.decide("GET", "/", cookie("s")).instance for _ in range(10)} == {L2}
    clock.now += 5
    picks = [lb.decide("GET", "/", cookie("s")).instance for _ in range(10)]
    assert picks.count(L1) == 1, "one trial until its outcome is known"
    health.record_success("legacy/l1")
    picks = [lb.decide("GET", "/", cookie("s")).instance for _ in range(10)]
    assert picks.count(L1) == 5


# -- mirror -----------------------------------------------------------------------------------


def test_mirror_share_of_gets_goes_to_the_other_backend() -> None:
    lb = make(50.0, rng=random.Random(7))
    lb.state = replace(lb.state, mirror_share=0.3)
    decisions = [lb.decide("GET", "/", cookie(f"u{i}")) for i in range(10_000)]
    mirrored = [d for d in decisions if d.mirror is not None]
    assert 2800 <= len(mirrored) <= 3200
    assert all(d.mirror is not None and d.mirror.backend != d.instance.backend for d in mirrored)


def test_only_bodyless_gets_are_mirrored() -> None:
    lb = make(50.0, rng=random.Random(7))
    lb.state = replace(lb.state, mirror_share=1.0)
    assert lb.decide("GET", "/", cookie("s")).mirror is not None
    assert lb.decide("GET", "/", cookie("s"), has_body=True).mirror is None
    assert lb.decide("HEAD", "/", cookie("s")).mirror is None
    assert lb.decide("POST", "/", cookie("s")).mirror is None


def test_no_mirror_at_zero_share_and_no_randomness_spent() -> None:
    rng = random.Random(3)
    lb = make(50.0, rng=rng)
    before = rng.getstate()
    assert all(lb.decide("GET", "/", cookie(f"u{i}")).mirror is None for i in range(1000))
    assert rng.getstate() == before


def test_mirror_skips_unhealthy_and_drained_instances_and_spends_no_trial() -> None:
    health = Unhealthy("new/n1")
    lb = make(0.0, rng=random.Random(1), health=health)
    lb.state = replace(lb.state, mirror_share=1.0, drained=frozenset({"new/n2"}))
    assert lb.decide("GET", "/", cookie("s")).mirror is None
    lb.state = replace(lb.state, drained=frozenset())
    decision = lb.decide("GET", "/", cookie("s"))
    assert decision.mirror == N2
    assert "new/n2" not in health.routed_to


# -- the chooser adapter ----------------------------------------------------------------------


def head(method: str, cookies: str | None = None, body: bool = False) -> RequestHead:
    headers = [("Host", "shop")]
    if cookies:
        headers.append(("Cookie", cookies))
    if body:
        headers.append(("Content-Length", "3"))
    return RequestHead(method, "/a?b=1", "/a", "1.1", headers, ("127.0.0.1", 1234), "rid")


def test_chooser_returns_the_decision_with_its_cookie() -> None:
    lb = make(50.0, rng=random.Random(2))
    lb.state = replace(lb.state, mirror_share=1.0)
    choice = asyncio.run(lb.chooser(head("GET"), 0, frozenset()))
    assert choice.extra_response_headers[0][0] == "Set-Cookie"
    assert choice.mirror is not None
    sticky = asyncio.run(lb.chooser(head("GET", "theme=dark; co_session=abc"), 0, frozenset()))
    assert sticky.extra_response_headers == ()
    retry = asyncio.run(lb.chooser(head("GET", "co_session=abc"), 1, frozenset({"x/y"})))
    assert retry.mirror is None, "a retry is not mirrored a second time"
    with_body = asyncio.run(lb.chooser(head("GET", "co_session=abc", body=True), 0, frozenset()))
    assert with_body.mirror is None


def test_chooser_answers_503_when_nothing_can_take_the_request() -> None:
    lb = make(50.0)
    lb.state = replace(lb.state, drained=frozenset(i.key for b in BACKENDS.values() for i in b))
    with pytest.raises(Reject) as caught:
        asyncio.run(lb.chooser(head("GET"), 0, frozenset()))
    assert caught.value.status == 503
    assert ("Retry-After", "1") in caught.value.headers
