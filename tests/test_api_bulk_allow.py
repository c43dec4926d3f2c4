"""The JSON API's lists are bulk downloads by other means: outside ``TRACKER_BULK_EXPORT_ALLOW``
they are refused (403, recorded like a refused CSV export), while single items, counts and
claims stay open to any address. On SQLite and PostgreSQL."""

from __future__ import annotations

from ipaddress import ip_network

import pytest
from flask import Flask
from sqlalchemy import select

from engine.models import AuditEntry, BulkExport
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER
from tests.webhelpers import cheap_hashing, make_app  # noqa: F401 - cheap_hashing is autouse

OFFICE = ip_network("10.0.0.0/8")
OUTSIDE = "192.0.2.7"

#: user name -> roles; each gets an API token
PEOPLE = {"admin": ["admin"], "lead": ["dsl"], "asha": ["assessor"]}

LISTS = [
    ("admin", "/api/v1/items?type=concern&status=new&q=Smith", "GET /api/v1/items", "concern"),
    (
        "lead",
        "/api/v1/tasklists/concern/high_open/items?per_page=5",
        "GET /api/v1/tasklists/{type}/{key}/items",
        "concern",
    ),
    ("asha", "/api/v1/queue?type=hs_review", "GET /api/v1/queue", "hs_review"),
]


@pytest.fixture
def new_app(tmp_path, db_url):
    """``new_app(**settings)``: an app with a learner, a concern assigned to lead and an H&S
    review waiting in the assessors' queue; ``app.tokens`` and ``app.ids`` name them."""
    made: list[Flask] = []

    def make(**settings) -> Flask:
        app = make_app(tmp_path, db_url, settings=settings)
        made.append(app)
        rt = app.extensions["tracker"]
        with rt.session() as session:
            users = rt.users(session)
            app.tokens = {}
            for name, roles in PEOPLE.items():
                users.create(name, roles)
                app.tokens[name] = users.create_token(name, "tests")[1]
            system = ItemService(session, Actor.system(), rt.registry)
            learner = system.create("learner", dict(LEARNER)).id
            concern = system.create(
                "concern",
                {"category": "online", "reported_on": "2025-09-01", "severity": "high", "dsl_informed": True},
                subject_id=learner,
                assignee="lead",
            ).id
            review = system.create("hs_review", {"due_by": "2031-03-20", "employer_name": "Acme"}, subject_id=learner)
            app.ids = {"learner": learner, "concern": concern, "review": review.id}
        return app

    yield make
    for app in made:
        if "engine" in app.extensions["tracker"].__dict__:
            app.extensions["tracker"].engine.dispose()


def get(app: Flask, who: str | None, path: str, address: str, method: str = "GET", **headers):
    if who is not None:
        headers["Authorization"] = f"Bearer {app.tokens[who]}"
    response = app.test_client().open(path, method=method, headers=headers, environ_base={"REMOTE_ADDR": address})
    assert response.is_json and response.status_code != 500
    return response


def bulk_rows(app: Flask) -> list[BulkExport]:
    with app.extensions["tracker"].session() as session:
        return list(session.scalars(select(BulkExport).order_by(BulkExport.id)))


@pytest.mark.parametrize(("who", "path", "route", "type_key"), LISTS)
def test_a_list_outside_the_allowed_addresses_is_403_and_the_refusal_recorded(new_app, who, path, route, type_key):
    app = new_app(bulk_export_allow=(OFFICE,))
    response = get(app, who, path, OUTSIDE)
    assert response.status_code == 403
    body = response.json
    assert body["message"] == f"Your address ({OUTSIDE}) is not allowed to list records in bulk."
    assert "ask your administrator" in body["advice"] and "TRACKER_BULK_EXPORT_ALLOW" in body["advice"]
    assert body["errors"] == [] and "items" not in body
    with app.extensions["tracker"].session() as session:
        [row] = session.scalars(select(BulkExport)).all()
        assert (row.kind, row.outcome, row.address, row.type_key) == ("api_list", "refused", OUTSIDE, type_key)
        assert row.user.username == who and row.item_count == 0 and row.detail == {"route": route}
        [entry] = session.scalars(select(AuditEntry).where(AuditEntry.bulk_export_id == row.id)).all()
        assert entry.kind == "export.api_list" and entry.actor_name == who and entry.address == OUTSIDE
        assert route in entry.target and "refused" in entry.target


def test_the_refusal_keeps_the_filters_asked_for(new_app):
    app = new_app(bulk_export_allow=(OFFICE,))
    assert get(app, "admin", "/api/v1/items?type=concern&status=new&q=Smith&page=2", OUTSIDE).status_code == 403
    [row] = bulk_rows(app)
    assert row.filters == {"status": ["new"], "q": "Smith", "page": 2, "per_page": 25}


@pytest.mark.parametrize("address", ["10.1.2.3", "::ffff:10.0.0.5"])
def test_lists_from_an_allowed_address_are_served_and_not_recorded(new_app, address):
    app = new_app(bulk_export_allow=(OFFICE,))
    for who, path, _route, _type in LISTS:
        response = get(app, who, path, address)
        assert response.status_code == 200 and response.json["total"] == 1, path
    assert bulk_rows(app) == []


def test_without_an_allow_list_any_address_may_list(new_app):
    app = new_app()
    for who, path, _route, _type in LISTS:
        assert get(app, who, path, OUTSIDE).status_code == 200, path
    assert bulk_rows(app) == []


def test_single_items_counts_and_claims_stay_open_to_any_address(new_app):
    app = new_app(bulk_export_allow=(OFFICE,))
    concern = app.ids["concern"]
    assert get(app, "admin", f"/api/v1/items/{concern}", OUTSIDE).json["id"] == concern
    assert get(app, "admin", f"/api/v1/items/{concern}/history", OUTSIDE).status_code == 200
    assert get(app, "admin", "/api/v1/types", OUTSIDE).status_code == 200
    assert get(app, "lead", "/api/v1/tasklists", OUTSIDE).status_code == 200
    claimed = get(app, "asha", f"/api/v1/items/{app.ids['review']}/claim", OUTSIDE, method="POST")
    assert claimed.status_code == 200 and claimed.json["assignee"] == "asha"
    assert bulk_rows(app) == []


def test_without_a_token_it_is_401_and_nothing_is_recorded(new_app):
    app = new_app(bulk_export_allow=(OFFICE,))
    response = get(app, None, "/api/v1/items", OUTSIDE)
    assert response.status_code == 401
    assert bulk_rows(app) == []


def test_behind_a_trusted_proxy_the_forwarded_client_address_is_checked(new_app):
    app = new_app(bulk_export_allow=(OFFICE,), proxy_count=1)
    # the proxy is in the office, the client is not
    refused = get(app, "admin", "/api/v1/items", "10.0.0.1", **{"X-Forwarded-For": "198.51.100.9"})
    assert refused.status_code == 403 and "198.51.100.9" in refused.json["message"]
    assert [r.address for r in bulk_rows(app)] == ["198.51.100.9"]
    # the client is in the office, whatever the proxy's own address
    assert get(app, "admin", "/api/v1/items", OUTSIDE, **{"X-Forwarded-For": "10.4.4.4"}).status_code == 200
