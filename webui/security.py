"""Security headers on every response, server-side sign-in sessions, and the user service as
the person asking (for the audit log).

- Every response gets a Content Security Policy without inline script or style (pages load
  their script and styles from ``/static``), ``X-Content-Type-Options: nosniff``, a
  ``Referrer-Policy``, ``X-Frame-Options: DENY``, a ``Permissions-Policy`` and, behind TLS,
  ``Strict-Transport-Security``. A response that set its own policy keeps it (document
  downloads are stricter still). Pages for signed-in users are not cached.
- Behind ``TRACKER_PROXY_COUNT`` trusted reverse proxies, the client's address and scheme
  come from their ``X-Forwarded-For``/``-Proto`` headers.
- A sign-in is a row of :class:`engine.models.WebSession`; the cookie carries its random id
  (``sid``), replaced at every sign-in and after setting up two-factor sign-in. Signing out,
  ``TRACKER_SESSION_IDLE_MINUTES`` without a request, or the absolute lifetime end it on the
  server (see :mod:`engine.sessions`).
"""

from __future__ import annotations

from datetime import timedelta

from flask import Flask, Response, current_app, render_template, request, session
from flask_login import current_user
from werkzeug.middleware.proxy_fix import ProxyFix

from engine.models import User
from engine.services.users import UserService
from engine.sessions import SessionStore

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'"
)
PERMISSIONS_POLICY = (
    "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), microphone=(), payment=(), usb=()"
)
HSTS = "max-age=31536000; includeSubDomains"


def init_app(app: Flask) -> None:
    settings = app.extensions["tracker"].settings
    https = settings.base_url.startswith("https://")
    if https and app.config["SESSION_COOKIE_NAME"] == "session":  # Flask's default: not chosen by the caller
        # the __Host- prefix: the browser keeps the cookie only if it is Secure, for this host, on /
        app.config["SESSION_COOKIE_NAME"] = "__Host-tracker"
    app.config.setdefault("SESSION_IDLE", timedelta(minutes=settings.session_idle_minutes))
    if settings.proxy_count:
        n = settings.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=0, x_port=0, x_prefix=0)

    @app.errorhandler(413)
    def too_large(exc):
        """A body over a limit (a form field over ``MAX_FORM_MEMORY_SIZE``, a file over its
        page's limit) that no page answered itself: a page saying so, JSON under /api."""
        if request.path.startswith("/api/"):
            from webui import api

            return api.http_error_response(exc)
        return render_template(
            "error.html",
            error=None,
            title="Too large",
            message="What you sent is larger than Tracker accepts. Send less at once: a smaller file, "
            "or a shorter text (split a long definition into smaller ones).",
        ), 413

    @app.after_request
    def security_headers(response: Response) -> Response:
        headers = response.headers
        headers.setdefault("Content-Security-Policy", CSP)
        headers.setdefault("X-Content-Type-Options", "nosniff")
        headers.setdefault("Referrer-Policy", "same-origin")
        headers.setdefault("X-Frame-Options", "DENY")
        headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        if https or (settings.proxy_count and request.scheme == "https"):
            headers.setdefault("Strict-Transport-Security", HSTS)
        if request.endpoint != "static" and "Cache-Control" not in headers and _private():
            headers["Cache-Control"] = "no-store"
        return response


def _private() -> bool:
    """Pages and JSON for a signed-in user or an API caller: never kept by a browser or proxy cache."""
    return request.path.startswith("/api/") or bool(current_user and current_user.is_authenticated)


def client_address() -> str:
    return request.remote_addr or ""


def users_service() -> UserService:
    """The user service acting as the signed-in user (the audit log's actor) from the client's address."""
    from webui import db_session, runtime

    actor = current_user.actor if current_user and current_user.is_authenticated else None
    return runtime().users(db_session(), actor=actor, address=client_address())


def session_store() -> SessionStore:
    from webui import db_session

    return SessionStore(
        db_session(), idle=current_app.config["SESSION_IDLE"], lifetime=current_app.permanent_session_lifetime
    )


def start_session(user: User, replaces: str | None) -> None:
    """Give this browser a new session id for ``user``; the session ``replaces`` names ends."""
    session["sid"] = session_store().start(
        user, address=client_address(), user_agent=request.user_agent.string or "", replaces=replaces
    )


def session_is_live(user: User) -> bool:
    return session_store().check(session.get("sid"), user.id)


def end_session(user: User | None) -> None:
    session_store().end(session.get("sid"), user, address=client_address())
