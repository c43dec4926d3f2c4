"""How to test a plugin: give it a plugin host of its own and call what the hooks return.

Run with Tracker installed: ``pytest examples/plugin-example/tests``. Tracker's own suite
(``tests/test_plugins_example.py``) installs the package and checks it end to end.
"""

from __future__ import annotations

import pytest
import tracker_example_plugin as plugin

from engine.config import Settings
from engine.plugins import Invalid, PluginHost


def host(**env: str) -> PluginHost:
    """A host with only this plugin, configured by ``TRACKER_PLUGIN_EXAMPLE_*`` values."""
    settings = Settings(
        secret_key="test", plugin_env={f"TRACKER_PLUGIN_EXAMPLE_{k.upper()}": v for k, v in env.items()}
    )
    return PluginHost(settings, plugins=[("example", plugin)], entry_points=False)


def test_the_ukprn_check_accepts_8_digits_starting_with_1():
    check = host().field_validators()["ukprn"]
    check("10012345", {})
    for wrong in ("2001234", "20012345", "1001234X", "100123456"):
        with pytest.raises(Invalid) as excinfo:
            check(wrong, {})
        assert "is not a UKPRN" in excinfo.value.message and "8 digits" in excinfo.value.advice


def test_the_chat_channel_is_used_only_once_its_url_is_set():
    [unset] = host().channels()
    [configured] = host(chat_url="http://127.0.0.1:9/hook").channels()
    assert (unset.key, unset.ready(None)) == ("chat", False)
    assert configured.ready(None) is True


def test_the_plugin_adds_its_definitions_and_its_page():
    h = host()
    [folder] = h.definition_folders()
    assert (folder / "tracker_types" / "subcontractor" / "schema.json").is_file()
    assert [bp.name for _plugin, bp in h.blueprints()] == ["example"]
    assert not h.errors.recent
