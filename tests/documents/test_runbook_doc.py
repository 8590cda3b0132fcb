"""The runbook document: every step of the default and demo plans under its stage, with what runs
it and how by hand; the rollback triggers and commands; no secret value; the CLI; and the
by-hand commands themselves run against real PostgreSQL, Redis, HTTP and the built-in proxy."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from changeover.cli import main
from changeover.demo.plan import Ports, demo_plan
from changeover.documents import probes as probe_docs
from changeover.documents import runbook_markdown
from changeover.documents.credentials import secret_references
from changeover.documents.shellwords import Word, json_word
from changeover.plan.default import default_plan, write_default_plan
from changeover.plan.load import load_plan
from changeover.plan.model import Plan
from changeover.plan.secretref import FileRef
from changeover.plan.systems import RouterSystem
from changeover.secrets import REDACTOR
from changeover.traffic.builtin import BuiltinRouter
from support.binaries import require_binary
from support.standin import port_of, start_proxy, start_stand_in

IMMEDIATE = "Immediate rollback (all traffic back to legacy at once)"
PORTS = Ports(legacy=18000, new=(18101, 18102, 18103), proxy=18080, admin=19901)


def _demo(workdir: Path) -> Plan:
    return Plan.model_validate(demo_plan(workdir, PORTS))


def _plans(tmp_path: Path) -> dict[str, tuple[Plan, Path]]:
    return {
        "default": (default_plan(), tmp_path / "changeover.yaml"),
        "demo": (_demo(tmp_path), tmp_path / "changeover.yaml"),
    }


def _sections(text: str, level: str) -> dict[str, str]:
    """Heading text → body, for headings of exactly ``level`` (``##``, ``####``)."""
    parts = re.split(rf"^{level} (.+)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts), 2)}


def _step_block(text: str, step_id: str) -> str:
    match = re.search(rf"^#### `{re.escape(step_id)}` — .*?(?=^####? |^## |\Z)", text, re.M | re.S)
    assert match, f"no block for {step_id}"
    return match.group(0)


def _sh(block: str) -> list[str]:
    """The command lines of a block's ```sh fences (comments dropped, indentation removed)."""
    lines: list[str] = []
    for fence in re.findall(r"```sh\n(.*?)\n\s*```", block, re.S):
        for line in fence.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


# --- coverage of the plan ----------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "demo"])
def test_every_step_appears_with_id_and_title_under_its_stage(which: str, tmp_path: Path) -> None:
    plan, path = _plans(tmp_path)[which]
    text = runbook_markdown(plan, path)
    sections = _sections(text, "##")
    for number, stage in enumerate(plan.stages, 1):
        body = sections[f"Stage {number}: {stage.title}"]
        for step in stage.steps():
            assert f"#### `{step.id}` — {step.title}\n" in body, step.id
    rollback = sections["Rollback"]
    for step in [*plan.rollback.immediate, *plan.rollback.graceful]:
        assert f"#### `{step.id}` — {step.title}\n" in rollback, step.id
    for step in plan.success_criteria:
        assert f"#### `{step.id}` — {step.title}\n" in sections["Success criteria"], step.id
    headings = re.findall(r"^#### `([^`]+)`", text, re.M)
    assert sorted(headings) == sorted(s.id for s in plan.all_steps())  # each exactly once


@pytest.mark.parametrize("which", ["default", "demo"])
def test_every_step_says_what_runs_it_or_how_by_hand_and_how_to_sign_off(
    which: str, tmp_path: Path
) -> None:
    plan, path = _plans(tmp_path)[which]
    text = runbook_markdown(plan, path)
    triggers = {s.id for s in [*plan.rollback.immediate, *plan.rollback.graceful]}
    for step in plan.all_steps():
        block = _step_block(text, step.id)
        assert "- Automated: " in block or "- By hand" in block, block
        assert "Required ·" in block or "Optional ·" in block
        if step.id in triggers:
            assert f"changeover rollback --{_mode(plan, step.id)} --reason" in block
        else:
            assert f"- Sign off: `changeover signoff {step.id} --by NAME`" in block
        if step.manual is not None:
            assert f"- By hand ({step.manual.role}): " in block
        if step.check is not None:
            assert f"`changeover check --step {step.id}`" in block
            assert "```sh" in block  # every probe of these plans has a by-hand recipe


def _mode(plan: Plan, step_id: str) -> str:
    return "immediate" if any(s.id == step_id for s in plan.rollback.immediate) else "graceful"


@pytest.mark.parametrize("which", ["default", "demo"])
def test_every_probe_and_action_of_the_plan_has_its_own_by_hand_recipe(
    which: str, tmp_path: Path
) -> None:
    from changeover.documents import actions as action_docs

    plan, _ = _plans(tmp_path)[which]
    for step in plan.all_steps():
        for call in [*step.checks, *(c for g in step.gates for c in g.checks)]:
            assert call.probe in probe_docs._HANDLERS, call.probe
        if step.action is not None:
            assert step.action.action in action_docs._HANDLERS, step.action.action


def test_a_probe_without_a_recipe_gets_the_generic_check_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delitem(probe_docs._HANDLERS, "redis.ping")
    text = runbook_markdown(default_plan(), tmp_path / "changeover.yaml")
    block = _step_block(text, "cache-connectivity-test")
    assert "changeover check --step cache-connectivity-test" in _sh(block)
    assert "`changeover probes redis.ping` describes what it checks" in block


def test_the_phase_says_who_decides_and_the_gates_their_conditions(tmp_path: Path) -> None:
    text = runbook_markdown(default_plan(), tmp_path / "changeover.yaml")
    canary = _sections(text, "##")["Stage 4: Cutover Phase 1: Canary (10% traffic)"]
    assert "Traffic phase: **10%**" in canary and "bake 30m–1h" in canary
    assert "manual by deployment-lead — `changeover approve canary --by NAME`" in canary
    assert "error_rate of new is below 1%" in _step_block(text, "canary-error-rate")
    latency = _step_block(text, "canary-latency")
    assert "latency_p95 of new is at most 1.2× legacy's (or within legacy's + 5ms)" in latency
    health = _step_block(text, "load-balancer-configured")
    assert "`http` GET `${PUBLIC_URL:-http://127.0.0.1:8080}/healthz` (public)" in health
    assert "expects 200 within 500 ms" in health
    assert (
        "curl -fsS -o /dev/null -w '%{http_code} %{time_total}\\n' "
        '"${PUBLIC_URL:-http://127.0.0.1:8080}/healthz"'
    ) in health


def test_an_http_check_on_an_instance_gets_that_instance_url_by_hand(tmp_path: Path) -> None:
    # (an app without a url of its own checked without an instance is a plan error now)
    text = runbook_markdown(default_plan(), tmp_path / "changeover.yaml")
    block = _step_block(text, "rollback-major-features")
    assert "has no url of its own" not in block
    assert "http://127.0.0.1:8101}/healthz" in block


# --- rollback ----------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["default", "demo"])
def test_every_rollback_trigger_appears_with_its_mode_and_condition(
    which: str, tmp_path: Path
) -> None:
    plan, path = _plans(tmp_path)[which]
    triggers = _sections(runbook_markdown(plan, path), "###")["Triggers"]
    for mode in ("immediate", "graceful"):
        for step in getattr(plan.rollback, mode):
            row = next(line for line in triggers.splitlines() if f"`{step.id}`" in line)
            assert step.title in row and f"| {mode} |" in row
            assert all(gate.metric in row for gate in step.gates)
    row = next(line for line in triggers.splitlines() if "`rollback-error-rate`" in line)
    assert "error_rate of new is above 5%" in row


@pytest.mark.parametrize("which", ["default", "demo"])
def test_the_rollback_procedures_have_the_exact_commands(which: str, tmp_path: Path) -> None:
    plan, path = _plans(tmp_path)[which]
    sections = _sections(runbook_markdown(plan, path), "###")
    immediate = _sh(sections[IMMEDIATE])
    assert immediate[0] == 'changeover rollback --immediate --reason "what you saw" --by NAME'
    assert immediate[1:3] == ["changeover route show", "changeover migrate status"]
    by_hand = immediate[3:]
    assert by_hand[0] == "changeover route set legacy=100 new=0"
    assert by_hand.index("changeover migrate handoff --back") > 0
    assert by_hand[-1] == "changeover migrate verify"
    graceful = _sh(sections["Graceful rollback (step down)"])
    assert graceful[0] == 'changeover rollback --graceful --reason "what you saw" --by NAME'
    routes = [line for line in graceful if line.startswith("changeover route set")]
    assert routes == [
        "changeover route set legacy=50 new=50",
        "changeover route set legacy=90 new=10",
        "changeover route set legacy=100 new=0",
    ]
    assert "changeover migrate handoff --back" in graceful


def test_haproxy_and_nginx_routers_get_their_own_weight_commands(tmp_path: Path) -> None:
    plan = default_plan()
    haproxy = RouterSystem(type="haproxy", admin="ipv4@127.0.0.1:9999")
    nginx = RouterSystem(type="nginx", config="nginx/nginx.conf")

    def immediate(router: RouterSystem) -> str:
        variant = plan.model_copy(update={"systems": {**plan.systems, "router": router}})
        text = runbook_markdown(variant, tmp_path / "changeover.yaml")
        return _sections(text, "###")[IMMEDIATE]

    text = immediate(haproxy)
    assert "echo 'set server app/go-1 weight 0' | socat stdio TCP:127.0.0.1:9999" in text
    assert "echo 'set server app/legacy weight 256' | socat stdio TCP:127.0.0.1:9999" in text
    assert "changeover migrate handoff --back --no-proxy" in text
    text = immediate(nginx)
    assert f"edit {tmp_path}/nginx/changeover-upstream.conf" in text
    assert "#   new/go-1: down" in text and "#   legacy/legacy: weight=256" in text
    assert f"nginx -t -c {tmp_path}/nginx/nginx.conf && nginx -s reload" in text


# --- secrets -----------------------------------------------------------------------------------


def test_no_secret_value_reaches_the_document_but_every_reference_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = default_plan()
    (tmp_path / "pg-replica.url").write_text("postgresql://u:CANARY-FILE-7f3a@h/db\n")
    systems = dict(plan.systems)
    replica = systems["postgres-replica"].model_copy(update={"url": FileRef(file="pg-replica.url")})
    legacy = systems["legacy"].model_copy(
        update={"url": "${LEGACY_URL:-http://user:CANARY-DEFAULT-51@127.0.0.1:8000}"}
    )
    plan = plan.model_copy(
        update={"systems": {**systems, "postgres-replica": replica, "legacy": legacy}}
    )
    references = secret_references(plan, tmp_path)
    names = [r.name for r in references if r.kind == "env"]
    assert {"PG_URL", "REDIS_URL", "ROUTER_TOKEN", "GRAFANA_TOKEN", "API_TOKEN"} <= set(names)
    canaries = {name: f"CANARY-{name}-c0ffee" for name in names}
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)

    text = runbook_markdown(plan, tmp_path / "changeover.yaml")

    for value in [*canaries.values(), "CANARY-FILE-7f3a", "CANARY-DEFAULT-51"]:
        assert value not in text
        assert REDACTOR.scrub(value) == value  # never resolved, so never even registered
    credentials = _sections(text, "##")["Credential plan"]
    for name in names:
        assert f"`${{{name}}}`" in credentials
    assert f"file `{tmp_path}/pg-replica.url`" in credentials
    assert "http://user:***@127.0.0.1:8000" in text
    assert 'psql "$(cat ' + str(tmp_path / "pg-replica.url") + ')"' in text


def test_shell_words_expand_references_and_keep_everything_else_literal(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-a-file")
    word = Word.of('${A}/x"$y`z\\') + Word.of(FileRef(file="token"), tmp_path)
    body = json_word({"email": "${B}", "pw": {"file": "token"}}, tmp_path)
    script = f"printf '%s\\n' {word.shell()} {body.shell()} {Word.of('plain $1').shell()}"
    result = subprocess.run(
        ["bash", "-c", script],
        env={**os.environ, "A": "a a", "B": 'q"uote'},
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines() == [
        'a a/x"$y`z\\from-a-file',
        '{"email":"q"uote","pw":"from-a-file"}',
        "plain $1",
    ]


# --- the command line --------------------------------------------------------------------------


def test_cli_writes_the_runbook_and_exits_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_default_plan(tmp_path)
    output = tmp_path / "RUNBOOK.md"
    assert main(["runbook", "--plan", str(plan), "-o", str(output)]) == 0
    assert f"wrote {output}" in capsys.readouterr().out
    text = output.read_text(encoding="utf-8")
    assert text == runbook_markdown(load_plan(plan).plan, plan)
    assert text.startswith("# Runbook: API cutover")
    assert main(["runbook", "--plan", str(plan)]) == 0
    assert capsys.readouterr().out == text


def test_a_bad_plan_gives_the_same_clear_error_as_validate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        "version: 1\nname: t\ncutover_at: 2026-12-01T02:00:00Z\n"
        "contacts: [{role: lead, title: Lead}]\nstages:\n  - id: pre\n    title: Pre\n"
        "    sections:\n      - title: S\n        steps:\n"
        "          - {id: a, title: A, check: {postgress.connect: {system: pg}}}\n",
        encoding="utf-8",
    )
    assert main(["validate", str(plan)]) == 2
    expected = capsys.readouterr().err
    assert main(["runbook", "--plan", str(plan), "-o", str(tmp_path / "R.md")]) == 2
    err = capsys.readouterr().err
    assert err == expected
    assert re.search(r"changeover\.yaml:11:\d+: .*did you mean 'postgres.connect'", err), err
    assert "Traceback" not in err and not (tmp_path / "R.md").exists()


def test_an_unwritable_output_is_a_plain_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = write_default_plan(tmp_path)
    code = main(["runbook", "--plan", str(plan), "-o", str(tmp_path / "no" / "R.md")])
    err = capsys.readouterr().err
    assert code == 2 and "cannot write" in err and "Traceback" not in err


# --- the by-hand commands, run for real --------------------------------------------------------


class _App(BaseHTTPRequestHandler):
    """A stand-in legacy app: /healthz, /api/v1/items (JSON), 404 elsewhere."""

    def do_GET(self) -> None:
        routes = {"/healthz": b'{"ok": true}', "/api/v1/items?limit=1": b'{"items": [1]}'}
        body = routes.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body or b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def legacy_app() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _App)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


REAL_PLAN = """
version: 1
name: by-hand commands
cutover_at: 2026-12-01T02:00:00Z
systems:
  postgres: {url: "${PG_URL}"}
  redis: {url: "${REDIS_URL}"}
  legacy: {kind: app, url: "${LEGACY_URL}"}
stages:
  - id: pre
    title: Pre
    sections:
      - title: Ready
        steps:
          - id: ready
            title: Everything answers
            check:
              - {postgres.connect: {system: postgres, min_version: 13}}
              - {postgres.pool: {system: postgres, instances: 2, pool_size: 5}}
              - {redis.ping: {system: redis}}
              - {http: {system: legacy, path: /healthz, max_latency: 500ms}}
              - {http: {system: legacy, path: "/api/v1/items?limit=1", json_path: items}}
              - {http: {system: legacy, path: /nope, status: 404}}
"""


def test_the_by_hand_commands_work_against_real_servers(
    tmp_path: Path, pg_url: str, redis_url: str, legacy_app: str
) -> None:
    for binary, package in (("psql", "postgresql-client"), ("redis-cli", "redis-tools")):
        require_binary(binary, package)
    require_binary("curl", "curl")
    path = tmp_path / "changeover.yaml"
    path.write_text(REAL_PLAN, encoding="utf-8")
    text = runbook_markdown(load_plan(path).plan, path)
    commands = _sh(_step_block(text, "ready"))
    assert [c.split()[0] for c in commands] == ["psql", "psql", "redis-cli", *["curl"] * 3]
    env = {**os.environ, "PG_URL": pg_url, "REDIS_URL": redis_url, "LEGACY_URL": legacy_app}
    outputs = []
    for line in commands:
        result = subprocess.run(
            ["bash", "-c", line], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, (line, result.stderr)
        outputs.append(result.stdout)
    assert "PostgreSQL" in outputs[0] and "max_connections" in outputs[1]
    assert outputs[2].strip() == "PONG"
    assert outputs[3].startswith("200 ")
    assert json.loads(outputs[4].splitlines()[0]) == {"items": [1]}
    assert outputs[4].splitlines()[-1].startswith("200 ")
    assert outputs[5].startswith("404 ")


def test_the_by_hand_rollback_puts_all_traffic_on_legacy_through_the_real_proxy(
    tmp_path: Path,
) -> None:
    require_binary("curl", "curl")

    async def scenario() -> None:
        legacy = await start_stand_in("legacy")
        new = await start_stand_in("new")
        proxy, token = await start_proxy(tmp_path, port_of(legacy), port_of(new))
        admin = f"http://127.0.0.1:{proxy.admin_port}"
        router = BuiltinRouter(admin, token)
        try:
            await router.set_weights({"legacy": 50, "new": 50})
            plan = Plan.model_validate(
                {
                    "version": 1,
                    "name": "proxy",
                    "cutover_at": "2026-12-01T02:00:00Z",
                    "systems": {
                        "legacy": {"kind": "app", "url": f"http://127.0.0.1:{port_of(legacy)}"},
                        "new": {"kind": "app", "url": f"http://127.0.0.1:{port_of(new)}"},
                        "proxy": {"kind": "router", "admin": admin, "token": "${ROUTER_TOKEN}"},
                    },
                    "stages": [],
                }
            )
            text = runbook_markdown(plan, tmp_path / "changeover.yaml")
            section = _sections(text, "###")[IMMEDIATE]
            native = [line for line in _sh(section) if line.startswith("curl ")]
            assert len(native) == 1 and "/v1/weights" in native[0] and token not in text
            process = await asyncio.create_subprocess_exec(
                "bash",
                "-c",
                native[0],
                env={**os.environ, "ROUTER_TOKEN": token},
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, stderr = await asyncio.wait_for(process.communicate(), timeout=30)
            assert process.returncode == 0, stderr
            weights = await router.weights()
            assert (weights["legacy"], weights["new"]) == (100.0, 0.0)
        finally:
            await router.close()
            await proxy.close(grace=0.5)
            for server in (legacy, new):
                server.close()
                await server.wait_closed()

    asyncio.run(scenario())
