"""A learner's qualifications: the list on the learner page, and changing a qualification's
anticipated award date with the history of that date.

Qualifications are items of the built-in ``qualification`` type (about a learner, one per
learner and QAN), so they are added on the ordinary create page, through the API
(``POST /api/v1/items``), with ``tracker items create`` or in bulk with ``tracker import
qualification FILE`` / the import page; every change goes through the item service.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from engine import permissions
from engine.definitions.model import State
from engine.errors import Conflict, NotFound, Problem, ValidationFailed
from engine.models import Item
from engine.services import ItemService
from engine.services.imports import coerce
from webui import db_session, runtime

bp = Blueprint("qualifications", __name__)

TYPE_KEY = "qualification"
FIELD = "anticipated_award_date"
POINTER = "/" + FIELD


@dataclass
class QualificationRow:
    item: Item
    state: State | None
    data: dict
    level: str
    may_edit: bool


@dataclass
class DateChange:
    """One value the anticipated award date had: set (or changed, or cleared) by whom, when."""

    at: datetime
    who: str
    old: str | None
    new: str | None


def for_learner(service: ItemService, items: list[Item]) -> dict:
    """What the learner page shows of ``items`` (everything about the learner the user may
    see): the qualifications, soonest anticipated award first, and whether the user may add one."""
    tracker_type = service.registry.types.get(TYPE_KEY)
    if tracker_type is None:
        return {"rows": [], "may_add": False}
    levels = {o.get("const"): o.get("title") for o in tracker_type.schema["properties"]["level"].get("oneOf", ())}
    rows = []
    for item in items:
        if item.type_key != TYPE_KEY:
            continue
        data = service.visible_data(item)
        rows.append(
            QualificationRow(
                item,
                service.workflow_of(item).state(item.status),
                data,
                levels.get(data.get("level"), data.get("level") or ""),
                permissions.allows(service.actor, "items.edit", service.type_of(item), item),
            )
        )
    rows.sort(key=lambda r: (r.data.get(FIELD) or "9999", r.item.id))
    return {"rows": rows, "may_add": service.may_create(tracker_type)}


def date_history(service: ItemService, item_id: int) -> list[DateChange]:
    """Every value the item's anticipated award date has had, oldest first."""
    changes = []
    for event in service.history(item_id):
        who = event.actor.label if event.actor else "system"
        if event.kind == "created" and (event.payload.get("data") or {}).get(FIELD):
            changes.append(DateChange(event.at, who, None, event.payload["data"][FIELD]))
        for change in event.payload.get("changes", ()) if event.kind == "updated" else ():
            if change.get("path") == POINTER:
                changes.append(DateChange(event.at, who, change.get("old"), change.get("new")))
    return changes


def _qualification(service: ItemService, item_id: int) -> Item:
    item = service.get(item_id)
    if item.type_key != TYPE_KEY:
        raise NotFound(f"Item #{item_id} is not a qualification.", "Open the qualification from the learner's page.")
    return item


@bp.route("/qualifications/<int:item_id>/award-date", methods=["GET", "POST"])
@login_required
def award_date(item_id: int):
    """Change the anticipated award date (as on the awarding body's learner record): the
    current date, a form, and every earlier value with who set it and when."""
    service = runtime().items(db_session(), current_user.actor)
    item = _qualification(service, item_id)
    problems: list[Problem] = []
    value = item.data.get(FIELD) or ""
    status = 200
    if request.method == "POST":
        value = request.form.get(FIELD, "").strip()
        version = request.form.get("version", "")
        try:
            saved = service.update(
                item_id,
                changes={FIELD: coerce(value, {"type": "string", "format": "date"})},
                expected_version=int(version) if version.isdigit() else None,
            )
        except Conflict as exc:
            problems, status = [Problem(POINTER, exc.message, exc.advice)], 409
            item = _qualification(service, item_id)
        except ValidationFailed as exc:
            problems, status = exc.problems, exc.status
            item = _qualification(service, item_id)
        else:
            new = saved.data.get(FIELD)
            flash(
                f"The anticipated award date of {saved.title} is now {new}."
                if new
                else f"The anticipated award date of {saved.title} is cleared.",
                "info",
            )
            target = url_for("lists.learner", learner_id=saved.subject_id) if saved.subject_id else None
            return redirect(target or url_for("qualifications.award_date", item_id=item_id), 303)
    state = service.workflow_of(item).state(item.status)
    return render_template(
        "qualifications/award_date.html",
        item=item,
        state=state,
        value=value,
        problems=problems,
        history=date_history(service, item_id),
        may_edit=permissions.allows(service.actor, "items.edit", service.type_of(item), item),
    ), status
