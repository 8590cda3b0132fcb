"""``changeover advise``: advice from the plan's real PostgreSQL and Redis as text or JSON, exit 0;
an unreachable database, a missing log or bad options are plain errors with their exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import psycopg
import pytest
import redis

from changeover.cli import main

PLAN = """
version: 1
name: advise test
cutover_at: 2026-12-01T02:00:00Z
contacts: [{role: lead, title: Deployment Lead}]
systems:
  postgres: {kind: postgres, url: "${PG_URL}"}
  cache: {kind: redis, url: "${REDIS_URL}"}
stages:
  - id: post
    title: Post
    window: {opens: 0h, due: 72h}
    sections:
      - title: Optimization
        steps:
          - {id: i, title: Indexes, action: {advise: {topic: indexes}}}
"""


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def plan(tmp_path: Path, pg_url: str, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PG_URL", pg_url)
    monkeypatch.setenv("REDIS_URL", redis_url)
    path = tmp_path / "changeover.yaml"
    path.write_text(PLAN, encoding="utf-8")
    return path


@pytest.mark.timeout(90)
def test_json_advice_covers_postgres_pool_redis_and_logs(
    plan: Path, pg_url: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
        conn.execute("CREATE INDEX t_v_idx ON t (v)")
    client = redis.Redis.from_url(redis_url)
    client.set("session:1", "x", ex=900)
    client.set("config", "x")
    client.close()
    log = tmp_path / "app.log"
    log.write_text("ERROR db timeout 31\nok\nERROR db timeout 32\n", encoding="utf-8")

    code, out, err = run(
        capsys, "advise", "--plan", str(plan), "--json", "--log", str(log),
        "--sample-seconds", "0", "--rps", "100", "--latency-ms", "80", "--instances", "2",
    )  # fmt: skip

    assert code == 0, err
    data = json.loads(out)
    assert [i["index"] for i in data["postgres"]["unused_indexes"]] == ["public.t_v_idx"]
    assert data["pool"]["littles_law"] == 8.0 and data["pool"]["instances"] == 2
    assert data["redis"]["keys_sampled"] == 2 and data["redis"]["ttl_buckets"]["no TTL"] == 1
    assert data["logs"][0]["top"][0] == {
        "message": "ERROR db timeout <n>",
        "count": 2,
        "example": "ERROR db timeout 31",
    }


@pytest.mark.timeout(90)
def test_text_advice_shows_the_pool_formula(plan: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "advise", "--plan", str(plan), "--sample-seconds", "0")

    assert code == 0, err
    assert "PostgreSQL (database test_" in out
    assert "indexes: no table read mostly by sequential scans, no unused index" in out
    assert "Pool size: a pool of 2 per instance" in out
    assert "pool per instance = ceil(max(0, 0.0) × 1.5 / 1) = 2" in out
    assert "Redis (0 keys sampled" in out


@pytest.mark.timeout(60)
def test_an_unreachable_database_is_a_plain_error_exit_3(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_URL", "postgresql://changeover:pw-not-shown@127.0.0.1:1/app")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    plan = tmp_path / "changeover.yaml"
    plan.write_text(PLAN, encoding="utf-8")

    code, out, err = run(capsys, "advise", "--plan", str(plan), "--sample-seconds", "0")

    assert code == 3
    assert "cannot connect to PostgreSQL at 127.0.0.1:1" in err
    assert "Traceback" not in err + out and "pw-not-shown" not in err + out


def test_bad_options_and_a_missing_log_exit_2(
    plan: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "advise", "--plan", str(plan), "--rps", "10")
    assert code == 2 and "--rps and --latency-ms go together" in err

    code, _, err = run(capsys, "advise", "--plan", str(plan), "--postgres", "cache")
    assert code == 2 and "system 'cache' is a redis, not postgres" in err

    missing = tmp_path / "nope.log"
    code, _, err = run(
        capsys, "advise", "--plan", str(plan), "--log", str(missing), "--sample-seconds", "0"
    )
    assert code == 2 and f"cannot read the log file {missing}" in err
    assert "Traceback" not in err
