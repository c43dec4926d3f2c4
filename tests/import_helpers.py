"""Files for the import tests: CSV text and XLSX workbooks built in memory."""

from __future__ import annotations

import io
from datetime import date, datetime
from typing import Any

from openpyxl import Workbook

#: valid ULNs (ESFA check digit), one per learner a test needs
ULNS = ["1000000043", "2442725095", "1000000051", "1000000078", "1000000086", "1000000094", "1000000108"]


def csv_bytes(*lines: str, encoding: str = "utf-8") -> bytes:
    return ("\n".join(lines) + "\n").encode(encoding)


def xlsx_bytes(rows: list[list[Any]]) -> bytes:
    book = Workbook()
    sheet = book.active
    for row in rows:
        sheet.append(row)
    buffer = io.BytesIO()
    book.save(buffer)
    return buffer.getvalue()


def learners_xlsx() -> bytes:
    """Two learners the way a spreadsheet holds them: a date cell, a ULN typed as a number."""
    return xlsx_bytes(
        [
            ["given_name", "family_name", "date_of_birth", "uln", "preferred_contact"],
            ["Ann", "Lee", datetime(2001, 2, 3), int(ULNS[0]), "Email"],
            ["Bob", "Ray", date(1999, 12, 31), float(ULNS[1]), "sms"],
        ]
    )
