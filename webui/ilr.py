"""ILR export pages: make the ILR XML file of the ILR records a list shows, see who was left out
and why, and download the files made (``exports.bulk`` only, from allowed addresses only).

The "Export ILR XML" button of the ILR list leads here with the list's filters. The file is made
in the background (:mod:`engine.ilr.export_job`): the form starts it and leads to its page,
``/ilr/jobs/<id>``, where a progress bar follows it (polling ``progress.json``; without
JavaScript the page refreshes itself) until the page shows the result. Only the person who
started an export (and administrators) see its page. Files are kept in
``<instance>/exports/ilr/`` under the names ESFA expects, and downloaded from
``/ilr/files/<name>``; every file made and every download is recorded (see
:mod:`engine.services.bulk`).
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, redirect, render_template, request, send_file, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired

from engine import background, permissions
from engine.errors import NotFound, Problem, TrackerError, ValidationFailed
from engine.ilr import export_job, xml_export
from engine.ilr.xml_builder import COLLECTIONS
from engine.models import BulkExport
from engine.services import bulk
from engine.validation import schema_at
from webui import db_session, job_pages, lists, runtime

bp = Blueprint("ilr", __name__, url_prefix="/ilr")
lists.LIST_ACTIONS.setdefault(xml_export.TYPE_KEY, []).append(("Export ILR XML", "ilr.export_form", "exports.bulk"))
lists.SELECTION_ACTIONS.setdefault(xml_export.TYPE_KEY, []).append(
    ("Export ILR XML of the ticked learners", "ilr.export_form", "exports.bulk")
)

#: files listed as made recently on the export page
RECENT = 10
#: the user's own exports listed on the export page
MY_RECENT = 5
#: learners that may be ticked on the list for one export (more: use the filters)
MAX_TICKED = 1000


class ExportForm(FlaskForm):
    ukprn = StringField(
        "UKPRN",
        validators=[DataRequired("Enter your UKPRN.")],
        description="Your 8-digit UK provider reference number; it goes in the file name and the header.",
        render_kw={"inputmode": "numeric", "autocomplete": "off", "maxlength": 8},
    )
    year = SelectField(
        "Collection year",
        choices=[SelectChoice(y, f"20{y[:2]} to 20{y[2:]} ({y})") for y in sorted(COLLECTIONS, reverse=True)],
    )
    strict = BooleanField("Write no file if any learner fails (instead of leaving them out)")


def folder() -> Path:
    """Where ILR files made on the web are kept."""
    return export_job.folder(runtime().settings)


def _ilr_type():
    tracker_type = runtime().registry.type(xml_export.TYPE_KEY)
    actor = current_user.actor
    permissions.require(actor, "items.view", tracker_type)
    permissions.require(actor, "exports.bulk", tracker_type)
    return tracker_type


def _filters(source) -> dict:
    """The list's filters (``status`` repeatable, ``assignee``, ``q``) from the URL or the form.
    Raises ValidationFailed for a state the ILR workflow does not have."""
    workflow = runtime().registry.workflow_for(runtime().registry.type(xml_export.TYPE_KEY))
    status = [s for s in source.getlist("status") if s]
    unknown = [s for s in status if workflow.state(s) is None]
    if unknown:
        raise ValidationFailed(
            [
                Problem(
                    "status",
                    f"'{unknown[0]}' is not a state of ILR records",
                    f"Use one of: {', '.join(s.key for s in workflow.states)}.",
                )
            ]
        )
    ids = _ticked(source.getlist("id"))
    if source.get("ticked") and not ids:
        raise ValidationFailed(
            [Problem("id", "No learner was ticked", "Tick the learners to export on the ILR list, then try again.")]
        )
    return {
        "ids": ids,
        "status": status,
        "assignee": source.get("assignee", "").strip(),
        "q": source.get("q", "").strip(),
    }


def _ticked(values: list[str]) -> list[int]:
    """The learners ticked on the list (``id`` repeated), each once, in the order given."""
    ids: list[int] = []
    for value in values:
        if not value.strip().isdigit():
            raise ValidationFailed(
                [Problem("id", f"'{value[:20]}' is not an item number", "Tick learners on the ILR list instead.")]
            )
        ids.append(int(value))
    ids = list(dict.fromkeys(ids))
    if len(ids) > MAX_TICKED:
        raise ValidationFailed(
            [
                Problem(
                    "id",
                    f"{len(ids)} learners were ticked; at most {MAX_TICKED} can be chosen one by one",
                    "Choose them with the list's filters instead, or export them in parts.",
                )
            ]
        )
    return ids


def _form_page(form: ExportForm, filters: dict, errors: list[str] | None = None, status: int = 200):
    service = runtime().items(db_session(), current_user.actor)
    workflow = runtime().registry.workflow_for(runtime().registry.type(xml_export.TYPE_KEY))
    count = export_job.records(service, filters["ids"], filters["status"], filters["assignee"], filters["q"])
    labels = [workflow.state(s).label for s in filters["status"]]
    return (
        render_template(
            "ilr/export.html",
            form=form,
            filters=filters,
            state_labels=labels,
            count=count,
            errors=errors or [],
            recent=_recent(),
            my_jobs=[
                (job, background.state(job))
                for job in background.recent(runtime(), current_user.actor, export_job.KIND, limit=MY_RECENT)
            ],
            list_url=url_for("lists.type_items", key=xml_export.TYPE_KEY, **_list_args(filters)),
        ),
        status,
    )


def _list_args(filters: dict) -> dict:
    """The list's own filters, for links back to it (the ticks are not kept there)."""
    return {k: v for k, v in filters.items() if v and k != "ids"}


def _recent() -> list[dict]:
    rows = db_session().scalars(
        select(BulkExport)
        .where(BulkExport.kind == "ilr_xml", BulkExport.outcome == "done")
        .order_by(BulkExport.id.desc())
        .limit(RECENT)
    )
    return [{"row": r, "available": (folder() / r.filename).is_file()} for r in rows]


@bp.route("/export", methods=["GET"])
@login_required
def export_form():
    """The export form for the ILR records the list's filters select."""
    _ilr_type()
    bulk.check(lists.bulk_origin())
    form = ExportForm(ukprn=runtime().settings.ukprn or None)
    return _form_page(form, _filters(request.args))


@bp.route("/export", methods=["POST"])
@login_required
def export():
    """Start making the file in the background and lead to its page; what can be told at once
    (the form, the UKPRN, no matching record) is shown on the form again (422)."""
    _ilr_type()
    filters = _filters(request.form)
    form = ExportForm()
    if not form.validate():
        errors = [f"{form[name].label.text}: {' '.join(messages)}" for name, messages in form.errors.items()]
        return _form_page(form, filters, errors, 422)
    try:
        job = export_job.start(
            runtime(),
            current_user.actor,
            ukprn=form.ukprn.data,
            year=form.year.data,
            status=filters["status"],
            assignee=filters["assignee"],
            q=filters["q"],
            strict=form.strict.data,
            origin=lists.bulk_origin(),
            ids=filters["ids"],
        )
    except ValidationFailed as exc:
        return _form_page(form, filters, [f"{p.message}. {p.advice}" for p in exc.problems], 422)
    except TrackerError as exc:
        if exc.status == 403:
            raise
        return _form_page(form, filters, [f"{exc.message} {exc.advice}".strip()], 422)
    return redirect(url_for("ilr.job_page", job_id=job.id), 303)


@bp.route("/jobs/<int:job_id>")
@login_required
def job_page(job_id: int):
    """An export: its progress while it runs; then the file made, with everyone left out and
    why (a page at a time), or why it stopped."""
    _ilr_type()
    job = background.get(runtime(), current_user.actor, job_id, export_job.KIND)
    state = background.state(job)
    result = job.result if job.status == "done" else None
    params = job.params or {}
    filters = {
        "ids": params.get("ids") or [],
        "status": params.get("status") or [],
        "assignee": params.get("assignee", ""),
        "q": params.get("q", ""),
    }
    return render_template(
        "ilr/job.html",
        job=job,
        state=state,
        running=job.status in background.RUNNING and not state["stalled"],
        refresh=job_pages.REFRESH_SECONDS,
        result=result,
        excluded=job_pages.page_of(result["excluded"]) if result else None,
        field_id=_field_id,
        field_label=_field_label,
        list_url=url_for("lists.type_items", key=xml_export.TYPE_KEY, **_list_args(filters)),
        again_url=url_for("ilr.export_form", id=filters["ids"], **_list_args(filters)),
    )


@bp.route("/jobs/<int:job_id>/progress.json")
@login_required
def job_progress(job_id: int):
    """How far the export is, for its progress bar."""
    _ilr_type()
    job = background.get(runtime(), current_user.actor, job_id, export_job.KIND)
    return job_pages.progress_response(background.state(job), url_for("ilr.job_page", job_id=job.id))


@bp.route("/files/<name>")
@login_required
def download(name: str):
    """One ILR file made here, as an attachment (recorded as a bulk download)."""
    _ilr_type()
    path = folder() / name
    if not xml_export.FILENAME.match(name) or not path.is_file():
        raise NotFound(f"There is no ILR file '{name}'.", "Make the file on the ILR export page, then download it.")
    session = db_session()
    actor = current_user.actor
    origin = lists.bulk_origin()
    bulk.require_allowed(session, actor, origin, "ilr_download", xml_export.TYPE_KEY, {"file": name})
    bulk.record(session, actor, origin, "ilr_download", xml_export.TYPE_KEY, filename=name)
    session.commit()
    return send_file(path, mimetype="application/xml", as_attachment=True, download_name=name)


def _field_id(item_id: int, pointer: str) -> str:
    """The item page's link to the field a problem is about (inputs are named after their pointer)."""
    anchor = "data" + pointer.replace("/", "-") if pointer else ""
    return url_for("items.item", item_id=item_id) + (f"#{anchor}" if anchor else "")


def _field_label(pointer: str) -> str:
    """A problem's field in words: ``/learning_deliveries/0/ach_date`` -> "Learning deliveries 1 › Achievement date"."""
    schema = runtime().registry.type(xml_export.TYPE_KEY).schema
    words, dotted = [], []
    for part in pointer.strip("/").split("/") if pointer else ():
        if part.isdigit():
            words[-1] += f" {int(part) + 1}"
            continue
        dotted.append(part)
        words.append((schema_at(schema, ".".join(dotted)) or {}).get("title") or part)
    return " › ".join(words) or "The whole record"
