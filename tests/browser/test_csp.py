"""The Content Security Policy in Chromium: every main page loads without a single CSP
violation in the browser's console (no inline script, style or event handler anywhere), and
the pages' scripts still work under it: conditional fields, lookups, the import progress
(the last two also in test_lookups and test_import, which run under the same policy)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from sqlalchemy import select

from engine.models import Item, User
from engine.permissions import Actor
from tests.browser import pages
from tests.browser.conftest import CHROMEDRIVER, CHROMIUM, CHROMIUM_FLAGS, LiveServer, browser_missing
from tests.conftest import LEARNER, ROOT
from webui.security import CSP

pytestmark = pytest.mark.browser

APPRENTICESHIP = json.loads((ROOT / "examples/data/apprenticeship/valid.json").read_text())


@pytest.fixture
def console_browser():
    """A headless Chromium whose console messages can be read (``goog:loggingPrefs``)."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            browser_missing(f"{binary} does not exist")
    profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        shutil.rmtree(profile, ignore_errors=True)
        browser_missing(f"it did not start: {exc.msg or exc}")
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def violations(driver) -> list[str]:
    """Console messages about the Content Security Policy since the last call."""
    return [e["message"] for e in driver.get_log("browser") if "Content Security Policy" in e["message"]]


@pytest.fixture
def site(live_server: LiveServer) -> dict:
    live_server.create_user("root", "admin", display_name="Ruth Root")
    live_server.create_user("asha", "assessor", display_name="Asha Assessor")
    with live_server.session() as session:
        items = live_server.runtime.items(session, Actor.system())
        learner = items.create("learner", dict(LEARNER))
        app = items.create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id, assignee="asha")
        items.comment(app.id, "Paperwork arrived")
        root = session.scalar(select(User).where(User.username == "root"))
        root_id = root.id
    return {"learner": learner.id, "item": app.id, "root": root_id}


def test_the_main_pages_break_no_rule_of_the_policy(live_server: LiveServer, console_browser, site):
    driver = console_browser
    pages.open_page(driver, live_server.url + "/login")
    pages.password_step(driver, "root")
    assert pages.signed_in_as(driver)
    visited = {}
    for path in (
        "/",
        f"/items/{site['item']}",
        "/items/new",
        "/items/new?type=apprenticeship",
        f"/learners/{site['learner']}",
        "/types/apprenticeship",
        "/my",
        "/search?q=Smith",
        "/queue",
        "/inbox",
        "/preferences",
        "/imports",
        "/ilr/export",
        "/account/two-factor",  # the QR code is an inline SVG: no style attribute, no script
        "/admin/users",
        "/admin/users/root",
        "/admin/audit",
        "/admin/plugins",
        "/admin/types",
        "/admin/types/apprenticeship/fields",
        "/admin/types/apprenticeship/documents",
        "/admin/types/apprenticeship/workflow",
        "/admin/types/apprenticeship/tasklists",
        "/admin/types/apprenticeship/preview",
        "/no/such/page",
    ):
        pages.open_page(driver, live_server.url + path)
        visited[path] = violations(driver)
    assert {path: found for path, found in visited.items() if found} == {}
    # and the console does report a violation: an inline script added to the page is refused
    driver.execute_script(
        "const s = document.createElement('script'); s.textContent = 'document.title = \"ran\"';"
        "document.body.appendChild(s);"
    )
    pages.wait(driver).until(lambda d: any("Content Security Policy" in e["message"] for e in d.get_log("browser")))
    assert driver.title != "ran"


def test_scripts_work_under_the_policy(live_server: LiveServer, console_browser, site):
    driver = console_browser
    pages.open_page(driver, live_server.url + "/login")
    pages.password_step(driver, "root")
    pages.open_page(driver, live_server.url + f"/items/{site['item']}")
    response_policy = driver.execute_script(
        "return fetch(location.href).then(r => r.headers.get('content-security-policy'))"
    )
    assert response_policy == CSP
    # conditional fields: the plan is asked for only while English and maths are not met
    met = pages.by_id(driver, "data-english_maths_met")
    plan = driver.find_element(By.ID, "data-english_maths_plan")
    assert not met.is_selected() and plan.is_displayed()
    met.click()
    pages.wait(driver).until(lambda _d: not plan.is_displayed())
    met.click()
    pages.wait(driver).until(lambda _d: plan.is_displayed())
    # an inline script planted in a field value stays text: nothing runs, nothing is refused silently
    with live_server.session() as session:
        items = live_server.runtime.items(session, Actor.system())
        item = session.get(Item, site["item"])
        items.update(item.id, changes={"english_maths_plan": '<script>document.title="pwned"</script>'})
    pages.open_page(driver, live_server.url + f"/items/{site['item']}")
    assert driver.title != "pwned"
    assert driver.find_element(By.ID, "data-english_maths_plan").get_attribute("value").startswith("<script>")
    assert violations(driver) == []
