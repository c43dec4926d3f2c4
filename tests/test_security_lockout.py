"""Account lockout: TRACKER_LOCKOUT_ATTEMPTS failed sign-ins (wrong passwords or wrong
two-factor codes) within TRACKER_LOCKOUT_MINUTES lock the account; the user is told as for a
wrong password, plus that it is locked and whom to ask; API tokens keep working; a user
administrator unlocks it on /admin/users or with ``tracker users unlock``."""

from __future__ import annotations

import json
from contextlib import nullcontext
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from engine.models import AuditEntry, LoginLockout, utcnow
from engine.services.users import AccountLocked
from tests import webhelpers
from tests.webhelpers import (
    PASSWORD,
    code_step,
    create_users,
    enrol,
    now_code,
    password_step,
    post,
    sign_in,
    wrong_code,
)
from webui.auth import WRONG_PASSWORD

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app

LOCKED = "This account is locked after too many failed sign-ins."
WHOM = "Ask a user administrator"


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, ann=["manager"], root=["admin"], clara=["tracker_creator"])
    return app


@pytest.fixture
def rt(app):
    return app.extensions["tracker"]


def kinds(rt, username: str) -> list[str]:
    with rt.session() as session:
        stmt = select(AuditEntry.kind).where(AuditEntry.username == username).order_by(AuditEntry.id)
        return list(session.scalars(stmt))


def fail_passwords(client, username: str, times: int):
    response = None
    for _ in range(times):
        response = password_step(client, username, "not-the-password")
    return response


def test_five_wrong_passwords_lock_the_account_with_the_usual_message_and_whom_to_ask(app, rt):
    client = app.test_client()
    fourth = fail_passwords(client, "ann", 4)
    page = client.get("/login").get_data(as_text=True) if fourth.status_code == 302 else fourth.get_data(as_text=True)
    assert fourth.status_code == 401 and WRONG_PASSWORD in page and LOCKED not in page
    fifth = fail_passwords(client, "ann", 1)
    text = fifth.get_data(as_text=True)
    assert fifth.status_code == 401
    assert WRONG_PASSWORD in text and LOCKED in text and WHOM in text
    # the right password now gets exactly the same answer: it does not tell whether it was right
    right = password_step(client, "ann", PASSWORD)
    assert right.status_code == 401 and LOCKED in right.get_data(as_text=True)
    assert client.get("/").status_code == 302
    assert kinds(rt, "ann") == ["user.created", *["login.failure"] * 5, "account.locked", "login.locked"]


def test_failures_outside_the_window_start_the_count_again(app, rt):
    client = app.test_client()
    fail_passwords(client, "ann", 4)
    with rt.session() as session:
        session.execute(update(LoginLockout).values(first_failed_at=utcnow() - timedelta(minutes=16)))
        session.commit()
    fail_passwords(client, "ann", 4)
    sign_in(client, "ann")  # not locked: the first four were more than 15 minutes before
    with rt.session() as session:
        assert session.get(LoginLockout, rt.users(session).get("ann").id).failures == 0  # a sign-in clears the count


def test_a_successful_sign_in_clears_the_count(app):
    client = app.test_client()
    fail_passwords(client, "ann", 4)
    sign_in(client, "ann")
    post(client, "/logout")
    fail_passwords(client, "ann", 4)
    sign_in(client, "ann")


def test_wrong_two_factor_codes_count_too(app, rt):
    secret, codes = enrol(app, "ann")
    client = app.test_client()
    password_step(client, "ann")
    for _ in range(4):
        assert code_step(client, wrong_code(secret)).status_code == 401
    locked = code_step(client, "wrong-recovery-code")
    text = locked.get_data(as_text=True)
    assert locked.status_code == 401 and "That code is not right" in text and LOCKED in text and WHOM in text
    # the pending sign-in is gone, and a new one is refused even with the right password and code
    assert client.get("/login/code").headers["Location"] == "/login"
    assert LOCKED in password_step(client, "ann").get_data(as_text=True)
    with rt.session() as session:
        users = rt.users(session)
        user = users.get("ann")
        with pytest.raises(AccountLocked):
            users.verify_totp(user, now_code(secret))
        with pytest.raises(AccountLocked):
            users.use_recovery_code(user, codes[0])
    assert kinds(rt, "ann").count("login.code_failure") == 5


def test_an_unknown_user_name_is_audited_and_locks_nothing(app, rt):
    client = app.test_client()
    response = fail_passwords(client, "nobody", 6)
    assert response.status_code == 401 and LOCKED not in response.get_data(as_text=True)
    with rt.session() as session:
        entries = list(session.scalars(select(AuditEntry).where(AuditEntry.username == "nobody")))
        assert [e.kind for e in entries] == ["login.failure"] * 6
        assert entries[0].user_id is None and entries[0].detail == {"reason": "no such user"}
        assert session.scalars(select(LoginLockout)).all() == []


def test_api_tokens_of_a_locked_account_keep_working(app, rt):
    with rt.session() as session:
        _, token = rt.users(session).create_token("ann", "nightly report")
    fail_passwords(app.test_client(), "ann", 5)
    with rt.session() as session:
        assert rt.users(session).is_locked(rt.users(session).get("ann"))
    response = app.test_client().get("/api/v1/types", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200


def test_lockout_can_be_switched_off(new_app):
    app = new_app(settings={"lockout_attempts": 0})
    create_users(app, ann=["manager"])
    client = app.test_client()
    fail_passwords(client, "ann", 7)
    sign_in(client, "ann")


def test_a_user_administrator_unlocks_the_account_on_the_users_page(app, rt):
    fail_passwords(app.test_client(), "ann", 5)
    admin = app.test_client()
    sign_in(admin, "root")
    listing = admin.get("/admin/users").get_data(as_text=True)
    assert 'tag warn">locked' in listing
    page = admin.get("/admin/users/ann").get_data(as_text=True)
    assert "Unlock ann" in page and "after too many failed sign-ins" in page
    done = post(admin, "/admin/users/ann/unlock", token_from="/admin/users/ann")
    assert done.status_code == 302
    assert "is unlocked" in admin.get(done.headers["Location"]).get_data(as_text=True)
    sign_in(app.test_client(), "ann")
    with rt.session() as session:
        entry = session.scalar(select(AuditEntry).where(AuditEntry.kind == "account.unlocked"))
        assert entry.actor_name == "root" and entry.username == "ann" and entry.address == "127.0.0.1"
    # unlocking an account that is not locked is refused with a message, and changes nothing
    again = post(admin, "/admin/users/ann/unlock", token_from="/admin/users/ann")
    assert again.status_code == 422 and "ann is not locked" in again.get_data(as_text=True)


def test_only_user_administrators_may_unlock(app):
    fail_passwords(app.test_client(), "ann", 5)
    clara = app.test_client()
    sign_in(clara, "clara")
    response = post(clara, "/admin/users/ann/unlock", token_from="/")
    assert response.status_code == 403
    assert LOCKED in password_step(app.test_client(), "ann").get_data(as_text=True)


def test_tracker_users_unlock(run):
    run("users", "create", "ann", "--role", "manager")
    from engine.config import Settings
    from engine.runtime import Runtime

    settings = Settings.from_env(run.env)
    rt = Runtime(settings)
    with rt.session() as session:
        users = rt.users(session)
        for _ in range(5):
            with pytest.raises(AccountLocked) if _ == 4 else nullcontext():
                assert users.authenticate("ann", "wrong") is None
    refused = run("users", "unlock", "nobody", ok=False)
    assert refused.returncode == 1 and "There is no user 'nobody'" in refused.stderr
    done = run("users", "unlock", "ann")
    assert "'ann' is unlocked" in done.stdout
    again = run("users", "unlock", "ann", ok=False)
    assert again.returncode == 1 and "ann is not locked" in again.stderr
    listed = run("audit", "list", "--kind", "account", "--json")
    lines = listed.stdout.strip().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["account.unlocked", "account.locked"]
    assert json.loads(lines[0])["actor"] == "system"


def test_password_step_then_locked_code_step_is_not_signed_in(app):
    """A sign-in that had passed the password step when the account was locked elsewhere does
    not finish with a right code."""
    secret, _ = enrol(app, "ann")
    client = app.test_client()
    password_step(client, "ann")
    fail_passwords(app.test_client(), "ann", 5)
    response = code_step(client, now_code(secret))
    assert response.status_code == 401 and LOCKED in response.get_data(as_text=True)
    assert client.get("/").status_code == 302
