"""The JSON API under /api/v1, on SQLite and PostgreSQL: every status code of the contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from flask import Flask

from engine.config import Settings
from engine.permissions import Actor
from engine.services import ItemService
from engine.services import users as users_module
from tests.conftest import LEARNER, TEST_DEFINITIONS
from webui import api, create_app
from webui.openapi import document

BASE_URL = "https://tracker.test"

#: user name -> roles; each user gets an API token.
PEOPLE = {
    "admin": ["admin"],
    "clara": ["tracker_creator"],  # creates and edits, no finance.view
    "pat": ["tracker_creator", "payroll"],  # the same with finance.view
    "lead": ["dsl"],  # may start and close concerns
    "cass": ["caseworker"],  # scope own: only items assigned to or created by her
    "mona": ["manager"],  # read-only
    "penny": ["payroll"],  # finance.view but may view no items
}


@dataclass
class World:
    tokens: dict[str, str]
    learner: int
    concern: int
    token_ids: dict[str, int] = field(default_factory=dict)


def make_app(tmp_path: Path, db_url: str) -> Flask:
    settings = Settings(
        instance_path=tmp_path,
        database_url=db_url,
        definitions_path=[TEST_DEFINITIONS],
        secret_key="test-secret",
        base_url=BASE_URL,
    )
    return create_app({"TESTING": True, "TRACKER_SETTINGS": settings})


def seed(app: Flask) -> World:
    """The people with their tokens, a learner, and a concern (with a finance-only cost)
    assigned to clara."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        users = rt.users(session)
        tokens, token_ids = {}, {}
        for name, roles in PEOPLE.items():
            users.create(name, roles)
            token, text = users.create_token(name, "tests")
            tokens[name], token_ids[name] = text, token.id
        system = ItemService(session, Actor.system(), rt.registry)
        learner = system.create("learner", dict(LEARNER)).id
        concern = system.create(
            "concern",
            {"category": "online", "reported_on": "2025-09-01", "reference": "SC-0001", "cost": 120.5},
            subject_id=learner,
            assignee="clara",
        ).id
    return World(tokens, learner, concern, token_ids)


def cheap_hashing(monkeypatch) -> None:
    """API tests sign in with tokens only: the cheapest argon2 settings keep creating seven users quick."""
    monkeypatch.setattr(users_module, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def close(app: Flask) -> None:
    """Close the app's database connections now rather than whenever it is garbage-collected."""
    runtime = app.extensions["tracker"]
    if "engine" in vars(runtime):
        runtime.engine.dispose()


@pytest.fixture
def app(tmp_path, db_url, monkeypatch):
    cheap_hashing(monkeypatch)
    app = make_app(tmp_path, db_url)
    yield app
    close(app)


@pytest.fixture
def world(app) -> World:
    return seed(app)


@pytest.fixture
def call(app, world):
    """``call(who, method, path, json=...)``: a request with ``who``'s bearer token (None: without one)."""
    client = app.test_client()

    def request(who: str | None, method: str, path: str, **kwargs):
        headers = dict(kwargs.pop("headers", {}))
        if who is not None:
            headers["Authorization"] = f"Bearer {world.tokens[who]}"
        response = client.open(path, method=method, headers=headers, **kwargs)
        assert response.status_code != 500
        assert response.is_json, f"{method} {path} answered {response.content_type}"
        return response

    return request


def paths(response) -> dict[str, str]:
    return {e["path"]: e["message"] for e in response.json["errors"]}


def new_concern(call, who="clara", **data):
    body = {
        "type": "concern",
        "subject": data.pop("subject"),
        "data": {"category": "bullying", "reported_on": "2025-10-01", **data},
    }
    response = call(who, "POST", "/api/v1/items", json=body)
    assert response.status_code == 201, response.json
    return response.json


# -- authentication ----------------------------------------------------------------------------------


def test_no_token_or_a_bad_one_is_401_with_a_challenge(call, world):
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x"}):
        response = call(None, "GET", "/api/v1/types", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="Tracker API"')
        assert response.json["message"] and response.json["advice"]
    assert (
        "invalid_token"
        in call(None, "GET", "/api/v1/items", headers={"Authorization": "Bearer trk_nope"}).headers["WWW-Authenticate"]
    )
    # an unauthenticated write changes nothing and is refused before its body is looked at
    response = call(None, "POST", "/api/v1/items", json={"type": "learner"})
    assert response.status_code == 401
    assert call("admin", "GET", "/api/v1/items?type=learner").json["total"] == 1


def test_a_token_works_without_cookies_and_sets_none(call):
    response = call("mona", "GET", "/api/v1/types")
    assert response.status_code == 200
    assert "Set-Cookie" not in response.headers


def test_a_revoked_token_and_a_deactivated_users_token_stop_at_once(app, call, world):
    assert call("clara", "GET", "/api/v1/types").status_code == 200
    assert call("mona", "GET", "/api/v1/types").status_code == 200
    rt = app.extensions["tracker"]
    with rt.session() as session:
        rt.users(session).revoke_token(world.token_ids["clara"])
        rt.users(session).deactivate("mona")
    assert call("clara", "GET", "/api/v1/types").status_code == 401
    assert call("mona", "GET", "/api/v1/types").status_code == 401


def test_a_token_is_not_a_csrf_risk_posts_need_no_csrf_token(call, world):
    # the web UI refuses posts without a CSRF token; the API is exempt because it uses no cookies
    response = call(
        "clara", "POST", "/api/v1/items", json={"type": "learner", "data": {**LEARNER, "uln": "1000000027"}}
    )
    assert response.status_code == 201


# -- types ---------------------------------------------------------------------------------------------


def test_types_lists_what_the_caller_may_view(call):
    listed = call("clara", "GET", "/api/v1/types").json
    keys = [t["key"] for t in listed]
    assert keys[:2] == ["employer", "learner"] and "concern" in keys
    concern = next(t for t in listed if t["key"] == "concern")
    assert concern == {
        "key": "concern",
        "name": "Safeguarding concern",
        "version": 1,
        "kind": "tracker",
        "subject": "learner",
        "workflow": "safeguarding",
        "description": "",
        "can_create": True,
    }
    assert not next(t for t in call("mona", "GET", "/api/v1/types").json if t["key"] == "concern")["can_create"]
    automation = next(t for t in listed if t["key"] == "process_automation")
    assert automation["can_create"] is False  # that needs automation.create
    assert call("penny", "GET", "/api/v1/types").json == []


def test_one_type_with_its_schema_and_workflow(call):
    response = call("clara", "GET", "/api/v1/types/concern")
    assert response.status_code == 200
    body = response.json
    assert body["can_create"] is True
    assert body["schema"]["properties"]["reference"]["pattern"] == "^SC-[0-9]{4}$"
    assert body["workflow"]["key"] == "safeguarding"
    assert [s["key"] for s in body["workflow"]["states"]] == ["new", "investigating", "closed", "withdrawn"]
    start = body["workflow"]["transitions"][0]
    assert start == {
        "key": "start",
        "from": ["new"],
        "to": "investigating",
        "label": "Start investigation",
        "roles": ["dsl"],
        "requires": ["severity"],
    }


def test_unknown_type_is_404_and_a_type_one_may_not_view_is_403(call):
    missing = call("clara", "GET", "/api/v1/types/nope")
    assert missing.status_code == 404 and "no tracker type 'nope'" in missing.json["message"]
    denied = call("penny", "GET", "/api/v1/types/concern")
    assert denied.status_code == 403 and "items.view" in denied.json["advice"]


# -- creating ------------------------------------------------------------------------------------------


def test_create_answers_201_with_the_item_and_its_absolute_url(call, world):
    response = call(
        "clara",
        "POST",
        "/api/v1/items",
        json={
            "type": "concern",
            "subject": world.learner,
            "template": "online",
            "data": {"reported_on": "2025-10-01"},
            "assignee": "lead",
            "description": "Seen on a chat app",
        },
    )
    assert response.status_code == 201
    item = response.json
    assert item["url"] == f"{BASE_URL}/items/{item['id']}"
    assert response.headers["Location"].endswith(f"/api/v1/items/{item['id']}")
    assert item["type"] == "concern" and item["status"] == "new" and item["status_label"] == "New"
    assert item["title"] == "Online concern for Jane Smith"
    assert item["data"] == {"category": "online", "severity": "low", "reported_on": "2025-10-01"}
    assert item["subject"] == world.learner and item["assignee"] == "lead" and item["version"] >= 1
    assert item["description"] == "Seen on a chat app" and item["due_date"] == "2025-10-01"
    assert [w["path"] for w in item["warnings"]] == ["/contact"]  # saved, with the rule's warning
    assert call("clara", "GET", item["url"].replace(BASE_URL, "/api/v1")).status_code == 200


def test_invalid_data_is_422_with_a_pointer_per_problem(call, world):
    response = call(
        "clara",
        "POST",
        "/api/v1/items",
        json={
            "type": "concern",
            "subject": world.learner,
            "data": {"category": "weird", "reported_on": "01/10/2025", "actions": [{"note": "x"}]},
        },
    )
    assert response.status_code == 422
    found = paths(response)
    assert set(found) == {"/category", "/reported_on", "/actions/0/date"}
    assert "Reported on must be a date" in found["/reported_on"]
    assert all(e["advice"] for e in response.json["errors"])


def test_item_level_problems_keep_their_names(call, world):
    response = call(
        "clara",
        "POST",
        "/api/v1/items",
        json={"type": "concern", "data": {"category": "online", "reported_on": "2025-10-01"}, "assignee": "nobody"},
    )
    assert response.status_code == 422
    assert set(paths(response)) == {"subject", "assignee"}
    response = call(
        "clara",
        "POST",
        "/api/v1/items",
        json={"type": "concern", "subject": world.learner, "template": "nope", "data": {}},
    )
    assert "template" in paths(response)


def test_unknown_type_on_create_is_422_not_404(call):
    response = call("clara", "POST", "/api/v1/items", json={"type": "nope", "data": {}})
    assert response.status_code == 422
    assert paths(response) == {"type": "There is no tracker type 'nope'."}


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ({"data": {}}, "type", "Type is required"),
        ({"type": "learner"}, "data", "Data is required"),
        ({"type": "learner", "data": []}, "data", "Data must be a group of fields"),
        ({"type": "learner", "data": {}, "subject": "one"}, "subject", "Subject must be a whole number"),
        ({"type": "learner", "data": {}, "subject": 2**40}, "subject", "Subject must be at most"),
        ({"type": "learner", "data": {}, "colour": "red"}, "", "'colour' is not a field here"),
        ({"type": "learner", "data": {"given_name": "A\u0000"}}, "/given_name", "NUL character"),
        ({"type": "learner", "data": {}, "description": "\u0000"}, "description", "NUL character"),
        ({"type": "learner", "data": {"given_name": "\ud800"}}, "/given_name", "not valid Unicode"),
        ([1, 2], "", "must be a JSON object"),
    ],
)
def test_malformed_requests_are_422_naming_the_request_field(call, body, where, words):
    response = call("clara", "POST", "/api/v1/items", json=body)
    assert response.status_code == 422
    assert words in paths(response)[where]


def test_duplicate_identity_is_409_naming_the_existing_item(call, world):
    response = call(
        "clara",
        "POST",
        "/api/v1/items",
        json={
            "type": "concern",
            "subject": world.learner,
            "data": {"category": "online", "reported_on": "2025-10-01", "reference": "SC-0001"},
        },
    )
    assert response.status_code == 409
    assert response.json["existing_id"] == world.concern
    assert response.json["existing_url"] == f"{BASE_URL}/items/{world.concern}"
    assert f"#{world.concern}" in response.json["errors"][0]["message"]
    assert call("admin", "GET", "/api/v1/items?type=concern").json["total"] == 1


def test_create_not_allowed_is_403(call, world):
    response = call(
        "mona",
        "POST",
        "/api/v1/items",
        json={"type": "concern", "subject": world.learner, "data": {"category": "online", "reported_on": "2025-10-01"}},
    )
    assert response.status_code == 403
    assert "may not create" in response.json["message"]
    finance = call(
        "clara",
        "POST",
        "/api/v1/items",
        json={
            "type": "concern",
            "subject": world.learner,
            "data": {"category": "online", "reported_on": "2025-10-01", "cost": 3},
        },
    )
    assert finance.status_code == 403 and "finance" in finance.json["message"]


# -- the body itself -------------------------------------------------------------------------------------


def test_body_format_errors_are_json(call):
    bad_json = call("clara", "POST", "/api/v1/items", data="{type: 1", content_type="application/json")
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json["message"]
    nan = call(
        "clara", "POST", "/api/v1/items", data='{"type": "x", "data": {"n": NaN}}', content_type="application/json"
    )
    assert nan.status_code == 400
    form = call("clara", "POST", "/api/v1/items", data={"type": "learner"})
    assert form.status_code == 415 and "application/json" in form.json["advice"]
    empty = call("clara", "POST", "/api/v1/items", content_type="application/json")
    assert empty.status_code == 400
    huge = call("clara", "POST", "/api/v1/items", json={"type": "learner", "data": {"x": "y" * (api.MAX_BODY + 1)}})
    assert huge.status_code == 413
    deep: dict = {}
    node = deep
    for _ in range(api.MAX_DEPTH + 5):
        node["a"] = {}
        node = node["a"]
    nested = call("clara", "POST", "/api/v1/items", json={"type": "learner", "data": deep})
    assert nested.status_code == 422 and "nested" in nested.json["errors"][0]["message"]


def test_unknown_addresses_and_methods_are_json(call, world):
    for path in ("/api/v1/nothing", "/api/elsewhere", "/api", "/api/v1/items/0", f"/api/v1/items/{2**40}"):
        response = call("clara", "GET", path)
        assert response.status_code == 404, path
        assert response.json["message"] == "There is nothing at this address."
    wrong = call("clara", "DELETE", f"/api/v1/items/{world.concern}")
    assert wrong.status_code == 405
    assert "PATCH" in wrong.headers["Allow"] and "DELETE is not allowed" in wrong.json["message"]
    assert call("clara", "PUT", "/api/v1/types").status_code == 405


def test_a_crash_would_still_answer_json_not_a_page(app, call, world, monkeypatch):
    """The safety net behind "never a 500 page": an unexpected error becomes a JSON 500."""
    app.testing = False
    app.config["PROPAGATE_EXCEPTIONS"] = False

    def broken(self, item_id):
        raise RuntimeError("boom")

    monkeypatch.setattr(ItemService, "get", broken)
    response = app.test_client().get(
        f"/api/v1/items/{world.concern}", headers={"Authorization": f"Bearer {world.tokens['clara']}"}
    )
    assert response.status_code == 500 and response.is_json
    assert response.json["message"] == "Something went wrong on our side."
    assert "boom" not in response.get_data(as_text=True)


# -- reading -----------------------------------------------------------------------------------------------


def test_get_item_hides_finance_fields_from_callers_without_finance_view(call, world):
    clara = call("clara", "GET", f"/api/v1/items/{world.concern}").json
    assert "cost" not in clara["data"] and clara["data"]["reference"] == "SC-0001"
    assert call("pat", "GET", f"/api/v1/items/{world.concern}").json["data"]["cost"] == 120.5
    assert call("admin", "GET", f"/api/v1/items/{world.concern}").json["data"]["cost"] == 120.5
    # manager has finance.view, but the concern type narrows the manager to items.view
    assert "cost" not in call("mona", "GET", f"/api/v1/items/{world.concern}").json["data"]
    listed = call("clara", "GET", "/api/v1/items?type=concern").json["items"]
    assert "cost" not in listed[0]["data"]
    history = call("clara", "GET", f"/api/v1/items/{world.concern}/history").json
    assert "cost" not in history[0]["payload"]["data"]
    assert call("pat", "GET", f"/api/v1/items/{world.concern}/history").json[0]["payload"]["data"]["cost"] == 120.5


def test_get_item_lists_the_transitions_the_caller_could_take(call, world):
    assert call("clara", "GET", f"/api/v1/items/{world.concern}").json["transitions"] == []
    taken = call("lead", "GET", f"/api/v1/items/{world.concern}").json["transitions"]
    assert {t["key"] for t in taken} == {"start"}


def test_missing_item_is_404_and_someone_elses_is_403_for_a_scoped_role(call, world):
    missing = call("clara", "GET", "/api/v1/items/999999")
    assert missing.status_code == 404 and "no item #999999" in missing.json["message"]
    assert call("clara", "GET", "/api/v1/items/999999/history").status_code == 404
    denied = call("cass", "GET", f"/api/v1/items/{world.concern}")
    assert denied.status_code == 403 and "assigned to or created by them" in denied.json["message"]
    assert call("cass", "GET", f"/api/v1/items/{world.concern}/history").status_code == 403


def test_a_scoped_caller_lists_only_their_own_items(call, world):
    mine = new_concern(call, "cass", subject=world.learner)
    listed = call("cass", "GET", "/api/v1/items?type=concern").json
    assert listed["total"] == 1 and [i["id"] for i in listed["items"]] == [mine["id"]]
    assert call("cass", "GET", f"/api/v1/items/{mine['id']}").status_code == 200
    assert call("admin", "GET", "/api/v1/items?type=concern").json["total"] == 2


def test_list_pages_and_filters(call, world):
    for n in range(4):
        new_concern(call, subject=world.learner, reference=f"SC-010{n}")
    first = call("clara", "GET", "/api/v1/items?type=concern&per_page=2").json
    assert (first["total"], first["page"], first["per_page"], len(first["items"])) == (5, 1, 2, 2)
    third = call("clara", "GET", "/api/v1/items?type=concern&per_page=2&page=3").json
    assert len(third["items"]) == 1 and third["items"][0]["id"] == world.concern  # newest first
    past = call("clara", "GET", "/api/v1/items?type=concern&per_page=2&page=9").json
    assert past["items"] == [] and past["total"] == 5
    everything = call("clara", "GET", "/api/v1/items").json
    assert everything["total"] == 6 and everything["per_page"] == 25  # five concerns and the learner
    mine = call("clara", "GET", "/api/v1/items?assignee=me").json
    assert [i["id"] for i in mine["items"]] == [world.concern]
    assert call("clara", "GET", "/api/v1/items?assignee=clara").json["total"] == 1
    assert call("clara", "GET", "/api/v1/items?assignee=none&type=concern").json["total"] == 4
    found = call("clara", "GET", "/api/v1/items?q=sc-0102").json
    assert found["total"] == 1 and found["items"][0]["data"]["reference"] == "SC-0102"
    assert call("clara", "GET", "/api/v1/items?status=new&status=closed&type=concern").json["total"] == 5
    assert call("clara", "GET", "/api/v1/items?status=closed").json["total"] == 0
    ordered = call("clara", "GET", "/api/v1/items?type=concern&sort=reported_on&per_page=1").json
    assert ordered["items"][0]["id"] == world.concern


@pytest.mark.parametrize(
    ("query", "where"),
    [
        ("per_page=0", "per_page"),
        ("per_page=101", "per_page"),
        ("per_page=ten", "per_page"),
        ("page=0", "page"),
        ("page=-1", "page"),
        ("page=1.5", "page"),
        ("type=nope", "type"),
        ("type=", "type"),
        ("assignee=nobody", "assignee"),
        ("sort=colour", "sort"),
        ("q=a%00b", "q"),
    ],
)
def test_bad_list_parameters_are_422(call, query, where):
    response = call("clara", "GET", f"/api/v1/items?{query}")
    assert response.status_code == 422
    assert where in paths(response)
    assert response.json["message"].startswith("The query is not valid")


def test_listing_a_type_one_may_not_view_is_403(call):
    assert call("penny", "GET", "/api/v1/items?type=concern").status_code == 403
    assert call("penny", "GET", "/api/v1/items").json["total"] == 0


def test_history_lists_events_oldest_first(call, world):
    call("clara", "PATCH", f"/api/v1/items/{world.concern}", json={"data": {"severity": "low"}, "version": 2})
    history = call("clara", "GET", f"/api/v1/items/{world.concern}/history").json
    assert [e["kind"] for e in history] == ["created", "assigned", "updated"]
    assert history[0]["actor"] is None and history[2]["actor"] == "clara"
    assert history[2]["payload"]["changes"] == [{"path": "/severity", "old": None, "new": "low"}]
    assert history[0]["at"].endswith("+00:00")


# -- changing ----------------------------------------------------------------------------------------------


def test_patch_merges_data_and_checks_the_version(call, world):
    url = f"/api/v1/items/{world.concern}"
    version = call("clara", "GET", url).json["version"]
    response = call("clara", "PATCH", url, json={"data": {"severity": "low", "hours": 3}, "version": version})
    assert response.status_code == 200
    item = response.json
    assert item["data"]["severity"] == "low" and item["data"]["reference"] == "SC-0001"
    assert item["version"] == version + 1
    stale = call("clara", "PATCH", url, json={"data": {"hours": 4}, "version": version})
    assert stale.status_code == 409 and f"you had version {version}" in stale.json["message"]
    removed = call("clara", "PATCH", url, json={"data": {"hours": None}, "version": item["version"]}).json
    assert "hours" not in removed["data"]
    assert call("pat", "GET", url).json["data"]["cost"] == 120.5  # the hidden field was kept


def test_patch_invalid_is_422_and_changes_nothing(call, world):
    url = f"/api/v1/items/{world.concern}"
    version = call("clara", "GET", url).json["version"]
    response = call("clara", "PATCH", url, json={"data": {"hours": 500, "reference": "X"}, "version": version})
    assert response.status_code == 422
    assert set(paths(response)) == {"/hours", "/reference"}
    assert call("clara", "GET", url).json["version"] == version
    missing = call("clara", "PATCH", url, json={"data": {"hours": 1}})
    assert missing.status_code == 422 and "version" in paths(missing)


def test_patch_finance_fields_or_others_items_is_403(call, world):
    url = f"/api/v1/items/{world.concern}"
    version = call("clara", "GET", url).json["version"]
    for data in ({"cost": 1}, {"cost": None}):
        response = call("clara", "PATCH", url, json={"data": data, "version": version})
        assert response.status_code == 403 and "finance" in response.json["message"]
    assert call("pat", "GET", url).json["data"]["cost"] == 120.5
    assert call("mona", "PATCH", url, json={"data": {"hours": 1}, "version": version}).status_code == 403
    assert call("cass", "PATCH", url, json={"data": {"hours": 1}, "version": version}).status_code == 403
    assert call("clara", "PATCH", "/api/v1/items/999999", json={"data": {}, "version": 1}).status_code == 404


def test_transitions_403_422_then_200(call, world):
    url = f"/api/v1/items/{world.concern}/transitions"
    denied = call("clara", "POST", url, json={"to": "investigating"})
    assert denied.status_code == 403 and "Only these may: dsl" in denied.json["advice"]
    missing = call("lead", "POST", url, json={"to": "investigating"})
    assert missing.status_code == 422
    assert paths(missing) == {"/severity": "Severity must be filled to 'Start investigation'"}
    nowhere = call("lead", "POST", url, json={"to": "closed"})
    assert nowhere.status_code == 422 and "status" in paths(nowhere)
    unknown = call("lead", "POST", url, json={"to": "limbo"})
    assert unknown.status_code == 422 and "not a state" in paths(unknown)["status"]
    stale = call("lead", "POST", url, json={"to": "investigating", "data": {"severity": "low"}, "version": 1})
    assert stale.status_code == 409
    moved = call("lead", "POST", url, json={"to": "investigating", "data": {"severity": "low"}})
    assert moved.status_code == 200
    item = moved.json
    assert item["status"] == "investigating" and item["assignee"] == "lead"
    assert item["data"]["severity"] == "low" and "started_on" in item["data"]
    assert [t["to"] for t in item["transitions"]] == ["closed"]  # withdrawing is for the creator
    assert call("lead", "POST", "/api/v1/items/999999/transitions", json={"to": "closed"}).status_code == 404


# -- task lists ------------------------------------------------------------------------------------------


def test_tasklists_count_the_callers_items(call, world):
    def high_open(who: str) -> dict:
        return next(t for t in call(who, "GET", "/api/v1/tasklists").json if t["key"] == "high_open")

    assert high_open("lead")["count"] == 0
    body = {
        "type": "concern",
        "subject": world.learner,
        "assignee": "lead",
        "data": {"category": "online", "reported_on": "2020-01-01", "severity": "high", "dsl_informed": True},
    }
    assert call("clara", "POST", "/api/v1/items", json=body).status_code == 201
    assert high_open("lead") == {
        "key": "high_open",
        "label": "High-severity concerns open",
        "type": "concern",
        "type_name": "Safeguarding concern",
        "count": 1,
    }
    assert high_open("admin")["count"] == 0  # "assigned to me": not to the admin
    assert "high_open" not in {t["key"] for t in call("clara", "GET", "/api/v1/tasklists").json}
    assert call("penny", "GET", "/api/v1/tasklists").json == []


# -- the OpenAPI document ----------------------------------------------------------------------------------


def test_openapi_document_needs_no_token_and_covers_every_route(app, call):
    response = call(None, "GET", "/api/v1/openapi.json")
    assert response.status_code == 200
    doc = response.json
    assert doc["openapi"] == "3.1.0"
    assert doc["components"]["securitySchemes"]["bearerAuth"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "An API token from 'tracker users token create USER'.",
    }
    routes = {
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    documented = {(path, method.upper()) for path, ops in doc["paths"].items() for method in ops}
    assert len(routes) == len(documented) == len(api.OPERATIONS) == 21  # 13, and 8 for documents and progress
    for op in api.OPERATIONS:
        entry = doc["paths"][f"/api/v1{op.path}"][op.method.lower()]
        codes = set(entry["responses"])
        assert str(op.ok[0]) in codes
        if op.auth:
            assert "401" in codes and "security" not in entry
            assert "WWW-Authenticate" in entry["responses"]["401"]["headers"]
        else:
            assert entry["security"] == []
        if op.body is not None:
            assert {"400", "413", "415", "422"} <= codes
            # the request body is documented by the very schema that validates it
            assert doc["components"]["schemas"][op.body[0]] == op.body[1]
    listing = {p["name"]: p for p in doc["paths"]["/api/v1/items"]["get"]["parameters"]}
    assert listing["per_page"]["schema"]["maximum"] == 100
    assert listing["status"]["explode"] is True
    assert doc["servers"] == [{"url": BASE_URL}]
    assert document(BASE_URL) == doc
