"""Writing a batch of validated new items in a few statements instead of several per item.

Only :class:`~engine.services.imports.ImportService` calls this, with items that
:meth:`ItemService._new_item <engine.services.items.ItemService>` has validated and that
need nothing beyond a plain create (no assignee, a title of their own). Each item gets
exactly what :meth:`ItemService.create` writes for such an item: the row, a ``created``
event holding its data, and an ``item_event`` outbox row, all in the caller's transaction.
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import JSON, Table, inspect, text
from sqlalchemy.orm import Session

from engine.models import Event, Item, Outbox, utcnow
from engine.permissions import Actor


class BatchRefused(Exception):
    """The database refused a row of the batch (a duplicate saved meanwhile, say); the
    transaction is to be rolled back and the rows saved one by one."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.orig = message


def item_values(item: Item) -> dict:
    """The columns the item service set on a new, validated (transient) item: data, title,
    identity, warnings, due date and whatever derived column a feature adds; plain values,
    so they can travel between processes."""
    names = {c.key for c in Item.__table__.columns} - set(_FIXED)
    return {key: value for key, value in inspect(item).dict.items() if key in names}


def insert_new_items(session: Session, actor: Actor, items: list[dict]) -> tuple[list[int], list[int]]:
    """Insert the validated items (:func:`item_values` of each), their ``created`` events and
    outbox rows; return the new item ids (in the order given) and the outbox row ids. Nothing
    is committed here; an error leaves the transaction for the caller to roll back."""
    if not items:
        return [], []
    now = utcnow()
    rows = _item_rows(items, actor, now)
    ids = _insert_with_ids(session, Item.__table__, rows)
    insert_rows(
        session,
        Event.__table__,
        [
            {
                "item_id": item_id,
                "kind": "created",
                "actor_id": actor.user_id,
                "at": now,
                "payload": {"data": item["data"]},
            }
            for item_id, item in zip(ids, items, strict=True)
        ],
    )
    outbox_ids = _insert_with_ids(
        session, Outbox.__table__, [_outbox_row(i, item, actor, now) for i, item in zip(ids, items, strict=True)]
    )
    return ids, outbox_ids


#: what a plain create sets whatever the item says (ItemService.create and the ORM do the same)
_FIXED = ("id", "assignee_id", "created_by_id", "updated_by_id", "created_at", "updated_at", "version")


def _item_rows(items: list[dict], actor: Actor, now: datetime) -> list[dict]:
    """The rows to insert: every column the service set on the validated item, the others
    at their defaults, and who and when."""
    table = Item.__table__
    names = {c.key for c in table.columns} - set(_FIXED)
    defaults = {c.key: _default(c) for c in table.columns if c.key in names}
    fixed = {
        "assignee_id": None,
        "created_by_id": actor.user_id,
        "updated_by_id": actor.user_id,
        "created_at": now,
        "updated_at": now,
        "version": 1,
    }
    rows = []
    for values in items:
        row = {key: values.get(key, default) for key, default in defaults.items()}
        row.update(fixed)
        rows.append(row)
    return rows


def _default(column) -> object:
    default = column.default
    if default is None:
        return None
    if default.is_callable:
        return default.arg(None)
    return default.arg


def _outbox_row(item_id: int, item: dict, actor: Actor, now: datetime) -> dict:
    return {
        "kind": "item_event",
        "item_id": item_id,
        "idempotency_key": f"event:{uuid.uuid4().hex}",
        "status": "pending",
        "attempts": 0,
        "created_at": now,
        "available_at": now,
        "payload": {"event": "created", "item_id": item_id, "type": item["type_key"], "actor": actor.username},
    }


def _insert_with_ids(session: Session, table: Table, rows: list[dict]) -> list[int]:
    """Insert ``rows`` and return their new ids in the rows' order, the fastest way each
    database allows."""
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # ids drawn from the table's sequence first, then COPY: a multi-row INSERT ... RETURNING
        # is several times slower on PostgreSQL
        ids = list(
            connection.execute(
                text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) FROM generate_series(1, :n)"),
                {"table": table.name, "n": len(rows)},
            ).scalars()
        )
        insert_rows(session, table, [{**row, "id": i} for row, i in zip(rows, ids, strict=True)])
        return ids
    # SQLite gives each row of one INSERT the next rowid, one writer at a time, so the new ids
    # in ascending order are the rows' order (keeping the order otherwise means a row at a time)
    ids = sorted(connection.execute(table.insert().returning(table.c.id), rows).scalars())
    if len(ids) != len(rows):
        raise RuntimeError(f"{len(rows)} rows were inserted into {table.name} but {len(ids)} ids came back")
    return ids


def insert_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """Insert ``rows`` (all with the same keys): COPY on PostgreSQL through psycopg 3,
    executemany elsewhere."""
    dialect = session.connection().dialect
    if dialect.name == "postgresql" and dialect.driver == "psycopg":
        copy_rows(session, table, rows)
    else:
        session.connection().execute(table.insert(), rows)


def copy_rows(session: Session, table: Table, rows: list[dict]) -> None:
    """PostgreSQL's COPY into ``table`` inside the session's transaction: the same rows an
    INSERT would write (column defaults aside: every column is given), several times faster."""
    if not rows:
        return
    import psycopg
    from psycopg.types.json import Jsonb

    names = list(rows[0])
    is_json = [isinstance(table.c[name].type, JSON) for name in names]
    columns = ", ".join(f'"{name}"' for name in names)
    driver = session.connection().connection.driver_connection
    try:
        with driver.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({columns}) FROM STDIN') as copy:
            for row in rows:
                copy.write_row(
                    [Jsonb(row[n]) if j and row[n] is not None else row[n] for n, j in zip(names, is_json, strict=True)]
                )
    except psycopg.Error as exc:  # the driver's own error: SQLAlchemy did not run this statement
        raise BatchRefused(f"{exc.__class__.__name__}: {exc}") from exc
