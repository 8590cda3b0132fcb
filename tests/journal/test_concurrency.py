"""Several changeover processes appending at once never corrupt or fork the chain."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

from changeover.journal import open_journal

from .conftest import Store

WORKERS = 4
APPENDS = 200


def append_many(spec: str, plan_dir: str, worker: int, start: Any) -> None:
    """One OS process: open the journal, then append as fast as it can."""
    start.wait(timeout=60)  # everyone opens (and maybe creates) the journal at once...
    journal = open_journal(spec, Path(plan_dir))
    start.wait(timeout=60)  # ...and then appends at once
    for n in range(APPENDS):
        journal.append("note", {"worker": worker, "n": n}, actor=f"worker-{worker}")
    journal.close()


def test_concurrent_processes_append_one_gapless_verified_chain(store: Store) -> None:
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(WORKERS)
    workers = [
        context.Process(target=append_many, args=(store.spec, str(store.plan_dir), n, start))
        for n in range(WORKERS)
    ]
    for process in workers:
        process.start()
    try:
        for process in workers:
            process.join(timeout=120)
    finally:
        for process in workers:
            if process.is_alive():
                process.terminate()
                process.join(5)
    assert [process.exitcode for process in workers] == [0] * WORKERS

    journal = store.open()
    events = list(journal.events())
    assert [event.seq for event in events] == list(range(1, WORKERS * APPENDS + 1))
    result = journal.verify()
    assert (result.ok, result.count, result.head_hash) == (True, WORKERS * APPENDS, events[-1].hash)
    for worker in range(WORKERS):
        mine = [event.payload["n"] for event in events if event.actor == f"worker-{worker}"]
        assert mine == list(range(APPENDS))  # nothing lost, nothing duplicated, in its order
