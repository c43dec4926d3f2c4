"""Reading an import file: CSV or XLSX in, a header and numbered rows of cells out.

Every way a file can be unreadable (empty, too large, not UTF-8, not a workbook, a header
missing or given twice) is a :class:`FileRefused` that says what to do; nothing about the
file's rows is decided here (see :mod:`engine.services.imports`).
"""

from __future__ import annotations

import csv
import io
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from engine.errors import Problem, ValidationFailed

#: the encodings an import may be read with: (key, what users know it as)
ENCODINGS = (
    ("utf-8", "UTF-8 (CSV UTF-8, most programs)"),
    ("cp1252", "Windows-1252 (Excel's plain 'CSV (Comma delimited)')"),
    ("latin-1", "ISO-8859-1 (Latin-1)"),
)
#: delimiters a CSV file may use; Excel in many European locales writes ';'
DELIMITERS = ",;\t|"
XLSX_MAGIC = b"PK\x03\x04"


class FileRefused(ValidationFailed):
    """The file cannot be imported at all; ``problems`` say why and what to do."""

    def __init__(self, problems: list[Problem], message: str = "", status: int = 422) -> None:
        super().__init__(problems, message or "The file cannot be imported.")
        self.status = status


def refused(message: str, advice: str, *, where: str = "", status: int = 422) -> FileRefused:
    return FileRefused([Problem(where, message, advice)], "The file cannot be imported.", status)


@dataclass
class Table:
    """A file's header and its non-blank rows, each with the line (CSV) or row (XLSX)
    number a user sees in their editor. Cells are text (CSV) or whatever the workbook
    holds (text, numbers, dates, booleans, None)."""

    filename: str
    headers: list[str]
    rows: list[tuple[int, list[Any]]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows)


def read_table(
    filename: str, content: bytes, *, encoding: str = "utf-8", max_rows: int = 200_000, formats: dict | None = None
) -> Table:
    """Read ``content`` as an XLSX workbook (by its name or its first bytes), as a format a
    plugin adds (``formats``: :class:`engine.plugins.ImportFormat` by key, chosen by the file
    name's extension) or as CSV text in ``encoding``. Blank rows are left out. Raises FileRefused."""
    if not content or not content.strip():
        raise refused(
            f"{filename or 'The file'} is empty.",
            "Choose the file that holds your rows: a header line with the field names, then one line per item.",
        )
    lower = (filename or "").lower()
    if lower.endswith(".xls") or content.startswith(b"\xd0\xcf\x11\xe0"):
        raise refused(
            f"{filename} is an old Excel 97-2003 workbook (.xls), which cannot be read.",
            "Open it in your spreadsheet program and save it as an Excel workbook (.xlsx) or as CSV UTF-8.",
        )
    plugin_format = _plugin_format(lower, formats)
    if lower.endswith(".xlsx") or content.startswith(XLSX_MAGIC):
        headers, rows = _xlsx_rows(filename, content)
    elif plugin_format is not None:
        headers, rows = _plugin_rows(filename, content, plugin_format)
    else:
        headers, rows = _csv_rows(filename, content, encoding)
    headers = [_header_text(h) for h in headers]
    kept: list[tuple[int, list[Any]]] = []
    for line, cells in rows:
        if all(_blank(c) for c in cells):
            continue
        if len(kept) >= max_rows:
            raise refused(
                f"{filename} has more than {max_rows:,} rows.",
                f"Split it into files of at most {max_rows:,} rows and import them one after the other.",
                status=413,
            )
        kept.append((line, cells))
    _check_headers(filename, headers, kept)
    if not kept:
        raise refused(
            f"{filename} has a header line but no rows to import.",
            "Add one line per item under the header, then upload it again.",
        )
    return Table(filename, headers, kept)


def _blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _header_text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _check_headers(filename: str, headers: list[str], rows: list[tuple[int, list[Any]]]) -> None:
    if not any(headers):
        raise refused(
            f"The first line of {filename} is empty, so its columns have no names.",
            "Put the field names (e.g. given_name, family_name) in the first line.",
        )
    problems = []
    seen: dict[str, int] = {}
    for index, name in enumerate(headers):
        if not name:
            if any(index < len(cells) and not _blank(cells[index]) for _line, cells in rows):
                problems.append(
                    Problem(
                        f"column {index + 1}",
                        f"Column {index + 1} has values but no name in the header line",
                        "Write the field name at the top of the column, or delete the column.",
                    )
                )
            continue
        key = name.casefold()
        if key in seen:
            problems.append(
                Problem(
                    name,
                    f"The column '{name}' appears twice (columns {seen[key] + 1} and {index + 1})",
                    "Keep one of them and delete the other.",
                )
            )
        else:
            seen[key] = index
    if problems:
        raise FileRefused(problems, "The file's header line cannot be used.")


# -- CSV ------------------------------------------------------------------------------------------------


def decode(filename: str, content: bytes, encoding: str) -> str:
    """The file's text; a byte the encoding cannot read is refused with where it is."""
    known = {key for key, _label in ENCODINGS}
    if encoding not in known:
        raise refused(
            f"'{encoding}' is not an encoding imports can read.",
            f"Use one of: {', '.join(sorted(known))}.",
        )
    try:
        return content.decode("utf-8-sig" if encoding == "utf-8" else encoding)
    except UnicodeDecodeError as exc:
        line = content[: exc.start].count(b"\n") + 1
        byte = content[exc.start : exc.start + 1].hex().upper()
        advice = (
            "Save the file as 'CSV UTF-8' (in Excel: File › Save As › CSV UTF-8), or import it with the "
            "Windows-1252 encoding if it came from Excel's plain 'CSV (Comma delimited)'."
            if encoding == "utf-8"
            else "Save the file as 'CSV UTF-8' and import it with the UTF-8 encoding."
        )
        raise refused(
            f"{filename} is not {encoding.upper()} text: the byte 0x{byte} on line {line} cannot be read.",
            advice,
        ) from None


def _csv_rows(filename: str, content: bytes, encoding: str) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    text = decode(filename, content, encoding)
    if "\x00" in text:
        raise refused(
            f"{filename} is not a CSV file (it holds binary data).",
            "Upload the rows as CSV (comma-separated text) or as an Excel workbook (.xlsx).",
        )
    first_line = text.split("\n", 1)[0]
    delimiter = max(DELIMITERS, key=first_line.count) if any(d in first_line for d in DELIMITERS) else ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        headers = next(reader, [])
        rows = []
        line = reader.line_num
        for cells in reader:
            rows.append((line + 1, cells))
            line = reader.line_num
    except csv.Error as exc:
        raise refused(
            f"{filename} could not be read as CSV at line {reader.line_num}: {exc}.",
            "Check that quotes in that line are paired (a value with a comma or a line break must be in "
            "double quotes), or save the file again from your spreadsheet program.",
        ) from None
    return headers, rows


# -- formats plugins add ----------------------------------------------------------------------------------


def _plugin_format(lower_name: str, formats: dict | None):
    """The plugin format for this file name's extension; CSV and XLSX are read here."""
    for fmt in (formats or {}).values():
        if fmt.key != "csv" and any(lower_name.endswith(ext) for ext in fmt.extensions):
            return fmt
    return None


def _plugin_rows(filename: str, content: bytes, fmt) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    from engine.plugins import Invalid

    try:
        records = list(fmt.read(content))
    except Invalid as exc:
        raise refused(exc.message, exc.advice or f"Check that {filename} is a {fmt.label} file.") from None
    except Exception as exc:  # noqa: BLE001 - a plugin's reader failing is the file's problem to the user
        raise refused(
            f"{filename} could not be read as {fmt.label}: {exc}",
            "Save it as CSV UTF-8 or as an Excel workbook (.xlsx) instead.",
        ) from None
    headers: list[str] = []
    for _line, record in records:
        headers += [name for name in record if name not in headers]
    return headers, [(line, [record.get(name) for name in headers]) for line, record in records]


# -- XLSX -----------------------------------------------------------------------------------------------


def _xlsx_rows(filename: str, content: bytes) -> tuple[list[str], list[tuple[int, list[Any]]]]:
    from openpyxl import load_workbook

    try:
        workbook = load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as exc:
        raise refused(
            f"{filename} is not a readable Excel workbook ({exc.__class__.__name__}).",
            "Open it in your spreadsheet program and save it again as an Excel workbook (.xlsx), or as CSV UTF-8.",
        ) from None
    try:
        sheet = workbook.worksheets[0] if workbook.worksheets else None
        if sheet is None:
            raise refused(f"{filename} has no worksheet.", "Put the rows on the first worksheet.")
        rows_iter = sheet.iter_rows(values_only=True)
        headers = list(next(rows_iter, ()) or ())
        rows = [(number, list(values)) for number, values in enumerate(rows_iter, start=2)]
    finally:
        workbook.close()
    return headers, rows


# -- rows back out --------------------------------------------------------------------------------------


def problem_rows_csv(table: Table, reasons: dict[int, list[str]]) -> Iterator[str]:
    """A CSV of the rows of ``table`` that have ``reasons`` (line -> what is wrong): their
    line, the reasons, then the row as it was read, so it can be fixed and imported again
    (delete the first two columns first). Text a spreadsheet would run as a formula is
    quoted with an apostrophe."""
    from engine.services.exports import safe_cell

    buffer = io.StringIO()
    writer = csv.writer(buffer)

    def line(values: list[Any]) -> str:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(values)
        return buffer.getvalue()

    cells = {number: row for number, row in table.rows if number in reasons}
    yield "\ufeff" + line(["line", "problems", *table.headers])
    for number in sorted(reasons):
        row = [safe_cell(_cell_text(c)) for c in cells.get(number, [])]
        yield line([number, safe_cell("; ".join(reasons[number])), *row])


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
