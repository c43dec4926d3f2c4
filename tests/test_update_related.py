"""The ``update_related`` workflow action: a step of one item sets fields of the item it belongs
to (the built-in H&S review keeps its apprenticeship's "Last H&S review"); what ``tracker check``
refuses, and on SQLite and PostgreSQL that the related item is changed through the item service,
in the step's transaction, or the step is refused with a message naming it and nothing changes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select

from engine.definitions import load_registry
from engine.errors import ValidationFailed
from engine.models import Event, Item, Outbox
from engine.permissions import Actor
from engine.services import ItemService, UserService
from tests.apprenticeship_helpers import start_on_programme
from tests.conftest import LEARNER
from tests.webhelpers import cheap_hashing, make_app  # noqa: F401 - cheap_hashing is autouse

CASE_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "title": "Name", "minLength": 1},
        "last_visit": {"type": "string", "format": "date", "title": "Last visit"},
        "note": {"type": "string", "title": "Note", "maxLength": 20},
        "visits": {"type": "integer", "title": "Visits"},
    },
    "required": ["name"],
    "additionalProperties": False,
}
VISIT_SCHEMA = {
    "type": "object",
    "properties": {
        "case_id": {"type": "integer", "minimum": 1, "title": "Case item"},
        "visited_on": {"type": "string", "format": "date", "title": "Visited on"},
        "summary": {"type": "string", "title": "Summary"},
    },
    "additionalProperties": False,
}
CASE_WORKFLOW = {
    "key": "case",
    "name": "Case",
    "states": [
        {"key": "open", "label": "Open", "category": "open", "initial": True},
        {"key": "closed", "label": "Closed", "category": "done"},
    ],
    "transitions": [{"key": "close", "from": ["open"], "to": "closed", "label": "Close"}],
    "state_fields": {"closed": {"read_only": ["*"]}},
}
VISIT_WORKFLOW = {
    "key": "visit",
    "name": "Visit",
    "states": [
        {"key": "booked", "label": "Booked", "category": "open", "initial": True},
        {"key": "done", "label": "Done", "category": "done"},
    ],
    "transitions": [
        {
            "key": "record",
            "from": ["booked"],
            "to": "done",
            "label": "Record the visit",
            "requires": ["visited_on"],
            "actions": [
                {
                    "update_related": {
                        "link": "case_id",
                        "type": "case",
                        "set": [
                            {"field": "last_visit", "from": "visited_on", "only_if_later": True},
                            {"field": "note", "from": "summary"},
                        ],
                    }
                }
            ],
        }
    ],
}


def write_definitions(root: Path, change=None) -> Path:
    """A case type and a visit type whose 'Record the visit' updates its case; ``change``
    edits the documents (a dict of name -> document) before they are written."""
    docs = {
        "workflows/case.yaml": json.loads(json.dumps(CASE_WORKFLOW)),
        "workflows/visit.yaml": json.loads(json.dumps(VISIT_WORKFLOW)),
        "tracker_types/case/schema.json": json.loads(json.dumps(CASE_SCHEMA)),
        "tracker_types/case/type.yaml": {
            "key": "case",
            "name": "Case",
            "version": 1,
            "workflow": "case",
            "subject": "none",
            "title": "Case {{ data.name }}",
        },
        "tracker_types/visit/schema.json": json.loads(json.dumps(VISIT_SCHEMA)),
        "tracker_types/visit/type.yaml": {
            "key": "visit",
            "name": "Visit",
            "version": 1,
            "workflow": "visit",
            "subject": "none",
            "title": "Visit",
        },
    }
    if change:
        change(docs)
    for name, value in docs.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value, indent=2) if name.endswith(".json") else yaml.safe_dump(value))
    return root


def action(docs) -> dict:
    return docs["workflows/visit.yaml"]["transitions"][0]["actions"][0]["update_related"]


@pytest.fixture
def visits(tmp_path, session) -> ItemService:
    registry = load_registry([write_definitions(tmp_path / "defs")])
    assert registry.problems == [], "\n".join(map(str, registry.problems))
    return ItemService(session, Actor.system(), registry)


def snapshot(session, *item_ids: int) -> tuple:
    """What a refused step must leave as it was."""
    items = [session.get(Item, item_id) for item_id in item_ids]
    states = [(i.status, i.version, json.dumps(i.data, sort_keys=True)) for i in items]
    events = session.scalar(select(func.count()).select_from(Event))
    outbox = session.scalar(select(func.count()).select_from(Outbox))
    return states, events, outbox


# -- tracker check ------------------------------------------------------------------------------------------


LOAD_CASES = {
    "link not a property": (
        lambda d: action(d).update(link="case_number"),
        "workflow 'visit' transition 'record' update_related links through field 'case_number', "
        "which is not a property of this type's schema.json",
    ),
    "link not a whole number": (
        lambda d: action(d).update(link="summary"),
        "links through field 'summary', which is not a whole number",
    ),
    "source not a property": (
        lambda d: action(d)["set"][0].update({"from": "seen_on"}),
        "update_related copies names field 'seen_on', which is not a property",
    ),
    "unknown related type": (
        lambda d: action(d).update(type="casefile"),
        "tracker type 'casefile' does not exist",
    ),
    "related field missing": (
        lambda d: action(d)["set"][0].update(field="last_seen"),
        "field 'last_seen' is not a property of type 'case'",
    ),
    "kinds differ": (
        lambda d: action(d)["set"][1].update(field="visits"),
        "'summary' of type 'visit' holds a string, but 'visits' of type 'case' takes an integer",
    ),
    "not a date": (
        lambda d: action(d)["set"].append({"field": "note", "value": "today+2x"}),
        "'today+2x' is not a date",
    ),
    "both a source and a value": (
        lambda d: action(d)["set"][1].update(value="x"),
        "/update_related/set/1: setting 'note' needs either 'from' or 'value', not both",
    ),
    "neither a source nor a value": (
        lambda d: action(d)["set"][1].pop("from"),
        "/update_related/set/1: setting 'note' needs either 'from' or 'value'",
    ),
    "no link": (
        lambda d: action(d).pop("link"),
        "/update_related/link: Link (row 1, row 1) is required",
    ),
}


@pytest.mark.parametrize("case", LOAD_CASES, ids=list(LOAD_CASES))
def test_tracker_check_refuses_an_update_related_that_cannot_work(tmp_path, case):
    change, expected = LOAD_CASES[case]
    problems = load_registry([write_definitions(tmp_path / "defs", change)]).problems
    assert problems, case
    assert any(expected in str(p) for p in problems), "\n".join(map(str, problems))
    assert all(p.advice for p in problems)


def test_the_built_in_hs_review_updates_its_apprenticeship():
    [complete] = [t for t in load_registry().workflows["hs_review"].transitions if t.key == "complete"]
    [update] = [a.value for a in complete.actions if a.kind == "update_related"]
    assert update == {
        "link": "apprenticeship_id",
        "type": "apprenticeship",
        "set": [{"field": "last_hs_review_date", "from": "review_date", "only_if_later": True}],
    }


# -- doing it ---------------------------------------------------------------------------------------------


def test_recording_a_visit_sets_its_case_in_the_same_step_as_a_change_with_its_cause(session, visits):
    case = visits.create("case", {"name": "A", "last_visit": "2031-01-05"})
    visit = visits.create("visit", {"case_id": case.id, "summary": "All well"})
    visits.transition(visit.id, "done", data={"visited_on": "2031-02-01"})
    session.refresh(case)
    assert case.data == {"name": "A", "last_visit": "2031-02-01", "note": "All well"}
    updated = session.scalars(select(Event).where(Event.item_id == case.id).order_by(Event.id.desc())).first()
    assert updated.kind == "updated"
    assert updated.payload["cause"] == {"item": visit.id, "transition": "record"}
    assert {c["path"] for c in updated.payload["changes"]} == {"/last_visit", "/note"}
    events = session.scalars(select(Outbox).where(Outbox.kind == "item_event", Outbox.item_id == case.id)).all()
    assert [o.payload["event"] for o in events] == ["created", "updated"]


def test_a_visit_recorded_late_does_not_move_the_date_back_and_an_empty_source_erases_nothing(session, visits):
    case = visits.create("case", {"name": "A", "last_visit": "2031-03-01", "note": "Kept"})
    version = case.version
    visit = visits.create("visit", {"case_id": case.id})
    visits.transition(visit.id, "done", data={"visited_on": "2031-02-01"})
    session.refresh(case)
    assert case.data == {"name": "A", "last_visit": "2031-03-01", "note": "Kept"} and case.version == version


def test_a_visit_linked_to_nothing_is_recorded_without_touching_any_other_item(session, visits):
    case = visits.create("case", {"name": "A"})
    visit = visits.create("visit", {})
    before = snapshot(session, case.id)
    visits.transition(visit.id, "done", data={"visited_on": "2031-02-01"})
    assert session.get(Item, visit.id).status == "done"
    assert snapshot(session, case.id)[0] == before[0]


@pytest.mark.parametrize("link", ["missing", "other_type"])
def test_a_link_to_no_such_item_or_another_type_refuses_the_step_and_changes_nothing(session, visits, link):
    other = visits.create("visit", {})
    number = 999999 if link == "missing" else other.id
    visit = visits.create("visit", {"case_id": number})
    before = snapshot(session, visit.id, other.id)
    with pytest.raises(ValidationFailed) as refused:
        visits.transition(visit.id, "done", data={"visited_on": "2031-02-01"})
    [problem] = refused.value.problems
    found = "there is no such item" if link == "missing" else f"#{other.id} is a Visit"
    assert problem.path == "/case_id"
    assert (
        problem.message
        == f"Case item is #{number}, but {found}: 'Record the visit' updates the Case this item belongs to"
    )
    assert problem.advice == "Enter the number of the Case (the # on its page), then try again."
    assert snapshot(session, visit.id, other.id) == before


def test_a_related_item_that_refuses_the_values_refuses_the_step_naming_it(session, visits):
    closed = visits.create("case", {"name": "A", "last_visit": "2031-01-05"})
    visits.transition(closed.id, "closed")
    visit = visits.create("visit", {"case_id": closed.id})
    before = snapshot(session, visit.id, closed.id)
    with pytest.raises(ValidationFailed) as refused:
        visits.transition(visit.id, "done", data={"visited_on": "2031-02-01"})
    [problem] = refused.value.problems
    assert problem.path == "/case_id"
    assert problem.message == (
        f"'Record the visit' cannot update Case #{closed.id}: Last visit cannot be changed while the item is 'Closed'"
    )
    assert snapshot(session, visit.id, closed.id) == before
    # the related item's own validation too: a note longer than the case takes
    case = visits.create("case", {"name": "B"})
    long = visits.create("visit", {"case_id": case.id, "summary": "x" * 21})
    with pytest.raises(ValidationFailed) as refused:
        visits.transition(long.id, "done", data={"visited_on": "2031-02-01"})
    assert refused.value.problems[0].message.startswith(f"'Record the visit' cannot update Case #{case.id}: ")
    assert session.get(Item, long.id).status == "booked" and "note" not in session.get(Item, case.id).data


# -- through the API, with the built-in types ------------------------------------------------------------------


def test_the_api_refuses_recording_an_hs_review_for_no_apprenticeship_with_a_422(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    rt = app.extensions["tracker"]
    try:
        with rt.session() as session:
            users = UserService(session, rt.registry)
            users.create("asha", ["assessor"])
            _token, token = users.create_token("asha", "tests")
            system = ItemService(session, Actor.system(), rt.registry)
            learner = system.create("learner", dict(LEARNER))
            apprenticeship = system.create(
                "apprenticeship",
                {"employer_name": "Acme", "start_date": "2030-01-06", "planned_end_date": "2032-01-06"},
                template="team_leader_l3",
                subject_id=learner.id,
                assignee="asha",
            )
            start_on_programme(system, apprenticeship.id)
            wrong = system.create(
                "hs_review", {"due_by": "2031-01-10", "apprenticeship_id": learner.id}, subject_id=learner.id
            )
            right = system.create(
                "hs_review", {"due_by": "2031-01-10", "apprenticeship_id": apprenticeship.id}, subject_id=learner.id
            )
            system.assign(wrong.id, "asha")
            system.assign(right.id, "asha")
            wrong_id, right_id, apprenticeship_id, learner_id = wrong.id, right.id, apprenticeship.id, learner.id
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        done = {"review_date": "2025-01-06", "reviewer": "Asha", "outcome": "satisfactory"}
        refused = client.post(
            f"/api/v1/items/{wrong_id}/transitions", json={"to": "completed", "data": done}, headers=headers
        )
        assert refused.status_code == 422
        body = json.dumps(refused.json)
        assert f"Apprenticeship item is #{learner_id}, but #{learner_id} is a Learner" in body
        moved = client.post(
            f"/api/v1/items/{right_id}/transitions", json={"to": "completed", "data": done}, headers=headers
        )
        assert moved.status_code == 200
        with rt.session() as session:
            assert session.get(Item, wrong_id).status == "booked"
            assert session.get(Item, apprenticeship_id).data["last_hs_review_date"] == "2025-01-06"
    finally:
        rt.engine.dispose()
