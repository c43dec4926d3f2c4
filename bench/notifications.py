"""Notifications delivered per second, from the outbox to a local SMTP sink (aiosmtpd).

Each notification is one outbox row for one recipient; delivering it means claiming the
row, writing the inbox entry and the delivery records (each committed), rendering the
e-mail from its templates and handing it to the SMTP server. Measured with 1 and 2
relay processes (what ``tracker scheduler`` and the in-process relay run, claiming rows
with ``FOR UPDATE SKIP LOCKED`` on PostgreSQL) and, with Redis, 1 and 2 RQ workers
(``tracker worker``: one job per change; "forking" runs each job in a forked work horse,
rq's default, "simple" runs them in the worker process, ``tracker worker --no-fork``). The baseline is raw
``smtplib`` sends of the same number of messages over one connection, in the same run.

    python bench/notifications.py [--count N] [--pg-url URL] [--redis-url URL]
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import smtplib
import socket
import sys
import tempfile
import time
import uuid
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller
from sqlalchemy import create_engine, func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import db  # noqa: E402 - after the path is set
from engine.config import Settings  # noqa: E402
from engine.models import Outbox, RoleGrant, User  # noqa: E402

RECIPIENTS = 20


class Counter:
    """An SMTP sink that only counts what it accepts."""

    def __init__(self) -> None:
        self.count = 0

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd API
        self.count += 1
        return "250 OK"


def settings_for(url: str, smtp_port: int, redis_url: str = "", instance: str = "") -> Settings:
    return Settings(
        instance_path=Path(instance or tempfile.gettempdir()),
        database_url=url,
        secret_key="bench",
        smtp_url=f"smtp://127.0.0.1:{smtp_port}",
        redis_url=redis_url,
        base_url="http://tracker.test",
        mail_from="Tracker <tracker@tracker.test>",
    )


def prepare(url: str) -> list[int]:
    """Migrate and create the recipients; returns their ids."""
    engine = db.make_engine(url)
    db.upgrade(engine)
    with db.session_factory(engine)() as session:
        ids = []
        for n in range(RECIPIENTS):
            user = User(username=f"bench{n}", display_name=f"Bench {n}", email=f"bench{n}@tracker.test")
            user.grants.append(RoleGrant(role="manager"))
            session.add(user)
            session.flush()
            ids.append(user.id)
        session.commit()
    engine.dispose()
    return ids


def fill_outbox(url: str, users: list[int], count: int) -> list[int]:
    """``count`` pending notify rows, one recipient each, as a change would write them."""
    engine = db.make_engine(url)
    rows = [
        {
            "kind": "notify",
            "item_id": None,
            "idempotency_key": f"bench:{uuid.uuid4().hex}",
            "status": "pending",
            "attempts": 0,
            "payload": {
                "reason": "assigned",
                "recipients": [users[n % len(users)]],
                "text": f"bench assigned Apprenticeship {n} to you",
                "link": f"/items/{n + 1}",
                "item_id": None,
            },
        }
        for n in range(count)
    ]
    with engine.begin() as conn:
        conn.execute(insert(Outbox), rows)
        ids = list(conn.scalars(select(Outbox.id).where(Outbox.status == "pending")))
    engine.dispose()
    return ids


def relay_process(url: str, smtp_port: int, instance: str, start, done) -> None:
    from engine.runtime import Runtime

    runtime = Runtime(settings_for(url, smtp_port, instance=instance))
    relay = runtime.relay()
    _ = runtime.registry  # load definitions before the clock starts
    start.wait()
    done.put(relay.run_until_empty(limit=20).done)
    runtime.engine.dispose()


def rq_process(url: str, smtp_port: int, redis_url: str, instance: str, fork: bool, start, done) -> None:
    from engine import jobs
    from engine.runtime import Runtime

    runtime = Runtime(settings_for(url, smtp_port, redis_url, instance))
    _ = runtime.registry  # load definitions before the clock starts
    start.wait()
    logging.getLogger("rq").setLevel(logging.WARNING)
    jobs.run_worker(runtime, burst=True, name=f"bench-{uuid.uuid4().hex[:6]}", fork=fork)
    done.put(0)


def timed(target, args: tuple, workers: int) -> float:
    """Start ``workers`` processes, release them together, return the seconds until all end."""
    ctx = multiprocessing.get_context("spawn")
    start, done = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args, start, done)) for _ in range(workers)]
    for p in procs:
        p.start()
    time.sleep(2.0)  # let them import and connect; the clock measures delivery only
    began = time.perf_counter()
    start.set()
    for _ in procs:
        done.get(timeout=600)
    elapsed = time.perf_counter() - began
    for p in procs:
        p.join()
    return elapsed


def delivered(url: str) -> int:
    engine = db.make_engine(url)
    with engine.connect() as conn:
        count = conn.scalar(select(func.count()).select_from(Outbox).where(Outbox.status == "done"))
    engine.dispose()
    return count


def raw_smtp_rate(port: int, count: int) -> float:
    """The same number of messages through smtplib directly, one connection."""
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port) as smtp:
        for n in range(count):
            message = EmailMessage()
            message["From"] = "tracker@tracker.test"
            message["To"] = f"bench{n % RECIPIENTS}@tracker.test"
            message["Subject"] = f"bench assigned Apprenticeship {n} to you"
            message.set_content(f"Open the item: http://tracker.test/items/{n + 1}\n")
            message.add_alternative(f'<p><a href="http://tracker.test/items/{n + 1}">Open</a></p>', subtype="html")
            smtp.send_message(message)
    return count / (time.perf_counter() - start)


def measure(label: str, url: str, port: int, sink: Counter, args, instance: str) -> list[tuple[str, str, int, float]]:
    users = prepare(url)
    results = []
    modes = [("relay", relay_process, (url, port, instance))]
    if args.redis_url:
        modes.append(("RQ forking", rq_process, (url, port, args.redis_url, instance, True)))
        modes.append(("RQ simple", rq_process, (url, port, args.redis_url, instance, False)))
    for mode, target, extra in modes:
        for workers in (1, 2):
            before_mail, before_done = sink.count, delivered(url)
            ids = fill_outbox(url, users, args.count)
            if mode.startswith("RQ"):
                from engine import jobs

                jobs.queue(args.redis_url).connection.flushdb()
                jobs.enqueue(args.redis_url, ids, per_job=1)  # one change, one job
            seconds = timed(target, extra, workers)
            sent = sink.count - before_mail
            done = delivered(url) - before_done
            if sent != args.count or done != args.count:
                print(f"  warning: {label} {mode} x{workers}: {sent} e-mails, {done} rows done of {args.count}")
            results.append((label, mode, workers, done / seconds))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--pg-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="empty to skip the RQ figures")
    args = parser.parse_args()
    if args.redis_url:
        import redis

        try:
            redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
        except Exception as exc:  # noqa: BLE001
            print(f"Redis not measured: {exc}")
            args.redis_url = ""

    sink = Counter()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(sink, hostname="127.0.0.1", port=port)
    controller.start()
    results = []
    baseline = raw_smtp_rate(port, args.count)
    with tempfile.TemporaryDirectory() as tmp:
        results += measure("SQLite (file, WAL)", f"sqlite:///{tmp}/bench.db", port, sink, args, tmp)
        name = f"tracker_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
            results += measure("PostgreSQL", url, port, sink, args, tmp)
        except Exception as exc:  # noqa: BLE001 - report and carry on with what could be measured
            print(f"PostgreSQL not measured: {exc}")
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()
    controller.stop()

    print(f"Delivered {args.count} notifications (inbox entry + e-mail each) per run to a local SMTP sink.")
    print(f"Baseline, raw smtplib over one connection: {baseline:.0f} messages/s.")
    print(f"{'database':<20} {'workers':<16} {'notifications/s':>16} {'vs raw SMTP':>12}")
    for label, mode, workers, rate in results:
        print(f"{label:<20} {f'{workers} x {mode}':<16} {rate:>16.0f} {rate / baseline:>12.2f}")


if __name__ == "__main__":
    main()
