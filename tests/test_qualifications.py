"""Qualifications on a learner: added by QAN (validated, one per learner), the anticipated
award date changed with its history, the learner page, the API and the command line."""

from __future__ import annotations

import json
from datetime import date, timedelta

import pytest

from engine.definitions import load_registry
from engine.errors import ValidationFailed
from engine.services.items import DuplicateItem
from engine.tasklists import TaskListService
from tests import webhelpers
from tests.conftest import LEARNER, TEST_DEFINITIONS
from tests.import_helpers import ULNS
from tests.webhelpers import cheap_hashing, create_users, csrf, sign_in  # noqa: F401 - cheap_hashing is autouse

new_app = webhelpers.new_app

QUAL = {"qan": "603/2994/6", "title": "BTEC National Extended Diploma in Engineering", "awarding_body": "Pearson"}


@pytest.fixture
def ann(system):
    return system.create("learner", {**LEARNER, "uln": ULNS[0]})


# -- the type --------------------------------------------------------------------------------------------


def test_a_qan_is_checked_with_advice(system, ann):
    with pytest.raises(ValidationFailed) as refused:
        system.create("qualification", {"qan": "60329946"}, subject_id=ann.id)
    (problem,) = refused.value.problems
    assert (problem.path, problem.message) == ("/qan", "QAN is not in the expected format")
    assert problem.advice.startswith("Write the QAN as three digits, four digits and a check character")
    assert "601/2345/6" in problem.advice
    item = system.create("qualification", {"qan": "601/7777/X"}, subject_id=ann.id)
    assert item.title == f"601/7777/X for {ann.title}" and item.status == "registered"


def test_a_learner_holds_each_qan_once(system, ann):
    first = system.create("qualification", dict(QUAL), subject_id=ann.id)
    with pytest.raises(DuplicateItem) as refused:
        system.create("qualification", {"qan": "603/2994/6"}, subject_id=ann.id)
    (problem,) = refused.value.problems
    assert problem.path == "/qan"
    assert problem.message == (
        f"A Qualification with learner #{ann.id}, QAN 603/2994/6 already exists: #{first.id} {first.title}"
    )
    assert refused.value.existing_id == first.id
    bob = system.create("learner", {**LEARNER, "given_name": "Bob", "uln": ULNS[1]})
    assert system.create("qualification", {"qan": "603/2994/6"}, subject_id=bob.id).id != first.id


def test_changing_the_anticipated_award_date_is_recorded(system, ann):
    item = system.create("qualification", {**QUAL, "anticipated_award_date": "2027-07-31"}, subject_id=ann.id)
    assert item.due_date == date(2027, 7, 31)
    item = system.update(item.id, changes={"anticipated_award_date": "2027-08-31"})
    assert item.due_date == date(2027, 8, 31)
    updated = [e for e in system.history(item.id) if e.kind == "updated"]
    assert updated[-1].payload["changes"] == [
        {"path": "/anticipated_award_date", "old": "2027-07-31", "new": "2027-08-31"}
    ]
    with pytest.raises(ValidationFailed) as refused:
        system.update(item.id, changes={"start_date": "2027-09-01"})
    assert refused.value.problems[0].message == "The anticipated award date is before the start date"


def test_without_an_anticipated_award_date_there_is_a_problem_to_fix(system, ann):
    item = system.create("qualification", dict(QUAL), subject_id=ann.id)
    assert [w["message"] for w in item.problems] == ["The anticipated award date is not set"]


def test_achieving_needs_the_actual_award_date_and_then_the_record_is_locked(system, ann):
    item = system.create("qualification", {**QUAL, "start_date": "2025-09-01"}, subject_id=ann.id)
    with pytest.raises(ValidationFailed) as refused:
        system.transition(item.id, "achieved")
    assert refused.value.problems[0].message == "Actual award date must be filled to 'Record achievement'"
    item = system.transition(item.id, "achieved", data={"actual_award_date": "2026-07-15"})
    assert item.status == "achieved" and item.problems == []
    with pytest.raises(ValidationFailed) as refused:
        system.update(item.id, changes={"anticipated_award_date": "2027-01-01"})
    assert "cannot be changed while the item is 'Achieved'" in refused.value.problems[0].message


def test_task_lists_of_awards_due_and_overdue(system, ann, session, registry):
    soon = (date.today() + timedelta(days=30)).isoformat()
    past = (date.today() - timedelta(days=1)).isoformat()
    system.create("qualification", {**QUAL, "anticipated_award_date": soon}, subject_id=ann.id)
    system.create("qualification", {"qan": "601/7777/X", "anticipated_award_date": past}, subject_id=ann.id)
    system.create("qualification", {"qan": "500/1234/5"}, subject_id=ann.id)
    lists = TaskListService(session, system.actor, registry)
    counts = {
        key: lists.count(*lists.find("qualification", key))
        for key in ("due_90_days", "award_date_passed", "no_award_date")
    }
    assert counts == {"due_90_days": 1, "award_date_passed": 1, "no_award_date": 1}


def test_identity_may_name_the_subject_only_on_a_type_with_one(tmp_path):
    import shutil

    import yaml

    defs = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, defs)
    folder = defs / "tracker_types" / "note"
    folder.mkdir()
    (folder / "schema.json").write_text(json.dumps({"type": "object", "properties": {"ref": {"type": "string"}}}))
    manifest = {"key": "note", "name": "Note", "version": 1, "workflow": "record", "subject": "none"}
    (folder / "type.yaml").write_text(yaml.safe_dump({**manifest, "identity": ["subject", "ref"]}, sort_keys=False))
    registry = load_registry([defs])
    problems = [p for p in registry.problems if "note" in str(p)]
    assert len(problems) == 1
    text = str(problems[0])
    assert "type.yaml:" in text and "/identity/0" in text
    assert "identity 'subject' needs a type with a subject, but this type has 'subject: none'" in text
    assert "note" not in registry.types


# -- the web ---------------------------------------------------------------------------------------------


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, clerk=["tracker_creator"], mona=["manager"])
    return app


def seed(app, *qualifications: dict) -> tuple[int, list[int]]:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, "clerk"))
        learner = service.create("learner", {**LEARNER, "uln": ULNS[0]})
        ids = [service.create("qualification", dict(q), subject_id=learner.id).id for q in qualifications]
        return learner.id, ids


def test_the_learner_page_lists_qualifications_with_their_anticipated_award_dates(app):
    learner_id, (late, soon, _none, _structured) = seed(
        app,
        {**QUAL, "anticipated_award_date": "2027-07-31", "level": "3"},
        {"qan": "601/7777/X", "title": "Functional Skills maths", "anticipated_award_date": "2026-12-31"},
        {"qan": "500/1234/5"},
        {"qan": "603/4372/X", "title": "Customer service practitioner"},  # has units and criteria
    )
    client = app.test_client()
    sign_in(client, "clerk")
    page = client.get(f"/learners/{learner_id}").get_data(as_text=True)
    section = page[page.index('id="qualifications"') : page.index("</section>", page.index('id="qualifications"'))]
    # progress for the QAN with a structure, a dash (with why) for the others
    assert 'aria-label="0% complete"' in section and section.count('title="No units and criteria') == 3
    assert section.index("601/7777/X") < section.index("603/2994/6") < section.index("500/1234/5")  # soonest first
    assert '<td>2027-07-31 · <a href="/qualifications/' in section and "Level 3" in section and "not set" in section
    assert f'href="/qualifications/{soon}/award-date"' in section
    assert f"/items/new?type=qualification&amp;subject={learner_id}" in section
    assert "import several from a spreadsheet" in section
    reader = app.test_client()
    sign_in(reader, "mona")
    section = reader.get(f"/learners/{learner_id}").get_data(as_text=True)
    assert "603/2994/6" in section and "/award-date" not in section and "Add a qualification" not in section


def test_the_anticipated_award_date_is_changed_with_its_history(app):
    learner_id, (item_id,) = seed(app, {**QUAL, "anticipated_award_date": "2027-07-31"})
    client = app.test_client()
    sign_in(client, "clerk")
    url = f"/qualifications/{item_id}/award-date"
    page = client.get(url).get_data(as_text=True)
    assert 'value="2027-07-31"' in page and "<td>—</td><td>2027-07-31</td>" in page

    token = csrf(client, url)
    response = client.post(url, data={"csrf_token": token, "anticipated_award_date": "31/08/2027", "version": "1"})
    assert response.status_code == 303 and response.headers["Location"] == f"/learners/{learner_id}"
    learner_page = client.get(f"/learners/{learner_id}").get_data(as_text=True)
    assert "is now 2027-08-31" in learner_page and "2027-08-31" in learner_page
    history = client.get(url).get_data(as_text=True)
    assert "<td>2027-07-31</td><td>2027-08-31</td>" in history

    bad = client.post(url, data={"csrf_token": token, "anticipated_award_date": "31/02/2027", "version": "2"})
    assert bad.status_code == 422
    text = bad.get_data(as_text=True)
    assert "Anticipated award date must be a date" in text and 'aria-invalid="true"' in text

    stale = client.post(url, data={"csrf_token": token, "anticipated_award_date": "2027-09-30", "version": "1"})
    assert stale.status_code == 409 and "changed by someone else" in stale.get_data(as_text=True)

    reader = app.test_client()
    sign_in(reader, "mona")
    page = reader.get(url).get_data(as_text=True)
    assert "You may not change it." in page
    assert (
        reader.post(url, data={"csrf_token": csrf(reader, url), "anticipated_award_date": "2028-01-01"}).status_code
        == 403
    )


def test_the_award_date_page_is_only_for_qualifications(app):
    learner_id, _ids = seed(app)
    client = app.test_client()
    sign_in(client, "clerk")
    response = client.get(f"/qualifications/{learner_id}/award-date")
    assert response.status_code == 404 and "is not a qualification" in response.get_data(as_text=True)


def test_qualifications_through_the_api(app):
    learner_id, _ids = seed(app)
    rt = app.extensions["tracker"]
    with rt.session() as session:
        _token, text = rt.users(session).create_token("clerk", "test")
    client = app.test_client()
    headers = {"Authorization": f"Bearer {text}"}
    body = {"type": "qualification", "subject": learner_id, "data": dict(QUAL)}
    created = client.post("/api/v1/items", json=body, headers=headers)
    assert created.status_code == 201, created.get_json()
    again = client.post("/api/v1/items", json=body, headers=headers)
    assert again.status_code == 409
    bad = client.post("/api/v1/items", json={**body, "data": {"qan": "603-2994-6"}}, headers=headers)
    assert bad.status_code == 422
    assert bad.get_json()["errors"][0]["path"] == "/qan"
    item_id = created.get_json()["id"]
    patched = client.patch(
        f"/api/v1/items/{item_id}",
        json={"version": 1, "data": {"anticipated_award_date": "2027-07-31"}},
        headers=headers,
    )
    assert patched.status_code == 200, patched.get_json()
    assert patched.get_json()["data"]["anticipated_award_date"] == "2027-07-31"


# -- the command line ------------------------------------------------------------------------------------


def test_qualifications_from_the_command_line(run):
    run("db", "upgrade")
    learner = {**LEARNER, "uln": ULNS[0]}
    run("items", "create", "--type", "learner", "--data", json.dumps(learner))
    created = run("items", "create", "--type", "qualification", "--subject", "1", "--data", json.dumps(QUAL))
    assert (
        "Created #2 '603/2994/6 BTEC National Extended Diploma in Engineering for Jane Smith' (Registered)."
        in created.stdout
    )
    again = run(
        "items", "create", "--type", "qualification", "--subject", "1", "--data", '{"qan": "603/2994/6"}', ok=False
    )
    assert again.returncode == 1 and "already exists: #2" in again.stderr
    bad = run("items", "create", "--type", "qualification", "--subject", "1", "--data", '{"qan": "6032994"}', ok=False)
    assert "/qan: QAN is not in the expected format" in bad.stderr and "-> Write the QAN" in bad.stderr
    run("items", "update", "2", "--data", '{"anticipated_award_date": "2027-07-31"}')
    history = run("items", "history", "2").stdout
    assert "/anticipated_award_date: (empty) -> 2027-07-31" in history
