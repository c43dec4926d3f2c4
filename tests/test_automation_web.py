"""The web side of process automations and queues: an automation's runs and its dry run on
its page, and the Queue with its Claim button (a lost race is a 409 that says who won)."""

from __future__ import annotations

import html
import re
from datetime import datetime

import pytest
from sqlalchemy import select

from engine.assignment import QueueService
from engine.models import Item
from engine.services.automation import AutomationService
from tests import webhelpers
from tests.apprenticeship_helpers import start_on_programme
from tests.conftest import LEARNER
from tests.webhelpers import cheap_hashing, create_users, csrf, sign_in  # noqa: F401 - cheap_hashing is autouse

MONDAY = datetime(2031, 3, 10, 7, 30)
new_app = webhelpers.new_app


def text(response) -> str:
    return html.unescape(re.sub(r"\s+", " ", response.get_data(as_text=True)))


def words(response) -> str:
    """What the page says, without its tags."""
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", response.get_data(as_text=True))))


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(
        app,
        alex=["automation_creator", "tracker_creator"],
        asha=["assessor"],
        tom=["assessor"],
        quinn=["quality"],
        clara=["tracker_creator"],
    )
    return app


def services(app, username: str | None = None):
    rt = app.extensions["tracker"]
    session = rt.session()
    return session, rt.items(session, rt.actor(session, username))


def client_for(app, username: str):
    client = app.test_client()
    sign_in(client, username)
    return client


def apprentices(app, count: int) -> list[int]:
    session, system = services(app)
    ids = []
    for n in range(count):
        learner = system.create("learner", {**LEARNER, "given_name": f"Learner{n}", "uln": _uln(n)})
        item = system.create(
            "apprenticeship",
            {
                "employer_name": "Solent Logistics Ltd",
                "start_date": "2030-01-06",
                "planned_end_date": "2032-01-06",
                "last_hs_review_date": "2020-01-06",
            },
            template="team_leader_l3",
            subject_id=learner.id,
            assignee="asha",
        )
        start_on_programme(system, item.id)
        ids.append(item.id)
    session.close()
    return ids


def _uln(n: int) -> str:
    from engine.demo import uln_from

    return uln_from(300000000 + n * 97)


def weekly_hs(app, *, activate: bool = True) -> int:
    session, alex = services(app, "alex")
    item = alex.create("process_automation", template="weekly_hs_reviews")
    if activate:
        alex.transition(item.id, "active")
    session.close()
    return item.id


def run_monday(app) -> None:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        AutomationService(session, rt.registry, clock=lambda: MONDAY).run_due()


def test_the_automation_page_shows_its_runs_and_the_created_items(app):
    [first] = apprentices(app, 1)
    auto = weekly_hs(app)
    run_monday(app)
    with app.extensions["tracker"].session() as session:
        [review] = session.scalars(select(Item).where(Item.type_key == "hs_review")).all()
    response = client_for(app, "alex").get(f"/items/{auto}")
    page, said = text(response), words(response)
    assert 'id="automation-runs"' in page and "Run now (dry run)" in page
    assert f"Ran for 1 item (every Monday at 07:00, 10 Mar 2031 07:00): created #{review.id}" in page
    assert f'href="/items/{review.id}"' in page
    # the history says it too, as the automation
    history = said[said.index("History") :]
    assert f"Automation Ran for 1 item (every Monday at 07:00, 10 Mar 2031 07:00): created #{review.id}" in history
    assert first


def test_a_draft_says_it_is_not_running_and_has_not_run(app):
    auto = weekly_hs(app, activate=False)
    response = client_for(app, "alex").get(f"/items/{auto}")
    page = text(response)
    assert "It is not running: only active automations run." in words(response)
    assert 'id="no-runs"' in page


def test_the_dry_run_lists_the_items_and_changes_nothing(app):
    first, second = apprentices(app, 2)
    auto = weekly_hs(app, activate=False)
    client = client_for(app, "alex")
    item_page = client.get(f"/items/{auto}").get_data(as_text=True)
    assert f'action="/automations/{auto}/dry-run"' in item_page
    response = client.get(f"/automations/{auto}/dry-run")
    page = text(response)
    assert response.status_code == 200
    assert "Nothing was changed" in page and "as alex (who created the automation)" in page
    rows = page[page.index('id="dry-run-rows"') :]
    for item_id in (first, second):
        assert f'href="/items/{item_id}"' in rows
    assert rows.count("would create a Health & Safety review, assigned to asha") == 2
    assert "2 items in all." in page
    with app.extensions["tracker"].session() as session:
        assert session.scalars(select(Item).where(Item.type_key == "hs_review")).all() == []


def test_the_dry_run_says_when_the_creator_may_not_run_it(app):
    apprentices(app, 1)
    auto = weekly_hs(app, activate=False)
    rt = app.extensions["tracker"]
    with rt.session() as session:
        rt.users(session).set_roles("alex", ["tracker_creator"])
    page = words(client_for(app, "clara").get(f"/automations/{auto}/dry-run"))
    assert "It would not run: its creator alex no longer has 'automation.create'" in page


def test_the_dry_run_of_something_else_or_someone_elses_is_refused(app):
    [apprenticeship] = apprentices(app, 1)
    auto = weekly_hs(app, activate=False)
    response = client_for(app, "alex").get(f"/automations/{apprenticeship}/dry-run")
    assert response.status_code == 404 and "is not a process automation" in text(response)
    response = client_for(app, "asha").get(f"/automations/{auto}/dry-run")  # assessors see their own items only
    assert response.status_code == 403
    assert client_for(app, "alex").get("/automations/99999/dry-run").status_code == 404


# -- the queue ---------------------------------------------------------------------------------------


def waiting_review(app, n: int = 0) -> int:
    session, system = services(app)
    learner = system.create("learner", {**LEARNER, "given_name": "Quentin", "uln": _uln(50 + n)})
    review = system.create("hs_review", {"due_by": "2031-03-20", "employer_name": "Acme"}, subject_id=learner.id)
    session.close()
    return review.id


def test_the_queue_lists_waiting_items_and_claiming_one_makes_it_yours(app):
    review = waiting_review(app)
    asha = client_for(app, "asha")
    response = asha.get("/queue")
    page = text(response)
    assert 'id="nav-queue"' in page and "Queue 1 " in words(response)
    assert "H&S review: Acme for Quentin Smith" in page and f'id="claim-{review}"' in page
    response = asha.post(f"/queue/{review}/claim", data={"csrf_token": csrf(asha, "/queue")})
    assert response.status_code == 303 and response.headers["Location"] == f"/items/{review}"
    assert f"#{review} H&S review: Acme for Quentin Smith is yours now." in text(asha.get(f"/items/{review}"))
    assert 'id="queue-empty"' in text(asha.get("/queue"))


def test_a_claim_that_lost_the_race_is_a_409_saying_who_won(app):
    review = waiting_review(app)
    tom = client_for(app, "tom")
    token = csrf(tom, "/queue")  # tom opened the queue ...
    rt = app.extensions["tracker"]
    with rt.session() as session:
        QueueService(rt.items(session, rt.actor(session, "asha"))).claim(review)  # ... and asha claimed first
    response = tom.post(f"/queue/{review}/claim", data={"csrf_token": token})
    page = text(response)
    assert response.status_code == 409
    assert f"#{review} H&S review: Acme for Quentin Smith was claimed by asha just before you." in page
    assert "Pick another item from your queue." in page and 'id="queue-empty"' in page


def test_people_without_a_queue_see_no_link_and_an_empty_state(app):
    waiting_review(app)
    clara = client_for(app, "clara")
    assert 'id="nav-queue"' not in text(clara.get("/"))
    page = text(clara.get("/queue"))
    assert "You have no queue" in page
    review = waiting_review(app, 1)
    response = clara.post(f"/queue/{review}/claim", data={"csrf_token": csrf(clara, "/queue")})
    assert response.status_code == 403 and "may not claim Health & Safety review items" in text(response)


def test_the_queue_pages(app):
    ids = [waiting_review(app, n) for n in range(3)]
    app.config["ITEMS_PER_PAGE"] = 2
    asha = client_for(app, "asha")
    first, second = text(asha.get("/queue")), text(asha.get("/queue?page=2"))
    assert f'id="claim-{ids[0]}"' in first and f'id="claim-{ids[2]}"' not in first
    assert f'id="claim-{ids[2]}"' in second and "3 items, page 2 of 2" in second
    assert client_for(app, "asha").get("/queue?type=apprenticeship").status_code == 404
