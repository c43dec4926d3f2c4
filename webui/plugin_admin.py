"""Plugins on the web: the admin page listing plugins and their errors, the JSON endpoint
form lookups call, and the wiring of plugin blueprints, menu links and field widgets.

A plugin page that raises is recorded as that plugin's error and answered with an error
page; the rest of the app is unaffected.
"""

from __future__ import annotations

import math

from flask import Blueprint, Flask, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import HTTPException

from engine import permissions
from engine.errors import NotFound, PermissionDenied, TrackerError
from engine.plugins import Invalid, LookupUnavailable, clear_errors, stored_errors
from engine.services.exports import CsvExport, export_formats
from webui import db_session, runtime

bp = Blueprint("plugins", __name__)

ERRORS_PER_PAGE = 50


def init_app(app: Flask) -> None:
    """Register this blueprint, then each plugin's blueprints (guarded), the header's plugin
    links and the ``field_input`` used by generated forms."""
    from webui.forms import field_input

    app.register_blueprint(bp)
    app.jinja_env.globals["field_input"] = field_input
    app.jinja_env.globals["plugin_export_formats"] = lambda: runtime().plugins.export_formats()
    host = app.extensions["tracker"].plugins
    for plugin, blueprint in host.blueprints():
        try:
            _guard(blueprint, plugin)
            app.register_blueprint(blueprint)
        except Exception as exc:  # noqa: BLE001 - e.g. a name another blueprint has
            host.errors.record(plugin, "tracker_blueprints", exc)

    @app.context_processor
    def plugin_links() -> dict:
        def links() -> list:
            if not current_user.is_authenticated:
                return []
            return runtime().plugins.menu_links(current_user.actor)

        return {"plugin_menu_links": links}


def _guard(blueprint: Blueprint, plugin: str) -> None:
    """Answer an unexpected exception from the blueprint's views with an error page, and record
    it. Engine errors (a refused permission, a bad value) and HTTP errors are answered as the
    app answers them, and are not the plugin's fault."""
    if getattr(blueprint, "_tracker_guarded", False):
        return

    def failed(exc: Exception):
        # a blueprint's handler is asked before the app's, so the errors the app answers come back here
        if isinstance(exc, HTTPException):
            return exc
        if isinstance(exc, TrackerError):
            return render_template("error.html", error=exc), exc.status
        current_app.extensions["tracker"].plugins.errors.record(plugin, f"page {request.endpoint}", exc)
        return render_template(
            "error.html",
            error=None,
            title="This page is not working",
            message=f"The '{plugin}' plugin failed to show this page. The error is recorded for the administrators.",
        ), 500

    blueprint.register_error_handler(Exception, failed)
    blueprint._tracker_guarded = True  # type: ignore[attr-defined]


# -- the admin page --------------------------------------------------------------------------------


def _admin_only() -> None:
    if not permissions.allows(current_user.actor, "users.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not see the plugins page.",
            "This needs the 'users.admin' capability; ask an administrator.",
        )


@bp.get("/admin/plugins")
@login_required
def plugins_page():
    """Every plugin (version, status, hooks) and the errors plugins raised, newest first."""
    _admin_only()
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    rows, total = stored_errors(db_session(), limit=ERRORS_PER_PAGE, offset=(page - 1) * ERRORS_PER_PAGE)
    pages = max(math.ceil(total / ERRORS_PER_PAGE), 1)
    return render_template(
        "plugins/admin.html",
        infos=runtime().plugins.info(),
        errors=rows,
        total=total,
        page=page,
        pages=pages,
    )


@bp.post("/admin/plugins/errors/clear")
@login_required
def clear():
    _admin_only()
    count = clear_errors(db_session(), current_user.actor, request.remote_addr or "")
    flash(f"{count} plugin error{'' if count == 1 else 's'} cleared.", "info")
    return redirect(url_for("plugins.plugins_page"))


@bp.app_context_processor
def admin_link() -> dict:
    return {
        "can_see_plugins": bool(current_user.is_authenticated and permissions.allows(current_user.actor, "users.admin"))
    }


# -- export formats --------------------------------------------------------------------------------


def in_requested_format(export: CsvExport) -> CsvExport:
    """``export`` in the format ``?format=`` names (CSV when none). Raises NotFound naming the
    formats there are for an unknown one."""
    key = request.args.get("format", "").strip() or "csv"
    formats = export_formats(runtime().plugins.export_formats())
    if key not in formats:
        raise NotFound(f"There is no export format '{key}'.", f"Use one of: {', '.join(formats)}.")
    return export.in_format(formats[key])


# -- lookups ---------------------------------------------------------------------------------------


@bp.get("/lookups/<name>")
def lookup(name: str):
    """``{"results": [{"label", "values"}], "message"}``. 404 for an unknown lookup, 422 for a
    query it cannot answer, 503 when the service behind it is down, 502 when the plugin failed
    (recorded); every answer is JSON, so the form can say what happened."""
    if not current_user.is_authenticated:
        return {"results": [], "message": "Sign in again to use lookups."}, 401
    if not permissions.may_fill_forms(current_user.actor, runtime().registry):
        return {"results": [], "message": f"{current_user.username} may not use lookups: they fill in no forms."}, 403
    host = runtime().plugins
    found = host.lookups().get(name)
    if found is None:
        return {"results": [], "message": f"There is no lookup '{name}'.", "advice": "Type the details in."}, 404
    plugin, fn = found
    params = {k: v.strip() for k, v in request.args.items()}
    try:
        results = fn(params) or []
        body = {"results": [r.as_dict() for r in results]}
        if not results:
            body["message"] = "Nothing was found."
        return body, 200, {"Cache-Control": "no-store"}
    except Invalid as exc:
        return {"results": [], "message": exc.message, "advice": exc.advice}, 422
    except LookupUnavailable as exc:
        return {"results": [], "message": exc.message, "advice": "Type the details in; you can still save."}, 503
    except Exception as exc:  # noqa: BLE001 - a failing plugin never takes the request down
        host.errors.record(plugin, f"lookup {name}", exc)
        return {
            "results": [],
            "message": "The lookup failed.",
            "advice": "Type the details in; you can still save. The error is recorded for the administrators.",
        }, 502
