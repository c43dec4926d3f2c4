"""Process automations as data: what an automation item says, checked and understood.

An automation is an item of a type with ``kind: automation`` (the built-in "Process
automation"). Its data says

- **when** (``trigger``): an item event (``created``, ``transitioned`` into ``state``,
  ``assigned``), a date reached (``date_reached``: ``date_field`` plus ``offset_days``,
  negative for days before), or a ``schedule`` (``every`` day, weekday, week on ``weekday``
  or month on ``day_of_month``, ``at`` a local time);
- **for which items** (``scope``): ``type_key`` and a ``filter`` in the task-list filter
  contract (``status``, ``status_category``, ``assignee``, ``all``), compiled to SQL by
  :mod:`engine.tasklists`;
- **do what** (``action``): ``create_item`` (a ``type_key`` from a ``template`` with
  ``values`` rendered from the item in the sandbox), ``assign``, ``transition`` or
  ``notify``.

:func:`definition_problems` checks everything the schema cannot (types, states,
templates, users and roles that must exist) when the automation is saved; the running
is in :mod:`engine.services.automation`.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine import sandbox
from engine.definitions.model import Condition, Registry, TaskList, TrackerType
from engine.errors import Problem
from engine.models import Item, RoleGrant, User
from engine.validation import humanize_label, is_filled, schema_at, set_path

EVENT_TRIGGERS = ("created", "transitioned", "assigned")
TRIGGERS = (*EVENT_TRIGGERS, "date_reached", "schedule")
ACTIONS = ("create_item", "assign", "transition", "notify")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
#: the state an automation runs in; in every other state it waits
ACTIVE_STATE = "active"
#: recipients that need an item to name someone
ITEM_PARTIES = ("assignee", "creator", "watchers")


# -- schedules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Schedule:
    """``every`` ``day``, ``weekday`` (Monday to Friday), ``week`` (on ``weekday``, 0 =
    Monday) or ``month`` (on ``day_of_month``; the last day of shorter months), at ``at``,
    a wall-clock time in the installation's time zone."""

    every: str
    at: time
    weekday: int = 0
    day_of_month: int = 1

    def runs_on(self, day: date) -> bool:
        if self.every == "day":
            return True
        if self.every == "weekday":
            return day.weekday() < 5
        if self.every == "week":
            return day.weekday() == self.weekday
        last = calendar.monthrange(day.year, day.month)[1]
        return day.day == min(self.day_of_month, last)

    def latest(self, now: datetime) -> datetime:
        """The most recent occurrence at or before ``now`` (both local, naive)."""
        day = now.date()
        for _ in range(62):
            moment = datetime.combine(day, self.at)
            if self.runs_on(day) and moment <= now:
                return moment
            day -= timedelta(days=1)
        raise AssertionError("every schedule runs at least once in 62 days")

    def next_after(self, now: datetime) -> datetime:
        """The first occurrence after ``now`` (both local, naive)."""
        day = now.date()
        for _ in range(63):
            moment = datetime.combine(day, self.at)
            if self.runs_on(day) and moment > now:
                return moment
            day += timedelta(days=1)
        raise AssertionError("every schedule runs at least once in 62 days")

    def describe(self) -> str:
        at = self.at.strftime("%H:%M")
        if self.every == "day":
            return f"every day at {at}"
        if self.every == "weekday":
            return f"every weekday (Monday to Friday) at {at}"
        if self.every == "week":
            return f"every {WEEKDAYS[self.weekday].capitalize()} at {at}"
        return f"on day {self.day_of_month} of every month at {at}"


def schedule_of(trigger: dict) -> Schedule | None:
    """The schedule a (valid) ``trigger`` describes, or None when it is not a schedule."""
    if trigger.get("event") != "schedule":
        return None
    hours, minutes = (int(part) for part in str(trigger.get("at") or "00:00").split(":"))
    weekday = trigger.get("weekday")
    return Schedule(
        every=trigger.get("every") or "day",
        at=time(hours, minutes),
        weekday=WEEKDAYS.index(weekday) if weekday in WEEKDAYS else 0,
        day_of_month=int(trigger.get("day_of_month") or 1),
    )


def to_local(moment: datetime, zone: ZoneInfo) -> datetime:
    """Naive UTC (how the database keeps times) to naive local wall-clock time."""
    return moment.replace(tzinfo=UTC).astimezone(zone).replace(tzinfo=None)


def to_utc(moment: datetime, zone: ZoneInfo) -> datetime:
    """Naive local wall-clock time to naive UTC."""
    return moment.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


# -- what an automation says ---------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    """One automation item's data, understood. Built from data that passed validation."""

    id: int
    name: str
    creator_id: int | None
    event: str
    state: str | None = None
    date_field: str | None = None
    offset_days: int = 0
    schedule: Schedule | None = None
    scope_type: str | None = None
    filter: dict = field(default_factory=dict)
    action: dict = field(default_factory=dict)

    @classmethod
    def of(cls, item: Item) -> Spec:
        data = item.data or {}
        trigger, scope = data.get("trigger") or {}, data.get("scope") or {}
        return cls(
            id=item.id,
            name=data.get("name") or item.title,
            creator_id=item.created_by_id,
            event=trigger.get("event", ""),
            state=trigger.get("state"),
            date_field=trigger.get("date_field"),
            offset_days=int(trigger.get("offset_days") or 0),
            schedule=schedule_of(trigger),
            scope_type=scope.get("type_key"),
            filter=scope.get("filter") or {},
            action=data.get("action") or {},
        )

    @property
    def do(self) -> str:
        return self.action.get("do", "")

    def describe_trigger(self) -> str:
        if self.schedule is not None:
            return self.schedule.describe()
        what = self.scope_type or "an item"
        if self.event == "transitioned":
            return f"when {what} moves to '{self.state}'"
        if self.event == "date_reached":
            days = self.offset_days
            when = "on" if days == 0 else f"{-days} day(s) before" if days < 0 else f"{days} day(s) after"
            return f"{when} the {self.date_field} of {what}"
        return f"when {what} is {self.event}"


def tasklist_of(spec_filter: dict, tracker_type: TrackerType) -> TaskList:
    """The scope's filter as a task list, so :mod:`engine.tasklists` compiles it to SQL;
    values typed into a form (``"true"``, ``"3"``, ``"a, b"``) get the field's type."""
    conditions = []
    for cond in spec_filter.get("all") or ():
        kind = (schema_at(tracker_type.schema, cond.get("field", "")) or {}).get("type")
        conditions.append(Condition(cond["field"], cond["op"], typed_value(kind, cond["op"], cond.get("value"))))
    return TaskList(
        key="automation_scope",
        label="Automation scope",
        statuses=tuple(spec_filter.get("status") or ()),
        status_categories=tuple(spec_filter.get("status_category") or ()),
        assignee=spec_filter.get("assignee") or "any",
        conditions=tuple(conditions),
    )


_TRUE, _FALSE = ("true", "yes", "1"), ("false", "no", "0")


def typed_value(kind: str | None, op: str, value: Any) -> Any:
    """``value`` as the type of the field it is compared with. Raises ValueError when it
    cannot be (``"maybe"`` for a yes/no field)."""
    if op in ("empty", "not_empty"):
        return None
    if op == "in":
        values = value if isinstance(value, list) else [v.strip() for v in str(value or "").split(",") if v.strip()]
        return [typed_value(kind, "eq", v) for v in values]
    if op in ("before", "after"):
        return str(value)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"'{value}' is not yes or no")
    if kind in ("integer", "number"):
        if isinstance(value, bool):
            raise ValueError(f"'{value}' is not a number")
        return float(value)
    return "" if value is None else str(value)


# -- checking an automation when it is saved ------------------------------------------------------


class _Checker:
    def __init__(self, session: Session, registry: Registry) -> None:
        self.session = session
        self.registry = registry
        self.problems: list[Problem] = []

    def add(self, path: str, message: str, advice: str) -> None:
        self.problems.append(Problem(path, message, advice))

    def type_at(self, path: str, key: Any) -> TrackerType | None:
        if not isinstance(key, str) or not key:
            return None
        found = self.registry.types.get(key)
        usable = sorted(k for k, t in self.registry.types.items() if t.kind != "automation")
        if found is None:
            self.add(path, f"There is no tracker type '{key}'", f"Use one of: {', '.join(usable)}.")
            return None
        if found.kind == "automation":
            self.add(path, "An automation cannot act on automations", f"Use one of: {', '.join(usable)}.")
            return None
        return found

    def state_at(self, path: str, tracker_type: TrackerType, key: Any) -> None:
        workflow = self.registry.workflow_for(tracker_type)
        if isinstance(key, str) and workflow.state(key) is None:
            self.add(
                path,
                f"'{key}' is not a state of {tracker_type.name} items",
                f"Use one of: {', '.join(s.key for s in workflow.states)}.",
            )

    def field_at(self, path: str, tracker_type: TrackerType, name: Any, *, date_only: bool = False) -> dict | None:
        if not isinstance(name, str) or not name:
            return None
        sub = schema_at(tracker_type.schema, name)
        if sub is None:
            names = ", ".join(sorted((tracker_type.schema.get("properties") or {}).keys()))
            self.add(path, f"{tracker_type.name} has no field '{name}'", f"Use one of: {names}.")
            return None
        if date_only and sub.get("format") != "date":
            dates = ", ".join(_date_fields(tracker_type)) or "none"
            self.add(path, f"'{name}' is not a date field of {tracker_type.name}", f"Use one of: {dates}.")
        return sub

    def party_at(self, path: str, target: Any, *, item_parties: bool, what: str) -> None:
        """A user name, role:NAME, or (with an item) assignee / creator / watchers."""
        if not isinstance(target, str) or not target.strip():
            return
        target = target.strip()
        if target in ITEM_PARTIES:
            if not item_parties:
                self.add(
                    path,
                    f"'{target}' needs an item, but this automation runs without one",
                    f"Name a user or role:NAME to {what}, or give the automation items to act on (For which items).",
                )
            return
        if target.startswith("role:"):
            role = target[5:]
            if role not in self.registry.roles:
                self.add(path, f"There is no role '{role}'", f"Use one of: {', '.join(sorted(self.registry.roles))}.")
            elif not self.session.scalar(
                select(User.id).join(RoleGrant).where(RoleGrant.role == role, User.active).limit(1)
            ):
                self.add(
                    path,
                    f"No active user has the role '{role}'",
                    f"Give someone the '{role}' role first, or {what} someone else.",
                )
            return
        user = self.session.scalar(select(User).where(User.username == target))
        if user is None or not user.active:
            self.add(
                path,
                f"There is no active user '{target}'",
                f"Use a user name from the users list, role:NAME, or {', '.join(ITEM_PARTIES)}.",
            )

    def template_at(self, path: str, source: Any) -> None:
        if isinstance(source, str) and source:
            try:
                sandbox.compile_template(source)
            except sandbox.ExpressionError as exc:
                self.add(path, f"The template does not work: {exc}", "Write it like {{ data.employer_name }}.")


def definition_problems(session: Session, registry: Registry, data: dict) -> list[Problem]:
    """Problems an automation's ``data`` has that its JSON Schema cannot see: types,
    states, fields, templates, users and roles it names must exist and fit together.
    Each problem points at the value concerned and says what to use instead."""
    check = _Checker(session, registry)
    if not isinstance(data, dict):
        return []
    trigger = data.get("trigger") if isinstance(data.get("trigger"), dict) else {}
    scope = data.get("scope") if isinstance(data.get("scope"), dict) else None
    action = data.get("action") if isinstance(data.get("action"), dict) else {}
    event, do = trigger.get("event"), action.get("do")
    scope_type = check.type_at("/scope/type_key", scope.get("type_key")) if scope else None
    if scope is None and event in (*EVENT_TRIGGERS, "date_reached"):
        check.add(
            "/scope/type_key",
            f"A '{event}' automation needs the type of items it watches",
            "Fill in 'For which items' with a tracker type, for example apprenticeship.",
        )
    if scope is None and do in ("assign", "transition", "create_item"):
        check.add(
            "/action/do",
            f"'{do}' acts on items, but this automation has none to act on",
            "Fill in 'For which items', or use the action notify.",
        )
    if scope_type is not None:
        if event == "transitioned":
            check.state_at("/trigger/state", scope_type, trigger.get("state"))
        if event == "date_reached":
            check.field_at("/trigger/date_field", scope_type, trigger.get("date_field"), date_only=True)
        _check_filter(check, scope_type, scope.get("filter") if isinstance(scope.get("filter"), dict) else {})
        if do == "transition":
            check.state_at("/action/to_state", scope_type, action.get("to_state"))
    if do == "create_item":
        _check_create(check, action, scope_type)
    check.party_at("/action/assign_to", action.get("assign_to"), item_parties=scope is not None, what="assign")
    if do == "notify":
        check.party_at("/action/recipient", action.get("recipient"), item_parties=scope is not None, what="notify")
        check.template_at("/action/message", action.get("message"))
    return check.problems


def _check_filter(check: _Checker, tracker_type: TrackerType, spec_filter: dict) -> None:
    for i, state in enumerate(spec_filter.get("status") or ()):
        check.state_at(f"/scope/filter/status/{i}", tracker_type, state)
    for i, cond in enumerate(spec_filter.get("all") or ()):
        if not isinstance(cond, dict):
            continue
        base = f"/scope/filter/all/{i}"
        sub = check.field_at(f"{base}/field", tracker_type, cond.get("field"))
        op = cond.get("op")
        if sub is None or not isinstance(op, str):
            continue
        if op not in ("empty", "not_empty") and not is_filled(cond.get("value")):
            check.add(f"{base}/value", f"The condition '{op}' needs a value", "Fill in the value to compare with.")
            continue
        if op in ("before", "after") and sandbox.relative_date(str(cond.get("value"))) is None:
            advice = "Use today, today-12w, today+30d or YYYY-MM-DD."
            check.add(f"{base}/value", f"'{cond.get('value')}' is not a date", advice)
            continue
        try:
            typed_value(sub.get("type"), op, cond.get("value"))
        except ValueError as exc:
            check.add(f"{base}/value", f"The value does not fit the field: {exc}", "Enter a value of the field's kind.")


def _check_create(check: _Checker, action: dict, scope_type: TrackerType | None) -> None:
    created = check.type_at("/action/type_key", action.get("type_key"))
    if created is None:
        return
    template = action.get("template")
    if isinstance(template, str) and template and created.template(template) is None:
        names = ", ".join(t.key for t in created.templates) or "none"
        check.add("/action/template", f"{created.name} has no template '{template}'", f"Use one of: {names}.")
    for i, row in enumerate(action.get("values") or ()):
        if isinstance(row, dict):
            check.field_at(f"/action/values/{i}/field", created, row.get("field"))
            check.template_at(f"/action/values/{i}/value", row.get("value"))
    if created.subject != "none":
        gives = scope_type is not None and (scope_type.key == created.subject or scope_type.subject == created.subject)
        if not gives:
            source = f"{scope_type.name} items have none" if scope_type else "this automation acts on no item"
            check.add(
                "/action/type_key",
                f"A new {created.name} needs a {created.subject}, but {source}",
                f"Create a type without a {created.subject}, or act on items about a {created.subject}.",
            )


def _date_fields(tracker_type: TrackerType) -> list[str]:
    return sorted(
        name
        for name, sub in (tracker_type.schema.get("properties") or {}).items()
        if isinstance(sub, dict) and sub.get("format") == "date"
    )


# -- values of a created item --------------------------------------------------------------------

_RELATIVE = re.compile(r"^today\s*([+-]\s*\d+\s*[dwmy])?$")


def render_values(rows: list[dict], context: dict, tracker_type: TrackerType) -> dict:
    """``[{field, value}]`` rendered in the sandbox with ``context`` and typed for the
    fields of ``tracker_type``: numbers and yes/no become numbers and booleans, a date
    field takes ``today+14d``; an empty result leaves the field out. Raises
    :class:`ValueError` naming the field whose value does not fit."""
    out: dict = {}
    today = date.fromisoformat(context["today"]) if context.get("today") else date.today()
    for row in rows or ():
        name = row["field"]
        text = render_text(str(row.get("value", "")), context, f"the value for {name}")
        if text == "":
            continue
        sub = schema_at(tracker_type.schema, name) or {}
        kind = sub.get("type")
        try:
            if kind == "integer":
                value: Any = int(float(text))
            elif kind == "number":
                value = float(text)
            elif kind == "boolean":
                value = typed_value("boolean", "eq", text)
            elif sub.get("format") == "date" and _RELATIVE.match(text):
                value = sandbox.relative_date(text, today).isoformat()
            else:
                value = text
        except ValueError:
            label = sub.get("title") or humanize_label(name.split(".")[-1])
            raise ValueError(f"{label} came out as '{text}', which is not a {kind}") from None
        set_path(out, name, value)
    return out


def render_text(source: str, context: dict, what: str) -> str:
    """A template of the automation rendered in the sandbox; anything that goes wrong while
    rendering (a division by zero, a forbidden attribute) is a ValueError naming ``what``."""
    try:
        return sandbox.render(source, context)
    except Exception as exc:  # noqa: BLE001 - data decides what a template meets
        raise ValueError(f"{what} could not be made from its template: {exc}") from None


def target_context(item: Item, *, today: date, spec: Spec, trigger: dict) -> dict:
    """What an automation's templates see about ``item``: ``data``, ``item``, ``subject``,
    ``today`` (the automation's day), ``automation`` {id, name} and ``trigger`` {event, at}."""
    subject = item.subject
    context = sandbox.context_for(
        item.data,
        {
            "id": item.id,
            "title": item.title,
            "status": item.status,
            "assignee": item.assignee.username if item.assignee else None,
            "due_date": item.due_date.isoformat() if item.due_date else None,
        },
        {"id": subject.id, "name": subject.title, "title": subject.title, "data": subject.data} if subject else {},
    )
    context.update(today=today.isoformat(), automation={"id": spec.id, "name": spec.name}, trigger=trigger)
    return context
