"""Backups and restores of a whole installation: the database and the uploaded documents.

A backup is one ``.tar.gz`` holding ``manifest.json`` (format, when, the database kind, its
schema revision, rows per table, the documents with their sizes), the database
(``database.sqlite3``, an online copy made with SQLite's backup API, or ``database.pgdump``
from ``pg_dump -Fc``) and ``documents/``. A restore refuses a backup made by a newer schema,
replaces the database in one step (SQLite's backup API; on PostgreSQL one ``psql``
transaction that clears the schema and loads the dump), checks every table's row count and
every document against the manifest, then upgrades the schema if the backup is older.

The PostgreSQL helpers here (:func:`pg_copy`) also serve the TRAINING refresh.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import subprocess
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, make_url

from engine import db
from engine.config import Settings
from engine.errors import TrackerError
from engine.models import utcnow

FORMAT = "tracker-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SQLITE_MEMBER = "database.sqlite3"
PG_MEMBER = "database.pgdump"
DOCUMENTS = "documents"
#: folders of the documents store that hold nothing worth keeping (uploads being received)
SKIPPED_FOLDERS = {"tmp"}


# -- what a database holds -------------------------------------------------------------------------


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows in every table of the database, by table name (the schema's own tables included)."""
    names = sorted(inspect(conn).get_table_names())
    return {name: conn.execute(text(f'SELECT COUNT(*) FROM "{name}"')).scalar_one() for name in names}


def safe_url(url: str) -> str:
    """The database URL without its password, for messages and manifests."""
    return make_url(url).render_as_string(hide_password=True)


def kind_of(url: str) -> str:
    """``sqlite`` or ``postgresql``; anything else is refused with what is supported."""
    backend = make_url(url).get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise TrackerError(
            f"Backups and TRAINING copies support SQLite and PostgreSQL, not '{backend}'.",
            "Use a sqlite:/// or postgresql+psycopg:// database URL.",
        )
    return backend


def sqlite_path(url: str) -> Path:
    """The file of an SQLite URL; an in-memory database has none and is refused."""
    database = make_url(url).database
    if not database or database == ":memory:":
        raise TrackerError(
            "An in-memory SQLite database cannot be copied.", "Use a database file: sqlite:///path/to/tracker.db."
        )
    return Path(database).expanduser().resolve()


def known_revisions() -> set[str]:
    """Every migration revision this version of Tracker knows."""
    from alembic.script import ScriptDirectory

    config = db.alembic_config(None)
    return {script.revision for script in ScriptDirectory.from_config(config).walk_revisions()}


# -- SQLite ----------------------------------------------------------------------------------------


def sqlite_copy(source: Path, target: Path, *, source_read_only: bool = True) -> None:
    """Copy the SQLite database ``source`` into ``target`` with SQLite's online backup API:
    others may keep reading and writing ``source`` meanwhile, and ``target`` is replaced as a
    whole (processes that have it open see the new content). ``source`` is opened read-only."""
    if not source.is_file():
        raise TrackerError(f"There is no SQLite database at {source}.", "Check the database URL.")
    uri = f"file:{quote(str(source))}?mode=ro" if source_read_only else f"file:{quote(str(source))}"
    src = sqlite3.connect(uri, uri=True, timeout=30)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        dst = sqlite3.connect(str(target), timeout=30)
        try:
            src.backup(dst)
        finally:
            dst.close()
    finally:
        src.close()


def _standalone(path: Path) -> None:
    """Leave the copied file in rollback-journal mode, so the one file is the whole database."""
    conn = sqlite3.connect(str(path))
    try:
        conn.execute("PRAGMA journal_mode=DELETE")
    finally:
        conn.close()


# -- PostgreSQL --------------------------------------------------------------------------------------


def pg_tool(name: str) -> str:
    """The path of a PostgreSQL client program; TrackerError saying how to get it if missing."""
    found = shutil.which(name)
    if not found:
        raise TrackerError(
            f"'{name}' was not found on PATH; it is needed to copy a PostgreSQL database.",
            "Install the PostgreSQL client programs (pg_dump, pg_restore, psql) of the server's major "
            "version or newer, e.g. 'apt-get install postgresql-client', and make sure they are on PATH.",
        )
    return found


def libpq(url: str) -> tuple[str, dict[str, str]]:
    """A libpq connection URI for ``url`` without the password, and the environment that
    carries the password (``PGPASSWORD``), so it never shows in a process list."""
    parsed = make_url(url)
    user = quote(parsed.username or "", safe="")
    host = parsed.host or ""
    if host and ":" in host:
        host = f"[{host}]"
    netloc = (f"{user}@" if user else "") + host + (f":{parsed.port}" if parsed.port else "")
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    uri = f"postgresql://{netloc}/{quote(parsed.database or '', safe='')}"
    if query:
        uri += "?" + urlencode(query)
    env = {**os.environ}
    if parsed.password:
        env["PGPASSWORD"] = str(parsed.password)
    return uri, env


#: clears the target's schema inside the restoring transaction, so tables the dump does not
#: have (a newer migration's) go too and the load never meets an existing object
_CLEAR_PUBLIC = """
DO $$
DECLARE r record;
BEGIN
  FOR r IN SELECT viewname FROM pg_views WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP VIEW IF EXISTS public.%I CASCADE', r.viewname);
  END LOOP;
  FOR r IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP TABLE IF EXISTS public.%I CASCADE', r.tablename);
  END LOOP;
  FOR r IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('DROP SEQUENCE IF EXISTS public.%I CASCADE', r.sequencename);
  END LOOP;
END $$;
"""


def _pipeline(producer: list[str], producer_env: dict, consumer: list[str], consumer_env: dict, what: str) -> None:
    """Run ``producer | consumer``; TrackerError with both programs' messages if either fails."""
    with tempfile.TemporaryFile() as producer_err, tempfile.TemporaryFile() as consumer_err:
        first = subprocess.Popen(producer, stdout=subprocess.PIPE, stderr=producer_err, env=producer_env)
        try:
            second = subprocess.Popen(
                consumer, stdin=first.stdout, stdout=subprocess.DEVNULL, stderr=consumer_err, env=consumer_env
            )
        finally:
            assert first.stdout is not None
            first.stdout.close()  # the consumer holds the pipe now; the producer sees it close if it stops
        second.wait()
        first.wait()
        if first.returncode or second.returncode:
            messages = []
            for handle, proc in ((producer_err, first), (consumer_err, second)):
                handle.seek(0)
                said = handle.read().decode(errors="replace").strip()
                if proc.returncode:
                    messages.append(f"{Path(proc.args[0]).name} (exit {proc.returncode}): {said[-1500:]}")
            raise TrackerError(
                f"{what} failed; the target database was left as it was. " + " | ".join(messages),
                "Check that both databases are reachable with these settings and that the PostgreSQL client "
                "programs are of the server's major version or newer.",
            )


@contextmanager
def _loader(target_url: str) -> Iterator[tuple[list[str], dict[str, str]]]:
    """``psql`` loading a SQL script from stdin into ``target_url`` as one transaction, after
    clearing its schema: either the whole copy lands or nothing changes."""
    uri, env = libpq(target_url)
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as prefix:
        prefix.write(_CLEAR_PUBLIC)
        prefix.flush()
        command = [
            pg_tool("psql"),
            "--no-psqlrc",
            "--quiet",
            "--set",
            "ON_ERROR_STOP=1",
            "--single-transaction",
            "--dbname",
            uri,
            "--file",
            prefix.name,
            "--file",
            "-",
        ]
        yield command, env


def pg_copy(source_url: str, target_url: str) -> None:
    """Copy the whole PostgreSQL database ``source_url`` into ``target_url`` (pg_dump | psql in
    one transaction). Only reads ``source_url``."""
    source, source_env = libpq(source_url)
    dump = [pg_tool("pg_dump"), "--no-owner", "--no-acl", "--format", "plain", "--dbname", source]
    with _loader(target_url) as (load, load_env):
        _pipeline(dump, source_env, load, load_env, "Copying the PostgreSQL database")


def pg_restore_file(dump: Path, target_url: str) -> None:
    """Load a ``pg_dump -Fc`` file into ``target_url``, replacing everything, in one transaction."""
    as_sql = [pg_tool("pg_restore"), "--no-owner", "--no-acl", "--file", "-", str(dump)]
    with _loader(target_url) as (load, load_env):
        _pipeline(as_sql, {**os.environ}, load, load_env, "Restoring the PostgreSQL dump")


# -- backing up ------------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """What a backup holds; written as ``manifest.json`` and checked on restore."""

    created_at: str
    dialect: str
    revision: str
    counts: dict[str, int]
    documents: dict[str, int] = field(default_factory=dict)
    source: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    @property
    def items(self) -> int:
        return self.counts.get("items", 0)

    def to_json(self) -> str:
        return json.dumps(self.__dict__, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> Manifest:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise TrackerError(f"{where} is not a Tracker backup (its manifest is missing or unreadable).", _MADE_BY)
        if data.get("format_version") != FORMAT_VERSION:
            raise TrackerError(
                f"{where} is a backup of format {data.get('format_version')}; this Tracker reads format "
                f"{FORMAT_VERSION}.",
                "Restore it with the version of Tracker that made it.",
            )
        fields = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        missing = {"created_at", "dialect", "revision", "counts"} - fields.keys()
        if missing:
            raise TrackerError(f"The manifest of {where} lacks {', '.join(sorted(missing))}.", _MADE_BY)
        return cls(**fields)


_MADE_BY = "Give a file made by 'tracker backup'."


@dataclass
class BackupReport:
    path: Path
    manifest: Manifest
    size: int


def default_backup_path(settings: Settings, now: datetime) -> Path:
    return settings.instance_path / "backups" / f"tracker-{now:%Y%m%dT%H%M%SZ}.tar.gz"


def backup(settings: Settings, out: Path | None = None, *, clock: Callable[[], datetime] = utcnow) -> BackupReport:
    """Write a backup of the database and the documents to ``out`` (default: a dated file in
    ``<instance>/backups``) while Tracker keeps running. Raises TrackerError when the
    database cannot be read or the tools are missing; no partial file is left behind."""
    now = clock()
    out = (out or default_backup_path(settings, now)).expanduser().resolve()
    if out.is_dir():
        raise TrackerError(f"{out} is a folder.", "Give the name of the backup file to write, e.g. tracker.tar.gz.")
    dialect = kind_of(settings.database_url)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tracker-backup-", dir=out.parent) as work:
        work_dir = Path(work)
        if dialect == "sqlite":
            member = work_dir / SQLITE_MEMBER
            sqlite_copy(sqlite_path(settings.database_url), member)
            _standalone(member)
            copy = db.make_engine(f"sqlite:///{member}")
            try:
                revision = db.current_revision(copy)
                with copy.connect() as conn:
                    counts = table_counts(conn)
            finally:
                copy.dispose()
        else:
            member = work_dir / PG_MEMBER
            revision, counts = _pg_dump(settings.database_url, member)
        if not revision:
            raise TrackerError(
                f"The database at {safe_url(settings.database_url)} has no schema yet: there is nothing to back up.",
                "Run 'tracker init' first.",
            )
        documents = document_files(settings.documents_path)
        manifest = Manifest(
            created_at=now.strftime("%Y-%m-%dT%H:%M:%SZ"),
            dialect=dialect,
            revision=revision,
            counts=counts,
            documents={name: path.stat().st_size for name, path in documents.items()},
            source=safe_url(settings.database_url),
        )
        partial = work_dir / "backup.tar.gz"
        with tarfile.open(partial, "w:gz") as tar:
            raw = manifest.to_json().encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mtime, info.mode = len(raw), int(now.timestamp()), 0o600
            tar.addfile(info, io.BytesIO(raw))
            tar.add(member, arcname=member.name, recursive=False)
            for name, path in sorted(documents.items()):
                tar.add(path, arcname=f"{DOCUMENTS}/{name}", recursive=False)
        partial.chmod(0o600)
        os.replace(partial, out)
    return BackupReport(out, manifest, out.stat().st_size)


def _pg_dump(url: str, target: Path) -> tuple[str | None, dict[str, int]]:
    """``pg_dump -Fc`` of ``url`` into ``target`` from the same snapshot the revision and the
    counts are read in, so the manifest describes exactly what the dump holds."""
    engine = db.make_engine(url)
    try:
        with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, conn.begin():
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")
            snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar_one()
            revision = db_revision(conn)
            counts = table_counts(conn)
            uri, env = libpq(url)
            command = [
                pg_tool("pg_dump"),
                "--format",
                "custom",
                "--no-owner",
                "--no-acl",
                "--snapshot",
                snapshot,
                "--file",
                str(target),
                "--dbname",
                uri,
            ]
            # the snapshot lives as long as this transaction: pg_dump runs while it is open
            done = subprocess.run(command, env=env, capture_output=True, text=True)
    finally:
        engine.dispose()
    if done.returncode:
        raise TrackerError(
            f"pg_dump failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}",
            "Check that the database is reachable and that pg_dump is of the server's major version or newer.",
        )
    return revision, counts


def db_revision(conn: Connection) -> str | None:
    """The schema revision(s) seen by ``conn``, comma-separated; None for an empty database."""
    if not inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
    return ",".join(sorted(rows)) or None


def document_files(root: Path | None) -> dict[str, Path]:
    """The stored documents under ``root`` by their path relative to it."""
    if root is None or not root.is_dir():
        return {}
    found = {}
    for path in root.rglob("*"):
        relative = path.relative_to(root)
        if relative.parts[0] in SKIPPED_FOLDERS or not path.is_file() or path.is_symlink():
            continue
        found[relative.as_posix()] = path
    return found


# -- restoring -------------------------------------------------------------------------------------------


@dataclass
class RestorePlan:
    """A backup opened and checked, ready to replace the target; :func:`restore` carries it out."""

    path: Path
    manifest: Manifest
    target: str
    target_items: int | None
    upgrade_after: bool


@dataclass
class RestoreReport:
    manifest: Manifest
    documents: int
    upgraded_to: str | None


def read_manifest(path: Path) -> Manifest:
    """The manifest of the backup at ``path``; TrackerError if it is not a readable backup."""
    path = path.expanduser()
    if not path.is_file():
        raise TrackerError(f"There is no backup file at {path}.", "Give the path of a file made by 'tracker backup'.")
    try:
        with tarfile.open(path, "r:gz") as tar:
            member = tar.getmember(MANIFEST)
            handle = tar.extractfile(member)
            raw = handle.read() if handle else b""
    except (tarfile.TarError, KeyError, OSError, EOFError) as exc:
        raise TrackerError(f"{path} is not a readable Tracker backup: {exc}.", _MADE_BY) from None
    return Manifest.from_json(raw, str(path))


def plan_restore(settings: Settings, path: Path) -> RestorePlan:
    """Open and check the backup at ``path`` against this installation, changing nothing.

    Raises TrackerError when it is not a backup, is for the other kind of database, or was
    made by a newer schema than this version of Tracker knows.
    """
    manifest = read_manifest(path)
    dialect = kind_of(settings.database_url)
    if manifest.dialect != dialect:
        raise TrackerError(
            f"{path} is a backup of a {manifest.dialect} database; this installation uses {dialect}.",
            f"Restore it into a {manifest.dialect} database (set TRACKER_DATABASE_URL), "
            "or make the backup from a database of the same kind.",
        )
    unknown = [r for r in manifest.revision.split(",") if r not in known_revisions()]
    if unknown:
        raise TrackerError(
            f"{path} was made by a newer version of Tracker (schema revision {', '.join(unknown)}, "
            "which this version does not know). Nothing was changed.",
            "Upgrade Tracker to the version that made the backup (or newer), then restore it.",
        )
    engine = db.make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            current = db_revision(conn)
            items = table_counts(conn).get("items") if current else None
    except Exception:  # noqa: BLE001 - an unreadable target is simply replaced
        items = None
    finally:
        engine.dispose()
    heads = set(db.head_revision().split(","))
    return RestorePlan(
        path=path.expanduser().resolve(),
        manifest=manifest,
        target=safe_url(settings.database_url),
        target_items=items,
        upgrade_after=set(manifest.revision.split(",")) != heads,
    )


def restore(settings: Settings, plan: RestorePlan, *, registry=None) -> RestoreReport:
    """Replace the database and the documents with the backup ``plan`` describes, check every
    table's row count and every document against the manifest, then upgrade the schema (and
    the task-list indexes, given ``registry``) if the backup is older than this Tracker.

    The database is replaced in one step: if loading fails, it is left as it was. Raises
    TrackerError naming what differs if the check fails.
    """
    manifest = plan.manifest
    documents_root = settings.documents_path
    with tempfile.TemporaryDirectory(prefix="tracker-restore-") as work:
        work_dir = Path(work)
        staged_documents = _extract(plan.path, work_dir, manifest)
        if manifest.dialect == "sqlite":
            copy_file = work_dir / SQLITE_MEMBER
            sqlite_copy(copy_file, sqlite_path(settings.database_url), source_read_only=False)
        else:
            pg_restore_file(work_dir / PG_MEMBER, settings.database_url)
        engine = db.make_engine(settings.database_url)
        try:
            with engine.connect() as conn:
                counts = table_counts(conn)
            differences = [
                f"{table}: {counts.get(table, 'missing')} rows, the backup has {expected}"
                for table, expected in sorted(manifest.counts.items())
                if counts.get(table) != expected
            ]
            if differences:
                raise TrackerError(
                    "The restored database does not match the backup's manifest: " + "; ".join(differences) + ".",
                    "Restore again; if it still differs the backup file is damaged: use an older backup.",
                )
            documents = _swap_documents(staged_documents, documents_root, manifest)
            upgraded = None
            if plan.upgrade_after:
                db.upgrade(engine)
                upgraded = db.current_revision(engine)
            if registry is not None:
                from engine import indexes

                indexes.sync(engine, registry)
        finally:
            engine.dispose()
    return RestoreReport(manifest, documents, upgraded)


def _extract(path: Path, work_dir: Path, manifest: Manifest) -> Path:
    """Unpack the database and the documents into ``work_dir``; refuses members that would land
    outside it or that the manifest does not list. Returns the staged documents folder."""
    expected = {SQLITE_MEMBER if manifest.dialect == "sqlite" else PG_MEMBER, MANIFEST}
    expected |= {f"{DOCUMENTS}/{name}" for name in manifest.documents}
    try:
        with tarfile.open(path, "r:gz") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            strangers = [m.name for m in members if m.name not in expected]
            if strangers:
                raise TrackerError(
                    f"{path} holds files its manifest does not list: {', '.join(strangers[:5])}.", _MADE_BY
                )
            tar.extractall(work_dir, members=members, filter="data")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise TrackerError(f"{path} could not be unpacked: {exc}.", _MADE_BY) from None
    database = work_dir / (SQLITE_MEMBER if manifest.dialect == "sqlite" else PG_MEMBER)
    if not database.is_file():
        raise TrackerError(f"{path} holds no database.", _MADE_BY)
    staged = work_dir / DOCUMENTS
    staged.mkdir(exist_ok=True)
    for name, size in manifest.documents.items():
        file = staged / name
        if not file.is_file() or file.stat().st_size != size:
            raise TrackerError(f"The document {name} in {path} is missing or damaged.", _MADE_BY)
    return staged


def _swap_documents(staged: Path, root: Path | None, manifest: Manifest) -> int:
    """Put the staged documents in place of the documents folder (the old one is removed once
    the new one is in place); returns how many there are."""
    if root is None:
        return 0
    if not manifest.documents and not root.exists():
        return 0
    root.parent.mkdir(parents=True, exist_ok=True)
    incoming = Path(tempfile.mkdtemp(prefix=".restoring-", dir=root.parent))
    shutil.copytree(staged, incoming, dirs_exist_ok=True)
    for folder in [incoming, *(p for p in incoming.rglob("*") if p.is_dir())]:
        folder.chmod(0o700)
    old = None
    if root.exists():
        old = root.parent / f".replaced-{root.name}-{os.getpid()}"
        os.replace(root, old)
    os.replace(incoming, root)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    restored = document_files(root)
    wrong = [n for n, size in manifest.documents.items() if n not in restored or restored[n].stat().st_size != size]
    if wrong or len(restored) != len(manifest.documents):
        raise TrackerError(
            f"The restored documents folder does not match the backup: {len(restored)} files, "
            f"the backup lists {len(manifest.documents)}.",
            "Check the free space and permissions of the documents folder, then restore again.",
        )
    return len(restored)
