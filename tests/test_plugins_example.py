"""examples/plugin-example, installed as a user would (pip, from its own pyproject.toml), is
found through its entry point and adds a field check, a notification channel and a page.

The package is built from a copy (so the example folder gets no build leftovers) and
installed into a temporary folder put on ``sys.path`` for this module; afterwards it is
removed from the path, the modules are forgotten and plugin discovery looks again.
"""

from __future__ import annotations

import importlib
import json
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.errors import ValidationFailed
from engine.models import Delivery
from engine.permissions import Actor
from engine.plugins import PluginHost, discover
from tests.conftest import LEARNER, ROOT, TRACKER
from tests.plugin_helpers import *  # noqa: F403 - fixtures
from tests.webhelpers import create_users, sign_in

EXAMPLE = ROOT / "examples" / "plugin-example"


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Iterator[Path]:
    """The example package pip-installed into a folder on ``sys.path``."""
    source = tmp_path_factory.mktemp("example-src") / "plugin-example"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    target = tmp_path_factory.mktemp("example-site")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index"]
        + ["--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    sys.path.insert(0, str(target))
    importlib.invalidate_caches()
    discover(refresh=True)
    yield target
    sys.path.remove(str(target))
    for name in [m for m in sys.modules if m == "tracker_example_plugin" or m.startswith("tracker_example_plugin.")]:
        del sys.modules[name]
    importlib.invalidate_caches()
    discover(refresh=True)


def test_the_installed_package_is_found_through_its_entry_point(installed):
    found = {d.name: d for d in discover()}
    example = found["example"]
    assert (example.dist, example.version, example.value) == (
        "tracker-plugin-example",
        "1.2.0",
        "tracker_example_plugin",
    )
    assert Path(example.module.__file__).is_relative_to(installed)
    info = {i.name: i for i in PluginHost(Settings(secret_key="x")).info()}["example"]
    assert info.status == "loaded"
    assert {
        "tracker_field_validators",
        "tracker_notification_channels",
        "tracker_blueprints",
        "tracker_definition_folders",
        "tracker_menu_links",
    } == set(info.hooks)


def test_tracker_plugins_list_shows_the_example(installed, run):
    run.env["PYTHONPATH"] = str(installed)
    out = run("plugins", "list").stdout
    line = next(x for x in out.splitlines() if x.startswith("example "))
    assert "1.2.0" in line and "tracker-plugin-example" in line and "loaded" in line
    assert "field_validators" in line and "notification_channels" in line and "blueprints" in line
    checked = run("check").stdout
    assert "0 problems" in checked
    run.env["TRACKER_PLUGINS_DISABLED"] = "example"
    assert "disabled" in next(x for x in run("plugins", "list").stdout.splitlines() if x.startswith("example "))


def test_the_example_s_own_tests_pass(installed, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(EXAMPLE / "tests")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={"PYTHONPATH": str(installed), "PATH": str(Path(TRACKER).parent)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 passed" in result.stdout


def test_the_field_check_refuses_a_bad_ukprn_on_the_example_s_type(installed, runtime_with):
    rt = runtime_with(PluginHost(Settings(secret_key="x")))
    assert "subcontractor" in rt.registry.types and not rt.registry.problems
    with rt.session() as session:
        items = rt.items(session, Actor.system())
        with pytest.raises(ValidationFailed) as refused:
            items.create("subcontractor", {"name": "Northern Skills", "ukprn": "2001234"})
        [problem] = refused.value.problems
        assert problem.path == "/ukprn" and problem.message == "'2001234' is not a UKPRN"
        assert "8 digits and starts with 1" in problem.advice
        item = items.create("subcontractor", {"name": "Northern Skills", "ukprn": "10012345"})
    assert item.title == "Northern Skills"


class ChatHook:
    """A team chat's incoming webhook on loopback: records each JSON post."""

    def __init__(self) -> None:
        self.posts: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's protocol
                hook.posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/hooks/abc"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def chat() -> Iterator[ChatHook]:
    hook = ChatHook()
    yield hook
    hook.stop()


def test_the_chat_channel_tells_the_assignee(installed, runtime_with, chat):
    rt = runtime_with(PluginHost(Settings(secret_key="x")), plugin_env={"TRACKER_PLUGIN_EXAMPLE_CHAT_URL": chat.url})
    assert "chat" in [c.key for c in rt.channels()]
    with rt.session() as session:
        rt.users(session).create("ann", ["assessor"])
        items = rt.items(session, Actor.system())
        learner = items.create("learner", dict(LEARNER))
        items.assign(learner.id, "ann")
        [delivery] = session.scalars(select(Delivery).where(Delivery.channel == "chat")).all()
    assert delivery.status == "sent"
    [post] = chat.posts
    assert post["text"].startswith("@ann: ") and "assigned" in post["text"]
    assert f"http://tracker.test/items/{learner.id}" in post["text"]


def test_the_example_page_and_its_header_link(installed, app_with):
    app = app_with(PluginHost(Settings(secret_key="x")))
    create_users(app, ann=["assessor"])
    client = app.test_client()
    assert client.get("/example/ukprn").status_code == 302  # sign in first
    sign_in(client, "ann")
    home = client.get("/").get_data(as_text=True)
    assert '<a href="/example/ukprn">Check a UKPRN</a>' in home
    bad = client.get("/example/ukprn?ukprn=123").get_data(as_text=True)
    assert "&#39;123&#39; is not a UKPRN" in bad and 'aria-invalid="true"' in bad
    good = client.get("/example/ukprn?ukprn=10012345").get_data(as_text=True)
    assert "10012345 is a valid UKPRN." in good
