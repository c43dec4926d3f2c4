"""Items created per second through the service, on SQLite and PostgreSQL.

Each create is the full path a user's save takes: permission check, JSON Schema and
rule validation, title rendering, identity check, history event and outbox rows, and
its own commit. A raw INSERT of the same rows in the same run is the baseline, so the
ratio says what the service layer costs on this machine.

    python bench/create_items.py [--count N] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from engine import db
from engine.definitions import load_registry
from engine.demo import uln_from
from engine.models import Item
from engine.permissions import Actor
from engine.services import ItemService

LEARNER = {"given_name": "Amelia", "family_name": "Okafor", "date_of_birth": "2004-09-17", "postcode": "M14 5TQ"}


def measure(url: str, count: int, registry) -> tuple[float, float]:
    engine = db.make_engine(url)
    db.upgrade(engine)
    sessions = db.session_factory(engine)
    with sessions() as session:
        service = ItemService(session, Actor.system(), registry)
        learner = service.create("learner", {**LEARNER, "uln": uln_from(900000000)})
        apprenticeship = json.loads(
            (Path(__file__).parent.parent / "examples/data/apprenticeship/valid.json").read_text()
        )
        start = time.perf_counter()
        for _ in range(count):
            service.create("apprenticeship", dict(apprenticeship), subject_id=learner.id)
        service_rate = count / (time.perf_counter() - start)

    rows = [
        {
            "type_key": "apprenticeship",
            "type_version": 1,
            "status": "new",
            "title": "x",
            "description": "",
            "data": apprenticeship,
            "problems": [],
            "problem_count": 0,
            "version": 1,
            "subject_id": learner.id,
        }
        for _ in range(count)
    ]
    start = time.perf_counter()
    with engine.connect() as conn:
        for row in rows:  # one commit per row, as the service does
            conn.execute(insert(Item), row)
            conn.commit()
    raw_rate = count / (time.perf_counter() - start)
    engine.dispose()
    return service_rate, raw_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    registry = load_registry()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        results.append(("SQLite (file, WAL)", *measure(f"sqlite:///{tmp}/bench.db", args.count, registry)))
    name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
        results.append(("PostgreSQL", *measure(url, args.count, registry)))
    except Exception as exc:  # noqa: BLE001 - report and carry on with what could be measured
        print(f"PostgreSQL not measured: {exc}")
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    print(f"Created {args.count} apprenticeship items per database, one transaction each.")
    print(f"{'database':<20} {'service items/s':>16} {'raw INSERT rows/s':>18} {'service/raw':>12}")
    for label, service_rate, raw_rate in results:
        print(f"{label:<20} {service_rate:>16.0f} {raw_rate:>18.0f} {service_rate / raw_rate:>12.2f}")


if __name__ == "__main__":
    main()
