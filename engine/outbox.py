"""The outbox relay: delivers the side effects a change wrote, at least once, never twice.

Rows move ``pending`` -> ``processing`` -> ``done``. Several relays may run at once (web
processes, RQ workers, the scheduler): a relay *claims* rows with one atomic statement
(``FOR UPDATE SKIP LOCKED`` on PostgreSQL; SQLite runs one writer at a time) and holds
each claim for a lease. A relay that dies mid-row leaves the claim to expire, and the
row is claimed again; the per-recipient :class:`~engine.models.Delivery` records make
the second pass skip whatever the first one already delivered.

A row whose delivery fails goes back to ``pending`` with a later ``available_at``
(:class:`RetryPolicy`); after the last retry it is ``dead``: listed for admins, counted by
``tracker status`` and ``/health``, and put back to ``pending`` by :func:`retry`.

The one window left: an e-mail accepted by the SMTP server just before the relay dies,
before the delivery is recorded as sent, goes again. It carries the same Message-ID, so
mail programs show it once.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import and_, event, func, inspect, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from engine import permissions
from engine.config import Settings
from engine.definitions.model import Registry
from engine.errors import Conflict, NotFound
from engine.mail import Mailer
from engine.models import Outbox, utcnow
from engine.notifications import Channel, Notifier
from engine.permissions import Actor

if TYPE_CHECKING:
    from engine.plugins import PluginHost

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a failing row is tried again, like rq's ``Retry(max=3, interval=[...])``.

    Args:
        max: retries after the first attempt (at least 1).
        intervals: seconds to wait before each retry; the last one repeats.
    """

    max: int = 3
    intervals: tuple[int, ...] = (10, 60, 300)

    def __post_init__(self) -> None:
        if self.max < 1:
            raise ValueError("max: a retry policy needs at least one retry")
        if not self.intervals or any(i < 0 for i in self.intervals):
            raise ValueError("intervals: give one or more waits of 0 seconds or more")

    def delay(self, attempt: int) -> int | None:
        """Seconds to wait after failed attempt ``attempt`` (1 = the first), or None when
        that was the last one and the row is dead-lettered."""
        if attempt > self.max:
            return None
        return self.intervals[min(attempt, len(self.intervals)) - 1]


@dataclass
class RelayStats:
    """What one relay run did; ``retry_at`` says when each retried row is due again."""

    claimed: int = 0
    done: int = 0
    retried: int = 0
    dead: int = 0
    retry_at: dict[int, datetime] = field(default_factory=dict)

    def add(self, other: RelayStats) -> None:
        self.claimed += other.claimed
        self.done += other.done
        self.retried += other.retried
        self.dead += other.dead
        self.retry_at.update(other.retry_at)


def worker_name() -> str:
    """A name unique to this process, for ``claimed_by``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def claimable(now: datetime):
    """Rows a relay may take at ``now``: pending and due, or claimed by a relay whose lease ran out."""
    return or_(
        and_(Outbox.status == "pending", Outbox.available_at <= now),
        and_(Outbox.status == "processing", Outbox.locked_until < now),
    )


class Relay:
    """Claims outbox rows and delivers them through :class:`~engine.notifications.Notifier`.

    Args:
        sessions: makes a session per run; each delivery is committed as it happens.
        registry, settings: passed on to the notifier (links, sender, templates).
        worker: the name recorded on claims (default: host, process id and a random part).
        policy: retries and backoff.
        lease_seconds: how long a claim holds before another relay may take the row (default:
            ``TRACKER_OUTBOX_LEASE_SECONDS``); longer than the slowest batch takes to deliver.
        clock: returns "now" as naive UTC; tests pass their own.
        mailer: the SMTP mailer; by default built from ``settings.smtp_url`` (None: no e-mail).
        channels: delivery channels; by default the inbox and e-mail.
        plugins: the plugin host whose lifecycle hooks ``item_event`` and ``plugin_event``
            rows run (see :meth:`engine.plugins.PluginHost.handle_outbox`); None runs none.
    """

    def __init__(
        self,
        sessions: Callable[[], Session],
        registry: Registry,
        settings: Settings,
        *,
        worker: str | None = None,
        policy: RetryPolicy | None = None,
        lease_seconds: float | None = None,
        clock: Callable[[], datetime] = utcnow,
        mailer: Mailer | None = None,
        channels: list[Channel] | None = None,
        plugins: PluginHost | None = None,
    ) -> None:
        self.sessions = sessions
        self.plugins = plugins
        self.registry = registry
        self.settings = settings
        self.worker = worker or worker_name()
        self.policy = policy or RetryPolicy()
        self.lease = timedelta(seconds=settings.outbox_lease_seconds if lease_seconds is None else lease_seconds)
        self.clock = clock
        self.mailer = mailer if mailer is not None else Mailer.from_settings(settings.smtp_url, settings.mail_from)
        self.channels = channels

    # -- claiming ------------------------------------------------------------------------------

    def claim(self, session: Session, *, limit: int = 50, ids: Iterable[int] | None = None) -> list[int]:
        """Claim up to ``limit`` due rows (only among ``ids`` when given), oldest first, and
        commit; returns their ids. Rows another relay holds are skipped, never waited for."""
        now = self.clock()
        candidates = select(Outbox.id).where(claimable(now))
        if ids is not None:
            candidates = candidates.where(Outbox.id.in_(list(ids)))
        candidates = candidates.order_by(Outbox.id).limit(limit).with_for_update(skip_locked=True)
        stmt = (
            update(Outbox)
            .where(Outbox.id.in_(candidates.scalar_subquery()), claimable(now))
            .values(
                status="processing",
                claimed_by=self.worker,
                locked_until=now + self.lease,
                attempts=Outbox.attempts + 1,
            )
            .returning(Outbox.id)
            .execution_options(synchronize_session=False)
        )
        claimed = sorted(session.execute(stmt).scalars())
        session.commit()
        if claimed:
            log.debug("%s claimed outbox rows %s", self.worker, claimed)
        return claimed

    # -- running -------------------------------------------------------------------------------

    def deliver_ids(self, ids: Iterable[int], *, keep_open: bool = False) -> RelayStats:
        """Claim and deliver these rows, if they are due and nobody holds them.
        ``keep_open`` keeps the SMTP connection for the next call (a worker's next job)."""
        ids = list(ids)
        stats = RelayStats()
        if not ids:
            return stats
        with self.sessions() as session:
            for start in range(0, len(ids), 200):
                claimed = self.claim(session, limit=200, ids=ids[start : start + 200])
                stats.add(self._process_all(session, claimed))
        if not keep_open:
            self.close()
        return stats

    def run_once(self, limit: int = 50) -> RelayStats:
        """Claim one batch of due rows and deliver them."""
        with self.sessions() as session:
            stats = self._process_all(session, self.claim(session, limit=limit))
        self.close()
        return stats

    def run_until_empty(self, limit: int = 50) -> RelayStats:
        """Deliver batches until no row is due (rows retried meanwhile wait for their time)."""
        stats = RelayStats()
        with self.sessions() as session:
            while True:
                claimed = self.claim(session, limit=limit)
                if not claimed:
                    break
                stats.add(self._process_all(session, claimed))
        self.close()
        return stats

    def close(self) -> None:
        """Close the SMTP connection kept open between messages."""
        if self.mailer is not None:
            self.mailer.close()

    def _process_all(self, session: Session, claimed: list[int]) -> RelayStats:
        stats = RelayStats(claimed=len(claimed))
        for outbox_id in claimed:
            outcome, when = self.process(session, outbox_id)
            if outcome == "done":
                stats.done += 1
            elif outcome == "retry":
                stats.retried += 1
                stats.retry_at[outbox_id] = when
            elif outcome == "dead":
                stats.dead += 1
        return stats

    def process(self, session: Session, outbox_id: int) -> tuple[str, datetime | None]:
        """Deliver one row this relay has claimed. Returns ``("done", None)``,
        ``("retry", when)``, ``("dead", None)`` or ``("skipped", None)`` when the claim is
        no longer ours."""
        row = session.get(Outbox, outbox_id, populate_existing=True)
        if row is None or row.status != "processing" or row.claimed_by != self.worker:
            return "skipped", None
        notifier = Notifier(
            session, self.registry, self.settings, mailer=self.mailer, channels=self.channels, clock=self.clock
        )
        try:
            notifier.deliver(row)
            if self.plugins is not None:
                self.plugins.handle_outbox(session, row, self.registry)
            if row.kind == "item_event":
                self._run_automations(row)
        except Exception as exc:  # noqa: BLE001 - every failure is recorded and retried
            session.rollback()
            return self._failed(session, outbox_id, exc)
        mine = and_(Outbox.id == outbox_id, Outbox.status == "processing", Outbox.claimed_by == self.worker)
        session.execute(
            update(Outbox)
            .where(mine)
            .values(status="done", processed_at=self.clock(), locked_until=None, last_error=None)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        return "done", None

    def _run_automations(self, row: Outbox) -> None:
        """The process automations an item event triggers (see :mod:`engine.services.automation`),
        in a session of their own: each action commits as it is done, and is done once."""
        from engine.services.automation import AutomationService

        with self.sessions() as session:
            runner = AutomationService(session, self.registry, clock=self.clock, zone=self.settings.timezone)
            runner.on_event(row.id, row.payload or {}, row.created_at)

    def _failed(self, session: Session, outbox_id: int, exc: Exception) -> tuple[str, datetime | None]:
        row = session.get(Outbox, outbox_id, populate_existing=True)
        if row is None or row.status != "processing" or row.claimed_by != self.worker:
            return "skipped", None
        now = self.clock()
        delay = self.policy.delay(row.attempts)
        error = f"attempt {row.attempts}: {exc}"[:2000]
        if delay is None:
            values = {"status": "dead", "last_error": error, "locked_until": None, "claimed_by": None}
            log.error("outbox %s dead-lettered after %s attempts: %s", outbox_id, row.attempts, exc)
            outcome, when = "dead", None
        else:
            when = now + timedelta(seconds=delay)
            values = {"status": "pending", "last_error": error, "available_at": when, "locked_until": None}
            values["claimed_by"] = None
            log.warning("outbox %s attempt %s failed, retry in %ss: %s", outbox_id, row.attempts, delay, exc)
            outcome = "retry"
        mine = and_(Outbox.id == outbox_id, Outbox.status == "processing", Outbox.claimed_by == self.worker)
        session.execute(update(Outbox).where(mine).values(**values).execution_options(synchronize_session=False))
        session.commit()
        return outcome, when


# -- after commit ------------------------------------------------------------------------------

_KEY, _READY = "tracker.outbox_ids", "tracker.outbox_committed"


def track_commits(factory: sessionmaker, on_commit: Callable[[list[int]], None]) -> None:
    """After each commit of a session made by ``factory`` that inserted outbox rows (or put
    one back to ``pending``), call ``on_commit(ids)`` once the session has given its
    connection back. A rollback forgets them: nothing is sent for a change that did not
    happen. ``on_commit`` failing is logged, never raised: the change is already saved,
    and the rows wait for the scheduler."""

    def collect(session: Session, _flush_context) -> None:
        found = [o.id for o in session.new if isinstance(o, Outbox)]
        for obj in session.dirty:
            if isinstance(obj, Outbox) and "pending" in inspect(obj).attrs.status.history.added:
                found.append(obj.id)
        if found:
            session.info.setdefault(_KEY, []).extend(found)

    def forget(session: Session, _previous=None) -> None:
        session.info.pop(_KEY, None)

    def committed(session: Session) -> None:
        ids = session.info.pop(_KEY, None)
        if ids:
            session.info.setdefault(_READY, []).extend(ids)

    def ended(session: Session, transaction) -> None:
        if transaction.parent is not None:
            return
        ids = session.info.pop(_READY, None)
        if not ids:
            return
        try:
            on_commit(sorted(set(ids)))
        except Exception:  # noqa: BLE001 - see the docstring
            log.exception("outbox rows %s were saved but could not be sent on now; they wait for the scheduler", ids)

    event.listen(factory, "after_flush", collect)
    event.listen(factory, "after_soft_rollback", forget)
    event.listen(factory, "after_commit", committed)
    event.listen(factory, "after_transaction_end", ended)


# -- for operators -----------------------------------------------------------------------------


def counts(session: Session) -> dict[str, int]:
    """How many rows wait (``pending``, including those being delivered) and how many are dead."""

    def count(*statuses: str) -> int:  # each an index range scan on (status, available_at)
        return session.scalar(select(func.count()).select_from(Outbox).where(Outbox.status.in_(statuses))) or 0

    return {"pending": count("pending", "processing"), "dead": count("dead")}


def listing(session: Session, status: str | None = None, *, limit: int = 100) -> list[Outbox]:
    """Outbox rows, newest first, optionally only those with ``status``."""
    stmt = select(Outbox).order_by(Outbox.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(Outbox.status == status)
    return list(session.scalars(stmt))


def retry(session: Session, outbox_id: int, actor: Actor, *, clock: Callable[[], datetime] = utcnow) -> Outbox:
    """Put a dead-lettered row back to ``pending`` with a fresh set of retries, and commit.

    Needs ``users.admin``. Raises NotFound for an unknown row and Conflict for a row that
    is not dead (it is delivered, or will be, without help).
    """
    permissions.require(actor, "users.admin")
    row = session.get(Outbox, outbox_id)
    if row is None:
        raise NotFound(f"There is no outbox message #{outbox_id}.", "Check the number in the dead-letter list.")
    if row.status != "dead":
        raise Conflict(
            f"Outbox message #{outbox_id} is {row.status}, not dead-lettered, so there is nothing to retry.",
            "Only dead-lettered messages need a retry; the others are delivered without help.",
        )
    row.status = "pending"
    row.attempts = 0
    row.available_at = clock()
    row.claimed_by = None
    row.locked_until = None
    session.commit()
    return row
