"""How far an item is through its qualification: ticked criteria, weighted up the tree.

An element is complete in the proportion of its criteria's weights that are ticked; a unit
in the weighted mean of its elements; the qualification in the weighted mean of its units.
The result, a percentage, is stored on the item (``items.progress``) so lists can show and
sort by it; :class:`engine.services.progress.ProgressService` keeps it up to date.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.definitions.model import Registry, TrackerType
from engine.definitions.qualifications import Criterion, Element, Qualification, Unit, find_for
from engine.models import ProgressTick
from engine.validation import get_path


@dataclass
class CriterionProgress:
    path: str
    criterion: Criterion
    tick: ProgressTick | None = None

    @property
    def done(self) -> bool:
        return self.tick is not None


@dataclass
class ElementProgress:
    element: Element
    criteria: list[CriterionProgress]
    percent: float = 0.0


@dataclass
class UnitProgress:
    unit: Unit
    elements: list[ElementProgress]
    percent: float = 0.0

    @property
    def ticked(self) -> int:
        return sum(c.done for e in self.elements for c in e.criteria)

    @property
    def total(self) -> int:
        return sum(len(e.criteria) for e in self.elements)


@dataclass
class Progress:
    """The whole tree with a percentage at every level."""

    qualification: Qualification
    units: list[UnitProgress] = field(default_factory=list)
    percent: float = 0.0

    @property
    def ticked(self) -> int:
        return sum(u.ticked for u in self.units)

    @property
    def total(self) -> int:
        return sum(u.total for u in self.units)


def _weighted(parts: Iterable[tuple[float, float]]) -> float:
    """The weighted mean of ``(weight, percent)`` pairs."""
    pairs = list(parts)
    total = sum(weight for weight, _ in pairs)
    return sum(weight * percent for weight, percent in pairs) / total if total else 0.0


def compute(qualification: Qualification, ticks: Iterable[ProgressTick]) -> Progress:
    """The progress tree of ``qualification`` with ``ticks`` (those for other criteria, e.g.
    of an older version of the structure, are ignored)."""
    by_path = {t.criterion: t for t in ticks}
    units = []
    for unit in qualification.units:
        elements = []
        for element in unit.elements:
            criteria = [
                CriterionProgress(
                    f"{unit.ref}/{element.ref}/{c.ref}", c, by_path.get(f"{unit.ref}/{element.ref}/{c.ref}")
                )
                for c in element.criteria
            ]
            percent = _weighted((c.criterion.weight, 100.0 if c.done else 0.0) for c in criteria)
            elements.append(ElementProgress(element, criteria, percent))
        units.append(UnitProgress(unit, elements, _weighted((e.element.weight, e.percent) for e in elements)))
    return Progress(qualification, units, _weighted((u.unit.weight, u.percent) for u in units))


def stored_value(percent: float) -> float:
    """What goes into ``items.progress``: one decimal place, and 100 only when complete."""
    value = round(percent, 1)
    return 99.9 if value == 100.0 and percent < 100.0 else value


def qualification_for(registry: Registry, tracker_type: TrackerType, data: dict[str, Any]) -> Qualification | None:
    """The structure an item of ``tracker_type`` with ``data`` is tracked against, or None
    (the type does not track progress, or the item names no known structure)."""
    spec = tracker_type.progress
    if spec is None:
        return None
    if spec.qualification:
        return registry.qualifications.get(spec.qualification)
    return find_for(registry.qualifications, get_path(data, spec.qualification_field))


def ticks_of(session: Session, item_id: int, qualification: Qualification) -> list[ProgressTick]:
    stmt = select(ProgressTick).where(ProgressTick.item_id == item_id, ProgressTick.qualification == qualification.key)
    return list(session.scalars(stmt))


def percent_for(
    session: Session, registry: Registry, tracker_type: TrackerType, item_id: int | None, data: dict[str, Any]
) -> float | None:
    """The value for ``items.progress`` of an item with ``data`` (its qualification field may
    just have changed): None without a structure, else the stored percentage."""
    qualification = qualification_for(registry, tracker_type, data)
    if qualification is None:
        return None
    if item_id is None:  # a new item has ticked nothing yet
        return 0.0
    return stored_value(compute(qualification, ticks_of(session, item_id, qualification)).percent)


def describe_event(kind: str, payload: dict) -> str | None:
    """A progress event of an item's history in words; None for other kinds."""
    what = f"{payload.get('criterion', '?')} {payload.get('text', '')}".strip()
    after = f" - now {payload['percent']:g}% complete" if isinstance(payload.get("percent"), int | float) else ""
    if kind == "progress_ticked":
        again = " again" if payload.get("previous") else ""
        return f"ticked{again} {what} (evidence {payload.get('evidence', '')}, {payload.get('date', '')}){after}"
    if kind == "progress_unticked":
        return f"unticked {what}{after}"
    return None
