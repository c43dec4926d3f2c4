"""The ``tracker`` command end to end, in a subprocess, on SQLite and PostgreSQL."""

from __future__ import annotations

import json

from engine import db
from tests.conftest import ROOT


def test_a_learner_and_a_concern_from_start_to_finish(run, tmp_path):
    out = run("init").stdout
    assert "Created admin user 'admin' with password: " in out
    assert "already exists" in run("init").stdout
    run("users", "create", "lead", "--role", "dsl")
    run("users", "create", "clerk", "--role", "tracker_creator")

    learner_file = tmp_path / "learner.json"
    learner_file.write_text(
        json.dumps({"given_name": "Ann", "family_name": "Lee", "date_of_birth": "2000-01-01", "uln": "1000000043"})
    )
    out = run("items", "create", "--type", "learner", "--data", f"@{learner_file}").stdout
    assert out.startswith("Created #1 'Ann Lee'")

    out = run(
        "items",
        "create",
        "--type",
        "concern",
        "--subject",
        "1",
        "--template",
        "online",
        "--data",
        '{"reported_on": "2025-09-01"}',
        "--description",
        "Seen on a chat app",
        "--as",
        "clerk",
    ).stdout
    assert "Created #2 'Online concern for Ann Lee' (New)." in out

    run("items", "transition", "2", "--to", "investigating", "--as", "lead")
    out = run("items", "transition", "2", "--to", "closed", "--data", '{"outcome": "Resolved"}', "--as", "lead").stdout
    assert "#2 is now Closed." in out

    shown = json.loads(run("items", "show", "2", "--json").stdout)
    assert shown["status"] == "closed"
    assert shown["assignee"] == "lead"
    assert shown["data"]["outcome"] == "Resolved"
    human = run("items", "show", "2").stdout
    assert "Status: Closed" in human and "Assignee: lead" in human

    history = run("items", "history", "2").stdout.splitlines()
    assert "clerk" in history[0] and "created the item" in history[0]
    assert any("moved it from new to investigating" in line for line in history)
    assert any("/outcome: (empty) -> Resolved" in line for line in history)
    assert any("moved it from investigating to closed" in line for line in history)
    events = json.loads(run("items", "history", "2", "--json").stdout)
    assert [e["kind"] for e in events] == ["created", "updated", "transitioned", "assigned", "updated", "transitioned"]

    listed = run("items", "list", "--type", "concern").stdout
    assert "Online concern for Ann Lee" in listed and "1 of 1 shown." in listed


def test_errors_go_to_stderr_with_exit_code_and_no_traceback(run):
    run("init")
    bad = run(
        "items", "create", "--type", "learner", "--data", '{"given_name": "A", "date_of_birth": "1/1/2000"}', ok=False
    )
    assert bad.returncode == 1
    assert bad.stdout == ""
    assert "Error: Nothing was saved: 2 problems to fix." in bad.stderr
    assert "/family_name: Family name is required" in bad.stderr or "family_name" in bad.stderr
    assert "/date_of_birth:" in bad.stderr

    for args, message in [
        (("items", "create", "--type", "nope", "--data", "{}"), "There is no tracker type 'nope'"),
        (("items", "show", "99"), "There is no item #99"),
        (("items", "show", "1", "--as", "ghost"), "There is no user 'ghost'"),
        (("users", "create", "x", "--role", "wizard"), "There is no role 'wizard'"),
        (("types", "show", "nope"), "There is no tracker type 'nope'"),
    ]:
        result = run(*args, ok=False)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)

    bad_json = run("items", "create", "--type", "learner", "--data", "{oops", ok=False)
    assert bad_json.returncode == 2
    assert "not valid JSON" in bad_json.stderr
    missing_file = run("items", "create", "--type", "learner", "--data", "@nowhere.json", ok=False)
    assert missing_file.returncode == 2 and "cannot read nowhere.json" in missing_file.stderr


def test_commands_before_init_say_what_to_do(run, tmp_path):
    run.env["TRACKER_DATABASE_URL"] = f"sqlite:///{tmp_path / 'empty.db'}"
    result = run("items", "show", "1", ok=False)
    assert result.returncode == 1
    assert "Run 'tracker init'" in result.stderr


def test_check_lists_every_problem_and_exits_1(run):
    ok = run("check")
    assert "problems" in ok.stdout and "0 problems" in ok.stdout
    broken = run("check", str(ROOT / "examples" / "broken_definitions"), ok=False)
    assert broken.returncode == 1
    lines = [line for line in broken.stdout.splitlines()[:-1] if not line.startswith("  ->")]
    assert len(lines) >= 10
    assert all("broken_definitions" in line for line in lines)
    assert broken.stdout.splitlines()[-1].endswith("problems.")


def test_types_list_and_show(run):
    listed = run("types", "list").stdout
    for key in ("learner", "apprenticeship", "ilr", "compliance", "concern"):
        assert key in listed
    shown = run("types", "show", "concern").stdout
    assert "Safeguarding concern (concern, version 1)" in shown
    assert "* category" in shown
    assert "start: new -> investigating 'Start investigation'" in shown
    assert "high_open: High-severity concerns open" in shown
    schema = json.loads(run("types", "show", "concern", "--json").stdout)
    assert schema["schema"]["properties"]["category"]["enum"][0] == "online"


def test_db_upgrade_on_empty_and_existing_database(run):
    head = db.head_revision()
    assert f"revision {head}" in run("db", "upgrade").stdout
    assert f"revision {head}" in run("db", "upgrade").stdout
    assert run("db", "current").stdout.strip() == head


def test_status_reports_each_dependency(run):
    run("init")
    out = run("status").stdout
    assert "ok    database" in out and "ok    definitions" in out and "not configured" in out
