"""Errors a user can cause become a page (or JSON) with a clear message, never a traceback."""

from __future__ import annotations

from flask import Flask, render_template, request

from engine.errors import TrackerError


def init_app(app: Flask) -> None:
    @app.errorhandler(TrackerError)
    def tracker_error(exc: TrackerError):
        if request.path.startswith("/api/"):
            body = {"error": exc.message, "advice": exc.advice}
            if hasattr(exc, "problems"):
                body["problems"] = [p.as_dict() for p in exc.problems]
            return body, exc.status
        return render_template("error.html", error=exc), exc.status

    @app.errorhandler(404)
    def not_found(_exc):
        return render_template(
            "error.html", error=None, title="Page not found", message="There is nothing at this address."
        ), 404
