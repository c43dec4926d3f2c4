"""``tracker users token create|list|revoke`` end to end, and the tokens against the API."""

from __future__ import annotations

import pytest

from engine.config import Settings
from tests.conftest import TEST_DEFINITIONS
from tests.test_api import close
from webui import create_app


@pytest.fixture
def app(tmp_path, db_url):
    settings = Settings(
        instance_path=tmp_path, database_url=db_url, definitions_path=[TEST_DEFINITIONS], secret_key="test-secret"
    )
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings})
    yield app
    close(app)


def test_create_list_use_and_revoke_a_token(run, app):
    run("init")
    run("users", "create", "clara", "--role", "tracker_creator")

    created = run("users", "token", "create", "clara", "--label", "nightly ILR export")
    token = created.stdout.strip()
    assert token.startswith("trk_") and "\n" not in token  # the token alone, ready for $(...)
    assert "Created API token #1 'nightly ILR export' for 'clara'." in created.stderr
    assert "shown only this once" in created.stderr

    listed = run("users", "token", "list", "clara").stdout
    assert "nightly ILR export" in listed and token[:8] + "..." in listed
    assert "never" in listed and "active" in listed
    assert token not in listed

    client = app.test_client()
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/types", headers=auth).status_code == 200
    assert "never" not in run("users", "token", "list", "clara").stdout

    revoked = run("users", "token", "revoke", "1").stdout
    assert "API token #1 'nightly ILR export' of 'clara' is revoked." in revoked
    assert client.get("/api/v1/types", headers=auth).status_code == 401
    assert "revoked" in run("users", "token", "list", "clara").stdout
    run("users", "token", "revoke", "1")  # again: still revoked, no error

    second = run("users", "token", "create", "clara").stdout.strip()
    assert second != token
    assert client.get("/api/v1/types", headers={"Authorization": f"Bearer {second}"}).status_code == 200
    rows = run("users", "token", "list", "clara").stdout.splitlines()
    assert rows[0].split()[:2] == ["ID", "LABEL"]
    assert [row.split()[0] for row in rows[1:]] == ["1", "2"]
    assert "API token" in rows[2]  # the default label


def test_token_mistakes_are_explained(run, app):
    run("init")
    run("users", "create", "gone", "--role", "manager")
    assert "has no API tokens" in run("users", "token", "list", "gone").stdout
    rt = app.extensions["tracker"]
    with rt.session() as session:
        rt.users(session).deactivate("gone")

    for args, message in [
        (("users", "token", "create", "ghost"), "There is no user 'ghost'"),
        (("users", "token", "create", "gone"), "gone is deactivated"),
        (("users", "token", "list", "ghost"), "There is no user 'ghost'"),
        (("users", "token", "revoke", "99"), "There is no API token #99"),
    ]:
        result = run(*args, ok=False)
        assert result.returncode == 1, args
        assert message in result.stderr, (args, result.stderr)
        assert result.stdout == ""
    not_a_number = run("users", "token", "revoke", "first", ok=False)
    assert not_a_number.returncode == 2 and "'first' is not a valid integer" in not_a_number.stderr
