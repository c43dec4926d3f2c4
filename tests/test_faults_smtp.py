"""The SMTP server down or refusing, against an aiosmtpd server of the test's own: deliveries
are retried with backoff and go when it is back; a message that never goes is dead-lettered
after the last retry and goes once when an admin retries it; each recipient gets exactly one
e-mail per notification (counted in the server's mailbox) and one inbox entry, which never
waits for SMTP."""

from __future__ import annotations

from collections import Counter

from sqlalchemy import select

from engine import health
from engine.models import Delivery, Notification, Outbox
from engine.outbox import RetryPolicy, counts, retry
from engine.permissions import Actor
from engine.runtime import Runtime
from tests.faults import *  # noqa: F403 - fixtures
from tests.notify_helpers import Clock, make_settings, people, service

POLICY = RetryPolicy(max=3, intervals=(10, 60, 300))


def _runtime(tmp_path, db_url, mailbox) -> Runtime:
    return Runtime(make_settings(tmp_path, db_url, smtp_url=mailbox.url))


def _notify_rows(rt: Runtime) -> list[Outbox]:
    with rt.session() as session:
        return list(session.scalars(select(Outbox).where(Outbox.kind == "notify").order_by(Outbox.id)))


def _held_with_three_recipients(rt: Runtime, topic: str) -> int:
    """A meeting alice created and bob and carol watch, marked held: alice (the creator) and the
    two watchers are told, each by inbox and e-mail."""
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": topic})
    for watcher in ("bob", "carol"):
        with rt.session() as session:
            service(rt, session, watcher).watch(item.id)
    with rt.session() as session:
        service(rt, session, "bob").transition(item.id, "held")
    return item.id


def _expected_emails(rt: Runtime) -> set[str]:
    """The Message-ID of every e-mail delivery on record: one per notification and recipient."""
    with rt.session() as session:
        return set(session.scalars(select(Delivery.message_id).where(Delivery.channel == "email")))


def _inbox_once_each(rt: Runtime) -> None:
    with rt.session() as session:
        rows = _notify_rows(rt)
        expected = Counter({(r.id, uid): 1 for r in rows for uid in r.payload["recipients"]})
        found = Counter(tuple(n) for n in session.execute(select(Notification.outbox_id, Notification.user_id)))
        assert found == expected


def test_smtp_down_deliveries_back_off_and_go_exactly_once_when_it_returns(tmp_path, db_url, mailbox):
    rt = _runtime(tmp_path, db_url, mailbox)
    people(rt)
    mailbox.stop()
    with rt.session() as session:
        alice = service(rt, session, "alice")
        for n in range(3):
            alice.create("meeting", {"topic": f"Assigned {n}"}, assignee="bob")
    _held_with_three_recipients(rt, "Held")
    rows = _notify_rows(rt)
    assert len(rows) == 3 + 2  # the assignments; the creator's and the watchers' notices
    assert {(r.status, r.attempts) for r in rows} == {("pending", 1)}
    assert all("SMTP 127.0.0.1" in r.last_error for r in rows)
    _inbox_once_each(rt)  # the inbox did not wait for SMTP

    clock = Clock()
    relay = rt.relay(clock=clock, policy=POLICY)
    clock.advance(5)
    assert relay.run_until_empty().claimed == 0  # backing off: the first retry is due after 10 s
    clock.advance(6)
    stats = relay.run_until_empty()
    assert (stats.claimed, stats.retried, stats.done) == (5, 5, 0)  # still down
    mailbox.start()
    clock.advance(30)
    assert relay.run_until_empty().claimed == 0  # back, but the second retry is due after 60 s
    clock.advance(31)
    assert relay.run_until_empty().done == 5
    clock.advance(3600)
    assert relay.run_until_empty().claimed == 0

    received = Counter(m["Message-ID"] for m in mailbox.messages)
    assert set(received) == _expected_emails(rt) and set(received.values()) == {1}
    assert Counter(m["To"] for m in mailbox.messages) == Counter(
        {"bob@tracker.test": 3 + 1, "alice@tracker.test": 1, "carol@tracker.test": 1}
    )
    _inbox_once_each(rt)
    with rt.session() as session:
        assert counts(session) == {"pending": 0, "dead": 0}
    rt.engine.dispose()


def test_a_recipient_refused_every_time_is_dead_lettered_and_the_others_get_one_email(tmp_path, db_url, mailbox):
    rt = _runtime(tmp_path, db_url, mailbox)
    people(rt)
    mailbox.handler.refuse_to = {"carol@tracker.test"}
    _held_with_three_recipients(rt, "Carol's mailbox is full")
    clock = Clock()
    relay = rt.relay(clock=clock, policy=POLICY)
    for wait in POLICY.intervals:  # attempts 2, 3 and 4 after the first one at commit
        clock.advance(wait + 1)
        relay.run_until_empty()
    creator, row = _notify_rows(rt)  # the creator's notice, and the watchers' with carol's
    assert (creator.status, row.status, row.attempts) == ("done", "dead", 4)
    assert "carol" in row.last_error and "450" in row.last_error
    # the others had theirs at the first attempt, and only then
    assert sorted(m["To"] for m in mailbox.messages) == ["alice@tracker.test", "bob@tracker.test"]
    report = {c.name: c for c in health.check(rt).checks}
    assert not report["outbox"].ok and "1 dead-lettered" in report["outbox"].detail
    clock.advance(86400)
    assert relay.run_until_empty().claimed == 0  # a dead row waits for a person

    mailbox.handler.refuse_to = set()
    with rt.session() as session:
        retry(session, row.id, Actor.system())  # an admin's retry; without Redis it goes at once
    assert sorted(m["To"] for m in mailbox.messages) == ["alice@tracker.test", "bob@tracker.test", "carol@tracker.test"]
    received = Counter(m["Message-ID"] for m in mailbox.messages)
    assert set(received) == _expected_emails(rt) and set(received.values()) == {1}
    _inbox_once_each(rt)
    with rt.session() as session:
        assert counts(session) == {"pending": 0, "dead": 0}
    assert {c.name: c.ok for c in health.check(rt).checks}["outbox"]
    rt.engine.dispose()
