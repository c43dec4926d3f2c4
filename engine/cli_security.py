"""``tracker users unlock NAME`` and ``tracker audit list``: locked accounts and the audit log
from the command line (acting as the system operator, like the other user commands)."""

from __future__ import annotations

import json
from datetime import date

import click

from engine import audit
from engine.cli import _runtime, _table, users


@users.command("unlock")
@click.argument("username")
def users_unlock(username: str) -> None:
    """Unlock USERNAME after too many failed sign-ins; their failed attempts are forgotten."""
    rt = _runtime()
    with rt.session() as session:
        user = rt.users(session).unlock(username)
        click.echo(f"'{user.username}' is unlocked and can sign in again.")


def _day(_ctx, param, value: str | None) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"'{value}' is not a date; write it as YYYY-MM-DD", param=param) from None


@click.group("audit")
def audit_group() -> None:
    """The audit log: sign-ins, lockouts, two-factor changes, tokens, users and roles, exports, publishes."""


@audit_group.command("list")
@click.option("--kind", default="", help="A kind (login.failure) or a group of kinds (login, user, export ...).")
@click.option("--user", "username", default="", help="Entries by or about this user.")
@click.option("--since", callback=_day, help="From this day (YYYY-MM-DD, UTC).")
@click.option("--until", callback=_day, help="Up to and including this day (YYYY-MM-DD, UTC).")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--offset", default=0, type=click.IntRange(0))
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def audit_list(kind: str, username: str, since, until, limit: int, offset: int, as_json: bool) -> None:
    """List audit entries, newest first."""
    if kind and kind not in audit.KINDS and kind not in audit.kind_groups():
        raise click.BadParameter(
            f"there is no kind '{kind}'; use one of: {', '.join([*audit.kind_groups(), *audit.KINDS])}",
            param_hint="--kind",
        )
    rt = _runtime()
    flt = audit.AuditFilter(kind=kind, username=username, since=since, until=until)
    with rt.session() as session:
        rows, total = audit.entries(session, flt, limit=limit, offset=offset)
        if as_json:
            for e in rows:
                record = {
                    "id": e.id,
                    "at": e.at.isoformat() + "Z",
                    "kind": e.kind,
                    "actor": e.actor_name or "system",
                    "user": e.username,
                    "address": e.address,
                    "target": e.target,
                    "detail": e.detail,
                    "bulk_export_id": e.bulk_export_id,
                    "definition_publish_id": e.definition_publish_id,
                }
                click.echo(json.dumps(record))
            return
        if not rows:
            click.echo(
                "No audit entries match." if total or kind or username or since or until else "Nothing recorded yet."
            )
            return
        table = [("WHEN (UTC)", "WHO", "KIND", "WHAT", "ADDRESS")]
        for e in rows:
            table.append(
                (f"{e.at:%Y-%m-%d %H:%M:%S}", e.actor_name or "system", e.kind, audit.describe(e), e.address or "-")
            )
        _table(table)
        if total > offset + len(rows):
            click.echo(f"{total - offset - len(rows)} older entries; use --offset {offset + len(rows)} to see them.")
