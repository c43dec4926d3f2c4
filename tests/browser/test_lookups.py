"""Postcode lookup in the browser: a clerk types a learner's postcode, is offered the local
authority and region, takes them with the keyboard and saves; when the postcode service is
down the learner still saves, and the page says it was saved without the lookup."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from sqlalchemy import select

from engine.models import Item
from tests.browser import pages
from tests.browser.conftest import LiveServer
from tests.fake_apis import FakePostcodes, running

pytestmark = pytest.mark.browser


@pytest.fixture
def postcodes(live_server: LiveServer) -> Iterator[FakePostcodes]:
    """The app's postcode lookup asks a local postcodes.io stand-in. The setting is put in before
    any page is drawn: the plugin host reads it when the first form asks for its lookups."""
    for fake in running(FakePostcodes()):
        live_server.runtime.settings.plugin_env.update(
            {"TRACKER_PLUGIN_POSTCODE_URL": fake.url, "TRACKER_PLUGIN_POSTCODE_TIMEOUT": "2"}
        )
        live_server.create_user("clerk", "tracker_creator", display_name="Chris Clerk")
        yield fake


def new_learner(browser, live_server: LiveServer, given: str) -> None:
    pages.open_page(browser, live_server.url + "/login")
    pages.password_step(browser, "clerk")
    pages.open_page(browser, live_server.url + "/items/new?type=learner")
    assert pages.heading(browser) == "New Learner"
    pages.type_into(browser, "data-given_name", given)
    pages.type_into(browser, "data-family_name", "Lee")
    pages.type_date(browser, "data-date_of_birth", "2001-02-03")


def learner_named(live_server: LiveServer, given: str) -> Item:
    with live_server.session() as session:
        return session.scalars(select(Item).where(Item.type_key == "learner", Item.title == f"{given} Lee")).one()


def test_typing_a_postcode_offers_the_area_and_the_learner_saves_with_it(live_server, browser, postcodes):
    new_learner(browser, live_server, "Ann")
    field = pages.type_into(browser, "data-postcode", "sw1a 1aa")
    field.send_keys(Keys.TAB)  # leaving the field looks the postcode up; focus moves on to "Look up"
    assert browser.switch_to.active_element.get_attribute("id") == "data-postcode-lookup-button"
    offer = pages.wait(browser).until(
        lambda d: d.find_elements(By.CSS_SELECTOR, "#data-postcode-lookup .lookup-list button")
    )[0]
    assert offer.text == "SW1A 1AA: Westminster, London, England"
    assert [r.path for r in postcodes.requests] == ["/postcodes/SW1A 1AA"]

    # with the keyboard: Tab to the offer, Enter takes it
    browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element == offer
    offer.send_keys(Keys.ENTER)
    assert pages.by_id(browser, "data-district").get_attribute("value") == "Westminster"
    assert browser.find_element(By.ID, "data-region").get_attribute("value") == "London"
    assert "Filled in from: SW1A 1AA" in browser.find_element(By.ID, "data-postcode-lookup").text

    # the answer also wrote the postcode the Royal Mail way, as the schema wants it
    assert browser.find_element(By.ID, "data-postcode").get_attribute("value") == "SW1A 1AA"
    assert len(postcodes.requests) == 1  # putting the answer in asked nothing more
    pages.click_through(browser, "save")
    assert any(text.startswith("Created #") for text in pages.flashes(browser))
    saved = learner_named(live_server, "Ann")
    assert (saved.data["postcode"], saved.data["district"], saved.data["region"]) == (
        "SW1A 1AA",
        "Westminster",
        "London",
    )


def test_when_the_postcode_service_is_down_the_learner_saves_with_a_note(live_server, browser, postcodes):
    postcodes.outage = 503
    new_learner(browser, live_server, "Ben")
    field = pages.type_into(browser, "data-postcode", "SO41 8AN")
    field.send_keys(Keys.TAB)
    note = pages.wait(browser).until(
        lambda d: (
            d.find_element(By.ID, "data-postcode-lookup").text.startswith("Postcode lookup is unavailable")
            and d.find_element(By.ID, "data-postcode-lookup")
        )
    )
    assert "you can still save" in note.text

    pages.click_through(browser, "save")
    flashed = pages.flashes(browser)
    assert any(text.startswith("Created #") for text in flashed)
    assert "Postcode lookup is unavailable just now; the item was saved without it." in flashed
    saved = learner_named(live_server, "Ben")
    assert saved.data["postcode"] == "SO41 8AN" and "district" not in saved.data
