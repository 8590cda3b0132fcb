"""The plan's cleanup steps, as the controller runs them (``changeover.rollout.actions.run``).

``archive.logs``: journal, reports and logs into a verified tar.gz (``paths``, ``output``).
``archive.sqlite``: the legacy SQLite database (``source``, default the plan's migrate.source)
backed up online, compressed (``compression``: gz or xz) and proven by restoring.
``revoke-write``: the legacy app's write access removed by an argv hook (``command``).
``decommission``: the legacy system's decommission schedule as an .ics file.
Every file goes under ``<plan dir>/.changeover/archive/`` unless ``output`` says otherwise.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from changeover.cleanup.archive import build_archive, verify_archive
from changeover.cleanup.calendar import parse_cutover, parse_steps, render_ics
from changeover.cleanup.sqlite import backup_sqlite

if TYPE_CHECKING:
    from changeover.engine.runbook import Runbook


def _failed(message: str) -> Exception:
    from changeover.rollout.actions import ActionFailed

    return ActionFailed(message)


def output_dir(runbook: Runbook, params: Mapping[str, Any]) -> Path:
    base = runbook.loaded.base_dir
    value = params.get("output")
    if value is None:
        return base / ".changeover" / "archive"
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _stamp() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


def archive_logs(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """The journal (SQLite: online backup; PostgreSQL: its JSON-lines export) and ``paths``
    (reports, log files or folders, relative to the plan) in one archive, verified after."""
    from changeover.journal.sqlite import SqliteJournal

    paths = params.get("paths", [])
    if isinstance(paths, str) or not isinstance(paths, Sequence):
        raise _failed("archive.logs: paths must be a list, e.g. [REPORT.md, logs/]")
    base = runbook.loaded.base_dir
    files = [p if p.is_absolute() else base / p for p in (Path(str(x)).expanduser() for x in paths)]
    journal = runbook.journal
    sqlite: dict[str, Path] = {}
    extra: dict[str, bytes] = {}
    if isinstance(journal, SqliteJournal):
        sqlite["journal/journal.db"] = journal.path
    else:
        text = io.StringIO()
        journal.export(text)
        extra["journal/journal.jsonl"] = text.getvalue().encode("utf-8")
    dest = output_dir(runbook, params) / f"cutover-{_stamp()}.tar.gz"
    archive = build_archive(dest, paths=files, sqlite=sqlite, extra=extra)
    check = verify_archive(dest)
    if not check.ok:
        raise _failed(f"archive.logs: {dest} does not verify: {'; '.join(check.problems[:3])}")
    return {"archive": archive.path, "sha256": archive.sha256, "members": sorted(archive.members)}


def archive_sqlite(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """An online backup of the legacy SQLite database, compressed, checked by restoring."""
    from changeover.migrate.planning import sqlite_path

    value = params.get("source")
    if value is None:
        if runbook.plan.migrate is None:
            raise _failed(
                "archive.sqlite: name the database, e.g. {archive.sqlite: {source: app.db}} "
                "(the plan has no migrate.source to default to)"
            )
        value = runbook.plan.migrate.source
    source = sqlite_path(str(value))
    source = source if source.is_absolute() else runbook.loaded.base_dir / source
    compression = str(params.get("compression", "gz"))
    return backup_sqlite(source, output_dir(runbook, params), compression=compression).to_json()


def revoke_write(params: Mapping[str, Any]) -> dict[str, Any]:
    """Run the ``command`` argv that removes the legacy app's write access (a hook the team
    provides: revoke a grant, chmod the file, switch a flag); journaled by the controller."""
    from changeover.rollout.actions import _argv, _run_argv

    command = params.get("command")
    if not command:
        raise _failed(
            "revoke-write: give the command that removes the legacy app's write access, "
            "e.g. {revoke-write: {system: legacy, command: [app-ctl, revoke-writes]}}"
        )
    argv = _argv(command, "revoke-write: command", "[app-ctl, revoke-writes]")
    _run_argv(argv, "revoke-write hook", timeout=60)
    return {"hook": argv[0], "exit": 0, "system": params.get("system")}


def decommission(runbook: Runbook, params: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``decommission-<system>.ics``: the steps dated from ``cutover`` (default: the
    plan's ``cutover_at``)."""
    system = str(params.get("system", "legacy"))
    now = datetime.now(UTC)
    cutover = parse_cutover(params.get("cutover"), runbook.plan.cutover_at)
    steps = parse_steps(params.get("steps"), system)
    text = render_ics(steps, cutover=cutover, now=now, uid_seed=f"{runbook.plan.name}\0{system}")
    folder = output_dir(runbook, params)
    path = folder / f"decommission-{system}.ics"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    except OSError as exc:
        raise _failed(f"decommission: cannot write {path}: {exc.strerror or exc}") from exc
    return {
        "calendar": str(path),
        "cutover": cutover.isoformat(),
        "events": [
            {"title": s.title, "date": (cutover + s.after).date().isoformat()} for s in steps
        ],
    }
