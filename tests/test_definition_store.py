"""Tracker types kept in the database: drafts, publish, refusals with the loader's problems,
the audit log with diffs, rollback, copies of file types, export and import, and a publish
reaching another process without a restart. Both databases."""

from __future__ import annotations

import json
import zipfile

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import indexes
from engine.config import Settings
from engine.definitions import load_registry, store
from engine.definitions.documents import dump_json
from engine.definitions.store import Texts
from engine.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from engine.models import DefinitionPublish, Item, TypeDefinition
from engine.permissions import Actor
from engine.runtime import Runtime
from engine.services import ItemService, UserService
from engine.services.definitions import DefinitionRejected, DefinitionService
from tests.conftest import TEST_DEFINITIONS


@pytest.fixture
def defs(session, registry) -> DefinitionService:
    """The service as the system operator, its registry brought up to date after each publish."""
    engine = session.get_bind()
    return DefinitionService(
        session, Actor.system(), registry, after_publish=lambda: store.merge(registry, store.published(engine))
    )


def counts(session) -> tuple[int, int, int]:
    """(published versions, drafts, audit entries): what a refusal must leave as it was."""
    published = session.scalar(select(func.count()).where(TypeDefinition.status == "published"))
    drafts = session.scalar(select(func.count()).where(TypeDefinition.status == "draft"))
    return published, drafts, session.scalar(select(func.count()).select_from(DefinitionPublish))


def edit(defs: DefinitionService, key: str, **changes: str) -> None:
    texts = defs.texts_of(key)
    defs.save_draft(key, Texts(**{**texts.__dict__, **changes}))


def test_a_new_type_is_a_draft_until_published_then_items_use_it(defs, session):
    row = defs.create("bike_loan", "Bike loan")
    assert (row.version, row.status) == (1, "draft")
    assert "bike_loan" not in defs.registry.types
    assert defs.check("bike_loan").problems == []

    published = defs.publish("bike_loan", "first cut")
    assert (published.definition.version, published.definition.status) == (1, "published")
    assert published.entry.action == "publish" and published.entry.note == "first cut"
    assert "+++ version 1/schema.json" in published.entry.diff
    bike = defs.registry.type("bike_loan")
    assert bike.version == 1 and bike.source == "database, version 1"
    assert defs.registry.workflow_for(bike).initial.key == "open"

    item = ItemService(session, Actor.system(), defs.registry).create("bike_loan", {"title": "Red bike"})
    assert (item.type_version, item.status, item.title) == (1, "open", "Red bike")
    [row] = [r for r in defs.overview() if r.key == "bike_loan"]
    assert (row.origin, row.version, row.draft, row.items) == ("database", 1, None, {1: 1})


def test_an_invalid_schema_is_refused_with_its_line_and_nothing_changes(defs, session):
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan")
    schema = json.loads(defs.texts_of("bike_loan").schema_json)
    schema["properties"]["frame"] = {"type": "strng", "title": "Frame"}
    edit(defs, "bike_loan", schema_json=dump_json(schema))
    before = counts(session)

    with pytest.raises(DefinitionRejected) as refused:
        defs.publish("bike_loan", "broken")
    [problem] = refused.value.definition_problems
    assert problem.file == "schema.json"
    assert problem.pointer == "/properties/frame/type"
    assert "not a valid JSON Schema" in problem.message and problem.advice
    line = defs.texts_of("bike_loan").schema_json.splitlines()[problem.line - 1]
    assert '"type": "strng"' in line
    assert counts(session) == before
    assert defs.draft("bike_loan").status == "draft"
    assert defs.registry.type("bike_loan").version == 1


def test_broken_yaml_gives_the_line_and_nothing_is_published(defs, session):
    defs.create("bike_loan", "Bike loan")
    edit(defs, "bike_loan", type_yaml="key: bike_loan\nname: [unclosed\nversion: 1\n")
    before = counts(session)
    with pytest.raises(DefinitionRejected) as refused:
        defs.publish("bike_loan")
    [problem] = refused.value.definition_problems
    assert (problem.file, problem.line) == ("type.yaml", 3)
    assert problem.message.startswith("not valid YAML")
    assert "type.yaml:3:" in str(refused.value)
    assert counts(session) == before
    assert "bike_loan" not in defs.registry.types


def test_cross_checks_are_those_of_tracker_check(defs):
    defs.create("bike_loan", "Bike loan")
    texts = defs.texts_of("bike_loan")
    manifest = texts.type_yaml + "list_columns: [title, colour]\n"
    manifest = manifest.replace("list_columns: [title]\n", "").replace("list_columns:\n- title\n", "")
    problems = defs.check("bike_loan", Texts(texts.schema_json, manifest, texts.workflow_yaml)).problems
    [problem] = problems
    assert (problem.file, problem.pointer) == ("type.yaml", "/list_columns/1")
    assert problem.message == "field 'colour' is not a property of schema.json"
    assert manifest.splitlines()[problem.line - 1].startswith("list_columns")

    # the same mistake in a folder, through the loader that 'tracker check' runs
    wrong_key = texts.type_yaml.replace("key: bike_loan", "key: other")
    [problem] = defs.check("bike_loan", Texts(texts.schema_json, wrong_key, texts.workflow_yaml)).problems
    assert problem.message == "key 'other' is not this type's key 'bike_loan'"


def test_a_type_from_files_is_read_only_but_can_be_copied(defs, session):
    before = counts(session)
    with pytest.raises(PermissionDenied) as refused:
        defs.draft("concern")
    assert "defined in definition files" in refused.value.message
    assert "Copy it" in refused.value.advice
    assert counts(session) == before
    with pytest.raises(ValidationFailed) as taken:
        defs.create("concern", "Another concern")
    assert taken.value.problems[0].message == "There is already a type 'concern' in definition files"
    assert counts(session) == before

    copy = defs.create("concern_copy", "Concern (copy)", copy_from="concern")
    texts = Texts.of(copy)
    assert "key: concern_copy" in texts.type_yaml and "workflow: concern_copy" in texts.type_yaml
    assert "key: concern_copy" in texts.workflow_yaml
    assert "# " not in texts.schema_json
    defs.publish("concern_copy")
    copied = defs.registry.type("concern_copy")
    assert copied.schema == defs.registry.type("concern").schema
    assert [s.key for s in defs.registry.workflow_for(copied).states] == ["new", "investigating", "closed", "withdrawn"]


def test_a_new_type_under_a_taken_or_bad_key_is_refused(defs, session):
    defs.create("bike_loan", "Bike loan")
    before = counts(session)
    for key, message in [
        ("bike_loan", "There is already a type 'bike_loan' in the database"),
        ("Bike Loan", "'Bike Loan' cannot be a type key"),
        ("safeguarding", "'safeguarding' is already the key of a workflow"),
    ]:
        with pytest.raises(ValidationFailed) as refused:
            defs.create(key, "Name")
        assert refused.value.problems[0].message == message
    assert counts(session) == before


def test_only_types_admin_may_use_it(session, registry, make_user):
    clerk = make_user("clerk", "tracker_creator")
    with pytest.raises(PermissionDenied) as refused:
        DefinitionService(session, clerk, registry)
    assert "types.admin" in refused.value.advice


def test_publishing_an_unchanged_draft_is_refused(defs, session):
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan")
    defs.draft("bike_loan")
    before = counts(session)
    with pytest.raises(ValidationFailed) as refused:
        defs.publish("bike_loan")
    assert "same as version 1" in refused.value.problems[0].message
    assert counts(session) == before


def test_every_publish_is_logged_with_a_diff_and_can_be_rolled_back(defs, session):
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan", "first")
    texts = defs.texts_of("bike_loan")
    edit(defs, "bike_loan", type_yaml=texts.type_yaml.replace("name: Bike loan", "name: Bicycle loan"))
    second = defs.publish("bike_loan", "renamed")
    assert second.definition.version == 2
    assert "\n-name: Bike loan\n" in second.entry.diff and "\n+name: Bicycle loan\n" in second.entry.diff
    assert "\n-version: 1\n" in second.entry.diff and "\n+version: 2\n" in second.entry.diff
    assert "--- version 1/type.yaml" in second.entry.diff and "schema.json" not in second.entry.diff
    assert defs.registry.type("bike_loan").name == "Bicycle loan"

    # a draft being edited survives a rollback, renumbered after it
    edit(defs, "bike_loan", type_yaml=texts.type_yaml.replace("name: Bike loan", "name: Cycle loan"))
    assert defs.draft("bike_loan").version == 3
    rolled = defs.rollback("bike_loan", 1, "back to the first name")
    assert (rolled.definition.version, rolled.entry.action, rolled.entry.from_version) == (3, "rollback", 1)
    assert "\n-name: Bicycle loan\n" in rolled.entry.diff and "\n+name: Bike loan\n" in rolled.entry.diff
    assert defs.registry.type("bike_loan").name == "Bike loan"
    assert defs.registry.type("bike_loan").version == 3
    assert "version: 3" in defs.published("bike_loan", 3).type_yaml
    assert defs.draft("bike_loan").version == 4
    assert "Cycle loan" in defs.draft("bike_loan").type_yaml
    assert [e.version for e in defs.history("bike_loan")] == [3, 2, 1]
    assert [v.version for v in defs.versions("bike_loan")] == [3, 2, 1]

    before = counts(session)
    with pytest.raises(ValidationFailed):
        defs.rollback("bike_loan", 3)
    with pytest.raises(NotFound):
        defs.rollback("bike_loan", 9)
    assert counts(session) == before


def test_the_types_own_roles_and_permissions(defs, session):
    defs.create("bike_loan", "Bike loan")
    roles = "roles:\n  - key: bike_officer\n    name: Bike officer\n    capabilities: [items.view, items.edit]\n"
    manifest = defs.texts_of("bike_loan").type_yaml + "permissions:\n  bike_officer: [items.view, items.create]\n"
    edit(defs, "bike_loan", roles_yaml=roles, type_yaml=manifest)
    defs.publish("bike_loan")
    assert defs.registry.roles["bike_officer"].name == "Bike officer"
    user, _ = UserService(session, defs.registry).create("ben", ["bike_officer"])
    ben = Actor.for_user(user, defs.registry)
    item = ItemService(session, ben, defs.registry).create("bike_loan", {"title": "Blue bike"})
    assert item.created_by_id == user.id

    # a role another definition already has is refused, on its line
    clash = "roles:\n  - key: dsl\n    name: Another lead\n    capabilities: [items.view]\n"
    problems = defs.check("bike_loan", Texts(**{**defs.texts_of("bike_loan").__dict__, "roles_yaml": clash})).problems
    assert [(p.file, p.line, p.message) for p in problems] == [
        ("roles.yaml", 2, "role 'dsl' is defined twice"),
        ("type.yaml", 10, "role 'bike_officer' does not exist"),
    ]


def test_export_writes_the_folder_format_that_tracker_check_loads(defs, tmp_path):
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan")
    written = defs.export("bike_loan", tmp_path / "out")
    names = sorted(str(p.relative_to(tmp_path / "out")) for p in written)
    assert names == [
        "tracker_types/bike_loan/schema.json",
        "tracker_types/bike_loan/type.yaml",
        "workflows/bike_loan.yaml",
    ]
    loaded = load_registry([tmp_path / "out"])
    assert loaded.problems == [] and loaded.types["bike_loan"].name == "Bike loan"

    # a file type exports its files, with the workflow it uses
    defs.export("concern", tmp_path / "concern.zip")
    with zipfile.ZipFile(tmp_path / "concern.zip") as archive:
        assert sorted(archive.namelist()) == [
            "tracker_types/concern/schema.json",
            "tracker_types/concern/type.yaml",
            "workflows/safeguarding.yaml",
        ]
        assert (
            archive.read("tracker_types/concern/type.yaml").decode()
            == (TEST_DEFINITIONS / "tracker_types/concern/type.yaml").read_text()
        )

    with pytest.raises(ValidationFailed) as refused:
        defs.export("bike_loan", tmp_path / "out")
    assert "already exists" in refused.value.problems[0].message


def test_import_checks_like_tracker_check_and_is_all_or_nothing(defs, session, tmp_path):
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan")
    defs.export("bike_loan", tmp_path / "good")
    defs.export("bike_loan", tmp_path / "good.zip")

    [imported] = defs.import_folder(tmp_path / "good", key="scooter_loan", note="from the other office")
    assert (imported.definition.type_key, imported.definition.version, imported.entry.action) == (
        "scooter_loan",
        1,
        "import",
    )
    assert defs.registry.type("scooter_loan").workflow == "scooter_loan"
    [again] = defs.import_folder(tmp_path / "good.zip")
    assert (again.definition.type_key, again.definition.version) == ("bike_loan", 2)

    broken = tmp_path / "good" / "tracker_types" / "bike_loan" / "type.yaml"
    broken.write_text(broken.read_text().replace("list_columns:\n- title\n", "list_columns:\n- colour\n"))
    before = counts(session)
    with pytest.raises(DefinitionRejected) as refused:
        defs.import_folder(tmp_path / "good")
    [problem] = refused.value.definition_problems
    assert problem.file == str(broken)
    assert broken.read_text().splitlines()[problem.line - 1] == "- colour"
    assert counts(session) == before

    (tmp_path / "files").mkdir()
    defs.export("concern", tmp_path / "files" / "concern")
    with pytest.raises(PermissionDenied) as refused:
        defs.import_folder(tmp_path / "files" / "concern")
    assert "--key" in refused.value.advice
    with pytest.raises(ValidationFailed) as refused:
        defs.import_folder(tmp_path / "files")
    assert "holds no tracker type" in refused.value.problems[0].message
    assert counts(session) == before


def test_a_publish_reaches_another_process_without_a_restart(db_url, tmp_path):
    def runtime() -> Runtime:
        return Runtime(
            Settings(instance_path=tmp_path, database_url=db_url, definitions_path=[TEST_DEFINITIONS], secret_key="x")
        )

    web, worker = runtime(), runtime()
    assert "bike_loan" not in worker.registry.types
    assert worker.refresh_definitions() is False
    with web.session() as session:
        service = web.definitions(session, Actor.system())
        service.create("bike_loan", "Bike loan")
        texts = service.texts_of("bike_loan")
        tasklist = "tasklists:\n- {key: open_loans, label: Open loans, filter: {status_category: [open]}}\n"
        service.save_draft("bike_loan", Texts(texts.schema_json, texts.type_yaml + tasklist, texts.workflow_yaml))
        service.publish("bike_loan")
    assert "bike_loan" in web.registry.types  # the publishing process at once
    # the task list's index is derived at the publish, as 'tracker db indexes' would
    assert any(name.startswith("ix_tl_bike_loan_") for name in indexes.existing_names(web.engine))
    assert worker.refresh_definitions() is True  # another on its next request
    assert worker.registry.type("bike_loan").version == 1
    relay_view = worker.relay().registry
    assert relay_view.type("bike_loan").version == 1
    with worker.session() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0


def test_two_publishes_at_the_same_moment_one_wins(defs, session, registry, engine):
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan")
    edit(defs, "bike_loan", type_yaml=defs.texts_of("bike_loan").type_yaml.replace("Bike loan", "Bicycle loan"))
    defs.publish("bike_loan")
    with Session(engine, expire_on_commit=False) as other_session:
        other = DefinitionService(other_session, Actor.system(), defs.registry)
        stale = other.published("bike_loan", 2)
        defs.rollback("bike_loan", 1)  # takes version 3 first
        other._newest_published = lambda key: stale  # what the other admin's page saw
        before = counts(session)
        with pytest.raises(Conflict) as lost:
            other.rollback("bike_loan", 1)
        assert "at the same moment" in lost.value.message
        assert counts(session) == before


def test_an_oversized_zip_is_refused(defs, session, tmp_path):
    bundle = tmp_path / "many.zip"
    with zipfile.ZipFile(bundle, "w") as archive:
        for i in range(501):
            archive.writestr(f"junk/{i}.txt", "x")
    before = counts(session)
    with pytest.raises(ValidationFailed) as refused:
        defs.import_folder(bundle)
    assert "holds more than 500 files" in refused.value.problems[0].message
    big = tmp_path / "big.zip"
    with zipfile.ZipFile(big, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("tracker_types/huge/type.yaml", "#" * (600 * 1024))
    with pytest.raises(ValidationFailed) as refused:
        defs.import_folder(big)
    assert "is too large" in refused.value.problems[0].message
    assert counts(session) == before
