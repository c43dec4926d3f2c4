"""``tracker worker``, ``tracker scheduler`` and ``tracker outbox`` end to end, in a
subprocess, with a real SMTP server, Redis and both databases."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from engine import db
from engine.models import Outbox, utcnow
from tests.conftest import TEST_DEFINITIONS
from tests.notify_helpers import *  # noqa: F403 - fixtures
from tests.notify_helpers import BASE_URL, NOTIFY_DEFINITIONS, free_port

TRACKER = str(Path(sys.executable).parent / "tracker")


@pytest.fixture
def run(tmp_path, db_url, smtp):
    env = {
        **os.environ,
        "TRACKER_INSTANCE_PATH": str(tmp_path / "instance"),
        "TRACKER_DATABASE_URL": db_url,
        "TRACKER_DEFINITIONS_PATH": os.pathsep.join([str(TEST_DEFINITIONS), str(NOTIFY_DEFINITIONS)]),
        "TRACKER_SMTP_URL": smtp.url,
        "TRACKER_BASE_URL": BASE_URL,
        "TRACKER_MAIL_FROM": "Tracker <tracker@tracker.test>",
        "NO_COLOR": "1",
    }
    env.pop("TRACKER_REDIS_URL", None)

    def tracker(*args: str, ok: bool = True, **extra_env: str) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [TRACKER, *args],
            capture_output=True,
            text=True,
            env={**env, **extra_env},
            cwd=tmp_path,
            timeout=120,
        )
        assert "Traceback" not in result.stderr, result.stderr
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    tracker("users", "create", "bob", "--role", "chair", "--email", "bob@tracker.test")
    return tracker


def test_outbox_list_and_retry_of_a_dead_letter(run, smtp, db_url):
    smtp.stop()
    out = run("items", "create", "--type", "meeting", "--data", '{"topic": "Late"}', "--assignee", "bob").stdout
    assert out.startswith("Created #1 'Late'")  # the save did not wait for SMTP
    listed = run("outbox", "list", "--status", "pending").stdout
    assert "notify" in listed and "attempt 1: E-mail to bob: SMTP 127.0.0.1" in listed
    assert "1 waiting, 0 dead-lettered in all." in listed
    engine = db.make_engine(db_url)
    with engine.begin() as conn:  # as if every retry had failed
        conn.execute(update(Outbox).where(Outbox.kind == "notify").values(status="dead", attempts=4))
    engine.dispose()
    status = run("status", ok=False)
    assert status.returncode == 1 and "1 dead-lettered" in status.stdout
    row_id = run("outbox", "list", "--status", "dead").stdout.splitlines()[1].split()[0]
    smtp.start()
    assert f"Outbox row #{row_id} is back in line; it is now done." in run("outbox", "retry", row_id).stdout
    [mail] = smtp.to("bob@tracker.test")
    assert mail["Subject"] == "[Tracker] system assigned Late to you"
    again = run("outbox", "retry", row_id, ok=False)
    assert again.returncode == 1 and "is done, not dead-lettered" in again.stderr
    missing = run("outbox", "retry", "999", ok=False)
    assert missing.returncode == 1 and "There is no outbox message #999" in missing.stderr
    assert run("outbox", "list", "--status", "nonsense", ok=False).returncode == 2


def test_scheduler_once_sends_reminders_and_waiting_rows(run, smtp):
    day = (utcnow() + timedelta(days=3)).date().isoformat()
    smtp.stop()
    data = f'{{"topic": "Soon", "meeting_date": "{day}"}}'
    run("items", "create", "--type", "meeting", "--data", data, "--assignee", "bob")
    smtp.start()
    out = run("scheduler", "--once").stdout
    assert out.startswith("1 reminder(s) written, 0 digest(s) sent, ")
    subjects = sorted(m["Subject"] for m in smtp.to("bob@tracker.test"))
    assert subjects[0] == "[Tracker] Reminder: Meeting date of Soon is in 3 days (" + _long(day) + ")"
    assert run("scheduler", "--once").stdout.startswith("0 reminder(s) written")
    assert run("scheduler", "--interval", "0", ok=False).returncode == 2


def test_worker_needs_a_reachable_redis(run):
    no_redis = run("worker", "--burst", ok=False)
    assert no_redis.returncode == 1 and "TRACKER_REDIS_URL is not set" in no_redis.stderr
    down = run("worker", "--burst", ok=False, TRACKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/14")
    assert down.returncode == 1 and "is not reachable" in down.stderr


def test_with_redis_the_cli_queues_and_tracker_worker_delivers(run, smtp, notify_redis_url):
    out = run(
        "items",
        "create",
        "--type",
        "meeting",
        "--data",
        '{"topic": "Queued"}',
        "--assignee",
        "bob",
        TRACKER_REDIS_URL=notify_redis_url,
    ).stdout
    assert out.startswith("Created #1")
    assert smtp.messages == []  # queued, not sent by the CLI
    result = run("worker", "--burst", TRACKER_REDIS_URL=notify_redis_url)
    assert "Worker listening on queue 'tracker' until it is empty." in result.stdout
    [mail] = smtp.to("bob@tracker.test")
    assert mail["Subject"] == "[Tracker] system assigned Queued to you"
    assert "0 waiting" in run("outbox", "list").stdout
    data = '{"topic": "Simple"}'
    run("items", "create", "--type", "meeting", "--data", data, "--assignee", "bob", TRACKER_REDIS_URL=notify_redis_url)
    run("worker", "--burst", "--no-fork", TRACKER_REDIS_URL=notify_redis_url)
    assert smtp.to("bob@tracker.test")[-1]["Subject"] == "[Tracker] system assigned Simple to you"


def _long(iso: str) -> str:
    from datetime import date

    d = date.fromisoformat(iso)
    return f"{d.day} {d:%B %Y}"
