"""Each action in the runbook: who does it (``changeover run`` or a person), and how by hand.

``changeover run`` carries out the actions of ``changeover.rollout.actions.AUTOMATED`` inside a
traffic phase; every other action waits for a sign-off. The by-hand procedure is the matching
``changeover`` command where there is one (``route set``, ``migrate copy --capture`` …) and the
tool underneath otherwise. ``route_lines`` also gives the router's own way to set weights
(built-in proxy admin API, HAProxy's runtime API over socat, nginx's upstream file + reload),
which the rollback section reuses.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

from changeover.actions import ACTIONS
from changeover.documents.recipe import Recipe, code, shown
from changeover.documents.shellwords import PlanWords, Word, command, masked, url_with_path
from changeover.plan.model import ActionCall, Plan, Stage
from changeover.plan.systems import AppSystem, RouterSystem
from changeover.traffic.router import RouterError, server_weights

# The backends the rollout controller moves traffic between (its defaults; the CLI passes none).
LEGACY, NEW = "legacy", "new"

Lines = list[str]
Handler = Callable[[Mapping[str, Any], PlanWords], Lines]
_HANDLERS: dict[str, Handler] = {}


def _by_hand(*names: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        for name in names:
            _HANDLERS[name] = handler
        return handler

    return register


def action_recipe(
    call: ActionCall, stage: Stage | None, words: PlanWords, step_id: str = "STEP"
) -> Recipe:
    """Who does the action (the controller in a phase, ``changeover do`` outside one, or a
    person) and the by-hand way."""
    from changeover.rollout.actions import AUTOMATED

    name = call.action
    kind = ACTIONS.get(name)
    summary = kind.summary if kind else "an action changeover does not know"
    settings = ", ".join(f"{k} {shown(v)}" for k, v in call.params.items())
    text = f"{code(name)} — {summary}" + (f" ({settings})" if settings else "")
    in_phase = stage is not None and stage.phase is not None
    if name in AUTOMATED and in_phase:
        text += ": `changeover run` does it in this phase"
    elif name in AUTOMATED and name != "route":
        text += f": `changeover do {step_id} --by NAME` runs it (journaled, once)"
    elif in_phase:
        capability = kind.capability if kind else "unknown"
        text += (
            f": not automated yet ({capability}) — do it by hand; `changeover run` waits for "
            "its sign-off"
        )
    else:
        capability = kind.capability if kind else "unknown"
        text += f": not automated yet ({capability}) — do it by hand and sign it off"
    handler = _HANDLERS.get(name)
    if handler is None:
        return Recipe(masked(text), (), (f"By hand: {summary}; then sign it off.",))
    return Recipe(masked(text), tuple(handler(call.params, words)))


# --- traffic ----------------------------------------------------------------------------------


def route_lines(words: PlanWords, new_percent: float) -> Lines:
    """``changeover route set`` for a split, then the same on the plan's router by hand."""
    split = {LEGACY: 100.0 - new_percent, NEW: new_percent}
    lines = [f"changeover route set {LEGACY}={split[LEGACY]:g} {NEW}={split[NEW]:g}"]
    routers = [(n, s) for n, s in words.plan.systems.items() if isinstance(s, RouterSystem)]
    if not routers:
        lines.append("# the plan names no router system: set this split on the load balancer")
        return lines
    name, router = routers[0]
    servers = _servers(words.plan)
    try:
        weights = server_weights(split, servers)
    except RouterError as exc:
        lines.append(f"# {exc}")
        return lines
    if router.type == "builtin":
        lines.append(f"# or on the built-in proxy's admin API ({name}):")
        lines.append(_proxy_call(words, router, "PUT", "/v1/weights", _percent(split)))
    elif router.type == "haproxy":
        lines += _haproxy_lines(words, name, router, weights)
    else:
        lines += _nginx_lines(words, router, weights, servers)
    return lines


def _percent(split: Mapping[str, float]) -> dict[str, float | int]:
    return {b: int(p) if float(p).is_integer() else p for b, p in split.items()}


def _servers(plan: Plan) -> dict[str, list[str]]:
    """Each app system's router servers: its instances, or itself when it has only a url."""
    return {
        name: [i.name for i in system.instances] or [name]
        for name, system in plan.systems.items()
        if isinstance(system, AppSystem)
    }


def _proxy_call(words: PlanWords, router: RouterSystem, method: str, path: str, body: Any) -> str:
    admin = words.word(router.admin) if router.admin else Word.of("<admin url>")
    options: list[str | Word | None] = ["curl", "-fsS", "-X", method]
    if router.token is not None:
        options += ["-H", Word.of("Authorization: Bearer ") + words.word(router.token)]
    if body is not None:
        options += ["-H", "Content-Type: application/json", "--data-raw", json.dumps(body)]
    return command(*options, url_with_path(admin, path))


def _haproxy_lines(
    words: PlanWords, name: str, router: RouterSystem, weights: Mapping[str, int]
) -> Lines:
    admin = words.word(router.admin) if router.admin else Word.of("/run/haproxy/admin.sock")
    address: str | Word = admin
    if admin.literal:
        address = _socat_address(admin.text())
    lines = [f"# or on HAProxy's runtime API ({name}), backend app:"]
    for server, weight in weights.items():
        echo = command("echo", f"set server app/{server} weight {weight}")
        lines.append(f"{echo} | {command('socat', 'stdio', address)}")
    if not admin.literal:
        lines.append("# (a TCP runtime API is written TCP:host:port for socat)")
    return lines


def _socat_address(admin: str) -> str:
    """HAProxy's admin forms (``unix@/p``, ``ipv4@h:p``, ``tcp://h:p``, ``h:p``) for socat."""
    for prefix in ("unix@", "ipv4@", "tcp://"):
        if admin.startswith(prefix):
            rest = admin.removeprefix(prefix)
            return rest if prefix == "unix@" else f"TCP:{rest}"
    if re.fullmatch(r"[^/]+:\d+", admin):
        return f"TCP:{admin}"
    return admin


def _nginx_lines(
    words: PlanWords,
    router: RouterSystem,
    weights: Mapping[str, int],
    servers: Mapping[str, list[str]],
) -> Lines:
    config = words.path(router.config) if router.config else "/etc/nginx/nginx.conf"
    include = config.rsplit("/", 1)[0] + "/changeover-upstream.conf"
    lines = [f"# or on nginx: edit {include}, the server line marked with each name:"]
    for backend, members in servers.items():
        for server in members:
            weight = weights.get(server, 0)
            setting = f"weight={weight}" if weight > 0 else "down"
            lines.append(f"#   {backend}/{server}: {setting}")
    lines.append(f"{command('nginx', '-t', '-c', config)} && {command('nginx', '-s', 'reload')}")
    return lines


@_by_hand("route")
def _route(params: Mapping[str, Any], words: PlanWords) -> Lines:
    return route_lines(words, float(params.get("weight", 0)))


@_by_hand("readonly")
def _readonly(params: Mapping[str, Any], words: PlanWords) -> Lines:
    hook = params.get("command")
    if isinstance(hook, list) and hook:
        return [command(*map(str, hook)), "# expect: exit status 0; legacy refuses writes"]
    return [
        "# with the built-in proxy, writes already go only to the write owner: nothing to run",
        "# otherwise: the legacy app's own read-only switch",
    ]


@_by_hand("deploy")
def _deploy(params: Mapping[str, Any], words: PlanWords) -> Lines:
    lines: Lines = []
    for wanted in params.get("instances", []):
        for system in words.plan.systems.values():
            if not isinstance(system, AppSystem):
                continue
            for instance in system.instances:
                if instance.name != wanted:
                    continue
                how = instance.deploy
                log = words.path(how.log) if how and how.log else None
                if how is None:
                    lines.append(f"# {wanted}: the plan has no deploy for it: start it your way")
                elif how.command:
                    lines.append(command(*how.command))
                elif how.systemd:
                    lines.append(command("systemctl", "start", how.systemd))
                elif how.process:
                    sink = f" >>{command(log)} 2>&1" if log else " >/dev/null 2>&1"
                    lines.append(f"setsid {command(*how.process)}{sink} </dev/null &")
                if log and how and how.ready_pattern:
                    lines.append(f"# wait until {log} shows a line matching {how.ready_pattern}")
                health = url_with_path(words.word(instance.url), system.health)
                lines.append(command("curl", "-fsS", "-o", "/dev/null", "-w", _W, health))
                lines.append("# expect: 200 (healthy)")
    return lines


_W = "%{http_code} %{time_total}\\n"


@_by_hand("cache.warm")
def _cache_warm(params: Mapping[str, Any], words: PlanWords) -> Lines:
    name = str(params.get("system", NEW))
    system = words.plan.systems.get(name)
    if not isinstance(system, AppSystem):
        return [f"# GET the hot paths on every instance of {name}"]
    chosen = params.get("instances")
    paths = params.get("paths") or [system.health]
    lines: Lines = []
    for label, base in words.targets(name):
        if chosen is not None and label.split()[-1] not in chosen:
            continue
        for path in paths:
            url = url_with_path(base, str(path))
            lines.append(command("curl", "-fsS", "-o", "/dev/null", "-w", _W, url))
    lines.append("# expect: 2xx for every path")
    return lines


@_by_hand("notify")
def _notify(params: Mapping[str, Any], words: PlanWords) -> Lines:
    message = str(params.get("message", "cutover notification"))
    channels = [params["to"]] if params.get("to") else list(words.plan.notify)
    if not channels:
        return ["# the plan has no notify: channels — tell the team in the war-room channel"]
    lines = [command("apprise", "-b", message, words.word(c)) for c in channels]
    return [*lines, "# or every channel at once: changeover notify test"]


# --- migration --------------------------------------------------------------------------------


def _fixed(*lines: str) -> Handler:
    return lambda params, words: list(lines)


_by_hand("migrate.copy")(
    _fixed(
        "changeover migrate copy --capture",
        "# expect: every table copied (source rows = copied + rejected); resumable if cut off",
    )
)
_by_hand("migrate.dry-run")(
    _fixed(
        "changeover migrate copy --dry-run",
        "# expect: every row verified in the scratch schema, with how long the copy took",
    )
)
_by_hand("migrate.sync")(
    _fixed(
        "changeover migrate sync",
        "# leave it running (its own terminal); then, in another:",
        "changeover migrate status",
        "# expect: the sync's lag is a few rows / under a second",
    )
)
_by_hand("migrate.verify")(
    _fixed("changeover migrate verify", "# expect: exit status 0 — no missing, extra or different")
)


@_by_hand("migrate.handoff")
def _handoff(params: Mapping[str, Any], words: PlanWords) -> Lines:
    return handoff_lines(words, back=False)


def handoff_lines(words: PlanWords, *, back: bool) -> Lines:
    """The write handoff (or back) for the plan's router: the built-in proxy holds writes."""
    flag = " --back" if back else ""
    owner = "legacy" if back else "new"
    lines: Lines = []
    routers = [s for s in words.plan.systems.values() if isinstance(s, RouterSystem)]
    if routers and routers[0].type != "builtin":
        stop = "the new app's writes" if back else "the legacy app's writes (its read-only switch)"
        lines += [
            f"# HAProxy/nginx cannot hold writes: stop {stop} first, then:",
            f"changeover migrate handoff{flag} --no-proxy",
        ]
    else:
        lines.append(f"changeover migrate handoff{flag}")
    lines += ["changeover migrate status", f"# expect: writes owned by {owner}"]
    if back and _readonly_hooks(words.plan):
        lines.append(
            "# legacy was made read-only by its own switch (readonly step): make it writable again"
        )
    return lines


def _readonly_hooks(plan: Plan) -> list[str]:
    return [
        step.id
        for step in plan.all_steps()
        if step.action is not None
        and step.action.action == "readonly"
        and step.action.params.get("command")
    ]


# --- load, drills, watching, advice -----------------------------------------------------------


@_by_hand("loadtest")
def _loadtest(params: Mapping[str, Any], words: PlanWords) -> Lines:
    name = str(params.get("system", NEW))
    target = next(iter(words.targets(name)), None)
    url = target[1] + "/" if target else Word.of("<url>/")
    options: list[str | Word | None] = ["changeover", "loadtest", url]
    options += ["--rate", shown(params.get("rate", 100))]
    if params.get("duration"):
        options += ["--duration", shown(params["duration"])]
    if params.get("slo"):
        options += ["--slo", shown(params["slo"])]
    return [
        command(*options),
        "# expect: exit status 0 — the rate held with no late or missed sends, the SLOs held",
        "# (a target that is not on loopback needs --allow-remote)",
    ]


@_by_hand("drill.failover")
def _drill_failover(params: Mapping[str, Any], words: PlanWords) -> Lines:
    return [
        "# 'changeover drill failover' does all of this and times it; by hand:",
        *_loadtest({"system": params.get("system", NEW), "rate": 100, "duration": "5m"}, words),
        "# while it runs, stop one instance of the new app (its deploy's unit or process),",
        "# watch the error rate stay at 0 in 'changeover route show', then start it again",
        "changeover route show",
    ]


@_by_hand("drill.rollback")
def _drill_rollback(params: Mapping[str, Any], words: PlanWords) -> Lines:
    return [
        "# 'changeover drill rollback' does all of this and proves no write was lost; by hand,",
        "# on staging, with 'changeover run' in a phase:",
        'changeover rollback --immediate --reason "rollback drill" --by NAME',
        "changeover route show",
        f"# expect: {LEGACY}=100 {NEW}=0 within seconds",
        "changeover migrate verify",
        "# expect: exit status 0 — nothing lost",
    ]


@_by_hand("watch")
def _watch(params: Mapping[str, Any], words: PlanWords) -> Lines:
    when = []
    if params.get("every"):
        when.append(f"every {shown(params['every'])}")
    if params.get("from") is not None:
        when.append(f"from {shown(params['from'])}")
    if params.get("until") is not None:
        when.append(f"until {shown(params['until'])} after the cutover")
    if params.get("min") is not None:
        when.append(f"for {shown(params['min'])}–{shown(params.get('max', params['min']))}")
    return [
        f"# {' '.join(when) or 'regularly'}:",
        "changeover check",
        "changeover status",
        "# and the gates on the dashboard: error rate, p95 latency, memory, DB load, cache",
    ]


_ADVICE = {
    "slow-queries": (
        "postgres",
        "SELECT calls, round(mean_exec_time) AS mean_ms, left(query, 80) AS query "
        "FROM pg_stat_statements ORDER BY mean_exec_time DESC LIMIT 10",
    ),
    "indexes": (
        "postgres",
        "SELECT relname, seq_scan, idx_scan FROM pg_stat_user_tables "
        "ORDER BY seq_scan DESC LIMIT 10",
    ),
    "pool-size": ("postgres", "SELECT state, count(*) FROM pg_stat_activity GROUP BY state"),
    "cache-ttl": ("redis", "INFO stats"),
}


@_by_hand("advise")
def _advise(params: Mapping[str, Any], words: PlanWords) -> Lines:
    topic = str(params.get("topic", ""))
    kind, query = _ADVICE.get(topic, ("", ""))
    if kind == "postgres":
        url = words.server_url("postgres")
        return [command("psql", url, "-c", query)]
    if kind == "redis":
        url = words.server_url("redis")
        lines = [command("redis-cli", "-u", url, *query.split())]
        return [*lines, "# read keyspace_hits/misses, expired_keys, evicted_keys"]
    return ["changeover report -o REPORT.md", "# and the dashboard's slowest endpoints and gates"]


# --- documents, archives, cleanup -------------------------------------------------------------


_by_hand("report")(_fixed("changeover report -o REPORT.md"))
_by_hand("runbook")(_fixed("changeover runbook -o RUNBOOK.md"))
_by_hand("archive.logs")(
    _fixed(
        "changeover journal verify",
        "changeover journal export -o journal.jsonl",
        "changeover report -o REPORT.md",
        "tar czf cutover-archive.tar.gz journal.jsonl REPORT.md",
        "sha256sum cutover-archive.tar.gz",
    )
)


@_by_hand("archive.sqlite")
def _archive_sqlite(params: Mapping[str, Any], words: PlanWords) -> Lines:
    source = words.sqlite_source()
    lines = [] if source else ["# the plan has no migrate.source: use the legacy SQLite file"]
    source = source or "app.db"
    archive = source.rsplit(".", 1)[0] + "-archive.db"
    return [
        *lines,
        command("sqlite3", source, f".backup '{archive}'"),
        command("sqlite3", archive, "PRAGMA integrity_check"),
        "# expect: ok — then move the archive to long-term storage",
    ]


@_by_hand("revoke-write")
def _revoke_write(params: Mapping[str, Any], words: PlanWords) -> Lines:
    source = words.sqlite_source()
    lines = [command("chmod", "a-w", source)] if source else []
    return [*lines, "# and remove the legacy app's write credentials or deploy its read-only mode"]


@_by_hand("decommission")
def _decommission(params: Mapping[str, Any], words: PlanWords) -> Lines:
    return ["# put the legacy app's decommissioning date in the team calendar and announce it"]
