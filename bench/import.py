"""Importing 100,000 learners from a CSV file through the import service, on SQLite and PostgreSQL.

The import is the one a clerk starts on the web page or with ``tracker import``: as a user
with the ``items.import`` capability, every row is validated as a save would validate it
(JSON Schema, the type's rules such as the ULN check digit, duplicates by identity), and
each created learner gets its ``created`` event and outbox row in the same transaction.
The dry run (validation only) is timed too. The counts are checked afterwards, so a
figure is never for work that did not happen.

    python bench/import.py [--rows N] [--pg-url URL] [--chunk N]
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import tempfile
import time
import uuid

from sqlalchemy import create_engine, func, select, text

from engine import db, indexes
from engine.definitions import load_registry
from engine.models import Event, Item, Outbox
from engine.permissions import Actor
from engine.services import ItemService, UserService
from engine.services.import_workers import default_workers
from engine.services.imports import ImportService

GIVEN = ["Amelia", "Oliver", "Isla", "Noah", "Ava", "Leo", "Mia", "Arthur", "Ivy", "Muhammad", "Freya", "Jack"]
FAMILY = ["Okafor", "Smith", "Jones", "Patel", "Williams", "Khan", "Brown", "Taylor", "Nowak", "Evans", "Wilson"]
POSTCODES = ["M14 5TQ", "LS1 4AP", "B15 2TT", "SW1A 1AA", "NE1 7RU", "ZZ99 9ZZ", "CF10 3AT", "EH1 1YZ"]


def ulns(count: int) -> list[str]:
    """``count`` distinct ULNs that pass the ESFA check-digit test (ULN_04)."""
    out, n = [], 100_000_000
    while len(out) < count:
        digits = [int(c) for c in str(n)]
        remainder = sum(w * d for w, d in zip(range(10, 1, -1), digits, strict=True)) % 11
        if remainder and 10 - remainder < 10:
            out.append(f"{n}{10 - remainder}")
        n += 1
    return out


def learners_csv(count: int) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["given_name", "family_name", "date_of_birth", "uln", "postcode", "email", "preferred_contact"])
    for i, uln in enumerate(ulns(count)):
        given, family = GIVEN[i % len(GIVEN)], FAMILY[(i // 7) % len(FAMILY)]
        writer.writerow(
            [
                given,
                family,
                f"{1970 + i % 35}-{1 + i % 12:02d}-{1 + i % 28:02d}",
                uln,
                POSTCODES[i % len(POSTCODES)],
                f"{given.lower()}.{family.lower()}{i}@example.org",
                ("email", "phone", "sms", "post")[i % 4],
            ]
        )
    return buffer.getvalue().encode()


def cpu_seconds() -> float:
    """CPU time of this process and of its finished children (the validating workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def measure(url: str, content: bytes, rows: int, registry, chunk: int, workers: int) -> dict[str, float]:
    engine = db.make_engine(url)
    db.upgrade(engine)
    indexes.sync(engine, registry)  # the task-list indexes a real installation has (tracker db upgrade makes them)
    sessions = db.session_factory(engine)
    with sessions() as session:
        user, _password = UserService(session, registry).create("clerk", ["tracker_creator"], password="x" * 16)
        actor = Actor.for_user(user, registry)
        importer = ImportService(ItemService(session, actor, registry), chunk_size=chunk, workers=workers)
        start, cpu_start = time.perf_counter(), cpu_seconds()
        plan = importer.open("learner", "learners.csv", content)
        opened = time.perf_counter()
        report = importer.check(plan)
        checked, cpu_checked = time.perf_counter(), cpu_seconds()
        summary = importer.run(plan)
        done, cpu_done = time.perf_counter(), cpu_seconds()
        assert report.valid == rows and not report.problems, report.problems[:5]
        assert summary.created == rows and not summary.problems, summary.problems[:5]
        counts = [session.scalar(select(func.count()).select_from(m)) for m in (Item, Event, Outbox)]
        assert counts == [rows, rows, rows], counts
    engine.dispose()
    return {
        "read": opened - start,
        "check": checked - opened,
        "import": done - checked,
        "total": (opened - start) + (done - checked),
        "cpu_check": cpu_checked - cpu_start,
        "cpu_import": cpu_done - cpu_checked,
        "load": os.getloadavg()[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--chunk", type=int, default=1000, help="rows validated and written together")
    parser.add_argument("--workers", type=int, default=default_workers(), help="validating processes")
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    registry = load_registry()
    content = learners_csv(args.rows)

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(
            (
                "SQLite (file, WAL)",
                measure(f"sqlite:///{tmp}/bench.db", content, args.rows, registry, args.chunk, args.workers),
            )
        )
    name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
        results.append(("PostgreSQL", measure(url, content, args.rows, registry, args.chunk, args.workers)))
    except Exception as exc:  # noqa: BLE001 - report and carry on with what could be measured
        print(f"PostgreSQL not measured: {exc}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    print(
        f"Imported {args.rows:,} learners from a {len(content) / 1e6:.1f} MB CSV file, {args.chunk} rows a batch, "
        f"validated by {args.workers} process{'' if args.workers == 1 else 'es'} on {os.cpu_count()} cores."
    )
    print("import = read the file + validate and write every row; the dry run validates only.")
    print("cpu s: CPU time of this process and its validating workers (not PostgreSQL's); load: the")
    print("machine's 1-minute load average at the end, as other work slows every figure down.")
    print(
        f"{'database':<20} {'read s':>7} {'dry run s':>10} {'import s':>9} {'import rows/s':>14} "
        f"{'read+import s':>14} {'cpu s (dry/imp)':>16} {'load':>5}"
    )
    for label, r in results:
        rate = args.rows / (r["read"] + r["import"])
        cpu = f"{r['cpu_check']:.0f} / {r['cpu_import']:.0f}"
        print(
            f"{label:<20} {r['read']:>7.1f} {r['check']:>10.1f} {r['import']:>9.1f} {rate:>14,.0f} "
            f"{r['total']:>14.1f} {cpu:>16} {r['load']:>5.1f}"
        )


if __name__ == "__main__":
    main()
