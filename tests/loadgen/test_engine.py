"""The engine against a real server: rate held, latency from the scheduled time, every request
accounted for (answered, failed with a reason, late, missed), writes recorded."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from changeover.loadgen.engine import run_load
from changeover.loadgen.mix import Mix, Request, parse_mix, single
from changeover.loadgen.result import LoadResult, Progress, judge
from changeover.loadgen.schedule import Schedule
from changeover.loadgen.target import TargetUnreachable, parse_target
from loadgen.stub import run_stub
from support.process import free_port

pytestmark = pytest.mark.integration

# A machine shared with other test processes can leave this one without a core for tens of
# milliseconds now and then; a healthy run has no or a few late sends, a broken scheduler
# hundreds (and a single connection behind a 300 ms stall ~150).
FEW = 50


def _load(
    url: str,
    rate: float,
    seconds: float,
    mix: Mix | None = None,
    *,
    connections: int = 256,
    record: Path | None = None,
) -> LoadResult:
    target = parse_target(url)
    schedule = Schedule(rate, seconds)
    mix = mix or single(target.path)
    return asyncio.run(run_load(target, schedule, mix, connections=connections, record=record))


def test_holds_500_requests_per_second_within_2_percent() -> None:
    with run_stub() as stub:
        result = _load(stub.url + "/", 500, 2)
    tally = result.tally
    assert result.achieved_rate == pytest.approx(500, rel=0.02)
    assert tally.scheduled == tally.sent == tally.answered == 1000
    assert tally.missed == 0 and tally.errors == 0
    assert tally.late <= FEW
    assert result.window == pytest.approx(2.0, abs=0.05)  # from the start to the last answer


def test_a_stall_shows_in_max_latency_although_other_connections_were_free() -> None:
    with run_stub(stall_at=200, stall_ms=300) as stub:
        result = _load(stub.url + "/", 500, 2)
    latency = result.latency_ms()
    assert latency["max"] is not None and latency["max"] >= 300
    assert latency["p50"] is not None and latency["p50"] < 50  # the rest went on other connections
    assert result.tally.answered == 1000 and result.tally.late <= FEW


def test_with_one_connection_requests_queued_behind_a_stall_carry_their_wait() -> None:
    """Coordinated omission would record one slow answer; from the scheduled time, every
    request due during the stall waited, so p99 is close to the stall and they are late."""
    with run_stub(stall_at=200, stall_ms=300) as stub:
        result = _load(stub.url + "/", 500, 2, connections=1)
    latency = result.latency_ms()
    assert latency["p99"] is not None and latency["p99"] >= 250
    assert latency["max"] is not None and latency["max"] >= 300
    assert result.tally.connections == 1
    assert result.tally.late >= 100  # ~150 requests fell due during the 300 ms
    assert result.tally.late_at_cap >= 100  # and waited for the one connection allowed
    assert result.tally.answered == 1000 and result.tally.missed == 0
    verdict = judge(result, [])
    assert not verdict.passed and "sent more than 10 ms after" in verdict.reasons[0]


def test_chunked_head_close_and_5xx_answers_are_all_read() -> None:
    mix = Mix(
        (
            Request("GET", "/chunked"),
            Request("HEAD", "/anything"),
            Request("GET", "/close"),
            Request("GET", "/fail"),
            Request("GET", "/"),
        ),
        source="test",
    )
    with run_stub() as stub:
        result = _load(stub.url, 250, 1, mix)
    tally = result.tally
    assert tally.answered == tally.sent == 250
    assert not tally.failures
    assert set(tally.statuses) == {200, 500}
    fails = mix.sequence(seed=0)[:250].count(3)  # which request went out as i is fixed
    assert tally.errors == tally.statuses[500] == fails
    closes = mix.sequence(seed=0)[:250].count(2)
    assert tally.connections >= closes  # every /close answer ended its connection


def test_record_lists_every_write_with_its_status_and_answer(tmp_path: Path) -> None:
    mix = parse_mix(
        """
        - {method: POST, path: /orders, body: {n: "{i}"}, weight: 1}
        - {method: POST, path: /big, weight: 1}
        - {method: GET, path: /, weight: 2}
        """,
        "mix.yaml",
    )
    record = tmp_path / "writes.jsonl"
    with run_stub() as stub:
        result = _load(stub.url, 200, 1, mix, record=record)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    orders = [e for e in lines if e["path"] == "/orders"]
    sent = mix.sequence(seed=0)[: result.tally.sent]
    assert len(lines) == sent.count(0) + sent.count(1)  # the writes, not the reads
    assert len(orders) == sent.count(0)
    for entry in orders:
        assert entry["method"] == "POST" and entry["status"] == 201 and entry["error"] is None
        answer = json.loads(entry["body"])
        assert json.loads(answer["got"]) == {"n": str(entry["n"])}  # {i} became the number
    assert sorted(json.loads(e["body"])["id"] for e in orders) == list(range(1, len(orders) + 1))
    big = [e for e in lines if e["path"] == "/big"]
    assert all(len(e["body"]) == 2048 and e["body_truncated"] for e in big)


def test_stop_ends_the_sending_early_and_progress_arrives_every_second() -> None:
    seen: list[Progress] = []

    async def main(url: str) -> LoadResult:
        stop = asyncio.Event()

        def progress(p: Progress) -> None:
            seen.append(p)
            if len(seen) == 2:
                stop.set()

        target = parse_target(url)
        return await run_load(
            target, Schedule(200, 30), single("/"), stop=stop, progress_to=progress
        )

    with run_stub() as stub:
        began = time.monotonic()
        result = asyncio.run(main(stub.url))
    assert time.monotonic() - began < 5
    assert result.interrupted
    assert 350 <= result.tally.scheduled <= 500  # ~2.1 s of a 30 s schedule
    assert result.tally.sent == result.tally.scheduled and result.tally.missed == 0
    assert [p.rate for p in seen] == [pytest.approx(200, rel=0.1)] * 2
    assert all(p.latency_ms["p50"] is not None for p in seen)


def test_an_unreachable_target_fails_at_once_and_sends_nothing() -> None:
    began = time.monotonic()
    with pytest.raises(TargetUnreachable, match=r"connection refused.*Nothing was sent"):
        _load(f"http://127.0.0.1:{free_port()}/", 100, 5)
    assert time.monotonic() - began < 2


def test_a_server_that_goes_away_shows_as_errors_with_reasons_not_silence() -> None:
    async def main(url: str, stop_server: Callable[[], None]) -> LoadResult:
        target = parse_target(url)
        asyncio.get_running_loop().call_later(0.5, stop_server)
        return await run_load(target, Schedule(200, 1.5), single("/"), timeout=1.0)

    with run_stub() as stub:
        result = asyncio.run(main(stub.url, stub.stop))
    tally = result.tally
    assert tally.scheduled == tally.sent == 300 and tally.missed == 0
    assert 50 <= tally.answered <= 150
    assert tally.answered + sum(tally.failures.values()) == tally.sent
    assert any(reason.startswith("connect: connection refused") for reason in tally.failures)
    assert tally.errors == tally.sent - tally.answered
