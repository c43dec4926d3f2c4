"""Process automation pages: the panel on an automation's item page (its latest runs, when
it runs next, the "Run now (dry run)" button) and the dry run itself, which lists the items
a run would touch and what it would do to each, changing nothing."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user, login_required

from engine.automation import ACTIVE_STATE, Spec
from engine.models import Item
from engine.services.automation import AutomationService, automation_item
from webui import db_session, runtime

bp = Blueprint("automations", __name__)


def _service() -> AutomationService:
    rt = runtime()
    return AutomationService(db_session(), rt.registry, zone=rt.settings.timezone)


@bp.get("/automations/<int:item_id>/dry-run")
@login_required
def dry_run(item_id: int):
    """What the automation would do if it ran now; nothing is changed or recorded."""
    rt = runtime()
    item = automation_item(db_session(), rt.registry, current_user.actor, item_id)
    preview = _service().preview(item)
    return render_template("automations/dry_run.html", item=item, preview=preview)


@bp.app_context_processor
def _panel() -> dict:
    """``automation_panel(item)`` in templates: for an automation, its trigger in words, the
    next scheduled run and its latest runs; None for any other item."""

    def automation_panel(item: Item) -> dict | None:
        tracker_type = runtime().registry.types.get(item.type_key)
        if tracker_type is None or tracker_type.kind != "automation":
            return None
        service = _service()
        spec = Spec.of(item)
        return {
            "spec": spec,
            "active": item.status == ACTIVE_STATE,
            "next_run": service.next_run(spec) if item.status == ACTIVE_STATE else None,
            "runs": service.runs(item.id, limit=10),
            "zone": runtime().settings.timezone,
        }

    return {"automation_panel": automation_panel}
