"""The type editor for holders of ``types.admin``: tracker types kept in the database, built
in the browser.

Every page works without JavaScript (server-side form posts, each CSRF-checked); a small
script adds live validation of the documents, the live count of a task list being edited,
and the gutter of line numbers. Each change goes through the engine: the builder operations
in :mod:`engine.definitions.builder` edit the parsed draft, :class:`DefinitionService` saves
it, checks it with the loader that ``tracker check`` runs, publishes, rolls back, exports and
imports; :class:`~engine.type_migrations.TypeMigrator` previews migrations, and applies them as
background work (:mod:`engine.type_migration_job`) whose page follows it with a progress bar.
A refused change changes nothing and says why, on the field or the line concerned.

Pages, under ``/admin/types``: the list; ``new``; and per type ``fields`` (with the migration
steps), ``documents``, ``preview``, ``workflow``, ``tasklists``, ``roles``, ``assignment``,
``publish`` (with the history, diffs and rollback) and ``migrate``. A type from definition
files is shown read-only (``view``) with a Copy button.
"""

from __future__ import annotations

import dataclasses
import io
import json
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user

from engine import background, permissions, sandbox, type_migration_job
from engine.definitions import builder, documents
from engine.definitions.builder import Draft, FieldChange
from engine.definitions.model import CAPABILITIES, STATE_CATEGORIES, Migration, Registry, TrackerType
from engine.definitions.store import DOCUMENTS, Loaded, Texts
from engine.errors import PermissionDenied, Problem, TrackerError, ValidationFailed
from engine.services.definitions import DefinitionRejected, DefinitionService, bundle
from engine.tasklists import TaskListService
from engine.type_migrations import TypeMigrator, describe
from engine.validation import make_validator, schema_problems
from engine.workflow_diagram import render as render_diagram
from webui import db_session, forms, job_pages, runtime
from webui.auth import login_manager

bp = Blueprint("type_admin", __name__, url_prefix="/admin/types")

#: items checked per older version on the Migrate page: enough to find the usual failures while
#: the page stays quick for a type with a million items; the migration itself checks every one
PREVIEW_SAMPLE = 1000

TABS = (
    ("fields", "Fields"),
    ("documents", "Documents"),
    ("preview", "Preview"),
    ("workflow", "Workflow"),
    ("tasklists", "Task lists"),
    ("roles", "Roles"),
    ("assignment", "Assignment"),
    ("publish", "Publish & history"),
    ("migrate", "Migrate items"),
)
DOCUMENT_LABELS = {
    "schema.json": "schema.json (the fields, JSON Schema)",
    "type.yaml": "type.yaml (name, title, layout, rules, task lists, permissions, migrations)",
    "workflow.yaml": "Workflow (states and transitions)",
    "roles.yaml": "Roles this type brings",
}
FIELD_NAMES = {
    "schema.json": "schema_json",
    "type.yaml": "type_yaml",
    "workflow.yaml": "workflow_yaml",
    "roles.yaml": "roles_yaml",
}


@bp.before_app_request
def fresh_definitions() -> None:
    """A type published by another web process or the command line is used from the next request."""
    if request.endpoint != "static":
        runtime().refresh_definitions()


@bp.before_request
def only_type_admins():
    if not current_user.is_authenticated:
        return login_manager.unauthorized()
    if not permissions.allows(current_user.actor, "types.admin"):
        raise PermissionDenied(
            f"{current_user.username} may not define tracker types.",
            "This needs the 'types.admin' capability; ask an administrator.",
        )
    return None


@bp.app_context_processor
def nav_links() -> dict[str, bool]:
    return {
        "can_admin_types": bool(current_user.is_authenticated and permissions.allows(current_user.actor, "types.admin"))
    }


def _service() -> DefinitionService:
    return runtime().definitions(db_session(), current_user.actor)


def _refused(exc: ValidationFailed, errors: dict) -> int:
    """After a refused change: nothing of it is kept, its problems go beside their fields in
    ``errors``, and the page answers with the refusal's status."""
    db_session().rollback()
    for p in exc.problems:
        errors.setdefault(p.path, []).append(_text(p))
    return exc.status


def _text(problem: Problem) -> str:
    return f"{problem.message}. {problem.advice}" if problem.advice else f"{problem.message}."


# -- the list, new types, import ------------------------------------------------------------------


@bp.route("")
def type_list():
    service = _service()
    return render_template("type_admin/list.html", rows=service.overview())


@bp.route("/new", methods=["GET", "POST"])
def new_type():
    service = _service()
    choices = sorted(service.registry.types.values(), key=lambda t: t.name.lower())
    values = {"key": "", "name": "", "subject": "none", "copy_from": request.args.get("copy_from", "")}
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        values = {k: request.form.get(k, "").strip() for k in values}
        try:
            row = service.create(
                values["key"],
                values["name"],
                subject=values["subject"] or "none",
                copy_from=values["copy_from"] or None,
            )
        except ValidationFailed as exc:
            status = _refused(exc, errors)
        else:
            what = f"a copy of {values['copy_from']}" if values["copy_from"] else "a new type"
            flash(f"Started {row.type_key} as {what}: a draft until you publish it.", "info")
            return redirect(url_for("type_admin.fields", key=row.type_key), 303)
    return render_template("type_admin/new.html", values=values, errors=errors, choices=choices), status


@bp.route("/import", methods=["POST"])
def import_type():
    upload = request.files.get("bundle")
    if upload is None or not upload.filename:
        flash("Choose a .zip file of a definitions folder to import.", "error")
        return redirect(url_for("type_admin.type_list"))
    with tempfile.TemporaryDirectory(prefix="tracker-upload-") as tmp:
        path = Path(tmp) / (Path(upload.filename).name or "upload.zip")
        upload.save(path)
        try:
            published = _service().import_folder(path, key=request.form.get("key", "").strip() or None)
        except DefinitionRejected as exc:
            db_session().rollback()
            return render_template("type_admin/import_refused.html", error=exc), exc.status
    for p in published:
        flash(f"Imported {p.definition.type_key} as version {p.definition.version}.", "info")
    return redirect(url_for("type_admin.type_list"), 303)


@bp.route("/<key>/export.zip")
def export(key: str):
    service = _service()
    files = bundle(key, service.published_or_file_texts(key), service.registry)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    buffer.seek(0)
    return send_file(buffer, mimetype="application/zip", as_attachment=True, download_name=f"{key}.zip")


@bp.route("/<key>")
def type_home(key: str):
    service = _service()
    if service.is_stored(key):
        return redirect(url_for("type_admin.fields", key=key))
    service.registry.type(key)  # NotFound for an unknown key
    return redirect(url_for("type_admin.view", key=key))


@bp.route("/<key>/view")
def view(key: str):
    """A type from definition files: read only, with a Copy button."""
    service = _service()
    if service.is_stored(key):
        return redirect(url_for("type_admin.fields", key=key))
    tracker_type = service.registry.type(key)
    texts = service.file_texts(key)
    workflow = service.registry.workflow_for(tracker_type)
    return render_template(
        "type_admin/view.html",
        type=tracker_type,
        texts=texts.by_document(),
        labels=DOCUMENT_LABELS,
        diagram=render_diagram(workflow),
        workflow=workflow,
    )


# -- the editor: shared ----------------------------------------------------------------------------


@dataclasses.dataclass
class Editor:
    """What every tab of one type's editor knows."""

    service: DefinitionService
    key: str
    texts: Texts
    loaded: Loaded
    draft_version: int | None
    published: int | None

    @property
    def name(self) -> str:
        return (self.loaded.tracker_type.name if self.loaded.tracker_type else None) or self.key

    @property
    def has_draft(self) -> bool:
        return self.draft_version is not None


def _editor(key: str) -> Editor:
    service = _service()
    if not service.is_stored(key):
        service.registry.type(key)  # NotFound for an unknown key
        raise PermissionDenied(
            f"'{key}' is defined in definition files, so it cannot be changed here.",
            "Copy it to a new type kept in the database, or change its files and run 'tracker check'.",
        )
    draft = service._draft_row(key)
    texts = _draft_texts(service, key, draft is not None)
    newest = service._newest_published(key)
    loaded = service.check(key, texts)
    return Editor(service, key, texts, loaded, draft.version if draft else None, newest.version if newest else None)


def _page(template: str, editor: Editor, tab: str, status: int = 200, **context: Any):
    return render_template(
        f"type_admin/{template}",
        editor=editor,
        key=editor.key,
        tab=tab,
        tabs=TABS,
        problems=editor.loaded.problems,
        **context,
    ), status


def _draft_texts(service: DefinitionService, key: str, has_draft: bool) -> Texts:
    """The draft's documents; without a draft, those the first change starts one from (the
    published version less its ``migrations:``, which bring items of the version before it)."""
    texts = service.texts_of(key)
    return texts if has_draft else documents.without_migrations(texts)


def _save(editor: Editor, change, *, check_at=None) -> Loaded:
    """Apply a builder ``change(draft)`` to the draft and save it; ValidationFailed when
    refused, with nothing saved (a draft is only started once the change is accepted).

    ``check_at(result of change)`` gives ``{JSON pointer: form field}``: the changed draft is
    then checked as ``tracker check`` does, and refused over any problem in type.yaml at those
    pointers, shown on that form field; problems elsewhere stay the draft's, as on every tab."""
    service = editor.service
    before = _draft_texts(service, editor.key, service.has_draft(editor.key))
    draft = Draft.parse(before)
    result = change(draft)
    texts = draft.texts(before)
    if check_at is not None:
        builder.refuse_problems(service.check(editor.key, texts).problems, check_at(result))
    return service.save_draft(editor.key, texts)


def _after_save(editor: Editor, loaded: Loaded, what: str, endpoint: str, **args):
    count = len(loaded.problems)
    tail = (
        f" The draft has {count} problem{'s' if count != 1 else ''} to fix before it can be published." if count else ""
    )
    flash(f"{what}.{tail}", "error" if count else "info")
    return redirect(url_for(endpoint, key=editor.key, **args), 303)


# -- fields -----------------------------------------------------------------------------------------


@bp.route("/<key>/fields", methods=["GET", "POST"])
def fields(key: str):
    editor = _editor(key)
    errors: dict[str, list[str]] = {}
    form = request.form
    editing = request.args.get("edit") or form.get("path") or None
    if request.method == "POST":
        action = form.get("action", "")
        path = form.get("path", "")
        try:
            done, stay = _field_action(editor, action, path, form)
        except ValidationFailed as exc:
            return _fields_page(editor, editing if action != "add" else None, errors, form, _refused(exc, errors))
        return _after_save(
            editor,
            done,
            _FIELD_DONE[action].format(
                path=path,
                name=form.get("name", ""),
                default_field=form.get("default_field", ""),
                map_field=form.get("map_field", ""),
            ),
            "type_admin.fields",
            **({"edit": stay} if stay else {}),
        )
    return _fields_page(editor, editing, errors, None)


_FIELD_DONE = {
    "add": "Added the field {name}",
    "update": "Saved the field {path}",
    "up": "Moved {path} up",
    "down": "Moved {path} down",
    "remove": "Removed the field {path}",
    "set_default": "Declared the default of {default_field} for existing items",
    "map_values": "Declared the new values of {map_field} for existing items",
    "remove_step": "Removed the migration step",
}


def _field_action(editor: Editor, action: str, path: str, form) -> tuple[Loaded, str | None]:
    if action == "add":
        added: list[str] = []
        loaded = _save(
            editor,
            lambda d: added.append(
                builder.add_field(
                    d, form.get("parent", ""), form.get("name", ""), form.get("kind", ""), form.get("title", "")
                )
            ),
        )
        return loaded, None
    if action in ("up", "down"):
        return _save(editor, lambda d: builder.move_field(d, path, action)), None
    if action == "remove":
        return _save(editor, lambda d: builder.remove_field(d, path)), None
    if action in ("set_default", "map_values", "remove_step"):
        return _step_action(editor, action, form), None
    if action == "update":
        published = editor.service._newest_published(editor.key)
        published_schema = json.loads(published.schema_json) if published is not None else None
        renamed: list[str] = []

        def change(d: Draft) -> None:
            condition = form.get("condition_field", "")
            builder.update_field(
                d,
                path,
                FieldChange(
                    title=form.get("title"),
                    kind=form.get("kind"),
                    required=bool(form.get("required")) if not condition else None,
                    help=form.get("help"),
                    options=form.get("options"),
                    minimum=form.get("minimum"),
                    maximum=form.get("maximum"),
                    pattern=form.get("pattern"),
                    section=form.get("section") if "." not in path else None,
                    condition_field=condition if "condition_field" in form else None,
                    condition_value=form.get("condition_value", ""),
                ),
            )
            new_name = (form.get("new_name") or "").strip()
            if new_name and new_name != path.rsplit(".", 1)[-1]:
                renamed.append(builder.rename_field(d, path, new_name, published_schema=published_schema))

        loaded = _save(editor, change)
        return loaded, (renamed[0] if renamed else path)
    raise ValidationFailed([Problem("action", f"'{action}' is not something this page does", "Use its buttons.")])


def _published_schema(editor: Editor) -> dict | None:
    published = editor.service._newest_published(editor.key)
    return json.loads(published.schema_json) if published is not None else None


def _step_action(editor: Editor, action: str, form) -> Loaded:
    """Declare or remove a migration step; a declared step is checked as ``tracker check``
    checks ``migrations:`` (a default or new value the field would not accept is refused)."""
    published = _published_schema(editor)
    if action == "remove_step":
        index = _index(form.get("step", ""))
        return _save(editor, lambda d: builder.remove_step(d, -1 if index is None else index))
    if action == "set_default":
        return _save(
            editor,
            lambda d: builder.set_default_step(
                d, form.get("default_field", ""), form.get("default_value", ""), published_schema=published
            ),
            check_at=lambda i: {
                f"/migrations/{i}": "default_field",
                f"/migrations/{i}/set_default/value": "default_value",
            },
        )
    pairs = list(zip(form.getlist("old"), form.getlist("new"), strict=False))
    return _save(
        editor,
        lambda d: builder.map_values_step(d, form.get("map_field", ""), pairs, published_schema=published),
        check_at=lambda i: {
            f"/migrations/{i}": "map_field",
            **{f"/migrations/{i}/map_values/map/{old.strip()}": f"map_to-{j}" for j, (old, _new) in enumerate(pairs)},
        },
    )


def _step_text(step: Any) -> str:
    try:
        [(kind, value)] = step.items()
        return describe(Migration(kind, value))
    except (AttributeError, KeyError, TypeError, ValueError):  # typed by hand, malformed: the check says how
        return json.dumps(step, ensure_ascii=False, default=str)


def _fields_page(editor: Editor, editing: str | None, errors: dict, form, status: int = 200):
    try:
        draft = Draft.parse(editor.texts)
    except ValidationFailed as exc:
        return _page("fields.html", editor, "fields", status, unparsed=exc.problems, fields=[], kinds=builder.KINDS)
    infos = builder.fields(draft)
    current = next((f for f in infos if f.path == editing), None)
    containers = [("", "Top level")] + [(f.path, f.title or f.path) for f in infos if f.is_container]
    sections = [s.get("section") for s in draft.manifest.get("layout") or () if s.get("section")]
    siblings = [f for f in infos if current and f.parent == current.parent and f.path != current.path]
    published_schema = _published_schema(editor)
    in_published = bool(current and published_schema and builder._has(published_schema, current.path))
    steps = draft.manifest.get("migrations")
    steps = steps if isinstance(steps, list) else []
    removed = builder.removed_options(draft, published_schema)
    by_path = {f.path: f for f in infos}
    return _page(
        "fields.html",
        editor,
        "fields",
        status,
        unparsed=[],
        fields=infos,
        current=current,
        containers=containers,
        sections=sections,
        siblings=siblings,
        kinds=builder.KINDS,
        errors=errors,
        form=form,
        in_published=in_published,
        published=editor.published,
        steps=[(i, _step_text(s)) for i, s in enumerate(steps)],
        default_fields=builder.migratable_fields(draft) if published_schema else [],
        mappable=[
            {
                "field": by_path[path],
                "gone": gone,
                "mapped": _mapped_now(steps, path),
            }
            for path, gone in removed.items()
        ],
    )


def _mapped_now(steps: list, path: str) -> dict[str, str]:
    """The map the draft declares for ``path``, old value to new, as text."""
    for step in steps:
        value = step.get("map_values") if isinstance(step, dict) else None
        if isinstance(value, dict) and value.get("field") == path and isinstance(value.get("map"), dict):
            return {str(old): str(new) for old, new in value["map"].items()}
    return {}


# -- documents: the raw JSON Schema and YAML, with live checking --------------------------------------


@bp.route("/<key>/documents", methods=["GET", "POST"])
def documents_page(key: str):
    editor = _editor(key)
    status = 200
    texts = editor.texts
    if request.method == "POST":
        texts = Texts(*(request.form.get(FIELD_NAMES[name], "").replace("\r\n", "\n") for name in DOCUMENTS))
        try:
            loaded = editor.service.save_draft(key, texts)
        except DefinitionRejected as exc:
            db_session().rollback()
            editor.loaded = Loaded(None, problems=exc.definition_problems)
            status = exc.status
        else:
            return _after_save(editor, loaded, "Saved the draft", "type_admin.documents_page")
    return _page(
        "documents.html",
        editor,
        "documents",
        status,
        texts=texts.by_document(),
        labels=DOCUMENT_LABELS,
        field_names=FIELD_NAMES,
        marks=_marks(editor.loaded.problems),
    )


def _marks(problems) -> dict[str, dict[int, list[str]]]:
    """``{document: {line: [messages]}}`` for the gutter beside each text box."""
    out: dict[str, dict[int, list[str]]] = {}
    for p in problems:
        if p.line:
            out.setdefault(p.file, {}).setdefault(p.line, []).append(p.message)
    return out


@bp.route("/<key>/check", methods=["POST"])
def check(key: str):
    """Live validation: the documents as JSON in, every problem (document, line, pointer,
    message, advice) out, as ``tracker check`` would report them. Nothing is saved."""
    editor = _editor(key)
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        return jsonify(error="Send the documents as a JSON object.", advice="See the documents page."), 400
    texts = Texts(*(str(body.get(FIELD_NAMES[name]) or "") for name in DOCUMENTS))
    loaded = editor.service.check(key, texts)
    return jsonify(
        ok=loaded.ok,
        problems=[
            {
                "document": p.file,
                "line": p.line,
                "pointer": p.pointer,
                "message": p.message,
                "advice": p.advice,
                "text": str(p),
            }
            for p in loaded.problems
        ],
    )


# -- preview: the generated form, with "try it" -------------------------------------------------------


@bp.route("/<key>/preview", methods=["GET", "POST"])
def preview(key: str):
    editor = _editor(key)
    tracker_type = editor.loaded.tracker_type
    if tracker_type is None:
        return _page("preview.html", editor, "preview", view=None, result=None)
    spec = forms.build_spec(tracker_type.schema)
    if request.method == "GET":
        bound = forms.BoundForm(spec, raw=forms.to_raw(spec, {}, defaults=True))
        return _preview_page(editor, tracker_type, bound)
    bound = forms.BoundForm(spec, formdata=request.form)
    if request.form.get("add_row"):
        return _preview_page(editor, tracker_type, bound, focus=bound.add_row(request.form["add_row"]))
    if request.form.get("remove_row"):
        return _preview_page(editor, tracker_type, bound, focus=bound.remove_row(request.form["remove_row"]))
    data = bound.to_json({})
    problems, warnings = _try(tracker_type, data)
    return _preview_page(
        editor,
        tracker_type,
        bound,
        problems=problems,
        result={"data": data, "warnings": warnings},
        status=422 if problems else 200,
    )


def _try(tracker_type: TrackerType, data: dict) -> tuple[list[Problem], list[Problem]]:
    """What saving ``data`` as a new item would find: schema problems and failing rules."""
    problems = schema_problems(make_validator(tracker_type.schema), data)
    warnings = []
    context = sandbox.context_for(data, {"status": "", "title": "", "id": None, "assignee": None}, {})
    for rule in tracker_type.rules:
        try:
            failed = sandbox.evaluate(rule.when, context)
        except Exception:  # noqa: BLE001 - as a save: a rule that cannot be computed does not fail
            failed = False
        if failed:
            problem = Problem(rule.path, rule.message, rule.advice, rule.key, rule.severity)
            (warnings if rule.severity == "warning" else problems).append(problem)
    return problems, warnings


def _preview_page(editor, tracker_type, bound, *, problems=(), result=None, focus=None, status=200):
    view = forms.build_view(bound, list(problems), layout=tracker_type.layout, focus=focus)
    return _page(
        "preview.html", editor, "preview", status, view=view, result=result, type=tracker_type, tried=result is not None
    )


# -- the workflow -------------------------------------------------------------------------------------


@bp.route("/<key>/workflow", methods=["GET", "POST"])
def workflow(key: str):
    editor = _editor(key)
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        form = request.form
        action = form.get("action", "")
        try:
            loaded = _save(editor, lambda d: _workflow_action(d, action, form))
        except ValidationFailed as exc:
            status = _refused(exc, errors)
        else:
            return _after_save(editor, loaded, "Saved the workflow", "type_admin.workflow")
    return _workflow_page(editor, errors, status)


def _workflow_action(draft: Draft, action: str, form) -> None:
    if form.get("remove_state"):  # a Remove button inside the states table
        builder.remove_state(draft, form["remove_state"])
    elif action == "add_state":
        builder.add_state(draft, form.get("key", ""), form.get("label", ""), form.get("category", "open"))
    elif action == "save_states":
        keys = form.getlist("state")
        rows = [
            {"key": k, "label": form.get(f"label-{k}", ""), "category": form.get(f"category-{k}", "")} for k in keys
        ]
        builder.update_states(draft, rows, form.get("initial") or None)
    elif action == "add_transition":
        builder.add_transition(
            draft, form.get("key", ""), form.getlist("from"), form.get("to", ""), form.get("label", "")
        )
    elif action == "save_transition":
        k = form.get("transition", "")
        builder.update_transition(
            draft,
            k,
            sources=form.getlist(f"from-{k}"),
            target=form.get(f"to-{k}", ""),
            label=form.get(f"label-{k}", ""),
            roles=form.getlist(f"roles-{k}"),
            requires=form.getlist(f"requires-{k}"),
            condition=form.get(f"condition-{k}", ""),
            actions=form.get(f"actions-{k}", ""),
        )
    elif action == "remove_transition":
        builder.remove_transition(draft, form.get("transition", ""))
    else:
        raise ValidationFailed([Problem("action", f"'{action}' is not something this page does", "Use its buttons.")])


def _workflow_page(editor: Editor, errors: dict, status: int):
    try:
        draft = Draft.parse(editor.texts)
    except ValidationFailed as exc:
        return _page("workflow.html", editor, "workflow", status, unparsed=exc.problems, wf=None)
    wf = draft.workflow
    diagram = None
    loaded_wf = editor.loaded.workflow
    if loaded_wf is None and editor.loaded.tracker_type is not None:
        loaded_wf = editor.service.registry.workflows.get(editor.loaded.tracker_type.workflow)
    if loaded_wf is not None:
        diagram = render_diagram(loaded_wf)
    registry = editor.service.registry
    own_roles = [r.get("key") for r in (draft.roles or {}).get("roles") or () if isinstance(r, dict)]
    fields_list = [f.path for f in builder.fields(draft) if not f.is_container]
    return _page(
        "workflow.html",
        editor,
        "workflow",
        status,
        unparsed=[],
        wf=wf,
        diagram=diagram,
        loaded_wf=loaded_wf,
        errors=errors,
        categories=STATE_CATEGORIES,
        role_keys=sorted({*registry.roles, *own_roles, "creator", "assignee"}),
        field_paths=fields_list,
        actions_text=builder.actions_text,
        uses_file_workflow=wf is None,
        file_workflow=(
            editor.loaded.tracker_type.workflow if editor.loaded.tracker_type else draft.manifest.get("workflow")
        ),
    )


@bp.route("/<key>/workflow.svg")
def workflow_svg(key: str):
    editor = _editor(key)
    wf = editor.loaded.workflow
    if wf is None and editor.loaded.tracker_type is not None:
        wf = editor.service.registry.workflows.get(editor.loaded.tracker_type.workflow)
    if wf is None:
        abort(404)
    return render_diagram(wf), 200, {"Content-Type": "image/svg+xml; charset=utf-8"}


# -- task lists ---------------------------------------------------------------------------------------


def _tasklist_fields(form, prefix: str) -> dict[str, Any]:
    return {
        "key": form.get(f"{prefix}key", ""),
        "label": form.get(f"{prefix}label", ""),
        "roles": form.getlist(f"{prefix}roles"),
        "status": form.getlist(f"{prefix}status"),
        "status_category": form.getlist(f"{prefix}status_category"),
        "assignee": form.get(f"{prefix}assignee", "any"),
        "cond_field": form.getlist(f"{prefix}cond_field"),
        "cond_op": form.getlist(f"{prefix}cond_op"),
        "cond_value": form.getlist(f"{prefix}cond_value"),
    }


def _index(value: str) -> int | None:
    return int(value) if value.isdigit() else None


@bp.route("/<key>/tasklists", methods=["GET", "POST"])
def tasklists(key: str):
    editor = _editor(key)
    errors: dict[str, dict[str, list[str]]] = {}
    counted: dict[str, Any] = {}
    status = 200
    form = request.form if request.method == "POST" else None
    if form is not None:
        which = form.get("tasklist", "new")
        index = _index(which)
        action = form.get("action", "save")
        try:
            entry = builder.tasklist_from(_tasklist_fields(form, f"{which}-"))
            if action == "count":
                counted[which] = _count(editor, entry, index)
            elif action == "remove" and index is not None:
                loaded = _save(editor, lambda d: builder.remove_tasklist(d, index))
                return _after_save(editor, loaded, f"Removed the task list {entry['key']}", "type_admin.tasklists")
            else:
                loaded = _save(editor, lambda d: builder.put_tasklist(d, entry, index=index))
                return _after_save(editor, loaded, f"Saved the task list {entry['key']}", "type_admin.tasklists")
        except ValidationFailed as exc:
            db_session().rollback()
            for p in exc.problems:
                errors.setdefault(which, {}).setdefault(p.path, []).append(_text(p))
            status = exc.status
    return _tasklists_page(editor, errors, counted, form, status)


@bp.route("/<key>/tasklists/count", methods=["POST"])
def tasklist_count(key: str):
    """The live count while a task list is edited: the draft filter compiled to SQL and counted."""
    editor = _editor(key)
    which = request.form.get("tasklist", "new")
    try:
        entry = builder.tasklist_from(_tasklist_fields(request.form, f"{which}-"))
        return jsonify(_count(editor, entry, _index(which)))
    except ValidationFailed as exc:
        return jsonify(count=None, problems=[_text(p) for p in exc.problems]), 422


def _count(editor: Editor, entry: dict, index: int | None) -> dict[str, Any]:
    """Count the items of the published type in the list ``entry`` would be, after checking
    it as part of the draft; ``{count, problems}``."""
    draft = Draft.parse(editor.texts)
    builder.put_tasklist(draft, entry, index=index)
    texts = draft.texts(editor.texts)
    loaded = editor.service.check(editor.key, texts)
    position = index if index is not None else len(draft.manifest["tasklists"]) - 1
    own = [p for p in loaded.problems if p.pointer.startswith(f"/tasklists/{position}/")]
    if own:
        return {"count": None, "problems": [f"{p.message}. {p.advice}".strip() for p in own]}
    if loaded.tracker_type is None:
        return {"count": None, "problems": ["The draft has problems elsewhere; fix them to count this list."]}
    tracker_type = loaded.tracker_type
    tasklist = tracker_type.tasklists[position]
    registry = _registry_with(editor.service.registry, loaded)
    counter = TaskListService(db_session(), current_user.actor, registry, cache_filters=False)
    return {"count": counter.count(tracker_type, tasklist), "problems": []}


def _registry_with(registry: Registry, loaded: Loaded) -> Registry:
    """The registry with the draft in it, for compiling the draft's filters (never installed)."""
    tracker_type = loaded.tracker_type
    type_workflows = dict(registry.type_workflows)
    if loaded.workflow is not None:
        type_workflows[(tracker_type.key, tracker_type.version)] = loaded.workflow
    return dataclasses.replace(
        registry, types={**registry.types, tracker_type.key: tracker_type}, type_workflows=type_workflows
    )


def _tasklists_page(editor: Editor, errors, counted, form, status: int):
    try:
        draft = Draft.parse(editor.texts)
    except ValidationFailed as exc:
        return _page("tasklists.html", editor, "tasklists", status, unparsed=exc.problems, lists=[])
    lists = draft.manifest.get("tasklists") or []
    workflow = editor.loaded.workflow
    if workflow is None and editor.loaded.tracker_type is not None:
        workflow = editor.service.registry.workflows.get(editor.loaded.tracker_type.workflow)
    states = (
        [(s.key, s.label) for s in workflow.states]
        if workflow
        else [(s.get("key"), s.get("label")) for s in (draft.workflow or {}).get("states") or ()]
    )
    counts = {}
    if editor.loaded.tracker_type is not None:
        registry = _registry_with(editor.service.registry, editor.loaded)
        counter = TaskListService(db_session(), current_user.actor, registry, cache_filters=False)
        for i, tl in enumerate(editor.loaded.tracker_type.tasklists):
            counts[str(i)] = counter.count(editor.loaded.tracker_type, tl)
    counts.update({k: v["count"] for k, v in counted.items() if v.get("count") is not None})
    count_problems = {k: v["problems"] for k, v in counted.items() if v.get("problems")}
    own_roles = [r.get("key") for r in (draft.roles or {}).get("roles") or () if isinstance(r, dict)]
    return _page(
        "tasklists.html",
        editor,
        "tasklists",
        status,
        unparsed=[],
        lists=lists,
        states=states,
        categories=STATE_CATEGORIES,
        role_keys=sorted({*editor.service.registry.roles, *own_roles}),
        field_paths=[f.path for f in builder.fields(draft) if not f.is_container],
        ops=builder.TASKLIST_OPS,
        condition_text=builder.condition_text,
        errors=errors,
        counts=counts,
        count_problems=count_problems,
        form=form,
    )


# -- roles ---------------------------------------------------------------------------------------------


@bp.route("/<key>/roles", methods=["GET", "POST"])
def roles(key: str):
    editor = _editor(key)
    errors: dict[str, list[str]] = {}
    status = 200
    if request.method == "POST":
        form = request.form
        action = form.get("action", "")
        try:
            loaded = _save(editor, lambda d: _roles_action(d, action, form))
        except ValidationFailed as exc:
            status = _refused(exc, errors)
        else:
            return _after_save(editor, loaded, "Saved the roles", "type_admin.roles")
    return _roles_page(editor, errors, status)


def _roles_action(draft: Draft, action: str, form) -> None:
    if action == "permissions":
        overrides = {}
        for role in form.getlist("role"):
            overrides[role] = form.getlist(f"cap-{role}") if form.get(f"custom-{role}") else None
        builder.set_permissions(draft, overrides)
    elif action in ("add_role", "save_role"):
        builder.put_role(
            draft,
            form.get("key", ""),
            form.get("name", ""),
            form.getlist("capabilities"),
            form.get("scope", "all"),
            new=action == "add_role",
        )
    elif action == "remove_role":
        builder.remove_role(draft, form.get("key", ""))
    else:
        raise ValidationFailed([Problem("action", f"'{action}' is not something this page does", "Use its buttons.")])


def _roles_page(editor: Editor, errors: dict, status: int):
    try:
        draft = Draft.parse(editor.texts)
    except ValidationFailed as exc:
        return _page("roles.html", editor, "roles", status, unparsed=exc.problems)
    own = [r for r in (draft.roles or {}).get("roles") or () if isinstance(r, dict)]
    own_keys = {r.get("key") for r in own}
    registry = editor.service.registry
    others = [r for k, r in sorted(registry.roles.items()) if k not in own_keys]
    permissions_ = draft.manifest.get("permissions") or {}
    rows = [
        {
            "key": r.key,
            "name": r.name,
            "defaults": sorted(r.capabilities),
            "scope": r.scope,
            "custom": permissions_.get(r.key),
        }
        for r in others
    ] + [
        {
            "key": r.get("key"),
            "name": r.get("name", ""),
            "defaults": r.get("capabilities") or [],
            "scope": r.get("scope", "all"),
            "custom": permissions_.get(r.get("key")),
        }
        for r in own
    ]
    return _page(
        "roles.html",
        editor,
        "roles",
        status,
        unparsed=[],
        rows=rows,
        own=own,
        capabilities=CAPABILITIES,
        errors=errors,
    )


# -- assignment ----------------------------------------------------------------------------------------

#: where ``tracker check`` reports a problem of ``assignment:``, and the form field it belongs to
_ASSIGNMENT_FIELDS = {
    "/assignment": "rule",
    "/assignment/rule": "rule",
    "/assignment/role": "role",
    "/assignment/field": "field",
}


@bp.route("/<key>/assignment", methods=["GET", "POST"])
def assignment(key: str):
    """Who a new item goes to when its creator names nobody (``assignment:`` of type.yaml)."""
    editor = _editor(key)
    errors: dict[str, list[str]] = {}
    status = 200
    form = request.form if request.method == "POST" else None
    if form is not None:
        rule = form.get("rule", "")
        try:
            loaded = _save(
                editor,
                lambda d: builder.set_assignment(d, rule, form.get("role", ""), form.get("field", "")),
                check_at=lambda _: _ASSIGNMENT_FIELDS,
            )
        except ValidationFailed as exc:
            status = _refused(exc, errors)
        else:
            what = "Saved the assignment rule" if rule else "Removed the assignment rule: items are assigned by hand"
            return _after_save(editor, loaded, what, "type_admin.assignment")
    return _assignment_page(editor, errors, form, status)


def _assignment_page(editor: Editor, errors: dict, form, status: int):
    try:
        draft = Draft.parse(editor.texts)
    except ValidationFailed as exc:
        return _page("assignment.html", editor, "assignment", status, unparsed=exc.problems)
    rule = draft.manifest.get("assignment")
    rule = rule if isinstance(rule, dict) else None
    overrides = draft.manifest.get("permissions") or {}
    roles = [
        {"key": r.key, "name": r.name, "sees": _sees(r.capabilities, overrides.get(r.key))}
        for r in editor.service.registry.roles.values()
    ]
    own = [r for r in (draft.roles or {}).get("roles") or () if isinstance(r, dict) and r.get("key")]
    own_keys = {r["key"] for r in own}
    roles = [r for r in roles if r["key"] not in own_keys] + [
        {
            "key": r["key"],
            "name": r.get("name") or r["key"],
            "sees": _sees(r.get("capabilities"), overrides.get(r["key"])),
        }
        for r in own
    ]
    roles.sort(key=lambda r: r["name"].lower())
    candidates = builder.assignable_fields(draft)
    chosen = {
        "rule": form.get("rule", "") if form is not None else (rule or {}).get("rule", ""),
        "role": form.get("role", "") if form is not None else (rule or {}).get("role", ""),
        "field": form.get("field", "") if form is not None else (rule or {}).get("field", ""),
    }
    checked = chosen["rule"] if chosen["rule"] in builder.ASSIGNMENT_RULES else ""
    return _page(
        "assignment.html",
        editor,
        "assignment",
        status,
        unparsed=[],
        now=builder.assignment_text(
            rule,
            editor.name,
            {r["key"]: r["name"] for r in roles},
            {f.path: f.title for f in builder.fields(draft)},
        ),
        rules=builder.ASSIGNMENT_RULES,
        roles=roles,
        candidates=candidates,
        chosen=chosen,
        assignee_required=bool(draft.manifest.get("assignee_required")),
        errors=errors,
        targets={"rule": f"rule-{checked or 'none'}", "role": "assign-role", "field": "assign-field"},
    )


def _sees(capabilities, override) -> bool:
    """Whether a role's users may view the type's items, as the loader decides it."""
    own = set(capabilities or ())
    caps = set(override) if override is not None else own
    return bool({"*", "items.view"} & caps) or "*" in own


# -- publish, history, rollback ------------------------------------------------------------------------


@bp.route("/<key>/publish", methods=["GET", "POST"])
def publish(key: str):
    editor = _editor(key)
    status = 200
    note = ""
    refused = None
    if request.method == "POST":
        note = request.form.get("note", "")
        action = request.form.get("action", "publish")
        service = editor.service
        try:
            if action == "discard":
                service.discard_draft(key)
                flash("Discarded the draft.", "info")
                if not service.is_stored(key):
                    return redirect(url_for("type_admin.type_list"), 303)
                return redirect(url_for("type_admin.publish", key=key), 303)
            published = service.publish(key, note)
        except (DefinitionRejected, ValidationFailed) as exc:
            db_session().rollback()
            refused, status = exc, exc.status
        except TrackerError:
            db_session().rollback()
            raise
        else:
            message = f"Published version {published.definition.version} of {key}: new items use it now."
            behind = TypeMigrator(db_session(), current_user.actor, service.registry).count_behind(key)
            if behind:
                message += f" {behind} item(s) are under older versions; see Migrate items."
            flash(message, "info")
            return redirect(url_for("type_admin.publish", key=key), 303)
        editor = _editor(key)
    service = editor.service
    newest = service._newest_published(key)
    pending_diff = ""
    if editor.has_draft:
        pending_diff = documents.diff(
            Texts.of(newest) if newest else None,
            editor.texts,
            f"version {newest.version}" if newest else "empty",
            "draft",
        )
    return _page(
        "publish.html",
        editor,
        "publish",
        status,
        history=service.history(key),
        pending_diff=pending_diff,
        note=note,
        refused=refused,
        current=newest.version if newest else None,
    )


@bp.route("/<key>/rollback", methods=["POST"])
def rollback(key: str):
    editor = _editor(key)
    version = _index(request.form.get("version", "")) or 0
    try:
        published = editor.service.rollback(key, version, request.form.get("note", ""))
    except (DefinitionRejected, ValidationFailed) as exc:
        db_session().rollback()
        service = editor.service
        newest = service._newest_published(key)
        return _page(
            "publish.html",
            editor,
            "publish",
            exc.status,
            history=service.history(key),
            pending_diff="",
            note="",
            refused=exc,
            current=newest.version if newest else None,
        )
    flash(f"Published the documents of version {version} again as version {published.definition.version}.", "info")
    return redirect(url_for("type_admin.publish", key=key), 303)


# -- migrating items -----------------------------------------------------------------------------------


@bp.route("/<key>/migrate", methods=["GET", "POST"])
def migrate(key: str):
    """What migrating the items behind the current version would do; the button starts it in
    the background and leads to its page. While one runs, the page leads to it instead."""
    editor = _editor(key)
    if editor.published is None or key not in editor.service.registry.types:
        return _page("migrate.html", editor, "migrate", preview=None, describe=describe, running=None, recent=[])
    actor = current_user.actor
    if request.method == "POST":
        try:
            job = type_migration_job.start(runtime(), actor, key)
        except type_migration_job.MigrationRunning as exc:
            flash(f"{exc.message} {exc.advice}", "error")
            if actor.is_admin or exc.job.user_id == actor.user_id:
                return redirect(url_for("type_admin.migration_job", key=key, job_id=exc.job.id), 303)
            return redirect(url_for("type_admin.migrate", key=key), 303)
        except TrackerError as exc:
            if exc.status == 403:
                raise
            flash(f"{exc.message} {exc.advice}".strip(), "info")
            return redirect(url_for("type_admin.migrate", key=key), 303)
        return redirect(url_for("type_admin.migration_job", key=key, job_id=job.id), 303)
    running = background.running(runtime(), type_migration_job.KIND, key)
    # while a migration runs the counts change under it: the page leads to it rather than preview
    migrator = TypeMigrator(db_session(), actor, editor.service.registry)
    preview = None if running else migrator.preview(key, sample=PREVIEW_SAMPLE)
    return _page(
        "migrate.html",
        editor,
        "migrate",
        preview=preview,
        describe=describe,
        running=running,
        may_follow=running is not None and (actor.is_admin or running.user_id == actor.user_id),
        recent=background.recent(runtime(), actor, type_migration_job.KIND, subject=key, limit=5),
    )


@bp.route("/<key>/migrate/jobs/<int:job_id>")
def migration_job(key: str, job_id: int):
    """A migration: its progress while it runs; then how many items were migrated and which
    could not be, with the reasons and links to them (a page at a time), or why it stopped.
    Only the admin who started it (and administrators) see it."""
    editor = _editor(key)
    job = background.get(runtime(), current_user.actor, job_id, type_migration_job.KIND, subject=key)
    state = background.state(job)
    result = job.result if job.status == "done" else None
    return _page(
        "migration_job.html",
        editor,
        "migrate",
        job=job,
        state=state,
        running=job.status in background.RUNNING and not state["stalled"],
        refresh=job_pages.REFRESH_SECONDS,
        result=result,
        failures=job_pages.page_of(result["failures"]) if result else None,
    )


@bp.route("/<key>/migrate/jobs/<int:job_id>/progress.json")
def migration_progress(key: str, job_id: int):
    """How far the migration is, for its progress bar."""
    job = background.get(runtime(), current_user.actor, job_id, type_migration_job.KIND, subject=key)
    return job_pages.progress_response(
        background.state(job), url_for("type_admin.migration_job", key=key, job_id=job.id)
    )
