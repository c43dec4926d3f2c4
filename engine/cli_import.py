"""``tracker import TYPE FILE``: items (learners, qualifications, any type) from a CSV or XLSX file.

The rows go through :class:`~engine.services.imports.ImportService`, the same checks and
writes as the web import page. Progress goes to stderr (a line that rewrites itself on a
terminal, a line every tenth of the file otherwise); the problems and the summary go to
stdout. The exit code is 1 when any row was refused, so a script can tell.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from engine.cli import _runtime, as_option
from engine.services.import_files import ENCODINGS, problem_rows_csv
from engine.services.import_jobs import check_size, importer
from engine.services.import_workers import default_workers
from engine.services.imports import RowProblem, reasons_by_line


class ProgressLine:
    """Reports ``done`` of ``total`` rows on stderr: rewritten in place on a terminal,
    otherwise a line at each further tenth (so logs stay short)."""

    def __init__(self, verb: str, *, tty: bool | None = None) -> None:
        self.verb = verb
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.shown = -1

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        text = f"{self.verb}: {percent}% ({done:,} of {total:,} rows)"
        if self.tty:
            click.echo("\r" + text, nl=done >= total, err=True)
        elif percent // 10 > self.shown // 10 or done >= total:
            click.echo(text, err=True)
        self.shown = percent


@click.command("import")
@click.argument("type_key", metavar="TYPE")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Check every row and report the problems; create nothing.")
@click.option(
    "--encoding",
    type=click.Choice([key for key, _label in ENCODINGS]),
    default="utf-8",
    show_default=True,
    help="How a CSV file's text is encoded; cp1252 for Excel's plain 'CSV (Comma delimited)'.",
)
@click.option(
    "--report",
    "report_path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Write the rows that were not imported, with the reasons, to this CSV file.",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1, max=32),
    default=default_workers(),
    show_default=True,
    help="Processes that validate rows side by side (one per core by default).",
)
@as_option
def import_command(
    type_key: str,
    file: Path,
    dry_run: bool,
    encoding: str,
    report_path: Path | None,
    workers: int,
    as_user: str | None,
) -> None:
    """Import items of TYPE from FILE (.csv or .xlsx): one row per item, the header naming
    the fields (e.g. given_name, family_name, date_of_birth, uln). For a type about a
    learner, a column subject_uln (or learner_uln, or subject_id) says whose each row is.

    Every row is validated as a save would be; rows with problems are reported with their
    line, column and what to do, and are not imported; a row that duplicates an existing
    item (or an earlier line) is reported with the item's number. Use --dry-run first to
    see the problems without creating anything.
    """
    rt = _runtime()
    content = file.read_bytes()
    check_size(rt, file.name, len(content))
    with rt.session() as session:
        service = importer(rt, session, rt.actor(session, as_user), workers=workers)
        plan = service.open(type_key, file.name, content, encoding=encoding)
        name = plan.tracker_type.name
        click.echo(f"Read {plan.total:,} row{'' if plan.total == 1 else 's'} of {name} from {file.name}.")
        if dry_run:
            report = service.check(plan, progress=ProgressLine("Checking"))
            _print_problems(report.problems)
            click.echo(
                f"Dry run: {report.valid:,} of {report.total:,} rows can be imported; "
                f"{report.invalid_lines:,} have problems, {report.duplicate_lines:,} are duplicates. Nothing was saved."
            )
            problems = report.problems
        else:
            send_on = None
            if rt.settings.redis_url:
                from engine.services.import_jobs import outbox_sender

                send_on = outbox_sender(rt)
            summary = service.run(plan, progress=ProgressLine("Importing"), on_committed=send_on)
            _print_problems(summary.problems)
            click.echo(
                f"Imported {summary.created:,} of {summary.total:,} rows: {summary.created:,} created, "
                f"{summary.duplicates:,} duplicates not created, {summary.failed:,} failed."
            )
            if summary.outbox_ids and not rt.settings.redis_url:
                click.echo("Their item events go out with the next run of 'tracker scheduler'.")
            problems = summary.problems
    if report_path is not None and problems:
        with report_path.open("w", encoding="utf-8", newline="") as out:
            out.writelines(problem_rows_csv(plan.table, reasons_by_line(problems)))
        click.echo(f"The {len({p.line for p in problems}):,} rows not imported, with the reasons: {report_path}")
    if problems:
        sys.exit(1)


def _print_problems(problems: list[RowProblem]) -> None:
    for p in sorted(problems, key=lambda p: p.line):
        where = f"line {p.line}" + (f", {p.column}" if p.column else "")
        click.echo(f"{where}: {p.message}")
        if p.advice:
            click.echo(f"    -> {p.advice}")
