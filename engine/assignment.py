"""Assignment rules (``assignment:`` in type.yaml) and role queues.

When a new item names no assignee, its type's rule picks one inside the creating
transaction (:func:`choose`, called by ``ItemService.create``):

- ``round_robin``: the active users of ``role`` in turn. The turn is a counter in
  :class:`~engine.models.AssignmentCursor` bumped by one atomic ``UPDATE ... RETURNING``,
  so turns stay fair across web processes and workers on PostgreSQL and SQLite alike
  (the row lock, or SQLite's single writer, orders concurrent creates).
- ``least_loaded``: the active user of ``role`` with the fewest open items of the type.
- ``field``: the user whose name is in ``field`` of the item; an unknown name is refused
  with a problem on that field.
- ``queue``: nobody; the item waits in the queue of ``role``, whose users claim it
  (:class:`QueueService`). Claiming is one conditional ``UPDATE``: of two users claiming
  at once one wins, the other gets a :class:`~engine.errors.Conflict`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy import false, func, or_, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from engine.definitions.model import Registry, TrackerType
from engine.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationFailed
from engine.models import AssignmentCursor, Item, RoleGrant, User, utcnow
from engine.validation import get_path, humanize_label, is_filled, schema_at

if TYPE_CHECKING:
    from engine.services.items import ItemService

log = logging.getLogger(__name__)


def choose(
    session: Session, registry: Registry, tracker_type: TrackerType, data: dict, problems: list[Problem]
) -> str | None:
    """The user name the type's assignment rule gives a new item with ``data``, or None
    (no rule, a queue, an empty field, or nobody with the role). A field naming an unknown
    user adds a problem to ``problems``."""
    rule = tracker_type.assignment
    if rule is None or rule.rule == "queue":
        return None
    if rule.rule == "field":
        return _from_field(session, tracker_type, rule.field or "", data, problems)
    if rule.rule == "round_robin":
        user = _round_robin(session, tracker_type, rule.role or "")
    else:
        user = least_loaded(session, registry, tracker_type, rule.role or "")
    if user is None:
        log.warning("no active user has role %s: new %s item left unassigned", rule.role, tracker_type.key)
    return user.username if user else None


def role_users(session: Session, role: str) -> list[User]:
    """Active users with ``role``, in a fixed order (by id)."""
    stmt = select(User).join(RoleGrant).where(RoleGrant.role == role, User.active).order_by(User.id)
    return list(session.scalars(stmt))


def least_loaded(session: Session, registry: Registry, tracker_type: TrackerType, role: str) -> User | None:
    """The active user of ``role`` with the fewest open items of ``tracker_type`` (the
    first by id on a tie), or None when nobody has the role."""
    open_states = registry.workflow_for(tracker_type).states_in(["open"])
    load = (
        select(func.count(Item.id))
        .where(Item.assignee_id == User.id, Item.type_key == tracker_type.key, Item.status.in_(open_states))
        .scalar_subquery()
    )
    stmt = select(User).join(RoleGrant).where(RoleGrant.role == role, User.active).order_by(load, User.id).limit(1)
    return session.scalar(stmt)


def _round_robin(session: Session, tracker_type: TrackerType, role: str) -> User | None:
    users = role_users(session, role)
    if not users:
        return None
    return users[(next_turn(session, tracker_type.key, role) - 1) % len(users)]


def next_turn(session: Session, type_key: str, role: str) -> int:
    """Take the next turn of the type's round robin (1, 2, 3 ...) in the session's
    transaction; concurrent transactions get different turns."""
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    session.execute(insert(AssignmentCursor).values(type_key=type_key, role=role, turns=0).on_conflict_do_nothing())
    stmt = (
        update(AssignmentCursor)
        .where(AssignmentCursor.type_key == type_key, AssignmentCursor.role == role)
        .values(turns=AssignmentCursor.turns + 1)
        .returning(AssignmentCursor.turns)
        .execution_options(synchronize_session=False)
    )
    return session.execute(stmt).scalar_one()


def _from_field(
    session: Session, tracker_type: TrackerType, field: str, data: dict, problems: list[Problem]
) -> str | None:
    value = get_path(data, field)
    if not is_filled(value):
        return None
    label = (schema_at(tracker_type.schema, field) or {}).get("title") or humanize_label(field.split(".")[-1])
    pointer = "/" + field.replace(".", "/")
    user = session.scalar(select(User).where(User.username == str(value).strip()))
    if user is None or not user.active:
        problems.append(
            Problem(
                pointer,
                f"{label} names '{value}', who is not an active user, so the item cannot be assigned to them",
                f"Enter the user name of an active user in {label}, or leave it empty.",
            )
        )
        return None
    return user.username


# -- queues -------------------------------------------------------------------------------------


class QueueService:
    """A role's queue: unassigned open items of the types whose ``assignment`` rule is
    ``queue`` for that role, and claiming them. Works through an
    :class:`~engine.services.items.ItemService` for the actor, so the claim is recorded,
    announced and committed like any other assignment."""

    def __init__(self, items: ItemService) -> None:
        self.items = items
        self.session = items.session
        self.actor = items.actor
        self.registry = items.registry

    def queue_types(self) -> list[TrackerType]:
        """Types with a queue the actor serves (an admin serves every queue), by name."""
        found = [
            t
            for t in self.registry.types.values()
            if t.assignment is not None
            and t.assignment.rule == "queue"
            and (self.actor.is_admin or t.assignment.role in self.actor.role_keys)
        ]
        return sorted(found, key=lambda t: t.name.lower())

    def _where(self, types: list[TrackerType]) -> list[Any]:
        clauses = []
        for t in types:
            open_states = self.registry.workflow_for(t).states_in(["open"])
            clauses.append((Item.type_key == t.key) & Item.status.in_(open_states))
        return [Item.assignee_id.is_(None), or_(*clauses) if clauses else false()]

    def waiting(self, *, type_key: str | None = None, limit: int = 25, offset: int = 0) -> tuple[list[Item], int]:
        """A page of the items waiting in the actor's queues (or in the queue of ``type_key``),
        oldest first, and how many in all.

        Raises:
            ValidationFailed: ``type_key`` is not one of the actor's queues (an empty page
                would read as an empty queue).
        """
        served = self.queue_types()
        if type_key is not None and type_key not in {t.key for t in served}:
            names = ", ".join(t.key for t in served)
            advice = f"Use one of your queues: {names}." if served else "Your roles have no queue."
            raise ValidationFailed([Problem("type", f"You have no '{type_key}' queue", advice)])
        types = [t for t in served if type_key is None or t.key == type_key]
        where = self._where(types)
        total = self.session.scalar(select(func.count()).select_from(Item).where(*where)) or 0
        stmt = select(Item).where(*where).order_by(Item.created_at, Item.id).limit(limit).offset(offset)
        return list(self.session.scalars(stmt)), total

    def counts(self) -> dict[str, int]:
        """``{type key: items waiting}`` for each queue the actor serves."""
        return {t.key: self.waiting(type_key=t.key, limit=0)[1] for t in self.queue_types()}

    def claim(self, item_id: int) -> Item:
        """Assign the waiting item to the actor and return it.

        Raises NotFound, PermissionDenied (the actor does not serve the item's queue),
        ValidationFailed (the item is not in a queue, or no longer open) or Conflict
        (someone claimed it first, also at the same moment).
        """
        items = self.items
        with items._transaction():  # the item service's transaction: commit, rollback, watchers
            item = self.session.get(Item, item_id)
            if item is None:
                raise NotFound(f"There is no item #{item_id}.", "Check the number.")
            tracker_type = items.type_of(item)
            rule = tracker_type.assignment
            if rule is None or rule.rule != "queue":
                raise ValidationFailed(
                    [
                        Problem(
                            "assignee",
                            f"#{item.id} is not in a queue: {tracker_type.name} items are assigned, not claimed",
                            "Ask someone who may edit it to assign it to you.",
                        )
                    ]
                )
            me = self.actor.user_id
            if me is None or not (self.actor.is_admin or rule.role in self.actor.role_keys):
                role = self.registry.roles.get(rule.role)
                raise PermissionDenied(
                    f"{self.actor.username} may not claim {tracker_type.name} items.",
                    f"Only users with the role '{role.name if role else rule.role}' claim them from their queue.",
                )
            workflow = items.workflow_of(item)
            state = workflow.state(item.status)
            if state is None or state.category != "open":
                raise ValidationFailed(
                    [
                        Problem(
                            "status",
                            f"#{item.id} is '{state.label if state else item.status}', so there is nothing to claim",
                            "Pick an open item from your queue.",
                        )
                    ]
                )
            taken = self.session.execute(
                update(Item)
                .where(Item.id == item.id, Item.assignee_id.is_(None))
                .values(assignee_id=me, updated_by_id=me, updated_at=utcnow(), version=Item.version + 1)
                .execution_options(synchronize_session=False)
            ).rowcount
            if not taken:
                self.session.rollback()
                holder = self.session.scalar(
                    select(User).join(Item, Item.assignee_id == User.id).where(Item.id == item.id)
                )
                who = holder.label if holder else "someone else"
                raise Conflict(
                    f"#{item.id} {item.title} was claimed by {who} just before you.",
                    "Pick another item from your queue.",
                )
            self.session.refresh(item)
            items._record(item, "assigned", {"from": None, "to": self.actor.username, "claimed": True})
            items._outbox_event(item, "assigned", {"from": None, "to": self.actor.username})
            items._changed_for_watchers(item, f"{self.actor.username} claimed {item.title}")
            return item
