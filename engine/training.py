"""LIVE and TRAINING: two installations of one Tracker, the second a nightly copy of the first.

LIVE holds the real data (``TRACKER_ENVIRONMENT=live``, the default). TRAINING
(``TRACKER_ENVIRONMENT=training``) runs the same code on a copy of LIVE's database made by
:func:`refresh` (``tracker training refresh``, and nightly by ``tracker scheduler`` on LIVE
when ``TRACKER_TRAINING_DATABASE_URL`` is set). People practise there; nothing they do is
real: every page and every CLI command says so, and notifications reach the in-app inbox
only (:func:`engine.notifications.allowed_channels` drops e-mail, SMS and every other
channel that leaves the building).

TRAINING can never write to LIVE:

- the refresh reads LIVE and writes only the TRAINING target; it refuses a target that is
  LIVE itself (the same URL, the same SQLite file under another name, or the same PostgreSQL
  database reached another way: checked with an advisory lock both sides would share), and
  a target that holds data but is not a TRAINING copy;
- a TRAINING copy carries a :class:`~engine.models.TrainingCopy` row; a process with
  ``TRACKER_ENVIRONMENT=training`` refuses to start on a database that holds data without
  one (:func:`check_start`), and LIVE refuses to start when its training URL names itself.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from sqlalchemy import delete, inspect, select, text
from sqlalchemy.engine import Engine, make_url

from engine import backup, db
from engine.config import Settings
from engine.errors import TrackerError
from engine.models import TrainingCopy, utcnow

log = logging.getLogger(__name__)

LIVE, TRAINING = "live", "training"
#: how long a web process reuses the banner text before reading the refresh time again
BANNER_SECONDS = 30.0


def is_training(settings: Settings) -> bool:
    return settings.environment == TRAINING


def banner_text(refreshed_at: datetime | None) -> str:
    """The warning shown on every TRAINING page and CLI command."""
    when = f"{refreshed_at:%Y-%m-%d %H:%M} UTC" if refreshed_at else "(never: run 'tracker training refresh' on LIVE)"
    return f"TRAINING - changes here are not real; refreshed from LIVE at {when}"


# -- what a database is ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mark:
    """The TRAINING mark of a database: when and from where it was copied."""

    refreshed_at: datetime
    source: str
    revision: str


@dataclass(frozen=True)
class DatabaseState:
    """What :func:`inspect_database` found: whether the database holds anything, and its
    TRAINING mark (None when it is not a TRAINING copy)."""

    has_schema: bool
    has_data: bool
    mark: Mark | None


def inspect_database(engine: Engine) -> DatabaseState:
    """Read-only look at a database: schema, any users or items, and the TRAINING mark."""
    with engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
        has_data = any(
            conn.execute(text(f'SELECT 1 FROM "{table}" LIMIT 1')).first() is not None
            for table in ("items", "users")
            if table in names
        )
        mark = None
        if "training_copy" in names:
            columns = (TrainingCopy.refreshed_at, TrainingCopy.source, TrainingCopy.revision)
            row = conn.execute(select(*columns).order_by(TrainingCopy.id.desc()).limit(1)).first()
            if row is not None:
                mark = Mark(*row)
        return DatabaseState(bool(names), has_data, mark)


def refreshed_at(engine: Engine) -> datetime | None:
    """When the TRAINING database behind ``engine`` was last copied from LIVE (None if never)."""
    try:
        state = inspect_database(engine)
    except Exception:  # noqa: BLE001 - the banner must never take a page down
        return None
    return state.mark.refreshed_at if state.mark else None


def same_url(a: str, b: str) -> bool:
    """Whether two database URLs name the same database, however they are spelt: the same
    SQLite file (also through a link), or the same host, port and database on PostgreSQL."""
    ua, ub = make_url(a), make_url(b)
    if ua.get_backend_name() != ub.get_backend_name():
        return False
    if ua.get_backend_name() == "sqlite":
        pa, pb = (Path(u.database or ":memory:").expanduser() for u in (ua, ub))
        if pa.exists() and pb.exists():
            return os.path.samefile(pa, pb)
        return pa.resolve() == pb.resolve()
    local = {"", "localhost", "127.0.0.1", "::1"}

    def where(u) -> tuple:
        host = (u.host or "").lower()
        return ("local" if host in local else host, u.port or 5432, u.database or u.username or "")

    return where(ua) == where(ub)


def check_start(settings: Settings, engine: Engine | None = None) -> None:
    """Refuse to run where TRAINING could touch LIVE (raises TrackerError saying what to fix):

    - on LIVE, ``TRACKER_TRAINING_DATABASE_URL`` must not name LIVE's own database;
    - on TRAINING, the database must be empty or a TRAINING copy (never LIVE or any other
      database with data). A database that cannot be reached is left to the usual errors.
    """
    if not is_training(settings):
        if settings.training_database_url and same_url(settings.database_url, settings.training_database_url):
            raise TrackerError(
                "TRACKER_TRAINING_DATABASE_URL names the LIVE database itself: a refresh would overwrite LIVE.",
                "Point TRACKER_TRAINING_DATABASE_URL at a separate, empty database, or unset it.",
            )
        return
    if engine is None:
        return
    try:
        state = inspect_database(engine)
    except Exception:  # noqa: BLE001 - unreachable: the normal database errors say what to do
        return
    if state.has_data and state.mark is None:
        raise TrackerError(
            f"TRACKER_ENVIRONMENT=training, but {backup.safe_url(settings.database_url)} is not a TRAINING copy: "
            "it holds data and was never refreshed from LIVE (it may be LIVE itself). Tracker will not run on it.",
            "Set TRACKER_DATABASE_URL to the TRAINING database (LIVE's TRACKER_TRAINING_DATABASE_URL) and run "
            "'tracker training refresh' on LIVE, or set TRACKER_ENVIRONMENT=live if this is LIVE.",
        )


def refuse_unsafe_start(runtime) -> None:
    """:func:`check_start` at process start (the web app), not at the first request: a
    TRAINING process looks at its database now; LIVE only compares the URLs."""
    if is_training(runtime.settings):
        _ = runtime.engine  # building the engine runs check_start on it
    else:
        check_start(runtime.settings)


def banner(runtime) -> str:
    """The TRAINING banner for ``runtime`` (empty on LIVE), re-read at most every
    :data:`BANNER_SECONDS` so a page costs no extra query most of the time."""
    if not is_training(runtime.settings):
        return ""
    cached = runtime.__dict__.get("_training_banner")
    if cached is not None and time.monotonic() - cached[1] < BANNER_SECONDS:
        return cached[0]
    text_ = banner_text(refreshed_at(runtime.engine))
    runtime.__dict__["_training_banner"] = (text_, time.monotonic())
    return text_


# -- the refresh --------------------------------------------------------------------------------------


@dataclass
class RefreshReport:
    """What a refresh did."""

    refreshed_at: datetime
    source: str
    target: str
    counts: dict[str, int]
    documents: int | None
    seconds: float

    @property
    def items(self) -> int:
        return self.counts.get("items", 0)


def refresh(settings: Settings, registry, *, clock=utcnow) -> RefreshReport:
    """Copy LIVE (``settings.database_url``) into the TRAINING database
    (``settings.training_database_url``), mark it as a TRAINING copy, derive its task-list
    indexes, and mirror the documents into ``settings.training_documents_path`` if set.

    LIVE is only read. Raises TrackerError, before anything is written, when this is not
    LIVE, no training database is configured, the target is LIVE itself or a database with
    data that is not a TRAINING copy, or LIVE's schema is not this version's.
    """
    started = time.monotonic()
    if is_training(settings):
        raise TrackerError(
            "This is a TRAINING instance: it is refreshed from LIVE, not the other way round.",
            "Run 'tracker training refresh' with LIVE's settings (TRACKER_ENVIRONMENT=live).",
        )
    target_url = settings.training_database_url
    if not target_url:
        raise TrackerError(
            "TRACKER_TRAINING_DATABASE_URL is not set: there is no TRAINING database to refresh.",
            "Set it on LIVE to a separate, empty database, e.g. sqlite:///instance/training.db or "
            "postgresql+psycopg://tracker@dbhost/tracker_training.",
        )
    check_start(settings)
    live_kind, target_kind = backup.kind_of(settings.database_url), backup.kind_of(target_url)
    if live_kind != target_kind:
        raise TrackerError(
            f"LIVE is a {live_kind} database but TRACKER_TRAINING_DATABASE_URL is {target_kind}.",
            f"Use a {live_kind} database for TRAINING too.",
        )
    live = db.make_engine(settings.database_url)
    target = db.make_engine(target_url)
    try:
        _refuse_same_database(live, target, live_kind, settings.database_url, target_url)
        _refuse_unsafe_target(target, target_url)
        revision = db.current_revision(live)
        if revision != db.head_revision():
            raise TrackerError(
                f"LIVE's schema is at {revision or 'nothing'}, but this Tracker expects {db.head_revision()}. "
                "Nothing was copied.",
                "Run 'tracker db upgrade' on LIVE first.",
            )
        target.dispose()  # no connection of ours may hold the target while it is replaced
        if live_kind == "sqlite":
            backup.sqlite_copy(backup.sqlite_path(settings.database_url), backup.sqlite_path(target_url))
        else:
            backup.pg_copy(settings.database_url, target_url)
        now = clock()
        with target.begin() as conn:
            counts = backup.table_counts(conn)
            conn.execute(delete(TrainingCopy))
            conn.execute(
                TrainingCopy.__table__.insert().values(
                    refreshed_at=now, source=backup.safe_url(settings.database_url), revision=revision, counts=counts
                )
            )
        from engine import indexes

        indexes.sync(target, registry)
    finally:
        live.dispose()
        target.dispose()
    documents = None
    if settings.training_documents_path is not None and settings.documents_path is not None:
        documents = mirror_documents(settings.documents_path, settings.training_documents_path)
    return RefreshReport(
        refreshed_at=now,
        source=backup.safe_url(settings.database_url),
        target=backup.safe_url(target_url),
        counts=counts,
        documents=documents,
        seconds=time.monotonic() - started,
    )


def _refuse_same_database(live: Engine, target: Engine, kind: str, live_url: str, target_url: str) -> None:
    """TrackerError when the target is LIVE reached under another name."""
    same = same_url(live_url, target_url) if kind == "sqlite" else _same_postgres_database(live, target)
    if same:
        raise TrackerError(
            "TRACKER_TRAINING_DATABASE_URL leads to the LIVE database itself: a refresh would overwrite LIVE. "
            "Nothing was copied.",
            "Point TRACKER_TRAINING_DATABASE_URL at a separate, empty database.",
        )


def _same_postgres_database(live: Engine, target: Engine) -> bool:
    """Whether two engines reach the same PostgreSQL database: an advisory lock taken through
    LIVE is held against the target only if they are one database (a lock's key includes the
    database), whatever host names, ports or proxies lie between. Writes nothing."""
    key = secrets.randbits(62)
    with live.connect() as held:
        held.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        try:
            try:
                with target.connect() as probe:
                    got = probe.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
                    if got:
                        probe.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                    probe.rollback()
            except Exception as exc:  # noqa: BLE001 - say which database, not a driver trace
                raise TrackerError(
                    f"The TRAINING database {target.url.render_as_string(hide_password=True)} cannot be reached: "
                    f"{getattr(exc, 'orig', exc)}",
                    "Create it first (e.g. createdb tracker_training) and check TRACKER_TRAINING_DATABASE_URL.",
                ) from None
        finally:
            held.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            held.rollback()
    return not got


def _refuse_unsafe_target(target: Engine, target_url: str) -> None:
    """Only an empty database or an earlier TRAINING copy may be overwritten."""
    try:
        state = inspect_database(target)
    except Exception as exc:  # noqa: BLE001
        raise TrackerError(
            f"The TRAINING database {backup.safe_url(target_url)} cannot be read: {getattr(exc, 'orig', exc)}",
            "Check TRACKER_TRAINING_DATABASE_URL; the database must exist and be empty or a TRAINING copy.",
        ) from None
    if state.has_data and state.mark is None:
        raise TrackerError(
            f"The TRAINING database {backup.safe_url(target_url)} holds data but is not a TRAINING copy "
            "(it may be LIVE or another real database). Nothing was copied.",
            "Point TRACKER_TRAINING_DATABASE_URL at an empty database (or empty this one), then refresh again.",
        )


def mirror_documents(source: Path, target: Path) -> int:
    """Make ``target`` hold exactly the stored documents of ``source``; returns how many.
    Only ``target`` is written. Files are kept by content hash, so unchanged ones are skipped."""
    source, target = source.resolve(), target.resolve()
    if source == target or source in target.parents or target in source.parents:
        raise TrackerError(
            f"TRACKER_TRAINING_DOCUMENTS_PATH ({target}) overlaps LIVE's documents folder ({source}).",
            "Give TRAINING a documents folder of its own, outside LIVE's.",
        )
    wanted = backup.document_files(source)
    target.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name, path in wanted.items():
        copy = target / name
        if copy.is_file() and copy.stat().st_size == path.stat().st_size:
            continue
        copy.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shutil.copy2(path, copy)
    for name, path in backup.document_files(target).items():
        if name not in wanted:
            path.unlink()
    return len(wanted)


def refresh_due(settings: Settings, now: datetime) -> bool:
    """Whether the nightly refresh should run now: on LIVE with a TRAINING database, after
    ``TRACKER_TRAINING_REFRESH_HOUR`` (UTC), and not yet today. Reads only the TRAINING database."""
    if is_training(settings) or not settings.training_database_url or now.hour < settings.training_refresh_hour:
        return False
    target = db.make_engine(settings.training_database_url)
    try:
        last = refreshed_at(target)
    finally:
        target.dispose()
    return last is None or last.date() < now.date()
