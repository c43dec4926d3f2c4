"""GET /health for load balancers: 200 with a JSON body while the database answers (``degraded``
when Redis is configured but down: saves go on); 503 when the database cannot be reached."""

from __future__ import annotations

import pytest

from tests.notify_helpers import free_port, make_settings
from webui import create_app


def _get(tmp_path, db_url: str, **settings):
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": make_settings(tmp_path, db_url, **settings)})
    try:
        return app.test_client().get("/health")
    finally:
        runtime = app.extensions["tracker"]
        if "engine" in runtime.__dict__:
            runtime.engine.dispose()


def test_health_is_200_with_json_when_the_database_and_redis_answer(tmp_path, db_url, redis_url):
    response = _get(tmp_path, db_url, redis_url=redis_url)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    assert response.get_json() == {
        "status": "ok",
        "database": {"ok": True},
        "redis": {"ok": True},
        "outbox": {"pending": 0, "dead": 0},
    }


def test_health_is_degraded_when_redis_is_configured_but_down(tmp_path, db_url):
    response = _get(tmp_path, db_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    assert response.status_code == 200 and response.mimetype == "application/json"
    body = response.get_json()
    assert body["status"] == "degraded" and body["redis"] == {"ok": False} and body["database"] == {"ok": True}
    assert response.headers["Cache-Control"] == "no-store"


def test_health_without_redis_configured_does_not_ask_for_it(tmp_path, db_url):
    response = _get(tmp_path, db_url)
    assert response.status_code == 200 and "redis" not in response.get_json()


@pytest.mark.parametrize(
    "unreachable",
    [
        pytest.param("postgresql+psycopg://postgres@127.0.0.1:{port}/tracker", id="postgresql-nobody-listening"),
        pytest.param("sqlite:///{tmp}/a-folder", id="sqlite-cannot-open"),
    ],
)
def test_health_is_503_when_the_database_cannot_be_reached(tmp_path, unreachable):
    (tmp_path / "a-folder").mkdir()  # where the database file should be
    response = _get(tmp_path, unreachable.format(port=free_port(), tmp=tmp_path))
    assert response.status_code == 503 and response.mimetype == "application/json"
    assert response.get_json() == {"status": "down", "database": {"ok": False}}
    assert response.headers["Cache-Control"] == "no-store"
