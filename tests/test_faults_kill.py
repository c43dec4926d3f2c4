"""A process killed in the middle of a transaction (SIGKILL: no rollback, no clean-up, as the
OOM killer or a power cut would), on SQLite and PostgreSQL:

- an import whose second batch is written but not committed: the first batch stays, whole;
  nothing of the second is left (no item without its event or outbox row, no event or
  outbox row without its item); running the import again creates the rest, each once;
- a workflow step that creates another item, killed just before COMMIT: nothing of it is
  left; taking the step again does it once.
"""

from __future__ import annotations

import textwrap
from collections import Counter

from sqlalchemy import func, select

from engine.demo import uln_from
from engine.models import Event, Item, Outbox
from engine.permissions import Actor
from engine.runtime import Runtime
from engine.services.imports import ImportService
from tests.faults import *  # noqa: F403 - fixtures
from tests.faults import Subprocess, fault_env
from tests.notify_helpers import make_settings, people, service

ROWS, CHUNK = 90, 40  # batches of 40, 40 and 10 rows: killed inside the second one

#: runs in the child: pauses (forever) at a chosen point inside a transaction, after saying so
PAUSE = """
import sys, time
def pause(what):
    print(what, flush=True)
    time.sleep(3600)
"""

IMPORT = PAUSE + textwrap.dedent(
    """
    from engine.permissions import Actor
    from engine.runtime import Runtime
    from engine.services import import_bulk
    from engine.services.imports import ImportService

    written = import_bulk.insert_new_items
    batches = []

    def insert_then_pause(session, actor, items):
        result = written(session, actor, items)
        batches.append(len(items))
        if len(batches) == 2:  # the second batch is in the transaction, not committed
            pause(f"batch 2 written: {len(items)} rows")
        return result

    import_bulk.insert_new_items = insert_then_pause
    rt = Runtime()
    with rt.session() as session:
        importer = ImportService(rt.items(session, Actor.system()), chunk_size=int(sys.argv[2]))
        plan = importer.open("learner", "learners.csv", open(sys.argv[1], "rb").read())
        importer.run(plan)
    print("finished", flush=True)
    """
)

STEP = PAUSE + textwrap.dedent(
    """
    from engine import db
    from engine.runtime import Runtime

    def flush_then_pause(session):
        session.flush()  # every row of the step is written in the transaction
        pause("step written")

    db.commit = flush_then_pause
    rt = Runtime()
    with rt.session() as session:
        rt.items(session, rt.actor(session, "alice")).transition(int(sys.argv[1]), "escalated")
    print("finished", flush=True)
    """
)


def _learners_csv(path) -> list[str]:
    ulns = [uln_from(400_000_000 + 1000 * n) for n in range(ROWS)]
    lines = ["given_name,family_name,date_of_birth,uln"]
    lines += [f"Learner,Number {n},2001-02-03,{uln}" for n, uln in enumerate(ulns)]
    path.write_text("\n".join(lines) + "\n")
    return ulns


def _counts(rt: Runtime) -> tuple[int, int, int]:
    with rt.session() as session:
        return tuple(session.scalar(select(func.count()).select_from(t)) for t in (Item, Event, Outbox))


def _every_item_whole(rt: Runtime) -> None:
    """Each item has exactly its 'created' event and 'item_event' outbox row, and no event is
    left without its item."""
    with rt.session() as session:
        items = set(session.scalars(select(Item.id)))
        created = Counter(session.scalars(select(Event.item_id).where(Event.kind == "created")))
        announced = select(Outbox.item_id).where(
            Outbox.kind == "item_event", Outbox.payload["event"].as_string() == "created"
        )
        outbox = Counter(session.scalars(announced))
        assert created == Counter(dict.fromkeys(items, 1)) and outbox == Counter(dict.fromkeys(items, 1))
        orphans = session.scalar(select(func.count()).select_from(Event).where(Event.item_id.not_in(items)))
        assert orphans == 0


def test_an_import_killed_mid_batch_leaves_whole_batches_and_a_rerun_completes_it_once(tmp_path, db_url):
    rt = Runtime(make_settings(tmp_path, db_url))
    csv = tmp_path / "learners.csv"
    ulns = _learners_csv(csv)
    child = Subprocess.python(IMPORT, fault_env(tmp_path, db_url), tmp_path / "import.log", str(csv), str(CHUNK))
    try:
        child.wait_for("batch 2 written: 40 rows")
        assert _counts(rt) == (CHUNK, CHUNK, CHUNK)  # batch 1 committed; batch 2 not visible to anyone
    finally:
        child.kill()
    assert "finished" not in child.output()
    assert _counts(rt) == (CHUNK, CHUNK, CHUNK)  # nothing of batch 2 survived the kill
    _every_item_whole(rt)

    with rt.session() as session:  # the import run again, as the user would
        importer = ImportService(rt.items(session, Actor.system()), chunk_size=CHUNK)
        summary = importer.run(importer.open("learner", "learners.csv", csv.read_bytes()))
    assert (summary.created, summary.duplicates, summary.failed) == (ROWS - CHUNK, CHUNK, 0)
    assert _counts(rt) == (ROWS, ROWS, ROWS)
    with rt.session() as session:
        assert sorted(session.scalars(select(Item.data["uln"].as_string()))) == sorted(ulns)
    _every_item_whole(rt)
    rt.engine.dispose()


def test_a_workflow_step_killed_before_commit_leaves_nothing_and_taken_again_happens_once(tmp_path, db_url):
    rt = Runtime(make_settings(tmp_path, db_url))
    people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "Escalate me"})
    before = _counts(rt)
    child = Subprocess.python(STEP, fault_env(tmp_path, db_url), tmp_path / "step.log", str(item.id))
    try:
        child.wait_for("step written")
    finally:
        child.kill()
    assert _counts(rt) == before  # no new meeting, no event, no outbox row
    with rt.session() as session:
        assert session.get(Item, item.id).status == "planned"

    with rt.session() as session:
        service(rt, session, "alice").transition(item.id, "escalated")
    with rt.session() as session:
        meetings = list(session.scalars(select(Item).order_by(Item.id)))
        assert [m.status for m in meetings] == ["escalated", "planned"]  # the step, and the item it created
        kinds = Counter(session.scalars(select(Event.kind).where(Event.item_id == item.id)))
        assert kinds["transitioned"] == 1
    _every_item_whole(rt)
    rt.engine.dispose()
