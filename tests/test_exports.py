"""The engine's CSV export, called directly: columns, every page, formula escaping, permissions, the log."""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
from datetime import date
from pathlib import Path

import pytest

from engine.definitions import Registry, load_registry
from engine.errors import NotFound, PermissionDenied, ValidationFailed
from engine.permissions import Actor
from engine.services import ItemService, UserService
from engine.services.exports import export_filename, export_items, safe_cell
from tests.conftest import LEARNER, TEST_DEFINITIONS

EXPORT_DEFINITIONS = Path(__file__).resolve().parent / "definitions_exports"
TODAY = date(2026, 11, 26)


@pytest.fixture(scope="module")
def export_registry() -> Registry:
    registry = load_registry([TEST_DEFINITIONS, EXPORT_DEFINITIONS])
    assert registry.problems == []
    return registry


@pytest.fixture
def people(session, export_registry):
    users = UserService(session, export_registry)
    actors = {}
    for name, roles in {"fin": ["finance"], "exp": ["exporter"], "clara": ["tracker_creator"]}.items():
        user, _password = users.create(name, roles)
        actors[name] = Actor.for_user(user, export_registry)
    return actors


def service(session, registry, actor) -> ItemService:
    return ItemService(session, actor, registry, today=lambda: TODAY)


@pytest.fixture
def bursaries(session, export_registry, people):
    system = service(session, export_registry, Actor.system())
    notes = ['=HYPERLINK("x")', "+1", "-1", "@A1", "\tx", "\rx", "plain", "a=b"]
    ids = []
    for i, note in enumerate(notes):
        item = system.create(
            "bursary",
            {"purpose": "kit" if i % 2 else "travel", "amount": i * 10, "note": note, "paid_on": f"2025-10-0{i + 1}"},
            assignee="fin" if i < 3 else None,
        )
        ids.append(item.id)
    return ids


def read(export) -> tuple[list[str], list[dict[str, str]]]:
    text = "".join(export.lines())
    assert text.startswith("\ufeff")
    header = next(csv.reader(io.StringIO(text[1:])))
    return header, list(csv.DictReader(io.StringIO(text[1:])))


def test_safe_cell_escapes_formula_starts():
    for text in ["=1+1", "+1", "-1", "@SUM(A1)", "\tx", "\rx"]:
        assert safe_cell(text) == "'" + text
    for text in ["plain", "a=b", "", "1-2", "'quoted"]:
        assert safe_cell(text) == text


def test_filename():
    assert export_filename("apprenticeship", TODAY) == "apprenticeship-2026-11-26.csv"
    assert export_filename("self_employment", TODAY) == "self-employment-2026-11-26.csv"
    assert export_filename(None, TODAY) == "my-items-2026-11-26.csv"


def test_export_every_page_in_order_with_escaping(session, export_registry, people, bursaries, caplog):
    caplog.set_level(logging.INFO, logger="engine.services.exports")
    export = export_items(service(session, export_registry, people["fin"]), "bursary", sort="-paid_on", batch_size=3)
    assert export.filename == "bursary-2026-11-26.csv"
    assert export.total == 8
    header, rows = read(export)
    assert header == [
        "ID",
        "Title",
        "Status",
        "Assignee",
        "Due date",
        "Purpose",
        "Amount paid",
        "Paid on",
        "Note",
        "Approved",
    ]
    assert [int(r["ID"]) for r in rows] == list(reversed(bursaries))  # three batches, one order
    by_id = {int(r["ID"]): r for r in rows}
    first = by_id[bursaries[0]]
    assert first["Note"] == '\'=HYPERLINK("x")'
    assert first["Title"] == 'Travel bursary =HYPERLINK("x")'
    assert first["Status"] == "Active" and first["Assignee"] == "fin" and first["Due date"] == "2025-10-01"
    assert first["Purpose"] == "Travel costs" and first["Amount paid"] == "0" and first["Approved"] == ""
    assert [by_id[i]["Note"] for i in bursaries[1:]] == ["'+1", "'-1", "'@A1", "'\tx", "'\rx", "plain", "a=b"]
    assert by_id[bursaries[7]]["Amount paid"] == "70"
    assert "export: fin exported 8 bursary item(s)" in caplog.text
    assert "sort=-paid_on" in caplog.text


def test_export_with_filters_and_numeric_sort(session, export_registry, people, bursaries):
    fin = service(session, export_registry, people["fin"])
    _header, rows = read(export_items(fin, "bursary", assignee="fin", sort="-amount"))
    assert [int(r["ID"]) for r in rows] == [bursaries[2], bursaries[1], bursaries[0]]
    _header, rows = read(export_items(fin, "bursary", q="kit", status=["active"], sort="amount"))
    assert [r["Amount paid"] for r in rows] == ["10", "30", "50", "70"]  # numbers, not text order
    _header, rows = read(export_items(fin, "bursary", status=["archived"]))
    assert rows == []


def test_finance_fields_left_out_without_finance_view(session, export_registry, people, bursaries):
    header, rows = read(export_items(service(session, export_registry, people["exp"]), "bursary"))
    assert "Amount paid" not in header and "Note" in header
    assert len(rows) == 8
    with pytest.raises(ValidationFailed, match="cannot be sorted by 'amount'"):
        export_items(service(session, export_registry, people["exp"]), "bursary", sort="amount")


def test_export_refused_without_exports_bulk(session, export_registry, people, bursaries, caplog):
    caplog.set_level(logging.INFO, logger="engine.services.exports")
    clara = service(session, export_registry, people["clara"])
    with pytest.raises(PermissionDenied, match="exports.bulk"):
        export_items(clara, "bursary")
    with pytest.raises(PermissionDenied, match="exports.bulk"):
        export_items(clara, None, assignee="me")
    assert "export:" not in caplog.text


def test_bad_sort_unknown_type_and_assignee_refused_before_writing(session, export_registry, people, bursaries):
    fin = service(session, export_registry, people["fin"])
    with pytest.raises(ValidationFailed, match="cannot be sorted by 'colour'"):
        export_items(fin, "bursary", sort="colour")
    with pytest.raises(NotFound):
        export_items(fin, "nope")
    with pytest.raises(ValidationFailed):
        export_items(fin, "bursary", assignee="ghost")


def test_export_across_types(session, export_registry, people, bursaries):
    system = service(session, export_registry, Actor.system())
    learner = system.create("learner", dict(LEARNER))
    concern = system.create(
        "concern", {"category": "online", "reported_on": "2025-09-01", "cost": 9}, subject_id=learner.id, assignee="fin"
    )
    fin = service(session, export_registry, people["fin"])
    export = export_items(fin, None, assignee="me", sort="id")
    assert export.filename == "my-items-2026-11-26.csv"
    header, rows = read(export)
    assert header[:6] == ["ID", "Type", "Title", "Status", "Assignee", "Due date"]
    # the list columns of both types; the concern's other fields only in its own export
    assert {"Purpose", "Amount paid", "Paid on", "Category", "Severity", "Reported on"} <= set(header)
    assert "Cost to the provider" not in header and "Note" not in header
    assert [int(r["ID"]) for r in rows] == [*bursaries[:3], concern.id]
    assert rows[-1]["Type"] == "Safeguarding concern" and rows[-1]["Category"] == "online"
    assert rows[-1]["Purpose"] == "" and rows[0]["Category"] == ""
    with pytest.raises(ValidationFailed):
        export_items(fin, None, sort="amount")  # list columns need one type


def test_across_types_refused_when_one_type_forbids_export(session, export_registry, people, bursaries):
    """A type may take exports.bulk away from a role; exporting a mix that includes it is refused."""
    bursary = export_registry.types["bursary"]
    narrowed = dataclasses.replace(bursary, permissions={"finance": ("items.view", "finance.view")})
    registry = dataclasses.replace(export_registry, types={**export_registry.types, "bursary": narrowed})
    fin = service(session, registry, people["fin"])
    with pytest.raises(PermissionDenied, match="exports.bulk"):
        export_items(fin, None, assignee="me")
    with pytest.raises(PermissionDenied, match="exports.bulk"):
        export_items(fin, "bursary")
    # with no bursary in the selection, the rest may be exported
    _header, rows = read(export_items(fin, None, assignee="me", status=["archived"]))
    assert rows == []
