"""Browser tests: the real app on a free local port, driven by Debian's Chromium through Selenium.

- ``live_server`` runs ``webui.create_app`` in a thread (werkzeug's server) against a fresh
  SQLite database migrated with ``engine.db.upgrade``; it gives the base URL and the runtime,
  so tests can prepare users and items through the engine as an administrator would.
- ``browser`` is a headless Chromium with a fresh profile; ``new_browser()`` starts another
  (a second person, or the same person on another computer). Every browser is closed at the
  end, and when the test failed a screenshot of each is saved in the test's tmp dir.
- Without Chromium or chromedriver the tests are skipped with the reason; under ``CI=true``
  they fail instead (.ci/run installs both). ``TRACKER_TEST_CHROMIUM`` and
  ``TRACKER_TEST_CHROMEDRIVER`` point at other binaries.

Chromium runs with background networking off: the machines these tests run on may have no
way out, and nothing here needs one.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyotp
import pytest
from flask import Flask
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver
from sqlalchemy.orm import Session
from werkzeug.serving import make_server

from engine import db
from engine.config import Settings
from engine.runtime import Runtime
from tests.conftest import IN_CI
from tests.webhelpers import PASSWORD, cheap_hashing  # noqa: F401 - an autouse fixture
from webui import create_app

CHROMIUM = Path(os.environ.get("TRACKER_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMEDRIVER = Path(os.environ.get("TRACKER_TEST_CHROMEDRIVER", "/usr/bin/chromedriver"))
CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1024",
)

__all__ = ["PASSWORD", "LiveServer", "totp_after"]


def browser_missing(reason: str) -> None:
    """Under CI a missing browser fails the run; on a laptop it skips with the reason."""
    message = f"Chromium is not available: {reason}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the browser tests must run; .ci/run installs chromium and chromium-driver)")
    pytest.skip(message)


def totp_after(secret: str, used_step: int) -> tuple[str, int]:
    """The code an authenticator app shows now, or in the next time-step when the current one
    was already used (the server refuses a replay and accepts one step of clock drift).
    Returns the code and its time-step."""
    totp = pyotp.TOTP(secret)
    step = max(used_step + 1, int(time.time()) // totp.interval)
    return totp.at(step * totp.interval), step


# -- the app -------------------------------------------------------------------------------------


@dataclass
class LiveServer:
    """The running app: its base URL and the engine runtime behind it."""

    url: str
    app: Flask

    @property
    def runtime(self) -> Runtime:
        return self.app.extensions["tracker"]

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A database session committed at the end (for preparing data as an administrator)."""
        with self.runtime.session() as session:
            yield session
            session.commit()

    def create_user(self, username: str, *roles: str, display_name: str = "") -> None:
        with self.session() as session:
            self.runtime.users(session).create(username, list(roles), password=PASSWORD, display_name=display_name)


@pytest.fixture
def live_server(tmp_path) -> Iterator[LiveServer]:
    database = tmp_path / "tracker.db"
    engine = db.make_engine(f"sqlite:///{database}")
    db.upgrade(engine)
    engine.dispose()

    # the port is known only once the server is bound, and the app wants its own URL
    holder: dict[str, Flask] = {}
    server = make_server("127.0.0.1", 0, lambda environ, start: holder["app"](environ, start), threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    settings = Settings(
        instance_path=tmp_path,
        database_url=f"sqlite:///{database}",
        secret_key="browser-test-secret",
        base_url=url,
    )
    app = create_app({"TRACKER_SETTINGS": settings})
    holder["app"] = app
    thread = threading.Thread(target=server.serve_forever, name="live-server", daemon=True)
    thread.start()
    try:
        yield LiveServer(url, app)
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()
        app.extensions["tracker"].engine.dispose()


# -- browsers ------------------------------------------------------------------------------------

_REPORTS = pytest.StashKey[dict[str, pytest.TestReport]]()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Keep each phase's report on the test, so fixtures know at teardown whether it failed."""
    report = yield
    item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _start_chromium(profile: Path) -> WebDriver:
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not binary.exists():
            browser_missing(f"{binary} does not exist")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    try:
        driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    except WebDriverException as exc:
        browser_missing(f"it did not start: {exc.msg or exc}")
    driver.set_page_load_timeout(30)
    return driver


@pytest.fixture
def new_browser(request, tmp_path) -> Iterator[Callable[[], WebDriver]]:
    """Start another browser with a fresh profile: nobody is signed in there."""
    started: list[tuple[WebDriver, Path]] = []

    def start() -> WebDriver:
        profile = Path(tempfile.mkdtemp(prefix="chromium-profile-"))
        try:
            driver = _start_chromium(profile)
        except BaseException:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        started.append((driver, profile))
        return driver

    yield start
    reports = request.node.stash.get(_REPORTS, {})
    failed = any(r.failed for r in reports.values())
    for number, (driver, profile) in enumerate(started, 1):
        try:
            if failed:
                shot = tmp_path / f"failure-browser-{number}.png"
                driver.save_screenshot(str(shot))
                print(f"screenshot of browser {number} at {driver.current_url}: {shot}")
        finally:
            driver.quit()
            shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def browser(new_browser) -> WebDriver:
    return new_browser()
