"""Two users saving the same item: optimistic locking lets one win; the other is refused with a
conflict that names the winner's change (never a value they may not see), nothing of theirs
is half-saved, and saving again from the new version keeps both changes. On both databases,
in the item service with real threads, and through the JSON API."""

from __future__ import annotations

import threading

from sqlalchemy import select

from engine import db
from engine.errors import Conflict
from engine.models import Event, Item
from engine.permissions import Actor
from engine.services import ItemService, UserService
from tests.conftest import LEARNER
from tests.webhelpers import cheap_hashing, make_app  # noqa: F401 - cheap_hashing is an autouse fixture

CONCERN = {"category": "online", "severity": "low", "reported_on": "2025-09-01", "summary": "First report"}
ROUNDS = 4


def _world(engine, registry) -> int:
    """ann and ben (safeguarding leads), pat (also payroll: sees the cost) and a concern."""
    with db.session_factory(engine)() as session:
        users = UserService(session, registry)
        for name, roles in (("ann", ["dsl"]), ("ben", ["dsl"]), ("pat", ["dsl", "payroll"])):
            users.create(name, roles)
        system = ItemService(session, Actor.system(), registry)
        learner = system.create("learner", dict(LEARNER))
        return system.create("concern", dict(CONCERN), subject_id=learner.id).id


def _as(session, registry, username: str) -> ItemService:
    return ItemService(session, Actor.for_user(UserService(session, registry).get(username), registry), registry)


def _race(engine, registry, item_id: int, changes: dict[str, dict]) -> dict[str, object]:
    """Each user opens the item, then all save at once from the version they opened."""
    factory = db.session_factory(engine)
    barrier = threading.Barrier(len(changes))
    outcomes: dict[str, object] = {}

    def save(who: str) -> None:
        with factory() as session:
            service = _as(session, registry, who)
            opened = service.get(item_id).version
            barrier.wait()
            try:
                outcomes[who] = service.update(item_id, changes=changes[who], expected_version=opened).version
            except Conflict as exc:
                outcomes[who] = exc

    threads = [threading.Thread(target=save, args=(who,)) for who in changes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return outcomes


def test_two_users_saving_at_the_same_moment_one_wins_the_other_is_told_what_changed(engine, registry):
    item_id = _world(engine, registry)
    factory = db.session_factory(engine)
    for n in range(ROUNDS):
        mine = {"ann": {"summary": f"Ann's account {n}"}, "ben": {"summary": f"Ben's account {n}"}}
        outcomes = _race(engine, registry, item_id, mine)
        winners = [who for who, o in outcomes.items() if isinstance(o, int)]
        assert len(winners) == 1, outcomes
        [winner], [loser] = winners, [who for who in mine if who not in winners]
        conflict = outcomes[loser]
        assert conflict.status == 409 and "Reload" in conflict.advice
        assert f"{winner} changed Summary from " in conflict.message, conflict.message
        assert f"to '{mine[winner]['summary']}'" in conflict.message, conflict.message
        with factory() as session:
            assert session.get(Item, item_id).data["summary"] == mine[winner]["summary"]  # the loser's not half-saved
            # the loser reloads, sees the winner's change and saves theirs again: both are kept
            service = _as(session, registry, loser)
            service.update(item_id, changes=mine[loser], expected_version=service.get(item_id).version)
    with factory() as session:
        updates = list(session.scalars(select(Event).where(Event.item_id == item_id, Event.kind == "updated")))
        assert len(updates) == 2 * ROUNDS  # every save that was answered "saved" is in the history, once
        assert [u.payload["changes"][0]["new"] for u in updates][-1] == session.get(Item, item_id).data["summary"]


def test_a_conflict_never_shows_a_value_the_loser_may_not_see(engine, registry):
    item_id = _world(engine, registry)
    factory = db.session_factory(engine)
    with factory() as first, factory() as second:
        ben = _as(second, registry, "ben")
        opened = ben.get(item_id).version
        _as(first, registry, "pat").update(item_id, changes={"cost": 1234.5}, expected_version=opened)
        try:
            ben.update(item_id, changes={"summary": "Ben's"}, expected_version=opened)
        except Conflict as exc:
            message = exc.message
    assert "pat changed it" in message and "1234" not in message and "Cost" not in message
    with factory() as session:
        item = session.get(Item, item_id)
        assert (item.data["cost"], item.data["summary"]) == (1234.5, "First report")


def test_two_users_saving_the_same_item_through_the_api(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    rt = app.extensions["tracker"]
    item_id = _world(rt.engine, rt.registry)
    with rt.session() as session:
        tokens = {who: rt.users(session).create_token(who, "fault test")[1] for who in ("ann", "ben")}
    client = app.test_client()

    def call(who: str, method: str, **kwargs):
        headers = {"Authorization": f"Bearer {tokens[who]}"}
        return client.open(f"/api/v1/items/{item_id}", method=method, headers=headers, **kwargs)

    ann_read, ben_read = call("ann", "GET").get_json(), call("ben", "GET").get_json()
    assert ann_read["version"] == ben_read["version"]
    saved = call("ann", "PATCH", json={"data": {"summary": "Ann's"}, "version": ann_read["version"]})
    assert saved.status_code == 200 and saved.get_json()["data"]["summary"] == "Ann's"
    stale = call("ben", "PATCH", json={"data": {"summary": "Ben's"}, "version": ben_read["version"]})
    assert stale.status_code == 409 and stale.mimetype == "application/json"
    body = stale.get_json()
    assert f"you had version {ben_read['version']}" in body["message"]
    assert "ann changed Summary from 'First report' to 'Ann's'" in body["message"], body
    assert call("ben", "GET").get_json()["data"]["summary"] == "Ann's"  # nothing of ben's was saved
    again = call("ben", "PATCH", json={"data": {"summary": "Ben's"}, "version": saved.get_json()["version"]})
    assert again.status_code == 200
    history = client.get(f"/api/v1/items/{item_id}/history", headers={"Authorization": f"Bearer {tokens['ann']}"})
    updates = [e for e in history.get_json() if e["kind"] == "updated"]
    assert [(e["actor"], e["payload"]["changes"][0]["new"]) for e in updates] == [("ann", "Ann's"), ("ben", "Ben's")]
    rt.engine.dispose()
