"""The audit log: written by the services in the transaction of the change (a refused change
leaves no entry), linked to bulk exports and definition publishes; the admin page (filters,
pages, who may read it) and ``tracker audit list``."""

from __future__ import annotations

import json
from datetime import date, timedelta
from ipaddress import ip_network

import pyotp
import pytest
from sqlalchemy import func, select, update

from engine import audit
from engine.definitions import store
from engine.errors import ValidationFailed
from engine.models import AuditEntry, BulkExport, DefinitionPublish, PluginError, utcnow
from engine.permissions import Actor
from engine.plugins import clear_errors
from engine.services import UserService
from engine.services.definitions import DefinitionService
from tests import webhelpers
from tests.webhelpers import create_users, post, sign_in

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


def entries(session, kind: str | None = None) -> list[AuditEntry]:
    stmt = select(AuditEntry).order_by(AuditEntry.id)
    if kind:
        stmt = stmt.where(AuditEntry.kind == kind)
    return list(session.scalars(stmt))


def count(session) -> int:
    return session.scalar(select(func.count()).select_from(AuditEntry))


# -- written by the services ---------------------------------------------------------------------------


def test_user_administration_is_audited_with_actor_address_and_details(session, registry):
    system = UserService(session, registry)
    root, _ = system.create("root", ["admin"])
    admin = UserService(session, registry, actor=Actor.for_user(root, registry), address="10.0.0.7")
    ann, _ = admin.create("ann", ["manager"], email="ann@example.org")
    admin.set_roles("ann", ["manager", "finance"])
    admin.set_roles("ann", ["manager", "finance"])  # no change: no entry
    admin.update_details("ann", display_name="Ann Lee")
    admin.set_role_2fa("finance", True)
    token, _ = admin.create_token("ann", "reports")
    admin.revoke_token(token.id)
    admin.reset_2fa("ann")
    admin.deactivate("ann")
    admin.reactivate("ann")
    kinds = [(e.kind, e.actor_name, e.username) for e in entries(session)]
    assert kinds == [
        ("user.created", "system", "root"),
        ("user.created", "root", "ann"),
        ("user.roles", "root", "ann"),
        ("user.details", "root", "ann"),
        ("role.settings", "root", ""),
        ("token.created", "root", "ann"),
        ("token.revoked", "root", "ann"),
        ("2fa.reset", "root", "ann"),
        ("user.deactivated", "root", "ann"),
        ("user.reactivated", "root", "ann"),
    ]
    by_kind = {e.kind: e for e in entries(session)}
    assert by_kind["user.roles"].detail == {"from": ["manager"], "to": ["finance", "manager"]}
    assert by_kind["user.details"].detail == {"display_name": {"from": "ann", "to": "Ann Lee"}}
    assert by_kind["role.settings"].target == "role finance"
    assert by_kind["role.settings"].detail == {"require_2fa": True}
    assert by_kind["token.created"].target == f"token #{token.id} reports"
    assert by_kind["user.deactivated"].detail == {"tokens_revoked": []}
    assert all(e.address == "10.0.0.7" for e in entries(session)[1:])
    assert by_kind["user.created"].actor_id == root.id and by_kind["user.created"].user_id == ann.id


def test_a_refused_change_leaves_no_entry(session, registry):
    users = UserService(session, registry)
    users.create("root", ["admin"])
    before = count(session)
    for refused in (
        lambda: users.create("root", ["admin"]),  # taken
        lambda: users.set_roles("root", ["no_such_role"]),
        lambda: users.set_roles("root", ["manager"]),  # the last user administrator
        lambda: users.deactivate("root"),
        lambda: users.set_role_2fa("no_such_role", True),
        lambda: users.unlock("root"),  # not locked
    ):
        with pytest.raises(ValidationFailed):
            refused()
        session.rollback()
    assert count(session) == before


def test_two_factor_enrolment_and_recovery_codes_are_audited_as_the_user(session, registry):
    users = UserService(session, registry)
    ann, _ = users.create("ann", ["manager"])
    secret = users.begin_totp(ann)
    codes = users.confirm_totp(ann, pyotp.TOTP(secret).now())
    assert users.use_recovery_code(ann, codes[0])
    enrolled, used = entries(session, "2fa.enrolled")[0], entries(session, "2fa.recovery_code_used")[0]
    assert (enrolled.actor_name, enrolled.username) == ("ann", "ann")
    assert (used.actor_name, used.username) == ("ann", "ann")


def test_definition_publishes_are_audited_and_linked_to_their_diff(session, registry):
    engine = session.get_bind()
    defs = DefinitionService(
        session, Actor.system(), registry, after_publish=lambda: store.merge(registry, store.published(engine))
    )
    defs.create("bike_loan", "Bike loan")
    defs.publish("bike_loan", "first cut")
    [entry] = entries(session, "definition.publish")
    assert entry.target == "type bike_loan version 1" and entry.actor_name == "system"
    publish = session.get(DefinitionPublish, entry.definition_publish_id)
    assert publish.action == "publish" and "+++ version 1/schema.json" in publish.diff


def test_clearing_plugin_errors_is_audited(session, registry):
    session.add(PluginError(plugin="sms", hook="channel", message="boom"))
    session.commit()
    assert clear_errors(session, Actor.system(), "10.1.1.1") == 1
    [entry] = entries(session, "plugin.errors_cleared")
    assert entry.detail == {"count": 1} and entry.address == "10.1.1.1" and entry.actor_name == "system"


def test_unknown_kinds_are_a_programming_error(session):
    with pytest.raises(ValueError, match="unknown audit kind"):
        audit.record(session, "made.up")


def test_filters_by_kind_group_user_and_days(session, registry):
    users = UserService(session, registry)
    users.create("root", ["admin"])
    users.create("ann", ["manager"])
    users.authenticate("ann", "wrong")
    users.authenticate("nobody", "wrong")
    session.execute(update(AuditEntry).where(AuditEntry.username == "root").values(at=utcnow() - timedelta(days=3)))
    session.commit()

    def kinds(**kw):
        rows, total = audit.entries(session, audit.AuditFilter(**kw))
        assert total == len(rows)
        return [(e.kind, e.username) for e in rows]

    assert kinds(kind="login") == [("login.failure", "nobody"), ("login.failure", "ann")]
    assert kinds(kind="user.created") == [("user.created", "ann"), ("user.created", "root")]
    assert kinds(username="ANN ") == [("login.failure", "ann"), ("user.created", "ann")]
    today = utcnow().date()
    assert kinds(until=today - timedelta(days=1)) == [("user.created", "root")]
    assert len(kinds(since=today)) == 3
    rows, total = audit.entries(session, audit.AuditFilter(), limit=2, offset=2)
    assert total == 4 and [e.username for e in rows] == ["ann", "root"]


# -- exports through the web -------------------------------------------------------------------------


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, root=["admin"], fin=["finance"], ann=["manager"])
    return app


def test_a_csv_export_is_audited_and_linked_to_its_bulk_export_row(app):
    client = app.test_client()
    sign_in(client, "fin")
    response = client.get("/types/concern/export.csv")
    assert response.status_code == 200
    rt = app.extensions["tracker"]
    with rt.session() as session:
        [entry] = entries(session, "export.csv")
        row = session.get(BulkExport, entry.bulk_export_id)
        assert row.kind == "csv" and row.type_key == "concern" and row.user.username == "fin"
        assert entry.actor_name == "fin" and entry.address == "127.0.0.1" and "concern" in entry.target


def test_a_refused_export_is_audited_too(new_app):
    app = new_app(settings={"bulk_export_allow": (ip_network("10.0.0.0/8"),)})
    create_users(app, fin=["finance"])
    client = app.test_client()
    sign_in(client, "fin")
    assert client.get("/types/concern/export.csv").status_code == 403
    rt = app.extensions["tracker"]
    with rt.session() as session:
        [entry] = entries(session, "export.csv")
        assert entry.bulk_export.outcome == "refused" and "refused" in entry.target


# -- the admin page --------------------------------------------------------------------------------------


def test_the_audit_page_lists_filters_and_pages(app):
    rt = app.extensions["tracker"]
    with rt.session() as session:
        for _ in range(60):
            audit.record(session, "login.failure", username="mallory", address="198.51.100.4")
        session.commit()
    client = app.test_client()
    sign_in(client, "root")
    page = client.get("/admin/audit")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and "Page 1 of 2" in text and "198.51.100.4" in text
    assert "sign-in refused: wrong user name or password" in text and 'href="/admin/audit"' in text
    second = client.get("/admin/audit?page=2").get_data(as_text=True)
    assert "Page 2 of 2" in second and 'rel="prev"' in second
    only_root = client.get("/admin/audit?user=root&kind=login").get_data(as_text=True)
    assert "signed in" in only_root and "mallory" not in only_root
    nothing = client.get(f"/admin/audit?until={(date.today() - timedelta(days=400)).isoformat()}")
    assert "No entries match these filters" in nothing.get_data(as_text=True)
    bad = client.get("/admin/audit?since=yesterday&kind=made.up")
    bad_text = bad.get_data(as_text=True)
    assert bad.status_code == 400 and "yesterday&#39; is not a date" in bad_text
    assert "no kind of entry &#39;made.up&#39;" in bad_text


def test_only_user_administrators_read_the_audit_log(app):
    client = app.test_client()
    assert client.get("/admin/audit").headers["Location"].startswith("/login")
    sign_in(client, "ann")
    assert client.get("/admin/audit").status_code == 403
    assert 'href="/admin/audit"' not in client.get("/").get_data(as_text=True)


def test_sign_in_and_sign_out_through_the_pages_are_audited(app):
    client = app.test_client()
    sign_in(client, "ann")
    post(client, "/logout")
    rt = app.extensions["tracker"]
    with rt.session() as session:
        assert [(e.kind, e.actor_name, e.address) for e in entries(session) if e.username == "ann"][1:] == [
            ("login.success", "ann", "127.0.0.1"),
            ("logout", "ann", "127.0.0.1"),
        ]


# -- the command line ---------------------------------------------------------------------------------


def test_tracker_audit_list(run):
    run("users", "create", "ann", "--role", "manager")
    run("users", "token", "create", "ann")
    table = run("audit", "list").stdout
    assert "token.created" in table and "user.created" in table and "system" in table
    lines = run("audit", "list", "--kind", "token", "--json").stdout.strip().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["token.created"]
    assert run("audit", "list", "--user", "nobody").stdout.strip() == "No audit entries match."
    paged = run("audit", "list", "--limit", "1").stdout
    assert "1 older entries; use --offset 1" in paged
    bad = run("audit", "list", "--kind", "made.up", ok=False)
    assert bad.returncode == 2 and "there is no kind 'made.up'" in bad.stderr
    bad_day = run("audit", "list", "--since", "yesterday", ok=False)
    assert bad_day.returncode == 2 and "not a date" in bad_day.stderr


def test_a_staff_import_is_audited_as_the_administrator_who_ran_it(session, registry):
    from engine.plugins import CSV_FORMAT
    from plugins.hr_import import import_staff

    root, _ = UserService(session, registry).create("root", ["admin"])
    staff = "username,name,email,roles,active\nann,Ann Lee,,assessor,yes\n"
    import_staff(
        session, registry, staff.encode(), fmt=CSV_FORMAT, actor=Actor.for_user(root, registry), address="10.2.2.2"
    )
    [entry] = entries(session, "user.created")[1:]
    assert (entry.actor_name, entry.username, entry.address) == ("root", "ann", "10.2.2.2")
