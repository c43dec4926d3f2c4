"""Every permission is the engine's, so every door gives the same answer. For a matrix of
actors - an administrator, staff (Create Trackers), assessors with ``own`` scope, finance,
a read-only manager, and someone with no role at all - each operation is tried through the
item service, the JSON API, the pages and the command line, and imports, exports, the ILR
export, type administration, automations, queues and the plugins' lookups are checked too.
Finance-only fields never reach anyone without ``finance.view``: not in HTML, JSON, CSV,
history or the command line.

Elsewhere: the e-portfolio's signed endpoint (test_plugin_eportfolio), import of finance
columns (test_import_service), queue races (test_assignment_rules)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from sqlalchemy import delete

from engine.errors import NotFound, PermissionDenied
from engine.models import RoleGrant
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.imports import ImportService
from tests import webhelpers
from tests.conftest import LEARNER, ROOT
from tests.webhelpers import create_users, post, sign_in

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app

APPRENTICESHIP = json.loads((ROOT / "examples/data/apprenticeship/valid.json").read_text())
FINANCE = ("total_negotiated_price", "employer_contribution")
PRICE = "4500"  # total_negotiated_price in the example

#: actor -> roles; "nobody" has every grant taken away after creation
ACTORS = {
    "root": ["admin"],
    "clara": ["tracker_creator"],
    "asa": ["assessor"],
    "bea": ["assessor"],
    "fin": ["finance"],
    "mgr": ["manager"],
    "nobody": ["manager"],
}
#: who may view asa's apprenticeship (assigned to asa; bea is an assessor of other items)
VIEW = {"root", "clara", "asa", "fin", "mgr"}
EDIT = {"root", "clara", "asa"}
#: commenting needs items.view only: a reader (a manager) may ask a question on what they see
COMMENT = VIEW
#: the forms' lookups: whoever may create or edit items of some type (own scope included)
FILLS_FORMS = {"root", "clara", "asa", "bea"}
SEES_FINANCE = {"root", "fin", "mgr"}
EXPORT = {"root", "fin"}


@pytest.fixture
def world(new_app):
    app = new_app()
    create_users(app, **ACTORS)
    rt = app.extensions["tracker"]
    with rt.session() as session:
        nobody = rt.users(session).get("nobody")
        session.execute(delete(RoleGrant).where(RoleGrant.user_id == nobody.id))
        session.commit()
        system = rt.items(session, Actor.system())
        learner = system.create("learner", dict(LEARNER))
        mine = system.create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id, assignee="asa")
        other = system.create(
            "apprenticeship", {**APPRENTICESHIP, "employer_name": "Other Ltd"}, subject_id=learner.id, assignee="bea"
        )
        system.update(mine.id, changes={"total_negotiated_price": 4600})  # a finance change in the history
        tokens = {name: rt.users(session).create_token(name)[1] for name in ACTORS}
    return {"app": app, "rt": rt, "item": mine.id, "other": other.id, "learner": learner.id, "tokens": tokens}


def actor(world, name: str) -> Actor:
    rt = world["rt"]
    with rt.session() as session:
        return rt.actor(session, name)


def api(world, name: str, method: str, path: str, body=None, **kwargs):
    client = world["app"].test_client()
    headers = {"Authorization": f"Bearer {world['tokens'][name]}"}
    if body is not None:
        kwargs["json"] = body
    return client.open(f"/api/v1{path}", method=method, headers=headers, **kwargs)


# -- the item service ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTORS))
def test_the_item_service_decides_for_every_actor(world, name):
    rt, item_id = world["rt"], world["item"]
    with rt.session() as session:
        service = ItemService(session, actor(world, name), rt.registry)
        if name in VIEW:
            item = service.get(item_id)
            assert ("total_negotiated_price" in service.visible_data(item)) is (name in SEES_FINANCE)
            service.comment(item_id, f"seen by {name}")
        else:
            with pytest.raises((PermissionDenied, NotFound)):
                service.get(item_id)
            with pytest.raises((PermissionDenied, NotFound)):
                service.comment(item_id, "hello")
            session.rollback()
        if name == "nobody":
            with pytest.raises(PermissionDenied, match="may not view Apprenticeship items"):
                service.list("apprenticeship")
        else:
            listed = {i.id for i in service.list("apprenticeship")[0]}
            assert (item_id in listed) is (name in VIEW)
            assert (world["other"] in listed) is (name in VIEW - {"asa"} | {"bea"})
        if name in EDIT:
            service.update(item_id, changes={"otj_hours_logged": 100})
            assert "start_signup" in [t.key for t in service.available_transitions(service.get(item_id))]
        else:
            with pytest.raises((PermissionDenied, NotFound)):
                service.update(item_id, changes={"otj_hours_logged": 100})
            session.rollback()
            with pytest.raises((PermissionDenied, NotFound)):
                service.transition(item_id, "signup")
            session.rollback()
        if name in EDIT and name not in SEES_FINANCE:
            with pytest.raises(PermissionDenied, match="finance fields need 'finance.view'"):
                service.update(item_id, changes={"total_negotiated_price": 1})
            session.rollback()


# -- the JSON API -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTORS))
def test_the_api_gives_the_same_answers(world, name):
    item_id = world["item"]
    got = api(world, name, "GET", f"/items/{item_id}")
    if name not in VIEW:
        assert got.status_code in (403, 404) and got.json["message"]
        assert api(world, name, "GET", f"/items/{item_id}/history").status_code in (403, 404)
        assert api(world, name, "GET", f"/items/{item_id}/documents").status_code in (403, 404)
        assert api(world, name, "GET", f"/items/{item_id}/progress").status_code in (403, 404)
        return
    assert got.status_code == 200
    assert all((f in got.json["data"]) is (name in SEES_FINANCE) for f in FINANCE)
    history = json.dumps(api(world, name, "GET", f"/items/{item_id}/history").json)
    assert ("4600" in history) is (name in SEES_FINANCE)
    listed = json.dumps(api(world, name, "GET", "/items?type=apprenticeship").json)
    assert ("total_negotiated_price" in listed) is (name in SEES_FINANCE)
    patch = api(
        world, name, "PATCH", f"/items/{item_id}", {"version": got.json["version"], "data": {"otj_hours_logged": 7}}
    )
    assert patch.status_code == (200 if name in EDIT else 403), patch.json
    upload = api(
        world,
        name,
        "POST",
        f"/items/{item_id}/documents",
        data={"category": "otj_log", "file": (io.BytesIO(b"week 1: 7 hours\n"), "otj.txt")},
        content_type="multipart/form-data",
    )
    assert upload.status_code == (201 if name in EDIT else 403), upload.json
    tick = api(
        world,
        name,
        "PATCH",
        f"/items/{item_id}/progress",
        {"ticks": [{"criterion": _first_criterion(world), "evidence": "Obs 1", "date": "2026-03-14"}]},
    )
    assert tick.status_code == (200 if name in {"root", "asa"} else 403), tick.json  # progress.edit


def _first_criterion(world) -> str:
    from engine.progress import qualification_for

    registry = world["rt"].registry
    structure = qualification_for(registry, registry.type("apprenticeship"), APPRENTICESHIP)
    return next(iter(structure.criteria()))[0]


# -- the pages ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(ACTORS))
def test_the_pages_give_the_same_answers(world, name):
    app, item_id = world["app"], world["item"]
    client = app.test_client()
    sign_in(client, name)
    page = client.get(f"/items/{item_id}")
    if name not in VIEW:
        assert page.status_code in (403, 404)
        assert PRICE not in page.get_data(as_text=True)
        listing = client.get("/types/apprenticeship")
        assert listing.status_code == 403 or f'href="/items/{item_id}"' not in listing.get_data(as_text=True)
        return
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    assert (PRICE in html) is (name in SEES_FINANCE) and ("4600" in html) is (name in SEES_FINANCE)
    comment = post(client, f"/items/{item_id}/comment", {"comment": f"seen by {name}"}, token_from=f"/items/{item_id}")
    assert comment.status_code == (303 if name in COMMENT else 403)
    export = client.get("/types/apprenticeship/export.csv")
    assert export.status_code == (200 if name in EXPORT else 403)
    if name in EXPORT:
        header = export.get_data(as_text=True).splitlines()[0]
        assert ("Total negotiated price" in header) is (name in SEES_FINANCE)


# -- the command line ----------------------------------------------------------------------------------


def test_the_command_line_acting_as_a_user_shows_what_they_may_see(run):
    run("users", "create", "clara", "--role", "tracker_creator")
    run("users", "create", "fin", "--role", "finance")
    run("users", "create", "asa", "--role", "assessor")
    made = run("items", "create", "--type", "learner", "--data", json.dumps(LEARNER)).stdout
    learner_id = int(made.split("#")[1].split()[0])
    created = run(
        "items",
        "create",
        "--type",
        "apprenticeship",
        "--data",
        json.dumps(APPRENTICESHIP),
        "--subject",
        str(learner_id),
    )
    item_id = int(created.stdout.split("#")[1].split()[0])
    run("items", "update", str(item_id), "--data", '{"total_negotiated_price": 4600}')
    as_fin = run("items", "show", str(item_id), "--json", "--as", "fin").stdout
    as_clara = run("items", "show", str(item_id), "--json", "--as", "clara").stdout
    assert json.loads(as_fin)["data"]["total_negotiated_price"] == 4600
    assert "total_negotiated_price" not in json.loads(as_clara)["data"]
    assert "4600" not in run("items", "show", str(item_id), "--as", "clara").stdout
    assert "4600" in run("items", "history", str(item_id), "--as", "fin").stdout
    assert "4600" not in run("items", "history", str(item_id), "--as", "clara").stdout
    assert "4600" not in run("items", "history", str(item_id), "--json", "--as", "clara").stdout
    refused = run("items", "show", str(item_id), "--as", "asa", ok=False)  # not assigned to asa
    assert refused.returncode == 1 and "asa may only view" in refused.stderr
    money = run("items", "update", str(item_id), "--data", '{"total_negotiated_price": 1}', "--as", "clara", ok=False)
    assert money.returncode == 1 and "finance fields need 'finance.view'" in money.stderr


# -- imports, exports, ILR, type administration, automations, queues, lookups ------------------------------


@pytest.mark.parametrize("name", list(ACTORS))
def test_the_other_doors(world, name):
    app, rt = world["app"], world["rt"]
    with rt.session() as session:
        importer = ImportService(ItemService(session, actor(world, name), rt.registry))
        if name in {"root", "clara"}:
            assert importer.require_import("apprenticeship").key == "apprenticeship"
        else:
            with pytest.raises(PermissionDenied):
                importer.require_import("apprenticeship")
        service = ItemService(session, actor(world, name), rt.registry)
        may_automate = service.may_create(rt.registry.type("process_automation"))
        assert may_automate is (name == "root")
    client = app.test_client()
    sign_in(client, name)
    assert client.get("/imports").status_code == (200 if name in {"root", "clara"} else 403)
    assert client.get("/ilr/export").status_code == (200 if name in EXPORT else 403)
    assert client.get("/admin/types").status_code == (200 if name == "root" else 403)
    assert client.get("/admin/users").status_code == (200 if name == "root" else 403)
    assert client.get("/admin/audit").status_code == (200 if name == "root" else 403)
    assert client.get("/admin/plugins").status_code == (200 if name == "root" else 403)
    lookup = client.get("/lookups/no_such_lookup")
    assert lookup.status_code == (404 if name in FILLS_FORMS else 403)
    if name not in FILLS_FORMS:
        assert "may not use lookups" in lookup.json["message"]
    assert api(world, name, "GET", "/types").status_code == 200  # everyone signed in sees the types list


def test_queue_claims_need_the_queue_role(world):
    rt = world["rt"]
    from engine.assignment import QueueService

    with rt.session() as session:
        system = rt.items(session, Actor.system())
        review = json.loads((ROOT / "examples/data/hs_review/valid.json").read_text())
        waiting = system.create("hs_review", review, subject_id=world["learner"])
        assert waiting.assignee_id is None
        for name in ("clara", "fin", "mgr"):
            with pytest.raises(PermissionDenied):
                QueueService(ItemService(session, actor(world, name), rt.registry)).claim(waiting.id)
            session.rollback()
        claimed = QueueService(ItemService(session, actor(world, "asa"), rt.registry)).claim(waiting.id)
        assert claimed.assignee.username == "asa"
    client = world["app"].test_client()
    sign_in(client, "clara")
    assert post(client, f"/queue/{waiting.id}/claim", token_from="/").status_code == 403


def test_the_ilr_export_needs_exports_bulk(world):
    from engine.ilr import xml_export

    rt = world["rt"]
    with rt.session() as session:
        for name in ("clara", "mgr", "asa"):
            service = ItemService(session, actor(world, name), rt.registry)
            with pytest.raises(PermissionDenied, match="exports.bulk|may not"):
                xml_export.export_ilr(service, ukprn="10012345", year="2526", out_dir=Path("/nonexistent"))
            session.rollback()
