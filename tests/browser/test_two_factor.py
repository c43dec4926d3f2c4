"""An administrator turns on two-factor sign-in in the browser, then signs in with a code."""

from __future__ import annotations

import pyotp
import pytest
from selenium.webdriver.common.by import By

from tests.browser import pages
from tests.browser.conftest import totp_after

pytestmark = pytest.mark.browser


def test_admin_enrols_in_two_factor_and_signs_in_with_a_code(live_server, browser):
    live_server.create_user("alex", "admin", display_name="Alex Admin")
    pages.open_page(browser, live_server.url + "/")
    assert pages.path_of(browser, live_server.url).startswith("/login")
    pages.password_step(browser, "alex")
    assert pages.signed_in_as(browser) == "Alex Admin"

    # Account -> the enrolment page: a QR code drawn in the page, and the key to type by hand
    pages.click_through(browser, browser.find_element(By.LINK_TEXT, "Account"))
    assert pages.heading(browser) == "Two-factor sign-in"
    assert "Two-factor sign-in is off" in browser.find_element(By.CSS_SELECTOR, "p.lead").text
    qr = browser.find_element(By.CSS_SELECTOR, "figure.qr svg")
    assert qr.is_displayed() and qr.size["width"] > 100
    secret = browser.find_element(By.CSS_SELECTOR, "code.secret").text.replace(" ", "")
    assert len(secret) >= 16

    # a wrong code is refused on the field, and nothing is switched on
    wrong = next(f"{n:06d}" for n in range(1_000_000) if not pyotp.TOTP(secret).verify(f"{n:06d}", valid_window=3))
    pages.type_into(browser, "code", wrong)
    pages.click_through(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    assert pages.heading(browser) == "Two-factor sign-in"
    assert browser.find_element(By.ID, "code").get_attribute("aria-invalid") == "true"
    assert browser.find_element(By.CSS_SELECTOR, "code.secret").text.replace(" ", "") == secret

    code, used_step = totp_after(secret, 0)
    pages.type_into(browser, "code", code)
    pages.click_through(browser, browser.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))
    assert pages.heading(browser) == "Two-factor sign-in is on"
    recovery = [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ol.codes li")]
    assert len(recovery) == 10 and len(set(recovery)) == 10
    pages.click_through(browser, browser.find_element(By.LINK_TEXT, "I have saved them: continue"))
    assert pages.signed_in_as(browser) == "Alex Admin"

    pages.sign_out(browser)
    assert pages.heading(browser) == "Sign in"
    assert "You have signed out." in pages.flashes(browser)
    assert pages.signed_in_as(browser) == ""

    # the password alone is no longer enough; the code used to enrol is refused (replay)
    pages.password_step(browser, "alex")
    assert pages.path_of(browser, live_server.url) == "/login/code"
    assert pages.signed_in_as(browser) == ""
    pages.code_step(browser, code)
    assert pages.heading(browser) == "Enter your sign-in code"
    error = browser.find_element(By.ID, "code-error").text
    assert "has been used already" in error
    assert browser.find_element(By.ID, "code").get_attribute("aria-describedby").split().count("code-error") == 1

    fresh, _ = totp_after(secret, used_step)
    pages.code_step(browser, fresh)
    assert pages.path_of(browser, live_server.url) == "/"
    assert pages.signed_in_as(browser) == "Alex Admin"

    # the account page now says two-factor sign-in is on, with all ten recovery codes left
    pages.click_through(browser, browser.find_element(By.LINK_TEXT, "Account"))
    lead = browser.find_element(By.CSS_SELECTOR, "p.lead").text
    assert "Two-factor sign-in is on" in lead
    assert "10 of 10 recovery codes" in browser.find_element(By.CSS_SELECTOR, "main").text
