"""Duplicate prevention and optimistic locking hold when several writers race."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select

from engine import db
from engine.errors import Conflict
from engine.models import Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.items import DuplicateItem
from tests.conftest import LEARNER


def test_identity_holds_under_concurrent_creates(engine, registry):
    factory = db.session_factory(engine)
    writers = 8
    barrier = threading.Barrier(writers)
    outcomes: list[object] = []
    lock = threading.Lock()

    def create() -> None:
        with factory() as session:
            service = ItemService(session, Actor.system(), registry)
            barrier.wait()
            try:
                result: object = service.create("learner", dict(LEARNER)).id
            except Exception as exc:  # noqa: BLE001 - every outcome is collected and checked below
                result = exc
            with lock:
                outcomes.append(result)

    threads = [threading.Thread(target=create) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    created = [o for o in outcomes if isinstance(o, int)]
    refused = [o for o in outcomes if isinstance(o, DuplicateItem)]
    assert len(created) == 1, outcomes
    assert len(refused) == writers - 1, outcomes
    assert all(r.existing_id == created[0] for r in refused)
    assert all(f"#{created[0]}" in r.problems[0].message for r in refused)
    with factory() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 1


def test_two_users_saving_the_same_item(engine, registry):
    factory = db.session_factory(engine)
    with factory() as setup:
        item_id = ItemService(setup, Actor.system(), registry).create("learner", dict(LEARNER)).id
    with factory() as first, factory() as second:
        alice = ItemService(first, Actor.system(), registry)
        bob = ItemService(second, Actor.system(), registry)
        alice.get(item_id)
        bob.get(item_id)  # both have version 1 open
        alice.update(item_id, changes={"phone": "07700900001"}, expected_version=1)
        with pytest.raises(Conflict):
            bob.update(item_id, changes={"phone": "07700900002"}, expected_version=1)
    with factory() as check:
        item = check.get(Item, item_id)
        assert (item.data["phone"], item.version) == ("07700900001", 2)
