"""What a person does in the browser, as small steps: open a page, type, click and wait for the
next page. Elements are found by the ids webui/forms.py documents; every wait is explicit."""

from __future__ import annotations

from datetime import date

from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.browser.conftest import PASSWORD, totp_after

TIMEOUT = 15


def wait(driver: WebDriver) -> WebDriverWait:
    return WebDriverWait(driver, TIMEOUT)


def _loaded(driver: WebDriver) -> None:
    wait(driver).until(lambda d: d.execute_script("return document.readyState") == "complete")


def open_page(driver: WebDriver, url: str) -> None:
    driver.get(url)
    _loaded(driver)


def by_id(driver: WebDriver, element_id: str) -> WebElement:
    return wait(driver).until(ec.presence_of_element_located((By.ID, element_id)))


def _settled(action):
    """Run ``action`` again when Chromium says the element it found went with a page that was
    still being replaced (a race between our lookup and the browser, not a product bug)."""
    for attempt in range(3):
        try:
            return action()
        except WebDriverException as exc:
            gone = isinstance(exc, StaleElementReferenceException) or "does not belong to the document" in str(exc)
            if not gone or attempt == 2:
                raise


def _replaced(element: WebElement):
    """A wait condition: the element's page has been replaced. Newer chromedrivers report an
    element of a replaced document as "does not belong to the document" rather than as stale,
    which selenium's own staleness_of does not recognise."""

    def check(_driver: WebDriver) -> bool:
        try:
            element.is_enabled()
        except StaleElementReferenceException:
            return True
        except WebDriverException as exc:
            if "does not belong to the document" in str(exc):
                return True
            raise
        return False

    return check


def click(driver: WebDriver, element_id: str) -> None:
    """Click something on the page that does not leave it (a radio, a checkbox)."""
    _settled(lambda: by_id(driver, element_id).click())


def click_through(driver: WebDriver, element: WebElement | str) -> None:
    """Click a link or a submit button and wait until the next page has loaded."""
    if isinstance(element, str):
        element = by_id(driver, element)
    page = driver.find_element(By.TAG_NAME, "html")
    element.click()
    wait(driver).until(_replaced(page))
    _loaded(driver)


def press_enter(driver: WebDriver, field: WebElement) -> None:
    """Press Enter in a field and wait for the page it sends the form to."""
    page = driver.find_element(By.TAG_NAME, "html")
    field.send_keys(Keys.ENTER)
    wait(driver).until(_replaced(page))
    _loaded(driver)


def type_into(driver: WebDriver, element_id: str, text: str) -> WebElement:
    def typed() -> WebElement:
        field = by_id(driver, element_id)
        field.clear()
        field.send_keys(text)
        return field

    return _settled(typed)


#: the order of day, month and year in the browser's own date box, from its locale
_DATE_ORDER = """return new Intl.DateTimeFormat().formatToParts(new Date(2001, 1, 3))
    .map(function (p) { return p.type; }).filter(function (t) { return t !== "literal"; });"""


def type_date(driver: WebDriver, element_id: str, iso: str) -> WebElement:
    """A date typed as a person does into the browser's date box: its parts in the order the
    browser's locale shows them (day, month, year in en-GB; month, day, year in en-US)."""
    field = by_id(driver, element_id)
    day = date.fromisoformat(iso)
    parts = {"day": f"{day.day:02d}", "month": f"{day.month:02d}", "year": f"{day.year:04d}"}
    order = driver.execute_script(_DATE_ORDER)
    field.send_keys("".join(parts[p] for p in order))
    assert field.get_attribute("value") == iso, f"the date box shows {field.get_attribute('value')!r}, not {iso}"
    return field


def choose(driver: WebDriver, element_id: str, visible_text: str) -> None:
    _settled(lambda: Select(by_id(driver, element_id)).select_by_visible_text(visible_text))


def heading(driver: WebDriver) -> str:
    return driver.find_element(By.TAG_NAME, "h1").text


def flashes(driver: WebDriver) -> list[str]:
    return [p.text for p in driver.find_elements(By.CSS_SELECTOR, "p.flash")]


def path_of(driver: WebDriver, base_url: str) -> str:
    return driver.current_url.removeprefix(base_url)


def password_step(driver: WebDriver, username: str, password: str = PASSWORD) -> None:
    """On the sign-in page: user name, password, Sign in."""
    assert heading(driver) == "Sign in"
    type_into(driver, "username", username)
    type_into(driver, "password", password)
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def code_step(driver: WebDriver, code: str) -> None:
    """On the code page: the code from the app, Sign in."""
    assert heading(driver) == "Enter your sign-in code"
    type_into(driver, "code", code)
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "main form button[type=submit]"))


def sign_in_with_code(driver: WebDriver, username: str, secret: str, used_step: int = 0) -> int:
    """Both steps with a code the server has not seen yet; returns the code's time-step."""
    password_step(driver, username)
    code, step = totp_after(secret, used_step)
    code_step(driver, code)
    return step


def signed_in_as(driver: WebDriver) -> str:
    """The name in the header, or "" when nobody is signed in."""
    found = driver.find_elements(By.CSS_SELECTOR, "form.signout span")
    return found[0].text if found else ""


def sign_out(driver: WebDriver) -> None:
    click_through(driver, driver.find_element(By.CSS_SELECTOR, "form.signout button[type=submit]"))
