"""Following background jobs from the web in tests: the start's redirect to the job's page,
then the progress endpoint polled as the page's script does, until the job is over."""

from __future__ import annotations

import time

from flask.testing import FlaskClient


def wait_for_job(client: FlaskClient, page_url: str, timeout: float = 120) -> dict:
    """Poll ``<page_url>/progress.json`` until the job is finished; return its last state."""
    deadline = time.monotonic() + timeout
    state: dict = {}
    while time.monotonic() < deadline:
        response = client.get(f"{page_url}/progress.json")
        assert response.status_code == 200, response.get_data(as_text=True)
        state = response.get_json()
        if state["finished"]:
            return state
        time.sleep(0.05)
    raise AssertionError(f"the job at {page_url} did not finish: {state}")


def finished_page(client: FlaskClient, started) -> tuple[str, str]:
    """After ``started`` (the response of the form that starts a job: a 303 to its page), wait
    until the job is over; return the page's URL and its text."""
    assert started.status_code == 303, started.get_data(as_text=True)
    page_url = started.headers["Location"]
    wait_for_job(client, page_url)
    response = client.get(page_url)
    assert response.status_code == 200, response.get_data(as_text=True)
    return page_url, response.get_data(as_text=True)
