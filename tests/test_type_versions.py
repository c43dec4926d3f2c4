"""Items keep the version of their type they were created under; a new version may declare a
migration (rename, set_default, map_values), previewed with counts and applied through the
item service, idempotently. Also the ``tracker types`` commands. Both databases."""

from __future__ import annotations

import json
import shutil

import pytest
import yaml
from sqlalchemy import select

from engine.definitions import load_registry, store
from engine.definitions.documents import dump_json, dump_yaml
from engine.definitions.store import Texts
from engine.errors import PermissionDenied
from engine.models import Event, Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.definitions import DefinitionService
from engine.type_migrations import TypeMigrator
from tests.conftest import TEST_DEFINITIONS

SCHEMA_V1 = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "title": "Title", "minLength": 1},
        "colour": {"type": "string", "title": "Colour"},
        "size": {"enum": ["S", "M", "L"], "title": "Size"},
    },
    "required": ["title"],
}


@pytest.fixture
def defs(session, registry) -> DefinitionService:
    engine = session.get_bind()
    return DefinitionService(
        session, Actor.system(), registry, after_publish=lambda: store.merge(registry, store.published(engine))
    )


def publish(defs: DefinitionService, key: str, *, schema: dict, manifest: dict | None = None, workflow=None) -> None:
    texts = defs.texts_of(key)
    raw = yaml.safe_load(texts.type_yaml)
    raw.update(manifest or {})
    wf = texts.workflow_yaml if workflow is None else dump_yaml(workflow)
    defs.save_draft(key, Texts(dump_json(schema), dump_yaml(raw), wf, texts.roles_yaml))
    defs.publish(key)


@pytest.fixture
def bikes(defs, session):
    """Type ``bike_loan`` at version 1 with three items."""
    defs.create("bike_loan", "Bike loan")
    publish(defs, "bike_loan", schema=SCHEMA_V1)
    items = ItemService(session, Actor.system(), defs.registry)
    made = [
        items.create("bike_loan", {"title": "Red", "colour": "red", "size": "S"}),
        items.create("bike_loan", {"title": "Plain"}),
        items.create("bike_loan", {"title": "Big", "colour": "blue", "size": "L"}),
    ]
    return [i.id for i in made]


def version_2(defs: DefinitionService) -> None:
    """Version 2 renames colour to paint, fills in size M where empty and maps L to XL; paint
    must be one of a list, so "blue" will not do."""
    schema = json.loads(json.dumps(SCHEMA_V1))
    del schema["properties"]["colour"]
    schema["properties"]["paint"] = {"enum": ["red", "green"], "title": "Paint"}
    schema["properties"]["size"] = {"enum": ["S", "M", "XL"], "title": "Size"}
    publish(
        defs,
        "bike_loan",
        schema=schema,
        manifest={
            "migrations": [
                {"rename": {"from": "colour", "to": "paint"}},
                {"set_default": {"field": "size", "value": "M"}},
                {"map_values": {"field": "size", "map": {"L": "XL"}}},
            ]
        },
    )


def test_items_keep_their_version_and_stay_editable_under_it(defs, session, bikes):
    version_2(defs)
    items = ItemService(session, Actor.system(), defs.registry)
    old = items.get(bikes[0])
    assert old.type_version == 1
    assert "colour" in items.type_of(old).schema["properties"]
    # an old item saves under version 1: "colour" is still a field there
    items.update(old.id, changes={"colour": "green"})
    assert session.get(Item, old.id).data["colour"] == "green"
    # a new item is created under version 2, where "colour" is no longer allowed... but "paint" is
    new = items.create("bike_loan", {"title": "New", "paint": "green"})
    assert new.type_version == 2


def test_each_version_keeps_its_own_workflow(defs, session, bikes):
    texts = defs.texts_of("bike_loan")
    workflow = yaml.safe_load(texts.workflow_yaml)
    workflow["states"].append({"key": "lost", "label": "Lost", "category": "cancelled"})
    workflow["transitions"].append({"key": "lose", "from": ["open"], "to": "lost", "label": "Report lost"})
    publish(defs, "bike_loan", schema=SCHEMA_V1, workflow=workflow)
    items = ItemService(session, Actor.system(), defs.registry)
    new = items.create("bike_loan", {"title": "New"})
    assert items.transition(new.id, "lost").status == "lost"
    old = items.get(bikes[0])
    assert [t.key for t in items.available_transitions(old)] == ["finish"]


def test_preview_counts_what_would_change_and_fail_and_changes_nothing(defs, session, bikes):
    version_2(defs)
    before = {i.id: (i.type_version, dict(i.data)) for i in session.scalars(select(Item))}
    preview = TypeMigrator(session, Actor.system(), defs.registry).preview("bike_loan")
    assert (preview.to_version, preview.items, preview.would_change, preview.would_fail) == (2, 3, 3, 1)
    [v1] = preview.versions
    assert [s.kind for s in v1.steps] == ["rename", "set_default", "map_values"]
    [failure] = v1.failures
    assert failure.item_id == bikes[2]
    assert "Paint must be one of" in failure.problems[0].message
    assert {e.item_id for e in v1.changes} == set(bikes)
    session.expire_all()
    assert {i.id: (i.type_version, dict(i.data)) for i in session.scalars(select(Item))} == before


def test_apply_migrates_through_the_service_with_history_and_is_idempotent(defs, session, bikes):
    version_2(defs)
    migrator = TypeMigrator(session, Actor.system(), defs.registry)
    seen = []
    result = migrator.apply("bike_loan", progress=lambda done, total: seen.append((done, total)))
    assert (result.migrated, result.failed) == (2, 1)
    assert seen[-1] == (3, 3)
    session.expire_all()
    red, plain, big = (session.get(Item, i) for i in bikes)
    assert (red.type_version, red.data) == (2, {"title": "Red", "paint": "red", "size": "S"})
    assert (plain.type_version, plain.data) == (2, {"title": "Plain", "size": "M"})
    assert (big.type_version, big.data) == (1, {"title": "Big", "colour": "blue", "size": "L"})
    kinds = [e.kind for e in session.scalars(select(Event).where(Event.item_id == red.id).order_by(Event.id))]
    assert kinds == ["created", "updated", "migrated"]
    migrated = session.scalar(select(Event).where(Event.item_id == red.id, Event.kind == "migrated"))
    assert migrated.payload["from_version"] == 1 and migrated.payload["to_version"] == 2
    assert migrated.payload["steps"][0] == "rename colour to paint"

    again = migrator.apply("bike_loan")
    assert (again.migrated, again.failed) == (0, 1)
    assert len(list(session.scalars(select(Event).where(Event.kind == "migrated")))) == 2

    # the item that failed is fixed under its own version, then migrates
    ItemService(session, Actor.system(), defs.registry).update(big.id, changes={"colour": "green"})
    assert migrator.apply("bike_loan").migrated == 1
    session.expire_all()
    assert session.get(Item, big.id).data == {"title": "Big", "paint": "green", "size": "XL"}


def test_migrations_need_types_admin(defs, session, bikes, make_user):
    clerk = make_user("clerk", "tracker_creator")
    with pytest.raises(PermissionDenied):
        TypeMigrator(session, clerk, defs.registry)


def test_steps_chain_through_versions(defs, session, bikes):
    version_2(defs)
    schema = json.loads(defs.texts_of("bike_loan").schema_json)
    schema["properties"]["frame"] = schema["properties"].pop("size")
    publish(defs, "bike_loan", schema=schema, manifest={"migrations": [{"rename": {"from": "size", "to": "frame"}}]})
    steps = TypeMigrator(session, Actor.system(), defs.registry).steps("bike_loan", 1)
    assert [s.kind for s in steps] == ["rename", "set_default", "map_values", "rename"]
    result = TypeMigrator(session, Actor.system(), defs.registry).apply("bike_loan")
    assert (result.migrated, result.failed) == (2, 1)
    session.expire_all()
    assert session.get(Item, bikes[1]).data == {"title": "Plain", "frame": "M"}


# -- migrations in definition files: checked like every other key -------------------------------


@pytest.mark.parametrize(
    ("steps", "pointer", "message"),
    [
        (
            [{"rename": {"from": "old_ref", "to": "nowhere"}}],
            "/migrations/0/rename/to",
            "field 'nowhere' is not a property",
        ),
        ([{"rename": {"from": "severity", "to": "category"}}], "/migrations/0/rename/from", "is still a property"),
        ([{"set_default": {"field": "severity", "value": "extreme"}}], "/migrations/0/set_default/value", "not valid"),
        (
            [{"map_values": {"field": "severity", "map": {"urgent": "huge"}}}],
            "/migrations/0/map_values/map/urgent",
            "not valid",
        ),
        ([{"explode": {"field": "severity"}}], "/migrations/0", "explode"),
    ],
)
def test_broken_migrations_in_files_are_reported_on_their_line(tmp_path, steps, pointer, message):
    defs = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, defs)
    path = defs / "tracker_types" / "concern" / "type.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["migrations"] = steps
    path.write_text(dump_yaml(raw))
    registry = load_registry([defs])
    [problem] = [p for p in registry.problems if p.file.endswith("concern/type.yaml")]
    assert problem.pointer.startswith(pointer), problem
    assert message in problem.message or message in problem.advice, problem
    assert problem.line is not None
    assert "concern" not in registry.types and "concern_review" in registry.types


def test_valid_migrations_in_files_load(tmp_path):
    defs = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, defs)
    path = defs / "tracker_types" / "concern" / "type.yaml"
    raw = yaml.safe_load(path.read_text())
    raw["migrations"] = [
        {"rename": {"from": "old_severity", "to": "severity"}},
        {"set_default": {"field": "severity", "value": "low"}},
    ]
    path.write_text(dump_yaml(raw))
    registry = load_registry([defs])
    assert registry.problems == []
    assert [m.kind for m in registry.types["concern"].migrations] == ["rename", "set_default"]


# -- the command line -----------------------------------------------------------------------------


def test_types_commands(run, session, registry, tmp_path):
    engine = session.get_bind()
    service = DefinitionService(session, Actor.system(), registry)
    service.create("bike_loan", "Bike loan")
    texts = service.texts_of("bike_loan")
    broken = texts.type_yaml.replace("list_columns:\n- title\n", "list_columns:\n- colour\n")
    service.save_draft("bike_loan", Texts(texts.schema_json, broken, texts.workflow_yaml))

    refused = run("types", "publish", "bike_loan", ok=False)
    assert refused.returncode == 1
    assert "type.yaml:8: /list_columns/0: field 'colour' is not a property of schema.json" in refused.stderr
    assert "nothing was changed" in refused.stderr
    assert store.published(engine) == []

    service.save_draft("bike_loan", texts)
    assert "Published bike_loan version 1." in run("types", "publish", "bike_loan", "--note", "first").stdout
    file_type = run("types", "publish", "concern", ok=False)
    assert "defined in definition files" in file_type.stderr and file_type.returncode == 1

    run("items", "create", "--type", "bike_loan", "--data", '{"title": "Red"}')
    run("types", "export", "bike_loan", str(tmp_path / "out"))
    assert "Imported scooter as version 1." in run("types", "import", str(tmp_path / "out"), "--key", "scooter").stdout
    assert "Imported bike_loan as version 2." in run("types", "import", str(tmp_path / "out")).stdout
    versions = run("types", "versions", "bike_loan").stdout
    assert "2 (current)  import" in versions and "1            publish" in versions and "first" in versions
    assert (
        "Published the documents of version 1 of bike_loan as version 3."
        in run("types", "rollback", "bike_loan", "1").stdout
    )

    preview = run("types", "migrate", "bike_loan", "--preview").stdout
    assert "version 1 -> 3: 1 item(s), 0 would change, 0 would fail validation" in preview
    applied = run("types", "migrate", "bike_loan", "--apply").stdout
    assert "Migrated 1 item(s) to version 3; 0 left as they were." in applied
    assert "no versions in the database" in run("types", "versions", "concern").stdout
    missing = run("types", "versions", "nope", ok=False)
    assert missing.returncode == 1 and "There is no tracker type 'nope'" in missing.stderr
