"""Servers of our own for the fault tests: a private PostgreSQL cluster, a private Redis and an
SMTP server, each on a free loopback port, which a test may stop, start or restart without
disturbing any other test on this machine.

Import the fixtures into a test module with ``from tests.faults import *``. A missing
``initdb`` or ``redis-server`` skips the tests that need it, and fails them under ``CI=true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from engine import db
from tests.conftest import IN_CI, ROOT, TEST_DEFINITIONS
from tests.notify_helpers import NOTIFY_DEFINITIONS, SinkHandler, SmtpSink, free_port, smtp  # smtp: an aiosmtpd server

__all__ = [
    "CuttingProxy",
    "FaultyHandler",
    "PrivatePostgres",
    "PrivateRedis",
    "Subprocess",
    "fault_env",
    "mailbox",
    "private_pg",
    "private_pg_url",
    "private_redis",
    "smtp",
    "wait_until",
]

BIN = Path(sys.executable).parent


def _missing(what: str) -> None:
    message = f"{what} is not installed here"
    if IN_CI:
        pytest.fail(f"{message} (CI=true: the fault tests must run)")
    pytest.skip(message)


def wait_until(what: str, check: Callable[[], bool], timeout: float = 30, *, explain: Callable[[], str] = str) -> None:
    """Poll ``check`` until it is true; fail naming ``what`` (and ``explain()``) if it never is.
    A deadline for a stuck test, not a measurement: no test asserts on how long this took."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s\n{explain()}")


# -- PostgreSQL ------------------------------------------------------------------------------------


def _pg_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if found:
        return Path(found[0]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


class PrivatePostgres:
    """A PostgreSQL cluster in a temporary folder, on a free port, listening on loopback and
    on a socket in that folder. PostgreSQL refuses to run as root, so under root it runs as
    the ``postgres`` user."""

    def __init__(self) -> None:
        bindir = _pg_bin()
        if bindir is None:
            _missing("PostgreSQL's initdb")
        self.bin = bindir
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="tracker-faults-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self._user: str | None = None
        if os.geteuid() == 0:
            self._user = "postgres"
            owner = pwd.getpwnam(self._user)
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        os.chmod(self.folder, 0o700)

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            user=self._user,
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=check,
            timeout=120,
        )

    def init(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        self._ctl("start")

    def restart(self, mode: str = "fast") -> None:
        """``pg_ctl restart -m fast``: open transactions are aborted, connections cut, and
        the server comes back with everything committed."""
        self._ctl("-m", mode, "restart")

    def stop(self, mode: str = "fast") -> None:
        self._ctl("-m", mode, "stop", check=False)

    def ensure_running(self) -> None:
        """Start it again if a test that stopped it failed before starting it, so that one
        failure does not become an error in every later test."""
        if self._run("pg_ctl", "-D", str(self.data), "status", check=False).returncode != 0:
            self.start()

    def _ctl(self, *args: str, check: bool = True) -> None:
        # fsync only matters when the machine, not a process, goes down; without it tests run faster
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=80"
        ctl = ["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o", options]
        self._run(*ctl, *args, check=check)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def server_log(self) -> str:
        try:
            return self.log.read_text()[-4000:]
        except OSError:
            return ""

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of this test run's own, with a migrated template database."""
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        admin = create_engine(server.url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("CREATE DATABASE tracker_template"))
        admin.dispose()
        engine = db.make_engine(server.url("tracker_template"))
        db.upgrade(engine)
        engine.dispose()
    except BaseException:
        log = server.server_log()
        server.destroy()
        if isinstance(log, str) and log:
            print(log, file=sys.stderr)
        raise
    yield server
    server.destroy()


@pytest.fixture
def private_pg_url(private_pg) -> Iterator[str]:
    """A fresh migrated database on the private cluster (a copy of the template)."""
    private_pg.ensure_running()
    name = f"tracker_{uuid.uuid4().hex[:10]}"
    _admin(private_pg, f'CREATE DATABASE "{name}" TEMPLATE tracker_template')
    yield private_pg.url(name)
    _admin(private_pg, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _admin(server: PrivatePostgres, statement: str) -> None:
    admin = create_engine(server.url(), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


class CuttingProxy:
    """A TCP proxy in front of PostgreSQL that can cut the next connection which sends COMMIT,
    as a network fault would: ``cut("before")`` drops the COMMIT and closes both ends (the
    server rolls the transaction back); ``cut("after")`` lets the COMMIT through, waits for
    the server's answer and throws it away (the transaction committed, and the client can
    not know). Either way the client sees its connection break during COMMIT."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.mode: str | None = None
        self.cuts = 0
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, name="cutting-proxy", daemon=True).start()

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def cut(self, mode: str) -> None:
        assert mode in ("before", "after")
        self.mode = mode

    def close(self) -> None:
        self._closed = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.target_port))
            state = {"cut": False}
            threading.Thread(target=self._upstream, args=(client, server, state), daemon=True).start()
            threading.Thread(target=self._downstream, args=(server, client, state), daemon=True).start()

    def _take_cut(self, data: bytes) -> str | None:
        # a simple-protocol Query message ('Q') carrying COMMIT, as psycopg sends on commit()
        if self.mode is None or not data.startswith(b"Q") or b"COMMIT" not in data.upper():
            return None
        with self._lock:
            mode, self.mode = self.mode, None
            if mode:
                self.cuts += 1
            return mode

    def _upstream(self, client: socket.socket, server: socket.socket, state: dict) -> None:
        try:
            while data := client.recv(65536):
                mode = self._take_cut(data)
                if mode == "before":
                    break
                if mode == "after":
                    state["cut"] = True
                server.sendall(data)
        except OSError:
            pass
        if not state["cut"]:
            _close(client, server)

    def _downstream(self, server: socket.socket, client: socket.socket, state: dict) -> None:
        try:
            while data := server.recv(65536):
                if state["cut"]:  # the server's answer to COMMIT: it committed; the client never hears
                    break
                client.sendall(data)
        except OSError:
            pass
        _close(client, server)


def _close(*sockets: socket.socket) -> None:
    for sock in sockets:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


# -- Redis -----------------------------------------------------------------------------------------


class PrivateRedis:
    """``redis-server`` on a free loopback port that keeps nothing on disk, as the packaged
    one here does: stopped and started again, it comes back empty (queued jobs are gone)."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            _missing("redis-server")
        self.binary = binary
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="tracker-faults-redis-"))
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        if self.proc is not None:
            return
        log = open(self.folder / "redis.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],  # fmt: skip
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._log = log
        wait_until("the private Redis answering", self.answers, 30)

    def answers(self) -> bool:
        import redis

        try:
            return bool(redis.Redis.from_url(self.url, socket_connect_timeout=0.5).ping())
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Stop it the hard way (as a crash or an operator's ``kill`` would)."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait(timeout=30)
        self._log.close()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    yield server
    server.destroy()


# -- SMTP ------------------------------------------------------------------------------------------


class FaultyHandler(SinkHandler):
    """The aiosmtpd handler of :class:`~tests.notify_helpers.SmtpSink` with more faults:
    ``refuse_to`` answers 450 (mailbox busy, try later) for those recipients;
    ``drop_replies`` makes the next N messages be accepted and kept, with the connection
    closed before the server says so: the sender cannot know they arrived; and
    ``hold_after_data`` keeps a message to that recipient, then stalls before answering
    (``holding`` is set) until ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.refuse_to: set[str] = set()
        self.drop_replies = 0
        self.hold_after_data: str | None = None

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802 - aiosmtpd API
        if address in self.refuse_to:
            return "450 4.2.1 Mailbox busy, try again later"
        return await super().handle_RCPT(server, session, envelope, address, rcpt_options)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        answer = await super().handle_DATA(server, session, envelope)
        if self.hold_after_data in envelope.rcpt_tos and not self.release.is_set():
            self.holding.set()
            while not self.release.is_set():
                await asyncio.sleep(0.02)
        if self.drop_replies and answer.startswith("250"):
            self.drop_replies -= 1
            server.transport.abort()  # kept, but the "250" never reaches the sender
        return answer


@pytest.fixture
def mailbox() -> Iterator[SmtpSink]:
    """An aiosmtpd server of the test's own whose :class:`FaultyHandler` can refuse recipients
    or lose its replies; ``stop()`` and ``start()`` take it down and up."""
    sink = SmtpSink()
    sink.handler = FaultyHandler()
    sink.start()
    yield sink
    sink.handler.release.set()
    sink.stop()


# -- processes -------------------------------------------------------------------------------------


def fault_env(tmp_path: Path, db_url: str, **settings: str) -> dict[str, str]:
    """The environment of a ``tracker`` process (or a Python script) on the test's services;
    ``settings`` are ``TRACKER_*`` values without the prefix, e.g. ``REDIS_URL=...``."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "TRACKER_DATABASE_URL": db_url,
        "TRACKER_INSTANCE_PATH": str(tmp_path),
        "TRACKER_SECRET_KEY": "test-secret",
        "TRACKER_BASE_URL": "http://tracker.test",
        "TRACKER_MAIL_FROM": "Tracker <tracker@tracker.test>",
        "TRACKER_DEFINITIONS_PATH": os.pathsep.join([str(TEST_DEFINITIONS), str(NOTIFY_DEFINITIONS)]),
        "TRACKER_REDIS_URL": "",
        "TRACKER_SMTP_URL": "",
        "NO_COLOR": "1",
    }
    env.update({f"TRACKER_{key}": value for key, value in settings.items()})
    return env


class Subprocess:
    """A child process (a ``tracker`` command or a Python script) whose output lines a test
    can wait for, and which it can kill with SIGKILL, as the kernel's OOM killer or a
    power cut would: no ``finally``, no rollback, no goodbye."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.log = log
        self._out = open(log, "wb")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(args, env=env, stdout=self._out, stderr=subprocess.STDOUT, cwd=ROOT)

    @classmethod
    def python(cls, script: str, env: dict[str, str], log: Path, *args: str) -> Subprocess:
        """``python -c script args...``"""
        return cls([sys.executable, "-c", script, *args], env, log)

    @classmethod
    def tracker(cls, args: list[str], env: dict[str, str], log: Path) -> Subprocess:
        return cls([str(BIN / "tracker"), *args], env, log)

    def output(self) -> str:
        if not self._out.closed:
            self._out.flush()
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, marker: str, timeout: float = 60) -> None:
        """Until ``marker`` appears in the output; fails (with the output) if the process ends first."""

        def seen() -> bool:
            if marker in self.output():
                return True
            if self.proc.poll() is not None:
                pytest.fail(f"the process ended ({self.proc.returncode}) before '{marker}':\n{self.output()[-4000:]}")
            return False

        wait_until(f"'{marker}' from the process", seen, timeout, explain=lambda: self.output()[-4000:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._out.close()

    def wait(self, timeout: float = 120) -> int:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"the process did not finish within {timeout:.0f} s:\n{self.output()[-4000:]}")
        self._out.close()
        return code
