"""Forward capture in the SQLite file: triggers record the key of every changed row in a changelog.

Each migrated table gets three small triggers (AFTER INSERT, UPDATE, DELETE) that insert the
row's key — and, when an UPDATE changes the key, the old key too — into ``_changeover_changelog``
with a sequence number and the time. They store keys only: the applier reads the *current* row
when it applies, so replaying any entry twice is harmless (convergent and idempotent).
Installing switches the file to WAL journaling (readers then never block the app's writers) and
remembers the previous mode; ``remove_capture`` takes out everything changeover added and puts
the journal mode back. Installing is idempotent; changing the plan's tables reinstalls.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from changeover.errors import UsageError
from changeover.migrate.schema import ROWID_COLUMN, PgPlan, PgTable
from changeover.migrate.sqlite import quote_ident

CHANGELOG = "_changeover_changelog"
META = "_changeover_meta"
TRIGGER_PREFIX = "_changeover_"
# Seconds since the epoch with millisecond resolution; julianday('now') is fixed per statement.
_NOW = "(julianday('now') - 2440587.5) * 86400.0"


@dataclass(frozen=True)
class CaptureState:
    installed: bool
    tables: tuple[str, ...]
    key_width: int
    head: int  # the last changelog sequence number written (0 when none)


def source_key(table: PgTable) -> tuple[str, ...]:
    """The SQLite expressions that identify a row of ``table``: its key columns, or ``rowid``."""
    return tuple("rowid" if name == ROWID_COLUMN else name for name in table.primary_key)


def connect_writable(path: str | Path) -> sqlite3.Connection:
    """Open the legacy database to install or remove capture; waits up to 10 s for app locks."""
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"SQLite database {str(file)!r} does not exist or is not a file")
    try:
        conn = sqlite3.connect(file, timeout=10.0, isolation_level=None)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise UsageError(f"cannot open SQLite database {str(file)!r} for writing: {exc}") from exc
    return conn


def trigger_sql(table: PgTable, key_width: int) -> list[str]:
    """The three capture triggers of one table (pure; the key is padded to ``key_width``)."""
    key = source_key(table)
    slots = ", ".join(f"k{i}" for i in range(key_width))
    name = quote_ident(table.source)
    literal = "'" + table.source.replace("'", "''") + "'"

    def values(row: str) -> str:
        parts = [f"{row}.{quote_ident(k) if k != 'rowid' else 'rowid'}" for k in key]
        parts += ["NULL"] * (key_width - len(key))
        return ", ".join(parts)

    def insert(row: str) -> str:
        return (
            f"INSERT INTO {CHANGELOG} (tbl, {slots}, at) VALUES ({literal}, {values(row)}, {_NOW});"
        )

    changed = " OR ".join(
        f"OLD.{quote_ident(k) if k != 'rowid' else 'rowid'} IS NOT "
        f"NEW.{quote_ident(k) if k != 'rowid' else 'rowid'}"
        for k in key
    )
    prefix = TRIGGER_PREFIX + table.source
    return [
        f"CREATE TRIGGER {quote_ident(prefix + '_ins')} AFTER INSERT ON {name} "
        f"BEGIN {insert('NEW')} END",
        f"CREATE TRIGGER {quote_ident(prefix + '_del')} AFTER DELETE ON {name} "
        f"BEGIN {insert('OLD')} END",
        f"CREATE TRIGGER {quote_ident(prefix + '_upd')} AFTER UPDATE ON {name} "
        f"BEGIN {insert('NEW')} "
        f"INSERT INTO {CHANGELOG} (tbl, {slots}, at) SELECT {literal}, {values('OLD')}, {_NOW} "
        f"WHERE {changed}; END",
    ]


def install_capture(path: str | Path, plan: PgPlan) -> CaptureState:
    """Create the changelog and every table's triggers in one transaction (idempotent)."""
    key_width = max((len(t.primary_key) for t in plan.tables), default=1)
    conn = connect_writable(path)
    try:
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        switched = mode.lower() == "wal" or (
            conn.execute("PRAGMA journal_mode=WAL").fetchone()[0].lower() == "wal"
        )
        if not switched:
            raise UsageError(f"{path}: cannot switch to WAL journaling (capture needs it)")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META} (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute(f"INSERT OR IGNORE INTO {META} VALUES ('journal_mode', ?)", (mode,))
        conn.execute(f"INSERT OR IGNORE INTO {META} VALUES ('installed_at', ?)", (time.time(),))
        width = _column_count(conn, CHANGELOG) - 3  # seq, tbl, at
        if width not in (-3, key_width):  # the plan's widest key changed: rebuild the changelog
            pending = conn.execute(f"SELECT count(*) FROM {CHANGELOG}").fetchone()[0]
            if pending:
                raise UsageError(
                    f"{path}: the changelog holds {pending} entries of an older capture with a "
                    "different key shape; apply them (migrate sync --once) or run migrate unsync"
                )
            conn.execute(f"DROP TABLE {CHANGELOG}")
        slots = ", ".join(f"k{i}" for i in range(key_width))
        # No declared types on k*: the keys keep their SQLite storage class exactly.
        conn.execute(
            f"CREATE TABLE IF NOT EXISTS {CHANGELOG} "
            f"(seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, {slots}, at REAL NOT NULL)"
        )
        for name in our_triggers(conn):
            conn.execute(f"DROP TRIGGER {quote_ident(name)}")
        for table in plan.tables:
            for statement in trigger_sql(table, key_width):
                conn.execute(statement)
        conn.execute(
            f"INSERT OR REPLACE INTO {META} VALUES ('tables', ?)",
            ("\n".join(t.source for t in plan.tables),),
        )
        conn.execute("COMMIT")
        return read_state(conn)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise UsageError(f"{path}: installing change capture failed: {exc}") from exc
    finally:
        conn.close()


def remove_capture(path: str | Path) -> list[str]:
    """Drop changeover's triggers, changelog and meta table; restore the journal mode.

    Returns what was removed. Entries not yet applied are lost with the changelog: the caller
    checks the lag first (``migrate unsync`` refuses unless forced).
    """
    conn = connect_writable(path)
    removed: list[str] = []
    try:
        previous = None
        if _column_count(conn, META):
            row = conn.execute(f"SELECT value FROM {META} WHERE key = 'journal_mode'").fetchone()
            previous = row[0] if row else None
        conn.execute("BEGIN IMMEDIATE")
        for name in our_triggers(conn):
            conn.execute(f"DROP TRIGGER {quote_ident(name)}")
            removed.append(f"trigger {name}")
        for table in (CHANGELOG, META):
            if _column_count(conn, table):
                conn.execute(f"DROP TABLE {table}")
                removed.append(f"table {table}")
        conn.execute("COMMIT")
        if previous and previous.lower() != "wal":
            try:
                conn.execute(f"PRAGMA journal_mode={previous}")
                removed.append(f"journal mode WAL (back to {previous})")
            except sqlite3.OperationalError:
                # Switching needs the file to itself; WAL is harmless for the app.
                removed.append(
                    f"nothing else: journal mode stays WAL (was {previous}) while the database "
                    "is open elsewhere; run unsync again with the app stopped to switch back"
                )
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise UsageError(f"{path}: removing change capture failed: {exc}") from exc
    finally:
        conn.close()
    return removed


def remove_triggers(path: str | Path) -> int:
    """Stop capturing (the write handoff, once the changelog is applied): drop the triggers only.

    The changelog and its sequence stay, so positions keep increasing if capture comes back.
    """
    conn = connect_writable(path)
    try:
        conn.execute("BEGIN IMMEDIATE")
        names = our_triggers(conn)
        for name in names:
            conn.execute(f"DROP TRIGGER {quote_ident(name)}")
        conn.execute("COMMIT")
        return len(names)
    except sqlite3.Error as exc:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise UsageError(f"{path}: removing the capture triggers failed: {exc}") from exc
    finally:
        conn.close()


def read_state(conn: sqlite3.Connection) -> CaptureState:
    """What capture is installed in an open database (read-only use is fine)."""
    width = _column_count(conn, CHANGELOG)
    if not width:
        return CaptureState(False, (), 0, 0)
    row = conn.execute(f"SELECT value FROM {META} WHERE key = 'tables'").fetchone()
    tables = tuple(row[0].split("\n")) if row and row[0] else ()
    return CaptureState(
        installed=bool(our_triggers(conn)),
        tables=tables,
        key_width=width - 3,
        head=changelog_head(conn),
    )


def changelog_head(conn: sqlite3.Connection) -> int:
    """The highest sequence number ever written (AUTOINCREMENT never reuses one)."""
    row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (CHANGELOG,)).fetchone()
    return int(row[0]) if row else 0


def our_triggers(conn: sqlite3.Connection) -> list[str]:
    return [
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'trigger' AND substr(name, 1, ?) = ?",
            (len(TRIGGER_PREFIX), TRIGGER_PREFIX),
        )
    ]


def _column_count(conn: sqlite3.Connection, table: str) -> int:
    return len(conn.execute(f"PRAGMA table_info({quote_ident(table)})").fetchall())


def changed_keys(
    conn: sqlite3.Connection, plan: PgPlan, after: int, upto: int
) -> dict[str, list[tuple[object, ...]]]:
    """The distinct keys changed by entries ``after < seq <= upto``, per table (raw SQLite values).

    ``conn`` should read text as ``RawText`` so the keys match what the verifier reads.
    """
    widths = {t.source: (t.name, len(t.primary_key)) for t in plan.tables}
    keys: dict[str, dict[tuple[object, ...], None]] = {}
    for entry in conn.execute(
        f"SELECT * FROM {CHANGELOG} WHERE seq > ? AND seq <= ? ORDER BY seq", (after, upto)
    ):
        source = entry[1].decode() if isinstance(entry[1], bytes) else str(entry[1])
        if source not in widths:
            continue
        name, width = widths[source]
        keys.setdefault(name, {})[tuple(entry[2 : 2 + width])] = None
    return {name: list(found) for name, found in keys.items()}
