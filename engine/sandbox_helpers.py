"""Tests and filters that rules may use in the sandbox, beyond Jinja's own.

Each takes plain values (text, numbers, lists, dicts) and returns plain values, so it
gives a rule nothing it could misuse. A missing or malformed value never raises: a test
says False and a filter returns None (or an empty list), so a rule about a field that is
not filled in simply does not fire. docs/definitions.md lists them with examples.

Tests (``value is valid_uln``):
    valid_uln     a 10-digit ULN whose check digit is right (ESFA DD01; 9999999999 passes)
    ni_number     a National Insurance number in the format ESFA accepts (NINumber_01)
    postcode      a postcode in the format ESFA accepts (Postcode_15), ZZ99 9ZZ included
    iso_date      a date written YYYY-MM-DD

Filters (``value|age_on(other)``):
    age_on(on)               whole years from a date of birth to the date ``on``
    add_days(n), add_years(n)     a date moved by ``n`` days or years (29 February -> 28 February)
    teaching_year_start, teaching_year_end    1 August and 31 July of the teaching year holding a date
    duplicates(*attributes)  the values (or tuples of the rows' attributes) found more than once
    flatten                  a list of lists as one list (rows of rows, e.g. every delivery's records)
"""

from __future__ import annotations

import re
from collections import Counter
from datetime import date, timedelta
from typing import Any

from jinja2 import Environment, Undefined

#: ESFA's postcode format (Postcode_15, PostcodePrior_02, DelLocPostCode_11); ZZ99 9ZZ matches it too
POSTCODE = re.compile(r"^[A-Z]{1,2}[0-9][0-9A-Z]? [0-9][ABD-HJLNP-UWXYZ]{2}$")
#: ESFA's National Insurance number format (NINumber_01): no D F I Q U V first, no D F I O Q U V second
NI_NUMBER = re.compile(r"^[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z][0-9]{6}[A-D ]?$")
TEMPORARY_ULN = "9999999999"


def valid_uln(value: Any) -> bool:
    """True for a ULN passing the ESFA check-digit test (DD01, rule ULN_04).

    With weights 10 down to 2 over the first nine digits, ``r`` is the sum modulo 11; ``r`` of 0
    makes every ULN with those digits invalid, otherwise the tenth digit must be ``10 - r``.
    The temporary ULN 9999999999 passes (other rules limit where it may be used).
    """
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    if len(text) != 10 or not text.isdigit():
        return False
    if text == TEMPORARY_ULN:
        return True
    remainder = sum(weight * int(digit) for weight, digit in zip(range(10, 1, -1), text[:9], strict=True)) % 11
    return remainder != 0 and int(text[9]) == 10 - remainder


def ni_number(value: Any) -> bool:
    """True for a National Insurance number in ESFA's format (NINumber_01), e.g. AB123456C."""
    return isinstance(value, str) and bool(NI_NUMBER.match(value.strip()))


def postcode(value: Any) -> bool:
    """True for a postcode in ESFA's format: capitals, one space, inward letters without C I K M O V."""
    return isinstance(value, str) and bool(POSTCODE.match(value))


def _date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    if not isinstance(value, str) or len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


def iso_date(value: Any) -> bool:
    return _date(value) is not None


def _number(value: Any) -> int | None:
    if isinstance(value, bool | Undefined):
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def age_on(date_of_birth: Any, on: Any) -> int | None:
    """Whole years between ``date_of_birth`` and ``on`` (both ISO dates), or None."""
    born, then = _date(date_of_birth), _date(on)
    if born is None or then is None:
        return None
    years = then.year - born.year
    return years - 1 if (then.month, then.day) < (born.month, born.day) else years


def add_years(value: Any, years: Any) -> str | None:
    """The ISO date ``years`` after (before, when negative) ``value``; 29 February becomes 28 February."""
    start, count = _date(value), _number(years)
    if start is None or count is None:
        return None
    try:
        return start.replace(year=start.year + count).isoformat()
    except ValueError:
        return start.replace(year=start.year + count, day=28).isoformat()


def add_days(value: Any, days: Any) -> str | None:
    """The ISO date ``days`` after (before, when negative) ``value``."""
    start, count = _date(value), _number(days)
    if start is None or count is None:
        return None
    return (start + timedelta(days=count)).isoformat()


def teaching_year_start(value: Any) -> str | None:
    """1 August that starts the teaching year holding ``value`` (2025-09-01 -> 2025-08-01)."""
    day = _date(value)
    if day is None:
        return None
    return date(day.year if day.month >= 8 else day.year - 1, 8, 1).isoformat()


def teaching_year_end(value: Any) -> str | None:
    """31 July that ends the teaching year holding ``value`` (2025-09-01 -> 2026-07-31)."""
    start = teaching_year_start(value)
    return None if start is None else date(int(start[:4]) + 1, 7, 31).isoformat()


def duplicates(rows: Any, *attributes: str) -> list:
    """What occurs more than once in ``rows``: the values themselves, or with ``attributes``
    the tuple of those attributes of each row (``data.learner_fams|duplicates('type', 'code')``).
    Rows whose values are all missing are not counted."""
    rows = _rows(rows)

    def key(row: Any) -> Any:
        if not attributes:
            return None if isinstance(row, Undefined | dict | list) else row
        values = tuple(row.get(a) if isinstance(row, dict) else None for a in attributes)
        return None if all(v is None for v in values) else values if len(values) > 1 else values[0]

    counts = Counter(k for k in map(key, rows) if k is not None)
    return [k for k, n in counts.items() if n > 1]


def flatten(rows: Any) -> list:
    """``[[a, b], [c]]`` as ``[a, b, c]``; what is not a list is left out."""
    return [x for row in _rows(rows) if isinstance(row, list | tuple) for x in row]


def _rows(value: Any) -> list:
    """A list, tuple or generator (what ``map`` and ``select`` give) as a list; anything else as []."""
    if isinstance(value, str | bytes | dict | Undefined) or not hasattr(value, "__iter__"):
        return []
    return list(value)


TESTS = {"valid_uln": valid_uln, "ni_number": ni_number, "postcode": postcode, "iso_date": iso_date}
FILTERS = {
    "age_on": age_on,
    "add_days": add_days,
    "add_years": add_years,
    "teaching_year_start": teaching_year_start,
    "teaching_year_end": teaching_year_end,
    "duplicates": duplicates,
    "flatten": flatten,
}


def register_helpers(env: Environment) -> None:
    env.tests.update(TESTS)
    env.filters.update(FILTERS)
