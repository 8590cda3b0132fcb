"""The logs.* probes: real files in tmp_path, and real local HTTP servers that implement the small
part of the Loki and Elasticsearch APIs the probes use (those servers cannot run here).
"""

from __future__ import annotations

import asyncio
import fnmatch
import io
import json
import os
import random
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from changeover.plan.systems import ElasticsearchSystem, LokiSystem
from changeover.probes.base import REGISTRY, CheckResult, ProbeContext, Status, run_probe
from changeover.probes.logs import (
    BLOCK,
    ElasticsearchParams,
    FileParams,
    TimestampParser,
    count_recent,
    judge_count,
    read_lines_backward,
)
from support.prometheus import free_port

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def run(name: str, ctx: ProbeContext, **params: Any) -> CheckResult:
    params_model: Any = REGISTRY[name].Params
    return asyncio.run(run_probe(name, params_model(**params), ctx))


def at(minutes_ago: float) -> datetime:
    return NOW - timedelta(minutes=minutes_ago)


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


# ================================================================== logs.file


def write_log(path: Path, lines: list[str], *, modified: datetime = NOW) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    os.utime(path, (modified.timestamp(), modified.timestamp()))
    return path


def file_probe(tmp_path: Path, **params: Any) -> CheckResult:
    ctx = ProbeContext(base_dir=tmp_path, clock=lambda: NOW)
    params.setdefault("timezone", "UTC")
    return run("logs.file", ctx, **params)


def test_no_complaints_passes_when_matches_are_older_than_the_window(tmp_path: Path) -> None:
    write_log(
        tmp_path / "app.log",
        [
            f"{iso(at(60))} ERROR user complaint: checkout broken",
            f"{iso(at(5))} INFO request served",
        ],
    )
    result = file_probe(tmp_path, path="app.log", pattern="complaint", max_count=0)
    assert result.status is Status.PASS, result.reason
    assert (
        result.reason
        == f"0 matching lines in {tmp_path / 'app.log'} in the last 15m (expected <= 0)"
    )


def test_no_complaints_fails_on_a_recent_match_showing_it(tmp_path: Path) -> None:
    write_log(
        tmp_path / "app.log",
        [
            f"{iso(at(60))} ERROR user complaint: old",
            f"{iso(at(3))} ERROR user complaint: cannot pay",
            f"{iso(at(1))} INFO fine",
        ],
    )
    result = file_probe(tmp_path, path="app.log", pattern="complaint", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason.startswith("1 matching lines in ")
    assert result.evidence[0].value == 1
    assert result.details["samples"] == [f"{iso(at(3))} ERROR user complaint: cannot pay"]


def test_logs_flowing_fails_when_the_file_went_quiet(tmp_path: Path) -> None:
    write_log(tmp_path / "app.log", [f"{iso(at(40))} INFO served"], modified=at(40))
    result = file_probe(tmp_path, path="app.log", pattern=".", min_count=1)
    assert result.status is Status.FAIL
    assert result.reason.startswith("only 0 matching lines")
    assert result.details["files"][0]["skipped"] == "not modified within the window"


def test_logs_flowing_passes_on_recent_lines(tmp_path: Path) -> None:
    write_log(tmp_path / "app.log", [f"{iso(at(40))} INFO a", f"{iso(at(2))} INFO b"])
    result = file_probe(tmp_path, path="app.log", pattern="INFO", min_count=1)
    assert result.status is Status.PASS, result.reason
    assert result.evidence[0].value == 1


def test_stack_trace_lines_take_the_time_of_their_log_line(tmp_path: Path) -> None:
    write_log(
        tmp_path / "app.log",
        [
            f"{iso(at(30))} ERROR boom",
            "Traceback (most recent call last):",
            '  File "app.py", line 3, in handler',
            f"{iso(at(2))} ERROR boom again",
            "Traceback (most recent call last):",
            '  File "app.py", line 9, in handler',
        ],
    )
    result = file_probe(tmp_path, path="app.log", pattern="Traceback|File", max_count=5)
    assert result.evidence[0].value == 2  # only the recent trace's two lines
    assert result.status is Status.PASS


def test_unstamped_lines_at_the_top_count_only_when_the_file_is_recent(tmp_path: Path) -> None:
    lines = ["Starting server", "Listening on :8000"]
    write_log(tmp_path / "fresh.log", lines, modified=at(1))
    write_log(tmp_path / "stale.log", lines, modified=at(14))
    fresh = file_probe(tmp_path, path="fresh.log", pattern="Listening", min_count=1)
    assert fresh.status is Status.PASS, fresh.reason
    # Modified within the out-of-order margin but before the window: read, yet not counted.
    stale = file_probe(tmp_path, path="stale.log", pattern="Listening", min_count=1, since="10m")
    assert stale.status is Status.FAIL
    assert stale.details["files"][0]["lines_read"] == 2


def test_glob_counts_over_every_matching_file(tmp_path: Path) -> None:
    (tmp_path / "logs").mkdir()
    write_log(tmp_path / "logs" / "app-1.log", [f"{iso(at(1))} ERROR a"])
    write_log(tmp_path / "logs" / "app-2.log", [f"{iso(at(2))} ERROR b", f"{iso(at(3))} ERROR c"])
    write_log(tmp_path / "logs" / "other.log", [f"{iso(at(1))} ERROR d"])
    result = file_probe(tmp_path, path="logs/app-*.log", pattern="ERROR", max_count=2)
    assert result.status is Status.FAIL
    assert result.reason.startswith("3 matching lines in 2 files matching logs/app-*.log")
    assert [f["count"] for f in result.details["files"]] == [1, 2]


def test_missing_file_fails_plainly(tmp_path: Path) -> None:
    result = file_probe(tmp_path, path="nope.log", pattern="x", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == f"log file {tmp_path / 'nope.log'} not found"


def test_glob_matching_nothing_fails_plainly(tmp_path: Path) -> None:
    result = file_probe(tmp_path, path="*.log", pattern="x", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == f"no log file matches {tmp_path / '*.log'}"


def test_directory_instead_of_file_fails_plainly(tmp_path: Path) -> None:
    result = file_probe(tmp_path, path=".", pattern="x", max_count=0)
    assert result.status is Status.FAIL
    assert "is a directory" in result.reason


def test_invalid_pattern_is_rejected_when_the_plan_is_read() -> None:
    with pytest.raises(ValueError, match="not a valid regular expression"):
        FileParams(path="a.log", pattern="(unclosed", max_count=0)


def test_bounds_are_required_and_consistent() -> None:
    with pytest.raises(ValueError, match="give min_count, max_count or both"):
        FileParams(path="a.log", pattern="x")
    with pytest.raises(ValueError, match="no count satisfies both"):
        FileParams(path="a.log", pattern="x", min_count=5, max_count=1)


def test_huge_file_is_read_from_the_end_only(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    old = f"{iso(at(600))} INFO old request ok\n" * 200_000  # about 7 MB before the window
    recent = "".join(f"{iso(at(m))} ERROR recent\n" for m in (10, 5, 1))
    log.write_text(old + recent)
    os.utime(log, (NOW.timestamp(), NOW.timestamp()))
    result = file_probe(tmp_path, path="big.log", pattern="ERROR", min_count=3, max_count=3)
    assert result.status is Status.PASS, result.reason
    assert result.details["files"][0]["lines_read"] < 10


def test_naive_timestamps_are_read_in_the_given_zone(tmp_path: Path) -> None:
    # 11:55 in UTC is 5 minutes ago; 11:55 in Berlin (UTC+1 in November) is 65 minutes ago.
    write_log(tmp_path / "app.log", ["2026-11-26 11:55:00,123 ERROR x"])
    utc = file_probe(tmp_path, path="app.log", pattern="ERROR", min_count=1, timezone="UTC")
    berlin = file_probe(
        tmp_path, path="app.log", pattern="ERROR", min_count=1, timezone="Europe/Berlin"
    )
    assert utc.status is Status.PASS, utc.reason
    assert berlin.status is Status.FAIL


def test_unknown_timezone_is_rejected_when_the_plan_is_read() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Olympus'"):
        FileParams(path="a.log", pattern="x", max_count=0, timezone="Mars/Olympus")


# ------------------------------------------------------------------ pure pieces of logs.file


def bounds(**params: Any) -> FileParams:
    return FileParams(path="a.log", pattern="x", **params)


def test_a_lower_bound_passes_a_minimum_but_never_a_maximum() -> None:
    reached = judge_count(bounds(min_count=5), 7, noun="entries", where="in Loki", complete=False)
    assert reached.status is Status.PASS
    unknown = judge_count(bounds(max_count=9), 7, noun="entries", where="in Loki", complete=False)
    assert unknown.status is Status.FAIL
    assert unknown.reason.startswith("could not count every entry")
    over = judge_count(bounds(max_count=5), 6, noun="entries", where="in Loki", complete=False)
    assert over.status is Status.FAIL
    assert over.reason == "at least 6 matching entries in Loki in the last 15m (expected <= 5)"


def test_count_bounds_read_naturally() -> None:
    result = judge_count(bounds(min_count=2, max_count=2), 2, noun="lines", where="in a.log")
    assert result.reason == "2 matching lines in a.log in the last 15m (expected = 2)"
    params = bounds(min_count=1, max_count=3, since="1h")
    result = judge_count(params, 0, noun="lines", where="in a.log")
    assert (
        result.reason == "only 0 matching lines in a.log in the last 1h (expected between 1 and 3)"
    )


def parser(tz: Any = UTC) -> TimestampParser:
    return TimestampParser(tz, NOW)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2026-11-26T11:50:00Z INFO x", datetime(2026, 11, 26, 11, 50, tzinfo=UTC)),
        ("2026-11-26 11:50:00,123 INFO x", datetime(2026, 11, 26, 11, 50, 0, 123000, tzinfo=UTC)),
        ("[2026-11-26 11:50:00.5+01:00] x", datetime(2026, 11, 26, 10, 50, 0, 500000, tzinfo=UTC)),
        ("2026/11/26 11:50:00 go log", datetime(2026, 11, 26, 11, 50, tzinfo=UTC)),
        (
            "2026-11-26T11:50:00.123456789-0200 x",
            datetime(2026, 11, 26, 13, 50, 0, 123456, tzinfo=UTC),
        ),
        ("Nov 26 11:50:00 host app[1]: x", datetime(2026, 11, 26, 11, 50, tzinfo=UTC)),
        ("Nov  6 11:50:00 host app[1]: x", datetime(2026, 11, 6, 11, 50, tzinfo=UTC)),
        (
            '127.0.0.1 - - [26/Nov/2026:11:50:00 +0000] "GET / HTTP/1.1" 500',
            datetime(2026, 11, 26, 11, 50, tzinfo=UTC),
        ),
        (
            '{"time": "2026-11-26T11:50:00Z", "msg": "x"}',
            datetime(2026, 11, 26, 11, 50, tzinfo=UTC),
        ),
        ('{"@timestamp": "2026-11-26T11:50:00.000Z"}', datetime(2026, 11, 26, 11, 50, tzinfo=UTC)),
        ('{"ts": 1795693800.5, "msg": "x"}', datetime(2026, 11, 26, 11, 50, 0, 500000, tzinfo=UTC)),
        ('{"timestamp": 1795693800000}', datetime(2026, 11, 26, 11, 50, tzinfo=UTC)),
        ("Traceback (most recent call last):", None),
        ("  at com.example.Foo(Foo.java:12)", None),
        ("2026-13-45 11:50:00 not a date", None),
        ('{"msg": "no time"}', None),
        ("{not json", None),
    ],
)
def test_timestamp_formats(line: str, expected: datetime | None) -> None:
    assert parser().parse(line) == expected


def test_syslog_dates_ahead_of_now_are_last_years() -> None:
    new_year = TimestampParser(UTC, datetime(2027, 1, 1, 0, 5, tzinfo=UTC))
    assert new_year.parse("Dec 31 23:59:00 host x") == datetime(2026, 12, 31, 23, 59, tzinfo=UTC)


def test_naive_local_time_uses_this_machines_zone() -> None:
    stamp = TimestampParser(None, NOW).parse("2026-11-26 11:50:00 x")
    assert stamp == datetime(2026, 11, 26, 11, 50).astimezone()


def count(lines_oldest_first: list[str], *, mtime: datetime = NOW, pattern: str = "E") -> int:
    found = count_recent(reversed(lines_oldest_first), re.compile(pattern), at(15), mtime, parser())
    return found.count


def test_only_lines_stamped_within_the_window_count() -> None:
    assert count([f"{iso(at(20))} E", f"{iso(at(10))} E"]) == 1
    assert count([f"{iso(at(15))} E"]) == 1  # the window's start is inside


def test_unstamped_line_counts_when_the_stamped_line_above_is_recent() -> None:
    assert count([f"{iso(at(20))} x", "E trace", f"{iso(at(1))} x", "E trace"]) == 1


def test_unstamped_lines_at_the_top_follow_the_files_mtime() -> None:
    assert count(["E top", f"{iso(at(1))} x"]) == 1
    assert count(["E top", f"{iso(at(1))} x"], mtime=at(30)) == 0


def test_lines_from_a_clock_ahead_still_count() -> None:
    assert count([f"{iso(NOW + timedelta(minutes=2))} E skewed clock"]) == 1


def test_count_recent_tolerates_slightly_out_of_order_lines() -> None:
    lines = [f"{iso(at(1))} E", f"{iso(at(17))} x late writer", f"{iso(at(2))} E"]
    assert count(lines) == 2


def test_reading_backwards_gives_every_line_across_block_boundaries() -> None:
    rng = random.Random(7)
    lines = [
        "".join(rng.choice("abc\r") for _ in range(rng.randrange(0, 300))) for _ in range(2000)
    ]
    lines += ["x" * (BLOCK * 2 + 5)]  # a line longer than a block
    for text in ("\n".join(lines), "\n".join(lines) + "\n"):
        got = list(read_lines_backward(io.BytesIO(text.encode())))
        assert got == [line.rstrip("\r") for line in reversed(lines)]
    assert list(read_lines_backward(io.BytesIO(b""))) == []
    assert list(read_lines_backward(io.BytesIO(b"\n"))) == [""]


# ================================================================== fake Loki / Elasticsearch


@dataclass
class Entry:
    labels: dict[str, str]
    time: datetime
    line: str


@dataclass
class FakeState:
    entries: list[Entry] = field(default_factory=list)
    docs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # ES index → documents
    requests: list[dict[str, Any]] = field(default_factory=list)
    fail_with: tuple[int, str] | None = None  # (status, body) for every request
    shard_failure: str | None = None
    require_auth: str | None = None


def ns(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000_000 + moment.microsecond * 1000


_SELECTOR = re.compile(r"^\{(?P<matchers>[^}]*)\}(?P<pipeline>.*)$")
_MATCHER = re.compile(r'\s*(\w+)\s*=\s*"([^"]*)"\s*')
_FILTER = re.compile(r'\s*(\|=|!=)\s*"([^"]*)"')


class FakeHandler(BaseHTTPRequestHandler):
    """Loki's GET /loki/api/v1/query_range and Elasticsearch's POST /<index>/_count."""

    server: FakeServer

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean

    def reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def failing(self) -> bool:
        state = self.server.state
        if state.fail_with is not None:
            self.reply(state.fail_with[0], state.fail_with[1], "text/plain; charset=utf-8")
            return True
        return False

    # ------------------------------------------------------------------ Loki

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/loki/api/v1/query_range":
            self.reply(404, "404 page not found\n", "text/plain")
            return
        if self.failing():
            return
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        self.server.state.requests.append(query)
        # Loki answers bad parameters and bad LogQL with 400 and a plain-text message.
        for name in ("start", "end"):
            if not re.fullmatch(r"\d{19}", query.get(name, "")):
                self.reply(
                    400, f"invalid parameter {name!r}: expected ns since epoch\n", "text/plain"
                )
                return
        if not query.get("limit", "").isdigit() or query.get("direction") not in (
            "forward",
            "backward",
        ):
            self.reply(400, "invalid limit or direction\n", "text/plain")
            return
        logql = query.get("query", "")
        if logql.startswith(("count_over_time(", "sum(", "rate(")):
            self.reply(200, {"status": "success", "data": {"resultType": "matrix", "result": []}})
            return
        match = _SELECTOR.match(logql)
        if not match:
            message = "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER\n"
            self.reply(400, message, "text/plain")
            return
        matchers = dict(_MATCHER.findall(match["matchers"]))
        filters = _FILTER.findall(match["pipeline"])
        start, end, limit = int(query["start"]), int(query["end"]), int(query["limit"])
        selected = [
            e
            for e in self.server.state.entries
            if all(e.labels.get(k) == v for k, v in matchers.items())
            and start <= ns(e.time) < end
            and all((text in e.line) == (op == "|=") for op, text in filters)
        ]
        selected.sort(key=lambda e: ns(e.time), reverse=query["direction"] == "backward")
        selected = selected[:limit]
        streams: dict[tuple[tuple[str, str], ...], list[list[str]]] = {}
        for e in selected:
            streams.setdefault(tuple(sorted(e.labels.items())), []).append(
                [str(ns(e.time)), e.line]
            )
        result = [{"stream": dict(key), "values": values} for key, values in streams.items()]
        self.reply(
            200,
            {
                "status": "success",
                "data": {
                    "resultType": "streams",
                    "result": result,
                    "stats": {"summary": {"totalEntriesReturned": len(selected)}},
                },
            },
        )

    # ------------------------------------------------------------------ Elasticsearch

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        state = self.server.state
        parts = url.path.strip("/").split("/")
        if len(parts) != 2 or parts[1] != "_count":
            self.reply(405, {"error": "Incorrect HTTP method", "status": 405})
            return
        if self.failing():
            return
        if state.require_auth and self.headers.get("Authorization") != state.require_auth:
            self.reply(
                401, es_error("security_exception", "missing authentication credentials", 401)
            )
            return
        if self.headers.get("Content-Type", "").split(";")[0] != "application/json":
            self.reply(406, es_error("media_type_header_exception", "invalid media-type", 406))
            return
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        state.requests.append(body)
        pattern = unquote(parts[0])
        indices = [
            name
            for wanted in pattern.split(",")
            for name in state.docs
            if fnmatch.fnmatchcase(name, wanted)
        ]
        if not indices and "*" not in pattern:
            self.reply(
                404, es_error("index_not_found_exception", f"no such index [{pattern}]", 404)
            )
            return
        filters = body["query"]["bool"]["filter"]
        query_string = next(f["query_string"]["query"] for f in filters if "query_string" in f)
        [(field_name, bounds)] = next(f["range"] for f in filters if "range" in f).items()
        if bounds.get("format") != "strict_date_optional_time":
            self.reply(400, es_error("parse_exception", "unexpected date format", 400))
            return
        gte = datetime.fromisoformat(bounds["gte"].replace("Z", "+00:00"))
        count = sum(
            1
            for name in indices
            for doc in state.docs[name]
            if field_name in doc
            and datetime.fromisoformat(doc[field_name].replace("Z", "+00:00")) >= gte
            and lucene_match(query_string, doc)
        )
        shards: dict[str, Any] = {"total": 2, "successful": 2, "skipped": 0, "failed": 0}
        if state.shard_failure:
            reason = {"type": "query_shard_exception", "reason": state.shard_failure}
            failure = {"shard": 1, "index": indices[0], "node": "n1", "reason": reason}
            shards.update(successful=1, failed=1, failures=[failure])
        self.reply(200, {"count": count, "_shards": shards})


def es_error(kind: str, reason: str, status: int) -> dict[str, Any]:
    cause = {"type": kind, "reason": reason}
    return {"error": {"root_cause": [cause], **cause}, "status": status}


def lucene_match(query: str, doc: dict[str, Any]) -> bool:
    """The subset of query_string the tests use: '*' and field:value terms joined by AND."""
    if query.strip() == "*":
        return True
    for term in query.split(" AND "):
        name, _, value = term.strip().partition(":")
        if str(doc.get(name)) != value:
            return False
    return True


class FakeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), FakeHandler)
        self.state = FakeState()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


# ================================================================== logs.loki


def loki(url: str, **params: Any) -> CheckResult:
    ctx = ProbeContext(systems={"loki": LokiSystem(url=url)}, clock=lambda: NOW)
    return run("logs.loki", ctx, system="loki", **params)


def add_entries(fake: FakeServer, n: int, minutes_ago: float, line: str, app: str = "api") -> None:
    for i in range(n):
        moment = at(minutes_ago) + timedelta(microseconds=i)
        fake.state.entries.append(Entry({"app": app, "pod": f"p{i % 3}"}, moment, line))


def test_loki_count_within_bounds_passes(fake: FakeServer) -> None:
    add_entries(fake, 4, 5, "GET / 200")
    add_entries(fake, 2, 5, "level=error payment failed")
    add_entries(fake, 9, 30, "level=error payment failed")  # before the window
    add_entries(fake, 5, 5, "level=error other app", app="worker")
    result = loki(fake.url, query='{app="api"} |= "error"', min_count=1, max_count=5)
    assert result.status is Status.PASS, result.reason
    assert result.reason == (
        "2 matching entries in Loki in the last 15m (expected between 1 and 5)"
    )
    request = fake.state.requests[-1]
    assert request["query"] == '{app="api"} |= "error"'  # passed through untouched
    assert int(request["end"]) == ns(NOW)
    assert int(request["end"]) - int(request["start"]) == 15 * 60 * 1_000_000_000
    assert request["direction"] == "backward"


def test_loki_count_over_max_fails(fake: FakeServer) -> None:
    add_entries(fake, 3, 2, "user complaint: refund")
    result = loki(fake.url, query='{app="api"} |= "complaint"', max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == "3 matching entries in Loki in the last 15m (expected <= 0)"
    assert result.details["samples"][0] == "user complaint: refund"


def test_loki_pages_through_more_entries_than_one_answer(fake: FakeServer) -> None:
    add_entries(fake, 990, 5, "error a")
    # 20 entries share one nanosecond where the first page (1000 entries) ends: page 2 must
    # ask for that nanosecond again and count only the 10 it has not seen.
    for i in range(20):
        fake.state.entries.append(Entry({"app": "api", "pod": f"q{i}"}, at(7), "error b"))
    add_entries(fake, 1500, 9, "error c")
    result = loki(fake.url, query='{app="api"} |= "error"', max_count=5000)
    assert result.status is Status.PASS, result.reason
    assert result.evidence[0].value == 2510
    assert result.details["complete"] is True
    assert result.details["pages"] == 3


def test_loki_stops_counting_once_the_verdict_is_settled(fake: FakeServer) -> None:
    add_entries(fake, 2500, 5, "error")
    result = loki(fake.url, query='{app="api"}', max_count=10)
    assert result.status is Status.FAIL
    assert result.reason.startswith("at least 1000 matching entries in Loki")
    assert len(fake.state.requests) == 1


def test_loki_fails_when_it_cannot_count_past_one_nanosecond(fake: FakeServer) -> None:
    # More entries than one page at the very same nanosecond: paging cannot move past them.
    for i in range(1200):
        fake.state.entries.append(Entry({"app": "api", "pod": f"p{i}"}, at(3), "error"))
    result = loki(fake.url, query='{app="api"}', max_count=5000)
    assert result.status is Status.FAIL
    assert result.reason.startswith("could not count every entry: at least 1000 matching")


def test_loki_too_few_entries_fails(fake: FakeServer) -> None:
    result = loki(fake.url, query='{app="api"}', min_count=1)
    assert result.status is Status.FAIL
    assert result.reason == "only 0 matching entries in Loki in the last 15m (expected >= 1)"


def test_loki_bad_logql_fails_with_lokis_message(fake: FakeServer) -> None:
    result = loki(fake.url, query="app=api", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason.startswith("Loki rejected the query: parse error at line 1")


def test_loki_metric_query_is_a_plan_error(fake: FakeServer) -> None:
    result = loki(fake.url, query='count_over_time({app="api"}[5m])', max_count=0)
    assert result.status is Status.ERROR
    assert "is a metric query" in result.reason


def test_loki_server_down_fails_plainly() -> None:
    port = free_port()
    result = loki(f"http://127.0.0.1:{port}", query='{app="api"}', max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == f"cannot reach Loki at http://127.0.0.1:{port}: connection refused"


def test_loki_server_error_fails_plainly(fake: FakeServer) -> None:
    fake.state.fail_with = (500, "rpc error: code = Unavailable desc = no ingesters\n")
    result = loki(fake.url, query='{app="api"}', max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == (
        f"Loki at {fake.url} answered the query with HTTP 500 Internal Server Error: "
        "rpc error: code = Unavailable desc = no ingesters"
    )


# ================================================================== logs.elasticsearch


def elasticsearch(url: str, environ: dict[str, str] | None = None, **params: Any) -> CheckResult:
    headers = {"Authorization": "${ES_AUTH}"} if environ else {}
    system = ElasticsearchSystem(url=url, headers=headers)
    ctx = ProbeContext(systems={"es": system}, clock=lambda: NOW, environ=environ)
    return run("logs.elasticsearch", ctx, system="es", **params)


def add_docs(fake: FakeServer, index: str, n: int, minutes_ago: float, **doc: Any) -> None:
    docs = fake.state.docs.setdefault(index, [])
    docs.extend({"@timestamp": iso(at(minutes_ago)), **doc} for _ in range(n))


def test_elasticsearch_count_within_bounds_passes(fake: FakeServer) -> None:
    add_docs(fake, "logs-api-2026.11.26", 3, 5, level="error")
    add_docs(fake, "logs-api-2026.11.26", 4, 5, level="info")
    add_docs(fake, "logs-api-2026.11.25", 6, 60, level="error")  # before the window
    result = elasticsearch(fake.url, index="logs-api-*", query="level:error", max_count=3)
    assert result.status is Status.PASS, result.reason
    assert result.reason == "3 matching documents in logs-api-* in the last 15m (expected <= 3)"
    body = fake.state.requests[-1]
    assert body["query"]["bool"]["filter"][1]["range"]["@timestamp"]["gte"] == (
        "2026-11-26T11:45:00.000+00:00"
    )


def test_elasticsearch_count_over_max_fails(fake: FakeServer) -> None:
    add_docs(fake, "logs", 2, 1, level="error", complaint="true")
    result = elasticsearch(fake.url, index="logs", query="complaint:true", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == "2 matching documents in logs in the last 15m (expected <= 0)"


def test_elasticsearch_custom_time_field_applies_the_window(fake: FakeServer) -> None:
    fake.state.docs["events"] = [
        {"ts": iso(at(1))},
        {"ts": iso(at(20))},
        {"@timestamp": iso(at(1))},
    ]
    result = elasticsearch(fake.url, index="events", time_field="ts", min_count=1, max_count=1)
    assert result.status is Status.PASS, result.reason


def test_elasticsearch_missing_index_fails_with_its_error(fake: FakeServer) -> None:
    result = elasticsearch(fake.url, index="nope", min_count=1)
    assert result.status is Status.FAIL
    assert result.reason == (
        "Elasticsearch rejected the count: index_not_found_exception: no such index [nope]"
    )


def test_elasticsearch_partial_count_fails(fake: FakeServer) -> None:
    add_docs(fake, "logs", 1, 1)
    fake.state.shard_failure = "failed to create query: field [level] is not a keyword"
    result = elasticsearch(fake.url, index="logs", max_count=10)
    assert result.status is Status.FAIL
    assert result.reason == (
        "the count of logs is incomplete: 1 of 2 shards failed: query_shard_exception: "
        "failed to create query: field [level] is not a keyword"
    )


def test_elasticsearch_credentials_are_sent_and_never_shown(fake: FakeServer) -> None:
    fake.state.require_auth = "ApiKey c2VjcmV0LWtleQ=="
    add_docs(fake, "logs", 1, 1)
    key = "ApiKey c2VjcmV0LWtleQ=="
    good = elasticsearch(fake.url, {"ES_AUTH": key}, index="logs", min_count=1)
    bad = elasticsearch(fake.url, {"ES_AUTH": "ApiKey d3Jvbmcta2V5"}, index="logs", min_count=1)
    assert good.status is Status.PASS, good.reason
    assert bad.status is Status.FAIL
    assert bad.reason == (
        "Elasticsearch rejected the count: security_exception: missing authentication credentials"
    )
    assert "d3Jvbmc" not in json.dumps(bad.to_json())


def test_elasticsearch_server_down_fails_plainly() -> None:
    port = free_port()
    result = elasticsearch(f"http://127.0.0.1:{port}", index="logs", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == (
        f"cannot reach Elasticsearch at http://127.0.0.1:{port}: connection refused"
    )


def test_elasticsearch_server_error_fails_plainly(fake: FakeServer) -> None:
    fake.state.fail_with = (500, "Internal Server Error")
    result = elasticsearch(fake.url, index="logs", max_count=0)
    assert result.status is Status.FAIL
    assert result.reason == (
        f"Elasticsearch at {fake.url} answered the count with HTTP 500 Internal Server Error: "
        "Internal Server Error"
    )


def test_elasticsearch_index_names_cannot_reach_other_endpoints() -> None:
    with pytest.raises(ValueError, match="index name cannot contain"):
        ElasticsearchParams(system="es", index="../_cluster", max_count=0)
