"""The SQLite side of the migration: read a database file's schema into plain frozen dataclasses.

The file is always opened read-only (``mode=ro`` URI), so planning never changes it. Contract:
- internal tables (``sqlite_*``) and changeover's own (``_changeover_*``) are skipped;
- every table has a *key*: its declared primary key (composite allowed), or, for a rowid table
  with no declared primary key, SQLite's ``rowid`` (``Table.key_columns == ("rowid",)``);
- ``rowid_alias`` names a plain ``INTEGER PRIMARY KEY`` column (an alias of the rowid);
  ``autoincrement`` is true when that column is declared ``AUTOINCREMENT`` (then
  ``sqlite_sequence`` holds the high-water mark, in ``sequence``);
- defaults and partial-index ``WHERE`` clauses are kept as SQLite expression text, untranslated.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from changeover.errors import UsageError

INTERNAL_PREFIXES = ("sqlite_", "_changeover_")

# table_xinfo "hidden": 0 normal, 1 hidden (virtual tables), 2 generated VIRTUAL, 3 generated STORED
GENERATED_HIDDEN = (2, 3)


@dataclass(frozen=True)
class Column:
    """One column as declared; ``default`` is SQLite expression text (``None`` when absent)."""

    name: str
    declared_type: str
    notnull: bool
    default: str | None
    pk_position: int  # 1-based position in the primary key, 0 when not part of it
    hidden: int = 0

    @property
    def generated(self) -> bool:
        return self.hidden in GENERATED_HIDDEN


@dataclass(frozen=True)
class Index:
    """An index; ``columns`` holds ``None`` where a key part is an expression (see ``keys_sql``)."""

    name: str
    table: str
    unique: bool
    columns: tuple[str | None, ...]
    origin: str  # "c" CREATE INDEX, "u" UNIQUE constraint, "pk" PRIMARY KEY
    where: str | None  # partial index condition, SQLite expression text
    keys_sql: str | None  # the text between the parentheses of CREATE INDEX, when known

    @property
    def has_expressions(self) -> bool:
        return any(column is None for column in self.columns)


@dataclass(frozen=True)
class ForeignKey:
    """A foreign key; empty ``ref_columns`` means "the referenced table's primary key"."""

    table: str
    columns: tuple[str, ...]
    ref_table: str
    ref_columns: tuple[str, ...]
    on_update: str
    on_delete: str


@dataclass(frozen=True)
class Table:
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]  # declared primary key, in key order; empty when none
    without_rowid: bool
    rowid_alias: str | None
    autoincrement: bool
    sequence: int | None  # sqlite_sequence value for AUTOINCREMENT tables that have one
    indexes: tuple[Index, ...]
    foreign_keys: tuple[ForeignKey, ...]
    sql: str

    @property
    def key_columns(self) -> tuple[str, ...]:
        """The columns that identify a row: the primary key, else the rowid."""
        return self.primary_key or ("rowid",)

    def column(self, name: str) -> Column:
        for column in self.columns:
            if column.name == name:
                return column
        raise KeyError(name)


@dataclass(frozen=True)
class SqliteSchema:
    path: str
    tables: tuple[Table, ...]
    # Tables not migrated, with the reason: virtual tables (FTS, R*Tree) and their shadow tables.
    skipped: tuple[tuple[str, str], ...] = ()

    def table(self, name: str) -> Table:
        for table in self.tables:
            if table.name == name:
                return table
        raise KeyError(name)


def connect_readonly(path: str | Path, *, any_thread: bool = False) -> sqlite3.Connection:
    """Open ``path`` read-only; a missing, locked or non-SQLite file is a ``UsageError``.

    ``any_thread``: the connection may be used from another thread (never two at once).
    """
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"SQLite database {str(file)!r} does not exist or is not a file")
    uri = file.resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0, check_same_thread=not any_thread)
        # A non-database file opens fine; the first read is what fails.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.Error as exc:
        raise UsageError(_plain_error(file, exc)) from exc
    return conn


def _plain_error(file: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "not a database" in text or "malformed" in text:
        return f"{str(file)!r} is not a SQLite database (or is damaged): {text}"
    if "locked" in text or "busy" in text:
        return f"SQLite database {str(file)!r} is locked by another process; try again: {text}"
    return f"cannot read SQLite database {str(file)!r}: {text}"


def introspect(path: str | Path) -> SqliteSchema:
    """Read every user table of the database at ``path``."""
    conn = connect_readonly(path)
    try:
        return SqliteSchema(
            path=str(path), tables=tuple(read_tables(conn)), skipped=tuple(skipped_tables(conn))
        )
    except sqlite3.Error as exc:
        raise UsageError(_plain_error(Path(path), exc)) from exc
    finally:
        conn.close()


def read_tables(conn: sqlite3.Connection) -> list[Table]:
    """Every ordinary user table (see ``skipped_tables`` for the others), by name."""
    rows = conn.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' ORDER BY name"
    ).fetchall()
    sequences = _sequences(conn)
    skipped = {name for name, _reason in skipped_tables(conn)}
    return [
        _read_table(conn, name, sql or "", sequences)
        for name, sql in rows
        if not name.startswith(INTERNAL_PREFIXES) and name not in skipped
    ]


def skipped_tables(conn: sqlite3.Connection) -> list[tuple[str, str]]:
    """Virtual tables and their shadow tables: their data lives in a module, not in rows."""
    skipped = []
    for _schema, name, kind, *_rest in conn.execute("PRAGMA main.table_list"):
        if kind == "virtual":
            skipped.append((name, "virtual table (FTS, R*Tree, …): recreate it by hand"))
        elif kind == "shadow":
            skipped.append((name, "shadow table of a virtual table"))
    return sorted(skipped)


def _sequences(conn: sqlite3.Connection) -> dict[str, int]:
    exists = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sqlite_sequence'"
    ).fetchone()
    if not exists:
        return {}
    return {name: int(seq) for name, seq in conn.execute("SELECT name, seq FROM sqlite_sequence")}


def quote_ident(name: str) -> str:
    """Quote an identifier for SQLite (and PostgreSQL: the rule is the same)."""
    return '"' + name.replace('"', '""') + '"'


_WITHOUT_ROWID = re.compile(r"\)\s*(?:STRICT\s*,\s*)?WITHOUT\s+ROWID\b", re.IGNORECASE)
_AUTOINCREMENT = re.compile(r"\bAUTOINCREMENT\b", re.IGNORECASE)


def _read_table(conn: sqlite3.Connection, name: str, sql: str, sequences: dict[str, int]) -> Table:
    q = quote_ident(name)
    columns = tuple(
        Column(
            name=col_name,
            declared_type=col_type or "",
            notnull=bool(notnull),
            default=default,
            pk_position=int(pk),
            hidden=int(hidden),
        )
        for _cid, col_name, col_type, notnull, default, pk, hidden in conn.execute(
            f"PRAGMA table_xinfo({q})"
        )
        if hidden != 1
    )
    primary_key = tuple(
        c.name for c in sorted(columns, key=lambda c: c.pk_position) if c.pk_position
    )
    without_rowid = bool(_WITHOUT_ROWID.search(sql))
    rowid_alias = None
    # Only a single-column key declared exactly INTEGER aliases the rowid (not INT, not BIGINT).
    if not without_rowid and len(primary_key) == 1:
        pk_column = next(c for c in columns if c.name == primary_key[0])
        if pk_column.declared_type.strip().upper() == "INTEGER":
            rowid_alias = pk_column.name
    autoincrement = rowid_alias is not None and bool(_AUTOINCREMENT.search(sql))
    return Table(
        name=name,
        columns=columns,
        primary_key=primary_key,
        without_rowid=without_rowid,
        rowid_alias=rowid_alias,
        autoincrement=autoincrement,
        sequence=sequences.get(name) if autoincrement else None,
        indexes=tuple(_read_indexes(conn, name)),
        foreign_keys=tuple(_read_foreign_keys(conn, name)),
        sql=sql,
    )


def _read_indexes(conn: sqlite3.Connection, table: str) -> list[Index]:
    indexes = []
    for _seq, index_name, unique, origin, partial in conn.execute(
        f"PRAGMA index_list({quote_ident(table)})"
    ):
        parts = [
            (seqno, col_name)
            for seqno, _cid, col_name, _desc, _coll, key in conn.execute(
                f"PRAGMA index_xinfo({quote_ident(index_name)})"
            )
            if key
        ]
        row = conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND name = ?", (index_name,)
        ).fetchone()
        sql = row[0] if row else None
        keys_sql, where = split_index_sql(sql) if sql else (None, None)
        indexes.append(
            Index(
                name=index_name,
                table=table,
                unique=bool(unique),
                columns=tuple(col_name for _seqno, col_name in sorted(parts)),
                origin=origin,
                where=where if partial else None,
                keys_sql=keys_sql,
            )
        )
    return sorted(indexes, key=lambda index: index.name)


def split_index_sql(sql: str) -> tuple[str | None, str | None]:
    """Split ``CREATE INDEX … ON t (keys) [WHERE cond]`` into the key text and the condition."""
    # Names before the key list are identifiers: a "(" in them is always inside quotes.
    depth, quote, start = 0, "", -1
    for pos, char in enumerate(sql):
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"`[":
            quote = "]" if char == "[" else char
        elif char == "(":
            if depth == 0 and start < 0:
                start = pos
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                rest = sql[pos + 1 :].strip()
                match = re.match(r"WHERE\b(.*)$", rest, re.IGNORECASE | re.DOTALL)
                return sql[start + 1 : pos].strip(), match.group(1).strip() if match else None
    return None, None


def _read_foreign_keys(conn: sqlite3.Connection, table: str) -> list[ForeignKey]:
    groups: dict[int, list[tuple[int, str, str, str | None, str, str]]] = {}
    for fk_id, seq, ref_table, from_col, to_col, on_update, on_delete, _match in conn.execute(
        f"PRAGMA foreign_key_list({quote_ident(table)})"
    ):
        groups.setdefault(fk_id, []).append(
            (seq, ref_table, from_col, to_col, on_update, on_delete)
        )
    keys = []
    for fk_id in sorted(groups):
        parts = sorted(groups[fk_id])
        _seq, ref_table, _from, _to, on_update, on_delete = parts[0]
        keys.append(
            ForeignKey(
                table=table,
                columns=tuple(p[2] for p in parts),
                ref_table=ref_table,
                ref_columns=tuple(p[3] for p in parts if p[3] is not None),
                on_update=on_update,
                on_delete=on_delete,
            )
        )
    return keys
