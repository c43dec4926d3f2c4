"""The users page: list, create (password shown once), roles, two-factor reset, deactivation
and reactivation, roles that require two-factor sign-in; every error path and who may see it."""

from __future__ import annotations

import re

import pytest

from engine.models import User
from tests import webhelpers
from tests.webhelpers import (
    PASSWORD,
    create_users,
    enrol,
    password_step,
    post,
    sign_in,
)

#: fixtures from tests/webhelpers.py (cheap_hashing is autouse)
cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, root=["admin"], ann=["manager"], cass=["caseworker", "dsl"])
    return app


@pytest.fixture
def rt(app):
    return app.extensions["tracker"]


@pytest.fixture
def admin(app):
    client = app.test_client()
    sign_in(client, "root")
    return client


def user_row(rt, username: str) -> User:
    with rt.session() as session:
        user = rt.users(session).get(username)
        session.expunge(user)
        return user


def error_of(page: str, field_id: str) -> str:
    """The error text shown for a field, checking that the field points at it."""
    match = re.search(rf'<p class="error" id="{field_id}-error">([^<]*)</p>', page)
    assert match, f"no error shown for {field_id}"
    assert f'aria-describedby="{field_id}-error"' in page or f'{field_id}-hint {field_id}-error"' in page
    return match.group(1).replace("&#39;", "'")


# -- who may see it -------------------------------------------------------------------------------


def test_only_user_admins_see_the_page_and_the_link(app, admin):
    page = admin.get("/").get_data(as_text=True)
    assert 'href="/admin/users"' in page and 'href="/account/two-factor"' in page
    client = app.test_client()
    assert client.get("/admin/users").headers["Location"].startswith("/login")
    sign_in(client, "ann")
    home = client.get("/").get_data(as_text=True)
    assert 'href="/admin/users"' not in home and 'href="/account/two-factor"' in home
    refused = client.get("/admin/users")
    assert refused.status_code == 403
    assert "ann may not manage users" in refused.get_data(as_text=True)
    for url in [
        "/admin/users/new",
        "/admin/users/cass/roles",
        "/admin/users/cass/reset-2fa",
        "/admin/users/cass/deactivate",
        "/admin/users/cass/reactivate",
        "/admin/roles/two-factor",
    ]:
        assert post(client, url, {"username": "x", "roles": "admin"}).status_code == 403, url
    assert user_row(app.extensions["tracker"], "cass").active
    assert user_row(app.extensions["tracker"], "cass").role_keys == ["caseworker", "dsl"]


def test_missing_csrf_is_refused_on_every_admin_form(app, admin):
    for url in [
        "/admin/users/new",
        "/admin/users/cass/roles",
        "/admin/users/cass/reset-2fa",
        "/admin/users/cass/deactivate",
        "/admin/users/cass/reactivate",
        "/admin/roles/two-factor",
    ]:
        response = admin.post(url, data={"username": "newbie", "roles": ["manager"], "required": ["manager"]})
        assert response.status_code == 400, url
        assert "security token is missing" in response.get_data(as_text=True)
    rt = app.extensions["tracker"]
    assert user_row(rt, "cass").active and user_row(rt, "cass").role_keys == ["caseworker", "dsl"]
    with rt.session() as session:
        assert rt.users(session).roles_requiring_2fa() == set()
        assert [u.username for u in rt.users(session).all_users()] == ["ann", "cass", "root"]


# -- the list --------------------------------------------------------------------------------------


def test_the_list_shows_roles_two_factor_status_and_last_sign_in(app, rt, admin):
    enrol(app, "ann")
    with rt.session() as session:
        rt.users(session).deactivate("cass")
        rt.users(session).set_role_2fa("dsl", True)
    page = admin.get("/admin/users").get_data(as_text=True)
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr>\s*<th scope="row"><a href="/admin/users/(\w+)".*?</tr>', page, re.S)
    }
    assert set(rows) == {"ann", "cass", "root"}
    assert "Manager (read-only)" in rows["ann"] and "<td>On</td>" in rows["ann"] and "Never" in rows["ann"]
    assert "Caseworker, Designated safeguarding lead" in rows["cass"]
    assert "required" in rows["cass"] and "deactivated" in rows["cass"]
    assert "Administrator" in rows["root"] and "UTC</time>" in rows["root"]  # root signed in just now


# -- creating users ------------------------------------------------------------------------------------


def test_create_a_user_shows_the_password_once_and_it_works(app, rt, admin):
    form = admin.get("/admin/users/new").get_data(as_text=True)
    assert '<label for="username">User name</label>' in form and 'type="checkbox"' in form
    response = post(
        admin,
        "/admin/users/new",
        {"username": "Dora", "display_name": "Dora Jones", "email": "dora@example.org", "roles": ["dsl", "manager"]},
    )
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.headers["Cache-Control"] == "no-store"
    password = re.search(r'<code class="secret"[^>]*>([^<]+)</code>', page).group(1)
    dora = user_row(rt, "dora")
    assert dora.display_name == "Dora Jones" and dora.email == "dora@example.org"
    assert dora.role_keys == ["dsl", "manager"] and password not in (dora.password_hash or "")
    assert password not in admin.get("/admin/users/dora").get_data(as_text=True)
    client = app.test_client()
    assert password_step(client, "dora", password).headers["Location"] == "/"


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"username": "ann", "roles": ["manager"]}, "username", "The user name 'ann' is taken. Choose another"),
        ({"username": "newbie"}, "roles", "A user needs at least one role. Use one of:"),
        ({"username": "newbie", "roles": ["wizard"]}, "roles", "There is no role 'wizard'."),
        ({"username": "New Bie!", "roles": ["manager"]}, "username", "'new bie!' is not a valid user name."),
        ({"username": "newbie", "email": "nope", "roles": ["manager"]}, "email", "'nope' is not an e-mail address."),
        ({"username": "", "roles": ["manager"]}, "username", "Enter a user name."),
    ],
)
def test_create_errors_are_shown_on_their_field_and_nothing_is_saved(rt, admin, data, field, message):
    response = post(admin, "/admin/users/new", {"display_name": "Kept As Typed", **data})
    page = response.get_data(as_text=True)
    assert response.status_code in (400, 422)
    assert message in error_of(page, field)
    assert 'value="Kept As Typed"' in page  # nothing typed is lost
    with rt.session() as session:
        assert [u.username for u in rt.users(session).all_users()] == ["ann", "cass", "root"]


# -- one user --------------------------------------------------------------------------------------------


def test_set_roles_and_its_errors(rt, admin):
    page = admin.get("/admin/users/cass").get_data(as_text=True)
    assert re.search(r'<input checked id="roles-\d+" name="roles" type="checkbox" value="dsl">', page)
    saved = post(admin, "/admin/users/cass/roles", {"roles": ["manager"]})
    assert saved.status_code == 302 and user_row(rt, "cass").role_keys == ["manager"]
    assert "Saved the roles of cass" in admin.get(saved.headers["Location"]).get_data(as_text=True)
    none = post(admin, "/admin/users/cass/roles", {})
    assert none.status_code == 422
    assert "A user needs at least one role" in error_of(none.get_data(as_text=True), "roles")
    unknown = post(admin, "/admin/users/cass/roles", {"roles": ["manager", "wizard"]})
    assert "There is no role 'wizard'" in error_of(unknown.get_data(as_text=True), "roles")
    assert user_row(rt, "cass").role_keys == ["manager"]
    assert admin.get("/admin/users/nobody").status_code == 404


def test_the_last_user_admin_keeps_their_role_and_stays_active(rt, admin):
    refused = post(admin, "/admin/users/root/roles", {"roles": ["manager"]})
    assert refused.status_code == 422
    assert "nobody else could then manage users" in error_of(refused.get_data(as_text=True), "roles")
    page = admin.get("/admin/users/root").get_data(as_text=True)
    assert "This is you" in page and "Deactivate root" not in page
    cannot = post(admin, "/admin/users/root/deactivate")
    assert cannot.status_code == 422
    assert "You cannot deactivate root: nobody else could then manage users" in cannot.get_data(as_text=True)
    assert user_row(rt, "root").active and user_row(rt, "root").role_keys == ["admin"]


def test_deactivation_ends_sessions_and_tokens_at_once_and_reactivation_allows_sign_in(app, rt, admin):
    ann = app.test_client()
    sign_in(ann, "ann")
    assert ann.get("/").status_code == 200
    with rt.session() as session:
        _, token = rt.users(session).create_token("ann")
    response = post(admin, "/admin/users/ann/deactivate")
    assert response.status_code == 302
    assert "sessions and API tokens stopped working" in admin.get(response.headers["Location"]).get_data(as_text=True)
    assert ann.get("/").headers["Location"].startswith("/login")
    with rt.session() as session:
        assert rt.users(session).user_for_token(token) is None
    assert password_step(ann, "ann").status_code == 401
    assert "Reactivate ann" in admin.get("/admin/users/ann").get_data(as_text=True)
    assert post(admin, "/admin/users/ann/reactivate").status_code == 302
    assert password_step(ann, "ann").headers["Location"] == "/"


def test_reset_two_factor_ends_the_users_sessions(app, rt, admin):
    secret, _ = enrol(app, "ann")
    ann = app.test_client()
    sign_in(ann, "ann", secret=secret)
    page = admin.get("/admin/users/ann").get_data(as_text=True)
    assert "On, 10 recovery codes left" in page and "Reset two-factor sign-in" in page
    response = post(admin, "/admin/users/ann/reset-2fa")
    assert response.status_code == 302
    assert user_row(rt, "ann").totp_secret is None
    assert ann.get("/").headers["Location"].startswith("/login")
    assert password_step(ann, "ann").headers["Location"] == "/"  # the password alone, until set up again
    assert "Not set up" in admin.get("/admin/users/ann").get_data(as_text=True)


def test_an_admin_resetting_their_own_two_factor_stays_signed_in(app, rt):
    secret, _ = enrol(app, "root")
    client = app.test_client()
    sign_in(client, "root", secret=secret)
    assert post(client, "/admin/users/root/reset-2fa").status_code == 302
    assert client.get("/admin/users").status_code == 200
    assert user_row(rt, "root").totp_secret is None


# -- roles that require two-factor sign-in ------------------------------------------------------------------


def test_require_two_factor_per_role(app, rt, admin):
    response = post(admin, "/admin/roles/two-factor", {"required": ["manager", "dsl"]})
    assert response.status_code == 302
    assert "now required for: Designated safeguarding lead, Manager (read-only)" in admin.get("/admin/users").get_data(
        as_text=True
    )
    with rt.session() as session:
        assert rt.users(session).roles_requiring_2fa() == {"manager", "dsl"}
    page = admin.get("/admin/users").get_data(as_text=True)
    assert re.search(r'<input checked id="required-\d+" name="required" type="checkbox" value="manager">', page)
    ann = app.test_client()
    assert password_step(ann, "ann").headers["Location"] == "/account/two-factor"

    unknown = post(admin, "/admin/roles/two-factor", {"required": ["wizard"]})
    assert unknown.status_code == 422
    assert "There is no role 'wizard'" in error_of(unknown.get_data(as_text=True), "required")
    with rt.session() as session:
        assert rt.users(session).roles_requiring_2fa() == {"manager", "dsl"}  # nothing changed

    assert post(admin, "/admin/roles/two-factor", {}).status_code == 302
    assert "No role requires two-factor sign-in now" in admin.get("/admin/users").get_data(as_text=True)
    with rt.session() as session:
        assert rt.users(session).roles_requiring_2fa() == set()


def test_an_admin_whose_role_requires_two_factor_must_enrol_first(app, rt):
    with rt.session() as session:
        rt.users(session).set_role_2fa("admin", True)
    client = app.test_client()
    assert password_step(client, "root", PASSWORD).headers["Location"] == "/account/two-factor"
    assert client.get("/admin/users").headers["Location"] == "/account/two-factor"
