"""Fixtures for the notification tests: a real SMTP server (aiosmtpd) on loopback, a
settable clock, Redis on its own database, and a Runtime wired to all of them.

Import the fixtures into a test module with ``from tests.notify_helpers import *``.
"""

from __future__ import annotations

import asyncio
import functools
import os
import socket
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller

from engine.config import Settings
from engine.models import RoleGrant, User, utcnow
from engine.runtime import Runtime
from tests.conftest import ROOT, TEST_DEFINITIONS, service_missing

NOTIFY_DEFINITIONS = ROOT / "tests" / "definitions_notify"
BASE_URL = "http://tracker.test"
NOTIFY_REDIS_URL = os.environ.get("TRACKER_TEST_NOTIFY_REDIS_URL", "redis://127.0.0.1:6379/14")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SinkHandler:
    """Collects every message the server accepts. ``refuse`` makes it answer 451 (try
    later); ``hold_rcpt`` makes it stall on that recipient until ``release`` is set."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.refuse = False
        self.hold_rcpt: str | None = None
        self.holding = threading.Event()
        self.release = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd API
        if self.hold_rcpt and address == self.hold_rcpt and not self.release.is_set():
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
            return "451 4.3.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.refuse:
            return "451 4.3.0 Mailbox busy, try again later"
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 Message accepted for delivery"


class SmtpSink:
    """An SMTP server on a fixed loopback port that can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.handler = SinkHandler()
        self._controller: Controller | None = None

    @property
    def url(self) -> str:
        return f"smtp://127.0.0.1:{self.port}?timeout=5"

    @property
    def messages(self) -> list[EmailMessage]:
        return self.handler.messages

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address in str(m["To"])]

    def start(self) -> None:
        if self._controller is None:
            self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port)
            self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None


class Clock:
    """A clock tests move by hand; starts at the real time so rows written by services
    (stamped with the real time) are due."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def sync(self) -> datetime:
        """Back to the real time (rows written meanwhile are stamped with it)."""
        self.now = utcnow()
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    sink = SmtpSink()
    sink.start()
    yield sink
    sink.handler.release.set()
    sink.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_settings(tmp_path, db_url: str, **overrides) -> Settings:
    values = {
        "instance_path": tmp_path,
        "database_url": db_url,
        "definitions_path": [TEST_DEFINITIONS, NOTIFY_DEFINITIONS],
        "secret_key": "test-secret",
        "base_url": BASE_URL,
        "mail_from": "Tracker <tracker@tracker.test>",
    }
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def rt(tmp_path, db_url, smtp) -> Iterator[Runtime]:
    """A runtime with no Redis: outbox rows are relayed in this process after commit."""
    runtime = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url))
    yield runtime
    runtime.engine.dispose()


@pytest.fixture
def notify_redis_url() -> Iterator[str]:
    """Redis database 14, flushed before and after; CI=true fails when Redis is missing."""
    import redis

    client = redis.Redis.from_url(NOTIFY_REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except Exception as exc:  # noqa: BLE001
        service_missing("Redis", exc)
    client.flushdb()
    yield NOTIFY_REDIS_URL
    client.flushdb()


PASSWORD = "notify-password-1"


@functools.cache
def _password_hash() -> str:
    from engine.services.users import _hasher

    return _hasher.hash(PASSWORD)


def people(runtime: Runtime) -> dict[str, int]:
    """alice and bob (chair), carol (attendee), dave (payroll: sees no meetings), each with an
    e-mail address and the password :data:`PASSWORD` (hashed once: hashing is slow on purpose)."""
    ids = {}
    with runtime.session() as session:
        for name, role in (("alice", "chair"), ("bob", "chair"), ("carol", "attendee"), ("dave", "payroll")):
            user = User(
                username=name, display_name=name.title(), email=f"{name}@tracker.test", password_hash=_password_hash()
            )
            user.grants.append(RoleGrant(role=role))
            session.add(user)
            session.flush()
            ids[name] = user.id
        session.commit()
    return ids


def service(runtime: Runtime, session, username: str | None):
    return runtime.items(session, runtime.actor(session, username))
