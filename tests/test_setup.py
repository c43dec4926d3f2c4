"""Set-up paths a new installation takes: migrations, demo data, packaging, health with Redis."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from alembic import command
from sqlalchemy import func, inspect, select

from engine import db, health
from engine.config import Settings
from engine.definitions import load_registry
from engine.models import Item, User
from engine.permissions import Actor
from engine.runtime import Runtime
from engine.services import ItemService
from tests.conftest import ROOT


def test_upgrade_downgrade_upgrade(db_url):
    engine = db.make_engine(db_url)
    config = db.alembic_config(engine)
    command.downgrade(config, "base")
    assert not inspect(engine).has_table("items")
    db.upgrade(engine)
    db.upgrade(engine)  # idempotent on an existing database
    assert db.current_revision(engine) == db.head_revision()
    assert {"items", "events", "users", "role_grants", "outbox"} <= set(inspect(engine).get_table_names())
    indexes = {i["name"] for i in inspect(engine).get_indexes("items")}
    assert {"ix_items_type_status", "ix_items_assignee_status", "ix_items_type_due"} <= indexes
    engine.dispose()


def test_demo_data_loads_once_through_the_services(session, tmp_path):
    from engine import demo

    registry = load_registry()
    logins, created = demo.load(session, registry, tmp_path)
    assert created > 60
    assert {name for name, _, _ in logins} >= {"admin", "claims", "assessor", "manager"}
    assert all(len(password) >= 16 for _, password, _ in logins)
    # every demo item is valid under the current definitions: saving it unchanged passes
    service = ItemService(session, Actor.system(), registry)
    for item_id in session.scalars(select(Item.id)).all():
        service.update(item_id, changes={})
    statuses = set(session.scalars(select(Item.status).where(Item.type_key == "apprenticeship")))
    assert {"new", "signup", "on_programme"} <= statuses
    again_logins, again = demo.load(session, registry, tmp_path)
    assert again == 0 and again_logins == logins
    assert session.scalar(select(func.count()).select_from(User)) == len(logins)


def test_health_reports_real_redis(tmp_path, sqlite_url, redis_url):
    settings = Settings(instance_path=tmp_path, database_url=sqlite_url, redis_url=redis_url, secret_key="x")
    report = health.check(Runtime(settings))
    by_name = {c.name: c for c in report.checks}
    assert report.ok
    assert by_name["redis"].detail.startswith("redis ")
    down = Settings(instance_path=tmp_path, database_url=sqlite_url, redis_url="redis://127.0.0.1:1/0", secret_key="x")
    report = health.check(Runtime(down))
    assert not report.ok
    assert "unreachable" in {c.name: c for c in report.checks}["redis"].detail


def test_wheel_ships_definitions_and_metaschemas(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = tmp_path.glob("tracker_engine-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "tracker_types/roles.yaml",
        "tracker_types/apprenticeship/schema.json",
        "tracker_types/apprenticeship/type.yaml",
        "workflows/apprenticeship.yaml",
        "engine/definitions/metaschemas/type.schema.json",
        "engine/migrations/env.py",
        "engine/migrations/versions/0001_initial_schema.py",
        "engine/templates/email/notification.html",
        "engine/templates/email/digest.txt",
        "webui/templates/base.html",
        "webui/static/style.css",
    ):
        assert required in names, required
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "tracker = webui.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
