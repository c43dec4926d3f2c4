"""Long work started on the web, run in the background with its progress in the database.

A web request only checks that the work may be done and stores it; the work itself runs on
an RQ worker when ``TRACKER_REDIS_URL`` is set (``tracker worker``), otherwise on a thread of
the web process (also when Redis cannot take it). Its progress is written to the database
as it goes, so any web process can show it: a page polls the progress, then shows the result.

The pieces, used by every kind of such work:

- :func:`launch` runs a module-level function in the background (imports run their steps
  with it, see :mod:`engine.services.import_jobs`);
- :class:`ProgressWriter` writes a job row's progress from its own session, at most every
  :data:`PROGRESS_EVERY` seconds, so neither the page nor the work waits on the other;
- :class:`~engine.models.BackgroundJob` rows hold work of the kinds in :data:`KINDS`:
  :func:`start` stores and launches one, :func:`execute` runs it as the user who started it
  (their permissions apply, checked again when it runs), :func:`get` shows it to them (and to
  administrators) only, :func:`state` says how far it is.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from importlib import import_module
from typing import TYPE_CHECKING, Any

from sqlalchemy import select, update

from engine.errors import NotFound, PermissionDenied, TrackerError
from engine.models import BackgroundJob, User, utcnow
from engine.permissions import Actor

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(__name__)

#: a running job that has not written progress for this long has died (its process ended)
STALLED_AFTER = timedelta(minutes=10)
#: seconds between two progress writes of one job (a change of stage is written at once)
PROGRESS_EVERY = 0.5
#: the longest an RQ worker lets one job run
JOB_TIMEOUT = 4 * 3600
RUNNING = ("queued", "running")


@dataclass(frozen=True)
class Kind:
    """A kind of background work: its name in messages, and the ``module:function`` that does
    it. The function takes the runtime and a :class:`Run` and returns the result (JSON)."""

    name: str
    runner: str


#: every kind of :class:`~engine.models.BackgroundJob`, by key
KINDS: dict[str, Kind] = {
    "ilr_export": Kind("ILR export", "engine.ilr.export_job:run"),
    "type_migration": Kind("migration", "engine.type_migration_job:run"),
}


# -- running anything in the background -------------------------------------------------------------


def launch(runtime: Runtime, target: Callable[..., Any], *args: Any, description: str) -> None:
    """Run ``target(runtime, *args)`` in the background: as an RQ job when Redis is configured
    (``target`` is then found again by its module and name: it must be a module-level function
    of the engine), else on a thread of this process. If Redis cannot take it, the thread runs it."""
    url = runtime.settings.redis_url
    if url:
        from engine.jobs import queue

        try:
            queue(url, runtime.settings.queue_name).enqueue(
                run_in_worker,
                f"{target.__module__}:{target.__qualname__}",
                *args,
                job_timeout=JOB_TIMEOUT,
                result_ttl=3600,
                description=description,
            )
            return
        except Exception as exc:  # noqa: BLE001 - Redis down: run it here rather than not at all
            log.warning("Redis could not take %s (%s); running it in this process", description, exc)
    thread = threading.Thread(target=target, args=(runtime, *args), name=description[:60], daemon=True)
    thread.start()


def run_in_worker(target: str, *args: Any) -> Any:
    """RQ job: run the engine function named ``module:function`` with this worker's runtime."""
    from engine.jobs import current_runtime

    module, _, name = target.partition(":")
    if not module.startswith("engine."):
        raise ValueError(f"{target} is not background work of the engine")
    return getattr(import_module(module), name)(current_runtime(), *args)


def failure_message(exc: BaseException) -> str:
    """Why work stopped, in words for its page: an engine error's message and advice, or the
    unexpected error itself."""
    if isinstance(exc, TrackerError):
        return str(exc)
    return f"An unexpected error stopped it: {exc.__class__.__name__}: {exc}"


def mark_failed(runtime: Runtime, model: type, job_id: int, message: str) -> None:
    """Record on the job row (of ``model``: a table of jobs) that it stopped, and why."""
    with runtime.session() as session:
        session.execute(
            update(model)
            .where(model.id == job_id)
            .values(status="failed", error=message[:4000], finished_at=utcnow(), updated_at=utcnow())
        )
        session.commit()


def percent(done: int, total: int) -> int:
    """``done`` of ``total`` as a whole percentage (100 when there is nothing to do)."""
    return min(100, round(100 * done / total)) if total else 100


def stalled_since(last_sign_of_life: datetime, now: datetime | None = None) -> bool:
    """True when work last wrote progress longer than :data:`STALLED_AFTER` ago."""
    return last_sign_of_life < (now or utcnow()) - STALLED_AFTER


class ProgressWriter:
    """Writes progress to one job row (of ``model``) on a session of its own, so the page sees
    it while the work's own transaction is still open. A write happens at most every
    ``every`` seconds unless another column than ``processed`` changes or ``force`` is given;
    use it as a context manager (its session is closed at the end).

    Args:
        runtime: where the database is.
        model: the job table (it has ``id``, ``processed`` and ``updated_at``).
        job_id: the row to write.
        every: seconds between two writes of ``processed`` alone.
        clock: a monotonic clock in seconds.
    """

    def __init__(
        self,
        runtime: Runtime,
        model: type,
        job_id: int,
        *,
        every: float = PROGRESS_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.model, self.job_id, self.every, self.clock = model, job_id, every, clock
        self.session = runtime.session()
        self._written_at: float | None = None
        self._last: dict[str, Any] = {}

    def __enter__(self) -> ProgressWriter:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.session.close()

    def __call__(self, processed: int, *, force: bool = False, **values: Any) -> bool:
        """Record ``processed`` (and the other columns in ``values``); True when it was written."""
        now = self.clock()
        changed = any(self._last.get(name) != value for name, value in values.items())
        due = self._written_at is None or now - self._written_at >= self.every
        if not (force or changed or due):
            return False
        self.write(processed=processed, **values)
        self._written_at = now
        return True

    def write(self, **values: Any) -> None:
        """Write these columns now."""
        model = self.model
        self.session.execute(update(model).where(model.id == self.job_id).values(**values, updated_at=utcnow()))
        self.session.commit()
        self._last.update({k: v for k, v in values.items() if k != "processed"})


# -- background jobs ---------------------------------------------------------------------------------


@dataclass
class Run:
    """What a kind's runner gets: the job's parameters, the actor who started it (rebuilt from
    their user when the work runs, so a role taken away meanwhile counts), and the progress."""

    job_id: int
    params: dict[str, Any]
    actor: Actor
    writer: ProgressWriter
    stage_name: str = ""
    unit: str = ""
    total: int = 0

    def stage(self, name: str, total: int, unit: str) -> None:
        """A new stage of the work begins: ``total`` ``unit`` to go through (written at once)."""
        self.stage_name, self.unit, self.total = name, unit, total
        self.writer(0, force=True, stage=name[:200], unit=unit[:32], total=total)

    def progress(self, done: int, total: int | None = None) -> None:
        """``done`` of the stage's ``total`` are through (the shape of the engine's progress
        callbacks, ``progress(done, total)``); the last one is always written."""
        if total is not None and total != self.total:
            self.total = total
            self.writer(done, force=True, total=total)
            return
        self.writer(done, force=done >= self.total)


def start(
    runtime: Runtime,
    actor: Actor,
    kind: str,
    *,
    params: dict[str, Any],
    subject: str = "",
    stage: str = "",
    unit: str = "",
    total: int = 0,
) -> BackgroundJob:
    """Store a job of ``kind`` for ``actor`` (who must be a user: the work runs as them) and
    launch it. The caller has checked the work may be done; the runner checks it again."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind of background work: {kind}")
    if actor.user_id is None:
        raise PermissionDenied(
            "Background work runs as the user who starts it, so it is started by a signed-in user.",
            "Use the command line to run it as the system.",
        )
    with runtime.session() as session:
        job = BackgroundJob(
            kind=kind,
            user_id=actor.user_id,
            subject=subject[:200],
            params=params,
            status="queued",
            stage=stage[:200],
            unit=unit[:32],
            total=total,
        )
        session.add(job)
        session.commit()
        job_id = job.id
    launch(runtime, execute, job_id, description=f"{KINDS[kind].name} #{job_id}")
    return get(runtime, actor, job_id, kind)


def get(runtime: Runtime, actor: Actor, job_id: int, kind: str, *, subject: str | None = None) -> BackgroundJob:
    """The job of ``kind`` (about ``subject``, when given), if ``actor`` started it or is an
    administrator; NotFound otherwise, the same whether it exists or not."""
    with runtime.session() as session:
        job = session.get(BackgroundJob, job_id)
        mine = job is not None and (actor.is_admin or (actor.user_id is not None and job.user_id == actor.user_id))
        if not mine or job.kind != kind or (subject is not None and job.subject != subject):
            name = KINDS[kind].name if kind in KINDS else "job"
            raise NotFound(f"There is no {name} #{job_id} of yours.", "Start it again from its page.")
        session.expunge(job)
        return job


def recent(
    runtime: Runtime, actor: Actor, kind: str, *, subject: str | None = None, limit: int = 10
) -> list[BackgroundJob]:
    """The actor's latest jobs of ``kind`` (an administrator's: everyone's), newest first."""
    with runtime.session() as session:
        stmt = select(BackgroundJob).where(BackgroundJob.kind == kind)
        if subject is not None:
            stmt = stmt.where(BackgroundJob.subject == subject)
        if not actor.is_admin:
            stmt = stmt.where(BackgroundJob.user_id == actor.user_id)
        jobs = list(session.scalars(stmt.order_by(BackgroundJob.id.desc()).limit(limit)))
        session.expunge_all()
        return jobs


def running(runtime: Runtime, kind: str, subject: str) -> BackgroundJob | None:
    """A job of ``kind`` about ``subject`` that is queued or running (and has not died), by anyone."""
    with runtime.session() as session:
        stmt = (
            select(BackgroundJob)
            .where(BackgroundJob.kind == kind, BackgroundJob.subject == subject, BackgroundJob.status.in_(RUNNING))
            .order_by(BackgroundJob.id.desc())
        )
        for job in session.scalars(stmt):
            if not stalled(job):
                session.expunge(job)
                return job
        return None


def stalled(job: BackgroundJob, now: datetime | None = None) -> bool:
    """True when the job's work has stopped without finishing: running without a sign of life
    for :data:`STALLED_AFTER`, or still queued that long after it was started (no worker)."""
    if job.status == "running":
        return stalled_since(job.updated_at, now)
    return job.status == "queued" and stalled_since(job.created_at, now)


def state(job: BackgroundJob, now: datetime | None = None) -> dict[str, Any]:
    """How far the job is, for its page and its progress endpoint."""
    is_stalled = stalled(job, now)
    done = min(job.processed or 0, job.total) if job.total else job.processed or 0
    share = percent(done, job.total) if job.status != "queued" else 0
    if job.status == "queued":
        text = "No worker has started it yet." if is_stalled else "Waiting to start…"
    elif job.status == "running":
        text = f"{share}% · {done:,} of {job.total:,} {job.unit}".rstrip() if job.total else "Starting…"
    elif job.status == "done":
        text = "Finished."
    else:
        text = f"Stopped: {job.error}"
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "stage": job.stage,
        "unit": job.unit,
        "processed": done,
        "total": job.total,
        "percent": share,
        "finished": job.status in ("done", "failed"),
        "stalled": is_stalled,
        "error": job.error,
        "text": text,
    }


def execute(runtime: Runtime, job_id: int) -> str:
    """Run a stored job to its end, as the user who started it; its outcome (``done`` with the
    result, or ``failed`` with the reason) is recorded on the job, never raised. A job already
    taken by another worker is left alone."""
    with runtime.session() as session:
        claimed = session.execute(
            update(BackgroundJob)
            .where(BackgroundJob.id == job_id, BackgroundJob.status == "queued")
            .values(status="running", updated_at=utcnow())
        ).rowcount
        session.commit()
    if not claimed:
        return f"background job #{job_id} was not waiting to run"
    try:
        outcome = _execute(runtime, job_id)
    except Exception as exc:  # noqa: BLE001 - whatever happens, the page must learn of it
        if not isinstance(exc, TrackerError):
            log.exception("background job #%s failed", job_id)
        message = failure_message(exc)
        mark_failed(runtime, BackgroundJob, job_id, message)
        return f"background job #{job_id} failed: {message}"
    log.info("background job #%s: %s", job_id, outcome)
    return outcome


def _execute(runtime: Runtime, job_id: int) -> str:
    runtime.refresh_definitions()  # a worker runs with what was published up to now
    with runtime.session() as session:
        job = session.get(BackgroundJob, job_id)
        kind = KINDS.get(job.kind) if job else None
        if job is None or kind is None:
            raise TrackerError(f"Background job #{job_id} is of no kind this version knows.")
        user = session.get(User, job.user_id) if job.user_id else None
        if user is None or not user.active:
            raise TrackerError(
                f"The user who started this {kind.name} is no longer active, so it was not run.",
                "Sign in and start it again.",
            )
        actor = Actor.for_user(user, runtime.registry)
        params, stage_name, unit, total = dict(job.params or {}), job.stage, job.unit, job.total
    module, _, name = kind.runner.partition(":")
    runner = getattr(import_module(module), name)
    with ProgressWriter(runtime, BackgroundJob, job_id) as writer:
        run = Run(job_id, params, actor, writer, stage_name, unit, total)
        result = runner(runtime, run)
        writer.write(status="done", result=result, processed=BackgroundJob.total, finished_at=utcnow())
    return f"{kind.name} done"
