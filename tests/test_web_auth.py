"""Sign-in: password then TOTP code, replay and wrong codes, recovery codes, enrolment with an
inline QR code, roles that require two-factor sign-in, ``next`` through every step, the rate
limit, session rotation, expiry, strong protection and sessions ended by the engine."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest

from engine.config import Settings
from engine.errors import TrackerError
from engine.models import User
from engine.permissions import Actor
from engine.services import ItemService
from tests import webhelpers
from tests.conftest import LEARNER
from tests.webhelpers import (
    PASSWORD,
    code_step,
    create_users,
    csrf,
    enrol,
    now_code,
    password_step,
    post,
    sign_in,
    wrong_code,
)
from webui.auth import TOO_MANY_ATTEMPTS

#: fixtures from tests/webhelpers.py (cheap_hashing is autouse)
cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, ann=["manager"], ben=["manager"], root=["admin"])
    return app


@pytest.fixture
def rt(app):
    return app.extensions["tracker"]


def user_row(rt, username: str) -> User:
    with rt.session() as session:
        user = rt.users(session).get(username)
        session.expunge(user)
        return user


@pytest.fixture
def learner_id(rt) -> int:
    with rt.session() as session:
        return ItemService(session, Actor.system(), rt.registry).create("learner", dict(LEARNER)).id


# -- password and code ---------------------------------------------------------------------------


def test_enrolled_user_needs_the_code_before_being_signed_in(app, rt):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    response = password_step(client, "ann")
    assert response.status_code == 302 and response.headers["Location"] == "/login/code"
    assert client.get("/").status_code == 302  # not signed in yet
    page = client.get("/login/code").get_data(as_text=True)
    assert "Enter your sign-in code" in page and 'autocomplete="one-time-code"' in page
    assert code_step(client, now_code(secret)).headers["Location"] == "/"
    assert client.get("/").status_code == 200
    assert user_row(rt, "ann").last_login_at is not None


def test_a_used_code_is_refused_the_second_time(app):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    code = now_code(secret)
    password_step(client, "ann")
    assert code_step(client, code).status_code == 302
    post(client, "/logout")
    password_step(client, "ann")
    replay = code_step(client, code)
    assert replay.status_code == 401
    assert "has been used already" in replay.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_a_wrong_code_is_refused_with_the_field_linked_to_its_error(app):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    password_step(client, "ann")
    response = code_step(client, wrong_code(secret))
    page = response.get_data(as_text=True)
    assert response.status_code == 401
    assert 'aria-describedby="code-hint code-error"' in page and 'id="code-error"' in page
    assert "That code is not right" in page
    empty = code_step(client, "")
    assert empty.status_code == 400 and "Enter the code" in empty.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert code_step(client, now_code(secret)).status_code == 302  # still allowed to get it right


def test_recovery_code_signs_in_once_and_says_how_many_are_left(app):
    _secret, codes = enrol(app, "ann")
    client = app.test_client()
    password_step(client, "ann")
    response = code_step(client, codes[0].upper())
    assert response.status_code == 302
    assert "You have 9 of 10 left." in client.get("/").get_data(as_text=True)
    post(client, "/logout")
    password_step(client, "ann")
    again = code_step(client, codes[0])
    assert again.status_code == 401
    assert "That code is not right" in again.get_data(as_text=True)


def test_code_step_without_a_password_or_after_it_timed_out_goes_back_to_sign_in(app):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    response = client.get("/login/code")
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert "timed out or was not started" in client.get("/login").get_data(as_text=True)
    password_step(client, "ann")
    with client.session_transaction() as session:
        session["pending_2fa"] = {**session["pending_2fa"], "until": time.time() - 1}
    token = csrf(client, "/login")
    late = client.post("/login/code", data={"code": now_code(secret), "csrf_token": token})
    assert late.status_code == 302 and late.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_a_user_deactivated_between_the_steps_is_not_signed_in(app, rt):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    password_step(client, "ann")
    with rt.session() as session:
        rt.users(session).deactivate("ann")
    token = csrf(client, "/login")
    response = client.post("/login/code", data={"code": now_code(secret), "csrf_token": token})
    assert response.headers["Location"] == "/login"
    assert client.get("/").status_code == 302


def test_next_survives_the_code_step(app, learner_id):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    bounce = client.get(f"/items/{learner_id}")
    assert bounce.status_code == 302
    login_url = bounce.headers["Location"]
    assert login_url == f"/login?next=%2Fitems%2F{learner_id}"
    assert password_step(client, "ann", url=login_url).headers["Location"] == "/login/code"
    landed = code_step(client, now_code(secret))
    assert landed.headers["Location"] == f"/items/{learner_id}"
    assert client.get(landed.headers["Location"]).status_code == 200


def test_next_cannot_leave_the_site_through_the_code_step(app):
    targets = {"ann": "https://evil.example/x", "ben": "//evil.example/x", "root": "/\\evil.example"}
    for username, target in targets.items():
        secret, _ = enrol(app, username)
        client = app.test_client()
        password_step(client, username, url="/login?next=" + target)
        assert code_step(client, now_code(secret)).headers["Location"] == "/"


# -- enrolment ---------------------------------------------------------------------------------------


def test_enrolment_shows_an_inline_qr_code_and_the_secret_then_ten_recovery_codes(app, rt):
    client = app.test_client()
    sign_in(client, "ann")
    page = client.get("/account/two-factor").get_data(as_text=True)
    pending = user_row(rt, "ann").totp_pending_secret
    assert pending
    assert '<svg role="img"' in page and "<path" in page  # drawn in the page itself
    assert 'src="http' not in page and "<img" not in page  # nothing fetched from anywhere
    assert " ".join(pending[i : i + 4] for i in range(0, len(pending), 4)) in page
    client.get("/account/two-factor")
    assert user_row(rt, "ann").totp_pending_secret == pending  # reloading keeps the same secret

    bad = post(client, "/account/two-factor", {"code": wrong_code(pending)})
    assert bad.status_code == 400
    assert "That code does not match" in bad.get_data(as_text=True)
    assert user_row(rt, "ann").totp_secret is None

    confirmed_with = now_code(pending)
    done = post(client, "/account/two-factor", {"code": confirmed_with})
    page = done.get_data(as_text=True)
    assert done.status_code == 200 and done.headers["Cache-Control"] == "no-store"
    assert page.count("<li><code>") == 10
    assert user_row(rt, "ann").totp_secret == pending
    status = client.get("/account/two-factor").get_data(as_text=True)
    assert "Two-factor sign-in is on" in status and "<strong>10</strong> of 10" in status
    assert 'class="qr"' not in status and pending[:8] not in status  # the secret is not shown again

    # next time, the password is not enough; the code used to confirm is spent
    post(client, "/logout")
    password_step(client, "ann")
    assert code_step(client, confirmed_with).status_code == 401
    assert code_step(client, now_code(pending, offset=30)).status_code == 302


def test_missing_csrf_is_refused_on_every_sign_in_form(app):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    refused = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert refused.status_code == 400
    assert "security token is missing or out of date" in refused.get_data(as_text=True)
    password_step(client, "ann")
    assert client.post("/login/code", data={"code": now_code(secret)}).status_code == 400
    assert client.get("/").status_code == 302
    code_step(client, now_code(secret))
    for url in ["/account/two-factor", "/account/two-factor/new", "/account/two-factor/cancel", "/logout"]:
        assert client.post(url, data={"code": "123456"}).status_code == 400, url
    assert client.get("/").status_code == 200


def test_setting_up_a_new_app_keeps_the_old_one_until_confirmed(app, rt):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    sign_in(client, "ann", secret=secret)
    post(client, "/account/two-factor/new")
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "Two-factor sign-in is on" in page and '<svg role="img"' in page and "Keep my current app" in page
    new = user_row(rt, "ann").totp_pending_secret
    assert new and new != secret
    post(client, "/account/two-factor/cancel")
    assert user_row(rt, "ann").totp_pending_secret is None
    assert user_row(rt, "ann").totp_secret == secret
    post(client, "/account/two-factor/new")
    new = user_row(rt, "ann").totp_pending_secret
    done = post(client, "/account/two-factor", {"code": now_code(new)})
    assert done.status_code == 200 and user_row(rt, "ann").totp_secret == new
    assert client.get("/").status_code == 200  # this session goes on


# -- roles that require two-factor sign-in -------------------------------------------------------------


def test_a_role_requiring_two_factor_forces_enrolment_before_anything_else(app, rt, learner_id):
    with rt.session() as session:
        rt.users(session).set_role_2fa("manager", True)
    client = app.test_client()
    login_url = client.get(f"/items/{learner_id}").headers["Location"]
    after_password = password_step(client, "ann", url=login_url)
    assert after_password.headers["Location"] == "/account/two-factor"
    page = client.get("/account/two-factor").get_data(as_text=True)
    assert "One of your roles needs two-factor sign-in" in page
    for url in ["/", f"/items/{learner_id}", "/types/learner", "/admin/users"]:
        response = client.get(url)
        assert response.status_code == 302 and response.headers["Location"] == "/account/two-factor", url
    pending = user_row(rt, "ann").totp_pending_secret
    done = post(client, "/account/two-factor", {"code": now_code(pending)}, token_from="/account/two-factor")
    assert done.status_code == 200
    assert f'href="/items/{learner_id}"' in done.get_data(as_text=True)  # next survives enrolment
    assert client.get(f"/items/{learner_id}").status_code == 200


def test_requiring_two_factor_catches_a_user_already_signed_in(app, rt):
    client = app.test_client()
    sign_in(client, "ann")
    assert client.get("/").status_code == 200
    with rt.session() as session:
        rt.users(session).set_role_2fa("manager", True)
    response = client.get("/types/learner?page=1")
    assert response.headers["Location"] == "/account/two-factor"
    assert post(client, "/logout", token_from="/account/two-factor").status_code == 302
    assert client.get("/").headers["Location"].startswith("/login")


# -- sessions -----------------------------------------------------------------------------------------


def test_sign_in_rotates_the_session_and_sets_safe_cookie_flags(app):
    client = app.test_client()
    with client.session_transaction() as session:
        session["planted"] = "by someone else"
    response = sign_in(client, "ann")
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Expires=" in cookie and "Secure" not in cookie
    with client.session_transaction() as session:
        assert "planted" not in session
        assert session.permanent and session["epoch"] == 0
    assert app.permanent_session_lifetime == timedelta(hours=8)
    assert app.config["SESSION_PROTECTION"] == "strong"


def test_https_base_url_makes_the_cookie_secure(new_app):
    app = new_app(settings={"base_url": "https://tracker.example.org"})
    create_users(app, ann=["manager"])
    client = app.test_client()
    assert "Secure" in sign_in(client, "ann").headers["Set-Cookie"]


def test_session_lifetime_comes_from_the_environment():
    settings = Settings.from_env({"TRACKER_SESSION_HOURS": "2.5", "TRACKER_SECRET_KEY": "x"})
    assert settings.session_hours == 2.5
    assert Settings.from_env({"TRACKER_SECRET_KEY": "x"}).session_hours == 8
    for bad in ["soon", "0", "-1", "9999"]:
        with pytest.raises(TrackerError, match="TRACKER_SESSION_HOURS is not a number of hours"):
            Settings.from_env({"TRACKER_SESSION_HOURS": bad, "TRACKER_SECRET_KEY": "x"})


def test_a_session_older_than_its_lifetime_ends(app):
    client = app.test_client()
    sign_in(client, "ann")
    with client.session_transaction() as session:
        session["signed_in_at"] -= 8 * 3600 + 1
    assert client.get("/").headers["Location"].startswith("/login")


def test_strong_protection_ends_a_session_used_from_another_browser(app):
    client = app.test_client()
    sign_in(client, "ann")
    assert client.get("/").status_code == 200
    stolen = client.get("/", headers={"User-Agent": "another browser"})
    assert stolen.status_code == 302 and stolen.headers["Location"].startswith("/login")


def test_deactivation_ends_an_open_session_at_once(app, rt):
    ann = app.test_client()
    sign_in(ann, "ann")
    assert ann.get("/").status_code == 200
    with rt.session() as session:
        rt.users(session).deactivate("ann")
    assert ann.get("/").headers["Location"].startswith("/login")
    with rt.session() as session:
        rt.users(session).reactivate("ann")
    assert ann.get("/").status_code == 302  # the old session stays ended
    sign_in(ann, "ann")
    assert ann.get("/").status_code == 200


def test_confirming_two_factor_ends_the_users_other_sessions(app, rt):
    phone, laptop = app.test_client(), app.test_client()
    sign_in(phone, "ann")
    sign_in(laptop, "ann")
    laptop.get("/account/two-factor")
    pending = user_row(rt, "ann").totp_pending_secret
    assert post(laptop, "/account/two-factor", {"code": now_code(pending)}).status_code == 200
    assert laptop.get("/").status_code == 200
    assert phone.get("/").headers["Location"].startswith("/login")


def test_reset_of_two_factor_ends_sessions_and_signs_in_with_the_password_alone(app, rt):
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    sign_in(client, "ann", secret=secret)
    with rt.session() as session:
        rt.users(session).reset_2fa("ann")
    assert client.get("/").headers["Location"].startswith("/login")
    assert password_step(client, "ann").headers["Location"] == "/"


# -- the rate limit --------------------------------------------------------------------------------------


@pytest.fixture
def strict_app(new_app):
    app = new_app(RATELIMIT_SIGN_IN="3 per minute")
    create_users(app, ann=["manager"], ben=["manager"])
    return app


def test_too_many_passwords_get_429_with_a_clear_message(strict_app):
    client = strict_app.test_client()
    for _ in range(3):
        assert password_step(client, "ann", "wrong-password").status_code == 401
    limited = password_step(client, "ann")  # even the right password now waits
    page = limited.get_data(as_text=True)
    assert limited.status_code == 429
    assert TOO_MANY_ATTEMPTS in page and 'role="alert"' in page
    assert 'value="ann"' in page  # what was typed is kept
    assert "Retry-After" in limited.headers
    assert client.get("/login").status_code == 200  # looking at the page is not limited
    assert password_step(client, "ben").status_code == 302  # the limit is per user name and address


def test_the_limit_is_per_address(strict_app):
    here, there = strict_app.test_client(), strict_app.test_client()
    for _ in range(3):
        password_step(here, "ann", "wrong-password")
    assert password_step(here, "ann").status_code == 429
    elsewhere = {"REMOTE_ADDR": "192.0.2.7"}
    token = csrf(there, "/login")
    response = there.post(
        "/login", data={"username": "ann", "password": PASSWORD, "csrf_token": token}, environ_base=elsewhere
    )
    assert response.status_code == 302


def test_too_many_codes_get_429_with_a_clear_message(strict_app):
    secret, _ = enrol(strict_app, "ann")
    client = strict_app.test_client()
    password_step(client, "ann")
    for _ in range(3):
        assert code_step(client, wrong_code(secret)).status_code == 401
    limited = code_step(client, now_code(secret))
    assert limited.status_code == 429
    assert TOO_MANY_ATTEMPTS in limited.get_data(as_text=True)
    assert "Enter your sign-in code" in limited.get_data(as_text=True)
    assert client.get("/").status_code == 302


def test_the_limit_is_kept_in_redis_when_configured_and_shared_by_every_process(new_app, redis_url):
    first = new_app(RATELIMIT_SIGN_IN="2 per minute", settings={"redis_url": redis_url})
    assert first.config["RATELIMIT_STORAGE_URI"] == redis_url
    stranger = f"nobody-{uuid.uuid4().hex[:12]}"
    for _ in range(2):
        assert password_step(first.test_client(), stranger, "x").status_code == 401
    second = new_app(RATELIMIT_SIGN_IN="2 per minute", settings={"redis_url": redis_url})
    assert password_step(second.test_client(), stranger, "x").status_code == 429


def test_memory_is_the_default_store(app):
    assert app.config["RATELIMIT_STORAGE_URI"] == "memory://"
