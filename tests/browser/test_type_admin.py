"""A tracker type built in the browser, as an administrator and a member of staff would: the
admin builds "Bike loan" with a repeating group of safety checks and a lock code asked only
when a lock is needed, and publishes it; a clerk creates a loan; the admin renames a field,
publishes the version with the rename migration the builder declared and migrates the items;
the clerk's loan shows the renamed field with its value."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy import select

from engine.models import Event, Item
from tests.browser import pages
from tests.browser.conftest import LiveServer

pytestmark = pytest.mark.browser


@pytest.fixture
def people(live_server: LiveServer) -> None:
    live_server.create_user("boss", "admin", display_name="Bea Boss")
    live_server.create_user("clerk", "tracker_creator", display_name="Chris Clerk")


def add_field(browser: WebDriver, name: str, kind: str, title: str, parent: str = "Top level") -> None:
    """Fill in "Add a field" and send it; the page comes back with the field listed."""
    pages.type_into(browser, "add-name", name)
    pages.type_into(browser, "add-title-input", title)
    pages.choose(browser, "add-kind", kind)
    pages.choose(browser, "add-parent", parent)
    pages.click_through(browser, "add-field")
    assert any(f"Added the field {name}" in text for text in pages.flashes(browser)), pages.flashes(browser)


def publish(browser: WebDriver, note: str) -> str:
    pages.click_through(browser, "tab-publish")
    pages.type_into(browser, "note", note)
    pages.click_through(browser, "publish")
    [flash] = [t for t in pages.flashes(browser) if t.startswith("Published version")]
    return flash


def test_admin_builds_a_type_staff_use_it_and_a_rename_migrates_their_item(live_server, new_browser, people):
    admin = new_browser()
    pages.open_page(admin, live_server.url + "/login")
    pages.password_step(admin, "boss")
    pages.click_through(admin, "nav-types")
    assert pages.heading(admin) == "Tracker types"
    pages.click_through(admin, "new-type")
    pages.type_into(admin, "name", "Bike loan")
    pages.type_into(admin, "key", "bike_loan")
    pages.click_through(admin, "create-type")
    assert pages.heading(admin).startswith("Bike loan")
    assert pages.path_of(admin, live_server.url) == "/admin/types/bike_loan/fields"

    # the fields: a colour, a lock code asked only when a lock is needed, and rows of safety checks
    add_field(admin, "colour", "Text", "Colour")
    add_field(admin, "needs_lock", "Yes / no", "Needs a lock")
    add_field(admin, "lock_code", "Text", "Lock code")
    add_field(admin, "checks", "Repeating group (rows)", "Safety checks")
    add_field(admin, "checked_on", "Date", "Checked on", parent="Safety checks (checks)")
    add_field(admin, "note", "Text", "Note", parent="Safety checks (checks)")
    pages.click_through(admin, "edit-lock_code")
    pages.choose(admin, "condition_field", "Needs a lock (needs_lock)")
    pages.type_into(admin, "condition_value", "yes")
    pages.click_through(admin, "save-field")
    row = admin.find_element(By.ID, "row-lock_code").text
    assert "when needs_lock is True" in row
    assert "Checked on" in admin.find_element(By.ID, "row-checks-checked_on").text

    # the preview is the form staff will see; the lock code appears when a lock is needed
    pages.click_through(admin, "tab-preview")
    lock_code = pages.by_id(admin, "data-lock_code")
    assert not lock_code.is_displayed()
    pages.click(admin, "data-needs_lock")
    pages.wait(admin).until(lambda _d: lock_code.is_displayed())

    assert publish(admin, "First version of the bike loan").startswith("Published version 1 of bike_loan")

    # a clerk creates a loan with a lock code and a row of safety checks
    clerk = new_browser()
    pages.open_page(clerk, live_server.url + "/login")
    pages.password_step(clerk, "clerk")
    pages.click_through(clerk, "nav-create")
    pages.click_through(clerk, "type-bike_loan")
    assert pages.heading(clerk) == "New Bike loan"
    pages.type_into(clerk, "data-title", "Red bike for Sam")
    pages.type_into(clerk, "data-colour", "red")
    code = pages.by_id(clerk, "data-lock_code")
    assert not code.is_displayed()
    pages.click(clerk, "data-needs_lock")
    pages.wait(clerk).until(lambda _d: code.is_displayed())
    code.send_keys("4321")
    pages.click_through(clerk, "add-data-checks")
    pages.type_date(clerk, "data-checks-0-checked_on", "2026-03-02")
    pages.type_into(clerk, "data-checks-0-note", "Brakes and lights fine")
    pages.click_through(clerk, "save")
    item_path = pages.path_of(clerk, live_server.url)
    item_id = int(item_path.removeprefix("/items/"))
    with live_server.session() as session:
        item = session.get(Item, item_id)
        assert (item.type_version, item.data) == (
            1,
            {
                "title": "Red bike for Sam",
                "colour": "red",
                "needs_lock": True,
                "lock_code": "4321",
                "checks": [{"checked_on": "2026-03-02", "note": "Brakes and lights fine"}],
            },
        )

    # the admin renames colour to paint: the builder declares the migration for existing items
    pages.click_through(admin, "tab-fields")
    pages.click_through(admin, "edit-colour")
    assert "a rename migration is added" in admin.find_element(By.ID, "new_name-help").text
    pages.type_into(admin, "new_name", "paint")
    pages.type_into(admin, "title", "Paint")
    pages.click_through(admin, "save-field")
    assert "rename" in admin.find_element(By.ID, "migration-steps").text
    assert "Published version 2 of bike_loan" in publish(admin, "Colour is now called paint")
    pages.click_through(admin, "tab-migrate")
    assert admin.find_element(By.ID, "items-1").text == "1"
    assert admin.find_element(By.ID, "change-1").text == "1"
    assert admin.find_element(By.ID, "fail-1").text == "0"
    pages.click_through(admin, "apply-migration")
    # the migration runs in the background: its page follows it, then shows the outcome
    result = pages.wait(admin).until(lambda d: d.find_elements(By.ID, "migration-result"))[0]
    assert "Migrated 1 item to version 2." in result.text

    # the clerk's loan shows the renamed field with its value, and why it changed
    pages.open_page(clerk, live_server.url + item_path)
    paint = pages.by_id(clerk, "data-paint")
    assert paint.get_attribute("value") == "red"
    assert clerk.find_element(By.CSS_SELECTOR, "label[for=data-paint]").text.startswith("Paint")
    assert not clerk.find_elements(By.ID, "data-colour")
    assert "migrated it from version 1 to version 2 of its type (rename colour to paint)" in clerk.page_source
    with live_server.session() as session:
        item = session.get(Item, item_id)
        assert item.type_version == 2 and item.data["paint"] == "red" and "colour" not in item.data
        migrated = session.scalars(select(Event).where(Event.item_id == item_id, Event.kind == "migrated")).all()
        assert len(migrated) == 1
