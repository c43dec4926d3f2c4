"""HR import: a staff file from the HR system creates and updates users and their roles.

Columns (a header row; names are not case-sensitive, order is free):

==========  ========================================================================
username    required; the sign-in name (lower-cased). A new name creates a user.
name        the display name; empty keeps the current one (a new user: the username)
email       the e-mail address; empty keeps the current one
roles       role keys separated by ``;`` (or ``|``); empty keeps the current roles.
            A new user needs at least one.
active      yes/no (also true/false, y/n, 1/0); empty keeps the current state (new: yes)
==========  ========================================================================

Every change goes through :class:`engine.services.UserService`, one row at a time: a row
with a problem is reported with its line, column and what to do, and the other rows still
go in. ``dry_run`` checks every row the same way and changes nothing. New users get a
generated password, shown once in the report. Other columns are ignored (and named in the
report). Files: CSV, or any format a plugin adds (``tracker_import_formats``).

Doors: ``tracker hr import FILE [--dry-run] [--format KEY]`` and ``/admin/hr-import``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import click
from flask import Blueprint, render_template, request
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from sqlalchemy import select
from sqlalchemy.orm import Session
from wtforms import BooleanField

from engine import permissions
from engine.definitions.model import Registry
from engine.errors import PermissionDenied, TrackerError, ValidationFailed
from engine.hookspecs import hookimpl
from engine.models import User
from engine.permissions import Actor
from engine.plugins import ImportFormat, Invalid, MenuLink
from engine.services import UserService

NAME = "hr_import"
COLUMNS = ("username", "name", "email", "roles", "active")
#: the largest file the web page accepts
MAX_UPLOAD_BYTES = 5 * 1024 * 1024

_YES = {"yes", "y", "true", "1", "active"}
_NO = {"no", "n", "false", "0", "inactive"}
_ROLE_SPLIT = re.compile(r"[;|]")
#: service problem paths -> the column they concern
_COLUMN_OF = {"username": "username", "display_name": "name", "email": "email", "roles": "roles", "active": "active"}


@dataclass
class RowResult:
    """What happened to one row: ``action`` is ``create``, ``update``, ``unchanged`` or
    ``error``; ``changes`` says what changed (or would); ``problems`` are ``(column,
    message, advice)``."""

    line: int
    username: str
    action: str
    changes: list[str] = field(default_factory=list)
    problems: list[tuple[str, str, str]] = field(default_factory=list)


@dataclass
class ImportReport:
    dry_run: bool
    rows: list[RowResult] = field(default_factory=list)
    #: columns the file has that the import does not use
    ignored_columns: list[str] = field(default_factory=list)
    #: passwords of the users created, ``{username: password}``; shown once
    passwords: dict[str, str] = field(default_factory=dict)

    def count(self, action: str) -> int:
        return sum(1 for r in self.rows if r.action == action)

    @property
    def errors(self) -> list[RowResult]:
        return [r for r in self.rows if r.action == "error"]

    def summary(self) -> str:
        counts = (self.count("create"), self.count("update"), self.count("unchanged"), self.count("error"))
        rows = f"{len(self.rows)} row{'' if len(self.rows) == 1 else 's'}"
        if self.dry_run:
            return (
                f"{rows}: would create {counts[0]}, would update {counts[1]}, {counts[2]} unchanged, "
                f"{counts[3]} with problems. Nothing was changed (dry run)."
            )
        return f"{rows}: created {counts[0]}, updated {counts[1]}, {counts[2]} unchanged, {counts[3]} with problems."


def import_staff(
    session: Session,
    registry: Registry,
    data: bytes,
    *,
    fmt: ImportFormat,
    dry_run: bool = False,
    actor: Actor | None = None,
    address: str = "",
) -> ImportReport:
    """Read ``data`` in ``fmt`` and create/update the users it lists (see the module doc).

    Raises :class:`TrackerError` when the file as a whole cannot be used (unreadable, no
    ``username`` column); problems of single rows are in the report.
    """
    users = UserService(session, registry, actor=actor, address=address)  # the audit log names who imported
    report = ImportReport(dry_run)
    seen: dict[str, int] = {}
    try:
        rows = list(fmt.read(data))
    except Invalid as exc:
        raise TrackerError(f"The staff file cannot be read: {exc.message}", exc.advice) from None
    if not rows:
        raise TrackerError(
            "The staff file has no rows.", f"Give a header row ({', '.join(COLUMNS)}) and one row per member of staff."
        )
    header = list(rows[0][1])
    if "username" not in header:
        raise TrackerError(
            "The staff file has no 'username' column.",
            f"Give a header row naming the columns: {', '.join(COLUMNS)} (only username is required).",
        )
    report.ignored_columns = [c for c in header if c not in COLUMNS]
    for line, row in rows:
        result = _one_row(users, session, line, row, seen, dry_run, report)
        report.rows.append(result)
    return report


def _one_row(
    users: UserService,
    session: Session,
    line: int,
    row: dict[str, str],
    seen: dict[str, int],
    dry_run: bool,
    report: ImportReport,
) -> RowResult:
    username = row.get("username", "").strip().lower()
    result = RowResult(line, username, "unchanged")
    if not username:
        result.action = "error"
        result.problems.append(("username", "The username is empty", "Fill in the user's sign-in name."))
        return result
    if username in seen:
        result.action = "error"
        result.problems.append(
            ("username", f"'{username}' is listed twice (first on line {seen[username]})", "Keep one row per user.")
        )
        return result
    seen[username] = line
    name = row.get("name", "").strip() or None
    email = row.get("email", "").strip() or None
    roles_text = row.get("roles", "").strip()
    roles = [r.strip() for r in _ROLE_SPLIT.split(roles_text) if r.strip()] if roles_text else None
    active_text = row.get("active", "").strip().lower()
    active: bool | None = None
    if active_text in _YES:
        active = True
    elif active_text in _NO:
        active = False
    elif active_text:
        result.problems.append(("active", f"'{row.get('active')}' is not yes or no", "Write yes or no."))
    user = session.scalar(select(User).where(User.username == username))
    problems = users.check_change(username, roles=roles, display_name=name, email=email, active=active)
    result.problems += [(_COLUMN_OF.get(p.path, p.path), p.message, p.advice) for p in problems]
    if result.problems:
        result.action = "error"
        return result
    if user is None:
        result.action = "create"
        result.changes.append(f"new user with roles {', '.join(roles or [])}")
        if active is False:
            result.changes.append("inactive")
    else:
        result.changes = _changes(user, name, email, roles, active)
        result.action = "update" if result.changes else "unchanged"
    if dry_run or result.action == "unchanged":
        return result
    try:
        _apply(users, user, username, name, email, roles or [], active, report)
    except ValidationFailed as exc:
        session.rollback()
        result.action, result.changes = "error", []
        result.problems += [(_COLUMN_OF.get(p.path, p.path), p.message, p.advice) for p in exc.problems]
    except TrackerError as exc:
        session.rollback()
        result.action, result.changes = "error", []
        result.problems.append(("", exc.message, exc.advice))
    return result


def _changes(
    user: User, name: str | None, email: str | None, roles: list[str] | None, active: bool | None
) -> list[str]:
    out = []
    if name is not None and name != user.display_name:
        out.append(f"name: {user.display_name} -> {name}")
    if email is not None and email != (user.email or ""):
        out.append(f"email: {user.email or '(none)'} -> {email}")
    if roles is not None and sorted(set(roles)) != sorted(user.role_keys):
        out.append(f"roles: {', '.join(sorted(user.role_keys)) or '(none)'} -> {', '.join(dict.fromkeys(roles))}")
    if active is not None and active != user.active:
        out.append("reactivated" if active else "deactivated")
    return out


def _apply(
    users: UserService,
    user: User | None,
    username: str,
    name: str | None,
    email: str | None,
    roles: list[str],
    active: bool | None,
    report: ImportReport,
) -> None:
    if user is None:
        created, password = users.create(username, roles, display_name=name or "", email=email)
        report.passwords[created.username] = password
        if active is False:
            users.deactivate(created.username)
        return
    if (name is not None and name != user.display_name) or (email is not None and email != (user.email or "")):
        users.update_details(username, display_name=name, email=email)
    if active is True and not user.active:
        users.reactivate(username)
    if roles and sorted(set(roles)) != sorted(user.role_keys):
        users.set_roles(username, roles)
    if active is False and user.active:
        users.deactivate(username)


def pick_format(formats: dict[str, ImportFormat], filename: str, key: str | None) -> ImportFormat:
    """The format named ``key``, or the one whose extension ``filename`` has (CSV otherwise).
    Raises TrackerError for an unknown key."""
    if key:
        if key not in formats:
            raise TrackerError(f"There is no import format '{key}'.", f"Use one of: {', '.join(formats)}.")
        return formats[key]
    suffix = Path(filename).suffix.lower()
    return next((f for f in formats.values() if suffix in f.extensions), formats["csv"])


# -- the command line --------------------------------------------------------------------------------


@click.group("hr")
def hr_cli() -> None:
    """Staff from the HR system."""


@hr_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and say what would change; change nothing.")
@click.option("--format", "format_key", default=None, help="The file format (default: from the extension, else CSV).")
def hr_import(file: Path, dry_run: bool, format_key: str | None) -> None:
    """Create and update users from FILE (columns username, name, email, roles, active).
    Exit code 1 when any row has a problem; the other rows are still imported."""
    import sys

    from engine.cli import _runtime

    rt = _runtime()
    fmt = pick_format(rt.plugins.import_formats(), file.name, format_key)
    with rt.session() as session:
        report = import_staff(session, rt.registry, file.read_bytes(), fmt=fmt, dry_run=dry_run)
    for row in report.rows:
        if row.action == "error":
            for column, message, advice in row.problems:
                where = f" {column}:" if column else ""
                click.echo(f"line {row.line} ({row.username or 'no username'}):{where} {message}", err=True)
                if advice:
                    click.echo(f"    -> {advice}", err=True)
        elif row.action != "unchanged":
            verb = {"create": "create" if dry_run else "created", "update": "update" if dry_run else "updated"}
            click.echo(f"line {row.line}: {verb[row.action]} {row.username}: {'; '.join(row.changes)}")
    if report.ignored_columns:
        click.echo(f"Ignored columns: {', '.join(report.ignored_columns)}")
    for username, password in report.passwords.items():
        click.echo(f"password for {username}: {password}  (shown once)")
    click.secho(report.summary(), fg="red" if report.errors else "green")
    if report.errors:
        sys.exit(1)


# -- the web page ------------------------------------------------------------------------------------

bp = Blueprint("hr_import", __name__, template_folder="templates")


class ImportForm(FlaskForm):
    file = FileField("Staff file")
    dry_run = BooleanField("Dry run: check the file and show what would change, without changing anything")


@bp.route("/admin/hr-import", methods=["GET", "POST"])
@login_required
def page():
    from webui import db_session, runtime

    if not permissions.allows(current_user.actor, "users.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not import staff.", "This needs the 'users.admin' capability."
        )
    formats = runtime().plugins.import_formats()
    form = ImportForm()
    if request.method == "GET":
        form.dry_run.data = True
    report, problem, status = None, None, 200
    if form.validate_on_submit():
        upload = form.file.data
        data = upload.read(MAX_UPLOAD_BYTES + 1) if upload else b""
        if not upload or not upload.filename:
            problem, status = TrackerError("Choose a file to import.", "Pick the CSV the HR system exported."), 400
        elif len(data) > MAX_UPLOAD_BYTES:
            problem, status = TrackerError("The file is larger than 5 MB.", "Split it into smaller files."), 400
        else:
            try:
                fmt = pick_format(formats, upload.filename, None)
                report = import_staff(
                    db_session(),
                    runtime().registry,
                    data,
                    fmt=fmt,
                    dry_run=bool(form.dry_run.data),
                    actor=current_user.actor,
                    address=request.remote_addr or "",
                )
            except TrackerError as exc:
                problem, status = exc, 400
            else:
                status = 200
    elif form.is_submitted():
        problem, status = TrackerError("The form expired.", "Choose the file and send it again."), 400
    return render_template(
        "hr_import/page.html",
        form=form,
        report=report,
        problem=problem,
        columns=COLUMNS,
        extensions=sorted({e for f in formats.values() for e in f.extensions}),
    ), status


# -- hooks ---------------------------------------------------------------------------------------------


@hookimpl
def tracker_cli_commands():
    return [hr_cli]


@hookimpl
def tracker_blueprints():
    return [bp]


@hookimpl
def tracker_menu_links(actor):
    return [MenuLink("Staff import", "/admin/hr-import")] if permissions.allows(actor, "users.admin") else []
