"""Database engines, sessions and migrations. No globals: callers keep what they build.

A database server that restarts (a deploy, a failover, ``pg_ctl restart``) costs no saved
change and, mostly, no error either (see docs/deploy.md, "Faults"):

- pooled connections are checked before use (``pool_pre_ping``), so a connection the server
  dropped is replaced instead of failing the next request;
- a new connection that is refused while the server stops or starts is tried again for up
  to :data:`CONNECT_RETRY_SECONDS`;
- a transaction whose connection is lost is lost as a whole (the server rolls it back), so
  the services run it again (:func:`retry_when_connection_lost`); a connection lost during
  COMMIT is resolved by asking the server whether that transaction committed (:func:`commit`).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, make_transient_to_detached, sessionmaker

from engine.errors import TrackerError

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"

#: how long a new connection is tried again while the server refuses it (stopping or starting)
CONNECT_RETRY_SECONDS = 5.0
#: waits before running a transaction again whose connection was lost; then the error stands
RETRY_WAITS = (0.1, 0.5, 1.0)

# SQLSTATEs of a server that is shutting down, starting up or dropped us: class 08 (connection
# exception), admin/crash shutdown (57P01, 57P02) and "cannot connect now" (57P03)
_LOST_STATES = ("57P01", "57P02", "57P03")
_REFUSED = (
    "connection refused",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
)


class DatabaseUnavailable(TrackerError):
    """The database could not be reached, or the connection was lost during the change.

    ``saved`` says what became of the change: False when it was certainly not saved (it
    may be made again as it is), None when nobody can tell yet. ``retry``: worth running
    again at once (the connection broke; a new one will likely work), not when connecting
    already failed for :data:`CONNECT_RETRY_SECONDS`."""

    status = 503

    def __init__(self, message: str, advice: str, *, saved: bool | None = False, retry: bool = False) -> None:
        super().__init__(message, advice)
        self.saved = saved
        self.retry = retry and saved is False


def make_engine(url: str, *, connect_retry_seconds: float = CONNECT_RETRY_SECONDS, **kwargs) -> Engine:
    """An engine for ``url``; SQLite files get WAL, foreign keys and a busy timeout so
    several processes (web, worker, CLI) can share the embedded database. A server database
    gets pooled connections checked before use and connecting retried while the server
    restarts (``connect_retry_seconds``; 0 gives up at once)."""
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        kwargs.setdefault("connect_args", {"timeout": 30})
    else:
        kwargs.setdefault("pool_pre_ping", True)
        if make_url(url).get_driver_name() == "psycopg":
            # psycopg's own prepared statements are dropped, with a DEALLOCATE ALL that takes
            # everything prepared on the connection, at every rollback, which ends every
            # request; the few statements worth preparing are prepared on the server instead
            # (see engine.tasklists), where they last as long as the connection
            kwargs.setdefault("connect_args", {"prepare_threshold": None})
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    elif connect_retry_seconds > 0:
        event.listen(engine, "do_connect", functools.partial(_connect_retrying, connect_retry_seconds))
    return engine


def _connect_retrying(budget: float, dialect, _record, cargs, cparams):
    """Connect, trying again while the server refuses because it is stopping or starting."""
    deadline = time.monotonic() + budget
    wait = 0.05
    while True:
        try:
            return dialect.connect(*cargs, **cparams)
        except dialect.loaded_dbapi.OperationalError as exc:
            if not _refused(exc) or time.monotonic() + wait > deadline:
                raise
            log.info("the database refused a connection (%s); trying again in %.2f s", _first_line(exc), wait)
            time.sleep(wait)
            wait = min(wait * 2, 0.5)


def _refused(exc: BaseException) -> bool:
    state = getattr(exc, "sqlstate", None)
    if state == "57P03":
        return True
    message = str(exc).lower()
    if any(words in message for words in _REFUSED):
        return True
    # psycopg sets no SQLSTATE on a failed connect; a server that answered says FATAL (no such
    # database, bad password: settings to fix). Without it, the server never answered: refused,
    # timed out, or accepted and hung up while stopping
    return message.startswith("connection failed:") and "fatal:" not in message


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def connection_lost(exc: BaseException) -> bool:
    """True when ``exc`` says the connection to the database server broke (the server
    stopped, restarted or cut us off), as opposed to the database refusing a statement."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", None) or ""
    return state.startswith("08") or state in _LOST_STATES or _refused(exc.orig)


def lost_connection_error(exc: BaseException) -> DatabaseUnavailable:
    """The error a service raises for a change that failed because of ``exc``, a
    :func:`connection_lost` error before COMMIT: nothing was saved."""
    advice = "Try again in a moment; if it keeps happening, tell your administrator."
    if isinstance(exc, DBAPIError) and not exc.connection_invalidated and _refused(exc.orig):
        log.warning("the database cannot be reached: %s", _first_line(exc))
        return DatabaseUnavailable("The database cannot be reached just now, so nothing was saved.", advice)
    log.warning("database connection lost, the change was not saved: %s", _first_line(exc))
    return DatabaseUnavailable("The connection to the database was lost, so nothing was saved.", advice, retry=True)


def commit(session: Session) -> None:
    """Commit ``session``. On PostgreSQL a connection lost during COMMIT leaves the outcome
    unknown to us: the server is asked, over a new connection, whether the transaction
    committed (``txid_status``). Committed: this returns as if nothing happened (the change's
    outbox rows are then sent on by the scheduler). Not committed: DatabaseUnavailable with
    ``saved=False``. Still unknown after a few seconds: ``saved=None``."""
    bind = session.get_bind()
    if bind.dialect.name != "postgresql":
        session.commit()
        return
    session.flush()  # a failure before COMMIT is sent is a plain failure: nothing was saved
    xid = session.execute(text("SELECT txid_current_if_assigned()")).scalar()
    try:
        session.commit()
    except DBAPIError as exc:
        if not connection_lost(exc):
            raise
        held = list(session.identity_map.values())
        session.rollback()
        outcome = _transaction_status(bind, xid)
        if outcome == "committed":
            log.warning("the connection was lost during COMMIT; the transaction committed (%s)", _first_line(exc))
            _keep(session, held)
            return
        if outcome == "aborted":
            raise lost_connection_error(exc) from exc
        raise DatabaseUnavailable(
            "The connection to the database was lost while the change was being saved; it may have been saved.",
            "Reload the page to see whether your change is there before making it again.",
            saved=None,
        ) from None


def _keep(session: Session, objects: list) -> None:
    """After the rollback that followed a COMMIT which did happen: the objects it inserted
    (which the rollback made transient) become persistent again, and everything is read
    afresh on next use, as after any commit."""
    for obj in objects:
        state = inspect(obj)
        if state.transient and state.key is None and state.mapper.primary_key_from_instance(obj)[0] is not None:
            make_transient_to_detached(obj)
            session.add(obj)
    session.expire_all()


def _transaction_status(bind: Engine, xid: int | None, *, patience: float = 5.0) -> str:
    """``committed``, ``aborted`` or ``unknown``: what became of transaction ``xid``. A
    transaction that wrote nothing has no id and saved nothing."""
    if xid is None:
        return "aborted"
    deadline = time.monotonic() + patience
    while True:
        try:
            with bind.connect() as conn:
                status = conn.execute(text("SELECT txid_status(:xid)"), {"xid": xid}).scalar()
        except DBAPIError as exc:
            log.warning("could not ask the database what became of transaction %s: %s", xid, _first_line(exc))
            status = None
        if status in ("committed", "aborted"):
            return status
        if time.monotonic() > deadline:
            return "unknown"
        time.sleep(0.1)  # "in progress": the old connection's server process has not ended yet


Method = TypeVar("Method", bound=Callable)


def retry_when_connection_lost(method: Method) -> Method:
    """For a service method that is one transaction: when its connection is lost before
    the transaction committed (:class:`DatabaseUnavailable` with ``retry``), nothing was
    saved, so it runs again, after each of :data:`RETRY_WAITS`; then the error stands."""

    @functools.wraps(method)
    def run(*args, **kwargs):
        for wait in (*RETRY_WAITS, None):
            try:
                return method(*args, **kwargs)
            except DatabaseUnavailable as exc:
                if not exc.retry or wait is None:
                    raise
                log.info("running %s again in %.1f s after a lost database connection", method.__name__, wait)
                time.sleep(wait)
        raise AssertionError("unreachable")

    return run  # type: ignore[return-value]


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["engine"] = engine
    return config


def upgrade(engine: Engine, revision: str = "heads") -> None:
    """Create or upgrade the schema; safe on an empty and on an existing database.
    ``heads``: features developed side by side may each add a branch before a merge revision."""
    command.upgrade(alembic_config(engine), revision)


def head_revision() -> str:
    """The newest migration(s) this code knows, comma-separated when there are branches."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return ",".join(sorted(ScriptDirectory.from_config(config).get_heads()))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return None
        rows = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalars().all()
        return ",".join(sorted(rows)) or None
