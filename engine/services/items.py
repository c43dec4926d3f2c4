"""Items: create, update, transition, assign, comment, read their history.

Each public method is one transaction: it checks permissions, validates (JSON Schema,
rules, per-state field rules), writes the change with its events and outbox rows, and
commits; or it changes nothing and raises a :class:`~engine.errors.TrackerError`.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from sqlalchemy import and_, false, func, or_, select, true
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session
from sqlalchemy.orm.exc import StaleDataError

from engine import assignment, db, documents, notifications, permissions, progress, sandbox
from engine.definitions.model import Registry, TrackerType, Transition, Workflow
from engine.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationFailed
from engine.history import diff
from engine.models import Event, Item, Outbox, RoleGrant, User, Watcher
from engine.permissions import Actor
from engine.rules import rule_problems
from engine.validation import get_path, humanize_label, is_filled, schema_at, schema_problems, without_refused

log = logging.getLogger(__name__)


class DuplicateItem(ValidationFailed):
    """An item with the same identity (e.g. the same ULN) already exists."""

    status = 409

    def __init__(self, problems: list[Problem], existing_id: int | None) -> None:
        super().__init__(problems)
        self.existing_id = existing_id


def item_link(item_id: int) -> str:
    """The path of the item page (where it is edited); notifications carry it as their deep link."""
    return f"/items/{item_id}"


class ItemService:
    """Operations on items for one actor.

    Args:
        session: a SQLAlchemy session; each public method commits or rolls it back.
        actor: on whose behalf the work is done; permissions are checked for them.
        registry: the loaded definitions.
        today: returns today's date; tests pass a fixed day.
    """

    def __init__(
        self,
        session: Session,
        actor: Actor,
        registry: Registry,
        *,
        today: Callable[[], date] = date.today,
    ) -> None:
        self.session = session
        self.actor = actor
        self.registry = registry
        self.today = today

    # -- reading ---------------------------------------------------------------------

    def get(self, item_id: int) -> Item:
        """The item, if the actor may view it. Raises NotFound or PermissionDenied."""
        item = self.session.get(Item, item_id)
        if item is None:
            raise NotFound(f"There is no item #{item_id}.", "Check the number.")
        permissions.require(self.actor, "items.view", self.type_of(item), item)
        return item

    def type_of(self, item: Item) -> TrackerType:
        return self.registry.type(item.type_key, item.type_version)

    def workflow_of(self, item: Item) -> Workflow:
        return self.registry.workflow_for(self.type_of(item))

    def history(self, item_id: int) -> list[Event]:
        """Every event of the item, oldest first."""
        self.get(item_id)
        stmt = select(Event).where(Event.item_id == item_id).order_by(Event.id)
        return list(self.session.scalars(stmt))

    def list(
        self,
        type_key: str | None = None,
        *,
        status: list[str] | None = None,
        assignee: str | None = None,
        q: str | None = None,
        subject_id: int | None = None,
        sort: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Item], int]:
        """A page of the items the actor may view, and how many match in all.

        Args:
            type_key: one type, or None for every type the actor may view.
            status: state keys to keep.
            assignee: a user name, ``me`` or ``none``.
            q: text found in the title or the identity (a ULN, a company number).
            subject_id: only items about this learner or employer.
            sort: ``id``, ``title``, ``status``, ``due_date``, ``created_at``, ``updated_at``, ``progress`` or a
                field of the type's ``list_columns`` the actor may see (numbers sort as numbers);
                ``-`` in front for descending.
                Default: newest first.

        Raises NotFound for an unknown type, ValidationFailed for an unknown sort or assignee.
        """
        types = [self.registry.type(type_key)] if type_key else list(self.registry.types.values())
        if type_key:
            permissions.require(self.actor, "items.view", types[0])
        visible = [
            and_(Item.type_key == t.key, permissions.visible_clause(self.actor, t))
            for t in types
            if permissions.allows(self.actor, "items.view", t)
        ]
        where = [or_(*visible) if visible else false()]
        if status:
            where.append(Item.status.in_(status))
        if assignee == "me":
            where.append(Item.assignee_id == self.actor.user_id)
        elif assignee == "none":
            where.append(Item.assignee_id.is_(None))
        elif assignee:
            user_id = self.session.scalar(select(User.id).where(User.username == assignee))
            if user_id is None:
                raise ValidationFailed(
                    [Problem("assignee", f"There is no user '{assignee}'", "Pick a user from the list.")]
                )
            where.append(Item.assignee_id == user_id)
        if q and q.strip():
            pattern = f"%{q.strip().replace('%', '').replace('_', '')}%"
            where.append(or_(Item.title.ilike(pattern), Item.identity_key.ilike(pattern)))
        if subject_id is not None:
            where.append(Item.subject_id == subject_id)
        total = self.session.scalar(select(func.count()).select_from(Item).where(*where)) or 0
        stmt = select(Item).where(*where).order_by(*self._ordering(sort, types[0] if type_key else None))
        return list(self.session.scalars(stmt.limit(limit).offset(offset))), total

    _SORTABLE = {
        "id": Item.id,
        "title": Item.title,
        "status": Item.status,
        "due_date": Item.due_date,
        "created_at": Item.created_at,
        "updated_at": Item.updated_at,
        "progress": Item.progress,
    }

    def _ordering(self, sort: str | None, tracker_type: TrackerType | None) -> list:
        if not sort:
            return [Item.id.desc()]
        descending = sort.startswith("-")
        name = sort.lstrip("-")
        # a field the actor may not see is not sortable either: the order would give its values away
        fields = (
            [f for f in tracker_type.list_columns if not _under(_pointer_of(f), self.hidden_fields(tracker_type))]
            if tracker_type
            else []
        )
        if name in self._SORTABLE:
            column = self._SORTABLE[name]
        elif name in fields:
            value = Item.data[tuple(name.split("."))]
            numeric = (schema_at(tracker_type.schema, name) or {}).get("type") in ("integer", "number")
            column = value.as_float() if numeric else value.as_string()
        else:
            columns = [*self._SORTABLE, *fields]
            raise ValidationFailed(
                [Problem("sort", f"Items cannot be sorted by '{name}'", f"Use one of: {', '.join(columns)}.")]
            )
        return [column.desc() if descending else column.asc(), Item.id.desc()]

    def search_subjects(self, kind: str, q: str, *, limit: int = 20) -> list[Item]:
        """Learners (or employers) whose name or identity (ULN, company number) contains ``q``."""
        found, _total = self.list(kind, q=q, sort="title", limit=limit)
        return found

    # -- what the actor may see -----------------------------------------------------------

    def hidden_fields(self, tracker_type: TrackerType, item: Item | None = None) -> tuple[str, ...]:
        """Fields the actor may not see: ``x-tracker-access: finance`` without ``finance.view``."""
        if permissions.allows(self.actor, "finance.view", tracker_type, item):
            return ()
        return finance_fields(tracker_type.schema)

    def visible_data(self, item: Item) -> dict:
        """The item's data without the fields the actor may not see."""
        return _without(item.data, self.hidden_fields(self.type_of(item), item))

    def visible_payload(self, item: Item, event: Event) -> dict:
        """An event's payload without values of fields the actor may not see."""
        hidden = self.hidden_fields(self.type_of(item), item)
        if not hidden:
            return event.payload
        payload = dict(event.payload)
        if "data" in payload:
            payload["data"] = _without(payload["data"], hidden)
        if "changes" in payload:
            payload["changes"] = [c for c in payload["changes"] if not _under(c["path"], hidden)]
        return payload

    def visible_warnings(self, item: Item) -> list[dict]:
        """The item's stored warnings, without those about fields the actor may not see."""
        hidden = self.hidden_fields(self.type_of(item), item)
        return [w for w in item.problems or () if not _under(w.get("path", ""), hidden)]

    def available_transitions(self, item: Item) -> list[Transition]:
        """Transitions the actor could take now: roles allow them and their condition holds."""
        if not permissions.allows(self.actor, "items.transition", self.type_of(item), item):
            return []
        return [
            t
            for t in self.workflow_of(item).transitions_from(item.status)
            if self._may_take(t, item) and self._condition_holds(t, item, item.data)
        ]

    def may_create(self, tracker_type: TrackerType) -> bool:
        """True when the actor may create items of the type: its ``create_capability``
        (``automation.create`` for automations) and ``items.create``."""
        return permissions.allows(self.actor, tracker_type.create_capability, tracker_type) and permissions.allows(
            self.actor, "items.create", tracker_type
        )

    def require_create(self, tracker_type: TrackerType) -> None:
        """Raise PermissionDenied, saying which capability is missing, unless :meth:`may_create`."""
        permissions.require(self.actor, tracker_type.create_capability, tracker_type)
        if tracker_type.create_capability != "items.create":
            permissions.require(self.actor, "items.create", tracker_type)

    def creatable_types(self) -> list[TrackerType]:
        """The types the actor may create items of (what a Create page offers), by name."""
        return sorted((t for t in self.registry.types.values() if self.may_create(t)), key=lambda t: t.name.lower())

    def assignable_users(self, tracker_type: TrackerType) -> list[User]:
        """Active users who may view items of the type, so may be assigned one (what an
        assignee picker offers), by name."""
        users = self.session.scalars(select(User).where(User.active))
        allowed = [u for u in users if permissions.allows(Actor.for_user(u, self.registry), "items.view", tracker_type)]
        return sorted(allowed, key=lambda u: (u.label.lower(), u.username))

    # -- changing --------------------------------------------------------------------

    @db.retry_when_connection_lost
    def create(
        self,
        type_key: str,
        data: dict | None = None,
        *,
        subject_id: int | None = None,
        assignee: str | None = None,
        description: str = "",
        template: str | None = None,
        status: str | None = None,
    ) -> Item:
        """Create an item in its workflow's initial state and return it.

        ``template`` names a template of the type whose data is the starting point;
        ``data`` is laid over it. Raises ValidationFailed (with every problem),
        DuplicateItem, PermissionDenied or NotFound; nothing is written then.
        """
        with self._transaction():
            return self._create(
                type_key,
                data,
                subject_id=subject_id,
                assignee=assignee,
                description=description,
                template=template,
                status=status,
            )

    @db.retry_when_connection_lost
    def update(
        self,
        item_id: int,
        data: dict | None = None,
        *,
        changes: dict | None = None,
        description: str | None = None,
        expected_version: int | None = None,
    ) -> Item:
        """Replace the item's data with ``data``, or lay ``changes`` over it.

        Raises Conflict when ``expected_version`` is not the item's current version.
        """
        with self._transaction():
            item = self._load(item_id, "items.edit", expected_version)
            hidden = self.hidden_fields(self.type_of(item), item)
            self._refuse_hidden(hidden, data if data is not None else changes, removals=data is None)
            if data is not None:
                # fields the actor cannot see were not in their form: keep them as they are
                new = copy.deepcopy(data)
                for name in hidden:
                    _put(new, name, get_path(item.data, name))
            else:
                new = _merge(item.data, changes or {})
            self._check_read_only(item, new)
            self._write_data(item, new, item.status)
            if description is not None and description != item.description:
                self._record(
                    item, "updated", {"changes": [{"path": "description", "old": item.description, "new": description}]}
                )
                item.description = description
            return item

    @db.retry_when_connection_lost
    def transition(
        self,
        item_id: int,
        to: str | None = None,
        *,
        transition: str | None = None,
        data: dict | None = None,
        expected_version: int | None = None,
    ) -> Item:
        """Move the item to state ``to`` (or take the transition named ``transition``).

        ``data`` is laid over the item's data first, so a form can fill the fields the
        transition requires in the same step. Raises ValidationFailed saying why the
        move is not possible, or PermissionDenied when the actor's roles may not take it.
        """
        with self._transaction():
            item = self._load(item_id, "items.transition", expected_version)
            tracker_type, workflow = self.type_of(item), self.workflow_of(item)
            self._refuse_hidden(self.hidden_fields(tracker_type, item), data)
            new_data = _merge(item.data, data or {})
            if data:
                self._check_read_only(item, new_data)
            chosen = self._choose_transition(item, workflow, to, transition, new_data)
            for action in chosen.actions:
                if action.kind == "set":
                    new_data = _merge(new_data, _set_value(action.value, self.today()))
            old_status = item.status
            self._write_data(item, new_data, chosen.target)
            item.status = chosen.target
            self._record(
                item,
                "transitioned",
                {
                    "from": old_status,
                    "to": chosen.target,
                    "transition": chosen.key,
                    "label": chosen.label,
                },
            )
            self._run_actions(item, tracker_type, chosen)
            self._outbox_event(item, "transitioned", {"from": old_status, "to": chosen.target})
            target = workflow.state(chosen.target)
            self._changed_for_watchers(item, f"{self.actor.username} moved {item.title} to '{target.label}'")
            return item

    @db.retry_when_connection_lost
    def assign(self, item_id: int, assignee: str | None, *, expected_version: int | None = None) -> Item:
        """Assign the item to the user named ``assignee`` (None unassigns); the new
        assignee is notified with a link to the item."""
        with self._transaction():
            item = self._load(item_id, "items.edit", expected_version)
            if not assignee and self.type_of(item).assignee_required:
                raise ValidationFailed([_assignee_needed(self.type_of(item))])
            user = self._assignee(assignee, self.type_of(item)) if assignee else None
            if (user.id if user else None) != item.assignee_id:
                who = user.username if user else "nobody"
                self._changed_for_watchers(item, f"{self.actor.username} assigned {item.title} to {who}")
            self._set_assignee(item, user)
            return item

    @db.retry_when_connection_lost
    def comment(self, item_id: int, text: str) -> Event:
        """Add a comment to the item's history. Active users named as ``@username`` who
        may view the item are notified."""
        text = (text or "").strip()
        if not text:
            raise ValidationFailed([Problem("comment", "The comment is empty", "Write something.")])
        with self._transaction():
            item = self._load(item_id, "items.view", None)
            event = self._record(item, "commented", {"text": text})
            mentioned = notifications.mentioned_users(self.session, self.registry, item, text)
            ids = [u.id for u in mentioned if u.id != self.actor.user_id]
            if ids:
                self._notify(item, ids, "mentioned", f"{self.actor.username} mentioned you on {item.title}")
            self._changed_for_watchers(item, f"{self.actor.username} commented on {item.title}")
            return event

    @db.retry_when_connection_lost
    def watch(self, item_id: int) -> None:
        """The actor follows the item: ``notify: watchers`` reaches them, and so do its
        changes. Watching again is harmless. Raises NotFound or PermissionDenied."""
        with self._transaction():
            item = self._load(item_id, "items.view", None)
            if self.actor.user_id is None:
                raise PermissionDenied("The system operator cannot watch items.", "Sign in as a user to watch items.")
            if self.session.get(Watcher, (item.id, self.actor.user_id)) is None:
                self.session.add(Watcher(item_id=item.id, user_id=self.actor.user_id))

    @db.retry_when_connection_lost
    def unwatch(self, item_id: int) -> None:
        """The actor stops following the item (harmless when they did not)."""
        with self._transaction():
            item = self._load(item_id, "items.view", None)
            watcher = self.session.get(Watcher, (item.id, self.actor.user_id)) if self.actor.user_id else None
            if watcher is not None:
                self.session.delete(watcher)

    def is_watching(self, item_id: int) -> bool:
        """True when the actor watches the item."""
        if self.actor.user_id is None:
            return False
        return self.session.get(Watcher, (item_id, self.actor.user_id)) is not None

    # -- the transaction ---------------------------------------------------------------

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        #: users this change notifies, and what its watchers are told (see _notify_watchers)
        self._notified: set[int] = set()
        self._for_watchers: dict[int, tuple[Item, str]] = {}
        #: the item this change loaded, for a conflict's message (see _load)
        self._loaded: int | None = None
        try:
            yield
            self._notify_watchers()
            db.commit(self.session)  # a connection lost during COMMIT is resolved there
        except IntegrityError as exc:
            self.session.rollback()
            raise self._duplicate(exc) from None
        except StaleDataError:
            self.session.rollback()
            latest = self._latest_change(self._loaded)
            self.session.rollback()  # end the read that found it
            raise Conflict(
                "Someone else changed this item at the same moment, so your change was not saved"
                + (f": {latest}." if latest else "."),
                "Reload the item and make your change again.",
            ) from None
        except BaseException as exc:
            self.session.rollback()
            if db.connection_lost(exc):  # the server rolled the transaction back: nothing was saved
                raise db.lost_connection_error(exc) from exc
            raise

    def _duplicate(self, exc: IntegrityError) -> Exception:
        pending = getattr(self, "_identity_attempt", None)
        if pending is None or "identity" not in str(exc.orig).lower() and "unique" not in str(exc.orig).lower():
            return exc
        tracker_type, identity_key = pending
        existing = self.session.scalar(
            select(Item).where(Item.type_key == tracker_type.key, Item.identity_key == identity_key)
        )
        return self._duplicate_error(tracker_type, identity_key, existing)

    def _duplicate_error(self, tracker_type: TrackerType, identity_key: str, existing: Item | None):
        values = json.loads(identity_key)
        described = ", ".join(
            f"{tracker_type.subject} #{value}" if name == "subject" else f"{_label(tracker_type, name)} {value}"
            for name, value in zip(tracker_type.identity, values, strict=False)
        )
        which = f"#{existing.id} {existing.title}".strip() if existing else "another item"
        # the problem belongs on a field of the form, not on the subject picker
        field = next((name for name in tracker_type.identity if name != "subject"), "subject")
        problem = Problem(
            "/" + field.replace(".", "/") if field != "subject" else "subject",
            f"A {tracker_type.name} with {described} already exists: {which}",
            f"Open item #{existing.id} instead of creating a duplicate."
            if existing
            else "Search for the existing item instead of creating a duplicate.",
        )
        return DuplicateItem([problem], existing.id if existing else None)

    # -- internals -----------------------------------------------------------------------

    def _load(self, item_id: int, capability: str, expected_version: int | None) -> Item:
        item = self.session.get(Item, item_id)
        if item is None:
            raise NotFound(f"There is no item #{item_id}.", "Check the number.")
        permissions.require(self.actor, "items.view", self.type_of(item), item)
        permissions.require(self.actor, capability, self.type_of(item), item)
        self._loaded = item.id
        if expected_version is not None and expected_version != item.version:
            latest = self._latest_change(item.id)
            raise Conflict(
                f"Item #{item.id} was changed by someone else since you opened it "
                f"(you had version {expected_version}, it is now at version {item.version})"
                + (f": {latest}." if latest else "."),
                "Reload the item to see the changes, then make yours again.",
            )
        return item

    def _latest_change(self, item_id: int | None) -> str:
        """The item's newest change in words (who, and what, without fields the actor may not
        see), for the message of a save that lost the race: '' when there is none."""
        item = self.session.get(Item, item_id) if item_id is not None else None
        event = None
        if item is not None:
            stmt = select(Event).where(Event.item_id == item.id).order_by(Event.id.desc()).limit(1)
            event = self.session.scalar(stmt)
        if event is None:
            return ""
        who = event.actor.username if event.actor else "the system"
        payload = self.visible_payload(item, event)
        if event.kind == "updated":
            tracker_type = self.type_of(item)
            changes = [
                f"{_label(tracker_type, c['path'].strip('/'))} from {_shown(c.get('old'))} to {_shown(c.get('new'))}"
                for c in payload.get("changes", [])[:5]
                if c.get("path") != "description"
            ]
            return f"{who} changed {', '.join(changes)}" if changes else f"{who} changed it"
        if event.kind == "transitioned":
            state = self.workflow_of(item).state(payload.get("to"))
            return f"{who} moved it to '{state.label if state else payload.get('to')}'"
        if event.kind == "commented":
            return f"{who} commented on it"
        return f"{who} changed it ({event.kind})"

    def _create(
        self,
        type_key,
        data,
        *,
        subject_id=None,
        assignee=None,
        description="",
        template=None,
        status=None,
        check_permission=True,
        cause=None,
    ) -> Item:
        item, user = self._new_item(
            type_key,
            data,
            subject_id=subject_id,
            assignee=assignee,
            description=description,
            template=template,
            status=status,
            check_permission=check_permission,
        )
        self.session.add(item)
        self.session.flush()
        if not item.title:
            item.title = f"{self.registry.type(type_key).name} #{item.id}"
        self._record(item, "created", {"data": item.data, **({"cause": cause} if cause else {})})
        self._outbox_event(item, "created", {})
        if user is not None:
            self._set_assignee(item, user)
        return item

    def _new_item(
        self,
        type_key: str,
        data: dict | None,
        *,
        subject_id: int | None = None,
        assignee: str | None = None,
        description: str = "",
        template: str | None = None,
        status: str | None = None,
        check_permission: bool = True,
        check_identity: bool = True,
    ) -> tuple[Item, User | None]:
        """A new item, validated but not yet added to the session, and the user to assign it to.
        Raises ValidationFailed with every problem. ``check_identity=False`` leaves the duplicate
        check to the caller: a bulk import checks a whole batch in one query."""
        tracker_type = self.registry.type(type_key)
        if check_permission:
            self.require_create(tracker_type)
        workflow = self.registry.workflow_for(tracker_type)
        problems: list[Problem] = []
        if status and status != workflow.initial.key:
            problems.append(
                Problem(
                    "status",
                    f"A new {tracker_type.name} always starts as '{workflow.initial.label}'",
                    f"Leave the status out, or set it to '{workflow.initial.key}'; "
                    "move it on afterwards with a transition.",
                )
            )
        start: dict = {}
        if template:
            found = tracker_type.template(template)
            if found is None:
                names = ", ".join(t.key for t in tracker_type.templates) or "none"
                problems.append(
                    Problem("template", f"{tracker_type.name} has no template '{template}'", f"Use one of: {names}.")
                )
            else:
                start = copy.deepcopy(found.data)
        if data is not None and not isinstance(data, dict):
            raise ValidationFailed([Problem("", "The data must be a JSON object", 'Send {"field": value, ...}.')])
        if check_permission:
            self._refuse_hidden(self.hidden_fields(tracker_type), data)
        new_data = _merge(start, data or {})
        subject = self._subject(tracker_type, subject_id, problems)
        user = None
        if not assignee and tracker_type.assignment is not None:
            assignee = assignment.choose(self.session, self.registry, tracker_type, new_data, problems)
        if tracker_type.assignee_required and not assignee:
            problems.append(_assignee_needed(tracker_type))
        if assignee:
            try:
                user = self._assignee(assignee, tracker_type)
            except ValidationFailed as exc:
                problems.extend(exc.problems)
        item = Item(
            type_key=tracker_type.key,
            type_version=tracker_type.version,
            status=workflow.initial.key,
            description=description or "",
            subject=subject,
            subject_id=subject.id if subject else None,
            created_by_id=self.actor.user_id,
            updated_by_id=self.actor.user_id,
            data={},
        )
        self._write_data(item, new_data, item.status, problems, creating=True, check_identity=check_identity)
        return item, user

    def _subject(self, tracker_type: TrackerType, subject_id: int | None, problems: list[Problem]) -> Item | None:
        kind = tracker_type.subject
        if subject_id is None:
            if kind != "none":
                problems.append(
                    Problem(
                        "subject",
                        f"A {kind} is required for {tracker_type.name}",
                        f"Pick the {kind} this item is about (search by name{' or ULN' if kind == 'learner' else ''}).",
                    )
                )
            return None
        subject = self.session.get(Item, subject_id)
        if subject is None:
            problems.append(Problem("subject", f"There is no item #{subject_id}", f"Pick an existing {kind}."))
            return None
        if kind == "none" or subject.type_key != kind:
            wanted = f"a {kind}" if kind != "none" else "no subject"
            problems.append(
                Problem(
                    "subject",
                    f"#{subject_id} is a {subject.type_key}, but {tracker_type.name} needs {wanted}",
                    f"Pick a {kind}." if kind != "none" else "Leave the subject out.",
                )
            )
            return None
        return subject

    def _assignee(self, username: str, tracker_type: TrackerType) -> User:
        user = self.session.scalar(select(User).where(User.username == username))
        if user is None or not user.active:
            raise ValidationFailed(
                [Problem("assignee", f"There is no active user '{username}'", "Pick a user from the list.")]
            )
        if not permissions.allows(Actor.for_user(user, self.registry), "items.view", tracker_type):
            raise ValidationFailed(
                [
                    Problem(
                        "assignee",
                        f"{user.label} cannot see {tracker_type.name} items, so cannot be assigned one",
                        "Pick someone else, or give them a role that can view this type.",
                    )
                ]
            )
        return user

    def _set_assignee(self, item: Item, user: User | None) -> None:
        old = item.assignee
        if (old.id if old else None) == (user.id if user else None):
            return
        item.assignee = user
        item.assignee_id = user.id if user else None
        item.updated_by_id = self.actor.user_id
        self._record(
            item,
            "assigned",
            {
                "from": old.username if old else None,
                "to": user.username if user else None,
            },
        )
        if user is not None and user.id != self.actor.user_id:
            self._notify(item, [user.id], "assigned", f"{self.actor.username} assigned {item.title} to you")
        moved = {"from": old.username if old else None, "to": user.username if user else None}
        self._outbox_event(item, "assigned", moved)

    def _write_data(
        self,
        item: Item,
        new_data: dict,
        status: str,
        problems: list[Problem] | None = None,
        *,
        creating: bool = False,
        check_identity: bool = True,
        cause: dict | None = None,
    ) -> None:
        """Validate ``new_data`` for ``status``; on success store it with its derived
        columns (title, due date, identity, warnings) and record the diff (with ``cause``:
        the item and step that made the change, when another item's step did)."""
        tracker_type = self.type_of(item) if not creating else self.registry.type(item.type_key)
        workflow = self.registry.workflow_for(tracker_type)
        problems = list(problems or ())
        refused = schema_problems(_validator(tracker_type, self.registry.field_validators), new_data)
        problems += refused
        checked = without_refused(new_data, refused)
        item_ctx = {
            "status": status,
            "assignee": item.assignee.username if item.assignee else None,
            "title": item.title,
            "id": item.id,
        }
        subject_ctx = _subject_context(item.subject)
        # rules see the service's day, so a fixed day (tests, the demo's dates) is the day they check on
        context = {**sandbox.context_for(checked, item_ctx, subject_ctx), "today": self.today().isoformat()}
        warnings = []
        for problem in rule_problems(self.registry, tracker_type, checked, context):
            (warnings if problem.severity == "warning" else problems).append(problem)
        if tracker_type.kind == "automation":
            from engine.automation import definition_problems  # that module runs automations through this service

            problems += definition_problems(self.session, self.registry, new_data)
        state = workflow.state(status)
        for name in workflow.fields_for(status).required:
            if not is_filled(get_path(new_data, name)):
                label = _label(tracker_type, name)
                problems.append(
                    Problem(
                        "/" + name.replace(".", "/"),
                        f"{label} is required while the item is '{state.label if state else status}'",
                        f"Fill in {label}.",
                    )
                )
        identity_key = _identity_key(tracker_type, new_data, item.subject_id)
        if check_identity and identity_key is not None and identity_key != item.identity_key:
            existing = self.session.scalar(
                select(Item).where(
                    Item.type_key == tracker_type.key,
                    Item.identity_key == identity_key,
                    (Item.id != item.id) if item.id else true(),
                )
            )
            if existing is not None:
                duplicate = self._duplicate_error(tracker_type, identity_key, existing)
                if not problems:
                    raise duplicate
                problems += duplicate.problems
        if problems:
            raise ValidationFailed(problems)
        changes = [] if creating else diff(item.data, new_data)  # a new item's history is its data
        self._identity_attempt = (tracker_type, identity_key) if identity_key else None
        item.data = new_data
        item.identity_key = identity_key
        item.problems = [w.as_dict() for w in warnings]
        item.problem_count = len(warnings)
        if tracker_type.progress is not None:  # its qualification field may have changed
            item.progress = progress.percent_for(self.session, self.registry, tracker_type, item.id, new_data)
        item.due_date = _as_date(get_path(new_data, tracker_type.due_date)) if tracker_type.due_date else None
        item.updated_by_id = self.actor.user_id
        item.title = _render_title(tracker_type, context) or item.title
        if changes and not creating:
            self._record(item, "updated", {"changes": changes, **({"cause": cause} if cause else {})})
            self._outbox_event(item, "updated", {"paths": [c["path"] for c in changes]})
            self._changed_for_watchers(item, f"{self.actor.username} updated {item.title}", replace=False)

    def _refuse_hidden(self, hidden: tuple[str, ...], payload: dict | None, *, removals: bool = True) -> None:
        """Refuse a payload that sets a field the actor may not see, or (``removals``: the
        payload is laid over the data, where null removes a field) that names it with null."""
        touched = [name for name in hidden if _touches(payload or {}, name, removals)]
        if touched:
            raise PermissionDenied(
                f"{self.actor.username} may not set {', '.join(touched)}: finance fields need 'finance.view'.",
                "Leave those fields out, or ask someone with finance access.",
            )

    def _check_read_only(self, item: Item, new_data: dict) -> None:
        workflow = self.workflow_of(item)
        rules = workflow.fields_for(item.status)
        if not rules.read_only:
            return
        state = workflow.state(item.status)
        changed = diff(item.data, new_data)
        locked = [
            c
            for c in changed
            if "*" in rules.read_only
            or any(
                c["path"] == "/" + f.replace(".", "/") or c["path"].startswith("/" + f.replace(".", "/") + "/")
                for f in rules.read_only
            )
        ]
        if locked:
            tracker_type = self.type_of(item)
            raise ValidationFailed(
                [
                    Problem(
                        c["path"],
                        f"{_label(tracker_type, c['path'].strip('/').split('/')[0])} cannot be changed "
                        f"while the item is '{state.label}'",
                        "Move the item back to an earlier state first, or leave the field as it was.",
                    )
                    for c in locked
                ]
            )

    def _choose_transition(
        self, item: Item, workflow: Workflow, to: str | None, key: str | None, data: dict
    ) -> Transition:
        state = workflow.state(item.status)
        here = state.label if state else item.status
        if to is not None and workflow.state(to) is None:
            raise ValidationFailed(
                [
                    Problem(
                        "status",
                        f"'{to}' is not a state of the {workflow.name} workflow",
                        f"Use one of: {', '.join(s.key for s in workflow.states)}.",
                    )
                ]
            )
        leaving = workflow.transitions_from(item.status)
        candidates = [t for t in leaving if (to is None or t.target == to) and (key is None or t.key == key)]
        if not candidates:
            options = ", ".join(f"{t.target} ({t.label})" for t in leaving) or "nowhere: it is final"
            target = f"'{workflow.state(to).label}'" if to else f"with '{key}'"
            raise ValidationFailed(
                [
                    Problem(
                        "status",
                        f"Item #{item.id} is '{here}' and cannot move to {target} from there",
                        f"From '{here}' it can move to: {options}.",
                    )
                ]
            )
        denied, problems = [], []
        for t in candidates:
            if not self._may_take(t, item):
                denied.append(t)
                continue
            if not self._condition_holds(t, item, data):
                problems.append(
                    Problem(
                        "status",
                        f"'{t.label}' is not possible for item #{item.id} right now: "
                        f"its condition is not met ({t.condition})",
                        "Change the item so that the condition holds, then try again.",
                    )
                )
                continue
            missing = [name for name in t.requires if not is_filled(get_path(data, name))]
            lacking = documents.missing_categories(self.session, item.id, t.requires_documents)
            if missing or lacking:
                tracker_type = self.type_of(item)
                problems += [
                    Problem(
                        "/" + name.replace(".", "/"),
                        f"{_label(tracker_type, name)} must be filled to '{t.label}'",
                        f"Fill in {_label(tracker_type, name)}, then try again.",
                    )
                    for name in missing
                ]
                if lacking:
                    problems.append(documents.missing_problem(tracker_type, t.label, self.session, item.id, lacking))
                continue
            return t
        if problems:
            raise ValidationFailed(problems)
        roles = sorted({r for t in denied for r in t.roles})
        raise PermissionDenied(
            f"{self.actor.username} may not '{denied[0].label}' on item #{item.id}.",
            f"Only these may: {', '.join(roles)} (and administrators).",
        )

    def _may_take(self, transition: Transition, item: Item) -> bool:
        if not transition.roles or self.actor.is_admin:
            return True
        me = self.actor.user_id
        if me is not None and "creator" in transition.roles and item.created_by_id == me:
            return True
        if me is not None and "assignee" in transition.roles and item.assignee_id == me:
            return True
        return bool(self.actor.role_keys & set(transition.roles))

    def _condition_holds(self, transition: Transition, item: Item, data: dict) -> bool:
        if not transition.condition:
            return True
        context = sandbox.context_for(
            data,
            {
                "status": item.status,
                "title": item.title,
                "id": item.id,
                "assignee": item.assignee.username if item.assignee else None,
            },
            _subject_context(item.subject),
        )
        try:
            return sandbox.evaluate(transition.condition, context)
        except Exception:  # a condition that cannot be evaluated on this data is not met
            log.info("condition of %s failed to evaluate on item %s", transition.key, item.id)
            return False

    def _run_actions(self, item: Item, tracker_type: TrackerType, transition: Transition) -> None:
        for action in transition.actions:
            if action.kind == "assign":
                self._set_assignee(item, self._resolve_assignee(item, action.value, tracker_type))
            elif action.kind == "notify":
                recipients = self._recipients(item, action.value)
                if recipients:
                    self._notify(item, recipients, "transitioned", f"{item.title} moved to '{transition.label}'")
            elif action.kind == "create":
                spec = action.value
                target = self.registry.type(spec["type"])
                user = self._resolve_assignee(item, spec["assign"], target) if spec.get("assign") else None
                self._create(
                    target.key,
                    None,
                    subject_id=item.subject_id if target.subject != "none" else None,
                    template=spec.get("template"),
                    assignee=user.username if user else None,
                    check_permission=False,
                    cause={"item": item.id, "transition": transition.key},
                )
            elif action.kind == "update_related":
                self._update_related(item, tracker_type, transition, action.value)

    def _update_related(self, item: Item, tracker_type: TrackerType, transition: Transition, spec: dict) -> None:
        """Copy values of ``item`` (or fixed ones) to the item whose number it holds in ``link``.

        Like ``create``, this is part of the step, so it does not ask for the actor's edit
        rights on the related item; it is validated like any change of it (schema, rules, its
        state's read-only fields) and recorded in its history as the actor's, with the cause.
        A refusal names the related item and stops the whole step."""
        number = get_path(item.data, spec["link"])
        if not is_filled(number):
            return  # linked to nothing: there is nothing to keep up to date
        related_type = self.registry.type(spec["type"])
        whole = isinstance(number, int) and not isinstance(number, bool)
        related = self.session.get(Item, number) if whole else None
        pointer, link = _pointer_of(spec["link"]), _label(tracker_type, spec["link"])
        if related is None or related.type_key != related_type.key:
            found = "there is no such item" if related is None else f"#{number} is a {self.type_of(related).name}"
            raise ValidationFailed(
                [
                    Problem(
                        pointer,
                        f"{link} is #{number}, but {found}: '{transition.label}' updates the {related_type.name} "
                        "this item belongs to",
                        f"Enter the number of the {related_type.name} (the # on its page), then try again.",
                    )
                ]
            )
        new = copy.deepcopy(related.data)
        for entry in spec["set"]:
            value = get_path(item.data, entry["from"]) if "from" in entry else entry["value"]
            if isinstance(value, str) and value.startswith("today") and "from" not in entry:
                value = sandbox.relative_date(value, self.today()).isoformat()
            if not is_filled(value):
                continue  # an empty source leaves the related value as it is
            current = get_path(new, entry["field"])
            if entry.get("only_if_later") and is_filled(current) and not _later(value, current):
                continue
            _put(new, entry["field"], copy.deepcopy(value))
        if new == related.data:
            return
        where = f"{related_type.name} #{related.id}"
        try:
            self._check_read_only(related, new)
            self._write_data(related, new, related.status, cause={"item": item.id, "transition": transition.key})
        except ValidationFailed as refused:
            raise ValidationFailed(
                [
                    Problem(pointer, f"'{transition.label}' cannot update {where}: {p.message}", p.advice)
                    for p in refused.problems
                ]
            ) from None

    def _resolve_assignee(self, item: Item, target: str, tracker_type: TrackerType) -> User | None:
        if target == "none":
            return None
        if target == "creator":
            return self.session.get(User, item.created_by_id) if item.created_by_id else None
        if target.startswith("role:"):
            role = target[5:]
            load = select(func.count()).select_from(Item).where(Item.assignee_id == User.id).scalar_subquery()
            user = self.session.scalar(
                select(User).join(RoleGrant).where(RoleGrant.role == role, User.active).order_by(load, User.id).limit(1)
            )
            if user is None:
                raise ValidationFailed(
                    [
                        Problem(
                            "assignee",
                            f"No active user has the role '{role}' to take item #{item.id}",
                            f"Give someone the '{role}' role, then try again.",
                        )
                    ]
                )
            return user
        return self._assignee(target, tracker_type)

    def _recipients(self, item: Item, target: str) -> list[int]:
        return notifications.recipients(self.session, item, target)

    def _record(self, item: Item, kind: str, payload: dict) -> Event:
        event = Event(item_id=item.id, kind=kind, actor_id=self.actor.user_id, payload=payload)
        self.session.add(event)
        self.session.flush()
        return event

    def _notify(self, item: Item, user_ids: list[int], reason: str, text: str) -> None:
        """Write a notification to ``user_ids``, except those this change already notified."""
        user_ids = [uid for uid in user_ids if uid not in self._notified]
        if not user_ids:
            return
        self._notified.update(user_ids)
        self.session.add(
            Outbox(
                kind="notify",
                item_id=item.id,
                idempotency_key=f"notify:{uuid.uuid4().hex}",
                payload={
                    "reason": reason,
                    "recipients": sorted(set(user_ids)),
                    "text": text,
                    "link": item_link(item.id),
                    "item_id": item.id,
                },
            )
        )

    def _changed_for_watchers(self, item: Item, text: str, *, replace: bool = True) -> None:
        """What the item's watchers are told about this change; the last word wins unless
        ``replace`` is False (a transition's "moved" says more than its "updated")."""
        if replace or item.id not in self._for_watchers:
            self._for_watchers[item.id] = (item, text)

    def _notify_watchers(self) -> None:
        """One message per changed item to its watchers who may view it, except the actor
        and anyone this change already notified."""
        for item, text in self._for_watchers.values():
            skip = self._notified | {self.actor.user_id}
            ids = [
                uid
                for uid in notifications.watcher_ids(self.session, item.id)
                if uid not in skip
                and permissions.allows(
                    Actor.for_user(self.session.get(User, uid), self.registry), "items.view", self.type_of(item), item
                )
            ]
            if ids:
                self._notify(item, ids, "watched", text)

    def _outbox_event(self, item: Item, event: str, extra: dict) -> None:
        self.session.add(
            Outbox(
                kind="item_event",
                item_id=item.id,
                idempotency_key=f"event:{uuid.uuid4().hex}",
                payload={
                    "event": event,
                    "item_id": item.id,
                    "type": item.type_key,
                    "actor": self.actor.username,
                    **extra,
                },
            )
        )


# -- helpers -------------------------------------------------------------------------------

_validators: dict[tuple[str, int, int, int], Any] = {}


def _validator(tracker_type: TrackerType, field_validators: dict | None = None):
    """Compile each type's schema once; keyed by identity so reloaded definitions (or another
    set of plugin checks for ``x-validator``) recompile."""
    from engine.validation import make_validator

    key = (tracker_type.key, tracker_type.version, id(tracker_type.schema), id(field_validators))
    if key not in _validators:
        _validators[key] = make_validator(tracker_type.schema, field_validators)
    return _validators[key]


def _merge(base: dict, changes: dict) -> dict:
    """``base`` with ``changes`` laid over it; a None value removes a field."""
    out = copy.deepcopy(base or {})
    for key, value in (changes or {}).items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _set_value(spec: dict, today: date) -> dict:
    value = spec["value"]
    if isinstance(value, str) and value.startswith("today"):
        value = sandbox.relative_date(value, today).isoformat()
    parts = spec["field"].split(".")
    out: dict = {}
    node = out
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def _render_title(tracker_type: TrackerType, context: dict) -> str:
    try:
        return sandbox.render(tracker_type.title, context)[:300]
    except Exception:
        log.debug("title of %s could not be rendered", tracker_type.key, exc_info=True)
        return ""


def _subject_context(subject: Item | None) -> dict:
    if subject is None:
        return {}
    return {"id": subject.id, "name": subject.title, "title": subject.title, "data": subject.data}


def _identity_key(tracker_type: TrackerType, data: dict, subject_id: int | None = None) -> str | None:
    """The normalised identity of an item (None when a part is empty); ``subject`` in a
    type's ``identity`` stands for the item's learner or employer."""
    if not tracker_type.identity:
        return None
    values = [subject_id if name == "subject" else get_path(data, name) for name in tracker_type.identity]
    if not all(is_filled(v) for v in values):
        return None
    normalised = [v.strip().upper() if isinstance(v, str) else v for v in values]
    return json.dumps(normalised, separators=(",", ":"), sort_keys=True)[:500]


def finance_fields(schema: dict, prefix: str = "") -> tuple[str, ...]:
    """Dotted names of the properties marked ``x-tracker-access: finance``."""
    found: list[str] = []
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict):
            continue
        if prop.get("x-tracker-access") == "finance":
            found.append(prefix + name)
        elif prop.get("type") == "object":
            found += finance_fields(prop, f"{prefix}{name}.")
    return tuple(found)


def _put(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b`` in nested dicts; None removes it."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    if value is None:
        node.pop(last, None)
    else:
        node[last] = copy.deepcopy(value)


def _touches(payload: dict, dotted: str, removals: bool) -> bool:
    """True when ``payload`` gives ``a.b`` a value, or names it with null and ``removals``."""
    node: Any = payload
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node is not None or removals


def _pointer_of(dotted: str) -> str:
    return "/" + dotted.replace(".", "/")


def _under(path: str, fields: tuple[str, ...]) -> bool:
    return any(path == _pointer_of(f) or path.startswith(_pointer_of(f) + "/") for f in fields)


def _without(data: dict, fields: tuple[str, ...]) -> dict:
    if not fields:
        return data
    out = copy.deepcopy(data)
    for dotted in fields:
        *parents, last = dotted.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


def _assignee_needed(tracker_type: TrackerType) -> Problem:
    return Problem(
        "assignee", f"Every {tracker_type.name} needs an assignee", "Pick the person who will look after it."
    )


def _later(value: Any, current: Any) -> bool:
    """``value`` comes after ``current``: numbers by size, ISO dates (and other text) in order."""
    numbers = (int, float)
    if isinstance(value, numbers) and isinstance(current, numbers):
        return value > current
    return str(value) > str(current)


def _as_date(value: Any) -> date | None:
    try:
        return date.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _shown(value: Any) -> str:
    """A value for a message: short, and 'nothing' for an empty one."""
    if value is None or value == "":
        return "nothing"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return f"'{text[:60]}{'...' if len(text) > 60 else ''}'"


def _label(tracker_type: TrackerType, name: str) -> str:
    sub = schema_at(tracker_type.schema, name.replace("/", ".")) or {}
    return sub.get("title") or humanize_label(name.split(".")[-1])
