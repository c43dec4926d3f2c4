"""The ILR XML export: ESFA's file name, real XSD validation of the file written, learners who
fail left out with the reason on their field (and never in the file), history and audit."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import date, datetime
from ipaddress import ip_network
from pathlib import Path

import pytest
import xmlschema
from sqlalchemy import select

from engine.errors import NotFound, PermissionDenied, TrackerError, ValidationFailed
from engine.ilr import xml_export
from engine.models import BulkExport, Event, Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.bulk import Origin
from tests.conftest import LEARNER, ROOT
from tests.ilr_helpers import TODAY, put, record

XSD = ROOT / "tracker_types" / "ilr" / "schemafile25.xsd"
NS = "{ESFA/ILR/2025-26}"
UKPRN = "10012345"
NOW = datetime(2026, 3, 16, 9, 30, 5)


@pytest.fixture
def ilr(session, registry):
    """A system service on TODAY and a factory of ILR items (each for a new learner)."""
    service = ItemService(session, Actor.system(), registry, today=lambda: date.fromisoformat(TODAY))

    def make(ref: str, *changes, uln: str = "2442725095") -> Item:
        learner = service.create("learner", {**LEARNER, "uln": uln, "family_name": f"Learner {ref}"})
        return service.create(
            "ilr", record(put("learn_ref_number", ref), put("uln", uln), *changes), subject_id=learner.id
        )

    service.make = make
    return service


@pytest.fixture
def out(tmp_path) -> Path:
    """The folder files are written to (the SQLite database lives in tmp_path itself)."""
    return tmp_path / "out"


def files(folder: Path) -> list[Path]:
    return sorted(folder.iterdir()) if folder.exists() else []


def export(service, out: Path, **kwargs):
    return xml_export.export_ilr(service, ukprn=UKPRN, year="2526", out_dir=out, now=lambda: NOW, **kwargs)


def refs_in(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    return [learner.findtext(f"{NS}LearnRefNumber") for learner in root.iter(f"{NS}Learner")]


def test_the_file_is_named_as_esfa_expects_and_passes_the_xsd(ilr, out):
    first, second = ilr.make("LR0001", uln="2442725095"), ilr.make("LR0002", uln="1000000027")
    result = export(ilr, out)
    assert result.filename == "ILR-10012345-2526-20260316-093005-01.xml"
    assert result.path == out / result.filename and result.path.is_file()
    assert result.included == [first.id, second.id] and result.excluded == []
    # validated here independently of the export's own check, with the vendored ESFA schema
    xmlschema.XMLSchema(str(XSD)).validate(str(result.path))
    assert xml_export.validate_file(result.path) == []
    root = ET.parse(result.path).getroot()
    assert root.findtext(f"{NS}Header/{NS}Source/{NS}UKPRN") == UKPRN
    assert root.findtext(f"{NS}Header/{NS}Source/{NS}SerialNo") == "01"
    assert root.findtext(f"{NS}Header/{NS}CollectionDetails/{NS}FilePreparationDate") == "2026-03-16"
    assert root.findtext(f"{NS}LearningProvider/{NS}UKPRN") == UKPRN
    assert refs_in(result.path) == ["LR0001", "LR0002"]
    learner = root.find(f"{NS}Learner")
    delivery = learner.find(f"{NS}LearningDelivery")
    assert [fam.findtext(f"{NS}LearnDelFAMType") for fam in delivery.iter(f"{NS}LearningDeliveryFAM")] == ["ACT", "SOF"]
    assert [f.findtext(f"{NS}AFinAmount") for f in delivery.iter(f"{NS}AppFinRecord")] == ["6000", "1000", "250"]
    assert learner.find(f"{NS}LLDDandHealthProblem/{NS}PrimaryLLDD").text == "1"
    # the next file of the same UKPRN and year takes the next serial number
    assert export(ilr, out).filename == "ILR-10012345-2526-20260316-093005-02.xml"


def test_a_failing_learner_is_left_out_with_the_reason_on_the_field(ilr, out):
    good = ilr.make("LR0001", uln="2442725095")
    accented = ilr.make("LR0002", put("email", "zoë.brontë@example.co.uk"), uln="1000000027")
    old = ilr.make("LR0003", uln="1000000035")
    # saved before a rule changed: its data now breaks LearnPlanEndDate_02
    old_data = record(put("learn_ref_number", "LR0003"), put("uln", "1000000035"))
    old_data["learning_deliveries"][0]["learn_plan_end_date"] = "2025-08-01"
    ilr.session.get(Item, old.id).data = old_data
    ilr.session.commit()

    result = export(ilr, out)
    assert result.written and result.included == [good.id]
    excluded = {e.item_id: e for e in result.excluded}
    assert set(excluded) == {accented.id, old.id}
    [xsd] = excluded[accented.id].problems
    assert xsd.path == "/email" and xsd.rule == "xsd"
    assert xsd.message.startswith("Email is refused by ESFA's schema: has characters the ILR does not allow")
    assert xsd.advice == "Correct Email on the learner's ILR record, then export again."
    assert excluded[accented.id].learn_ref_number == "LR0002"
    [rule] = excluded[old.id].problems
    assert (rule.path, rule.rule) == ("/learning_deliveries/0/learn_plan_end_date", "learnplanenddate_02")
    # nothing of theirs is in the file, and the file passes the XSD
    assert refs_in(result.path) == ["LR0001"]
    assert b"zo\xc3\xab" not in result.path.read_bytes()
    xmlschema.XMLSchema(str(XSD)).validate(str(result.path))


def test_xsd_errors_of_a_delivery_name_the_delivery(ilr, out):
    item = ilr.make("LR0001")
    data = record(put("learn_ref_number", "LR0001"))
    data["learning_deliveries"][1]["con_ref_number"] = "CONTRACT|2025"  # '|' is not a RestrictedString character
    ilr.session.get(Item, item.id).data = data
    ilr.session.commit()
    ilr.make("LR0002", uln="1000000027")
    result = export(ilr, out)
    [excluded] = result.excluded
    [problem] = excluded.problems
    assert problem.path == "/learning_deliveries/1/con_ref_number"
    assert problem.message.startswith("Contract reference number (learning delivery 2) (ConRefNumber) is refused")


def test_strict_writes_nothing_when_a_learner_fails(ilr, out):
    ilr.make("LR0001")
    ilr.make("LR0002", put("email", "zoë@example.co.uk"), uln="1000000027")
    result = export(ilr, out, strict=True)
    assert not result.written and result.filename is None and len(result.excluded) == 1
    assert files(out) == []
    audit = ilr.session.scalars(select(BulkExport)).one()
    assert (audit.kind, audit.outcome, audit.item_count) == ("ilr_xml", "nothing", 0)
    assert audit.detail["excluded"][0]["reasons"][0].startswith("Email is refused")


def test_no_file_when_no_learner_passes(ilr, out):
    ilr.make("LR0002", put("email", "zoë@example.co.uk"), uln="1000000027")
    result = export(ilr, out)
    assert not result.written and [e.learn_ref_number for e in result.excluded] == ["LR0002"]
    assert files(out) == []


def test_history_and_audit_record_the_export(ilr, out):
    good = ilr.make("LR0001")
    bad = ilr.make("LR0002", put("email", "zoë@example.co.uk"), uln="1000000027")
    result = export(ilr, out, origin=Origin("10.1.2.3", (ip_network("10.0.0.0/8"),)))
    events = {e.item_id: e for e in ilr.session.scalars(select(Event).where(Event.kind == "exported"))}
    assert set(events) == {good.id}
    assert events[good.id].payload == {"file": result.filename, "ukprn": UKPRN, "year": "2526", "format": "ILR XML"}
    audit = ilr.session.scalars(select(BulkExport)).one()
    assert (audit.kind, audit.outcome, audit.address, audit.item_count, audit.filename) == (
        "ilr_xml",
        "done",
        "10.1.2.3",
        1,
        result.filename,
    )
    assert audit.filters == {"ukprn": UKPRN, "year": "2526"}
    assert [e["item"] for e in audit.detail["excluded"]] == [bad.id]


def test_items_chosen_by_id_or_filters(ilr, out):
    one, two = ilr.make("LR0001"), ilr.make("LR0002", uln="1000000027")
    assert refs_in(export(ilr, out / "a", item_ids=[two.id]).path) == ["LR0002"]
    assert refs_in(export(ilr, out / "b", q="LR0001").path) == ["LR0001"]
    ilr.transition(two.id, "not_required")
    assert refs_in(export(ilr, out / "c").path) == ["LR0001"]  # cancelled records stay out by default
    assert refs_in(export(ilr, out / "d", status=["not_required"]).path) == ["LR0002"]
    with pytest.raises(ValidationFailed, match=r"Item #\d+ is not an ILR record"):
        export(ilr, out / "e", item_ids=[one.id, one.subject_id])
    with pytest.raises(NotFound):
        export(ilr, out / "e", item_ids=[9999])
    with pytest.raises(TrackerError, match="There is no ILR record to export"):
        export(ilr, out / "e", q="nobody")
    assert not (out / "e").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ukprn": "1234567"}, "'1234567' is not a UKPRN"),
        ({"ukprn": "ABCDEFGH"}, "is not a UKPRN"),
        ({"year": "2425"}, "Tracker has no ILR schema for the year '2425'"),
        ({"serial": 100}, "Serial number 100 is out of range"),
    ],
)
def test_bad_options_are_refused_and_nothing_is_written(ilr, out, kwargs, message):
    ilr.make("LR0001")
    options = {"ukprn": UKPRN, "year": "2526", "out_dir": out, **kwargs}
    with pytest.raises(ValidationFailed) as excinfo:
        xml_export.export_ilr(ilr, now=lambda: NOW, **options)
    assert message in str(excinfo.value) and all(p.advice for p in excinfo.value.problems)
    assert files(out) == []


def test_serial_numbers_stop_at_99(tmp_path):
    (tmp_path / "ILR-10012345-2526-20260316-093005-99.xml").write_text("<x/>")
    (tmp_path / "ILR-10099999-2526-20260316-093005-07.xml").write_text("<x/>")
    assert xml_export.next_serial(tmp_path, "10099999", "2526") == 8
    with pytest.raises(TrackerError, match="serial numbers up to 99"):
        xml_export.next_serial(tmp_path, UKPRN, "2526")


def test_only_exports_bulk_may_export(ilr, session, registry, make_user, out):
    ilr.make("LR0001")
    clerk = ItemService(session, make_user("clerk", "tracker_creator"), registry)
    with pytest.raises(PermissionDenied, match="exports.bulk"):
        export(clerk, out)
    assert files(out) == []
    finance = ItemService(session, make_user("fran", "finance"), registry, today=lambda: date.fromisoformat(TODAY))
    assert export(finance, out).written


def test_an_address_outside_the_allow_list_is_refused_and_recorded(ilr, out):
    ilr.make("LR0001")
    office = (ip_network("10.0.0.0/8"), ip_network("2001:db8::/32"))
    with pytest.raises(PermissionDenied, match=r"not allowed from your address \(192.0.2.7\)"):
        export(ilr, out, origin=Origin("192.0.2.7", office))
    assert files(out) == []
    audit = ilr.session.scalars(select(BulkExport)).one()
    assert (audit.outcome, audit.address, audit.kind) == ("refused", "192.0.2.7", "ilr_xml")
    assert export(ilr, out, origin=Origin("2001:db8::5", office)).written
    assert export(ilr, out, origin=Origin("::ffff:10.9.9.9", office)).written


def test_the_vendored_schema_is_esfas_and_accepts_esfas_sample():
    shared = ROOT.parent / "shared" / "domain" / "ilr"
    if shared.is_dir():  # beside the domain folder, the vendored schema must be ESFA's own
        assert XSD.read_bytes() == (shared / "schemafile25.xsd").read_bytes()
    shared = ROOT / "tests" / "data" / "ilr"  # ESFA's sample file, vendored
    # ESFA's sample has no serial number in its name, which Filename_1 reports; its content passes
    assert xml_export.validate_file(shared / "ILR-99999999-2526-20250108-094401.xml") == [
        "Filename_1: the file name is not ILR-<UKPRN>-<YYYY>-<yyyymmdd>-<hhmmss>-<NN>.xml "
        "(e.g. ILR-10012345-2526-20260315-093000-01.xml)"
    ]


def test_validate_file_reports_problems_with_the_learner(tmp_path):
    path = tmp_path / "ILR-10012345-2526-20260316-093005-00.xml"
    text = (Path(__file__).parent / "ilr_helpers.py").read_text()  # not XML at all
    path.write_text(text)
    problems = xml_export.validate_file(path)
    assert problems[0].startswith("Filename_5") and problems[1].startswith("not well-formed XML")
