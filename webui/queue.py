"""The Queue: unassigned items of the types whose ``assignment`` rule is a queue for one of
the user's roles, oldest first, each with a Claim button. Claiming goes through
:class:`engine.assignment.QueueService`: of two people claiming the same item at once one
gets it, the other sees who did (409) and the queue as it is now."""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required

from engine.assignment import QueueService
from engine.errors import Conflict, NotFound, ValidationFailed
from webui import db_session, runtime
from webui.lists import Page

bp = Blueprint("queue", __name__)


def _queues() -> QueueService:
    return QueueService(runtime().items(db_session(), current_user.actor))


def _number(value: str | None) -> int:
    try:
        return max(1, int(value or 1))
    except ValueError:
        return 1


@bp.get("/queue")
@login_required
def queue_page(error: Conflict | None = None, status: int = 200):
    """The items waiting in the user's queues, one type or all, a page at a time."""
    queues = _queues()
    types = queues.queue_types()
    type_key = request.args.get("type") or None
    per_page = current_app.config["ITEMS_PER_PAGE"]
    number = _number(request.args.get("page"))
    try:
        found, total = queues.waiting(type_key=type_key, limit=per_page, offset=(number - 1) * per_page)
    except ValidationFailed as exc:  # a queue named in the address that is not theirs: no such page
        [problem] = exc.problems
        raise NotFound(f"{problem.message}.", problem.advice) from None
    count = max(1, -(-total // per_page))
    if number > count:
        number = count
        found, total = queues.waiting(type_key=type_key, limit=per_page, offset=(number - 1) * per_page)
    names = {t.key: t for t in types}

    def url(**changes):
        args = {"type": type_key, "page": number, **changes}
        return url_for("queue.queue_page", **{k: v for k, v in args.items() if v not in (None, 1)})

    return render_template(
        "queue/queue.html",
        types=types,
        names=names,
        counts=queues.counts(),
        type_key=type_key,
        page=Page(found, total, number, count),
        url=url,
        error=error,
    ), status


@bp.post("/queue/<int:item_id>/claim")
@login_required
def claim(item_id: int):
    """Take the item: it is assigned to the user, who goes to it; a lost race comes back as 409."""
    try:
        item = _queues().claim(item_id)
    except Conflict as exc:
        db_session().rollback()
        return queue_page(error=exc, status=exc.status)
    flash(f"#{item.id} {item.title} is yours now.", "info")
    return redirect(url_for("items.item", item_id=item.id), 303)


@bp.app_context_processor
def _queue_link() -> dict:
    """``queue_count()`` in templates: None when the user serves no queue (no menu link),
    else how many items wait."""

    def queue_count() -> int | None:
        if not current_user.is_authenticated:
            return None
        queues = _queues()
        if not queues.queue_types():
            return None
        return sum(queues.counts().values())

    return {"queue_count": queue_count}
