"""Import pages: upload a CSV or XLSX file, read the dry run's report, import the valid rows.

The work is done by :mod:`engine.services.import_jobs` (through the import service), as a
background job: the page shows a progress bar that a small script keeps up to date from
``/imports/<id>/progress.json``; without JavaScript the page refreshes itself every few
seconds until the step is over. Only the person who started an import (and administrators)
see it, since the file holds personal data.
"""

from __future__ import annotations

from flask import Blueprint, Response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from engine import permissions
from engine.errors import PermissionDenied, Problem, ValidationFailed
from engine.services import import_jobs
from engine.services.import_files import ENCODINGS, FileRefused
from engine.services.imports import ImportService
from webui import db_session, job_pages, runtime

bp = Blueprint("imports", __name__)

#: what a request body may carry beyond the file itself (the other fields, multipart framing)
FORM_MARGIN = 64 * 1024


def _service() -> ImportService:
    return import_jobs.importer(runtime(), db_session(), current_user.actor)


@bp.app_context_processor
def _nav() -> dict:
    def may_import() -> bool:
        if not current_user.is_authenticated:
            return False
        actor = current_user.actor
        return any(permissions.allows(actor, "items.import", t) for t in runtime().registry.types.values())

    return {"may_import": may_import}


@bp.url_value_preprocessor
def _limit_upload(endpoint: str | None, _values: dict | None) -> None:
    """Runs before the CSRF check reads the form: a body much larger than an import may be
    is cut off there, with a 413, instead of being received in full."""
    if endpoint == "imports.upload":
        request.max_content_length = runtime().settings.import_max_bytes + FORM_MARGIN


def _page(types, *, selected: str = "", encoding: str = "utf-8", error: ValidationFailed | None = None):
    return render_template(
        "imports/index.html",
        types=types,
        selected=selected,
        encoding=encoding,
        encodings=ENCODINGS,
        error=error,
        jobs=import_jobs.recent(runtime(), current_user.actor),
        type_names={t.key: t.name for t in runtime().registry.types.values()},
        max_mb=runtime().settings.import_max_bytes / 1024 / 1024,
        max_rows=runtime().settings.import_max_rows,
    )


def _importable():
    types = _service().importable_types()
    if not types:
        raise PermissionDenied(
            f"{current_user.actor.username} may not import items.",
            "This needs the 'items.import' capability; ask an administrator for a role that has it.",
        )
    return types


@bp.get("/imports")
@login_required
def imports_page():
    """The upload form (``type`` preselects a type) and the user's recent imports."""
    types = _importable()
    return _page(types, selected=request.args.get("type", ""))


@bp.post("/imports")
@login_required
def upload():
    """Read the uploaded file and start its dry run; a file that cannot be imported is
    shown again with what is wrong (422, 413 when too large, 403 for a type not allowed)."""
    types = _importable()
    type_key = request.form.get("type", "").strip()
    encoding = request.form.get("encoding", "utf-8")
    upload_file = request.files.get("file")
    if not type_key or upload_file is None or not upload_file.filename:
        problems = []
        if not type_key:
            problems.append(Problem("type", "Choose what the rows are", "Pick a type from the list."))
        if upload_file is None or not upload_file.filename:
            problems.append(Problem("file", "Choose a file to import", "Pick a .csv or .xlsx file."))
        error = ValidationFailed(problems, "Nothing was imported.")
        return _page(types, selected=type_key, encoding=encoding, error=error), 422
    content = upload_file.read()
    try:
        job = import_jobs.start(
            runtime(), current_user.actor, type_key, upload_file.filename, content, encoding=encoding
        )
    except FileRefused as exc:
        return _page(types, selected=type_key, encoding=encoding, error=exc), exc.status
    return redirect(url_for("imports.job_page", job_id=job.id), 303)


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge):
    limit = runtime().settings.import_max_bytes / 1024 / 1024
    error = FileRefused(
        [
            Problem(
                "file",
                f"The file is larger than {limit:.0f} MB, the most an import may be",
                "Split the rows into smaller files and import them one after the other.",
            )
        ],
        "The file is too large to import.",
        status=413,
    )
    # the form was not read (that is what refusing the body means), so it starts afresh
    return _page(_importable(), error=error), 413


@bp.get("/imports/<int:job_id>")
@login_required
def job_page(job_id: int):
    """Where the import is: a progress bar while a step runs; the dry run's report with the
    button to import the valid rows; the summary at the end."""
    job = import_jobs.get(runtime(), current_user.actor, job_id)
    page_text = request.args.get("page", "1")
    page = int(page_text) if page_text.isdigit() and int(page_text) > 0 else 1
    per_page = import_jobs.PROBLEMS_PER_PAGE
    found, total = import_jobs.problems(runtime(), job, limit=per_page, offset=(page - 1) * per_page)
    pages = max((total + per_page - 1) // per_page, 1)
    tracker_type = runtime().registry.types.get(job.type_key)
    state = import_jobs.progress(job)
    running = job.status in import_jobs.RUNNING and not state["stalled"]
    return render_template(
        "imports/job.html",
        job=job,
        type=tracker_type,
        state=state,
        running=running,
        refresh=job_pages.REFRESH_SECONDS,
        problems=found,
        total_problems=total,
        page=min(page, pages),
        pages=pages,
        step=import_jobs.report_step(job),
        describe=import_jobs.describe(job),
    )


@bp.get("/imports/<int:job_id>/progress.json")
@login_required
def job_progress(job_id: int):
    """How far the job is, for the progress bar: status, rows done of the total, counts."""
    job = import_jobs.get(runtime(), current_user.actor, job_id)
    return job_pages.progress_response(import_jobs.progress(job), url_for("imports.job_page", job_id=job.id))


@bp.post("/imports/<int:job_id>/start")
@login_required
def start(job_id: int):
    """Import the valid rows of a checked job."""
    import_jobs.confirm(runtime(), current_user.actor, job_id)
    return redirect(url_for("imports.job_page", job_id=job_id), 303)


@bp.get("/imports/<int:job_id>/rows-not-imported.csv")
@login_required
def failed_rows(job_id: int):
    """The rows with problems, as uploaded, with the reasons in front: fix them and import
    the file again."""
    job = import_jobs.get(runtime(), current_user.actor, job_id)
    filename, lines = import_jobs.failed_rows_csv(runtime(), job)
    return Response(
        lines,
        mimetype="text/csv",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
