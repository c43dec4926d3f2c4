"""The web UI: a Flask app factory with blueprints; every change goes through engine services."""

from __future__ import annotations

from datetime import timedelta
from importlib import import_module
from typing import Any

from flask import Flask, g

from engine import training
from engine.config import Settings
from engine.runtime import Runtime


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app. ``config`` (tests) overrides the defaults; ``TRACKER_SETTINGS`` in it
    may carry a ready :class:`~engine.config.Settings`, otherwise they come from the environment."""
    app = Flask(__name__)
    config = dict(config or {})
    settings = config.pop("TRACKER_SETTINGS", None) or Settings.from_env()
    plugins = config.pop("TRACKER_PLUGINS", None)  # a ready engine.plugins.PluginHost (tests, embedding)
    app.config.from_mapping(
        SECRET_KEY=settings.secret_key,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        REMEMBER_COOKIE_HTTPONLY=True,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=settings.session_hours),
        WTF_CSRF_TIME_LIMIT=None,
        ITEMS_PER_PAGE=25,
    )
    app.config.update(config)
    app.extensions["tracker"] = Runtime(settings, plugins=plugins)
    training.refuse_unsafe_start(app.extensions["tracker"])  # TRAINING never starts on LIVE's database

    from webui import admin, api, auth, automations, errors, ilr, inbox, item_pages, lists, plugin_admin, queue

    auth.init_app(app)
    import_module("webui.security").init_app(app)  # headers, proxies, cookie name
    errors.init_app(app)
    app.register_blueprint(auth.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(lists.bp)
    app.register_blueprint(item_pages.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(inbox.bp)
    app.register_blueprint(ilr.bp)
    app.register_blueprint(queue.bp)
    app.register_blueprint(automations.bp)
    app.register_blueprint(import_module("webui.documents").bp)
    app.register_blueprint(import_module("webui.imports").bp)
    app.register_blueprint(import_module("webui.qualifications").bp)
    app.register_blueprint(import_module("webui.type_admin").bp)
    app.register_blueprint(import_module("webui.audit").bp)
    plugin_admin.init_app(app)  # after the built-in pages, so theirs win any clash
    app.add_url_rule("/", endpoint="index")

    @app.teardown_appcontext
    def close_session(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()

    return app


def runtime() -> Runtime:
    from flask import current_app

    return current_app.extensions["tracker"]


def db_session():
    """The request's database session, opened on first use and closed at teardown."""
    if "db" not in g:
        g.db = runtime().session()
    return g.db
