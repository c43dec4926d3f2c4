"""Importing learners in the browser: the clerk uploads a spreadsheet, the page follows the
check with its progress bar until the report is there (the page's script polls the progress
endpoint and reloads), confirms, and the page follows the import to its summary."""

from __future__ import annotations

import pytest
from selenium.webdriver.common.by import By
from sqlalchemy import func, select

from engine.models import Item
from tests.browser import pages
from tests.browser.conftest import LiveServer
from tests.import_helpers import ULNS, csv_bytes

pytestmark = pytest.mark.browser


def test_a_clerk_imports_learners_and_follows_the_progress(live_server: LiveServer, browser, tmp_path):
    live_server.create_user("clerk", "tracker_creator", display_name="Chris Clerk")
    rows = [f"L{i},Smith,2001-02-03," for i in range(1500)]  # two batches: the bar moves at least once
    rows[10] = f"Ann,Lee,2001-02-03,{ULNS[0]}"
    rows[20] = "Bob,,2001-02-03,"  # line 22 has no family name
    upload = tmp_path / "learners.csv"
    upload.write_bytes(csv_bytes("given_name,family_name,date_of_birth,uln", *rows))

    pages.open_page(browser, live_server.url + "/login")
    pages.password_step(browser, "clerk")
    pages.click_through(browser, "nav-imports")
    assert pages.heading(browser) == "Import from a spreadsheet"
    pages.choose(browser, "import-type", "Learner")
    pages.by_id(browser, "import-file").send_keys(str(upload))
    pages.click_through(browser, browser.find_element(By.CSS_SELECTOR, ".import-form button[type=submit]"))

    # the job page follows the check by itself, then shows the report
    confirm = pages.wait(browser).until(lambda d: d.find_elements(By.ID, "confirm-import"))[0]
    assert confirm.text == "Import 1,499 valid rows"
    assert pages.by_id(browser, "invalid-count").text == "1"
    cells = [c.text for c in browser.find_elements(By.CSS_SELECTOR, "table.import-problems tbody td")]
    assert cells[:3] == ["22", "family_name", "Family name is required"]

    pages.click_through(browser, confirm)
    created = pages.wait(browser).until(lambda d: d.find_elements(By.ID, "created-count"))[0]
    assert created.text == "1,499"
    assert pages.by_id(browser, "failed-count").text == "1"
    with live_server.session() as session:
        assert session.scalar(select(func.count()).select_from(Item).where(Item.type_key == "learner")) == 1499
