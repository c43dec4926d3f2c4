"""The ``tracker`` command line. Every command goes through the engine's services.

Errors a user can cause are printed to stderr with what to do, and the exit code is 1
(2 for a badly formed command line); never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError

from engine import db, indexes
from engine.definitions import load_registry
from engine.errors import TrackerError
from engine.models import Event, Item, RoleGrant, User
from engine.runtime import Runtime
from engine.validation import choices


class TrackerGroup(click.Group):
    """Turns engine errors into a message on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TrackerError as exc:
            _fail(exc)
        except (OperationalError, ProgrammingError) as exc:
            text = str(exc.orig).lower()
            if "no such table" in text or "does not exist" in text and "relation" in text:
                _fail_text("The database has not been set up.", "Run 'tracker init' (or 'tracker db upgrade') first.")
            _fail_text(f"The database could not be used: {exc.orig}", "Check TRACKER_DATABASE_URL.")


def _fail(exc: TrackerError) -> None:
    click.secho(f"Error: {exc.message}", fg="red", err=True)
    for problem in getattr(exc, "problems", ()):
        where = f"{problem.path}: " if problem.path else ""
        click.echo(f"  - {where}{problem.message}", err=True)
        if problem.advice:
            click.echo(f"    -> {problem.advice}", err=True)
    if exc.advice:
        click.echo(f"  -> {exc.advice}", err=True)
    sys.exit(1)


def _fail_text(message: str, advice: str) -> None:
    click.secho(f"Error: {message}", fg="red", err=True)
    click.echo(f"  -> {advice}", err=True)
    sys.exit(1)


def _runtime() -> Runtime:
    ctx = click.get_current_context()
    root = ctx.find_root()
    if root.obj is None:
        root.obj = Runtime()
        if root.obj.settings.environment == "training":
            from engine import training

            click.secho(training.banner(root.obj), fg="yellow", bold=True, err=True)
    return root.obj


def _json_arg(value: str | None, what: str = "--data") -> dict | None:
    """Parse JSON given inline or as @file; refuse anything but an object."""
    if value is None:
        return None
    text = value
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise click.BadParameter(f"cannot read {path}: {exc.strerror}", param_hint=what) from None
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(
            f"not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}", param_hint=what
        ) from None
    if not isinstance(parsed, dict):
        raise click.BadParameter('must be a JSON object such as {"field": "value"}', param_hint=what)
    return parsed


as_option = click.option("--as", "as_user", metavar="USER", help="Act as this user (default: the system operator).")


@click.group(cls=TrackerGroup)
def cli() -> None:
    """Tracker: configurable trackers and workflows for training providers."""


# -- database and set-up ----------------------------------------------------------------------


@cli.command()
@click.option("--admin", "admin_name", default="admin", show_default=True, help="User name of the first admin.")
def init(admin_name: str) -> None:
    """Create or upgrade the database and create the first admin user."""
    rt = _runtime()
    _upgrade(rt)
    click.echo(f"Database ready at revision {db.current_revision(rt.engine)}.")
    with rt.session() as session:
        has_admin = session.scalar(select(User.id).join(RoleGrant).where(RoleGrant.role == "admin").limit(1))
        if has_admin:
            click.echo("An admin user already exists; nothing else to do.")
            return
        user, password = rt.users(session).create(admin_name, ["admin"], display_name="Administrator")
    click.echo(f"Created admin user '{user.username}' with password: {password}")
    click.echo("This password is shown only once. Keep it somewhere safe.")


@cli.group("db")
def db_group() -> None:
    """Database schema commands."""


@db_group.command("upgrade")
def db_upgrade() -> None:
    """Create the tables or upgrade them to the latest schema."""
    rt = _runtime()
    _upgrade(rt)
    click.echo(f"Database at revision {db.current_revision(rt.engine)}.")


@db_group.command("indexes")
def db_indexes() -> None:
    """Create the indexes task lists need (derived from the definitions); drop unused ones."""
    created, dropped = indexes.sync(_runtime().engine, _runtime().registry)
    click.echo(f"{len(created)} index(es) created, {len(dropped)} dropped.")


def _upgrade(rt: Runtime) -> None:
    """Migrations, then the indexes the current definitions' task lists need."""
    db.upgrade(rt.engine)
    indexes.sync(rt.engine, rt.registry)


@db_group.command("current")
def db_current() -> None:
    """Show the database's schema revision."""
    click.echo(db.current_revision(_runtime().engine) or "empty (run 'tracker db upgrade')")


@cli.command()
def status() -> None:
    """Check the database, definitions, Redis and the outbox; exit 1 if any is unwell."""
    from engine import health

    report = health.check(_runtime())
    for c in report.checks:
        click.echo(f"{'ok  ' if c.ok else 'FAIL'}  {c.name:<12} {c.detail}")
    if not report.ok:
        sys.exit(1)


# -- definitions --------------------------------------------------------------------------------


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path(file_okay=False, path_type=Path))
def check(folders: tuple[Path, ...]) -> None:
    """Check the built-in definitions, TRACKER_DEFINITIONS_PATH and FOLDERS; list every problem."""
    from engine.definitions.plugin_refs import check_plugin_references

    rt = _runtime()
    registry = load_registry([*rt.settings.definitions_path, *rt.plugins.definition_folders(), *folders])
    check_plugin_references(registry, set(rt.plugins.field_validators()))
    for problem in registry.problems:
        click.echo(str(problem))
    summary = (
        f"{len(registry.types)} tracker types, {len(registry.workflows)} workflows, "
        f"{len(registry.roles)} roles, {len(registry.qualifications)} qualification structures loaded; "
        f"{len(registry.problems)} problem"
        f"{'' if len(registry.problems) == 1 else 's'}."
    )
    if registry.problems:
        click.secho(summary, fg="red")
        sys.exit(1)
    click.secho(summary, fg="green")


@cli.group()
def types() -> None:
    """Inspect tracker types."""


@types.command("list")
def types_list() -> None:
    """List the tracker types that loaded."""
    registry = _runtime().registry
    rows = [("KEY", "NAME", "VERSION", "KIND", "SUBJECT", "WORKFLOW")]
    for t in sorted(registry.types.values(), key=lambda t: (t.kind != "subject", t.key)):
        rows.append((t.key, t.name, str(t.version), t.kind, t.subject, t.workflow))
    _table(rows)


@types.command("show")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="Print the JSON Schema and manifest as JSON.")
def types_show(key: str, as_json: bool) -> None:
    """Show a tracker type: its fields, workflow, templates, rules and task lists."""
    registry = _runtime().registry
    t = registry.type(key)
    wf = registry.workflow_for(t)
    if as_json:
        click.echo(json.dumps({"key": t.key, "name": t.name, "version": t.version, "schema": t.schema}, indent=2))
        return
    click.secho(f"{t.name} ({t.key}, version {t.version})", bold=True)
    if t.description:
        click.echo(t.description)
    click.echo(f"Subject: {t.subject}   Workflow: {wf.name} ({wf.key})   Source: {t.source}")
    click.echo("\nFields (* = required):")
    for line in _field_lines(t.schema):
        click.echo(line)
    click.echo(
        "\nStates: " + ", ".join(f"{s.key} [{s.category}]{' (initial)' if s.initial else ''}" for s in wf.states)
    )
    click.echo("Transitions:")
    for tr in wf.transitions:
        extra = []
        if tr.roles:
            extra.append("roles: " + ", ".join(tr.roles))
        if tr.requires:
            extra.append("requires: " + ", ".join(tr.requires))
        if tr.condition:
            extra.append(f"if {tr.condition}")
        click.echo(
            f"  {tr.key}: {', '.join(tr.sources)} -> {tr.target} '{tr.label}'"
            + (f"  ({'; '.join(extra)})" if extra else "")
        )
    for title, entries in (
        ("Templates", [f"{x.key}: {x.name}" for x in t.templates]),
        ("Rules", [f"{r.key} [{r.severity}]: {r.message}" for r in t.rules]),
        ("Task lists", [f"{x.key}: {x.label}" for x in t.tasklists]),
    ):
        if entries:
            click.echo(f"\n{title}:")
            for entry in entries:
                click.echo(f"  {entry}")


def _field_lines(schema: dict, indent: str = "  ") -> list[str]:
    lines = []
    required = set(schema.get("required") or ())
    for name, prop in (schema.get("properties") or {}).items():
        kind = prop.get("format") or prop.get("type") or ("choice" if choices(prop) else "value")
        mark = "*" if name in required else " "
        label = prop.get("title", "")
        options = choices(prop)
        tail = (
            f"  one of: {', '.join(str(v) for v, _ in options[:8])}{'...' if len(options) > 8 else ''}"
            if options
            else ""
        )
        lines.append(f"{indent}{mark} {name} ({kind}) {label}{tail}")
        if prop.get("type") == "object":
            lines += _field_lines(prop, indent + "    ")
        elif prop.get("type") == "array" and isinstance(prop.get("items"), dict):
            lines += _field_lines(prop["items"], indent + "    ")
    return lines


# -- items ----------------------------------------------------------------------------------------


@cli.group()
def items() -> None:
    """Create, change and read items."""


@items.command("create")
@click.option("--type", "type_key", required=True, help="Tracker type key.")
@click.option("--data", help="Item data as JSON, or @file.json.")
@click.option("--template", help="Start from this template of the type.")
@click.option("--subject", type=int, help="Id of the learner or employer the item is about.")
@click.option("--assignee", help="User name to assign the item to.")
@click.option("--description", default="", help="What needs to be done.")
@as_option
def items_create(type_key, data, template, subject, assignee, description, as_user) -> None:
    """Create an item; it starts in its workflow's initial state."""
    rt = _runtime()
    payload = _json_arg(data)
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, as_user))
        item = service.create(
            type_key, payload, subject_id=subject, assignee=assignee, description=description, template=template
        )
        state = service.workflow_of(item).state(item.status)
        click.echo(f"Created #{item.id} {item.title!r} ({state.label}).")
        _warnings(item)


@items.command("update")
@click.argument("item_id", type=int)
@click.option("--data", required=True, help="Fields to change, as JSON or @file.json; null removes a field.")
@click.option("--version", "expected_version", type=int, help="Refuse if the item is no longer at this version.")
@as_option
def items_update(item_id, data, expected_version, as_user) -> None:
    """Change some fields of an item."""
    rt = _runtime()
    changes = _json_arg(data)
    with rt.session() as session:
        item = rt.items(session, rt.actor(session, as_user)).update(
            item_id, changes=changes, expected_version=expected_version
        )
        click.echo(f"Updated #{item.id} {item.title!r} (version {item.version}).")
        _warnings(item)


@items.command("transition")
@click.argument("item_id", type=int)
@click.option("--to", "to", required=True, help="Target state key.")
@click.option("--data", help="Fields to set while moving, as JSON or @file.json.")
@as_option
def items_transition(item_id, to, data, as_user) -> None:
    """Move an item to another state of its workflow."""
    rt = _runtime()
    payload = _json_arg(data)
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, as_user))
        item = service.transition(item_id, to, data=payload)
        click.echo(f"#{item.id} is now {service.workflow_of(item).state(item.status).label}.")


@items.command("assign")
@click.argument("item_id", type=int)
@click.argument("username", required=False)
@as_option
def items_assign(item_id, username, as_user) -> None:
    """Assign an item to USERNAME (leave it out to unassign); the assignee is notified."""
    rt = _runtime()
    with rt.session() as session:
        item = rt.items(session, rt.actor(session, as_user)).assign(item_id, username)
        click.echo(f"#{item.id} is assigned to {item.assignee.username if item.assignee else 'nobody'}.")


@items.command("comment")
@click.argument("item_id", type=int)
@click.argument("text")
@as_option
def items_comment(item_id, text, as_user) -> None:
    """Add a comment to an item's history."""
    rt = _runtime()
    with rt.session() as session:
        rt.items(session, rt.actor(session, as_user)).comment(item_id, text)
        click.echo(f"Comment added to #{item_id}.")


@items.command("show")
@click.argument("item_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="Print the item as JSON.")
@as_option
def items_show(item_id, as_json, as_user) -> None:
    """Show an item."""
    rt = _runtime()
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, as_user))
        item = service.get(item_id)
        # what the acting user may see: finance fields only with finance.view
        record = {**item_record(item), "data": service.visible_data(item), "problems": service.visible_warnings(item)}
        if as_json:
            click.echo(json.dumps(record, indent=2, default=str))
            return
        t, wf = service.type_of(item), service.workflow_of(item)
        click.secho(f"#{item.id} {item.title}", bold=True)
        click.echo(f"Type: {t.name} (v{item.type_version})   Status: {wf.state(item.status).label}")
        click.echo(f"Assignee: {record['assignee'] or '-'}   Due: {item.due_date or '-'}   Version: {item.version}")
        if item.subject:
            click.echo(f"Subject: #{item.subject.id} {item.subject.title}")
        if item.description:
            click.echo(f"Description: {item.description}")
        click.echo("Data:")
        for line in json.dumps(record["data"], indent=2).splitlines():
            click.echo(f"  {line}")
        _warnings(item, record["problems"])
        options = service.available_transitions(item)
        if options:
            click.echo("Next: " + ", ".join(f"{tr.target} ({tr.label})" for tr in options))


@items.command("list")
@click.option("--type", "type_key", required=True, help="Tracker type key.")
@click.option("--limit", default=50, show_default=True)
@click.option("--offset", default=0)
@as_option
def items_list(type_key, limit, offset, as_user) -> None:
    """List items of one type, newest first."""
    rt = _runtime()
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, as_user))
        found, total = service.list(type_key, limit=limit, offset=offset)
        rows = [("ID", "STATUS", "ASSIGNEE", "DUE", "TITLE")]
        for item in found:
            rows.append(
                (
                    str(item.id),
                    item.status,
                    item.assignee.username if item.assignee else "-",
                    str(item.due_date or "-"),
                    item.title,
                )
            )
        _table(rows)
        click.echo(f"{len(found)} of {total} shown.")


@items.command("history")
@click.argument("item_id", type=int)
@click.option("--json", "as_json", is_flag=True)
@as_option
def items_history(item_id, as_json, as_user) -> None:
    """Show every change to an item, oldest first."""
    rt = _runtime()
    with rt.session() as session:
        service = rt.items(session, rt.actor(session, as_user))
        events = service.history(item_id)
        item = service.get(item_id)
        if as_json:
            records = [{**event_record(e), "payload": service.visible_payload(item, e)} for e in events]
            click.echo(json.dumps(records, indent=2, default=str))
            return
        for event in events:
            who = event.actor.username if event.actor else "system"
            shown = describe_event(event, service.visible_payload(item, event))
            click.echo(f"{event.at:%Y-%m-%d %H:%M:%S}  {who:<12} {shown}")


def item_record(item: Item) -> dict:
    return {
        "id": item.id,
        "type": item.type_key,
        "type_version": item.type_version,
        "status": item.status,
        "title": item.title,
        "description": item.description,
        "subject": item.subject_id,
        "assignee": item.assignee.username if item.assignee else None,
        "due_date": item.due_date.isoformat() if item.due_date else None,
        "data": item.data,
        "problems": item.problems,
        "version": item.version,
        "created_at": item.created_at.isoformat(),
        "updated_at": item.updated_at.isoformat(),
    }


def event_record(event: Event) -> dict:
    return {
        "id": event.id,
        "kind": event.kind,
        "at": event.at.isoformat(),
        "actor": event.actor.username if event.actor else None,
        "payload": event.payload,
    }


def describe_event(event: Event, payload: dict | None = None) -> str:
    """One line of history in words (``payload``: the event's as the reader may see it)."""
    p = event.payload if payload is None else payload
    if event.kind == "created":
        return "created the item"
    if event.kind == "transitioned":
        return f"moved it from {p.get('from')} to {p.get('to')} ({p.get('label', p.get('transition'))})"
    if event.kind == "assigned":
        return f"assigned it to {p.get('to') or 'nobody'} (was {p.get('from') or 'nobody'})"
    if event.kind == "commented":
        return f"commented: {p.get('text')}"
    if event.kind == "migrated":
        return f"migrated it from version {p.get('from_version')} to version {p.get('to_version')} of its type"
    if event.kind == "updated":
        parts = [f"{c['path']}: {_short(c['old'])} -> {_short(c['new'])}" for c in p.get("changes", [])]
        return "changed " + "; ".join(parts)
    if event.kind == "automation_ran":
        return p.get("summary") or "ran"
    from engine import documents, progress  # documents and progress steps describe themselves

    return documents.describe_event(event.kind, p) or progress.describe_event(event.kind, p) or event.kind


def _short(value: Any) -> str:
    text = "(empty)" if value is None else json.dumps(value) if not isinstance(value, str) else value
    return text if len(text) <= 60 else text[:57] + "..."


def _warnings(item: Item, problems: list | None = None) -> None:
    for problem in (item.problems if problems is None else problems) or ():
        click.secho(f"Warning: {problem['message']}", fg="yellow", err=True)
        if problem.get("advice"):
            click.echo(f"  -> {problem['advice']}", err=True)


# -- users -----------------------------------------------------------------------------------------


@cli.group()
def users() -> None:
    """Manage users."""


@users.command("create")
@click.argument("username")
@click.option("--role", "roles", multiple=True, required=True, help="Role key; repeat for several.")
@click.option("--name", "display_name", default="", help="Display name.")
@click.option("--email", default=None)
def users_create(username, roles, display_name, email) -> None:
    """Create a user with a generated password, shown once."""
    rt = _runtime()
    with rt.session() as session:
        user, password = rt.users(session).create(username, list(roles), display_name=display_name, email=email)
    click.echo(f"Created user '{user.username}' ({', '.join(roles)}) with password: {password}")


@users.command("list")
def users_list() -> None:
    """List users and their roles."""
    rt = _runtime()
    with rt.session() as session:
        rows = [("USER", "NAME", "ROLES", "ACTIVE")]
        for user in session.scalars(select(User).order_by(User.username)):
            rows.append((user.username, user.display_name, ", ".join(user.role_keys), "yes" if user.active else "no"))
        _table(rows)


@users.group("token")
def users_token() -> None:
    """API tokens: a program sends one as 'Authorization: Bearer <token>' to /api/v1."""


@users_token.command("create")
@click.argument("username")
@click.option("--label", default="", help="What the token is for, e.g. 'nightly ILR export'.")
def token_create(username: str, label: str) -> None:
    """Create an API token acting as USERNAME. The token alone goes to stdout, shown only once
    (it is stored hashed), so TOKEN=$(tracker users token create NAME) works."""
    rt = _runtime()
    with rt.session() as session:
        token, text = rt.users(session).create_token(username, label)
        click.echo(f"Created API token #{token.id} '{token.name}' for '{username}'.", err=True)
    click.echo("It is shown only this once; keep it somewhere safe.", err=True)
    click.echo(text)


@users_token.command("list")
@click.argument("username")
def token_list(username: str) -> None:
    """List USERNAME's API tokens (never the tokens themselves)."""
    rt = _runtime()
    with rt.session() as session:
        tokens = rt.users(session).tokens(username)
        if not tokens:
            click.echo(f"'{username}' has no API tokens. Create one with 'tracker users token create {username}'.")
            return
        rows = [("ID", "LABEL", "STARTS WITH", "CREATED", "LAST USED", "STATE")]
        for token in tokens:
            rows.append(
                (
                    str(token.id),
                    token.name,
                    token.prefix + "...",
                    f"{token.created_at:%Y-%m-%d %H:%M}",
                    f"{token.last_used_at:%Y-%m-%d %H:%M}" if token.last_used_at else "never",
                    f"revoked {token.revoked_at:%Y-%m-%d}" if token.revoked_at else "active",
                )
            )
        _table(rows)


@users_token.command("revoke")
@click.argument("token_id", type=int, metavar="ID")
def token_revoke(token_id: int) -> None:
    """Revoke the API token ID (see 'tracker users token list'); it stops working at once."""
    rt = _runtime()
    with rt.session() as session:
        token = rt.users(session).revoke_token(token_id)
        click.echo(f"API token #{token.id} '{token.name}' of '{token.user.username}' is revoked.")


# -- notifications and background jobs --------------------------------------------------------------


def _log_to_stderr() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@click.option("--burst", is_flag=True, help="Stop once the queue is empty (for scripts and tests).")
@click.option("--name", help="Worker name shown by RQ (default: generated).")
@click.option(
    "--fork/--no-fork",
    default=True,
    show_default=True,
    help="Run each job in a forked work horse (rq's Worker), or in the worker process (rq's SimpleWorker: "
    "keeps its database and SMTP connections between jobs, so it is several times faster).",
)
def worker(burst: bool, name: str | None, fork: bool) -> None:
    """Run an RQ worker that delivers notifications from TRACKER_REDIS_URL's queue.

    Run as many as you need; each takes its own jobs. Without Redis there is no queue:
    notifications go out from the web process, and 'tracker scheduler' retries them.
    """
    from engine import jobs

    rt = _runtime()
    url = rt.settings.redis_url
    if not url:
        _fail_text(
            "TRACKER_REDIS_URL is not set, so there is no queue for a worker.",
            "Set TRACKER_REDIS_URL (e.g. redis://127.0.0.1:6379/0), or run without Redis: "
            "notifications then go out from the web process and 'tracker scheduler' retries them.",
        )
    try:
        jobs.redis_connection(url).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        from engine.health import _safe

        _fail_text(f"Redis at {_safe(url)} is not reachable: {exc}", "Start Redis or fix TRACKER_REDIS_URL.")
    _log_to_stderr()
    click.echo(
        f"Worker listening on queue '{rt.settings.queue_name}'"
        + (" until it is empty." if burst else " (Ctrl+C to stop).")
    )
    jobs.run_worker(rt, burst=burst, name=name, fork=fork)


@cli.command()
@click.option("--once", is_flag=True, help="Do one round and exit (exit code 1 if a step failed).")
@click.option(
    "--interval", default=60.0, show_default=True, type=click.FloatRange(min=1), help="Seconds between rounds."
)
def scheduler(once: bool, interval: float) -> None:
    """Send reminders and daily digests, and send on notifications still waiting (retries,
    and rows left behind while Redis was down). Run one next to the web app and workers."""
    from engine import jobs

    rt = _runtime()
    ticker = jobs.Scheduler(rt)
    if not once:
        _log_to_stderr()
        click.echo(f"Scheduler running every {interval:g} s (Ctrl+C to stop).")
        try:
            ticker.run(interval)
        except KeyboardInterrupt:
            click.echo("Scheduler stopped.")
        return
    report = ticker.tick()
    click.echo(
        f"{report.reminders} reminder(s) written, {report.digests} digest(s) sent, "
        + (
            f"{report.queued} waiting notification(s) queued."
            if rt.settings.redis_url
            else f"{report.relayed} waiting notification(s) relayed."
        )
    )
    if report.training:
        click.echo(report.training + ".")
    if report.automations:
        click.echo(f"{report.automations} process automation(s) ran; see 'tracker automations list'.")
    for problem in report.problems:
        click.secho(f"Error: {problem}", fg="red", err=True)
    if report.problems:
        sys.exit(1)


@cli.group()
def outbox() -> None:
    """Inspect notifications waiting to go out, and retry dead-lettered ones."""


@outbox.command("list")
@click.option(
    "--status", type=click.Choice(["pending", "processing", "done", "dead"]), help="Only rows with this status."
)
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
def outbox_list(status: str | None, limit: int) -> None:
    """List outbox rows, newest first, with their attempts and last error."""
    from engine import outbox as relay

    rt = _runtime()
    with rt.session() as session:
        found = relay.listing(session, status, limit=limit)
        rows = [("ID", "STATUS", "KIND", "ATTEMPTS", "ITEM", "CREATED", "LAST ERROR")]
        for row in found:
            rows.append(
                (
                    str(row.id),
                    row.status,
                    row.kind,
                    str(row.attempts),
                    f"#{row.item_id}" if row.item_id else "-",
                    f"{row.created_at:%Y-%m-%d %H:%M}",
                    _short(row.last_error) if row.last_error else "",
                )
            )
        _table(rows)
        totals = relay.counts(session)
        click.echo(f"{len(found)} shown; {totals['pending']} waiting, {totals['dead']} dead-lettered in all.")


@outbox.command("retry")
@click.argument("outbox_id", type=int)
def outbox_retry(outbox_id: int) -> None:
    """Put the dead-lettered row OUTBOX_ID back in line, with a fresh set of retries."""
    from engine import outbox as relay
    from engine.permissions import Actor

    rt = _runtime()
    with rt.session() as session:
        row = relay.retry(session, outbox_id, Actor.system())
        session.refresh(row)  # without Redis it was delivered right after the commit
    click.echo(f"Outbox row #{outbox_id} is back in line; it is now {row.status}.")


# -- demo ------------------------------------------------------------------------------------------


@cli.command("demo-data")
def demo_data() -> None:
    """Load demo users and items (once) and print the demo logins."""
    from engine import demo
    from engine.documents import DocumentStore

    rt = _runtime()
    _upgrade(rt)
    with rt.session() as session:
        store = DocumentStore.from_settings(rt.settings)
        logins, created = demo.load(session, rt.registry, rt.settings.instance_path, store=store)
    if created:
        click.echo(f"Loaded {created} demo items.")
    else:
        click.echo("Demo data is already loaded.")
    click.echo("Demo logins (user / password / roles):")
    for username, password, roles in logins:
        click.echo(f"  {username:<10} {password:<22} {', '.join(roles)}")


def _table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


from engine import cli_plugins  # noqa: E402 - registers after the commands above exist

cli_plugins.register(cli)
from engine.cli_automations import automations  # noqa: E402 - it imports helpers from this module

cli.add_command(automations)
from engine import cli_ops  # noqa: E402 - backup, restore, training

cli_ops.register(cli)

from engine import cli_types  # noqa: E402, F401 - adds export, import, publish, versions, rollback, migrate to 'types'
from engine.cli_import import import_command  # noqa: E402 - tracker import TYPE FILE

cli.add_command(import_command)

from engine.cli_ilr import ilr  # noqa: E402 - tracker ilr export|validate

cli.add_command(ilr)
from engine.cli_documents import documents  # noqa: E402 - tracker documents attach|list|qa|download|delete
from engine.cli_progress import progress  # noqa: E402 - tracker progress show|tick|untick|structures|recompute

cli.add_command(documents)
cli.add_command(progress)

cli.add_command(__import__("engine.cli_security", fromlist=["audit_group"]).audit_group)  # also: users unlock

if __name__ == "__main__":
    cli(prog_name="tracker")
