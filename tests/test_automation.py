"""Process automations, engine side, on SQLite and PostgreSQL: each kind of trigger, once per
trigger, as their creator, the dry run, and the checks made when one is saved."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta

import pytest
from sqlalchemy import func, select

from engine import db
from engine.config import Settings
from engine.errors import PermissionDenied, ValidationFailed
from engine.models import AutomationRun, Event, Item, Outbox, RoleGrant, User
from engine.outbox import Relay
from engine.permissions import Actor
from engine.services import ItemService, UserService
from engine.services.automation import AutomationService
from tests.apprenticeship_helpers import start_on_programme
from tests.conftest import LEARNER, TEST_DEFINITIONS, problems_of
from tests.webhelpers import cheap_hashing  # noqa: F401 - autouse: users are made quickly

#: Monday 10 March 2031, 07:30 in London (GMT then), as the naive UTC the engine keeps
MONDAY = datetime(2031, 3, 10, 7, 30)
TODAY = MONDAY.date()


def day(offset: int) -> str:
    return (TODAY + timedelta(days=offset)).isoformat()


@pytest.fixture
def people(make_user) -> dict[str, Actor]:
    return {
        "alex": make_user("alex", "automation_creator", "tracker_creator"),
        "asha": make_user("asha", "assessor"),
        "tom": make_user("tom", "assessor"),
        "quinn": make_user("quinn", "quality"),
        "clara": make_user("clara", "tracker_creator"),
    }


def runner(session, registry, now: datetime = MONDAY) -> AutomationService:
    return AutomationService(session, registry, clock=lambda: now)


def apprentice(system: ItemService, learner_id: int, assessor: str, *, on_programme: bool = True, **data) -> Item:
    """An apprenticeship for the learner, assigned to ``assessor``, on programme unless told."""
    values = {
        "employer_name": "Solent Logistics Ltd",
        "start_date": day(-300),
        "planned_end_date": day(300),
        **data,
    }
    item = system.create("apprenticeship", values, template="team_leader_l3", subject_id=learner_id, assignee=assessor)
    if on_programme:
        start_on_programme(system, item.id)
    return item


def new_learner(system: ItemService, n: int) -> Item:
    from engine.demo import uln_from

    return system.create("learner", {**LEARNER, "given_name": f"Learner{n}", "uln": uln_from(200000000 + n * 101)})


def automation(service: ItemService, data: dict | None = None, *, template: str | None = None) -> Item:
    """An automation made by the service's actor and switched on."""
    item = service.create("process_automation", data, template=template)
    service.transition(item.id, "active")
    return item


def history(session, automation_id: int) -> list[str]:
    stmt = select(Event).where(Event.item_id == automation_id, Event.kind == "automation_ran").order_by(Event.id)
    return [e.payload["summary"] for e in session.scalars(stmt)]


def items_of(session, type_key: str) -> list[Item]:
    return list(session.scalars(select(Item).where(Item.type_key == type_key).order_by(Item.id)))


# -- the shipped example: a schedule ---------------------------------------------------------------


def test_every_monday_an_hs_review_for_each_apprentice_not_reviewed_for_12_weeks(
    session, registry, system, service_for, people
):
    due = apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-100))
    apprentice(system, new_learner(system, 2).id, "tom", last_hs_review_date=day(-20))  # reviewed lately
    apprentice(system, new_learner(system, 3).id, "tom", on_programme=False, last_hs_review_date=day(-200))
    auto = automation(service_for(people["alex"]), template="weekly_hs_reviews")

    [report] = runner(session, registry).run_due()
    [review] = items_of(session, "hs_review")
    assert report.summary().startswith(
        f"Ran for 1 item (every Monday at 07:00, 10 Mar 2031 07:00): created #{review.id}"
    )
    assert review.subject_id == due.subject_id and review.assignee.username == "asha"
    assert review.created_by_id == people["alex"].user_id  # made as the automation's creator
    assert review.data == {
        "review_kind": "workplace_visit",
        "apprenticeship_id": due.id,
        "employer_name": "Solent Logistics Ltd",
        "last_review_date": day(-100),
        "due_by": day(14),
    }
    assert history(session, auto.id) == [report.summary()]
    # the assessor heard of it like of any assignment
    notified = session.scalars(select(Outbox).where(Outbox.kind == "notify", Outbox.item_id == review.id)).all()
    assert [o.payload["recipients"] for o in notified] == [[people["asha"].user_id]]

    # the same occurrence again (a second scheduler, a re-run): nothing, not even a history line
    assert runner(session, registry, MONDAY + timedelta(hours=3)).run_due() == []
    assert len(items_of(session, "hs_review")) == 1 and len(history(session, auto.id)) == 1

    # next Monday the review is still open: skipped, and said so
    [report] = runner(session, registry, MONDAY + timedelta(days=7)).run_due()
    assert len(items_of(session, "hs_review")) == 1
    assert "skipped 1 (an earlier one is still open)" in report.summary()

    # Wednesday the assessor records it: the apprenticeship's last review is now that day,
    # in its history as the assessor's change, caused by the review
    wednesday = TODAY + timedelta(days=9)
    asha = ItemService(session, people["asha"], registry, today=lambda: wednesday)
    done = {"review_date": wednesday.isoformat(), "reviewer": "Asha", "outcome": "satisfactory"}
    asha.transition(review.id, "completed", data=done)
    session.refresh(due)
    assert due.data["last_hs_review_date"] == wednesday.isoformat()
    updated = session.scalars(select(Event).where(Event.item_id == due.id).order_by(Event.id.desc())).first()
    assert updated.kind == "updated"
    assert updated.actor_id == people["asha"].user_id
    assert updated.payload == {
        "changes": [{"path": "/last_hs_review_date", "old": day(-100), "new": wednesday.isoformat()}],
        "cause": {"item": review.id, "transition": "complete"},
    }

    def reviews_for(apprenticeship: Item) -> list[Item]:
        return [r for r in items_of(session, "hs_review") if r.data["apprenticeship_id"] == apprenticeship.id]

    # so the next Monday books nothing for that apprentice, nor any Monday for 12 weeks after
    # the review (the apprentice reviewed 20 days before the first Monday comes due meanwhile)
    [report] = runner(session, registry, MONDAY + timedelta(weeks=2)).run_due()
    assert report.outcomes == [] and report.failure is None
    for weeks in range(3, 14):
        runner(session, registry, MONDAY + timedelta(weeks=weeks)).run_due()
    assert reviews_for(due) == [review]

    # the first Monday more than 12 weeks after the review books the next one, from that date
    [report] = runner(session, registry, MONDAY + timedelta(weeks=14)).run_due()
    first, second = reviews_for(due)
    assert first == review and f"created #{second.id}" in report.summary()
    assert second.data["last_review_date"] == wednesday.isoformat() and second.assignee.username == "asha"


def test_a_schedule_runs_only_while_active_and_not_for_occurrences_before_it_was_switched_on(
    session, registry, system, service_for, people
):
    apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-100))
    alex = service_for(people["alex"])
    draft = alex.create("process_automation", template="weekly_hs_reviews")
    assert runner(session, registry).run_due() == []  # a draft does not run
    alex.transition(draft.id, "active")
    # the clock says it is Monday 2031, but switched on "now" (before it), so Monday 2031 is due...
    assert len(runner(session, registry).run_due()) == 1
    alex.transition(draft.id, "paused")
    assert runner(session, registry, MONDAY + timedelta(days=7)).run_due() == []  # paused: no run
    # ... while an occurrence before the automation was switched on never runs
    alex.transition(draft.id, "active")
    assert runner(session, registry, datetime(2020, 1, 6, 8, 0)).run_due() == []


def test_a_scheduled_notification_without_items(session, registry, service_for, people, make_user):
    make_user("chris", "tracker_creator")
    auto = automation(service_for(people["alex"]), template="weekly_ilr_reminder")
    [report] = runner(session, registry, MONDAY + timedelta(hours=1)).run_due()
    assert report.summary() == "Ran (every Monday at 08:00, 10 Mar 2031 08:00): notified 3 people"
    [row] = session.scalars(select(Outbox).where(Outbox.idempotency_key.like(f"automation:{auto.id}:%"))).all()
    creators = session.scalars(select(User.id).join(RoleGrant).where(RoleGrant.role == "tracker_creator")).all()
    assert row.payload["recipients"] == sorted(creators) and row.payload["reason"] == "automation"
    assert row.payload["text"] == "Check the ILR records ready to submit before the return"
    # before 08:00 that Monday, the last occurrence was the Monday before, before it existed
    assert runner(session, registry, MONDAY + timedelta(days=7)).run_due() == []


def test_two_schedulers_on_the_same_occurrence_create_once(engine, session, registry, system, service_for, people):
    for n in range(4):
        apprentice(system, new_learner(system, n).id, "asha", last_hs_review_date=day(-100))
    automation(service_for(people["alex"]), template="weekly_hs_reviews")
    factory = db.session_factory(engine)
    barrier, reports, errors = threading.Barrier(2), [], []

    def run() -> None:
        try:
            with factory() as own:
                barrier.wait()
                reports.extend(runner(own, registry).run_due())
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(items_of(session, "hs_review")) == 4
    assert len(reports) == 1  # the occurrence was claimed by one of them


def test_a_run_that_died_is_taken_over_and_does_nothing_twice(session, registry, system, service_for, people):
    first = apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-100))
    apprentice(system, new_learner(system, 2).id, "tom", last_hs_review_date=day(-100))
    auto = automation(service_for(people["alex"]), template="weekly_hs_reviews")
    key = "schedule:2031-03-10T07:00"
    # a scheduler claimed the occurrence, did the first apprentice, and died
    session.add(AutomationRun(automation_id=auto.id, trigger_key=key, target_key="*", status="running", at=MONDAY))
    session.add(AutomationRun(automation_id=auto.id, trigger_key=key, target_key=str(first.id), status="done"))
    session.commit()
    assert runner(session, registry, MONDAY + timedelta(minutes=5)).run_due() == []  # still its claim
    [report] = runner(session, registry, MONDAY + timedelta(minutes=20)).run_due()  # the claim went stale
    assert len(items_of(session, "hs_review")) == 1
    assert "created #" in report.summary() and "skipped 1 (already done)" in report.summary()


# -- item events -----------------------------------------------------------------------------------


def events(session, item_id: int, kind: str) -> list[Outbox]:
    stmt = select(Outbox).where(Outbox.kind == "item_event", Outbox.item_id == item_id).order_by(Outbox.id)
    return [o for o in session.scalars(stmt) if o.payload.get("event") == kind]


def deliver(session, registry, row: Outbox, now: datetime = MONDAY):
    return runner(session, registry, now).on_event(row.id, row.payload, row.created_at)


def test_transitioned_into_a_state_assigns_once_per_event(session, registry, system, service_for, people):
    auto = automation(service_for(people["alex"]), template="gateway_to_quality")
    item = apprentice(system, new_learner(system, 1).id, "asha", gateway_date=day(0), english_maths_met=True)
    system.transition(item.id, "gateway")
    [row] = [e for e in events(session, item.id, "transitioned") if e.payload["to"] == "gateway"]
    [report] = deliver(session, registry, row)
    assert report.summary() == f"Ran for 1 item (transitioned #{item.id}): assigned #{item.id} to quinn"
    session.refresh(item)
    assert item.assignee.username == "quinn"
    # the same event delivered again (a retried outbox row) does nothing
    assert deliver(session, registry, row) == []
    assert history(session, auto.id) == [report.summary()]
    # an event of another state does not match
    [signup] = [e for e in events(session, item.id, "transitioned") if e.payload["to"] == "signup"]
    assert deliver(session, registry, signup) == []


def test_created_and_assigned_events(session, registry, system, service_for, people):
    alex = service_for(people["alex"])
    on_create = automation(
        alex,
        {
            "name": "Paperwork check for new job outcomes",
            "trigger": {"event": "created"},
            "scope": {
                "type_key": "job",
                "filter": {"all": [{"field": "evidence_received", "op": "eq", "value": "no"}]},
            },
            "action": {
                "do": "create_item",
                "type_key": "compliance",
                "template": "adult_skills_enrolment",
                "values": [
                    {"field": "notes", "value": "Evidence missing for {{ data.job_title }} at {{ data.employer_name }}"}
                ],
                "assign_to": "role:quality",
            },
        },
    )
    on_assign = automation(
        alex,
        {
            "name": "Tell the assessor",
            "trigger": {"event": "assigned"},
            "scope": {"type_key": "job"},
            "action": {"do": "notify", "recipient": "assignee", "message": "{{ item.title }} is yours now"},
        },
    )
    learner = new_learner(system, 1)
    job = {"employer_name": "Acme Ltd", "job_title": "Driver", "start_date": day(-5), "hours_per_week": 37.5}
    matching = system.create("job", {**job, "evidence_received": False}, subject_id=learner.id, assignee="tom")
    other = system.create("job", {**job, "evidence_received": True}, subject_id=learner.id)
    [created] = events(session, matching.id, "created")
    [report] = deliver(session, registry, created)
    [compliance] = [c for c in items_of(session, "compliance") if c.created_by_id == people["alex"].user_id]
    assert report.outcomes[0].result_id == compliance.id and compliance.assignee.username == "quinn"
    assert compliance.data["notes"] == "Evidence missing for Driver at Acme Ltd"
    assert compliance.subject_id == learner.id
    assert deliver(session, registry, events(session, other.id, "created")[0]) == []  # the filter says no
    [assigned] = events(session, matching.id, "assigned")
    [report] = deliver(session, registry, assigned)
    assert report.automation_id == on_assign.id and report.summary().endswith(f"notified 1 person about #{matching.id}")
    [note] = session.scalars(select(Outbox).where(Outbox.idempotency_key.like(f"automation:{on_assign.id}:%"))).all()
    assert note.payload["recipients"] == [people["tom"].user_id] and note.payload["text"].endswith("is yours now")
    assert on_create.id != on_assign.id


def test_events_reach_automations_through_the_outbox_relay(engine, session, registry, system, service_for, people):
    automation(service_for(people["alex"]), template="gateway_to_quality")
    item = apprentice(system, new_learner(system, 1).id, "asha", gateway_date=day(0), english_maths_met=True)
    system.transition(item.id, "gateway")
    settings = Settings(instance_path=TEST_DEFINITIONS, database_url=str(engine.url), secret_key="x")
    relay = Relay(db.session_factory(engine), registry, settings, clock=lambda: MONDAY)
    relay.run_until_empty()
    session.expire_all()
    assert session.get(Item, item.id).assignee.username == "quinn"
    relay.run_until_empty()  # nothing new: nothing more happens
    assert (
        len([e for e in ItemService(session, Actor.system(), registry).history(item.id) if e.kind == "assigned"]) == 2
    )


def test_an_event_from_before_the_automation_was_switched_on_does_not_run_it(
    session, registry, system, service_for, people
):
    item = apprentice(system, new_learner(system, 1).id, "asha", gateway_date=day(0), english_maths_met=True)
    system.transition(item.id, "gateway")
    automation(service_for(people["alex"]), template="gateway_to_quality")
    [row] = [e for e in events(session, item.id, "transitioned") if e.payload["to"] == "gateway"]
    assert deliver(session, registry, row) == []


# -- dates -----------------------------------------------------------------------------------------


def test_a_date_reached_notifies_once_per_item_and_date(session, registry, system, service_for, people):
    auto = automation(service_for(people["alex"]), template="review_reminder")  # a week before next_review_due
    soon = apprentice(system, new_learner(system, 1).id, "asha")
    later = apprentice(system, new_learner(system, 2).id, "tom")
    system.update(soon.id, changes={"next_review_due": day(7)})
    system.update(later.id, changes={"next_review_due": day(20)})
    [report] = runner(session, registry).run_due()
    assert report.summary().endswith(f"notified 1 person about #{soon.id}")
    assert runner(session, registry, MONDAY + timedelta(hours=5)).run_due() == []  # the same day again
    # the review moves: the new date is reminded again, when its day comes
    system.update(soon.id, changes={"next_review_due": day(10)})
    assert runner(session, registry, MONDAY + timedelta(days=1)).run_due() == []
    [report] = runner(session, registry, MONDAY + timedelta(days=3)).run_due()
    assert [o.target_id for o in report.outcomes] == [soon.id]
    notes = session.scalars(select(Outbox).where(Outbox.idempotency_key.like(f"automation:{auto.id}:%"))).all()
    assert len(notes) == 2 and {tuple(n.payload["recipients"]) for n in notes} == {(people["asha"].user_id,)}


# -- as the creator --------------------------------------------------------------------------------


def test_a_creator_who_lost_a_permission_stops_the_run_with_the_reason(
    session, registry, system, service_for, people, users
):
    apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-100))
    auto = automation(service_for(people["alex"]), template="weekly_hs_reviews")
    users.set_roles("alex", ["automation_creator"])  # no longer may create Health & Safety reviews
    [report] = runner(session, registry).run_due()
    assert items_of(session, "hs_review") == []
    assert report.count("failed") == 1
    assert "alex may not create Health & Safety review items" in report.summary()
    run = session.scalar(select(AutomationRun).where(AutomationRun.status == "failed"))
    assert run.target_key != "*" and "may not create" in run.detail
    # without automation.create the automation does not run at all
    users.set_roles("alex", ["tracker_creator"])
    [report] = runner(session, registry, MONDAY + timedelta(days=7)).run_due()
    assert report.failure.startswith("its creator alex no longer has 'automation.create'")
    assert history(session, auto.id)[-1].startswith("Did not run (every Monday at 07:00, 17 Mar 2031 07:00)")
    # deactivated: the same
    users.set_roles("alex", ["automation_creator", "tracker_creator"])
    users.deactivate("alex")
    [report] = runner(session, registry, MONDAY + timedelta(days=14)).run_due()
    assert report.failure.startswith("its creator alex is deactivated")


def test_assignee_me_in_the_filter_means_the_creator(session, registry, system, service_for, make_user):
    ash = make_user("ash", "assessor", "automation_creator")
    make_user("tom", "assessor")
    mine = apprentice(system, new_learner(system, 1).id, "ash")
    apprentice(system, new_learner(system, 2).id, "tom")
    data = {
        "name": "Morning nudge",
        "trigger": {"event": "schedule", "every": "weekday", "at": "07:00"},
        "scope": {"type_key": "apprenticeship", "filter": {"status": ["on_programme"], "assignee": "me"}},
        "action": {"do": "notify", "recipient": "assignee", "message": "Good morning: {{ item.title }}"},
    }
    automation(service_for(ash), data)
    [report] = runner(session, registry).run_due()
    assert [o.target_id for o in report.outcomes] == [mine.id]


# -- dry run -----------------------------------------------------------------------------------------


def test_dry_run_lists_what_would_happen_and_changes_nothing(session, registry, system, service_for, people):
    due = apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-100))
    apprentice(system, new_learner(system, 2).id, "tom", last_hs_review_date=day(-20))
    draft = service_for(people["alex"]).create("process_automation", template="weekly_hs_reviews")
    counts = (session.scalar(select(func.count()).select_from(Item)), session.scalar(select(func.count(Event.id))))
    preview = runner(session, registry).preview(draft)
    assert preview.when == "Runs every Monday at 07:00; next on Monday 17 March 2031 at 07:00."
    assert preview.total == 1 and [(r.item.id, r.outcome, r.text) for r in preview.rows] == [
        (due.id, "act", "would create a Health & Safety review, assigned to asha")
    ]
    assert (
        session.scalar(select(func.count()).select_from(Item)),
        session.scalar(select(func.count(Event.id))),
    ) == counts
    assert session.scalar(select(func.count()).select_from(AutomationRun)) == 0
    # a creator without the permission to create is told before it runs
    UserService(session, registry).set_roles("alex", ["automation_creator"])
    [row] = runner(session, registry).preview(draft).rows
    assert row.outcome == "fail" and "may not create Health & Safety review items" in row.text


def test_dry_run_of_a_transition_says_which_items_cannot_move(session, registry, system, service_for, people):
    on_programme = apprentice(system, new_learner(system, 1).id, "asha")
    at_signup = apprentice(system, new_learner(system, 2).id, "tom", on_programme=False)
    system.transition(at_signup.id, "signup")
    draft = service_for(people["alex"]).create(
        "process_automation",
        {
            "name": "Breaks after missed reviews",
            "trigger": {"event": "schedule", "every": "day", "at": "06:30"},
            "scope": {"type_key": "apprenticeship", "filter": {"status_category": ["open"]}},
            "action": {"do": "transition", "to_state": "break_in_learning"},
        },
    )
    rows = {r.item.id: r for r in runner(session, registry).preview(draft).rows}
    assert rows[on_programme.id].text == "would move it to 'break_in_learning'"
    assert rows[at_signup.id].outcome == "fail" and "cannot move from 'Sign-up in progress'" in rows[at_signup.id].text


# -- saving an automation --------------------------------------------------------------------------


def test_only_automation_creators_create_and_change_automations(service_for, people):
    with pytest.raises(PermissionDenied, match="automation.create"):
        service_for(people["clara"]).create("process_automation", template="weekly_ilr_reminder")
    auto = service_for(people["alex"]).create("process_automation", template="weekly_ilr_reminder")
    with pytest.raises(PermissionDenied):
        service_for(people["quinn"]).update(auto.id, changes={"name": "Mine now"})


@pytest.mark.parametrize(
    ("change", "path", "message"),
    [
        ({"scope": {"type_key": "apprentice"}}, "/scope/type_key", "There is no tracker type 'apprentice'"),
        ({"scope": {"type_key": "process_automation"}}, "/scope/type_key", "cannot act on automations"),
        (
            {"trigger": {"event": "transitioned", "state": "onprogramme"}},
            "/trigger/state",
            "'onprogramme' is not a state",
        ),
        (
            {"trigger": {"event": "date_reached", "date_field": "employer_name", "offset_days": 0}},
            "/trigger/date_field",
            "not a date field",
        ),
        (
            {"action": {"do": "create_item", "type_key": "hs_review", "template": "visit"}},
            "/action/template",
            "no template 'visit'",
        ),
        (
            {"action": {"do": "create_item", "type_key": "hs_review", "values": [{"field": "due", "value": "x"}]}},
            "/action/values/0/field",
            "has no field 'due'",
        ),
        (
            {"action": {"do": "create_item", "type_key": "hs_review", "values": [{"field": "notes", "value": "{{ x"}]}},
            "/action/values/0/value",
            "The template does not work",
        ),
        (
            {"action": {"do": "assign", "assign_to": "nobody_here"}},
            "/action/assign_to",
            "There is no active user 'nobody_here'",
        ),
        ({"action": {"do": "assign", "assign_to": "role:wizard"}}, "/action/assign_to", "There is no role 'wizard'"),
        ({"action": {"do": "transition", "to_state": "finished"}}, "/action/to_state", "'finished' is not a state"),
        (
            {
                "scope": {
                    "type_key": "apprenticeship",
                    "filter": {"all": [{"field": "level", "op": "gt", "value": "high"}]},
                }
            },
            "/scope/filter/all/0/value",
            "does not fit",
        ),
        (
            {
                "scope": {
                    "type_key": "apprenticeship",
                    "filter": {"all": [{"field": "start_date", "op": "before", "value": "soon"}]},
                }
            },
            "/scope/filter/all/0/value",
            "'soon' is not a date",
        ),
        (
            {"scope": {"type_key": "employer"}, "action": {"do": "create_item", "type_key": "hs_review"}},
            "/action/type_key",
            "needs a learner, but Employer items have none",
        ),
    ],
)
def test_an_automation_naming_what_does_not_exist_is_refused_with_a_pointer(service_for, people, change, path, message):
    data = {
        "name": "Broken",
        "trigger": {"event": "schedule", "every": "day", "at": "07:00"},
        "scope": {"type_key": "apprenticeship"},
        "action": {"do": "notify", "recipient": "assignee", "message": "Hello"},
        **change,
    }
    with pytest.raises(ValidationFailed) as excinfo:
        service_for(people["alex"]).create("process_automation", data)
    found = {p.path: p for p in excinfo.value.problems}
    assert path in found, excinfo.value.problems
    assert message in found[path].message and found[path].advice


def test_an_event_automation_needs_its_items_and_a_schedule_without_items_only_notifies(service_for, people):
    alex = service_for(people["alex"])
    with pytest.raises(ValidationFailed) as excinfo:
        alex.create(
            "process_automation",
            {
                "name": "x",
                "trigger": {"event": "created"},
                "action": {"do": "notify", "recipient": "quinn", "message": "m"},
            },
        )
    assert "/scope/type_key" in problems_of(excinfo)
    with pytest.raises(ValidationFailed) as excinfo:
        alex.create(
            "process_automation",
            {
                "name": "x",
                "trigger": {"event": "schedule", "every": "day", "at": "07:00"},
                "action": {"do": "notify", "recipient": "assignee", "message": "m"},
            },
        )
    assert "needs an item" in problems_of(excinfo)["/action/recipient"]


def test_loops_are_refused(service_for, people):
    with pytest.raises(ValidationFailed) as excinfo:
        service_for(people["alex"]).create(
            "process_automation",
            {
                "name": "Loop",
                "trigger": {"event": "assigned"},
                "scope": {"type_key": "job"},
                "action": {"do": "assign", "assign_to": "role:quality"},
            },
        )
    assert "again" in problems_of(excinfo)["/action/do"]


def test_a_running_automation_cannot_be_changed_until_paused(service_for, people):
    alex = service_for(people["alex"])
    auto = automation(alex, template="weekly_ilr_reminder")
    with pytest.raises(ValidationFailed) as excinfo:
        alex.update(auto.id, changes={"action": {"do": "notify", "recipient": "quinn", "message": "Hi"}})
    assert all("cannot be changed while the item is 'Active'" in m for m in problems_of(excinfo).values())
    alex.transition(auto.id, "paused")
    alex.update(auto.id, changes={"action": {"do": "notify", "recipient": "quinn", "message": "Hi"}})


def test_today_is_the_automations_day(session, registry, system, service_for, people):
    """Dates in values and filters are the run's day in its time zone, not the machine's."""
    apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-85))  # 12 weeks and a day
    automation(service_for(people["alex"]), template="weekly_hs_reviews")
    [report] = runner(session, registry).run_due()
    assert [i.data["due_by"] for i in items_of(session, "hs_review")] == [(TODAY + timedelta(days=14)).isoformat()]
    assert date.fromisoformat(day(0)) == TODAY and report.count("done") == 1


def test_the_scheduler_tick_runs_due_automations(tmp_path, db_url, session, registry, system, service_for, people):
    from engine.jobs import Scheduler
    from engine.runtime import Runtime

    apprentice(system, new_learner(system, 1).id, "asha", last_hs_review_date=day(-100))
    automation(service_for(people["alex"]), template="weekly_hs_reviews")
    settings = Settings(
        instance_path=tmp_path, database_url=db_url, definitions_path=[TEST_DEFINITIONS], secret_key="x"
    )
    rt = Runtime(settings)
    report = Scheduler(rt, clock=lambda: MONDAY).tick()
    assert report.automations == 1 and not any(p.startswith("automations") for p in report.problems)
    assert Scheduler(rt, clock=lambda: MONDAY + timedelta(minutes=1)).tick().automations == 0
    session.expire_all()
    assert len(items_of(session, "hs_review")) == 1


def test_a_failing_action_on_a_date_is_recorded_once_not_every_minute(session, registry, system, service_for, people):
    """Only assessors and quality move apprentices to gateway, and the creator is neither: the
    failure is in the history once, with why."""
    auto = automation(
        service_for(people["alex"]),
        {
            "name": "Gateway on the planned end date",
            "trigger": {"event": "date_reached", "date_field": "planned_end_date", "offset_days": 0},
            "scope": {"type_key": "apprenticeship", "filter": {"status": ["on_programme"]}},
            "action": {"do": "transition", "to_state": "gateway"},
        },
    )
    item = apprentice(system, new_learner(system, 1).id, "asha", planned_end_date=day(0))
    [report] = runner(session, registry).run_due()
    assert report.count("failed") == 1
    assert f"failed for #{item.id}: alex may not 'Move to gateway' on item #{item.id}" in report.summary()
    for minutes in (1, 2, 60):
        assert runner(session, registry, MONDAY + timedelta(minutes=minutes)).run_due() == []
    assert len(history(session, auto.id)) == 1


def test_a_template_that_breaks_on_the_data_is_a_recorded_failure(session, registry, system, service_for, people):
    apprentice(system, new_learner(system, 1).id, "asha", otj_hours_planned=0)
    auto = automation(
        service_for(people["alex"]),
        {
            "name": "Hours per week",
            "trigger": {"event": "schedule", "every": "day", "at": "07:00"},
            "scope": {"type_key": "apprenticeship"},
            "action": {
                "do": "notify",
                "recipient": "assignee",
                "message": "{{ (data.otj_hours_logged or 0) / data.otj_hours_planned }} of the plan",
            },
        },
    )
    [report] = runner(session, registry).run_due()
    assert report.count("failed") == 1 and "the message could not be made from its template" in report.summary()
    assert session.scalars(select(Outbox).where(Outbox.idempotency_key.like(f"automation:{auto.id}:%"))).all() == []


def test_automations_feeding_each_other_stop_after_a_chain_of_five(session, registry, system, service_for, people):
    alex = service_for(people["alex"])
    values = {"job": ["employer_name", "job_title"], "education": ["course_title", "provider_name"]}
    for source, made in (("job", "education"), ("education", "job")):
        rows = [{"field": name, "value": "Loop"} for name in values[made]] + [
            {"field": "start_date", "value": "{{ data.start_date }}"}
        ]
        automation(
            alex,
            {
                "name": f"{source} makes {made}",
                "trigger": {"event": "created"},
                "scope": {"type_key": source},
                "action": {"do": "create_item", "type_key": made, "values": rows},
            },
        )
    learner = new_learner(system, 1)
    first = system.create("job", {"employer_name": "A", "job_title": "B", "start_date": day(-3)}, subject_id=learner.id)
    handled, stopped = set(), []
    while True:  # deliver every new "created" event, as the relay would, until nothing new happens
        rows = [
            o
            for o in session.scalars(select(Outbox).where(Outbox.kind == "item_event").order_by(Outbox.id))
            if o.payload.get("event") == "created" and o.id not in handled
        ]
        if not rows:
            break
        for row in rows:
            handled.add(row.id)
            stopped += [r for r in deliver(session, registry, row) if r.failure]
    made = session.scalar(select(func.count()).select_from(Item).where(Item.type_key.in_(["job", "education"])))
    assert made == 1 + 5  # the job made by hand, then five made by the automations
    [report] = stopped
    assert "at the end of a chain of 5 items that automations created from each other" in report.failure
    assert first.id
