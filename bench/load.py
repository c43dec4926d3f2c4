"""API load against gunicorn, beside a bare Flask hello-world served the same way, in one run.

Both apps run under ``webui/gunicorn.conf.py`` with the same processes and threads. N
client threads (keep-alive ``http.client`` connections) drive each operation for a fixed
time: ``hello`` (the bare app), then on Tracker's API ``create`` (a Job for a learner,
assigned, so a notification is written), ``read``, ``transition`` (new -> in progress,
notifying the assignee) and ``tasklists`` (a manager's counts). It prints requests per
second, p50/p95 latency per operation, the ratio create / hello, and the resident memory
of every web process (RSS, and USS: what is not shared with the other processes).

Targets: create >= 60% of hello's requests per second; RSS < 150 MB per web process.

    python bench/load.py [--clients 8] [--seconds 8] [--processes 2] [--threads 4] [--sqlite]
                         [--pg-url URL] [--redis-url URL | --no-redis]

The clients run on the same machine as the servers and share its cores, so read the
figures as a floor; on a busy machine they are noisy (the load average is printed).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONF = ROOT / "webui" / "gunicorn.conf.py"


def hello():
    """The baseline app: Flask answering a small JSON document (``load:hello()`` for gunicorn)."""
    from flask import Flask

    app = Flask("hello")

    @app.get("/hello")
    def hello_world():
        return {"hello": "world"}

    return app


# -- measuring --------------------------------------------------------------------------------------


@dataclass
class Result:
    name: str
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies) / self.seconds if self.seconds else 0.0

    def percentile(self, p: float) -> float:
        ordered = sorted(self.latencies)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))] * 1000


class Connection:
    """A keep-alive connection that reconnects when the server closes it."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port, self.headers = port, headers
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        payload = json.dumps(body) if body is not None else None
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=payload, headers=self.headers)
                response = self.conn.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, OSError):
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def drive(name: str, clients: int, seconds: float, make_request, expected: int) -> Result:
    """Run ``make_request(client_index, connection_state)`` from ``clients`` threads for
    ``seconds``; each returns (status, ...) and counts as an error unless it is ``expected``."""
    result = Result(name)
    lock = threading.Lock()
    start_gate = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client(index: int) -> None:
        state: dict = {}
        times, errors = [], 0
        start_gate.wait()
        while True:
            began = time.perf_counter()
            if began >= stop_at[0]:
                break
            status = make_request(index, state)
            if status is None:  # nothing left to do for this client
                break
            if status == expected:
                times.append(time.perf_counter() - began)
            else:
                errors += 1
        with lock:
            result.latencies.extend(times)
            result.errors += errors

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    began = time.perf_counter()
    stop_at[0] = began + seconds
    start_gate.wait()
    for t in threads:
        t.join()
    result.seconds = time.perf_counter() - began
    return result


# -- the servers ---------------------------------------------------------------------------------------


class Server:
    """A gunicorn master with its web processes, on a port of its own."""

    def __init__(self, target: str, env: dict[str, str], port: int, log: Path, extra: list[str] = ()) -> None:
        self.port = port
        self.log = open(log, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", str(CONF), *extra, target],
            env={**env, "TRACKER_BIND": f"127.0.0.1:{port}", "TRACKER_LOG_LEVEL": "warning"},
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def wait_ready(self, path: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"gunicorn for port {self.port} stopped; see {self.log.name}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                conn.request("GET", path)
                if conn.getresponse().status < 500:
                    return
            except OSError:
                pass
            time.sleep(0.3)
        raise SystemExit(f"gunicorn on port {self.port} did not answer within {timeout:.0f} s")

    def memory(self) -> list[tuple[float, float]]:
        """(RSS, USS) in MB of each web process (the master's children)."""
        import psutil

        out = []
        for child in psutil.Process(self.proc.pid).children():
            info = child.memory_full_info()
            out.append((info.rss / 2**20, info.uss / 2**20))
        return out

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- the Tracker side -------------------------------------------------------------------------------------


def prepare(url: str) -> tuple[str, int]:
    """Schema, indexes, a bench user (creates Jobs, sees a manager's task lists) with an API
    token, an assessor to assign to, and a learner; returns (token, learner id)."""
    from engine import db, indexes
    from engine.config import Settings
    from engine.demo import uln_from
    from engine.permissions import Actor
    from engine.runtime import Runtime
    from engine.services import ItemService

    rt = Runtime(Settings(instance_path=Path(tempfile.gettempdir()), database_url=url, secret_key="bench"))
    db.upgrade(rt.engine)
    indexes.sync(rt.engine, rt.registry)
    with rt.session() as session:
        users = rt.users(session)
        users.create("bench", ["tracker_creator", "manager"], display_name="Bench")
        users.create("asha", ["assessor"], display_name="Asha Assessor")
        _, token = users.create_token("bench", "load benchmark")
        learner = ItemService(session, Actor.system(), rt.registry).create(
            "learner",
            {
                "given_name": "Amelia",
                "family_name": "Okafor",
                "date_of_birth": "2004-09-17",
                "uln": uln_from(900000001),
            },
        )
    rt.engine.dispose()
    return token, learner.id


def run(args: argparse.Namespace) -> None:
    from sqlalchemy import create_engine, text

    workdir = Path(tempfile.mkdtemp(prefix="tracker-load-"))
    pg_admin = None
    if args.sqlite:
        url = f"sqlite:///{workdir / 'tracker.db'}"
        database = "SQLite (file, WAL)"
    else:
        name = f"tracker_load_{uuid.uuid4().hex[:8]}"
        pg_admin = create_engine(args.pg_url, isolation_level="AUTOCOMMIT")
        with pg_admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
            version = conn.execute(text("SHOW server_version")).scalar_one()
        url = args.pg_url.rsplit("/", 1)[0] + f"/{name}"
        database = f"PostgreSQL {version.split()[0]}"
    redis_url, queue = "", f"tracker-load-{uuid.uuid4().hex[:8]}"
    if not args.no_redis:
        import redis

        try:
            redis.Redis.from_url(args.redis_url, socket_connect_timeout=2).ping()
            redis_url = args.redis_url
        except Exception:  # noqa: BLE001 - run without: notifications are relayed in the web process
            print(f"(Redis at {args.redis_url} is not reachable: notifications go out from the web process)")
    token, learner = prepare(url)
    env = {
        **os.environ,
        "TRACKER_DATABASE_URL": url,
        "TRACKER_INSTANCE_PATH": str(workdir),
        "TRACKER_SECRET_KEY": "bench",
        "TRACKER_REDIS_URL": redis_url,
        "TRACKER_QUEUE_NAME": queue,
        "TRACKER_WEB_WORKERS": str(args.processes),
        "TRACKER_WEB_THREADS": str(args.threads),
    }
    env.pop("TRACKER_DEFINITIONS_PATH", None)
    tracker = Server("webui.wsgi:app", env, free_port(), workdir / "tracker.log")
    baseline = Server("load:hello()", env, free_port(), workdir / "hello.log", ["--pythonpath", str(ROOT / "bench")])
    try:
        tracker.wait_ready("/health")
        baseline.wait_ready("/hello")
        results = measure(args, tracker.port, baseline.port, token, learner)
        memory = {"tracker": tracker.memory(), "hello": baseline.memory()}
    finally:
        tracker.stop()
        baseline.stop()
        if pg_admin is not None:
            with pg_admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))
            pg_admin.dispose()
        if redis_url:
            import redis

            client = redis.Redis.from_url(redis_url)
            for key in client.scan_iter(f"rq:*{queue}*"):
                client.delete(key)
    report(args, database, redis_url, results, memory)


def measure(args, tracker_port: int, hello_port: int, token: str, learner: int) -> list[Result]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    created: list[list[int]] = [[] for _ in range(args.clients)]

    def conn(state: dict, port: int) -> Connection:
        if "conn" not in state:
            state["conn"] = Connection(port, headers)
        return state["conn"]

    def say_hello(i, state):
        return conn(state, hello_port).call("GET", "/hello")[0]

    def create(i, state):
        state["n"] = state.get("n", 0) + 1
        body = {
            "type": "job",
            "subject": learner,
            "assignee": "asha",
            "data": {
                "employer_name": f"Employer {i}-{state['n']}",
                "job_title": "Apprentice",
                "start_date": "2026-09-01",
            },
        }
        status, data = conn(state, tracker_port).call("POST", "/api/v1/items", body)
        if status == 201:
            created[i].append(json.loads(data)["id"])
        return status

    def read(i, state):
        ids = created[i]
        state["n"] = state.get("n", -1) + 1
        return conn(state, tracker_port).call("GET", f"/api/v1/items/{ids[state['n'] % len(ids)]}")[0]

    def transition(i, state):
        ids = created[i]
        state["n"] = state.get("n", -1) + 1
        if state["n"] >= len(ids):
            return None
        return conn(state, tracker_port).call(
            "POST", f"/api/v1/items/{ids[state['n']]}/transitions", {"to": "in_progress"}
        )[0]

    def tasklists(i, state):
        return conn(state, tracker_port).call("GET", "/api/v1/tasklists")[0]

    # warm both servers up (every process: first requests load templates and plans)
    drive("warm-up", args.clients, 2, say_hello, 200)
    drive("warm-up", args.clients, 2, tasklists, 200)
    results = [drive("hello (Flask)", args.clients, args.seconds, say_hello, 200)]
    results.append(drive("create", args.clients, args.seconds, create, 201))
    results.append(drive("read", args.clients, args.seconds, read, 200))
    results.append(drive("transition", args.clients, args.seconds, transition, 200))
    results.append(drive("tasklists", args.clients, args.seconds, tasklists, 200))
    return results


def report(args, database: str, redis_url: str, results: list[Result], memory: dict) -> None:
    load = os.getloadavg()
    print(
        f"API load: {args.clients} clients, gunicorn {args.processes} processes x {args.threads} threads (gthread), "
        f"{database}, {'Redis queue' if redis_url else 'no Redis'}, {args.seconds:g} s per operation, "
        f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    print(f"{'operation':<15} {'requests':>9} {'req/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'errors':>7}")
    for r in results:
        print(
            f"{r.name:<15} {len(r.latencies):>9} {r.rate:>9.1f} {r.percentile(50):>8.1f} "
            f"{r.percentile(95):>8.1f} {r.errors:>7}"
        )
    by_name = {r.name: r for r in results}
    ratio = by_name["create"].rate / by_name["hello (Flask)"].rate if by_name["hello (Flask)"].rate else 0.0
    verdict = "meets" if ratio >= 0.6 else "misses"
    print(f"create / hello: {ratio:.2f} ({verdict} the target of 0.60)")
    for name, processes in memory.items():
        worst = max((rss for rss, _ in processes), default=0.0)
        figures = ", ".join(f"{rss:.0f} MB (USS {uss:.0f} MB)" for rss, uss in processes)
        verdict = "under" if worst < 150 else "OVER"
        print(f"{name} web processes RSS: {figures}; largest {worst:.0f} MB, {verdict} the 150 MB target")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=8, help="concurrent client threads (default 8)")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds per operation (default 8)")
    parser.add_argument("--processes", type=int, default=2, help="gunicorn web processes (default 2)")
    parser.add_argument("--threads", type=int, default=4, help="threads per web process (default 4)")
    parser.add_argument("--sqlite", action="store_true", help="use an SQLite file instead of PostgreSQL")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("TRACKER_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"),
        help="a PostgreSQL URL allowed to create and drop a database for the run",
    )
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/13", help="Redis for the notification queue")
    parser.add_argument("--no-redis", action="store_true", help="no Redis: notifications go out from the web process")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
