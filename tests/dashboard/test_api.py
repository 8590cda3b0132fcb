"""The dashboard's HTTP API against the real server: who may read, who may act, CSRF and origin
checks, actions journaled with who did them, secrets never served, the stream within a second."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from changeover.engine.runbook import Runbook
from changeover.rollout.state import APPROVED, ROLLBACK_REQUESTED
from dashboard.conftest import new_tokens, page_session, served, write_plan

SECRET = "s3cret-header-value-never-shown"


def _post(
    client: httpx.Client, path: str, body: dict[str, Any], *, token: str | None, csrf: str | None
) -> httpx.Response:
    headers = {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    if csrf is not None:
        headers["X-CSRF-Token"] = csrf
    return client.post(path, json=body, headers=headers)


@pytest.fixture
def plan(tmp_path: Path) -> Path:
    return write_plan(tmp_path)


def _journal(plan: Path, kind: str) -> list[Any]:
    with Runbook.open(plan) as runbook:
        return list(runbook.journal.events(kinds=[kind]))


def test_an_action_without_the_operator_token_is_401_and_journals_nothing(plan: Path) -> None:
    tokens = new_tokens()
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        csrf = page_session(client)
        answer = _post(
            client, "/api/approve", {"phase": "canary", "by": "eve"}, token=None, csrf=csrf
        )
        assert answer.status_code == 401
        assert "operator token" in answer.json()["error"]
        wrong = _post(
            client, "/api/approve", {"phase": "canary", "by": "eve"}, token="x" * 32, csrf=csrf
        )
        assert wrong.status_code == 401
        assert "not valid" in wrong.json()["error"]
    assert _journal(plan, APPROVED) == []


def test_the_operator_token_approves_and_the_journal_names_who(plan: Path) -> None:
    tokens = new_tokens()
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        csrf = page_session(client)
        answer = _post(
            client,
            "/api/approve",
            {"phase": "canary", "by": "alice"},
            token=tokens.operator,
            csrf=csrf,
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["ok"] and "approved canary" in answer.json()["message"]
    (event,) = _journal(plan, APPROVED)
    assert event.actor == "alice" and event.payload == {"phase": "canary"}


def test_signoff_and_rollback_are_the_cli_events_with_who(plan: Path) -> None:
    tokens = new_tokens()
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        csrf = page_session(client)
        signed = _post(
            client,
            "/api/signoff",
            {"step": "war-room", "by": "bob", "note": "bridge open"},
            token=tokens.operator,
            csrf=csrf,
        )
        assert signed.status_code == 200, signed.text
        rolled = _post(
            client,
            "/api/rollback",
            {"mode": "graceful", "reason": "p99 doubling", "by": "carol"},
            token=tokens.operator,
            csrf=csrf,
        )
        assert rolled.status_code == 200, rolled.text
    with Runbook.open(plan) as runbook:
        assert "war-room" in {s.step.id for s in runbook.state().steps if s.signoffs}
        (signoff,) = runbook.journal.events(kinds=["signoff"])
        assert signoff.actor == "bob"
        assert signoff.payload == {"step": "war-room", "by": "bob", "note": "bridge open"}
    (request,) = _journal(plan, ROLLBACK_REQUESTED)
    assert request.actor == "carol"
    assert request.payload == {"mode": "graceful", "reason": "p99 doubling"}


def test_bad_input_is_400_with_a_plain_message(plan: Path) -> None:
    tokens = new_tokens()
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        csrf = page_session(client)
        unknown = _post(
            client, "/api/approve", {"phase": "canery", "by": "a"}, token=tokens.operator, csrf=csrf
        )
        assert unknown.status_code == 400
        assert "did you mean 'canary'" in unknown.json()["error"]
        nameless = _post(
            client, "/api/signoff", {"step": "war-room"}, token=tokens.operator, csrf=csrf
        )
        assert nameless.status_code == 400 and "by is required" in nameless.json()["error"]
        mode = _post(
            client,
            "/api/rollback",
            {"mode": "slowly", "reason": "r", "by": "a"},
            token=tokens.operator,
            csrf=csrf,
        )
        assert mode.status_code == 400 and "immediate or graceful" in mode.json()["error"]


def test_the_viewer_token_reads_but_cannot_act(plan: Path) -> None:
    tokens = new_tokens(viewer=True)
    assert tokens.viewer is not None
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        assert client.get("/api/state").status_code == 401
        assert client.get("/").status_code == 401  # the login form
        viewer = {"Authorization": f"Bearer {tokens.viewer}"}
        state = client.get("/api/state", headers=viewer)
        assert state.status_code == 200
        assert state.json()["sections"]["plan"]["name"] == "dashboard test"
        csrf = page_session(client, **viewer)
        acted = _post(
            client, "/api/approve", {"phase": "canary", "by": "v"}, token=tokens.viewer, csrf=csrf
        )
        assert acted.status_code == 403
        assert "only read" in acted.json()["error"]
    assert _journal(plan, APPROVED) == []


def test_logging_in_with_the_viewer_token_gives_a_session_that_reads(plan: Path) -> None:
    tokens = new_tokens(viewer=True)
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        refused = client.post("/login", data={"token": "not-the-token"})
        assert refused.status_code == 401 and "not valid" in refused.text
        logged_in = client.post("/login", data={"token": tokens.viewer})
        assert logged_in.status_code == 303
        assert client.get("/api/state").status_code == 200  # the cookie now reads
        assert client.get("/").status_code == 200


def test_an_action_without_or_with_a_wrong_csrf_token_is_403(plan: Path) -> None:
    tokens = new_tokens()
    body = {"phase": "canary", "by": "alice"}
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        missing = _post(client, "/api/approve", body, token=tokens.operator, csrf=None)
        assert missing.status_code == 403 and "security token" in missing.json()["error"]
        csrf = page_session(client)
        wrong = _post(client, "/api/approve", body, token=tokens.operator, csrf=csrf[:-2] + "xx")
        assert wrong.status_code == 403
        # A token from another session (another browser) does not fit this session's cookie.
        with httpx.Client(base_url=board.url) as other:
            theirs = page_session(other)
        assert (
            _post(client, "/api/approve", body, token=tokens.operator, csrf=theirs).status_code
            == 403
        )
    assert _journal(plan, APPROVED) == []


def test_a_request_from_another_site_or_host_name_is_refused(plan: Path) -> None:
    tokens = new_tokens()
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        csrf = page_session(client)
        foreign = client.post(
            "/api/approve",
            json={"phase": "canary", "by": "alice"},
            headers={
                "Authorization": f"Bearer {tokens.operator}",
                "X-CSRF-Token": csrf,
                "Origin": "http://evil.example",
            },
        )
        assert foreign.status_code == 403 and "another site" in foreign.json()["error"]
        # DNS rebinding: a foreign name pointing at 127.0.0.1 reads nothing.
        rebound = client.get("/api/state", headers={"Host": f"evil.example:{board.port}"})
        assert rebound.status_code == 403
        same = client.get("/api/state", headers={"Host": f"localhost:{board.port}"})
        assert same.status_code == 200
    assert _journal(plan, APPROVED) == []


def test_tokens_and_plan_secrets_never_reach_the_state_or_the_stream(
    plan: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DASHBOARD_TEST_SECRET", SECRET)
    tokens = new_tokens(viewer=True)
    assert tokens.viewer is not None
    with Runbook.open(plan) as runbook:  # a secret journaled by mistake by some other process
        runbook.journal.append("note", {"text": f"header was {SECRET}"}, actor="someone")
    with served(plan, tokens) as board, httpx.Client(base_url=board.url) as client:
        headers = {"Authorization": f"Bearer {tokens.operator}"}
        csrf = page_session(client, **headers)
        _post(
            client,
            "/api/signoff",
            {"step": "war-room", "by": "ana"},
            token=tokens.operator,
            csrf=csrf,
        )
        state = client.get("/api/state", headers=headers).text
        stream = _read_stream(board.url, headers, until=lambda data: "war-room" in data)
        page = client.get("/", headers=headers).text
    for text in (state, stream, page):
        for secret in (SECRET, tokens.operator, tokens.viewer):
            assert secret not in text
    assert "header was ***" in state


def test_a_new_journal_event_reaches_the_stream_within_a_second(plan: Path) -> None:
    tokens = new_tokens()
    with served(plan, tokens, poll_s=0.5) as board, httpx.Client(base_url=board.url) as client:
        with client.stream("GET", "/events", timeout=10) as stream:
            messages = _sse(stream.iter_lines())
            kind, snapshot = next(messages)
            assert kind == "snapshot" and snapshot["full"]
            with Runbook.open(plan) as runbook:
                event = runbook.journal.append("note", {"text": "DNS TTL lowered"}, actor="ana")
                written = time.monotonic()  # committed (fsync'd): from here the poller can see it
            for kind, data in messages:
                if kind == "update" and event.seq in {line["seq"] for line in data["tail"]}:
                    break
            waited = time.monotonic() - written
        assert waited < 1.0, f"the event took {waited:.2f} s to arrive"
        (line,) = [line for line in data["tail"] if line["seq"] == event.seq]
        assert line["actor"] == "ana" and "DNS TTL lowered" in line["text"]
        assert data["sections"]["notes"][-1]["text"] == "DNS TTL lowered"


def _sse(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    kind, data = "", ""
    for line in lines:
        if line.startswith("event: "):
            kind = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and data:
            yield kind, json.loads(data)
            kind, data = "", ""


def _read_stream(url: str, headers: dict[str, str], until: Any) -> str:
    """The raw stream text until ``until(text)`` holds (or 10 s)."""
    text = ""
    deadline = time.monotonic() + 10
    with httpx.stream("GET", f"{url}/events", headers=headers, timeout=10) as stream:
        for chunk in stream.iter_text():
            text += chunk
            if until(text) or time.monotonic() > deadline:
                break
    return text
