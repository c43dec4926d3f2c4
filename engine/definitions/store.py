"""Tracker types kept in the database, beside those in definition folders.

A type kept in the database is the same four documents as a folder holds (``schema.json``,
``type.yaml``, optionally its own workflow and roles), stored as text in
:class:`~engine.models.TypeDefinition` rows, one per version. They are checked by the very
loader code that checks folders (:mod:`engine.definitions.loader`), so an editor, ``tracker
check`` and a publish report the same problems on the same lines.

:func:`merge` lays the published versions over the registry loaded from the folders: the
newest version of each type is the one items are created under; older versions stay in
``registry.versions`` (with their own workflow in ``registry.type_workflows``) so items
created under them stay readable and editable. :func:`generation` is the highest id of the
audit log of publishes: a process whose registry was built at an older generation reloads.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from engine.definitions import loader
from engine.definitions.loader import DefinitionProblem
from engine.definitions.model import Registry, Role, StoredType, TrackerType, Workflow
from engine.models import DefinitionPublish, TypeDefinition

log = logging.getLogger(__name__)

#: the documents of one type, by the name problems are reported under
DOCUMENTS = ("schema.json", "type.yaml", "workflow.yaml", "roles.yaml")
KEY_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class Texts:
    """The documents of one version of a type, as text."""

    schema_json: str
    type_yaml: str
    workflow_yaml: str = ""
    roles_yaml: str = ""

    @classmethod
    def of(cls, row: TypeDefinition) -> Texts:
        return cls(row.schema_json, row.type_yaml, row.workflow_yaml or "", row.roles_yaml or "")

    def by_document(self) -> dict[str, str]:
        """``{"schema.json": ..., "type.yaml": ..., "workflow.yaml": ..., "roles.yaml": ...}``"""
        return dict(
            zip(DOCUMENTS, (self.schema_json, self.type_yaml, self.workflow_yaml, self.roles_yaml), strict=True)
        )


@dataclass
class Loaded:
    """What loading one version's documents gave: the type, its own workflow and roles, and
    every problem (each naming its document, line and JSON pointer)."""

    tracker_type: TrackerType | None
    workflow: Workflow | None = None
    roles: list[Role] = field(default_factory=list)
    problems: list[DefinitionProblem] = field(default_factory=list)
    #: the workflow document's key, as the loader saw it (also when the workflow is broken)
    workflow_key: str | None = None

    @property
    def ok(self) -> bool:
        return self.tracker_type is not None and not self.problems


def workflow_key_of(texts: Texts) -> str | None:
    """The key a workflow document gives itself, read leniently (the document may be broken)."""
    if not texts.workflow_yaml.strip():
        return None
    try:
        raw = yaml.safe_load(texts.workflow_yaml)
    except yaml.YAMLError:
        raw = None
    key = raw.get("key") if isinstance(raw, dict) else None
    return key if isinstance(key, str) and KEY_PATTERN.match(key) else None


def role_keys_of(texts: Texts) -> list[str]:
    """The keys a roles document defines, read leniently."""
    try:
        raw = yaml.safe_load(texts.roles_yaml) if texts.roles_yaml.strip() else None
    except yaml.YAMLError:
        return []
    roles = raw.get("roles") if isinstance(raw, dict) else None
    return [r["key"] for r in roles or () if isinstance(r, dict) and isinstance(r.get("key"), str)]


def load_texts(
    base: Registry,
    key: str,
    version: int,
    texts: Texts,
    *,
    names: dict[str, str] | None = None,
    check_creates: bool = True,
) -> Loaded:
    """Check and load one version of type ``key`` against ``base`` (everything else loaded).

    The type's own earlier definitions in ``base`` (its current version, its workflow and
    roles) are left out first, so a new version may redefine them. ``names`` maps each
    document name of :data:`DOCUMENTS` to the name problems are reported under (default:
    the document name itself); ``check_creates`` checks the targets of the workflow's
    ``create`` actions now (a merge checks them once every type is in).
    """
    own = base.stored.get(key)
    scratch = dataclasses.replace(
        base,
        types={k: t for k, t in base.types.items() if not (own and k == key)},
        workflows={k: w for k, w in base.workflows.items() if not (own and k == own.workflow)},
        roles={k: r for k, r in base.roles.items() if not (own and k in own.roles)},
        versions=dict(base.versions),
        problems=[],
    )
    root = Path("<database>") / key
    folder = root / "tracker_types" / key
    workflow_key = workflow_key_of(texts) or key
    paths = {
        "schema.json": folder / "schema.json",
        "type.yaml": folder / "type.yaml",
        "workflow.yaml": root / "workflows" / f"{workflow_key}.yaml",
        "roles.yaml": root / "roles.yaml",
    }
    documents = texts.by_document()
    present = {
        paths[name]: text for name, text in documents.items() if name in ("schema.json", "type.yaml") or text.strip()
    }
    shown = {path: (names or {}).get(name, name) for name, path in paths.items()}
    out = loader._Collector(present, shown)
    roles_before = set(scratch.roles)
    if paths["roles.yaml"] in present:
        loader._load_roles(paths["roles.yaml"], scratch, out)
    roles = [scratch.roles[k] for k in scratch.roles if k not in roles_before]
    loaded_workflow = None
    if paths["workflow.yaml"] in present:
        loaded_workflow = loader._load_workflow(paths["workflow.yaml"], scratch, out)
    loader._load_type(folder, scratch, out)
    tracker_type = scratch.types.get(key)
    if tracker_type is not None and loaded_workflow is not None and tracker_type.workflow != loaded_workflow[0].key:
        out.add(
            out.read(paths["type.yaml"]),
            "/workflow",
            f"this type's own workflow is '{loaded_workflow[0].key}', but type.yaml names '{tracker_type.workflow}'",
            f"Set workflow: {loaded_workflow[0].key}, or empty the workflow document to use '{tracker_type.workflow}'.",
        )
    if loaded_workflow is not None and check_creates:
        loader._check_create_actions(*loaded_workflow, scratch, out)
    problems = [_for_database(p, key) for p in out.problems]
    if tracker_type is not None:
        tracker_type = dataclasses.replace(tracker_type, version=version, source=f"database, version {version}")
    workflow = loaded_workflow[0] if loaded_workflow else None
    if workflow is not None:
        workflow = dataclasses.replace(workflow, source=f"database, type {key} version {version}")
    return Loaded(tracker_type, workflow, roles, problems, workflow_key if texts.workflow_yaml.strip() else None)


def _for_database(problem: DefinitionProblem, key: str) -> DefinitionProblem:
    """The loader's advice speaks of folders and files; a type kept in the database has neither."""
    if problem.pointer == "/key" and "does not match the folder name" in problem.message:
        found = problem.message.split("'")[1]
        return dataclasses.replace(
            problem,
            message=f"key '{found}' is not this type's key '{key}'",
            advice=f"Set key: {key}. To give the type another key, copy it.",
        )
    return problem


# -- the registry: files and the database together ------------------------------------------------


def merge(files: Registry, rows: list[TypeDefinition]) -> Registry:
    """The registry of ``files`` with the published versions in ``rows`` laid over it.

    A version that does not load (a definition file it depends on changed since it was
    published) is reported in ``registry.problems`` and left out, like a broken file.
    """
    registry = dataclasses.replace(
        files,
        types=dict(files.types),
        workflows=dict(files.workflows),
        roles=dict(files.roles),
        versions=dict(files.versions),
        type_workflows=dict(files.type_workflows),
        stored=dict(files.stored),
        problems=list(files.problems),
    )
    by_key: dict[str, list[TypeDefinition]] = {}
    for row in sorted(rows, key=lambda r: (r.type_key, r.version)):
        if row.status == "published":
            by_key.setdefault(row.type_key, []).append(row)
    # roles first, as the loader does: one type's workflow may name another's role
    for key, versions in by_key.items():
        current = versions[-1]
        out = loader._Collector({Path("roles.yaml"): current.roles_yaml}, {Path("roles.yaml"): _name(key, current)})
        before = set(registry.roles)
        if current.roles_yaml.strip():
            loader._load_roles(Path("roles.yaml"), registry, out)
        registry.stored[key] = StoredType(
            key, current.version, None, tuple(k for k in registry.roles if k not in before)
        )
        registry.problems += out.problems
    installed: list[tuple[str, Loaded]] = []
    for key, versions in by_key.items():
        current = versions[-1]
        loaded = load_texts(
            registry, key, current.version, Texts.of(current), names=_names(key, current), check_creates=False
        )
        if not loaded.ok:
            registry.problems += loaded.problems
            log.warning("type %s version %s kept in the database did not load", key, current.version)
            continue
        _install(registry, key, loaded)
        installed.append((key, loaded))
    for key, loaded in installed:
        for row in by_key[key][:-1]:
            older = load_texts(registry, key, row.version, Texts.of(row), names=_names(key, row), check_creates=False)
            if older.tracker_type is None:
                registry.problems += older.problems
                continue
            registry.versions[(key, row.version)] = older.tracker_type
            if older.workflow is not None:
                registry.type_workflows[(key, row.version)] = older.workflow
        # create actions may name any type, so they are checked once every type is in
        doc = _workflow_document(key, by_key[key][-1]) if loaded.workflow is not None else None
        if doc is not None:
            out = loader._Collector({}, {})
            loader._check_create_actions(loaded.workflow, doc, registry, out)
            registry.problems += out.problems
    return registry


def _install(registry: Registry, key: str, loaded: Loaded) -> None:
    """Make ``loaded`` the current version of ``key``: items are created under it."""
    tracker_type = loaded.tracker_type
    assert tracker_type is not None
    registry.versions[(key, tracker_type.version)] = tracker_type
    registry.types[key] = tracker_type
    if loaded.workflow is not None:
        registry.type_workflows[(key, tracker_type.version)] = loaded.workflow
        registry.workflows[loaded.workflow.key] = loaded.workflow
    for role in loaded.roles:
        registry.roles[role.key] = role
    registry.stored[key] = StoredType(
        key,
        tracker_type.version,
        loaded.workflow.key if loaded.workflow else None,
        tuple(r.key for r in loaded.roles),
    )


def _workflow_document(key: str, row: TypeDefinition):
    from engine.definitions.sourcemap import SourceError, parse_yaml

    try:
        return parse_yaml(row.workflow_yaml, Path(_names(key, row)["workflow.yaml"]))
    except SourceError:
        return None


def _name(key: str, row: TypeDefinition) -> str:
    return f"database:{key}@{row.version}"


def _names(key: str, row: TypeDefinition) -> dict[str, str]:
    """Problems of a stored version name it like ``database:concern@2/type.yaml``."""
    return {name: f"{_name(key, row)}/{name}" for name in DOCUMENTS}


# -- reading the database -------------------------------------------------------------------------


def generation(engine: Engine) -> int:
    """The highest id of the audit log of publishes (0 when nothing was ever published, -1
    when the database has no such table yet or cannot be reached)."""
    try:
        with engine.connect() as conn:
            return conn.scalar(select(func.max(DefinitionPublish.id))) or 0
    except (OperationalError, ProgrammingError):
        return -1


def published(engine: Engine) -> list[TypeDefinition]:
    """Every published version, oldest first (empty when the table does not exist yet)."""
    try:
        with Session(engine, expire_on_commit=False) as session:
            rows = list(
                session.scalars(
                    select(TypeDefinition)
                    .where(TypeDefinition.status == "published")
                    .order_by(TypeDefinition.type_key, TypeDefinition.version)
                )
            )
            session.expunge_all()
            return rows
    except (OperationalError, ProgrammingError):
        return []
