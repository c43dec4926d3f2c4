"""Notifications in the browser: the inbox (and the bell on every page), notification
preferences, watching items, the dead-letter page for admins, and ``/health``.

The rules live in :mod:`engine.notifications` and :mod:`engine.outbox`; these routes
read forms, call them and render the answer. Every change is a CSRF-checked POST.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select, text

from engine import outbox, permissions
from engine.errors import PermissionDenied, ValidationFailed
from engine.models import Item, User
from engine.notifications import EVENTS, Inbox, Preferences
from webui import db_session, runtime

bp = Blueprint("inbox", __name__)

PER_PAGE = 25


def _inbox() -> Inbox:
    return Inbox(db_session(), int(current_user.id))


@bp.app_context_processor
def bell() -> dict:
    """``inbox_unread()`` for the bell in the header, ``dead_letters()`` (admins only) beside
    it, and ``is_watching(item_id)`` for the watch button; each queries only when called."""

    def inbox_unread() -> int:
        return _inbox().unread_count() if current_user.is_authenticated else 0

    def is_watching(item_id: int) -> bool:
        if not current_user.is_authenticated:
            return False
        return runtime().items(db_session(), current_user.actor).is_watching(item_id)

    def dead_letters() -> int:
        if not current_user.is_authenticated or not permissions.allows(current_user.actor, "users.admin"):
            return 0
        return outbox.counts(db_session())["dead"]

    return {"inbox_unread": inbox_unread, "is_watching": is_watching, "dead_letters": dead_letters}


@bp.app_context_processor
def environment() -> dict:
    """``training_banner()`` for the top of every page: the TRAINING warning, empty on LIVE."""
    from engine import training

    return {"training_banner": lambda: training.banner(runtime())}


# -- the inbox ---------------------------------------------------------------------------------


@bp.get("/inbox")
@login_required
def inbox():
    unread_only = request.args.get("show") == "unread"
    page = request.args.get("page", "1")
    page = int(page) if page.isdigit() and int(page) >= 1 else 1
    box = _inbox()
    entries, total = box.entries(limit=PER_PAGE, offset=(page - 1) * PER_PAGE, unread_only=unread_only)
    pages = max(1, -(-total // PER_PAGE))
    if page > pages:
        abort(404)
    return render_template(
        "inbox.html",
        entries=entries,
        total=total,
        unread=box.unread_count(),
        unread_only=unread_only,
        page=page,
        pages=pages,
    )


@bp.get("/inbox/<int:notification_id>")
@login_required
def open_entry(notification_id: int):
    """Mark the notification read and open the item it is about."""
    entry = _inbox().mark_read(notification_id)
    link = entry.link if entry.link.startswith("/") and not entry.link.startswith("//") else None
    return redirect(link or url_for("inbox.inbox"))


@bp.post("/inbox/<int:notification_id>/read")
@login_required
def mark_read(notification_id: int):
    _inbox().mark_read(notification_id)
    return redirect(_back())


@bp.post("/inbox/read-all")
@login_required
def mark_all_read():
    count = _inbox().mark_all_read()
    flash(
        f"{count} notification{'' if count == 1 else 's'} marked as read." if count else "Nothing was unread.", "info"
    )
    return redirect(url_for("inbox.inbox"))


def _back() -> str:
    """Back to the inbox page the form was on (only inbox addresses are accepted)."""
    target = request.form.get("next", "")
    return target if target.startswith("/inbox") and not target.startswith("//") else url_for("inbox.inbox")


# -- preferences -------------------------------------------------------------------------------


@bp.route("/preferences", methods=["GET", "POST"])
@login_required
def preferences():
    channels = runtime().channels()
    prefs = Preferences(db_session(), int(current_user.id), channels)
    problems: list = []
    status = 200
    if request.method == "POST":
        enabled = {
            event: request.form.getlist(event) for event in request.form if event not in ("csrf_token", "digest")
        }
        for event in EVENTS:
            enabled.setdefault(event, [])
        try:
            prefs.save(enabled, digest=request.form.get("digest") == "on")
        except ValidationFailed as exc:
            problems, status = exc.problems, 400
        else:
            flash("Your notification preferences are saved.", "info")
            return redirect(url_for("inbox.preferences"))
    user = db_session().get(User, int(current_user.id))
    return render_template(
        "preferences.html",
        events=EVENTS,
        channels=channels,
        chosen=prefs.get(),
        problems=problems,
        email_ready=bool(runtime().settings.smtp_url),
        has_email=bool(user and user.email),
        digest_hour=runtime().settings.digest_hour,
    ), status


# -- watching ----------------------------------------------------------------------------------


@bp.post("/items/<int:item_id>/watch")
@login_required
def watch(item_id: int):
    runtime().items(db_session(), current_user.actor).watch(item_id)
    flash("You are watching this item: you will hear about its changes.", "info")
    return redirect(url_for("items.item", item_id=item_id))


@bp.post("/items/<int:item_id>/unwatch")
@login_required
def unwatch(item_id: int):
    runtime().items(db_session(), current_user.actor).unwatch(item_id)
    flash("You no longer watch this item.", "info")
    return redirect(url_for("items.item", item_id=item_id))


# -- dead letters, for admins ------------------------------------------------------------------


def _require_admin() -> None:
    if not permissions.allows(current_user.actor, "users.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not see undelivered notifications.",
            "This needs the 'users.admin' capability; ask an administrator.",
        )


@bp.get("/admin/outbox")
@login_required
def dead_letters():
    _require_admin()
    session = db_session()
    rows = outbox.listing(session, "dead", limit=200)
    titles = {}
    ids = [r.item_id for r in rows if r.item_id]
    if ids:
        titles = dict(session.execute(select(Item.id, Item.title).where(Item.id.in_(ids))).all())
    return render_template("outbox_admin.html", rows=rows, titles=titles, counts=outbox.counts(session))


@bp.post("/admin/outbox/<int:outbox_id>/retry")
@login_required
def retry(outbox_id: int):
    _require_admin()
    session = db_session()
    row = outbox.retry(session, outbox_id, current_user.actor)
    session.refresh(row)  # without Redis it went out right after the commit
    if row.status == "done":
        flash(f"Message #{outbox_id} was delivered.", "info")
    elif row.status == "dead":
        flash(f"Message #{outbox_id} failed again: {row.last_error}", "error")
    else:
        flash(f"Message #{outbox_id} is back in line and will be delivered shortly.", "info")
    return redirect(url_for("inbox.dead_letters"))


# -- health ------------------------------------------------------------------------------------


@bp.get("/health")
def health():
    """For load balancers and monitoring, no sign-in, JSON: 503 (``status`` ``down``) when the
    database does not answer; otherwise 200, ``status`` ``degraded`` when Redis is configured but
    does not answer (saves go on; their notifications wait in the outbox until it is back), with
    dead letters or plugin errors, else ``ok``. ``outbox.pending`` is the backlog."""
    no_store = {"Cache-Control": "no-store"}
    body: dict = {"status": "ok"}
    try:
        session = db_session()
        session.execute(text("SELECT 1"))
        body["database"] = {"ok": True}
        body["outbox"] = outbox.counts(session)
    except Exception:  # noqa: BLE001 - reported, never raised
        return {"status": "down", "database": {"ok": False}}, 503, no_store
    if runtime().settings.environment == "training":
        body["environment"] = "training"
    if body["outbox"]["dead"]:
        body["status"] = "degraded"
    plugins = _plugin_health(session)
    if plugins["failed"] or plugins["errors_24h"]:
        body["plugins"], body["status"] = plugins, "degraded"
    url = runtime().settings.redis_url
    if url:
        from redis import Redis

        try:  # a load balancer asks often and waits briefly: answer within a few seconds
            Redis.from_url(url, socket_connect_timeout=1, socket_timeout=2).ping()
            body["redis"] = {"ok": True}
        except Exception:  # noqa: BLE001 - a web process without Redis still serves: not a reason to take it out
            body["redis"] = {"ok": False}
            body["status"] = "degraded"
    return body, 200, no_store


def _plugin_health(session) -> dict:
    """Plugins that failed to load and plugin errors of the last 24 hours (shown only when
    there are any: see /admin/plugins)."""
    from engine.plugins import recent_error_count

    failed = [i.name for i in runtime().plugins.info() if i.status == "failed"]
    return {"ok": False, "failed": failed, "errors_24h": recent_error_count(session)}
