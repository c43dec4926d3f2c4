"""Importing items from CSV and XLSX files, through the item service like every other change.

An import has three steps, each usable on its own by the web page, the CLI and jobs:

1. :meth:`ImportService.open` checks the actor may import the type, reads the file and maps
   its header onto the type's fields; any problem with the file as a whole is refused here.
2. :meth:`ImportService.check` (the dry run) validates every row exactly as a save would
   (JSON Schema, rules, per-state fields, the learner the row is about, duplicates by
   identity) and reports each bad row with its line, column and message. Nothing is written.
3. :meth:`ImportService.run` validates again and creates the valid rows. Batches of rows
   that are all valid are written together (items, their ``created`` events and outbox rows
   in one transaction); if a batch fails, its rows are saved one by one, each in its own
   transaction, so a failing row never loses or half-writes another. Rows that need more
   than a plain create (an assignee to notify, a title that needs the new id) are always
   saved one by one through :meth:`ItemService.create`.

Columns: a header is a field name (``given_name``; dotted for nested fields,
``employer.name``) or a field's title (``Given name``). A list field is one column holding
JSON, or numbered columns counted from 1, one per field of each entry
(``learning_deliveries.1.aim_type``; see :mod:`engine.services.import_lists`). For a type
about a learner (or employer), ``subject_uln`` / ``learner_uln`` (any identity field of the subject type) or
``subject_id`` / ``learner_id`` / ``learner_ref`` (its number in Tracker) says which learner
each row is about. ``assignee`` and ``description`` fill those item attributes unless the type
has fields of that name. Any other column is refused by name.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import DBAPIError, IntegrityError

from engine import permissions
from engine.definitions.model import TrackerType
from engine.errors import PermissionDenied, Problem, TrackerError, ValidationFailed
from engine.models import Item
from engine.services.import_bulk import item_values
from engine.services.import_files import FileRefused, Table, read_table
from engine.services.import_lists import Found, NumberedList, Place, arrange, is_list, list_advice, read_header
from engine.services.items import DuplicateItem, ItemService, _identity_key
from engine.validation import choices, humanize_label, schema_at, set_path

log = logging.getLogger(__name__)

#: rows validated, checked for duplicates and written together
CHUNK_SIZE = 1000
#: reserved columns that set item attributes rather than data fields
ATTRIBUTE_COLUMNS = ("assignee", "description")

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Column:
    """What one column of the file fills: ``kind`` is ``field`` (``target`` is the dotted
    field name), ``entry`` (a field of a numbered entry of a list: ``target`` is dotted with
    the entry numbers, ``learning_deliveries.2.aim_type``, and ``place`` holds its parts),
    ``subject`` (``target`` is ``id`` or an identity field of the subject type), ``assignee``
    or ``description``."""

    index: int
    header: str
    kind: str
    target: str = ""
    schema: dict = field(default_factory=dict, hash=False, compare=False)
    place: tuple = ()

    @property
    def field_name(self) -> str:
        """The dotted field name without entry numbers (``learning_deliveries.aim_type``)."""
        return ".".join(p for p in self.place if isinstance(p, str)) if self.place else self.target


@dataclass(frozen=True)
class RowProblem:
    """One reason a row cannot be imported. ``kind`` is ``invalid`` or ``duplicate``; a
    duplicate names the item it duplicates (``existing_id``) or the earlier line of the file."""

    line: int
    column: str
    message: str
    advice: str = ""
    kind: str = "invalid"
    existing_id: int | None = None
    same_as_line: int | None = None

    def as_dict(self) -> dict:
        return {
            "line": self.line,
            "column": self.column,
            "message": self.message,
            "advice": self.advice,
            "kind": self.kind,
            "existing_id": self.existing_id,
        }


@dataclass
class ImportPlan:
    """A readable file of one type with its columns mapped; see :meth:`ImportService.open`."""

    tracker_type: TrackerType
    table: Table
    columns: list[Column]
    #: the lists numbered columns fill, arranged once from the header (see :func:`arrange`)
    lists: list[NumberedList] = field(default_factory=list)

    @property
    def total(self) -> int:
        return len(self.table.rows)

    def column_for(self, path: str) -> str:
        """The header of the column a problem's path (a JSON pointer into the data, or
        ``subject``, ``assignee``...) concerns; the field's name when no column fills it."""
        if not path:
            return ""
        if not path.startswith("/"):
            named = [c for c in self.columns if c.kind == path]
            return named[0].header if named else path
        if self.lists:
            numbered = self._numbered_column(path)
            if numbered:
                return numbered
        dotted = ".".join(p for p in path.strip("/").split("/") if not p.isdigit())
        best = ""
        best_header = ""
        for c in self.columns:
            covers = c.kind == "field" and (dotted == c.target or dotted.startswith(c.target + "."))
            if covers and len(c.target) > len(best):
                best, best_header = c.target, c.header
        return best_header or dotted

    def _numbered_column(self, path: str) -> str:
        """For a path into a list filled by numbered columns: the column at that place (an
        index in the path is the entry number less one), the column holding it as JSON, the
        first column of the entry or list it names, or the name of the column to add."""
        numbered = ".".join(str(int(p) + 1) if p.isdigit() else p for p in path.strip("/").split("/"))
        if not any(numbered == t or numbered.startswith(t + ".") for t in (lst.target for lst in self.lists)):
            return ""
        best = None
        for c in self.columns:
            if c.kind not in ("entry", "field"):
                continue
            if c.target == numbered:
                return c.header
            if numbered.startswith(c.target + ".") and (best is None or len(c.target) > len(best.target)):
                best = c
        if best is not None:
            return best.header
        inside = next((c for c in self.columns if c.kind == "entry" and c.target.startswith(numbered + ".")), None)
        return inside.header if inside else numbered


@dataclass
class CheckReport:
    """What a dry run found: every bad row's problems, and how many rows would be created."""

    total: int = 0
    valid: int = 0
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def invalid_lines(self) -> int:
        return len({p.line for p in self.problems if p.kind == "invalid"})

    @property
    def duplicate_lines(self) -> int:
        return len({p.line for p in self.problems if p.kind == "duplicate"})


@dataclass
class ImportSummary:
    """What an import did: items created, rows refused as duplicates, rows that failed."""

    total: int = 0
    created: int = 0
    created_ids: list[int] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)
    #: outbox rows written by batches (sent on by the caller, see :meth:`ImportService.run`)
    outbox_ids: list[int] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return len({p.line for p in self.problems if p.kind == "duplicate"})

    @property
    def failed(self) -> int:
        return len({p.line for p in self.problems if p.kind == "invalid"})


@dataclass
class _Row:
    """One row on its way through a chunk."""

    line: int
    cells: list[Any]
    data: dict
    subject_id: int | None = None
    assignee: str | None = None
    description: str = ""
    problems: list[RowProblem] = field(default_factory=list)
    #: paths whose validation problems a problem of the row's lists already explains
    explained: frozenset[str] = frozenset()
    #: the validated item's columns (see :func:`engine.services.import_bulk.item_values`)
    values: dict | None = None
    #: its save needs more than a plain create: an assignee to tell, a title that needs the new id
    one_by_one: bool = False
    identity_key: str | None = None

    @property
    def ok(self) -> bool:
        return not self.problems


class ImportService:
    """Imports for one actor, through ``items`` (an :class:`ItemService` on the same session).

    Args:
        items: the item service; its actor's permissions apply and its session is used
            (each batch commits or rolls back).
        chunk_size: rows validated and written together.
        max_rows: the most rows one file may hold.
        formats: file formats plugins add (``PluginHost.import_formats()``), besides CSV and XLSX.
        workers: processes that validate chunks side by side (see :mod:`engine.services.import_workers`);
            more than 1 only where this process may fork: not on a thread of a web server.
    """

    def __init__(
        self,
        items: ItemService,
        *,
        chunk_size: int = CHUNK_SIZE,
        max_rows: int = 200_000,
        formats: dict | None = None,
        workers: int = 1,
    ) -> None:
        self.items = items
        self.formats = formats
        self.workers = workers
        self.session = items.session
        self.actor = items.actor
        self.registry = items.registry
        self.chunk_size = chunk_size
        self.max_rows = max_rows

    # -- step 1: the file ------------------------------------------------------------------------------

    def require_import(self, type_key: str) -> TrackerType:
        """The type, if the actor may import it: ``items.import`` and the right to create it.
        Raises NotFound or PermissionDenied."""
        tracker_type = self.registry.type(type_key)
        permissions.require(self.actor, "items.import", tracker_type)
        self.items.require_create(tracker_type)
        return tracker_type

    def importable_types(self) -> list[TrackerType]:
        """The types the actor may import, by name."""
        return [t for t in self.items.creatable_types() if permissions.allows(self.actor, "items.import", t)]

    def open(self, type_key: str, filename: str, content: bytes, *, encoding: str = "utf-8") -> ImportPlan:
        """Check permissions, read the file and map its columns. Raises PermissionDenied,
        NotFound, or FileRefused saying what is wrong with the file."""
        tracker_type = self.require_import(type_key)
        table = read_table(filename, content, encoding=encoding, max_rows=self.max_rows, formats=self.formats)
        columns = self.map_columns(tracker_type, table.headers)
        lists, _problems = arrange(columns, tracker_type.schema)
        return ImportPlan(tracker_type, table, columns, lists)

    def map_columns(self, tracker_type: TrackerType, headers: list[str]) -> list[Column]:
        """Each named header as a :class:`Column`. Raises FileRefused for columns that are
        not fields, for a missing or doubled learner column and for a missing required
        field, and for numbered columns that cannot be used (a number left out, a list
        given twice, a name no entry has); PermissionDenied for a field the actor may not see."""
        schema = tracker_type.schema
        titles = {
            (prop.get("title") or "").casefold(): name
            for name, prop in (schema.get("properties") or {}).items()
            if isinstance(prop, dict) and prop.get("title")
        }
        subject_columns = self._subject_columns(tracker_type)
        columns: list[Column] = []
        unknown: list[str] = []
        problems: list[Problem] = []
        for index, header in enumerate(headers):
            if not header:
                continue
            name = header.strip()
            target = name if _field_schema(schema, name) is not None else titles.get(name.casefold())
            place = read_header(schema, name, tracker_type.name) if target is None and "." in name else None
            if target is not None:
                columns.append(Column(index, header, "field", target, _field_schema(schema, target) or {}))
            elif isinstance(place, Place):
                kind = "entry" if place.numbered else "field"
                columns.append(Column(index, header, kind, place.target, place.schema, place.parts))
            elif isinstance(place, Problem):
                problems.append(place)
            elif name.casefold() in ATTRIBUTE_COLUMNS:
                columns.append(Column(index, header, name.casefold()))
            elif name.casefold() in subject_columns:
                target, sub = subject_columns[name.casefold()]
                columns.append(Column(index, header, "subject", target, sub))
            else:
                unknown.append(header)
        problems += [
            Problem(
                header, f"'{header}' is not a field of {tracker_type.name}", "Rename it to a field name, or delete it."
            )
            for header in unknown
        ]
        problems += arrange(columns, schema)[1]
        problems += self._missing_columns(tracker_type, columns)
        if problems:
            raise FileRefused(problems, self._fields_message(tracker_type, subject_columns) if unknown else "")
        hidden = self.items.hidden_fields(tracker_type)
        refused = [c.header for c in columns if c.kind in ("field", "entry") and _under(c.field_name, hidden)]
        if refused:
            raise PermissionDenied(
                f"{self.actor.username} may not import {', '.join(refused)}: finance fields need 'finance.view'.",
                "Remove those columns, or ask someone with finance access to import the file.",
            )
        return columns

    def _subject_columns(self, tracker_type: TrackerType) -> dict[str, tuple[str, dict]]:
        """Header (lower case) -> (``id`` or identity field, its schema) for the subject."""
        kind = tracker_type.subject
        if kind == "none":
            return {}
        subject_type = self.registry.types.get(kind)
        out: dict[str, tuple[str, dict]] = {}
        for prefix in ("subject", kind):
            out[f"{prefix}_id"] = ("id", {"type": "integer"})
            out[f"{prefix}_ref"] = ("id", {"type": "integer"})
            for name in subject_type.identity if subject_type else ():
                if name != "subject":
                    sub = _field_schema(subject_type.schema, name) or {}
                    out[f"{prefix}_{name.replace('.', '_')}"] = (name, sub)
        return out

    def _fields_message(self, tracker_type: TrackerType, subject_columns: dict) -> str:
        names = list((tracker_type.schema.get("properties") or {}).keys())
        shown = ", ".join(names[:25]) + (f" and {len(names) - 25} more" if len(names) > 25 else "")
        finding = sorted(h for h in subject_columns if not h.endswith("_ref"))
        subject = f"; the {tracker_type.subject} of each row: {' or '.join(finding)}" if finding else ""
        return (
            f"The file's columns do not match the {tracker_type.name} fields ({shown}{subject}; "
            f"'tracker types show {tracker_type.key}' describes each)."
        )

    def _missing_columns(self, tracker_type: TrackerType, columns: list[Column]) -> list[Problem]:
        problems = []
        kind = tracker_type.subject
        subject = [c for c in columns if c.kind == "subject"]
        if kind != "none":
            subject_type = self.registry.types.get(kind)
            identity = [n for n in (subject_type.identity if subject_type else ()) if n != "subject"]
            by_id = [c for c in subject if c.target == "id"]
            by_identity = {c.target for c in subject if c.target != "id"}
            ways = ", ".join(
                [f"{kind}_id (its number in Tracker)", *(f"{kind}_{n.replace('.', '_')}" for n in identity)]
            )
            if not subject:
                problems.append(
                    Problem(
                        "",
                        f"The file has no column saying which {kind} each row is about",
                        f"Add one of these columns: {ways}.",
                    )
                )
            elif len(by_id) > 1 or (by_id and by_identity):
                problems.append(
                    Problem(
                        ", ".join(c.header for c in subject),
                        f"The file has {len(subject)} columns naming the {kind}; use one way to find them",
                        f"Keep either {kind}_id or the {kind}'s {', '.join(identity) or 'identity'} column(s).",
                    )
                )
            elif by_identity and by_identity != set(identity):
                missing = ", ".join(f"{kind}_{n.replace('.', '_')}" for n in identity if n not in by_identity)
                problems.append(
                    Problem("", f"A {kind} is found by all of its identity fields", f"Add the column(s) {missing}.")
                )
        filled = {c.target.split(".")[0] for c in columns if c.kind in ("field", "entry")}
        for name in tracker_type.schema.get("required") or ():
            if name not in filled:
                label = _title(tracker_type, name)
                listed = is_list(tracker_type.schema, name)
                problems.append(
                    Problem(
                        name,
                        f"The file has no column for {label} ({name}), which every {tracker_type.name} needs",
                        list_advice(tracker_type.schema, name)
                        if listed
                        else f"Add a column named {name} with a value on every row.",
                    )
                )
        return problems

    # -- step 2: the dry run ---------------------------------------------------------------------------

    def check(self, plan: ImportPlan, *, progress: Progress | None = None) -> CheckReport:
        """Validate every row as a save would, write nothing, and report each problem.
        ``progress(rows_done, total)`` is called after each chunk."""
        report = CheckReport(total=plan.total)
        seen: dict[str, int] = {}
        done = 0
        for rows in self._prepared(plan):
            self._find_duplicates(plan, rows, seen)
            report.valid += sum(1 for r in rows if r.ok)
            report.problems += [p for r in rows for p in r.problems]
            self._end_chunk()
            done += len(rows)
            if progress:
                progress(done, plan.total)
        return report

    # -- step 3: the import ----------------------------------------------------------------------------

    def run(
        self,
        plan: ImportPlan,
        *,
        progress: Progress | None = None,
        on_committed: Callable[[list[int]], None] | None = None,
    ) -> ImportSummary:
        """Validate and create every valid row; report the others. ``progress(rows_done,
        total)`` is called after each chunk is committed.

        The outbox rows of items written in batches are committed with them; they are passed
        to ``on_committed`` after each batch (the job queues them with Redis) and are also
        collected in the summary. Without a callback they wait for ``tracker scheduler``,
        like any row that was not sent on at once. Rows saved one by one send theirs on as
        every save does."""
        summary = ImportSummary(total=plan.total)
        seen: dict[str, int] = {}
        created_by_line: dict[int, int] = {}
        done = 0
        for rows in self._prepared(plan):
            self._find_duplicates(plan, rows, seen)
            # validating may have written (a round robin takes turns): only the saves may write
            self._end_chunk()
            self._write(plan, [r for r in rows if r.ok], created_by_line, summary, on_committed)
            for row in rows:
                for problem in row.problems:
                    if problem.same_as_line is not None and problem.existing_id is None:
                        problem = _with_existing(problem, created_by_line.get(problem.same_as_line))
                    summary.problems.append(problem)
            self._end_chunk()
            done += len(rows)
            if progress:
                progress(done, plan.total)
        return summary

    def _write(
        self,
        plan: ImportPlan,
        rows: list[_Row],
        created_by_line: dict[int, int],
        summary: ImportSummary,
        on_committed: Callable[[list[int]], None] | None,
    ) -> None:
        from engine.services.import_bulk import BatchRefused, insert_new_items

        batch = [r for r in rows if r.values is not None and not r.one_by_one]
        one_by_one = [r for r in rows if r.values is None or r.one_by_one]
        if batch:
            try:
                ids, outbox_ids = insert_new_items(self.session, self.actor, [r.values for r in batch])
                self.session.commit()
            except (IntegrityError, DBAPIError, BatchRefused) as exc:
                # someone saved the same identity meanwhile, or the database refused a row:
                # each row again on its own, so the others are kept and the culprit is named
                self.session.rollback()
                log.info("import batch of %d rows failed (%s); saving them one by one", len(batch), exc.orig)
                one_by_one = batch + one_by_one
            else:
                for row, item_id in zip(batch, ids, strict=True):
                    created_by_line[row.line] = item_id
                summary.created_ids += ids
                summary.created += len(ids)
                summary.outbox_ids += outbox_ids
                if on_committed and outbox_ids:
                    on_committed(outbox_ids)
        for row in sorted(one_by_one, key=lambda r: r.line):
            try:
                item = self.items.create(
                    plan.tracker_type.key,
                    row.data,
                    subject_id=row.subject_id,
                    assignee=row.assignee or None,
                    description=row.description,
                )
            except DuplicateItem as exc:
                row.problems += self._problems(plan, row.line, exc.problems, "duplicate", exc.existing_id)
            except ValidationFailed as exc:
                row.problems += self._problems(plan, row.line, exc.problems)
            except TrackerError as exc:
                row.problems.append(RowProblem(row.line, "", exc.message, exc.advice))
            else:
                created_by_line[row.line] = item.id
                summary.created_ids.append(item.id)
                summary.created += 1

    # -- rows ------------------------------------------------------------------------------------------

    def _prepared(self, plan: ImportPlan) -> Iterator[list[_Row]]:
        """The file's chunks, in order, each validated by :meth:`_prepare`: here, or in worker
        processes while this one checks duplicates and writes."""
        starts = list(range(0, plan.total, self.chunk_size))
        if self.workers > 1 and len(starts) > 1:
            from engine.services import import_workers

            if import_workers.may_fork():
                yield from import_workers.prepared_chunks(self, plan, starts, self.workers)
                return
        for start in starts:
            yield self._prepare(plan, plan.table.rows[start : start + self.chunk_size])

    def _prepare(self, plan: ImportPlan, chunk: list[tuple[int, list[Any]]]) -> list[_Row]:
        """Each row of the chunk validated as a new item would be (without the duplicate
        check, which :meth:`_find_duplicates` does for the whole chunk at once)."""
        rows = [self._row(plan, line, cells) for line, cells in chunk]
        before = [len(row.problems) for row in rows]
        self._resolve_subjects(plan, rows)
        tracker_type = plan.tracker_type
        for row, problems_before in zip(rows, before, strict=True):
            subject_refused = len(row.problems) > problems_before
            try:
                item, user = self.items._new_item(
                    tracker_type.key,
                    row.data,
                    subject_id=row.subject_id,
                    assignee=row.assignee or None,
                    description=row.description,
                    check_permission=False,
                    check_identity=False,
                )
            except ValidationFailed as exc:
                found = [
                    p
                    for p in exc.problems
                    if not (subject_refused and p.path == "subject") and p.path not in row.explained
                ]
                row.problems += self._problems(plan, row.line, found)
                continue
            row.values = item_values(item)
            row.one_by_one = user is not None or not item.title
            row.identity_key = item.identity_key
        return rows

    def _row(self, plan: ImportPlan, line: int, cells: list[Any]) -> _Row:
        row = _Row(line, cells, {})
        for column in plan.columns:
            raw = cells[column.index] if column.index < len(cells) else None
            if column.kind == "field":
                value = coerce(raw, column.schema)
                if value is not None:
                    set_path(row.data, column.target, value)
            elif column.kind == "assignee":
                row.assignee = _text(raw)
            elif column.kind == "description":
                row.description = _text(raw) or ""
        if plan.lists:
            self._fill_lists(plan, row)
        return row

    def _fill_lists(self, plan: ImportPlan, row: _Row) -> None:
        found: list[Found] = []
        for numbered in plan.lists:
            value = numbered.build(row.cells, "/" + numbered.name.replace(".", "/"), coerce, found)
            if value is not None:
                set_path(row.data, numbered.name, value)
        if found:
            row.problems += [RowProblem(row.line, f.column, f.message, f.advice) for f in found]
            row.explained = frozenset(f.path for f in found)

    def _resolve_subjects(self, plan: ImportPlan, rows: list[_Row]) -> None:
        """Find each row's learner (or employer) with one query per chunk. A row whose
        learner cannot be found, or may not be seen by the actor, gets a problem."""
        subject_cols = [c for c in plan.columns if c.kind == "subject"]
        if not subject_cols:
            return
        kind = plan.tracker_type.subject
        subject_type = self.registry.types.get(kind)
        header = ", ".join(c.header for c in subject_cols)
        wanted: dict[int, Any] = {}
        for row in rows:
            values = {c.target: coerce(_cell(row.cells, c.index), c.schema) for c in subject_cols}
            if all(v is None for v in values.values()):
                row.problems.append(
                    RowProblem(row.line, header, f"The {kind} is missing", f"Fill in {header} on this line.")
                )
                continue
            if "id" in values:
                number = _number(values["id"])
                if number is None:
                    row.problems.append(
                        RowProblem(
                            row.line,
                            header,
                            f"'{values['id']}' is not a {kind} number",
                            f"Write the {kind}'s number as Tracker shows it, e.g. 12.",
                        )
                    )
                    continue
                wanted[row.line] = ("id", number)
            else:
                key = _identity_key(subject_type, values) if subject_type else None
                if key is None:
                    row.problems.append(
                        RowProblem(row.line, header, f"The {kind} is not fully named", f"Fill in {header}.")
                    )
                    continue
                wanted[row.line] = ("key", key, values)
        ids = {w[1] for w in wanted.values() if w[0] == "id"}
        keys = {w[1] for w in wanted.values() if w[0] == "key"}
        found: list[Item] = []
        if ids:
            found += self.session.scalars(select(Item).where(Item.id.in_(ids)))
        if keys:
            found += self.session.scalars(select(Item).where(Item.type_key == kind, Item.identity_key.in_(keys)))
        by_id = {i.id: i for i in found}
        by_key = {i.identity_key: i for i in found if i.type_key == kind}
        for row in rows:
            want = wanted.get(row.line)
            if want is None:
                continue
            subject = by_id.get(want[1]) if want[0] == "id" else by_key.get(want[1])
            visible = subject is not None and permissions.allows(
                self.actor, "items.view", self.registry.types.get(subject.type_key), subject
            )
            if subject is not None and visible:
                row.subject_id = subject.id
                continue
            if want[0] == "id":
                message = f"There is no {kind} #{want[1]}"
            else:
                described = ", ".join(f"{_title(subject_type, n)} {v}" for n, v in want[2].items())
                message = f"There is no {kind} with {described}"
            row.problems.append(
                RowProblem(
                    row.line,
                    header,
                    message,
                    f"Import or create the {kind} first, or correct {header} on this line.",
                )
            )

    def _find_duplicates(self, plan: ImportPlan, rows: list[_Row], seen: dict[str, int]) -> None:
        """Mark rows whose identity an existing item has (one query for the chunk) or an
        earlier line of the file has (``seen``: identity -> first line)."""
        tracker_type = plan.tracker_type
        keys = {r.identity_key for r in rows if r.ok and r.identity_key}
        existing = {}
        if keys:
            stmt = select(Item).where(Item.type_key == tracker_type.key, Item.identity_key.in_(keys))
            existing = {i.identity_key: i for i in self.session.scalars(stmt)}
        for row in rows:
            if not row.ok or not row.identity_key:
                continue
            key = row.identity_key
            if key in existing:
                exc = self.items._duplicate_error(tracker_type, key, existing[key])
                row.problems += self._problems(plan, row.line, exc.problems, "duplicate", exc.existing_id)
            elif key in seen:
                first = seen[key]
                exc = self.items._duplicate_error(tracker_type, key, None)
                problem = exc.problems[0]
                row.problems.append(
                    RowProblem(
                        row.line,
                        plan.column_for(problem.path),
                        f"{problem.message.split(' already exists')[0]} is already on line {first} of this file",
                        "Keep one of the two lines; the first one is imported.",
                        "duplicate",
                        same_as_line=first,
                    )
                )
            else:
                seen[key] = row.line

    def _problems(
        self,
        plan: ImportPlan,
        line: int,
        problems: list[Problem],
        kind: str = "invalid",
        existing_id: int | None = None,
    ) -> list[RowProblem]:
        return [
            RowProblem(line, plan.column_for(p.path), p.message, p.advice, kind, existing_id)
            for p in problems
            if p.severity != "warning"
        ]

    def _end_chunk(self) -> None:
        """End the chunk's read transaction (no snapshot or SQLite read lock is held between
        chunks). What it loaded leaves the identity map by itself, which holds unchanged
        objects weakly."""
        if self.session.in_transaction():
            self.session.rollback()


def reasons_by_line(problems) -> dict[int, list[str]]:
    """``{line: ["column: message (advice)", ...]}`` of RowProblems (or stored import problems)."""
    reasons: dict[int, list[str]] = {}
    for p in problems:
        where = f"{p.column}: " if p.column else ""
        tail = f" ({p.advice})" if p.advice else ""
        reasons.setdefault(p.line, []).append(f"{where}{p.message}{tail}")
    return reasons


# -- cells to values --------------------------------------------------------------------------------------

_TRUE = {"yes", "y", "true", "t", "1", "on"}
_FALSE = {"no", "n", "false", "f", "0", "off"}
_UK_DATE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")
_INTEGER = re.compile(r"^[+-]?\d+(\.0+)?$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def coerce(value: Any, schema: dict) -> Any:
    """A cell as the value the field's schema wants, where the cell can be read that way:
    choices by value or by label, whole numbers, numbers, yes/no, dates (a workbook's dates,
    and DD/MM/YYYY as UK spreadsheets write them), lists and groups as JSON. A cell that
    cannot be read is passed on as it is, so validation says what is wrong in plain words.
    An empty cell is None (the field is left out)."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.strip()
        if value == "":
            return None
    options = choices(schema)
    if options is not None:
        text = _plain(value)
        for const, label in options:
            if _plain(const) == text or str(label).casefold() == text.casefold():
                return const
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind == "string":
        if isinstance(value, datetime):
            return value.date().isoformat() if schema.get("format") == "date" else value.isoformat()
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        text = str(value)
        if schema.get("format") == "date":
            match = _UK_DATE.match(text)
            if match:
                day, month, year = (int(g) for g in match.groups())
                try:
                    return date(year, month, day).isoformat()
                except ValueError:
                    return text
        return text
    if kind == "integer":
        if isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str) and _INTEGER.match(value):
            return int(float(value))
        return value
    if kind == "number":
        if isinstance(value, str) and _NUMBER.match(value):
            number = float(value)
            return int(number) if number.is_integer() and "." not in value and "e" not in value.lower() else number
        return value
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        text = _plain(value).casefold()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        return value
    if kind in ("array", "object") and isinstance(value, str) and value[:1] in "[{":
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _plain(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = _plain(value)
    return text or None


def _number(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value).strip().lstrip("#")
    return int(text) if text.isdigit() else None


def _cell(cells: list[Any], index: int) -> Any:
    return cells[index] if index < len(cells) else None


def _under(name: str, fields: tuple[str, ...]) -> bool:
    return any(name == f or name.startswith(f + ".") for f in fields)


def _field_schema(schema: dict, dotted: str) -> dict | None:
    """The sub-schema of a field a column may fill: a property, or a property of nested
    groups (``employer.name``), never a field inside a list."""
    parts = dotted.split(".")
    for depth in range(1, len(parts)):
        parent = schema_at(schema, ".".join(parts[:depth]))
        if parent is None or parent.get("type") != "object":
            return None
    if any(not p or p.isdigit() for p in parts):
        return None
    return schema_at(schema, dotted)


def _title(tracker_type: TrackerType | None, name: str) -> str:
    sub = (schema_at(tracker_type.schema, name) if tracker_type else None) or {}
    return sub.get("title") or humanize_label(name.split(".")[-1])


def _with_existing(problem: RowProblem, existing_id: int | None) -> RowProblem:
    if existing_id is None:
        return problem
    return RowProblem(
        problem.line,
        problem.column,
        problem.message,
        f"Line {problem.same_as_line} was imported as item #{existing_id}; this line was not.",
        problem.kind,
        existing_id,
        problem.same_as_line,
    )
