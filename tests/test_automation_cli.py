"""``tracker automations`` end to end in a subprocess: list, run-due for cron (once per
occurrence), the dry run, and mistakes refused with exit codes 1 and 2."""

from __future__ import annotations

import json

from engine import db
from engine.definitions import load_registry
from engine.permissions import Actor
from engine.services import ItemService, UserService
from tests.apprenticeship_helpers import start_on_programme
from tests.conftest import LEARNER, TEST_DEFINITIONS
from tests.webhelpers import PASSWORD, cheap_hashing  # noqa: F401 - cheap_hashing is autouse


def setup(db_url: str) -> tuple[int, int]:
    """An apprentice on programme not reviewed for months, and the weekly H&S automation in
    draft, made in this process (the commands under test run in a subprocess)."""
    engine = db.make_engine(db_url)
    registry = load_registry([TEST_DEFINITIONS])
    try:
        with db.session_factory(engine)() as session:
            users = UserService(session, registry)
            alex, _ = users.create("alex", ["automation_creator", "tracker_creator"], password=PASSWORD)
            users.create("asha", ["assessor"], password=PASSWORD)
            system = ItemService(session, Actor.system(), registry)
            learner = system.create("learner", dict(LEARNER))
            data = {
                "employer_name": "Solent Logistics Ltd",
                "start_date": "2020-01-06",
                "planned_end_date": "2032-01-06",
                "last_hs_review_date": "2020-06-01",
            }
            item = system.create(
                "apprenticeship", data, template="team_leader_l3", subject_id=learner.id, assignee="asha"
            )
            start_on_programme(system, item.id)
            automation = ItemService(session, Actor.for_user(alex, registry), registry).create(
                "process_automation", template="weekly_hs_reviews"
            )
            return item.id, automation.id
    finally:
        engine.dispose()


def test_preview_then_run_due_runs_an_occurrence_once(run, db_url):
    apprenticeship, automation = setup(db_url)
    out = run("automations", "preview", str(automation), "--now", "2031-03-10T07:30", "--as", "alex").stdout
    assert "Runs every Monday at 07:00; next on Monday 17 March 2031 at 07:00." in out
    assert (
        f"  #{apprenticeship} Apprenticeship: Team leader or supervisor for Jane Smith: "
        "would create a Health & Safety review, assigned to asha"
    ) in out
    assert out.rstrip().endswith("1 item(s) in all.")
    out = run("automations", "run-due", "--now", "2031-03-10T07:30").stdout
    assert out.startswith("No automation was due at 2031-03-10 07:30 Europe/London")  # still a draft
    run("items", "transition", str(automation), "--to", "active", "--as", "alex")
    out = run("automations", "run-due", "--now", "2031-03-10T07:30").stdout
    assert (
        f"#{automation} Weekly H&S reviews: Ran for 1 item (every Monday at 07:00, 10 Mar 2031 07:00): created #" in out
    )
    assert out.rstrip().endswith("1 automation(s) ran at 2031-03-10 07:30 Europe/London.")
    review = out.split("created #")[1].split()[0]
    again = run("automations", "run-due", "--now", "2031-03-10T09:00").stdout
    assert again.startswith("No automation was due")
    listed = run("automations", "list").stdout
    assert "Weekly H&S reviews" in listed and "every Monday at 07:00" in listed and "2031-03-10" not in listed
    history = run("items", "history", str(automation)).stdout
    assert f"Ran for 1 item (every Monday at 07:00, 10 Mar 2031 07:00): created #{review}" in history
    created = json.loads(run("items", "show", review, "--json").stdout)
    assert created["type"] == "hs_review" and created["assignee"] == "asha"


def test_mistakes_are_refused(run, db_url):
    apprenticeship, automation = setup(db_url)
    bad = run("automations", "run-due", "--now", "next monday", ok=False)
    assert bad.returncode == 2 and "'next monday' is not a date and time" in bad.stderr
    not_one = run("automations", "preview", str(apprenticeship), ok=False)
    assert not_one.returncode == 1 and "is not a process automation" in not_one.stderr
    data = {
        "name": "y",
        "trigger": {"event": "created"},
        "scope": {"type_key": "jobs"},
        "action": {"do": "notify", "recipient": "assignee", "message": "m"},
    }
    wrong = run("items", "create", "--type", "process_automation", "--as", "alex", "--data", json.dumps(data), ok=False)
    assert wrong.returncode == 1
    assert "/scope/type_key: There is no tracker type 'jobs'" in wrong.stderr and "-> Use one of:" in wrong.stderr
    assert automation
