"""Production shape on one machine: two gunicorn web servers (webui/gunicorn.conf.py,
webui.wsgi:app) and two RQ workers (one forking, one not) on one PostgreSQL database and
Redis, under a mixed API load from several threads: creates with an assignee (notified),
reads, updates, transitions (notifying), task-list counts, and concurrent updates of one
shared item. Afterwards nothing is lost or duplicated: every created item exists once with
exactly its events, every outbox row is done, every recipient has exactly one inbox entry
and one e-mail per notification."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select, text

from engine import db, indexes
from engine.models import Delivery, Event, Item, Notification, Outbox, User
from engine.runtime import Runtime
from tests.conftest import PG_ADMIN_URL, ROOT
from tests.notify_helpers import *  # noqa: F403 - fixtures (smtp)
from tests.notify_helpers import free_port, make_settings

pytestmark = [pytest.mark.postgres, pytest.mark.redis]

BIN = Path(sys.executable).parent
THREADS = 4
ROUNDS = 5


@pytest.fixture
def pg_url() -> str:
    """A database of its own: the servers and workers are other processes."""
    name = f"tracker_mp_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # noqa: BLE001
        from tests.conftest import service_missing

        admin.dispose()
        service_missing("PostgreSQL", exc)
    yield PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


class Processes:
    """Starts processes with their output in files, and stops every one of them."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder, self.env, self.running = folder, env, []

    def start(self, name: str, args: list[str], **env: str) -> subprocess.Popen:
        log = open(self.folder / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        proc = subprocess.Popen(
            args, env={**self.env, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        self.running.append((name, proc, log))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {n}\n{(self.folder / f'{n}.log').read_text()[-3000:]}" for n, _, _ in self.running)

    def stop(self) -> None:
        for _, proc, _ in self.running:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _, proc, log in self.running:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            log.close()


class Client:
    """One keep-alive connection per server; requests go to the servers in turn."""

    def __init__(self, ports: list[int], token: str) -> None:
        self.connections = [http.client.HTTPConnection("127.0.0.1", p, timeout=60) for p in ports]
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        self.turn = 0

    def __call__(self, method: str, path: str, body: dict | None = None) -> tuple[int, dict]:
        self.turn += 1
        conn = self.connections[self.turn % len(self.connections)]
        payload = json.dumps(body) if body is not None else None
        try:
            conn.request(method, "/api/v1" + path, body=payload, headers=self.headers)
            response = conn.getresponse()
        except (http.client.HTTPException, OSError):
            conn.close()  # the server closed a kept-alive connection: once more on a new one
            conn.request(method, "/api/v1" + path, body=payload, headers=self.headers)
            response = conn.getresponse()
        data = response.read()
        return response.status, json.loads(data) if data else {}


def _wait_until(what: str, check, timeout: float, procs: Processes) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.25)
    pytest.fail(f"{what} did not happen within {timeout:.0f} s\n{procs.logs()}")


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/health")
        return conn.getresponse().status == 200
    except OSError:
        return False


def test_two_web_processes_and_two_workers_lose_and_duplicate_nothing(tmp_path, pg_url, redis_url, smtp):
    queue = f"tracker-test-{uuid.uuid4().hex[:8]}"  # other runs on this Redis never take our jobs
    settings = make_settings(tmp_path, pg_url, redis_url=redis_url, smtp_url=smtp.url, queue_name=queue)
    rt = Runtime(settings)
    db.upgrade(rt.engine)
    indexes.sync(rt.engine, rt.registry)
    with rt.session() as session:
        users = rt.users(session)
        for name in ("alice", "bob", "carol"):
            users.create(name, ["chair", "dsl"], display_name=name.title(), email=f"{name}@tracker.test")
        _, token = users.create_token("alice", "load test")
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": pg_url,
        "TRACKER_REDIS_URL": redis_url,
        "TRACKER_QUEUE_NAME": queue,
        "TRACKER_INSTANCE_PATH": str(tmp_path),
        "TRACKER_DEFINITIONS_PATH": os.pathsep.join(str(p) for p in settings.definitions_path),
        "TRACKER_SECRET_KEY": "test-secret",
        "TRACKER_SMTP_URL": smtp.url,
        "TRACKER_MAIL_FROM": settings.mail_from,
        "TRACKER_BASE_URL": settings.base_url,
        "TRACKER_WEB_WORKERS": "1",
        "TRACKER_WEB_THREADS": "4",
        "TRACKER_LOG_LEVEL": "warning",
    }
    procs = Processes(tmp_path, env)
    ports = [free_port(), free_port()]
    try:
        for n, port in enumerate(ports):
            procs.start(
                f"web{n}",
                [str(BIN / "gunicorn"), "-c", str(ROOT / "webui" / "gunicorn.conf.py"), "webui.wsgi:app"],
                TRACKER_BIND=f"127.0.0.1:{port}",
            )
        procs.start("worker-fork", [str(BIN / "tracker"), "worker", "--name", f"{queue}-fork"])
        procs.start("worker-nofork", [str(BIN / "tracker"), "worker", "--no-fork", "--name", f"{queue}-nofork"])
        for port in ports:
            _wait_until(f"web server on {port} answering /health", lambda p=port: _healthy(p), 90, procs)

        shared_status, shared = Client(ports, token)("POST", "/items", {"type": "meeting", "data": {"topic": "Shared"}})
        assert shared_status == 201, shared
        created: list[int] = []
        shared_updates = Counter()
        failures: list[str] = []
        lock = threading.Lock()

        def load(thread: int) -> None:
            call = Client(ports, token)
            try:
                for n in range(ROUNDS):
                    assignee = ("bob", "carol")[(thread + n) % 2]
                    status, item = call(
                        "POST",
                        "/items",
                        {"type": "meeting", "data": {"topic": f"T{thread}-{n}"}, "assignee": assignee},
                    )
                    assert status == 201, item
                    with lock:
                        created.append(item["id"])
                    status, item = call("GET", f"/items/{item['id']}")
                    assert status == 200 and item["assignee"] == assignee, item
                    status, item = call(
                        "PATCH",
                        f"/items/{item['id']}",
                        {"data": {"meeting_date": f"2031-01-{n + 10}"}, "version": item["version"]},
                    )
                    assert status == 200, item
                    status, item = call("POST", f"/items/{item['id']}/transitions", {"to": "held"})
                    assert status == 200 and item["status"] == "held", item
                    status, lists = call("GET", "/tasklists")
                    assert status == 200, lists
                    # everyone edits the shared item from what they last read: some lose the race (409)
                    status, current = call("GET", f"/items/{shared['id']}")
                    status, answer = call(
                        "PATCH",
                        f"/items/{shared['id']}",
                        {"data": {"topic": f"Shared by {thread}-{n}"}, "version": current["version"]},
                    )
                    assert status in (200, 409), answer
                    with lock:
                        shared_updates[status] += 1
            except Exception as exc:  # noqa: BLE001 - reported by the main thread
                failures.append(f"thread {thread}: {exc!r}")

        threads = [threading.Thread(target=load, args=(t,)) for t in range(THREADS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=240)
        assert not failures, "\n".join(failures) + "\n" + procs.logs()
        assert len(created) == THREADS * ROUNDS and shared_updates[200] >= 1

        def outbox_settled() -> bool:
            with rt.session() as session:
                return not session.scalar(select(func.count()).select_from(Outbox).where(Outbox.status != "done"))

        _wait_until("every outbox row delivered", outbox_settled, 120, procs)

        with rt.session() as session:
            # items: each create exactly once, with exactly its events
            found = list(session.scalars(select(Item.id).where(Item.title.like("T%-%"))))
            assert sorted(found) == sorted(created) and len(set(created)) == len(created)
            kinds: dict[int, Counter] = {i: Counter() for i in created + [shared["id"]]}
            for item_id, kind in session.execute(select(Event.item_id, Event.kind)):
                kinds[item_id][kind] += 1
            for item_id in created:
                assert kinds[item_id] == Counter(created=1, assigned=1, updated=1, transitioned=1), (item_id, kinds)
            assert kinds[shared["id"]] == Counter(created=1, updated=shared_updates[200])
            # outbox: all done, none dead, none tried more than needed
            statuses = Counter(session.scalars(select(Outbox.status)))
            assert set(statuses) == {"done"}, statuses
            # notifications: one inbox entry per recipient per notify row, and one e-mail
            rows = list(session.scalars(select(Outbox).where(Outbox.kind == "notify")))
            assert len(rows) >= 2 * len(created)  # the assignment and the transition's notice, at least
            active = set(session.scalars(select(User.id).where(User.active)))
            expected = {(r.id, uid) for r in rows for uid in r.payload["recipients"] if uid in active}
            inbox = Counter(tuple(r) for r in session.execute(select(Notification.outbox_id, Notification.user_id)))
            assert set(inbox) == expected and set(inbox.values()) == {1}
            sent = list(
                session.execute(select(Delivery.outbox_id, Delivery.user_id, Delivery.channel, Delivery.status))
            )
            assert Counter((o, u, c) for o, u, c, _ in sent) == Counter(
                {(o, u, c): 1 for o, u in expected for c in ("inbox", "email")}
            )
            assert {s for *_, s in sent} == {"sent"}
            message_ids = set(session.scalars(select(Delivery.message_id).where(Delivery.channel == "email")))
        _wait_until("every e-mail received", lambda: len(smtp.messages) >= len(message_ids), 30, procs)
        time.sleep(0.5)  # a duplicate would arrive now
        received = Counter(m["Message-ID"] for m in smtp.messages)
        assert set(received) == message_ids and set(received.values()) == {1}
    finally:
        procs.stop()
        rt.engine.dispose()
        import redis

        client = redis.Redis.from_url(redis_url)
        for key in client.scan_iter(f"rq:*{queue}*"):
            client.delete(key)
