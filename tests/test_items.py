"""The item services on SQLite and PostgreSQL: create, update, transition, assign, history."""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import func, select

from engine.errors import Conflict, NotFound, PermissionDenied, ValidationFailed
from engine.models import Event, Item, Outbox
from engine.services.items import DuplicateItem
from tests.conftest import LEARNER, problems_of

CONCERN = {"category": "online", "severity": "low", "reported_on": "2025-09-01"}


def counts(session) -> tuple[int, int, int]:
    return (
        session.scalar(select(func.count()).select_from(Item)),
        session.scalar(select(func.count()).select_from(Event)),
        session.scalar(select(func.count()).select_from(Outbox)),
    )


def test_create_starts_in_initial_state_with_title_and_history(system, learner, session):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id, description="Seen online")
    assert item.status == "new"
    assert item.title == "Online concern for Jane Smith"
    assert item.type_version == 1
    assert item.due_date == date(2025, 9, 1)
    assert item.version == 1
    [event] = system.history(item.id)
    assert event.kind == "created"
    assert event.payload["data"] == CONCERN


def test_create_refuses_another_initial_status_and_changes_nothing(system, learner, session):
    before = counts(session)
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", dict(CONCERN), subject_id=learner.id, status="closed")
    assert "always starts as 'New'" in problems_of(excinfo)["status"]
    assert counts(session) == before


def test_schema_problems_are_plain_words_with_pointers(system, learner, session):
    before = counts(session)
    bad = {
        "category": "fire",
        "severity": "urgent",
        "reported_on": "01/09/2025",
        "reference": "42",
        "hours": 500,
        "contact": "not-an-address",
        "actions": [{"note": "called"}],
        "unknown": 1,
    }
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", bad, subject_id=learner.id)
    found = problems_of(excinfo)
    assert found["/category"] == "Category must be one of: online, bullying, neglect, other"
    assert found["/severity"] == "Severity must be one of: low (Low), high (High), none (None)"
    assert found["/reported_on"] == "Reported on must be a date"
    assert found["/reference"] == "Reference is not in the expected format"
    assert found["/hours"] == "Hours spent must be at most 100"
    assert found["/contact"] == "Contact e-mail must be an e-mail address"
    assert found["/actions/0/date"] == "Action date (row 1) is required"
    advice = {p.path: p.advice for p in excinfo.value.problems}
    assert advice["/reference"] == "Write SC- and four digits, e.g. SC-0042"
    assert "YYYY-MM-DD" in advice["/reported_on"]
    assert not any("is not of type" in m or "does not match" in m for m in found.values())
    assert counts(session) == before


def test_missing_required_field_names_the_field(system, learner):
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", {"severity": "low"}, subject_id=learner.id)
    assert problems_of(excinfo) == {
        "/category": "Category is required",
        "/reported_on": "Reported on is required",
    }


def test_field_a_condition_requires_is_named_by_its_title(system, learner):
    """A ``then`` branch requires a field its object declares: the problem uses that field's
    title and advice, not its key."""
    data = {"standard_code": 298, "employer_name": "Acme Ltd", "english_maths_met": False}
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("apprenticeship", data, subject_id=learner.id)
    [problem] = excinfo.value.problems
    assert (problem.path, problem.message) == ("/english_maths_plan", "Plan to achieve English and maths is required")
    assert problem.advice.startswith("Describe the qualification still needed")
    item = system.create("apprenticeship", {**data, "english_maths_met": True}, subject_id=learner.id)
    assert item.data["english_maths_met"] is True


def test_rule_error_refuses_and_warning_is_stored(system, learner):
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", {**CONCERN, "severity": "high"}, subject_id=learner.id)
    [problem] = excinfo.value.problems
    assert (problem.path, problem.rule) == ("/dsl_informed", "dsl_needed")
    assert problem.advice == 'Tick "DSL informed" and record the date'

    item = system.create("concern", {**CONCERN, "severity": "high", "dsl_informed": True}, subject_id=learner.id)
    assert item.problem_count == 1
    assert item.problems[0]["rule"] == "contact_advised"
    assert item.problems[0]["severity"] == "warning"
    item = system.update(item.id, changes={"contact": "lead@example.org"})
    assert (item.problem_count, item.problems) == (0, [])


def test_subject_is_required_and_must_be_the_right_kind(system, learner):
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", dict(CONCERN))
    assert problems_of(excinfo)["subject"] == "A learner is required for Safeguarding concern"
    employer = system.create("employer", {"name": "Acme Ltd", "company_number": "01234567"})
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", dict(CONCERN), subject_id=employer.id)
    assert "needs a learner" in problems_of(excinfo)["subject"]
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", dict(CONCERN), subject_id=99999)
    assert problems_of(excinfo)["subject"] == "There is no item #99999"


def test_unknown_type_template_and_assignee(system, learner):
    with pytest.raises(NotFound, match="no tracker type 'nope'"):
        system.create("nope", {})
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern", {}, subject_id=learner.id, template="missing", assignee="ghost")
    found = problems_of(excinfo)
    assert found["template"] == "Safeguarding concern has no template 'missing'"
    assert found["assignee"] == "There is no active user 'ghost'"


def test_template_prefills_and_data_overrides(system, learner):
    item = system.create(
        "concern", {"reported_on": "2025-09-02", "severity": "none"}, subject_id=learner.id, template="online"
    )
    assert item.data == {"category": "online", "severity": "none", "reported_on": "2025-09-02"}


def test_update_records_field_diff_and_bumps_version(system, learner):
    item = system.create("concern", {**CONCERN, "actions": [{"date": "2025-09-02"}]}, subject_id=learner.id)
    item = system.update(item.id, changes={"severity": "none", "actions": [{"date": "2025-09-02", "note": "rang"}]})
    assert item.version == 2
    updated = system.history(item.id)[-1]
    assert updated.kind == "updated"
    assert updated.payload["changes"] == [
        {"path": "/actions/0/note", "old": None, "new": "rang"},
        {"path": "/severity", "old": "low", "new": "none"},
    ]


def test_update_with_stale_version_is_refused(system, learner):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    system.update(item.id, changes={"hours": 1}, expected_version=1)
    with pytest.raises(Conflict, match="version 1, it is now at version 2"):
        system.update(item.id, changes={"hours": 2}, expected_version=1)
    assert system.get(item.id).data["hours"] == 1


def test_invalid_update_changes_nothing(system, learner, session):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    before = counts(session)
    with pytest.raises(ValidationFailed):
        system.update(item.id, changes={"hours": -1})
    session.expire_all()
    assert system.get(item.id).data == CONCERN
    assert system.get(item.id).version == 1
    assert counts(session) == before


def test_identity_prevents_duplicates_and_names_the_existing_item(system, learner):
    first = system.create("concern", {**CONCERN, "reference": "SC-0001"}, subject_id=learner.id)
    with pytest.raises(DuplicateItem) as excinfo:
        system.create("concern", {**CONCERN, "reference": "SC-0001"}, subject_id=learner.id)
    assert excinfo.value.existing_id == first.id
    assert f"already exists: #{first.id}" in excinfo.value.problems[0].message
    with pytest.raises(DuplicateItem):
        system.create("learner", dict(LEARNER))


def test_transition_runs_actions_and_writes_outbox(system, learner, make_user, service_for, session):
    lead = make_user("lead", "dsl")
    reporter = make_user("reporter", "tracker_creator")
    item = service_for(reporter).create("concern", dict(CONCERN), subject_id=learner.id)
    notifications_before = session.scalar(select(func.count()).select_from(Outbox).where(Outbox.kind == "notify"))
    item = service_for(lead).transition(item.id, "investigating")
    assert item.status == "investigating"
    assert item.data["started_on"] == date.today().isoformat()
    assert item.assignee.username == "lead"
    kinds = [e.kind for e in system.history(item.id)]
    assert kinds == ["created", "updated", "transitioned", "assigned"]
    # assigning yourself sends nothing; the notify action still tells the assignee
    notes = session.scalars(select(Outbox).where(Outbox.kind == "notify")).all()
    assert len(notes) == notifications_before + 1
    assert notes[-1].payload["recipients"] == [lead.user_id]
    assert notes[-1].payload["link"] == f"/items/{item.id}"


def test_transition_refusals_say_why(system, learner, make_user, service_for, session):
    item = system.create("concern", {**CONCERN, "severity": "none"}, subject_id=learner.id)
    with pytest.raises(ValidationFailed) as excinfo:
        system.transition(item.id, "closed")
    assert "cannot move to 'Closed'" in problems_of(excinfo)["status"]
    assert "investigating (Start investigation)" in excinfo.value.problems[0].advice
    with pytest.raises(ValidationFailed, match="not a state"):
        system.transition(item.id, "limbo")
    with pytest.raises(ValidationFailed) as excinfo:
        system.transition(item.id, "investigating")
    assert "its condition is not met" in problems_of(excinfo)["status"]
    system.update(item.id, changes={"severity": None})
    with pytest.raises(ValidationFailed) as excinfo:
        system.transition(item.id, "investigating")
    assert problems_of(excinfo) == {"/severity": "Severity must be filled to 'Start investigation'"}
    clerk = make_user("clerk", "tracker_creator")
    with pytest.raises(PermissionDenied, match="Only these may: dsl"):
        service_for(clerk).transition(item.id, "investigating", data={"severity": "low"})
    session.expire_all()
    assert system.get(item.id).status == "new"


def test_transition_data_is_validated_for_the_target_state(system, learner, make_user):
    make_user("lead", "dsl")
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    system.transition(item.id, "investigating")
    with pytest.raises(ValidationFailed) as excinfo:
        system.transition(item.id, "closed")
    assert problems_of(excinfo) == {"/outcome": "Outcome must be filled to 'Close'"}
    item = system.transition(item.id, "closed", data={"outcome": "Resolved with the family"})
    assert item.status == "closed"


def test_read_only_state_refuses_changes(system, learner, make_user):
    make_user("lead", "dsl")
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    system.transition(item.id, "investigating")
    system.transition(item.id, "closed", data={"outcome": "done"})
    with pytest.raises(ValidationFailed) as excinfo:
        system.update(item.id, changes={"hours": 3})
    assert problems_of(excinfo) == {"/hours": "Hours spent cannot be changed while the item is 'Closed'"}


def test_state_required_fields(system, learner, make_user):
    make_user("lead", "dsl")
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    system.transition(item.id, "investigating")
    with pytest.raises(ValidationFailed) as excinfo:
        system.update(item.id, changes={"severity": None})
    assert problems_of(excinfo) == {"/severity": "Severity is required while the item is 'Investigating'"}


def test_assign_role_action_without_users_is_refused(system, learner):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    with pytest.raises(ValidationFailed, match="No active user has the role 'dsl'"):
        system.transition(item.id, "investigating")


def test_create_action_makes_item_for_same_subject(system, learner, make_user):
    make_user("lead", "dsl")
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    system.transition(item.id, "investigating")
    system.transition(item.id, "closed", data={"outcome": "ok"})
    system.transition(item.id, "investigating")
    reviews, total = system.list("concern_review")
    assert total == 1
    assert reviews[0].subject_id == learner.id
    assert reviews[0].data == {"reason": "Reopened concern"}
    assert reviews[0].assignee.username == "lead"
    assert system.history(reviews[0].id)[0].payload["cause"] == {"item": item.id, "transition": "reopen"}


def test_wildcard_transition_for_creator_only(learner, make_user, service_for):
    reporter = make_user("reporter", "tracker_creator")
    other = make_user("other", "tracker_creator")
    item = service_for(reporter).create("concern", dict(CONCERN), subject_id=learner.id)
    with pytest.raises(PermissionDenied):
        service_for(other).transition(item.id, "withdrawn")
    assert service_for(reporter).transition(item.id, "withdrawn").status == "withdrawn"


def test_assign_notifies_with_link_and_records_history(system, learner, make_user, session):
    make_user("sam", "tracker_creator")
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    item = system.assign(item.id, "sam")
    assert item.assignee.username == "sam"
    note = session.scalars(select(Outbox).where(Outbox.kind == "notify")).one()
    assert note.payload["link"] == f"/items/{item.id}"
    assert system.history(item.id)[-1].payload == {"from": None, "to": "sam"}


def test_assignee_must_be_able_to_see_the_type(system, learner, make_user):
    make_user("numbers", "payroll")
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    with pytest.raises(ValidationFailed, match="cannot see Safeguarding concern items"):
        system.assign(item.id, "numbers")


def test_comment_and_empty_comment(system, learner):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    system.comment(item.id, "Spoke to the tutor")
    assert system.history(item.id)[-1].payload == {"text": "Spoke to the tutor"}
    with pytest.raises(ValidationFailed, match="empty"):
        system.comment(item.id, "   ")


def test_failed_transition_writes_no_outbox(system, learner, session):
    item = system.create("concern", dict(CONCERN), subject_id=learner.id)
    before = counts(session)
    with pytest.raises(ValidationFailed):
        system.transition(item.id, "investigating")  # no dsl user for the assign action
    assert counts(session) == before


def test_missing_item(system):
    with pytest.raises(NotFound, match="no item #404"):
        system.get(404)


def test_assignee_required_types(system, learner, make_user):
    with pytest.raises(ValidationFailed) as excinfo:
        system.create("concern_review", {}, subject_id=learner.id)
    assert problems_of(excinfo) == {"assignee": "Every Concern review needs an assignee"}
    make_user("lead", "dsl")
    review = system.create("concern_review", {}, subject_id=learner.id, assignee="lead")
    with pytest.raises(ValidationFailed, match="needs an assignee"):
        system.assign(review.id, None)


def test_list_filters_sort_and_search(system, learner, make_user, session):
    make_user("sam", "tracker_creator")
    a = system.create("concern", {**CONCERN, "reported_on": "2025-09-03"}, subject_id=learner.id, assignee="sam")
    b = system.create(
        "concern", {**CONCERN, "category": "bullying", "reported_on": "2025-09-01"}, subject_id=learner.id
    )
    found, total = system.list("concern", assignee="sam")
    assert [i.id for i in found] == [a.id] and total == 1
    assert [i.id for i in system.list("concern", assignee="none")[0]] == [b.id]
    assert [i.id for i in system.list("concern", sort="reported_on")[0]] == [b.id, a.id]
    assert [i.id for i in system.list("concern", sort="-reported_on")[0]] == [a.id, b.id]
    assert [i.id for i in system.list("concern", q="bullying")[0]] == [b.id]
    assert system.list("concern", status=["closed"]) == ([], 0)
    assert [i.id for i in system.search_subjects("learner", "1000000043")] == [learner.id]
    assert [i.id for i in system.search_subjects("learner", "smith")] == [learner.id]
    everything, total = system.list(None, subject_id=learner.id)
    assert total == 2
    with pytest.raises(ValidationFailed, match="cannot be sorted by 'colour'"):
        system.list("concern", sort="colour")
    with pytest.raises(ValidationFailed, match="no user 'ghost'"):
        system.list("concern", assignee="ghost")


def test_finance_fields_hidden_from_users_without_finance_view(system, learner, make_user, service_for):
    item = system.create("concern", {**CONCERN, "cost": 120}, subject_id=learner.id)
    clerk = service_for(make_user("clara", "tracker_creator"))
    finance = service_for(make_user("fran", "finance"))
    assert "cost" not in clerk.visible_data(clerk.get(item.id))
    assert finance.visible_data(finance.get(item.id))["cost"] == 120
    assert "cost" not in clerk.visible_payload(item, clerk.history(item.id)[0])["data"]
    with pytest.raises(PermissionDenied, match="finance"):
        clerk.update(item.id, changes={"cost": 0})
    with pytest.raises(PermissionDenied, match="finance"):
        clerk.create("concern", {**CONCERN, "cost": 5}, subject_id=learner.id)
    # saving the whole form the clerk saw keeps the field they could not see
    updated = clerk.update(item.id, data={**clerk.visible_data(item), "hours": 2})
    assert updated.data["cost"] == 120 and updated.data["hours"] == 2
    system.update(item.id, changes={"cost": 150})
    changes = clerk.visible_payload(item, clerk.history(item.id)[-1]).get("changes")
    assert changes == []


def test_finance_fields_cannot_be_removed_with_null_nor_seen_in_warnings(system, learner, make_user, service_for):
    item = system.create("concern", {**CONCERN, "cost": 120}, subject_id=learner.id)
    clerk = service_for(make_user("clara", "tracker_creator"))
    with pytest.raises(PermissionDenied, match="may not set cost"):
        clerk.update(item.id, changes={"cost": None})  # null would remove it
    assert system.get(item.id).data["cost"] == 120
    # a whole-form save that carries the hidden field empty keeps it as it was
    assert clerk.update(item.id, data={**clerk.visible_data(item), "cost": None}).data["cost"] == 120
    item.problems = [{"path": "/cost", "message": "Cost is high"}, {"path": "/contact", "message": "No contact"}]
    assert [w["path"] for w in clerk.visible_warnings(item)] == ["/contact"]
    assert [w["path"] for w in system.visible_warnings(item)] == ["/cost", "/contact"]
