"""The migration preview of a type with many items behind: counted by the database, checked
on a sample, so the Migrate page and Publish stay quick; the migration itself checks every
item. Both databases."""

from __future__ import annotations

from sqlalchemy import select

from engine.models import Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.type_migrations import TypeMigrator
from tests import test_type_versions as versions
from tests.test_type_admin import admin, app, new_app, page_text  # noqa: F401 - fixtures

defs = versions.defs


def _bikes(defs, session, n: int) -> list[int]:
    """``n`` version-1 bikes; every third is blue, which version 2 refuses."""
    defs.create("bike_loan", "Bike loan")
    versions.publish(defs, "bike_loan", schema=versions.SCHEMA_V1)
    items = ItemService(session, Actor.system(), defs.registry)
    return [
        items.create("bike_loan", {"title": f"B{i}", "colour": "blue" if i % 3 == 2 else "red"}).id for i in range(n)
    ]


def test_a_sampled_preview_counts_every_item_and_checks_the_oldest(defs, session):
    made = _bikes(defs, session, 7)
    versions.version_2(defs)
    migrator = TypeMigrator(session, Actor.system(), defs.registry)
    assert migrator.behind_by_version("bike_loan") == {1: 7} and migrator.count_behind("bike_loan") == 7
    sampled = migrator.preview("bike_loan", sample=3)
    [v1] = sampled.versions
    assert (v1.items, v1.checked, v1.would_change, v1.would_fail) == (7, 3, 3, 1)
    assert [e.item_id for e in v1.failures] == [made[2]] and not sampled.complete
    whole = migrator.preview("bike_loan")
    assert (whole.items, whole.checked, whole.would_fail, whole.complete) == (7, 7, 2, True)
    # the migration itself is not limited by the sample
    result = migrator.apply("bike_loan")
    assert (result.migrated, result.failed) == (5, 2)
    session.expire_all()
    assert sorted(session.scalars(select(Item.type_version))) == [1, 1, 2, 2, 2, 2, 2]


def test_the_migrate_page_says_when_its_counts_are_of_a_sample(app, admin, monkeypatch):  # noqa: F811
    from webui import type_admin

    rt = app.extensions["tracker"]
    with rt.session() as session:
        service = rt.definitions(session, Actor.system())
        _bikes(service, session, 4)
        versions.version_2(service)
        session.commit()
    page = page_text(admin.get("/admin/types/bike_loan/migrate"))
    assert '<dd id="items-1">4</dd>' in page and 'id="sampled-1"' not in page
    assert "Migrate 3 items to version 2" in page
    monkeypatch.setattr(type_admin, "PREVIEW_SAMPLE", 2)
    page = page_text(admin.get("/admin/types/bike_loan/migrate"))
    assert '<dd id="items-1">4</dd>' in page and '<dd id="fail-1">0</dd>' in page
    assert "The counts below are of the first 2 of these 4 items" in page
    assert "Migrate every item that validates to version 2" in page
