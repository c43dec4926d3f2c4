"""The item page: where notification links land. Shows the item and its history."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from engine.cli import describe_event
from webui import db_session, runtime

bp = Blueprint("items", __name__)


@bp.route("/items/<int:item_id>")
@bp.route("/items/<int:item_id>/edit", endpoint="edit_item")
@login_required
def item(item_id: int):
    service = runtime().items(db_session(), current_user.actor)
    found = service.get(item_id)
    tracker_type, workflow = service.type_of(found), service.workflow_of(found)
    events = service.history(item_id)
    laid_out = {f for s in tracker_type.layout for f in s.fields}
    rest = [name for name in (tracker_type.schema.get("properties") or {}) if name not in laid_out]
    return render_template(
        "item.html",
        item=found,
        type=tracker_type,
        workflow=workflow,
        state=workflow.state(found.status),
        events=[(e, describe_event(e)) for e in events],
        other_fields=rest,
        transitions=service.available_transitions(found),
    )
