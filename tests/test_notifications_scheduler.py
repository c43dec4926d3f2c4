"""What ``tracker scheduler`` does: reminders before dates (once per item and date, across
restarts and date changes) and the daily digest; real SMTP server, both databases."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from engine import jobs
from engine.mail import Mailer
from engine.models import Delivery, Notification, Outbox, SentReminder
from engine.notifications import Notifier, Preferences
from engine.reminders import send_due_reminders
from engine.runtime import Runtime
from tests.notify_helpers import *  # noqa: F403 - fixtures
from tests.notify_helpers import make_settings, people, service

TODAY = date(2031, 3, 10)


def reminders(rt) -> list[Outbox]:
    with rt.session() as session:
        stmt = select(Outbox).where(Outbox.kind == "notify", Outbox.payload["reason"].as_string() == "reminder")
        return list(session.scalars(stmt.order_by(Outbox.id)))


def remind(rt, day: date = TODAY) -> int:
    with rt.session() as session:
        return send_due_reminders(session, rt.registry, day)


def test_reminders_go_once_per_item_and_date_and_again_when_the_date_changes(rt, smtp, tmp_path, db_url):
    people(rt)
    with rt.session() as session:
        alice = service(rt, session, "alice")
        soon = alice.create("meeting", {"topic": "Soon", "meeting_date": "2031-03-15"}, assignee="bob")
        alice.create("meeting", {"topic": "Far", "meeting_date": "2031-04-30"}, assignee="bob")
        alice.create("meeting", {"topic": "Past", "meeting_date": "2031-03-09"}, assignee="bob")
        alice.create("meeting", {"topic": "Nobody", "meeting_date": "2031-03-12"})  # no assignee yet
        done = alice.create("meeting", {"topic": "Held", "meeting_date": "2031-03-11"}, assignee="bob")
        alice.transition(done.id, "held")
    smtp.messages.clear()
    assert remind(rt) == 1
    [mail] = smtp.to("bob@tracker.test")
    assert mail["Subject"] == "[Tracker] Reminder: Meeting date of Soon is in 5 days (15 March 2031)"
    assert f"http://tracker.test/items/{soon.id}" in mail.get_body(("plain",)).get_content()
    assert remind(rt) == 0 and remind(rt, TODAY + timedelta(days=1)) == 0
    # a restart: a new runtime on the same database sends nothing again
    again = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url))
    assert remind(again, TODAY + timedelta(days=2)) == 0
    # the date moves: the new date is reminded, once
    with rt.session() as session:
        service(rt, session, "alice").update(soon.id, changes={"meeting_date": "2031-03-14"})
    smtp.messages.clear()
    assert remind(again, TODAY + timedelta(days=2)) == 1
    assert smtp.to("bob@tracker.test")[0]["Subject"].endswith("is in 2 days (14 March 2031)")
    assert remind(again, TODAY + timedelta(days=3)) == 0
    with rt.session() as session:
        sent = session.execute(select(SentReminder.item_id, SentReminder.on_date)).all()
        assert sorted(sent) == [(soon.id, date(2031, 3, 14)), (soon.id, date(2031, 3, 15))]
    again.engine.dispose()


def test_a_reminder_waits_for_a_recipient_and_reaches_watchers_of_nested_dates(rt, smtp):
    ids = people(rt)
    with rt.session() as session:
        alice = service(rt, session, "alice")
        nobody = alice.create("meeting", {"topic": "Nobody", "meeting_date": "2031-03-12"})
        followed = alice.create("meeting", {"topic": "Follow", "follow_up": {"due": "2031-03-17"}})
        service(rt, session, "carol").watch(followed.id)
    assert remind(rt) == 1  # the follow-up (1w) reaches carol; "Nobody" has no assignee
    [entry] = [n for n in _inbox(rt, ids["carol"]) if n.reason == "reminder"]
    assert entry.text == "Reminder: Follow-up due of Follow is in 7 days (17 March 2031)"
    with rt.session() as session:
        service(rt, session, "alice").assign(nobody.id, "bob")
    assert remind(rt, TODAY + timedelta(days=1)) == 1
    assert smtp.to("bob@tracker.test")[-1]["Subject"].endswith("Nobody is tomorrow (12 March 2031)")


def test_a_second_scheduler_sends_a_reminder_no_second_time(rt, smtp):
    people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create(
            "meeting", {"topic": "Race", "meeting_date": "2031-03-10"}, assignee="bob"
        )
    with rt.session() as first, rt.session() as second:
        assert send_due_reminders(first, rt.registry, TODAY) == 1
        assert send_due_reminders(second, rt.registry, TODAY) == 0
        # the record's key is unique in the database too, for schedulers racing each other
        second.add(SentReminder(item_id=item.id, reminder="meeting_date:7d:assignee", on_date=date(2031, 3, 10)))
        with pytest.raises(IntegrityError):
            second.commit()
    assert [m["Subject"] for m in smtp.to("bob@tracker.test")][-1].endswith("Race is today (10 March 2031)")
    assert len(reminders(rt)) == 1


def test_the_scheduler_tick_sends_reminders_and_relays_stragglers(rt, smtp, clock):
    people(rt)
    smtp.stop()
    with rt.session() as session:
        service(rt, session, "alice").create("meeting", {"topic": "Tick", "meeting_date": "2031-03-11"}, assignee="bob")
    smtp.start()
    clock.now = datetime(2031, 3, 10, 9, 0)
    report = jobs.Scheduler(rt, clock=clock).tick()
    assert (report.reminders, report.problems) == (1, [])
    assert report.relayed >= 1  # the assignment that failed while SMTP was down
    assert sorted(m["Subject"] for m in smtp.to("bob@tracker.test")) == [
        "[Tracker] Reminder: Meeting date of Tick is tomorrow (11 March 2031)",
        "[Tracker] alice assigned Tick to you",
    ]
    again = jobs.Scheduler(rt, clock=clock).tick()
    assert (again.reminders, again.relayed, again.digests) == (0, 0, 0)


def test_daily_digest_collects_emails_and_goes_once_a_day(rt, smtp, clock):
    ids = people(rt)
    with rt.session() as session:
        Preferences(session, ids["bob"]).save(
            {kind: ["inbox", "email"] for kind in ("assigned", "mentioned", "transitioned", "reminder", "watched")},
            digest=True,
        )
        alice = service(rt, session, "alice")
        first = alice.create("meeting", {"topic": "One"}, assignee="bob")
        second = alice.create("meeting", {"topic": "Two"}, assignee="bob")
        alice.comment(first.id, "see this @bob")
    assert smtp.to("bob@tracker.test") == []  # e-mails wait for the digest ...
    assert len(_inbox(rt, ids["bob"])) == 3  # ... the inbox does not
    with rt.session() as session:
        notifier = Notifier(session, rt.registry, rt.settings, mailer=mailer(rt), clock=clock)
        clock.now = datetime(2031, 3, 10, 6, 59)
        assert notifier.send_digests() == 0  # before the digest hour (7)
        clock.now = datetime(2031, 3, 10, 7, 0)
        assert notifier.send_digests() == 1
        assert notifier.send_digests() == 0  # once a day
    [digest] = smtp.to("bob@tracker.test")
    assert digest["Subject"] == "[Tracker] Your daily digest: 3 updates"
    text = digest.get_body(("plain",)).get_content()
    assert "alice assigned One to you" in text and "alice mentioned you on One" in text
    assert f"http://tracker.test/items/{first.id}" in text and f"http://tracker.test/items/{second.id}" in text
    assert f'href="http://tracker.test/items/{second.id}"' in digest.get_body(("html",)).get_content()
    # a later e-mail waits for tomorrow's digest, even with the scheduler restarted
    with rt.session() as session:
        service(rt, session, "alice").create("meeting", {"topic": "Three"}, assignee="bob")
        clock.now = datetime(2031, 3, 10, 18, 0)
        fresh = Notifier(session, rt.registry, rt.settings, mailer=mailer(rt), clock=clock)
        assert fresh.send_digests() == 0
        clock.now = datetime(2031, 3, 11, 7, 30)
        assert fresh.send_digests() == 1
        queued = session.scalar(select(func.count()).select_from(Delivery).where(Delivery.status == "queued"))
        assert queued == 0
    assert [m["Subject"] for m in smtp.to("bob@tracker.test")][-1] == "[Tracker] Your daily digest: 1 update"


def test_a_digest_that_failed_goes_later_with_the_same_content_once(rt, smtp, clock):
    ids = people(rt)
    with rt.session() as session:
        Preferences(session, ids["bob"]).save({"assigned": ["inbox", "email"]}, digest=True)
        service(rt, session, "alice").create("meeting", {"topic": "Retry me"}, assignee="bob")
    smtp.stop()
    clock.now = datetime(2031, 3, 10, 8, 0)
    with rt.session() as session:
        notifier = Notifier(session, rt.registry, rt.settings, mailer=mailer(rt), clock=clock)
        assert notifier.send_digests() == 0
        digest = session.scalar(select(Delivery).where(Delivery.channel == "digest"))
        assert digest.status == "sending" and "SMTP" in digest.detail
        smtp.start()
        clock.now = datetime(2031, 3, 11, 8, 0)  # the next day: yesterday's digest goes first
        assert notifier.send_digests() == 1
        assert notifier.send_digests() == 0
    [mail] = smtp.to("bob@tracker.test")
    assert mail["Message-ID"] == digest.message_id and "Retry me" in mail.get_body(("plain",)).get_content()


def mailer(rt) -> Mailer:
    return Mailer.from_settings(rt.settings.smtp_url, rt.settings.mail_from)


def _inbox(rt, user_id: int) -> list[Notification]:
    with rt.session() as session:
        return list(session.scalars(select(Notification).where(Notification.user_id == user_id)))
