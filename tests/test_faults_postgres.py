"""PostgreSQL going away under a write load, on a private cluster (tests/faults.py) so that
restarting it disturbs no other test: ``pg_ctl restart -m fast`` while writers create,
update and move items; the server stopped for longer than connecting is retried; and a
connection cut during COMMIT, before and after the server committed.

After each: every change a writer was told was saved is there exactly once, with its
events and outbox rows (no item without its history, no history without its item), and
every notification reaches its recipient's inbox once.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine.db import DatabaseUnavailable
from engine.models import Event, Item, Notification, Outbox, User, utcnow
from engine.runtime import Runtime
from tests.faults import *  # noqa: F403 - fixtures
from tests.faults import CuttingProxy, wait_until
from tests.notify_helpers import make_settings, people, service
from webui import create_app

pytestmark = [pytest.mark.postgres]

WRITERS = 4


class Writer:
    """One user's thread: round after round, create a meeting assigned to bob, change its
    date, mark it held. A step refused with DatabaseUnavailable (the clear error) is tried
    again, as a person would, after reloading when the error says it may have been saved."""

    def __init__(self, rt: Runtime, number: int) -> None:
        self.rt, self.number = rt, number
        with rt.session() as session:  # signed in once, as a web session is
            self.alice = rt.actor(session, "alice")
        self.rounds = 0
        self.saved: dict[str, int] = {}  # topic -> item id, for each create we were told succeeded
        self.unavailable: list[DatabaseUnavailable] = []
        self.failures: list[str] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, name=f"writer-{number}", daemon=True)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.one_round(f"T{self.number}-{self.rounds}", f"2031-01-{10 + self.rounds % 18}")
                self.rounds += 1
        except Exception as exc:  # noqa: BLE001 - any other error is what the test is looking for
            self.failures.append(f"writer {self.number}: {type(exc).__name__}: {exc}")

    def one_round(self, topic: str, date: str) -> None:
        item_id = self.step(lambda s: s.create("meeting", {"topic": topic}, assignee="bob").id, topic=topic)
        self.saved[topic] = item_id
        self.step(
            lambda s: s.update(item_id, changes={"meeting_date": date}), done=("meeting_date", date), item_id=item_id
        )
        self.step(lambda s: s.transition(item_id, "held"), done=("status", "held"), item_id=item_id)

    def step(self, change, *, topic: str | None = None, done: tuple[str, str] | None = None, item_id=None):
        while True:
            try:
                with self.rt.session() as session:
                    return change(self.rt.items(session, self.alice))
            except DatabaseUnavailable as exc:
                self.unavailable.append(exc)
                time.sleep(0.2)
                if exc.saved is None:
                    found = self.already_saved(topic, done, item_id)
                    if found is not None:
                        return found

    def already_saved(self, topic, done, item_id) -> int | None:
        """What a person does after 'it may have been saved': look before trying again."""
        with self.rt.session() as session:
            if topic is not None:
                return session.scalar(select(Item.id).where(Item.title == topic))
            item = session.get(Item, item_id)
            name, value = done
            return item.id if (item.status if name == "status" else item.data.get(name)) == value else None


def _shape_of_every_item(rt: Runtime) -> dict[int, Counter]:
    """Per item: its events by kind and its outbox rows by (kind, event), i.e. everything one
    create-update-hold round writes; a partial write shows up as a different shape."""
    shapes: dict[int, Counter] = {}
    with rt.session() as session:
        for item_id, kind in session.execute(select(Event.item_id, Event.kind)):
            shapes.setdefault(item_id, Counter())[f"event:{kind}"] += 1
        for item_id, kind, payload in session.execute(select(Outbox.item_id, Outbox.kind, Outbox.payload)):
            shapes.setdefault(item_id, Counter())[f"outbox:{kind}:{payload.get('event', payload.get('reason'))}"] += 1
        for item_id in session.scalars(select(Item.id)):
            shapes.setdefault(item_id, Counter())
    return shapes


def _deliver_everything(rt: Runtime) -> None:
    """What the scheduler does after an outage: relay whatever still waits, including rows a
    relay claimed when the server went away (their lease runs out)."""
    later = utcnow() + timedelta(seconds=rt.settings.outbox_lease_seconds + 3600)
    rt.relay(clock=lambda: later).run_until_empty()


def _assert_notified_once(rt: Runtime) -> None:
    with rt.session() as session:
        statuses = Counter(session.scalars(select(Outbox.status)))
        assert set(statuses) == {"done"}, statuses
        active = set(session.scalars(select(User.id).where(User.active)))
        notify = list(session.scalars(select(Outbox).where(Outbox.kind == "notify")))
        expected = {(row.id, uid) for row in notify for uid in row.payload["recipients"] if uid in active}
        inbox = Counter(tuple(r) for r in session.execute(select(Notification.outbox_id, Notification.user_id)))
        assert set(inbox) == expected and set(inbox.values()) == {1}


def test_postgres_restarted_and_stopped_under_write_load_loses_and_duplicates_nothing(
    tmp_path, private_pg_url, private_pg
):
    rt = Runtime(make_settings(tmp_path, private_pg_url))
    people(rt)
    writers = [Writer(rt, n) for n in range(WRITERS)]

    def everyone_did(rounds: int):
        return lambda: all(w.rounds >= rounds for w in writers) or any(w.failures for w in writers)

    def explain() -> str:
        return "\n".join(f for w in writers for f in w.failures) + "\n" + private_pg.server_log()

    try:
        for w in writers:
            w.thread.start()
        wait_until("two rounds by every writer", everyone_did(2), 120, explain=explain)
        private_pg.restart("fast")  # mid-flight: open transactions aborted, every connection cut
        wait_until("two more rounds after the restart", everyone_did(4), 120, explain=explain)
        # down for longer than a new connection is tried again: writers get the clear error
        private_pg.stop("fast")
        wait_until(
            "every writer told the database is unavailable",
            lambda: all(w.unavailable for w in writers),
            rt.settings.db_connect_retry_seconds * 3 + 30,
            explain=explain,
        )
        private_pg.start()
        wait_until("two more rounds after the outage", everyone_did(6), 120, explain=explain)
    finally:
        for w in writers:
            w.stop.set()
        for w in writers:
            w.thread.join(timeout=120)
    assert not [f for w in writers for f in w.failures], explain()
    errors = [e for w in writers for e in w.unavailable]
    assert errors and all(e.status == 503 for e in errors)
    assert any("cannot be reached" in e.message for e in errors), [e.message for e in errors]

    _deliver_everything(rt)
    shapes = _shape_of_every_item(rt)
    saved = {topic: item_id for w in writers for topic, item_id in w.saved.items()}
    with rt.session() as session:
        titles = Counter(session.scalars(select(Item.title)))
        items = session.scalar(select(func.count()).select_from(Item))
    # each acknowledged create is there once, and nothing else was created
    assert all(titles[topic] == 1 for topic in saved), {t: n for t, n in titles.items() if n != 1}
    assert items == len(saved) == len(titles)
    # every completed round wrote the same rows; no item is missing an event or an outbox row
    complete = [shapes[i] for w in writers for t, i in w.saved.items() if int(t.split("-")[1]) < w.rounds]
    reference = complete[0]
    assert reference["event:created"] == 1 and reference["event:transitioned"] == 1
    assert all(shape == reference for shape in complete), [s for s in complete if s != reference][:3]
    _assert_notified_once(rt)
    rt.engine.dispose()


@pytest.mark.parametrize("when", ["before", "after"])
def test_a_connection_cut_during_commit_saves_the_change_exactly_once(
    tmp_path, private_pg, private_pg_url, when, caplog
):
    """``before``: the COMMIT never reached the server, which rolled back; the engine runs the
    change again. ``after``: the server committed but the answer was lost; the engine asks the
    server what became of the transaction and does not run it again."""
    proxy = CuttingProxy(private_pg.port)
    rt = Runtime(make_settings(tmp_path, proxy.url(private_pg_url.rsplit("/", 1)[1])))
    try:
        people(rt)
        with rt.session() as session:
            alice = service(rt, session, "alice")
            proxy.cut(when)
            item = alice.create("meeting", {"topic": f"Cut {when}"}, assignee="bob")
            assert proxy.cuts == 1
            assert (item.id, item.title, item.assignee_id is not None) == (item.id, f"Cut {when}", True)
            proxy.cut(when)
            updated = alice.update(item.id, changes={"meeting_date": "2031-02-03"}, expected_version=item.version)
            assert proxy.cuts == 2 and updated.data["meeting_date"] == "2031-02-03"
        said = [r.getMessage() for r in caplog.records if r.name == "engine.db"]
        if when == "after":  # asked, and not run again
            assert sum("the transaction committed" in m for m in said) == 2, said
            assert not any("not saved" in m for m in said), said
        else:  # rolled back by the server, and run again
            assert sum("the change was not saved" in m for m in said) == 2, said
        _deliver_everything(rt)
        with rt.session() as session:
            [saved] = session.scalars(select(Item).where(Item.title == f"Cut {when}"))
            assert saved.id == item.id and saved.data["meeting_date"] == "2031-02-03"
            kinds = Counter(session.scalars(select(Event.kind).where(Event.item_id == item.id)))
            assert kinds == Counter(created=1, assigned=1, updated=1)
        _assert_notified_once(rt)
    finally:
        rt.engine.dispose()
        proxy.close()


def test_without_the_server_a_change_is_refused_with_a_clear_error_and_nothing_is_half_saved(
    tmp_path, private_pg, private_pg_url
):
    """The server stopped (and connecting not retried): a save gets a 503 saying nothing was
    saved and to try again; it works once the server is back, once."""
    rt = Runtime(make_settings(tmp_path, private_pg_url, db_connect_retry_seconds=0))
    people(rt)
    with rt.session() as session:
        alice = rt.actor(session, "alice")
    private_pg.stop("fast")
    try:
        with rt.session() as session, pytest.raises(DatabaseUnavailable) as refused:
            rt.items(session, alice).create("meeting", {"topic": "While down"})
        assert refused.value.status == 503 and refused.value.saved is False
        assert str(refused.value) == (
            "The database cannot be reached just now, so nothing was saved. "
            "Try again in a moment; if it keeps happening, tell your administrator."
        )
    finally:
        private_pg.start()
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "While down"})
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Item).where(Item.title == "While down")) == 1
        assert Counter(session.scalars(select(Event.kind).where(Event.item_id == item.id))) == Counter(created=1)
    rt.engine.dispose()


def test_while_the_database_is_down_the_api_and_health_say_so_and_recover_by_themselves(
    tmp_path, private_pg, private_pg_url
):
    settings = make_settings(tmp_path, private_pg_url, db_connect_retry_seconds=0)
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings})
    rt = app.extensions["tracker"]
    people(rt)
    with rt.session() as session:
        token = rt.users(session).create_token("alice", "fault test")[1]
    client = app.test_client()
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/items", headers=headers).status_code == 200
    private_pg.stop("fast")
    try:
        down = client.post("/api/v1/items", headers=headers, json={"type": "meeting", "data": {"topic": "Down"}})
        assert down.status_code == 503 and down.mimetype == "application/json"
        assert down.get_json()["message"] == "The database cannot be reached just now, so nothing was saved."
        health = client.get("/health")
        assert health.status_code == 503 and health.get_json() == {"status": "down", "database": {"ok": False}}
    finally:
        private_pg.start()
    # the pool's connections died with the server: they are replaced, nobody restarts the app
    assert client.get("/health").status_code == 200
    up = client.post("/api/v1/items", headers=headers, json={"type": "meeting", "data": {"topic": "Up"}})
    assert up.status_code == 201, up.get_json()
    with rt.session() as session:
        assert sorted(session.scalars(select(Item.title))) == ["Up"]
    rt.engine.dispose()
