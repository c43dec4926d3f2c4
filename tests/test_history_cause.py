"""The item page's history says why a field changed when another item's step changed it (an
``update_related`` action): recording an H&S review sets its apprenticeship's last review date,
and the apprenticeship's history names the step and the review."""

from __future__ import annotations

from datetime import date, timedelta

from engine.permissions import Actor
from tests import webhelpers
from tests.apprenticeship_helpers import start_on_programme
from tests.conftest import LEARNER
from tests.webhelpers import create_users, sign_in

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app


def test_a_change_made_by_another_items_step_names_it_in_the_history(new_app):
    app = new_app(RATELIMIT_ENABLED=False)
    create_users(app, boss=["admin"])
    rt = app.extensions["tracker"]
    today = date.today()
    with rt.session() as session:
        system = rt.items(session, Actor.system())
        learner = system.create("learner", LEARNER)
        apprenticeship = system.create(
            "apprenticeship",
            {
                "employer_name": "Solent Logistics Ltd",
                "start_date": (today - timedelta(days=300)).isoformat(),
                "planned_end_date": (today + timedelta(days=300)).isoformat(),
            },
            template="team_leader_l3",
            subject_id=learner.id,
        )
        start_on_programme(system, apprenticeship.id)
        review = system.create(
            "hs_review",
            {"apprenticeship_id": apprenticeship.id, "due_by": today.isoformat()},
            subject_id=learner.id,
        )
        done = {"review_date": today.isoformat(), "reviewer": "Asha", "outcome": "satisfactory"}
        system.transition(review.id, "completed", data=done)
        apprenticeship_id, review_id = apprenticeship.id, review.id
    client = app.test_client()
    sign_in(client, "boss")
    page = client.get(f"/items/{apprenticeship_id}").get_data(as_text=True)
    assert (
        f"changed Last H&amp;S review (by &#39;Record the review&#39; on Health &amp; Safety review #{review_id})"
        in page
    )
