"""A value the schema refuses is reported once: rules do not judge it again. A date of birth
typed as 31/12/2000 is "not a date", not also "the learning start date is on or before the
learner's date of birth" on every learning delivery."""

from __future__ import annotations

from datetime import date

import pytest

from engine.errors import Problem, ValidationFailed
from engine.permissions import Actor
from engine.services import ItemService
from engine.validation import without_refused
from tests.ilr_helpers import TODAY, put, record


@pytest.fixture
def ilr_service(session, registry) -> ItemService:
    return ItemService(session, Actor.system(), registry, today=lambda: date.fromisoformat(TODAY))


def _refused(service: ItemService, data: dict) -> list[Problem]:
    with pytest.raises(ValidationFailed) as failed:
        service.create("ilr", data)
    return failed.value.problems


def test_a_mistyped_date_is_one_problem_not_a_rule_failure_on_every_delivery(ilr_service):
    problems = _refused(ilr_service, record(put("date_of_birth", "31/12/2000")))
    paths = [p.path for p in problems]
    assert "/date_of_birth" in paths
    assert not [p for p in problems if p.rule == "learnstartdate_05"], problems
    # the same date the right way round but impossible still breaks the rule (the rule is not off)
    problems = _refused(ilr_service, record(put("date_of_birth", "2026-01-01")))
    assert [p.path for p in problems if p.rule == "learnstartdate_05"] == [
        "/learning_deliveries/0/learn_start_date",
        "/learning_deliveries/1/learn_start_date",
    ]


def test_without_refused_takes_out_refused_single_values_only():
    data = {"a": "x", "rows": [{"d": "bad"}, {"d": "2025-01-01"}], "group": {"n": 1}, "tags": ["ok", 5]}
    problems = [
        Problem("/a", "wrong"),
        Problem("/rows/0/d", "not a date"),
        Problem("/group", "a whole group"),  # left alone: rules handle missing groups themselves
        Problem("/tags/1", "not text"),
        Problem("/missing", "is required"),
        Problem("", "the record as a whole"),
    ]
    out = without_refused(data, problems)
    assert out == {"a": None, "rows": [{"d": None}, {"d": "2025-01-01"}], "group": {"n": 1}, "tags": ["ok", None]}
    assert data["a"] == "x" and data["rows"][0]["d"] == "bad"  # the input is not changed
    assert without_refused(data, [Problem("/missing", "is required")]) is data
