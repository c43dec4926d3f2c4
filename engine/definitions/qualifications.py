"""Qualification structures: qualification -> unit -> element -> criterion, each with a weight.

A structure is data, one YAML file per qualification in ``tracker_types/qualifications/<key>.yaml``
of any definitions folder, checked at load time like every other definition (meta-schema
``qualification.schema.json``, then the checks below). A tracker type opts in with
``progress:`` in its ``type.yaml``; :mod:`engine.progress` computes how far an item is.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: a Qualification Accreditation Number as Ofqual prints it, e.g. 603/5060/7 (the last
#: character is a check character, a digit or X)
QAN_PATTERN = re.compile(r"^[0-9]{3}/[0-9]{4}/[0-9X]$")
#: what separates the unit, element and criterion refs in a criterion's path
SEPARATOR = "/"


@dataclass(frozen=True)
class Criterion:
    ref: str
    text: str
    weight: float = 1.0


@dataclass(frozen=True)
class Element:
    ref: str
    title: str
    criteria: tuple[Criterion, ...]
    weight: float = 1.0


@dataclass(frozen=True)
class Unit:
    ref: str
    title: str
    elements: tuple[Element, ...]
    weight: float = 1.0


@dataclass(frozen=True)
class Qualification:
    """One structure. ``qan`` (a regulated qualification) or ``reference`` (an apprenticeship
    standard such as ST0384) is what an item's ``qualification_field`` is matched against."""

    key: str
    title: str
    units: tuple[Unit, ...]
    qan: str | None = None
    reference: str | None = None
    level: int | None = None
    awarding_body: str = ""
    description: str = ""
    source: str = ""

    @property
    def identifiers(self) -> tuple[str, ...]:
        return tuple(i for i in (self.qan, self.reference) if i)

    def criteria(self) -> Iterator[tuple[str, Unit, Element, Criterion]]:
        """Every criterion with its path ``UNIT/ELEMENT/CRITERION`` and its parents, in order."""
        for unit in self.units:
            for element in unit.elements:
                for criterion in element.criteria:
                    yield SEPARATOR.join((unit.ref, element.ref, criterion.ref)), unit, element, criterion

    def resolve(self, name: str) -> list[str]:
        """The paths ``name`` may mean: a whole path ``UNIT/ELEMENT/CRITERION``, a criterion ref
        (``K1``), the end of a path (``2/2.1``) or a unit and criterion (``201/1.1``), matched on
        whole refs. One path when it is unambiguous."""
        wanted = [part.strip() for part in name.strip().strip(SEPARATOR).split(SEPARATOR)]
        found = []
        for path, unit, _element, criterion in self.criteria():
            parts = path.split(SEPARATOR)
            if parts == wanted:
                return [path]
            if parts[-len(wanted) :] == wanted or (len(wanted) == 2 and wanted == [unit.ref, criterion.ref]):
                found.append(path)
        return found


def find_for(qualifications: dict[str, Qualification], value: Any) -> Qualification | None:
    """The structure whose QAN or standard reference is ``value`` (compared without case or
    surrounding spaces), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    wanted = value.strip().upper()
    for qualification in qualifications.values():
        if wanted in (i.upper() for i in qualification.identifiers):
            return qualification
    return None


def load_qualifications(folder: Path, registry, out) -> None:
    """Load every ``*.yaml`` in ``folder`` into ``registry.qualifications``; problems go to
    ``out`` (the loader's collector) and a structure with one is left out."""
    if not folder.is_dir():
        return
    for path in sorted(folder.glob("*.y*ml")):
        doc = out.read(path)
        if doc is None or not out.meta(doc, "qualification"):
            continue
        qualification = _build(path, doc, registry, out)
        if qualification is not None:
            registry.qualifications[qualification.key] = qualification


def _build(path: Path, doc, registry, out) -> Qualification | None:
    raw = doc.value
    before = len(out.problems)
    if raw["key"] != path.stem:
        out.add(
            doc,
            "/key",
            f"key '{raw['key']}' does not match the file name '{path.name}'",
            f"Rename the file to {raw['key']}.yaml or change the key to '{path.stem}'.",
        )
    if raw["key"] in registry.qualifications:
        out.add(
            doc,
            "/key",
            f"qualification '{raw['key']}' is already defined in {registry.qualifications[raw['key']].source}",
            "Use another key; a later folder cannot replace an earlier definition.",
        )
        return None
    if not raw.get("qan") and not raw.get("reference"):
        out.add(
            doc,
            "",
            "a qualification needs a 'qan' or a 'reference' so items can name it",
            "Add qan: NNN/NNNN/N for a regulated qualification, or reference: ST0384 for an apprenticeship standard.",
        )
    for name in ("qan", "reference"):
        value = raw.get(name)
        taken = find_for(registry.qualifications, value) if value else None
        if taken is not None:
            out.add(
                doc,
                f"/{name}",
                f"{name} '{value}' is already used by qualification '{taken.key}' ({taken.source})",
                "Each QAN or standard reference names one structure; remove one of them.",
            )
    _unique(out, doc, "/units", raw["units"], "unit")
    for i, unit in enumerate(raw["units"]):
        _unique(out, doc, f"/units/{i}/elements", unit["elements"], "element")
        for j, element in enumerate(unit["elements"]):
            _unique(out, doc, f"/units/{i}/elements/{j}/criteria", element["criteria"], "criterion")
    if len(out.problems) != before:
        return None
    return Qualification(
        key=raw["key"],
        title=raw["title"],
        qan=raw.get("qan"),
        reference=raw.get("reference"),
        level=raw.get("level"),
        awarding_body=raw.get("awarding_body", ""),
        description=raw.get("description", ""),
        source=out.display(path) if hasattr(out, "display") else str(path),
        units=tuple(
            Unit(
                ref=str(u["ref"]),
                title=u["title"],
                weight=float(u.get("weight", 1)),
                elements=tuple(
                    Element(
                        ref=str(e["ref"]),
                        title=e["title"],
                        weight=float(e.get("weight", 1)),
                        criteria=tuple(
                            Criterion(str(c["ref"]), c["text"], float(c.get("weight", 1))) for c in e["criteria"]
                        ),
                    )
                    for e in u["elements"]
                ),
            )
            for u in raw["units"]
        ),
    )


def _unique(out, doc, ptr: str, entries: list[dict], what: str) -> None:
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        ref = str(entry["ref"])
        if ref in seen:
            out.add(
                doc,
                f"{ptr}/{i}/ref",
                f"{what} ref '{ref}' is used twice here",
                f"Give each {what} its own ref within its parent.",
            )
        seen.add(ref)
