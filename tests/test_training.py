"""LIVE and TRAINING on SQLite and PostgreSQL: the refresh copies LIVE into TRAINING and only
ever writes the TRAINING target; TRAINING refuses to run on LIVE's database; every TRAINING
page and CLI command says so; TRAINING notifies through the in-app inbox only; the scheduler
refreshes it once a night."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy import create_engine, select, text

from engine import db, indexes, training
from engine.config import Settings
from engine.errors import TrackerError
from engine.jobs import Scheduler
from engine.models import Delivery, Notification, User
from engine.notifications import Channel, InboxChannel, Notifier, Preferences
from engine.runtime import Runtime
from tests.conftest import PG_ADMIN_URL
from tests.notify_helpers import *  # noqa: F403 - fixtures (smtp)
from tests.notify_helpers import PASSWORD, make_settings, service
from tests.test_backup import assert_same, files_of, populate, snapshot
from webui import create_app

MARK = ("training_copy",)
BANNER = re.compile(r"TRAINING - changes here are not real; refreshed from LIVE at \d{4}-\d\d-\d\d \d\d:\d\d UTC")


@pytest.fixture
def training_url(tmp_path, db_url) -> Iterator[str]:
    """An empty database of the same kind as the test database, for TRAINING."""
    if db_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'training.db'}"
        return
    name = f"tracker_training_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def live(tmp_path, db_url, training_url, smtp) -> Iterator[Runtime]:
    """LIVE with people, meetings, notifications and two documents; TRAINING configured."""
    rt = Runtime(
        make_settings(
            tmp_path / "live", db_url, training_database_url=training_url, smtp_url=smtp.url, training_refresh_hour=2
        )
    )
    populate(rt, documents=rt.settings.documents_path)
    yield rt
    rt.engine.dispose()


def training_runtime(tmp_path, training_url: str, **overrides) -> Runtime:
    return Runtime(make_settings(tmp_path / "training", training_url, environment="training", **overrides))


# -- the refresh ---------------------------------------------------------------------------------


def test_refresh_copies_live_into_training_and_only_reads_live(live, tmp_path, db_url, training_url):
    before = snapshot(db_url)
    report = training.refresh(live.settings, live.registry)
    assert_same(snapshot(db_url), before)  # LIVE: not one row changed
    assert_same(snapshot(training_url, skip=MARK), snapshot(db_url, skip=MARK))
    assert report.items == 5 and report.counts["events"] == len(before["events"])
    trained = db.make_engine(training_url)
    try:
        assert training.refreshed_at(trained) == report.refreshed_at
        assert indexes.existing_names(trained) == indexes.existing_names(live.engine)
        assert db.current_revision(trained) == db.current_revision(live.engine)
    finally:
        trained.dispose()
    with live.session() as session:  # LIVE carries no TRAINING mark, so it is never taken for one
        assert session.execute(text("SELECT COUNT(*) FROM training_copy")).scalar_one() == 0

    # people practise in TRAINING; the next refresh puts LIVE back
    practice = training_runtime(tmp_path, training_url)
    with practice.session() as session:
        service(practice, session, "alice").create("meeting", {"topic": "Practice only"}, assignee="carol")
    practice.engine.dispose()
    assert len(snapshot(training_url)["items"]) == 6
    again = training.refresh(live.settings, live.registry)
    assert again.refreshed_at >= report.refreshed_at
    assert_same(snapshot(training_url, skip=MARK), snapshot(db_url, skip=MARK))
    assert_same(snapshot(db_url), before)


def test_the_cli_refreshes_and_says_when(live, run, training_url):
    run.env.update(
        TRACKER_INSTANCE_PATH=str(live.settings.instance_path),
        TRACKER_DEFINITIONS_PATH=":".join(str(p) for p in live.settings.definitions_path),
        TRACKER_TRAINING_DATABASE_URL=training_url,
    )
    done = run("training", "refresh")
    assert "TRAINING refreshed from LIVE at" in done.stdout and "5 items" in done.stdout
    status = run("training", "status")
    assert "This is LIVE" in status.stdout
    assert re.search(r"last refreshed \d{4}-\d\d-\d\d \d\d:\d\d UTC", status.stdout)
    assert "daily after 02:00 UTC" in status.stdout


def test_refresh_refuses_live_itself_however_it_is_named(live, tmp_path, db_url):
    before = snapshot(db_url)
    spellings = [db_url]
    if db_url.startswith("sqlite"):
        link = tmp_path / "looks-different.db"
        link.symlink_to(db_url.split("///", 1)[1])
        spellings.append(f"sqlite:///{link}")
    else:
        spellings.append(db_url.replace("127.0.0.1", "localhost"))
    for url in spellings:
        settings = make_settings(tmp_path / "live", db_url, training_database_url=url)
        with pytest.raises(TrackerError, match="LIVE database itself"):
            training.refresh(settings, live.registry)
        with pytest.raises(TrackerError, match="names the LIVE database itself"):
            create_app({"TESTING": True, "TRACKER_SETTINGS": settings})
    assert_same(snapshot(db_url), before)


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgres_same_database_is_recognised_through_any_address(db_url, training_url):
    live, same, other = (db.make_engine(u) for u in (db_url, db_url.replace("127.0.0.1", "localhost"), training_url))
    try:
        assert training._same_postgres_database(live, same)
        assert not training._same_postgres_database(live, other)
    finally:
        for engine in (live, same, other):
            engine.dispose()


def test_refresh_refuses_a_target_with_data_that_is_not_a_training_copy(live, tmp_path, db_url, training_url):
    target = db.make_engine(training_url)
    db.upgrade(target)
    with target.begin() as conn:
        conn.execute(User.__table__.insert().values(username="someone", display_name="Real", password_hash="x"))
    target.dispose()
    before_target, before_live = snapshot(training_url), snapshot(db_url)
    with pytest.raises(TrackerError, match="holds data but is not a TRAINING copy"):
        training.refresh(live.settings, live.registry)
    assert_same(snapshot(training_url), before_target)
    assert_same(snapshot(db_url), before_live)


def test_refresh_refuses_on_training_without_a_target_or_across_database_kinds(live, tmp_path, db_url, training_url):
    with pytest.raises(TrackerError, match="This is a TRAINING instance"):
        training.refresh(make_settings(tmp_path, training_url, environment="training"), live.registry)
    with pytest.raises(TrackerError, match="TRACKER_TRAINING_DATABASE_URL is not set"):
        training.refresh(make_settings(tmp_path, db_url), live.registry)
    other = "postgresql+psycopg://postgres@127.0.0.1/x" if db_url.startswith("sqlite") else "sqlite:///x.db"
    with pytest.raises(TrackerError, match="Use a .* database for TRAINING too"):
        training.refresh(make_settings(tmp_path, db_url, training_database_url=other), live.registry)


def test_refresh_mirrors_documents_into_the_training_folder_only(live, tmp_path, training_url):
    live_docs = live.settings.documents_path
    before = files_of(live_docs)
    target = tmp_path / "training-documents"
    (target / "zz").mkdir(parents=True)
    (target / "zz" / ("0" * 64)).write_bytes(b"left from an earlier copy")
    live.settings.training_documents_path = target
    report = training.refresh(live.settings, live.registry)
    assert report.documents == 2 and files_of(target) == before and files_of(live_docs) == before
    live.settings.training_documents_path = live_docs / "inside"
    with pytest.raises(TrackerError, match="overlaps LIVE's documents folder"):
        training.refresh(live.settings, live.registry)
    assert files_of(live_docs) == before


# -- TRAINING never runs on LIVE ----------------------------------------------------------------------


def test_training_refuses_to_start_on_a_database_that_is_not_a_training_copy(live, tmp_path, db_url, run):
    on_live = make_settings(tmp_path / "training", db_url, environment="training")
    with pytest.raises(TrackerError, match="is not a TRAINING copy"):
        _ = Runtime(on_live).engine
    with pytest.raises(TrackerError, match="is not a TRAINING copy"):
        create_app({"TESTING": True, "TRACKER_SETTINGS": on_live})
    run.env.update(TRACKER_ENVIRONMENT="training")
    refused = run("items", "comment", "1", "written to LIVE?", ok=False)
    assert refused.returncode == 1 and "is not a TRAINING copy" in refused.stderr
    with live.session() as session:
        assert session.execute(text("SELECT COUNT(*) FROM events WHERE kind = 'commented'")).scalar_one() == 1


def test_an_empty_training_database_may_start_before_the_first_refresh(tmp_path, training_url):
    rt = training_runtime(tmp_path, training_url)
    db.upgrade(rt.engine)
    assert training.banner(rt).endswith("(never: run 'tracker training refresh' on LIVE)")
    rt.engine.dispose()


def test_environment_settings(tmp_path):
    assert Settings.from_env({"TRACKER_INSTANCE_PATH": str(tmp_path)}).environment == "live"
    chosen = Settings.from_env(
        {
            "TRACKER_INSTANCE_PATH": str(tmp_path),
            "TRACKER_ENVIRONMENT": "Training",
            "TRACKER_TRAINING_REFRESH_HOUR": "4",
        }
    )
    assert (chosen.environment, chosen.training_refresh_hour, chosen.queue_name) == ("training", 4, "tracker-training")
    assert Settings(instance_path=tmp_path).queue_name == "tracker"
    with pytest.raises(TrackerError, match="neither live nor training"):
        Settings.from_env({"TRACKER_INSTANCE_PATH": str(tmp_path), "TRACKER_ENVIRONMENT": "staging"})
    with pytest.raises(TrackerError, match="TRACKER_TRAINING_REFRESH_HOUR is not an hour"):
        Settings.from_env({"TRACKER_INSTANCE_PATH": str(tmp_path), "TRACKER_TRAINING_REFRESH_HOUR": "25"})


# -- what TRAINING looks like -----------------------------------------------------------------------


def _sign_in(client, username: str) -> None:
    page = client.get("/login").get_data(as_text=True)
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": csrf})
    assert response.status_code == 302, response.get_data(as_text=True)


def test_every_training_page_carries_the_banner_and_live_pages_do_not(live, tmp_path, training_url):
    training.refresh(live.settings, live.registry)
    app = create_app(
        {"TESTING": True, "TRACKER_SETTINGS": make_settings(tmp_path / "t", training_url, environment="training")}
    )
    client = app.test_client()
    for url in ("/login", "/health"):
        assert client.get(url).status_code in (200, 302)
    assert BANNER.search(client.get("/login").get_data(as_text=True))
    assert client.get("/health").get_json()["environment"] == "training"
    _sign_in(client, "alice")
    for url in ("/", "/inbox", "/items/1", "/preferences", "/no-such-page"):
        page = client.get(url).get_data(as_text=True)
        assert BANNER.search(page), url
        assert 'class="training-banner" role="status"' in page
    app.extensions["tracker"].engine.dispose()

    live_app = create_app({"TESTING": True, "TRACKER_SETTINGS": live.settings})
    live_client = live_app.test_client()
    assert "TRAINING" not in live_client.get("/login").get_data(as_text=True)
    assert "environment" not in live_client.get("/health").get_json()
    live_app.extensions["tracker"].engine.dispose()


def test_training_cli_commands_say_it_is_training(live, run, training_url):
    training.refresh(live.settings, live.registry)
    run.env.update(
        TRACKER_ENVIRONMENT="training",
        TRACKER_DATABASE_URL=training_url,
        TRACKER_DEFINITIONS_PATH=":".join(str(p) for p in live.settings.definitions_path),
    )
    done = run("items", "comment", "1", "practising", "--as", "alice")
    assert BANNER.search(done.stderr) and "Comment added to #1" in done.stdout
    assert "TRAINING" not in done.stdout  # scripts reading stdout see the usual answer


# -- TRAINING reaches nobody outside -------------------------------------------------------------------


class Pager(Channel):
    """A channel that leaves the building, like SMS: it records what it would have sent."""

    key, label = "pager", "Pager"
    sent: list[str] = []

    def send(self, ctx, delivery, user, message) -> None:
        self.sent.append(user.username)


def _assign(rt: Runtime, topic: str) -> int:
    with rt.session() as session:
        return service(rt, session, "alice").create("meeting", {"topic": topic}, assignee="bob").id


def test_training_notifies_through_the_inbox_only(live, tmp_path, smtp, training_url):
    # LIVE, for contrast: bob hears by e-mail too, and takes carol's e-mails as a digest
    smtp.messages.clear()
    _assign(live, "Live meeting")
    assert len(smtp.to("bob@tracker.test")) == 1
    with live.session() as session:
        carol = session.scalar(select(User.id).where(User.username == "carol"))
        Preferences(session, carol).save({"assigned": ["inbox", "email"]}, digest=True)
        service(live, session, "alice").create("meeting", {"topic": "For carol"}, assignee="carol")
        queued = session.scalar(select(Delivery).where(Delivery.user_id == carol, Delivery.status == "queued"))
        assert queued is not None  # waits for carol's digest
    training.refresh(live.settings, live.registry)
    smtp.messages.clear()

    practice = training_runtime(tmp_path, training_url, smtp_url=smtp.url)
    item_id = _assign(practice, "Practice meeting")
    with practice.session() as session:
        bob = session.scalar(select(User.id).where(User.username == "bob"))
        inbox = session.scalars(
            select(Notification).where(Notification.user_id == bob, Notification.item_id == item_id)
        )
        assert len(list(inbox)) == 1
        channels = session.scalars(
            select(Delivery.channel).where(Delivery.outbox_id.is_not(None), Delivery.user_id == bob)
        )
        assert set(channels) == {"inbox", "email"}  # e-mail rows are LIVE's, copied
        latest = session.scalars(
            select(Delivery.channel)
            .join(Notification, Notification.outbox_id == Delivery.outbox_id)
            .where(Notification.item_id == item_id)
        )
        assert set(latest) == {"inbox"}
        # an external channel given explicitly is dropped too
        Pager.sent.clear()
        notifier = Notifier(session, practice.registry, practice.settings, channels=[InboxChannel(), Pager()])
        assert [c.key for c in notifier.channels] == ["inbox"] and notifier.mailer is None
    # the digest copied from LIVE never goes out from TRAINING
    clock_at = datetime.combine(datetime.now().date(), datetime.min.time()) + timedelta(hours=23)
    report = Scheduler(practice, clock=lambda: clock_at).tick()
    assert report.digests == 0
    assert smtp.messages == [] and Pager.sent == []
    practice.engine.dispose()


# -- the nightly refresh ----------------------------------------------------------------------------


def test_the_scheduler_refreshes_training_once_a_night_after_the_hour(live, training_url):
    day = datetime(2031, 3, 4)
    now = {"at": day + timedelta(hours=1)}
    scheduler = Scheduler(live, clock=lambda: now["at"])
    assert scheduler.tick().training == ""  # before 02:00
    assert not training.refresh_due(live.settings, now["at"])
    now["at"] = day + timedelta(hours=2, minutes=5)
    report = scheduler.tick()
    assert report.training.startswith("TRAINING refreshed from LIVE: 5 items"), report.problems
    target = db.make_engine(training_url)
    assert training.refreshed_at(target) == now["at"]
    now["at"] = day + timedelta(hours=23)
    assert scheduler.tick().training == ""  # once a day
    now["at"] = day + timedelta(days=1, hours=3)
    assert scheduler.tick().training != ""
    assert training.refreshed_at(target) == now["at"]
    target.dispose()


def test_a_failing_nightly_refresh_is_reported_and_the_other_steps_still_run(live, tmp_path, db_url):
    live.settings.training_database_url = db_url  # a refresh onto LIVE: must be refused
    report = Scheduler(live, clock=lambda: datetime(2031, 3, 4, 5)).tick()
    assert report.training == "" and any("LIVE database itself" in p for p in report.problems)
