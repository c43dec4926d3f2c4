"""Lists: tracker types with counts, a paginated list per type."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, request
from flask_login import current_user, login_required
from sqlalchemy import func, select

from engine import permissions
from engine.models import Item
from engine.validation import choices, get_path, humanize_label, schema_at
from webui import db_session, runtime

bp = Blueprint("lists", __name__)


@bp.app_template_filter("field_label")
def field_label(name: str, tracker_type) -> str:
    sub = schema_at(tracker_type.schema, name) or {}
    return sub.get("title") or humanize_label(name.split(".")[-1])


@bp.app_template_filter("field_value")
def field_value(data: dict, name: str, tracker_type=None):
    value = get_path(data, name)
    if value is None or value == "":
        return "—"
    sub = (schema_at(tracker_type.schema, name) if tracker_type else None) or {}
    options = choices(sub)
    if options:
        return next((label for v, label in options if v == value), value)
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return value


@bp.route("/")
@login_required
def index():
    registry = runtime().registry
    session = db_session()
    actor = current_user.actor
    rows = []
    for t in sorted(registry.types.values(), key=lambda t: (t.kind != "subject", t.name)):
        if not permissions.allows(actor, "items.view", t):
            continue
        wf = registry.workflow_for(t)
        stmt = (
            select(Item.status, func.count())
            .where(Item.type_key == t.key, permissions.visible_clause(actor, t))
            .group_by(Item.status)
        )
        counts = dict(session.execute(stmt).all())
        rows.append(
            {
                "type": t,
                "total": sum(counts.values()),
                "states": [(s, counts.get(s.key, 0)) for s in wf.states],
            }
        )
    return render_template("index.html", rows=rows)


@bp.route("/types/<key>")
@login_required
def type_items(key: str):
    per_page = current_app.config["ITEMS_PER_PAGE"]
    page = max(request.args.get("page", 1, type=int), 1)
    service = runtime().items(db_session(), current_user.actor)
    tracker_type = runtime().registry.type(key)
    found, total = service.list(key, limit=per_page, offset=(page - 1) * per_page)
    pages = max((total + per_page - 1) // per_page, 1)
    if page > pages:
        abort(404)
    workflow = runtime().registry.workflow_for(tracker_type)
    return render_template(
        "type_items.html", type=tracker_type, workflow=workflow, items=found, total=total, page=page, pages=pages
    )
