"""The type editor (/admin/types) through the Flask test client, on both databases: building a
type's fields, documents with live checking, preview, workflow, task lists with their live
count, roles, publish with refusals and history, rollback, migration, export and import; and
every refusal with its message and nothing changed."""

from __future__ import annotations

import html
import io
import json
import re
import zipfile

import pytest
import yaml
from sqlalchemy import func, select

from engine.models import DefinitionPublish, Event, Item, TypeDefinition
from engine.permissions import Actor
from tests import webhelpers
from tests.job_helpers import finished_page
from tests.webhelpers import create_users, csrf, sign_in

#: fixtures from tests/webhelpers.py (cheap_hashing is autouse)
cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


@pytest.fixture
def app(new_app):
    app = new_app(RATELIMIT_ENABLED=False)
    create_users(app, boss=["admin"], clerk=["tracker_creator"])
    return app


@pytest.fixture
def admin(app):
    client = app.test_client()
    sign_in(client, "boss")
    return client


def page_text(response) -> str:
    """The page as a reader sees its text: entities such as &#39; decoded."""
    return html.unescape(response.get_data(as_text=True))


def post(client, url: str, data: dict | None = None, token_from: str | None = None):
    return client.post(url, data={**(data or {}), "csrf_token": csrf(client, token_from or url)})


def texts_of(app, key: str) -> TypeDefinition:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        return rt.definitions(session, Actor.system()).texts_of(key)


def state(app) -> tuple:
    """Everything a refused change must leave as it was."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        rows = session.execute(
            select(
                TypeDefinition.type_key,
                TypeDefinition.version,
                TypeDefinition.status,
                TypeDefinition.schema_json,
                TypeDefinition.type_yaml,
                TypeDefinition.workflow_yaml,
                TypeDefinition.roles_yaml,
            ).order_by(TypeDefinition.id)
        ).all()
        log = session.scalar(select(func.count()).select_from(DefinitionPublish))
        return tuple(map(tuple, rows)), log


def new_type(admin, key: str = "bike_loan", name: str = "Bike loan") -> None:
    r = post(admin, "/admin/types/new", {"key": key, "name": name, "subject": "none", "copy_from": ""})
    assert r.status_code == 303, page_text(r)


def field_action(admin, key: str, **data):
    return post(admin, f"/admin/types/{key}/fields", data, token_from=f"/admin/types/{key}/fields")


def test_only_types_admin_gets_in(app, admin):
    clerk = app.test_client()
    sign_in(clerk, "clerk")
    page = clerk.get("/admin/types")
    assert page.status_code == 403
    assert "types.admin" in page_text(page)
    assert 'id="nav-types"' not in page_text(clerk.get("/"))
    assert app.test_client().get("/admin/types").status_code == 302  # signed out: to the sign-in page
    assert 'id="nav-types"' in page_text(admin.get("/"))
    listing = page_text(admin.get("/admin/types"))
    assert 'id="type-concern"' in listing and "Definition files" in listing


def test_a_type_from_files_is_read_only_and_can_be_copied(app, admin):
    assert admin.get("/admin/types/concern").headers["Location"].endswith("/admin/types/concern/view")
    view = page_text(admin.get("/admin/types/concern/view"))
    assert "read-only here" in view and "<svg" in view and "key: concern" in view
    before = state(app)
    refused = admin.get("/admin/types/concern/fields")
    assert refused.status_code == 403 and "Copy it" in page_text(refused)
    refused = post(admin, "/admin/types/concern/fields", {"action": "add", "name": "x", "kind": "text"}, "/admin/types")
    assert refused.status_code == 403
    assert state(app) == before

    copy = post(
        admin,
        "/admin/types/new",
        {"key": "concern_copy", "name": "Concern copy", "subject": "none", "copy_from": "concern"},
    )
    assert copy.status_code == 303
    assert "key: concern_copy" in texts_of(app, "concern_copy").workflow_yaml


def test_new_type_refusals_keep_what_was_typed(app, admin):
    new_type(admin)
    before = state(app)
    for key, message in [
        ("bike_loan", "There is already a type"),
        ("Bike Loan", "cannot be a type key"),
        ("concern", "in definition files"),
    ]:
        r = post(admin, "/admin/types/new", {"key": key, "name": "Other", "subject": "none", "copy_from": ""})
        page = page_text(r)
        assert r.status_code == 422 and message in page
        assert f'value="{key}"' in page and 'value="Other"' in page
    r = post(admin, "/admin/types/new", {"key": "scooter", "name": "", "subject": "none", "copy_from": ""})
    assert r.status_code == 422 and "The name is empty" in page_text(r)
    assert state(app) == before


def test_building_fields_a_repeating_group_and_a_conditional_field(app, admin):
    new_type(admin)
    for data in [
        {"name": "colour", "kind": "choice", "title": "Colour"},
        {"name": "needs_lock", "kind": "boolean", "title": "Needs a lock"},
        {"name": "lock_code", "kind": "text", "title": "Lock code"},
        {"name": "checks", "kind": "repeating", "title": "Safety checks"},
    ]:
        r = field_action(admin, "bike_loan", action="add", parent="", **data)
        assert r.status_code == 303, page_text(r)
    assert (
        field_action(
            admin, "bike_loan", action="add", parent="checks", name="on", kind="date", title="Checked on"
        ).status_code
        == 303
    )
    r = field_action(
        admin,
        "bike_loan",
        action="update",
        path="colour",
        title="Colour",
        kind="choice",
        options="red | Red\nblue | Blue",
        help="The frame colour",
        section="Bike",
        new_name="colour",
        condition_field="",
        required="1",
    )
    assert r.status_code == 303
    r = field_action(
        admin,
        "bike_loan",
        action="update",
        path="lock_code",
        title="Lock code",
        kind="text",
        new_name="lock_code",
        condition_field="needs_lock",
        condition_value="yes",
        minimum="4",
        maximum="8",
        pattern="^[0-9]+$",
        help="",
    )
    assert r.status_code == 303
    assert field_action(admin, "bike_loan", action="up", path="checks").status_code == 303

    schema = json.loads(texts_of(app, "bike_loan").schema_json)
    assert list(schema["properties"]) == ["title", "colour", "needs_lock", "checks", "lock_code"]
    assert schema["properties"]["colour"]["oneOf"] == [
        {"const": "red", "title": "Red"},
        {"const": "blue", "title": "Blue"},
    ]
    assert schema["properties"]["checks"]["items"]["properties"]["on"] == {
        "title": "Checked on",
        "type": "string",
        "format": "date",
    }
    assert schema["properties"]["lock_code"] | {} == {
        "title": "Lock code",
        "type": "string",
        "minLength": 4,
        "maxLength": 8,
        "pattern": "^[0-9]+$",
    }
    assert schema["allOf"] == [
        {
            "if": {"properties": {"needs_lock": {"const": True}}, "required": ["needs_lock"]},
            "then": {"required": ["lock_code"]},
        }
    ]
    assert "colour" in schema["required"]
    manifest = yaml.safe_load(texts_of(app, "bike_loan").type_yaml)
    assert manifest["layout"] == [{"section": "Bike", "fields": ["colour"]}]

    page = page_text(admin.get("/admin/types/bike_loan/fields"))
    assert "when needs_lock is True" in page and 'class="depth-1"' in page

    # the generated form: the repeating group and the conditional field
    preview = page_text(admin.get("/admin/types/bike_loan/preview"))
    assert 'id="add-data-checks"' in preview and "data-show-when" in preview and 'id="field-data-lock_code"' in preview
    tried = post(
        admin,
        "/admin/types/bike_loan/preview",
        {"data-title": "Red bike", "data-colour": "red", "data-needs_lock": "y", "try": "1"},
    )
    assert tried.status_code == 422 and "Lock code" in page_text(tried)
    ok = post(admin, "/admin/types/bike_loan/preview", {"data-title": "Red bike", "data-colour": "red", "try": "1"})
    assert ok.status_code == 200 and 'id="try-ok"' in page_text(ok)
    row = post(admin, "/admin/types/bike_loan/preview", {"data-title": "Red bike", "add_row": "data-checks"})
    assert 'id="data-checks-0-on"' in page_text(row)


def test_field_refusals_change_nothing(app, admin):
    new_type(admin)
    field_action(admin, "bike_loan", action="add", parent="", name="colour", kind="text", title="Colour")
    before = state(app)
    cases = [
        ({"action": "add", "parent": "", "name": "colour", "kind": "text"}, "There is already a field 'colour'"),
        ({"action": "add", "parent": "", "name": "Bad Name", "kind": "text"}, "cannot be a field name"),
        ({"action": "add", "parent": "", "name": "size", "kind": "hologram"}, "is not a kind of field"),
        ({"action": "add", "parent": "colour", "name": "x", "kind": "text"}, "is not a group of fields"),
        (
            {"action": "update", "path": "colour", "new_name": "title", "kind": "text"},
            "There is already a field 'title' beside 'colour'",
        ),
        (
            {"action": "update", "path": "colour", "new_name": "colour", "kind": "text", "pattern": "(["},
            "The pattern does not compile",
        ),
        (
            {"action": "update", "path": "colour", "new_name": "colour", "kind": "text", "minimum": "lots"},
            "'lots' is not a number",
        ),
        (
            {
                "action": "update",
                "path": "colour",
                "new_name": "colour",
                "kind": "text",
                "condition_field": "nope",
                "condition_value": "x",
            },
            "is not another field",
        ),
        ({"action": "remove", "path": "nope"}, "There is no field 'nope'"),
    ]
    for data, message in cases:
        r = field_action(admin, "bike_loan", **data)
        assert r.status_code == 422, (data, r.status_code)
        assert message in page_text(r), data
    assert state(app) == before


def test_documents_are_checked_live_with_lines_and_saved_as_a_draft(app, admin):
    new_type(admin)
    texts = texts_of(app, "bike_loan")
    body = {
        "schema_json": texts.schema_json,
        "type_yaml": texts.type_yaml.replace("list_columns:\n- title", "list_columns:\n- colour"),
        "workflow_yaml": texts.workflow_yaml,
        "roles_yaml": "",
    }
    r = admin.post(
        "/admin/types/bike_loan/check",
        json=body,
        headers={"X-CSRFToken": csrf(admin, "/admin/types/bike_loan/documents")},
    )
    assert r.status_code == 200
    [problem] = r.get_json()["problems"]
    assert problem | {} == {
        "document": "type.yaml",
        "line": 8,
        "pointer": "/list_columns/0",
        "message": "field 'colour' is not a property of schema.json",
        "advice": "Use one of: title.",
        "text": problem["text"],
    }
    assert problem["text"].startswith("type.yaml:8: /list_columns/0: field 'colour'")
    bad = admin.post(
        "/admin/types/bike_loan/check",
        data="nonsense",
        headers={"X-CSRFToken": csrf(admin, "/admin/types/bike_loan/documents")},
    )
    assert bad.status_code == 400 and "JSON object" in bad.get_json()["error"]

    # a broken document is kept as the draft (work in progress), with the problem on its line
    saved = post(admin, "/admin/types/bike_loan/documents", {**body, "type_yaml": "key: bike_loan\nname: [unclosed\n"})
    assert saved.status_code == 303
    page = page_text(admin.get("/admin/types/bike_loan/documents"))
    assert '<li class="bad" title="not valid YAML' in page and "Line 3: not valid YAML" in page
    refused = field_action(admin, "bike_loan", action="add", parent="", name="colour", kind="text")
    assert refused.status_code == 422 and "needs documents that parse" in page_text(refused)
    assert "The type.yaml document is not valid YAML (line 3)" in page_text(refused)

    too_big = post(admin, "/admin/types/bike_loan/documents", {**body, "roles_yaml": "#" * (600 * 1024)})
    assert too_big.status_code == 422 and "is larger than 512 KB" in page_text(too_big)


def test_workflow_editor_and_diagram(app, admin):
    new_type(admin)
    url = "/admin/types/bike_loan/workflow"
    assert (
        post(admin, url, {"action": "add_state", "key": "lost", "label": "Lost", "category": "cancelled"}).status_code
        == 303
    )
    assert (
        post(
            admin,
            url,
            {"action": "add_transition", "key": "lose", "label": "Report lost", "from": ["open"], "to": "lost"},
        ).status_code
        == 303
    )
    r = post(
        admin,
        url,
        {
            "action": "save_transition",
            "transition": "lose",
            "label-lose": "Report it lost",
            "from-lose": ["*"],
            "to-lose": "lost",
            "roles-lose": ["tracker_creator"],
            "requires-lose": ["title"],
            "condition-lose": "data.title != ''",
            "actions-lose": "- {notify: creator}",
        },
    )
    assert r.status_code == 303
    wf = yaml.safe_load(texts_of(app, "bike_loan").workflow_yaml)
    assert wf["transitions"][-1] == {
        "key": "lose",
        "from": "*",
        "to": "lost",
        "label": "Report it lost",
        "roles": ["tracker_creator"],
        "requires": ["title"],
        "condition": "data.title != ''",
        "actions": [{"notify": "creator"}],
    }
    page = page_text(admin.get(url))
    assert "<svg" in page and 'data-state="lost"' in page and "any state: Report it lost" in page
    svg = admin.get("/admin/types/bike_loan/workflow.svg")
    assert svg.headers["Content-Type"].startswith("image/svg+xml") and b"Report it lost" in svg.data
    assert (
        post(
            admin,
            url,
            {
                "action": "save_states",
                "state": ["open", "done", "lost"],
                "label-open": "Out",
                "category-open": "open",
                "label-done": "Back",
                "category-done": "done",
                "label-lost": "Lost",
                "category-lost": "cancelled",
                "initial": "open",
            },
        ).status_code
        == 303
    )
    assert yaml.safe_load(texts_of(app, "bike_loan").workflow_yaml)["states"][0]["label"] == "Out"

    before = state(app)
    for data, message in [
        ({"remove_state": "lost"}, "Transitions lead to or from 'lost': lose"),
        (
            {"action": "add_state", "key": "open", "label": "Again", "category": "open"},
            "There is already a state 'open'",
        ),
        (
            {
                "action": "save_transition",
                "transition": "lose",
                "from-lose": ["open"],
                "to-lose": "lost",
                "actions-lose": "notify: [x",
            },
            "The actions are not a YAML list",
        ),
        ({"action": "add_transition", "key": "x", "label": "X", "to": "lost"}, "Pick at least one state"),
    ]:
        r = post(admin, url, data)
        assert r.status_code == 422 and message in page_text(r), data
    assert state(app) == before


def test_tasklists_are_counted_live_from_the_draft_filter(app, admin):
    new_type(admin)
    post(admin, "/admin/types/bike_loan/publish", {"note": "first"})
    rt = app.extensions["tracker"]
    with rt.session() as session:
        items = rt.items(session, Actor.system())
        for title in ("Red", "Blue", "Red again"):
            items.create("bike_loan", {"title": title})
    url = "/admin/types/bike_loan/tasklists"
    token = csrf(admin, url)
    live = {
        "tasklist": "new",
        "new-key": "reds",
        "new-label": "Red bikes",
        "new-status_category": ["open"],
        "new-cond_field": ["title", ""],
        "new-cond_op": ["in", "eq"],
        "new-cond_value": ["Red, Red again", ""],
        "csrf_token": token,
    }
    r = admin.post(url + "/count", data=live)
    assert r.status_code == 200 and r.get_json() == {"count": 2, "problems": []}
    wrong = admin.post(url + "/count", data={**live, "new-cond_op": ["before", "eq"], "new-cond_value": ["soon", ""]})
    assert wrong.get_json()["count"] is None and "'soon' is not a date" in wrong.get_json()["problems"][0]
    empty = admin.post(url + "/count", data={**live, "new-label": ""})
    assert empty.status_code == 422 and "The label is empty" in empty.get_json()["problems"][0]

    counted = admin.post(url, data={**live, "action": "count"})
    assert (
        counted.status_code == 200
        and '<output id="count-new" aria-live="polite" for="tasklist-new">2</output>' in page_text(counted)
    )
    assert admin.post(url, data={**live, "action": "save"}).status_code == 303
    assert yaml.safe_load(texts_of(app, "bike_loan").type_yaml)["tasklists"] == [
        {
            "key": "reds",
            "label": "Red bikes",
            "filter": {
                "status_category": ["open"],
                "all": [{"field": "title", "op": "in", "value": ["Red", "Red again"]}],
            },
        }
    ]
    page = page_text(admin.get(url))
    assert '<output id="count-0" aria-live="polite" for="tasklist-0">2</output>' in page
    assert (
        admin.post(
            url, data={**{k.replace("new", "0"): v for k, v in live.items()}, "tasklist": "0", "action": "remove"}
        ).status_code
        == 303
    )
    assert "tasklists" not in yaml.safe_load(texts_of(app, "bike_loan").type_yaml)


def test_roles_editor(app, admin):
    new_type(admin)
    url = "/admin/types/bike_loan/roles"
    assert (
        post(
            admin,
            url,
            {
                "action": "add_role",
                "key": "bike_officer",
                "name": "Bike officer",
                "capabilities": ["items.view", "items.edit"],
                "scope": "own",
            },
        ).status_code
        == 303
    )
    assert (
        post(
            admin,
            url,
            {
                "action": "permissions",
                "role": ["manager", "bike_officer"],
                "custom-manager": "1",
                "cap-manager": ["items.view", "items.create"],
            },
        ).status_code
        == 303
    )
    texts = texts_of(app, "bike_loan")
    assert yaml.safe_load(texts.roles_yaml) == {
        "roles": [
            {
                "key": "bike_officer",
                "name": "Bike officer",
                "capabilities": ["items.view", "items.edit"],
                "scope": "own",
            }
        ]
    }
    assert yaml.safe_load(texts.type_yaml)["permissions"] == {"manager": ["items.create", "items.view"]}
    page = page_text(admin.get(url))
    assert (
        'id="role-bike_officer"' in page
        and 'id="cap-manager-items.create" name="cap-manager" value="items.create" checked' in page
    )
    before = state(app)
    r = post(admin, url, {"action": "add_role", "key": "bike_officer", "name": "Again", "scope": "all"})
    assert r.status_code == 422 and "already brings a role 'bike_officer'" in page_text(r)
    r = post(admin, url, {"action": "add_role", "key": "other", "name": "", "scope": "all"})
    assert r.status_code == 422 and "The role has no name" in page_text(r)
    assert state(app) == before


def test_publish_refused_with_problems_then_published_rolled_back_and_migrated(app, admin):
    new_type(admin)
    before = state(app)
    texts = texts_of(app, "bike_loan")
    post(
        admin,
        "/admin/types/bike_loan/documents",
        {
            "schema_json": texts.schema_json.replace('"string"', '"strng"'),
            "type_yaml": texts.type_yaml,
            "workflow_yaml": texts.workflow_yaml,
            "roles_yaml": "",
        },
    )
    refused = post(admin, "/admin/types/bike_loan/publish", {"note": "broken"})
    page = page_text(refused)
    assert refused.status_code == 422 and 'id="publish-refused"' in page
    assert "<code>schema.json:7</code> <code>/properties/title/type</code>: not a valid JSON Schema" in page
    assert state(app)[1] == before[1]  # nothing published
    post(
        admin,
        "/admin/types/bike_loan/documents",
        {
            "schema_json": texts.schema_json,
            "type_yaml": texts.type_yaml,
            "workflow_yaml": texts.workflow_yaml,
            "roles_yaml": "",
        },
    )

    published = post(admin, "/admin/types/bike_loan/publish", {"note": "first"})
    assert published.status_code == 303
    assert "Published version 1 of bike_loan" in page_text(admin.get(published.headers["Location"]))
    clerk = app.test_client()
    sign_in(clerk, "clerk")
    created = post(clerk, "/items/new?type=bike_loan", {"data-title": "Red bike", "save": "1"})
    assert created.status_code == 303
    item_id = int(created.headers["Location"].rsplit("/", 1)[1])

    # version 2 renames the field through the builder: a migration is declared with it
    r = field_action(
        admin,
        "bike_loan",
        action="update",
        path="title",
        title="Bike",
        kind="text",
        new_name="bike",
        condition_field="",
        required="1",
    )
    assert r.status_code == 303 and r.headers["Location"].endswith("edit=bike")
    manifest = yaml.safe_load(texts_of(app, "bike_loan").type_yaml)
    assert manifest["migrations"] == [{"rename": {"from": "title", "to": "bike"}}]
    assert manifest["title"] == "{{ data.bike }}" and manifest["list_columns"] == ["bike"]
    publish_page = page_text(admin.get("/admin/types/bike_loan/publish"))
    assert "-    &#34;title&#34;" in publish_page or '-    "title"' in publish_page
    assert post(admin, "/admin/types/bike_loan/publish", {"note": "rename"}).status_code == 303

    preview = page_text(admin.get("/admin/types/bike_loan/migrate"))
    assert (
        '<dd id="items-1">1</dd>' in preview
        and '<dd id="change-1">1</dd>' in preview
        and '<dd id="fail-1">0</dd>' in preview
    )
    assert "rename title to bike" in preview
    started = post(admin, "/admin/types/bike_loan/migrate")
    assert re.fullmatch(r"/admin/types/bike_loan/migrate/jobs/\d+", started.headers["Location"])
    _url, done = finished_page(admin, started)
    assert "Migrated 1 item to version 2." in done and '<dd id="failed-count">0</dd>' in done
    rt = app.extensions["tracker"]
    with rt.session() as session:
        item = session.get(Item, item_id)
        assert (item.type_version, item.data) == (2, {"bike": "Red bike"})
        assert (
            session.scalar(select(Event.kind).where(Event.item_id == item_id).order_by(Event.id.desc()).limit(1))
            == "migrated"
        )
    item_page = page_text(clerk.get(f"/items/{item_id}"))
    assert 'id="data-bike"' in item_page and 'value="Red bike"' in item_page
    assert "migrated it from version 1 to version 2 of its type (rename title to bike)" in item_page
    assert 'id="nothing-to-migrate"' in page_text(admin.get("/admin/types/bike_loan/migrate"))

    history = page_text(admin.get("/admin/types/bike_loan/publish"))
    assert 'id="version-2"' in history and 'id="rollback-1"' in history and 'id="rollback-2"' not in history
    rolled = post(admin, "/admin/types/bike_loan/rollback", {"version": "1"}, "/admin/types/bike_loan/publish")
    assert rolled.status_code == 303
    assert "Published the documents of version 1 again as version 3" in admin.get(rolled.headers["Location"]).get_data(
        as_text=True
    )
    before = state(app)
    again = post(admin, "/admin/types/bike_loan/rollback", {"version": "3"}, "/admin/types/bike_loan/publish")
    assert again.status_code == 422 and "already the current version" in page_text(again)
    assert state(app) == before


def test_export_and_import_as_a_zip(app, admin):
    new_type(admin)
    post(admin, "/admin/types/bike_loan/publish", {"note": "first"})
    exported = admin.get("/admin/types/bike_loan/export.zip")
    assert exported.status_code == 200 and exported.headers["Content-Type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(exported.data)) as archive:
        assert sorted(archive.namelist()) == [
            "tracker_types/bike_loan/schema.json",
            "tracker_types/bike_loan/type.yaml",
            "workflows/bike_loan.yaml",
        ]
    token = csrf(admin, "/admin/types")
    imported = admin.post(
        "/admin/types/import",
        data={"csrf_token": token, "key": "scooter", "bundle": (io.BytesIO(exported.data), "bike_loan.zip")},
    )
    assert imported.status_code == 303
    assert 'id="type-scooter"' in page_text(admin.get("/admin/types"))

    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(exported.data)) as src, zipfile.ZipFile(broken, "w") as dst:
        for name in src.namelist():
            text = src.read(name).decode()
            dst.writestr(
                name,
                text.replace("list_columns:\n- title", "list_columns:\n- colour")
                if name.endswith("type.yaml")
                else text,
            )
    before = state(app)
    refused = admin.post(
        "/admin/types/import", data={"csrf_token": token, "bundle": (io.BytesIO(broken.getvalue()), "broken.zip")}
    )
    page = page_text(refused)
    assert refused.status_code == 422 and "Nothing was imported" in page
    assert re.search(r"broken\.zip:tracker_types/bike_loan/type\.yaml:8</code> <code>/list_columns/0</code>", page)
    assert state(app) == before
    none = admin.post("/admin/types/import", data={"csrf_token": token})
    assert none.status_code == 302
