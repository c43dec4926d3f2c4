"""Task-list counts over a large caseload: a manager's whole summary page, p50 and p95.

Bulk-loads N items (default 1,000,000) across the built-in types straight into the
items table (SQLite: one executemany transaction; PostgreSQL: COPY), with dates,
flags and choices spread at random so every list matches something. Then it times
``TaskListService.summary()`` for a manager (every list their roles see) and, in the
same run, a hand-written indexed ``SELECT COUNT(*)`` for one list as the baseline.

    python bench/tasklists.py [--items N] [--runs R] [--only sqlite|postgresql]
    python bench/tasklists.py --only postgresql --keep     # leaves the loaded database behind
    python bench/tasklists.py --measure URL                # times a database loaded before
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
import uuid
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from engine import db, indexes
from engine.definitions import load_registry
from engine.models import RoleGrant, User
from engine.permissions import Actor
from engine.tasklists import TaskListService
from engine.validation import choices

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"
TODAY = date.today()
COLUMNS = (
    "type_key",
    "type_version",
    "status",
    "title",
    "description",
    "assignee_id",
    "due_date",
    "data",
    "problems",
    "problem_count",
    "created_at",
    "updated_at",
    "version",
)


def spread(type_key: str, schema: dict, base: dict, rng: random.Random) -> dict:
    """The type's valid example with dates, flags and choices drawn at random and some
    optional fields left out, so that every kind of task-list condition matches some rows."""
    data = dict(base)
    required = set(schema.get("required") or ())
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if name not in required and rng.random() < 0.25:
            data.pop(name, None)
            continue
        if prop.get("format") == "date":
            data[name] = (TODAY + timedelta(days=rng.randint(-400, 400))).isoformat()
        elif prop.get("type") == "boolean":
            data[name] = rng.random() < 0.7
        elif (options := choices(prop)) and name in data:
            data[name] = rng.choice(options)[0]
    return data


def rows(count: int, registry, user_ids: list[int], rng: random.Random):
    kinds = [t for t in registry.types.values() if (EXAMPLES / t.key / "valid.json").exists()]
    weights = [0.5 if t.kind == "subject" else 1.0 for t in kinds]
    bases = {t.key: json.loads((EXAMPLES / t.key / "valid.json").read_text()) for t in kinds}
    states = {t.key: [s.key for s in registry.workflow_for(t).states] for t in kinds}
    now = datetime.now().isoformat(sep=" ")
    for n in range(count):
        t = rng.choices(kinds, weights)[0]
        data = spread(t.key, t.schema, bases[t.key], rng)
        due = data.get(t.due_date) if t.due_date else None
        yield (
            t.key,
            t.version,
            rng.choice(states[t.key]),
            f"{t.name} #{n}",
            "",
            rng.choice(user_ids) if rng.random() < 0.8 else None,
            due,
            json.dumps(data),
            "[]",
            0,
            now,
            now,
            1,
        )


def make_users(engine, count: int = 40) -> list[int]:
    from sqlalchemy.orm import Session

    with Session(engine) as session:
        users = []
        for i in range(count):
            role = ["assessor", "quality", "tracker_creator", "manager"][i % 4]
            user = User(username=f"bench{i}", display_name=f"Bench {i}")
            user.grants = [RoleGrant(role=role)]
            session.add(user)
            users.append(user)
        session.commit()
        return [u.id for u in users]


def load_sqlite(url: str, count: int, registry, rng) -> float:
    engine = db.make_engine(url)
    db.upgrade(engine)
    user_ids = make_users(engine)
    start = time.perf_counter()
    raw = engine.raw_connection()
    cur = raw.cursor()
    cur.execute("PRAGMA synchronous=OFF")
    placeholders = ", ".join("?" for _ in COLUMNS)
    batch = []
    for row in rows(count, registry, user_ids, rng):
        batch.append(row)
        if len(batch) == 50_000:
            cur.executemany(f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({placeholders})", batch)
            batch.clear()
    if batch:
        cur.executemany(f"INSERT INTO items ({', '.join(COLUMNS)}) VALUES ({placeholders})", batch)
    raw.commit()
    raw.close()
    indexes.sync(engine, registry)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - start


def load_postgresql(url: str, count: int, registry, rng) -> float:
    engine = db.make_engine(url)
    db.upgrade(engine)
    user_ids = make_users(engine)
    start = time.perf_counter()
    raw = engine.raw_connection()
    with raw.cursor() as cur, cur.copy(f"COPY items ({', '.join(COLUMNS)}) FROM STDIN") as copy:
        for row in rows(count, registry, user_ids, rng):
            copy.write_row(row)
    raw.commit()
    raw.close()
    indexes.sync(engine, registry)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM ANALYZE items"))
    engine.dispose()
    return time.perf_counter() - start


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95


def measure(url: str, registry, runs: int) -> dict:
    engine = db.make_engine(url)
    sessions = db.session_factory(engine)
    with sessions() as session:
        manager = session.scalar(text("SELECT id FROM users WHERE username = 'bench3'"))
        user = session.get(User, manager)
        actor = Actor.for_user(user, registry)
        service = TaskListService(session, actor, registry)
        lists = service.summary()  # warm-up, and the number of lists
        summary = []
        for _ in range(runs):
            start = time.perf_counter()
            service.summary()
            summary.append(time.perf_counter() - start)
        states = ", ".join(f"'{s}'" for s in registry.workflow_for(registry.type("apprenticeship")).states_in(["open"]))
        baseline_sql = text(
            "SELECT COUNT(*) FROM items WHERE type_key = 'apprenticeship' "
            f"AND status IN ({states}) AND due_date > :today AND due_date < :until"
        )
        params = {"today": TODAY, "until": TODAY + timedelta(days=30)}
        session.execute(baseline_sql, params)
        baseline = []
        for _ in range(runs):
            start = time.perf_counter()
            session.execute(baseline_sql, params).scalar()
            baseline.append(time.perf_counter() - start)
        total = session.execute(text("SELECT COUNT(*) FROM items")).scalar()
    engine.dispose()
    return {"lists": len(lists), "items": total, "summary": percentiles(summary), "baseline": percentiles(baseline)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--only", choices=["sqlite", "postgresql", "none"])
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--keep", action="store_true", help="keep the PostgreSQL database and print its URL")
    parser.add_argument("--measure", metavar="URL", help="only time the summary on a database loaded before")
    args = parser.parse_args()
    registry = load_registry()
    results = []
    if args.measure:
        results.append(("existing", 0.0, measure(args.measure, registry, args.runs)))
        args.only = "none"
    if args.only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/bench.db"
            loaded = load_sqlite(url, args.items, registry, random.Random(1))
            results.append(("SQLite", loaded, measure(url, registry, args.runs)))
    if args.only in (None, "postgresql"):
        name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
            loaded = load_postgresql(url, args.items, registry, random.Random(1))
            results.append(("PostgreSQL", loaded, measure(url, registry, args.runs)))
        finally:
            if args.keep:
                print(f"kept: {url}")
            else:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    print(
        f"{'database':<11} {'items':>9} {'load s':>7} {'lists':>5} {'summary p50 ms':>15} {'p95 ms':>8} "
        f"{'1 list raw p50 ms':>18} {'p95 ms':>8} {'per-list/raw':>12}"
    )
    for label, loaded, r in results:
        (s50, s95), (b50, b95) = r["summary"], r["baseline"]
        per_list = s50 / r["lists"]
        print(
            f"{label:<11} {r['items']:>9} {loaded:>7.0f} {r['lists']:>5} {s50 * 1000:>15.1f} {s95 * 1000:>8.1f} "
            f"{b50 * 1000:>18.2f} {b95 * 1000:>8.2f} {per_list / b50:>12.1f}"
        )


if __name__ == "__main__":
    main()
