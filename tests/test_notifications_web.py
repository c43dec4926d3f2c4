"""Notifications in the browser: the bell and inbox, preferences, watching, the dead-letter
page with its Retry button, and /health; real SMTP server, both databases."""

from __future__ import annotations

import html
import re

import pytest
from flask import render_template_string
from flask_login import login_user
from sqlalchemy import select, update

from engine.models import Notification, Outbox, RoleGrant, User
from engine.permissions import Actor
from tests.notify_helpers import *  # noqa: F403 - fixtures
from tests.notify_helpers import PASSWORD, _password_hash, free_port, make_settings, people, service
from webui import create_app
from webui.auth import SessionUser


@pytest.fixture
def app(tmp_path, db_url, smtp):
    settings = make_settings(tmp_path, db_url, smtp_url=smtp.url)
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings})
    rt = app.extensions["tracker"]
    ids = people(rt)
    with rt.session() as session:
        admin = User(username="root", display_name="Root", email="root@tracker.test", password_hash=_password_hash())
        admin.grants.append(RoleGrant(role="admin"))
        session.add(admin)
        session.commit()
        ids["root"] = admin.id
    app.ids = ids
    yield app
    rt.engine.dispose()


def rt_of(app):
    return app.extensions["tracker"]


def token(client, url: str = "/inbox") -> str:
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def signed_in(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def assign(app, *topics: str, to: str = "bob") -> list[int]:
    rt = rt_of(app)
    with rt.session() as session:
        alice = service(rt, session, "alice")
        return [alice.create("meeting", {"topic": t}, assignee=to).id for t in topics]


def test_the_bell_counts_unread_on_every_page_and_the_inbox_opens_items(app):
    first, second = assign(app, "First", "Second")
    bob = signed_in(app, "bob")
    home = bob.get("/").get_data(as_text=True)
    assert re.search(r'id="nav-inbox".*?2<span class="visually-hidden"> unread</span>', home, re.S)
    page = bob.get("/inbox").get_data(as_text=True)
    assert "2 unread notifications." in page
    assert page.index("alice assigned Second to you") < page.index("alice assigned First to you")  # newest first
    [entry_id] = [
        n.id
        for n in _entries(app, app.ids["bob"])
        if n.item_id == first  # the one about "First"
    ]
    opened = bob.get(f"/inbox/{entry_id}")
    assert opened.status_code == 302 and opened.headers["Location"] == f"/items/{first}"
    assert "1 unread notification." in bob.get("/inbox").get_data(as_text=True)
    assert "alice assigned Second" in bob.get("/inbox?show=unread").get_data(as_text=True)
    assert "alice assigned First" not in bob.get("/inbox?show=unread").get_data(as_text=True)
    [other] = [n.id for n in _entries(app, app.ids["bob"]) if n.item_id == second]
    response = bob.post(f"/inbox/{other}/read", data={"csrf_token": token(bob), "next": "/inbox?show=unread"})
    assert response.headers["Location"] == "/inbox?show=unread"
    assert "Nothing unread." in bob.get("/inbox").get_data(as_text=True)
    assert 'class="badge"' not in bob.get("/").get_data(as_text=True)


def test_mark_all_read_and_the_limits_of_the_inbox(app):
    assign(app, "A", "B", "C")
    bob = signed_in(app, "bob")
    response = bob.post("/inbox/read-all", data={"csrf_token": token(bob)}, follow_redirects=True)
    assert "3 notifications marked as read." in response.get_data(as_text=True)
    assert "Nothing unread." in response.get_data(as_text=True)
    assert bob.post("/inbox/read-all", data={}).status_code == 400  # no CSRF token: refused
    assert bob.get("/inbox?page=9").status_code == 404
    carol = signed_in(app, "carol")
    someone_elses = _entries(app, app.ids["bob"])[0].id
    assert carol.get(f"/inbox/{someone_elses}").status_code == 404
    assert carol.post(f"/inbox/{someone_elses}/read", data={"csrf_token": token(carol)}).status_code == 404
    assert "No notifications yet." in carol.get("/inbox").get_data(as_text=True)
    anonymous = app.test_client()
    assert anonymous.get("/inbox").status_code == 302 and anonymous.get("/preferences").status_code == 302


def test_preferences_page_saves_channels_and_digest(app, smtp):
    bob = signed_in(app, "bob")
    page = bob.get("/preferences").get_data(as_text=True)
    assert 'id="pref-assigned-email"' in page and 'for="pref-assigned-email"' in page
    assert re.search(r'id="pref-assigned-email"\s+checked', page)
    response = bob.post(
        "/preferences",
        data={"csrf_token": token(bob, "/preferences"), "assigned": ["inbox"], "mentioned": ["inbox", "email"]},
        follow_redirects=True,
    )
    text = response.get_data(as_text=True)
    assert "Your notification preferences are saved." in text
    assert re.search(r'id="pref-assigned-email"\s*>', text) and re.search(r'id="pref-assigned-inbox"\s+checked', text)
    assign(app, "Quiet")
    assert smtp.to("bob@tracker.test") == [] and len(_entries(app, app.ids["bob"])) == 1
    bob.post("/preferences", data={"csrf_token": token(bob, "/preferences"), "assigned": ["email"], "digest": "on"})
    assert 'id="pref-digest" aria-describedby="pref-digest-help" checked' in bob.get("/preferences").get_data(
        as_text=True
    )


def test_preferences_refuse_a_crafted_channel_and_change_nothing(app):
    bob = signed_in(app, "bob")
    response = bob.post("/preferences", data={"csrf_token": token(bob, "/preferences"), "assigned": ["carrier-pigeon"]})
    assert response.status_code == 400
    text = html.unescape(response.get_data(as_text=True))
    assert "Your preferences were not saved" in text and "'carrier-pigeon' is not a notification channel" in text
    assert re.search(r'id="pref-watched-email"\s+checked', text)  # still the defaults
    assert bob.post("/preferences", data={"assigned": ["inbox"]}).status_code == 400  # no CSRF token


def test_watch_and_unwatch_from_the_item_page(app, smtp):
    [item_id] = assign(app, "Watched", to="alice")
    carol = signed_in(app, "carol")
    response = carol.post(f"/items/{item_id}/watch", data={"csrf_token": token(carol)})
    assert response.status_code == 302 and response.headers["Location"] == f"/items/{item_id}"
    rt = rt_of(app)
    with rt.session() as session:
        service(rt, session, "alice").comment(item_id, "Minutes are up")
    assert [m["Subject"] for m in smtp.to("carol@tracker.test")] == ["[Tracker] alice commented on Watched"]
    carol.post(f"/items/{item_id}/unwatch", data={"csrf_token": token(carol)})
    with rt.session() as session:
        service(rt, session, "alice").comment(item_id, "And the actions")
    assert len(smtp.to("carol@tracker.test")) == 1
    dave = signed_in(app, "dave")
    assert dave.post(f"/items/{item_id}/watch", data={"csrf_token": token(dave)}).status_code == 403
    assert carol.post("/items/99999/watch", data={"csrf_token": token(carol)}).status_code == 404
    assert carol.get(f"/items/{item_id}/watch").status_code == 405
    assert carol.post(f"/items/{item_id}/watch", data={}).status_code == 400


def test_the_watch_button_shows_the_state_and_posts_with_a_csrf_token(app):
    [item_id] = assign(app, "Button")
    rt = rt_of(app)
    with app.test_request_context(f"/items/{item_id}"), rt.session() as session:
        user = session.scalar(select(User).where(User.username == "carol"))
        login_user(SessionUser(user, Actor.for_user(user, rt.registry)))
        item = service(rt, session, "carol").get(item_id)
        html = render_template_string('{% include "_watch_button.html" %}', item=item)
        assert f'action="/items/{item_id}/watch"' in html and ">Watch</button>" in html
        assert 'name="csrf_token"' in html and 'aria-describedby="watch-help-' in html
        service(rt, session, "carol").watch(item_id)
        html = render_template_string('{% include "_watch_button.html" %}', item=item)
        assert f'action="/items/{item_id}/unwatch"' in html and ">Stop watching</button>" in html


def test_dead_letters_page_lists_errors_and_its_retry_button_delivers(app, smtp):
    smtp.stop()
    [item_id] = assign(app, "Stuck")
    rt = rt_of(app)
    with rt.session() as session:
        session.execute(update(Outbox).where(Outbox.kind == "notify").values(status="dead", attempts=4))
        session.commit()
        [row_id] = session.scalars(select(Outbox.id).where(Outbox.status == "dead"))
    bob = signed_in(app, "bob")
    assert bob.get("/admin/outbox").status_code == 403
    assert bob.post(f"/admin/outbox/{row_id}/retry", data={"csrf_token": token(bob)}).status_code == 403
    assert "undelivered" not in bob.get("/").get_data(as_text=True)
    root = signed_in(app, "root")
    assert "1 undelivered</a>" in root.get("/").get_data(as_text=True)
    page = root.get("/admin/outbox").get_data(as_text=True)
    assert "1 dead-lettered, 0 waiting" in page
    assert "alice assigned Stuck to you" in page and f"#{item_id} Stuck" in page
    assert "attempt 1: E-mail to bob: SMTP 127.0.0.1" in page
    assert f'action="/admin/outbox/{row_id}/retry"' in page
    smtp.start()
    response = root.post(f"/admin/outbox/{row_id}/retry", data={"csrf_token": token(root)}, follow_redirects=True)
    text = response.get_data(as_text=True)
    assert f"Message #{row_id} was delivered." in text and "No dead-lettered notifications" in text
    [mail] = smtp.to("bob@tracker.test")
    assert mail["Subject"] == "[Tracker] alice assigned Stuck to you"
    again = root.post(f"/admin/outbox/{row_id}/retry", data={"csrf_token": token(root)})
    assert again.status_code == 409 and "not dead-lettered" in html.unescape(again.get_data(as_text=True))
    assert root.post("/admin/outbox/99999/retry", data={"csrf_token": token(root)}).status_code == 404
    assert root.post(f"/admin/outbox/{row_id}/retry", data={}).status_code == 400


def test_health_endpoint_reports_database_and_outbox_without_sign_in(app, smtp):
    client = app.test_client()
    body = client.get("/health").get_json()
    assert body == {"status": "ok", "database": {"ok": True}, "outbox": {"pending": 0, "dead": 0}}
    smtp.stop()
    assign(app, "Waiting")
    body = client.get("/health").get_json()
    assert body["outbox"] == {"pending": 1, "dead": 0} and body["status"] == "ok"
    rt = rt_of(app)
    with rt.session() as session:
        session.execute(update(Outbox).where(Outbox.kind == "notify").values(status="dead"))
        session.commit()
    response = client.get("/health")
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    assert response.get_json()["status"] == "degraded" and response.get_json()["outbox"]["dead"] == 1


def test_health_says_when_redis_or_the_database_is_down(tmp_path, db_url, smtp):
    closed = f"redis://127.0.0.1:{free_port()}/14"
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": make_settings(tmp_path, db_url, redis_url=closed)})
    response = app.test_client().get("/health")
    body = response.get_json()
    assert response.status_code == 200 and body["redis"] == {"ok": False} and body["status"] == "degraded"
    app.extensions["tracker"].engine.dispose()
    empty = f"sqlite:///{tmp_path / 'never-migrated.db'}"  # answers, but has no tables
    broken = create_app({"TESTING": True, "TRACKER_SETTINGS": make_settings(tmp_path, empty)})
    response = broken.test_client().get("/health")
    assert response.status_code == 503 and response.get_json() == {"status": "down", "database": {"ok": False}}


def _entries(app, user_id: int) -> list[Notification]:
    rt = rt_of(app)
    with rt.session() as session:
        return list(session.scalars(select(Notification).where(Notification.user_id == user_id)))
