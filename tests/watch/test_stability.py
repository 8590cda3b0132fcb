"""The stability verdict: from a crafted journal part by part, and from a real compressed watch
run plus a real load test of both stub apps (``changeover stability --measure``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from changeover.cli import main
from changeover.journal import open_journal
from changeover.plan.load import load_plan
from changeover.watch.stability import Met, judge
from notify.conftest import Receiver
from watch.conftest import Stub, events, write_plan


def sample(requests: int, errors: int, p95: float) -> dict[str, Any]:
    backend = {"requests": requests, "errors": errors, "p95_ms": p95}
    return {"phase": "full", "backends": {"new": backend, "legacy": {"requests": 1}}}


def check(step: str, status: str) -> dict[str, Any]:
    return {"step": step, "status": status, "required": True, "probes": []}


def load(system: str, p95: float, rate: float = 100) -> dict[str, Any]:
    summary = {"latency_ms": {"p50": p95 / 2, "p95": p95}, "error_rate": 0.0}
    return {"system": system, "rate": rate, "path": "/healthz", "summary": summary}


def crafted(tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver, *extra: Any) -> Any:
    legacy, new = apps
    plan = write_plan(tmp_path, new, legacy, receiver.url())
    with open_journal(None, tmp_path) as journal:
        journal.append("check.result", check("new-healthy", "fail"))  # before: not counted
        journal.append("rollout.done", {"phases": ["full"]})
        for kind, payload in extra:
            journal.append(kind, payload)
        return judge(load_plan(plan).plan, journal.events())


def test_every_part_measured_and_met(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver
) -> None:
    verdict = crafted(
        tmp_path,
        apps,
        receiver,
        *[("check.result", check("new-healthy", "pass"))] * 200,
        ("check.result", check("feature-works", "fail")),
        ("check.result", check("feature-works", "pass")),
        ("rollout.sample", sample(50_000, 10, 12.0)),
        ("rollout.sample", sample(50_000, 20, 20.0)),
        ("action.outcome", {"action": "migrate.verify", "ok": True, "detail": {"equal": True}}),
        ("watch.round", {"due": "2026-12-01T03:00:00+00:00", "failed": [], "steps": 2}),
        ("loadtest.result", load("legacy", 250.0)),
        ("loadtest.result", load("new", 10.0)),
    )
    assert {p.name: p.status for p in verdict.parts} == {
        "uptime": Met.MET,
        "error rate": Met.MET,
        "latency": Met.MET,
        "data": Met.MET,
        "synthetic checks": Met.MET,
        "watch rounds": Met.MET,
        "performance": Met.MET,
    }
    assert verdict.ok
    assert verdict.part("uptime").numbers == {"uptime": 1.0, "checks": 200}
    assert verdict.part("error rate").numbers["rate"] == pytest.approx(30 / 100_000)
    assert verdict.part("latency").numbers["p95_ms"] == pytest.approx(16.0)
    assert verdict.part("performance").numbers["ratio"] == pytest.approx(25.0)
    assert "25.0x (the seed expects 20-30x: met)" in verdict.part("performance").text
    assert verdict.lines()[0].endswith("STABLE")


def test_each_shortfall_is_not_met_with_the_number_measured(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver
) -> None:
    verdict = crafted(
        tmp_path,
        apps,
        receiver,
        *[("check.result", check("new-healthy", "pass"))] * 98,
        *[("check.result", check("new-healthy", "fail"))] * 2,
        ("check.result", check("feature-works", "pass")),
        ("check.result", check("feature-works", "fail")),
        ("rollout.sample", sample(1000, 5, 180.0)),
        (
            "action.outcome",
            {"action": "migrate.verify", "ok": True, "detail": {"equal": False, "differing": 3}},
        ),
        ("watch.round", {"due": "2026-12-01T03:00:00+00:00", "failed": [{"step": "x"}]}),
        ("loadtest.result", load("legacy", 30.0)),
        ("loadtest.result", load("new", 10.0)),
    )
    assert not verdict.ok
    assert all(p.status == Met.NOT_MET for p in verdict.parts), verdict.lines()
    assert "98.00% of 100 health checks passed" in verdict.part("uptime").text
    assert "5 errors in 1000 requests to new = 0.500%" in verdict.part("error rate").text
    assert "3 rows differ" in verdict.part("data").text
    assert "feature-works" in verdict.part("synthetic checks").text
    assert "3.0x (the seed expects 20-30x: not met)" in verdict.part("performance").text


def test_nothing_measured_is_never_met(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver
) -> None:
    verdict = crafted(tmp_path, apps, receiver, ("loadtest.result", load("new", 10.0)))
    assert all(p.status == Met.NOT_MEASURED for p in verdict.parts)
    assert verdict.ok  # nothing failed, and the lines say what is unmeasured
    assert "no load test of both legacy and new" in verdict.part("performance").text
    assert "NOT MEASURED" in "\n".join(verdict.lines())


def test_load_tests_at_different_rates_give_no_ratio(
    tmp_path: Path, apps: tuple[Stub, Stub], receiver: Receiver
) -> None:
    verdict = crafted(
        tmp_path,
        apps,
        receiver,
        ("loadtest.result", load("legacy", 250.0, rate=10)),
        ("loadtest.result", load("new", 10.0, rate=100)),
    )
    assert verdict.part("performance").status == Met.NOT_MEASURED
    assert "different rates" in verdict.part("performance").text


def test_stability_after_a_real_watch_run_and_a_measured_load(
    tmp_path: Path,
    apps: tuple[Stub, Stub],
    receiver: Receiver,
    capsys: pytest.CaptureFixture[str],
) -> None:
    legacy, new = apps
    plan = write_plan(tmp_path, new, legacy, receiver.url(), watch="{every: 1h, until: 3h}")
    assert main(["watch", "--compress", "36000", "--plan", str(plan)]) == 0
    assert len(events(tmp_path, "watch.round")) == 3
    capsys.readouterr()
    args = ["stability", "--measure", "50", "--duration", "1s", "--json", "--plan", str(plan)]
    code = main(args)
    verdict = json.loads(capsys.readouterr().out)
    parts = {p["part"]: p for p in verdict["parts"]}
    assert parts["uptime"]["status"] == "met" and parts["uptime"]["checks"] == 3
    assert parts["synthetic checks"]["status"] == "met"
    assert parts["watch rounds"]["status"] == "met" and parts["watch rounds"]["rounds"] == 3
    assert parts["error rate"]["status"] == "not measured"  # no rollout in this journal
    performance = parts["performance"]
    # Two identical stubs: whatever is measured is reported, and it is nowhere near 20x.
    assert performance["status"] == "not met", performance
    assert performance["legacy_p95_ms"] > 0 and performance["new_p95_ms"] > 0
    assert "the seed expects 20-30x: not met" in performance["text"]
    assert code == 1
    loads = [e.payload for e in events(tmp_path, "loadtest.result")]
    assert [(p["system"], p["rate"]) for p in loads] == [("legacy", 50.0), ("new", 50.0)]


def test_a_health_probe_inside_a_feature_step_counts_for_uptime_alone(tmp_path: Path) -> None:
    from changeover.plan.default import default_plan

    step = {  # the default plan's all-features-working: /healthz, then /api/v1/items
        "step": "all-features-working",
        "status": "fail",
        "required": True,
        "probes": [{"probe": "http", "status": "pass"}, {"probe": "http", "status": "fail"}],
    }
    with open_journal(None, tmp_path) as journal:
        journal.append("check.result", step)
        verdict = judge(default_plan(), journal.events())
    assert verdict.part("uptime").numbers == {"uptime": 1.0, "checks": 1}
    assert verdict.part("synthetic checks").numbers["failing"] == ["all-features-working"]
