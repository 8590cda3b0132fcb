"""The built-in proxy as a Router, and `changeover route` through a plan, against real processes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from changeover.cli import main
from changeover.journal import open_journal
from changeover.loadgen.client import send
from changeover.traffic import RouterError
from changeover.traffic.builtin import BuiltinRouter
from support.backends import BackendProcess, start_backend
from support.proxy_process import RunningProxy, run_proxy, write_config

pytestmark = pytest.mark.integration


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[RunningProxy, dict[str, list[BackendProcess]]]]:
    with ExitStack() as stack:
        backends = {
            "legacy": [stack.enter_context(start_backend("legacy-1"))],
            "new": [stack.enter_context(start_backend("new-1"))],
        }
        running = stack.enter_context(run_proxy(write_config(tmp_path, backends)))
        yield running, backends


def test_builtin_router_shifts_10_50_100_0_confirmed_by_counts(
    proxy: tuple[RunningProxy, dict[str, list[BackendProcess]]],
) -> None:
    running, _ = proxy

    async def scenario() -> None:
        router = BuiltinRouter(running.admin, running.token)
        try:
            for share in (10, 50, 100, 0):
                observed = await router.set_weights({"legacy": 100 - share, "new": share})
                assert observed["new"] == share
                answers = await send(running.url, 2_000, concurrency=8)
                measured = 100 * sum(a.instance == "new-1" for a in answers) / len(answers)
                assert abs(measured - share) <= 3, (share, measured)
            stats = await router.stats()
            assert stats.requests("legacy") + stats.requests("new") >= 8_000
            await router.drain("new", "new-1")
            assert (await router.stats()).of("new")[0].status == "DRAIN"
        finally:
            await router.close()

    asyncio.run(scenario())


def test_a_wrong_token_is_a_plain_router_error(
    proxy: tuple[RunningProxy, dict[str, list[BackendProcess]]],
) -> None:
    running, _ = proxy

    async def scenario() -> None:
        router = BuiltinRouter(running.admin, "wrong")
        try:
            with pytest.raises(RouterError, match="token was refused"):
                await router.set_weights({"legacy": 50, "new": 50})
        finally:
            await router.close()

    asyncio.run(scenario())


def test_route_set_and_show_through_the_plan_are_journaled(
    proxy: tuple[RunningProxy, dict[str, list[BackendProcess]]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    running, backends = proxy
    plan = tmp_path / "plan" / "changeover.yaml"
    plan.parent.mkdir()
    token_file = running.config.parent / ".changeover" / "proxy-admin-token"
    legacy, new = backends["legacy"][0], backends["new"][0]
    plan.write_text(
        f"""
version: 1
name: route test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Lead}}]
systems:
  legacy: {{kind: app, instances: [{{name: legacy-1, url: "http://127.0.0.1:{legacy.port}"}}]}}
  new: {{kind: app, instances: [{{name: new-1, url: "http://127.0.0.1:{new.port}"}}]}}
  router: {{kind: router, type: builtin, admin: "{running.admin}", token: {{file: "{token_file}"}}}}
stages:
  - id: pre
    title: Pre
    sections: [{{title: S, steps: [{{id: a, title: A, manual: {{role: lead}}}}]}}]
""",
        encoding="utf-8",
    )
    assert main(["route", "set", "legacy=75", "new=25", "-p", str(plan)]) == 0
    assert "new=25%" in capsys.readouterr().out
    assert main(["route", "show", "-p", str(plan), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["weights"] == {"legacy": 75.0, "new": 25.0}

    assert main(["route", "set", "legacy=75", "new=30", "-p", str(plan)]) == 2
    assert "add up to 100" in capsys.readouterr().err
    assert main(["route", "set", "legacy=75", "neww=25", "-p", str(plan)]) == 2
    assert "did you mean 'new'" in capsys.readouterr().err

    with open_journal(None, plan.parent) as journal:
        events = [(e.kind, e.payload) for e in journal.events()]
    kinds = [kind for kind, _ in events]
    assert kinds.count("action.intent") == 1 and kinds.count("action.outcome") == 1
    outcome = next(p for k, p in events if k == "action.outcome")
    assert outcome["ok"] is True and outcome["observed"] == {"legacy": 75.0, "new": 25.0}
    token = token_file.read_text().strip()
    assert token not in (plan.parent / ".changeover" / "journal.db").read_bytes().decode("latin-1")
