"""Sign-in: a password (argon2, checked by the engine), then a TOTP code once the user is enrolled.

Contract with the rest of the web UI:

- ``current_user`` is a :class:`SessionUser` whose ``actor`` is the engine Actor.
- Signing in clears the session first (nothing from before survives), stores the user's
  ``session_epoch`` and the sign-in time, and makes the session permanent. ``load_user``
  refuses a session whose epoch is no longer the user's (deactivation, 2FA reset or
  confirmation end every other session at once), whose user is inactive, which is older
  than ``PERMANENT_SESSION_LIFETIME``, or which flask-login's "strong" protection flagged
  (another address or browser: flask-login only marks permanent sessions as not fresh,
  so the loader refuses those itself).
- A user who is enrolled is not signed in after the password: the pending user waits in the
  session, for ``TWO_FACTOR_PENDING_SECONDS``, until a code or a recovery code passes.
- A signed-in user whose role needs two-factor sign-in and who is not enrolled reaches
  nothing but the enrolment page and sign-out until enrolled.
- POSTs to both sign-in steps are limited per IP address and user name
  (``RATELIMIT_SIGN_IN``); a limited request gets 429 and the sign-in page with a message.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import urlsplit

import segno
from flask import (
    Blueprint,
    Flask,
    current_app,
    flash,
    make_response,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, UserMixin, current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from flask_wtf.csrf import CSRFError, CSRFProtect
from markupsafe import Markup
from wtforms import PasswordField, StringField
from wtforms.validators import DataRequired

from engine.errors import ValidationFailed
from engine.models import User
from engine.permissions import Actor
from engine.services.users import RECOVERY_CODES, TOTP_ISSUER, AccountLocked
from webui.security import end_session, session_is_live, start_session, users_service

bp = Blueprint("auth", __name__)
login_manager = LoginManager()
csrf = CSRFProtect()

TOO_MANY_ATTEMPTS = "Too many sign-in attempts. Wait a minute and try again."
WRONG_PASSWORD = "That user name and password do not match an active account. Check both and try again."
WRONG_CODE = (
    "That code is not right, or it has been used already. "
    "Type the code your authenticator app shows now, or one of your recovery codes."
)
#: endpoints a user who must enrol in two-factor sign-in may still reach
_OPEN_DURING_ENROLMENT = frozenset({"auth.two_factor", "auth.logout", "static"})


def _sign_in_key() -> str:
    """The rate-limit key: the client's address and the user name being signed in."""
    if request.endpoint == "auth.login":
        who = request.form.get("username", "")
    else:
        who = (session.get("pending_2fa") or {}).get("username", "")
    return f"{get_remote_address()}|{who.strip().lower()}"


#: One limiter for the process; ``init_app`` points it at each app's storage
#: (``RATELIMIT_STORAGE_URI``: Redis when configured, otherwise memory).
limiter = Limiter(
    key_func=_sign_in_key,
    strategy="moving-window",
    headers_enabled=True,
    in_memory_fallback_enabled=True,
    swallow_errors=True,
)


def _sign_in_limit() -> str:
    return current_app.config["RATELIMIT_SIGN_IN"]


class SessionUser(UserMixin):
    """What flask-login keeps: the id, and the engine Actor for permission checks."""

    def __init__(self, user: User, actor: Actor) -> None:
        self.id = str(user.id)
        self.username = user.username
        self.label = user.label
        self.actor = actor
        self.enrolled = bool(user.totp_secret)


def init_app(app: Flask) -> None:
    """Sessions, CSRF, the sign-in rate limit, and friendly pages for a missing CSRF token or
    too many attempts. Defaults may be overridden by the config passed to ``create_app``
    (``PERMANENT_SESSION_LIFETIME`` comes from ``TRACKER_SESSION_HOURS`` there)."""
    settings = app.extensions["tracker"].settings
    app.config.setdefault("SESSION_PROTECTION", "strong")
    app.config.setdefault("TWO_FACTOR_PENDING_SECONDS", 300)
    app.config.setdefault("RATELIMIT_SIGN_IN", "10 per minute")
    app.config.setdefault("RATELIMIT_STORAGE_URI", settings.redis_url or "memory://")
    app.config.setdefault("RATELIMIT_ENABLED", True)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = "Please sign in to see that page."
    login_manager.session_protection = "strong"
    csrf.init_app(app)
    limiter.init_app(app)
    app.register_error_handler(429, _too_many_attempts)
    app.register_error_handler(CSRFError, _csrf_failed)


def _too_many_attempts(_exc: Exception):
    if request.path.startswith("/api/"):
        return {"error": "Too many requests.", "advice": "Wait a minute and try again."}, 429
    if request.endpoint == "auth.login_code":
        return render_template("two_factor_login.html", form=CodeForm(), alert=TOO_MANY_ATTEMPTS), 429
    if request.endpoint == "auth.login":
        return render_template("login.html", form=LoginForm(), alert=TOO_MANY_ATTEMPTS), 429
    return render_template(
        "error.html", error=None, title="Too many requests", message="Wait a minute and try again."
    ), 429


def _csrf_failed(exc: CSRFError):
    message = "The form could not be sent: its security token is missing or out of date."
    advice = "Go back, reload the page and try again."
    if request.path.startswith("/api/"):
        return {"error": message, "advice": advice}, 400
    return render_template("error.html", error=None, title="Please try again", message=f"{message} {advice}"), 400


@login_manager.user_loader
def load_user(user_id: str) -> SessionUser | None:
    from webui import db_session, runtime

    user = db_session().get(User, int(user_id)) if user_id.isdigit() else None
    if user is None or not user.active or session.get("epoch") != user.session_epoch:
        return None
    started = session.get("signed_in_at")
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    if not isinstance(started, int | float) or time.time() - started > lifetime:
        return None
    if session.get("_fresh") is False:  # strong protection: another address or browser
        return None
    if not session_is_live(user):  # signed out, idle too long or ended on the server
        return None
    return SessionUser(user, Actor.for_user(user, runtime().registry))


@bp.before_app_request
def require_enrolment():
    """Send a signed-in user whose role needs two-factor sign-in to enrolment until enrolled."""
    from webui import db_session, runtime

    if request.endpoint in _OPEN_DURING_ENROLMENT or request.path.startswith("/api/"):
        return None
    if not current_user.is_authenticated or current_user.enrolled:
        return None
    user = db_session().get(User, int(current_user.id))
    if not runtime().users(db_session()).requires_2fa(user):
        return None
    if request.method == "GET" and "after_enrolment" not in session:
        session["after_enrolment"] = _safe_next(request.full_path.rstrip("?"))
    return redirect(url_for("auth.two_factor"))


class LoginForm(FlaskForm):
    username = StringField(
        "User name",
        validators=[DataRequired("Enter your user name.")],
        render_kw={"autocomplete": "username", "autofocus": True},
    )
    password = PasswordField(
        "Password", validators=[DataRequired("Enter your password.")], render_kw={"autocomplete": "current-password"}
    )


class CodeForm(FlaskForm):
    code = StringField(
        "Code",
        validators=[DataRequired("Enter the code from your authenticator app, or a recovery code.")],
        description="The 6 digits your app shows now, or one of your recovery codes.",
        render_kw={"autocomplete": "one-time-code", "autofocus": True, "spellcheck": "false"},
    )


def _safe_next(target: str | None) -> str:
    """Only same-site paths, so a crafted link cannot send users elsewhere after sign-in."""
    if (
        target
        and target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and not any(ord(c) < 32 for c in target)
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("index")


def _finish_sign_in(user: User, target: str):
    """Log the user in on a fresh session and send them on (to enrolment first if they must)."""
    from webui import runtime

    users = users_service()
    old_sid = session.get("sid")
    session.clear()  # nothing from before the sign-in survives it
    login_user(SessionUser(user, Actor.for_user(user, runtime().registry)))
    session.permanent = True
    session["epoch"] = user.session_epoch
    session["signed_in_at"] = int(time.time())
    start_session(user, old_sid)
    users.record_sign_in(user)
    if not user.totp_secret and users.requires_2fa(user):
        session["after_enrolment"] = target
        flash("One of your roles needs two-factor sign-in. Set it up now to continue.", "info")
        return redirect(url_for("auth.two_factor"))
    return redirect(target)


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_sign_in_limit, methods=["POST"])
def login():

    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = users_service().authenticate(form.username.data, form.password.data)
        except AccountLocked as exc:
            flash(f"{WRONG_PASSWORD} {exc.message} {exc.advice}", "error")
            return render_template("login.html", form=form), 401
        if user is not None:
            target = _safe_next(request.args.get("next"))
            if not user.totp_secret:
                return _finish_sign_in(user, target)
            session.clear()
            session["pending_2fa"] = {
                "user_id": user.id,
                "username": user.username,
                "epoch": user.session_epoch,
                "next": target,
                "until": time.time() + current_app.config["TWO_FACTOR_PENDING_SECONDS"],
            }
            return redirect(url_for("auth.login_code"))
        flash(WRONG_PASSWORD, "error")
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("login.html", form=form), status


def _pending_user() -> tuple[User, dict[str, Any]] | None:
    """The user who gave their password and still owes a code, unless that has expired or
    the account changed since (deactivated, 2FA reset)."""
    from webui import db_session

    pending = session.get("pending_2fa")
    if not isinstance(pending, dict) or time.time() > pending.get("until", 0):
        return None
    user = db_session().get(User, pending.get("user_id"))
    if user is None or not user.active or not user.totp_secret or user.session_epoch != pending.get("epoch"):
        return None
    return user, pending


@bp.route("/login/code", methods=["GET", "POST"])
@limiter.limit(_sign_in_limit, methods=["POST"])
def login_code():

    found = _pending_user()
    if found is None:
        session.pop("pending_2fa", None)
        flash("Your sign-in has timed out or was not started. Sign in again.", "error")
        return redirect(url_for("auth.login"))
    user, pending = found
    form = CodeForm()
    status = 200
    if form.validate_on_submit():
        users = users_service()
        typed = form.code.data.strip()
        digits = typed.replace(" ", "")
        try:
            if digits.isdigit() and len(digits) == 6:
                passed, recovery = users.verify_totp(user, digits), False
            else:
                passed = recovery = users.use_recovery_code(user, typed)
        except AccountLocked as exc:
            session.pop("pending_2fa", None)
            form.code.errors.append(f"{WRONG_CODE} {exc.message} {exc.advice}")
            return render_template("two_factor_login.html", form=form), 401
        if passed and not recovery:
            return _finish_sign_in(user, pending["next"])
        if passed:
            response = _finish_sign_in(user, pending["next"])
            left = users.recovery_codes_left(user)
            advice = " Set up two-factor sign-in again to get new ones." if left <= 3 else ""
            flash(f"You signed in with a recovery code. You have {left} of {RECOVERY_CODES} left.{advice}", "info")
            return response
        form.code.errors.append(WRONG_CODE)
        status = 401
    elif request.method == "POST":
        status = 400
    return render_template("two_factor_login.html", form=form), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    from webui import db_session

    end_session(db_session().get(User, int(current_user.id)))
    logout_user()
    session.clear()
    flash("You have signed out.", "info")
    return redirect(url_for("auth.login"))


# -- enrolment -------------------------------------------------------------------------------------


def _qr_svg(uri: str) -> Markup:
    """The provisioning URI as an inline SVG QR code: no request leaves the page."""
    svg = segno.make(uri, error="m").svg_inline(scale=5, border=4, light="#fff", title="QR code for your app")
    return Markup(svg.replace("<svg ", '<svg role="img" aria-label="QR code to scan with your authenticator app" ', 1))


def _grouped(secret: str) -> str:
    return " ".join(secret[i : i + 4] for i in range(0, len(secret), 4))


@bp.route("/account/two-factor", methods=["GET", "POST"])
@login_required
def two_factor():
    """Enrolment: a QR code and the secret; a code from the app confirms it, and the ten
    recovery codes are then shown once. An enrolled user sees their status and may set up
    a new app (the old one keeps working until the new one is confirmed)."""
    from webui import db_session

    users = users_service()
    user = db_session().get(User, int(current_user.id))
    form = CodeForm()
    form.code.label.text = "Code from your app"
    form.code.description = "The 6 digits your app shows for Tracker once you have added it."
    status = 200
    if form.validate_on_submit():
        try:
            codes = users.confirm_totp(user, form.code.data)
        except ValidationFailed as exc:
            form.code.errors.extend(f"{p.message}. {p.advice}" for p in exc.problems)
            status = 400
        else:
            session["epoch"] = user.session_epoch  # other sessions end; this one goes on
            start_session(user, session.get("sid"))  # under a new id
            target = _safe_next(session.pop("after_enrolment", None))
            response = make_response(render_template("two_factor_recovery.html", codes=codes, next=target))
            response.headers["Cache-Control"] = "no-store"
            return response
    elif request.method == "POST":
        status = 400
    secret = user.totp_pending_secret
    if secret is None and not user.totp_secret:
        secret = users.begin_totp(user)
    setup = None
    if secret is not None:
        uri = users.provisioning_uri(user, secret)
        setup = {"qr": _qr_svg(uri), "secret": _grouped(secret), "issuer": TOTP_ISSUER}
    return render_template(
        "two_factor.html",
        form=form,
        user=user,
        setup=setup,
        codes_left=users.recovery_codes_left(user) if user.totp_secret else 0,
        required=users.requires_2fa(user),
    ), status


@bp.route("/account/two-factor/new", methods=["POST"])
@login_required
def two_factor_new():
    """Start setting up a new authenticator app (a new phone, or to get new recovery codes)."""
    from webui import db_session, runtime

    user = db_session().get(User, int(current_user.id))
    runtime().users(db_session()).begin_totp(user)
    return redirect(url_for("auth.two_factor"))


@bp.route("/account/two-factor/cancel", methods=["POST"])
@login_required
def two_factor_cancel():
    from webui import db_session, runtime

    user = db_session().get(User, int(current_user.id))
    if user.totp_secret:
        runtime().users(db_session()).cancel_totp(user)
        flash("You kept your current authenticator app.", "info")
    return redirect(url_for("auth.two_factor"))
