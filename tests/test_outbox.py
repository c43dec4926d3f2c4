"""Reliability of delivery, against a real SMTP server (aiosmtpd), real Redis and both
databases: SMTP down, Redis down, a relay killed mid-job, retries, dead letters."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine import health, jobs
from engine.errors import Conflict, NotFound, PermissionDenied
from engine.models import Delivery, Notification, Outbox
from engine.outbox import RetryPolicy, counts, listing, retry
from engine.permissions import Actor
from engine.runtime import Runtime
from tests.conftest import ROOT
from tests.notify_helpers import *  # noqa: F403 - fixtures
from tests.notify_helpers import (
    NOTIFY_DEFINITIONS,
    TEST_DEFINITIONS,
    Clock,
    free_port,
    make_settings,
    people,
    service,
)

#: the start of a relay script run in a subprocess: its clock is 11 s ahead, so rows backing
#: off after a first failed attempt are due
AHEAD = (
    "from datetime import timedelta\n"
    "from engine.models import utcnow\n"
    "from engine.runtime import Runtime\n"
    "def ahead():\n"
    "    return utcnow() + timedelta(seconds=11)\n"
)


def rows(rt) -> list[Outbox]:
    with rt.session() as session:
        return list(session.scalars(select(Outbox).where(Outbox.kind == "notify").order_by(Outbox.id)))


def assign_three(rt) -> list[int]:
    with rt.session() as session:
        alice = service(rt, session, "alice")
        return [alice.create("meeting", {"topic": f"Item {n}"}, assignee="bob").id for n in range(3)]


def test_retry_policy_is_a_small_checked_value():
    policy = RetryPolicy(max=3, intervals=(10, 60, 300))
    assert [policy.delay(n) for n in (1, 2, 3, 4)] == [10, 60, 300, None]
    assert [RetryPolicy(max=4, intervals=(5,)).delay(n) for n in (1, 4, 5)] == [5, 5, None]
    with pytest.raises(ValueError, match="at least one retry"):
        RetryPolicy(max=0)
    with pytest.raises(ValueError, match="0 seconds or more"):
        RetryPolicy(intervals=(10, -1))


def test_smtp_down_items_save_and_every_message_goes_exactly_once_when_it_returns(rt, smtp, clock):
    ids = people(rt)
    smtp.stop()
    items = assign_three(rt)  # saving works while SMTP is down
    clock.sync()
    assert len(items) == 3
    waiting = rows(rt)
    assert [(r.status, r.attempts) for r in waiting] == [("pending", 1)] * 3
    assert all("SMTP 127.0.0.1" in r.last_error for r in waiting)
    # the inbox did not wait for SMTP
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(Notification)) == 3
    relay = rt.relay(clock=clock)
    assert relay.run_until_empty().claimed == 0  # not due yet: backing off
    clock.advance(11)
    assert relay.run_until_empty().retried == 3  # still down: second attempt fails too
    smtp.start()
    clock.advance(61)
    stats = relay.run_until_empty()
    assert (stats.claimed, stats.done) == (3, 3)
    assert sorted(m["Subject"] for m in smtp.to("bob@tracker.test")) == [
        f"[Tracker] alice assigned Item {n} to you" for n in range(3)
    ]
    clock.advance(3600)
    assert relay.run_until_empty().claimed == 0
    assert len(smtp.messages) == 3
    with rt.session() as session:
        assert (
            session.scalar(select(func.count()).select_from(Notification).where(Notification.user_id == ids["bob"]))
            == 3
        )
        assert counts(session) == {"pending": 0, "dead": 0}


def test_smtp_refusing_with_a_temporary_error_is_retried_too(rt, smtp, clock):
    people(rt)
    smtp.handler.refuse = True
    assign_three(rt)
    clock.sync()
    assert smtp.messages == [] and all("451" in r.last_error for r in rows(rt))
    smtp.handler.refuse = False
    clock.advance(11)
    assert rt.relay(clock=clock).run_until_empty().done == 3
    assert len(smtp.messages) == 3


def test_retries_back_off_then_dead_letter_then_an_admin_retry_delivers(rt, smtp, clock):
    people(rt)
    smtp.stop()
    with rt.session() as session:
        service(rt, session, "alice").create("meeting", {"topic": "Unlucky"}, assignee="bob")
    [row] = rows(rt)
    assert (row.status, row.attempts) == ("pending", 1)  # the first attempt, right after commit
    relay = rt.relay(clock=clock, policy=RetryPolicy(max=3, intervals=(10, 60, 300)))
    clock.now = row.available_at - timedelta(seconds=1)
    for wait in (10, 60, 300):
        assert relay.run_until_empty().claimed == 0  # backing off
        clock.advance(1)
        assert relay.run_until_empty().claimed == 1  # due: tried again, fails again
        [row] = rows(rt)
        if row.status == "pending":
            next_wait = {10: 60, 60: 300}[wait]
            assert row.available_at == clock.now + timedelta(seconds=next_wait)
            clock.advance(next_wait - 1)
    assert row.status == "dead" and row.attempts == 4
    assert "attempt 4" in row.last_error and "SMTP" in row.last_error
    with rt.session() as session:
        assert counts(session) == {"pending": 0, "dead": 1}
        assert [r.id for r in listing(session, "dead")] == [row.id]
    report = health.check(rt)
    outbox_check = next(c for c in report.checks if c.name == "outbox")
    assert not outbox_check.ok and "1 dead-lettered" in outbox_check.detail
    # a dead row is never picked up on its own
    clock.advance(86400)
    assert relay.run_until_empty().claimed == 0
    smtp.start()
    with rt.session() as session:
        with pytest.raises(PermissionDenied):
            retry(session, row.id, Actor.for_user(rt.users(session).get("carol"), rt.registry))
        with pytest.raises(NotFound):
            retry(session, 99999, Actor.system())
        retry(session, row.id, Actor.system())  # back to pending: sent on at once after commit
        with pytest.raises(Conflict, match="not dead-lettered"):
            retry(session, row.id, Actor.system())
    [mail] = smtp.to("bob@tracker.test")
    assert mail["Subject"] == "[Tracker] alice assigned Unlucky to you"
    [row] = rows(rt)
    assert row.status == "done"


def test_a_relay_killed_after_claiming_loses_nothing(rt, smtp, clock, tmp_path, db_url):
    people(rt)
    smtp.stop()  # rows stay pending until the doomed relay claims them
    assign_three(rt)
    smtp.start()
    script = AHEAD + (
        "rt = Runtime()\n"
        "relay = rt.relay(worker='doomed', clock=ahead)\n"
        "with rt.session() as session:\n"
        "    print('claimed', relay.claim(session), flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", script], env=_env(tmp_path, db_url, smtp.url), stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("claimed [") and line.count(",") == 2, line
    finally:
        proc.kill()
        proc.wait()
    assert {(r.status, r.claimed_by) for r in rows(rt)} == {("processing", "doomed")}
    relay = rt.relay(clock=clock.sync)
    assert relay.run_until_empty().claimed == 0  # the claim holds until its lease runs out
    relay.clock = clock
    clock.sync()
    clock.advance(11 + 301)
    assert relay.run_until_empty().done == 3
    assert len(smtp.to("bob@tracker.test")) == 3
    clock.advance(301)
    assert relay.run_until_empty().claimed == 0 and len(smtp.messages) == 3


def test_a_relay_killed_in_the_middle_of_sending_sends_each_message_once(rt, smtp, clock, tmp_path, db_url):
    """Two recipients: the first e-mail goes, the relay dies while the server stalls on the
    second. The next relay skips the first (recorded as sent) and sends the second once."""
    people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "Crash"})
    smtp.stop()
    with rt.session() as session:
        service(rt, session, "alice").transition(item.id, "held")  # notify: creator (alice) ...
        service(rt, session, "bob").watch(item.id)
        service(rt, session, "carol").watch(item.id)
        service(rt, session, "alice").transition(item.id, "planned")  # ... and the watchers bob and carol
    smtp.handler.hold_rcpt = "carol@tracker.test"
    smtp.start()
    proc = subprocess.Popen(
        [sys.executable, "-c", AHEAD + "Runtime().relay(worker='doomed', clock=ahead).run_until_empty()"],
        env=_env(tmp_path, db_url, smtp.url),
    )
    try:
        assert smtp.handler.holding.wait(30), "the relay never reached carol's message"
    finally:
        proc.kill()
        proc.wait()
        smtp.handler.release.set()
    assert [m["To"] for m in smtp.messages].count("bob@tracker.test") == 1
    assert "carol@tracker.test" not in [m["To"] for m in smtp.messages]
    with rt.session() as session:
        carol = session.scalar(select(Delivery).where(Delivery.key.like("%:email"), Delivery.status == "sending"))
        assert carol is not None  # on record as being sent when the relay died
    clock.sync()
    clock.advance(11 + 301)
    rt.relay(clock=clock).run_until_empty()
    to = [m["To"] for m in smtp.messages]
    assert to.count("alice@tracker.test") == 1 and to.count("bob@tracker.test") == 1
    assert to.count("carol@tracker.test") == 1
    with rt.session() as session:
        assert counts(session) == {"pending": 0, "dead": 0}


def test_two_relays_at_once_share_the_work_and_deliver_each_message_once(tmp_path, db_url, smtp):
    runtime = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url))
    people(runtime)
    smtp.stop()  # so the rows wait for the relays below
    with runtime.session() as session:
        alice = service(runtime, session, "alice")
        for n in range(40):
            alice.create("meeting", {"topic": f"Load {n}"}, assignee="bob")
    smtp.start()
    later = Clock()
    later.advance(11)
    results = []

    def work(name: str) -> None:
        results.append(runtime.relay(worker=name, clock=later).run_until_empty(limit=5))

    threads = [threading.Thread(target=work, args=(f"w{n}",)) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r.done for r in results) == 40
    assert len(smtp.messages) == 40 and len({m["Message-ID"] for m in smtp.messages}) == 40
    runtime.engine.dispose()


def test_redis_down_saves_succeed_rows_wait_and_go_out_when_redis_returns(tmp_path, db_url, smtp, notify_redis_url):
    closed = f"redis://127.0.0.1:{free_port()}/14"
    down = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url, redis_url=closed))
    people(down)
    assign_three(down)
    assert [r.status for r in rows(down)] == ["pending"] * 3 and smtp.messages == []
    down.engine.dispose()
    up = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url, redis_url=notify_redis_url))
    clock = Clock()
    clock.advance(jobs.STRAGGLER_SECONDS + 1)
    report = jobs.Scheduler(up, clock=clock).tick()
    assert report.queued >= 3 and report.problems == []
    assert jobs.run_worker(up, burst=True, fork=False)
    assert len(smtp.to("bob@tracker.test")) == 3
    assert [r.status for r in rows(up)] == ["done"] * 3
    # queued again by mistake: the jobs find nothing to do
    jobs.enqueue(notify_redis_url, [r.id for r in rows(up)])
    jobs.run_worker(up, burst=True, fork=False)
    assert len(smtp.messages) == 3
    up.engine.dispose()
    jobs.use_runtime(None)


def test_with_redis_each_commit_queues_a_job_that_a_forking_rq_worker_runs(tmp_path, db_url, smtp, notify_redis_url):
    runtime = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url, redis_url=notify_redis_url))
    people(runtime)
    assign_three(runtime)
    assert smtp.messages == []  # nothing is sent by the web process itself
    assert jobs.queue(notify_redis_url).count >= 3
    assert jobs.run_worker(runtime, burst=True)  # rq.Worker: each job in a forked work horse
    assert len(smtp.to("bob@tracker.test")) == 3
    assert [r.status for r in rows(runtime)] == ["done"] * 3
    runtime.engine.dispose()
    jobs.use_runtime(None)


def test_a_failed_rq_job_is_queued_again_for_when_its_retry_is_due(tmp_path, db_url, smtp, notify_redis_url):
    runtime = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url, redis_url=notify_redis_url))
    people(runtime)
    smtp.stop()
    with runtime.session() as session:
        service(runtime, session, "alice").create("meeting", {"topic": "Later"}, assignee="bob")
    jobs.run_worker(runtime, burst=True, fork=False)
    [row] = rows(runtime)
    assert (row.status, row.attempts) == ("pending", 1)
    from rq.registry import ScheduledJobRegistry

    scheduled = ScheduledJobRegistry(queue=jobs.queue(notify_redis_url))
    assert scheduled.count == 1  # the retry waits in RQ's schedule, due when the outbox row is
    runtime.engine.dispose()
    jobs.use_runtime(None)


def _env(tmp_path, db_url: str, smtp_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRACKER_DATABASE_URL": db_url,
        "TRACKER_SMTP_URL": smtp_url,
        "TRACKER_INSTANCE_PATH": str(tmp_path),
        "TRACKER_SECRET_KEY": "test-secret",
        "TRACKER_BASE_URL": "http://tracker.test",
        "TRACKER_MAIL_FROM": "Tracker <tracker@tracker.test>",
        "TRACKER_DEFINITIONS_PATH": os.pathsep.join([str(TEST_DEFINITIONS), str(NOTIFY_DEFINITIONS)]),
        "TRACKER_REDIS_URL": "",
    }
