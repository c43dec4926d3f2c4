"""Operations commands: ``tracker backup``, ``tracker restore`` and ``tracker training``.

See :mod:`engine.backup` and :mod:`engine.training` for what they do and refuse.
"""

from __future__ import annotations

from pathlib import Path

import click

from engine import backup as backups
from engine import training as environments
from engine.cli import _fail_text, _runtime


def _size(size: int) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size} bytes"


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}{'' if count == 1 else 's'}"


@click.command("backup")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File to write (default: instance/backups/tracker-<UTC time>.tar.gz).",
)
def backup(out: Path | None) -> None:
    """Back up the database and the uploaded documents into one .tar.gz, while Tracker runs.

    SQLite is copied with its online backup API, PostgreSQL with pg_dump (on PATH). The file
    holds a manifest with the schema revision and the rows of every table; 'tracker restore'
    checks them.
    """
    rt = _runtime()
    report = backups.backup(rt.settings, out)
    counts = report.manifest.counts
    click.echo(
        f"Backup written to {report.path} ({_size(report.size)}): {_plural(counts.get('items', 0), 'item')}, "
        f"{_plural(counts.get('events', 0), 'event')}, {_plural(len(report.manifest.documents), 'document')}; "
        f"schema {report.manifest.revision}."
    )


@click.command("restore")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--yes", is_flag=True, help="Replace the database without asking first.")
def restore(file: Path, yes: bool) -> None:
    """Replace the database and the documents with the backup FILE.

    Refuses a backup made by a newer version of Tracker; asks before replacing anything
    (unless --yes); afterwards checks every table's rows and every document against the
    backup's manifest, and upgrades the schema if the backup is older than this Tracker.
    """
    rt = _runtime()
    plan = backups.plan_restore(rt.settings, file)
    manifest = plan.manifest
    now = "an empty database" if plan.target_items is None else f"{_plural(plan.target_items, 'item')} now"
    click.echo(
        f"Backup of {manifest.created_at} from {manifest.source or 'an unnamed database'}: "
        f"{_plural(manifest.items, 'item')}, {_plural(manifest.counts.get('events', 0), 'event')}, "
        f"{_plural(len(manifest.documents), 'document')}, schema {manifest.revision}."
    )
    click.echo(f"It replaces everything in {plan.target} ({now}) and the documents in {rt.settings.documents_path}.")
    if not yes:
        try:
            go_on = click.confirm("Replace them with the backup?", default=False)
        except click.Abort:
            go_on = False
        if not go_on:
            _fail_text("Restore cancelled: nothing was changed.", "Run it again and answer y, or add --yes.")
    if "engine" in rt.__dict__:
        rt.engine.dispose()  # none of our connections may hold the database while it is replaced
    report = backups.restore(rt.settings, plan)
    from engine import indexes

    indexes.sync(rt.engine, rt.registry)  # the task lists of the restored definitions
    click.echo(
        f"Restored {_plural(report.manifest.items, 'item')}, "
        f"{_plural(report.manifest.counts.get('events', 0), 'event')} and {_plural(report.documents, 'document')}; "
        f"every table's rows match the backup."
    )
    if report.upgraded_to:
        click.echo(f"The schema was upgraded to {report.upgraded_to}.")
    if environments.is_training(rt.settings):
        click.secho(
            "This is TRAINING: the next 'tracker training refresh' on LIVE replaces the restored data.", fg="yellow"
        )


@click.group("training")
def training() -> None:
    """The TRAINING copy of LIVE: refresh it, or see when it was refreshed."""


@training.command("refresh")
def training_refresh() -> None:
    """Copy LIVE into the TRAINING database (TRACKER_TRAINING_DATABASE_URL), replacing it.

    Runs on LIVE; LIVE is only read. 'tracker scheduler' does this every night after
    TRACKER_TRAINING_REFRESH_HOUR (UTC). Refuses a target that is LIVE itself or that holds
    data without being a TRAINING copy.
    """
    rt = _runtime()
    environments.check_start(rt.settings)
    click.echo(f"Copying LIVE into TRAINING at {backups.safe_url(rt.settings.training_database_url or '') or '-'}...")
    report = environments.refresh(rt.settings, rt.registry)
    documents = "" if report.documents is None else f", {_plural(report.documents, 'document')}"
    click.echo(
        f"TRAINING refreshed from LIVE at {report.refreshed_at:%Y-%m-%d %H:%M} UTC: "
        f"{_plural(report.items, 'item')}, {_plural(report.counts.get('events', 0), 'event')}{documents} "
        f"in {report.seconds:.1f} s."
    )


@training.command("status")
def training_status() -> None:
    """Say which environment this is and when TRAINING was last refreshed from LIVE."""
    rt = _runtime()
    settings = rt.settings
    if environments.is_training(settings):
        click.echo("This is TRAINING: " + environments.banner(rt).split("; ", 1)[1] + ".")
        return
    if not settings.training_database_url:
        click.echo("This is LIVE. No TRAINING database is configured (TRACKER_TRAINING_DATABASE_URL).")
        return
    environments.check_start(settings)
    from engine import db

    target = db.make_engine(settings.training_database_url)
    try:
        when = environments.refreshed_at(target)
    finally:
        target.dispose()
    last = f"{when:%Y-%m-%d %H:%M} UTC" if when else "never"
    click.echo(
        f"This is LIVE. TRAINING is {backups.safe_url(settings.training_database_url)}, last refreshed {last}; "
        f"the scheduler refreshes it daily after {settings.training_refresh_hour:02d}:00 UTC."
    )


def register(cli: click.Group) -> None:
    """Add the operations commands to the ``tracker`` group."""
    for command in (backup, restore, training):
        cli.add_command(command)
