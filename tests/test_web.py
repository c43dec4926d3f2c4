"""The minimal web UI: sign-in, types with counts, a paginated list, an item with its history."""

from __future__ import annotations

import re

import pytest

from engine.config import Settings
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER, TEST_DEFINITIONS
from webui import create_app


@pytest.fixture
def app(tmp_path, db_url):
    settings = Settings(
        instance_path=tmp_path, database_url=db_url, definitions_path=[TEST_DEFINITIONS], secret_key="test-secret"
    )
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings, "ITEMS_PER_PAGE": 2})
    return app


@pytest.fixture
def rt(app):
    return app.extensions["tracker"]


@pytest.fixture
def people(rt):
    with rt.session() as session:
        users = rt.users(session)
        users.create("clara", ["tracker_creator"], password="clara-password-1")
        users.create("mona", ["manager"], password="mona-password-1")
        users.create("cass", ["caseworker"], password="cass-password-1")
        users.create("gone", ["admin"], password="gone-password-1")
        users.get("gone").active = False
        session.commit()


@pytest.fixture
def learners(rt, people):
    with rt.session() as session:
        service = ItemService(session, Actor.system(), rt.registry)
        ids = []
        for i, uln in enumerate(["1000000043", "1000000027", "1000000035"]):
            ids.append(service.create("learner", {**LEARNER, "given_name": f"L{i}", "uln": uln}).id)
        concern = service.create(
            "concern", {"category": "online", "reported_on": "2025-09-01"}, subject_id=ids[0], assignee="clara"
        )
        service.comment(concern.id, "Called the tutor")
        return ids, concern.id


def csrf(client, url: str) -> str:
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def login(client, username: str, password: str):
    token = csrf(client, "/login")
    return client.post("/login", data={"username": username, "password": password, "csrf_token": token})


def test_pages_need_sign_in(app):
    client = app.test_client()
    response = client.get("/")
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/login")


def test_wrong_password_inactive_user_and_missing_csrf(app, people):
    client = app.test_client()
    bad = login(client, "clara", "nope")
    assert bad.status_code == 401
    assert "do not match an active account" in bad.get_data(as_text=True)
    assert login(client, "gone", "gone-password-1").status_code == 401
    no_token = client.post("/login", data={"username": "clara", "password": "clara-password-1"})
    assert no_token.status_code == 400
    assert client.get("/").status_code == 302


def test_sign_in_then_browse_types_list_and_item(app, learners):
    ids, concern_id = learners
    client = app.test_client()
    response = login(client, "clara", "clara-password-1")
    assert response.status_code == 302
    home = client.get("/").get_data(as_text=True)
    assert "Safeguarding concern" in home and "New: 1" in home
    first = client.get("/types/learner").get_data(as_text=True)
    assert "3 items, page 1 of 2" in first and 'rel="next"' in first
    second = client.get("/types/learner?page=2").get_data(as_text=True)
    assert "page 2 of 2" in second and 'rel="prev"' in second
    assert client.get("/types/learner?page=9").status_code == 404
    item = client.get(f"/items/{concern_id}/edit").get_data(as_text=True)
    assert "Online concern for L0 Smith" in item
    assert "commented: Called the tutor" in item
    assert "assigned it to clara" in item
    assert "No contact e-mail recorded" in item  # the stored warning, with its advice
    assert client.get("/items/9999").status_code == 404
    assert client.get("/types/nope").status_code == 404


def test_scoped_user_cannot_open_other_items(app, learners):
    _ids, concern_id = learners
    client = app.test_client()
    login(client, "cass", "cass-password-1")
    response = client.get(f"/items/{concern_id}")
    assert response.status_code == 403
    assert "assigned to or created by them" in response.get_data(as_text=True)


def test_sign_out_needs_post_and_ends_the_session(app, people):
    client = app.test_client()
    login(client, "mona", "mona-password-1")
    assert client.get("/").status_code == 200
    token = csrf(client, "/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/").status_code == 302


def test_next_parameter_cannot_leave_the_site(app, people):
    client = app.test_client()
    token = csrf(client, "/login")
    response = client.post(
        "/login?next=//evil.example/x", data={"username": "mona", "password": "mona-password-1", "csrf_token": token}
    )
    assert response.headers["Location"] == "/"


def test_item_page_offers_watching(app, learners):
    _ids, concern_id = learners
    client = app.test_client()
    login(client, "mona", "mona-password-1")
    page = client.get(f"/items/{concern_id}").get_data(as_text=True)
    assert ">Watch</button>" in page
    token = csrf(client, f"/items/{concern_id}")
    client.post(f"/items/{concern_id}/watch", data={"csrf_token": token})
    assert ">Stop watching</button>" in client.get(f"/items/{concern_id}").get_data(as_text=True)
