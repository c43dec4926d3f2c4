"""The WSGI entry point for production: ``gunicorn -c webui/gunicorn.conf.py webui.wsgi:app``.

Settings come from the ``TRACKER_*`` environment, as for every other door. The definitions
(and plugins) are loaded here, once: with ``preload_app`` (see ``gunicorn.conf.py``) the
master loads them before forking and every web process shares them. A setting that must
stop the server (e.g. TRAINING pointed at LIVE's database) ends it here with the message.
"""

from __future__ import annotations

import sys

from engine.errors import TrackerError
from webui import create_app

try:
    app = create_app()
    _ = app.extensions["tracker"].file_registry  # parse and check the definitions once, before forking
except TrackerError as exc:
    print(f"Error: {exc.message}", file=sys.stderr)
    if exc.advice:
        print(f"  -> {exc.advice}", file=sys.stderr)
    raise SystemExit(1) from None
