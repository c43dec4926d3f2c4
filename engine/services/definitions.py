"""Tracker types kept in the database: create, copy, edit a draft, publish, roll back, export
and import. Every door (the type editor, ``tracker types ...``) goes through
:class:`DefinitionService`, which checks ``types.admin`` and checks every document with the
loader that checks definition folders, so a publish with a problem is refused with the same
messages ``tracker check`` prints.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit, permissions
from engine.definitions import store
from engine.definitions.documents import (
    diff,
    drop_top_level,
    new_type_texts,
    renamed_texts,
    set_top_level,
    without_migrations,
)
from engine.definitions.loader import DefinitionProblem
from engine.definitions.model import Registry, TrackerType
from engine.definitions.store import KEY_PATTERN, Loaded, Texts
from engine.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationFailed
from engine.models import DefinitionPublish, Item, TypeDefinition, utcnow
from engine.permissions import Actor

#: the largest definition document accepted (a guard against pasting a data dump)
MAX_DOCUMENT_BYTES = 512 * 1024
#: the most files a .zip to import may hold
MAX_BUNDLE_FILES = 500


class DefinitionRejected(ValidationFailed):
    """A definition has problems; ``definition_problems`` lists them as ``tracker check`` does
    (document, line, JSON pointer, message, advice)."""

    def __init__(self, problems: list[DefinitionProblem], message: str) -> None:
        self.definition_problems = list(problems)
        super().__init__(
            [
                Problem(f"{p.file}:{p.line}: {p.pointer}" if p.line else f"{p.file}: {p.pointer}", p.message, p.advice)
                for p in problems
            ],
            message,
        )


@dataclass
class TypeRow:
    """One line of the list of types."""

    key: str
    name: str
    origin: str  # "files" or "database"
    version: int | None  # the published version items are created under (None: never published)
    draft: int | None  # the version number of the draft being edited, if any
    items: dict[int, int]  # item counts by type version
    kind: str = "tracker"

    @property
    def item_count(self) -> int:
        return sum(self.items.values())


@dataclass
class Publish:
    """A published version and its entry in the audit log."""

    definition: TypeDefinition
    entry: DefinitionPublish


class DefinitionService:
    """Tracker types kept in the database, for one actor.

    Args:
        session: a SQLAlchemy session; each changing method commits or rolls it back.
        actor: who does it; every method needs ``types.admin``.
        registry: the current definitions (folders and database).
        after_publish: called after a publish, rollback or import has been committed (the
            runtime rebuilds its registry and the task-list indexes there).
    """

    def __init__(
        self,
        session: Session,
        actor: Actor,
        registry: Registry,
        *,
        after_publish: Callable[[], Registry | None] | None = None,
    ) -> None:
        self.session = session
        self.actor = actor
        self.registry = registry
        self.after_publish = after_publish
        permissions.require(actor, "types.admin")

    # -- reading -----------------------------------------------------------------------------------

    def overview(self) -> list[TypeRow]:
        """Every type, from files and from the database (drafts never published too), with its
        item counts per version; subject types first, then by name."""
        counts: dict[str, dict[int, int]] = {}
        for key, version, n in self.session.execute(
            select(Item.type_key, Item.type_version, func.count()).group_by(Item.type_key, Item.type_version)
        ):
            counts.setdefault(key, {})[version] = n
        rows: dict[str, TypeRow] = {}
        for t in self.registry.types.values():
            origin = "database" if t.key in self.registry.stored else "files"
            rows[t.key] = TypeRow(t.key, t.name, origin, t.version, None, counts.get(t.key, {}), t.kind)
        for d in self.session.scalars(select(TypeDefinition).order_by(TypeDefinition.type_key, TypeDefinition.version)):
            row = rows.get(d.type_key)
            if row is None:
                row = rows[d.type_key] = TypeRow(d.type_key, _name_of(d), "database", None, None, {}, "tracker")
            if d.status == "draft":
                row.draft = d.version
            elif row.origin == "database":
                row.version = max(row.version or 0, d.version)
        return sorted(rows.values(), key=lambda r: (r.kind != "subject", r.name.lower()))

    def is_stored(self, key: str) -> bool:
        """True when ``key`` is a type kept in the database (published or only drafted)."""
        return self.session.scalar(select(TypeDefinition.id).where(TypeDefinition.type_key == key).limit(1)) is not None

    def published(self, key: str, version: int | None = None) -> TypeDefinition:
        """A published version (the newest when ``version`` is None). Raises NotFound."""
        stmt = select(TypeDefinition).where(TypeDefinition.type_key == key, TypeDefinition.status == "published")
        if version is not None:
            stmt = stmt.where(TypeDefinition.version == version)
        row = self.session.scalar(stmt.order_by(TypeDefinition.version.desc()).limit(1))
        if row is None:
            what = f"version {version} of '{key}'" if version is not None else f"a published version of '{key}'"
            raise NotFound(f"There is no {what} in the database.", f"Run 'tracker types versions {key}' to list them.")
        return row

    def versions(self, key: str) -> list[TypeDefinition]:
        """The published versions of ``key``, newest first."""
        self._known(key)
        stmt = select(TypeDefinition).where(TypeDefinition.type_key == key, TypeDefinition.status == "published")
        return list(self.session.scalars(stmt.order_by(TypeDefinition.version.desc())))

    def history(self, key: str) -> list[DefinitionPublish]:
        """The audit log of ``key``: every publish, rollback and import, newest first."""
        stmt = select(DefinitionPublish).where(DefinitionPublish.type_key == key)
        return list(self.session.scalars(stmt.order_by(DefinitionPublish.id.desc())))

    def entry(self, key: str, entry_id: int) -> DefinitionPublish:
        found = self.session.get(DefinitionPublish, entry_id)
        if found is None or found.type_key != key:
            raise NotFound(f"There is no publish #{entry_id} of '{key}'.", "Pick one from the type's history.")
        return found

    def texts_of(self, key: str) -> Texts:
        """The documents of the current definition of ``key``: the draft if there is one, else
        the newest published version, else (a type from files) its files."""
        draft = self._draft_row(key)
        if draft is not None:
            return Texts.of(draft)
        if self.is_stored(key):
            return Texts.of(self.published(key))
        return self.file_texts(key)

    def file_texts(self, key: str) -> Texts:
        """The documents of a type from a definitions folder: its schema.json and type.yaml,
        and the workflow file it uses."""
        tracker_type = self.registry.type(key)
        folder = _existing(tracker_type.source)
        if folder is None or not (folder / "type.yaml").is_file():
            raise NotFound(
                f"The files of '{key}' cannot be found ({tracker_type.source}).", "Check the definitions path."
            )
        workflow = self.registry.workflows.get(tracker_type.workflow)
        workflow_file = _existing(workflow.source) if workflow else None
        return Texts(
            (folder / "schema.json").read_text(encoding="utf-8"),
            (folder / "type.yaml").read_text(encoding="utf-8"),
            workflow_file.read_text(encoding="utf-8") if workflow_file and workflow_file.is_file() else "",
            "",
        )

    # -- drafts ------------------------------------------------------------------------------------

    def draft(self, key: str) -> TypeDefinition:
        """The draft of ``key``, started from its newest published version when there is none.
        Raises NotFound for an unknown key and PermissionDenied for a type from files."""
        row = self._draft_row(key)
        if row is not None:
            return row
        self._not_from_files(key)
        newest = self.published(key)
        row = TypeDefinition(
            type_key=key,
            version=newest.version + 1,
            status="draft",
            **_columns(without_migrations(Texts.of(newest))),
            created_by_id=self.actor.user_id,
        )
        self.session.add(row)
        self.session.commit()
        return row

    def has_draft(self, key: str) -> bool:
        return self._draft_row(key) is not None

    def create(self, key: str, name: str, *, subject: str = "none", copy_from: str | None = None) -> TypeDefinition:
        """Start a new type ``key`` as a draft: a small working type, or a copy of the type
        ``copy_from`` (from files or the database) with its workflow. Raises ValidationFailed
        for a key that is malformed or taken."""
        key, name = (key or "").strip(), (name or "").strip()
        problems = []
        if not KEY_PATTERN.match(key) or len(key) > 64:
            problems.append(
                Problem(
                    "key",
                    f"'{key}' cannot be a type key" if key else "The key is empty",
                    "Use lower-case letters, digits and _, starting with a letter, e.g. safeguarding_concern.",
                )
            )
        elif key in self.registry.types or self.is_stored(key):
            where = "in the database" if self.is_stored(key) else "in definition files"
            problems.append(Problem("key", f"There is already a type '{key}' {where}", "Choose another key."))
        if not name:
            problems.append(Problem("name", "The name is empty", "Give the type a name people will recognise."))
        if subject not in ("learner", "employer", "none"):
            problems.append(Problem("subject", f"'{subject}' is not a subject", "Use learner, employer or none."))
        if copy_from is not None and copy_from not in self.registry.types and not self.is_stored(copy_from):
            problems.append(Problem("copy_from", f"There is no type '{copy_from}' to copy", "Pick one from the list."))
        if problems:
            raise ValidationFailed(problems, "The type was not created.")
        if copy_from is None:
            texts = new_type_texts(key, name, subject)
        else:
            # the workflow is copied too (a file type's as well), so the copy can change its
            # own; roles are shared by every type and stay with the original
            source = dataclasses.replace(self.texts_of(copy_from), roles_yaml="")
            texts = renamed_texts(source, key, name, own_workflow=True)
        if texts.workflow_yaml.strip() and key in self.registry.workflows:
            raise ValidationFailed(
                [Problem("key", f"'{key}' is already the key of a workflow", "Choose another key for the new type.")],
                "The type was not created.",
            )
        row = TypeDefinition(
            type_key=key, version=1, status="draft", **_columns(texts), created_by_id=self.actor.user_id
        )
        self.session.add(row)
        self.session.commit()
        return row

    def check(self, key: str, texts: Texts | None = None) -> Loaded:
        """Load ``texts`` (default: the draft) as the next version of ``key`` and report every
        problem, as ``tracker check`` would; nothing is saved."""
        if texts is None:
            row = self.draft(key)
            texts, version = Texts.of(row), row.version
        else:
            version = self._next_version(key)
        too_big = [name for name, text in texts.by_document().items() if len(text.encode()) > MAX_DOCUMENT_BYTES]
        if too_big:
            return Loaded(
                None,
                problems=[
                    DefinitionProblem(
                        name, None, "", f"is larger than {MAX_DOCUMENT_BYTES // 1024} KB", "Make the document smaller."
                    )
                    for name in too_big
                ],
            )
        return store.load_texts(self.registry, key, version, texts)

    def save_draft(self, key: str, texts: Texts) -> Loaded:
        """Keep ``texts`` as the draft of ``key`` (problems and all: a draft is work in
        progress) and return what checking it found. Documents over the size limit are refused."""
        row = self.draft(key)
        loaded = self.check(key, texts)
        if loaded.tracker_type is None and any("is larger than" in p.message for p in loaded.problems):
            raise DefinitionRejected(loaded.problems, "The draft was not saved.")
        for name, value in _columns(texts).items():
            setattr(row, name, value)
        row.updated_at = utcnow()
        self.session.commit()
        return loaded

    def discard_draft(self, key: str) -> None:
        """Throw the draft of ``key`` away; a type never published disappears with it."""
        row = self._draft_row(key)
        if row is None:
            raise NotFound(f"'{key}' has no draft.", "There is nothing to discard.")
        self.session.delete(row)
        self.session.commit()

    # -- publishing --------------------------------------------------------------------------------

    def publish(self, key: str, note: str = "") -> Publish:
        """Make the draft of ``key`` its newest version: items created from now on use it.
        Raises DefinitionRejected, listing every problem, when it does not load."""
        row = self.draft(key)
        loaded = self.check(key)
        if not loaded.ok:
            raise DefinitionRejected(loaded.problems, f"Version {row.version} of '{key}' was not published.")
        previous = self._newest_published(key)
        row.type_yaml = set_top_level(row.type_yaml, "version", row.version)
        if previous is not None and _same(Texts.of(previous), Texts.of(row)):
            self.session.rollback()
            raise ValidationFailed(
                [
                    Problem(
                        "draft",
                        f"The draft is the same as version {previous.version}, the current version",
                        "Change something first; there is nothing to publish.",
                    )
                ],
                "Nothing was published.",
            )
        row.status, row.note = "published", (note or "").strip()
        row.created_by_id, row.created_at = self.actor.user_id, utcnow()
        entry = self._log(row, "publish", previous)
        self._committed()
        return Publish(row, entry)

    def rollback(self, key: str, version: int, note: str = "") -> Publish:
        """Publish the documents of an earlier ``version`` again, as a new version. A draft
        being edited is kept (renumbered after it). Raises DefinitionRejected when that
        version no longer loads (a definition it depends on changed)."""
        old = self.published(key, version)
        previous = self._newest_published(key)
        if previous is not None and previous.version == version:
            raise ValidationFailed(
                [
                    Problem(
                        "version", f"Version {version} is already the current version of '{key}'", "Pick an older one."
                    )
                ],
                "Nothing was rolled back.",
            )
        new_version = previous.version + 1 if previous else 1
        texts = without_migrations(Texts.of(old))
        loaded = store.load_texts(self.registry, key, new_version, texts)
        if not loaded.ok:
            raise DefinitionRejected(loaded.problems, f"Version {version} of '{key}' cannot be published again.")
        self._make_room(key, new_version)
        row = TypeDefinition(
            type_key=key,
            version=new_version,
            status="published",
            **_columns(dataclasses.replace(texts, type_yaml=set_top_level(texts.type_yaml, "version", new_version))),
            note=(note or "").strip() or f"Rolled back to version {version}",
            created_by_id=self.actor.user_id,
        )
        self.session.add(row)
        self._flush()
        entry = self._log(row, "rollback", previous, from_version=version)
        self._committed()
        return Publish(row, entry)

    # -- export and import -------------------------------------------------------------------------

    def export(self, key: str, destination: Path) -> list[Path]:
        """Write ``key`` (its newest published version, or its files) in the folder format
        into ``destination``: a folder, or a ``.zip`` file. Returns the paths written."""
        texts = self.published_or_file_texts(key)
        files = bundle(key, texts, self.registry)
        destination = Path(destination)
        if destination.suffix == ".zip":
            if destination.exists():
                raise ValidationFailed(
                    [Problem("destination", f"{destination} already exists", "Give the name of a new .zip file.")],
                    "Nothing was exported.",
                )
            destination.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(destination, "w", zipfile.ZIP_DEFLATED) as archive:
                for name, text in files.items():
                    archive.writestr(name, text)
            return [destination]
        clashes = [name for name in files if (destination / name).exists()]
        if clashes:
            raise ValidationFailed(
                [Problem("destination", f"{destination / clashes[0]} already exists", "Export into an empty folder.")],
                "Nothing was exported.",
            )
        written = []
        for name, text in files.items():
            path = destination / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
        return written

    def published_or_file_texts(self, key: str) -> Texts:
        if self.is_stored(key):
            return Texts.of(self.published(key))
        return self.file_texts(key)

    def import_folder(self, source: Path, *, key: str | None = None, note: str = "") -> list[Publish]:
        """Publish each type of a definitions folder (or a .zip of one) as a new version kept
        in the database, after checking it as ``tracker check`` does. ``key`` imports a single
        type under another key. All or nothing: one problem and nothing is imported."""
        source = Path(source)
        with _opened(source) as folder:
            found = _types_in(folder)
            if not found:
                raise ValidationFailed(
                    [
                        Problem(
                            "source",
                            f"{source} holds no tracker type",
                            "Give a definitions folder with tracker_types/<key>/type.yaml and schema.json.",
                        )
                    ],
                    "Nothing was imported.",
                )
            if key is not None and len(found) > 1:
                raise ValidationFailed(
                    [Problem("key", f"{source} holds {len(found)} types", "Import them without --key.")],
                    "Nothing was imported.",
                )
            roles_file = next(
                (p for p in (folder / "roles.yaml", folder / "tracker_types" / "roles.yaml") if p.is_file()), None
            )
            scratch = dataclasses.replace(
                self.registry,
                types=dict(self.registry.types),
                workflows=dict(self.registry.workflows),
                roles=dict(self.registry.roles),
                stored=dict(self.registry.stored),
                type_workflows=dict(self.registry.type_workflows),
                versions=dict(self.registry.versions),
            )
            plans = []
            problems: list[DefinitionProblem] = []
            for i, type_folder in enumerate(found):
                texts, names = _folder_texts(folder, type_folder, roles_file if i == 0 else None, source, self.registry)
                target = key or type_folder.name
                if key is not None and key != type_folder.name:
                    texts = renamed_texts(
                        texts, key, _name_in(texts) or key, own_workflow=bool(texts.workflow_yaml.strip())
                    )
                if target in self.registry.types and target not in self.registry.stored:
                    raise PermissionDenied(
                        f"'{target}' is a type from definition files, which the database cannot replace.",
                        "Import it under another key (tracker types import DIR --key NEW_KEY).",
                    )
                version = self._next_version(target)
                loaded = store.load_texts(scratch, target, version, texts, names=names)
                problems += loaded.problems
                if loaded.ok:
                    store._install(scratch, target, loaded)
                plans.append((target, version, texts))
        if problems:
            raise DefinitionRejected(problems, "Nothing was imported.")
        published = []
        for target, version, texts in plans:
            previous = self._newest_published(target)
            self._make_room(target, version)
            row = TypeDefinition(
                type_key=target,
                version=version,
                status="published",
                **_columns(dataclasses.replace(texts, type_yaml=set_top_level(texts.type_yaml, "version", version))),
                note=(note or "").strip() or f"Imported from {source.name}",
                created_by_id=self.actor.user_id,
            )
            self.session.add(row)
            self._flush()
            published.append(Publish(row, self._log(row, "import", previous)))
        self._committed()
        return published

    # -- internals ---------------------------------------------------------------------------------

    def _known(self, key: str) -> None:
        if key not in self.registry.types and not self.is_stored(key):
            known = ", ".join(sorted(self.registry.types)) or "none"
            raise NotFound(f"There is no tracker type '{key}'.", f"Known types: {known}.")

    def _not_from_files(self, key: str) -> None:
        self._known(key)
        if not self.is_stored(key):
            raise PermissionDenied(
                f"'{key}' is defined in definition files, so it cannot be changed here.",
                "Copy it to a new type kept in the database, or change its files and run 'tracker check'.",
            )

    def _draft_row(self, key: str) -> TypeDefinition | None:
        return self.session.scalar(
            select(TypeDefinition).where(TypeDefinition.type_key == key, TypeDefinition.status == "draft")
        )

    def _newest_published(self, key: str) -> TypeDefinition | None:
        stmt = select(TypeDefinition).where(TypeDefinition.type_key == key, TypeDefinition.status == "published")
        return self.session.scalar(stmt.order_by(TypeDefinition.version.desc()).limit(1))

    def _next_version(self, key: str) -> int:
        newest = self.session.scalar(select(func.max(TypeDefinition.version)).where(TypeDefinition.type_key == key))
        draft = self._draft_row(key)
        return draft.version if draft is not None else (newest or 0) + 1

    def _make_room(self, key: str, version: int) -> None:
        """A draft holding ``version`` moves one on: the version being published takes the number."""
        draft = self._draft_row(key)
        if draft is not None and draft.version <= version:
            draft.version = version + 1
            self._flush()

    def _log(
        self, row: TypeDefinition, action: str, previous: TypeDefinition | None, *, from_version: int | None = None
    ) -> DefinitionPublish:
        before = Texts.of(previous) if previous is not None else None
        entry = DefinitionPublish(
            type_key=row.type_key,
            version=row.version,
            action=action,
            from_version=from_version,
            actor_id=self.actor.user_id,
            note=row.note,
            diff=diff(
                before,
                Texts.of(row),
                f"version {previous.version}" if previous else "empty",
                f"version {row.version}",
            ),
        )
        self.session.add(entry)
        audit.record(
            self.session,
            f"definition.{action}",
            actor=self.actor,
            target=f"type {row.type_key} version {row.version}" + (f" from {from_version}" if from_version else ""),
            definition_publish=entry,
        )
        return entry

    @contextmanager
    def _one_winner(self) -> Iterator[None]:
        """Two publishes of one type at the same moment take the same number: one wins, the
        other is told and changes nothing."""
        try:
            yield
        except IntegrityError:
            self.session.rollback()
            raise Conflict(
                "Someone else published this type at the same moment, so nothing was published.",
                "Reload the page to see their version, then publish again if your change is still needed.",
            ) from None
        except BaseException:
            self.session.rollback()
            raise

    def _flush(self) -> None:
        with self._one_winner():
            self.session.flush()

    def _committed(self) -> None:
        with self._one_winner():
            self.session.commit()
        if self.after_publish is not None:
            fresh = self.after_publish()
            if fresh is not None:
                self.registry = fresh


# -- helpers ---------------------------------------------------------------------------------------


def _columns(texts: Texts) -> dict[str, str]:
    return {
        "schema_json": texts.schema_json,
        "type_yaml": texts.type_yaml,
        "workflow_yaml": texts.workflow_yaml,
        "roles_yaml": texts.roles_yaml,
    }


def _same(a: Texts, b: Texts) -> bool:
    """True when two versions differ in nothing but their version number and migrations."""

    def plain(t: Texts) -> Texts:
        return dataclasses.replace(t, type_yaml=set_top_level(drop_top_level(t.type_yaml, "migrations"), "version", 0))

    return plain(a) == plain(b)


def _name_of(row: TypeDefinition) -> str:
    return _name_in(Texts.of(row)) or row.type_key


def _name_in(texts: Texts) -> str | None:
    try:
        raw = yaml.safe_load(texts.type_yaml)
    except yaml.YAMLError:
        return None
    name = raw.get("name") if isinstance(raw, dict) else None
    return name if isinstance(name, str) and name.strip() else None


def _existing(source: str) -> Path | None:
    if not source:
        return None
    path = Path(source)
    path = path if path.is_absolute() else Path.cwd() / path
    return path if path.exists() else None


def bundle(key: str, texts: Texts, registry: Registry) -> dict[str, str]:
    """The files of the folder format for one type: ``tracker_types/<key>/schema.json`` and
    ``type.yaml``, ``workflows/<workflow>.yaml`` and, when the type brings roles, ``roles.yaml``."""
    files = {
        f"tracker_types/{key}/schema.json": texts.schema_json,
        f"tracker_types/{key}/type.yaml": texts.type_yaml,
    }
    workflow_key = store.workflow_key_of(texts)
    if workflow_key is None:  # the type uses a workflow from files: ship that one
        tracker_type: TrackerType | None = registry.types.get(key)
        workflow = registry.workflows.get(tracker_type.workflow) if tracker_type else None
        path = _existing(workflow.source) if workflow else None
        if workflow is not None and path is not None and path.is_file():
            files[f"workflows/{workflow.key}.yaml"] = path.read_text(encoding="utf-8")
    else:
        files[f"workflows/{workflow_key}.yaml"] = texts.workflow_yaml
    if texts.roles_yaml.strip():
        files["roles.yaml"] = texts.roles_yaml
    return files


class _opened:
    """A definitions folder, or a .zip of one unpacked into a temporary folder for the duration."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        if self.source.is_dir():
            return self.source
        if not self.source.is_file() or not zipfile.is_zipfile(self.source):
            raise ValidationFailed(
                [Problem("source", f"{self.source} is neither a folder nor a .zip file", "Give a definitions folder.")],
                "Nothing was imported.",
            )
        self.tmp = Path(tempfile.mkdtemp(prefix="tracker-import-"))
        with zipfile.ZipFile(self.source) as archive:
            if len(archive.infolist()) > MAX_BUNDLE_FILES:
                raise ValidationFailed(
                    [
                        Problem(
                            "source",
                            f"{self.source.name} holds more than {MAX_BUNDLE_FILES} files",
                            "A definitions folder holds a few small files: zip only that folder.",
                        )
                    ],
                    "Nothing was imported.",
                )
            for info in archive.infolist():
                name = PurePosixPath(info.filename)
                if info.is_dir() or name.is_absolute() or ".." in name.parts:
                    continue
                if info.file_size > MAX_DOCUMENT_BYTES:
                    raise ValidationFailed(
                        [Problem("source", f"{info.filename} is too large", "Definition files are small text files.")],
                        "Nothing was imported.",
                    )
                target = self.tmp.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(archive.read(info))
        # a zip of a folder holds the folder itself: look inside it
        inner = [p for p in self.tmp.iterdir()]
        if len(inner) == 1 and inner[0].is_dir() and not (self.tmp / "tracker_types").exists():
            return inner[0]
        return self.tmp

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)


def _types_in(folder: Path) -> list[Path]:
    types = folder / "tracker_types"
    if not types.is_dir():
        return []
    return sorted(
        p for p in types.iterdir() if p.is_dir() and ((p / "type.yaml").exists() or (p / "schema.json").exists())
    )


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8") if path.is_file() else ""
    except (OSError, UnicodeDecodeError):
        return ""


def _folder_texts(
    folder: Path, type_folder: Path, roles_file: Path | None, source: Path, registry: Registry
) -> tuple[Texts, dict[str, str]]:
    """The documents of one type in a folder, and the names its problems are reported under
    (``<source>/tracker_types/<key>/type.yaml``, as ``tracker check`` names them)."""
    manifest = _read(type_folder / "type.yaml")
    try:
        raw = yaml.safe_load(manifest)
    except yaml.YAMLError:
        raw = None
    workflow_key = raw.get("workflow") if isinstance(raw, dict) and isinstance(raw.get("workflow"), str) else None
    workflow_path = folder / "workflows" / f"{workflow_key}.yaml" if workflow_key else None
    workflow = _read(workflow_path) if workflow_path else ""
    existing = registry.workflows.get(workflow_key) if workflow_key else None
    if existing is not None and existing.key not in {s.workflow for s in registry.stored.values()}:
        # the folder ships a copy of a workflow from files (an export does): use that one
        path = _existing(existing.source)
        if path is not None and path.is_file() and _read(path) == workflow:
            workflow, workflow_path = "", None

    def shown(path: Path | None) -> str:
        if path is None:
            return ""
        return str(source / path.relative_to(folder)) if source.is_dir() else f"{source}:{path.relative_to(folder)}"

    texts = Texts(_read(type_folder / "schema.json"), manifest, workflow, _read(roles_file) if roles_file else "")
    names = {
        "schema.json": shown(type_folder / "schema.json"),
        "type.yaml": shown(type_folder / "type.yaml"),
        "workflow.yaml": shown(workflow_path) or "workflow.yaml",
        "roles.yaml": shown(roles_file) or "roles.yaml",
    }
    return texts, names
