"""``tracker types export|import|publish|versions|rollback|migrate``: tracker types kept in the
database, from the command line. Each command acts as the system operator (or ``--as USER``,
who needs ``types.admin``) through :class:`~engine.services.definitions.DefinitionService`.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli import _runtime, _table, as_option, types
from engine.services.definitions import DefinitionRejected
from engine.type_migrations import TypeMigrator, describe


def _service(session, as_user: str | None):
    rt = _runtime()
    return rt.definitions(session, rt.actor(session, as_user))


def _refused(exc: DefinitionRejected) -> None:
    """Problems printed as ``tracker check`` prints them, then exit code 1."""
    click.secho(f"Error: {exc.message}", fg="red", err=True)
    for problem in exc.definition_problems:
        click.echo(str(problem), err=True)
    click.echo(
        f"  -> {len(exc.definition_problems)} problem(s) to fix; nothing was changed.",
        err=True,
    )
    sys.exit(1)


@types.command("export")
@click.argument("key")
@click.argument("destination", type=click.Path(path_type=Path))
def types_export(key: str, destination: Path) -> None:
    """Write type KEY (with its workflow) in the folder format into DESTINATION (a folder, or a .zip)."""
    rt = _runtime()
    with rt.session() as session:
        written = _service(session, None).export(key, destination)
    for path in written:
        click.echo(f"wrote {path}")


@types.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--key", help="Import the folder's one type under this key instead of its own.")
@click.option("--note", default="", help="Why: kept in the type's history.")
@as_option
def types_import(source: Path, key: str | None, note: str, as_user: str | None) -> None:
    """Check the types of definitions folder SOURCE (or a .zip) as 'tracker check' does and publish them."""
    rt = _runtime()
    with rt.session() as session:
        try:
            published = _service(session, as_user).import_folder(source, key=key, note=note)
        except DefinitionRejected as exc:
            _refused(exc)
        for p in published:
            click.echo(f"Imported {p.definition.type_key} as version {p.definition.version}.")


@types.command("publish")
@click.argument("key")
@click.option("--note", default="", help="What changed and why: kept in the type's history.")
@as_option
def types_publish(key: str, note: str, as_user: str | None) -> None:
    """Publish the draft of type KEY as its next version (refused, with every problem, if it does not load)."""
    rt = _runtime()
    with rt.session() as session:
        service = _service(session, as_user)
        if not service.has_draft(key):
            service._not_from_files(key)
            click.secho(f"Error: '{key}' has no draft to publish.", fg="red", err=True)
            click.echo("  -> Edit the type first (in the web editor), then publish.", err=True)
            sys.exit(1)
        try:
            published = service.publish(key, note)
        except DefinitionRejected as exc:
            _refused(exc)
        click.echo(f"Published {key} version {published.definition.version}.")
        behind = TypeMigrator(session, service.actor, rt.registry).count_behind(key)
        if behind:
            click.echo(
                f"{behind} item(s) are still under older versions; "
                f"'tracker types migrate {key} --preview' shows what migrating them would do."
            )


@types.command("versions")
@click.argument("key")
def types_versions(key: str) -> None:
    """List the published versions of type KEY, with who published them and why."""
    rt = _runtime()
    with rt.session() as session:
        service = _service(session, None)
        history = service.history(key)
        if not history:
            service._known(key)
            click.echo(f"'{key}' has no versions in the database (a type from files is versioned by its files).")
            return
        current = rt.registry.types.get(key)
        rows = [("VERSION", "ACTION", "WHEN", "WHO", "NOTE")]
        for entry in history:
            action = entry.action + (f" of v{entry.from_version}" if entry.from_version else "")
            mark = " (current)" if current is not None and current.version == entry.version else ""
            rows.append(
                (
                    f"{entry.version}{mark}",
                    action,
                    entry.at.strftime("%Y-%m-%d %H:%M"),
                    entry.actor.username if entry.actor else "system",
                    entry.note,
                )
            )
        _table(rows)
        if service.has_draft(key):
            click.echo(f"A draft of version {service._draft_row(key).version} is being edited.")


@types.command("rollback")
@click.argument("key")
@click.argument("version", type=int)
@click.option("--note", default="", help="Why: kept in the type's history.")
@as_option
def types_rollback(key: str, version: int, note: str, as_user: str | None) -> None:
    """Publish VERSION of type KEY again, as its newest version."""
    rt = _runtime()
    with rt.session() as session:
        try:
            published = _service(session, as_user).rollback(key, version, note)
        except DefinitionRejected as exc:
            _refused(exc)
        click.echo(f"Published the documents of version {version} of {key} as version {published.definition.version}.")


@types.command("migrate")
@click.argument("key")
@click.option("--preview", "mode", flag_value="preview", default=True, help="Show what would change (the default).")
@click.option("--apply", "mode", flag_value="apply", help="Migrate the items that validate under the current version.")
@as_option
def types_migrate(key: str, mode: str, as_user: str | None) -> None:
    """Bring items of older versions of type KEY to its current version (see --preview, --apply)."""
    rt = _runtime()
    with rt.session() as session:
        migrator = TypeMigrator(session, rt.actor(session, as_user), rt.registry)
        preview = migrator.preview(key)
        if not preview.items:
            click.echo(f"Every {key} item is at version {preview.to_version}; nothing to migrate.")
            return
        for vp in preview.versions:
            click.echo(
                f"version {vp.from_version} -> {preview.to_version}: {vp.items} item(s), "
                f"{vp.would_change} would change, {vp.would_fail} would fail validation"
            )
            for step in vp.steps:
                click.echo(f"  step: {describe(step)}")
            if not vp.steps:
                click.echo("  no steps declared: the data stays as it is")
            for example in vp.failures:
                reasons = "; ".join(str(p) for p in example.problems[:3])
                click.echo(f"  would fail: #{example.item_id} {example.title}: {reasons}")
        if mode == "preview":
            click.echo(f"Run 'tracker types migrate {key} --apply' to migrate the items that validate.")
            return
        result = migrator.apply(key, progress=lambda done, total: click.echo(f"  {done}/{total}", err=True))
        click.echo(
            f"Migrated {result.migrated} item(s) to version {preview.to_version}; {result.failed} left as they were."
        )
        if result.failed:
            sys.exit(1)
