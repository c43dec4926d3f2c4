"""Errors a user can cause become a page (or JSON) with a clear message, never a traceback."""

from __future__ import annotations

from flask import Flask, render_template, request
from sqlalchemy.exc import DBAPIError
from werkzeug.exceptions import HTTPException

from engine import db
from engine.errors import TrackerError


def _under_api() -> bool:
    return request.path == "/api" or request.path.startswith("/api/")


def init_app(app: Flask) -> None:
    from webui import api

    @app.errorhandler(TrackerError)
    def tracker_error(exc: TrackerError):
        if _under_api():
            return api.tracker_error_response(exc)
        return render_template("error.html", error=exc), exc.status

    @app.errorhandler(DBAPIError)
    def database_gone(exc: DBAPIError):
        """The database restarting or down: a 503 that says so, like any engine error (a 500
        for every request until it is back would look like a bug). Other database errors
        stay the crashes they are."""
        if not db.connection_lost(exc):
            raise exc
        return tracker_error(db.lost_connection_error(exc))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        """Under /api every error is JSON (an unknown address, a wrong method, a crash); elsewhere
        werkzeug's own page stands unless a handler above says otherwise."""
        if _under_api():
            return api.http_error_response(exc)
        return exc

    @app.errorhandler(404)
    def not_found(exc):
        if _under_api():
            return api.http_error_response(exc)
        return render_template(
            "error.html", error=None, title="Page not found", message="There is nothing at this address."
        ), 404
