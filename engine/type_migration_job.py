"""Migrating a type's items as background work (see :mod:`engine.background`), as the type
editor starts it: :func:`start` checks the actor may and that items are behind, and refuses a
second migration of a type while one runs; :func:`run` applies it with
:meth:`~engine.type_migrations.TypeMigrator.apply`, reporting the items gone through."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from engine import background
from engine.errors import Conflict, TrackerError
from engine.models import BackgroundJob
from engine.permissions import Actor
from engine.type_migrations import TypeMigrator

if TYPE_CHECKING:
    from engine.runtime import Runtime

KIND = "type_migration"
STAGE = "Migrating items"
UNIT = "items"
#: failed items kept with their problems for the result page (the count covers all of them)
FAILURES_KEPT = 1000


class MigrationRunning(Conflict):
    """A migration of the type is already running: ``job`` is it."""

    def __init__(self, job: BackgroundJob, type_name: str) -> None:
        super().__init__(
            f"A migration of {type_name} (#{job.id}) is already running.",
            "Wait for it to finish; it migrates every item that can be migrated.",
        )
        self.job = job


def start(runtime: Runtime, actor: Actor, type_key: str) -> BackgroundJob:
    """Start migrating the items of ``type_key`` behind its current version; returns the job.

    Raises:
        PermissionDenied: the actor lacks ``types.admin``.
        NotFound: there is no such type.
        MigrationRunning: a migration of the type is already running.
        TrackerError: no item is behind the current version.
    """
    with runtime.session() as session:
        migrator = TypeMigrator(session, actor, runtime.registry)
        current = runtime.registry.type(type_key)
        behind = migrator._count_behind(current)
    if not behind:
        raise TrackerError(
            f"Every {current.name} item is at version {current.version}, the current version.",
            "There is nothing to migrate.",
        )
    existing = background.running(runtime, KIND, type_key)
    if existing is not None:
        raise MigrationRunning(existing, current.name)
    params = {"type_key": type_key, "to_version": current.version}
    return background.start(runtime, actor, KIND, params=params, subject=type_key, stage=STAGE, unit=UNIT, total=behind)


def run(runtime: Runtime, job: background.Run) -> dict[str, Any]:
    """Migrate the items; return the counts and the failed items with their problems."""
    type_key = job.params["type_key"]
    with runtime.session() as session:
        migrator = TypeMigrator(session, job.actor, runtime.registry)
        to_version = runtime.registry.type(type_key).version
        result = migrator.apply(type_key, progress=job.progress, failures_kept=FAILURES_KEPT)
    return {
        "type_key": type_key,
        "to_version": to_version,
        "migrated": result.migrated,
        "failed": result.failed,
        "failures": [
            {
                "item_id": f.item_id,
                "title": f.title,
                "problems": [{"path": p.path, "message": p.message, "advice": p.advice} for p in f.problems],
            }
            for f in result.failures
        ],
    }
