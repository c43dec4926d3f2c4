"""The performance summary on the home page and the task-list pages its counts link to."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest

from engine import indexes
from engine.config import Settings
from engine.documents import DocumentStore
from engine.models import Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.documents import DocumentService
from engine.tasklists import PROBLEMS_KEY, TaskListService
from tests.conftest import LEARNER, TEST_DEFINITIONS
from webui import create_app

PASSWORD = "tasklist-password-1"
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "data"


@pytest.fixture(autouse=True)
def quick_hashing(monkeypatch):
    """Cheap argon2 parameters: password strength is not what these tests check."""
    from argon2 import PasswordHasher

    monkeypatch.setattr("engine.services.users._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def app(tmp_path, db_url):
    settings = Settings(
        instance_path=tmp_path, database_url=db_url, definitions_path=[TEST_DEFINITIONS], secret_key="test-secret"
    )
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings, "ITEMS_PER_PAGE": 2})
    yield app
    runtime = app.extensions["tracker"]
    if "engine" in runtime.__dict__:
        runtime.engine.dispose()


def example(type_key: str) -> dict:
    return json.loads((EXAMPLES / type_key / "valid.json").read_text())


@pytest.fixture
def data(app):
    """Five compliance records with signup paperwork incomplete (two by the assessor "asa"),
    one complete, one complete with a warning (no prior attainment evidence);
    and two apprenticeships past their planned end with their sign-up paperwork accepted, one
    assigned to "asa"."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        users = rt.users(session)
        for name, roles in {"mona": ["manager"], "asa": ["assessor"], "cath": ["tracker_creator"]}.items():
            users.create(name, roles, password=PASSWORD)
        session.commit()
        system = ItemService(session, Actor.system(), rt.registry)
        learner = system.create("learner", LEARNER).id
        incomplete = {**example("compliance"), "signup_paperwork_complete": False}
        ids = [system.create("compliance", incomplete, subject_id=learner).id for _ in range(3)]
        ids += [system.create("compliance", incomplete, subject_id=learner, assignee="asa").id for _ in range(2)]
        complete = system.create("compliance", example("compliance"), subject_id=learner).id
        no_evidence = {**example("compliance"), "prior_attainment_evidence": False}  # a warning rule fails
        warned = system.create("compliance", no_evidence, subject_id=learner).id
        # the complete ones have their sign-up form and photo ID accepted by quality assurance
        documents = DocumentService(session, Actor.system(), rt.registry, DocumentStore.from_settings(rt.settings))
        for item_id in (complete, warned):
            for category in ("signup_form", "id_evidence"):
                document = documents.upload(item_id, category, f"{category}.pdf", io.BytesIO(b"%PDF-1.4 scan"))
                documents.accept(document.id)
        late = {**example("apprenticeship"), "planned_end_date": "2026-10-01"}
        overdue = [system.create("apprenticeship", late, subject_id=learner, assignee=who).id for who in ("asa", None)]
        for item_id in overdue:  # signed up properly: late, but not for paperwork
            for category in ("commitment_statement", "apprenticeship_agreement", "initial_assessment"):
                document = documents.upload(item_id, category, f"{category}.pdf", io.BytesIO(b"%PDF-1.4 scan"))
                documents.accept(document.id)
        session.commit()
        return {"learner": learner, "incomplete": ids, "overdue": overdue, "warned": warned}


def login(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def summary_counts(html: str) -> dict[str, int]:
    """``{"/tasklists/type/key": count}`` of the summary's links."""
    return {url: int(n) for url, n in re.findall(r'<a href="(/tasklists/[^"?]+)"[^>]*data-count="(\d+)"', html)}


def listed(client, url: str) -> list[int]:
    """Every item id on every page of a task-list page."""
    ids: list[int] = []
    page = 1
    while True:
        html = client.get(url, query_string={"page": page} if page > 1 else {}).get_data(as_text=True)
        body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
        ids += [int(n) for n in re.findall(r'<a href="/items/(\d+)">', body)]
        if 'rel="next"' not in html:
            return ids
        page += 1


def test_summary_counts_equal_the_rows_of_their_lists(app, data):
    client = login(app, "mona")
    html = client.get("/").get_data(as_text=True)
    assert "Performance summary" in html
    counts = summary_counts(html)
    assert counts["/tasklists/compliance/signup_incomplete"] == 5
    assert counts["/tasklists/apprenticeship/overdue_completion"] == 2
    for url, count in counts.items():
        assert len(listed(client, url)) == count, url
    assert sorted(listed(client, "/tasklists/compliance/signup_incomplete")) == sorted(data["incomplete"])
    assert "Items by type and state" in html  # the per-state counts stay below


def test_scoped_user_counts_only_their_own_items(app, data):
    client = login(app, "asa")
    html = client.get("/").get_data(as_text=True)
    counts = summary_counts(html)
    assert counts["/tasklists/apprenticeship/overdue_completion"] == 1
    assert "/tasklists/compliance/signup_incomplete" not in counts  # not one of the assessor's lists
    assert listed(client, "/tasklists/apprenticeship/overdue_completion") == [data["overdue"][0]]


def test_a_list_the_roles_may_not_see_is_not_found(app, data):
    client = login(app, "asa")
    response = client.get("/tasklists/compliance/signup_incomplete")
    assert response.status_code == 404
    assert "There is no task list" in response.get_data(as_text=True)
    assert login(app, "mona").get("/tasklists/compliance/no_such_list").status_code == 404


def test_task_list_pages_and_bad_paging(app, data):
    client = login(app, "cath")
    first = client.get("/tasklists/compliance/signup_incomplete").get_data(as_text=True)
    assert "5 items, page 1 of 3" in first
    assert client.get("/tasklists/compliance/signup_incomplete?page=4").status_code == 404
    assert client.get("/tasklists/compliance/signup_incomplete?page=x").status_code == 422


def test_an_empty_list_says_so(app, data):
    client = login(app, "mona")
    html = client.get("/tasklists/compliance/awaiting_approval").get_data(as_text=True)
    assert "Nothing in this list" in html


def test_items_with_problems_is_a_built_in_list(app, data):
    rt = app.extensions["tracker"]
    with rt.session() as session:
        service = TaskListService(session, Actor.system(), rt.registry)
        assert session.get(Item, data["warned"]).problem_count > 0
        entries = {(e["type"], e["key"]): e for e in service.summary()}
        problems = entries[("compliance", PROBLEMS_KEY)]
        assert problems["label"].endswith(" with problems to fix")
        assert problems["count"] == 1
        for tracker_type in rt.registry.types.values():  # exactly the types with a warning rule
            warns = any(rule.severity == "warning" for rule in tracker_type.rules)
            assert ((tracker_type.key, PROBLEMS_KEY) in entries) == warns, tracker_type.key
        assert not all(any(r.severity == "warning" for r in t.rules) for t in rt.registry.types.values())
        assert service.where(*service.find("compliance", PROBLEMS_KEY)) is not None
    client = login(app, "mona")
    counts = summary_counts(client.get("/").get_data(as_text=True))
    assert counts["/tasklists/compliance/problems"] == 1
    assert listed(client, "/tasklists/compliance/problems") == [data["warned"]]


def test_the_problems_list_has_a_derived_index(app):
    rt = app.extensions["tracker"]
    with rt.engine.connect() as connection:
        wanted = indexes.wanted(rt.registry, connection.dialect)
    problem_indexes = [i for i in wanted if i.type_key == "compliance" and i.tasklist == PROBLEMS_KEY]
    assert len(problem_indexes) == 1
    assert "problem_count > 0" in problem_indexes[0].sql


def bearer(app, username: str) -> dict[str, str]:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        _token, text = rt.users(session).create_token(username, "tests")
        session.commit()
    return {"Authorization": f"Bearer {text}"}


def test_api_pages_through_a_task_list(app, data):
    client, headers = app.test_client(), bearer(app, "mona")
    counts = {(e["type"], e["key"]): e["count"] for e in client.get("/api/v1/tasklists", headers=headers).get_json()}
    url = "/api/v1/tasklists/compliance/signup_incomplete/items"
    first = client.get(url, headers=headers, query_string={"per_page": 3}).get_json()
    second = client.get(url, headers=headers, query_string={"per_page": 3, "page": 2}).get_json()
    assert first["total"] == second["total"] == counts[("compliance", "signup_incomplete")] == 5
    assert (first["page"], first["per_page"], len(first["items"]), len(second["items"])) == (1, 3, 3, 2)
    ids = [i["id"] for i in first["items"] + second["items"]]
    assert sorted(ids) == sorted(data["incomplete"])
    listed_item = first["items"][0]
    same = client.get("/api/v1/items", headers=headers, query_string={"type": "compliance"}).get_json()["items"]
    assert set(listed_item) == set(same[0])  # the same item shape as GET /items
    past = client.get(url, headers=headers, query_string={"page": 9}).get_json()
    assert past["items"] == [] and past["total"] == 5


def test_api_task_list_errors(app, data):
    client = app.test_client()
    assessor, manager = bearer(app, "asa"), bearer(app, "mona")
    hidden = client.get("/api/v1/tasklists/compliance/signup_incomplete/items", headers=assessor)
    assert hidden.status_code == 404 and "There is no task list" in hidden.get_json()["message"]
    assert client.get("/api/v1/tasklists/compliance/nope/items", headers=manager).status_code == 404
    for bad in ({"page": 0}, {"page": "x"}, {"per_page": 1000}):
        response = client.get("/api/v1/tasklists/compliance/signup_incomplete/items", headers=manager, query_string=bad)
        assert response.status_code == 422, bad
        assert response.get_json()["errors"]
    assert client.get("/api/v1/tasklists/compliance/signup_incomplete/items").status_code == 401
    document = client.get("/api/v1/openapi.json").get_json()
    operation = document["paths"]["/api/v1/tasklists/{type}/{key}/items"]["get"]
    assert {"200", "401", "404", "422"} <= set(operation["responses"])


def test_learner_page_lists_problems_task_lists_and_documents(app, data):
    client = login(app, "mona")
    html = client.get(f"/learners/{data['learner']}").get_data(as_text=True)
    assert "Problems to fix" in html
    assert "no prior attainment evidence" in html  # the warning's message, with its advice
    assert "Upload certificates or a signed declaration" in html
    assert f'href="/items/{data["warned"]}"' in html
    assert 'href="/tasklists/compliance/signup_incomplete"' in html
    assert 'href="/tasklists/apprenticeship/overdue_completion"' in html
    documents = html.split('id="documents-heading"', 1)[1].split("</section>", 1)[0]
    waiting = {int(n) for n in re.findall(r'href="/items/(\d+)"', documents)}
    assert set(data["incomplete"]) <= waiting  # in "Signup paperwork incomplete"
    assert not waiting & set(data["overdue"])  # late, but not for paperwork
    search = client.get("/search", query_string={"q": "1000000043"}).get_data(as_text=True)
    item_page = client.get(f"/items/{data['warned']}").get_data(as_text=True)
    assert f'href="/learners/{data["learner"]}"' in search or f'href="/learners/{data["learner"]}"' in item_page


def test_learner_page_for_a_scoped_user_and_errors(app, data):
    client = login(app, "asa")
    refused = client.get(f"/learners/{data['learner']}")  # the learner record is not the assessor's
    assert refused.status_code == 403 and "Nothing is open" not in refused.get_data(as_text=True)
    manager = login(app, "mona")
    assert manager.get(f"/learners/{data['warned']}").status_code == 404  # not a learner
    assert manager.get("/learners/999999").status_code == 404


def test_learner_page_empty_state(app, data):
    rt = app.extensions["tracker"]
    with rt.session() as session:
        other = ItemService(session, Actor.system(), rt.registry).create(
            "learner", {**LEARNER, "given_name": "Zed", "uln": "1000000027"}
        )
        session.commit()
        other_id = other.id
    html = login(app, "mona").get(f"/learners/{other_id}").get_data(as_text=True)
    assert "Nothing is open for this learner" in html


def hidden_table(html: str, table_id: str) -> list[tuple[str, ...]]:
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [tuple(re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", r)) for r in rows]


def test_overview_charts_are_inline_svg_with_their_numbers(app, data):
    html = login(app, "mona").get("/").get_data(as_text=True)
    assert html.count("<svg") >= 2 and '<title id="states-chart-title">' in html and "<desc" in html
    states = hidden_table(html, "states-chart-data")
    compliance = {state: int(n) for name, state, n in states[1:] if name == "Compliance"}
    assert sum(compliance.values()) == 7  # every compliance record, in the states they are in
    assert sum(int(n) for name, _state, n in states[1:] if name == "Learner") == 1
    problems = {name: int(n) for name, n in hidden_table(html, "problems-chart-data")[1:]}
    assert problems["Compliance"] == 1
    assert all(n == 0 for name, n in problems.items() if name != "Compliance")
