"""The import pages: upload, the dry run's report page by page, confirming the import, the
progress endpoint, the summary and the rows not imported; refusals as pages, never a crash."""

from __future__ import annotations

import csv
import io
import re
import time
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine import jobs
from engine.models import ImportJob, Item, Outbox, utcnow
from tests import webhelpers
from tests.import_helpers import ULNS, csv_bytes, learners_xlsx
from tests.webhelpers import cheap_hashing, create_users, csrf, sign_in  # noqa: F401 - cheap_hashing is autouse

new_app = webhelpers.new_app

HEADER = "given_name,family_name,date_of_birth,uln"


@pytest.fixture
def app(new_app):
    app = new_app()
    create_users(app, clerk=["tracker_creator"], mona=["manager"], ada=["admin"], other=["tracker_creator"])
    return app


def client_for(app, username: str):
    client = app.test_client()
    sign_in(client, username)
    return client


def upload(client, type_key: str, name: str, content: bytes, encoding: str = "utf-8"):
    token = csrf(client, "/imports")
    return client.post(
        "/imports",
        data={"csrf_token": token, "type": type_key, "encoding": encoding, "file": (io.BytesIO(content), name)},
        content_type="multipart/form-data",
    )


def wait_until_finished(client, job_id: int) -> dict:
    """Poll the progress endpoint as the page's script does, until the step is over."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        state = client.get(f"/imports/{job_id}/progress.json").get_json()
        if state["finished"]:
            return state
        time.sleep(0.05)
    raise AssertionError(f"import #{job_id} did not finish: {state}")


def job_id_of(response) -> int:
    assert response.status_code == 303, response.get_data(as_text=True)
    return int(re.search(r"/imports/(\d+)$", response.headers["Location"]).group(1))


def test_upload_check_report_confirm_import_and_summary(app):
    client = client_for(app, "clerk")
    page = client.get("/imports").get_data(as_text=True)
    assert 'id="nav-imports"' in page and "You have not imported anything yet." in page
    content = csv_bytes(
        HEADER,
        f"Ann,Lee,2001-02-03,{ULNS[0]}",
        "Bob,,2001-02-30,12",
        f"Cat,Ray,2001-02-03,{ULNS[1]}",
        f"Cat,Ray,2001-02-03,{ULNS[1]}",
    )
    job_id = job_id_of(upload(client, "learner", "learners.csv", content))
    state = wait_until_finished(client, job_id)
    assert state["status"] == "checked"
    assert (state["total"], state["processed"], state["percent"]) == (4, 4, 100)
    assert (state["valid"], state["invalid"], state["duplicate_rows"]) == (2, 1, 1)

    page = client.get(f"/imports/{job_id}").get_data(as_text=True)
    assert "Check finished" in page and "Import 2 valid rows" in page
    assert "<td><code>family_name</code></td>" in page and "Family name is required" in page
    assert "Date of birth must be a date" in page
    assert f"A Learner with ULN {ULNS[1]} is already on line 4 of this file" in page  # line 5 repeats line 4
    with app.app_context():
        rt = app.extensions["tracker"]
        with rt.session() as session:
            assert session.scalar(select(func.count()).select_from(Item)) == 0  # the dry run saved nothing

    token = csrf(client, f"/imports/{job_id}")
    response = client.post(f"/imports/{job_id}/start", data={"csrf_token": token})
    assert response.status_code == 303
    state = wait_until_finished(client, job_id)
    assert (state["status"], state["created"], state["duplicates"], state["failed"]) == ("done", 2, 1, 1)
    page = client.get(f"/imports/{job_id}").get_data(as_text=True)
    assert "Import finished" in page and 'id="created-count">2<' in page and "Rows not imported" in page

    download = client.get(f"/imports/{job_id}/rows-not-imported.csv")
    assert download.status_code == 200
    assert 'filename="learners-rows-not-imported.csv"' in download.headers["Content-Disposition"]
    rows = list(csv.reader(io.StringIO(download.get_data(as_text=True).lstrip("\ufeff"))))
    assert rows[0] == ["line", "problems", "given_name", "family_name", "date_of_birth", "uln"]
    assert [r[0] for r in rows[1:]] == ["3", "5"]
    assert rows[1][2:] == ["Bob", "", "2001-02-30", "12"]
    assert "family_name: Family name is required" in rows[1][1]
    assert rows[2][1].startswith("uln: A Learner with ULN 2442725095 is already on line 4 of this file")

    again = client.post(f"/imports/{job_id}/start", data={"csrf_token": token})
    assert again.status_code == 409 and "cannot be started again" in again.get_data(as_text=True)
    listing = client.get("/imports").get_data(as_text=True)
    assert "learners.csv" in listing and "2 created" in listing


def test_xlsx_upload(app):
    client = client_for(app, "clerk")
    job_id = job_id_of(upload(client, "learner", "learners.xlsx", learners_xlsx()))
    assert wait_until_finished(client, job_id)["valid"] == 2


def test_a_long_report_is_paged(app):
    client = client_for(app, "clerk")
    bad = [f"P{i},Smith,2001-13-01," for i in range(60)]
    job_id = job_id_of(upload(client, "learner", "bad.csv", csv_bytes(HEADER, *bad)))
    state = wait_until_finished(client, job_id)
    assert (state["valid"], state["invalid"]) == (0, 60)
    first = client.get(f"/imports/{job_id}").get_data(as_text=True)
    assert "60 problems, page 1 of 2" in first and "No row can be imported as it is." in first
    assert "confirm-import" not in first
    assert first.count('<tr class="invalid">') == 50
    second = client.get(f"/imports/{job_id}?page=2").get_data(as_text=True)
    assert second.count('<tr class="invalid">') == 10 and "<td>61</td>" in second


def test_a_running_job_refreshes_itself_without_javascript(app):
    """While a step runs the page carries a progress bar, a script for it, and a refresh for
    browsers without JavaScript; the progress endpoint says how far it is."""
    client = client_for(app, "clerk")
    rt = app.extensions["tracker"]
    with rt.session() as session:
        user_id = rt.users(session).get("clerk").id
        job = ImportJob(
            user_id=user_id,
            type_key="learner",
            filename="big.csv",
            content=b"x",
            status="importing",
            total_rows=4000,
            processed=1000,
        )
        session.add(job)
        session.commit()
        job_id = job.id
    page = client.get(f"/imports/{job_id}").get_data(as_text=True)
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page
    assert '<progress id="job-bar" class="bar job-bar" max="4000" value="1000"' in page
    assert "25% · 1,000 of 4,000 rows" in page and "progress.js" in page
    state = client.get(f"/imports/{job_id}/progress.json").get_json()
    assert state["percent"] == 25 and not state["finished"] and state["page"] == f"/imports/{job_id}"


def test_only_the_uploader_and_admins_see_a_job(app):
    client = client_for(app, "clerk")
    job_id = job_id_of(upload(client, "learner", "l.csv", csv_bytes(HEADER, "Ann,Lee,2001-02-03,")))
    wait_until_finished(client, job_id)
    other = client_for(app, "other")
    for url in (f"/imports/{job_id}", f"/imports/{job_id}/progress.json", f"/imports/{job_id}/rows-not-imported.csv"):
        assert other.get(url).status_code == 404
    token = csrf(other, "/imports")
    assert other.post(f"/imports/{job_id}/start", data={"csrf_token": token}).status_code == 404
    assert client_for(app, "ada").get(f"/imports/{job_id}").status_code == 200


def test_someone_without_the_import_capability_is_refused(app):
    client = client_for(app, "mona")
    assert 'id="nav-imports"' not in client.get("/").get_data(as_text=True)
    page = client.get("/imports")
    assert page.status_code == 403 and "items.import" in page.get_data(as_text=True)
    token = csrf(client, "/")
    response = client.post(
        "/imports",
        data={"csrf_token": token, "type": "learner", "file": (io.BytesIO(b"given_name\nAnn\n"), "l.csv")},
        content_type="multipart/form-data",
    )
    assert response.status_code == 403


@pytest.mark.parametrize(
    ("name", "content", "status", "says"),
    [
        (
            "l.csv",
            csv_bytes("given_name,family_name,date_of_birth,hat", "A,B,2001-01-01,x"),
            422,
            "is not a field of Learner",
        ),
        ("l.csv", b"", 422, "l.csv is empty."),
        (
            "l.csv",
            csv_bytes("given_name,family_name,date_of_birth", "Zoë,B,2001-01-01", encoding="cp1252"),
            422,
            "is not UTF-8 text",
        ),
        ("l.xlsx", b"PK\x03\x04 nope", 422, "is not a readable Excel workbook"),
    ],
)
def test_a_file_that_cannot_be_imported_is_shown_again_with_the_reason(app, name, content, status, says):
    client = client_for(app, "clerk")
    response = upload(client, "learner", name, content)
    assert response.status_code == status
    page = response.get_data(as_text=True)
    assert says in page and 'id="import-errors"' in page and 'value="learner" selected' in page
    rt = app.extensions["tracker"]
    with rt.session() as session:
        assert session.scalar(select(func.count()).select_from(ImportJob)) == 0


def test_a_form_without_type_or_file_is_refused(app):
    client = client_for(app, "clerk")
    token = csrf(client, "/imports")
    response = client.post("/imports", data={"csrf_token": token}, content_type="multipart/form-data")
    assert response.status_code == 422
    page = response.get_data(as_text=True)
    assert "Choose what the rows are" in page and "Choose a file to import" in page


def test_a_file_over_the_limit_is_refused_with_413(new_app):
    app = new_app(settings={"import_max_bytes": 2048})
    create_users(app, clerk=["tracker_creator"])
    client = client_for(app, "clerk")
    response = upload(client, "learner", "l.csv", csv_bytes(HEADER, *[f"Ann,Lee,2001-02-03,{ULNS[0]}"] * 100))
    assert response.status_code == 413
    assert "too large" in response.get_data(as_text=True)
    huge = upload(client, "learner", "l.csv", b"given_name\n" + b"A\n" * 200_000)
    assert huge.status_code == 413 and "the most an import may be" in huge.get_data(as_text=True)


def test_jobs_run_on_an_rq_worker_when_redis_is_configured(new_app, redis_url):
    from rq import SimpleWorker

    name = f"test-imports-{uuid.uuid4().hex[:8]}"
    app = new_app(settings={"redis_url": redis_url, "queue_name": name})
    create_users(app, clerk=["tracker_creator"])
    client = client_for(app, "clerk")
    rt = app.extensions["tracker"]
    job_id = job_id_of(upload(client, "learner", "l.csv", csv_bytes(HEADER, f"Ann,Lee,2001-02-03,{ULNS[0]}")))
    assert client.get(f"/imports/{job_id}/progress.json").get_json()["status"] == "checking"
    jobs.use_runtime(rt)
    try:
        worker = SimpleWorker([jobs.queue(redis_url, name)], connection=jobs.redis_connection(redis_url))
        assert worker.work(burst=True)
        assert client.get(f"/imports/{job_id}/progress.json").get_json()["status"] == "checked"
        token = csrf(client, f"/imports/{job_id}")
        client.post(f"/imports/{job_id}/start", data={"csrf_token": token})
        assert worker.work(burst=True)
        state = client.get(f"/imports/{job_id}/progress.json").get_json()
        assert (state["status"], state["created"]) == ("done", 1)
        with rt.session() as session:  # the item's outbox row went to the queue, and the worker sent it on
            assert session.scalar(select(Outbox.status).where(Outbox.item_id.is_not(None))) == "done"
    finally:
        jobs.use_runtime(None)
        jobs.queue(redis_url, name).empty()


def test_a_job_that_died_or_failed_says_so_and_what_to_do(app):
    client = client_for(app, "clerk")
    rt = app.extensions["tracker"]
    with rt.session() as session:
        user_id = rt.users(session).get("clerk").id
        long_ago = utcnow() - timedelta(minutes=30)
        dead = ImportJob(user_id=user_id, type_key="learner", filename="a.csv", content=b"x", status="importing")
        dead.total_rows, dead.processed, dead.updated_at = 5000, 2000, long_ago
        failed = ImportJob(user_id=user_id, type_key="learner", filename="b.csv", content=b"x", status="failed")
        failed.error = "The user who started the import is no longer active."
        session.add_all([dead, failed])
        session.commit()
        dead_id, failed_id = dead.id, failed.id
    page = client.get(f"/imports/{dead_id}").get_data(as_text=True)
    assert "This import stopped at 2,000 of 5,000 rows" in page and "Upload the file again" in page
    assert "http-equiv" not in page
    assert client.get(f"/imports/{dead_id}/progress.json").get_json()["stalled"] is True
    page = client.get(f"/imports/{failed_id}").get_data(as_text=True)
    assert "The import stopped: The user who started the import is no longer active." in page
