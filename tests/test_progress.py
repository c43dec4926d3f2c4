"""Progress through qualification structures, on both databases: structures as data checked at
load time, weights up the tree, ticks with evidence and dates in the history, the stored
percentage, who may tick (without being able to edit), and every refusal with nothing changed."""

from __future__ import annotations

import shutil
import threading
from datetime import date
from pathlib import Path

import pytest
import yaml
from sqlalchemy import select, update

from engine.definitions import load_registry
from engine.definitions.qualifications import find_for
from engine.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from engine.models import Item
from engine.progress import compute, stored_value
from tests.conftest import LEARNER
from tests.documents_helpers import *  # noqa: F403 - fixtures
from tests.documents_helpers import DOCS_DEFINITIONS, World

TODAY = date(2025, 6, 30)


def tick(world: World, who: str, criterion: str, evidence: str = "Observation 1", day: str = "2025-03-14"):
    with world.rt.session() as session:
        return world.progress(session, who, today=lambda: TODAY).tick(world.portfolio, criterion, evidence, day)


# -- the arithmetic ------------------------------------------------------------------------------------


class FakeTick:
    def __init__(self, criterion: str) -> None:
        self.criterion = criterion


def test_weights_count_at_every_level(documents_registry):
    award = documents_registry.qualifications["mini_award"]
    assert compute(award, []).percent == 0.0
    tree = compute(award, [FakeTick("A/A1/b")])
    a1 = tree.units[0].elements[0]
    assert a1.percent == 75.0  # b weighs 3 of the element's 4
    assert tree.units[0].percent == 37.5  # A1 and A2 weigh the same
    assert tree.percent == pytest.approx(28.125)  # A weighs 3 of the award's 4
    assert stored_value(tree.percent) == 28.1
    everything = compute(award, [FakeTick(path) for path, *_ in award.criteria()])
    assert everything.percent == 100.0 and everything.ticked == everything.total == 5
    assert stored_value(99.96) == 99.9  # 100 only when every criterion is met
    assert compute(award, [FakeTick("A/A1/gone")]).percent == 0.0  # a tick of a criterion no longer there


def test_the_built_in_structures_load_and_are_found_by_qan_or_reference():
    registry = load_registry()
    standard = registry.qualifications["team_leader_st0384"]
    certificate = registry.qualifications["customer_service_l2"]
    assert standard.reference == "ST0384" and standard.level == 3
    assert certificate.qan == "603/4372/X" and certificate.level == 2
    assert sum(1 for _ in standard.criteria()) >= 25 and sum(1 for _ in certificate.criteria()) >= 15
    assert find_for(registry.qualifications, " st0384 ") is standard
    assert find_for(registry.qualifications, "603/4372/X") is certificate
    assert find_for(registry.qualifications, "999/9999/9") is None
    assert registry.types["apprenticeship"].progress.qualification_field == "standard_reference"
    assert certificate.resolve("201/1/1.1") == ["201/1/1.1"]
    assert certificate.resolve("201/1.1") == ["201/1/1.1"]
    assert len(certificate.resolve("1.1")) == 4  # ambiguous: every unit has a 1.1
    assert standard.resolve("K1") == ["PEOPLE/LEAD/K1"]


# -- ticking -------------------------------------------------------------------------------------------


def test_ticks_are_stored_weighted_and_in_the_history_without_a_new_version(world):
    with world.rt.session() as session:
        before = session.get(Item, world.portfolio).version
        assert session.get(Item, world.portfolio).progress == 0.0  # tracked from creation
    view = tick(world, "tess", "b", "Observation 3", "2025-03-14")
    assert view.tree.percent == pytest.approx(28.125)
    with world.rt.session() as session:
        item = session.get(Item, world.portfolio)
        assert (item.progress, item.version) == (28.1, before)  # nobody's open form goes stale
        [event] = [e for e in world.items(session, None).history(world.portfolio) if e.kind == "progress_ticked"]
        assert event.actor_id == world.ids["tess"]
        assert event.payload == {
            "qualification": "mini_award",
            "criterion": "A/A1/b",
            "text": "Criterion b",
            "evidence": "Observation 3",
            "date": "2025-03-14",
            "percent": 28.1,
        }
    again = tick(world, "tess", "A/A1/b", "Portfolio p.4", "2025-03-15")
    assert again.tree.units[0].elements[0].criteria[1].tick.evidence == "Portfolio p.4"
    with world.rt.session() as session:
        view = world.progress(session, "quinn").untick(world.portfolio, "A/A1/b")
        assert view.tree.percent == 0.0 and session.get(Item, world.portfolio).progress == 0.0
        events = [e for e in world.items(session, None).history(world.portfolio) if e.kind.startswith("progress_")]
        assert [e.kind for e in events] == ["progress_ticked", "progress_ticked", "progress_unticked"]
        assert events[1].payload["previous"] == {"evidence": "Observation 3", "date": "2025-03-14"}
        assert events[2].payload["evidence"] == "Portfolio p.4"


def test_several_criteria_in_one_step(world):
    with world.rt.session() as session:
        view = world.progress(session, "quinn", today=lambda: TODAY).apply(
            world.portfolio,
            ticks=[
                {"criterion": "a", "evidence": "Obs 1", "date": "2025-01-02"},
                {"criterion": "b", "evidence": "Obs 1", "date": date(2025, 1, 2)},
                {"criterion": "c", "evidence": "Obs 2", "date": "2025-01-03"},
            ],
        )
    assert view.tree.percent == 75.0 and view.tree.ticked == 3


@pytest.mark.parametrize(
    ("entry", "path", "words"),
    [
        ({"criterion": "zz"}, "/ticks/0/criterion", "'zz' is not a criterion of Mini award"),
        ({"criterion": ""}, "/ticks/0/criterion", "Say which criterion"),
        ({"evidence": "  "}, "/ticks/0/evidence", "The evidence reference is missing"),
        ({"evidence": "x" * 201}, "/ticks/0/evidence", "is 201 characters long"),
        ({"date": "14/03/2025"}, "/ticks/0/date", "'14/03/2025' is not a date"),
        ({"date": "2025-02-30"}, "/ticks/0/date", "'2025-02-30' is not a date"),
        ({"date": None}, "/ticks/0/date", "The date is missing"),
        ({"date": "2025-07-01"}, "/ticks/0/date", "2025-07-01 is in the future"),
    ],
)
def test_bad_ticks_are_refused_with_where_and_why(world, entry, path, words):
    before = world.snapshot()
    good = {"criterion": "a", "evidence": "Obs", "date": "2025-03-01"}
    with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
        world.progress(session, "tess", today=lambda: TODAY).apply(world.portfolio, ticks=[{**good, **entry}])
    assert refused.value.message == "No progress was recorded."
    assert {(p.path, p.message) for p in refused.value.problems if words in p.message} == {
        (path, next(p.message for p in refused.value.problems if words in p.message))
    }
    assert all(p.advice for p in refused.value.problems)
    assert world.snapshot() == before


def test_unticking_and_other_refusals(world):
    tick(world, "tess", "a")
    before = world.snapshot()
    cases = [
        ({"unticks": ["b"]}, "A/A1/b is not ticked"),
        ({"ticks": [{"criterion": "a", "evidence": "x", "date": "2025-01-01"}], "unticks": ["a"]}, "both ticked"),
        ({}, "Nothing to record"),
    ]
    for kwargs, words in cases:
        with world.rt.session() as session, pytest.raises(ValidationFailed, match=words):
            world.progress(session, "tess", today=lambda: TODAY).apply(world.portfolio, **kwargs)
    with world.rt.session() as session, pytest.raises(Conflict, match="you had version 1"):
        world.progress(session, "tess").apply(world.portfolio, unticks=["a"], version=1)
    assert world.snapshot() == before


def test_a_regulated_qualification_by_its_qan_and_an_ambiguous_ref(world):
    with world.rt.session() as session:
        qualification = world.items(session, None).create(
            "qualification", {"qan": "603/4372/X"}, subject_id=world.learner
        )
        assert qualification.progress == 0.0
        service = world.progress(session, None)
        assert service.view(qualification.id).tree.qualification.key == "customer_service_l2"
        before = world.snapshot()
        with pytest.raises(ValidationFailed) as refused:
            service.tick(qualification.id, "1.1", "Workbook", "2025-01-01")
        [problem] = refused.value.problems
        assert problem.message.startswith("'1.1' could be any of: 201/1/1.1, 202/1/1.1")
        assert problem.advice == "Give the whole path UNIT/ELEMENT/CRITERION."
        assert world.snapshot() == before
        view = service.tick(qualification.id, "201/1.1", "Workbook", "2025-01-01")
        assert view.tree.units[0].elements[0].criteria[0].done
        assert session.get(Item, qualification.id).progress == round(100 / 3 / 2 * 40 / 120, 1)


def test_ticking_needs_progress_edit_not_items_edit(world):
    before = world.snapshot()
    for who, words in (
        ("cleo", "cleo may not record progress on Portfolio items."),  # edits items, cannot tick
        ("mona", "mona may not record progress on Portfolio items."),
        ("vera", "vera may not record progress on Portfolio items."),
    ):
        with world.rt.session() as session, pytest.raises(PermissionDenied) as refused:
            world.progress(session, who).tick(world.portfolio, "a", "Obs", "2025-01-01")
        assert refused.value.message == words and "progress.edit" in refused.value.advice
    assert world.snapshot() == before
    # the tutor ticks, but may not change the item's fields
    assert tick(world, "tess", "a").tree.ticked == 1
    with world.rt.session() as session, pytest.raises(PermissionDenied, match="tess may not edit Portfolio items"):
        world.items(session, "tess").update(world.portfolio, changes={"notes": "changed"})
    with world.rt.session() as session:  # own scope: someone else's portfolio is out of reach
        other = world.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=world.learner).id
    with world.rt.session() as session, pytest.raises(PermissionDenied, match="assigned to or created by them"):
        world.progress(session, "tess").tick(other, "a", "Obs", "2025-01-01")


def test_the_built_in_assessor_records_progress_but_cannot_edit_ilr_fields(world):
    with world.rt.session() as session:
        users = world.rt.users(session)
        users.create("asa", ["assessor"])
        session.commit()
        system = world.items(session, None)
        learner = system.create("learner", {**LEARNER, "uln": "1000000027"}).id
        apprenticeship = system.create(
            "apprenticeship",
            {"employer_name": "Solent Logistics Ltd", "standard_code": 298, "standard_reference": "ST0384"},
            subject_id=learner,
            assignee="asa",
        ).id
    with world.rt.session() as session:
        view = world.progress(session, "asa").tick(apprenticeship, "K1", "Professional discussion", "2025-01-10")
        assert view.may_edit and view.tree.ticked == 1
        assert session.get(Item, apprenticeship).progress == 2.0  # K1 of LEAD of PEOPLE, by their weights
    ilr = world.rt.registry.types["ilr"]
    assert "items.edit" not in ilr.permissions["assessor"]  # may view the ILR record, not change it
    assert "progress.edit" in world.rt.registry.types["apprenticeship"].permissions["assessor"]


def test_frozen_items_and_items_without_a_structure(world):
    tick(world, "quinn", "a")
    with world.rt.session() as session:  # the state is what matters here, not the documents it takes to get there
        session.execute(update(Item).where(Item.id == world.portfolio).values(status="closed"))
        session.commit()
    before = world.snapshot()
    with (
        world.rt.session() as session,
        pytest.raises(ValidationFailed, match="is 'Closed', so its progress cannot change"),
    ):
        world.progress(session, "quinn").untick(world.portfolio, "a")
    assert world.snapshot() == before
    with world.rt.session() as session:
        system = world.items(session, None)
        apprenticeship = system.create(
            "apprenticeship", {"employer_name": "Acme Ltd", "standard_code": 298}, subject_id=world.learner
        )
        assert apprenticeship.progress is None
        view = world.progress(session, None).view(apprenticeship.id)
        assert view.tree is None and "Standard reference is empty" in view.reason
        with pytest.raises(ValidationFailed) as refused:
            world.progress(session, None).tick(apprenticeship.id, "K1", "x", "2025-01-01")
        assert "Set Standard reference to one of: " in refused.value.problems[0].advice
        assert "ST0384 (Team leader or supervisor" in refused.value.problems[0].advice
        system.update(apprenticeship.id, changes={"standard_reference": "ST9999"})
        assert (
            world.progress(session, None)
            .view(apprenticeship.id)
            .reason.startswith("Standard reference 'ST9999' matches no qualification structure")
        )
        changed = system.update(apprenticeship.id, changes={"standard_reference": "ST0384"})
        assert changed.progress == 0.0
        with pytest.raises(NotFound, match="Learner items do not track progress"):
            world.progress(session, None).view(world.learner)


def test_lists_sort_by_the_stored_percentage(world):
    with world.rt.session() as session:
        second = world.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=world.learner).id
    tick(world, "quinn", "b")
    with world.rt.session() as session:
        items = world.items(session, None)
        found, _ = items.list("portfolio", sort="-progress")
        assert [i.id for i in found] == [world.portfolio, second]
        found, _ = items.list("portfolio", sort="progress")
        assert [i.id for i in found][-1] == world.portfolio


def test_recompute_puts_stored_percentages_right_and_needs_an_administrator(world):
    tick(world, "quinn", "b")
    with world.rt.session() as session:
        session.execute(update(Item).where(Item.id == world.portfolio).values(progress=3.0))
        session.commit()
        with pytest.raises(PermissionDenied):
            world.progress(session, "quinn").recompute()
        assert world.progress(session, None).recompute("portfolio") == 1
        assert session.scalar(select(Item.progress).where(Item.id == world.portfolio)) == 28.1
        assert world.progress(session, None).recompute() == 0


def test_two_assessors_ticking_at_once_are_both_counted(world):
    errors: list[BaseException] = []

    def record(criterion: str) -> None:
        try:
            tick(world, "quinn", criterion)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=record, args=(c,)) for c in ("a", "b", "c", "d")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with world.rt.session() as session:
        stored = session.get(Item, world.portfolio).progress
        assert stored == stored_value(world.progress(session, None).view(world.portfolio).tree.percent) == 87.5


# -- definitions ---------------------------------------------------------------------------------------


@pytest.fixture
def defs(tmp_path) -> Path:
    target = tmp_path / "defs"
    shutil.copytree(DOCS_DEFINITIONS, target)
    return target


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


AWARD = "tracker_types/qualifications/mini_award.yaml"
TYPE = "tracker_types/portfolio/type.yaml"


def _set(path: list, value):
    def change(data):
        node = data
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value

    return change


def _drop(key: str):
    return lambda data: data.pop(key)


CASES = {
    "key not the file name": (AWARD, _set(["key"], "other_award"), "/key", "does not match the file name"),
    "no qan or reference": (AWARD, _drop("qan"), "", "needs a 'qan' or a 'reference'"),
    "bad qan": (AWARD, _set(["qan"], "6000011"), "/qan", "NNN/NNNN/N"),
    "bad reference": (AWARD, _set(["reference"], "st384"), "/reference", "ST0384"),
    "float ref": (
        AWARD,
        _set(["units", 0, "elements", 0, "criteria", 0, "ref"], 1.1),
        "/units/0/elements/0/criteria/0/ref",
        "quotes",
    ),
    "zero weight": (AWARD, _set(["units", 0, "weight"], 0), "/units/0/weight", "above 0"),
    "duplicate unit": (AWARD, _set(["units", 1, "ref"], "A"), "/units/1/ref", "unit ref 'A' is used twice"),
    "duplicate criterion": (
        AWARD,
        _set(["units", 0, "elements", 0, "criteria", 1, "ref"], "a"),
        "/units/0/elements/0/criteria/1/ref",
        "criterion ref 'a' is used twice",
    ),
    "no criteria": (AWARD, _set(["units", 1, "elements", 0, "criteria"], []), "/units/1/elements/0/criteria", ""),
    "unknown field": (AWARD, _set(["units", 0, "colour"], "red"), "/units/0", "'colour' is not a field here"),
    "progress names no field": (
        TYPE,
        _set(["progress"], {"qualification_field": "qan"}),
        "/progress/qualification_field",
        "is not a text property",
    ),
    "progress names no structure": (
        TYPE,
        _set(["progress"], {"qualification": "big_award"}),
        "/progress/qualification",
        "'big_award' does not exist",
    ),
    "progress says both": (
        TYPE,
        _set(["progress"], {"qualification": "mini_award", "qualification_field": "title"}),
        "/progress",
        "",
    ),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_each_mistake_in_a_structure_or_progress_is_reported_where_it_is(defs, case):
    relative, change, pointer, words = CASES[case]
    edit_yaml(defs / relative, change)
    registry = load_registry([defs])
    found = [p for p in registry.problems if p.file.endswith(relative) and p.pointer == pointer]
    assert found, "\n".join(map(str, registry.problems))
    assert any(words in f"{p.message} {p.advice}" for p in found), "\n".join(map(str, found))
    assert found[0].line is not None and found[0].advice
    if relative == AWARD:
        assert "mini_award" not in registry.qualifications
        assert "portfolio" not in registry.types  # its fixed structure did not load
    else:
        assert "portfolio" not in registry.types


def test_a_qan_used_twice_is_reported(defs):
    copy = defs / "tracker_types" / "qualifications" / "second_award.yaml"
    edit_yaml(defs / AWARD, lambda data: None)
    data = yaml.safe_load((defs / AWARD).read_text())
    data["key"] = "second_award"
    copy.write_text(yaml.safe_dump(data))
    registry = load_registry([defs])
    [problem] = [p for p in registry.problems if p.file.endswith("second_award.yaml")]
    assert problem.pointer == "/qan" and "already used by qualification 'mini_award'" in problem.message
