"""Indexes derived from the definitions, so task-list counts stay index-backed.

The fixed columns (type, status, assignee, due date, identity) are indexed by the
migrations. Fields inside ``data`` that task lists filter on get expression indexes,
partial per tracker type: ``(data->>'field', status) WHERE type_key = 'x'``. Their SQL is
compiled from the very expressions :mod:`engine.tasklists` queries with, so the
database's planner matches them on SQLite and PostgreSQL alike.

``sync`` is idempotent: it creates what is missing and drops derived indexes that no
definition needs any more. It runs after migrations (``tracker db upgrade``) and can be
run on its own when definitions change (``tracker db indexes``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

from engine.definitions.model import Registry
from engine.tasklists import json_text
from engine.validation import schema_at

log = logging.getLogger(__name__)

PREFIX = "ix_tl_"


@dataclass(frozen=True)
class DerivedIndex:
    name: str
    type_key: str
    field: str
    sql: str


def wanted(registry: Registry, dialect) -> list[DerivedIndex]:
    """One index per (type, data field) used by a task-list condition."""
    found: dict[str, DerivedIndex] = {}
    for tracker_type in registry.types.values():
        fields = sorted({c.field for tl in tracker_type.tasklists for c in tl.conditions})
        for field in fields:
            kind = (schema_at(tracker_type.schema, field) or {}).get("type")
            if kind in ("array", "object"):
                continue
            expression = _compiled(json_text(field, dialect.name), dialect)
            digest = hashlib.sha1(f"{tracker_type.key}.{field}".encode()).hexdigest()[:10]
            name = f"{PREFIX}{tracker_type.key[:20]}_{digest}"
            type_literal = tracker_type.key.replace("'", "''")
            sql = (
                f"CREATE INDEX IF NOT EXISTS {name} ON items (({expression}), status) WHERE type_key = '{type_literal}'"
            )
            found[name] = DerivedIndex(name, tracker_type.key, field, sql)
    return list(found.values())


def _compiled(expression, dialect) -> str:
    sql = str(expression.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    return sql.replace("items.data", "data")


def existing_names(engine: Engine) -> set[str]:
    """Index names on the items table, read from the catalogue (reflection skips expression
    indexes)."""
    query = (
        "SELECT indexname FROM pg_indexes WHERE tablename = 'items'"
        if engine.dialect.name == "postgresql"
        else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'"
    )
    with engine.connect() as conn:
        return set(conn.execute(text(query)).scalars())


def sync(engine: Engine, registry: Registry) -> tuple[list[str], list[str]]:
    """Create the derived indexes that are missing and drop those no longer wanted.

    Returns ``(created, dropped)`` index names.
    """
    indexes = wanted(registry, engine.dialect)
    existing = existing_names(engine)
    names = {i.name for i in indexes}
    created = [i.name for i in indexes if i.name not in existing]
    dropped = sorted(n for n in existing if n.startswith(PREFIX) and n not in names)
    with engine.begin() as conn:
        for index in indexes:
            if index.name in created:
                log.info("creating index %s for %s.%s", index.name, index.type_key, index.field)
                conn.execute(text(index.sql))
        for name in dropped:
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    return created, dropped
