"""The users page for holders of ``users.admin``: create users, set roles, reset two-factor
sign-in, deactivate and reactivate, and choose which roles must use two-factor sign-in.

Every change is a POST (CSRF-checked) handled by the engine's UserService; its problems are
shown on the form they concern, and a refused change changes nothing.
"""

from __future__ import annotations

from flask import Blueprint, flash, make_response, redirect, render_template, request, session, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from wtforms import EmailField, Field, SelectChoice, SelectMultipleField, StringField
from wtforms.validators import DataRequired, Optional
from wtforms.widgets import CheckboxInput, ListWidget

from engine import permissions
from engine.errors import PermissionDenied, Problem, ValidationFailed
from engine.models import User
from webui import db_session, runtime
from webui.auth import login_manager
from webui.security import users_service

bp = Blueprint("admin", __name__, url_prefix="/admin")


class RolesField(SelectMultipleField):
    """Role checkboxes. Unknown values reach the engine, which names them in its message."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def __init__(self, label: str = "", **kwargs) -> None:
        super().__init__(label, validate_choice=False, **kwargs)


class CreateUserForm(FlaskForm):
    username = StringField(
        "User name",
        validators=[DataRequired("Enter a user name.")],
        description="Lower-case letters, digits, '.', '_', '-' or '@'; they sign in with it.",
        render_kw={"autocomplete": "off", "spellcheck": "false"},
    )
    display_name = StringField("Display name", validators=[Optional()], description="Shown on pages; may be empty.")
    email = EmailField("E-mail", validators=[Optional()], description="Where notifications go; may be empty.")
    roles = RolesField("Roles")


class RolesForm(FlaskForm):
    roles = RolesField("Roles")


class TwoFactorRolesForm(FlaskForm):
    required = RolesField("Roles that must use two-factor sign-in")


def _role_choices(field: SelectMultipleField) -> None:
    field.choices = [
        SelectChoice(r.key, r.name) for r in sorted(runtime().registry.roles.values(), key=lambda r: r.name)
    ]


def _text(problem: Problem) -> str:
    return f"{problem.message}. {problem.advice}" if problem.advice else f"{problem.message}."


def _attach(form: FlaskForm, problems: list[Problem]) -> list[str]:
    """Put each problem on the field it names; returns the ones that name no field."""
    leftover = []
    for p in problems:
        field = getattr(form, p.path, None) if p.path else None
        if isinstance(field, Field):
            field.errors = [*field.errors, _text(p)]
        else:
            leftover.append(_text(p))
    return leftover


@bp.before_request
def only_user_admins():
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not permissions.allows(current_user.actor, "users.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not manage users.",
            "This needs the 'users.admin' capability; ask an administrator.",
        )
    return None


@bp.app_context_processor
def nav_links() -> dict[str, bool]:
    return {
        "can_manage_users": bool(
            current_user.is_authenticated and permissions.allows(current_user.actor, "users.admin")
        )
    }


def _no_store(html: str):
    """A page showing a secret once: browsers must not keep it."""
    response = make_response(html)
    response.headers["Cache-Control"] = "no-store"
    return response


# -- the list, and which roles need two-factor sign-in -------------------------------------------


def _users_page(form: TwoFactorRolesForm | None = None, status: int = 200):
    users = users_service()
    required = users.roles_requiring_2fa()
    if form is None:
        form = TwoFactorRolesForm(formdata=None, data={"required": sorted(required)})
    _role_choices(form.required)
    roles = runtime().registry.roles
    locked = users.locked_usernames()
    rows = [
        {
            "user": u,
            "roles": [roles[k].name if k in roles else k for k in u.role_keys],
            "requires_2fa": bool(required & set(u.role_keys)),
            "locked": u.username in locked,
        }
        for u in users.all_users()
    ]
    return render_template("users.html", rows=rows, form=form), status


@bp.route("/users")
def users_list():
    return _users_page()


@bp.route("/roles/two-factor", methods=["POST"])
def roles_two_factor():
    form = TwoFactorRolesForm()
    _role_choices(form.required)
    if not form.validate_on_submit():
        return _users_page(form, 400)
    users = users_service()
    known = set(runtime().registry.roles)
    wanted = set(form.required.data or [])
    current = users.roles_requiring_2fa()
    try:
        # unknown roles first: the engine refuses them before anything is saved
        for role in [*sorted(wanted - known), *sorted(known)]:
            if (role in wanted) != (role in current):
                users.set_role_2fa(role, role in wanted)
    except ValidationFailed as exc:
        form.required.errors = [_text(p) for p in exc.problems]
        return _users_page(form, exc.status)
    names = [runtime().registry.roles[r].name for r in sorted(wanted)]
    flash(
        f"Two-factor sign-in is now required for: {', '.join(names)}."
        if names
        else "No role requires two-factor sign-in now.",
        "info",
    )
    return redirect(url_for("admin.users_list"))


# -- creating a user ----------------------------------------------------------------------------------


@bp.route("/users/new", methods=["GET", "POST"])
def new_user():
    form = CreateUserForm()
    _role_choices(form.roles)
    status = 200
    errors: list[str] = []
    if form.validate_on_submit():
        try:
            user, password = (
                runtime()
                .users(db_session())
                .create(
                    form.username.data,
                    list(form.roles.data or []),
                    display_name=(form.display_name.data or "").strip(),
                    email=form.email.data,
                )
            )
        except ValidationFailed as exc:
            db_session().rollback()
            errors = _attach(form, exc.problems)
            status = exc.status
        else:
            return _no_store(render_template("users_created.html", user=user, password=password))
    elif request.method == "POST":
        status = 400
    return render_template("users_new.html", form=form, errors=errors), status


# -- one user -------------------------------------------------------------------------------------------


def _user_page(user: User, roles_form: RolesForm | None = None, action_error: str = "", status: int = 200):
    users = users_service()
    if roles_form is None:
        roles_form = RolesForm(formdata=None, data={"roles": user.role_keys})
    _role_choices(roles_form.roles)
    return render_template(
        "users_edit.html",
        user=user,
        roles_form=roles_form,
        action_error=action_error,
        requires_2fa=users.requires_2fa(user),
        locked_at=users.locked_at(user),
        codes_left=users.recovery_codes_left(user) if user.totp_secret else 0,
        is_me=str(user.id) == current_user.id,
    ), status


@bp.route("/users/<username>")
def user_page(username: str):
    return _user_page(users_service().get(username))


@bp.route("/users/<username>/roles", methods=["POST"])
def user_roles(username: str):
    users = users_service()
    user = users.get(username)
    form = RolesForm()
    _role_choices(form.roles)
    if not form.validate_on_submit():
        return _user_page(user, form, status=400)
    try:
        users.set_roles(username, list(form.roles.data or []))
    except ValidationFailed as exc:
        db_session().rollback()
        leftover = _attach(form, exc.problems)
        return _user_page(user, form, " ".join(leftover), exc.status)
    flash(f"Saved the roles of {user.label}.", "info")
    return redirect(url_for("admin.user_page", username=username))


@bp.route("/users/<username>/reset-2fa", methods=["POST"])
def user_reset_2fa(username: str):
    user = users_service().reset_2fa(username)
    if str(user.id) == current_user.id:
        session["epoch"] = user.session_epoch  # your other sessions end; this one goes on
    flash(
        f"Two-factor sign-in was reset for {user.label}: their other sessions have ended and they set it up again.",
        "info",
    )
    return redirect(url_for("admin.user_page", username=username))


@bp.route("/users/<username>/deactivate", methods=["POST"])
def user_deactivate(username: str):
    users = users_service()
    user = users.get(username)
    try:
        users.deactivate(username)
    except ValidationFailed as exc:
        return _user_page(user, action_error=" ".join(_text(p) for p in exc.problems), status=exc.status)
    flash(f"{user.label} is deactivated: their sessions and API tokens stopped working.", "info")
    return redirect(url_for("admin.user_page", username=username))


@bp.route("/users/<username>/reactivate", methods=["POST"])
def user_reactivate(username: str):
    user = users_service().reactivate(username)
    flash(f"{user.label} is active again and can sign in.", "info")
    return redirect(url_for("admin.user_page", username=username))


@bp.route("/users/<username>/unlock", methods=["POST"])
def user_unlock(username: str):
    users = users_service()
    try:
        user = users.unlock(username)
    except ValidationFailed as exc:
        user = users.get(username)
        return _user_page(user, action_error=" ".join(_text(p) for p in exc.problems), status=exc.status)
    flash(f"{user.label} is unlocked and can sign in again.", "info")
    return redirect(url_for("admin.user_page", username=username))
