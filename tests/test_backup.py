"""tracker backup / tracker restore on SQLite and PostgreSQL: a round trip that compares every
row of every table (items, events, notifications, outbox ...) and every document before and
after, and each refusal: no confirmation, a newer schema, the other kind of database, a
damaged manifest, missing PostgreSQL tools."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from engine import backup, db, indexes
from engine.errors import TrackerError
from engine.runtime import Runtime
from tests.notify_helpers import make_settings, people, service

# -- helpers the TRAINING tests share ------------------------------------------------------------


def snapshot(url: str, *, skip: tuple[str, ...] = ()) -> dict[str, list[str]]:
    """Every row of every table of the database at ``url`` (each row as JSON, sorted), so two
    databases compare equal only when they hold exactly the same data."""
    engine = db.make_engine(url)
    try:
        with engine.connect() as conn:
            tables = sorted(t for t in inspect(conn).get_table_names() if t not in skip)
            out = {}
            for table in tables:
                rows = conn.execute(text(f'SELECT * FROM "{table}"')).mappings().all()
                out[table] = sorted(json.dumps(dict(r), sort_keys=True, default=str) for r in rows)
            return out
    finally:
        engine.dispose()


def assert_same(actual: dict[str, list[str]], expected: dict[str, list[str]]) -> None:
    """Snapshots equal, or a message naming the tables and rows that differ."""
    differences = []
    for table in sorted(set(actual) | set(expected)):
        got, want = set(actual.get(table, [])), set(expected.get(table, []))
        if got != want or len(actual.get(table, [])) != len(expected.get(table, [])):
            differences.append(f"{table}: unexpected {sorted(got - want)}; missing {sorted(want - got)}")
    assert not differences, "\n".join(differences)


def populate(rt: Runtime, *, documents: Path | None = None) -> dict[str, int]:
    """People, meetings assigned with notifications (delivered to the inbox in this process),
    an update, transitions, a comment; and two stored documents if ``documents`` is given."""
    indexes.sync(rt.engine, rt.registry)  # the derived columns a CLI run on these definitions leaves
    ids = people(rt)
    with rt.session() as session:
        alice = service(rt, session, "alice")
        made = [alice.create("meeting", {"topic": f"Topic {n}"}, assignee="bob").id for n in range(4)]
        alice.update(made[0], changes={"meeting_date": "2030-01-02"})
        alice.transition(made[1], "held")
        alice.transition(made[2], "escalated")
        alice.comment(made[3], "Agenda to follow, @carol")
    if documents is not None:
        for content in (b"%PDF-1.4 first document", b"plain text evidence"):
            digest = hashlib.sha256(content).hexdigest()
            path = documents / digest[:2] / digest
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content)
    return ids


def files_of(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def live(tmp_path, db_url):
    """A LIVE runtime on the test database with data and documents, in tmp_path/instance."""
    instance = tmp_path / "instance"
    rt = Runtime(make_settings(instance, db_url))
    populate(rt, documents=rt.settings.documents_path)
    rt.engine.dispose()
    return rt


def cli_env(run, rt: Runtime) -> None:
    """Make the ``run`` fixture's CLI see the same definitions and instance folder as ``rt``."""
    run.env["TRACKER_INSTANCE_PATH"] = str(rt.settings.instance_path)
    run.env["TRACKER_DEFINITIONS_PATH"] = ":".join(str(p) for p in rt.settings.definitions_path)


# -- the round trip ------------------------------------------------------------------------------


def test_backup_and_restore_round_trip_every_row_and_document(live, run, tmp_path, db_url):
    cli_env(run, live)
    documents = live.settings.documents_path
    before, before_files = snapshot(db_url), files_of(documents)
    items = len(before["items"])  # four meetings and the one the escalation made
    assert items == 5 and len(before["events"]) >= 9 and before["notifications"]
    assert len(before_files) == 2

    out = tmp_path / "nightly.tar.gz"
    made = run("backup", "--out", str(out))
    assert (
        f"Backup written to {out}" in made.stdout and f"{items} items" in made.stdout and "2 documents" in made.stdout
    )
    with tarfile.open(out) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert names[0] == "manifest.json" and len([n for n in names if n.startswith("documents/")]) == 2
    assert manifest["revision"] == db.head_revision() and manifest["counts"]["items"] == items
    assert manifest["counts"]["events"] == len(before["events"])

    # life goes on: new items, one deleted, a document lost and another added
    with live.session() as session:
        alice = service(live, session, "alice")
        alice.create("meeting", {"topic": "After the backup"}, assignee="carol")
        session.execute(text("DELETE FROM items WHERE title = 'Topic 3'"))
        session.commit()
    next(p for p in sorted(documents.rglob("*")) if p.is_file()).unlink()
    stray = documents / "ff" / ("f" * 64)
    stray.parent.mkdir()
    stray.write_bytes(b"uploaded after the backup")
    changed = snapshot(db_url)
    assert changed != before and files_of(documents) != before_files

    # without --yes and nobody to answer: nothing changes
    refused = run("restore", str(out), ok=False, stdin="")
    assert refused.returncode == 1 and "Restore cancelled: nothing was changed" in refused.stderr
    assert f"{items} items" in refused.stdout and "It replaces everything in" in refused.stdout
    assert snapshot(db_url) == changed

    done = run("restore", str(out), stdin="y\n")
    assert f"Restored {items} items" in done.stdout and "2 documents" in done.stdout
    assert "every table's rows match the backup" in done.stdout
    assert_same(snapshot(db_url), before)
    assert files_of(documents) == before_files

    # the restored database carries on where it left off: ids and sequences included
    with live.session() as session:
        item = service(live, session, "alice").create("meeting", {"topic": "Next"}, assignee="bob")
        assert item.id > max(json.loads(r)["id"] for r in before["items"])
    live.engine.dispose()


def test_restore_with_yes_asks_nothing_and_leaves_no_documents_when_the_backup_had_none(tmp_path, run, db_url):
    rt = Runtime(make_settings(tmp_path / "instance", db_url))
    populate(rt)
    rt.engine.dispose()
    cli_env(run, rt)
    before = snapshot(db_url)
    out = backup.backup(rt.settings, tmp_path / "b.tar.gz").path
    populate_more = Runtime(make_settings(tmp_path / "instance", db_url))
    with populate_more.session() as session:
        service(populate_more, session, "alice").create("meeting", {"topic": "Extra"})
    populate_more.engine.dispose()
    (rt.settings.documents_path / "ab").mkdir(parents=True)
    (rt.settings.documents_path / "ab" / ("ab" * 32)).write_bytes(b"later")
    done = run("restore", str(out), "--yes")
    assert "Replace them" not in done.stdout and "Restored 5 items" in done.stdout
    assert_same(snapshot(db_url), before)
    assert files_of(rt.settings.documents_path) == {}


def test_backup_by_default_goes_to_the_instance_backups_folder(live, run):
    cli_env(run, live)
    made = run("backup")
    written = list((live.settings.instance_path / "backups").glob("tracker-*.tar.gz"))
    assert len(written) == 1 and str(written[0]) in made.stdout
    assert written[0].stat().st_mode & 0o077 == 0  # personal data: readable by its owner only


# -- refusals --------------------------------------------------------------------------------------


def _rewrite_manifest(source: Path, target: Path, **changes) -> None:
    """A copy of the backup ``source`` with manifest fields changed."""
    with tarfile.open(source) as tar, tarfile.open(target, "w:gz") as out:
        for member in tar.getmembers():
            data = tar.extractfile(member).read()
            if member.name == "manifest.json":
                manifest = json.loads(data)
                manifest.update(changes)
                data = json.dumps(manifest).encode()
                member.size = len(data)
            out.addfile(member, io.BytesIO(data))


def test_restore_refuses_a_backup_from_a_newer_schema_and_changes_nothing(live, run, tmp_path, db_url):
    cli_env(run, live)
    out = backup.backup(live.settings, tmp_path / "b.tar.gz").path
    newer = tmp_path / "newer.tar.gz"
    _rewrite_manifest(out, newer, revision=db.head_revision() + ",z9_from_the_future")
    before = snapshot(db_url)
    refused = run("restore", str(newer), "--yes", ok=False)
    assert refused.returncode == 1
    assert "made by a newer version of Tracker" in refused.stderr and "z9_from_the_future" in refused.stderr
    assert "Upgrade Tracker" in refused.stderr
    assert_same(snapshot(db_url), before)


def test_restore_refuses_the_other_kind_of_database_and_files_that_are_not_backups(live, tmp_path, db_url):
    out = backup.backup(live.settings, tmp_path / "b.tar.gz").path
    other = "postgresql" if db_url.startswith("sqlite") else "sqlite"
    crossed = tmp_path / "crossed.tar.gz"
    _rewrite_manifest(out, crossed, dialect=other)
    with pytest.raises(TrackerError, match=f"is a backup of a {other} database"):
        backup.plan_restore(live.settings, crossed)
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball at all")
    with pytest.raises(TrackerError, match="is not a readable Tracker backup"):
        backup.plan_restore(live.settings, junk)
    with pytest.raises(TrackerError, match="There is no backup file"):
        backup.plan_restore(live.settings, tmp_path / "nope.tar.gz")
    with pytest.raises(TrackerError, match="is a folder"):
        backup.backup(live.settings, tmp_path)
    old_format = tmp_path / "old.tar.gz"
    _rewrite_manifest(out, old_format, format_version=0)
    with pytest.raises(TrackerError, match="Restore it with the version of Tracker that made it"):
        backup.plan_restore(live.settings, old_format)


def test_restore_reports_a_manifest_that_does_not_match(live, tmp_path):
    out = backup.backup(live.settings, tmp_path / "b.tar.gz").path
    with tarfile.open(out) as tar:
        counts = json.loads(tar.extractfile("manifest.json").read())["counts"]
    damaged = tmp_path / "damaged.tar.gz"
    _rewrite_manifest(out, damaged, counts={**counts, "events": counts["events"] + 1})
    plan = backup.plan_restore(live.settings, damaged)
    with pytest.raises(TrackerError, match="does not match the backup's manifest: events:"):
        backup.restore(live.settings, plan)


def test_restore_refuses_members_the_manifest_does_not_list(live, tmp_path, db_url):
    out = backup.backup(live.settings, tmp_path / "b.tar.gz").path
    sneaky = tmp_path / "sneaky.tar.gz"
    with tarfile.open(out) as tar, tarfile.open(sneaky, "w:gz") as target:
        for member in tar.getmembers():
            target.addfile(member, tar.extractfile(member))
        extra = tarfile.TarInfo("../outside.txt")
        extra.size = 3
        target.addfile(extra, io.BytesIO(b"bad"))
    before = snapshot(db_url)
    plan = backup.plan_restore(live.settings, sneaky)
    with pytest.raises(TrackerError, match="files its manifest does not list"):
        backup.restore(live.settings, plan)
    assert snapshot(db_url) == before and not (tmp_path / "outside.txt").exists()


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_postgres_backup_says_when_pg_dump_is_missing(live, run, tmp_path, db_url):
    cli_env(run, live)
    run.env["PATH"] = str(tmp_path / "no-tools-here")
    refused = run("backup", "--out", str(tmp_path / "b.tar.gz"), ok=False)
    assert refused.returncode == 1
    assert "'pg_dump' was not found on PATH" in refused.stderr and "postgresql-client" in refused.stderr
    assert not (tmp_path / "b.tar.gz").exists()


def test_engine_refuses_an_in_memory_database_and_unsupported_databases():
    with pytest.raises(TrackerError, match="in-memory"):
        backup.sqlite_path("sqlite://")
    with pytest.raises(TrackerError, match="SQLite and PostgreSQL"):
        backup.kind_of("mysql+pymysql://u@h/db")
