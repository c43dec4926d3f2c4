"""gunicorn settings for Tracker in production: ``gunicorn -c webui/gunicorn.conf.py webui.wsgi:app``.

Every value can be changed without editing this file, through the environment (see
docs/deploy.md): ``TRACKER_BIND``, ``TRACKER_WEB_WORKERS``, ``TRACKER_WEB_THREADS``,
``TRACKER_WEB_TIMEOUT``, ``TRACKER_FORWARDED_ALLOW_IPS``, ``TRACKER_LOG_LEVEL``. Options
given on gunicorn's command line win over this file.
"""

from __future__ import annotations

import multiprocessing
import os


def _int(name: str, default: int) -> int:
    text = os.environ.get(name, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise SystemExit(f"Error: {name} must be a whole number of 1 or more, not '{text}'.")
    return int(text)


#: where to listen; the reverse proxy (TLS) forwards here. A unix socket works too: unix:/run/tracker.sock
bind = os.environ.get("TRACKER_BIND", "127.0.0.1:8000")
#: web processes: two per core, at most eight by default (each holds its own database connections)
workers = _int("TRACKER_WEB_WORKERS", min(2 * multiprocessing.cpu_count(), 8))
#: threads per process: requests spend most of their time waiting on the database
worker_class = "gthread"
threads = _int("TRACKER_WEB_THREADS", 4)
#: the app and its definitions load once in the master and are shared by the forked processes
preload_app = True
timeout = _int("TRACKER_WEB_TIMEOUT", 60)
graceful_timeout = 30
keepalive = 5
#: a process is replaced after this many requests (plus jitter), so a slow leak never grows
max_requests = 2000
max_requests_jitter = 200
#: only the reverse proxy may say a request came over https (X-Forwarded-Proto)
forwarded_allow_ips = os.environ.get("TRACKER_FORWARDED_ALLOW_IPS", "127.0.0.1")
secure_scheme_headers = {"X-FORWARDED-PROTO": "https"}
accesslog = "-"
errorlog = "-"
loglevel = os.environ.get("TRACKER_LOG_LEVEL", "info")
proc_name = "tracker-web"
if os.path.isdir("/dev/shm"):
    worker_tmp_dir = "/dev/shm"  # heartbeat files off the disk
#: gunicorn's control socket is one path per user by default, so LIVE and TRAINING on one host
#: would clash: off unless TRACKER_CONTROL_SOCKET names a path for this instance
control_socket = os.environ.get("TRACKER_CONTROL_SOCKET", "")
control_socket_disable = not control_socket


def post_fork(server, worker) -> None:
    """A forked process must not use the master's database connections: drop them (without
    closing them, which would close the master's too) so it opens its own."""
    import sys

    wsgi = sys.modules.get("webui.wsgi")
    if wsgi is None:  # not preloaded: the process builds its own app and connections
        return
    runtime = wsgi.app.extensions["tracker"]
    if "engine" in runtime.__dict__:
        runtime.engine.dispose(close=False)
