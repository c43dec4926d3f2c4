"""Redis stopped and started (a private ``redis-server`` that, like the one here, keeps nothing
on disk, so jobs queued in it are gone when it comes back): saves go on, their outbox rows
wait, /health says ``degraded``, and the scheduler delivers what waits itself; when Redis is
back /health says ``ok``, the scheduler queues what waits again, and a running ``tracker
worker`` (which reconnected by itself) delivers it. No notification is lost or sent twice."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from engine import jobs
from engine.models import Notification, Outbox, utcnow
from engine.runtime import Runtime
from tests.faults import *  # noqa: F403 - fixtures
from tests.faults import Subprocess, fault_env, wait_until
from tests.notify_helpers import make_settings, people, service
from webui import create_app

pytestmark = [pytest.mark.redis, pytest.mark.postgres]


def _assign(rt: Runtime, *topics: str) -> list[int]:
    with rt.session() as session:
        alice = service(rt, session, "alice")
        return [alice.create("meeting", {"topic": t}, assignee="bob").id for t in topics]


def _statuses(rt: Runtime, item_ids: list[int], kind: str | None = None) -> set[str]:
    """The statuses of the outbox rows of these items (notifications, item and plugin events)."""
    with rt.session() as session:
        stmt = select(Outbox.status).where(Outbox.item_id.in_(item_ids))
        return set(session.scalars(stmt.where(Outbox.kind == kind) if kind else stmt))


def _health(app) -> tuple[int, dict]:
    response = app.test_client().get("/health")
    return response.status_code, response.get_json()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)  # Redis and workers: the production shape
def test_redis_stopped_and_started_saves_go_on_and_every_notification_goes_once(
    tmp_path, db_url, private_redis, mailbox
):
    smtp = mailbox
    settings = make_settings(tmp_path, db_url, redis_url=private_redis.url, smtp_url=smtp.url)
    rt = Runtime(settings)
    people(rt)
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings})
    assert _health(app) == (200, {"status": "ok", "database": {"ok": True}, "redis": {"ok": True},
                                  "outbox": {"pending": 0, "dead": 0}})  # fmt: skip

    queued = _assign(rt, "Queued 1", "Queued 2")  # jobs wait in Redis: no worker runs yet
    assert jobs.queue(private_redis.url).count == 2
    private_redis.stop()  # ... and are lost with it
    waiting = _assign(rt, "While down 1")  # saving does not need Redis: through the service ...
    with rt.session() as session:
        token = rt.users(session).create_token("alice", "fault test")[1]
    saved = app.test_client().post(  # ... nor through the API
        "/api/v1/items",
        headers={"Authorization": f"Bearer {token}"},
        json={"type": "meeting", "data": {"topic": "While down 2"}, "assignee": "bob"},
    )
    assert saved.status_code == 201, saved.get_json()
    waiting.append(saved.get_json()["id"])
    assert _statuses(rt, queued + waiting) == {"pending"}
    with rt.session() as session:
        rows = len(session.scalars(select(Outbox.id)).all())
    status, body = _health(app)
    assert (status, body["status"], body["redis"], body["outbox"]) == (
        200,
        "degraded",
        {"ok": False},
        {"pending": rows, "dead": 0},
    )

    # the scheduler cannot queue what waits, so meanwhile it delivers it itself
    later = utcnow() + timedelta(seconds=jobs.STRAGGLER_SECONDS + 1)
    report = jobs.Scheduler(rt, clock=lambda: later).tick()
    assert (report.problems, report.queued) == ([], 0) and report.relayed >= rows  # with the plugins' rows
    with rt.session() as session:
        assert set(session.scalars(select(Outbox.status))) == {"done"}
    assert _health(app)[1]["status"] == "degraded"  # Redis is still down

    private_redis.start()  # empty: the jobs queued before it went are gone, and not missed
    assert _health(app)[1]["status"] == "ok"
    worker = Subprocess.tracker(
        ["worker", "--no-fork"], fault_env(tmp_path, db_url, REDIS_URL=private_redis.url, SMTP_URL=smtp.url),
        tmp_path / "worker.log",
    )  # fmt: skip
    try:
        worker.wait_for("Listening on")
        # Redis goes away while the worker delivers: the delivery ends (the database has it),
        # rq cannot record the job and quits; the worker waits for Redis and starts anew
        smtp.handler.hold_after_data = "bob@tracker.test"
        busy = _assign(rt, "Redis goes mid-job")
        assert smtp.handler.holding.wait(60), worker.output()
        private_redis.stop()
        smtp.handler.release.set()
        wait_until("the delivery ending", lambda: _statuses(rt, busy, "notify") == {"done"}, 60, explain=worker.output)
        during = _assign(rt, "Worker waits")
        worker.wait_for("waiting for Redis")
        private_redis.start()
        worker.wait_for("Redis answers: starting a new worker")
        after = _assign(rt, "After restart")
        wait_until(
            "the worker delivering after Redis came back",
            lambda: _statuses(rt, after) == {"done"},
            60,
            explain=worker.output,
        )
        # Redis is back: the scheduler queues the rows saved while it was away, and a worker delivers them
        report = jobs.Scheduler(rt, clock=lambda: utcnow() + timedelta(seconds=jobs.STRAGGLER_SECONDS + 1)).tick()
        assert report.queued >= rows // 4 and report.relayed == 0
        wait_until("the last rows", lambda: _statuses(rt, busy + during) == {"done"}, 60, explain=worker.output)
        # nothing left to queue: a tick finds nothing, and nothing goes twice
        assert jobs.Scheduler(rt, clock=lambda: utcnow() + timedelta(hours=1)).tick().queued == 0
    finally:
        worker.kill()

    every = queued + waiting + busy + during + after
    with rt.session() as session:
        rows = list(session.scalars(select(Outbox).where(Outbox.kind == "notify", Outbox.item_id.in_(every))))
        inbox = Counter(session.scalars(select(Notification.outbox_id)))
    assert len(rows) == len(every) and {r.status for r in rows} == {"done"}
    assert {r.id: inbox[r.id] for r in rows} == {r.id: 1 for r in rows}  # bob's inbox: once each
    wait_until("every e-mail received", lambda: len(smtp.to("bob@tracker.test")) >= len(every), 30)
    subjects = Counter(m["Subject"] for m in smtp.to("bob@tracker.test"))
    assert subjects == Counter(
        f"[Tracker] alice assigned {t} to you"
        for t in (
            "Queued 1",
            "Queued 2",
            "While down 1",
            "While down 2",
            "Redis goes mid-job",
            "Worker waits",
            "After restart",
        )  # fmt: skip
    )
    assert len({m["Message-ID"] for m in smtp.messages}) == len(smtp.messages)
    assert _health(app)[1]["status"] == "ok"
    app.extensions["tracker"].engine.dispose()
    rt.engine.dispose()
