"""``tracker ilr``: the ILR XML file ESFA collects, made from ILR items and checked against ESFA's XSD."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli import _runtime, as_option
from engine.ilr import xml_export
from engine.ilr.xml_builder import COLLECTIONS


@click.group("ilr")
def ilr() -> None:
    """Export ILR records as the ILR XML file, and check ILR files against ESFA's schema."""


@ilr.command("export")
@click.option("--ukprn", required=True, help="Your 8-digit UK provider reference number.")
@click.option("--year", required=True, help=f"The collection year as ESFA writes it: {', '.join(COLLECTIONS)}.")
@click.option(
    "--out",
    "out_dir",
    default=".",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder to write the file into.",
)
@click.option("--id", "item_ids", type=int, multiple=True, help="Export this ILR item only; repeat for several.")
@click.option(
    "--status", multiple=True, help="Only items in this state; repeat for several (default: all but cancelled)."
)
@click.option("--assignee", help="Only items assigned to this user (me, none or a user name).")
@click.option("-q", "--query", "q", help="Only items whose title or learner reference contains this text.")
@click.option("--serial", type=click.IntRange(1, 99), help="Serial number NN of the file (default: the next free one).")
@click.option("--strict", is_flag=True, help="Write nothing if any learner fails, instead of leaving them out.")
@as_option
def export(ukprn, year, out_dir, item_ids, status, assignee, q, serial, strict, as_user) -> None:
    """Write ILR-<UKPRN>-<YYYY>-<yyyymmdd>-<hhmmss>-<NN>.xml for the chosen ILR records.

    The file is validated against ESFA's XSD before it is written. A learner whose record
    fails (an ILR rule or the XSD) is left out and listed with the reason; with --strict the
    file is not written at all. Exit code 0 when a file was written, 1 when none was.
    """
    rt = _runtime()
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, as_user))
        result = xml_export.export_ilr(
            service,
            ukprn=ukprn,
            year=year,
            out_dir=out_dir,
            item_ids=list(item_ids) or None,
            status=list(status) or None,
            assignee=assignee,
            q=q,
            strict=strict,
            serial=serial,
        )
        _report(result)
    if not result.written:
        sys.exit(1)


def _report(result: xml_export.IlrExport) -> None:
    if result.excluded:
        click.secho(f"{len(result.excluded)} learner(s) left out of the file:", fg="yellow", err=True)
        for excluded in result.excluded:
            click.echo(f"  #{excluded.item_id} {excluded.learn_ref_number} ({excluded.title})", err=True)
            for problem in excluded.problems:
                where = f"{problem.path}: " if problem.path else ""
                click.echo(f"    - {where}{problem.message}", err=True)
                if problem.advice:
                    click.echo(f"      -> {problem.advice}", err=True)
    if result.written:
        click.echo(
            f"Wrote {result.path} with {len(result.included)} learner(s); it passes ESFA's schema {result.year}."
        )
    elif result.strict and result.excluded:
        click.secho("Error: no file was written: --strict refuses a file without every learner.", fg="red", err=True)
        click.echo("  -> Correct the records listed above, or run without --strict to leave them out.", err=True)
    else:
        click.secho("Error: no file was written: no learner passed the checks.", fg="red", err=True)
        click.echo("  -> Correct the records listed above, then export again.", err=True)


@ilr.command("validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def validate(files: tuple[Path, ...]) -> None:
    """Check ILR XML files against ESFA's schema (and their names against ESFA's pattern)."""
    failed = 0
    for path in files:
        problems = xml_export.validate_file(path)
        if problems:
            failed += 1
            click.secho(f"{path}: {len(problems)} problem(s)", fg="red", err=True)
            for problem in problems[:50]:
                click.echo(f"  - {problem}", err=True)
            if len(problems) > 50:
                click.echo(f"  ... and {len(problems) - 50} more", err=True)
        else:
            click.echo(f"{path}: passes ESFA's schema.")
    if failed:
        sys.exit(1)
