"""The audit log page for user administrators: ``/admin/audit``, newest first, a page at a
time, filtered by kind (or group of kinds), user and date range. The rows are written by the
engine's services (see :mod:`engine.audit`); this page only reads them."""

from __future__ import annotations

import math
from datetime import date

from flask import Blueprint, render_template, request
from flask_login import current_user

from engine import audit, permissions
from engine.errors import PermissionDenied
from webui import db_session
from webui.auth import login_manager

bp = Blueprint("audit", __name__, url_prefix="/admin")

PER_PAGE = 50


@bp.before_request
def only_user_admins():
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not permissions.allows(current_user.actor, "users.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not read the audit log.",
            "This needs the 'users.admin' capability; ask an administrator.",
        )
    return None


def _day(name: str, problems: list[str]) -> date | None:
    text = request.args.get(name, "").strip()
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        problems.append(f"'{text}' is not a date: write it as YYYY-MM-DD, e.g. 2025-08-01.")
        return None


@bp.get("/audit")
def audit_page():
    problems: list[str] = []
    kind = request.args.get("kind", "").strip()
    if kind and kind not in audit.KINDS and kind not in audit.kind_groups():
        problems.append(f"There is no kind of entry '{kind}': pick one from the list.")
        kind = ""
    flt = audit.AuditFilter(
        kind=kind,
        username=request.args.get("user", "").strip(),
        since=_day("since", problems),
        until=_day("until", problems),
    )
    page = max(request.args.get("page", 1, type=int) or 1, 1)
    rows, total = audit.entries(db_session(), flt, limit=PER_PAGE, offset=(page - 1) * PER_PAGE)
    pages = max(math.ceil(total / PER_PAGE), 1)
    args = {k: v for k, v in request.args.items() if k != "page" and v}
    return render_template(
        "audit/list.html",
        rows=rows,
        total=total,
        page=page,
        pages=pages,
        args=args,
        flt=flt,
        kinds=audit.KINDS,
        groups=audit.kind_groups(),
        describe=audit.describe,
        problems=problems,
    ), (400 if problems else 200)


@bp.app_context_processor
def audit_link() -> dict[str, bool]:
    return {
        "can_read_audit": bool(current_user.is_authenticated and permissions.allows(current_user.actor, "users.admin"))
    }
