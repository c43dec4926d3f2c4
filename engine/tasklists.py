"""Task lists: named filters from ``type.yaml`` compiled to one SQL query each.

A task list never loads items into Python to count them: its filter becomes a WHERE
clause over the items table (status, assignee, and JSON fields of ``data`` through the
database's own JSON operators), so the same definition counts the same rows on SQLite
and PostgreSQL.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Callable
from datetime import date
from functools import cached_property
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Float,
    String,
    and_,
    cast,
    false,
    func,
    literal_column,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ClauseElement, Executable

from engine import permissions
from engine.definitions.model import Condition, Registry, TaskList, TrackerType
from engine.documents import missing_clause
from engine.errors import NotFound
from engine.models import Item
from engine.permissions import Actor
from engine.sandbox import relative_date
from engine.validation import schema_at

#: the key of the built-in "<Type> with problems to fix" list; a definition's own list with
#: this key replaces it
PROBLEMS_KEY = "problems"
#: items (PostgreSQL's estimate) from which the summary's lists are counted by parallel
#: workers: on the 2-core development machine starting them costs about 15 ms, which
#: counting in parallel wins back from a few hundred thousand items
PARALLEL_FROM_ITEMS = 250_000
#: summaries a PostgreSQL connection keeps prepared (one per user and day it served)
PREPARED_PER_CONNECTION = 32


def problems_list(tracker_type: TrackerType) -> TaskList | None:
    """The built-in list of a type's items with stored warnings (``problem_count > 0``), for
    a type that has at least one warning rule; None for the others."""
    if not any(rule.severity == "warning" for rule in tracker_type.rules):
        return None
    if any(tasklist.key == PROBLEMS_KEY for tasklist in tracker_type.tasklists):
        return None
    return TaskList(PROBLEMS_KEY, f"{tracker_type.name} with problems to fix")


def is_problems_list(tracker_type: TrackerType, tasklist: TaskList) -> bool:
    return tasklist.key == PROBLEMS_KEY and tasklist not in tracker_type.tasklists


def all_tasklists(tracker_type: TrackerType) -> list[TaskList]:
    """The type's task lists: those of its definition, then the built-in problems list."""
    built_in = problems_list(tracker_type)
    return [*tracker_type.tasklists, *([built_in] if built_in else [])]


class TaskListService:
    """Counts and lists of the task lists an actor may see.

    Args:
        session: a SQLAlchemy session (read only).
        actor: whose lists: role membership picks the lists, ``assignee: me`` means them,
            and ``own``-scoped roles count only their own items.
        registry: the loaded definitions.
        today: returns today's date for relative dates such as ``today+30d``.
    """

    def __init__(
        self,
        session: Session,
        actor: Actor,
        registry: Registry,
        *,
        today: Callable[[], date] = date.today,
        cache_filters: bool = True,
    ) -> None:
        self.session = session
        self.actor = actor
        self.registry = registry
        self.today = today
        #: False for a draft being edited (the type editor's live count): compiled, never kept
        self.cache_filters = cache_filters

    @cached_property
    def date_columns(self) -> frozenset[str]:
        """The generated date columns present (PostgreSQL); until ``tracker db indexes`` has
        made one, its condition falls back to the JSON expression: slower, same answer."""
        if self.session.get_bind().dialect.name != "postgresql":
            return frozenset()
        query = text(  # the catalogue itself: information_schema's views cost a millisecond or two
            "SELECT attname FROM pg_attribute WHERE attrelid = 'items'::regclass "
            "AND attname LIKE 'tlf\\_%' AND NOT attisdropped"
        )
        return frozenset(self.session.execute(query).scalars())

    def visible(self) -> list[tuple[TrackerType, TaskList]]:
        """The (type, task list) pairs the actor sees, in definition order."""
        pairs = []
        for tracker_type in self.registry.types.values():
            if not permissions.allows(self.actor, "items.view", tracker_type):
                continue
            for tasklist in all_tasklists(tracker_type):
                if self.actor.is_admin or not tasklist.roles or self.actor.role_keys & set(tasklist.roles):
                    pairs.append((tracker_type, tasklist))
        return pairs

    def summary(self) -> list[dict[str, Any]]:
        """``[{key, label, type, type_name, count}]`` for every visible task list.

        Each list is still its own COUNT over its own index, but they travel together in
        one statement: one round trip for the whole page.
        """
        pairs = self._kept("visible", self.visible)
        if not pairs:
            return []
        if self.session.get_bind().dialect.name == "postgresql":
            counts = self._counts_on_postgresql(pairs)
        else:
            statement = self._kept("scalar", lambda: self._summary_statement(pairs, "scalar"))
            counts = list(self.session.execute(statement).one())
        return [
            {"key": tl.key, "label": tl.label, "type": t.key, "type_name": t.name, "count": counts[i]}
            for i, (t, tl) in enumerate(pairs)
        ]

    def _kept(self, what: str, build: Callable[[], Any]) -> Any:
        """``build()``, kept with the definitions for this actor, day and database.

        Building the summary's statement (dozens of filters) costs about as much as a
        database counts in ten milliseconds, and it is the same all day for the same actor.
        """
        if not self.cache_filters:
            return build()
        key = ("tasklists", what, self.actor, self.today(), self.date_columns, self.session.get_bind().dialect.name)
        memo = self.registry.memo
        if key not in memo:
            if len(memo) > 1000:  # yesterday's and departed users' statements
                memo.clear()
            memo[key] = build()
        return memo[key]

    def _summary_statement(self, pairs: list[tuple[TrackerType, TaskList]], shape: str) -> Executable:
        """The one statement counting ``pairs``: ``scalar`` (a row of scalar subqueries) or
        ``union``/``parallel`` (rows of list number and count). The two union shapes are the
        same query under different labels, so that each is prepared, and its plan kept,
        apart: a plan's use of parallel workers is fixed when it is made."""
        wheres = [self.where(t, tl) for t, tl in pairs]
        if shape == "scalar":
            return select(*(select(func.count()).select_from(Item).where(w).scalar_subquery() for w in wheres))
        return union_all(
            *(
                select(literal_column(str(i)).label(f"{shape}_list"), func.count().label("n"))
                .select_from(Item)
                .where(w)
                for i, w in enumerate(wheres)
            )
        )

    def _counts_on_postgresql(self, pairs: list[tuple[TrackerType, TaskList]]) -> list[int]:
        """The counts from a ``UNION ALL`` of COUNTs, run as a statement this connection
        has prepared on the server.

        Planning dozens of branches against dozens of partial indexes costs more than
        counting (about 30 ms), and psycopg's own prepared statements do not outlive a
        rollback, which ends every request; a server-side ``PREPARE`` does, so each
        connection plans the summary once per user and day (dates and ids are written into
        it, so the plan is made for them).

        Over a large table the plan shares the branches out among PostgreSQL's parallel
        workers (a Parallel Append: each list counted whole by one process), so the page
        waits for the busiest process rather than for every list in turn; below
        :data:`PARALLEL_FROM_ITEMS` starting the workers costs more than it saves. Each branch
        is cheap by the planner's reckoning, so the parallel costs are waived while it plans.
        """
        size = text("SELECT reltuples >= :rows FROM pg_class WHERE oid = 'items'::regclass")
        parallel = bool(self.session.execute(size, {"rows": PARALLEL_FROM_ITEMS}).scalar())
        shape = "parallel" if parallel else "union"
        dialect = self.session.get_bind().dialect
        sql = self._kept(shape, lambda: literal_sql(self._summary_statement(pairs, shape), dialect))
        name = "tracker_summary_" + hashlib.sha1(sql.encode()).hexdigest()[:24]
        connection = self.session.connection()
        prepared: OrderedDict[str, None] = connection.info.setdefault("tracker_prepared", OrderedDict())
        planning = name not in prepared  # a prepared statement is planned at its first EXECUTE
        if planning:
            connection.exec_driver_sql(f"PREPARE {name} AS {sql}")
            prepared[name] = None
            while len(prepared) > PREPARED_PER_CONNECTION:
                connection.exec_driver_sql(f"DEALLOCATE {prepared.popitem(last=False)[0]}")
        else:
            prepared.move_to_end(name)
        if not (planning and parallel):
            return _counts(connection.exec_driver_sql(f"EXECUTE {name}").all(), len(pairs))
        connection.exec_driver_sql(
            "SELECT set_config('parallel_setup_cost', '0', true), set_config('parallel_tuple_cost', '0', true)"
        )
        try:
            rows = connection.exec_driver_sql(f"EXECUTE {name}").all()
        finally:
            connection.exec_driver_sql(
                "SELECT set_config(name, reset_val, true) FROM pg_settings "
                "WHERE name IN ('parallel_setup_cost', 'parallel_tuple_cost')"
            )
        return _counts(rows, len(pairs))

    def find(self, type_key: str, key: str) -> tuple[TrackerType, TaskList]:
        """The task list ``key`` of type ``type_key`` if the actor may see it, else NotFound."""
        for tracker_type, tasklist in self.visible():
            if tracker_type.key == type_key and tasklist.key == key:
                return tracker_type, tasklist
        raise NotFound(f"There is no task list '{type_key}/{key}' for you.", "Pick one from the home page.")

    def count(self, tracker_type: TrackerType, tasklist: TaskList) -> int:
        stmt = select(func.count()).select_from(Item).where(self.where(tracker_type, tasklist))
        return self.session.scalar(stmt) or 0

    def items(self, type_key: str, key: str, *, limit: int = 50, offset: int = 0) -> tuple[list[Item], int]:
        """A page of the items in the list, soonest due first, and how many there are in all."""
        tracker_type, tasklist = self.find(type_key, key)
        where = self.where(tracker_type, tasklist)
        total = self.session.scalar(select(func.count()).select_from(Item).where(where)) or 0
        stmt = (
            select(Item)
            .where(where)
            .order_by(Item.due_date.is_(None), Item.due_date, Item.id)
            .limit(limit)
            .offset(offset)
        )
        return list(self.session.scalars(stmt)), total

    def where(self, tracker_type: TrackerType, tasklist: TaskList) -> ColumnElement[bool]:
        """The whole filter of ``tasklist`` as one SQL clause: its static part (see
        :func:`static_filter`) plus what depends on the day and the actor."""
        dialect = self.session.get_bind().dialect.name
        clauses = [
            text(static_filter(self.registry, tracker_type, tasklist, dialect, cache=self.cache_filters)),
            permissions.visible_clause(self.actor, tracker_type),
        ]
        if tasklist.assignee == "me":
            clauses.append(Item.assignee_id == self.actor.user_id)
        for cond in tasklist.conditions:
            if _is_relative(cond):
                day = relative_date(str(cond.value), self.today()).isoformat()
                column = generated_column(cond.field)
                field = date_key(cond.field, dialect) if column in self.date_columns else json_text(cond.field, dialect)
                clauses.append(field < day if cond.op == "before" else field > day)
        if tasklist.documents_missing:
            # a subquery cannot be part of an index predicate, so it stays out of static_filter:
            # the list's index narrows the rows, the documents index finds the complete ones
            clauses.append(missing_clause(tasklist.documents_missing, dialect))
        return and_(*clauses)


def _counts(rows, size: int) -> list[int]:
    """``[(list number, count)]`` rows as counts in list order (a list with no row counts 0)."""
    counts = [0] * size
    for index, n in rows:
        counts[index] = n
    return counts


def literal_sql(clause: ClauseElement, dialect) -> str:
    """A statement or expression as SQL with its values written in."""
    return str(clause.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _is_relative(cond: Condition) -> bool:
    return cond.op in ("before", "after") and str(cond.value).strip().startswith("today")


def relative_fields(tasklist: TaskList) -> list[str]:
    """Fields compared with a date relative to today: they change meaning every day, so
    they are the key of the list's index rather than part of its predicate."""
    return list(dict.fromkeys(c.field for c in tasklist.conditions if _is_relative(c)))


#: compiled static filters, ``{(id(type), repr(list), dialect): (type, sql)}``; the type is
#: kept to check the id still names the same object
_STATIC: dict[tuple[int, str, str], tuple[TrackerType, str]] = {}


def static_filter(
    registry: Registry, tracker_type: TrackerType, tasklist: TaskList, dialect: str, *, cache: bool = True
) -> str:
    """The part of a list's filter that is the same for everyone on every day, as SQL
    with its values written in: type, states, ``assignee: none`` and field conditions
    with fixed values.

    :mod:`engine.indexes` makes exactly this text the predicate of a partial index, so
    counting a list reads only the index entries of the items in it.
    """
    cached = _STATIC.get((id(tracker_type), repr(tasklist), dialect)) if cache else None
    if cached is not None and cached[0] is tracker_type:
        return cached[1]
    workflow = registry.workflow_for(tracker_type)
    clauses = [Item.type_key == tracker_type.key]
    if is_problems_list(tracker_type, tasklist):
        clauses.append(Item.problem_count > 0)
    if tasklist.statuses or tasklist.status_categories:
        states = list(dict.fromkeys([*tasklist.statuses, *workflow.states_in(tasklist.status_categories)]))
        clauses.append(Item.status.in_(states))
    if tasklist.assignee == "none":
        clauses.append(Item.assignee_id.is_(None))
    clauses += [_condition(tracker_type, c, dialect) for c in tasklist.conditions if not _is_relative(c)]
    dialect_impl = postgresql.dialect() if dialect == "postgresql" else sqlite.dialect()
    sql = literal_sql(and_(*clauses), dialect_impl)
    if cache:
        _STATIC[(id(tracker_type), repr(tasklist), dialect)] = (tracker_type, sql)
    return sql


def _condition(tracker_type: TrackerType, cond: Condition, dialect: str) -> ColumnElement[bool]:
    text_value = json_text(cond.field, dialect)
    kind = (schema_at(tracker_type.schema, cond.field) or {}).get("type")
    op, value = cond.op, cond.value
    if op == "empty":
        return or_(text_value.is_(None), text_value == "")
    if op == "not_empty":
        return and_(text_value.is_not(None), text_value != "")
    if op in ("before", "after"):  # a fixed ISO date
        return text_value < str(value) if op == "before" else text_value > str(value)
    typed, convert = _typed(text_value, kind, value, dialect)
    if op == "in":
        values = [convert(v) for v in value or ()]
        return typed.in_(values) if values else false()
    literal = convert(value)
    comparisons = {
        "eq": lambda: typed == literal,
        "ne": lambda: or_(text_value.is_(None), typed != literal),
        "lt": lambda: typed < literal,
        "lte": lambda: typed <= literal,
        "gt": lambda: typed > literal,
        "gte": lambda: typed >= literal,
    }
    return comparisons[op]()


def generated_column(field: str) -> str:
    """The name of the stored generated column that copies ``data.field`` on PostgreSQL."""
    return "tlf_" + "".join(c if c.isalnum() or c == "_" else "__" for c in field.lower())[:55]


def date_key(field: str, dialect: str) -> ColumnElement:
    """What a relative-date condition compares and its list's index is keyed on.

    On PostgreSQL it is a stored generated column (see :mod:`engine.indexes`): an index
    on an expression over ``data`` cannot answer a count by itself (an index-only scan),
    an index on a plain column can. SQLite's planner uses the expression index directly.
    """
    if dialect == "postgresql":
        return literal_column(f"items.{generated_column(field)}", String)
    return json_text(field, dialect)


def json_text(field: str, dialect: str) -> ColumnElement:
    """``data.a.b`` as text, with the path written into the SQL as a constant.

    A constant path (not a bound parameter) is what lets the planner match the
    expression indexes that :mod:`engine.indexes` creates from this same function.
    """
    parts = field.split(".")
    if dialect == "postgresql":
        path = "{" + ",".join(p.replace('"', "") for p in parts) + "}"
        return Item.data.op("#>>")(literal_column(_quote(path), String))
    return func.json_extract(Item.data, literal_column(_quote("$." + ".".join(f'"{p}"' for p in parts)), String))


def _quote(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _typed(text: ColumnElement, kind: str | None, value: Any, dialect: str):
    """The JSON value cast to what it is compared with (booleans, numbers or text), and the
    conversion for the literal it is compared against."""
    sample = value[0] if isinstance(value, list) and value else value
    if isinstance(sample, bool) or kind == "boolean":
        if dialect == "postgresql":  # ->> gives 'true' / 'false'
            return text, lambda v: "true" if v else "false"
        return text, lambda v: 1 if v else 0  # json_extract gives 1 / 0
    if isinstance(sample, int | float) or kind in ("integer", "number"):
        return cast(text, Float), float
    return text, str
