"""``tracker plugins list|errors`` and the commands plugins add to ``tracker``."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import click

from engine.config import Settings

log = logging.getLogger(__name__)


@click.group("plugins")
def plugins_group() -> None:
    """The installed plugins and the errors they raised."""


@plugins_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins_list(as_json: bool) -> None:
    """Every plugin found (entry-point group 'tracker.plugins'): version, status and hooks."""
    from engine.cli import _runtime, _table

    infos = _runtime().plugins.info()
    if as_json:
        click.echo(json.dumps([info.__dict__ for info in infos], indent=2))
        return
    if not infos:
        click.echo("No plugins are installed. See docs/plugins.md to write one.")
        return
    rows = [("NAME", "VERSION", "DISTRIBUTION", "STATUS", "HOOKS")]
    for info in infos:
        hooks = ", ".join(h.removeprefix("tracker_") for h in info.hooks) or "-"
        rows.append((info.name, info.version or "-", info.dist or "-", info.status, hooks))
    _table(rows)
    for info in infos:
        if info.error:
            click.secho(f"{info.name}: {info.error}", fg="red", err=True)
    disabled = [i.name for i in infos if i.status == "disabled"]
    if disabled:
        click.echo(f"Switched off by TRACKER_PLUGINS_DISABLED: {', '.join(disabled)}")


@plugins_group.command("errors")
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000), help="How many to show.")
def plugins_errors(limit: int) -> None:
    """The latest errors plugins raised (in any process), newest first."""
    from engine.cli import _runtime
    from engine.plugins import stored_errors

    with _runtime().session() as session:
        rows, total = stored_errors(session, limit=limit)
    if not rows:
        click.echo("No plugin errors are recorded.")
        return
    for row in rows:
        click.echo(f"{row.at:%Y-%m-%d %H:%M:%S} UTC  {row.plugin}  {row.hook}  {row.message}")
    if total > len(rows):
        click.echo(f"... and {total - len(rows)} older; see /admin/plugins.")


def register(cli: click.Group) -> None:
    """Add ``tracker plugins`` and every plugin's commands to ``cli``. A plugin whose
    commands cannot be had, or whose command name is taken, is reported (and stored, see
    :func:`_error_sink`) and skipped."""
    from engine.plugins import PluginHost

    cli.add_command(plugins_group)
    env = os.environ
    # only what plugins need: building full Settings here would create the instance folder
    settings = Settings(
        secret_key="-",
        plugins_disabled=tuple(n.strip() for n in env.get("TRACKER_PLUGINS_DISABLED", "").split(",") if n.strip()),
        plugin_env={k: v for k, v in env.items() if k.startswith("TRACKER_PLUGIN_")},
    )
    host = PluginHost(settings, sink=_error_sink(env))
    for plugin, command in host.cli_commands():
        if command.name in cli.commands:
            host.errors.record(
                plugin, "tracker_cli_commands", ValueError(f"the command name '{command.name}' is already taken")
            )
            continue
        cli.add_command(command)


def _error_sink(env: Mapping[str, str]) -> Callable | None:
    """Where errors of the plugins' command-line hooks are stored, so they show on
    ``/admin/plugins`` and ``/health`` like any other plugin error: the database of
    ``TRACKER_DATABASE_URL``, or the instance's SQLite file when it exists. None when there is
    no database yet: ``tracker --help`` must not create one to store an error in (the error
    is still logged)."""
    url = env.get("TRACKER_DATABASE_URL", "").strip()
    if not url:
        instance = Path(env.get("TRACKER_INSTANCE_PATH") or Path.cwd() / "instance").resolve()
        if not (instance / "tracker.db").is_file():
            return None
        url = f"sqlite:///{instance / 'tracker.db'}"

    def store(entry) -> None:
        from engine import db
        from engine.plugins import REPEAT_WINDOW, store_error

        # opened only when a hook failed, so a healthy command line never connects here
        engine = db.make_engine(url, connect_retry_seconds=0)
        try:
            with db.session_factory(engine)() as session:
                store_error(session, entry, once_per=REPEAT_WINDOW)
        finally:
            engine.dispose()

    return store
