"""The 13 success criteria judged from hand-written journals: each PASS and FAIL path, and
UNKNOWN wherever the journal has no measurement (no evidence is never a pass)."""

from __future__ import annotations

import pytest

from changeover.report.criteria import Status, seed_titles
from reports.conftest import Scribe, gate, judged, numbers, report_of

PASS, FAIL, UNKNOWN = Status.PASS, Status.FAIL, Status.UNKNOWN
EVEN, FULL = (50.0, 50.0), (0.0, 100.0)


def verify(scribe: Scribe, *, equal: bool = True) -> Scribe:
    if equal:
        detail = {
            "equal": True,
            "source_rows": 1000,
            "missing": 0,
            "extra": 0,
            "different": 0,
            "tables": [{"table": "users"}, {"table": "orders"}],
        }
        return scribe.add(
            "action.outcome", step="verify", action="migrate.verify", ok=True, detail=detail
        )
    return scribe.add(
        "action.outcome",
        step="verify",
        action="migrate.verify",
        ok=False,
        error="migrate.verify: 3 rows differ in 1 of 2 tables (orders): 3 missing in PostgreSQL",
    )


def handoff(scribe: Scribe, pause: float = 0.2) -> Scribe:
    detail = {"owner": "new", "pause_seconds": pause, "drained": 12, "verified_keys": 12}
    return scribe.add(
        "action.outcome", step="handoff", action="migrate.handoff", ok=True, detail=detail
    )


def night(
    scribe: Scribe,
    *,
    new_errors: int = 0,
    p95: float = 10.0,
    legacy_p95: float = 300.0,
    gap_errors: int = 0,
) -> Scribe:
    """staged 50/50 then full 100 %: 1,000 requests per sample on new; the error counters at
    each window's start account for every sampled request plus 500 between the windows."""
    scribe.at(0).phase("staged", 50, error_counter=(0, 0))
    scribe.at(5).sample(
        "staged",
        EVEN,
        numbers(1000, p95=legacy_p95),
        numbers(1000, p95=p95),
        [gate("staged-errors"), gate("staged-db"), gate("staged-cache")],
    )
    scribe.at(10).sample("staged", EVEN, numbers(1000, p95=legacy_p95), numbers(1000, p95=p95))
    scribe.at(11).add("rollout.phase-passed", phase="staged")
    scribe.at(12).phase("full", 100, error_counter=(gap_errors, 2500))
    scribe.at(17).sample(
        "full",
        FULL,
        None,
        numbers(1000, new_errors, p95),
        [gate("full-errors"), gate("full-p95"), gate("full-features")],
    )
    scribe.at(22).sample("full", FULL, None, numbers(1000, 0, p95))
    scribe.at(23).add("rollout.phase-passed", phase="full")
    return scribe.at(24).add("rollout.done", phases=["staged", "full"])


def test_a_journal_with_nothing_measured_has_13_criteria_and_not_one_pass(scribe: Scribe) -> None:
    scribe.add("plan.loaded", name="small night")
    found = judged(scribe)
    assert sorted(found) == list(range(1, 14))
    assert {n: c.title for n, c in found.items()} == seed_titles()
    assert all(c.status is UNKNOWN for c in found.values()), found
    assert all(c.evidence and c.evidence[0] for c in found.values())
    assert "no migrate.verify result" in found[1].evidence[0]


def test_data_integrity_passes_on_an_equal_verify(scribe: Scribe) -> None:
    c = judged(verify(scribe))[1]
    assert c.status is PASS and "1,000 rows in 2 tables equal" in c.evidence[0]


def test_data_integrity_fails_when_the_last_verify_found_differences(scribe: Scribe) -> None:
    found = judged(verify(verify(scribe), equal=False))
    assert found[1].status is FAIL and "3 rows differ" in found[1].evidence[0]
    assert "2 verify runs; the last counts" in found[1].evidence[0]
    assert found[9].status is FAIL  # rows that differ are lost data


def test_zero_downtime_passes_on_a_short_hold_and_no_errors_between_windows(
    scribe: Scribe,
) -> None:
    c = judged(handoff(night(scribe)))[2]
    assert c.status is PASS, c.evidence
    assert c.numbers["longest_write_hold_s"] == 0.2
    assert c.numbers["flip_requests"] == 500 and c.numbers["flip_errors"] == 0


def test_zero_downtime_fails_on_a_long_write_hold(scribe: Scribe) -> None:
    c = judged(handoff(night(scribe), pause=1.5))[2]
    assert c.status is FAIL and "longest write hold 1.500 s" in c.evidence[0]


def test_zero_downtime_fails_on_errors_during_the_route_change(scribe: Scribe) -> None:
    c = judged(night(scribe, gap_errors=40))[2]
    assert c.status is FAIL and "40 of 500 requests" in " ".join(c.evidence)


def test_zero_downtime_is_unknown_without_readings_around_the_route_changes(
    scribe: Scribe,
) -> None:
    scribe.phase("full", 100)
    c = judged(handoff(scribe))[2]
    assert c.status is UNKNOWN and "not measured" in " ".join(c.evidence)


def test_availability_and_error_rate_pass_after_the_switch_to_100(scribe: Scribe) -> None:
    found = judged(night(scribe, new_errors=1))
    assert found[3].status is PASS and "99.95% available after the switch" in found[3].evidence[0]
    assert found[4].status is PASS and "target met" in found[4].evidence[0]


def test_error_rate_between_the_target_and_the_limit_passes_but_says_so(scribe: Scribe) -> None:
    c = judged(night(scribe, new_errors=10))[4]  # 10 of 2,000: 0.5 %
    assert c.status is PASS and "above the 0.1% target" in c.evidence[0]


def test_availability_and_error_rate_fail_on_too_many_errors(scribe: Scribe) -> None:
    found = judged(night(scribe, new_errors=100))  # 100 of 2,000: 5 %
    assert found[3].status is FAIL and found[4].status is FAIL


def test_a_failed_error_rate_gate_fails_the_criterion_whatever_the_samples_say(
    scribe: Scribe,
) -> None:
    night(scribe)
    scribe.add(
        "rollout.verdict",
        phase="full",
        verdict=gate("full-errors", "fail_graceful") | {"reason": "1.4% > 1%"},
    )
    c = judged(scribe)[4]
    assert c.status is FAIL and "gate full-errors (full): FAIL — 1.4% > 1%" in c.evidence


def test_the_load_generators_own_count_can_fail_availability(scribe: Scribe) -> None:
    night(scribe).add("load.result", load={"sent": 1000, "errors": 30}, writes={})
    c = judged(scribe)[3]
    assert c.status is FAIL and "97% as the load generator saw it" in c.evidence[1]


def test_the_new_apps_error_rate_is_judged_on_what_it_served_when_it_never_reached_100(
    scribe: Scribe,
) -> None:
    scribe.phase("staged", 50)
    scribe.sample("staged", EVEN, numbers(1000), numbers(1000, 50))
    c = judged(scribe)[4]
    assert c.status is FAIL and "it never carried all of it" in c.evidence[0]


@pytest.mark.parametrize(("p95", "status"), [(40.0, PASS), (80.0, PASS), (150.0, FAIL)])
def test_latency_p95_is_judged_against_100_ms(scribe: Scribe, p95: float, status: Status) -> None:
    c = judged(night(scribe, p95=p95))[5]
    assert c.status is status, c.evidence
    assert ("target met" in c.evidence[0]) is (p95 < 50)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [("pass", PASS), ("fail_graceful", FAIL), ("continue", UNKNOWN)],
)
def test_database_and_cache_follow_their_gates(
    scribe: Scribe, outcome: str, status: Status
) -> None:
    scribe.phase("staged", 50)
    scribe.sample(
        "staged",
        EVEN,
        numbers(100),
        numbers(100),
        [gate("staged-db", outcome), gate("staged-cache", outcome)],
    )
    found = judged(scribe)
    assert found[6].status is status and "gate staged-db (staged)" in found[6].evidence[0]
    assert found[7].status is status and "gate staged-cache (staged)" in found[7].evidence[0]


def test_a_gate_named_with_a_qualifier_still_counts_for_its_step(scribe: Scribe) -> None:
    # a hit-rate gate is judged on its misses and says so in its name
    scribe.phase("staged", 50)
    scribe.sample("staged", EVEN, numbers(100), numbers(100), [gate("staged-cache (misses)")])
    c = judged(scribe)[7]
    assert c.status is PASS and "gate staged-cache (misses) (staged): PASS" in c.evidence[0]


def test_a_failed_cache_warm_fails_the_cache_criterion(scribe: Scribe) -> None:
    scribe.add(
        "action.outcome",
        step="warm",
        action="cache.warm",
        ok=False,
        error="cache.warm: GET /api on instance new-1 answered HTTP 500",
    )
    c = judged(scribe)[7]
    assert c.status is FAIL and "answered HTTP 500" in c.evidence[0]


def _endpoint_check(scribe: Scribe, status: str) -> Scribe:
    probe = {"probe": "http", "status": status, "reason": f"GET /healthz: {status}"}
    return scribe.add(
        "check.result",
        step="endpoints",
        status=status,
        reason=f"GET /healthz: {status}",
        probes=[probe],
    )


@pytest.mark.parametrize(("status", "expected"), [("pass", PASS), ("fail", FAIL)])
def test_endpoints_follow_the_http_checks_after_the_switch_to_100(
    scribe: Scribe, status: str, expected: Status
) -> None:
    _endpoint_check(scribe.at(1), "fail")  # before the switch: not post-cutover evidence
    scribe.at(2).phase("full", 100)
    c = judged(_endpoint_check(scribe.at(3), status))[8]
    assert c.status is expected and len([e for e in c.evidence if "check endpoints" in e]) == 1


def test_a_route_set_by_hand_counts_as_the_switch_and_shows_on_the_chart(scribe: Scribe) -> None:
    # what 'changeover route set legacy=0 new=100' journals: every backend's weight
    scribe.at(0).phase("staged", 50)
    scribe.at(5).sample("staged", EVEN, numbers(100), numbers(100))
    scribe.at(6).add(
        "action.outcome",
        actor="alice",
        action="route",
        router="proxy",
        weights={"legacy": 0, "new": 100},
        ok=True,
    )
    report = report_of(_endpoint_check(scribe.at(8), "pass"))
    assert report.criteria[7].status is PASS
    assert [p for _, p in report.charts[0].series[0].points] == [50.0, 100.0, 100.0]
    routes = [e.text for e in report.timeline.entries if e.text.startswith("route")]
    assert routes[-1] == "route: 100% to the new app (set by hand by alice)"


def test_endpoints_are_unknown_when_only_checked_before_the_switch(scribe: Scribe) -> None:
    c = judged(_endpoint_check(scribe, "pass"))[8]
    assert c.status is UNKNOWN and "never carried all traffic" in c.evidence[0]


def test_a_rollback_trigger_that_did_not_fire_is_context_not_a_pass(scribe: Scribe) -> None:
    scribe.plan.write_text(
        scribe.plan.read_text().replace(
            "success_criteria:",
            "rollback:\n  immediate:\n    - {id: rollback-features, title: Major features "
            "non-functional, gate: {metric: features, of: new, sustained: 5s, check: {http: "
            "{system: new, path: /healthz}}}}\nsuccess_criteria:",
        )
    )
    scribe.phase("staged", 50)
    scribe.sample("staged", EVEN, numbers(100), numbers(100), [gate("rollback-features")])
    c = judged(scribe)[8]
    assert c.status is UNKNOWN and "rollback trigger rollback-features did not fire" in c.evidence
    scribe.sample(
        "staged", EVEN, numbers(100), numbers(100), [gate("rollback-features", "fail_immediate")]
    )
    assert judged(scribe)[8].status is FAIL


def test_a_failing_synthetic_feature_gate_fails_the_endpoints(scribe: Scribe) -> None:
    scribe.phase("full", 100)
    scribe.sample("full", FULL, None, numbers(100), [gate("full-features", "fail_immediate")])
    assert judged(scribe)[8].status is FAIL


def test_no_data_loss_needs_an_equal_verify_and_every_acknowledged_write(scribe: Scribe) -> None:
    verify(scribe)
    assert judged(scribe)[9].status is UNKNOWN  # rows equal, but no write was checked
    scribe.add(
        "load.result", load={"sent": 10, "errors": 0}, writes={"acknowledged": 1234, "lost": 0}
    )
    c = judged(scribe)[9]
    assert c.status is PASS and "0 of 1,234 acknowledged writes" in c.evidence[1]


def test_a_lost_write_fails_no_data_loss(scribe: Scribe) -> None:
    verify(scribe).add("load.result", load={}, writes={"acknowledged": 100, "lost": 2})
    assert judged(scribe)[9].status is FAIL


def test_a_handoff_that_re_verified_its_keys_counts_as_write_evidence(scribe: Scribe) -> None:
    c = judged(handoff(verify(scribe)))[9]
    assert c.status is PASS and "re-verified 12 keys" in c.evidence[1]


def test_rows_left_behind_by_a_rollback_fail_no_data_loss(scribe: Scribe) -> None:
    handoff(verify(scribe)).phase("full", 100)
    scribe.add("rollback.started", mode="immediate", reason="drill", evidence={})
    scribe.add(
        "rollback.done", mode="immediate", seconds=0.3, writes="NOT handed back: the sync is down"
    )
    c = judged(scribe)[9]
    assert c.status is FAIL and "NOT handed back" in " ".join(c.evidence)


def test_team_confidence_is_a_sign_off(scribe: Scribe) -> None:
    scribe.add("plan.loaded", name="small night")
    assert judged(scribe)[10].status is UNKNOWN
    assert "awaits sign-off by lead" in judged(scribe)[10].evidence[0]
    scribe.add("signoff", actor="Ana", step="success-team-confident", by="Ana", note="retro done")
    c = judged(scribe)[10]
    assert (
        c.status is PASS and "signed off by Ana" in c.evidence[0] and "retro done" in c.evidence[0]
    )


@pytest.mark.parametrize(("legacy_p95", "status"), [(300.0, PASS), (12.0, FAIL)])
def test_the_performance_ratio_is_measured_at_the_even_split(
    scribe: Scribe, legacy_p95: float, status: Status
) -> None:
    c = judged(night(scribe, p95=10.0, legacy_p95=legacy_p95))[11]
    assert c.status is status, c.evidence
    assert c.numbers["ratio"]["factor"] == pytest.approx(legacy_p95 / 10.0)
    assert "at the even split (50/50)" in c.evidence[0]
    if status is FAIL:
        assert c.evidence[0].startswith("not met: the new app is 1.20× faster")


def test_the_performance_ratio_is_unknown_without_the_same_load(scribe: Scribe) -> None:
    scribe.phase("canary", 10)
    scribe.sample("canary", (90.0, 10.0), numbers(900, p95=300.0), numbers(100, p95=10.0))
    assert judged(scribe)[11].status is UNKNOWN


def test_documentation_and_monitoring_pass_once_their_steps_are_signed_off(
    scribe: Scribe,
) -> None:
    scribe.add("plan.loaded", name="small night")
    found = judged(scribe)
    assert found[12].status is UNKNOWN and "runbook-reviewed" in " ".join(found[12].evidence)
    assert found[13].status is UNKNOWN and "watch-every-30m" in " ".join(found[13].evidence)
    for step in (
        "runbook-reviewed",
        "success-documentation",
        "watch-every-30m",
        "success-monitoring-active",
    ):
        scribe.add("signoff", actor="Ana", step=step, by="Ana")
    found = judged(scribe)
    assert found[12].status is PASS and "2 of 2 documentation steps done" in found[12].evidence[0]
    assert found[13].status is PASS


def test_a_rolled_back_night_shows_the_rollback_as_an_incident_and_on_the_charts(
    scribe: Scribe,
) -> None:
    scribe.at(0).phase("staged", 50, error_counter=(0, 0))
    scribe.at(5).sample("staged", EVEN, numbers(1000), numbers(1000, 200))
    scribe.at(6).add(
        "rollout.verdict",
        phase="staged",
        verdict=gate("rollback-error-rate", "fail_immediate") | {"reason": "20% > 5%"},
    )
    scribe.at(6).add(
        "rollback.started", mode="immediate", reason="rollback-error-rate: 20% > 5%", evidence={}
    )
    scribe.at(7).add("action.outcome", step="rollback", action="route", weight=0.0, ok=True)
    scribe.at(7).add(
        "rollback.done", mode="immediate", seconds=0.4, writes="legacy (never handed off)"
    )
    report = report_of(scribe)
    assert report.outcome == "rolled back"
    assert report.timeline.phases[0].outcome == "rolled back"
    rollback = report.timeline.rollbacks[0]
    assert (rollback.mode, rollback.phase, rollback.seconds) == ("immediate", "staged", 0.4)
    incidents = " ".join(e.text for e in report.timeline.incidents)
    assert "ROLLBACK (immediate) started in staged" in incidents and "20% > 5%" in incidents
    marks = {(m.kind, m.label) for m in report.charts[0].marks}
    assert ("rollback", "rollback (immediate)") in marks and ("phase", "staged 50%") in marks
    assert [p for _, p in report.charts[0].series[0].points] == [50.0, 0.0, 0.0]


def test_a_night_without_samples_still_has_13_criteria_and_no_charts(scribe: Scribe) -> None:
    verify(scribe).phase("full", 100)
    report = report_of(scribe)
    assert report.charts == [] and len(report.criteria) == 13
    assert report.criteria[0].status is PASS
    assert "no rollout.sample" in report.criteria[2].evidence[0]
