"""Security headers on every kind of response, and sign-in sessions kept on the server: a new
id at each sign-in and after setting up two-factor sign-in, so a cookie captured before is
not signed in afterwards; sign-out, the idle timeout and the lifetime end a session for good."""

from __future__ import annotations

from datetime import timedelta

import pytest
from flask import Response
from sqlalchemy import select, update

from engine.config import Settings
from engine.errors import TrackerError
from engine.models import AuditEntry, WebSession, utcnow
from tests import webhelpers
from tests.webhelpers import PASSWORD, code_step, create_users, csrf, enrol, now_code, password_step, post, sign_in
from webui.security import CSP, HSTS

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, ann=["manager"], root=["admin"])
    return app


@pytest.fixture
def rt(app):
    return app.extensions["tracker"]


def cookie_of(client, app) -> str:
    return client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value


def client_with(app, value: str):
    """Another browser holding a copy of ``value`` as its session cookie."""
    other = app.test_client()
    other.set_cookie(app.config["SESSION_COOKIE_NAME"], value)
    return other


def signed_in(client) -> bool:
    return client.get("/").status_code == 200


# -- headers ----------------------------------------------------------------------------------------


def assert_security_headers(response, *, hsts: bool = False) -> None:
    h = response.headers
    assert h["Content-Security-Policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "script-src 'self'" in CSP and "frame-ancestors 'none'" in CSP
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"] == "same-origin"
    assert "camera=()" in h["Permissions-Policy"] and "geolocation=()" in h["Permissions-Policy"]
    assert ("Strict-Transport-Security" in h) is hsts


def test_every_kind_of_response_carries_the_security_headers(app):
    client = app.test_client()
    assert_security_headers(client.get("/login"))  # a page
    assert_security_headers(client.get("/no/such/page"))  # an error page
    assert_security_headers(client.get("/static/style.css"))  # a static file
    assert_security_headers(client.get("/api/v1/types"))  # JSON (401 without a token)
    assert_security_headers(client.get("/health"))
    sign_in(client, "ann")
    page = client.get("/")
    assert_security_headers(page)
    assert page.headers["Cache-Control"] == "no-store"  # a signed-in page is never cached
    assert "no-store" not in client.get("/static/style.css").headers.get("Cache-Control", "")


def test_a_response_with_its_own_policy_keeps_it(new_app):
    app = new_app()
    strict = "default-src 'none'; sandbox"
    app.add_url_rule("/own-policy", "own_policy", lambda: Response("x", headers={"Content-Security-Policy": strict}))
    assert app.test_client().get("/own-policy").headers["Content-Security-Policy"] == strict


def test_hsts_only_behind_tls(new_app):
    plain = new_app()
    assert "Strict-Transport-Security" not in plain.test_client().get("/login").headers
    forwarded = plain.test_client().get("/login", headers={"X-Forwarded-Proto": "https"})
    assert "Strict-Transport-Security" not in forwarded.headers  # no trusted proxy: the header is ignored
    https = new_app(settings={"base_url": "https://tracker.example.org"})
    assert https.test_client().get("/login").headers["Strict-Transport-Security"] == HSTS


def test_a_trusted_proxy_gives_the_scheme_and_the_client_address(new_app, tmp_path):
    app = new_app(settings={"proxy_count": 1})
    create_users(app, ann=["manager"])
    client = app.test_client()
    response = client.get("/login", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.9"})
    assert response.headers["Strict-Transport-Security"] == HSTS
    assert "Strict-Transport-Security" not in client.get("/login").headers  # plain http through the proxy
    token = csrf(client, "/login")
    client.post(
        "/login",
        data={"username": "ann", "password": "wrong", "csrf_token": token},
        headers={"X-Forwarded-For": "203.0.113.9"},
    )
    rt = app.extensions["tracker"]
    with rt.session() as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.kind == "login.failure"))
        assert entry.address == "203.0.113.9"


def test_security_settings_come_from_the_environment():
    base = {"TRACKER_SECRET_KEY": "x"}
    settings = Settings.from_env(base)
    assert (settings.session_idle_minutes, settings.lockout_attempts, settings.lockout_minutes) == (30, 5, 15)
    assert settings.proxy_count == 0
    custom = Settings.from_env(
        {
            **base,
            "TRACKER_SESSION_IDLE_MINUTES": "10",
            "TRACKER_LOCKOUT_ATTEMPTS": "3",
            "TRACKER_LOCKOUT_MINUTES": "60",
            "TRACKER_PROXY_COUNT": "1",
        }
    )
    assert (custom.session_idle_minutes, custom.lockout_attempts, custom.lockout_minutes, custom.proxy_count) == (
        10,
        3,
        60,
        1,
    )
    for name, bad in [
        ("TRACKER_SESSION_IDLE_MINUTES", "0"),
        ("TRACKER_SESSION_IDLE_MINUTES", "soon"),
        ("TRACKER_LOCKOUT_ATTEMPTS", "-1"),
        ("TRACKER_LOCKOUT_MINUTES", "1.5"),
        ("TRACKER_PROXY_COUNT", "9"),
    ]:
        with pytest.raises(TrackerError, match=f"{name} is not a whole number"):
            Settings.from_env({**base, name: bad})


# -- cookies -------------------------------------------------------------------------------------------


def test_cookie_flags_and_the_host_prefix_over_https(new_app):
    app = new_app(settings={"base_url": "https://tracker.example.org"})
    create_users(app, ann=["manager"])
    client = app.test_client()
    cookie = sign_in(client, "ann").headers["Set-Cookie"]
    assert cookie.startswith("__Host-tracker=")
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Domain=" not in cookie


# -- rotation ----------------------------------------------------------------------------------------


def test_a_cookie_captured_before_sign_in_is_not_signed_in_afterwards(app):
    client = app.test_client()
    client.get("/login")
    with client.session_transaction() as session:
        session["planted"] = "by an attacker"
    before = cookie_of(client, app)
    sign_in(client, "ann")
    after = cookie_of(client, app)
    assert after != before
    assert signed_in(client)
    assert not signed_in(client_with(app, before))


def test_each_sign_in_gets_a_new_session_id_and_ends_the_browsers_previous_one(app, rt):
    client = app.test_client()
    sign_in(client, "ann")
    with client.session_transaction() as session:
        first = session["sid"]
    first_cookie = cookie_of(client, app)
    post(client, "/logout")
    sign_in(client, "ann")
    with client.session_transaction() as session:
        assert session["sid"] != first
    assert not signed_in(client_with(app, first_cookie))
    with rt.session() as session:
        assert [s.ended_reason for s in session.scalars(select(WebSession).order_by(WebSession.id))] == [
            "signed_out",
            None,
        ]
        assert all(len(s.token_hash) == 64 for s in session.scalars(select(WebSession)))  # only hashes are kept


def test_the_cookie_from_the_password_step_is_not_signed_in_after_the_code_step(app):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    password_step(client, "ann")
    pending = cookie_of(client, app)
    assert code_step(client, now_code(secret)).status_code == 302
    assert signed_in(client)
    assert cookie_of(client, app) != pending
    assert not signed_in(client_with(app, pending))


def test_setting_up_two_factor_sign_in_renews_the_session_id(app):
    client = app.test_client()
    sign_in(client, "ann")
    client.get("/account/two-factor")
    before = cookie_of(client, app)
    with client.session_transaction() as session:
        old_sid = session["sid"]
    rt = app.extensions["tracker"]
    with rt.session() as session:
        secret = rt.users(session).get("ann").totp_pending_secret
    token = csrf(client, "/account/two-factor")
    done = client.post("/account/two-factor", data={"code": now_code(secret), "csrf_token": token})
    assert done.status_code == 200 and "recovery" in done.get_data(as_text=True).lower()
    with client.session_transaction() as session:
        assert session["sid"] != old_sid
    assert signed_in(client)
    assert not signed_in(client_with(app, before))


# -- ending sessions ------------------------------------------------------------------------------------


def test_signing_out_ends_the_session_on_the_server(app, rt):
    client = app.test_client()
    sign_in(client, "ann")
    copy = cookie_of(client, app)
    assert signed_in(client_with(app, copy))
    post(client, "/logout")
    assert not signed_in(client)
    assert not signed_in(client_with(app, copy))  # a copied cookie stops working too
    with rt.session() as session:
        assert session.scalar(select(AuditEntry.kind).where(AuditEntry.kind == "logout")) == "logout"


def test_a_session_idle_for_longer_than_the_setting_ends(app, rt):
    client = app.test_client()
    sign_in(client, "ann")
    assert signed_in(client)
    idle = app.config["SESSION_IDLE"]
    assert idle == timedelta(minutes=30)
    with rt.session() as session:
        session.execute(update(WebSession).values(last_seen_at=utcnow() - idle + timedelta(minutes=1)))
        session.commit()
    assert signed_in(client)  # within the idle time, and the request counts as activity
    with rt.session() as session:
        seen = session.scalar(select(WebSession.last_seen_at))
        assert utcnow() - seen < timedelta(minutes=1)
        session.execute(update(WebSession).values(last_seen_at=utcnow() - idle - timedelta(seconds=1)))
        session.commit()
    response = client.get("/")
    assert response.status_code == 302 and response.headers["Location"].startswith("/login")
    with rt.session() as session:
        row = session.scalar(select(WebSession))
        assert row.ended_reason == "idle"
        entry = session.scalar(select(AuditEntry).where(AuditEntry.kind == "session.ended"))
        assert entry.username == "ann" and entry.detail == {"reason": "idle"}
    sign_in(client, "ann", PASSWORD)
    assert signed_in(client)


def test_a_session_past_its_lifetime_ends_on_the_server_too(app, rt):
    client = app.test_client()
    sign_in(client, "ann")
    with rt.session() as session:
        session.execute(update(WebSession).values(created_at=utcnow() - timedelta(hours=8, seconds=1)))
        session.commit()
    assert not signed_in(client)
    with rt.session() as session:
        assert session.scalar(select(WebSession.ended_reason)) == "expired"
    sign_in(client, "ann")  # a new sign-in clears the user's sessions past their lifetime
    with rt.session() as session:
        assert [s.ended_reason for s in session.scalars(select(WebSession))] == [None]


def test_the_idle_time_is_a_setting(new_app):
    app = new_app(settings={"session_idle_minutes": 5})
    assert app.config["SESSION_IDLE"] == timedelta(minutes=5)
