"""A plugin's notification channel failing in ``ready`` or ``address``: the error is recorded
as the plugin's (log, ``plugin_errors``, the admin page), the channel is left out for that
recipient, and every other recipient and channel still gets the notice."""

from __future__ import annotations

from sqlalchemy import select

from engine.hookspecs import hookimpl
from engine.models import Delivery, Notification, Outbox, User
from engine.notifications import Channel
from engine.plugins import stored_errors
from tests.plugin_helpers import *  # noqa: F403 - fixtures
from tests.plugin_helpers import host_of


class Pager(Channel):
    """Sends to a list; ``ready`` and ``address`` break as a test asks."""

    key, label = "pager", "Pager"

    def __init__(self, *, broken_ready: bool = False, broken_for: str = "") -> None:
        self.broken_ready = broken_ready
        self.broken_for = broken_for
        self.sent: list[str] = []

    def ready(self, ctx) -> bool:
        if self.broken_ready:
            raise RuntimeError("the pager account setting is unreadable")
        return True

    def address(self, user) -> str | None:
        if user.username == self.broken_for:
            raise KeyError(f"no pager profile for {user.username}")
        return f"pager:{user.username}"

    def send(self, ctx, delivery, user, message) -> None:
        self.sent.append(user.username)


class PagerPlugin:
    def __init__(self, channel: Pager) -> None:
        self.channel = channel

    @hookimpl
    def tracker_notification_channels(self):
        return [self.channel]


def notice_to_two(rt) -> int:
    """Users ann and bob, and one committed notice to both; the relay delivers it on commit."""
    with rt.session() as session:
        users = rt.users(session)
        ids = [users.create(name, ["assessor"], email=None)[0].id for name in ("ann", "bob")]
        row = Outbox(
            kind="notify",
            idempotency_key="test:notice",
            payload={"reason": "assigned", "recipients": ids, "text": "Please look at this"},
        )
        session.add(row)
        session.commit()
        return row.id


def inboxes(session, outbox_id: int) -> set[str]:
    return set(
        session.scalars(
            select(User.username)
            .join(Notification, Notification.user_id == User.id)
            .where(Notification.outbox_id == outbox_id)
        )
    )


def test_a_channel_whose_ready_raises_is_recorded_and_every_recipient_still_gets_the_notice(runtime_with):
    pager = Pager(broken_ready=True)
    rt = runtime_with(host_of(("pager", PagerPlugin(pager))))
    outbox_id = notice_to_two(rt)
    with rt.session() as session:
        assert inboxes(session, outbox_id) == {"ann", "bob"}
        row = session.get(Outbox, outbox_id)
        assert row.status == "done" and not row.last_error
        assert session.scalars(select(Delivery).where(Delivery.channel == "pager")).all() == []
    assert pager.sent == []
    recorded = [(e.plugin, e.hook, e.message) for e in rt.plugins.errors.recent]
    assert ("pager", "channel pager ready", "RuntimeError: the pager account setting is unreadable") in recorded
    assert rt.plugins.errors.flush(10)
    with rt.session() as session:
        rows, total = stored_errors(session)
    assert total == 1 and (rows[0].plugin, rows[0].hook) == ("pager", "channel pager ready")
    assert "the pager account setting is unreadable" in rows[0].detail


def test_a_channel_whose_address_raises_leaves_out_only_that_recipient(runtime_with):
    pager = Pager(broken_for="ann")
    rt = runtime_with(host_of(("pager", PagerPlugin(pager))))
    outbox_id = notice_to_two(rt)
    with rt.session() as session:
        assert inboxes(session, outbox_id) == {"ann", "bob"}
        assert session.get(Outbox, outbox_id).status == "done"
        pagers = {
            name: status
            for name, status in session.execute(
                select(User.username, Delivery.status)
                .join(Delivery, Delivery.user_id == User.id)
                .where(Delivery.channel == "pager")
            )
        }
    assert pagers == {"bob": "sent"} and pager.sent == ["bob"]
    [error] = [e for e in rt.plugins.errors.recent if e.plugin == "pager"]
    assert error.hook == "channel pager address" and "no pager profile for ann" in error.message
    assert rt.plugins.errors.flush(10)
    with rt.session() as session:
        assert stored_errors(session)[1] == 1
