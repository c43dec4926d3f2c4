"""Documents and progress on the item page: upload, check, download and delete documents; tick
and untick the criteria of the item's qualification.

Every change goes through :class:`~engine.services.documents.DocumentService` or
:class:`~engine.services.progress.ProgressService`. The item page draws the two panels
(``documents/_panel.html`` and ``documents/_progress.html``) from what
:func:`documents_panel` and :func:`progress_panel` return. A refused change shows the item
page again with the problems in the panel concerned (4xx) and the user's input kept; a
successful one redirects (303) back to the panel with a message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, flash, g, redirect, request, send_file, url_for
from flask_login import current_user, login_required
from werkzeug.exceptions import RequestEntityTooLarge

from engine.documents import DocumentStore, describe_size
from engine.errors import Conflict, Problem, ValidationFailed
from engine.models import Document, Item
from engine.services.documents import DocumentService
from engine.services.progress import ProgressService
from webui import db_session, item_pages, runtime

bp = Blueprint("documents", __name__)

#: what a request body may carry beyond the file itself (the other form fields, multipart framing)
FORM_MARGIN = 64 * 1024


def store() -> DocumentStore:
    return DocumentStore.from_settings(runtime().settings)


def _documents() -> DocumentService:
    return DocumentService(db_session(), current_user.actor, runtime().registry, store())


def _progress() -> ProgressService:
    return ProgressService(db_session(), current_user.actor, runtime().registry)


@bp.url_value_preprocessor
def _limit_upload(endpoint: str | None, _values: dict | None) -> None:
    """Runs before the CSRF check reads the form: a body much larger than any document may be
    is cut off there, with a 413, instead of being received in full."""
    if endpoint == "documents.upload":
        request.max_content_length = store().max_bytes + FORM_MARGIN


# -- what the item page shows ---------------------------------------------------------------------


@dataclass
class _Form:
    """Problems and input of a refused change, shown again in its panel."""

    problems: list[Problem] = field(default_factory=list)
    values: dict[str, Any] = field(default_factory=dict)
    #: the document (or the unit) the problems belong to
    target: int | str | None = None

    def about(self, *paths: str) -> list[Problem]:
        return [p for p in self.problems if p.path in paths or any(p.path.startswith(x + "/") for x in paths)]


@bp.app_context_processor
def _panels() -> dict:
    """``documents_panel(item)`` and ``progress_panel(item)`` for the item page; None when the
    item's type takes no documents or tracks no progress."""

    def documents_panel(item: Item) -> dict | None:
        service = _documents()
        tracker_type = service.items.type_of(item)
        if not tracker_type.documents:
            return None
        shown = service.list(item.id, earlier=True)
        form = g.get("documents_form") or _Form()
        groups = []
        for category in tracker_type.documents:
            mine = [d for d in shown if d.category == category.key]
            current = [d for d in mine if d.current]
            groups.append(
                {
                    "category": category,
                    "current": current,
                    "earlier": [d for d in mine if not d.current],
                    "state": _best(current),
                }
            )
        the_store = service.store
        return {
            "groups": groups,
            "may_upload": service.may_upload(item),
            "may_check": service.may_check(item),
            "may_delete": {d.id: service.may_delete(d, item) for d in shown},
            "accept": ",".join(f".{t}" for t in the_store.types),
            "accepted_text": the_store.accepted(),
            "max_size": describe_size(the_store.max_bytes),
            "form": form,
            "size": lambda d: describe_size(d.size),
        }

    def progress_panel(item: Item) -> dict | None:
        tracker_type = runtime().registry.types.get(item.type_key)
        if tracker_type is None or tracker_type.progress is None:
            return None
        view = _progress().view(item.id)
        return {"view": view, "form": g.get("progress_form") or _Form(), "today": _progress().today().isoformat()}

    return {"documents_panel": documents_panel, "progress_panel": progress_panel}


def _best(documents: list[Document]) -> str:
    states = {d.qa_state for d in documents}
    return next((s for s in ("accepted", "pending", "rejected") if s in states), "missing")


def _item_again(item_id: int, status: int, **forms: _Form):
    """The item page with a panel's problems and input (``documents_form`` or ``progress_form``)."""
    for name, form in forms.items():
        setattr(g, name, form)
    service = item_pages._service()
    page = item_pages._Item(service, service.get(item_id))
    return item_pages._item_page(page, page.stored_form(), status=status)


def _back(item_id: int, anchor: str):
    return redirect(url_for("items.item", item_id=item_id, _anchor=anchor), 303)


# -- documents --------------------------------------------------------------------------------------


@bp.post("/items/<int:item_id>/documents")
@login_required
def upload(item_id: int):
    """Attach the file in ``file`` to the item in ``category`` (``replaces``: a document it supersedes)."""
    category = request.form.get("category", "")
    replaces = _int(request.form.get("replaces"))
    upload_file = request.files.get("file")
    values = {"category": category, "replaces": replaces}
    if upload_file is None or not upload_file.filename:
        _documents().items.get(item_id)  # a missing or hidden item says so first
        problem = Problem(
            "file", "Choose a file to upload", f"Pick a file of one of these kinds: {store().accepted()}."
        )
        return _item_again(item_id, 422, documents_form=_Form([problem], values))
    try:
        document = _documents().upload(item_id, category, upload_file.filename, upload_file.stream, replaces=replaces)
    except ValidationFailed as exc:
        return _item_again(item_id, exc.status, documents_form=_Form(exc.problems, values))
    flash(f"Uploaded {document.filename}; it waits for a quality check.", "info")
    return _back(item_id, "documents")


@bp.errorhandler(RequestEntityTooLarge)
def _too_large(_exc: RequestEntityTooLarge):
    item_id = (request.view_args or {}).get("item_id")
    problem = Problem(
        "file",
        f"The file is larger than {describe_size(store().max_bytes)}, the most a document may be",
        "Make the file smaller (a scan at 150-200 dpi, or saved as PDF, is usually enough), then upload it again.",
    )
    return _item_again(item_id, 413, documents_form=_Form([problem]))


@bp.get("/documents/<int:document_id>/download")
@login_required
def download(document_id: int):
    """The file, for whoever may see its item: always as an attachment, never shown inline."""
    service = _documents()
    document = service.get(document_id)
    return _file_response(document, service.path(document))


def _file_response(document: Document, path):
    response = send_file(
        path,
        mimetype=document.content_type,
        as_attachment=True,
        download_name=document.filename,
        conditional=False,
        etag=False,
        max_age=0,
    )
    # a browser must not guess another type (HTML in a "text file") nor run anything in it
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, no-store"
    return response


@bp.post("/documents/<int:document_id>/check")
@login_required
def check(document_id: int):
    """Accept (``decision=accept``) or reject (``decision=reject`` with ``reason``) a document."""
    service = _documents()
    document = service.get(document_id)
    decision = request.form.get("decision", "")
    reason = request.form.get("reason", "")
    try:
        service.decide(document_id, decision, reason)
    except (ValidationFailed, Conflict) as exc:
        problems = getattr(exc, "problems", None) or [Problem("", exc.message, exc.advice)]
        form = _Form(problems, {"reason": reason}, target=document_id)
        return _item_again(document.item_id, exc.status, documents_form=form)
    verb = "accepted" if decision == "accept" else "rejected; the uploader is told why"
    flash(f"{document.filename} is {verb}.", "info")
    return _back(document.item_id, f"document-{document_id}")


@bp.post("/documents/<int:document_id>/delete")
@login_required
def delete(document_id: int):
    """Take a document off its item (it stays in the history)."""
    service = _documents()
    document = service.get(document_id)
    try:
        service.delete(document_id)
    except Conflict as exc:
        form = _Form([Problem("", exc.message, exc.advice)], target=document_id)
        return _item_again(document.item_id, exc.status, documents_form=form)
    flash(f"{document.filename} was deleted; the history keeps a note of it.", "info")
    return _back(document.item_id, "documents")


# -- progress ---------------------------------------------------------------------------------------


@bp.post("/items/<int:item_id>/progress")
@login_required
def record_progress(item_id: int):
    """Tick the criteria checked in ``tick`` with one ``evidence`` and ``date``, or untick the
    criterion named by the ``untick`` button that was pressed."""
    form = request.form
    unit = form.get("unit", "")
    untick = form.get("untick", "").strip()
    evidence, day = form.get("evidence", ""), form.get("date", "")
    values = {"evidence": evidence, "date": day, "tick": form.getlist("tick")}
    service = _progress()
    try:
        if untick:
            view = service.apply(item_id, unticks=[untick])
            message = f"Unticked {untick}."
        else:
            paths = form.getlist("tick")
            if not paths:
                service.view(item_id)  # a missing or hidden item says so first
                problem = Problem("/ticks", "Tick at least one criterion", "Check the box of each criterion met.")
                return _item_again(item_id, 422, progress_form=_Form([problem], values, target=unit))
            ticks = [{"criterion": p, "evidence": evidence, "date": day} for p in paths]
            view = service.apply(item_id, ticks=ticks)
            message = f"Ticked {len(paths)} criteri{'on' if len(paths) == 1 else 'a'}."
    except (ValidationFailed, Conflict) as exc:
        problems = getattr(exc, "problems", None) or [Problem("", exc.message, exc.advice)]
        return _item_again(item_id, exc.status, progress_form=_Form(_merged(problems), values, target=unit))
    flash(f"{message} {view.item.title} is {view.tree.percent:.0f}% complete.", "info")
    return _back(item_id, f"unit-{unit}" if unit else "progress")


def _merged(problems: list[Problem]) -> list[Problem]:
    """Several ticks with one evidence and date fail alike: say each thing once, by field."""
    out: dict[tuple[str, str], Problem] = {}
    for p in problems:
        field_name = p.path.rsplit("/", 1)[-1] if p.path.startswith("/ticks/") else p.path
        if field_name in ("evidence", "date"):
            out.setdefault((field_name, p.message), Problem(field_name, p.message, p.advice))
        else:
            out.setdefault((p.path, p.message), p)
    return list(out.values())


def _int(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
