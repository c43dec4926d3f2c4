"""The audit log: who did what to whom, from where, in the same transaction as the change.

Services call :func:`record` with the session the change is written in, before they commit,
so an audit row exists exactly when its change does (a refused change leaves neither; a
refused sign-in is itself the change). Bulk exports and definition publishes keep their own
detailed rows (``bulk_exports``, ``definition_publishes``); their audit rows link to them.

Kinds, one per line of :data:`KINDS`, are grouped by the part before the dot, which the
admin page and ``tracker audit list --kind`` filter on (``login`` matches every ``login.*``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from engine.models import AuditEntry, BulkExport, DefinitionPublish, User
from engine.permissions import Actor

#: every kind the engine writes, with what it means (the admin page's filter lists them)
KINDS: dict[str, str] = {
    "login.success": "signed in",
    "login.failure": "sign-in refused: wrong user name or password",
    "login.code_failure": "sign-in refused: wrong two-factor code",
    "login.locked": "sign-in refused: the account is locked",
    "account.locked": "account locked after too many failed sign-ins",
    "account.unlocked": "account unlocked",
    "logout": "signed out",
    "session.ended": "session ended (idle or expired)",
    "2fa.enrolled": "two-factor sign-in set up",
    "2fa.reset": "two-factor sign-in reset",
    "2fa.recovery_code_used": "signed in with a recovery code",
    "token.created": "API token created",
    "token.revoked": "API token revoked",
    "user.created": "user created",
    "user.details": "user's name or e-mail changed",
    "user.roles": "user's roles changed",
    "user.deactivated": "user deactivated",
    "user.reactivated": "user reactivated",
    "role.settings": "role setting changed",
    "export.csv": "items exported",
    "export.api_list": "API list refused (address not allowed)",
    "export.ilr_xml": "ILR file made",
    "export.ilr_download": "ILR file downloaded",
    "definition.publish": "type published",
    "definition.rollback": "type rolled back",
    "definition.import": "type imported",
    "plugin.errors_cleared": "plugin errors cleared",
}


def kind_groups() -> list[str]:
    """The kinds' groups (``login``, ``user`` ...), in the order :data:`KINDS` lists them."""
    return list(dict.fromkeys(k.split(".", 1)[0] for k in KINDS))


def record(
    session: Session,
    kind: str,
    *,
    actor: Actor | None = None,
    user: User | None = None,
    username: str = "",
    address: str | None = "",
    target: str = "",
    detail: dict[str, Any] | None = None,
    bulk_export: BulkExport | None = None,
    definition_publish: DefinitionPublish | None = None,
) -> AuditEntry:
    """Add one audit row to ``session``; the caller's commit writes it with the change.

    ``actor`` is who acted (None: the account itself, e.g. a sign-in attempt); ``user`` the
    account concerned, ``username`` the name typed when there is no such account."""
    if kind not in KINDS:
        raise ValueError(f"unknown audit kind {kind!r}")  # a programming error, not a user's
    entry = AuditEntry(
        kind=kind,
        actor_id=actor.user_id if actor is not None else (user.id if user is not None else None),
        actor_name=(actor.username if actor is not None else (user.username if user is not None else username))[:64],
        user_id=user.id if user is not None else None,
        username=(user.username if user is not None else username)[:64],
        address=(address or "")[:64],
        target=target[:300],
        detail=detail or {},
        bulk_export=bulk_export,
        definition_publish=definition_publish,
    )
    session.add(entry)
    return entry


@dataclass(frozen=True)
class AuditFilter:
    """What to list: a kind or a group of kinds, a user (as actor or as the account concerned),
    and a range of days (inclusive, UTC)."""

    kind: str = ""
    username: str = ""
    since: date | None = None
    until: date | None = None

    def clauses(self) -> list:
        out = []
        if self.kind:
            out.append(AuditEntry.kind == self.kind if "." in self.kind else AuditEntry.kind.like(f"{self.kind}%"))
        if self.username:
            name = self.username.strip().lower()
            out.append(or_(AuditEntry.actor_name == name, AuditEntry.username == name))
        if self.since is not None:
            out.append(AuditEntry.at >= datetime.combine(self.since, datetime.min.time()))
        if self.until is not None:
            out.append(AuditEntry.at < datetime.combine(self.until + timedelta(days=1), datetime.min.time()))
        return out


def entries(session: Session, flt: AuditFilter, *, limit: int = 50, offset: int = 0) -> tuple[list[AuditEntry], int]:
    """A page of entries matching ``flt``, newest first, and how many match in all."""
    clauses = flt.clauses()
    total = session.scalar(select(func.count()).select_from(AuditEntry).where(*clauses)) or 0
    stmt = select(AuditEntry).where(*clauses).order_by(AuditEntry.id.desc()).limit(limit).offset(offset)
    return list(session.scalars(stmt)), total


def describe(entry: AuditEntry) -> str:
    """The entry in words, for the admin page and the command line."""
    what = KINDS.get(entry.kind, entry.kind)
    parts = [what]
    if entry.username and entry.username != entry.actor_name:
        parts.append(f"for {entry.username}")
    if entry.target:
        parts.append(f"({entry.target})")
    return " ".join(parts)
