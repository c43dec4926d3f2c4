"""Background jobs: RQ when ``TRACKER_REDIS_URL`` is set, this process otherwise.

After a change commits, :class:`Dispatcher` sends its new outbox rows on: as one RQ job
per row (run by ``tracker worker``; several may run at once), or, with no Redis, through
the relay right away in this process. Jobs take ids, never ORM objects, and everything
they need is in the database, so a lost job loses nothing: ``tracker scheduler`` finds
rows still waiting and sends them on again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, or_, select

from engine.models import Outbox, utcnow

if TYPE_CHECKING:
    from redis import Redis
    from rq import Queue

    from engine.runtime import Runtime

log = logging.getLogger(__name__)

QUEUE_NAME = "tracker"
#: a pending row older than this was not sent on at commit (Redis was down): the scheduler re-sends it
STRAGGLER_SECONDS = 30


#: this process's Redis clients by URL: each keeps a pool of open connections, where a client
#: made per save would connect, and introduce itself, every time
_clients: dict[tuple[str, int], Redis] = {}


def redis_connection(url: str) -> Redis:
    """This process's Redis client for ``url``, which gives up quickly, so a save never hangs
    on a Redis that is down. Clients are thread-safe and reconnect after Redis restarts."""
    from redis import Redis

    key = (url, os.getpid())  # a forked process opens its own connections
    client = _clients.get(key)
    if client is None:
        client = _clients.setdefault(key, Redis.from_url(url, socket_connect_timeout=2, socket_timeout=10))
    return client


def queue(url: str, name: str = QUEUE_NAME) -> Queue:
    """The RQ queue ``name`` (``TRACKER_QUEUE_NAME``: LIVE and TRAINING use different ones)."""
    from rq import Queue

    return Queue(name, connection=redis_connection(url))


def enqueue(
    url: str, ids: Iterable[int], *, at: datetime | None = None, per_job: int = 100, name: str = QUEUE_NAME
) -> int:
    """Queue ``deliver`` jobs for these outbox ids on queue ``name``, up to ``per_job`` ids
    each (the rows of one change travel together), at ``at`` if given; returns how many jobs
    were queued. Raises the Redis error when Redis cannot be reached."""
    ids = list(ids)
    q = queue(url, name)
    jobs = 0
    with q.connection.pipeline() as pipe:
        for start in range(0, len(ids), per_job):
            chunk = ids[start : start + per_job]
            options = {"description": f"deliver outbox rows {chunk}", "result_ttl": 300, "pipeline": pipe}
            if at is not None:
                q.enqueue_at(at, deliver, *chunk, **options)
            else:
                q.enqueue(deliver, *chunk, **options)
            jobs += 1
        pipe.execute()
    return jobs


class Dispatcher:
    """Called after commit with the ids of new outbox rows (see :func:`engine.outbox.track_commits`)."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def __call__(self, ids: list[int]) -> None:
        url = self.runtime.settings.redis_url
        if url:
            try:
                enqueue(url, ids, name=self.runtime.settings.queue_name)
            except Exception as exc:  # noqa: BLE001 - Redis down must not fail a save
                log.warning("Redis unreachable, outbox rows %s wait for the scheduler: %s", ids, exc)
            return
        self.runtime.relay().deliver_ids(ids)


# -- the job RQ runs -----------------------------------------------------------------------------

_runtime: Runtime | None = None
_runtime_pid: int | None = None
_relay = None


def use_runtime(runtime: Runtime | None) -> None:
    """The Runtime jobs in this process use (``tracker worker`` and tests set it); without
    one, a job builds it from the ``TRACKER_*`` environment."""
    global _runtime, _runtime_pid, _relay
    _runtime, _runtime_pid, _relay = runtime, os.getpid(), None


def current_runtime() -> Runtime:
    """This process's Runtime. In an RQ work-horse (a fork) the inherited database
    connections are dropped first, since they belong to the parent."""
    global _runtime, _runtime_pid, _relay
    if _runtime is None:
        from engine.runtime import Runtime

        use_runtime(Runtime())
    assert _runtime is not None
    if _runtime_pid != os.getpid():
        _runtime.engine.dispose(close=False)
        _runtime_pid, _relay = os.getpid(), None
    return _runtime


def _current_relay():
    """One relay per worker process, so its SMTP connection serves job after job."""
    global _relay
    rt = current_runtime()
    if _relay is None:
        _relay = rt.relay()
    return _relay


def deliver(*outbox_ids: int) -> str:
    """RQ job: claim and deliver these outbox rows. A row that failed is queued again for
    when its retry is due; rows already delivered or held by another worker are left alone."""
    rt = current_runtime()
    stats = _current_relay().deliver_ids(outbox_ids, keep_open=True)
    for outbox_id, when in stats.retry_at.items():
        try:
            enqueue(rt.settings.redis_url, [outbox_id], at=when, name=rt.settings.queue_name)
        except Exception as exc:  # noqa: BLE001 - the scheduler finds the row anyway
            log.warning("could not queue the retry of outbox row %s: %s", outbox_id, exc)
    return f"{stats.done} done, {stats.retried} to retry, {stats.dead} dead-lettered of {len(outbox_ids)}"


def stragglers(runtime: Runtime, now: datetime) -> list[int]:
    """Rows that should be on their way but were not sent on: pending and due for longer
    than :data:`STRAGGLER_SECONDS` (Redis was down at commit), or with a stale claim."""
    grace = now - timedelta(seconds=STRAGGLER_SECONDS)
    with runtime.session() as session:
        stmt = select(Outbox.id).where(
            or_(
                and_(Outbox.status == "pending", Outbox.available_at <= grace),
                and_(Outbox.status == "processing", Outbox.locked_until < now),
            )
        )
        return list(session.scalars(stmt.order_by(Outbox.id).limit(5000)))


def warm_up(runtime: Runtime) -> None:
    """Load what every job needs (definitions, the relay's modules, compiled e-mail
    templates) once, before a forking worker starts: its work horses inherit them."""
    from engine.mail import templates_for

    _current_relay()
    templates = templates_for(runtime.settings.instance_path)
    for name in ("notification", "digest"):
        for suffix in (".subject.txt", ".txt", ".html"):
            templates.env.get_template(name + suffix)
    _ = runtime.registry


def run_worker(runtime: Runtime, *, burst: bool = False, name: str | None = None, fork: bool = True) -> bool:
    """Run an RQ worker on the tracker queue until stopped (or, with ``burst``, until the
    queue is empty); it also moves scheduled retries onto the queue when they are due.
    ``fork=False`` runs jobs in this process (rq's SimpleWorker). Returns whether any job ran.

    Redis going away does not end it: rq's worker waits for Redis only while it waits for a
    job, and quits when Redis is lost at any other moment; then this waits until Redis
    answers and starts a new one (a worker process that died instead would be restarted by
    its service manager into a Redis that is still down, fail at once, and soon be given up)."""
    from rq import SimpleWorker, Worker

    use_runtime(runtime)
    warm_up(runtime)
    url = runtime.settings.redis_url
    cls = Worker if fork else SimpleWorker
    worked = False
    while True:
        worker = cls([queue(url, runtime.settings.queue_name)], connection=redis_connection(url), name=name)
        try:
            worked = worker.work(burst=burst, with_scheduler=True, logging_level="INFO") or worked
        except Exception as exc:  # noqa: BLE001 - rq's clean-up needs Redis too, and fails without it
            log.warning("the worker stopped on an error: %s", exc)
        asked_to_stop = getattr(worker, "_shutdown_requested_date", None) is not None  # SIGTERM, SIGINT
        if burst or asked_to_stop or not _wait_for_redis(url):
            return worked
        _forget(worker)
        time.sleep(1)  # a worker that quits at once, again and again, does not spin
        log.warning("Redis answers: starting a new worker")


def _wait_for_redis(url: str, *, longest_wait: float = 10.0) -> bool:
    """Wait until Redis answers (True), or until the process is asked to stop (False)."""
    import signal

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        wait = 0.5
        while not stop.is_set():
            try:
                redis_connection(url).ping()
                return True
            except Exception as exc:  # noqa: BLE001 - any failure means "not yet"
                log.warning("waiting for Redis (%s); next try in %.0f s", exc, wait)
            stop.wait(wait)
            wait = min(wait * 2, longest_wait)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _forget(worker) -> None:
    """Record the worker that quit as dead, so a new one may take its name."""
    try:
        worker.register_death()
        worker.unsubscribe()
    except Exception as exc:  # noqa: BLE001 - Redis came back empty: there is nothing to forget
        log.debug("could not record the worker that quit as dead: %s", exc)


# -- the scheduler -------------------------------------------------------------------------------


@dataclass
class TickReport:
    """What one scheduler tick did."""

    reminders: int = 0
    digests: int = 0
    relayed: int = 0
    queued: int = 0
    #: process automations that ran (schedules and dates)
    automations: int = 0
    #: LIVE with a TRAINING database: what the nightly refresh did this tick ("" when it did not run)
    training: str = ""
    problems: list[str] = field(default_factory=list)


class Scheduler:
    """What ``tracker scheduler`` does on each tick: write the reminders due today, run the
    process automations whose schedule or date has come, send the daily digests, and send
    on outbox rows that are waiting (through RQ when Redis is configured, through the relay
    in this process otherwise, or while Redis does not answer).

    Args:
        runtime: settings, database and definitions.
        clock: returns "now" as naive UTC; "today" for reminders is its date.
    """

    def __init__(self, runtime: Runtime, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.runtime = runtime
        self.clock = clock

    def tick(self) -> TickReport:
        """One round; a failing step is reported in ``problems`` and the others still run."""
        from engine.mail import Mailer
        from engine.notifications import Notifier
        from engine.reminders import send_due_reminders

        rt, report = self.runtime, TickReport()
        now = self.clock()
        try:
            with rt.session() as session:
                report.reminders = send_due_reminders(session, rt.registry, now.date())
        except Exception as exc:  # noqa: BLE001 - report and carry on with the other steps
            log.exception("reminders failed")
            report.problems.append(f"reminders: {exc}")
        try:
            from engine.services.automation import AutomationService

            with rt.session() as session:
                runner = AutomationService(session, rt.registry, clock=self.clock, zone=rt.settings.timezone)
                report.automations = len(runner.run_due(now))
        except Exception as exc:  # noqa: BLE001
            log.exception("automations failed")
            report.problems.append(f"automations: {exc}")
        try:
            mailer = Mailer.from_settings(rt.settings.smtp_url, rt.settings.mail_from)
            with rt.session() as session:
                notifier = Notifier(session, rt.registry, rt.settings, mailer=mailer, clock=self.clock)
                report.digests = notifier.send_digests()
            if mailer is not None:
                mailer.close()
        except Exception as exc:  # noqa: BLE001
            log.exception("digests failed")
            report.problems.append(f"digests: {exc}")
        try:
            if rt.settings.redis_url:
                ids = stragglers(rt, now)
                try:
                    if ids:
                        enqueue(rt.settings.redis_url, ids, per_job=20, name=rt.settings.queue_name)
                    report.queued = len(ids)
                except Exception as exc:  # noqa: BLE001 - Redis down: deliver here meanwhile
                    # the workers cannot be reached, so the inbox and e-mail would wait for Redis;
                    # the relay's claims keep a worker that gets the row later from sending it again
                    log.warning("Redis unreachable (%s): the scheduler delivers waiting rows itself", exc)
                    report.relayed = rt.relay(clock=self.clock).run_until_empty().claimed
            else:
                report.relayed = rt.relay(clock=self.clock).run_until_empty().claimed
        except Exception as exc:  # noqa: BLE001
            log.warning("waiting outbox rows could not be sent on: %s", exc)
            report.problems.append(f"outbox: {exc}")
        self._refresh_training(now, report)
        return report

    def _refresh_training(self, now: datetime, report: TickReport) -> None:
        """On LIVE with ``TRACKER_TRAINING_DATABASE_URL``: copy LIVE into TRAINING once a day,
        after ``TRACKER_TRAINING_REFRESH_HOUR`` (see :mod:`engine.training`)."""
        from engine import training

        rt = self.runtime
        try:
            if not training.refresh_due(rt.settings, now):
                return
            done = training.refresh(rt.settings, rt.registry, clock=self.clock)
            report.training = f"TRAINING refreshed from LIVE: {done.items} items in {done.seconds:.1f} s"
            log.info("%s", report.training)
        except Exception as exc:  # noqa: BLE001
            log.warning("the TRAINING refresh failed: %s", exc)
            report.problems.append(f"training refresh: {exc}")

    def run(self, interval: float = 60.0, stop: threading.Event | None = None) -> None:
        """Tick every ``interval`` seconds until ``stop`` is set (or forever)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            report = self.tick()
            log.info(
                "scheduler: %d reminder(s), %d automation run(s), %d digest(s), %d row(s) relayed, %d queued%s",
                report.reminders,
                report.automations,
                report.digests,
                report.relayed,
                report.queued,
                f"; problems: {'; '.join(report.problems)}" if report.problems else "",
            )
            stop.wait(interval)
