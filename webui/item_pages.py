"""Item pages: create a tracker item, and the item page where notification links land.

Every change goes through :class:`~engine.services.ItemService`; these views only turn form
input into service calls (see :mod:`webui.forms`) and the engine's problems back into messages
on the fields they concern. A refused save re-renders the form with everything the user typed
(status 422, or 409 for a stale version or a duplicate); a successful one redirects (303) to
the item page with a message.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import select

from engine import documents, permissions, progress
from engine.definitions.model import TrackerType, Transition
from engine.errors import Conflict, NotFound, PermissionDenied, Problem, TrackerError, ValidationFailed
from engine.models import Event, Item, User
from engine.services import ItemService
from engine.validation import get_path, humanize_label, schema_at
from webui import db_session, forms, runtime

bp = Blueprint("items", __name__)

#: what each kind of type is listed under on the Create page
_GROUPS = (("tracker", "Trackers"), ("subject", "Records"), ("automation", "Process automations"))
#: ids the pages give the inputs that problems outside the data concern
_TARGETS = {"subject": "subject-q", "assignee": "assignee", "description": "description", "comment": "comment"}


def _service() -> ItemService:
    return runtime().items(db_session(), current_user.actor)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _action(form) -> tuple[str, str]:
    """Which button sent the form: ("add_row", name), ("remove_row", name), ("find_subject", "")
    or ("save", "") (also when Enter was pressed in a field)."""
    for name in ("add_row", "remove_row"):
        if form.get(name):
            return name, form[name]
    if "find_subject" in form:
        return "find_subject", ""
    return "save", ""


def _outside(problems: list[Problem]) -> dict[str, list[Problem]]:
    """Problems about the page's own inputs (subject, assignee ...), by path."""
    out: dict[str, list[Problem]] = {}
    for p in problems:
        if p.path in _TARGETS:
            out.setdefault(p.path, []).append(p)
    return out


def _put(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b`` in nested dicts; None removes it."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        if not isinstance(node.get(part), dict):
            if value is None:
                return
            node[part] = {}
        node = node[part]
    if value is None:
        node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)


def _put_raw(raw: dict, spec: forms.FieldSpec, dotted: str, value: Any) -> None:
    """Show the stored ``value`` in the raw form values at ``dotted`` (a field not sent back)."""
    target = spec.find(dotted)
    if target is None:
        return
    *parents, last = dotted.split(".")
    node = raw
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node[last] = forms.to_raw(target, value)


# -- create ------------------------------------------------------------------------------------------


@bp.route("/items/new", methods=["GET", "POST"])
@login_required
def create():
    """Pick a type (no ``type``), or fill in a new item of ``type`` (optionally from
    ``template``, about the learner ``subject``)."""
    service = _service()
    key = request.args.get("type", "").strip()
    subject_arg = _int(request.args.get("subject"))
    if not key:
        creatable = service.creatable_types()
        groups = [(title, [t for t in creatable if t.kind == kind]) for kind, title in _GROUPS]
        groups = [(title, types) for title, types in groups if types]
        return render_template("pick_type.html", groups=groups, subject=subject_arg)
    tracker_type = service.registry.type(key)
    service.require_create(tracker_type)
    template_key = request.args.get("template") or None
    template = tracker_type.template(template_key) if template_key else None
    if template_key and template is None:
        names = ", ".join(t.key for t in tracker_type.templates) or "none"
        raise NotFound(f"{tracker_type.name} has no template '{template_key}'.", f"Use one of: {names}.")
    workflow = service.registry.workflow_for(tracker_type)
    rules = workflow.fields_for(workflow.initial.key)
    spec = forms.build_spec(tracker_type.schema, exclude=set(service.hidden_fields(tracker_type)) | set(rules.hidden))
    start = template.data if template else {}
    page = _CreatePage(service, tracker_type, spec, template)

    if request.method == "GET":
        bound = forms.BoundForm(spec, raw=forms.to_raw(spec, start, defaults=True))
        return page.render(bound, subject_id=subject_arg, query=request.args.get("subject_q", ""))

    form = request.form
    bound = forms.BoundForm(spec, formdata=form)
    values = {
        "subject_id": _int(form.get("subject")),
        "query": form.get("subject_q", ""),
        "assignee": form.get("assignee", ""),
        "description": form.get("description", ""),
    }
    action, target = _action(form)
    if action == "add_row":
        return page.render(bound, focus=bound.add_row(target), **values)
    if action == "remove_row":
        return page.render(bound, focus=bound.remove_row(target), **values)
    if action == "find_subject":
        return page.render(bound, focus="subject-q", searched=True, **values)
    data = bound.to_json(start)
    if template is not None:
        # a field the user emptied must not come back from the template
        for name in template.data:
            if name not in data and spec.child(name) is not None:
                data[name] = None
    try:
        item = service.create(
            tracker_type.key,
            data,
            subject_id=values["subject_id"],
            assignee=values["assignee"].strip() or None,
            description=values["description"].strip(),
            template=template.key if template else None,
        )
    except ValidationFailed as exc:
        return page.render(
            bound, problems=exc.problems, status=exc.status, existing=getattr(exc, "existing_id", None), **values
        )
    flash(f"Created #{item.id} {item.title}.", "info")
    for note in forms.unavailable_lookup_notes(form):
        flash(note, "info")
    return redirect(url_for("items.item", item_id=item.id), 303)


@dataclass
class _CreatePage:
    service: ItemService
    type: TrackerType
    spec: forms.FieldSpec
    template: Any

    def render(
        self,
        bound: forms.BoundForm,
        *,
        problems: list[Problem] = (),
        status: int = 200,
        subject_id: int | None = None,
        query: str = "",
        searched: bool = False,
        assignee: str = "",
        description: str = "",
        focus: str | None = None,
        existing: int | None = None,
    ):
        workflow = self.service.registry.workflow_for(self.type)
        rules = workflow.fields_for(workflow.initial.key)
        view = forms.build_view(
            bound,
            list(problems),
            layout=self.type.layout,
            read_only=rules.read_only,
            required=rules.required,
            targets=_TARGETS,
            focus=focus,
        )
        kind = self.type.subject
        subjects: list[tuple[Item, str]] = []
        if kind != "none":
            subjects = self._subjects(kind, subject_id, query if (searched or query) else "")
        return render_template(
            "create.html",
            type=self.type,
            template=self.template,
            initial=workflow.initial,
            view=view,
            outside=_outside(list(problems)),
            subject_kind=kind,
            subjects=subjects,
            subject_id=subject_id,
            subject_q=query,
            searched=searched or bool(query.strip()),
            users=self.service.assignable_users(self.type),
            assignee=assignee,
            description=description,
            existing=existing,
        ), status

    def _subjects(self, kind: str, subject_id: int | None, query: str) -> list[tuple[Item, str]]:
        """The picked learner (kept across round trips) and those matching the search."""
        found: list[Item] = []
        if subject_id is not None:
            try:
                picked = self.service.get(subject_id)
            except TrackerError:
                picked = None
            if picked is not None and picked.type_key == kind:
                found.append(picked)
        if query.strip():
            found += [s for s in self.service.search_subjects(kind, query) if s.id != subject_id]
        subject_type = self.service.registry.types.get(kind)
        return [(s, _subject_label(s, subject_type)) for s in found]


def _subject_label(subject: Item, subject_type: TrackerType | None) -> str:
    """ "Jane Smith · ULN 1000000043 · born 2001-02-03": enough to tell two learners apart."""
    parts = [subject.title]
    names = [*(subject_type.identity if subject_type else ()), "date_of_birth"]
    for name in dict.fromkeys(names):
        value = get_path(subject.data, name)
        if value in (None, ""):
            continue
        if name == "date_of_birth":
            parts.append(f"born {value}")
        else:
            sub = (schema_at(subject_type.schema, name) if subject_type else None) or {}
            parts.append(f"{sub.get('title') or humanize_label(name)} {value}")
    return " · ".join(parts)


# -- the item page ---------------------------------------------------------------------------------


class _Item:
    """What the item page needs to know about one item for the signed-in user."""

    def __init__(self, service: ItemService, item: Item) -> None:
        self.service = service
        self.item = item
        self.type = service.type_of(item)
        self.workflow = service.workflow_of(item)
        self.rules = self.workflow.fields_for(item.status)
        self.visible = service.visible_data(item)
        exclude = set(service.hidden_fields(self.type, item)) | set(self.rules.hidden)
        self.spec = forms.build_spec(self.type.schema, exclude=exclude)
        self.can_edit = permissions.allows(service.actor, "items.edit", self.type, item)

    @property
    def locked(self) -> list[str]:
        """Dotted names the page does not send back: read-only now, or hidden by the state."""
        if "*" in self.rules.read_only:
            return [c.dotted for c in self.spec.children] + list(self.rules.hidden)
        return [*self.rules.read_only, *self.rules.hidden]

    def stored_form(self) -> forms.BoundForm:
        return forms.BoundForm(self.spec, raw=forms.to_raw(self.spec, self.visible))

    def keep_stored(self, bound: forms.BoundForm, formdata) -> None:
        """Show stored values for the read-only fields the browser did not send."""
        for name in self.locked:
            if not forms.submitted(formdata, name):
                _put_raw(bound.raw, self.spec, name, get_path(self.visible, name))
        bound.rebind()

    def new_data(self, bound: forms.BoundForm, formdata) -> dict:
        """The whole data to save: the stored data with the form's fields laid over it; fields
        not sent back (read-only, hidden by the state) keep their stored values. Finance fields
        the user may not see are not in the form; the engine keeps them."""
        typed = bound.to_json(self.visible)
        data = copy.deepcopy(self.visible)
        for child in self.spec.children:
            if child.key in typed:
                data[child.key] = typed[child.key]
            else:
                data.pop(child.key, None)
        for name in self.locked:
            if not forms.submitted(formdata, name):
                _put(data, name, get_path(self.visible, name))
        return data

    def needs(self, transition: Transition) -> list[str]:
        """The fields a transition asks for: what it requires and what its target state requires."""
        names = [*transition.requires, *self.workflow.fields_for(transition.target).required]
        return [n for n in dict.fromkeys(names) if self.spec.find(n) is not None]


@bp.route("/items/<int:item_id>", methods=["GET", "POST"])
@bp.route("/items/<int:item_id>/edit", methods=["GET", "POST"], endpoint="edit_item")
@login_required
def item(item_id: int):
    """The item: its fields (editable as permissions and the state allow), next steps,
    assignee, comments and history. POST saves the fields."""
    service = _service()
    page = _Item(service, service.get(item_id))
    if request.method == "GET":
        return _item_page(page, page.stored_form())
    permissions.require(service.actor, "items.edit", page.type, page.item)
    form = request.form
    bound = forms.BoundForm(page.spec, formdata=form)
    version, seen = _int(form.get("version")), _int(form.get("seen"))
    description = form.get("description") if "description" in form else None
    action, target = _action(form)
    if action != "save":
        focus = bound.add_row(target) if action == "add_row" else bound.remove_row(target)
        page.keep_stored(bound, form)
        return _item_page(page, bound, focus=focus, version=version, seen=seen, description=description)
    data = page.new_data(bound, form)
    page.keep_stored(bound, form)
    before = page.item.version
    try:
        saved = service.update(
            item_id,
            data=data,
            description=description.strip() if description is not None else None,
            expected_version=version,
        )
    except Conflict as exc:
        page = _Item(service, service.get(item_id))
        bound = forms.BoundForm(page.spec, raw=bound.raw)
        conflict, notes, description = _rebase(page, bound, exc, seen, data, description)
        return _item_page(page, bound, problems=notes, conflict=conflict, status=exc.status, description=description)
    except ValidationFailed as exc:
        return _item_page(
            page, bound, problems=exc.problems, status=exc.status, version=version, seen=seen, description=description
        )
    if saved.version == before:
        flash("Nothing was changed, so there was nothing to save.", "info")
    else:
        flash(f"Saved #{saved.id} {saved.title}.", "info")
        for note in forms.unavailable_lookup_notes(request.form):
            flash(note, "info")
    return redirect(url_for("items.item", item_id=item_id), 303)


@dataclass
class _Conflict:
    message: str
    entries: list[_Entry]


def _conflict(page: _Item, exc: Conflict, seen: int | None) -> _Conflict:
    """Who changed what since the user opened the page: the events after the last one they saw."""
    return _Conflict(exc.message, _history(page, _newer(page, seen)))


def _newer(page: _Item, seen: int | None) -> list[Event]:
    return [e for e in page.service.history(page.item.id) if seen is not None and e.id > seen]


def _rebase(
    page: _Item,
    bound: forms.BoundForm,
    exc: Conflict,
    seen: int | None,
    mine: dict,
    description: str | None,
) -> tuple[_Conflict, list[Problem], str | None]:
    """Carry the user's edit over to the new version after a stale save.

    The data they started from is the current data with the newer changes undone. A field
    the others changed and the user did not now shows the others' value; a field both changed
    keeps the user's value, with a note saying what the others made of it. Returns the
    conflict to show, those notes, and the description to show.
    """
    newer = _newer(page, seen)
    current = page.visible
    base = copy.deepcopy(current)
    base_description = page.item.description
    changed_by: dict[str, str] = {}
    for event in reversed(newer):
        if event.kind != "updated":
            continue
        who = event.actor.label if event.actor else "system"
        for change in page.service.visible_payload(page.item, event).get("changes", []):
            path = change["path"]
            if path == "description":
                base_description = change["old"] or ""
                changed_by.setdefault("description", who)
            elif path.startswith("/"):
                _set_pointer(base, path, change["old"])
                changed_by.setdefault(path[1:].split("/")[0].replace("~1", "/").replace("~0", "~"), who)
    base = _pruned(base)
    notes = []
    for key, who in changed_by.items():
        child = page.spec.child(key)
        if child is None:
            continue
        if mine.get(key) == base.get(key):
            bound.raw[key] = forms.to_raw(child, current.get(key))
        elif mine.get(key) != current.get(key):
            theirs = forms.display_value(child, forms.to_raw(child, current.get(key)))
            notes.append(
                Problem(
                    "/" + key,
                    f"{who} also changed {child.label} (to: {theirs}); the form shows your value",
                    "Check which is right, then save again.",
                    severity="warning",
                )
            )
    bound.rebind()
    if "description" in changed_by and description is not None and description.strip() == base_description:
        description = page.item.description
    return _Conflict(exc.message, _history(page, newer)), notes, description


def _set_pointer(data: dict, path: str, value: Any) -> None:
    """Set (None: remove) the value at a JSON pointer, making objects and rows on the way."""
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    node: Any = data
    for part, following in zip(parts[:-1], parts[1:], strict=True):
        empty: Any = [] if following.isdigit() else {}
        if isinstance(node, list) and part.isdigit():
            while len(node) <= int(part):
                node.append({})
            if not isinstance(node[int(part)], dict | list):
                node[int(part)] = empty
            node = node[int(part)]
        elif isinstance(node, dict):
            if not isinstance(node.get(part), dict | list):
                node[part] = empty
            node = node[part]
        else:
            return
    last = parts[-1]
    if isinstance(node, dict):
        if value is None:
            node.pop(last, None)
        else:
            node[last] = copy.deepcopy(value)
    elif isinstance(node, list) and last.isdigit():
        while len(node) <= int(last):
            node.append(None)
        node[int(last)] = copy.deepcopy(value)


def _pruned(value: Any) -> Any:
    """Without empty objects, empty rows and nulls, as form input never has them."""
    if isinstance(value, dict):
        out = {k: _pruned(v) for k, v in value.items()}
        return {k: v for k, v in out.items() if v not in (None, {}, [])}
    if isinstance(value, list):
        return [v for v in (_pruned(v) for v in value) if v not in (None, {}, [])]
    return value


def _item_page(
    page: _Item,
    bound: forms.BoundForm,
    *,
    problems: list[Problem] = (),
    status: int = 200,
    version: int | None = None,
    seen: int | None = None,
    focus: str | None = None,
    conflict: _Conflict | None = None,
    description: str | None = None,
    comment: str = "",
    assignee: str | None = None,
):
    service, found = page.service, page.item
    events = service.history(found.id)
    editing = page.can_edit
    view = forms.build_view(
        bound,
        list(problems),
        layout=page.type.layout,
        read_only=page.rules.read_only,
        required=page.rules.required,
        all_read_only=not editing,
        targets=_TARGETS,
        focus=focus,
    )
    transitions = [(t, page.needs(t)) for t in service.available_transitions(found)]
    users = service.assignable_users(page.type) if editing else []
    if found.assignee is not None and all(u.id != found.assignee_id for u in users) and editing:
        users.insert(0, found.assignee)
    return render_template(
        "item.html",
        item=found,
        type=page.type,
        workflow=page.workflow,
        state=page.workflow.state(found.status),
        view=view,
        editing=editing,
        outside=_outside(list(problems)),
        version=found.version if version is None else version,
        seen=(events[-1].id if events else 0) if seen is None else seen,
        conflict=conflict,
        description=found.description if description is None else description,
        warnings=service.visible_warnings(found),
        transitions=transitions,
        users=users,
        assignee=found.assignee.username if assignee is None and found.assignee else (assignee or ""),
        comment=comment,
        history=_history(page, events),
    ), status


@bp.post("/items/<int:item_id>/assign")
@login_required
def assign(item_id: int):
    """Change the assignee (empty: nobody); they are notified with a link to the item."""
    service = _service()
    page = _Item(service, service.get(item_id))
    username = request.form.get("assignee", "").strip()
    try:
        saved = service.assign(item_id, username or None)
    except ValidationFailed as exc:
        return _item_page(page, page.stored_form(), problems=exc.problems, status=exc.status, assignee=username)
    who = saved.assignee.label if saved.assignee else "nobody"
    flash(f"#{saved.id} is assigned to {who}.", "info")
    return redirect(url_for("items.item", item_id=item_id), 303)


@bp.post("/items/<int:item_id>/comment")
@login_required
def comment(item_id: int):
    """Add a comment to the item's history."""
    service = _service()
    page = _Item(service, service.get(item_id))
    text = request.form.get("comment", "")
    try:
        service.comment(item_id, text)
    except ValidationFailed as exc:
        return _item_page(page, page.stored_form(), problems=exc.problems, status=exc.status, comment=text)
    flash("Your comment was added.", "info")
    return redirect(url_for("items.item", item_id=item_id, _anchor="history"), 303)


@bp.route("/items/<int:item_id>/transition/<key>", methods=["GET", "POST"])
@login_required
def transition(item_id: int, key: str):
    """Take the transition ``key``. GET shows the fields it needs (if any) in one small form;
    POST fills them and moves the item in one step, or shows why it cannot move."""
    service = _service()
    page = _Item(service, service.get(item_id))
    chosen = next((t for t in page.workflow.transitions if t.key == key), None)
    if chosen is None:
        raise NotFound(
            f"The {page.workflow.name} workflow has no step '{key}'.",
            "Use one of the buttons on the item's page.",
        )
    needs = page.needs(chosen)
    spec = forms.prune(page.spec, needs)
    state = page.workflow.state(page.item.status)
    if request.method == "GET":
        if chosen not in service.available_transitions(page.item):
            here = state.label if state else page.item.status
            options = ", ".join(t.label for t in service.available_transitions(page.item)) or "none"
            raise PermissionDenied(
                f"'{chosen.label}' is not open to {service.actor.username} on item #{page.item.id} "
                f"while it is '{here}'.",
                f"Steps you can take now: {options}.",
            )
        bound = forms.BoundForm(spec, raw=forms.to_raw(spec, page.visible))
        return _transition_page(page, chosen, bound)
    form = request.form
    version = _int(form.get("version"))
    bound = forms.BoundForm(spec, formdata=form)
    action, target = _action(form)
    if action == "add_row":
        return _transition_page(page, chosen, bound, focus=bound.add_row(target), version=version)
    if action == "remove_row":
        return _transition_page(page, chosen, bound, focus=bound.remove_row(target), version=version)
    data = _transition_data(page, spec, bound, needs) if needs else None
    try:
        moved = service.transition(item_id, transition=chosen.key, data=data, expected_version=version)
    except Conflict as exc:
        seen = _int(form.get("seen"))
        page = _Item(service, service.get(item_id))
        return _transition_page(page, chosen, bound, conflict=_conflict(page, exc, seen), status=exc.status)
    except ValidationFailed as exc:
        return _transition_page(page, chosen, bound, problems=exc.problems, status=exc.status, version=version)
    target_state = page.workflow.state(moved.status)
    flash(f"#{moved.id} is now '{target_state.label if target_state else moved.status}'.", "info")
    return redirect(url_for("items.item", item_id=item_id), 303)


def _transition_data(page: _Item, spec: forms.FieldSpec, bound: forms.BoundForm, needs: list[str]) -> dict:
    """The asked-for fields laid over the stored data, as whole top-level values (the engine
    lays ``data`` over the item one top-level field at a time); an emptied field is removed."""
    typed = bound.to_json(page.visible)
    merged = copy.deepcopy(page.visible)
    for name in needs:
        _put(merged, name, get_path(typed, name))
    return {top: merged.get(top) for top in dict.fromkeys(n.split(".")[0] for n in needs)}


def _transition_page(
    page: _Item,
    chosen: Transition,
    bound: forms.BoundForm,
    *,
    problems: list[Problem] = (),
    status: int = 200,
    version: int | None = None,
    focus: str | None = None,
    conflict: _Conflict | None = None,
):
    events = page.service.history(page.item.id)
    view = forms.build_view(
        bound,
        list(problems),
        read_only=page.rules.read_only,
        required=page.needs(chosen),
        targets=_TARGETS,
        focus=focus,
        default_section=f"Needed to '{chosen.label}'",
    )
    return render_template(
        "transition.html",
        item=page.item,
        type=page.type,
        transition=chosen,
        state=page.workflow.state(page.item.status),
        target=page.workflow.state(chosen.target),
        view=view,
        version=page.item.version if version is None else version,
        seen=events[-1].id if events else 0,
        conflict=conflict,
    ), status


# -- history -----------------------------------------------------------------------------------------


@dataclass
class _Entry:
    """One history event in words, with its field changes as (label, old, new)."""

    event: Event
    who: str
    text: str
    changes: list[tuple[str, str, str]] = field(default_factory=list)


def _history(page: _Item, events: list[Event]) -> list[_Entry]:
    """Events as the user may see them: finance values left out, fields by their labels."""
    labels = forms.build_spec(page.type.schema)
    names = {p for e in events if e.kind == "assigned" for p in (e.payload.get("from"), e.payload.get("to")) if p}
    users = {u.username: u.label for u in db_session().scalars(select(User).where(User.username.in_(names)))}

    def state(key: str | None) -> str:
        found = page.workflow.state(key) if key else None
        return found.label if found else (key or "?")

    def value(path: str, raw: Any) -> str:
        shown = forms.display_value(forms.spec_at(labels, path), raw)
        return "(empty)" if shown == "—" else shown

    out = []
    for event in events:
        payload = page.service.visible_payload(page.item, event)
        who = event.actor.label if event.actor else "system"
        if event.kind == "created":
            entry = _Entry(event, who, "created the item")
        elif event.kind == "updated":
            changes = [
                (forms.field_label(labels, c["path"]), value(c["path"], c["old"]), value(c["path"], c["new"]))
                for c in payload.get("changes", [])
            ]
            text = "changed " + ", ".join(c[0] for c in changes) if changes else "saved"
            entry = _Entry(event, who, text + _cause(payload.get("cause")), changes)
        elif event.kind == "transitioned":
            step = payload.get("label") or payload.get("transition") or ""
            text = f"moved it from {state(payload.get('from'))} to {state(payload.get('to'))}"
            entry = _Entry(event, who, f"{text} ({step})" if step else text)
        elif event.kind == "assigned":
            new, old = payload.get("to"), payload.get("from")
            entry = _Entry(
                event,
                who,
                f"assigned it to {new or 'nobody'} (was {old or 'nobody'})",
                [("Assignee", users.get(old, old or "(nobody)"), users.get(new, new or "(nobody)"))],
            )
        elif event.kind == "commented":
            entry = _Entry(event, who, f"commented: {payload.get('text', '')}")
        elif event.kind == "automation_ran":
            entry = _Entry(event, "Automation", payload.get("summary") or "ran")
        elif event.kind == "migrated":
            steps = "; ".join(payload.get("steps") or ()) or "no change to the data"
            text = f"migrated it from version {payload.get('from_version')} to version {payload.get('to_version')}"
            entry = _Entry(event, who, f"{text} of its type ({steps})")
        elif event.kind.startswith(("document_", "progress_")):
            text = documents.describe_event(event.kind, payload) or progress.describe_event(event.kind, payload)
            entry = _Entry(event, who, text or event.kind.replace("_", " "))
        else:
            entry = _Entry(event, who, event.kind.replace("_", " "))
        out.append(entry)
    return out


def _cause(cause: dict | None) -> str:
    """`` (by 'Record the review' on H&S review #12)`` for a change another item's step made
    (an ``update_related`` action), so the history says why the field changed."""
    if not cause or not cause.get("item"):
        return ""
    registry = runtime().registry
    source = db_session().get(Item, cause["item"])
    tracker_type = registry.types.get(source.type_key) if source is not None else None
    step = cause.get("transition") or ""
    if tracker_type is not None:
        found = next((t for t in registry.workflow_for(tracker_type).transitions if t.key == step), None)
        step = found.label if found is not None else step
    where = f"{tracker_type.name} #{cause['item']}" if tracker_type is not None else f"#{cause['item']}"
    return f" (by '{step}' on {where})" if step else f" (by a step on {where})"


@bp.app_context_processor
def _create_link() -> dict:
    """``may_create()`` in templates: whether to offer the Create link."""

    def may_create() -> bool:
        if not current_user.is_authenticated:
            return False
        return bool(_service().creatable_types())

    return {"may_create": may_create}
