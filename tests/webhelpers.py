"""Helpers for the sign-in and users-page tests: an app on a test database, CSRF tokens,
signing in (with a TOTP code when enrolled) and enrolling a user through the engine."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
from argon2 import PasswordHasher
from flask import Flask
from flask.testing import FlaskClient

from engine.config import Settings
from tests.conftest import TEST_DEFINITIONS
from webui import create_app

PASSWORD = "sign-in-password-1"


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    """Argon2 with its lowest costs: these tests hash many passwords and recovery codes, and
    what they check is the sign-in flow; tests/test_users.py checks the real parameters."""
    from engine.services import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def make_app(tmp_path: Path, db_url: str, **config: Any) -> Flask:
    settings_overrides = config.pop("settings", {})
    settings = Settings(
        instance_path=tmp_path,
        database_url=db_url,
        definitions_path=[TEST_DEFINITIONS],
        secret_key="test-secret",
        **settings_overrides,
    )
    return create_app({"TESTING": True, "TRACKER_SETTINGS": settings, **config})


@pytest.fixture
def new_app(tmp_path, db_url):
    """Make apps on the test database; their connection pools are closed at teardown, so a
    long run does not use up PostgreSQL's connections."""
    made: list[Flask] = []

    def make(**config: Any) -> Flask:
        made.append(make_app(tmp_path, db_url, **config))
        return made[-1]

    yield make
    for app in made:
        runtime = app.extensions["tracker"]
        if "engine" in runtime.__dict__:
            runtime.engine.dispose()


def csrf(client: FlaskClient, url: str) -> str:
    page = client.get(url).get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def post(client: FlaskClient, url: str, data: dict | None = None, *, token_from: str = "/"):
    """POST a form with a fresh CSRF token taken from ``token_from``."""
    return client.post(url, data={**(data or {}), "csrf_token": csrf(client, token_from)})


def password_step(client: FlaskClient, username: str, password: str = PASSWORD, url: str = "/login"):
    token = csrf(client, url)
    return client.post(url, data={"username": username, "password": password, "csrf_token": token})


def code_step(client: FlaskClient, code: str):
    token = csrf(client, "/login/code")
    return client.post("/login/code", data={"code": code, "csrf_token": token})


def now_code(secret: str, offset: int = 0) -> str:
    """The code an authenticator app shows now (``offset`` seconds from now)."""
    return pyotp.TOTP(secret).at(time.time() + offset)


def wrong_code(secret: str) -> str:
    """A 6-digit code that matches no time-step near now."""
    near = {pyotp.TOTP(secret).at(time.time() + s) for s in range(-90, 120, 30)}
    return next(c for c in (f"{n:06d}" for n in range(1_000_000)) if c not in near)


def enrol(app: Flask, username: str) -> tuple[str, list[str]]:
    """Switch two-factor sign-in on for ``username`` through the engine, confirmed an hour ago
    so that the code of the moment has not been used; returns the secret and recovery codes."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        users = rt.users(session)
        user = users.get(username)
        secret = users.begin_totp(user)
        an_hour_ago = time.time() - 3600
        codes = users.confirm_totp(user, pyotp.TOTP(secret).at(an_hour_ago), now=an_hour_ago)
        return secret, codes


def sign_in(client: FlaskClient, username: str, password: str = PASSWORD, secret: str | None = None):
    """Sign in fully; with ``secret`` the code step is answered too. Returns the last response."""
    response = password_step(client, username, password)
    if secret is not None:
        assert response.headers["Location"] == "/login/code"
        response = code_step(client, now_code(secret))
    assert response.status_code == 302, response.get_data(as_text=True)
    return response


def create_users(app: Flask, **roles: list[str]) -> None:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        users = rt.users(session)
        for name, keys in roles.items():
            users.create(name, keys, password=PASSWORD)
