"""HR import: a staff CSV creates and updates users and roles through UserService, with a
dry run, a problem per row (line, column, what to do), the command line and an admin page."""

from __future__ import annotations

import io

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.errors import TrackerError
from engine.hookspecs import hookimpl
from engine.models import User
from engine.plugins import CSV_FORMAT, ImportFormat, PluginHost
from engine.services import UserService
from plugins.hr_import import import_staff, pick_format
from tests.plugin_helpers import *  # noqa: F403 - fixtures
from tests.plugin_helpers import host_of
from tests.webhelpers import create_users, csrf, sign_in

STAFF = """username,name,email,roles,active,department
ann,Ann Lee,ann@college.example,assessor,yes,Care
bob,Bob Marsh,bob@college.example,assessor;quality,,Engineering
"""


def users_by_name(session) -> dict[str, User]:
    return {u.username: u for u in session.scalars(select(User))}


def test_a_staff_file_creates_users_with_their_roles(session, registry):
    report = import_staff(session, registry, STAFF.encode(), fmt=CSV_FORMAT)
    assert [(r.line, r.username, r.action) for r in report.rows] == [(2, "ann", "create"), (3, "bob", "create")]
    assert report.ignored_columns == ["department"] and set(report.passwords) == {"ann", "bob"}
    assert report.summary() == "2 rows: created 2, updated 0, 0 unchanged, 0 with problems."
    found = users_by_name(session)
    assert found["ann"].display_name == "Ann Lee" and found["ann"].email == "ann@college.example"
    assert sorted(found["bob"].role_keys) == ["assessor", "quality"] and found["bob"].active
    assert UserService(session, registry).authenticate("ann", report.passwords["ann"]) is not None


def test_a_second_file_updates_only_what_changed(session, registry):
    import_staff(session, registry, STAFF.encode(), fmt=CSV_FORMAT)
    changed = """Username,Name,Email,Roles,Active
ann,Ann Lee,ann@college.example,assessor,yes
bob,Robert Marsh,,manager,no
"""
    report = import_staff(session, registry, changed.encode(), fmt=CSV_FORMAT)
    ann, bob = report.rows
    assert (ann.action, bob.action) == ("unchanged", "update")
    assert bob.changes == ["name: Bob Marsh -> Robert Marsh", "roles: assessor, quality -> manager", "deactivated"]
    assert report.passwords == {}
    found = users_by_name(session)
    assert found["bob"].display_name == "Robert Marsh" and found["bob"].email == "bob@college.example"  # empty keeps
    assert found["bob"].role_keys == ["manager"] and not found["bob"].active
    back = import_staff(session, registry, b"username,active\nbob,yes\n", fmt=CSV_FORMAT)
    assert back.rows[0].changes == ["reactivated"] and users_by_name(session)["bob"].active


def test_a_dry_run_reports_what_would_change_and_changes_nothing(session, registry):
    report = import_staff(session, registry, STAFF.encode(), fmt=CSV_FORMAT, dry_run=True)
    assert [r.action for r in report.rows] == ["create", "create"]
    assert report.summary().startswith("2 rows: would create 2") and "Nothing was changed (dry run)" in report.summary()
    assert report.passwords == {} and users_by_name(session) == {}


def test_each_bad_row_is_reported_with_its_line_column_and_advice_and_the_rest_go_in(session, registry):
    data = """username,name,email,roles,active
ann,Ann,ann@college.example,assessor,yes
Bad Name!,X,,assessor,
bob,Bob,not-an-email,assessor,
cat,Cat,,wizard,
dan,Dan,,,
eve,Eve,,assessor,maybe
ann,Ann again,,assessor,
,Nobody,,assessor,
"""
    report = import_staff(session, registry, data.encode(), fmt=CSV_FORMAT)
    problems = {r.line: r.problems for r in report.rows if r.action == "error"}
    assert problems[3] == [
        (
            "username",
            "'bad name!' is not a valid user name",
            "Use up to 64 lower-case letters, digits, '.', '_', '-' or '@'.",
        )
    ]
    assert problems[4][0][:2] == ("email", "'not-an-email' is not an e-mail address")
    assert problems[5][0][:2] == ("roles", "There is no role 'wizard'") and "assessor" in problems[5][0][2]
    assert problems[6][0][:2] == ("roles", "A user needs at least one role")
    assert problems[7][0] == ("active", "'maybe' is not yes or no", "Write yes or no.")
    assert problems[8][0][:2] == ("username", "'ann' is listed twice (first on line 2)")
    assert problems[9][0][:2] == ("username", "The username is empty")
    assert set(users_by_name(session)) == {"ann"}  # the good row went in
    assert report.summary() == "8 rows: created 1, updated 0, 0 unchanged, 7 with problems."


def test_the_last_user_administrator_cannot_be_removed_by_a_file(session, registry):
    UserService(session, registry).create("root", ["admin"])
    for dry_run in (True, False):
        report = import_staff(
            session, registry, b"username,roles,active\nroot,assessor,\n", fmt=CSV_FORMAT, dry_run=dry_run
        )
        [row] = report.rows
        assert row.action == "error" and row.problems[0][0] == "roles"
        assert "nobody else could then manage users" in row.problems[0][1]
        off = import_staff(session, registry, b"username,active\nroot,no\n", fmt=CSV_FORMAT, dry_run=dry_run)
        assert off.rows[0].problems[0][0] == "active"
    assert users_by_name(session)["root"].role_keys == ["admin"] and users_by_name(session)["root"].active


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "The staff file cannot be read: The file is empty."),
        (b"username,name\n", "The staff file has no rows."),
        (b"login,name\nann,Ann\n", "The staff file has no 'username' column."),
        (b'username,name\nann,"unclosed\n', "is not valid CSV"),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_as_a_whole(session, registry, data, message):
    with pytest.raises(TrackerError) as refused:
        import_staff(session, registry, data, fmt=CSV_FORMAT)
    assert message in str(refused.value)
    assert users_by_name(session) == {}


def test_a_spreadsheet_saved_as_windows_csv_with_a_bom_reads_the_same(session, registry):
    data = "\ufeffusername,name,roles\nzoe,Zoë Brontë,assessor\n".encode("utf-8")
    import_staff(session, registry, data, fmt=CSV_FORMAT)
    legacy = "username,name,roles\nyan,Yannick Léger,assessor\n".encode("cp1252")
    import_staff(session, registry, legacy, fmt=CSV_FORMAT)
    found = users_by_name(session)
    assert found["zoe"].display_name == "Zoë Brontë" and found["yan"].display_name == "Yannick Léger"


# -- the command line --------------------------------------------------------------------------------


def test_tracker_hr_import_with_a_dry_run_then_for_real(run, tmp_path):
    path = tmp_path / "staff.csv"
    path.write_text(STAFF + "carl,Carl,,wizard,\n")
    dry = run("hr", "import", str(path), "--dry-run", ok=False)
    assert dry.returncode == 1
    assert "line 2: create ann: new user with roles assessor" in dry.stdout
    assert "line 4 (carl): roles: There is no role 'wizard'" in dry.stderr and "    -> Use one of:" in dry.stderr
    assert "would create 2" in dry.stdout and "Ignored columns: department" in dry.stdout
    assert "password" not in dry.stdout
    real = run("hr", "import", str(path), ok=False)
    assert real.returncode == 1 and "created 2" in real.stdout
    assert "password for ann: " in real.stdout and "(shown once)" in real.stdout
    path.write_text(STAFF)
    again = run("hr", "import", str(path))
    assert "2 unchanged, 0 with problems" in again.stdout


def test_tracker_hr_import_refuses_an_unknown_format_and_a_missing_file(run, tmp_path):
    path = tmp_path / "staff.csv"
    path.write_text(STAFF)
    bad = run("hr", "import", str(path), "--format", "xlsx", ok=False)
    assert bad.returncode == 1 and "There is no import format 'xlsx'" in bad.stderr and "Use one of: csv" in bad.stderr
    missing = run("hr", "import", str(tmp_path / "nope.csv"), ok=False)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


class Tabs:
    """A plugin adding a tab-separated import format."""

    @hookimpl
    def tracker_import_formats(self):
        def read(data: bytes):
            lines = data.decode().splitlines()
            header = [h.strip().lower() for h in lines[0].split("\t")]
            for number, line in enumerate(lines[1:], start=2):
                yield number, dict(zip(header, [v.strip() for v in line.split("\t")], strict=False))

        return [ImportFormat("tsv", "Tab-separated", (".tsv", ".tab"), read)]


def test_an_import_format_from_a_plugin_reads_the_staff_file(session, registry):
    formats = host_of(("tabs", Tabs())).import_formats()
    assert list(formats) == ["csv", "tsv"]
    fmt = pick_format(formats, "staff.TSV", None)
    assert fmt.key == "tsv" and pick_format(formats, "staff.txt", None).key == "csv"
    report = import_staff(session, registry, b"username\troles\nkim\tassessor\n", fmt=fmt)
    assert report.rows[0].action == "create" and "kim" in users_by_name(session)


# -- the admin page ----------------------------------------------------------------------------------


def upload(client, data: bytes, *, dry_run: bool, filename: str = "staff.csv"):
    form = {"csrf_token": csrf(client, "/admin/hr-import"), "file": (io.BytesIO(data), filename)}
    if dry_run:
        form["dry_run"] = "y"
    return client.post("/admin/hr-import", data=form, content_type="multipart/form-data")


def test_the_staff_import_page_for_user_administrators(app_with):
    app = app_with(PluginHost(Settings(secret_key="x")))
    create_users(app, root=["admin"], ann=["assessor"])
    assessor = app.test_client()
    sign_in(assessor, "ann")
    assert assessor.get("/admin/hr-import").status_code == 403
    assert "Staff import" not in assessor.get("/").get_data(as_text=True)
    client = app.test_client()
    sign_in(client, "root")
    assert '<a href="/admin/hr-import">Staff import</a>' in client.get("/").get_data(as_text=True)
    page = client.get("/admin/hr-import").get_data(as_text=True)
    assert 'type="file"' in page and 'id="dry_run"' in page and "checked" in page  # dry run by default
    dry = upload(client, (STAFF + "carl,Carl,,wizard,\n").encode(), dry_run=True)
    html = dry.get_data(as_text=True)
    assert dry.status_code == 200 and "Dry run: nothing was changed" in html
    assert "Would be created" in html and "There is no role &#39;wizard&#39;" in html
    with app.extensions["tracker"].session() as session:
        assert set(users_by_name(session)) == {"root", "ann"}
    real = upload(client, STAFF.encode(), dry_run=False)
    html = real.get_data(as_text=True)
    assert "Imported" in html and "created 1, updated 1" in html and "Passwords of the new users (shown once)" in html
    with app.extensions["tracker"].session() as session:
        assert {"bob", "ann", "root"} <= set(users_by_name(session))
    empty = client.post(
        "/admin/hr-import", data={"csrf_token": csrf(client, "/admin/hr-import")}, content_type="multipart/form-data"
    )
    assert empty.status_code == 400 and "Choose a file to import." in empty.get_data(as_text=True)
    broken = upload(client, b"login\nx\n", dry_run=True)
    assert broken.status_code == 400 and "has no &#39;username&#39; column" in broken.get_data(as_text=True)
    assert client.post("/admin/hr-import", data={}).status_code == 400  # no CSRF token
