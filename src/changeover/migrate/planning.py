"""``changeover migrate plan``: the SQLite file's schema, its PostgreSQL DDL and the type audit.

One library call for the CLI: introspect the source, apply the per-column cast rules, plan the
DDL, and scan the data for values that do not fit; the result is printable as text or JSON.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from changeover.errors import UsageError
from changeover.migrate.audit import AuditFinding, audit
from changeover.migrate.schema import PgPlan, plan_schema, render_ddl
from changeover.migrate.sqlite import SqliteSchema, introspect


@dataclass(frozen=True)
class MigrationPlan:
    source: SqliteSchema
    plan: PgPlan
    findings: list[AuditFinding]

    @property
    def errors(self) -> list[AuditFinding]:
        return [f for f in self.findings if f.severity == "error"]

    def ddl(self) -> str:
        return render_ddl(self.plan)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": str(self.source.path),
            "tables": [
                {
                    "name": t.name,
                    "columns": [
                        {"name": c.name, "type": c.pg_type, "not_null": c.notnull}
                        for c in t.columns
                    ],
                    "primary_key": list(t.primary_key),
                }
                for t in self.plan.tables
            ],
            "ddl": self.ddl(),
            "warnings": list(self.plan.warnings),
            "findings": [
                {
                    "table": f.table,
                    "column": f.column,
                    "kind": f.kind,
                    "count": f.count,
                    "severity": f.severity,
                    "examples": [list(k) for k in f.examples],
                    "suggestion": f.suggestion,
                }
                for f in self.findings
            ],
        }


def sqlite_path(source: str) -> Path:
    """``sqlite:///abs/path.db``, ``sqlite:rel.db`` or a plain path."""
    if source.startswith("sqlite:"):
        source = source.removeprefix("sqlite:").removeprefix("//")
    if not source:
        raise UsageError("--source needs a SQLite file, e.g. sqlite:///srv/app/app.db")
    return Path(source).expanduser()


def from_plan_file(
    plan_file: Path, *, with_target: bool = False
) -> tuple[str, dict[str, str], str | None]:
    """The plan's migration: SQLite source (relative to the plan), cast rules, target URL.

    The target URL (the target system's, a secret reference) is resolved only when asked for,
    at this moment; ``migrate plan`` never needs it.
    """
    from changeover.plan.load import load_plan
    from changeover.plan.secretref import resolve_ref
    from changeover.plan.systems import PostgresSystem

    loaded = load_plan(plan_file)
    migration = loaded.plan.migrate
    if migration is None:
        raise UsageError(f"{plan_file} has no migrate: section; give --source sqlite:///app.db")
    path = sqlite_path(migration.source)
    source = str(path if path.is_absolute() else loaded.base_dir / path)
    if not with_target:
        return source, dict(migration.casts), None
    system = loaded.plan.systems[migration.target]
    assert isinstance(system, PostgresSystem)  # the plan validated the target's kind
    target = resolve_ref(system.url, base=loaded.base_dir, what=f"systems.{migration.target}.url")
    return source, dict(migration.casts), target


def make_plan(source: str, casts: Mapping[str, str] | None = None) -> MigrationPlan:
    schema = introspect(sqlite_path(source))
    plan = plan_schema(schema, casts or {})
    return MigrationPlan(schema, plan, audit(schema.path, schema, plan))
