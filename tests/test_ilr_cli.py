"""``tracker ilr export`` and ``tracker ilr validate`` end to end, in a subprocess."""

from __future__ import annotations

import re
from datetime import date

import pytest
import xmlschema
from sqlalchemy import select

from engine.models import BulkExport, Event
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER, ROOT
from tests.ilr_helpers import TODAY, put, record

XSD = ROOT / "tracker_types" / "ilr" / "schemafile25.xsd"
NAME = re.compile(r"ILR-10012345-2526-\d{8}-\d{6}-(\d{2})\.xml")


@pytest.fixture
def records(session, registry, users):
    """Two ILR records, the second with an e-mail ESFA's schema refuses; a clerk without exports.bulk."""
    users.create("clerk", ["tracker_creator"])
    service = ItemService(session, Actor.system(), registry, today=lambda: date.fromisoformat(TODAY))
    ids = {}
    for ref, uln, changes in [
        ("LR0001", "2442725095", []),
        ("LR0002", "1000000027", [put("email", "zoë@example.co.uk")]),
    ]:
        learner = service.create("learner", {**LEARNER, "uln": uln})
        ids[ref] = service.create(
            "ilr", record(put("learn_ref_number", ref), put("uln", uln), *changes), subject_id=learner.id
        ).id
    return ids


def test_export_writes_the_file_and_lists_who_was_left_out(run, records, tmp_path, session):
    out = tmp_path / "returns"
    result = run("ilr", "export", "--ukprn", "10012345", "--year", "2526", "--out", str(out))
    [path] = list(out.iterdir())
    assert NAME.fullmatch(path.name) and NAME.fullmatch(path.name).group(1) == "01"
    assert f"Wrote {path} with 1 learner(s); it passes ESFA's schema 2526." in result.stdout
    assert "1 learner(s) left out of the file:" in result.stderr
    assert f"#{records['LR0002']} LR0002" in result.stderr
    assert "- /email: Email is refused by ESFA's schema: has characters the ILR does not allow" in result.stderr
    assert "-> Correct Email on the learner's ILR record, then export again." in result.stderr
    xmlschema.XMLSchema(str(XSD)).validate(str(path))
    assert b"LR0002" not in path.read_bytes()
    again = run(
        "ilr", "export", "--ukprn", "10012345", "--year", "2526", "--out", str(out), "--id", str(records["LR0001"])
    )
    assert "-02.xml with 1 learner(s)" in again.stdout and again.stderr == ""
    validated = run("ilr", "validate", *map(str, sorted(out.iterdir())))
    assert validated.stdout.count("passes ESFA's schema.") == 2
    session.expire_all()
    rows = session.scalars(select(BulkExport)).all()
    assert [(r.kind, r.outcome, r.address, r.user_id) for r in rows] == [("ilr_xml", "done", "", None)] * 2
    assert len(session.scalars(select(Event).where(Event.kind == "exported")).all()) == 2


def test_strict_and_mistakes_exit_1_and_write_nothing(run, records, tmp_path):
    out = tmp_path / "returns"
    strict = run("ilr", "export", "--ukprn", "10012345", "--year", "2526", "--out", str(out), "--strict", ok=False)
    assert strict.returncode == 1
    assert "no file was written: --strict refuses a file without every learner" in strict.stderr
    bad = run("ilr", "export", "--ukprn", "123", "--year", "2526", "--out", str(out), ok=False)
    assert bad.returncode == 1 and "ukprn: '123' is not a UKPRN" in bad.stderr and "-> Enter your 8-digit" in bad.stderr
    year = run("ilr", "export", "--ukprn", "10012345", "--year", "2425", "--out", str(out), ok=False)
    assert year.returncode == 1 and "Tracker has no ILR schema for the year '2425'" in year.stderr
    clerk = run("ilr", "export", "--ukprn", "10012345", "--year", "2526", "--out", str(out), "--as", "clerk", ok=False)
    assert clerk.returncode == 1 and "exports.bulk" in clerk.stderr
    only_bad = run(
        "ilr",
        "export",
        "--ukprn",
        "10012345",
        "--year",
        "2526",
        "--out",
        str(out),
        "--id",
        str(records["LR0002"]),
        ok=False,
    )
    assert only_bad.returncode == 1 and "no file was written: no learner passed the checks" in only_bad.stderr
    usage = run("ilr", "export", "--year", "2526", ok=False)
    assert usage.returncode == 2 and "Missing option '--ukprn'" in usage.stderr
    assert not out.exists() or list(out.iterdir()) == []


def test_validate_reports_each_problem_with_the_learner(run, tmp_path):
    sample = ROOT / "tests" / "data" / "ilr" / "ILR-99999999-2526-20250108-094401.xml"  # ESFA's sample
    text = sample.read_text().replace("<ULN>1061484016</ULN>", "<ULN>12345</ULN>", 1)
    path = tmp_path / "ILR-99999999-2526-20250108-094401-01.xml"
    path.write_text(text)
    result = run("ilr", "validate", str(path), ok=False)
    assert result.returncode == 1
    assert f"{path}: 1 problem(s)" in result.stderr
    assert "learner 16Learner /Message/Learner[1]/ULN:" in result.stderr
