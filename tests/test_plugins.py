"""The plugin mechanism: hook specs, discovery through entry points, settings, switching
plugins off, and a failing plugin being recorded and skipped (never taking a request, a
worker or the command line down)."""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
from importlib import metadata

import click
import pytest

from engine import hookspecs
from engine.config import Settings
from engine.errors import TrackerError
from engine.hookspecs import hookimpl
from engine.notifications import Channel
from engine.plugins import LookupResult, PluginHost, discover, stored_errors
from tests.conftest import ROOT, TRACKER
from tests.plugin_helpers import *  # noqa: F403 - fixtures
from tests.plugin_helpers import add_dist, host_of
from tests.webhelpers import create_users, sign_in

# -- hook specs --------------------------------------------------------------------------------------


def test_every_hook_spec_says_when_it_is_called_and_what_it_returns():
    specs = {name: fn for name, fn in vars(hookspecs).items() if name.startswith("tracker_") and callable(fn)}
    assert {
        "tracker_definition_folders",
        "tracker_field_widgets",
        "tracker_field_validators",
        "tracker_lookups",
        "tracker_notification_channels",
        "tracker_item_created",
        "tracker_item_updated",
        "tracker_item_transitioned",
        "tracker_item_assigned",
        "tracker_item_event",
        "tracker_export_formats",
        "tracker_import_formats",
        "tracker_blueprints",
        "tracker_menu_links",
        "tracker_cli_commands",
    } <= set(specs)
    for name, fn in specs.items():
        doc = inspect.getdoc(fn) or ""
        assert "called" in doc.lower() and ("return" in doc.lower() or "raising" in doc.lower()), name


def item_events_emitted() -> tuple[set[str], set[str]]:
    """The event names the engine's services put on ``item_event`` outbox rows: literal
    names, and the patterns of names built with an f-string (as regular expressions)."""
    names: set[str] = set()
    patterns: set[str] = set()
    for path in (ROOT / "engine").rglob("*.py"):
        text = path.read_text()
        for prefix, name in re.findall(r'_outbox_event\(\s*[\w.]+,\s*(f?)"([^"]+)"', text):
            if prefix:
                patterns.add(re.sub(r"\{[^}]*\}", r"\\w+", name))
            else:
                names.add(name)
        if '"kind": "item_event"' in text:  # rows written in bulk, without _outbox_event
            names.update(re.findall(r'"payload": \{"event": "(\w+)"', text))
    return names, patterns


def test_every_item_event_the_services_emit_is_documented_for_tracker_item_event():
    names, patterns = item_events_emitted()
    assert {"created", "updated", "transitioned", "assigned", "progress_changed", "document_deleted"} <= names
    doc = inspect.getdoc(hookspecs.tracker_item_event) or ""
    documented = set(re.findall(r"``(\w+)``", doc))
    row = next(
        line for line in (ROOT / "docs" / "plugins.md").read_text().splitlines() if "`tracker_item_event(" in line
    )
    in_docs = set(re.findall(r"`(\w+)`", row))
    for name in names:
        assert name in documented, f"tracker_item_event's docstring does not list '{name}'"
        assert name in in_docs, f"docs/plugins.md's hooks table does not list '{name}'"
    for pattern in patterns:
        assert any(re.fullmatch(pattern, n) for n in documented), f"no documented event matches {pattern}"
        assert any(re.fullmatch(pattern, n) for n in in_docs), f"docs/plugins.md lists no event matching {pattern}"


def test_the_settings_example_in_the_plugin_docs_reads_what_the_plugin_reads():
    docs = (ROOT / "docs" / "plugins.md").read_text()
    section = docs.split("## Settings", 1)[1].split("\n## ", 1)[0]
    example = section.split("```python", 1)[1].split("```", 1)[0]
    [plugin] = re.findall(r'settings\.plugin\("(\w+)"\)', example)
    source = (ROOT / "plugins" / f"{plugin}.py").read_text()
    read = set(re.findall(r'\.(?:get|require|number)\("(\w+)"', source))
    shown = re.findall(r'cfg\.(?:get|require|number)\("(\w+)"', example)
    assert shown and set(shown) <= read, f"the example reads {shown}; plugins/{plugin}.py reads {sorted(read)}"
    for key in shown:
        assert f"TRACKER_PLUGIN_{plugin.upper()}_{key.upper()}" in source


# -- discovery ---------------------------------------------------------------------------------------


def test_built_in_plugins_register_through_the_entry_point_group_with_their_version():
    found = {d.name: d for d in discover()}
    version = metadata.version("tracker-engine")
    for name in ("sms", "hr_import"):
        assert found[name].dist == "tracker-engine" and found[name].version == version
        assert found[name].module is not None and not found[name].error
    infos = {i.name: i for i in PluginHost(Settings(secret_key="x")).info()}
    assert infos["sms"].status == "loaded"
    assert {"tracker_notification_channels", "tracker_field_validators", "tracker_blueprints"} <= set(
        infos["sms"].hooks
    )
    assert {"tracker_cli_commands", "tracker_blueprints"} <= set(infos["hr_import"].hooks)


def test_tracker_plugins_list_shows_each_plugin_its_version_and_hooks(run):
    out = run("plugins", "list").stdout
    version = metadata.version("tracker-engine")
    sms = next(line for line in out.splitlines() if line.startswith("sms "))
    assert version in sms and "tracker-engine" in sms and "loaded" in sms and "notification_channels" in sms
    assert "hr_import" in out and "cli_commands" in out
    assert "No plugin errors are recorded." in run("plugins", "errors").stdout


def test_a_plugin_that_fails_to_import_is_reported_and_the_rest_still_load(site, tmp_path, run):
    add_dist(
        site,
        "tracker-broken",
        "0.3",
        {"broken": "tp_broken_mod"},
        {"tp_broken_mod": "raise ImportError('needs the frobnicate library, which is not installed')\n"},
    )
    found = {d.name: d for d in discover()}
    assert found["broken"].module is None and "frobnicate" in found["broken"].error
    infos = {i.name: i for i in PluginHost(Settings(secret_key="x")).info()}
    assert infos["broken"].status == "failed" and infos["broken"].version == "0.3"
    assert infos["sms"].status == "loaded"
    # the command line keeps working, and says so
    run.env["PYTHONPATH"] = str(site)
    listed = run("plugins", "list")
    assert "broken" in listed.stdout and "failed" in listed.stdout and "frobnicate" in listed.stderr
    assert "Traceback" not in listed.stderr
    status = run("status", ok=False)
    assert status.returncode == 1 and "failed to load: broken" in status.stdout


def test_a_plugin_calling_sys_exit_at_import_is_reported_and_the_process_goes_on(site, run):
    add_dist(
        site,
        "tracker-exits",
        "0.1",
        {"exits": "tp_exits_mod"},
        {"tp_exits_mod": "import sys\nsys.exit('usage: exits FILE')\n"},
    )
    found = {d.name: d for d in discover()}
    assert found["exits"].module is None
    assert found["exits"].error == "could not be imported: SystemExit: usage: exits FILE"
    infos = {i.name: i for i in PluginHost(Settings(secret_key="x")).info()}
    assert infos["exits"].status == "failed" and infos["sms"].status == "loaded"
    run.env["PYTHONPATH"] = str(site)
    listed = run("plugins", "list")
    assert "exits" in listed.stdout and "failed" in listed.stdout and "usage: exits FILE" in listed.stderr
    status = run("status", ok=False)
    assert "failed to load: exits" in status.stdout


def test_a_plugin_with_a_hook_the_specs_do_not_know_is_refused_at_registration():
    class Typo:
        @hookimpl
        def tracker_notification_channel(self):  # the spec is tracker_notification_channels
            return []

    host = host_of(("typo", Typo()))
    [info] = host.info()
    assert info.status == "failed" and "tracker_notification_channel" in info.error
    assert host.errors.recent[-1].plugin == "typo"


# -- configuration -----------------------------------------------------------------------------------


def test_tracker_plugins_disabled_switches_plugins_off_by_name(tmp_path):
    env = {"TRACKER_INSTANCE_PATH": str(tmp_path), "TRACKER_PLUGINS_DISABLED": " sms , hr_import,"}
    settings = Settings.from_env(env)
    assert settings.plugins_disabled == ("sms", "hr_import")
    host = PluginHost(settings)
    infos = {i.name: i.status for i in host.info()}
    assert infos["sms"] == "disabled" and infos["hr_import"] == "disabled"
    assert host.channels() == [] and "sms" not in host.names()
    assert "mobile_number" not in host.field_validators()


def test_plugin_settings_come_from_tracker_plugin_name_key_variables(tmp_path):
    env = {
        "TRACKER_INSTANCE_PATH": str(tmp_path),
        "TRACKER_PLUGIN_COMPANIES_HOUSE_API_KEY": "k-123",
        "TRACKER_PLUGIN_SMS_BASE_URL": " http://127.0.0.1:9/2010-04-01 ",
        "TRACKER_PLUGIN_SMS_TIMEOUT": "soon",
    }
    settings = Settings.from_env(env)
    assert settings.plugin("companies_house").get("api_key") == "k-123"
    assert settings.plugin("companies-house").values == {"api_key": "k-123"}
    assert settings.plugin("sms").get("base_url") == "http://127.0.0.1:9/2010-04-01"
    assert settings.plugin("sms").get("from", "Tracker") == "Tracker"
    with pytest.raises(TrackerError) as missing:
        settings.plugin("sms").require("account_sid", "AC123")
    assert "TRACKER_PLUGIN_SMS_ACCOUNT_SID" in missing.value.message
    assert "TRACKER_PLUGIN_SMS_ACCOUNT_SID=AC123" in missing.value.advice
    with pytest.raises(TrackerError) as bad:
        settings.plugin("sms").number("timeout", 10)
    assert "TRACKER_PLUGIN_SMS_TIMEOUT is not a number" in bad.value.message


# -- a failing plugin is skipped, recorded and shown -------------------------------------------------


class PagerChannel(Channel):
    key, label = "pager", "Pager"

    def send(self, ctx, delivery, user, message) -> None:
        raise ConnectionError("the pager gateway hung up")


class Good:
    @hookimpl
    def tracker_notification_channels(self):
        return [PagerChannel()]

    @hookimpl
    def tracker_lookups(self):
        return {"town": lambda params: [LookupResult("Leeds", {"town": "Leeds"})]}


class Bad:
    @hookimpl
    def tracker_notification_channels(self):
        raise RuntimeError("cannot reach the SMS account")

    @hookimpl
    def tracker_lookups(self):
        return {"town": lambda params: [], "broken": "not callable"}

    @hookimpl
    def tracker_menu_links(self, actor):
        raise KeyError("menu")


def test_a_registration_hook_that_raises_is_recorded_and_only_that_plugin_is_skipped():
    host = host_of(("good", Good()), ("bad", Bad()))
    assert [c.key for c in host.channels()] == ["pager"]
    lookups = host.lookups()
    assert set(lookups) == {"town"} and lookups["town"][0] == "good"
    assert host.menu_links(actor=None) == []
    recorded = [(e.plugin, e.hook, e.message) for e in host.errors.recent]
    assert ("bad", "tracker_notification_channels", "RuntimeError: cannot reach the SMS account") in recorded
    assert any(p == "bad" and "lookup 'town' is already given by 'good'" in m for p, _h, m in recorded)
    assert any(p == "bad" and "'broken' is not callable" in m for p, _h, m in recorded)
    assert any(p == "bad" and h == "tracker_menu_links" for p, h, _m in recorded)


def test_plugin_errors_are_stored_listed_for_admins_and_turn_health_degraded(app_with):
    app = app_with(host_of(("good", Good()), ("bad", Bad())))
    rt = app.extensions["tracker"]
    create_users(app, root=["admin"], ann=["assessor"])
    client = app.test_client()
    assert client.get("/health").get_json()["status"] == "ok"
    rt.plugins.channels()  # Bad raises here
    assert rt.plugins.errors.flush(10)
    with rt.session() as session:
        rows, total = stored_errors(session)
    assert total == 1 and (rows[0].plugin, rows[0].hook) == ("bad", "tracker_notification_channels")
    assert "Traceback" in rows[0].detail and "cannot reach the SMS account" in rows[0].detail
    health = client.get("/health").get_json()
    assert health["status"] == "degraded" and health["plugins"]["errors_24h"] == 1

    assessor = app.test_client()
    sign_in(assessor, "ann")
    assert assessor.get("/admin/plugins").status_code == 403
    admin = app.test_client()
    sign_in(admin, "root")
    page = admin.get("/admin/plugins").get_data(as_text=True)
    assert 'id="plugin-good"' in page and 'id="plugin-bad"' in page
    assert "tracker_notification_channels" in page and "RuntimeError: cannot reach the SMS account" in page
    assert "UTC</time>" in page and ">Plugins</a>" in page
    from tests.webhelpers import csrf

    response = admin.post(
        "/admin/plugins/errors/clear", data={"csrf_token": csrf(admin, "/admin/plugins")}, follow_redirects=True
    )
    assert "2 plugin errors cleared." in response.get_data(as_text=True)  # the menu links failed once too
    assert "No plugin errors are recorded." in response.get_data(as_text=True)
    assert client.get("/health").get_json()["status"] == "ok"


def test_tracker_status_and_plugins_errors_show_stored_errors(run, tmp_path, db_url):
    from engine import db
    from engine.models import utcnow
    from engine.plugins import ErrorRecord, store_error

    engine = db.make_engine(db_url)
    with db.session_factory(engine)() as session:
        store_error(session, ErrorRecord(utcnow(), "sms", "channel sms", "GatewayError: refused (400, code 21211)"))
    engine.dispose()
    status = run("status", ok=False)
    assert status.returncode == 1
    line = next(x for x in status.stdout.splitlines() if x.split()[1:2] == ["plugins"])
    assert line.startswith("FAIL") and "1 error in the last 24 hours" in line
    errors = run("plugins", "errors").stdout
    assert "sms  channel sms  GatewayError: refused (400, code 21211)" in errors


# -- CLI commands ------------------------------------------------------------------------------------


def test_plugin_commands_join_the_tracker_group_and_a_taken_name_is_refused(caplog):
    from engine.cli_plugins import register

    group = click.Group("tracker")

    @group.command("hr")
    def hr() -> None:
        """Already here."""

    register(group)
    assert group.commands["hr"] is hr  # the plugin's "hr" did not replace it
    assert {"plugins", "sms"} <= set(group.commands)
    assert "the command name 'hr' is already taken" in caplog.text


def test_the_tracker_command_lists_plugin_commands(run):
    out = run("--help").stdout
    assert "hr " in out and "sms " in out and "plugins " in out
    assert "--dry-run" in run("hr", "import", "--help").stdout


def test_a_plugin_raising_in_its_cli_hook_does_not_stop_the_command_line(site, run):
    add_dist(
        site,
        "tracker-noisy",
        "1.0",
        {"noisy": "tp_noisy_mod"},
        {
            "tp_noisy_mod": (
                "from engine.hookspecs import hookimpl\n\n"
                "@hookimpl\ndef tracker_cli_commands():\n    raise RuntimeError('no commands today')\n"
            )
        },
    )
    run.env["PYTHONPATH"] = str(site)
    result = run("types", "list")
    assert "learner" in result.stdout and "no commands today" in result.stderr


NOISY_CLI = (
    "from engine.hookspecs import hookimpl\n\n"
    "@hookimpl\ndef tracker_cli_commands():\n    raise RuntimeError('no commands today')\n"
)


def test_a_cli_hook_error_is_stored_once_and_shows_like_any_plugin_error(site, run, db_url):
    from engine import db

    add_dist(site, "tracker-noisy", "1.0", {"noisy": "tp_noisy_mod"}, {"tp_noisy_mod": NOISY_CLI})
    run.env["PYTHONPATH"] = str(site)
    run("types", "list")
    run("types", "list")  # a second command within ten minutes adds no second row
    engine = db.make_engine(db_url)
    try:
        with db.session_factory(engine)() as session:
            rows, total = stored_errors(session)
    finally:
        engine.dispose()
    assert total == 1 and (rows[0].plugin, rows[0].hook) == ("noisy", "tracker_cli_commands")
    assert rows[0].message == "RuntimeError: no commands today" and "Traceback" in rows[0].detail
    status = run("status", ok=False)
    assert status.returncode == 1 and "1 error in the last 24 hours" in status.stdout
    assert "noisy  tracker_cli_commands  RuntimeError: no commands today" in run("plugins", "errors").stdout


def test_a_cli_hook_error_creates_no_database_to_be_stored_in(site, tmp_path):
    add_dist(site, "tracker-noisy", "1.0", {"noisy": "tp_noisy_mod"}, {"tp_noisy_mod": NOISY_CLI})
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run([TRACKER, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "no commands today" in result.stderr
    assert "could not be stored" not in result.stderr
    assert not (tmp_path / "instance").exists()


def test_the_engine_side_of_plugins_does_not_import_flask():
    code = "import sys, engine.plugins, engine.hookspecs; print('flask' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_the_command_line_runs_without_the_plugins_environment(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKER_")}
    env["TRACKER_PLUGINS_DISABLED"] = "sms,hr_import"
    result = subprocess.run([TRACKER, "--help"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 0 and "sms " not in result.stdout and "plugins " in result.stdout
    assert not (tmp_path / "instance").exists()  # --help creates nothing
