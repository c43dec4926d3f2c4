"""Who may do what: roles carry capabilities, a type may override them, ``own`` scopes them.

Every service checks here, so the web UI, the API, the CLI and plugins share one answer.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, false, or_, true

from engine.definitions.model import Registry, Role, TrackerType
from engine.errors import PermissionDenied
from engine.models import Item, User

ADMIN = Role("admin", "Administrator", frozenset({"*"}))


@dataclass(frozen=True)
class Actor:
    """The person (or the system) on whose behalf a service acts."""

    user_id: int | None
    username: str
    roles: tuple[Role, ...]

    @classmethod
    def system(cls) -> Actor:
        """The operator at the command line: acts with every capability, recorded as nobody."""
        return cls(None, "system", (ADMIN,))

    @classmethod
    def for_user(cls, user: User, registry: Registry) -> Actor:
        roles = tuple(registry.roles[key] for key in user.role_keys if key in registry.roles)
        return cls(user.id, user.username, roles)

    @property
    def is_admin(self) -> bool:
        return any("*" in r.capabilities for r in self.roles)

    @property
    def role_keys(self) -> frozenset[str]:
        return frozenset(r.key for r in self.roles)


def role_capabilities(role: Role, tracker_type: TrackerType | None) -> frozenset[str]:
    """A role's capabilities for one type: the type's ``permissions`` entry wins when present."""
    if "*" in role.capabilities:
        return role.capabilities
    if tracker_type is not None and role.key in tracker_type.permissions:
        return frozenset(tracker_type.permissions[role.key])
    return role.capabilities


def _granting(actor: Actor, capability: str, tracker_type: TrackerType | None) -> list[Role]:
    return [r for r in actor.roles if "*" in (caps := role_capabilities(r, tracker_type)) or capability in caps]


def owns(actor: Actor, item: Item) -> bool:
    return actor.user_id is not None and actor.user_id in (item.assignee_id, item.created_by_id)


def allows(actor: Actor, capability: str, tracker_type: TrackerType | None = None, item: Item | None = None) -> bool:
    """True when one of the actor's roles grants ``capability`` on this type (and item)."""
    for role in _granting(actor, capability, tracker_type):
        if role.scope != "own" or item is None or owns(actor, item):
            return True
    return False


_VERBS = {
    "items.create": "create",
    "items.view": "view",
    "items.edit": "edit",
    "items.transition": "change the status of",
    "documents.qa": "check documents of",
    "progress.edit": "record progress on",
}


def require(actor: Actor, capability: str, tracker_type: TrackerType | None = None, item: Item | None = None) -> None:
    """Raise PermissionDenied, saying what is missing, unless ``allows`` is true."""
    if allows(actor, capability, tracker_type, item):
        return
    what = f"{tracker_type.name} items" if tracker_type else "this"
    verb = _VERBS.get(capability)
    if item is not None and _granting(actor, capability, tracker_type):
        raise PermissionDenied(
            f"{actor.username} may only {verb or 'use'} {what} assigned to or created by them.",
            "Ask an administrator or the item's assignee.",
        )
    action = f"{verb} {what}" if verb else f"use '{capability}'"
    raise PermissionDenied(
        f"{actor.username} may not {action}.",
        f"This needs the '{capability}' capability; ask an administrator for a role that has it.",
    )


def may_fill_forms(actor: Actor, registry: Registry) -> bool:
    """True when the actor may create or edit items of some type: who may use the forms'
    lookups (postcode, ULN, company number), which query outside services with what is typed."""
    return any(allows(actor, cap, t) for t in registry.types.values() for cap in ("items.create", "items.edit"))


def visible_clause(actor: Actor, tracker_type: TrackerType) -> ColumnElement[bool]:
    """A WHERE clause selecting the items of ``tracker_type`` the actor may view."""
    roles = _granting(actor, "items.view", tracker_type)
    if any(r.scope != "own" for r in roles):
        return true()
    if roles and actor.user_id is not None:
        return or_(Item.assignee_id == actor.user_id, Item.created_by_id == actor.user_id)
    return false()
