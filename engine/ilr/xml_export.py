"""Export ILR items as the ILR XML file ESFA collects, checked against ESFA's schema.

The file is named as ESFA expects, ``ILR-<UKPRN>-<YYYY>-<yyyymmdd>-<hhmmss>-<NN>.xml``, and its
content is validated against the XSD of the collection year (``tracker_types/ilr/``) with
``xmlschema`` before anything is written. A learner whose record fails (an ILR rule error on
its current data, or the XSD) is left out of the file and listed with the reason, mapped to
the field of their record; the rest are written. With ``strict`` any failing learner refuses
the whole file. Nothing is ever written with content that fails the XSD: the file written is
validated as a whole a last time.

Every export is recorded (:mod:`engine.services.bulk`), and each learner in the file gets an
``exported`` event in their item's history naming the file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path

import xmlschema

from engine import permissions, sandbox
from engine.errors import Problem, TrackerError, ValidationFailed
from engine.ilr import xml_builder
from engine.ilr.xml_builder import COLLECTIONS, Collection
from engine.models import Event, Item
from engine.rules import rule_problems
from engine.services import bulk
from engine.services.bulk import COMMAND_LINE, Origin
from engine.services.items import ItemService
from engine.validation import make_validator, schema_at, schema_problems

log = logging.getLogger(__name__)

#: ``progress(done, total, stage)``: ``done`` of ``total`` learners are through ``stage``:
#: ``records`` (each record checked), ``schema`` (the file checked against ESFA's schema, learner
#: by learner), ``schema_again`` (the same without the learners it refused, when it refused any),
#: ``write`` (the file and the learners' events)
Progress = Callable[[int, int, str], None]

TYPE_KEY = "ilr"
#: ``ILR-<UKPRN>-<YYYY>-<yyyymmdd>-<hhmmss>-<NN>.xml`` (ESFA's Filename_1)
FILENAME = re.compile(r"^ILR-(\d{8})-(\d{4})-(\d{8})-(\d{6})-(\d{2})\.xml$")
#: items read per query while the learners are gathered
BATCH = 500
#: the characters ESFA's RestrictedString allows, for the message when a value has others
RESTRICTED = "letters A-Z, digits, spaces and ~ ! @ # $ % & ' ( ) * + , - . / : ; < = > ? [ \\ ] _ { } ^ £ €"


@dataclass
class Excluded:
    """A learner left out of the file, and every reason, each on the field concerned."""

    item_id: int
    title: str
    learn_ref_number: str
    problems: list[Problem]


@dataclass
class IlrExport:
    """What an export did. ``path`` is None when no file was written: no learner could go in,
    or (``strict``) a learner failed; ``excluded`` lists the learners left out and why."""

    ukprn: str
    year: str
    prepared: datetime
    filename: str | None = None
    path: Path | None = None
    included: list[int] = field(default_factory=list)
    excluded: list[Excluded] = field(default_factory=list)
    strict: bool = False

    @property
    def written(self) -> bool:
        return self.path is not None


def filename(ukprn: str, year: str, prepared: datetime, serial: int) -> str:
    """``ILR-10012345-2526-20260315-093000-01.xml``"""
    return f"ILR-{ukprn}-{year}-{prepared:%Y%m%d}-{prepared:%H%M%S}-{serial:02d}.xml"


def next_serial(folder: Path, ukprn: str, year: str) -> int:
    """One more than the highest serial number of this UKPRN's files for the year in ``folder``
    (01 for the first). Raises TrackerError past 99, the most ESFA's file names allow."""
    used = [
        int(m.group(5))
        for p in (folder.iterdir() if folder.is_dir() else ())
        if (m := FILENAME.match(p.name)) and m.group(1) == ukprn and m.group(2) == year
    ]
    serial = max(used, default=0) + 1
    if serial > 99:
        raise TrackerError(
            f"There are already ILR files with serial numbers up to 99 for UKPRN {ukprn} and {year} in {folder}.",
            "Move the files already submitted out of the folder, or pick another folder with --out.",
        )
    return serial


def check_ukprn(ukprn: str) -> str:
    text = str(ukprn).strip()
    if not (text.isdigit() and len(text) == 8 and int(text) >= 10_000_000):
        raise ValidationFailed(
            [
                Problem(
                    "ukprn",
                    f"'{ukprn}' is not a UKPRN",
                    "Enter your 8-digit UK provider reference number, e.g. 10012345.",
                )
            ]
        )
    return text


def collection_for(year: str) -> Collection:
    found = COLLECTIONS.get(str(year).strip())
    if found is None:
        years = ", ".join(sorted(COLLECTIONS))
        raise ValidationFailed(
            [
                Problem(
                    "year",
                    f"Tracker has no ILR schema for the year '{year}'",
                    f"Use one of: {years} (the year as ESFA writes it: 2526 for 2025 to 2026).",
                )
            ]
        )
    return found


@lru_cache(maxsize=4)
def schema(year: str) -> xmlschema.XMLSchema:
    """ESFA's XSD for the collection year, parsed once."""
    path = resources.files("tracker_types").joinpath("ilr", COLLECTIONS[year].schema_file)
    with resources.as_file(path) as real:
        return xmlschema.XMLSchema(str(real))


def _release() -> str:
    try:
        return metadata.version("tracker-engine")
    except metadata.PackageNotFoundError:
        return "dev"


def export_ilr(
    service: ItemService,
    *,
    ukprn: str,
    year: str,
    out_dir: Path,
    item_ids: list[int] | None = None,
    status: list[str] | None = None,
    assignee: str | None = None,
    q: str | None = None,
    strict: bool = False,
    serial: int | None = None,
    origin: Origin = COMMAND_LINE,
    now: Callable[[], datetime] = datetime.now,
    progress: Progress | None = None,
) -> IlrExport:
    """Write the ILR file of the ILR items chosen (``item_ids``, or those ``service.list`` finds
    with ``status``/``assignee``/``q``; without a status, every item not in a cancelled state)
    into ``out_dir``, and return what was written and who was left out. ``progress`` is told
    how many learners are through each stage (see :data:`Progress`).

    Raises:
        PermissionDenied: the actor lacks ``exports.bulk`` (or ``items.view``) on ILR items, or
            ``origin`` is not an allowed address.
        ValidationFailed: the UKPRN, year or serial number is not valid, or an item id is not an
            ILR item; nothing is written.
        NotFound: an item id does not exist.
        TrackerError: there is no learner to export, or the folder cannot be written.
    """
    actor, registry = service.actor, service.registry
    tracker_type = registry.type(TYPE_KEY)
    permissions.require(actor, "items.view", tracker_type)
    permissions.require(actor, "exports.bulk", tracker_type)
    filters = {"ids": item_ids, "status": status, "assignee": assignee, "q": q, "ukprn": ukprn, "year": year}
    bulk.require_allowed(service.session, actor, origin, "ilr_xml", TYPE_KEY, filters)
    ukprn = check_ukprn(ukprn)
    collection = collection_for(year)
    if serial is not None and not 1 <= serial <= 99:
        raise ValidationFailed([Problem("serial", f"Serial number {serial} is out of range", "Use 1 to 99.")])
    items = chosen(service, item_ids, status, assignee, q)
    if not items:
        raise TrackerError(
            "There is no ILR record to export with these filters.",
            "Change the filters (a record in a cancelled state is only exported when its state is asked for).",
        )
    prepared = now().replace(microsecond=0)
    result = IlrExport(ukprn, collection.year, prepared, strict=strict)
    candidates: list[Item] = []
    for done, item in enumerate(items, 1):
        problems = current_problems(service, item)
        if problems:
            result.excluded.append(_excluded(item, problems))
        else:
            candidates.append(item)
        if progress is not None:
            progress(done, len(items), "records")
    out_dir = Path(out_dir)
    number = serial or next_serial(out_dir, ukprn, collection.year)
    doc, failed = _valid_document(service, candidates, ukprn, collection, number, prepared, progress)
    result.excluded += failed
    result.included = [item.id for item in candidates if item.id not in {e.item_id for e in failed}]
    detail = {"excluded": [{"item": e.item_id, "reasons": [p.message for p in e.problems]} for e in result.excluded]}
    if not result.included or (strict and result.excluded):
        bulk.record(
            service.session, actor, origin, "ilr_xml", TYPE_KEY, filters=filters, outcome="nothing", detail=detail
        )
        service.session.commit()
        return result
    if progress is not None:
        progress(0, len(result.included), "write")
    result.filename = filename(ukprn, collection.year, prepared, number)
    result.path = _write(out_dir, result.filename, xml_builder.to_bytes(doc))
    bulk.record(
        service.session,
        actor,
        origin,
        "ilr_xml",
        TYPE_KEY,
        filters=filters,
        item_count=len(result.included),
        filename=result.filename,
        detail=detail,
    )
    for item_id in result.included:
        service.session.add(
            Event(
                item_id=item_id,
                kind="exported",
                actor_id=actor.user_id,
                payload={"file": result.filename, "ukprn": ukprn, "year": collection.year, "format": "ILR XML"},
            )
        )
    service.session.commit()
    if progress is not None:
        progress(len(result.included), len(result.included), "write")
    log.info(
        "ILR export: %s wrote %s with %d learner(s), %d left out",
        actor.username,
        result.filename,
        len(result.included),
        len(result.excluded),
    )
    return result


def current_problems(service: ItemService, item: Item) -> list[Problem]:
    """The errors the item's data has now, as a save would find them (definitions may have
    changed since it was saved): its schema and its rules. Warnings do not count."""
    tracker_type = service.type_of(item)
    quick, full = _validators_of(tracker_type.schema)
    problems = [] if quick.is_valid(item.data) else schema_problems(full, item.data)
    subject = item.subject
    context = {
        **sandbox.context_for(
            item.data,
            {"status": item.status, "title": item.title, "id": item.id},
            {"id": subject.id, "name": subject.title, "data": subject.data} if subject else {},
        ),
        "today": service.today().isoformat(),
    }
    problems += [
        p for p in rule_problems(service.registry, tracker_type, item.data, context) if p.severity != "warning"
    ]
    return problems


_validators: dict[int, tuple[dict, object, object]] = {}


def _validators_of(schema: dict):
    """``(quick, full)`` validators of a schema, each compiled once (kept with the schema itself:
    reloaded definitions compile again). The quick one has each labelled choice list
    (``oneOf`` of ``const``) as a plain ``enum``: it accepts exactly the same data, several times
    faster, and is asked first; the full one words the problems of data it refuses."""
    kept = _validators.get(id(schema))
    if kept is None or kept[0] is not schema:
        kept = _validators[id(schema)] = (schema, make_validator(_enums(schema)), make_validator(schema))
    return kept[1], kept[2]


def _enums(node):
    if isinstance(node, list):
        return [_enums(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _enums(v) for k, v in node.items() if k != "oneOf"}
    choices = node.get("oneOf")
    if isinstance(choices, list) and choices and all(isinstance(b, dict) and "const" in b for b in choices):
        out["enum"] = [b["const"] for b in choices]
    elif choices is not None:
        out["oneOf"] = _enums(choices)
    return out


def chosen(service: ItemService, ids, status, assignee, q) -> list[Item]:
    """The ILR items ``ids`` names (each must exist, be visible and be an ILR record), or
    without ids those the filters find."""
    if ids:
        items = [service.get(i) for i in dict.fromkeys(ids)]
        wrong = [i.id for i in items if i.type_key != TYPE_KEY]
        if wrong:
            raise ValidationFailed(
                [
                    Problem(
                        "ids",
                        f"Items #{', #'.join(map(str, wrong))} are not ILR records"
                        if len(wrong) > 1
                        else f"Item #{wrong[0]} is not an ILR record",
                        "Give the numbers of ILR items only.",
                    )
                ]
            )
        return items
    workflow = service.registry.workflow_for(service.registry.type(TYPE_KEY))
    states = status or workflow.states_in(("open", "done"))
    found: list[Item] = []
    while True:
        page, total = service.list(
            TYPE_KEY, status=states, assignee=assignee, q=q, sort="id", limit=BATCH, offset=len(found)
        )
        found += page
        if not page or len(found) >= total:
            return found


def _valid_document(service, candidates: list[Item], ukprn, collection, number, prepared, progress=None):
    """Build and validate; leave out every learner the XSD refuses and build again, until the
    document validates. Returns the document and the learners left out. ``progress`` is told
    of each learner as the validation reaches it."""
    xsd = schema(collection.year)
    failed: list[Excluded] = []
    remaining = list(candidates)
    release = _release()
    while True:
        if not remaining:
            return None, failed
        doc = xml_builder.build(
            [i.data for i in remaining],
            ukprn=ukprn,
            collection=collection,
            serial=number,
            prepared=prepared,
            release=release,
        )
        stage = "schema_again" if failed else "schema"
        hook = _counting_learners(collection, len(remaining), stage, progress)
        errors = list(xsd.iter_errors(doc.root, validation_hook=hook))
        if progress is not None:
            progress(len(remaining), len(remaining), stage)
        if not errors:
            return doc, failed
        parents = {child: parent for parent in doc.root.iter() for child in parent}
        by_learner: dict[int, list[Problem]] = {}
        for error in errors:
            index, pointer = _source(doc, parents, error.elem)
            if index is None:
                # the header: nothing the learners can fix, so nothing is written
                raise TrackerError(
                    f"The ILR file does not pass ESFA's schema: {error.reason}",
                    "Check the UKPRN and the year; this is not about a learner's record.",
                )
            problem = _xsd_problem(service.type_of(remaining[index]), pointer, error)
            found = by_learner.setdefault(index, [])
            if problem not in found:  # a facet of a derived type and of its base report the same value
                found.append(problem)
        failed += [_excluded(remaining[i], problems) for i, problems in sorted(by_learner.items())]
        remaining = [item for i, item in enumerate(remaining) if i not in by_learner]


def _counting_learners(collection: Collection, total: int, stage: str, progress):
    """A validation hook for xmlschema that tells ``progress`` how many of the ``total``
    learners the validation has gone through (it is called before each element is validated)."""
    if progress is None:
        return None
    learner = f"{{{collection.namespace}}}Learner"
    seen = [0]

    def hook(element, _xsd_element) -> bool:
        if element.tag == learner:
            progress(seen[0], total, stage)
            seen[0] += 1
        return False  # validate the element as usual

    return hook


def _source(doc, parents, element) -> tuple[int | None, str]:
    """The learner (index) and field (JSON pointer) an element of the document came from."""
    node = element
    while node is not None:
        if node in doc.sources:
            return doc.sources[node]
        node = parents.get(node)
    return None, ""


def _xsd_problem(tracker_type, pointer: str, error) -> Problem:
    element = error.elem.tag.rsplit("}", 1)[-1] if error.elem is not None else "the record"
    dotted = ".".join(p for p in pointer.strip("/").split("/") if not p.isdigit())
    label = ((schema_at(tracker_type.schema, dotted) or {}).get("title") if dotted else None) or "The learner's record"
    rows = [int(p) for p in pointer.split("/") if p.isdigit()]
    where = f" (learning delivery {rows[0] + 1})" if pointer.startswith("/learning_deliveries/") and rows else ""
    reason = str(error.reason or "is not valid")
    if "pattern" in reason and "£" in reason:
        reason = f"has characters the ILR does not allow (only {RESTRICTED})"
    named = "" if label.lower() == element.lower() else f" ({element})"
    return Problem(
        pointer,
        f"{label}{where}{named} is refused by ESFA's schema: {reason}",
        f"Correct {label} on the learner's ILR record, then export again.",
        "xsd",
    )


def _excluded(item: Item, problems: list[Problem]) -> Excluded:
    return Excluded(item.id, item.title, str(item.data.get("learn_ref_number", "")), problems)


def _write(folder: Path, name: str, content: bytes) -> Path:
    """Write the file whole or not at all: to a temporary name first, then renamed."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / name
        temporary = folder / f".{name}.part"
        temporary.write_bytes(content)
        os.replace(temporary, target)
    except OSError as exc:
        raise TrackerError(
            f"The ILR file could not be written to {folder}: {exc.strerror}.",
            "Pick a folder you may write to (--out on the command line).",
        ) from None
    return target


def validate_file(path: Path) -> list[str]:
    """What is wrong with an ILR file: its name against ESFA's pattern (Filename_1), then its
    content against the XSD of the year it declares; empty when it passes both."""
    import xml.etree.ElementTree as ET

    problems = []
    match = FILENAME.match(path.name)
    if match is None:
        problems.append(
            "Filename_1: the file name is not ILR-<UKPRN>-<YYYY>-<yyyymmdd>-<hhmmss>-<NN>.xml "
            "(e.g. ILR-10012345-2526-20260315-093000-01.xml)"
        )
    elif match.group(5) == "00":
        problems.append("Filename_5: the serial number NN of the file name must be 01 to 99")
    from defusedxml import DefusedXmlException
    from defusedxml.ElementTree import parse as safe_parse

    try:
        # ILR files never declare a DTD or entities: refusing them stops entity expansion
        # (billion laughs) and external entities (local files, network addresses) alike
        root = safe_parse(path, forbid_dtd=True).getroot()
    except ET.ParseError as exc:
        return [*problems, f"not well-formed XML: {exc}"]
    except DefusedXmlException:
        return [*problems, "the file declares a DTD or entities, which an ILR file never has: it was not read"]
    namespace = root.tag[1 : root.tag.index("}")] if root.tag.startswith("{") else ""
    collection = next((c for c in COLLECTIONS.values() if c.namespace == namespace), None)
    if collection is None:
        known = ", ".join(c.namespace for c in COLLECTIONS.values())
        return [*problems, f"the namespace '{namespace}' is not one Tracker has a schema for ({known})"]
    if match and match.group(2) != collection.year:
        problems.append(f"the year {match.group(2)} in the file name is not the file's year {collection.year}")
    parents = {child: parent for parent in root.iter() for child in parent}
    for error in schema(collection.year).iter_errors(root):
        problems.append(f"{_learner_of(error.elem, parents, namespace)}{_short_path(error.path)}: {error.reason}")
    return problems


def _short_path(path: str | None) -> str:
    return re.sub(r"\{[^}]*\}", "", path or "")


def _learner_of(element, parents, namespace: str) -> str:
    node = element
    while node is not None and node.tag != f"{{{namespace}}}Learner":
        node = parents.get(node)
    if node is None:
        return ""
    ref = node.find(f"{{{namespace}}}LearnRefNumber")
    return f"learner {ref.text} " if ref is not None and ref.text else ""
