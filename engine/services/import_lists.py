"""Numbered columns: the entries of a list field, one column per field of each entry.

A spreadsheet cannot hold a list in a cell in any way a person would type, so an import may
spread a list over numbered columns, counted from 1 as spreadsheet users count::

    learning_deliveries.1.learn_aim_ref, learning_deliveries.1.aim_type, learning_deliveries.2.learn_aim_ref ...
    learning_deliveries.1.delivery_fams.2.type      (a list inside an entry)
    tags.1, tags.2                                  (a list of plain values)

Each segment may be the field's name or its title (``Learning deliveries.1.Aim type``).
:func:`read_header` reads one header; :func:`arrange` turns a file's numbered columns into
:class:`NumberedList` trees once per file, so a row is built by walking prepared cell
indexes (:meth:`NumberedList.build`) and files without numbered columns pay nothing.

In a row, an entry whose cells are all blank is left out when no later entry is filled in
(a learner with one delivery in a file with columns for two); a blank entry before a filled
one is a gap, reported rather than closed up, because every later entry would otherwise be
reported under the wrong number.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from engine.errors import Problem
from engine.validation import humanize_label, schema_at, set_path

if TYPE_CHECKING:
    from engine.services.imports import Column

Coerce = Callable[[Any, dict], Any]


@dataclass(frozen=True)
class Place:
    """Where a header points: ``parts`` are field names and 1-based entry numbers
    (``("learning_deliveries", 2, "aim_type")``); ``schema`` is the sub-schema of the cell."""

    parts: tuple
    schema: dict

    @property
    def numbered(self) -> bool:
        return any(isinstance(p, int) for p in self.parts)

    @property
    def target(self) -> str:
        return ".".join(str(p) for p in self.parts)


@dataclass(frozen=True)
class Found:
    """A problem found while building a row's lists: the column to name, and the JSON
    pointer whose validation problems it already explains (they are not reported twice)."""

    column: str
    message: str
    advice: str
    path: str


@dataclass
class Entry:
    """One numbered entry of a list and the cells that fill it."""

    number: int
    target: str
    #: (cell index, dotted name inside the entry, schema); the name is "" for a plain value
    cells: list[tuple[int, str, dict]] = field(default_factory=list)
    lists: list[NumberedList] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def first_header(self) -> str:
        if self.headers:
            return next(iter(self.headers.values()))
        return self.lists[0].entries[0].first_header


@dataclass
class NumberedList:
    """A list field filled from numbered columns; ``name`` is dotted from the object that
    holds it (the item's data, or the entry of an outer list)."""

    name: str
    target: str
    label: str
    required: tuple[str, ...]
    titles: dict[str, str]
    #: entries are objects (one column per field) rather than plain values (one column each)
    objects: bool
    entries: list[Entry] = field(default_factory=list)

    def build(self, cells: list[Any], pointer: str, coerce: Coerce, found: list[Found]) -> list | None:
        """The list the row's cells hold, or None when they are all blank. A gap or an entry
        missing a required field is added to ``found``."""
        values: list = []
        blank: Entry | None = None
        for entry in self.entries:
            value = self._value(entry, cells, f"{pointer}/{entry.number - 1}", coerce, found)
            if value is None:
                blank = blank or entry
                continue
            if blank is not None:
                label = _lower_first(self.label)
                found.append(
                    Found(
                        blank.first_header,
                        f"{self.label} {blank.number} is empty but {label} {entry.number} is filled in",
                        f"Fill in {label} {blank.number}, or move {label} {entry.number} into the "
                        f"{blank.target}.… columns; entries are numbered without gaps.",
                        pointer,
                    )
                )
                break
            values.append(value)
        return values or None

    def _value(self, entry: Entry, cells: list[Any], pointer: str, coerce: Coerce, found: list[Found]) -> Any:
        if not self.objects:
            index, _name, schema = entry.cells[0]
            return coerce(cells[index] if index < len(cells) else None, schema)
        data: dict = {}
        for index, name, schema in entry.cells:
            value = coerce(cells[index] if index < len(cells) else None, schema)
            if value is not None:
                set_path(data, name, value)
        for inner in entry.lists:
            value = inner.build(cells, f"{pointer}/{inner.name.replace('.', '/')}", coerce, found)
            if value is not None:
                set_path(data, inner.name, value)
        if not data:
            return None
        for name in self.required:
            if name not in data:
                column = entry.headers.get(name) or f"{entry.target}.{name}"
                title = self.titles.get(name) or humanize_label(name)
                label = _lower_first(self.label)
                found.append(
                    Found(
                        column,
                        f"{self.label} {entry.number} has no {_lower_first(title)}, which every {label} needs",
                        f"Fill in {column} on this line, or clear the other {label} {entry.number} cells "
                        f"if there is no {label} {entry.number}.",
                        f"{pointer}/{name}",
                    )
                )
        return data


# -- reading a header ------------------------------------------------------------------------------------


def read_header(root: dict, header: str, type_name: str) -> Place | Problem | None:
    """The place a dotted header names, a Problem saying what is wrong with it, or None when
    its first segment is no field at all (the caller refuses it like any unknown column)."""
    segments = [s.strip() for s in header.split(".")]
    node = root
    parts: list[str | int] = []
    where = f"the {type_name}"
    i = 0
    while True:
        name = _property_name(node, segments[i], root)
        if name is None:
            if not parts:
                return None
            return _not_a_field(header, node, root, segments[i], where, type_name)
        prop = schema_at(node, name, root) or {}
        parts.append(name)
        i += 1
        if _is_list(prop):
            items = _resolved(prop["items"], root)
            label = _entry_label(prop, items, name)
            if i == len(segments):
                return Place(tuple(parts), prop)
            number = _entry_number(header, segments, i, prop, label)
            if isinstance(number, Problem):
                return number
            parts.append(number)
            i += 1
            if i < len(segments) and items.get("type") != "object":
                so_far = ".".join(str(p) for p in parts)
                return Problem(
                    header,
                    f"'{header}' is not a field: each {_lower_first(label)} is a single value",
                    f"Name the column {so_far}, one column for each {_lower_first(label)}.",
                )
            if i == len(segments):
                if items.get("type") == "object":
                    names = _names(items, root)
                    return Problem(
                        header,
                        f"'{header}' needs a field of the {_lower_first(label)} after the number",
                        f"Name the field, e.g. {header}.{names[0]}; a {_lower_first(label)} has: {_shown(names)}.",
                    )
                return Place(tuple(parts), items)
            node, where = items, f"a {_lower_first(label)}"
            continue
        if i == len(segments):
            return Place(tuple(parts), prop)
        if prop.get("type") == "object":
            group = _lower_first(prop.get("title") or humanize_label(name))
            node, where = prop, f"the {group} ({'.'.join(map(str, parts))})"
            continue
        so_far = ".".join(str(p) for p in parts)
        return Problem(
            header,
            f"'{header}' is not a field of {type_name}: {so_far} is a single value, not a list or a group",
            f"Name the column {so_far}, or check the spelling of the part after it.",
        )


def _entry_number(header: str, segments: list[str], i: int, prop: dict, label: str) -> int | Problem:
    before = ".".join(segments[:i])
    after = ".".join(segments[i:])
    text = segments[i]
    label = _lower_first(label)
    if not text.isdigit():
        return Problem(
            header,
            f"'{header}' needs the number of the {label} after {before}",
            f"Number each {label} from 1: {before}.1.{after} for the first, {before}.2.{after} for the second; "
            f"or put the whole list in one column {before} as JSON.",
        )
    number = int(text)
    rest = f".{'.'.join(segments[i + 1 :])}" if i + 1 < len(segments) else ""
    if number == 0:
        return Problem(
            header,
            f"'{header}': entries are numbered from 1, as a spreadsheet counts rows",
            f"Use {before}.1{rest} for the first {label}, {before}.2{rest} for the second.",
        )
    most = prop.get("maxItems")
    if isinstance(most, int) and number > most:
        return Problem(
            header,
            f"'{header}': {_lower_first(prop.get('title') or humanize_label(before))} may have at most {most} entries",
            f"Remove the columns numbered above {most}.",
        )
    return number


def _not_a_field(header: str, node: dict, root: dict, segment: str, where: str, type_name: str) -> Problem:
    names = _names(node, root)
    close = difflib.get_close_matches(segment, names, n=1, cutoff=0.6)
    hint = f"Did you mean {close[0]}? " if close else ""
    return Problem(
        header,
        f"'{header}' is not a field of {type_name}: {where} has no field '{segment}'",
        f"{hint}The fields of {where} are: {_shown(names)}.",
    )


def _property_name(node: dict, segment: str, root: dict) -> str | None:
    if segment and not segment.isdigit() and schema_at(node, segment, root) is not None:
        return segment
    wanted = segment.casefold()
    for name, prop in (_resolved(node, root).get("properties") or {}).items():
        if isinstance(prop, dict) and (prop.get("title") or "").casefold() == wanted:
            return name
    return None


# -- arranging a file's numbered columns -------------------------------------------------------------------


def arrange(columns: list[Column], root: dict) -> tuple[list[NumberedList], list[Problem]]:
    """The file's numbered columns (``kind == "entry"``) as lists to build rows with, and
    the problems of the header: a number left out, a list given both as one JSON column and
    as numbered columns, two columns for the same place."""
    entries = [c for c in columns if c.kind == "entry"]
    if not entries:
        return [], []
    problems = _clashes(columns, entries)
    lists = _lists([(c, c.place) for c in entries], "", "", root, problems)
    return lists, problems


def _clashes(columns: list[Column], entries: list[Column]) -> list[Problem]:
    by_target = {c.target: c for c in columns if c.kind == "field"}
    problems = []
    # shorter first, so a JSON column inside an entry is met before the numbered columns under it
    for column in sorted(entries, key=lambda c: c.target.count(".")):
        parts = column.target.split(".")
        for depth in range(1, len(parts) + 1):
            other = by_target.get(".".join(parts[:depth]))
            if other is not None and other is not column:
                same = depth == len(parts)
                problems.append(
                    Problem(
                        column.header,
                        f"The columns '{other.header}' and '{column.header}' both fill {other.target}",
                        "Keep one of them and delete the other."
                        if same
                        else f"Give {other.target} either as one column holding JSON or as numbered columns, not both.",
                    )
                )
                break
        else:
            by_target[column.target] = column
    return problems


def _lists(
    placed: list[tuple[Column, tuple]], base_target: str, base_path: str, root: dict, problems: list[Problem]
) -> list[NumberedList]:
    """Lists from columns whose remaining ``parts`` each hold an entry number."""
    grouped: dict[tuple, list[tuple[Column, tuple]]] = {}
    for column, parts in placed:
        first = next(i for i, p in enumerate(parts) if isinstance(p, int))
        grouped.setdefault(tuple(parts[:first]), []).append((column, parts[first:]))
    lists = []
    for names, members in grouped.items():
        name = ".".join(names)
        path = f"{base_path}.{name}" if base_path else name
        target = f"{base_target}.{name}" if base_target else name
        array = schema_at(root, path) or {}
        items = _resolved(array.get("items") or {}, root)
        titles = {
            n: p.get("title") or humanize_label(n)
            for n, p in (items.get("properties") or {}).items()
            if isinstance(p, dict)
        }
        numbered = NumberedList(
            name,
            target,
            _entry_label(array, items, names[-1]),
            tuple(items.get("required") or ()),
            titles,
            items.get("type") == "object",
        )
        by_number: dict[int, list[tuple[Column, tuple]]] = {}
        for column, parts in members:
            by_number.setdefault(parts[0], []).append((column, parts[1:]))
        for number in range(1, max(by_number) + 1):
            entry_target = f"{target}.{number}"
            if number not in by_number:
                later = min(n for n in by_number if n > number)
                problems.append(_numbering_gap(numbered, number, later, by_number[later][0][0].header))
                continue
            entry = Entry(number, entry_target)
            nested = []
            for column, rest in by_number[number]:
                if any(isinstance(p, int) for p in rest):
                    nested.append((column, rest))
                else:
                    inner = ".".join(rest)
                    entry.cells.append((column.index, inner, column.schema))
                    entry.headers[inner] = column.header
            entry.lists = _lists(nested, entry_target, path, root, problems) if nested else []
            numbered.entries.append(entry)
        lists.append(numbered)
    return lists


def _numbering_gap(numbered: NumberedList, missing: int, later: int, header: str) -> Problem:
    label = _lower_first(numbered.label)
    return Problem(
        header,
        f"The file has columns for {label} {later} but none for {label} {missing}",
        f"Number the {label} columns without gaps from 1 ({numbered.target}.1.…, {numbered.target}.2.…): "
        f"add the {numbered.target}.{missing}.… columns or renumber the later ones.",
    )


# -- schemas ---------------------------------------------------------------------------------------------


def list_advice(root: dict, name: str) -> str:
    """How a file gives the required list field ``name``: numbered columns or one JSON column."""
    array = schema_at(root, name) or {}
    items = _resolved(array.get("items") or {}, root)
    json_way = f"or one column named {name} holding the whole list as JSON on every row"
    if items.get("type") == "object":
        fields = list(items.get("required") or ()) or _names(items, root)[:2]
        first = ", ".join(f"{name}.1.{f}" for f in fields[:3]) + (", …" if len(fields) > 3 else "")
        label = _lower_first(_entry_label(array, items, name))
        return f"Add numbered columns for each {label} ({first}; {name}.2.… for a second), {json_way}."
    return f"Add numbered columns {name}.1, {name}.2 …, {json_way}."


def is_list(root: dict, name: str) -> bool:
    return _is_list(schema_at(root, name) or {})


def _is_list(schema: dict) -> bool:
    return schema.get("type") == "array" and isinstance(schema.get("items"), dict)


def _resolved(node: dict, root: dict) -> dict:
    """``node`` with local ``$ref`` followed (the items of a list usually name a ``$defs`` entry)."""
    for _ in range(20):
        ref = node.get("$ref") if isinstance(node, dict) else None
        if not (isinstance(ref, str) and ref.startswith("#/")):
            break
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        node = target
    return node if isinstance(node, dict) else {}


def _names(node: dict, root: dict) -> list[str]:
    return list((_resolved(node, root).get("properties") or {}).keys())


def _entry_label(array: dict, items: dict, name: str) -> str:
    return items.get("title") or array.get("title") or humanize_label(name)


def _shown(names: list[str]) -> str:
    return ", ".join(names[:25]) + (f" and {len(names) - 25} more" if len(names) > 25 else "")


def _lower_first(text: str) -> str:
    """``Learning delivery`` mid-sentence, but ``LLDD and health problems`` as it is."""
    if len(text) > 1 and text[0].isupper() and text[1].islower():
        return text[0].lower() + text[1:]
    return text
