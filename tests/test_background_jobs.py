"""Long work started on the web runs as a background job (engine/background.py): the ILR export
and the migration of a type's items. The form starts the job and leads to its page, which follows
the progress endpoint to the result; progress is honest (learners or items gone through of the
total, stage by stage); a job that fails says why; only its starter and administrators see it;
without JavaScript the page refreshes itself; with Redis an RQ worker runs it."""

from __future__ import annotations

import json
import re
import uuid
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine import background, jobs, type_migration_job
from engine.definitions.store import Texts
from engine.ilr import xml_export
from engine.models import BackgroundJob, BulkExport, Item, User, utcnow
from engine.permissions import Actor
from tests import test_ilr_web, webhelpers
from tests.job_helpers import finished_page, wait_for_job
from tests.test_ilr_web import OFFICE, client_for, post_export
from tests.webhelpers import create_users, csrf

# the ILR web tests' app (three records, one of which ESFA's schema refuses) and users
apps, setup = test_ilr_web.apps, test_ilr_web.setup
new_app, cheap_hashing = webhelpers.new_app, webhelpers.cheap_hashing

KEY = "bike_loan"


def jobs_of(app) -> list[BackgroundJob]:
    with app.extensions["tracker"].session() as session:
        return list(session.scalars(select(BackgroundJob).order_by(BackgroundJob.id)))


def add_job(app, username: str, **values) -> int:
    """A job row as a job's work would have left it (nothing runs it)."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        user = rt.users(session).get(username)
        job = BackgroundJob(user_id=user.id, **values)
        session.add(job)
        session.commit()
        return job.id


# -- the ILR export ------------------------------------------------------------------------------------


def test_the_ilr_export_runs_as_a_job_to_its_file_and_the_learners_left_out(setup):
    app = setup()
    client = client_for(app, "fran")
    started = post_export(client, status="new")
    assert started.status_code == 303
    page_url = started.headers["Location"]
    assert re.fullmatch(r"/ilr/jobs/\d+", page_url)

    state = wait_for_job(client, page_url)
    assert (state["status"], state["percent"], state["processed"], state["total"]) == ("done", 100, 2, 2)
    assert state["finished"] and not state["stalled"] and state["error"] is None
    assert state["page"] == page_url and state["unit"] == "learners"

    page = client.get(page_url).get_data(as_text=True)
    assert "http-equiv" not in page and "progress.js" not in page  # over: no refresh, no polling
    name = re.search(r"ILR-10012345-2526-\d{8}-\d{6}-01\.xml", page).group(0)
    assert f"<strong>{name}</strong> holds 2 learners" in page
    assert f'<a class="button" href="/ilr/files/{name}" id="download-ilr">' in page
    download = client.get(f"/ilr/files/{name}")
    assert download.status_code == 200 and download.mimetype == "application/xml"
    assert b"<LearnRefNumber>LR0001</LearnRefNumber>" in download.data
    failing = app.ids["LR0003"]
    assert "1 learner left out of the file" in page
    assert f'<a href="/items/{failing}">LR0003</a>' in page
    assert f'<a href="/items/{failing}#data-email">Email</a>' in page
    assert "Email is refused by ESFA&#39;s schema" in page

    (job,) = jobs_of(app)
    assert (job.kind, job.status, job.params["records"], job.params["address"]) == ("ilr_export", "done", 3, OFFICE)
    assert job.result["filename"] == name and job.result["included"] == 2
    form = client.get("/ilr/export").get_data(as_text=True)
    assert f'<a href="{page_url}">#{job.id} · UKPRN 10012345, 2526</a>' in form and name in form


def test_the_export_reports_each_learner_stage_by_stage(setup, tmp_path):
    """The engine's progress: learners checked, then validated against ESFA's schema (again
    without the one it refused), then written; each stage counts up to its total."""
    app = setup()
    rt = app.extensions["tracker"]
    seen: list[tuple[str, int, int]] = []
    with rt.session() as session:
        actor = rt.actor(session, "fran")
        result = xml_export.export_ilr(
            rt.items(session, actor),
            ukprn="10012345",
            year="2526",
            out_dir=tmp_path / "out",
            progress=lambda done, total, stage: seen.append((stage, done, total)),
        )
    assert len(result.included) == 2
    assert [s for s in seen if s[0] == "records"] == [("records", 1, 3), ("records", 2, 3), ("records", 3, 3)]
    assert [s[1:] for s in seen if s[0] == "schema"] == [(0, 3), (1, 3), (2, 3), (3, 3)]
    assert [s[1:] for s in seen if s[0] == "schema_again"] == [(0, 2), (1, 2), (2, 2)]
    assert [s[1:] for s in seen if s[0] == "write"] == [(0, 2), (2, 2)]
    order = ["records", "schema", "schema_again", "write"]
    assert [s[0] for s in seen] == sorted((s[0] for s in seen), key=order.index)


def test_progress_is_written_now_and_then_and_always_at_a_new_stage_and_at_the_end(setup):
    app = setup()
    rt = app.extensions["tracker"]
    job_id = add_job(app, "fran", kind="ilr_export", status="running")
    now = [0.0]

    def row() -> tuple:
        with rt.session() as session:
            job = session.get(BackgroundJob, job_id)
            return job.stage, job.processed, job.total

    with background.ProgressWriter(rt, BackgroundJob, job_id, every=0.5, clock=lambda: now[0]) as writer:
        run = background.Run(job_id, {}, Actor.system(), writer)
        run.stage("Checking each learner's record", 10, "learners")
        assert row() == ("Checking each learner's record", 0, 10)
        now[0] = 0.2
        run.progress(1)
        assert row()[1] == 0  # too soon after the last write
        now[0] = 0.6
        run.progress(2)
        assert row()[1] == 2
        now[0] = 0.7
        run.progress(10)
        assert row()[1] == 10  # the last one is always written
        run.stage("Writing the file", 8, "learners")
        assert row() == ("Writing the file", 0, 8)


def test_an_export_that_fails_records_the_reason_and_shows_it(setup, tmp_path):
    app = setup()
    (tmp_path / "exports").mkdir()
    (tmp_path / "exports" / "ilr").write_text("a file where the folder should be")
    client = client_for(app, "fran")
    started = post_export(client)
    state = wait_for_job(client, started.headers["Location"])
    assert state["status"] == "failed" and state["finished"]
    assert state["error"].startswith("The ILR file could not be written to")
    assert state["text"] == f"Stopped: {state['error']}"
    page = client.get(started.headers["Location"]).get_data(as_text=True)
    assert "No ILR file written" in page
    assert '<strong id="job-error">The export stopped: The ILR file could not be written to' in page
    assert "Pick a folder you may write to" in page
    assert "http-equiv" not in page
    (job,) = jobs_of(app)
    assert job.status == "failed" and job.finished_at is not None and job.result is None


def test_the_export_is_refused_at_the_start_as_before_and_no_job_is_stored(setup):
    app = setup()
    clara = client_for(app, "clara")
    refused = clara.post("/ilr/export", data={"csrf_token": csrf(clara, "/"), "ukprn": "10012345", "year": "2526"})
    assert refused.status_code == 403 and "exports.bulk" in refused.get_data(as_text=True)
    home = client_for(app, "fran", "203.0.113.9")
    away = home.post("/ilr/export", data={"csrf_token": csrf(home, "/"), "ukprn": "10012345", "year": "2526"})
    assert away.status_code == 403 and "Bulk downloads are not allowed from your address" in away.get_data(as_text=True)
    fran = client_for(app, "fran")
    assert post_export(fran, ukprn="12").status_code == 422
    nothing = post_export(fran, q="nobody")
    assert nothing.status_code == 422 and "There is no ILR record to export" in nothing.get_data(as_text=True)
    assert jobs_of(app) == []
    with app.extensions["tracker"].session() as session:
        refusals = session.scalars(select(BulkExport.outcome).where(BulkExport.kind == "ilr_xml")).all()
    assert refusals == ["refused"]


def test_only_the_starter_and_administrators_see_a_job(setup):
    app = setup()
    create_users(app, fred=["finance"], ada=["admin"])
    fran = client_for(app, "fran")
    page_url, _page = finished_page(fran, post_export(fran))
    fred = client_for(app, "fred")
    for url in (page_url, f"{page_url}/progress.json"):
        response = fred.get(url)
        assert response.status_code == 404
        assert "There is no ILR export #" in response.get_data(as_text=True)
    assert page_url not in fred.get("/ilr/export").get_data(as_text=True)
    assert fred.get("/ilr/jobs/999999").status_code == 404  # the same answer as for a job that exists
    ada = client_for(app, "ada")
    assert ada.get(page_url).status_code == 200
    assert page_url in ada.get("/ilr/export").get_data(as_text=True)
    # a job of another kind is not an ILR export, even to its starter
    other = add_job(app, "fran", kind="type_migration", subject=KEY, status="done")
    assert fran.get(f"/ilr/jobs/{other}").status_code == 404


def test_without_javascript_a_running_job_page_refreshes_itself(setup):
    app = setup()
    client = client_for(app, "fran")
    params = {"ukprn": "10012345", "year": "2526", "records": 3}
    job_id = add_job(
        app,
        "fran",
        kind="ilr_export",
        status="running",
        params=params,
        stage="Checking each learner's record",
        unit="learners",
        processed=1,
        total=3,
    )
    page = client.get(f"/ilr/jobs/{job_id}").get_data(as_text=True)
    assert '<noscript><meta http-equiv="refresh" content="3"></noscript>' in page
    assert '<progress id="job-bar" class="bar job-bar" max="3" value="1"' in page
    assert "33% · 1 of 3 learners" in page and "Checking each learner&#39;s record" in page
    assert f'data-progress-url="/ilr/jobs/{job_id}/progress.json"' in page
    scripts = re.findall(r"<script[^>]*>", page)
    assert scripts and all(" src=" in s for s in scripts)  # no inline script: the CSP forbids it
    assert "/static/progress.js" in page
    state = client.get(f"/ilr/jobs/{job_id}/progress.json").get_json()
    assert (state["percent"], state["finished"], state["text"]) == (33, False, "33% · 1 of 3 learners")

    queued = add_job(app, "fran", kind="ilr_export", status="queued", params=params, total=3)
    page = client.get(f"/ilr/jobs/{queued}").get_data(as_text=True)
    assert '<progress id="job-bar" class="bar job-bar" max="3" aria-describedby' in page  # no value: waiting
    assert "Waiting to start" in page and "http-equiv" in page

    with app.extensions["tracker"].session() as session:
        job = session.get(BackgroundJob, job_id)
        job.status, job.processed, job.finished_at = "done", 3, utcnow()
        job.result = {"written": False, "strict": True, "included": 2, "year": "2526", "excluded": []}
        session.commit()
    page = client.get(f"/ilr/jobs/{job_id}").get_data(as_text=True)
    assert "No ILR file written" in page and "http-equiv" not in page and "job-bar" not in page


def test_a_job_whose_process_died_says_so(setup):
    app = setup()
    client = client_for(app, "fran")
    long_ago = utcnow() - timedelta(minutes=30)
    died = add_job(
        app, "fran", kind="ilr_export", status="running", unit="learners", processed=40, total=90, updated_at=long_ago
    )
    never = add_job(app, "fran", kind="ilr_export", status="queued", total=90, created_at=long_ago)
    state = client.get(f"/ilr/jobs/{died}/progress.json").get_json()
    assert state["stalled"] and not state["finished"]
    page = client.get(f"/ilr/jobs/{died}").get_data(as_text=True)
    assert "The export stopped at 40 of 90 learners" in page and "http-equiv" not in page
    page = client.get(f"/ilr/jobs/{never}").get_data(as_text=True)
    assert "no worker has taken it" in page and "tracker worker" in page


def test_with_redis_an_rq_worker_runs_the_export(setup, redis_url):
    from rq import SimpleWorker

    name = f"test-background-{uuid.uuid4().hex[:8]}"
    app = setup(redis_url=redis_url, queue_name=name)
    rt = app.extensions["tracker"]
    client = client_for(app, "fran")
    page_url = post_export(client).headers["Location"]
    assert client.get(f"{page_url}/progress.json").get_json()["status"] == "queued"
    jobs.use_runtime(rt)
    try:
        worker = SimpleWorker([jobs.queue(redis_url, name)], connection=jobs.redis_connection(redis_url))
        assert worker.work(burst=True)
        state = client.get(f"{page_url}/progress.json").get_json()
        assert (state["status"], state["percent"]) == ("done", 100)
        assert "ILR file ready" in client.get(page_url).get_data(as_text=True)
    finally:
        jobs.use_runtime(None)
        jobs.queue(redis_url, name).empty()


# -- running stored jobs --------------------------------------------------------------------------------


def test_work_runs_as_its_starter_and_stops_with_the_reason_when_it_cannot(setup):
    app = setup()
    rt = app.extensions["tracker"]
    create_users(app, gone=["finance"])
    # the starter lost the capability since: the permission is checked again when it runs
    lost = add_job(app, "clara", kind="type_migration", subject=KEY, params={"type_key": KEY})
    # the starter was deactivated
    with rt.session() as session:
        session.scalar(select(User).where(User.username == "gone")).active = False
        session.commit()
    inactive = add_job(app, "gone", kind="ilr_export", params={"ukprn": "10012345", "year": "2526"})
    # the parameters are not what the work needs: an unexpected error, still recorded
    broken = add_job(app, "fran", kind="ilr_export", params={})
    for job_id in (lost, inactive, broken):
        assert "failed" in background.execute(rt, job_id)
    assert background.execute(rt, broken) == f"background job #{broken} was not waiting to run"
    errors = {j.id: j.error for j in jobs_of(app)}
    assert errors[lost].startswith("clara may not") and "types.admin" in errors[lost]
    assert errors[inactive] == (
        "The user who started this ILR export is no longer active, so it was not run. Sign in and start it again."
    )
    assert errors[broken] == "An unexpected error stopped it: KeyError: 'ukprn'"
    assert {j.status for j in jobs_of(app)} == {"failed"}


# -- migrating a type's items ---------------------------------------------------------------------------


@pytest.fixture
def bikes(new_app):
    """A type kept in the database, version 1 with three loans, then version 2 whose titles are
    at most 9 characters and whose migration shortens "Red bike": one loan cannot be migrated.
    Users: the admin ada; tess and theo design types (a role the type brings)."""
    app = new_app(RATELIMIT_ENABLED=False)
    rt = app.extensions["tracker"]
    with rt.session() as session:
        definitions = rt.definitions(session, Actor.system())
        definitions.create(KEY, "Bike loan")
        texts = definitions.texts_of(KEY)
        roles = "roles:\n- key: type_designer\n  name: Type designer\n  capabilities: [types.admin, items.view]\n"
        definitions.save_draft(KEY, Texts(texts.schema_json, texts.type_yaml, texts.workflow_yaml, roles))
        definitions.publish(KEY)
    rt.refresh_definitions()
    with rt.session() as session:
        items = rt.items(session, Actor.system())
        app.loans = {t: items.create(KEY, {"title": t}).id for t in ("Red bike", "Blue bike", "Tandem for two")}
        definitions = rt.definitions(session, Actor.system())
        definitions.draft(KEY)
        texts = definitions.texts_of(KEY)
        schema = json.loads(texts.schema_json)
        schema["properties"]["title"]["maxLength"] = 9
        manifest = texts.type_yaml + "migrations:\n- map_values:\n    field: title\n    map: {Red bike: Red}\n"
        definitions.save_draft(KEY, Texts(json.dumps(schema, indent=2), manifest, texts.workflow_yaml, roles))
        definitions.publish(KEY, "titles of at most 9 characters")
    rt.refresh_definitions()
    create_users(app, ada=["admin"], tess=["type_designer"], theo=["type_designer"])
    return app


def versions(app) -> dict[str, int]:
    with app.extensions["tracker"].session() as session:
        return {i.data["title"]: i.type_version for i in session.scalars(select(Item).where(Item.type_key == KEY))}


def test_a_migration_runs_as_a_job_and_lists_the_items_it_could_not_migrate(bikes):
    tess = client_for(bikes, "tess")
    preview = tess.get(f"/admin/types/{KEY}/migrate").get_data(as_text=True)
    assert 'id="apply-migration"' in preview and "It runs in the background" in preview
    token = csrf(tess, f"/admin/types/{KEY}/migrate")
    started = tess.post(f"/admin/types/{KEY}/migrate", data={"csrf_token": token})
    page_url = started.headers["Location"]
    assert re.fullmatch(rf"/admin/types/{KEY}/migrate/jobs/\d+", page_url)
    state = wait_for_job(tess, page_url)
    assert (state["status"], state["processed"], state["total"], state["percent"]) == ("done", 3, 3, 100)
    assert state["unit"] == "items" and state["stage"] == "Migrating items"

    page = tess.get(page_url).get_data(as_text=True)
    assert "Migrated 2 items to version 2; 1 could not be migrated and stay under their version." in page
    assert '<dd id="migrated-count">2</dd>' in page and '<dd id="failed-count">1</dd>' in page
    tandem = bikes.loans["Tandem for two"]
    assert f'<a href="/items/{tandem}">#{tandem} Tandem for two</a>' in page
    assert "<code>/title</code>" in page
    assert versions(bikes) == {"Red": 2, "Blue bike": 2, "Tandem for two": 1}
    listing = tess.get(f"/admin/types/{KEY}/migrate").get_data(as_text=True)
    assert f'href="{page_url}"' in listing and "2 migrated, 1 could not be" in listing

    # another type designer does not see it; an administrator does
    theo = client_for(bikes, "theo")
    assert theo.get(page_url).status_code == 404
    assert theo.get(f"{page_url}/progress.json").status_code == 404
    assert page_url not in theo.get(f"/admin/types/{KEY}/migrate").get_data(as_text=True)
    assert client_for(bikes, "ada").get(page_url).status_code == 200
    # under another type's address it is not found either
    assert tess.get(page_url.replace(KEY, "other_type")).status_code in (403, 404)


def test_a_second_migration_of_a_type_waits_for_the_one_running(bikes):
    running = add_job(
        bikes, "tess", kind="type_migration", subject=KEY, status="running", params={"to_version": 2}, total=3
    )
    tess = client_for(bikes, "tess")
    page = tess.get(f"/admin/types/{KEY}/migrate").get_data(as_text=True)
    assert 'id="migration-running"' in page and 'id="apply-migration"' not in page
    assert f'href="/admin/types/{KEY}/migrate/jobs/{running}">Follow its progress</a>' in page
    token = csrf(tess, f"/admin/types/{KEY}/migrate")
    again = tess.post(f"/admin/types/{KEY}/migrate", data={"csrf_token": token})
    assert again.headers["Location"] == f"/admin/types/{KEY}/migrate/jobs/{running}"
    assert "is already running" in tess.get(again.headers["Location"]).get_data(as_text=True)
    theo = client_for(bikes, "theo")
    refused = theo.post(f"/admin/types/{KEY}/migrate", data={"csrf_token": csrf(theo, f"/admin/types/{KEY}/migrate")})
    assert refused.headers["Location"] == f"/admin/types/{KEY}/migrate"
    page = theo.get(refused.headers["Location"]).get_data(as_text=True)
    assert "is already running" in page and "Follow its progress" not in page
    with bikes.extensions["tracker"].session() as session:
        assert session.scalar(select(func.count()).select_from(BackgroundJob)) == 1
    assert versions(bikes) == {"Red bike": 1, "Blue bike": 1, "Tandem for two": 1}


def test_a_migration_that_fails_shows_why_and_nothing_to_migrate_starts_nothing(bikes):
    rt = bikes.extensions["tracker"]
    tess = client_for(bikes, "tess")
    with rt.session() as session:
        tess_user = rt.users(session).get("tess")
    job = type_migration_job.start(rt, Actor.for_user(tess_user, rt.registry), KEY)
    page_url = f"/admin/types/{KEY}/migrate/jobs/{job.id}"
    assert wait_for_job(tess, page_url)["status"] == "done"
    # the loan that could not be migrated is corrected under its version, then migrated again
    with rt.session() as session:
        items = rt.items(session, Actor.system())
        loan = items.get(bikes.loans["Tandem for two"])
        items.update(loan.id, {"title": "Tandem"})
    token = csrf(tess, f"/admin/types/{KEY}/migrate")
    _url, page = finished_page(tess, tess.post(f"/admin/types/{KEY}/migrate", data={"csrf_token": token}))
    assert "Migrated 1 item to version 2." in page
    # with every item at the current version, starting again says there is nothing to do
    nothing = tess.post(f"/admin/types/{KEY}/migrate", data={"csrf_token": token})
    assert nothing.headers["Location"] == f"/admin/types/{KEY}/migrate"
    assert "There is nothing to migrate." in tess.get(nothing.headers["Location"]).get_data(as_text=True)
    assert len(jobs_of(bikes)) == 2
    assert versions(bikes) == {"Red": 2, "Blue bike": 2, "Tandem": 2}
    # a job whose starter lost the right to define types stops with the reason, shown on its page
    failed = add_job(bikes, "tess", kind="type_migration", subject=KEY, params={"type_key": KEY, "to_version": 2})
    with rt.session() as session:
        user = rt.users(session).get("tess")
        user.grants.clear()
        session.commit()
    background.execute(rt, failed)
    ada = client_for(bikes, "ada")
    page = ada.get(f"/admin/types/{KEY}/migrate/jobs/{failed}").get_data(as_text=True)
    assert '<strong id="job-error">The migration stopped: tess may not' in page
    assert "Start it again from the Migrate items tab" in page
