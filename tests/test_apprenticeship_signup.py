"""Apprenticeship sign-up paperwork is documents, as for Compliance: "Signup paperwork
incomplete" counts the open apprenticeships without an accepted document of each sign-up
category, and "Confirm start on programme" is refused, naming the missing documents, until
quality assurance has accepted them all. The old tick boxes are kept only as legacy info."""

from __future__ import annotations

import io
import json

import pytest
from sqlalchemy import func, select

from engine.definitions import load_registry
from engine.errors import ValidationFailed
from engine.models import Event, Item
from engine.permissions import Actor
from engine.services import ItemService, UserService
from engine.services.documents import DocumentService
from engine.tasklists import TaskListService
from tests.apprenticeship_helpers import PDF, SIGNUP_DOCUMENTS, accept_signup_paperwork, paperwork_store
from tests.conftest import LEARNER, ROOT
from tests.webhelpers import cheap_hashing, make_app  # noqa: F401 - cheap_hashing is autouse

APPRENTICESHIP = {"employer_name": "Acme", "start_date": "2030-01-06", "planned_end_date": "2032-01-06"}
LABELS = {
    "commitment_statement": "Signed training plan (commitment statement)",
    "apprenticeship_agreement": "Signed apprenticeship agreement",
    "initial_assessment": "Initial assessment and skills scan",
}


def new_apprenticeship(system: ItemService, learner_id: int, **data) -> Item:
    item = system.create("apprenticeship", {**APPRENTICESHIP, **data}, template="team_leader_l3", subject_id=learner_id)
    system.transition(item.id, "signup")
    return item


def docs(system: ItemService) -> DocumentService:
    return DocumentService(system.session, Actor.system(), system.registry, paperwork_store())


def upload(system: ItemService, item_id: int, category: str) -> int:
    return docs(system).upload(item_id, category, f"{category}.pdf", io.BytesIO(PDF)).id


def test_the_definitions_agree_on_the_signup_documents(registry):
    apprenticeship = registry.type("apprenticeship")
    [start] = [t for t in registry.workflows["apprenticeship"].transitions if t.key == "start_programme"]
    tasklist = apprenticeship.tasklist("signup_incomplete")
    assert start.requires_documents == tasklist.documents_missing == SIGNUP_DOCUMENTS
    assert tasklist.conditions == () and start.condition is None  # no tick box decides any more
    assert {c.key: c.label for c in apprenticeship.documents if c.key in SIGNUP_DOCUMENTS} == LABELS
    assert tasklist.label == registry.type("compliance").tasklist("signup_incomplete").label


def test_the_list_counts_exactly_the_open_apprenticeships_missing_an_accepted_signup_document(
    session, registry, system, learner
):
    nothing = new_apprenticeship(system, learner.id)
    complete = new_apprenticeship(system, learner.id)
    accept_signup_paperwork(system, complete.id)
    waiting = new_apprenticeship(system, learner.id)  # the last one uploaded, not yet checked
    accept_signup_paperwork(system, waiting.id, SIGNUP_DOCUMENTS[:2])
    upload(system, waiting.id, "initial_assessment")
    rejected = new_apprenticeship(system, learner.id)
    accept_signup_paperwork(system, rejected.id, ("commitment_statement", "initial_assessment"))
    docs(system).reject(upload(system, rejected.id, "apprenticeship_agreement"), "The employer has not signed it.")
    other_documents = new_apprenticeship(system, learner.id)  # accepted, but not sign-up paperwork
    accept_signup_paperwork(system, other_documents.id, ("progress_review", "otj_log", "achievement_certificate"))
    ticked = new_apprenticeship(  # the old tick boxes say done: they no longer count
        system,
        learner.id,
        signup_paperwork_complete=True,
        commitment_statement_signed=True,
        initial_assessment_done=True,
    )
    replaced = new_apprenticeship(system, learner.id)  # accepted, then replaced by one waiting for its check
    accept_signup_paperwork(system, replaced.id)
    [agreement] = [d for d in docs(system).list(replaced.id) if d.category == "apprenticeship_agreement"]
    docs(system).upload(
        replaced.id, "apprenticeship_agreement", "agreement-v2.pdf", io.BytesIO(PDF + b"%v2"), replaces=agreement.id
    )
    withdrawn = new_apprenticeship(system, learner.id)  # missing everything, but closed
    system.transition(withdrawn.id, "withdrawn", data={"withdrawal_reason": "personal"})
    system.create("compliance", {"programme_type": "apprenticeship"}, subject_id=learner.id)  # another type

    found, total = TaskListService(session, Actor.system(), registry).items("apprenticeship", "signup_incomplete")
    expected = {nothing.id, waiting.id, rejected.id, other_documents.id, ticked.id, replaced.id}
    assert {i.id for i in found} == expected and total == len(expected)
    counts = {(r["type"], r["key"]): r["count"] for r in TaskListService(session, Actor.system(), registry).summary()}
    assert counts[("apprenticeship", "signup_incomplete")] == len(expected)


def test_starting_on_programme_is_refused_naming_each_missing_document_and_changes_nothing(session, system, learner):
    item = new_apprenticeship(system, learner.id, signup_paperwork_complete=True, commitment_statement_signed=True)
    accept_signup_paperwork(system, item.id, ("commitment_statement",))
    docs(system).reject(upload(system, item.id, "apprenticeship_agreement"), "Unsigned.")
    version = session.get(Item, item.id).version
    events = session.scalar(select(func.count()).select_from(Event).where(Event.item_id == item.id))

    with pytest.raises(ValidationFailed) as refused:
        system.transition(item.id, "on_programme")
    [problem] = refused.value.problems
    assert problem.path == "documents"
    assert problem.message == (
        "'Confirm start on programme' needs accepted documents: "
        "Signed apprenticeship agreement, Initial assessment and skills scan"
    )
    assert "Signed apprenticeship agreement: rejected: upload a corrected one" in problem.advice
    assert "Initial assessment and skills scan: none uploaded yet" in problem.advice
    session.expire_all()
    reloaded = session.get(Item, item.id)
    assert (reloaded.status, reloaded.version) == ("signup", version)
    assert session.scalar(select(func.count()).select_from(Event).where(Event.item_id == item.id)) == events

    # once quality has accepted all three, the step is taken and books the first review
    accept_signup_paperwork(system, item.id, ("apprenticeship_agreement", "initial_assessment"))
    moved = system.transition(item.id, "on_programme")
    assert moved.status == "on_programme" and moved.data["next_review_due"]


def test_records_with_the_old_tick_boxes_stay_valid_and_new_ones_start_without_them(system, learner):
    old = system.create(
        "apprenticeship",
        {**APPRENTICESHIP, "signup_paperwork_complete": False, "commitment_statement_signed": True},
        template="team_leader_l3",
        subject_id=learner.id,
    )
    assert system.update(old.id, changes={"notes": "Edited after the change"}).data["commitment_statement_signed"]
    template = system.registry.type("apprenticeship").template("team_leader_l3").data
    assert not {"signup_paperwork_complete", "commitment_statement_signed", "initial_assessment_done"} & set(template)
    layout = {s.name: s for s in system.registry.type("apprenticeship").layout}
    legacy = layout["Old sign-up tick boxes"]
    assert (
        set(legacy.hidden)
        == set(legacy.fields)
        == {
            "signup_paperwork_complete",
            "commitment_statement_signed",
            "initial_assessment_done",
        }
    )
    valid = json.loads((ROOT / "examples" / "data" / "apprenticeship" / "valid.json").read_text())
    assert "signup_paperwork_complete" not in valid


def test_the_demo_shows_apprentices_at_each_stage_of_their_paperwork(session, tmp_path):
    from engine import demo

    registry = load_registry()
    demo.load(session, registry, tmp_path)
    tasks = TaskListService(session, Actor.system(), registry)
    found, total = tasks.items("apprenticeship", "signup_incomplete", limit=100)
    statuses = {i.status for i in found}
    assert 0 < total < session.scalar(select(func.count()).where(Item.type_key == "apprenticeship"))
    assert statuses == {"new", "signup"}  # every apprentice on programme had their paperwork accepted
    ready = session.scalars(select(Item).where(Item.type_key == "apprenticeship", Item.status == "signup")).all()
    assert {i.id for i in ready} - {i.id for i in found}  # someone is ready for quality to confirm the start


def test_the_api_refuses_the_start_with_a_422_naming_the_documents(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    rt = app.extensions["tracker"]
    try:
        with rt.session() as session:
            users = UserService(session, rt.registry)
            users.create("quinn", ["quality"])
            _token, token = users.create_token("quinn", "tests")
            system = ItemService(session, Actor.system(), rt.registry)
            learner = system.create("learner", dict(LEARNER))
            item_id = new_apprenticeship(system, learner.id).id
        client = app.test_client()
        response = client.post(
            f"/api/v1/items/{item_id}/transitions",
            json={"to": "on_programme"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 422
        body = json.dumps(response.json)
        assert "needs accepted documents: " + ", ".join(LABELS.values()) in body
        with rt.session() as session:
            assert session.get(Item, item_id).status == "signup"
    finally:
        rt.engine.dispose()
