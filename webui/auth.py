"""Sign-in with flask-login; passwords are checked by the engine's UserService."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFProtect
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired

from engine.models import User
from engine.permissions import Actor

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()


class SessionUser(UserMixin):
    """What flask-login keeps: the id, and the engine Actor for permission checks."""

    def __init__(self, user: User, actor: Actor) -> None:
        self.id = str(user.id)
        self.username = user.username
        self.label = user.label
        self.actor = actor


def init_app(app: Flask) -> None:
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to see that page."
    csrf.init_app(app)


@login_manager.user_loader
def load_user(user_id: str) -> SessionUser | None:
    from webui import db_session, runtime

    user = db_session().get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or not user.active:
        return None
    return SessionUser(user, Actor.for_user(user, runtime().registry))


class LoginForm(FlaskForm):
    username = StringField(
        "User name",
        validators=[DataRequired("Enter your user name.")],
        render_kw={"autocomplete": "username", "autofocus": True},
    )
    password = PasswordField(
        "Password", validators=[DataRequired("Enter your password.")], render_kw={"autocomplete": "current-password"}
    )


def _safe_next(target: str | None) -> str:
    """Only same-site paths, so a crafted link cannot send users elsewhere after sign-in."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc:
        return target
    return url_for("index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    from webui import db_session, runtime

    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        user = runtime().users(db_session()).authenticate(form.username.data, form.password.data)
        if user is not None:
            login_user(SessionUser(user, Actor.for_user(user, runtime().registry)))
            return redirect(_safe_next(request.args.get("next")))
        flash("That user name and password do not match an active account. Check both and try again.", "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    logout_user()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.login"))
