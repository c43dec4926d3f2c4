"""Running process automations (see :mod:`engine.automation` for what they say).

- **Item events** (created, transitioned, assigned) reach :meth:`AutomationService.on_event`
  from the outbox relay, after the change committed, never inside the request's transaction.
- **Dates and schedules** run from ``tracker scheduler`` and ``tracker automations
  run-due`` (:meth:`AutomationService.run_due`).
- **Dry runs** (:meth:`AutomationService.preview`) say what a run would do, changing nothing.

Each automation acts through :class:`~engine.services.items.ItemService` as its creator,
so their permissions apply: a creator who was deactivated or lost ``automation.create``
stops their automations, and one who may not create or change an item gets a failure
with that reason in the automation's history.

Idempotent per trigger: before acting on an item, a run writes an
:class:`~engine.models.AutomationRun` keyed by (automation, trigger instance, target item)
in the same transaction as the action; a duplicate event or a second run of the same
occurrence finds the key and does nothing again. A failed action leaves a ``failed`` row
that a re-run of the same trigger tries again. Each run that did something is an
``automation_ran`` event in the automation's history.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from jinja2 import TemplateError
from sqlalchemy import event as orm_event
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import assignment, notifications, permissions, sandbox
from engine.automation import (
    ACTIVE_STATE,
    EVENT_TRIGGERS,
    Spec,
    render_text,
    render_values,
    target_context,
    tasklist_of,
    to_local,
)
from engine.automation import to_utc as local_to_utc
from engine.definitions.model import Registry, TrackerType
from engine.errors import NotFound, TrackerError, ValidationFailed
from engine.models import AutomationRun, Event, Item, Outbox, User, utcnow
from engine.permissions import Actor
from engine.services.items import ItemService, item_link
from engine.tasklists import TaskListService, json_text

log = logging.getLogger(__name__)

#: a date trigger still fires this many days late when the scheduler was not running
DATE_LOOK_BACK_DAYS = 7
#: a scheduled run that started this long ago without finishing is taken over by another
STALE_RUN = timedelta(minutes=15)
#: automations creating items from items that automations created stop after this many links
MAX_CHAIN = 5
#: the ``target_key`` of the row that claims a whole run (a schedule occurrence)
WHOLE_RUN = "*"


@dataclass
class Outcome:
    """What a run did for one target item (``target_id`` None: a run with no item).

    ``status``: ``done``, ``skipped`` (decided not to), ``failed`` (with the reason in
    ``text``) or ``already`` (this trigger was handled for the item before)."""

    target_id: int | None
    status: str
    text: str
    result_id: int | None = None
    verb: str = ""


@dataclass
class RunReport:
    """One run of one automation for one trigger: what it did for each item."""

    automation_id: int
    name: str
    trigger: str
    outcomes: list[Outcome] = field(default_factory=list)
    #: why the whole run could not start (the creator lost a permission ...)
    failure: str | None = None

    @property
    def news(self) -> bool:
        """Worth a line in the history: something happened, or failed."""
        return self.failure is not None or any(o.status != "already" for o in self.outcomes)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def summary(self) -> str:
        """``Ran for 12 items: created #4, #5; skipped 3 (already done); 1 failed``."""
        if self.failure:
            return f"Did not run ({self.trigger}): {self.failure}"
        items = [o for o in self.outcomes if o.target_id is not None]
        parts: list[str] = []
        created = [f"#{o.result_id}" for o in self.outcomes if o.status == "done" and o.result_id]
        if created:
            shown = ", ".join(created[:10]) + (f" and {len(created) - 10} more" if len(created) > 10 else "")
            parts.append(f"created {shown}")
        for verb in ("assigned", "moved", "notified"):
            done = [o for o in self.outcomes if o.status == "done" and o.verb == verb]
            if len(done) == 1:
                parts.append(done[0].text)
            elif done:
                parts.append(f"{verb} {len(done)} items" if verb != "notified" else f"notified about {len(done)} items")
        reasons: dict[str, int] = {}
        for o in self.outcomes:
            if o.status in ("skipped", "already"):
                why = "already done" if o.status == "already" else o.text
                reasons[why] = reasons.get(why, 0) + 1
        parts += [f"skipped {n} ({why})" for why, n in reasons.items()]
        failed = [o for o in self.outcomes if o.status == "failed"]
        parts += [f"failed for #{o.target_id}: {o.text}" if o.target_id else f"failed: {o.text}" for o in failed[:5]]
        if len(failed) > 5:
            parts.append(f"{len(failed) - 5} more failed")
        if self.outcomes and not items:
            head = f"Ran ({self.trigger})"
        else:
            head = f"Ran for {len(items)} item{'' if len(items) == 1 else 's'} ({self.trigger})"
        return head + (": " + "; ".join(parts) if parts else ": nothing matched")

    def as_payload(self) -> dict:
        return {
            "summary": self.summary(),
            "trigger": self.trigger,
            "done": self.count("done"),
            "skipped": self.count("skipped") + self.count("already"),
            "failed": self.count("failed") + (1 if self.failure else 0),
            "created": [o.result_id for o in self.outcomes if o.result_id],
            "failures": [{"item": o.target_id, "reason": o.text} for o in self.outcomes if o.status == "failed"]
            + ([{"item": None, "reason": self.failure}] if self.failure else []),
        }


@dataclass
class PreviewRow:
    """One item a run would touch: ``outcome`` is ``act``, ``skip`` or ``fail``."""

    item: Item | None
    outcome: str
    text: str


@dataclass
class Preview:
    """A dry run: what the automation would do if it ran now."""

    spec: Spec
    when: str
    rows: list[PreviewRow]
    total: int
    failure: str | None = None
    note: str = ""


class AutomationService:
    """Runs the active automations.

    Args:
        session: used for reading and, one target at a time, for the actions (each commits).
        registry: the loaded definitions.
        clock: "now" as naive UTC; schedules and dates are read in ``zone``.
        zone: the time zone schedules are written in (``TRACKER_TIMEZONE``).
    """

    def __init__(
        self,
        session: Session,
        registry: Registry,
        *,
        clock: Callable[[], datetime] = utcnow,
        zone: ZoneInfo | str = "Europe/London",
    ) -> None:
        self.session = session
        self.registry = registry
        self.clock = clock
        self.zone = ZoneInfo(zone) if isinstance(zone, str) else zone

    # -- which automations -----------------------------------------------------------------------

    def automation_types(self) -> list[str]:
        return [t.key for t in self.registry.types.values() if t.kind == "automation"]

    def active(self) -> list[tuple[Item, Spec]]:
        """Every automation in the Active state, oldest first."""
        stmt = (
            select(Item)
            .where(Item.type_key.in_(self.automation_types()), Item.status == ACTIVE_STATE)
            .order_by(Item.id)
        )
        return [(item, Spec.of(item)) for item in self.session.scalars(stmt)]

    def activated_at(self, automation: Item) -> datetime:
        """When the automation last became active (naive UTC); nothing that happened before runs."""
        events = self.session.scalars(
            select(Event).where(Event.item_id == automation.id, Event.kind == "transitioned").order_by(Event.id.desc())
        )
        return next((e.at for e in events if e.payload.get("to") == ACTIVE_STATE), automation.created_at)

    def runs(self, automation_id: int, *, limit: int = 20) -> list[Event]:
        """The latest runs of the automation (its ``automation_ran`` history events), newest first."""
        stmt = (
            select(Event)
            .where(Event.item_id == automation_id, Event.kind == "automation_ran")
            .order_by(Event.id.desc())
            .limit(limit)
        )
        return list(self.session.scalars(stmt))

    def next_run(self, spec: Spec, now: datetime | None = None) -> datetime | None:
        """The next scheduled occurrence (local time), or None for other triggers."""
        if spec.schedule is None:
            return None
        return spec.schedule.next_after(to_local(now or self.clock(), self.zone))

    # -- item events -----------------------------------------------------------------------------

    def on_event(self, outbox_id: int, payload: dict, at: datetime) -> list[RunReport]:
        """Run the automations an item event (an ``item_event`` outbox row written at ``at``)
        triggers. Returns one report per automation that acted."""
        kind, item_id = payload.get("event"), payload.get("item_id")
        if kind not in EVENT_TRIGGERS or not isinstance(item_id, int):
            return []
        matching = [
            (item, spec)
            for item, spec in self.active()
            if spec.event == kind
            and spec.scope_type == payload.get("type")
            and (kind != "transitioned" or spec.state == payload.get("to"))
        ]
        reports = []
        for automation, spec in matching:
            if at < self.activated_at(automation):
                continue  # the event happened before the automation was switched on
            report = self._event_run(automation, spec, outbox_id, item_id)
            if report is not None:
                reports.append(report)
        return reports

    def _event_run(self, automation: Item, spec: Spec, outbox_id: int, item_id: int) -> RunReport | None:
        trigger_key = f"event:{outbox_id}"
        report = RunReport(automation.id, spec.name, f"{spec.event} #{item_id}")
        tracker_type = self.registry.types.get(spec.scope_type or "")
        if tracker_type is None:
            failure = f"the tracker type '{spec.scope_type}' no longer exists"
            return self._whole_run_failed(automation, report, trigger_key, failure)
        actor, failure = self._actor(automation, spec)
        today = to_local(self.clock(), self.zone).date()
        where = self._where(spec, tracker_type, actor, today)
        target = self.session.scalar(select(Item).where(Item.id == item_id, where))
        if target is None:
            return None  # the item is not one the automation is for: nothing to say
        if failure is None and self._chain_depth(item_id) >= MAX_CHAIN:
            failure = (
                f"#{item_id} comes at the end of a chain of {MAX_CHAIN} items that automations created "
                "from each other, so it stopped there"
            )
        if failure is not None:
            return self._whole_run_failed(automation, report, trigger_key, failure)
        trigger = {"event": spec.event, "at": self.clock().isoformat(timespec="minutes")}
        report.outcomes.append(self._act(spec, actor, trigger_key, target, trigger, today))
        return self._recorded(automation, report)

    def _chain_depth(self, item_id: int) -> int:
        """How many automation-created items lead to ``item_id`` (each made from the one before)."""
        depth, current = 0, item_id
        while depth < MAX_CHAIN:
            source = self.session.scalar(
                select(AutomationRun.target_key).where(AutomationRun.result_id == current).limit(1)
            )
            if source is None or not source.isdigit():
                break
            depth, current = depth + 1, int(source)
        return depth

    # -- dates and schedules ---------------------------------------------------------------------

    def run_due(self, now: datetime | None = None) -> list[RunReport]:
        """Run every active schedule whose latest occurrence has not run yet, and every date
        trigger for the items whose date (plus offset) has come. Returns a report per
        automation that did something."""
        now = now or self.clock()
        reports = []
        for automation, spec in self.active():
            try:
                if spec.schedule is not None:
                    report = self._schedule_run(automation, spec, now)
                elif spec.event == "date_reached":
                    report = self._date_run(automation, spec, now)
                else:
                    continue
            except Exception:  # noqa: BLE001 - one broken automation must not stop the others
                self.session.rollback()
                log.exception("automation #%s could not run", automation.id)
                continue
            if report is not None:
                reports.append(report)
        return reports

    def _schedule_run(self, automation: Item, spec: Spec, now: datetime) -> RunReport | None:
        occurrence = spec.schedule.latest(to_local(now, self.zone))
        if local_to_utc(occurrence, self.zone) < self.activated_at(automation):
            return None  # the latest occurrence was before the automation was switched on
        trigger_key = f"schedule:{occurrence:%Y-%m-%dT%H:%M}"
        if not self._claim_run(automation.id, trigger_key, now):
            return None
        report = RunReport(automation.id, spec.name, f"{spec.schedule.describe()}, {occurrence:%d %b %Y %H:%M}")
        actor, failure = self._actor(automation, spec)
        tracker_type = self.registry.types.get(spec.scope_type) if spec.scope_type else None
        if failure is None and spec.scope_type and tracker_type is None:
            failure = f"the tracker type '{spec.scope_type}' no longer exists"
        if failure is not None:
            report.failure = failure
            self._finish_run(automation.id, trigger_key, "failed", failure)
            return self._recorded(automation, report)
        today = occurrence.date()
        trigger = {"event": "schedule", "at": occurrence.isoformat(timespec="minutes")}
        if tracker_type is None:
            report.outcomes.append(self._act(spec, actor, trigger_key, None, trigger, today))
        else:
            where = self._where(spec, tracker_type, actor, today)
            for target_id in list(self.session.scalars(select(Item.id).where(where).order_by(Item.id))):
                target = self.session.get(Item, target_id)
                report.outcomes.append(self._act(spec, actor, trigger_key, target, trigger, today))
        self._finish_run(automation.id, trigger_key, "done", report.summary())
        return self._recorded(automation, report, always=True)

    def _date_run(self, automation: Item, spec: Spec, now: datetime) -> RunReport | None:
        today = to_local(now, self.zone).date()
        actor, failure = self._actor(automation, spec)
        tracker_type = self.registry.types.get(spec.scope_type or "")
        if failure is None and tracker_type is None:
            failure = f"the tracker type '{spec.scope_type}' no longer exists"
        report = RunReport(automation.id, spec.name, f"{spec.describe_trigger()}, {today:%d %b %Y}")
        if failure is not None:
            return self._whole_run_failed(automation, report, f"date:{today.isoformat()}", failure)
        first = max(
            today - timedelta(days=DATE_LOOK_BACK_DAYS), to_local(self.activated_at(automation), self.zone).date()
        )
        offset = timedelta(days=spec.offset_days)
        dialect = self.session.get_bind().dialect.name
        value = json_text(spec.date_field, dialect)
        where = self._where(spec, tracker_type, actor, today)
        candidates = self.session.execute(
            select(Item.id, value)
            .where(where, value >= (first - offset).isoformat(), value <= (today - offset).isoformat())
            .order_by(Item.id)
        ).all()
        keys = {(str(item_id), f"date:{spec.date_field}:{on}") for item_id, on in candidates}
        handled = set()
        if keys:
            handled = set(
                self.session.execute(
                    select(AutomationRun.target_key, AutomationRun.trigger_key).where(
                        AutomationRun.automation_id == automation.id,
                        AutomationRun.target_key.in_([k[0] for k in keys]),
                        AutomationRun.trigger_key.in_([k[1] for k in keys]),
                    )
                ).all()
            )
        for item_id, on in candidates:
            trigger_key = f"date:{spec.date_field}:{on}"
            if (str(item_id), trigger_key) in handled:
                continue
            target = self.session.get(Item, item_id)
            trigger = {"event": "date_reached", "at": str(on)}
            report.outcomes.append(self._act(spec, actor, trigger_key, target, trigger, today))
        return self._recorded(automation, report) if report.outcomes else None

    def _claim_run(self, automation_id: int, trigger_key: str, now: datetime) -> bool:
        """Claim a scheduled occurrence for this process: True when it is ours to run (new,
        or left unfinished for longer than :data:`STALE_RUN` by a process that died)."""
        row = self._row(automation_id, trigger_key, WHOLE_RUN)
        if row is None:
            self.session.add(
                AutomationRun(
                    automation_id=automation_id,
                    trigger_key=trigger_key,
                    target_key=WHOLE_RUN,
                    status="running",
                    at=now,
                )
            )
            try:
                self.session.commit()
            except IntegrityError:  # another scheduler took it at the same moment
                self.session.rollback()
                return False
            return True
        if row.status != "running" or row.at > now - STALE_RUN:
            return False
        taken = self.session.execute(
            update(AutomationRun)
            .where(AutomationRun.id == row.id, AutomationRun.status == "running", AutomationRun.at == row.at)
            .values(at=now, attempts=AutomationRun.attempts + 1)
            .execution_options(synchronize_session=False)
        ).rowcount
        self.session.commit()
        return bool(taken)

    def _finish_run(self, automation_id: int, trigger_key: str, status: str, detail: str) -> None:
        self.session.execute(
            update(AutomationRun)
            .where(
                AutomationRun.automation_id == automation_id,
                AutomationRun.trigger_key == trigger_key,
                AutomationRun.target_key == WHOLE_RUN,
            )
            .values(status=status, detail=detail[:2000], at=self.clock())
            .execution_options(synchronize_session=False)
        )
        self.session.commit()

    # -- acting on one item ----------------------------------------------------------------------

    def _act(
        self, spec: Spec, actor: Actor, trigger_key: str, target: Item | None, trigger: dict, today: date
    ) -> Outcome:
        target_key = str(target.id) if target is not None else "-"
        target_id = target.id if target is not None else None
        existing = self._row(spec.id, trigger_key, target_key)
        if existing is not None and existing.status != "failed":
            return Outcome(target_id, "already", "already done")
        skip = self._skip_reason(spec, target)
        if skip:
            return self._skipped(spec, trigger_key, target_key, target_id, skip, existing)
        row = self._claim_target(spec, trigger_key, target_key, existing)
        if row is None:
            return Outcome(target_id, "already", "already done")
        try:
            with self._capture_created(row, spec):
                outcome = self._perform(spec, actor, trigger_key, target, trigger, today)
        except (TrackerError, ValueError, TemplateError) as exc:
            self.session.rollback()
            reason = _reason(exc)
            self._failed(spec.id, trigger_key, target_key, reason)
            return Outcome(target_id, "failed", reason)
        return outcome

    def _row(self, automation_id: int, trigger_key: str, target_key: str) -> AutomationRun | None:
        return self.session.scalar(
            select(AutomationRun).where(
                AutomationRun.automation_id == automation_id,
                AutomationRun.trigger_key == trigger_key,
                AutomationRun.target_key == target_key,
            )
        )

    def _claim_target(
        self, spec: Spec, trigger_key: str, target_key: str, existing: AutomationRun | None
    ) -> AutomationRun | None:
        """The run row for this target, written (not yet committed) as done: it commits
        with the action, or rolls back with it. None when another run has it."""
        if existing is None:
            row = AutomationRun(
                automation_id=spec.id, trigger_key=trigger_key, target_key=target_key, status="done", at=self.clock()
            )
            self.session.add(row)
            try:
                self.session.flush()
            except IntegrityError:  # a concurrent run of the same trigger wrote it first
                self.session.rollback()
                return None
            return row
        taken = self.session.execute(
            update(AutomationRun)
            .where(AutomationRun.id == existing.id, AutomationRun.status == "failed")
            .values(status="done", detail=None, attempts=AutomationRun.attempts + 1, at=self.clock())
            .execution_options(synchronize_session=False)
        ).rowcount
        if not taken:
            self.session.rollback()
            return None
        self.session.refresh(existing)
        return existing

    @contextmanager
    def _capture_created(self, row: AutomationRun, spec: Spec) -> Iterator[None]:
        """Record the item a create action makes on the run row in the same transaction, so
        "still open" and chain checks see it the moment the item exists."""
        if spec.do != "create_item":
            yield
            return
        type_key = spec.action.get("type_key")

        def grab(session: Session, _context, _instances) -> None:
            for obj in session.new:
                if isinstance(obj, Item) and obj.type_key == type_key and row.result is None:
                    row.result = obj  # the unit of work fills in result_id when it inserts the item

        orm_event.listen(self.session, "before_flush", grab)
        try:
            yield
        finally:
            orm_event.remove(self.session, "before_flush", grab)

    def _skip_reason(self, spec: Spec, target: Item | None) -> str | None:
        if target is None:
            return None
        if spec.do == "create_item" and spec.action.get("skip_if_open"):
            still_open = self._open_result(spec, target.id)
            if still_open is not None:
                return "an earlier one is still open"
        if spec.do == "transition" and target.status == spec.action.get("to_state"):
            return "already in that state"
        return None

    def _open_result(self, spec: Spec, target_id: int) -> Item | None:
        """An item an earlier run of the automation created for the target, still open."""
        created_type = self.registry.types.get(spec.action.get("type_key") or "")
        if created_type is None:
            return None
        open_states = self.registry.workflow_for(created_type).states_in(["open"])
        stmt = (
            select(Item)
            .join(AutomationRun, AutomationRun.result_id == Item.id)
            .where(
                AutomationRun.automation_id == spec.id,
                AutomationRun.target_key == str(target_id),
                Item.status.in_(open_states),
            )
            .order_by(Item.id.desc())
            .limit(1)
        )
        return self.session.scalar(stmt)

    def _skipped(
        self,
        spec: Spec,
        trigger_key: str,
        target_key: str,
        target_id: int | None,
        reason: str,
        existing: AutomationRun | None,
    ) -> Outcome:
        """Record the decision, so this trigger does not weigh the item again."""
        if existing is not None:
            existing.status, existing.detail, existing.at = "skipped", reason, self.clock()
        else:
            self.session.add(
                AutomationRun(
                    automation_id=spec.id,
                    trigger_key=trigger_key,
                    target_key=target_key,
                    status="skipped",
                    detail=reason,
                    at=self.clock(),
                )
            )
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            return Outcome(target_id, "already", "already done")
        return Outcome(target_id, "skipped", reason)

    def _failed(self, automation_id: int, trigger_key: str, target_key: str, reason: str) -> None:
        row = self._row(automation_id, trigger_key, target_key)
        if row is None:
            row = AutomationRun(
                automation_id=automation_id, trigger_key=trigger_key, target_key=target_key, status="failed", attempts=1
            )
            self.session.add(row)
        row.status, row.detail, row.at = "failed", reason[:2000], self.clock()
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()

    def _perform(
        self, spec: Spec, actor: Actor, trigger_key: str, target: Item | None, trigger: dict, today: date
    ) -> Outcome:
        """Do the action for one target through the item service (which commits)."""
        service = ItemService(self.session, actor, self.registry, today=lambda: today)
        action, target_id = spec.action, target.id if target is not None else None
        context = (
            target_context(target, today=today, spec=spec, trigger=trigger)
            if target is not None
            else {
                **sandbox.context_for({}),
                "today": today.isoformat(),
                "automation": {"id": spec.id, "name": spec.name},
                "trigger": trigger,
            }
        )
        if spec.do == "create_item":
            created_type = self.registry.type(action["type_key"])
            values = render_values(action.get("values") or [], context, created_type)
            assignee = self._party(action.get("assign_to"), target, created_type) if action.get("assign_to") else None
            about = f" for #{target.id} {target.title}" if target is not None else ""
            item = service.create(
                created_type.key,
                values,
                template=action.get("template"),
                subject_id=self._subject_for(created_type, target),
                assignee=assignee,
                description=f"Created by the automation '{spec.name}'{about}.",
            )
            return Outcome(target_id, "done", f"created #{item.id}", result_id=item.id, verb="created")
        if target is None:
            return self._notify(spec, actor, trigger_key, None, context)
        tracker_type = service.type_of(target)
        if spec.do == "assign":
            username = self._party(action["assign_to"], target, tracker_type)
            if username is None:
                raise ValidationFailed([], f"#{target.id} has nobody to assign it to ({action['assign_to']}).")
            service.assign(target.id, username)
            return Outcome(target_id, "done", f"assigned #{target.id} to {username}", verb="assigned")
        if spec.do == "transition":
            moved = service.transition(target.id, to=action["to_state"])
            return Outcome(target_id, "done", f"moved #{target.id} to '{moved.status}'", verb="moved")
        permissions.require(actor, "items.view", tracker_type, target)
        return self._notify(spec, actor, trigger_key, target, context)

    def _notify(self, spec: Spec, actor: Actor, trigger_key: str, target: Item | None, context: dict) -> Outcome:
        action = spec.action
        about = target if target is not None else self.session.get(Item, spec.id)
        recipient = action["recipient"]
        ids = notifications.recipients(self.session, about, recipient)
        text = render_text(action.get("message") or "", context, "the message") or f"{spec.name}: {about.title}"
        target_id = target.id if target is not None else None
        if not ids:
            self.session.rollback()
            reason = f"nobody to notify ({recipient})"
            self._skipped_after_claim(spec.id, trigger_key, target, reason)
            return Outcome(target_id, "skipped", reason)
        self.session.add(
            Outbox(
                kind="notify",
                item_id=about.id,
                idempotency_key=f"automation:{spec.id}:{trigger_key}:{target_id or '-'}"[:200],
                payload={
                    "reason": "automation",
                    "recipients": sorted(set(ids)),
                    "text": text[:500],
                    "link": item_link(about.id),
                    "item_id": about.id,
                },
            )
        )
        self.session.commit()
        people = f"{len(ids)} {'person' if len(ids) == 1 else 'people'}"
        return Outcome(
            target_id, "done", f"notified {people}" + (f" about #{target_id}" if target_id else ""), verb="notified"
        )

    def _skipped_after_claim(self, automation_id: int, trigger_key: str, target: Item | None, reason: str) -> None:
        target_key = str(target.id) if target is not None else "-"
        row = self._row(automation_id, trigger_key, target_key)
        if row is None:
            row = AutomationRun(automation_id=automation_id, trigger_key=trigger_key, target_key=target_key)
            self.session.add(row)
        row.status, row.detail, row.at = "skipped", reason, self.clock()
        self.session.commit()

    def _party(self, target_spec: str, target: Item | None, tracker_type: TrackerType) -> str | None:
        """A user name for ``assign_to``: a user name, role:NAME (the least busy user of the
        role), or the target item's ``assignee`` or ``creator``."""
        target_spec = target_spec.strip()
        if target_spec == "assignee":
            return target.assignee.username if target is not None and target.assignee else None
        if target_spec == "creator":
            user = self.session.get(User, target.created_by_id) if target is not None and target.created_by_id else None
            return user.username if user else None
        if target_spec.startswith("role:"):
            user = assignment.least_loaded(self.session, self.registry, tracker_type, target_spec[5:])
            if user is None:
                raise ValidationFailed([], f"No active user has the role '{target_spec[5:]}'.")
            return user.username
        return target_spec

    def _subject_for(self, created_type: TrackerType, target: Item | None) -> int | None:
        if created_type.subject == "none" or target is None:
            return None
        if target.type_key == created_type.subject:
            return target.id
        return target.subject_id

    # -- the creator, the scope, the history --------------------------------------------------------

    def _actor(self, automation: Item, spec: Spec) -> tuple[Actor, str | None]:
        """The creator as the actor, or why the automation may not run as them."""
        if spec.creator_id is None:
            return Actor.system(), None
        user = self.session.get(User, spec.creator_id)
        if user is None or not user.active:
            name = user.username if user else f"user #{spec.creator_id}"
            return Actor.system(), f"its creator {name} is deactivated; someone else must re-create it"
        actor = Actor.for_user(user, self.registry)
        automation_type = self.registry.type(automation.type_key, automation.type_version)
        if not permissions.allows(actor, automation_type.create_capability, automation_type):
            return actor, (
                f"its creator {user.username} no longer has '{automation_type.create_capability}'; "
                "give it back to them, or have someone who has it re-create the automation"
            )
        return actor, None

    def _where(self, spec: Spec, tracker_type: TrackerType, actor: Actor, today: date):
        """The scope as one SQL clause: the type, its task-list style filter, and only the
        items the creator may see (``assignee: me`` means the creator)."""
        tasks = TaskListService(self.session, actor, self.registry, today=lambda: today)
        return tasks.where(tracker_type, tasklist_of(spec.filter, tracker_type))

    def _whole_run_failed(self, automation: Item, report: RunReport, trigger_key: str, reason: str) -> RunReport | None:
        """Record a run that could not start, once per trigger instance."""
        report.failure = reason
        self.session.add(
            AutomationRun(
                automation_id=automation.id,
                trigger_key=trigger_key,
                target_key=WHOLE_RUN,
                status="failed",
                detail=reason[:2000],
                at=self.clock(),
            )
        )
        try:
            self.session.commit()
        except IntegrityError:  # already recorded for this trigger
            self.session.rollback()
            return None
        return self._recorded(automation, report)

    def _recorded(self, automation: Item, report: RunReport, *, always: bool = False) -> RunReport | None:
        """Write the run into the automation's history (when it did something, or ``always``)."""
        if not (report.news or always):
            return None
        self.session.add(
            Event(item_id=automation.id, kind="automation_ran", actor_id=None, payload=report.as_payload())
        )
        self.session.commit()
        log.info("automation #%s %s", automation.id, report.summary())
        return report

    # -- dry run ----------------------------------------------------------------------------------

    def preview(self, automation: Item, *, limit: int = 50) -> Preview:
        """What the automation would do if it ran now, item by item (at most ``limit``),
        changing nothing. Works in any state, so a draft can be tried before it is activated."""
        spec = Spec.of(automation)
        now = self.clock()
        local = to_local(now, self.zone)
        actor, failure = self._actor(automation, spec)
        tracker_type = self.registry.types.get(spec.scope_type) if spec.scope_type else None
        if spec.scope_type and tracker_type is None:
            failure = failure or f"the tracker type '{spec.scope_type}' no longer exists"
        if spec.schedule is not None:
            when = f"Runs {spec.schedule.describe()}; next on {spec.schedule.next_after(local):%A %d %B %Y at %H:%M}."
            note = "These are the items it would act on if it ran now."
            today = local.date()
        elif spec.event == "date_reached":
            when = f"Runs {spec.describe_trigger()}, checked by the scheduler."
            note = "These are the items whose date has come today."
            today = local.date()
        else:
            when = f"Runs {spec.describe_trigger()}, as each event happens."
            note = "These are the items it would act on if their event happened now."
            today = local.date()
        preview = Preview(spec, when, [], 0, failure, note)
        if failure is not None:
            return preview
        if tracker_type is None:
            preview.rows.append(self._would(spec, actor, None, today))
            preview.total = 1
            return preview
        where = self._where(spec, tracker_type, actor, today)
        if spec.event == "date_reached":
            value = json_text(spec.date_field, self.session.get_bind().dialect.name)
            where = where & (value == (today - timedelta(days=spec.offset_days)).isoformat())
        preview.total = self.session.scalar(select(func.count()).select_from(Item).where(where)) or 0
        for target in self.session.scalars(select(Item).where(where).order_by(Item.id).limit(limit)):
            preview.rows.append(self._would(spec, actor, target, today))
        return preview

    def _would(self, spec: Spec, actor: Actor, target: Item | None, today: date) -> PreviewRow:
        service = ItemService(self.session, actor, self.registry, today=lambda: today)
        skip = self._skip_reason(spec, target)
        if skip:
            return PreviewRow(target, "skip", f"would skip: {skip}")
        action = spec.action
        try:
            if spec.do == "create_item":
                created_type = self.registry.type(action["type_key"])
                service.require_create(created_type)
                if target is not None:
                    render_values(
                        action.get("values") or [],
                        target_context(target, today=today, spec=spec, trigger={"event": spec.event}),
                        created_type,
                    )
                who = self._party(action["assign_to"], target, created_type) if action.get("assign_to") else None
                assigned = f", assigned to {who}" if who else ""
                return PreviewRow(target, "act", f"would create a {created_type.name}{assigned}")
            if target is None:
                about = self.session.get(Item, spec.id)
                count = len(notifications.recipients(self.session, about, action["recipient"]))
                return PreviewRow(None, "act", f"would notify {count} {'person' if count == 1 else 'people'}")
            tracker_type = service.type_of(target)
            if spec.do == "assign":
                permissions.require(actor, "items.edit", tracker_type, target)
                who = self._party(action["assign_to"], target, tracker_type)
                if who is None:
                    return PreviewRow(target, "fail", f"would fail: nobody to assign it to ({action['assign_to']})")
                return PreviewRow(target, "act", f"would assign it to {who}")
            if spec.do == "transition":
                permissions.require(actor, "items.transition", tracker_type, target)
                workflow = service.workflow_of(target)
                if not any(t.target == action["to_state"] for t in workflow.transitions_from(target.status)):
                    state = workflow.state(target.status)
                    here = state.label if state else target.status
                    return PreviewRow(target, "fail", f"would fail: it cannot move from '{here}' to that state")
                return PreviewRow(target, "act", f"would move it to '{action['to_state']}'")
            permissions.require(actor, "items.view", tracker_type, target)
            count = len(notifications.recipients(self.session, target, action["recipient"]))
            return PreviewRow(target, "act", f"would notify {count} {'person' if count == 1 else 'people'}")
        except (TrackerError, ValueError, TemplateError) as exc:
            return PreviewRow(target, "fail", f"would fail: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    if isinstance(exc, ValidationFailed) and exc.problems:
        return "; ".join(str(p) for p in exc.problems)
    if isinstance(exc, TrackerError):
        return str(exc)
    if isinstance(exc, TemplateError):
        return f"a template of the automation does not work: {exc}"
    return str(exc) or type(exc).__name__


def automation_item(session: Session, registry: Registry, actor: Actor, item_id: int) -> Item:
    """The automation ``item_id`` if the actor may view it; NotFound for any other item."""
    item = ItemService(session, actor, registry).get(item_id)
    if registry.type(item.type_key, item.type_version).kind != "automation":
        raise NotFound(f"#{item_id} is not a process automation.", "Open an automation from the automations list.")
    return item
