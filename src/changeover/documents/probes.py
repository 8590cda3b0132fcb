"""Each probe in the runbook: the check ``changeover check`` runs, and the same check by hand.

One small function per probe kind turns the probe's typed parameters into shell lines an
operator can type (``curl``, ``psql``, ``redis-cli``, ``dig``, ``openssl``, ``git`` …) with a
``# expect:`` line after them. A probe without its own function — one added after this module
— still gets its description and ``changeover check --step ID``, never nothing.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any

from changeover.documents.recipe import Recipe, code, shown
from changeover.documents.shellwords import PlanWords, Word, command, json_word, masked
from changeover.documents.shellwords import url_with_path as at
from changeover.plan.model import ProbeCall
from changeover.probes.base import load_all

Handler = Callable[[Any, PlanWords], tuple[str, ...]]
_HANDLERS: dict[str, Handler] = {}
_COMMON = {"system", "timeout", "required"}


def _by_hand(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _HANDLERS[name] = handler
        return handler

    return register


def probe_recipe(call: ProbeCall, words: PlanWords, step_id: str) -> Recipe:
    """What runs ``call`` and how to run it by hand; a generic line for an unknown probe."""
    registry = load_all()
    handler = _HANDLERS.get(call.probe)
    if call.probe not in registry or handler is None:
        return Recipe(
            describe(call),
            (f"changeover check --step {step_id}",),
            (f"{code('changeover probes ' + call.probe)} describes what it checks.",),
        )
    lines = handler(call.typed, words)
    if call.probe == "http":
        return Recipe(_http_automated(call.typed, words), lines)
    return Recipe(describe(call), lines)


def describe(call: ProbeCall) -> str:
    """``postgres.connect`` on postgres — its summary (the parameters that differ from defaults)."""
    probe = load_all().get(call.probe)
    system = call.params.get("system")
    text = code(call.probe) + (f" on {system}" if system else "")
    if probe is None:
        return text + f" ({shown(call.params)})"
    settings = call.typed.model_dump(exclude_defaults=True, by_alias=True, exclude=_COMMON)
    listed = ", ".join(f"{k} {shown(v)}" for k, v in settings.items())
    return masked(f"{text} — {probe.summary.rstrip('.')}" + (f" ({listed})" if listed else ""))


def _expect(text: str) -> str:
    return f"# expect: {text}"


# --- HTTP -------------------------------------------------------------------------------------


def _curl(
    words: PlanWords,
    p: Any,
    url: Word,
    *,
    method: str = "GET",
    headers: dict[str, Word] | None = None,
    body: Word | None = None,
    show_body: bool = False,
    fail: bool = True,
) -> str:
    """One curl line: status and time on the last line, the body too when it is checked."""
    options: list[str | Word | None] = ["curl", "-fsS" if fail else "-sS"]
    options += words.tls_options(p.system)
    if method != "GET":
        options += ["-X", method]
    for name, value in {**words.headers(p.system), **(headers or {})}.items():
        options += ["-H", Word.of(f"{name}: ") + value]
    if body is not None:
        options += ["--data-raw", body]
    if show_body:
        options += ["-w", "\\n%{http_code} %{time_total}\\n"]
    else:
        options += ["-o", "/dev/null", "-w", "%{http_code} %{time_total}\\n"]
    return command(*options, url)


def _no_url(system: str | None, targets: list[tuple[str, Word]]) -> list[str]:
    """A note when the plan's target is an app without a url: the automated check cannot run."""
    if len(targets) <= 1:
        return []
    return [
        f"# {system} has no url of its own: the automated check needs `instance:` in the plan;",
        "# by hand, each instance:",
    ]


def _statuses(status: int | list[int]) -> list[int]:
    return status if isinstance(status, list) else [status]


def _http_checks(p: Any) -> list[str]:
    checks = [f"status {' or '.join(map(str, _statuses(p.status)))}"]
    if p.max_latency is not None:
        checks.append(f"within {p.max_latency.total_seconds() * 1000:g} ms")
    if p.json_path is not None:
        value = "" if p.json_equals is None else f" = {json.dumps(p.json_equals)}"
        checks.append(f"the JSON body has {p.json_path}{value}")
    if p.body_regex is not None:
        checks.append(f"the body matches {p.body_regex}")
    checks += [f"header {name} matches {rx}" for name, rx in p.expect_headers.items()]
    return checks


def _http_automated(p: Any, words: PlanWords) -> str:
    """``http GET <url>/healthz`` (public) expects 200 within 500 ms."""
    targets = list(words.targets(p.system, p.instance, p.url))
    where = targets[0][1].text() if len(targets) == 1 else ""
    text = f"{code('http')} {p.method} {code(at(Word.of(where), p.path).text())}"
    if p.system:
        text += f" ({p.system}{' ' + p.instance if p.instance else ''})"
    checks = _http_checks(p)
    text += f" expects {checks[0].removeprefix('status ')}"
    text += "".join(f" {c}" if c.startswith("within") else f"; {c}" for c in checks[1:])
    if len(targets) > 1:
        text += (
            f" — **{p.system} has no url of its own: the check cannot run until it names one of "
            f"its instances** ({', '.join(label.split()[-1] for label, _ in targets)})"
        )
    return masked(text)


@_by_hand("http")
def _http(p: Any, words: PlanWords) -> tuple[str, ...]:
    statuses = _statuses(p.status)
    lines: list[str] = []
    targets = list(words.targets(p.system, p.instance, p.url))
    lines += _no_url(p.system, targets)
    headers = {k: words.word(v) for k, v in p.headers.items()}
    for _, base in targets:
        line = _curl(
            words,
            p,
            at(base, p.path),
            method=p.method,
            headers=headers,
            # The probe sends its body as written: a literal word, never expanded by the shell.
            body=Word((("text", p.body),)) if p.body is not None else None,
            show_body=p.json_path is not None or p.body_regex is not None,
            fail=all(s < 400 for s in statuses),
        )
        lines.append(line)
    checks = _http_checks(p)
    if p.max_latency is not None:
        checks[1] = f"time_total under {p.max_latency.total_seconds():g} s"
    lines.append(_expect(", ".join(checks)))
    return tuple(lines)


@_by_hand("http.auth")
def _http_auth(p: Any, words: PlanWords) -> tuple[str, ...]:
    credentials = {p.header: words.word(p.credentials)}
    targets = list(words.targets(p.system, p.instance, p.url))
    lines = _no_url(p.system, targets)
    for _, base in targets:
        lines.append(_curl(words, p, at(base, p.path), fail=False))
        lines.append(_expect("401 or 403 (no credentials)"))
        lines.append(_curl(words, p, at(base, p.path), headers=credentials, fail=False))
        lines.append(_expect("2xx (its owner)"))
        if p.other_path:
            lines.append(_curl(words, p, at(base, p.other_path), headers=credentials, fail=False))
            lines.append(_expect("403 or 404 (another user's resource)"))
    return tuple(lines)


@_by_hand("http.cors")
def _http_cors(p: Any, words: PlanWords) -> tuple[str, ...]:
    targets = list(words.targets(p.system, p.instance, p.url))
    lines = _no_url(p.system, targets)
    for _, base in targets:
        for origin, wanted in (
            (p.allowed_origin, f"Access-Control-Allow-Origin: {p.allowed_origin}"),
            (p.disallowed_origin, "no Access-Control-Allow-Origin for this origin"),
        ):
            options: list[str | Word | None] = ["curl", "-sS", "-o", "/dev/null", "-D", "-"]
            options += ["-X", "OPTIONS", "-H", f"Origin: {origin}"]
            options += ["-H", f"Access-Control-Request-Method: {p.method}"]
            if p.request_headers:
                options += ["-H", f"Access-Control-Request-Headers: {', '.join(p.request_headers)}"]
            lines.append(command(*options, at(base, p.path)))
            lines.append(_expect(wanted))
    return tuple(lines)


@_by_hand("http.session")
def _http_session(p: Any, words: PlanWords) -> tuple[str, ...]:
    login, use = p.login, p.use
    lines = ['jar="$(mktemp)"']
    logins = list(words.targets(login.system, login.instance, login.url))
    uses = list(words.targets(use.system, use.instance, use.url))
    lines += _no_url(login.system, logins) + _no_url(use.system, uses)
    for _, base in logins[:1]:
        options: list[str | Word | None] = ["curl", "-sS", "-c", Word((("ref", "${jar}"),))]
        options += ["-X", login.method]
        if login.json_ is not None:
            options += ["-H", "Content-Type: application/json"]
            options += ["--data-raw", json_word(login.json_, words.base)]
        for name, value in (login.form or {}).items():
            options += ["--data-urlencode", Word.of(f"{name}=") + words.word(value)]
        lines.append(command(*options, at(base, login.path)))
    lines.append(_expect(f"status {' or '.join(map(str, _statuses(login.status)))}"))
    for _, base in uses:
        options = ["curl", "-sS", "-b", Word((("ref", "${jar}"),)), "-w", "\\n%{http_code}\\n"]
        lines.append(command(*options, at(base, use.path)))
    same = f"; the same {p.same_json_path} as the login's answer" if p.same_json_path else ""
    lines.append(_expect(f"status {' or '.join(map(str, _statuses(use.status)))}{same}"))
    if login.token_json_path:
        lines.append(
            f"# if the login answers a token at {login.token_json_path}, add "
            "-H 'Authorization: Bearer <token>' to the second request"
        )
    lines.append('rm -f "${jar}"')
    return tuple(lines)


# --- PostgreSQL -------------------------------------------------------------------------------


def _pg(p: Any, words: PlanWords) -> Word:
    return words.server_url("postgres", p.system)


def _psql(p: Any, words: PlanWords, sql: str, expect: str) -> tuple[str, ...]:
    lines = (command("psql", _pg(p, words), "-c", sql), _expect(expect))
    return lines


@_by_hand("postgres.connect")
def _pg_connect(p: Any, words: PlanWords) -> tuple[str, ...]:
    role = "a primary or a replica" if p.allow_replica else "pg_is_in_recovery = f (a primary)"
    sql = "SELECT version(), pg_is_in_recovery()"
    return _psql(p, words, sql, f"PostgreSQL {p.min_version} or later; {role}")


@_by_hand("postgres.replication")
def _pg_replication(p: Any, words: PlanWords) -> tuple[str, ...]:
    sql = "SELECT application_name, state, replay_lag FROM pg_stat_replication"
    lag = f"replay_lag under {p.max_lag.total_seconds() * 1000:g} ms"
    expect = f"at least {p.min_replicas} row(s) with state streaming, {lag}"
    return _psql(p, words, sql, expect)


@_by_hand("postgres.pool")
def _pg_pool(p: Any, words: PlanWords) -> tuple[str, ...]:
    need = p.instances * p.pool_size
    expect = f"max_connections ≥ {p.instances} × {p.pool_size} = {need}, plus the reserved slots"
    return _psql(p, words, "SHOW max_connections", expect)


@_by_hand("postgres.slow-query-log")
def _pg_slow_log(p: Any, words: PlanWords) -> tuple[str, ...]:
    bound = f" and at most {p.max_ms} ms" if p.max_ms is not None else ""
    expect = f"log_min_duration_statement is not -1{bound}"
    return _psql(p, words, "SHOW log_min_duration_statement", expect)


@_by_hand("postgres.extension")
def _pg_extension(p: Any, words: PlanWords) -> tuple[str, ...]:
    sql = f"SELECT extname, extversion FROM pg_extension WHERE extname = '{p.name}'"
    return _psql(p, words, sql, f"one row: {p.name} is installed")


@_by_hand("postgres.schema")
def _pg_schema(p: Any, words: PlanWords) -> tuple[str, ...]:
    return _psql(p, words, f"\\dt {p.schema_}.*", f"tables {', '.join(p.tables)} listed")


@_by_hand("postgres.indexes")
def _pg_indexes(p: Any, words: PlanWords) -> tuple[str, ...]:
    sql = (
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        f"WHERE n.nspname = '{p.schema_}' AND c.relkind = 'r' AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint k WHERE k.conrelid = c.oid AND k.contype = 'p')"
    )
    expect = "no rows (every table has a primary key); \\d TABLE shows each foreign key's index"
    return _psql(p, words, sql, expect)


@_by_hand("postgres.heartbeat")
def _pg_heartbeat(p: Any, words: PlanWords) -> tuple[str, ...]:
    expect = f"a time less than {shown(p.max_age)} ago"
    return _psql(p, words, p.query, expect)


@_by_hand("postgres.backup")
def _pg_backup(p: Any, words: PlanWords) -> tuple[str, ...]:
    age = f"the newest backup is younger than {shown(p.max_age)}"
    if p.method == "pgbackrest":
        line = command(*p.command, f"--stanza={p.stanza}", "info")
    else:
        line = f"ls -lt {_glob(words.path(p.glob))} | head -n 3"
    return (line, _expect(age))


def _glob(path: str) -> str:
    """A glob left unquoted for the shell to expand, when it holds nothing else special."""
    return path if re.fullmatch(r"[\w./*?\[\]-]+", path) else shlex.quote(path)


@_by_hand("migrate.sync_lag")
def _sync_lag(p: Any, words: PlanWords) -> tuple[str, ...]:
    expect = f"lag under {shown(p.max_lag)}" + (
        f" and at most {p.max_rows} rows" if p.max_rows is not None else ""
    )
    return ("changeover migrate status", _expect(expect))


# --- Redis ------------------------------------------------------------------------------------


def _redis(p: Any, words: PlanWords, *args: str) -> str:
    return command("redis-cli", "-u", words.server_url("redis", p.system), *args)


@_by_hand("redis.ping")
def _redis_ping(p: Any, words: PlanWords) -> tuple[str, ...]:
    limit = f" within {p.max_latency.total_seconds() * 1000:g} ms (redis-cli --latency)"
    return (_redis(p, words, "PING"), _expect("PONG" + limit))


@_by_hand("redis.cluster")
def _redis_cluster(p: Any, words: PlanWords) -> tuple[str, ...]:
    expect = "cluster_state:ok and cluster_slots_assigned:16384"
    if not p.require_cluster:
        expect += " (a standalone server answers 'cluster support disabled': fine)"
    return (_redis(p, words, "CLUSTER", "INFO"), _expect(expect))


@_by_hand("redis.maxmemory-policy")
def _redis_maxmemory(p: Any, words: PlanWords) -> tuple[str, ...]:
    return (
        _redis(p, words, "CONFIG", "GET", "maxmemory*"),
        _expect(f"maxmemory not 0; maxmemory-policy one of {', '.join(p.allowed)}"),
    )


@_by_hand("redis.replication")
def _redis_replication(p: Any, words: PlanWords) -> tuple[str, ...]:
    expect = f"role:{p.role}" if p.role != "any" else "a role"
    expect += f", connected_slaves ≥ {p.min_replicas}"
    return (_redis(p, words, "INFO", "replication"), _expect(expect))


@_by_hand("redis.hit-rate")
def _redis_hit_rate(p: Any, words: PlanWords) -> tuple[str, ...]:
    stats = _redis(p, words, "INFO", "stats")
    seconds = f"{p.interval.total_seconds():g}"
    return (
        f"{stats} | grep keyspace_",
        f"sleep {seconds}; {stats} | grep keyspace_",
        _expect(f"Δhits / (Δhits + Δmisses) ≥ {shown(p.min)} between the two readings"),
    )


# --- network, TLS, DNS, commands, git ---------------------------------------------------------


@_by_hand("tcp")
def _tcp(p: Any, words: PlanWords) -> tuple[str, ...]:
    seconds = f"{max(1, round(p.connect_timeout.total_seconds()))}"
    lines: list[str] = []
    for endpoints, wanted in ((p.open, "succeeded (open)"), (p.closed, "refused or timed out")):
        for endpoint in endpoints:
            host, _, port = endpoint.rpartition(":")
            lines.append(command("nc", "-z", "-v", "-w", seconds, host.strip("[]"), port))
        if endpoints:
            lines.append(_expect(wanted))
    return tuple(lines)


@_by_hand("tls")
def _tls(p: Any, words: PlanWords) -> tuple[str, ...]:
    name = p.server_name or p.host
    options = ["openssl", "s_client", "-connect", f"{p.host}:{p.port}", "-servername", name]
    if p.ca_file:
        options += ["-CAfile", words.path(p.ca_file)]
    line = command(*options) + " </dev/null 2>/dev/null | openssl x509 -noout -subject -enddate"
    return (line, _expect(f"notAfter at least {p.min_days} days away; the name {name} covered"))


@_by_hand("dns")
def _dns(p: Any, words: PlanWords) -> tuple[str, ...]:
    server = f"@{p.resolver.rsplit(':', 1)[0]}" if p.resolver else None
    line = command("dig", server, "+noall", "+answer", p.name, p.type)
    if p.absent:
        expect = "no answer"
    else:
        expect = "records " + ", ".join(p.expected) if p.expected else "at least one record"
        if p.max_ttl is not None:
            expect += f"; TTL (2nd column) at most {p.max_ttl}"
    return (line, _expect(expect))


@_by_hand("command")
def _command(p: Any, words: PlanWords) -> tuple[str, ...]:
    env = [Word.of(f"{name}=") + words.word(value) for name, value in p.env.items()]
    line = command(*env, *p.argv)
    if p.cwd:
        line = f"(cd {command(words.path(p.cwd))} && {line})"
    checks = [f"exit status {p.exit_code}"]
    if p.stdout_regex:
        checks.append(f"output matching {p.stdout_regex}")
    if p.stderr_regex:
        checks.append(f"errors matching {p.stderr_regex}")
    return (line, _expect(", ".join(checks)))


def _git(p: Any, words: PlanWords) -> tuple[str, str]:
    system = words.plan.systems.get(p.system)
    return words.path(getattr(system, "path", ".")), str(getattr(system, "main", "main"))


@_by_hand("git.merged")
def _git_merged(p: Any, words: PlanWords) -> tuple[str, ...]:
    path, main = _git(p, words)
    ignoring = f" (ignoring {', '.join(p.ignore)})" if p.ignore else ""
    return (
        command("git", "-C", path, "branch", "--all", "--no-merged", main),
        _expect(f"no branch listed{ignoring}"),
    )


@_by_hand("git.tag")
def _git_tag(p: Any, words: PlanWords) -> tuple[str, ...]:
    path, _ = _git(p, words)
    at_head = ["--points-at", p.at_head_of] if p.at_head_of else []
    return (
        command("git", "-C", path, "tag", "--list", p.pattern, *at_head),
        _expect(f"at least one tag matching {p.pattern}"),
    )


# --- Prometheus and logs ----------------------------------------------------------------------


def _base(p: Any, words: PlanWords) -> Word:
    found = next(iter(words.targets(p.system)), None)
    return found[1] if found else Word.of(f"<{p.system} url>")


def _get(p: Any, words: PlanWords, path: str, *extra: str | Word) -> list[str | Word | None]:
    options: list[str | Word | None] = ["curl", "-fsS"]
    for name, value in words.headers(p.system).items():
        options += ["-H", Word.of(f"{name}: ") + value]
    return [*options, *extra, at(_base(p, words), path)]


@_by_hand("prometheus.ready")
def _prom_ready(p: Any, words: PlanWords) -> tuple[str, ...]:
    line = command(*_get(p, words, "/-/ready"))
    return (line, _expect("… is Ready."))


@_by_hand("prometheus.query")
def _prom_query(p: Any, words: PlanWords) -> tuple[str, ...]:
    query = " ".join(p.query.split())
    line = command(*_get(p, words, "/api/v1/query", "--data-urlencode", f"query={query}"))
    bounds = []
    if p.below is not None:
        bounds.append(f"below {p.below:g}")
    if p.above is not None:
        bounds.append(f"above {p.above:g}")
    expect = f"every value {' and '.join(bounds)}" if bounds else "a result"
    return (line, _expect(expect))


@_by_hand("prometheus.targets")
def _prom_targets(p: Any, words: PlanWords) -> tuple[str, ...]:
    select = f'.data.activeTargets[] | select(.labels.job == "{p.job}") | .health'
    line = command(*_get(p, words, "/api/v1/targets")) + " | " + command("jq", "-r", select)
    return (line, _expect(f"'up' at least {p.min_up} time(s), nothing else"))


@_by_hand("prometheus.rules")
def _prom_rules(p: Any, words: PlanWords) -> tuple[str, ...]:
    line = command(*_get(p, words, "/api/v1/rules")) + " | "
    line += command("jq", "-r", '.data.groups[].rules[] | .name + " " + .health')
    wanted = f"{', '.join(p.names)} listed, health ok" if p.names else "rules listed"
    return (line, _expect(wanted))


def _count_expect(p: Any) -> str:
    bounds = []
    if p.min_count is not None:
        bounds.append(f"at least {p.min_count}")
    if p.max_count is not None:
        bounds.append(f"at most {p.max_count}")
    return f"count {' and '.join(bounds) or 'any'} in the last {shown(p.since)}"


@_by_hand("logs.elasticsearch")
def _logs_es(p: Any, words: PlanWords) -> tuple[str, ...]:
    since = f"now-{int(p.since.total_seconds())}s"
    body = {
        "query": {
            "bool": {
                "must": [
                    {"query_string": {"query": p.query}},
                    {"range": {p.time_field: {"gte": since}}},
                ]
            }
        }
    }
    options = ["-H", "Content-Type: application/json", "--data-raw", json.dumps(body)]
    line = command(*_get(p, words, f"/{p.index}/_count", *options))
    return (line, _expect(_count_expect(p)))


@_by_hand("logs.loki")
def _logs_loki(p: Any, words: PlanWords) -> tuple[str, ...]:
    since = f"{int(p.since.total_seconds())}s"
    options = ["-G", "--data-urlencode", f"query={p.query}", "--data-urlencode", f"since={since}"]
    line = command(*_get(p, words, "/loki/api/v1/query_range", *options))
    return (line, _expect(_count_expect(p) + " entries"))


@_by_hand("logs.file")
def _logs_file(p: Any, words: PlanWords) -> tuple[str, ...]:
    line = command("grep", "-cE", p.pattern) + " " + _glob(words.path(p.path))
    return (line, _expect(_count_expect(p) + " (grep counts the whole file: read the times)"))
