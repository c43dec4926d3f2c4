"""Task lists compile to SQL that counts exactly what the definition says, on both databases."""

from __future__ import annotations

import random
from datetime import date, timedelta

import pytest
from sqlalchemy import func, text

from engine.definitions.model import Condition, TaskList
from engine.errors import NotFound
from engine.models import Item
from engine.permissions import Actor
from engine.sandbox import relative_date
from engine.tasklists import TaskListService
from engine.validation import get_path
from tests.conftest import LEARNER

TODAY = date(2026, 3, 1)


def reference_match(item, tasklist: TaskList, workflow, actor) -> bool:
    """The same filter evaluated in Python, item by item: the oracle for the SQL."""
    states = set(tasklist.statuses) | set(workflow.states_in(tasklist.status_categories))
    if states and item.status not in states:
        return False
    if tasklist.assignee == "me" and item.assignee_id != actor.user_id:
        return False
    if tasklist.assignee == "none" and item.assignee_id is not None:
        return False
    return all(condition_holds(get_path(item.data, c.field), c) for c in tasklist.conditions)


def condition_holds(value, c: Condition) -> bool:
    if c.op == "empty":
        return value in (None, "")
    if c.op == "not_empty":
        return value not in (None, "")
    if c.op in ("before", "after"):
        if value is None:
            return False
        day = relative_date(c.value, TODAY).isoformat()
        return value < day if c.op == "before" else value > day
    if c.op == "ne":
        return value is None or value != c.value
    if value is None:
        return False
    compare = {
        "eq": lambda: value == c.value,
        "in": lambda: value in (c.value or []),
        "lt": lambda: value < c.value,
        "lte": lambda: value <= c.value,
        "gt": lambda: value > c.value,
        "gte": lambda: value >= c.value,
    }
    return compare[c.op]()


@pytest.fixture
def caseload(system, make_user):
    """Thirty concerns with random severities, dates, hours and assignees."""
    rng = random.Random(7)
    lead = make_user("lead", "dsl")
    make_user("mona", "manager")
    learner = system.create("learner", dict(LEARNER))
    for _ in range(30):
        data = {
            "category": rng.choice(["online", "bullying", "neglect"]),
            "reported_on": (TODAY + timedelta(days=rng.randint(-30, 30))).isoformat(),
        }
        if rng.random() < 0.8:
            data["severity"] = rng.choice(["low", "high", "none"])
        if data.get("severity") == "high":
            data["dsl_informed"] = True
        if rng.random() < 0.5:
            data["hours"] = rng.randint(0, 20)
        item = system.create("concern", data, subject_id=learner.id, assignee="lead" if rng.random() < 0.5 else None)
        if rng.random() < 0.3 and data.get("severity") in ("low", "high"):
            system.transition(item.id, "investigating")
    return lead


CONDITIONS = [
    Condition("severity", "eq", "high"),
    Condition("severity", "ne", "high"),
    Condition("severity", "in", ["low", "none"]),
    Condition("severity", "empty"),
    Condition("severity", "not_empty"),
    Condition("hours", "lt", 10),
    Condition("hours", "gte", 10),
    Condition("hours", "gt", 5),
    Condition("hours", "lte", 5),
    Condition("dsl_informed", "eq", True),
    Condition("dsl_informed", "ne", True),
    Condition("reported_on", "before", "today-7d"),
    Condition("reported_on", "after", "today+10d"),
    Condition("reported_on", "before", "2026-03-01"),
]


@pytest.mark.parametrize("assignee", ["any", "me", "none"])
def test_sql_matches_the_definition(session, registry, system, caseload, assignee):
    """Every operator, on one random caseload, against the Python oracle."""
    concern = registry.type("concern")
    workflow = registry.workflow_for(concern)
    service = TaskListService(session, caseload, registry, today=lambda: TODAY)
    items, _ = system.list("concern", limit=1000)
    for condition in CONDITIONS:
        tasklist = TaskList("probe", "Probe", (), (), ("open",), assignee, (condition,))
        expected = sorted(i.id for i in items if reference_match(i, tasklist, workflow, caseload))
        assert service.count(concern, tasklist) == len(expected), condition


def test_summary_respects_roles_and_lists_items(session, registry, caseload, make_user):
    service = TaskListService(session, caseload, registry, today=lambda: TODAY)
    [row] = [r for r in service.summary() if r["type"] == "concern" and r["key"] != "problems"]
    assert row["key"] == "high_open" and row["label"] == "High-severity concerns open"
    items, total = service.items("concern", "high_open")
    assert total == row["count"] and len(items) == total
    assert all(i.assignee_id == caseload.user_id and i.data["severity"] == "high" for i in items)
    clerk = make_user("clara", "tracker_creator")
    clerk_lists = TaskListService(session, clerk, registry).summary()
    assert [r["key"] for r in clerk_lists if r["type"] == "concern"] == ["problems"]  # any viewer sees problems
    with pytest.raises(NotFound):
        TaskListService(session, clerk, registry).items("concern", "high_open")


def test_the_kept_summary_statement_follows_the_day_and_the_user(session, registry, caseload, make_user):
    """The summary's statement is kept per user and day: another day or another user with
    the same roles counts afresh, as a list counted on its own does."""
    other = make_user("lena", "dsl")
    seen = set()
    for actor in (caseload, other, caseload):
        for shift in (0, -25, 40, 0):
            service = TaskListService(session, actor, registry, today=lambda shift=shift: TODAY + timedelta(days=shift))
            [row] = [r for r in service.summary() if r["key"] == "high_open"]
            assert row["count"] == service.count(*service.find("concern", "high_open"))
            seen.add((actor.username, row["count"]))
    assert ("lena", 0) in seen and any(name == "lead" and n > 0 for name, n in seen)
    assert len({n for name, n in seen if name == "lead"}) > 1  # the window moved with the day


@pytest.mark.parametrize("parallel_from", [0, 10**9])
def test_the_summary_counts_what_each_list_counts_in_parallel_or_in_turn(
    session, registry, caseload, monkeypatch, parallel_from
):
    """On PostgreSQL a large table's lists are counted by parallel workers, a small one's in
    turn; either way each count is the list's own, and the settings end with the statement."""
    import engine.tasklists as tasklists

    monkeypatch.setattr(tasklists, "PARALLEL_FROM_ITEMS", parallel_from)
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("ANALYZE items"))  # the table's size is PostgreSQL's estimate
    service = TaskListService(session, Actor.system(), registry, today=lambda: TODAY)
    summary = service.summary()
    assert len(summary) == len(service.visible()) and any(r["count"] for r in summary)
    for row in summary:
        assert row["count"] == service.count(*service.find(row["type"], row["key"])), row
    if session.get_bind().dialect.name == "postgresql":
        assert session.execute(text("SHOW parallel_setup_cost")).scalar() == "1000"
        session.rollback()  # ends every request; the connection keeps the summary prepared
        assert service.summary() == summary
        prepared = text("SELECT count(*) FROM pg_prepared_statements WHERE name LIKE 'tracker_summary_%'")
        assert session.execute(prepared).scalar() == 1


def test_builtin_task_lists_count_on_the_demo_caseload(session, tmp_path):
    from engine import demo
    from engine.definitions import load_registry
    from engine.permissions import Actor

    registry = load_registry()
    demo.load(session, registry, tmp_path)
    summary = TaskListService(session, Actor.system(), registry).summary()
    counts = {(r["type"], r["key"]): r["count"] for r in summary}
    assert len(summary) >= 8
    labels = {r["label"] for r in summary if r["count"]}
    assert any("Signup paperwork incomplete" in label for label in labels)
    assert any("Reviews overdue" in label for label in labels)
    assert sum(counts.values()) > 0


def test_derived_indexes_are_created_and_serve_every_list(engine, registry, session):
    from sqlalchemy import select, text

    from engine import indexes

    created, dropped = indexes.sync(engine, registry)
    assert created and not dropped
    assert indexes.sync(engine, registry) == ([], [])
    assert set(created) <= indexes.existing_names(engine)
    service = TaskListService(session, Actor.system(), registry)
    # The planner picks by statistics; what must hold is that each list's index can serve
    # its query: SQLite refuses INDEXED BY when it cannot, PostgreSQL is left no other index.
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("SET LOCAL enable_seqscan = off"))
            for name in ("ix_items_type_status", "ix_items_type_due", "ix_items_assignee_status"):
                conn.execute(text(f"DROP INDEX {name}"))  # rolled back with the transaction
        for tracker_type, tasklist in service.visible():
            index = indexes.index_for(registry, tracker_type, tasklist, engine.dialect)
            query = select(func.count()).select_from(Item).where(service.where(tracker_type, tasklist))
            sql = str(query.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
            if engine.dialect.name == "sqlite":
                sql = sql.replace("FROM items", f"FROM items INDEXED BY {index.name}", 1)
                plan = " ".join(str(r) for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
            else:
                plan = " ".join(str(r) for r in conn.execute(text("EXPLAIN " + sql)))
            # PostgreSQL may pick another list's index with the same predicate on an empty table
            expected = index.name if engine.dialect.name == "sqlite" else f"ix_tl_{tracker_type.key}"
            assert expected in plan, (tracker_type.key, tasklist.key, plan)
        conn.rollback()
