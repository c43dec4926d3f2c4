"""Reminders before dates in items come up (``reminders:`` in type.yaml).

:func:`send_due_reminders` runs from ``tracker scheduler``. For each reminder of each
type it finds the open items whose date is within ``before`` of today and not past, and
writes a ``notify`` outbox row together with a :class:`~engine.models.SentReminder`
keyed by item, reminder and date, in one transaction. The key makes a reminder go once
per item and date, across scheduler restarts and with several schedulers; when the date
in the item changes, the new date is a new key, so it is reminded again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.definitions.model import Registry, Reminder, TrackerType
from engine.models import Item, Outbox, SentReminder
from engine.notifications import recipients
from engine.services.items import item_link
from engine.validation import humanize_label, schema_at

log = logging.getLogger(__name__)


def send_due_reminders(session: Session, registry: Registry, today: date | Callable[[], date] = date.today) -> int:
    """Write the outbox rows for every reminder due ``today``; returns how many were written.

    Items in a state of category ``done`` or ``cancelled`` get no reminders; neither do
    dates already past, nor reminders whose recipients are nobody yet (they are sent
    once someone is, while the date is still ahead).
    """
    day = today() if callable(today) else today
    written = 0
    for tracker_type in registry.types.values():
        if not tracker_type.reminders:
            continue
        open_states = registry.workflow_for(tracker_type).states_in(["open"])
        for reminder in tracker_type.reminders:
            written += _send(session, tracker_type, reminder, open_states, day)
    return written


def _send(session: Session, tracker_type: TrackerType, reminder: Reminder, open_states: list[str], day: date) -> int:
    value = Item.data[tuple(reminder.field.split("."))].as_string()
    last = day + timedelta(days=reminder.days)
    candidates = session.execute(
        select(Item.id, value)
        .where(
            Item.type_key == tracker_type.key,
            Item.status.in_(open_states),
            value >= day.isoformat(),
            value <= last.isoformat(),
        )
        .order_by(Item.id)
    ).all()
    if not candidates:
        return 0
    sent = {
        (item_id, on)
        for item_id, on in session.execute(
            select(SentReminder.item_id, SentReminder.on_date).where(
                SentReminder.reminder == reminder.key, SentReminder.item_id.in_([c[0] for c in candidates])
            )
        )
    }
    written = 0
    for item_id, raw in candidates:
        on = _as_date(raw)
        if on is None or (item_id, on) in sent:
            continue
        item = session.get(Item, item_id)
        user_ids = recipients(session, item, reminder.notify)
        if not user_ids:
            continue
        session.add(SentReminder(item_id=item_id, reminder=reminder.key, on_date=on))
        session.add(
            Outbox(
                kind="notify",
                item_id=item_id,
                idempotency_key=f"reminder:{item_id}:{reminder.key}:{on.isoformat()}",
                payload={
                    "reason": "reminder",
                    "recipients": sorted(set(user_ids)),
                    "text": _text(tracker_type, reminder, item, on, day),
                    "link": item_link(item_id),
                    "item_id": item_id,
                },
            )
        )
        try:
            session.commit()
        except IntegrityError:  # another scheduler sent it at the same moment
            session.rollback()
            continue
        written += 1
    return written


def _text(tracker_type: TrackerType, reminder: Reminder, item: Item, on: date, day: date) -> str:
    label = (schema_at(tracker_type.schema, reminder.field) or {}).get("title") or humanize_label(
        reminder.field.split(".")[-1]
    )
    days = (on - day).days
    when = "today" if days == 0 else "tomorrow" if days == 1 else f"in {days} days"
    return f"Reminder: {label} of {item.title} is {when} ({on.day} {on:%B %Y})"


def _as_date(value: object) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None
