"""Bringing items of older versions of a type up to its current version.

A version's ``migrations:`` (in type.yaml) are the steps from the version before it:
``rename`` a field, ``set_default`` for a field that is empty, ``map_values`` of a field
(an enum's old codes to new ones). An item of version 1 of a type now at version 3 goes
through the steps of version 2, then those of version 3. Items are never migrated behind
an admin's back: :meth:`TypeMigrator.preview` counts what would change and what would fail
under the new schema (with examples), :meth:`TypeMigrator.apply` does it through the item
service (validation, derived columns, history, outbox) in batches. Items that would fail
stay at their version, readable and editable under it; applying again migrates only the
items still behind, so it is safe to repeat.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import permissions, sandbox
from engine.definitions.model import Migration, Registry, TrackerType
from engine.errors import Conflict, Problem, ValidationFailed
from engine.models import Item
from engine.permissions import Actor
from engine.services.items import ItemService, _subject_context, _validator
from engine.validation import get_path, is_filled, schema_problems, set_path

BATCH = 200


# -- the steps --------------------------------------------------------------------------------------


def describe(step: Migration) -> str:
    """A step in words, for previews and history."""
    v = step.value
    if step.kind == "rename":
        return f"rename {v['from']} to {v['to']}"
    if step.kind == "set_default":
        return f"set {v['field']} to {v['value']!r} where it is empty"
    pairs = ", ".join(f"{old!r} → {new!r}" for old, new in v["map"].items())
    return f"change the values of {v['field']}: {pairs}"


def migrate_data(data: dict, steps: list[Migration]) -> dict:
    """``data`` after the steps; the input is not changed."""
    out = copy.deepcopy(data or {})
    for step in steps:
        v = step.value
        if step.kind == "rename":
            old, new = _pop(out, v["from"]), get_path(out, v["to"])
            if old is not _MISSING:
                if new is None:
                    set_path(out, v["to"], old)
                else:  # both hold a value: keep both, validation decides
                    set_path(out, v["from"], old)
        elif step.kind == "set_default":
            if not is_filled(get_path(out, v["field"])):
                set_path(out, v["field"], copy.deepcopy(v["value"]))
        elif step.kind == "map_values":
            current = get_path(out, v["field"])
            if isinstance(current, list):
                set_path(out, v["field"], [_mapped(x, v["map"]) for x in current])
            elif current is not None:
                set_path(out, v["field"], _mapped(current, v["map"]))
    return out


_MISSING = object()


def _mapped(value: Any, mapping: dict) -> Any:
    for old, new in mapping.items():
        if old == value or str(old) == str(value):
            return copy.deepcopy(new)
    return value


def _pop(data: dict, dotted: str) -> Any:
    *parents, last = dotted.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict) and last in node:
        return node.pop(last)
    return _MISSING


# -- preview and apply ------------------------------------------------------------------------------


@dataclass
class Example:
    item_id: int
    title: str
    problems: list[Problem] = field(default_factory=list)
    changes: list[str] = field(default_factory=list)


@dataclass
class VersionPreview:
    """What migrating the items of one older version would do."""

    from_version: int
    steps: list[Migration]
    items: int = 0
    checked: int = 0  # how many of ``items`` were looked at; the counts below are among those
    would_change: int = 0
    would_fail: int = 0
    failures: list[Example] = field(default_factory=list)
    changes: list[Example] = field(default_factory=list)


@dataclass
class Preview:
    type_key: str
    to_version: int
    versions: list[VersionPreview]

    @property
    def items(self) -> int:
        return sum(v.items for v in self.versions)

    @property
    def would_change(self) -> int:
        return sum(v.would_change for v in self.versions)

    @property
    def would_fail(self) -> int:
        return sum(v.would_fail for v in self.versions)

    @property
    def checked(self) -> int:
        return sum(v.checked for v in self.versions)

    @property
    def complete(self) -> bool:
        """Every item behind was checked, so the counts are exact rather than a sample's."""
        return self.checked == self.items


@dataclass
class Result:
    migrated: int = 0
    failed: int = 0
    failures: list[Example] = field(default_factory=list)


class TypeMigrator:
    """Previews and applies the migration of a type's items to its current version.

    Args:
        session: a SQLAlchemy session; :meth:`apply` commits a batch at a time.
        actor: who applies it; needs ``types.admin``. History records them as the author.
        registry: the definitions, with the type's versions.
        today: returns today's date for rules that use it.
    """

    def __init__(
        self, session: Session, actor: Actor, registry: Registry, *, today: Callable[[], date] = date.today
    ) -> None:
        permissions.require(actor, "types.admin")
        self.session = session
        self.actor = actor
        self.registry = registry
        self.today = today

    def steps(self, type_key: str, from_version: int) -> list[Migration]:
        """The steps from ``from_version`` to the current version: those each later version
        declares, in order. For a type from files only the current version's are known."""
        current = self.registry.type(type_key)
        steps: list[Migration] = []
        for version in range(from_version + 1, current.version + 1):
            found = self.registry.versions.get((type_key, version))
            if found is None and version == current.version:
                found = current
            if found is not None:
                steps.extend(found.migrations)
        return steps

    def preview(self, type_key: str, *, examples: int = 5, sample: int | None = None) -> Preview:
        """Per older version: how many items there are (counted by the database), and of
        those checked, how many would change and how many would fail to validate under the
        current version, with up to ``examples`` of each. ``sample`` checks at most that many
        items per version (the oldest first), so a page can show a preview of a type with a
        million items without validating them all; None checks every one. Nothing changes."""
        current = self.registry.type(type_key)
        versions = [
            VersionPreview(version, self.steps(type_key, version), items=count)
            for version, count in sorted(self.behind_by_version(type_key).items())
        ]
        for vp in versions:
            for item in self._behind(current, vp.from_version, sample):
                vp.checked += 1
                new = migrate_data(item.data, vp.steps)
                changed = _changed_fields(item.data, new)
                if changed:
                    vp.would_change += 1
                    if len(vp.changes) < examples:
                        vp.changes.append(Example(item.id, item.title, changes=changed))
                problems = self.problems(current, item, new)
                if problems:
                    vp.would_fail += 1
                    if len(vp.failures) < examples:
                        vp.failures.append(Example(item.id, item.title, problems))
        return Preview(type_key, current.version, versions)

    def behind_by_version(self, type_key: str) -> dict[int, int]:
        """How many items of each older version there are: one GROUP BY, no item loaded."""
        current = self.registry.type(type_key)
        stmt = (
            select(Item.type_version, func.count())
            .where(Item.type_key == type_key, Item.type_version < current.version)
            .group_by(Item.type_version)
        )
        return {version: count for version, count in self.session.execute(stmt)}

    def count_behind(self, type_key: str) -> int:
        """How many items are under an older version than the current one."""
        return self._count_behind(self.registry.type(type_key))

    def apply(
        self, type_key: str, *, progress: Callable[[int, int], None] | None = None, failures_kept: int = 20
    ) -> Result:
        """Migrate every item behind the current version that validates under it, a batch per
        transaction; each gets an ``updated`` event with its field changes (when any) and a
        ``migrated`` event. Items that would not validate stay as they are and are counted; the
        first ``failures_kept`` are returned with their problems. ``progress(done, total)`` is
        told after each batch how many items were gone through."""
        current = self.registry.type(type_key)
        total = self._count_behind(current)
        result = Result()
        last_id = 0
        while True:
            ids = list(
                self.session.scalars(
                    select(Item.id)
                    .where(Item.type_key == type_key, Item.type_version < current.version, Item.id > last_id)
                    .order_by(Item.id)
                    .limit(BATCH)
                )
            )
            self.session.rollback()  # end the read: each batch is its own transaction
            if not ids:
                break
            for attempt in range(3):
                try:
                    done, failed = self._batch(current, ids)
                    break
                except Conflict:  # someone saved one of these items meanwhile: do the batch again
                    if attempt == 2:
                        raise
            result.migrated += done
            result.failed += len(failed)
            result.failures.extend(failed[: max(0, failures_kept - len(result.failures))])
            last_id = ids[-1]
            if progress is not None:
                progress(result.migrated + result.failed, total)
        return result

    def _batch(self, current: TrackerType, ids: list[int]) -> tuple[int, list[Example]]:
        service = ItemService(self.session, self.actor, self.registry, today=self.today)
        done, failed = 0, []
        with service._transaction():
            items = self.session.scalars(select(Item).where(Item.id.in_(ids)).order_by(Item.id))
            for item in items:
                if item.type_version >= current.version:
                    continue  # migrated by someone else meanwhile
                old_version = item.type_version
                steps = self.steps(current.key, old_version)
                new = migrate_data(item.data, steps)
                problems = self.problems(current, item, new)
                if problems:
                    failed.append(Example(item.id, item.title, problems))
                    continue
                try:
                    # no flush until it validated: a refused item is left exactly as it was
                    with self.session.no_autoflush:
                        item.type_version = current.version
                        service._write_data(item, new, item.status)
                except ValidationFailed as exc:  # e.g. a duplicate identity after a rename
                    item.type_version = old_version
                    failed.append(Example(item.id, item.title, exc.problems))
                    continue
                service._record(
                    item,
                    "migrated",
                    {
                        "from_version": old_version,
                        "to_version": current.version,
                        "steps": [describe(s) for s in steps],
                    },
                )
                done += 1
        return done, failed

    def problems(self, tracker_type: TrackerType, item: Item, data: dict) -> list[Problem]:
        """What would be wrong with ``data`` for ``item`` under ``tracker_type``: the schema,
        error rules and the fields its state requires (as a save would check)."""
        problems = schema_problems(_validator(tracker_type), data)
        context = sandbox.context_for(
            data,
            {"status": item.status, "title": item.title, "id": item.id, "assignee": None},
            _subject_context(item.subject),
        )
        for rule in tracker_type.rules:
            if rule.severity == "warning":
                continue
            try:
                failed = sandbox.evaluate(rule.when, context)
            except Exception:  # noqa: BLE001 - as the item service: an uncomputable rule does not fail
                failed = False
            if failed:
                problems.append(Problem(rule.path, rule.message, rule.advice, rule.key))
        workflow = self.registry.workflow_for(tracker_type)
        for name in workflow.fields_for(item.status).required:
            if not is_filled(get_path(data, name)):
                problems.append(Problem("/" + name.replace(".", "/"), f"{name} is required in state '{item.status}'"))
        if workflow.state(item.status) is None:
            problems.append(
                Problem(
                    "status",
                    f"state '{item.status}' is not in the workflow of version {tracker_type.version}",
                    "Move the item to a state the new version has first, or keep the state in the workflow.",
                )
            )
        return problems

    def _behind(self, current: TrackerType, version: int, limit: int | None):
        """The items of ``version``, oldest first, ``limit`` at most, a batch at a time."""
        last_id, seen = 0, 0
        while limit is None or seen < limit:
            size = BATCH if limit is None else min(BATCH, limit - seen)
            batch = list(
                self.session.scalars(
                    select(Item)
                    .where(Item.type_key == current.key, Item.type_version == version, Item.id > last_id)
                    .order_by(Item.id)
                    .limit(size)
                )
            )
            if not batch:
                return
            yield from batch
            seen += len(batch)
            last_id = batch[-1].id

    def _count_behind(self, current: TrackerType) -> int:
        stmt = select(func.count()).where(Item.type_key == current.key, Item.type_version < current.version)
        return self.session.scalar(stmt) or 0


def _changed_fields(old: dict, new: dict) -> list[str]:
    from engine.history import diff

    return [c["path"] for c in diff(old, new)]
