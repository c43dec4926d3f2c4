"""Progress through a qualification: assessors tick criteria (with evidence and a date) and untick them.

Ticking needs ``progress.edit`` on the item's type (and the item, for an ``own``-scoped role),
which a role can hold without ``items.edit``: an assessor records progress without being
able to change the item's other fields. Each change is one transaction: the ticks, an event
per criterion in the item's history, and the item's stored percentage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import permissions
from engine import progress as computing
from engine.definitions.model import Registry, TrackerType
from engine.definitions.qualifications import Qualification
from engine.errors import Conflict, NotFound, Problem, ValidationFailed
from engine.models import Item, ProgressTick, utcnow
from engine.permissions import Actor
from engine.services.items import ItemService
from engine.validation import get_path, humanize_label, schema_at

#: the longest evidence reference accepted
MAX_EVIDENCE = 200


@dataclass
class ProgressView:
    """What an item's progress page or answer shows."""

    item: Item
    type: TrackerType
    #: None when the item names no structure (``reason`` says why)
    tree: computing.Progress | None
    may_edit: bool
    reason: str = ""


class ProgressService:
    """Progress of items for one actor.

    Args:
        session: a SQLAlchemy session; each changing method commits or rolls it back.
        actor: on whose behalf; permissions are checked for them.
        registry: the loaded definitions, with the qualification structures.
        today: returns today's date; a criterion cannot be met after it.
    """

    def __init__(
        self, session: Session, actor: Actor, registry: Registry, *, today: Callable[[], date] = date.today
    ) -> None:
        self.session = session
        self.actor = actor
        self.registry = registry
        self.today = today
        self.items = ItemService(session, actor, registry)

    # -- reading -------------------------------------------------------------------------------

    def view(self, item_id: int) -> ProgressView:
        """The item's progress tree. Raises NotFound when its type does not track progress."""
        item = self.items.get(item_id)
        tracker_type = self._tracking_type(item)
        qualification = computing.qualification_for(self.registry, tracker_type, item.data)
        may_edit = permissions.allows(self.actor, "progress.edit", tracker_type, item)
        if qualification is None:
            return ProgressView(item, tracker_type, None, may_edit, self._no_structure(tracker_type, item).message)
        tree = computing.compute(qualification, computing.ticks_of(self.session, item.id, qualification))
        return ProgressView(item, tracker_type, tree, may_edit)

    # -- changing ------------------------------------------------------------------------------

    def tick(self, item_id: int, criterion: str, evidence: str, on_date: str | date) -> ProgressView:
        """Mark ``criterion`` (a path ``UNIT/ELEMENT/CRITERION`` or an unambiguous ref) as met,
        on ``on_date`` with ``evidence`` (a reference to where the evidence is). Ticking a
        ticked criterion again replaces its evidence and date."""
        return self.apply(item_id, ticks=[{"criterion": criterion, "evidence": evidence, "date": on_date}])

    def untick(self, item_id: int, criterion: str) -> ProgressView:
        """Take the tick off ``criterion``."""
        return self.apply(item_id, unticks=[criterion])

    def apply(
        self, item_id: int, *, ticks: list[dict[str, Any]] = (), unticks: list[str] = (), version: int | None = None
    ) -> ProgressView:
        """Tick and untick several criteria in one step; every problem is reported at once
        (``/ticks/0/date`` ...) and nothing changes unless all are fine.

        Raises NotFound, PermissionDenied, ValidationFailed or Conflict (``version`` is not the
        item's current version, or someone changed the same criterion at the same moment).
        """
        item = self.items.get(item_id)
        tracker_type = self._tracking_type(item)
        permissions.require(self.actor, "progress.edit", tracker_type, item)
        if version is not None and version != item.version:
            raise Conflict(
                f"Item #{item.id} was changed by someone else since you opened it "
                f"(you had version {version}, it is now at version {item.version}).",
                "Reload the item to see the changes, then record the progress again.",
            )
        qualification = computing.qualification_for(self.registry, tracker_type, item.data)
        if qualification is None:
            raise ValidationFailed([self._no_structure(tracker_type, item)], "No progress was recorded.")
        self._refuse_frozen(item)
        if not ticks and not unticks:
            raise ValidationFailed(
                [Problem("", "Nothing to record", "Give at least one criterion to tick or untick.")],
                "No progress was recorded.",
            )
        current = {t.criterion: t for t in computing.ticks_of(self.session, item.id, qualification)}
        problems: list[Problem] = []
        wanted: list[tuple[str, str, date]] = []
        for i, entry in enumerate(ticks):
            where = f"/ticks/{i}"
            path = self._resolve(qualification, entry.get("criterion"), f"{where}/criterion", problems)
            evidence = self._evidence(entry.get("evidence"), f"{where}/evidence", problems)
            day = self._date(entry.get("date"), f"{where}/date", problems)
            if path and evidence and day:
                wanted.append((path, evidence, day))
        removing: list[str] = []
        for i, name in enumerate(unticks):
            path = self._resolve(qualification, name, f"/unticks/{i}", problems)
            if path and path not in current:
                problems.append(
                    Problem(f"/unticks/{i}", f"{path} is not ticked", "Only a ticked criterion can be unticked.")
                )
            elif path:
                removing.append(path)
        both = {p for p, *_ in wanted} & set(removing)
        problems += [
            Problem("/unticks", f"{p} is both ticked and unticked", "Tick it or untick it, not both.") for p in both
        ]
        if problems:
            raise ValidationFailed(problems, "No progress was recorded.")
        texts = {path: criterion.text for path, _u, _e, criterion in qualification.criteria()}
        previous = {
            path: {"evidence": current[path].evidence, "date": current[path].on_date.isoformat()}
            for path, *_ in wanted
            if path in current
        }
        try:
            with self.items._transaction():
                self._lock(item)
                for path, evidence, day in wanted:
                    self._put_tick(item, qualification, current.get(path), path, evidence, day)
                for path in removing:
                    self.session.delete(current[path])
                self.session.flush()
                tree = computing.compute(qualification, computing.ticks_of(self.session, item.id, qualification))
                percent = computing.stored_value(tree.percent)
                # progress is not the item's data: no new version, so nobody's open form goes stale
                self.session.execute(
                    update(Item)
                    .where(Item.id == item.id)
                    .values(progress=percent)
                    .execution_options(synchronize_session=False)
                )
                for path, evidence, day in wanted:
                    payload = {
                        "qualification": qualification.key,
                        "criterion": path,
                        "text": texts[path],
                        "evidence": evidence,
                        "date": day.isoformat(),
                        "percent": percent,
                    }
                    if path in previous:
                        payload["previous"] = previous[path]
                    self.items._record(item, "progress_ticked", payload)
                for path in removing:
                    old = current[path]
                    self.items._record(
                        item,
                        "progress_unticked",
                        {
                            "qualification": qualification.key,
                            "criterion": path,
                            "text": texts[path],
                            "evidence": old.evidence,
                            "date": old.on_date.isoformat(),
                            "percent": percent,
                        },
                    )
                self.items._outbox_event(item, "progress_changed", {"percent": percent})
                self.items._changed_for_watchers(
                    item, f"{self.actor.username} recorded progress on {item.title}: {percent:g}% complete"
                )
        except IntegrityError:
            raise Conflict(
                f"Someone else recorded progress on item #{item.id} at the same moment.",
                "Reload the item's page to see their change, then record yours again.",
            ) from None
        self.session.refresh(item)
        return self.view(item.id)

    def recompute(self, type_key: str | None = None) -> int:
        """Store each item's percentage again (after a structure's weights or criteria changed);
        returns how many items changed. Only the system operator or an admin may."""
        if not self.actor.is_admin:
            permissions.require(self.actor, "types.admin")
        types = [self.registry.type(type_key)] if type_key else list(self.registry.types.values())
        changed = 0
        for tracker_type in types:
            if tracker_type.progress is None:
                continue
            for item in self.session.scalars(select(Item).where(Item.type_key == tracker_type.key)):
                value = computing.percent_for(self.session, self.registry, tracker_type, item.id, item.data)
                if value != item.progress:
                    self.session.execute(
                        update(Item)
                        .where(Item.id == item.id)
                        .values(progress=value)
                        .execution_options(synchronize_session=False)
                    )
                    changed += 1
        self.session.commit()
        return changed

    # -- internals -----------------------------------------------------------------------------

    def _tracking_type(self, item: Item) -> TrackerType:
        tracker_type = self.items.type_of(item)
        if tracker_type.progress is None:
            trackers = sorted(t.name for t in self.registry.types.values() if t.progress is not None)
            raise NotFound(
                f"{tracker_type.name} items do not track progress through a qualification.",
                f"Progress is tracked on: {', '.join(trackers)}." if trackers else "No type tracks progress.",
            )
        return tracker_type

    def _no_structure(self, tracker_type: TrackerType, item: Item) -> Problem:
        spec = tracker_type.progress
        known = ", ".join(
            f"{' or '.join(q.identifiers)} ({q.title})"
            for q in sorted(self.registry.qualifications.values(), key=lambda q: q.title)
        )
        if spec.qualification:
            return Problem(
                "qualification",
                f"The qualification structure '{spec.qualification}' is not loaded",
                "Ask an administrator to check tracker_types/qualifications/ with 'tracker check'.",
            )
        name = spec.qualification_field
        label = (schema_at(tracker_type.schema, name) or {}).get("title") or humanize_label(name.split(".")[-1])
        value = get_path(item.data, name)
        said = f"'{value}' matches no qualification structure" if value else "is empty"
        return Problem(
            "/" + name.replace(".", "/"),
            f"{label} {said}, so there are no criteria to tick",
            f"Set {label} to one of: {known or 'none loaded'}; or add the structure to tracker_types/qualifications/.",
        )

    def _refuse_frozen(self, item: Item) -> None:
        """Progress is frozen with the rest of the item once its state makes every field read-only."""
        workflow = self.items.workflow_of(item)
        if "*" in workflow.fields_for(item.status).read_only:
            state = workflow.state(item.status)
            raise ValidationFailed(
                [
                    Problem(
                        "status",
                        f"Item #{item.id} is '{state.label if state else item.status}', so its progress cannot change",
                        "Move the item back to an earlier state first if the record is wrong.",
                    )
                ],
                "No progress was recorded.",
            )

    def _resolve(self, qualification: Qualification, name: Any, where: str, problems: list[Problem]) -> str | None:
        if not isinstance(name, str) or not name.strip():
            problems.append(
                Problem(where, "Say which criterion", "Give its path UNIT/ELEMENT/CRITERION, e.g. 1/1/1.1.")
            )
            return None
        found = qualification.resolve(name)
        if len(found) == 1:
            return found[0]
        example = next(qualification.criteria())[0]
        if not found:
            problems.append(
                Problem(
                    where,
                    f"'{name.strip()[:60]}' is not a criterion of {qualification.title}",
                    f"Give its path UNIT/ELEMENT/CRITERION, e.g. {example}; the item's progress lists them all.",
                )
            )
        else:
            problems.append(
                Problem(
                    where,
                    f"'{name.strip()}' could be any of: {', '.join(found[:6])}",
                    "Give the whole path UNIT/ELEMENT/CRITERION.",
                )
            )
        return None

    def _evidence(self, value: Any, where: str, problems: list[Problem]) -> str | None:
        text = " ".join(value.split()) if isinstance(value, str) else ""
        if not text:
            problems.append(
                Problem(
                    where,
                    "The evidence reference is missing",
                    "Say where the evidence is, e.g. 'Observation 12/03' or 'Portfolio p.14'.",
                )
            )
            return None
        if len(text) > MAX_EVIDENCE:
            problems.append(
                Problem(where, f"The evidence reference is {len(text)} characters long", f"Use at most {MAX_EVIDENCE}.")
            )
            return None
        return text

    def _date(self, value: Any, where: str, problems: list[Problem]) -> date | None:
        day = value if isinstance(value, date) else None
        if isinstance(value, str):
            try:
                day = date.fromisoformat(value.strip()) if len(value.strip()) == 10 else None
            except ValueError:
                day = None
        if day is None:
            shown = f"'{str(value)[:20]}' is not a date" if value not in (None, "") else "The date is missing"
            problems.append(
                Problem(where, shown, "Write the date the criterion was met as YYYY-MM-DD, e.g. 2025-03-14.")
            )
            return None
        if day > self.today():
            problems.append(
                Problem(where, f"{day.isoformat()} is in the future", "Tick a criterion on or after the day it is met.")
            )
            return None
        return day

    def _lock(self, item: Item) -> None:
        """Ticks of one item are recorded one change at a time, so the stored percentage always
        counts every committed tick (PostgreSQL; SQLite has one writer at a time anyway)."""
        self.session.execute(select(Item.id).where(Item.id == item.id).with_for_update())

    def _put_tick(
        self, item: Item, qualification: Qualification, old: ProgressTick | None, path: str, evidence: str, day: date
    ) -> None:
        if old is not None:
            old.evidence, old.on_date, old.ticked_by_id, old.ticked_at = evidence, day, self.actor.user_id, utcnow()
            return
        self.session.add(
            ProgressTick(
                item_id=item.id,
                qualification=qualification.key,
                criterion=path,
                evidence=evidence,
                on_date=day,
                ticked_by_id=self.actor.user_id,
                ticked_at=utcnow(),
            )
        )


def progress_record(view: ProgressView) -> dict:
    """The progress tree as plain data: what the API answers and ``tracker progress show --json`` prints."""
    tree = view.tree
    out = {
        "item": view.item.id,
        "percent": round(tree.percent, 1) if tree else None,
        "ticked": tree.ticked if tree else 0,
        "total": tree.total if tree else 0,
        "may_edit": view.may_edit,
        "reason": view.reason,
        "qualification": None,
        "units": [],
    }
    if tree is None:
        return out
    q = tree.qualification
    out["qualification"] = {"key": q.key, "title": q.title, "qan": q.qan, "reference": q.reference, "level": q.level}
    out["units"] = [
        {
            "ref": u.unit.ref,
            "title": u.unit.title,
            "weight": u.unit.weight,
            "percent": round(u.percent, 1),
            "elements": [
                {
                    "ref": e.element.ref,
                    "title": e.element.title,
                    "weight": e.element.weight,
                    "percent": round(e.percent, 1),
                    "criteria": [
                        {
                            "path": c.path,
                            "ref": c.criterion.ref,
                            "text": c.criterion.text,
                            "weight": c.criterion.weight,
                            "met": c.done,
                            "evidence": c.tick.evidence if c.tick else None,
                            "date": c.tick.on_date.isoformat() if c.tick else None,
                            "ticked_by": c.tick.ticked_by.username if c.tick and c.tick.ticked_by else None,
                        }
                        for c in e.criteria
                    ],
                }
                for e in u.elements
            ],
        }
        for u in tree.units
    ]
    return out
