"""Typed, immutable views of the definition documents. Each maps one-to-one onto YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

STATE_CATEGORIES = ("open", "done", "cancelled")
CAPABILITIES = (
    "items.create",
    "items.view",
    "items.edit",
    "items.transition",
    "automation.create",
    "types.admin",
    "users.admin",
    "exports.bulk",
    "finance.view",
    "items.import",
    "documents.qa",
    "progress.edit",
)
PSEUDO_ROLES = ("creator", "assignee")


@dataclass(frozen=True)
class State:
    key: str
    label: str
    category: str = "open"
    initial: bool = False


@dataclass(frozen=True)
class Action:
    """One step a transition performs: ``set``, ``assign``, ``notify``, ``create`` or ``update_related``."""

    kind: str
    value: Any


@dataclass(frozen=True)
class Transition:
    key: str
    sources: tuple[str, ...]  # ("*",) means from any state
    target: str
    label: str
    roles: tuple[str, ...] = ()
    requires: tuple[str, ...] = ()
    condition: str | None = None
    actions: tuple[Action, ...] = ()
    #: document categories that must have an accepted document before the step is taken
    requires_documents: tuple[str, ...] = ()

    def leaves(self, state: str) -> bool:
        return "*" in self.sources or state in self.sources


@dataclass(frozen=True)
class StateFields:
    read_only: tuple[str, ...] = ()
    required: tuple[str, ...] = ()
    hidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class Workflow:
    key: str
    name: str
    states: tuple[State, ...]
    transitions: tuple[Transition, ...]
    state_fields: dict[str, StateFields] = field(default_factory=dict)
    source: str = ""

    @property
    def initial(self) -> State:
        return next(s for s in self.states if s.initial)

    def state(self, key: str) -> State | None:
        return next((s for s in self.states if s.key == key), None)

    def transitions_from(self, state: str) -> list[Transition]:
        return [t for t in self.transitions if t.leaves(state)]

    def fields_for(self, state: str) -> StateFields:
        return self.state_fields.get(state, StateFields())

    def states_in(self, categories) -> list[str]:
        return [s.key for s in self.states if s.category in categories]


@dataclass(frozen=True)
class Rule:
    key: str
    when: str
    message: str
    advice: str = ""
    path: str = ""
    severity: str = "error"
    #: an array (``learning_deliveries``, or ``learning_deliveries.app_fin_records`` through rows of
    #: rows): ``when`` is evaluated once per row, which it sees as ``row``; ``*`` in ``path`` is its index
    for_each: str = ""


@dataclass(frozen=True)
class Contract:
    """A contract's own rules for one type (``tracker_types/<type>/contracts/<key>.yaml``),
    applied to the items whose ``contract_field`` holds ``key``."""

    key: str
    type_key: str
    name: str
    rules: tuple[Rule, ...] = ()
    description: str = ""
    source: str = ""


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class AssignmentRule:
    """``assignment: {rule, role, field}`` in type.yaml: who a new item goes to when its
    creator names nobody. See :mod:`engine.assignment`."""

    rule: str  # round_robin | least_loaded | field | queue
    role: str | None = None
    field: str | None = None


@dataclass(frozen=True)
class Reminder:
    """``reminders: [{field: planned_end_date, before: 30d, notify: assignee}]`` in type.yaml:
    notify when the date in ``field`` is ``before`` away (``30d``, ``2w``) or closer."""

    field: str
    before: str
    notify: str

    @property
    def days(self) -> int:
        number, unit = int(self.before[:-1]), self.before[-1]
        return number * 7 if unit == "w" else number

    @property
    def key(self) -> str:
        """Identifies the reminder within its type, for the record of reminders sent."""
        return f"{self.field}:{self.before}:{self.notify}"


@dataclass(frozen=True)
class TaskList:
    key: str
    label: str
    roles: tuple[str, ...] = ()
    statuses: tuple[str, ...] = ()
    status_categories: tuple[str, ...] = ()
    assignee: str = "any"
    conditions: tuple[Condition, ...] = ()
    #: document categories: the item is in the list while any of them has no accepted document
    documents_missing: tuple[str, ...] = ()


@dataclass(frozen=True)
class Migration:
    """One step that brings an item's data from the previous version of its type to this one
    (``migrations:`` in type.yaml): ``rename`` {from, to}, ``set_default`` {field, value} or
    ``map_values`` {field, map}. See :mod:`engine.type_migrations`."""

    kind: str
    value: dict


@dataclass(frozen=True)
class StoredType:
    """What a type kept in the database brings besides itself: its own workflow and roles."""

    key: str
    version: int
    workflow: str | None = None
    roles: tuple[str, ...] = ()


@dataclass(frozen=True)
class Template:
    key: str
    name: str
    data: dict


@dataclass(frozen=True)
class Section:
    name: str
    fields: tuple[str, ...]
    hidden: tuple[str, ...] = ()


@dataclass(frozen=True)
class DocumentCategory:
    """A kind of document an item of the type takes (``documents: {categories: [...]}``)."""

    key: str
    label: str
    description: str = ""


@dataclass(frozen=True)
class ProgressSpec:
    """``progress:`` in type.yaml: which qualification structure an item is tracked against,
    named by a field of the item (``qualification_field``, holding a QAN or a standard
    reference) or fixed for the type (``qualification``, a structure's key)."""

    qualification_field: str | None = None
    qualification: str | None = None


@dataclass(frozen=True)
class TrackerType:
    key: str
    name: str
    version: int
    workflow: str
    schema: dict
    subject: str = "none"
    kind: str = "tracker"
    description: str = ""
    title: str = "{{ data.title or '' }}"
    list_columns: tuple[str, ...] = ()
    identity: tuple[str, ...] = ()
    due_date: str | None = None
    create_capability: str = "items.create"
    assignee_required: bool = False
    assignment: AssignmentRule | None = None
    layout: tuple[Section, ...] = ()
    templates: tuple[Template, ...] = ()
    rules: tuple[Rule, ...] = ()
    tasklists: tuple[TaskList, ...] = ()
    permissions: dict[str, tuple[str, ...]] = field(default_factory=dict)
    source: str = ""
    reminders: tuple[Reminder, ...] = ()
    migrations: tuple[Migration, ...] = ()
    #: the property naming the contract whose rules apply to an item (see :class:`Contract`)
    contract_field: str | None = None
    #: the categories of documents items of this type take; none means no uploads
    documents: tuple[DocumentCategory, ...] = ()
    #: how items of this type track progress through a qualification; None: they do not
    progress: ProgressSpec | None = None

    def document_category(self, key: str) -> DocumentCategory | None:
        return next((c for c in self.documents if c.key == key), None)

    def template(self, key: str) -> Template | None:
        return next((t for t in self.templates if t.key == key), None)

    def tasklist(self, key: str) -> TaskList | None:
        return next((t for t in self.tasklists if t.key == key), None)


@dataclass(frozen=True)
class Role:
    key: str
    name: str
    capabilities: frozenset[str]
    scope: str = "all"  # "all" or "own"

    def can(self, capability: str) -> bool:
        return "*" in self.capabilities or capability in self.capabilities


@dataclass
class Registry:
    """Every loaded definition, plus the problems found while loading them.

    ``types`` and ``workflows`` are keyed by definition key. Only definitions without
    problems are in them; ``problems`` lists what was skipped and why.
    """

    types: dict[str, TrackerType] = field(default_factory=dict)
    workflows: dict[str, Workflow] = field(default_factory=dict)
    roles: dict[str, Role] = field(default_factory=dict)
    problems: list = field(default_factory=list)
    #: older versions of types, ``{(key, version): TrackerType}``; items keep their version
    versions: dict[tuple[str, int], TrackerType] = field(default_factory=dict)
    #: plugins' field checks, ``{name: check(value, schema)}``, that ``x-validator`` names;
    #: None when the registry was loaded without plugins (``x-validator`` is then not run)
    field_validators: dict | None = None
    #: the workflow of each version of a type kept in the database, ``{(key, version): Workflow}``
    type_workflows: dict[tuple[str, int], Workflow] = field(default_factory=dict)
    #: types kept in the database (see :mod:`engine.definitions.store`), by key
    stored: dict[str, StoredType] = field(default_factory=dict)
    #: contract rules, ``{type key: {contract key: Contract}}``
    contracts: dict[str, dict[str, Contract]] = field(default_factory=dict)
    #: qualification structures progress is tracked against, by key (see :mod:`engine.definitions.qualifications`)
    qualifications: dict[str, Any] = field(default_factory=dict)
    #: what services work out from these definitions and keep (compiled statements),
    #: dropped with them when the definitions are reloaded
    memo: dict[Any, Any] = field(default_factory=dict, compare=False, repr=False)

    def type(self, key: str, version: int | None = None) -> TrackerType:
        from engine.errors import NotFound

        current = self.types.get(key)
        if current is None:
            known = ", ".join(sorted(self.types)) or "none"
            raise NotFound(f"There is no tracker type '{key}'.", f"Known types: {known}.")
        if version is None or version == current.version:
            return current
        return self.versions.get((key, version), current)

    def workflow_for(self, tracker_type: TrackerType) -> Workflow:
        """The type's workflow; a version kept in the database brings its own."""
        own = self.type_workflows.get((tracker_type.key, tracker_type.version))
        return own if own is not None else self.workflows[tracker_type.workflow]

    def subject_types(self, kind: str) -> list[TrackerType]:
        return [t for t in self.types.values() if t.kind == "subject" and t.key == kind]
