"""Each hook doing its job: definition folders, field validators (their errors are real
validation errors), lookups, widgets, item lifecycle hooks run from the outbox, export and
import formats, web pages and menu links; and each failing without taking anything down."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from flask import Blueprint
from sqlalchemy import select

from engine.definitions import load_registry
from engine.definitions.plugin_refs import check_plugin_references
from engine.errors import PermissionDenied, ValidationFailed
from engine.hookspecs import hookimpl
from engine.models import Item, Outbox, utcnow
from engine.permissions import Actor
from engine.plugins import FieldWidget, Invalid, LookupResult, LookupUnavailable, MenuLink, html_attrs
from engine.services.exports import Column, ExportFormat, export_items
from tests.conftest import LEARNER, TEST_DEFINITIONS
from tests.plugin_helpers import *  # noqa: F403 - fixtures
from tests.plugin_helpers import host_of, write_type
from tests.webhelpers import create_users, csrf, sign_in


class Gadgets:
    """A test plugin: the gadget type's folder, two checks, a lookup, two widgets."""

    def __init__(self, folder) -> None:
        self.folder = folder
        self.crashes = False

    @hookimpl
    def tracker_definition_folders(self):
        return [self.folder]

    @hookimpl
    def tracker_field_validators(self):
        def even(value, schema):
            if value % 2:
                raise Invalid("must be an even number", "Use 2, 4, 6 and so on.")

        def crashes(value, schema):
            raise ZeroDivisionError("bug in the check")

        return {"even": even, "crashes": crashes}

    @hookimpl
    def tracker_lookups(self):
        def town(params):
            q = params.get("q", "").upper()
            if q == "DOWN":
                raise LookupUnavailable("The town service is not answering just now.")
            if q == "BUG":
                raise KeyError("oops")
            if not q.startswith("LS"):
                raise Invalid("That is not a Leeds postcode.", "Leeds postcodes start with LS.")
            return [LookupResult("Leeds, West Yorkshire", {"town": "Leeds"})]

        return {"town": town}

    @hookimpl
    def tracker_field_widgets(self):
        def swatch(ctx):
            attrs = html_attrs({"type": "color", "name": ctx.name, "id": ctx.id, "value": ctx.value or "#000000"})
            return f"<input {attrs} {html_attrs(ctx.attrs)}>"

        def broken(ctx):
            raise RuntimeError("widget bug")

        return [FieldWidget("swatch", swatch), FieldWidget("broken", broken)]


@pytest.fixture
def gadgets(gadget_folder):
    return Gadgets(gadget_folder)


#: a type whose schema each test gives
BARE_TYPE = 'key: gadget\nname: Gadget\nversion: 1\nworkflow: record\nsubject: none\ntitle: "Gadget"\n'


# -- definition folders and field validators ---------------------------------------------------------


def test_a_plugin_definitions_folder_is_loaded_and_its_checks_are_real_validation_errors(gadgets, runtime_with):
    rt = runtime_with(host_of(("gadgets", gadgets)))
    assert "gadget" in rt.registry.types and rt.registry.problems == []
    with rt.session() as session:
        items = rt.items(session, Actor.system())
        item = items.create("gadget", {"name": "Widget", "count": 4, "parts": [{"size": 2}]})
        with pytest.raises(ValidationFailed) as refused:
            items.create("gadget", {"name": "Odd", "count": 3, "parts": [{"size": 2}, {"size": 5}]})
        problems = {p.path: p for p in refused.value.problems}
        assert set(problems) == {"/count", "/parts/1/size"}
        assert problems["/count"].message == "Count must be an even number"
        assert problems["/count"].advice == "Use 2, 4, 6 and so on."
        assert problems["/parts/1/size"].message == "Size (row 2) must be an even number"
        # the type's own keywords speak first: a string is not "odd", it is not a number
        with pytest.raises(ValidationFailed) as wrong_type:
            items.create("gadget", {"name": "Text", "count": "three"})
        assert [p.message for p in wrong_type.value.problems] == ["Count must be a whole number"]
        with pytest.raises(ValidationFailed):
            items.update(item.id, changes={"count": 7})
        assert session.scalar(select(Item.data).where(Item.id == item.id))["count"] == 4
        assert session.scalar(select(Item.id).where(Item.title == "Gadget Odd")) is None


class Workshop:
    """A test plugin whose definitions folder brings a workflow and a role with its type."""

    def __init__(self, folder) -> None:
        self.folder = folder

    @hookimpl
    def tracker_definition_folders(self):
        return [self.folder]


WORKSHOP_FLOW = """key: repair
name: Repair
states:
  - {key: booked, label: Booked, initial: true}
  - {key: fixed, label: Fixed, category: done}
transitions:
  - {key: fix, from: [booked], to: fixed, label: Mark fixed, roles: [technician]}
"""

WORKSHOP_ROLES = """roles:
  - key: technician
    name: Workshop technician
    capabilities: [items.create, items.view, items.transition]
"""


def test_a_plugin_definitions_folder_brings_its_own_workflows_and_roles(tmp_path, runtime_with):
    type_yaml = 'key: repair_job\nname: Repair job\nversion: 1\nworkflow: repair\nsubject: none\ntitle: "Repair"\n'
    schema = {"type": "object", "properties": {"what": {"type": "string", "title": "What"}}}
    folder = write_type(tmp_path / "workshop_defs", "repair_job", type_yaml, schema)
    (folder / "workflows").mkdir()
    (folder / "workflows" / "repair.yaml").write_text(WORKSHOP_FLOW)
    (folder / "roles.yaml").write_text(WORKSHOP_ROLES)
    rt = runtime_with(host_of(("workshop", Workshop(folder))))
    registry = rt.registry
    assert registry.problems == []
    assert "repair" in registry.workflows and registry.types["repair_job"].workflow == "repair"
    assert registry.roles["technician"].name == "Workshop technician"
    with rt.session() as session:
        tech, _ = rt.users(session).create("tess", ["technician"])
        clerk, _ = rt.users(session).create("carl", ["tracker_creator"])
        actor = Actor.for_user(tech, rt.registry)
        item = rt.items(session, actor).create("repair_job", {"what": "Kettle"})
        with pytest.raises(PermissionDenied):  # the plugin's workflow names its own role only
            rt.items(session, Actor.for_user(clerk, rt.registry)).transition(item.id, transition="fix")
        assert rt.items(session, actor).transition(item.id, transition="fix").status == "fixed"


def test_a_crashing_check_refuses_the_save_and_is_recorded(gadgets, runtime_with):
    rt = runtime_with(host_of(("gadgets", gadgets)))
    with rt.session() as session, pytest.raises(ValidationFailed) as refused:
        rt.items(session, Actor.system()).create("gadget", {"name": "G", "serial": "S-1"})
    [problem] = refused.value.problems
    assert problem.path == "/serial" and problem.message == "Serial could not be checked"
    assert "'crashes' check failed" in problem.advice
    [error] = rt.plugins.errors.recent
    assert (error.plugin, error.hook) == ("gadgets", "validator crashes") and "bug in the check" in error.message


def test_x_validator_naming_a_check_no_plugin_gives_is_a_definition_problem(tmp_path):
    schema = {
        "type": "object",
        "properties": {"code": {"type": "string", "title": "Code", "x-validator": ["even", "nope"]}},
    }
    folder = write_type(tmp_path / "defs", "gadget", BARE_TYPE, schema)
    registry = load_registry([folder])
    check_plugin_references(registry, {"even"})
    [problem] = registry.problems
    assert problem.file.endswith("tracker_types/gadget/schema.json")
    assert problem.pointer == "/properties/code/x-validator" and problem.line == 7
    assert "x-validator 'nope' is not given by any enabled plugin" in problem.message
    assert "Use one of: even" in problem.advice
    assert "gadget" not in registry.types  # a broken type is skipped, the others load
    assert "learner" in registry.types


def test_tracker_check_reports_a_missing_check_with_file_line_and_pointer(tmp_path, run):
    schema = {"type": "object", "properties": {"phone": {"type": "string", "x-validator": "not_a_check"}}}
    folder = write_type(tmp_path / "defs", "gadget", BARE_TYPE, schema)
    result = run("check", str(folder), ok=False)
    assert result.returncode == 1
    assert "schema.json:6: /properties/phone/x-validator: x-validator 'not_a_check' is not given" in result.stdout
    assert "mobile_number" in result.stdout  # the SMS plugin's check is offered


def test_a_malformed_x_lookup_is_a_definition_problem(tmp_path):
    schema = {"type": "object", "properties": {"pc": {"type": "string", "x-lookup": {"inputs": {"q": "pc"}}}}}
    registry = load_registry([write_type(tmp_path / "defs", "gadget", BARE_TYPE, schema)])
    check_plugin_references(registry, set())
    assert [p.message for p in registry.problems] == ["x-lookup must be a lookup's name or an object with a name"]


# -- on the web: form errors, widgets, lookups -------------------------------------------------------


@pytest.fixture
def gadget_app(app_with, gadgets):
    app = app_with(host_of(("gadgets", gadgets)))
    create_users(app, maker=["tracker_creator"])
    client = app.test_client()
    sign_in(client, "maker")
    return app, client


def test_a_check_failing_on_the_form_shows_on_its_field_and_nothing_is_saved(gadget_app):
    app, client = gadget_app
    page = client.get("/items/new?type=gadget")
    assert page.status_code == 200
    response = client.post(
        "/items/new?type=gadget",
        data={"csrf_token": csrf(client, "/items/new?type=gadget"), "data-name": "Odd", "data-count": "3", "save": "1"},
    )
    html = response.get_data(as_text=True)
    assert response.status_code == 422
    assert 'id="data-count-error"' in html and "Count must be an even number." in html and "Use 2, 4, 6" in html
    with app.extensions["tracker"].session() as session:
        assert session.scalar(select(Item.id).where(Item.type_key == "gadget")) is None


def test_a_plugin_widget_draws_its_field_and_a_failing_one_falls_back(gadget_app):
    app, client = gadget_app
    html = client.get("/items/new?type=gadget").get_data(as_text=True)
    assert '<input type="color" name="data-colour" id="data-colour" value="#000000"' in html
    assert '<input id="data-shade" name="data-shade" type="text" value="">' in html
    errors = [(e.plugin, e.hook) for e in app.extensions["tracker"].plugins.errors.recent]
    assert ("gadgets", "widget broken") in errors
    response = client.post(
        "/items/new?type=gadget",
        data={
            "csrf_token": csrf(client, "/items/new?type=gadget"),
            "data-name": "Blue one",
            "data-colour": "#0000ff",
            "save": "1",
        },
    )
    assert response.status_code == 303
    with app.extensions["tracker"].session() as session:
        assert session.scalar(select(Item.data).where(Item.type_key == "gadget"))["colour"] == "#0000ff"


def test_a_lookup_field_gets_a_button_and_the_endpoint_answers_json(gadget_app):
    app, client = gadget_app
    html = client.get("/items/new?type=gadget").get_data(as_text=True)
    assert 'data-lookup-url="/lookups/town"' in html and 'data-lookup-scope="data"' in html
    assert 'data-lookup-inputs="{&#34;q&#34;: &#34;postcode&#34;}"' in html and ">Find the town<" in html
    ok = client.get("/lookups/town?q=LS1 4AP")
    assert ok.status_code == 200 and ok.get_json() == {
        "results": [{"label": "Leeds, West Yorkshire", "values": {"town": "Leeds"}}]
    }
    refused = client.get("/lookups/town?q=SW1A 1AA")
    assert refused.status_code == 422 and refused.get_json()["message"] == "That is not a Leeds postcode."
    down = client.get("/lookups/town?q=down")
    assert down.status_code == 503 and "not answering" in down.get_json()["message"]
    assert "you can still save" in down.get_json()["advice"]
    crashed = client.get("/lookups/town?q=bug")
    assert crashed.status_code == 502 and crashed.get_json()["message"] == "The lookup failed."
    assert ("gadgets", "lookup town") in [(e.plugin, e.hook) for e in app.extensions["tracker"].plugins.errors.recent]
    unknown = client.get("/lookups/nope")
    assert unknown.status_code == 404 and "There is no lookup 'nope'" in unknown.get_json()["message"]
    anonymous = app.test_client().get("/lookups/town?q=LS1")
    assert anonymous.status_code == 401 and anonymous.is_json


# -- the item lifecycle, from the outbox -------------------------------------------------------------


class Watcher:
    """Records each lifecycle call; ``fail`` makes the next calls raise."""

    def __init__(self, rt_holder: list) -> None:
        self.calls: list[tuple] = []
        self.fail = 0
        self.rt_holder = rt_holder

    def _seen_committed(self, item) -> bool:
        rt = self.rt_holder[0]
        with rt.session() as other:  # another connection sees only what was committed
            return other.get(Item, item.id) is not None

    @hookimpl
    def tracker_item_created(self, item, payload):
        self.calls.append(("created", item.id, payload["actor"], self._seen_committed(item)))

    @hookimpl
    def tracker_item_updated(self, item, payload):
        self.calls.append(("updated", item.id, tuple(payload["paths"])))

    @hookimpl
    def tracker_item_transitioned(self, item, payload):
        self.calls.append(("transitioned", payload["from"], payload["to"]))

    @hookimpl
    def tracker_item_assigned(self, item, payload):
        self.calls.append(("assigned", payload["from"], payload["to"]))

    @hookimpl
    def tracker_item_event(self, event, item, payload, session, registry, settings):
        if self.fail:
            self.fail -= 1
            raise ConnectionError("the e-portfolio is down")
        self.calls.append(("event", event, item.status))


def test_lifecycle_hooks_run_from_the_outbox_after_the_change_is_committed(runtime_with):
    holder: list = []
    watcher = Watcher(holder)
    rt = runtime_with(host_of(("watcher", watcher)))
    holder.append(rt)
    with rt.session() as session:
        rt.users(session).create("ann", ["assessor"])
        items = rt.items(session, Actor.system())
        item = items.create("learner", dict(LEARNER))
        items.update(item.id, changes={"given_name": "Janet"})
        items.assign(item.id, "ann")
        items.transition(item.id, to="archived")
    assert watcher.calls[0] == ("created", item.id, "system", True)
    assert ("event", "created", "active") in watcher.calls
    assert ("updated", item.id, ("/given_name",)) in watcher.calls
    assert ("assigned", None, "ann") in watcher.calls
    assert ("transitioned", "active", "archived") in watcher.calls
    assert [c[1] for c in watcher.calls if c[0] == "event"] == ["created", "updated", "assigned", "transitioned"]
    with rt.session() as session:
        rows = session.scalars(select(Outbox).where(Outbox.kind == "plugin_event")).all()
    assert len(rows) == 4 and {r.status for r in rows} == {"done"}
    assert {r.payload["plugin"] for r in rows} == {"watcher"}


def test_a_failing_lifecycle_hook_never_fails_the_change_and_is_retried_alone(runtime_with):
    holder: list = []
    flaky, steady = Watcher(holder), Watcher(holder)
    flaky.fail = 1
    rt = runtime_with(host_of(("steady", steady), ("flaky", flaky)))
    holder.append(rt)
    with rt.session() as session:
        item = rt.items(session, Actor.system()).create("learner", dict(LEARNER))
    assert item.id  # the change itself went through
    assert [c[0] for c in steady.calls] == ["created", "event"]
    assert [c[0] for c in flaky.calls] == ["created"]  # its tracker_item_event raised
    with rt.session() as session:
        waiting = session.scalars(select(Outbox).where(Outbox.kind == "plugin_event", Outbox.status == "pending")).all()
    [row] = waiting
    assert row.payload["plugin"] == "flaky" and "the e-portfolio is down" in row.last_error
    assert rt.plugins.errors.recent[-1].hook == "tracker_item_event"
    stats = rt.relay(clock=lambda: utcnow() + timedelta(minutes=5)).run_until_empty()
    assert stats.done == 1
    assert [c[0] for c in steady.calls] == ["created", "event"]  # not run again
    assert [c[0] for c in flaky.calls] == ["created", "created", "event"]


def test_lifecycle_rows_fan_out_once_even_when_a_row_is_processed_again(runtime_with):
    holder: list = []
    rt = runtime_with(host_of(("one", Watcher(holder)), ("two", Watcher(holder))))
    holder.append(rt)
    with rt.session() as session:
        item = rt.items(session, Actor.system()).create("learner", dict(LEARNER))
        source = session.scalar(select(Outbox).where(Outbox.kind == "item_event", Outbox.item_id == item.id))
        rt.plugins.handle_outbox(session, source, rt.registry)  # a second pass over the same row
        session.commit()
        fanned = session.scalars(select(Outbox.idempotency_key).where(Outbox.kind == "plugin_event")).all()
    assert sorted(fanned) == [f"plugin:{source.id}:one", f"plugin:{source.id}:two"]


def test_a_plugin_event_for_a_plugin_switched_off_since_is_dropped(runtime_with):
    holder: list = []
    rt = runtime_with(host_of(("watcher", Watcher(holder))))
    holder.append(rt)
    with rt.session() as session:
        row = Outbox(kind="plugin_event", idempotency_key="x", payload={"plugin": "gone", "event": "created"})
        session.add(row)
        session.commit()
        rt.plugins.handle_outbox(session, row, rt.registry)  # nothing raised: nothing to retry


# -- export and import formats -----------------------------------------------------------------------


class JsonLines(ExportFormat):
    key, label, extension, media_type = "jsonl", "JSON lines", ".jsonl", "application/x-ndjson"

    def lines(self, columns: list[Column], rows):
        for row in rows:
            yield json.dumps(dict(zip([c.key for c in columns], row, strict=True))) + "\n"


class Formats:
    @hookimpl
    def tracker_export_formats(self):
        return [JsonLines()]


def test_an_export_format_from_a_plugin_writes_the_same_export(runtime_with):
    rt = runtime_with(host_of(("formats", Formats())))
    with rt.session() as session:
        service = rt.items(session, Actor.system())
        service.create("learner", dict(LEARNER))
        [fmt] = rt.plugins.export_formats()
        export = export_items(service, "learner").in_format(fmt)
        lines = list(export.lines())
    assert export.filename.endswith(".jsonl")
    [record] = [json.loads(line) for line in lines]
    assert record["status"] == "Active" and record["given_name"] == "Jane"


def test_export_links_offer_plugin_formats_and_format_picks_one(app_with):
    app = app_with(host_of(("formats", Formats())))
    create_users(app, boss=["admin"])
    with app.extensions["tracker"].session() as session:
        app.extensions["tracker"].items(session, Actor.system()).create("learner", dict(LEARNER))
    client = app.test_client()
    sign_in(client, "boss")
    page = client.get("/types/learner").get_data(as_text=True)
    assert "/types/learner/export.csv?format=jsonl" in page and "Export JSON lines" in page
    response = client.get("/types/learner/export.csv?format=jsonl")
    assert response.status_code == 200 and response.mimetype == "application/x-ndjson"
    assert (
        'filename="learner-' in response.headers["Content-Disposition"]
        and ".jsonl" in response.headers["Content-Disposition"]
    )
    assert json.loads(response.get_data(as_text=True).splitlines()[0])["title"]
    assert client.get("/types/learner/export.csv").mimetype == "text/csv"
    unknown = client.get("/types/learner/export.csv?format=pdf")
    assert unknown.status_code == 404 and "Use one of: csv, jsonl" in unknown.get_data(as_text=True)


# -- pages and links ---------------------------------------------------------------------------------

shop = Blueprint("shop", __name__)


@shop.get("/shop/ok")
def shop_ok():
    return "<p>the shop is open</p>"


@shop.get("/shop/crash")
def shop_crash():
    raise RuntimeError("the shop page has a bug")


class Shop:
    @hookimpl
    def tracker_blueprints(self):
        return [shop]

    @hookimpl
    def tracker_menu_links(self, actor):
        return [MenuLink("Shop", "/shop/ok")] if actor.username == "boss" else []


class Clash:
    @hookimpl
    def tracker_blueprints(self):
        return [Blueprint("lists", __name__)]  # the name of a built-in blueprint


def test_plugin_pages_work_and_one_that_crashes_gets_an_error_page_and_is_recorded(app_with):
    app = app_with(host_of(("shop", Shop()), ("clash", Clash())))
    create_users(app, boss=["admin"], ann=["assessor"])
    client = app.test_client()
    sign_in(client, "boss")
    assert client.get("/shop/ok").get_data(as_text=True) == "<p>the shop is open</p>"
    crashed = client.get("/shop/crash")
    html = crashed.get_data(as_text=True)
    assert crashed.status_code == 500 and "The &#39;shop&#39; plugin failed to show this page" in html
    assert "Traceback" not in html
    assert client.get("/").status_code == 200  # the rest of the app is unaffected
    errors = [(e.plugin, e.hook) for e in app.extensions["tracker"].plugins.errors.recent]
    assert ("shop", "page shop.shop_crash") in errors and ("clash", "tracker_blueprints") in errors
    assert '<a href="/shop/ok">Shop</a>' in client.get("/").get_data(as_text=True)
    other = app.test_client()
    sign_in(other, "ann")
    assert '<a href="/shop/ok">Shop</a>' not in other.get("/").get_data(as_text=True)


def test_the_same_plugin_blueprint_serves_two_apps(app_with):
    first, second = app_with(host_of(("shop", Shop()))), app_with(host_of(("shop", Shop())))
    for app in (first, second):
        create_users(app, **({"boss": ["admin"]} if app is first else {}))
    assert first.url_map.bind("").match("/shop/ok")[0] == second.url_map.bind("").match("/shop/ok")[0]


def test_the_registry_holds_the_plugins_checks(runtime_with, gadgets):
    rt = runtime_with(host_of(("gadgets", gadgets)))
    assert set(rt.registry.field_validators) == {"even", "crashes"}
    assert load_registry([TEST_DEFINITIONS]).field_validators is None  # without plugins: not run
