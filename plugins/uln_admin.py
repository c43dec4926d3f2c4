"""The ULN lookup's admin page: where searches go (never the password) and a connection test.

The endpoint and credentials are configuration (``TRACKER_PLUGIN_ULN_*``), so the page shows
them and which variables to set; "Test connection" sends one search for a learner nobody has
and reports whether the Learning Records Service answered, refused the credentials or could
not be reached. Only holders of ``users.admin`` see it.
"""

from __future__ import annotations

from datetime import date

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user

from engine import permissions
from engine.errors import PermissionDenied
from plugins import uln
from plugins.jsonhttp import ServiceUnavailable
from webui import runtime
from webui.auth import login_manager

bp = Blueprint("uln_admin", __name__, url_prefix="/admin/uln")

#: who the connection test looks for: a learner no register holds, so the answer is "no match"
TEST_LEARNER = uln.Demographics("Connection", "Test", date(1900, 1, 1))

#: the settings the page explains, with what each is for
SETTINGS = (
    ("URL", "the service's base URL; searches go to <URL>/learners/find-by-demographics"),
    ("USERNAME", "the LRS web-service user name"),
    ("PASSWORD", "the organisation password (never shown here)"),
    ("UKPRN", "your provider's UK provider reference number"),
    ("TIMEOUT", f"seconds to wait for an answer (default {uln.DEFAULT_TIMEOUT:g})"),
)


@bp.before_request
def only_admins():
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not permissions.allows(current_user.actor, "users.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not see the ULN lookup settings.",
            "This needs the 'users.admin' capability; ask an administrator.",
        )
    return None


@bp.get("")
def settings_page():
    client = uln.client_from(runtime().settings)
    return render_template(
        "plugins/uln_admin.html",
        endpoint=client.describe() if client is not None else None,
        settings=SETTINGS,
        prefix=f"TRACKER_PLUGIN_{uln.NAME.upper()}_",
    )


@bp.post("/test")
def test_connection():
    client = uln.client_from(runtime().settings)
    if client is None:
        flash("There is nothing to test: set TRACKER_PLUGIN_ULN_URL first (see below).", "error")
        return redirect(url_for("uln_admin.settings_page"), 303)
    try:
        found = client.find(TEST_LEARNER)
    except ServiceUnavailable as exc:
        flash(
            f"The connection failed: the Learning Records Service {exc.reason}. Check the URL and try again.", "error"
        )
    except uln.UlnRefused as exc:
        flash(f"The service answered but refused the search: {exc}", "error")
    else:
        flash(f"The connection works: the Learning Records Service answered ({found.code}).", "info")
    return redirect(url_for("uln_admin.settings_page"), 303)
