"""Indexes derived from the definitions, so task-list counts stay index-backed.

The fixed columns (type, status, assignee, due date, identity) are indexed by the
migrations. Each task list also gets a partial index whose predicate is the list's
static filter (:func:`engine.tasklists.static_filter`: type, states, fixed field
conditions) and whose key is what changes from day to day or person to person: the
fields compared with relative dates, then the assignee and creator. Counting a list is
then a scan of just its own index entries, on SQLite and PostgreSQL alike, because
the predicate is the very SQL the count query contains.

``sync`` is idempotent: it creates what is missing and drops derived indexes that no
definition needs any more. It runs after migrations (``tracker db upgrade``) and on its
own when definitions change (``tracker db indexes``).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import text
from sqlalchemy.engine import Engine

from engine.definitions.model import Registry, TaskList, TrackerType
from engine.tasklists import (
    all_tasklists,
    date_key,
    generated_column,
    json_text,
    literal_sql,
    relative_fields,
    static_filter,
)

log = logging.getLogger(__name__)

PREFIX = "ix_tl_"


@dataclass(frozen=True)
class DerivedIndex:
    name: str
    type_key: str
    tasklist: str
    sql: str


def wanted(registry: Registry, dialect) -> list[DerivedIndex]:
    """One partial index per task list; lists that differ only in their day window
    ("due in 10/30/60 days") share one."""
    found: dict[str, DerivedIndex] = {}
    for tracker_type in registry.types.values():
        for tasklist in all_tasklists(tracker_type):
            index = index_for(registry, tracker_type, tasklist, dialect)
            found.setdefault(index.name, index)
    return list(found.values())


def index_for(registry: Registry, tracker_type: TrackerType, tasklist: TaskList, dialect) -> DerivedIndex:
    """The partial index that serves ``tasklist``."""
    # index predicates name columns without their table; the planner compares the
    # resolved columns, so the qualified query still matches
    predicate = static_filter(registry, tracker_type, tasklist, dialect.name).replace("items.", "")
    keys = [_compiled(date_key(f, dialect.name), dialect) for f in relative_fields(tasklist)]
    # a relative-date field leads, so "due in the next 10 days" seeks straight to its few
    # entries instead of reading every open item's; without one, type and status lead so
    # that the planner sees the index constrained by the same equality and IN terms as the
    # general (type_key, status) index, and prefers it as the smaller one
    leading = [f"({k})" for k in keys] + ["type_key", "status"]
    # a documents_missing list joins on the item's id: with the id in its index the join
    # needs no visit to the table rows either
    trailing = ["assignee_id", "created_by_id"] + (["id"] if tasklist.documents_missing else [])
    columns = ", ".join([*leading, *trailing])
    # the name follows the definition, so an edited list gets a fresh index
    digest = hashlib.sha1(f"{columns} WHERE {predicate}".encode()).hexdigest()[:10]
    name = f"{PREFIX}{tracker_type.key[:24]}_{digest}"
    sql = f"CREATE INDEX IF NOT EXISTS {name} ON items ({columns}) WHERE {predicate}"
    return DerivedIndex(name, tracker_type.key, tasklist.key, sql)


def _compiled(expression, dialect) -> str:
    """An index expression: SQL with its values written in, column names unqualified."""
    return literal_sql(expression, dialect).replace("items.", "")


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


def wanted_columns(registry: Registry) -> dict[str, str]:
    """PostgreSQL only: ``{column: field}`` for every field a task list compares with a
    relative date."""
    return {
        generated_column(field): field
        for tracker_type in registry.types.values()
        for tasklist in tracker_type.tasklists
        for field in relative_fields(tasklist)
    }


def _sync_columns(engine: Engine, registry: Registry) -> None:
    columns = wanted_columns(registry)
    with engine.begin() as conn:
        existing = set(
            conn.execute(
                text(
                    "SELECT column_name FROM information_schema.columns "
                    "WHERE table_name = 'items' AND column_name LIKE 'tlf\\_%'"
                )
            ).scalars()
        )
        for column, field in columns.items():
            if column not in existing:
                expression = _compiled(json_text(field, "postgresql"), engine.dialect)
                log.info("adding generated column %s for %s", column, field)
                conn.execute(
                    text(f"ALTER TABLE items ADD COLUMN {column} text GENERATED ALWAYS AS ({expression}) STORED")
                )
        for column in sorted(existing - set(columns)):
            conn.execute(text(f"ALTER TABLE items DROP COLUMN {column}"))


def sync(engine: Engine, registry: Registry) -> tuple[list[str], list[str]]:
    """Create the derived indexes that are missing and drop those no longer wanted (and,
    on PostgreSQL, the generated columns the indexes are keyed on).

    Returns ``(created, dropped)`` index names.
    """
    if engine.dialect.name == "postgresql":
        _sync_columns(engine, registry)
    indexes = wanted(registry, engine.dialect)
    existing = existing_names(engine)
    names = {i.name for i in indexes}
    created = [i.name for i in indexes if i.name not in existing]
    dropped = sorted(n for n in existing if n.startswith(PREFIX) and n not in names)
    with engine.begin() as conn:
        for index in indexes:
            if index.name in created:
                log.info("creating index %s for task list %s/%s", index.name, index.type_key, index.tasklist)
                conn.execute(text(index.sql))
        for name in dropped:
            conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
    return created, dropped
