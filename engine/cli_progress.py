"""``tracker progress``: show an item's progress through its qualification, tick and untick
criteria, list the structures, and store the percentages again after a structure changed."""

from __future__ import annotations

import json

import click

from engine.cli import _runtime, _table, as_option
from engine.services.progress import ProgressService, ProgressView, progress_record


def _service(session, as_user: str | None) -> ProgressService:
    rt = _runtime()
    return ProgressService(session, rt.actor(session, as_user), rt.registry)


def _summary(view: ProgressView) -> str:
    tree = view.tree
    return f"#{view.item.id} {view.item.title}: {tree.percent:.1f}% complete ({tree.ticked} of {tree.total} criteria)"


@click.group()
def progress() -> None:
    """Progress through qualification structures: units, elements and criteria, weighted."""


@progress.command("show")
@click.argument("item_id", type=int, metavar="ITEM")
@click.option("--json", "as_json", is_flag=True, help="Print the tree as JSON.")
@as_option
def show(item_id: int, as_json: bool, as_user: str | None) -> None:
    """Every criterion of ITEM's qualification, ticked or not, with percentages."""
    rt = _runtime()
    with rt.session() as session:
        view = _service(session, as_user).view(item_id)
        if view.tree is None:
            click.echo(f"#{view.item.id} {view.item.title}: {view.reason}.")
            return
        if as_json:
            click.echo(json.dumps(progress_record(view), indent=2))
            return
        click.secho(_summary(view), bold=True)
        for unit in view.tree.units:
            click.echo(f"{unit.unit.ref} {unit.unit.title}: {unit.percent:.0f}%")
            for element in unit.elements:
                click.echo(f"  {element.element.ref} {element.element.title}: {element.percent:.0f}%")
                for c in element.criteria:
                    mark = "[x]" if c.done else "[ ]"
                    tail = f"  ({c.tick.evidence}, {c.tick.on_date.isoformat()})" if c.tick else ""
                    click.echo(f"    {mark} {c.path}  {c.criterion.text}{tail}")


@progress.command("tick")
@click.argument("item_id", type=int, metavar="ITEM")
@click.argument("criterion")
@click.option("--evidence", required=True, help="Where the evidence is, e.g. 'Observation 12/03'.")
@click.option("--date", "on_date", required=True, metavar="YYYY-MM-DD", help="The day the criterion was met.")
@as_option
def tick(item_id: int, criterion: str, evidence: str, on_date: str, as_user: str | None) -> None:
    """Tick CRITERION (UNIT/ELEMENT/CRITERION, or an unambiguous ref) of ITEM as met."""
    rt = _runtime()
    with rt.session() as session:
        view = _service(session, as_user).tick(item_id, criterion, evidence, on_date)
        click.echo(f"Ticked {criterion}. {_summary(view)}.")


@progress.command("untick")
@click.argument("item_id", type=int, metavar="ITEM")
@click.argument("criterion")
@as_option
def untick(item_id: int, criterion: str, as_user: str | None) -> None:
    """Take the tick off CRITERION of ITEM."""
    rt = _runtime()
    with rt.session() as session:
        view = _service(session, as_user).untick(item_id, criterion)
        click.echo(f"Unticked {criterion}. {_summary(view)}.")


@progress.command("structures")
def structures() -> None:
    """The qualification structures loaded (tracker_types/qualifications/*.yaml)."""
    registry = _runtime().registry
    rows = [("KEY", "QAN/REFERENCE", "LEVEL", "UNITS", "CRITERIA", "TITLE")]
    for q in sorted(registry.qualifications.values(), key=lambda q: q.key):
        criteria = sum(1 for _ in q.criteria())
        rows.append((q.key, ", ".join(q.identifiers), str(q.level or "-"), str(len(q.units)), str(criteria), q.title))
    _table(rows)


@progress.command("recompute")
@click.option("--type", "type_key", help="Only items of this type (default: every type that tracks progress).")
def recompute(type_key: str | None) -> None:
    """Store every item's percentage again, after a structure's weights or criteria changed."""
    rt = _runtime()
    with rt.session() as session:
        changed = _service(session, None).recompute(type_key)
        click.echo(f"{changed} item(s) changed.")
