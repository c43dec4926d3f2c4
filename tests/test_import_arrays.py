"""Lists in imports: ILR records with their learning deliveries, FAMs and financial records
in numbered columns counted from 1 (``learning_deliveries.2.aim_type``), built into lists
once per file; blank trailing entries left out; gaps, half-filled entries and names no
entry has reported by line and exact column; a JSON list in one cell still read."""

from __future__ import annotations

import copy
import csv
import io
import json
from datetime import date
from pathlib import Path

import pytest

from engine.models import Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.import_files import FileRefused
from engine.services.imports import ImportService
from tests.conftest import LEARNER
from tests.ilr_helpers import COMPONENT_AIM, LEARNER_RECORD, PROGRAMME_AIM, TODAY
from tests.import_helpers import ULNS, xlsx_bytes

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "data"


def flattened(data: dict, prefix: str = "") -> dict[str, object]:
    """``data`` as numbered columns: nested groups dotted, list entries numbered from 1."""
    out: dict[str, object] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            out.update(flattened(value, f"{key}."))
        elif isinstance(value, list):
            for number, entry in enumerate(value, start=1):
                if isinstance(entry, dict):
                    out.update(flattened(entry, f"{key}.{number}."))
                else:
                    out[f"{key}.{number}"] = entry
        else:
            out[key] = value
    return out


def ilr(ref: str, uln: str, **changes) -> dict:
    record = copy.deepcopy(LEARNER_RECORD)
    record.update(learn_ref_number=ref, uln=uln, **changes)
    return record


#: two learners with two deliveries each; the second's programme aim has fewer financial
#: records and no learner FAM, so some numbered cells of its row are blank
FIRST = ilr("LR0001", ULNS[1])
SECOND = ilr(
    "LR0002",
    ULNS[2],
    learner_fams=[],
    learning_deliveries=[
        {**PROGRAMME_AIM, "app_fin_records": PROGRAMME_AIM["app_fin_records"][:1]},
        {**COMPONENT_AIM, "delivery_fams": COMPONENT_AIM["delivery_fams"][::-1]},
    ],
)
del SECOND["learner_fams"]


def table(records: list[dict], learner_ulns: list[str]) -> tuple[list[str], list[list[object]]]:
    """The header (the union of every record's numbered columns, in first-seen order) and one
    row per record, blank where a record has no such entry."""
    flat = [flattened(r) for r in records]
    header = ["learner_uln"] + list(dict.fromkeys(k for f in flat for k in f))
    rows = [[uln] + [f.get(k) for k in header[1:]] for uln, f in zip(learner_ulns, flat, strict=True)]
    return header, rows


def as_csv(header: list[str], rows: list[list[object]]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else str(v).lower() if isinstance(v, bool) else v for v in row])
    return buffer.getvalue().encode()


@pytest.fixture
def importer(session, registry, make_user) -> ImportService:
    """A clerk's import on the ILR rules' day, with the two learners the records are about."""
    system = ItemService(session, Actor.system(), registry, today=lambda: date.fromisoformat(TODAY))
    for uln in ULNS[1:3]:
        system.create("learner", {**LEARNER, "uln": uln})
    session.commit()
    clerk = make_user("clerk", "tracker_creator")
    return ImportService(ItemService(session, clerk, registry, today=lambda: date.fromisoformat(TODAY)))


def imported(session) -> dict[str, dict]:
    session.rollback()
    return {i.data["learn_ref_number"]: i.data for i in session.query(Item).filter_by(type_key="ilr")}


def by_column(problems) -> dict[tuple[int, str], str]:
    return {(p.line, p.column): p.message for p in problems}


def refusal(importer: ImportService, header: list[str], rows: list[list[object]]) -> dict[str, tuple[str, str]]:
    with pytest.raises(FileRefused) as excinfo:
        importer.open("ilr", "ilr.csv", as_csv(header, rows))
    return {p.path: (p.message, p.advice) for p in excinfo.value.problems}


def good_file() -> tuple[list[str], list[list[object]]]:
    return table([FIRST, SECOND], ULNS[1:3])


# -- importing ---------------------------------------------------------------------------------------------


def test_ilr_records_import_from_numbered_columns_with_their_deliveries_fams_and_financial_records(importer, session):
    header, rows = good_file()
    assert "learning_deliveries.2.delivery_fams.2.type" in header
    assert "learning_deliveries.1.app_fin_records.3.amount" in header
    # the title form names the same places
    header[header.index("learning_deliveries.2.aim_type")] = "Learning deliveries.2.Aim type"
    plan = importer.open("ilr", "ilr.csv", as_csv(header, rows))
    report = importer.check(plan)
    assert ([(p.line, p.column, p.message) for p in report.problems], report.valid) == ([], 2)
    summary = importer.run(plan)
    assert (summary.created, summary.problems) == (2, [])
    assert imported(session) == {"LR0001": FIRST, "LR0002": SECOND}


def test_a_workbook_with_numbered_columns_imports_too(importer, session):
    header, rows = good_file()
    for row in rows:  # as a spreadsheet holds them: numbers as numbers, dates as dates
        for i, value in enumerate(row):
            if isinstance(value, str) and len(value) == 10 and value[4] == "-" and header[i] != "learner_uln":
                row[i] = date.fromisoformat(value)
    plan = importer.open("ilr", "ilr.xlsx", xlsx_bytes([header, *rows]))
    summary = importer.run(plan)
    assert (summary.created, summary.problems) == (2, [])
    assert imported(session) == {"LR0001": FIRST, "LR0002": SECOND}


def test_a_json_list_in_one_cell_still_imports(importer, session):
    flat = {k: v for k, v in flattened(FIRST).items() if not k.startswith("learning_deliveries.")}
    header = ["learner_uln", *flat, "learning_deliveries"]
    row = [ULNS[1], *flat.values(), json.dumps(FIRST["learning_deliveries"])]
    summary = importer.run(importer.open("ilr", "ilr.csv", as_csv(header, [row])))
    assert (summary.created, summary.problems) == (1, [])
    assert imported(session) == {"LR0001": FIRST}


def test_a_file_with_numbered_columns_and_no_numbered_lists_filled_reports_the_list_as_missing(importer, session):
    header, rows = good_file()
    listed = [i for i, h in enumerate(header) if h.startswith("learning_deliveries.")]
    for i in listed:
        rows[1][i] = None
    report = importer.check(importer.open("ilr", "ilr.csv", as_csv(header, rows)))
    assert report.valid == 1
    [problem] = report.problems
    assert (problem.line, problem.column) == (3, "learning_deliveries.1.learn_aim_ref")
    assert "Learning deliveries" in problem.message


# -- the dry run: bad rows ---------------------------------------------------------------------------------


def test_a_gap_between_entries_is_reported_at_the_first_column_of_the_empty_entry(importer, session):
    header, rows = good_file()
    for i, name in enumerate(header):
        if name.startswith("learning_deliveries.1."):
            rows[0][i] = None  # delivery 1 blank, delivery 2 filled
        if name.startswith("learning_deliveries.1.delivery_fams.1."):
            rows[1][i] = None  # the second learner's programme aim: FAM 1 blank, FAM 2 filled
    report = importer.check(importer.open("ilr", "ilr.csv", as_csv(header, rows)))
    found = by_column(report.problems)
    assert found[(2, "learning_deliveries.1.learn_aim_ref")] == (
        "Learning delivery 1 is empty but learning delivery 2 is filled in"
    )
    assert found[(3, "learning_deliveries.1.delivery_fams.1.type")] == (
        "Delivery FAM 1 is empty but delivery FAM 2 is filled in"
    )
    # the gap explains the missing list; it is not reported again as "required"
    assert [p.line for p in report.problems if "required" in p.message] == []
    assert report.valid == 0
    assert importer.run(importer.open("ilr", "ilr.csv", as_csv(header, rows))).created == 0
    assert imported(session) == {}


def test_an_entry_filled_in_part_names_each_required_column_left_blank(importer):
    header, rows = good_file()
    rows[1][header.index("learning_deliveries.2.aim_type")] = None
    rows[1][header.index("learning_deliveries.2.comp_status")] = ""
    rows[0][header.index("learning_deliveries.1.app_fin_records.2.amount")] = None
    report = importer.check(importer.open("ilr", "ilr.csv", as_csv(header, rows)))
    found = by_column(report.problems)
    assert found == {
        (
            3,
            "learning_deliveries.2.aim_type",
        ): "Learning delivery 2 has no aim type, which every learning delivery needs",
        (3, "learning_deliveries.2.comp_status"): (
            "Learning delivery 2 has no completion status, which every learning delivery needs"
        ),
        (2, "learning_deliveries.1.app_fin_records.2.amount"): (
            "Financial record 2 has no amount (£), which every financial record needs"
        ),
    }
    advice = {p.column: p.advice for p in report.problems}
    assert advice["learning_deliveries.2.aim_type"] == (
        "Fill in learning_deliveries.2.aim_type on this line, or clear the other learning delivery 2 cells "
        "if there is no learning delivery 2."
    )


def test_a_bad_value_in_an_entry_is_reported_at_its_numbered_column(importer):
    header, rows = good_file()
    rows[0][header.index("learning_deliveries.2.fund_model")] = "12"
    rows[1][header.index("learning_deliveries.1.delivery_fams.2.code")] = "TOOLONG"
    report = importer.check(importer.open("ilr", "ilr.csv", as_csv(header, rows)))
    columns = {(p.line, p.column) for p in report.problems}
    assert (2, "learning_deliveries.2.fund_model") in columns
    assert (3, "learning_deliveries.1.delivery_fams.2.code") in columns
    assert report.valid == 0


# -- the header: refused before any row is read ------------------------------------------------------------


def test_a_sub_field_no_entry_has_is_not_a_field_and_the_valid_ones_are_named(importer):
    header, rows = good_file()
    header[header.index("learning_deliveries.2.aim_type")] = "learning_deliveries.2.aim_typ"
    header[header.index("learning_deliveries.1.delivery_fams.1.code")] = "learning_deliveries.1.delivery_fams.1.kode"
    problems = refusal(importer, header, rows)
    message, advice = problems["learning_deliveries.2.aim_typ"]
    assert (
        message == "'learning_deliveries.2.aim_typ' is not a field of ILR: a learning delivery has no field 'aim_typ'"
    )
    assert advice.startswith("Did you mean aim_type? The fields of a learning delivery are: learn_aim_ref, aim_type,")
    message, advice = problems["learning_deliveries.1.delivery_fams.1.kode"]
    assert "a delivery FAM has no field 'kode'" in message
    assert advice == "Did you mean code? The fields of a delivery FAM are: type, code, date_from, date_to."


@pytest.mark.parametrize(
    ("renamed", "column", "message"),
    [
        (
            "learning_deliveries.0.aim_type",
            "learning_deliveries.0.aim_type",
            "'learning_deliveries.0.aim_type': entries are numbered from 1, as a spreadsheet counts rows",
        ),
        (
            "learning_deliveries.aim_type",
            "learning_deliveries.aim_type",
            "'learning_deliveries.aim_type' needs the number of the learning delivery after learning_deliveries",
        ),
        (
            "learning_deliveries.99.aim_type",
            "learning_deliveries.99.aim_type",
            "'learning_deliveries.99.aim_type': learning deliveries may have at most 98 entries",
        ),
        (
            "learning_deliveries.2",
            "learning_deliveries.2",
            "'learning_deliveries.2' needs a field of the learning delivery after the number",
        ),
        (
            "uln.1",
            "uln.1",
            "'uln.1' is not a field of ILR: uln is a single value, not a list or a group",
        ),
        (
            "learning_deliveries.3.aim_type",
            "learning_deliveries.3.learn_aim_ref",
            "The file has columns for learning delivery 3 but none for learning delivery 2",
        ),
    ],
)
def test_numbered_columns_that_cannot_be_used_are_refused_by_name(importer, renamed, column, message):
    header, rows = good_file()
    if renamed.startswith("learning_deliveries.3"):
        # every delivery 2 column renumbered to 3: the file skips a number
        header = [h.replace("learning_deliveries.2.", "learning_deliveries.3.") for h in header]
    else:
        header[header.index("learning_deliveries.2.aim_type")] = renamed
    problems = refusal(importer, header, rows)
    assert problems[column][0] == message


def test_a_list_given_both_as_json_and_as_numbered_columns_is_refused(importer):
    header, rows = good_file()
    header.append("learning_deliveries")
    for row in rows:
        row.append("[]")
    problems = refusal(importer, header, rows)
    assert problems["learning_deliveries.1.learn_aim_ref"] == (
        "The columns 'learning_deliveries' and 'learning_deliveries.1.learn_aim_ref' both fill learning_deliveries",
        "Give learning_deliveries either as one column holding JSON or as numbered columns, not both.",
    )


def test_the_advice_for_a_missing_required_list_offers_numbered_columns_and_json(importer):
    header, rows = good_file()
    kept = [i for i, h in enumerate(header) if not h.startswith("learning_deliveries.")]
    problems = refusal(importer, [header[i] for i in kept], [[r[i] for i in kept] for r in rows])
    message, advice = problems["learning_deliveries"]
    assert message == "The file has no column for Learning deliveries (learning_deliveries), which every ILR needs"
    assert advice == (
        "Add numbered columns for each learning delivery (learning_deliveries.1.learn_aim_ref, "
        "learning_deliveries.1.aim_type, learning_deliveries.1.aim_seq_number, …; learning_deliveries.2.… "
        "for a second), or one column named learning_deliveries holding the whole list as JSON on every row."
    )


# -- a list of plain values, inside a group --------------------------------------------------------------


def test_a_list_of_plain_values_fills_from_numbered_columns(session, registry, make_user):
    admin = make_user("ada", "admin")
    importer = ImportService(ItemService(session, admin, registry))
    automation = json.loads((EXAMPLES / "process_automation" / "valid.json").read_text())
    expected = copy.deepcopy(automation)
    expected["scope"]["filter"]["status"] = ["on_programme", "break_in_learning"]
    flat = flattened(expected)
    header = [*flat, "scope.filter.status.3"]
    rows = [[*flat.values(), None], [*flat.values(), "on_programme"]]
    rows[1][header.index("name")] = "Second"
    rows[1][header.index("scope.filter.status.2")] = None
    report = importer.check(importer.open("process_automation", "a.csv", as_csv(header, rows)))
    assert [(p.line, p.column, p.message) for p in report.problems] == [
        (3, "scope.filter.status.2", "State 2 is empty but state 3 is filled in")
    ]
    rows[1][header.index("scope.filter.status.3")] = None
    rows[0][header.index("scope.filter.status.1")] = "On programme!"
    report = importer.check(importer.open("process_automation", "a.csv", as_csv(header, rows)))
    assert {(p.line, p.column) for p in report.problems} == {(2, "scope.filter.status.1")}
    rows[0][header.index("scope.filter.status.1")] = "on_programme"
    summary = importer.run(importer.open("process_automation", "a.csv", as_csv(header, rows)))
    assert (summary.created, summary.problems) == (2, [])
    session.rollback()
    made = {i.data["name"]: i.data for i in session.query(Item).filter_by(type_key="process_automation")}
    assert made[expected["name"]] == expected
    assert made["Second"]["scope"]["filter"]["status"] == ["on_programme"]
