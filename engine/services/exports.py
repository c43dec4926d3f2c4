"""CSV export of a list of items: the same filters and sort as the list, every page of it.

The export is prepared in two steps so that every refusal happens before the first byte is
sent: :func:`export_items` checks permissions, validates the filters and the sort, decides
the columns and logs the export; :meth:`CsvExport.lines` then yields the file in batches,
so a large export never sits in memory at once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import date
from typing import Any

from engine import permissions
from engine.definitions.model import TrackerType
from engine.models import Item
from engine.services import bulk
from engine.services.bulk import COMMAND_LINE, Origin
from engine.services.items import ItemService
from engine.validation import choices, get_path, humanize_label, schema_at

log = logging.getLogger(__name__)

#: characters that make a spreadsheet treat a cell as a formula (CSV/formula injection)
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")

#: rows fetched per query while the file is written
BATCH_SIZE = 500


@dataclass(frozen=True)
class Column:
    """One column of the export: ``key`` is ``id``, ``type``, ``title``, ``status``,
    ``assignee``, ``due_date`` or a (dotted) field of the item's data; ``label`` is its header."""

    key: str
    label: str
    is_field: bool = False


BASE_COLUMNS = (
    Column("id", "ID"),
    Column("title", "Title"),
    Column("status", "Status"),
    Column("assignee", "Assignee"),
    Column("due_date", "Due date"),
)


class ExportFormat(ABC):
    """A file format items are exported in. CSV is built in; plugins add others through the
    ``tracker_export_formats`` hook. ``lines`` gets the columns and the rows of cell texts
    (already protected against formula injection) and yields the file, a piece at a time."""

    key: str = ""
    label: str = ""
    extension: str = ""
    media_type: str = "application/octet-stream"

    @abstractmethod
    def lines(self, columns: list[Column], rows: Iterator[list[str]]) -> Iterator[str]:
        """The file's text, a piece at a time."""


class CsvFormat(ExportFormat):
    key, label, extension, media_type = "csv", "CSV", ".csv", "text/csv; charset=utf-8"

    def lines(self, columns: list[Column], rows: Iterator[list[str]]) -> Iterator[str]:
        """A UTF-8 byte-order mark (so spreadsheet programs read accents correctly), the
        header row, then one row per item."""
        buffer = io.StringIO()
        writer = csv.writer(buffer)

        def line(values: list[str]) -> str:
            buffer.seek(0)
            buffer.truncate()
            writer.writerow(values)
            return buffer.getvalue()

        yield "\ufeff" + line([c.label for c in columns])
        for row in rows:
            yield line(row)


CSV = CsvFormat()


def export_formats(plugin_formats: Iterable[ExportFormat] = ()) -> dict[str, ExportFormat]:
    """``{key: format}``: CSV, then the plugins' formats (a key already taken is skipped)."""
    out: dict[str, ExportFormat] = {CSV.key: CSV}
    for fmt in plugin_formats:
        if fmt.key and fmt.key not in out:
            out[fmt.key] = fmt
    return out


@dataclass
class CsvExport:
    """A prepared export. ``total`` is how many items it holds; ``lines()`` writes it in
    ``fmt`` (CSV unless :meth:`in_format` chose another)."""

    filename: str
    columns: list[Column]
    total: int
    rows: Callable[[], Iterator[list[str]]]
    fmt: ExportFormat = field(default=CSV)

    def lines(self) -> Iterator[str]:
        return self.fmt.lines(self.columns, self.rows())

    def in_format(self, fmt: ExportFormat) -> CsvExport:
        """The same export written in ``fmt``, its file name ending in ``fmt.extension``."""
        stem = self.filename.rsplit(".", 1)[0]
        return replace(self, fmt=fmt, filename=stem + fmt.extension)


def safe_cell(text: str) -> str:
    """``text`` with a leading apostrophe when a spreadsheet would read it as a formula
    (it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return)."""
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def field_text(tracker_type: TrackerType, data: dict, name: str) -> str:
    """A data field as a spreadsheet cell: choices by their label, booleans as Yes/No, lists
    and groups as JSON, nothing as an empty cell. Text is protected by :func:`safe_cell`;
    numbers are written as numbers (``-5`` stays a number, not a formula)."""
    value = get_path(data, name)
    if value is None or value == "":
        return ""
    options = choices(schema_at(tracker_type.schema, name) or {})
    if options:
        value = next((label for v, label in options if v == value), value)
    if isinstance(value, bool):
        return "Yes" if value else "No"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, dict | list):
        return safe_cell(json.dumps(value, ensure_ascii=False))
    return safe_cell(str(value))


def field_label(tracker_type: TrackerType, name: str) -> str:
    """The schema's title of a (dotted) field, or a readable form of its name."""
    sub = schema_at(tracker_type.schema, name) or {}
    return sub.get("title") or humanize_label(name.split(".")[-1])


def is_hidden(name: str, hidden: tuple[str, ...]) -> bool:
    """True when ``name`` is one of ``hidden`` or lies inside one (``a.b`` inside ``a``)."""
    return any(name == h or name.startswith(h + ".") for h in hidden)


def export_filename(type_key: str | None, today: date) -> str:
    """``apprenticeship-2026-11-26.csv`` for one type, ``my-items-2026-11-26.csv`` otherwise."""
    stem = type_key.replace("_", "-") if type_key else "my-items"
    return f"{stem}-{today.isoformat()}.csv"


def export_items(
    service: ItemService,
    type_key: str | None = None,
    *,
    status: list[str] | None = None,
    assignee: str | None = None,
    q: str | None = None,
    sort: str | None = None,
    batch_size: int = BATCH_SIZE,
    origin: Origin = COMMAND_LINE,
) -> CsvExport:
    """Prepare a CSV export of the items ``service.list`` finds with these filters and sort,
    all pages of them, as the service's actor sees them.

    Columns: ID, (Type when more than one type is exported,) Title, Status, Assignee, Due
    date, then the list columns; for one type also every other top-level property of its
    schema. Fields the actor may not see (finance fields without ``finance.view``) are left
    out, and blanked on any item where they are hidden.

    ``origin`` says where the export is asked from: bulk downloads are allowed only from the
    addresses of ``TRACKER_BULK_EXPORT_ALLOW``. Each export is recorded (:mod:`engine.services.bulk`).

    Raises:
        PermissionDenied: the actor lacks ``exports.bulk`` on the type, or (across types)
            on any type with an item in the export; or ``origin`` is not an allowed address.
        NotFound: ``type_key`` is not a type.
        ValidationFailed: an unknown sort or assignee, as ``ItemService.list`` says.
    """
    actor, registry = service.actor, service.registry
    filters: dict[str, Any] = {"status": status, "assignee": assignee, "q": q}
    if type_key:
        tracker_type = registry.type(type_key)
        permissions.require(actor, "items.view", tracker_type)
        permissions.require(actor, "exports.bulk", tracker_type)
        types = [tracker_type]
    else:
        permissions.require(actor, "exports.bulk")
        types = [
            t
            for t in registry.types.values()
            if permissions.allows(actor, "items.view", t) and service.list(t.key, limit=0, **filters)[1]
        ]
        for t in types:
            permissions.require(actor, "exports.bulk", t)
    bulk.require_allowed(service.session, actor, origin, "csv", type_key, {**filters, "sort": sort})
    # validates the sort and the assignee before anything is written
    _none, total = service.list(type_key, sort=sort, limit=0, **filters)
    filename = export_filename(type_key, service.today())
    bulk.record(
        service.session,
        actor,
        origin,
        "csv",
        type_key,
        filters={**filters, "sort": sort},
        item_count=total,
        filename=filename,
    )
    service.session.commit()
    columns = _columns(service, types, single=bool(type_key))
    log.info(
        "export: %s exported %d %s item(s) (status=%s, assignee=%s, q=%r, sort=%s)",
        actor.username,
        total,
        type_key or "assigned",
        ",".join(status or ()) or "any",
        assignee or "any",
        q or "",
        sort or "default",
    )

    def rows() -> Iterator[list[str]]:
        offset = 0
        while offset < total:
            found, _count = service.list(type_key, sort=sort, limit=batch_size, offset=offset, **filters)
            if not found:
                return
            for item in found:
                yield _row(service, item, columns)
            offset += len(found)

    return CsvExport(filename, columns, total, rows)


def _columns(service: ItemService, types: list[TrackerType], *, single: bool) -> list[Column]:
    columns = list(BASE_COLUMNS)
    if not single:
        columns.insert(1, Column("type", "Type"))
    seen: set[str] = set()
    for t in types:
        hidden = service.hidden_fields(t)
        names = list(t.list_columns)
        if single:
            names += [n for n in (t.schema.get("properties") or {}) if n not in t.list_columns]
        for name in names:
            if name not in seen and not is_hidden(name, hidden):
                seen.add(name)
                columns.append(Column(name, field_label(t, name), is_field=True))
    return columns


def _row(service: ItemService, item: Item, columns: list[Column]) -> list[str]:
    tracker_type = service.type_of(item)
    state = service.workflow_of(item).state(item.status)
    data = service.visible_data(item)
    base = {
        "id": str(item.id),
        "type": safe_cell(tracker_type.name),
        "title": safe_cell(item.title),
        "status": safe_cell(state.label if state else item.status),
        "assignee": safe_cell(item.assignee.label) if item.assignee else "",
        "due_date": item.due_date.isoformat() if item.due_date else "",
    }
    return [field_text(tracker_type, data, c.key) if c.is_field else base[c.key] for c in columns]
