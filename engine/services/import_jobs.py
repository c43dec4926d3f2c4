"""Imports started from the web page, run as background jobs with their progress in the database.

:func:`start` reads the file and refuses a bad one at once (before anything is stored),
then keeps the file in an :class:`~engine.models.ImportJob` and runs the dry run as a job;
:func:`confirm` runs the import itself as a second job. A job runs on an RQ worker when
``TRACKER_REDIS_URL`` is set (``tracker worker``), otherwise on a thread of this process
(see :func:`engine.background.launch`). Both steps go through
:class:`~engine.services.imports.ImportService`, so they validate, write and report exactly
as ``tracker import`` does; each writes its progress (rows done) after every chunk, which the
page shows as a progress bar.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from engine import background
from engine.errors import Conflict, NotFound, Problem, TrackerError
from engine.models import ImportJob, ImportProblem, User, utcnow
from engine.permissions import Actor
from engine.services.import_files import FileRefused, problem_rows_csv, read_table
from engine.services.import_workers import default_workers
from engine.services.imports import ImportService, RowProblem, reasons_by_line

if TYPE_CHECKING:
    from engine.runtime import Runtime

log = logging.getLogger(__name__)

RUNNING = ("checking", "importing")
#: most rows of a failed-rows file shown at once on the page
PROBLEMS_PER_PAGE = 50


def importer(runtime: Runtime, session: Session, actor: Actor, *, workers: int = 1) -> ImportService:
    """The import service for ``actor`` with this installation's limits; with ``workers`` > 1
    rows are validated in forked processes where that is safe (see
    :func:`engine.services.import_workers.may_fork`)."""
    return ImportService(
        runtime.items(session, actor),
        max_rows=runtime.settings.import_max_rows,
        formats=runtime.plugins.import_formats(),
        workers=workers,
    )


def check_size(runtime: Runtime, filename: str, size: int) -> None:
    """Refuse a file over ``TRACKER_IMPORT_MAX_BYTES`` (413) before reading it."""
    limit = runtime.settings.import_max_bytes
    if size > limit:
        raise FileRefused(
            [
                Problem(
                    "",
                    f"{filename or 'The file'} is {size / 1024 / 1024:.1f} MB; imports take at most "
                    f"{limit / 1024 / 1024:.0f} MB.",
                    "Split the rows into smaller files and import them one after the other.",
                )
            ],
            "The file is too large to import.",
            status=413,
        )


def start(
    runtime: Runtime, actor: Actor, type_key: str, filename: str, content: bytes, *, encoding: str = "utf-8"
) -> ImportJob:
    """Check the actor may import ``type_key`` and that the file can be read and its columns
    mapped (raising PermissionDenied, NotFound or FileRefused, with nothing stored), then
    keep it as a job and start its dry run."""
    check_size(runtime, filename, len(content))
    with runtime.session() as session:
        plan = importer(runtime, session, actor).open(type_key, filename, content, encoding=encoding)
        job = ImportJob(
            user_id=actor.user_id,
            type_key=type_key,
            filename=filename[:255],
            encoding=encoding,
            content=content,
            status="checking",
            total_rows=plan.total,
        )
        session.add(job)
        session.commit()
        job_id = job.id
    launch(runtime, job_id, "check")
    return get(runtime, actor, job_id)


def confirm(runtime: Runtime, actor: Actor, job_id: int) -> ImportJob:
    """Start importing the rows of a checked job. Raises NotFound, PermissionDenied (the
    actor may no longer import the type) or Conflict (the job is not waiting to be imported)."""
    with runtime.session() as session:
        job = _own(session, actor, job_id)
        importer(runtime, session, actor).require_import(job.type_key)
        if job.status != "checked":
            raise Conflict(
                f"Import #{job.id} is {describe(job)}, so it cannot be started again.",
                "Upload the file again to import it once more; rows already imported are reported as duplicates.",
            )
        changed = session.execute(
            update(ImportJob)
            .where(ImportJob.id == job_id, ImportJob.status == "checked")
            .values(status="importing", processed=0, updated_at=utcnow())
        ).rowcount
        session.commit()
        if not changed:  # a second click won the race
            raise Conflict(f"Import #{job_id} has already been started.", "Follow its progress on its page.")
    launch(runtime, job_id, "import")
    return get(runtime, actor, job_id)


def get(runtime: Runtime, actor: Actor, job_id: int) -> ImportJob:
    """The job, if the actor started it (or is an administrator); NotFound otherwise."""
    with runtime.session() as session:
        job = _own(session, actor, job_id)
        session.expunge(job)
        return job


def recent(runtime: Runtime, actor: Actor, limit: int = 20) -> list[ImportJob]:
    """The actor's latest imports (an administrator's: everyone's), newest first."""
    with runtime.session() as session:
        stmt = select(ImportJob).order_by(ImportJob.id.desc()).limit(limit)
        if not actor.is_admin:
            stmt = stmt.where(ImportJob.user_id == actor.user_id)
        jobs = list(session.scalars(stmt))
        session.expunge_all()
        return jobs


def _own(session: Session, actor: Actor, job_id: int) -> ImportJob:
    job = session.get(ImportJob, job_id)
    if job is None or not (actor.is_admin or (actor.user_id is not None and job.user_id == actor.user_id)):
        raise NotFound(f"There is no import #{job_id} of yours.", "Your imports are listed on the Imports page.")
    return job


def problems(runtime: Runtime, job: ImportJob, *, limit: int = PROBLEMS_PER_PAGE, offset: int = 0):
    """A page of the problems of the job's latest step, by line, and how many there are."""
    step = report_step(job)
    with runtime.session() as session:
        where = (ImportProblem.job_id == job.id, ImportProblem.step == step)
        total = session.scalar(select(func.count()).select_from(ImportProblem).where(*where)) or 0
        stmt = select(ImportProblem).where(*where).order_by(ImportProblem.line, ImportProblem.id)
        found = list(session.scalars(stmt.limit(limit).offset(offset)))
        session.expunge_all()
        return found, total


def report_step(job: ImportJob) -> str:
    """Whose problems the page shows: the import's once it ran, else the dry run's."""
    return "import" if job.status in ("importing", "done") else "check"


def describe(job: ImportJob) -> str:
    return {
        "checking": "being checked",
        "checked": "checked and waiting to be imported",
        "importing": "being imported",
        "done": "imported",
        "failed": "stopped",
    }.get(job.status, job.status)


def stalled(job: ImportJob) -> bool:
    """True when the job's process has stopped writing progress: it died with its rows
    half done (each finished batch is kept; the rest were not imported)."""
    return job.status in RUNNING and background.stalled_since(job.updated_at)


def progress(job: ImportJob) -> dict[str, Any]:
    """What the progress endpoint answers: the step, rows done of the total, the counts."""
    total = job.total_rows or 0
    done = min(job.processed or 0, total)
    share = background.percent(done, total)
    return {
        "id": job.id,
        "status": job.status,
        "stalled": stalled(job),
        "finished": job.status in ("checked", "done", "failed"),
        "processed": done,
        "total": total,
        "percent": share,
        "text": f"{share}% · {done:,} of {total:,} rows",
        "valid": job.valid_rows,
        "invalid": job.invalid_rows,
        "duplicate_rows": job.duplicate_rows,
        "created": job.created,
        "duplicates": job.duplicates,
        "failed": job.failed,
        "error": job.error,
    }


def failed_rows_csv(runtime: Runtime, job: ImportJob) -> tuple[str, Iterator[str]]:
    """The file name and the lines of a CSV of the rows that were not imported: their
    line in the uploaded file, the reasons, then the row as it was uploaded."""
    step = report_step(job)
    with runtime.session() as session:
        content = session.scalar(select(ImportJob.content).where(ImportJob.id == job.id))
        stmt = (
            select(ImportProblem)
            .where(ImportProblem.job_id == job.id, ImportProblem.step == step)
            .order_by(ImportProblem.line, ImportProblem.id)
        )
        reasons = reasons_by_line(session.scalars(stmt))
    table = read_table(
        job.filename,
        content,
        encoding=job.encoding,
        max_rows=max(job.total_rows, 1),
        formats=runtime.plugins.import_formats(),
    )
    stem = job.filename.rsplit(".", 1)[0] or "import"
    return f"{stem}-rows-not-imported.csv", problem_rows_csv(table, reasons)


# -- running ---------------------------------------------------------------------------------------------


def launch(runtime: Runtime, job_id: int, step: str) -> None:
    """Run a step (``check`` or ``import``) of the job in the background: as an RQ job when
    Redis is configured, else on a thread of this process."""
    background.launch(runtime, run, job_id, step, description=f"import #{job_id}: {step}")


def run(runtime: Runtime, job_id: int, step: str) -> str:
    """Run one step of a job to its end, recording progress, problems and counts. A failure
    is recorded on the job (``failed`` with the reason), never raised."""
    try:
        return _run(runtime, job_id, step)
    except Exception as exc:  # noqa: BLE001 - whatever happens, the page must learn of it
        log.exception("import #%s (%s) failed", job_id, step)
        message = exc.message if isinstance(exc, TrackerError) else background.failure_message(exc)
        background.mark_failed(runtime, ImportJob, job_id, message)
        return f"import #{job_id} failed: {message}"


def _run(runtime: Runtime, job_id: int, step: str) -> str:
    with runtime.session() as session, background.ProgressWriter(runtime, ImportJob, job_id) as writer:
        job = session.get(ImportJob, job_id)
        if job is None:
            return f"import #{job_id} no longer exists"
        user = session.get(User, job.user_id) if job.user_id else None
        if user is None or not user.active:
            raise TrackerError(
                "The user who started the import is no longer active.", "Sign in and upload the file again."
            )
        actor = Actor.for_user(user, runtime.registry)
        type_key, filename, encoding, content = job.type_key, job.filename, job.encoding, job.content
        session.expunge(job)
        # on an RQ worker the job has its process to itself; on a web server's thread it has not
        service = importer(runtime, session, actor, workers=default_workers())
        plan = service.open(type_key, filename, content, encoding=encoding)
        del content

        def record_progress(done: int, total: int) -> None:
            writer(done, force=done >= total)

        if step == "check":
            report = service.check(plan, progress=record_progress)
            _store(writer.session, job_id, "check", report.problems)
            values = {
                "status": "checked",
                "total_rows": report.total,
                "valid_rows": report.valid,
                "invalid_rows": report.invalid_lines,
                "duplicate_rows": report.duplicate_lines,
            }
            outcome = f"{report.valid} of {report.total} rows valid"
        else:
            on_committed = outbox_sender(runtime) if runtime.settings.redis_url else None
            summary = service.run(plan, progress=record_progress, on_committed=on_committed)
            _store(writer.session, job_id, "import", summary.problems)
            values = {
                "status": "done",
                "created": summary.created,
                "duplicates": summary.duplicates,
                "failed": summary.failed,
            }
            outcome = f"{summary.created} created, {summary.duplicates} duplicates, {summary.failed} failed"
        writer.write(**values, processed=plan.total, finished_at=utcnow())
    log.info("import #%s %s: %s", job_id, step, outcome)
    return outcome


def outbox_sender(runtime: Runtime):
    from engine.jobs import enqueue

    def send_on(ids: list[int]) -> None:
        try:
            enqueue(runtime.settings.redis_url, ids, name=runtime.settings.queue_name)
        except Exception as exc:  # noqa: BLE001 - the rows are saved; the scheduler sends them on
            log.warning("imported rows' outbox rows wait for the scheduler: %s", exc)

    return send_on


def _store(session: Session, job_id: int, step: str, found: list[RowProblem], batch: int = 1000) -> None:
    session.execute(ImportProblem.__table__.delete().where(ImportProblem.job_id == job_id, ImportProblem.step == step))
    for start in range(0, len(found), batch):
        session.execute(
            insert(ImportProblem),
            [
                {
                    "job_id": job_id,
                    "step": step,
                    "line": p.line,
                    "column": p.column[:200],
                    "message": p.message,
                    "advice": p.advice,
                    "kind": p.kind,
                    "existing_id": p.existing_id,
                }
                for p in found[start : start + batch]
            ],
        )
    session.commit()
