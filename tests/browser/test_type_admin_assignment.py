"""The type editor's Assignment tab with the keyboard alone, in Chromium: the rule is chosen
with the arrow keys, Tab reaches only the picker that rule uses (the script switches the other
off), Enter saves; a refusal's summary links to the field it concerns."""

from __future__ import annotations

import pytest
import yaml
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from engine.permissions import Actor
from tests.browser import pages
from tests.browser.conftest import LiveServer

pytestmark = pytest.mark.browser


def focused(browser: WebDriver) -> str:
    return browser.switch_to.active_element.get_attribute("id")


def tab(browser: WebDriver) -> str:
    browser.switch_to.active_element.send_keys(Keys.TAB)
    return focused(browser)


def test_an_admin_sets_the_rule_with_the_keyboard(live_server: LiveServer, new_browser):
    live_server.create_user("boss", "admin")
    admin = new_browser()
    pages.open_page(admin, live_server.url + "/login")
    pages.password_step(admin, "boss")
    pages.open_page(admin, live_server.url + "/admin/types/new")
    pages.type_into(admin, "name", "Bike loan")
    pages.type_into(admin, "key", "bike_loan")
    pages.click_through(admin, "create-type")
    pages.click_through(admin, "tab-assignment")
    assert "assigns it by hand" in pages.by_id(admin, "assignment-now").text
    role, field = pages.by_id(admin, "assign-role"), pages.by_id(admin, "assign-field")
    assert not role.is_enabled() and not field.is_enabled()  # no rule: neither picker is used

    pages.by_id(admin, "rule-none").send_keys(Keys.ARROW_DOWN)
    assert focused(admin) == "rule-round_robin" and pages.by_id(admin, "rule-round_robin").is_selected()
    assert role.is_enabled() and not field.is_enabled()
    assert tab(admin) == "assign-role"
    role.send_keys("Assessor")
    assert tab(admin) == "save-assignment"  # the field picker is off, so Tab passes it
    pages.press_enter(admin, admin.switch_to.active_element)
    assert "Saved the assignment rule." in pages.flashes(admin)
    assert "the role Assessor (assessor) in turn" in pages.by_id(admin, "assignment-now").text

    # the user named in a field, with no field chosen: refused, and the summary leads to the picker
    pages.by_id(admin, "rule-round_robin").send_keys(Keys.ARROW_DOWN, Keys.ARROW_DOWN)
    assert focused(admin) == "rule-field"
    assert not pages.by_id(admin, "assign-role").is_enabled() and pages.by_id(admin, "assign-field").is_enabled()
    tab(admin)
    pages.press_enter(admin, pages.by_id(admin, "save-assignment"))
    summary = pages.by_id(admin, "error-summary")
    link = summary.find_element(By.CSS_SELECTOR, "a[href='#assign-field']")
    assert link.text.startswith("Pick the field that holds the user name")
    link.send_keys(Keys.ENTER)
    pages.wait(admin).until(lambda d: focused(d) == "assign-field")
    with live_server.session() as session:
        texts = live_server.runtime.definitions(session, Actor.system()).texts_of("bike_loan")
    assert yaml.safe_load(texts.type_yaml)["assignment"] == {"rule": "round_robin", "role": "assessor"}
