"""An Apprenticeship from the Create Tracker page to its first step, as the people doing it would:
a clerk creates it for a learner found by ULN, with a review row and the English and maths plan
the form asks for; the assessor follows the link they were sent, signs in with a code and moves
it on."""

from __future__ import annotations

import json

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import select

from engine.models import Item, Notification
from engine.permissions import Actor
from tests.browser import pages
from tests.browser.conftest import LiveServer, totp_after
from tests.conftest import LEARNER, ROOT
from tests.webhelpers import enrol

pytestmark = pytest.mark.browser

PLAN = "Functional skills level 2 maths: weekly sessions with the maths tutor, exam booked for January."


@pytest.fixture
def people(live_server: LiveServer) -> int:
    """A clerk who creates trackers, an assessor, and the learner Jane Smith; returns her id."""
    live_server.create_user("clerk", "tracker_creator", display_name="Chris Clerk")
    live_server.create_user("assessor", "assessor", display_name="Asha Assessor")
    with live_server.session() as session:
        learner = live_server.runtime.items(session, Actor.system()).create("learner", dict(LEARNER))
        return learner.id


def saved(live_server: LiveServer, item_id: int) -> Item:
    with live_server.session() as session:
        return session.get(Item, item_id)


def test_clerk_creates_an_apprenticeship_with_a_review_and_the_plan_the_form_asks_for(live_server, browser, people):
    pages.open_page(browser, live_server.url + "/login")
    pages.password_step(browser, "clerk")
    pages.click_through(browser, "nav-create")
    assert pages.heading(browser) == "Create a tracker"
    pages.click_through(browser, "type-apprenticeship")
    assert pages.heading(browser) == "New Apprenticeship"
    assert browser.find_element(By.CSS_SELECTOR, "#field-status .chip").text == "New"

    # the learner, found by ULN (Enter in the search box presses "Find learner")
    search = pages.type_into(browser, "subject-q", LEARNER["uln"])
    pages.press_enter(browser, search)
    label = (
        pages.by_id(browser, f"subject-{people}")
        and browser.find_element(By.CSS_SELECTOR, f"label[for=subject-{people}]").text
    )
    assert "Jane Smith" in label and LEARNER["uln"] in label
    pages.click(browser, f"subject-{people}")

    pages.type_into(browser, "data-standard_code", "298")
    pages.type_into(browser, "data-standard_title", "Team leader or supervisor")
    pages.type_into(browser, "data-employer_name", "Lymington Marine Engineering Ltd")
    pages.click(browser, "data-funding_type-levy")
    pages.type_date(browser, "data-start_date", "2026-03-02")
    pages.type_date(browser, "data-planned_end_date", "2027-06-30")
    pages.choose(browser, "assignee", "Asha Assessor (assessor)")
    pages.type_into(browser, "description", "Check the sign-up paperwork with the employer.")

    # a review row: the server adds it and keeps everything typed so far
    pages.click_through(browser, "add-data-reviews")
    assert pages.by_id(browser, "data-reviews-0-date") == browser.switch_to.active_element
    assert browser.find_element(By.ID, "data-employer_name").get_attribute("value") == (
        "Lymington Marine Engineering Ltd"
    )
    assert browser.find_element(By.ID, f"subject-{people}").is_selected()
    pages.type_date(browser, "data-reviews-0-date", "2026-06-01")
    pages.click(browser, "data-reviews-0-type-tripartite")
    pages.click(browser, "data-reviews-0-outcome-action-required")
    pages.type_into(browser, "data-reviews-0-reviewer", "Tom Ellis")

    # the plan is asked for only while the English and maths requirement is not met
    met = pages.by_id(browser, "data-english_maths_met")
    plan = browser.find_element(By.ID, "data-english_maths_plan")
    if not met.is_selected():
        met.click()
    pages.wait(browser).until(lambda _d: not plan.is_displayed())
    assert not plan.is_enabled()
    met.click()
    pages.wait(browser).until(lambda _d: plan.is_displayed())
    assert plan.is_enabled()
    assert not met.is_selected()
    plan.send_keys(PLAN)

    pages.click_through(browser, "save")
    assert pages.path_of(browser, live_server.url).startswith("/items/")
    item_id = int(pages.path_of(browser, live_server.url).removeprefix("/items/"))
    assert any(f"Created #{item_id}" in text for text in pages.flashes(browser))
    assert pages.heading(browser).startswith(f"#{item_id} Apprenticeship: Team leader or supervisor for Jane Smith")
    assert browser.find_element(By.ID, "status").text == "New"
    assert browser.find_element(By.ID, "current-assignee").text == "Asha Assessor"

    # the item page shows the review row and the plan as saved
    assert browser.find_element(By.ID, "data-reviews-0").is_displayed()
    assert browser.find_element(By.ID, "data-reviews-0-date").get_attribute("value") == "2026-06-01"
    assert browser.find_element(By.ID, "data-reviews-0-type-tripartite").is_selected()
    assert browser.find_element(By.ID, "data-reviews-0-outcome-action-required").is_selected()
    assert browser.find_element(By.ID, "data-reviews-0-reviewer").get_attribute("value") == "Tom Ellis"
    assert not browser.find_elements(By.ID, "data-reviews-1")
    shown_plan = browser.find_element(By.ID, "data-english_maths_plan")
    assert shown_plan.is_displayed() and shown_plan.get_attribute("value") == PLAN

    item = saved(live_server, item_id)
    assert item.subject_id == people
    assert item.data["reviews"] == [
        {"date": "2026-06-01", "type": "tripartite", "outcome": "action_required", "reviewer": "Tom Ellis"}
    ]
    assert item.data["english_maths_plan"] == PLAN
    assert item.data["funding_type"] == "levy"
    assert item.data["start_date"] == "2026-03-02"


def test_assignee_follows_the_link_signs_in_with_a_code_and_starts_sign_up(live_server, new_browser, people):
    secret, _codes = enrol(live_server.app, "assessor")
    data = json.loads((ROOT / "examples" / "data" / "apprenticeship" / "valid.json").read_text())
    for finance_only in ("total_negotiated_price", "employer_contribution"):  # the clerk may not set these
        del data[finance_only]
    with live_server.session() as session:
        clerk = live_server.runtime.actor(session, "clerk")
        item = live_server.runtime.items(session, clerk).create(
            "apprenticeship", data, subject_id=people, assignee="assessor"
        )
        assessor = live_server.runtime.users(session).get("assessor")
        notification = session.scalars(
            select(Notification).where(Notification.user_id == assessor.id, Notification.item_id == item.id)
        ).one()
    link = live_server.url + notification.link
    assert notification.link == f"/items/{item.id}"

    # a browser nobody has signed in on: the link leads to sign-in, then to the item
    browser = new_browser()
    pages.open_page(browser, link)
    assert pages.heading(browser) == "Sign in"
    assert "Please sign in to see that page." in pages.flashes(browser)
    pages.password_step(browser, "assessor")
    assert pages.path_of(browser, live_server.url) == "/login/code"
    code, _step = totp_after(secret, 0)
    pages.code_step(browser, code)
    assert browser.current_url == link
    assert pages.signed_in_as(browser) == "Asha Assessor"
    assert pages.heading(browser) == f"#{item.id} {item.title}"
    assert browser.find_element(By.ID, "status").text == "New"

    # "Start sign-up" asks for the employer in the same step; the assessor corrects it
    pages.click_through(browser, "transition-start_signup")
    assert pages.heading(browser) == "Start sign-up"
    employer = pages.by_id(browser, "data-employer_name")
    assert employer.get_attribute("value") == data["employer_name"]
    pages.type_into(browser, "data-employer_name", "Lymington Marine Engineering Limited")
    pages.click_through(browser, "save")

    assert browser.current_url == link
    assert browser.find_element(By.ID, "status").text == "Sign-up in progress"
    history = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "#history ol.history-list > li")]
    assert any(
        "Asha Assessor moved it from New to Sign-up in progress (Start sign-up)" in entry for entry in history
    ), history
    assert browser.find_element(By.ID, "data-employer_name").get_attribute("value") == (
        "Lymington Marine Engineering Limited"
    )
    # the step is no longer offered; the next one needs quality or the creator
    assert not browser.find_elements(By.ID, "transition-start_signup")

    stored = saved(live_server, item.id)
    assert (stored.status, stored.data["employer_name"]) == ("signup", "Lymington Marine Engineering Limited")
