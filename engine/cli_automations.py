"""``tracker automations``: list process automations, run those due (for cron and tests),
and try one without changing anything."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import click
from sqlalchemy import select

from engine.automation import ACTIVE_STATE, Spec, to_local, to_utc
from engine.cli import _runtime, _table, as_option
from engine.models import Item, utcnow
from engine.services.automation import AutomationService, automation_item


def _now(value: str | None, zone) -> datetime:
    """``--now`` as naive UTC: an ISO date-time, read in TRACKER_TIMEZONE unless it has an offset."""
    if not value:
        return utcnow()
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"'{value}' is not a date and time; write it like 2031-03-10T07:30 (local time) or 2031-03-10T07:30+00:00",
            param_hint="--now",
        ) from None
    if moment.tzinfo is not None:
        return moment.astimezone(UTC).replace(tzinfo=None)
    return to_utc(moment, zone)


now_option = click.option(
    "--now",
    "now_text",
    metavar="ISO",
    help="Act as if it were this moment, e.g. 2031-03-10T07:30 (read in TRACKER_TIMEZONE). Default: now.",
)


@click.group()
def automations() -> None:
    """Process automations: list them, run the ones due, try one out (dry run)."""


@automations.command("list")
def automations_list() -> None:
    """List every process automation with its state, trigger, next and last run."""
    rt = _runtime()
    with rt.session() as session:
        runner = AutomationService(session, rt.registry, zone=rt.settings.timezone)
        stmt = select(Item).where(Item.type_key.in_(runner.automation_types())).order_by(Item.id)
        found = list(session.scalars(stmt))
        if not found:
            click.echo("There are no process automations yet. Create one from the 'Process Automation' type.")
            return
        rows = [("ID", "STATE", "NAME", "WHEN", "NEXT RUN", "LAST RUN")]
        for item in found:
            spec = Spec.of(item)
            upcoming = runner.next_run(spec) if item.status == ACTIVE_STATE else None
            last = runner.runs(item.id, limit=1)
            rows.append(
                (
                    str(item.id),
                    item.status,
                    spec.name,
                    spec.describe_trigger(),
                    f"{upcoming:%Y-%m-%d %H:%M}" if upcoming else "-",
                    f"{last[0].at:%Y-%m-%d %H:%M}" if last else "never",
                )
            )
        _table(rows)


@automations.command("run-due")
@now_option
def run_due(now_text: str | None) -> None:
    """Run the active automations whose schedule or date has come (what 'tracker scheduler'
    does each minute). Running it again for the same moment does nothing twice."""
    rt = _runtime()
    zone = ZoneInfo(rt.settings.timezone)
    now = _now(now_text, zone)
    with rt.session() as session:
        reports = AutomationService(session, rt.registry, clock=lambda: now, zone=zone).run_due(now)
    when = f"{to_local(now, zone):%Y-%m-%d %H:%M} {rt.settings.timezone}"
    if not reports:
        click.echo(f"No automation was due at {when}.")
        return
    for report in reports:
        click.echo(f"#{report.automation_id} {report.name}: {report.summary()}")
    failed = sum(1 for r in reports if r.failure or r.count("failed"))
    click.echo(f"{len(reports)} automation(s) ran at {when}" + (f"; {failed} with failures." if failed else "."))


@automations.command("preview")
@click.argument("automation_id", type=int, metavar="ID")
@now_option
@as_option
def preview(automation_id: int, now_text: str | None, as_user: str | None) -> None:
    """Dry run: what automation ID would do if it ran now, item by item; nothing changes."""
    rt = _runtime()
    with rt.session() as session:
        actor = rt.actor(session, as_user)
        item = automation_item(session, rt.registry, actor, automation_id)
        zone = ZoneInfo(rt.settings.timezone)
        now = _now(now_text, zone)
        result = AutomationService(session, rt.registry, clock=lambda: now, zone=zone).preview(item)
        click.echo(f"#{item.id} {result.spec.name} ({item.status})")
        click.echo(result.when)
        if result.failure:
            click.secho(f"It would not run: {result.failure}", fg="red")
            return
        click.echo(result.note)
        if not result.rows:
            click.echo("No items would be affected.")
            return
        for row in result.rows:
            label = f"#{row.item.id} {row.item.title}" if row.item is not None else "(no item)"
            click.echo(f"  {label}: {row.text}")
        if result.total > len(result.rows):
            click.echo(f"  ... and {result.total - len(result.rows)} more")
        click.echo(f"{result.total} item(s) in all.")
