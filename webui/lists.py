"""Lists: the home page with counts, a list per type, "My items", learner search, CSV export.

Every list reads through ``ItemService.list``, so what a user sees (own-scope roles,
finance-only fields) is the engine's decision. Filters are plain GET parameters, so a list
can be bookmarked, shared and used without JavaScript: ``status`` (repeatable), ``assignee``
(``me``, ``none`` or a user name), ``q`` (text), ``sort`` (a column, ``-`` for descending)
and ``page``. A bad value is a 4xx page saying what to use instead, never a 500.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from importlib import import_module
from typing import Any

from flask import Blueprint, Response, current_app, render_template, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import func, select
from sqlalchemy.sql.elements import True_

from engine import permissions
from engine.definitions.model import State, TrackerType
from engine.documents import awaiting_documents
from engine.errors import NotFound, Problem, ValidationFailed
from engine.models import Item, User
from engine.services.bulk import Origin
from engine.services.exports import CsvExport, export_items, is_hidden
from engine.services.items import ItemService
from engine.tasklists import PROBLEMS_KEY, TaskListService
from engine.validation import choices, get_path, humanize_label, schema_at
from webui import db_session, runtime

bp = Blueprint("lists", __name__)

#: longest text filter or search accepted; longer is refused with a message
MAX_QUERY_LENGTH = 200
#: pages beyond this are past the end of any real list (and would overflow an SQL OFFSET)
MAX_PAGE = 1_000_000_000
#: the engine's default order, newest first
DEFAULT_SORT = "-id"
#: extra buttons on a type's list page, ``{type key: [(label, endpoint, capability)]}``: a blueprint
#: adds its own (webui/ilr.py: "Export ILR XML"); each link carries the list's filters
LIST_ACTIONS: dict[str, list[tuple[str, str, str]]] = {}
#: buttons that act on the items ticked on a type's list page, same shape as LIST_ACTIONS; the
#: endpoint gets the ticked items as ``id`` repeated (a GET: it shows a form to confirm)
SELECTION_ACTIONS: dict[str, list[tuple[str, str, str]]] = {}


@bp.app_template_filter("field_label")
def field_label(name: str, tracker_type) -> str:
    sub = schema_at(tracker_type.schema, name) or {}
    return sub.get("title") or humanize_label(name.split(".")[-1])


@bp.app_template_filter("field_value")
def field_value(data: dict, name: str, tracker_type=None):
    value = get_path(data, name)
    if value is None or value == "":
        return "—"
    sub = (schema_at(tracker_type.schema, name) if tracker_type else None) or {}
    options = choices(sub)
    if options:
        return next((label for v, label in options if v == value), value)
    if isinstance(value, bool):
        return "Yes" if value else "No"
    return value


@bp.app_context_processor
def header_search() -> dict[str, bool]:
    """Whether the header shows the learner search: only to users who may view learners."""
    if not current_user.is_authenticated:
        return {"learner_search": False}
    learner = runtime().registry.types.get("learner")
    return {"learner_search": learner is not None and permissions.allows(current_user.actor, "items.view", learner)}


# -- the filters of a list ------------------------------------------------------------------------


@dataclass(frozen=True)
class ListQuery:
    """The filters, sort and page of a list, as read from (and written back to) the URL."""

    status: tuple[str, ...] = ()
    assignee: str = ""
    q: str = ""
    sort: str = ""
    page: int = 1

    @property
    def filtered(self) -> bool:
        return bool(self.status or self.assignee or self.q)

    @property
    def sort_key(self) -> str:
        return (self.sort or DEFAULT_SORT).lstrip("-")

    @property
    def descending(self) -> bool:
        return (self.sort or DEFAULT_SORT).startswith("-")

    def toggled(self, key: str) -> str:
        """The sort a click on column ``key`` asks for: ascending first, then the other way."""
        return f"-{key}" if self.sort_key == key and not self.descending else key

    def args(self, **changes: Any) -> dict[str, Any]:
        """URL parameters for this query with ``changes`` applied; empty ones and page 1 are left out."""
        values: dict[str, Any] = {
            "status": list(self.status),
            "assignee": self.assignee,
            "q": self.q,
            "sort": self.sort,
            "page": self.page,
        }
        values.update(changes)
        if values.get("page") == 1:
            values["page"] = None
        return {k: v for k, v in values.items() if v not in (None, "", [], ())}

    def service_filters(self) -> dict[str, Any]:
        return {"status": list(self.status) or None, "assignee": self.assignee or None, "q": self.q or None}


def read_query(states: Iterable[State], *, with_assignee: bool = True) -> ListQuery:
    """The list parameters of this request. Raises ValidationFailed (422) for a page that is
    not a whole number, a status that is not one of ``states``, or an over-long text."""
    args = request.args
    page_text = args.get("page", "").strip() or "1"
    if not re.fullmatch(r"[0-9]+", page_text) or int(page_text) < 1:
        raise ValidationFailed(
            [Problem("page", f"'{page_text[:20]}' is not a page number", "Use a whole number from 1 upwards.")],
            "This page of the list cannot be shown.",
        )
    known = {s.key: s.label for s in states}
    status = tuple(dict.fromkeys(s for s in args.getlist("status") if s))
    unknown = [s for s in status if s not in known]
    if unknown:
        raise ValidationFailed(
            [
                Problem(
                    "status",
                    f"'{name[:40]}' is not a status of these items",
                    f"Use one of: {', '.join(f'{k} ({v})' for k, v in known.items())}.",
                )
                for name in unknown
            ],
            "The list cannot be filtered like that.",
        )
    q = args.get("q", "").strip()
    if len(q) > MAX_QUERY_LENGTH:
        raise ValidationFailed(
            [Problem("q", f"The text to look for is {len(q)} characters long", f"Use at most {MAX_QUERY_LENGTH}.")],
            "The list cannot be filtered like that.",
        )
    return ListQuery(
        status=status,
        assignee=args.get("assignee", "").strip() if with_assignee else "",
        q=q,
        sort=args.get("sort", "").strip(),
        page=int(page_text),
    )


# -- what a list page shows -----------------------------------------------------------------------


@dataclass(frozen=True)
class ListColumn:
    """A column of a list table. ``key`` is ``id``, ``title``, ``type``, ``status``, ``assignee``,
    ``due_date``, ``details`` or a data field; ``sort`` is what a click on its header sorts by."""

    key: str
    label: str
    sort: str | None = None
    is_field: bool = False


@dataclass
class Row:
    item: Item
    type: TrackerType
    state: State | None
    #: field name -> display text, only the fields the user may see
    values: dict[str, str] = field(default_factory=dict)
    #: (label, text) of the item type's list columns, for lists mixing types
    details: list[tuple[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class Page:
    items: list[Item]
    total: int
    number: int
    count: int

    def links(self) -> list[int | None]:
        """Page numbers to link to: the first, the last and two either side of this one;
        None marks a gap."""
        wanted = {1, self.count, *range(self.number - 2, self.number + 3)}
        shown = sorted(n for n in wanted if 1 <= n <= self.count)
        out: list[int | None] = []
        for n in shown:
            if out and n - (out[-1] or 0) > 1:
                out.append(None)
            out.append(n)
        return out


def fetch_page(service: ItemService, type_key: str | None, query: ListQuery, **fixed: Any) -> Page:
    """One page of the list (``fixed`` filters win over the query's). Raises NotFound for a
    page past the end, ValidationFailed for a sort or assignee the engine does not know."""
    per_page = current_app.config["ITEMS_PER_PAGE"]
    if query.page > MAX_PAGE:
        raise _past_end(query.page, None)
    found, total = service.list(
        type_key,
        sort=query.sort or None,
        limit=per_page,
        offset=(query.page - 1) * per_page,
        **{**query.service_filters(), **fixed},
    )
    count = max((total + per_page - 1) // per_page, 1)
    if query.page > count:
        raise _past_end(query.page, count)
    return Page(found, total, query.page, count)


def _past_end(number: int, count: int | None) -> NotFound:
    pages = f": this list has {count} page{'' if count == 1 else 's'}" if count else ""
    return NotFound(f"There is no page {number} of this list{pages}.", "Go to page 1, or use the page links.")


def display_text(tracker_type: TrackerType, data: dict, name: str) -> str:
    value = field_value(data, name, tracker_type)
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict | list) else str(value)


def make_row(service: ItemService, item: Item, fields: Iterable[str] = (), *, details: bool = False) -> Row:
    tracker_type = service.type_of(item)
    data = service.visible_data(item)
    row = Row(item, tracker_type, service.workflow_of(item).state(item.status))
    row.values = {name: display_text(tracker_type, data, name) for name in fields}
    if details:
        hidden = service.hidden_fields(tracker_type, item)
        row.details = [
            (field_label(name, tracker_type), display_text(tracker_type, data, name))
            for name in tracker_type.list_columns
            if not is_hidden(name, hidden) and get_path(data, name) not in (None, "")
        ]
    return row


def active_users(selected: str) -> list[User]:
    """Users for the assignee filter: the active ones, and the selected one even if inactive."""
    return [u for u in runtime().users(db_session()).all_users() if u.active or u.username == selected]


def _url_maker(endpoint: str, query: ListQuery, **fixed: Any) -> Callable[..., str]:
    def url(**changes: Any) -> str:
        return url_for(endpoint, **fixed, **query.args(**changes))

    return url


def bulk_origin() -> Origin:
    """Where this request's bulk download comes from, and the addresses allowed (``TRACKER_BULK_EXPORT_ALLOW``)."""
    return Origin(request.remote_addr or "", runtime().settings.bulk_export_allow)


def _csv_response(export: CsvExport) -> Response:
    """Stream the export. The request's session is closed at teardown, before the body is
    sent; the rows reopen it, so the body closes it again when done (or abandoned).
    ``?format=<key>`` picks a plugin's export format instead of CSV."""
    from webui.plugin_admin import in_requested_format

    export = in_requested_format(export)
    session = db_session()

    def body() -> Iterator[str]:
        try:
            yield from export.lines()
        finally:
            session.close()

    return Response(
        body(),
        mimetype=export.fmt.media_type,
        headers={"Content-Disposition": f'attachment; filename="{export.filename}"'},
    )


# -- pages ----------------------------------------------------------------------------------------


@bp.route("/")
@login_required
def index():
    registry = runtime().registry
    session = db_session()
    actor = current_user.actor
    rows = []
    for t in sorted(registry.types.values(), key=lambda t: (t.kind != "subject", t.name)):
        if not permissions.allows(actor, "items.view", t):
            continue
        wf = registry.workflow_for(t)
        stmt = (
            select(Item.status, func.count())
            .where(Item.type_key == t.key, permissions.visible_clause(actor, t))
            .group_by(Item.status)
        )
        counts = dict(session.execute(stmt).all())
        rows.append(
            {
                "type": t,
                "total": sum(counts.values()),
                "states": [(s, counts.get(s.key, 0)) for s in wf.states],
            }
        )
    summary = summary_groups(registry, session, actor)
    return render_template("index.html", rows=rows, summary=summary, charts=overview_charts(rows, summary))


#: fill colours of the stacked bars, one per state in workflow order (cycled); dark enough
#: for white text and distinct from each other
PALETTE = ("#1d70b8", "#00703c", "#d4351c", "#4c2c92", "#f47738", "#28a197", "#912b88", "#505a5f")
#: width in SVG units of the longest bar
BAR_WIDTH = 480


def overview_charts(rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> dict[str, Any]:
    """What the home page's two SVG charts draw: items per state per type (stacked bars)
    and items with problems per type, with bar geometry computed here so the template only
    places rectangles. Types with no items are left out of the first chart."""
    longest = max((row["total"] for row in rows), default=0) or 1
    states_chart = []
    for row in rows:
        if not row["total"]:
            continue
        x, segments = 0.0, []
        for index, (state, count) in enumerate(row["states"]):
            if count:
                width = count * BAR_WIDTH / longest
                segments.append(
                    {
                        "label": state.label,
                        "count": count,
                        "x": x,
                        "width": width,
                        "fill": PALETTE[index % len(PALETTE)],
                    }
                )
                x += width
        states_chart.append({"name": row["type"].name, "total": row["total"], "segments": segments})
    problems = [
        {"name": entry["type_name"], "count": entry["count"]}
        for group in summary
        for entry in group["lists"]
        if entry["key"] == PROBLEMS_KEY
    ]
    most = max((p["count"] for p in problems), default=0) or 1
    for p in problems:
        p["width"] = p["count"] * BAR_WIDTH / most
    return {"states": states_chart, "problems": problems, "bar_width": BAR_WIDTH}


def summary_groups(registry, session, actor) -> list[dict[str, Any]]:
    """The performance summary: the task lists the actor may see with their counts, grouped
    by type in definition order, ``[{type, type_name, lists: [{key, label, count}]}]``."""
    groups: dict[str, dict[str, Any]] = {}
    for entry in TaskListService(session, actor, registry).summary():
        group = groups.setdefault(entry["type"], {"type": entry["type"], "type_name": entry["type_name"], "lists": []})
        group["lists"].append(entry)
    return list(groups.values())


@bp.route("/tasklists/<type_key>/<key>")
@login_required
def tasklist_items(type_key: str, key: str):
    """Exactly the items a summary count counts, a page at a time, with the type list's
    columns. A list the user's roles may not see is a 404, as if it did not exist."""
    registry = runtime().registry
    session = db_session()
    actor = current_user.actor
    tasklists = TaskListService(session, actor, registry)
    tracker_type, tasklist = tasklists.find(type_key, key)
    query = ListQuery(page=read_query((), with_assignee=False).page)  # a task list has its own filter
    per_page = current_app.config["ITEMS_PER_PAGE"]
    if query.page > MAX_PAGE:
        raise _past_end(query.page, None)
    found, total = tasklists.items(type_key, key, limit=per_page, offset=(query.page - 1) * per_page)
    count = max((total + per_page - 1) // per_page, 1)
    if query.page > count:
        raise _past_end(query.page, count)
    page = Page(found, total, query.page, count)
    service = runtime().items(session, actor)
    hidden = service.hidden_fields(tracker_type)
    fields = [name for name in tracker_type.list_columns if not is_hidden(name, hidden)]
    columns = [
        ListColumn("id", "#"),
        ListColumn("title", "Title"),
        ListColumn("status", "Status"),
        *(ListColumn(name, field_label(name, tracker_type), is_field=True) for name in fields),
        ListColumn("assignee", "Assignee"),
    ]
    if tracker_type.due_date:
        columns.append(ListColumn("due_date", "Due"))
    return render_template(
        "tasklist_items.html",
        type=tracker_type,
        tasklist=tasklist,
        query=query,
        page=page,
        columns=columns,
        rows=[make_row(service, item, fields) for item in page.items],
        url=_url_maker("lists.tasklist_items", query, type_key=type_key, key=key),
    )


@bp.route("/types/<key>")
@login_required
def type_items(key: str):
    registry = runtime().registry
    tracker_type = registry.type(key)
    workflow = registry.workflow_for(tracker_type)
    actor = current_user.actor
    service = runtime().items(db_session(), actor)
    query = read_query(workflow.states)
    page = fetch_page(service, key, query)
    hidden = service.hidden_fields(tracker_type)
    fields = [name for name in tracker_type.list_columns if not is_hidden(name, hidden)]
    columns = [
        ListColumn("id", "#", "id"),
        ListColumn("title", "Title", "title"),
        ListColumn("status", "Status", "status"),
        *(ListColumn(name, field_label(name, tracker_type), name, is_field=True) for name in fields),
        ListColumn("assignee", "Assignee"),
    ]
    if tracker_type.due_date:
        columns.append(ListColumn("due_date", "Due", "due_date"))
    if tracker_type.progress is not None:
        columns.append(ListColumn("progress", "Progress", "progress"))
    url = _url_maker("lists.type_items", query, key=key)
    return render_template(
        "type_items.html",
        type=tracker_type,
        states=workflow.states,
        query=query,
        page=page,
        columns=columns,
        rows=[make_row(service, item, fields) for item in page.items],
        users=active_users(query.assignee),
        url=url,
        clear_url=url_for("lists.type_items", key=key, **({"sort": query.sort} if query.sort else {})),
        sees_all=isinstance(permissions.visible_clause(actor, tracker_type), True_),
        may_create_type=permissions.allows(actor, tracker_type.create_capability, tracker_type),
        may_export=permissions.allows(actor, "exports.bulk", tracker_type),
        actions=[
            (label, url_for(endpoint, **query.args(page=None)))
            for label, endpoint, capability in LIST_ACTIONS.get(key, ())
            if permissions.allows(actor, capability, tracker_type)
        ],
        export_url=url_for("lists.export_type", key=key, **query.args(page=None)),
        selection_actions=[
            (label, url_for(endpoint))
            for label, endpoint, capability in SELECTION_ACTIONS.get(key, ())
            if permissions.allows(actor, capability, tracker_type)
        ],
    )


@bp.route("/types/<key>/export.csv")
@login_required
def export_type(key: str):
    """The type's list as CSV: same filters and sort, every page (``exports.bulk`` only)."""
    workflow = runtime().registry.workflow_for(runtime().registry.type(key))
    query = read_query(workflow.states)
    service = runtime().items(db_session(), current_user.actor)
    return _csv_response(
        export_items(service, key, sort=query.sort or None, origin=bulk_origin(), **query.service_filters())
    )


def _my_states(*, offered: bool = False) -> list[State]:
    """The states of every type the user may view, each key once, in workflow order; with
    ``offered``, only those of the types the user has items assigned in (the checkboxes
    offered on "My items"), so the filter lists what can match rather than every workflow."""
    registry = runtime().registry
    actor = current_user.actor
    mine: set[str] | None = None
    if offered:
        stmt = select(Item.type_key).where(Item.assignee_id == actor.user_id).distinct()
        mine = set(db_session().scalars(stmt))
    seen: dict[str, State] = {}
    for t in sorted(registry.types.values(), key=lambda t: t.name):
        if permissions.allows(actor, "items.view", t) and (mine is None or t.key in mine):
            for state in registry.workflow_for(t).states:
                seen.setdefault(state.key, state)
    return list(seen.values())


@bp.route("/my")
@login_required
def my_items():
    actor = current_user.actor
    service = runtime().items(db_session(), actor)
    query = read_query(_my_states(), with_assignee=False)
    page = fetch_page(service, None, query, assignee="me")
    offered = _my_states(offered=True)
    states = offered + [s for s in _my_states() if s.key in query.status and s not in offered]
    columns = [
        ListColumn("id", "#", "id"),
        ListColumn("title", "Title", "title"),
        ListColumn("type", "Type"),
        ListColumn("status", "Status", "status"),
        ListColumn("details", "Details"),
        ListColumn("due_date", "Due", "due_date"),
    ]
    url = _url_maker("lists.my_items", query)
    return render_template(
        "my_items.html",
        states=states,
        query=query,
        page=page,
        columns=columns,
        rows=[make_row(service, item, details=True) for item in page.items],
        url=url,
        clear_url=url_for("lists.my_items", **({"sort": query.sort} if query.sort else {})),
        may_export=permissions.allows(actor, "exports.bulk"),
        export_url=url_for("lists.export_my", **query.args(page=None)),
    )


@bp.route("/my/export.csv")
@login_required
def export_my():
    """The user's own items as CSV, across types (``exports.bulk`` only)."""
    query = read_query(_my_states(), with_assignee=False)
    service = runtime().items(db_session(), current_user.actor)
    filters = {**query.service_filters(), "assignee": "me"}
    return _csv_response(export_items(service, None, sort=query.sort or None, origin=bulk_origin(), **filters))


@dataclass
class Match:
    learner: Item
    uln: str
    date_of_birth: str
    item_count: int


@bp.route("/search")
@login_required
def search():
    """Learners whose name or ULN contains ``q``, each with how many items the user can see about them."""
    q = request.args.get("q", "").strip()
    if len(q) > MAX_QUERY_LENGTH:
        raise ValidationFailed(
            [Problem("q", f"The search is {len(q)} characters long", "Search by a name or a 10-digit ULN.")],
            "That search is too long.",
        )
    matches: list[Match] = []
    limit = 20
    if q:
        service = runtime().items(db_session(), current_user.actor)
        learner_type = runtime().registry.type("learner")
        for learner in service.search_subjects("learner", q, limit=limit):
            data = service.visible_data(learner)
            _found, count = service.list(subject_id=learner.id, limit=0)
            matches.append(
                Match(
                    learner,
                    display_text(learner_type, data, "uln"),
                    display_text(learner_type, data, "date_of_birth"),
                    count,
                )
            )
    return render_template("search.html", q=q, matches=matches, limit=limit)


#: most open items read for one learner's page
MAX_LEARNER_ITEMS = 500


@bp.route("/learners/<int:learner_id>")
@login_required
def learner(learner_id: int):
    """The learner's "shopping list": everything open across their items that the user may
    see: stored warnings with the advice to fix each, the task lists their items are in (one
    query per list, narrowed to this learner), and the items waiting for documents."""
    registry = runtime().registry
    session = db_session()
    actor = current_user.actor
    service = runtime().items(session, actor)
    person = service.get(learner_id)
    if person.type_key != "learner":
        raise NotFound(f"Item {learner_id} is not a learner.", "Search for the learner by name or ULN.")
    found, _total = service.list(subject_id=learner_id, limit=MAX_LEARNER_ITEMS)
    open_items = [i for i in found if (s := service.workflow_of(i).state(i.status)) is None or s.category == "open"]
    problems = [(item, service.visible_warnings(item)) for item in open_items if item.problem_count]
    problems = [(item, warnings) for item, warnings in problems if warnings]
    tasklists = TaskListService(session, actor, registry)
    in_lists = []
    for tracker_type, tasklist in tasklists.visible():
        stmt = select(Item).where(tasklists.where(tracker_type, tasklist), Item.subject_id == learner_id)
        matching = list(session.scalars(stmt.order_by(Item.id).limit(MAX_LEARNER_ITEMS)))
        if matching:
            in_lists.append({"type": tracker_type, "tasklist": tasklist, "items": matching})
    # waiting for documents: a step out of its state, or a documents_missing list, needs some not yet accepted
    documents = awaiting_documents(session, registry, open_items)
    return render_template(
        "learner.html",
        person=person,
        open_items=[make_row(service, item) for item in open_items],
        problems=problems,
        in_lists=in_lists,
        documents=documents,
        qualifications=import_module("webui.qualifications").for_learner(service, found),
    )
