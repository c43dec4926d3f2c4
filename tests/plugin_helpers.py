"""Helpers for the plugin tests: a plugin host around test plugins, a Runtime and a web app on
the test database using it, a definitions folder a test plugin adds, and a throwaway
"site-packages" folder where fake distributions register entry points.

Import the fixtures into a test module with ``from tests.plugin_helpers import *``.
"""

from __future__ import annotations

import importlib
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.config import Settings
from engine.plugins import PluginHost, discover
from engine.runtime import Runtime
from tests.conftest import TEST_DEFINITIONS
from tests.webhelpers import cheap_hashing, make_app  # noqa: F401 - cheap_hashing is a fixture for importers

GADGET_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "title": "Name"},
        "count": {"type": "integer", "title": "Count", "x-validator": "even"},
        "parts": {
            "type": "array",
            "title": "Parts",
            "items": {
                "type": "object",
                "properties": {"size": {"type": "integer", "title": "Size", "x-validator": "even"}},
            },
        },
        "serial": {"type": "string", "title": "Serial", "x-validator": "crashes"},
        "colour": {"type": "string", "title": "Colour", "x-widget": "swatch"},
        "shade": {"type": "string", "title": "Shade", "x-widget": "broken"},
        "postcode": {
            "type": "string",
            "title": "Postcode",
            "x-lookup": {"name": "town", "inputs": {"q": "postcode"}, "label": "Find the town"},
        },
        "town": {"type": "string", "title": "Town"},
    },
}

GADGET_TYPE = """key: gadget
name: Gadget
version: 1
workflow: record
subject: none
title: "Gadget {{ data.name }}"
list_columns: [name, count]
"""


def write_type(root: Path, key: str, type_yaml: str, schema: dict) -> Path:
    """A definitions folder at ``root`` holding one tracker type."""
    folder = root / "tracker_types" / key
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "type.yaml").write_text(type_yaml)
    (folder / "schema.json").write_text(json.dumps(schema, indent=2))
    return root


@pytest.fixture
def gadget_folder(tmp_path) -> Path:
    return write_type(tmp_path / "gadget_defs", "gadget", GADGET_TYPE, GADGET_SCHEMA)


def host_of(*plugins: tuple[str, Any], entry_points: bool = False, **settings: Any) -> PluginHost:
    """A plugin host with these ``(name, plugin)`` pairs (and the installed plugins when
    ``entry_points``)."""
    return PluginHost(Settings(secret_key="test", **settings), plugins=list(plugins), entry_points=entry_points)


@pytest.fixture
def runtime_with(tmp_path, db_url) -> Iterator[Callable[..., Runtime]]:
    """``runtime_with(host)``: a Runtime on the test database using ``host``; its connections
    are closed at the end of the test."""
    made: list[Runtime] = []

    def make(host: PluginHost, **overrides: Any) -> Runtime:
        values = {
            "instance_path": tmp_path,
            "database_url": db_url,
            "definitions_path": [TEST_DEFINITIONS],
            "secret_key": "test-secret",
            "base_url": "http://tracker.test",
        }
        settings = Settings(**{**values, **overrides})
        host.settings = settings
        made.append(Runtime(settings, plugins=host))
        return made[-1]

    yield make
    for rt in made:
        rt.plugins.errors.flush(10)
        if "engine" in rt.__dict__:
            rt.engine.dispose()


@pytest.fixture
def app_with(tmp_path, db_url):
    """``app_with(host, settings={...})``: a web app on the test database using ``host``."""
    made = []

    def make(host: PluginHost, **config: Any):
        app = make_app(tmp_path, db_url, TRACKER_PLUGINS=host, **config)
        host.settings = app.extensions["tracker"].settings
        made.append(app)
        return app

    yield make
    for app in made:
        rt = app.extensions["tracker"]
        rt.plugins.errors.flush(10)
        if "engine" in rt.__dict__:
            rt.engine.dispose()


@pytest.fixture
def site(tmp_path) -> Iterator[Path]:
    """A folder on ``sys.path`` for fake distributions (``add_dist``); removed afterwards, and
    the plugin discovery cache refreshed, so no other test sees them."""
    folder = tmp_path / "site"
    folder.mkdir()
    sys.path.insert(0, str(folder))
    importlib.invalidate_caches()
    before = set(sys.modules)
    yield folder
    sys.path.remove(str(folder))
    for name in set(sys.modules) - before:
        module = sys.modules.get(name)
        if module is not None and str(getattr(module, "__file__", "") or "").startswith(str(folder)):
            del sys.modules[name]
    importlib.invalidate_caches()
    discover(refresh=True)


def add_dist(site: Path, dist: str, version: str, entry_points: dict[str, str], modules: dict[str, str]) -> None:
    """Install a fake distribution into ``site``: its metadata, its ``tracker.plugins`` entry
    points and its modules (name -> source)."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {target}\n" for name, target in entry_points.items())
    (info / "entry_points.txt").write_text(f"[tracker.plugins]\n{lines}")
    for name, source in modules.items():
        (site / f"{name}.py").write_text(source)
    importlib.invalidate_caches()
    discover(refresh=True)
