"""A worker killed in the middle of a delivery (SIGKILL to a ``tracker worker`` process while the
SMTP server holds its answer), against a private Redis and an aiosmtpd server of the test's own.

What holds, and is tested here:

- the claim's lease (``TRACKER_OUTBOX_LEASE_SECONDS``) runs out, the scheduler queues the row
  again, and another worker delivers what the first did not;
- the in-app inbox gets each notification exactly once: an inbox entry is written in the same
  transaction as its delivery record, so a retry finds it done;
- e-mail goes at least once: one that the SMTP server took just before the worker died,
  before the worker could record it as sent, goes again, with the same Message-ID (the
  delivery's idempotency key), so mail programs show it once. Every other e-mail goes once.
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from engine import jobs
from engine.models import Delivery, Notification, Outbox, utcnow
from engine.runtime import Runtime
from tests.faults import *  # noqa: F403 - fixtures
from tests.faults import Subprocess, fault_env, wait_until
from tests.notify_helpers import Clock, make_settings, people, service

pytestmark = [pytest.mark.redis]

LEASE = 3  # seconds: a dead worker's claim is taken over this soon after it died


def _held_meeting(rt: Runtime, topic: str) -> int:
    """A meeting alice created and carol watches, marked held by bob: one notify row to alice
    (the creator) and one to the watchers; carol's e-mail is the last to go."""
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": topic})
    with rt.session() as session:
        service(rt, session, "carol").watch(item.id)
    with rt.session() as session:
        service(rt, session, "bob").transition(item.id, "held")
    return item.id


def _rows(rt: Runtime, item_id: int) -> list[Outbox]:
    with rt.session() as session:
        return list(session.scalars(select(Outbox).where(Outbox.item_id == item_id).order_by(Outbox.id)))


def _email_ids(rt: Runtime) -> dict[str, str]:
    """Message-ID -> delivery key (row, recipient, channel) of every e-mail delivery on record."""
    with rt.session() as session:
        stmt = select(Delivery.message_id, Delivery.key).where(Delivery.channel == "email")
        return {message_id: key for message_id, key in session.execute(stmt)}


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # workers with Redis: the production shape
def test_a_worker_killed_while_delivering_is_replaced_inbox_once_email_at_least_once(
    tmp_path, db_url, private_redis, mailbox
):
    settings = make_settings(
        tmp_path, db_url, redis_url=private_redis.url, smtp_url=mailbox.url, outbox_lease_seconds=LEASE
    )
    rt = Runtime(settings)
    ids = people(rt)
    env = fault_env(
        tmp_path, db_url, REDIS_URL=private_redis.url, SMTP_URL=mailbox.url, OUTBOX_LEASE_SECONDS=str(LEASE)
    )
    first = Subprocess.tracker(["worker", "--no-fork", "--name", "first"], env, tmp_path / "first.log")
    second = None
    try:
        first.wait_for("Listening on")
        mailbox.handler.hold_after_data = "carol@tracker.test"  # kept, but the "250" is held back
        item_id = _held_meeting(rt, "Killed mid-delivery")
        assert mailbox.handler.holding.wait(60), first.output()
        first.kill()  # SIGKILL while it waits for the server's answer about carol's e-mail
        mailbox.handler.release.set()

        # the row in flight, and any claimed with it in the same job, stay claimed by the dead worker
        stuck = [r for r in _rows(rt, item_id) if r.status == "processing"]
        [dead_relay] = {r.claimed_by for r in stuck}
        with rt.session() as session:
            carol_mail = session.scalar(
                select(Delivery).where(Delivery.user_id == ids["carol"], Delivery.channel == "email")
            )
            assert carol_mail.status == "sending"  # on record as leaving, never as sent
            in_flight = carol_mail.outbox_id
        assert [m["To"] for m in mailbox.messages].count("carol@tracker.test") == 1  # ... but it arrived

        second = Subprocess.tracker(["worker", "--no-fork", "--name", "second"], env, tmp_path / "second.log")
        second.wait_for("Listening on")
        lease_end = max(r.locked_until for r in stuck)
        wait_until("the dead worker's lease running out", lambda: utcnow() > lease_end, LEASE + 30)
        report = jobs.Scheduler(rt).tick()
        assert report.problems == [] and report.queued == len(stuck)
        wait_until(
            "the second worker delivering the rest",
            lambda: {r.status for r in _rows(rt, item_id)} == {"done"},
            60,
            explain=second.output,
        )
    finally:
        first.kill()
        if second is not None:
            second.kill()

    retried = [r for r in _rows(rt, item_id) if r.id in {s.id for s in stuck}]
    assert {r.attempts for r in retried} == {2} and dead_relay not in {r.claimed_by for r in retried}
    with rt.session() as session:
        notify = list(session.scalars(select(Outbox).where(Outbox.kind == "notify")))
        expected = Counter({(r.id, uid): 1 for r in notify for uid in r.payload["recipients"]})
        inbox = Counter(tuple(n) for n in session.execute(select(Notification.outbox_id, Notification.user_id)))
    assert inbox == expected  # exactly once each
    received = Counter(m["Message-ID"] for m in mailbox.messages)
    on_record = _email_ids(rt)
    assert set(received) == set(on_record)  # every e-mail arrived, with the id on record
    twice = [key for message_id, key in on_record.items() if received[message_id] == 2]
    assert twice == [f"outbox:{in_flight}:user:{ids['carol']}:email"]  # only the one caught in flight
    assert set(received.values()) == {1, 2}
    rt.engine.dispose()


def test_an_email_whose_acceptance_was_lost_goes_again_with_the_same_message_id(tmp_path, db_url, mailbox):
    """The same window without a kill: the server keeps the message but the connection drops
    before its answer. The relay cannot know, so it tries again; the copy has the same id."""
    rt = Runtime(make_settings(tmp_path, db_url, smtp_url=mailbox.url))
    people(rt)
    mailbox.handler.drop_replies = 1
    with rt.session() as session:
        service(rt, session, "alice").create("meeting", {"topic": "Lost answer"}, assignee="bob")
    [row] = _rows_of_kind(rt, "notify")
    assert (row.status, row.attempts) == ("pending", 1) and "SMTP" in row.last_error
    clock = Clock()
    clock.advance(11)
    assert rt.relay(clock=clock).run_until_empty().done == 1
    copies = mailbox.to("bob@tracker.test")
    assert len(copies) == 2 and copies[0]["Message-ID"] == copies[1]["Message-ID"]
    assert set(_email_ids(rt)) == {copies[0]["Message-ID"]}
    with rt.session() as session:
        assert len(session.scalars(select(Notification.id)).all()) == 1
    rt.engine.dispose()


def _rows_of_kind(rt: Runtime, kind: str) -> list[Outbox]:
    with rt.session() as session:
        return list(session.scalars(select(Outbox).where(Outbox.kind == kind)))


def test_a_stale_claim_is_not_taken_over_before_its_lease_runs_out(tmp_path, db_url, mailbox):
    """The lease is what keeps two workers from sending the same message at once: a claim
    is left alone until it runs out, however often the scheduler looks."""
    rt = Runtime(make_settings(tmp_path, db_url, smtp_url=mailbox.url, outbox_lease_seconds=LEASE))
    people(rt)
    mailbox.stop()
    with rt.session() as session:
        service(rt, session, "alice").create("meeting", {"topic": "Claimed"}, assignee="bob")
    [row] = _rows_of_kind(rt, "notify")
    later = Clock()
    later.advance(11)
    relay = rt.relay(worker="gone", clock=later)
    with rt.session() as session:
        assert relay.claim(session) == [row.id]  # and then the worker is gone
    mailbox.start()
    assert rt.relay(clock=later).run_until_empty().claimed == 0
    assert jobs.stragglers(rt, later.now + timedelta(seconds=LEASE - 1)) == []
    assert jobs.stragglers(rt, later.now + timedelta(seconds=LEASE + 1)) == [row.id]
    later.advance(LEASE + 1)
    assert rt.relay(clock=later).run_until_empty().done == 1
    assert len(mailbox.to("bob@tracker.test")) == 1
    rt.engine.dispose()


def test_the_lease_and_the_connect_retry_are_settings_checked_at_start(tmp_path):
    from engine.config import Settings
    from engine.errors import TrackerError

    base = {"TRACKER_INSTANCE_PATH": str(tmp_path), "TRACKER_SECRET_KEY": "test-secret"}
    defaults = Settings.from_env(base)
    assert (defaults.outbox_lease_seconds, defaults.db_connect_retry_seconds) == (300, 5)
    chosen = Settings.from_env({**base, "TRACKER_OUTBOX_LEASE_SECONDS": "90", "TRACKER_DB_CONNECT_RETRY_SECONDS": "0"})
    assert (chosen.outbox_lease_seconds, chosen.db_connect_retry_seconds) == (90, 0)
    for name, value in (("TRACKER_OUTBOX_LEASE_SECONDS", "soon"), ("TRACKER_DB_CONNECT_RETRY_SECONDS", "-1")):
        with pytest.raises(TrackerError, match=f"{name} is not a whole number") as refused:
            Settings.from_env({**base, name: value})
        assert "leave it unset" in refused.value.advice
