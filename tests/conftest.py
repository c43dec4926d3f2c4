"""Shared fixtures: real SQLite and PostgreSQL databases, Redis, definitions and services.

Service tests run once per database (``db_url`` is parametrised). PostgreSQL and Redis are
required when ``CI=true``; elsewhere a missing server skips its tests with the reason.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from engine import db
from engine.definitions import Registry, load_registry
from engine.errors import ValidationFailed
from engine.models import Base, Item
from engine.permissions import Actor
from engine.services import ItemService, UserService

ROOT = Path(__file__).resolve().parent.parent
TEST_DEFINITIONS = ROOT / "tests" / "definitions"
PG_ADMIN_URL = os.environ.get("TRACKER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("TRACKER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"

# No test reaches a real third-party service: plugins whose default base URL is a public API
# point at a closed local port unless a test gives them a fake server of its own. Set in the
# environment so that CLI subprocesses and live servers inherit it too.
for _plugin in ("POSTCODE", "COMPANIES_HOUSE"):
    os.environ.setdefault(f"TRACKER_PLUGIN_{_plugin}_URL", "http://127.0.0.1:9")


def service_missing(what: str, error: Exception) -> None:
    """Under CI a missing service fails the run; on a laptop it skips with the reason."""
    message = f"{what} is not reachable: {error}"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: PostgreSQL and Redis tests must run)")
    pytest.skip(message)


# -- connections ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _close_runtime_connections(monkeypatch):
    """Every Runtime a test builds (an app, a CLI runner) gives its connections back at the
    end of the test, so a long run never exhausts PostgreSQL's connection slots."""
    from engine.runtime import Runtime

    built: list[Runtime] = []
    original = Runtime.__init__

    def recording_init(self, *args, **kwargs):
        original(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(Runtime, "__init__", recording_init)
    yield
    for runtime in built:
        if "engine" in runtime.__dict__:  # only what was actually opened
            runtime.engine.dispose()


# -- databases ------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory) -> Path:
    """A migrated SQLite file; each test gets a copy, which is faster than migrating again."""
    path = tmp_path_factory.mktemp("sqlite") / "template.db"
    engine = db.make_engine(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A throwaway PostgreSQL database for this run, migrated once, dropped at the end."""
    from sqlalchemy import create_engine

    name = f"tracker_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001 - any connection failure means "not reachable"
        admin.dispose()
        service_missing("PostgreSQL", exc)
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = db.make_engine(url)
    db.upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_pg(url: str) -> None:
    """Back to a freshly migrated database: no rows, and none of the task-list indexes and
    generated columns an earlier test derived (the database lives for the whole session)."""
    from engine import indexes

    engine = db.make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    indexes.sync(engine, Registry())
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request, tmp_path) -> Iterator[str]:
    """A clean, migrated database of each kind."""
    if request.param == "sqlite":
        path = tmp_path / "tracker.db"
        shutil.copy(request.getfixturevalue("sqlite_template"), path)
        yield f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_database")
        _truncate_pg(url)
        yield url


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    path = tmp_path / "tracker.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url):
    eng = db.make_engine(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def session(engine) -> Iterator[Session]:
    factory = db.session_factory(engine)
    with factory() as s:
        yield s


# -- definitions and services ---------------------------------------------------------------------


@pytest.fixture(scope="session")
def registry() -> Registry:
    """Built-in definitions plus the test folder (a safeguarding concern type)."""
    reg = load_registry([TEST_DEFINITIONS])
    assert reg.problems == [], "\n".join(map(str, reg.problems))
    return reg


@pytest.fixture
def users(session, registry) -> UserService:
    return UserService(session, registry)


@pytest.fixture
def make_user(users, registry) -> Callable[..., Actor]:
    """Create a user with roles and return their Actor."""

    def make(username: str, *roles: str) -> Actor:
        user, _ = users.create(username, list(roles))
        return Actor.for_user(user, registry)

    return make


@pytest.fixture
def service_for(session, registry) -> Callable[[Actor], ItemService]:
    def make(actor: Actor) -> ItemService:
        return ItemService(session, actor, registry)

    return make


@pytest.fixture
def system(service_for) -> ItemService:
    return service_for(Actor.system())


LEARNER = {"given_name": "Jane", "family_name": "Smith", "date_of_birth": "2001-02-03", "uln": "1000000043"}


@pytest.fixture
def learner(system) -> Item:
    return system.create("learner", dict(LEARNER))


def problems_of(excinfo: pytest.ExceptionInfo[ValidationFailed]) -> dict[str, str]:
    return {p.path: p.message for p in excinfo.value.problems}


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except Exception as exc:  # noqa: BLE001
        service_missing("Redis", exc)
    return REDIS_URL


# -- the command line --------------------------------------------------------------------------

TRACKER = str(Path(sys.executable).parent / "tracker")


@pytest.fixture
def run(tmp_path, db_url):
    """Run the ``tracker`` console script in a subprocess against the test database."""
    env = {
        **os.environ,
        "TRACKER_INSTANCE_PATH": str(tmp_path / "instance"),
        "TRACKER_DATABASE_URL": db_url,
        "TRACKER_DEFINITIONS_PATH": str(TEST_DEFINITIONS),
        "NO_COLOR": "1",
    }
    env.pop("TRACKER_REDIS_URL", None)

    def tracker(*args: str, ok: bool = True, stdin: str | None = None) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [TRACKER, *args], capture_output=True, text=True, env=env, input=stdin, cwd=tmp_path, timeout=120
        )
        assert "Traceback" not in result.stderr, result.stderr
        if ok:
            assert result.returncode == 0, result.stderr
        return result

    tracker.env = env
    return tracker
