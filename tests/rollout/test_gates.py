"""Plan gates evaluated over observation windows (pure; the statistics are tested in analysis)."""

from __future__ import annotations

from changeover.analysis import Outcome, Sustained
from changeover.metrics.base import Observation
from changeover.plan.model import Gate
from changeover.rollout.gates import Reading, counts, histogram, phase_gate, trigger_gate


def obs(metric: str = "error_rate", **fields: object) -> Observation:
    return Observation(metric, "new", 0.0, **fields)  # type: ignore[arg-type]


def gate(**fields: object) -> Gate:
    return Gate.model_validate(fields)


def test_window_counts_are_differences_and_survive_a_source_restart() -> None:
    assert counts(obs(events=5, total=100), obs(events=8, total=300)) == (3, 200)
    assert counts(obs(events=50, total=1000), obs(events=2, total=40)) == (2, 40)
    assert counts(None, obs(events=2, total=40)) == (2, 40)


def test_window_histogram_subtracts_bucket_by_bucket() -> None:
    start = obs("latency_p95", histogram=((0.1, 10), (float("inf"), 12)))
    now = obs("latency_p95", histogram=((0.1, 30), (float("inf"), 40)))
    # cumulative in, per bucket out: 20 requests ≤ 0.1 s, 8 slower
    assert histogram(start, now) == [(0.1, 20), (float("inf"), 8)]


def test_error_rate_gate_passes_after_the_bake_fails_on_evidence_and_waits_otherwise() -> None:
    rule = gate(metric="error_rate", of="new", below="1%")
    clean = Reading(obs(events=0, total=0), obs(events=2, total=20_000))
    assert phase_gate("err", rule, clean, baked=True, elapsed_s=60).outcome is Outcome.PASS
    assert phase_gate("err", rule, clean, baked=False, elapsed_s=5).outcome is Outcome.CONTINUE
    bad = Reading(obs(events=0, total=0), obs(events=300, total=3_000))
    verdict = phase_gate("err", rule, bad, baked=False, elapsed_s=5)
    assert verdict.outcome is Outcome.FAIL_GRACEFUL
    assert verdict.bound[0] > 0.01 and verdict.samples == 3_000


def test_latency_gate_reads_the_window_histogram() -> None:
    rule = gate(metric="latency_p95", of="new", below="100ms")
    fast = Reading(
        None, obs("latency_p95", histogram=((0.05, 9_990), (0.1, 10_000), (float("inf"), 10_000)))
    )
    assert phase_gate("p95", rule, fast, baked=True, elapsed_s=60).outcome is Outcome.PASS
    slow = Reading(
        None, obs("latency_p95", histogram=((0.05, 100), (0.1, 200), (float("inf"), 2_000)))
    )
    assert phase_gate("p95", rule, slow, baked=False, elapsed_s=5).failed


def test_ratio_gate_compares_with_the_baseline() -> None:
    rule = gate(metric="error_rate", of="new", max_ratio_to="legacy", ratio=1.5)
    worse = Reading(None, obs(events=400, total=10_000), None, obs(events=100, total=10_000))
    assert phase_gate("vs legacy", rule, worse, baked=False, elapsed_s=5).failed


def test_a_none_observed_metric_fails_on_the_first_event() -> None:
    rule = gate(metric="database_errors", of="new")
    assert phase_gate(
        "db errors",
        rule,
        Reading(None, obs("database_errors", events=1, total=500)),
        baked=False,
        elapsed_s=1,
    ).failed
    assert (
        phase_gate(
            "db errors",
            rule,
            Reading(None, obs("database_errors", events=0, total=500)),
            baked=True,
            elapsed_s=60,
        ).outcome
        is Outcome.PASS
    )


def test_a_gauge_gate_compares_the_latest_value() -> None:
    rule = gate(metric="cache_hit_rate", source="redis", above="80%")
    good = Reading(None, obs("cache_hit_rate", value=0.93))
    assert phase_gate("hit", rule, good, baked=True, elapsed_s=60).outcome is Outcome.PASS
    poor = Reading(None, obs("cache_hit_rate", value=0.5))
    assert phase_gate("hit", rule, poor, baked=True, elapsed_s=60).failed


def test_an_unobservable_metric_keeps_the_gate_undecided_with_the_reason() -> None:
    rule = gate(metric="cpu", of="new", below="60%")
    missing = Reading(None, Observation.missing("cpu", "new", 0.0, "no source serves cpu"))
    verdict = phase_gate("cpu", rule, missing, baked=True, elapsed_s=600)
    assert verdict.outcome is Outcome.CONTINUE and "no source serves cpu" in verdict.reason


def test_a_trigger_fires_only_after_its_condition_held_for_the_sustained_time() -> None:
    rule = gate(metric="error_rate", of="new", above="5%", sustained="30s")
    state = Sustained(30.0)
    fired_at = None
    for second in range(0, 61, 5):
        # 10% errors over the last window: shown above 5% at every look
        reading = Reading(obs(events=0, total=0), obs(events=200, total=2_000))
        verdict, state = trigger_gate(
            "err>5%",
            rule,
            reading,
            state,
            now=float(second),
            elapsed_s=second,
            on_fire=Outcome.FAIL_IMMEDIATE,
        )
        if verdict.failed and fired_at is None:
            fired_at = second
    assert fired_at == 30


def test_a_trigger_stays_quiet_below_its_threshold() -> None:
    rule = gate(metric="error_rate", of="new", above="5%", sustained="30s")
    state = Sustained(30.0)
    for second in range(0, 121, 5):
        reading = Reading(obs(events=0, total=0), obs(events=20, total=2_000))  # 1%
        verdict, state = trigger_gate(
            "err>5%",
            rule,
            reading,
            state,
            now=float(second),
            elapsed_s=second,
            on_fire=Outcome.FAIL_IMMEDIATE,
        )
        assert verdict.outcome is Outcome.PASS


def test_a_hit_rate_above_gate_with_counts_tests_the_misses_and_shows_the_hit_rate() -> None:
    rule = gate(metric="cache_hit_rate", source="redis", above="80%")
    good = Reading(obs("cache_hit_rate", events=0, total=0), obs(events=500, total=10_000))
    verdict = phase_gate("hits", rule, good, baked=True, elapsed_s=60)
    assert verdict.outcome is Outcome.PASS
    assert verdict.observed == 0.95 and verdict.threshold == 0.8
    assert verdict.bound[0] > 0.8 and verdict.bound[1] <= 1.0
    poor = Reading(None, obs("cache_hit_rate", events=4_000, total=10_000))
    verdict = phase_gate("hits", rule, poor, baked=False, elapsed_s=5)
    assert verdict.failed and verdict.observed == 0.6 and verdict.bound[1] < 0.8
    # one miss is no reason to fail a hit-rate gate (it used to be read as "none observed")
    one = Reading(None, obs("cache_hit_rate", events=1, total=1_000))
    assert not phase_gate("hits", rule, one, baked=False, elapsed_s=5).failed


def test_latency_stable_fails_on_a_significant_rise_and_passes_a_flat_series() -> None:
    import random

    rule = gate(metric="latency_stable", of="new")
    rng = random.Random(7)
    flat = [(float(t), 0.020 * (1 + 0.2 * rng.random())) for t in range(60)]
    now = obs("latency_stable", histogram=((float("inf"), 1),))
    verdict = phase_gate("stable", rule, Reading(None, now, series=flat), baked=True, elapsed_s=60)
    assert verdict.outcome is Outcome.PASS, verdict.reason
    rising = [(float(t), 0.020 * (1 + t / 30) * (1 + 0.2 * rng.random())) for t in range(60)]
    verdict = phase_gate(
        "stable", rule, Reading(None, now, series=rising), baked=False, elapsed_s=60
    )
    assert verdict.failed, verdict.reason
    assert "p95 of each look" in verdict.reason
    few = Reading(None, now, series=flat[:3])
    assert phase_gate("stable", rule, few, baked=True, elapsed_s=3).outcome is Outcome.CONTINUE


def test_a_synthetic_gate_needs_no_threshold_and_fails_on_a_failed_run() -> None:
    rule = gate(
        metric="features", of="new", check={"http": {"url": "http://127.0.0.1:1", "path": "/"}}
    )
    assert [c.probe for c in rule.checks] == ["http"]
    failing = Reading(obs("features", events=0, total=0), obs("features", events=1, total=6))
    assert phase_gate("features", rule, failing, baked=False, elapsed_s=3).failed
    fine = Reading(obs("features", events=0, total=0), obs("features", events=0, total=60))
    assert phase_gate("features", rule, fine, baked=True, elapsed_s=30).outcome is Outcome.PASS


def test_a_percent_threshold_on_a_reading_in_percent_compares_percent() -> None:
    rule = gate(metric="cpu", of="new", below="60%")
    reading = Reading(None, obs("cpu", value=45.0, unit="%"))
    verdict = phase_gate("full-cpu", rule, reading, baked=True, elapsed_s=60.0)
    assert verdict.outcome is Outcome.PASS, verdict.reason
    assert verdict.threshold == 60.0 and "45% < 60%" in verdict.reason
    hot = phase_gate(
        "full-cpu", rule, Reading(None, obs("cpu", value=75.0, unit="%")), baked=True, elapsed_s=60
    )
    assert hot.failed and "75% (expected < 60%)" in hot.reason


def test_a_new_instance_warming_up_is_not_a_leak_but_growth_after_the_warmup_is() -> None:
    rule = gate(metric="memory_leak", of="new")
    # 60 MB in the first 20 s (pools, caches), then flat with a little noise
    warming = [(t, 100 + 3 * min(t, 20.0) + (t % 3) * 0.1) for t in map(float, range(0, 90))]
    now = obs("memory_leak", value=warming[-1][1])
    verdict = phase_gate("leak", rule, Reading(None, now, series=warming), baked=True, elapsed_s=90)
    assert verdict.outcome is Outcome.PASS, verdict.reason
    # the same start, then 1 MB a second for a minute: a leak
    leaking = [(t, 100 + 3 * min(t, 20.0) + max(0.0, t - 30)) for t in map(float, range(0, 90))]
    now = obs("memory_leak", value=leaking[-1][1])
    verdict = phase_gate("leak", rule, Reading(None, now, series=leaking), baked=True, elapsed_s=90)
    assert verdict.failed, verdict.reason
