"""Mix files and access logs: parsed into requests, mistakes named by file and line."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from changeover.errors import UsageError
from changeover.loadgen.mix import Mix, Request, load_mix, parse_access_log, parse_mix, single

MIX = """\
- {method: GET, path: /users, weight: 8}
- method: POST
  path: /orders
  body: {user_id: 7, items: [1, 2]}
  headers: {X-Trace: load}
  weight: 2
- {method: post, path: "/notes/{i}", body: "note {i}", weight: 1}
"""


def test_a_yaml_mix_becomes_requests_with_json_and_text_bodies() -> None:
    mix = parse_mix(MIX, "mix.yaml")
    users, orders, notes = mix.requests
    assert (users.method, users.path, users.weight, users.body) == ("GET", "/users", 8.0, b"")
    assert orders.method == "POST"
    assert json.loads(orders.body) == {"user_id": 7, "items": [1, 2]}
    assert ("Content-Type", "application/json") in orders.headers
    assert ("X-Trace", "load") in orders.headers
    assert notes.method == "POST" and notes.templated
    assert ("Content-Type", "text/plain; charset=utf-8") in notes.headers


def test_a_json_mix_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "mix.json"
    path.write_text(json.dumps([{"method": "DELETE", "path": "/x", "weight": 1}]))
    assert load_mix(path).requests == (Request("DELETE", "/x"),)


def test_wire_format_has_host_length_and_the_request_number() -> None:
    notes = parse_mix(MIX, "mix.yaml").requests[2]
    wire = notes.wire("127.0.0.1:8080", 42)
    head, body = wire.split(b"\r\n\r\n", 1)
    assert head.split(b"\r\n")[0] == b"POST /notes/42 HTTP/1.1"
    assert b"Host: 127.0.0.1:8080" in head
    assert body == b"note 42"
    assert f"Content-Length: {len(body)}".encode() in head
    get = Request("GET", "/users").wire("h")
    assert get == b"GET /users HTTP/1.1\r\nHost: h\r\n\r\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- {method: GET, path: /a, weight: 1}\n- {method: GET, path: b, weight: 1}\n", ":2:"),
        ("- {method: GET, path: /a, weight: 0}\n", "weight must be a positive number"),
        ("- {method: GET, path: /a, wieght: 1}\n", "unknown key 'wieght'"),
        ("- {method: 'G T', path: /a}\n", "not an HTTP method"),
        ("- {path: /a, headers: {Content-Length: 5}}\n", "sets Content-Length itself"),
        ("- {path: /a b}\n", "space or line break"),
        ("{}\n", "expected a list of requests"),
        ("- [unclosed\n", "not valid YAML or JSON"),
    ],
)
def test_mistakes_in_a_mix_are_usage_errors_naming_the_place(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=r"mix\.yaml") as caught:
        parse_mix(text, "mix.yaml")
    assert message in str(caught.value)


def test_the_sequence_follows_the_weights_and_the_seed() -> None:
    mix = parse_mix(MIX, "mix.yaml")
    sequence = mix.sequence(seed=1)
    counts = Counter(sequence)
    assert len(sequence) == mix.cycle
    assert counts[0] / len(sequence) == pytest.approx(8 / 11, abs=1 / len(sequence))
    assert counts[1] / len(sequence) == pytest.approx(2 / 11, abs=1 / len(sequence))
    assert mix.sequence(seed=1) == sequence  # deterministic
    assert mix.sequence(seed=2) != sequence
    assert sorted(mix.sequence(seed=2)) == sorted(sequence)  # same proportions, other order


def test_a_plain_url_is_a_single_get() -> None:
    assert single("/health?deep=1").requests == (Request("GET", "/health?deep=1"),)
    assert single("/").sequence(0, 10) == (0,) * 10


LOG = """\
127.0.0.1 - - [10/Oct/2024:13:55:36 -0700] "GET /users HTTP/1.1" 200 2326 "-" "curl/8"
127.0.0.1 - frank [10/Oct/2024:13:55:37 -0700] "GET /users HTTP/1.1" 200 2326
10.0.0.2 - - [10/Oct/2024:13:55:38 +0000] "POST /orders HTTP/1.1" 201 12 "-" "app"
10.0.0.2 - - [10/Oct/2024:13:55:38 +0000] "HEAD /health HTTP/1.0" 200 0 "-" "lb"
10.0.0.2 - - [10/Oct/2024:13:55:39 +0000] "GET http://example.com/a?b=1 HTTP/1.1" 200 5 "-" "p"
10.0.0.3 - - [10/Oct/2024:13:55:40 +0000] "\\x16\\x03\\x01" 400 157 "-" "-"
this is not a log line
"""


def test_an_access_log_is_replayed_by_frequency_reads_only_by_default() -> None:
    mix = parse_access_log(LOG.splitlines(), "access.log")
    assert [(r.method, r.path, r.weight) for r in mix.requests] == [
        ("GET", "/users", 2.0),
        ("GET", "/a?b=1", 1.0),
        ("HEAD", "/health", 1.0),
    ]
    assert "4 requests, 3 distinct" in mix.source
    notes = " | ".join(mix.notes)
    assert "only GET, HEAD requests are replayed" in notes
    assert "skipped 1 requests with other methods (POST 1)" in notes
    assert "skipped 2 lines not in common/combined log format" in notes


def test_an_access_log_can_include_other_methods_when_asked() -> None:
    mix = parse_access_log(LOG.splitlines(), "access.log", methods=["GET", "POST"])
    assert ("POST", "/orders") in {(r.method, r.path) for r in mix.requests}


def test_an_access_log_without_usable_requests_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no GET/HEAD requests found"):
        parse_access_log(["garbage", ""], "access.log")


def test_writes_are_recorded_reads_are_not() -> None:
    assert Request("POST", "/orders").recorded
    assert Request("DELETE", "/orders/1").recorded
    assert not Request("GET", "/orders").recorded
    assert not Request("HEAD", "/orders").recorded


def test_rare_requests_that_get_no_slot_are_counted() -> None:
    requests = (Request("GET", "/common", weight=1e9), Request("GET", "/rare", weight=1))
    assert Mix(requests, "x").never_sent() == 1


def test_a_header_may_reference_a_secret_in_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "- {path: /me, headers: {Authorization: 'Bearer ${LOADGEN_TOKEN}'}}\n"
    monkeypatch.setenv("LOADGEN_TOKEN", "s3cr3t-token")
    headers = parse_mix(text, "mix.yaml").requests[0].headers
    assert ("Authorization", "Bearer s3cr3t-token") in headers
    monkeypatch.delenv("LOADGEN_TOKEN")
    with pytest.raises(UsageError, match="LOADGEN_TOKEN is not set"):
        parse_mix(text, "mix.yaml")
