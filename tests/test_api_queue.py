"""Role queues through the JSON API, on SQLite and PostgreSQL: ``GET /api/v1/queue`` and
``POST /api/v1/items/{id}/claim``, every status code the OpenAPI document names for them, and
answers that match the document's schemas."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from flask import Flask
from jsonschema import Draft202012Validator
from sqlalchemy import select

from engine.assignment import QueueService
from engine.models import BulkExport, Event
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER
from tests.test_api import BASE_URL, cheap_hashing, close, make_app
from webui.openapi import document

#: user name -> roles; each gets an API token. asha and tom serve the assessors' queue (hs_review).
PEOPLE = {"admin": ["admin"], "asha": ["assessor"], "tom": ["assessor"], "clara": ["tracker_creator"]}

QUEUE_CODES = {"200", "401", "403", "422"}
CLAIM_CODES = {"200", "401", "403", "404", "409", "422"}


@dataclass
class World:
    tokens: dict[str, str]
    learner: int


@pytest.fixture
def app(tmp_path, db_url, monkeypatch):
    cheap_hashing(monkeypatch)
    app = make_app(tmp_path, db_url)
    yield app
    close(app)


@pytest.fixture
def world(app) -> World:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        users = rt.users(session)
        tokens = {}
        for name, roles in PEOPLE.items():
            users.create(name, roles)
            tokens[name] = users.create_token(name, "tests")[1]
        learner = ItemService(session, Actor.system(), rt.registry).create("learner", dict(LEARNER)).id
    return World(tokens, learner)


@pytest.fixture
def call(app, world):
    """``call(who, method, path)``: a request with ``who``'s bearer token (None: without one)."""
    client = app.test_client()

    def request(who: str | None, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {world.tokens[who]}"} if who else {}
        response = client.open(path, method=method, headers=headers, **kwargs)
        assert response.status_code != 500
        assert response.is_json, f"{method} {path} answered {response.content_type}"
        return response

    return request


def system(app: Flask):
    rt = app.extensions["tracker"]
    session = rt.session()
    return session, ItemService(session, Actor.system(), rt.registry)


def waiting_review(app: Flask, world: World, employer: str = "Acme") -> int:
    """A Health & Safety review booked by hand: it waits in the assessors' queue."""
    session, service = system(app)
    try:
        review = service.create(
            "hs_review", {"due_by": "2031-03-20", "employer_name": employer}, subject_id=world.learner
        )
        assert review.assignee_id is None
        return review.id
    finally:
        session.close()


def conforms(response, schema_name: str) -> None:
    """The answer matches the schema the OpenAPI document gives for it."""
    doc = document(BASE_URL)
    validator = Draft202012Validator({"$ref": f"#/components/schemas/{schema_name}", "components": doc["components"]})
    errors = [e.message for e in validator.iter_errors(response.json)]
    assert not errors, errors


def test_the_document_names_every_status_code_of_both_routes(call):
    doc = call(None, "GET", "/api/v1/openapi.json").json
    queue = doc["paths"]["/api/v1/queue"]["get"]
    claim = doc["paths"]["/api/v1/items/{item_id}/claim"]["post"]
    assert set(queue["responses"]) == QUEUE_CODES and set(claim["responses"]) == CLAIM_CODES
    assert queue["tags"] == claim["tags"] == ["queue"] and "queue" in {t["name"] for t in doc["tags"]}
    assert "TRACKER_BULK_EXPORT_ALLOW" in queue["responses"]["403"]["description"]
    assert "claimed the item first" in claim["responses"]["409"]["description"]
    assert "not in a queue" in claim["responses"]["422"]["description"]
    assert "role" in claim["responses"]["403"]["description"]
    assert [p["name"] for p in queue["parameters"]] == ["type", "page", "per_page"]
    assert "requestBody" not in claim


# -- GET /queue ------------------------------------------------------------------------------------------


def test_the_queue_lists_waiting_items_oldest_first_a_page_at_a_time(app, world, call):
    ids = [waiting_review(app, world, f"Employer {n}") for n in range(3)]
    response = call("asha", "GET", "/api/v1/queue")
    assert response.status_code == 200
    conforms(response, "ItemPage")
    body = response.json
    assert [i["id"] for i in body["items"]] == ids and body["total"] == 3
    assert (body["page"], body["per_page"]) == (1, 25)
    first = body["items"][0]
    assert first["type"] == "hs_review" and first["assignee"] is None and first["status"] == "booked"
    assert first["url"] == f"{BASE_URL}/items/{ids[0]}" and "transitions" not in first

    second = call("asha", "GET", "/api/v1/queue?type=hs_review&page=2&per_page=2").json
    assert [i["id"] for i in second["items"]] == [ids[2]] and second["total"] == 3
    beyond = call("tom", "GET", "/api/v1/queue?page=9").json
    assert beyond["items"] == [] and beyond["total"] == 3
    assert call("admin", "GET", "/api/v1/queue").json["total"] == 3  # an administrator serves every queue


def test_someone_without_a_queue_gets_an_empty_page(app, world, call):
    waiting_review(app, world)
    response = call("clara", "GET", "/api/v1/queue")
    assert response.status_code == 200 and response.json == {"items": [], "total": 0, "page": 1, "per_page": 25}


@pytest.mark.parametrize(
    ("who", "query", "message", "advice"),
    [
        ("asha", "type=apprenticeship", "You have no 'apprenticeship' queue", "Use one of your queues: hs_review."),
        ("clara", "type=hs_review", "You have no 'hs_review' queue", "Your roles have no queue."),
        ("asha", "type=no_such_type", "no_such_type", ""),
        ("asha", "per_page=101", "", ""),
        ("asha", "page=0", "", ""),
        ("asha", "status=booked", "'status' is not a parameter here", "Use type, page, per_page."),
    ],
)
def test_a_bad_queue_query_is_422_naming_the_parameter(app, world, call, who, query, message, advice):
    waiting_review(app, world)
    response = call(who, "GET", f"/api/v1/queue?{query}")
    assert response.status_code == 422
    conforms(response, "Error")
    assert response.json["message"] == "The query is not valid: 1 problem to fix."
    [problem] = response.json["errors"]
    assert problem["path"] == query.split("=")[0]
    assert message in problem["message"] and advice in problem.get("advice", "")


def test_the_queue_needs_a_token(call):
    response = call(None, "GET", "/api/v1/queue")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    conforms(response, "Error")


# -- POST /items/{id}/claim ------------------------------------------------------------------------------


def test_claiming_assigns_the_item_to_the_caller_once(app, world, call):
    review = waiting_review(app, world)
    response = call("asha", "POST", f"/api/v1/items/{review}/claim")
    assert response.status_code == 200
    conforms(response, "Item")
    item = response.json
    assert item["id"] == review and item["assignee"] == "asha" and item["version"] == 2
    assert {t["key"] for t in item["transitions"]} == {"complete"}  # what she may do with it now
    assert call("asha", "GET", "/api/v1/queue").json["total"] == 0
    assert call("asha", "GET", f"/api/v1/items/{review}").json["assignee"] == "asha"
    session, _service = system(app)
    with session:
        [claimed] = session.scalars(select(Event).where(Event.item_id == review, Event.kind == "assigned")).all()
        assert claimed.payload == {"from": None, "to": "asha", "claimed": True} and claimed.actor.username == "asha"
        assert session.scalar(select(BulkExport)) is None  # a single item is no bulk download


def test_a_claim_that_lost_the_race_is_409_saying_who_won(app, world, call):
    review = waiting_review(app, world)
    rt = app.extensions["tracker"]
    with rt.session() as session:
        QueueService(rt.items(session, rt.actor(session, "asha"))).claim(review)  # asha was quicker
    response = call("tom", "POST", f"/api/v1/items/{review}/claim")
    assert response.status_code == 409
    conforms(response, "Error")
    assert response.json["message"].startswith(f"#{review} H&S review: Acme for Jane Smith was claimed by asha")
    assert response.json["advice"] == "Pick another item from your queue."
    assert call("tom", "GET", f"/api/v1/items/{review}").status_code == 403  # still asha's, not tom's
    assert call("admin", "GET", f"/api/v1/items/{review}").json["assignee"] == "asha"


def test_claiming_without_the_queue_role_is_403_and_changes_nothing(app, world, call):
    review = waiting_review(app, world)
    response = call("clara", "POST", f"/api/v1/items/{review}/claim")
    assert response.status_code == 403
    conforms(response, "Error")
    assert response.json["message"] == "clara may not claim Health & Safety review items."
    assert "'Assessor'" in response.json["advice"]
    assert call("admin", "GET", f"/api/v1/items/{review}").json["assignee"] is None


@pytest.mark.parametrize("item", ["99999", "0", "abc", str(2**31)])
def test_claiming_an_unknown_item_is_404(world, call, item):
    response = call("asha", "POST", f"/api/v1/items/{item}/claim")
    assert response.status_code == 404
    conforms(response, "Error")


def test_an_item_not_in_a_queue_or_no_longer_open_is_422(app, world, call):
    response = call("asha", "POST", f"/api/v1/items/{world.learner}/claim")
    assert response.status_code == 422
    conforms(response, "Error")
    [problem] = response.json["errors"]
    assert problem["path"] == "assignee" and "is not in a queue" in problem["message"]

    review = waiting_review(app, world)
    session, service = system(app)
    with session:
        service.transition(review, "cancelled")
    response = call("asha", "POST", f"/api/v1/items/{review}/claim")
    assert response.status_code == 422
    [problem] = response.json["errors"]
    assert problem["path"] == "status" and "'Cancelled', so there is nothing to claim" in problem["message"]
    assert call("admin", "GET", f"/api/v1/items/{review}").json["assignee"] is None


def test_a_claim_with_query_parameters_is_422_and_claims_nothing(app, world, call):
    review = waiting_review(app, world)
    response = call("asha", "POST", f"/api/v1/items/{review}/claim?assignee=tom")
    assert response.status_code == 422
    assert response.json["errors"][0]["path"] == "assignee"
    assert call("admin", "GET", f"/api/v1/items/{review}").json["assignee"] is None


def test_claiming_needs_a_token(app, world, call):
    review = waiting_review(app, world)
    response = call(None, "POST", f"/api/v1/items/{review}/claim")
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")
    assert call("admin", "GET", f"/api/v1/items/{review}").json["assignee"] is None
