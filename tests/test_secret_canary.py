"""A canary secret passed through ${ENV} never appears in the journal, reports, JSON or logs.

The canary is a real credential: the password of a PostgreSQL role, and a bearer token that a
local HTTP server echoes back in its error body. Probes run through the CLI (in-process), with
debug logging on; then every byte written anywhere is searched for the canary.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from changeover.cli import main


class _EchoAuth(BaseHTTPRequestHandler):
    """Answers 500 with the Authorization header in the body (a careless app's error page)."""

    def do_GET(self) -> None:
        body = f"internal error; request had Authorization: {self.headers.get('Authorization')}"
        self.send_response(500)
        self.send_header("Content-Type", "text/plain")
        self.send_header("X-Debug-Auth", str(self.headers.get("Authorization")))
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def echo_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _EchoAuth)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_canary_secret_never_leaks(
    tmp_path: Path,
    pg_primary: Any,
    echo_server: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    canary = "canary-" + secrets.token_hex(12)
    role = "canary_" + secrets.token_hex(4)
    with psycopg.connect(pg_primary.url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{canary}'")
    good = f"postgresql://{role}:{canary}@127.0.0.1:{pg_primary.port}/postgres"
    closed = f"postgresql://{role}:{canary}@127.0.0.1:1/postgres"
    wrong_user = f"postgresql://nobody_{role}:{canary}@127.0.0.1:{pg_primary.port}/postgres"
    monkeypatch.setenv("CANARY_PG_URL", good)
    monkeypatch.setenv("CANARY_PG_DOWN", closed)
    monkeypatch.setenv("CANARY_PG_BADUSER", wrong_user)
    monkeypatch.setenv("CANARY_TOKEN", canary)

    plan = tmp_path / "changeover.yaml"
    plan.write_text(
        f"""
version: 1
name: canary
cutover_at: 2026-12-01T02:00:00Z
contacts: [{{role: lead, title: Lead}}]
systems:
  pg: {{kind: postgres, url: "${{CANARY_PG_URL}}"}}
  pgdown: {{kind: postgres, url: "${{CANARY_PG_DOWN}}"}}
  pgbad: {{kind: postgres, url: "${{CANARY_PG_BADUSER}}"}}
  api: {{kind: http, url: "{echo_server}", headers: {{Authorization: "Bearer ${{CANARY_TOKEN}}"}}}}
stages:
  - id: pre
    title: Pre
    sections:
      - title: S
        steps:
          - {{id: ok, title: OK, check: {{postgres.connect: {{system: pg, min_version: 10}}}}}}
          - {{id: down, title: Down, check: {{postgres.connect: {{system: pgdown, timeout: 5}}}}}}
          - {{id: baduser, title: Bad user, check: {{postgres.connect: {{system: pgbad}}}}}}
          - {{id: api, title: API, check: {{http: {{system: api, path: /x, body_regex: nothing}}}}}}
          - id: cmd
            title: Command echoing the token
            check:
              command:
                argv: [sh, -c, 'echo "token=$TOKEN"; echo "token=$TOKEN" >&2; exit 3']
                env: {{TOKEN: "${{CANARY_TOKEN}}"}}
          - {{id: sign, title: Sign, manual: {{role: lead}}}}
""",
        encoding="utf-8",
    )
    outputs: list[str] = []

    def run(*args: str) -> int:
        code = main(["-v", *args])
        captured = capsys.readouterr()
        outputs.extend([captured.out, captured.err])
        return code

    assert run("check", "-p", str(plan), "--json") == 1
    assert run("check", "-p", str(plan)) == 1
    assert run("signoff", "sign", "--by", "Ana", "--note", "ok", "-p", str(plan)) == 0
    assert run("status", "-p", str(plan), "--json", "--all") == 0
    assert run("report", "-p", str(plan), "--format", "md", "-o", str(tmp_path / "r.md")) == 0
    assert run("report", "-p", str(plan), "--format", "json", "-o", str(tmp_path / "r.json")) == 0
    assert run("journal", "export", "-p", str(plan), "-o", str(tmp_path / "j.jsonl")) == 0

    # the checks really ran: the good connection passed, the others failed for plain reasons
    joined = "\n".join(outputs)
    assert '"status": "pass"' in joined
    assert "connection refused" in joined.lower() or "refused" in joined.lower()

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name == "journal.db" for p in written)
    for path in written:
        assert canary.encode() not in path.read_bytes(), f"canary leaked into {path}"
    for text in outputs:
        assert canary not in text, "canary leaked into command output or logs"
