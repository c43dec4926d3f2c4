"""Load definition folders into a :class:`Registry`, collecting every problem on the way.

Loading never stops at the first mistake: each document is checked against its
meta-schema, then cross-checked against the others, and each problem is recorded with
its file, line (YAML) or JSON pointer, what is wrong and what to do. A type with a
problem is left out; the rest load.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from engine import limits
from engine.definitions.model import (
    PSEUDO_ROLES,
    Action,
    AssignmentRule,
    Condition,
    Contract,
    DocumentCategory,
    Migration,
    ProgressSpec,
    Registry,
    Reminder,
    Role,
    Rule,
    Section,
    State,
    StateFields,
    TaskList,
    Template,
    TrackerType,
    Transition,
    Workflow,
)
from engine.definitions.qualifications import load_qualifications
from engine.definitions.sourcemap import Document, SourceError, parse_json, parse_yaml, pointer, read_json, read_yaml
from engine.sandbox import ExpressionError, check_limits, compile_expression, compile_template, relative_date
from engine.validation import (
    choices,
    make_validator,
    schema_at,
    schema_problems,
    to_problem,
    without_required,
)


@dataclass(frozen=True)
class DefinitionProblem:
    """A mistake in a definition file, reported like a compiler would."""

    file: str
    line: int | None
    pointer: str
    message: str
    advice: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        at = f" {self.pointer}:" if self.pointer else ""
        tail = f"\n  -> {self.advice}" if self.advice else ""
        return f"{where}:{at} {self.message}{tail}"


@dataclass(frozen=True)
class Folder:
    """Where one set of definitions lives."""

    types: Path
    workflows: Path
    roles: tuple[Path, ...]
    label: str

    @classmethod
    def at(cls, root: Path) -> Folder:
        root = Path(root)
        return cls(
            types=root / "tracker_types",
            workflows=root / "workflows",
            roles=(root / "roles.yaml", root / "tracker_types" / "roles.yaml"),
            label=str(root),
        )


def builtin_folder() -> Folder:
    types = Path(str(resources.files("tracker_types")))
    return Folder(
        types=types,
        workflows=Path(str(resources.files("workflows"))),
        roles=(types / "roles.yaml",),
        label="built-in",
    )


def _metaschema(name: str) -> Draft202012Validator:
    text = resources.files("engine.definitions").joinpath("metaschemas", name).read_text()
    return Draft202012Validator(json.loads(text))


_META = {
    name: _metaschema(f"{name}.schema.json") for name in ("type", "workflow", "roles", "contract", "qualification")
}


class _Collector:
    """Collects problems while reading documents from files, or from ``texts`` (documents kept
    in the database, by the path they would have in a definitions folder); ``names`` gives the
    name a path is reported under."""

    def __init__(self, texts: dict[Path, str] | None = None, names: dict[Path, str] | None = None) -> None:
        self.problems: list[DefinitionProblem] = []
        self.texts = texts
        self.names = names or {}

    def display(self, path: Path) -> str:
        return self.names.get(path) or _display(path)

    def exists(self, path: Path) -> bool:
        return path in self.texts if self.texts is not None else path.exists()

    def add(self, doc: Document | Path, ptr: str, message: str, advice: str = "") -> None:
        if isinstance(doc, Document):
            self.problems.append(DefinitionProblem(self.display(doc.path), doc.line_of(ptr), ptr, message, advice))
        else:
            self.problems.append(DefinitionProblem(self.display(doc), None, ptr, message, advice))

    def read(self, path: Path) -> Document | None:
        try:
            if self.texts is not None:
                text = self.texts[path]
                return parse_json(text, path) if path.suffix == ".json" else parse_yaml(text, path)
            return read_json(path) if path.suffix == ".json" else read_yaml(path)
        except SourceError as exc:
            self.problems.append(
                DefinitionProblem(
                    self.display(path), exc.line, "", exc.message, exc.advice or "Fix the syntax; the file was skipped."
                )
            )
        except OSError as exc:
            self.add(path, "", f"cannot be read: {exc.strerror}")
        return None

    def meta(self, doc: Document, name: str) -> bool:
        """Check ``doc`` against its meta-schema; True when it passed."""
        count = len(self.problems)
        if not isinstance(doc.value, dict):
            self.add(doc, "", "must be a mapping of keys to values", f"See docs/definitions.md for the {name} format.")
            return False
        for problem in schema_problems(_META[name], doc.value):
            self.add(doc, problem.path, problem.message, problem.advice)
        return len(self.problems) == count


def _display(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def load_registry(folders: list[Path] | None = None, *, builtin: bool = True) -> Registry:
    """Load the built-in definitions and then each folder in ``folders``.

    Returns a Registry holding everything that loaded cleanly; ``registry.problems``
    lists every :class:`DefinitionProblem` found, in file order.
    """
    sources = ([builtin_folder()] if builtin else []) + [Folder.at(f) for f in folders or ()]
    out = _Collector()
    registry = Registry()
    for folder in sources:
        if folder.label != "built-in" and not Path(folder.label).is_dir():
            out.add(Path(folder.label), "", "is not a folder", "Give the path of a definitions folder.")
    for folder in sources:
        for path in folder.roles:
            if path.is_file():
                _load_roles(path, registry, out)
    raw_workflows = []
    for folder in sources:
        if folder.workflows.is_dir():
            for path in sorted(folder.workflows.glob("*.y*ml")):
                wf = _load_workflow(path, registry, out)
                if wf:
                    raw_workflows.append(wf)
    for folder in sources:
        load_qualifications(folder.types / "qualifications", registry, out)
    for folder in sources:
        if folder.types.is_dir():
            for path in sorted(p for p in folder.types.iterdir() if p.is_dir()):
                if (path / "type.yaml").exists() or (path / "schema.json").exists():
                    _load_type(path, registry, out)
    for wf, doc in raw_workflows:
        _check_create_actions(wf, doc, registry, out)
        _check_update_related(wf, doc, registry, out)
    _load_contracts(sources, registry, out)
    registry.problems = out.problems
    return registry


# -- roles -------------------------------------------------------------------------------


def _load_roles(path: Path, registry: Registry, out: _Collector) -> None:
    doc = out.read(path)
    if doc is None or not out.meta(doc, "roles"):
        return
    for i, raw in enumerate(doc.value["roles"]):
        if raw["key"] in registry.roles:
            out.add(
                doc,
                f"/roles/{i}/key",
                f"role '{raw['key']}' is defined twice",
                "Give the role another key, or remove one definition.",
            )
            continue
        registry.roles[raw["key"]] = Role(
            key=raw["key"],
            name=raw["name"],
            capabilities=frozenset(raw["capabilities"]),
            scope=raw.get("scope", "all"),
        )


# -- workflows ---------------------------------------------------------------------------


def _check_expression(out: _Collector, doc: Document, ptr: str, source: str, template=False) -> None:
    try:
        (compile_template if template else compile_expression)(source)
    except ExpressionError as exc:
        example = "'{{ data.name }}'" if template else "\"data.severity == 'high'\""
        kind = "template" if template else "expression"
        out.add(doc, ptr, f"{kind} does not compile: {exc}", f"Write a Jinja2 {kind} such as {example}.")
        return
    too_much = check_limits(source, template)
    if too_much is not None:
        kind = "template" if template else "expression"
        out.add(doc, ptr, f"{kind} goes past the sandbox's limits: {too_much}", "Build smaller values and loops.")


def _load_workflow(path: Path, registry: Registry, out: _Collector):
    doc = out.read(path)
    if doc is None or not out.meta(doc, "workflow"):
        return None
    raw = doc.value
    before = len(out.problems)
    if raw["key"] != path.stem:
        out.add(
            doc,
            "/key",
            f"key '{raw['key']}' does not match the file name '{path.name}'",
            f"Rename the file to {raw['key']}.yaml or change the key to '{path.stem}'.",
        )
    if raw["key"] in registry.workflows:
        out.add(
            doc,
            "/key",
            f"workflow '{raw['key']}' is already defined in {registry.workflows[raw['key']].source}",
            "Use another key; a later folder cannot replace an earlier definition.",
        )
        return None
    states, seen = [], set()
    for i, s in enumerate(raw["states"]):
        if s["key"] in seen:
            out.add(doc, f"/states/{i}/key", f"state '{s['key']}' is listed twice", "Give each state its own key.")
        seen.add(s["key"])
        states.append(State(s["key"], s["label"], s.get("category", "open"), bool(s.get("initial"))))
    initials = [s.key for s in states if s.initial]
    if len(initials) != 1:
        found = ", ".join(initials) if initials else "none"
        out.add(
            doc,
            "/states",
            f"exactly one state must be initial (found: {found})",
            "Mark the state new items start in with 'initial: true', and only that one.",
        )

    def known_state(ptr: str, key: str) -> None:
        if key not in seen:
            out.add(doc, ptr, f"'{key}' is not a state of this workflow", f"Use one of: {', '.join(sorted(seen))}.")

    transitions, keys = [], set()
    for i, t in enumerate(raw.get("transitions") or ()):
        base = f"/transitions/{i}"
        if t["key"] in keys:
            out.add(doc, f"{base}/key", f"transition '{t['key']}' is listed twice", "Give each transition its own key.")
        keys.add(t["key"])
        sources = ("*",) if t["from"] == "*" else tuple(t["from"])
        for j, s in enumerate(sources):
            if s != "*":
                known_state(f"{base}/from/{j}", s)
        known_state(f"{base}/to", t["to"])
        for j, role in enumerate(t.get("roles") or ()):
            if role not in registry.roles and role not in PSEUDO_ROLES:
                out.add(
                    doc,
                    f"{base}/roles/{j}",
                    f"role '{role}' does not exist",
                    f"Use one of: {', '.join(sorted([*registry.roles, *PSEUDO_ROLES]))}.",
                )
        if t.get("condition"):
            _check_expression(out, doc, f"{base}/condition", t["condition"])
        actions = []
        for j, a in enumerate(t.get("actions") or ()):
            kind, value = next(iter(a.items()))
            _check_party(out, doc, f"{base}/actions/{j}/{kind}", kind, value, registry)
            if kind == "set":
                _check_relative_date(out, doc, f"{base}/actions/{j}/set/value", value.get("value"))
            elif kind == "update_related":
                for k, entry in enumerate(value["set"]):
                    ptr = f"{base}/actions/{j}/update_related/set/{k}"
                    if ("from" in entry) == ("value" in entry):
                        out.add(
                            doc,
                            ptr,
                            f"setting '{entry['field']}' needs either 'from' or 'value'"
                            + (", not both" if "from" in entry else ""),
                            "Use from: to copy a field of this item, or value: for a fixed value or a date like today.",
                        )
                    _check_relative_date(out, doc, f"{ptr}/value", entry.get("value"))
            actions.append(Action(kind, value))
        transitions.append(
            Transition(
                key=t["key"],
                sources=sources,
                target=t["to"],
                label=t.get("label") or t["key"].replace("_", " ").capitalize(),
                roles=tuple(t.get("roles") or ()),
                requires=tuple(t.get("requires") or ()),
                requires_documents=tuple(t.get("requires_documents") or ()),
                condition=t.get("condition"),
                actions=tuple(actions),
            )
        )
    state_fields = {}
    for state, rules in (raw.get("state_fields") or {}).items():
        known_state(f"/state_fields/{state}", state)
        state_fields[state] = StateFields(
            read_only=tuple(rules.get("read_only") or ()),
            required=tuple(rules.get("required") or ()),
            hidden=tuple(rules.get("hidden") or ()),
        )
    if len(out.problems) != before:
        return None
    wf = Workflow(raw["key"], raw["name"], tuple(states), tuple(transitions), state_fields, source=out.display(path))
    registry.workflows[wf.key] = wf
    return wf, doc


def _check_relative_date(out: _Collector, doc: Document, ptr: str, value: Any) -> None:
    if isinstance(value, str) and value.startswith("today") and relative_date(value) is None:
        out.add(doc, ptr, f"'{value}' is not a date", "Use today, today+30d, today-7d or an ISO date.")


def _check_party(out, doc, ptr, kind, value, registry) -> None:
    """``assign``/``notify`` targets: role:NAME must name a real role."""
    target = value.get("assign") if kind == "create" else value if kind in ("assign", "notify") else None
    if isinstance(target, str) and target.startswith("role:") and target[5:] not in registry.roles:
        out.add(doc, ptr, f"role '{target[5:]}' does not exist", f"Use one of: {', '.join(sorted(registry.roles))}.")


def _check_create_actions(wf: Workflow, doc: Document, registry: Registry, out: _Collector) -> None:
    for i, t in enumerate(wf.transitions):
        for j, a in enumerate(t.actions):
            if a.kind != "create":
                continue
            target = registry.types.get(a.value["type"])
            ptr = f"/transitions/{i}/actions/{j}/create"
            if target is None:
                out.add(
                    doc,
                    f"{ptr}/type",
                    f"tracker type '{a.value['type']}' does not exist",
                    f"Use one of: {', '.join(sorted(registry.types))}.",
                )
            elif a.value.get("template") and target.template(a.value["template"]) is None:
                out.add(
                    doc,
                    f"{ptr}/template",
                    f"type '{target.key}' has no template '{a.value['template']}'",
                    f"Use one of: {', '.join(t.key for t in target.templates) or 'none defined'}.",
                )


def _check_update_related(wf: Workflow, doc: Document, registry: Registry, out: _Collector) -> None:
    """The related type exists and has each field set, of the kind of value the source holds.
    (The link and source fields belong to the types using the workflow: _check_workflow_fields.)"""
    for i, t in enumerate(wf.transitions):
        for j, a in enumerate(t.actions):
            if a.kind != "update_related":
                continue
            ptr = f"/transitions/{i}/actions/{j}/update_related"
            target = registry.types.get(a.value["type"])
            if target is None:
                out.add(
                    doc,
                    f"{ptr}/type",
                    f"tracker type '{a.value['type']}' does not exist",
                    f"Use one of: {', '.join(sorted(registry.types))}.",
                )
                continue
            for k, entry in enumerate(a.value["set"]):
                if schema_at(target.schema, entry["field"]) is None:
                    out.add(
                        doc,
                        f"{ptr}/set/{k}/field",
                        f"field '{entry['field']}' is not a property of type '{target.key}'",
                        "Name a property of the related type's schema.json.",
                    )
            for user in (tt for tt in registry.types.values() if tt.workflow == wf.key):
                for k, entry in enumerate(a.value["set"]):
                    source = schema_at(user.schema, entry["from"]) if entry.get("from") else None
                    wanted = schema_at(target.schema, entry["field"])
                    if source is None or wanted is None or not source.get("type") or not wanted.get("type"):
                        continue
                    if (source.get("type"), source.get("format")) != (wanted.get("type"), wanted.get("format")):
                        out.add(
                            doc,
                            f"{ptr}/set/{k}/from",
                            f"'{entry['from']}' of type '{user.key}' holds {_kind(source)}, "
                            f"but '{entry['field']}' of type '{target.key}' takes {_kind(wanted)}",
                            "Copy a field that holds the same kind of value.",
                        )


def _kind(schema: dict) -> str:
    article = "an" if schema["type"][0] in "aeiou" else "a"
    return f"{article} {schema['type']}" + (f" ({schema['format']})" if schema.get("format") else "")


# -- tracker types -----------------------------------------------------------------------


def _load_type(folder: Path, registry: Registry, out: _Collector) -> None:
    manifest_path, schema_path = folder / "type.yaml", folder / "schema.json"
    before = len(out.problems)
    for path in (manifest_path, schema_path):
        if not out.exists(path):
            out.add(path, "", "is missing", "A tracker type folder needs both type.yaml and schema.json.")
    if len(out.problems) != before:
        return
    doc, schema_doc = out.read(manifest_path), out.read(schema_path)
    if schema_doc is not None:
        _check_schema(schema_doc, out)
    if doc is None or not out.meta(doc, "type") or len(out.problems) != before:
        return
    raw, schema = doc.value, schema_doc.value
    key = raw["key"]
    if key != folder.name:
        out.add(
            doc,
            "/key",
            f"key '{key}' does not match the folder name '{folder.name}'",
            f"Rename the folder to {key}/ or change the key to '{folder.name}'.",
        )
    if key in registry.types:
        out.add(
            doc,
            "/key",
            f"tracker type '{key}' is already defined in {registry.types[key].source}",
            "Use another key; a later folder cannot replace an earlier definition.",
        )
        return
    workflow = registry.workflows.get(raw["workflow"])
    if workflow is None:
        out.add(
            doc,
            "/workflow",
            f"workflow '{raw['workflow']}' does not exist or did not load",
            f"Use one of: {', '.join(sorted(registry.workflows)) or 'none loaded'}, or fix that workflow.",
        )
        return

    def field(ptr: str, name: str, what: str = "field") -> None:
        if schema_at(schema, name) is None:
            names = ", ".join(sorted((schema.get("properties") or {}).keys()))
            out.add(
                doc,
                ptr,
                f"{what} '{name}' is not a property of schema.json",
                f"Use one of: {names}." if names else "Add the property to schema.json.",
            )

    for list_key in ("list_columns", "identity"):
        for i, name in enumerate(raw.get(list_key) or ()):
            if list_key == "identity" and name == "subject":
                # "subject" is the item's learner or employer: one QAN per learner, say
                if raw.get("subject", "none") == "none":
                    out.add(
                        doc,
                        f"/identity/{i}",
                        "identity 'subject' needs a type with a subject, but this type has 'subject: none'",
                        "Set 'subject: learner' (or employer), or take 'subject' out of the identity.",
                    )
                continue
            field(f"/{list_key}/{i}", name)
    if raw.get("due_date"):
        field("/due_date", raw["due_date"])
        sub = schema_at(schema, raw["due_date"]) or {}
        if sub and sub.get("format") != "date":
            out.add(
                doc,
                "/due_date",
                f"'{raw['due_date']}' is not a date property",
                'Name a property with "format": "date".',
            )
    for i, section in enumerate(raw.get("layout") or ()):
        for part in ("fields", "hidden"):
            for j, name in enumerate(section.get(part) or ()):
                field(f"/layout/{i}/{part}/{j}", name)
    _check_expression(out, doc, "/title", raw.get("title", "x"), template=True)
    partial = make_validator(without_required(schema))
    for i, tpl in enumerate(raw.get("templates") or ()):
        for problem in schema_problems(partial, tpl["data"]):
            out.add(
                doc,
                f"/templates/{i}/data{problem.path}",
                f"template '{tpl['key']}' is not valid: {problem.message}",
                problem.advice,
            )
    _check_rules(out, doc, schema, raw.get("rules") or (), "/rules")
    if raw.get("contract_field"):
        field("/contract_field", raw["contract_field"])
        sub = schema_at(schema, raw["contract_field"]) or {}
        if sub and sub.get("type") != "string":
            out.add(
                doc,
                "/contract_field",
                f"'{raw['contract_field']}' is not a text property",
                'Name a property with "type": "string".',
            )
    roles_known = set(registry.roles)
    for i, tl in enumerate(raw.get("tasklists") or ()):
        base = f"/tasklists/{i}"
        for j, role in enumerate(tl.get("roles") or ()):
            if role not in roles_known:
                out.add(
                    doc,
                    f"{base}/roles/{j}",
                    f"role '{role}' does not exist",
                    f"Use one of: {', '.join(sorted(roles_known))}.",
                )
        flt = tl["filter"]
        for j, state in enumerate(flt.get("status") or ()):
            if workflow.state(state) is None:
                out.add(
                    doc,
                    f"{base}/filter/status/{j}",
                    f"'{state}' is not a state of workflow '{workflow.key}'",
                    f"Use one of: {', '.join(s.key for s in workflow.states)}.",
                )
        for j, cond in enumerate(flt.get("all") or ()):
            ptr = f"{base}/filter/all/{j}"
            field(f"{ptr}/field", cond["field"])
            _check_condition(out, doc, ptr, cond)
    for role, _caps in (raw.get("permissions") or {}).items():
        if role not in roles_known:
            out.add(
                doc,
                f"/permissions/{role}",
                f"role '{role}' does not exist",
                f"Use one of: {', '.join(sorted(roles_known))}.",
            )
    subject = raw.get("subject", "none")
    if subject != "none" and raw.get("kind") == "subject":
        out.add(doc, "/subject", "a subject type cannot itself have a subject", "Set subject: none.")
    for i, reminder in enumerate(raw.get("reminders") or ()):
        ptr = f"/reminders/{i}"
        field(f"{ptr}/field", reminder["field"])
        sub = schema_at(schema, reminder["field"]) or {}
        if sub and sub.get("format") != "date":
            out.add(
                doc,
                f"{ptr}/field",
                f"'{reminder['field']}' is not a date property, so no reminder can be sent before it",
                'Name a property with "format": "date".',
            )
        _check_party(out, doc, f"{ptr}/notify", "notify", reminder["notify"], registry)
    if raw.get("assignment"):
        _check_assignment(raw, schema, doc, registry, out)
    _check_workflow_fields(workflow, schema, doc, out)
    _check_documents_and_progress(raw, schema, workflow, registry, doc, out)
    _check_migrations(raw.get("migrations") or (), schema, doc, out)
    if len(out.problems) != before:
        return
    tracker_type = TrackerType(
        key=key,
        name=raw["name"],
        version=raw["version"],
        workflow=raw["workflow"],
        schema=schema,
        subject=subject,
        kind=raw.get("kind", "tracker"),
        description=raw.get("description", ""),
        title=raw.get("title", "{{ data.title or '' }}"),
        list_columns=tuple(raw.get("list_columns") or ()),
        identity=tuple(raw.get("identity") or ()),
        due_date=raw.get("due_date"),
        create_capability=raw.get("create_capability", "items.create"),
        assignee_required=bool(raw.get("assignee_required", False)),
        assignment=AssignmentRule(**raw["assignment"]) if raw.get("assignment") else None,
        layout=tuple(
            Section(s["section"], tuple(s["fields"]), tuple(s.get("hidden") or ())) for s in raw.get("layout") or ()
        ),
        templates=tuple(Template(t["key"], t["name"], t["data"]) for t in raw.get("templates") or ()),
        rules=tuple(_rule(r) for r in raw.get("rules") or ()),
        contract_field=raw.get("contract_field"),
        tasklists=tuple(_tasklist(t) for t in raw.get("tasklists") or ()),
        permissions={role: tuple(caps) for role, caps in (raw.get("permissions") or {}).items()},
        source=out.display(folder),
        reminders=tuple(Reminder(r["field"], r["before"], r["notify"]) for r in raw.get("reminders") or ()),
        migrations=tuple(Migration(*next(iter(m.items()))) for m in raw.get("migrations") or ()),
        documents=tuple(
            DocumentCategory(c["key"], c["label"], c.get("description", ""))
            for c in (raw.get("documents") or {}).get("categories") or ()
        ),
        progress=ProgressSpec(**raw["progress"]) if raw.get("progress") else None,
    )
    registry.types[key] = tracker_type
    registry.versions[(key, tracker_type.version)] = tracker_type


def _check_assignment(raw: dict, schema: dict, doc: Document, registry: Registry, out: _Collector) -> None:
    """``assignment:`` names a role whose users may see the type, or a text field holding a user name."""
    rule, overrides = raw["assignment"], raw.get("permissions") or {}
    if rule.get("role"):
        role = registry.roles.get(rule["role"])
        if role is None:
            out.add(
                doc,
                "/assignment/role",
                f"role '{rule['role']}' does not exist",
                f"Use one of: {', '.join(sorted(registry.roles))}.",
            )
        else:
            caps = frozenset(overrides.get(role.key, role.capabilities)) | (role.capabilities & {"*"})
            if "*" not in caps and "items.view" not in caps:
                out.add(
                    doc,
                    "/assignment/role",
                    f"users of role '{role.key}' cannot see {raw['name']} items, so they cannot be given them",
                    f"Pick a role that has items.view, or add 'permissions: {{{role.key}: [items.view, ...]}}'.",
                )
    if rule["rule"] == "queue" and raw.get("assignee_required"):
        out.add(
            doc,
            "/assignment/rule",
            "a queue leaves new items unassigned, but 'assignee_required: true' refuses items without an assignee",
            "Use round_robin or least_loaded, or set assignee_required: false.",
        )
    if rule.get("field"):
        sub = schema_at(schema, rule["field"])
        if sub is None:
            names = ", ".join(sorted((schema.get("properties") or {}).keys()))
            out.add(
                doc,
                "/assignment/field",
                f"field '{rule['field']}' is not a property of schema.json",
                f"Use one of: {names}." if names else "Add the property to schema.json.",
            )
        elif sub.get("type") != "string":
            out.add(
                doc,
                "/assignment/field",
                f"'{rule['field']}' is not a text property, so it cannot hold a user name",
                'Name a property with "type": "string" whose value is a user name.',
            )
    if rule["rule"] == "field" and rule.get("role"):
        out.add(doc, "/assignment/role", "the 'field' rule takes no role", "Remove 'role', or use another rule.")
    if rule["rule"] != "field" and rule.get("field"):
        out.add(
            doc,
            "/assignment/field",
            f"the '{rule['rule']}' rule takes no field",
            "Remove 'field', or use 'rule: field'.",
        )


def _check_schema(doc: Document, out: _Collector) -> None:
    schema = doc.value
    if not isinstance(schema, dict):
        out.add(doc, "", "must be a JSON object (a JSON Schema)", 'Start the file with { "type": "object", ... }.')
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        problem = to_problem(exc)
        out.add(
            doc,
            pointer(exc.absolute_path),
            f"not a valid JSON Schema: {problem.message}",
            "Check the keyword against JSON Schema draft 2020-12.",
        )
        return
    if schema.get("type") != "object":
        out.add(doc, "/type", "the item's data must be an object", 'Set "type": "object" at the top level.')
    _check_hostile_schema(doc, out)


def _check_hostile_schema(doc: Document, out: _Collector) -> None:
    """What a valid JSON Schema may still do to the server: fetch or loop through ``$ref``,
    or carry a ``pattern`` that takes exponential time (see :mod:`engine.limits`)."""
    for ptr, message, advice in limits.ref_problems(doc.value):
        out.add(doc, ptr, message, advice)
    for ptr, node in limits.schema_nodes(doc.value):
        problem = limits.pattern_problem(node.get("pattern"))
        if problem is not None:
            out.add(doc, f"{ptr}/pattern", *problem)
        for name in node.get("patternProperties") or {} if isinstance(node.get("patternProperties"), dict) else {}:
            problem = limits.pattern_problem(name)
            if problem is not None:
                out.add(doc, f"{ptr}/patternProperties", *problem)


def _check_migrations(steps, schema: dict, doc: Document, out: _Collector) -> None:
    """``migrations:`` steps must name fields of this version's schema, and the values they
    write must be valid for those fields."""
    names = ", ".join(sorted((schema.get("properties") or {}).keys()))

    def field(ptr: str, name: str) -> dict | None:
        sub = schema_at(schema, name)
        if sub is None:
            out.add(
                doc,
                ptr,
                f"field '{name}' is not a property of schema.json",
                f"Use one of: {names}." if names else "Add the property to schema.json.",
            )
        return sub

    def valid(ptr: str, sub: dict, value: Any, what: str) -> None:
        for problem in schema_problems(make_validator(sub), value):
            out.add(doc, ptr, f"{what} is not valid for the field: {problem.message}", problem.advice)

    for i, step in enumerate(steps):
        kind, value = next(iter(step.items()))
        ptr = f"/migrations/{i}/{kind}"
        if kind == "rename":
            if value["from"] == value["to"]:
                out.add(doc, f"{ptr}/to", "a field cannot be renamed to itself", "Give the new name in 'to'.")
                continue
            field(f"{ptr}/to", value["to"])
            if schema_at(schema, value["from"]) is not None:
                out.add(
                    doc,
                    f"{ptr}/from",
                    f"field '{value['from']}' is still a property of schema.json, so it cannot be renamed away",
                    f"Remove '{value['from']}' from schema.json, or rename it to a field that is new.",
                )
        elif kind == "set_default":
            sub = field(f"{ptr}/field", value["field"])
            if sub is not None:
                valid(f"{ptr}/value", sub, value["value"], f"the default {value['value']!r}")
        elif kind == "map_values":
            sub = field(f"{ptr}/field", value["field"])
            if sub is not None:
                for old, new in value["map"].items():
                    valid(f"{ptr}/map/{old}", sub, new, f"the value {new!r} that {old!r} becomes")


def _check_condition(out: _Collector, doc: Document, ptr: str, cond: dict) -> None:
    op, value = cond["op"], cond.get("value")
    if op in ("empty", "not_empty"):
        return
    if "value" not in cond:
        out.add(doc, f"{ptr}/op", f"operator '{op}' needs a value", "Add 'value: ...' to the condition.")
    elif op == "in" and not isinstance(value, list):
        out.add(doc, f"{ptr}/value", "operator 'in' needs a list of values", "Write value: [a, b].")
    elif op in ("before", "after") and relative_date(str(value)) is None:
        out.add(doc, f"{ptr}/value", f"'{value}' is not a date", "Use today, today+30d, today-7d or an ISO date.")


def _check_workflow_fields(workflow: Workflow, schema: dict, doc: Document, out: _Collector) -> None:
    """Fields a workflow names must exist in every type that uses it."""

    def check(name: str, where: str) -> None:
        if name != "*" and schema_at(schema, name) is None:
            out.add(
                doc,
                "/workflow",
                f"workflow '{workflow.key}' {where} names field '{name}', "
                "which is not a property of this type's schema.json",
                "Add the property to schema.json or use another workflow.",
            )

    for t in workflow.transitions:
        for name in t.requires:
            check(name, f"transition '{t.key}' requires")
        for a in t.actions:
            if a.kind == "set":
                check(a.value["field"], f"transition '{t.key}' sets")
            elif a.kind == "update_related":
                _check_link(workflow, t.key, a.value["link"], schema, doc, out)
                for entry in a.value["set"]:
                    if entry.get("from"):
                        check(entry["from"], f"transition '{t.key}' update_related copies")
    for state, rules in workflow.state_fields.items():
        for name in (*rules.read_only, *rules.required, *rules.hidden):
            check(name, f"state '{state}'")


def _check_link(workflow: Workflow, step: str, link: str, schema: dict, doc: Document, out: _Collector) -> None:
    """An update_related link is a whole-number property: it holds the related item's number."""
    found = schema_at(schema, link)
    if found is None or found.get("type") != "integer":
        what = "which is not a property of this type's schema.json" if found is None else "which is not a whole number"
        out.add(
            doc,
            "/workflow",
            f"workflow '{workflow.key}' transition '{step}' update_related links through field '{link}', {what}",
            "Add an integer property holding the related item's number (its #) to schema.json.",
        )


def _tasklist(raw: dict[str, Any]) -> TaskList:
    flt = raw["filter"]
    return TaskList(
        key=raw["key"],
        label=raw["label"],
        roles=tuple(raw.get("roles") or ()),
        statuses=tuple(flt.get("status") or ()),
        status_categories=tuple(flt.get("status_category") or ()),
        assignee=flt.get("assignee", "any"),
        conditions=tuple(Condition(c["field"], c["op"], c.get("value")) for c in flt.get("all") or ()),
        documents_missing=tuple(flt.get("documents_missing") or ()),
    )


def _check_documents_and_progress(
    raw: dict, schema: dict, workflow: Workflow, registry: Registry, doc: Document, out: _Collector
) -> None:
    """Document categories are declared once each, and every category a task list or the
    workflow names is declared; ``progress`` names a text property or a loaded structure."""
    declared: list[str] = []
    for i, category in enumerate((raw.get("documents") or {}).get("categories") or ()):
        if category["key"] in declared:
            out.add(
                doc,
                f"/documents/categories/{i}/key",
                f"document category '{category['key']}' is declared twice",
                "Give each category its own key.",
            )
        declared.append(category["key"])
    known = ", ".join(declared) if declared else "none: add 'documents: {categories: [{key, label}]}' to type.yaml"

    def category_known(ptr: str, name: str, where: str) -> None:
        if name not in declared:
            out.add(doc, ptr, f"{where} names document category '{name}', which this type does not declare", known)

    for i, tasklist in enumerate(raw.get("tasklists") or ()):
        for j, name in enumerate(tasklist["filter"].get("documents_missing") or ()):
            category_known(f"/tasklists/{i}/filter/documents_missing/{j}", name, f"task list '{tasklist['key']}'")
    for t in workflow.transitions:
        for name in t.requires_documents:
            category_known("/workflow", name, f"workflow '{workflow.key}' transition '{t.key}' requires_documents")
    spec = raw.get("progress") or {}
    if spec.get("qualification_field"):
        name = spec["qualification_field"]
        sub = schema_at(schema, name)
        if sub is None or sub.get("type") not in ("string", None):
            out.add(
                doc,
                "/progress/qualification_field",
                f"'{name}' is not a text property of schema.json, so it cannot hold a QAN or standard reference",
                "Name a text property such as qan or standard_reference.",
            )
    if spec.get("qualification") and spec["qualification"] not in registry.qualifications:
        out.add(
            doc,
            "/progress/qualification",
            f"qualification structure '{spec['qualification']}' does not exist or did not load",
            f"Use one of: {', '.join(sorted(registry.qualifications)) or 'none loaded'}, "
            "or add tracker_types/qualifications/<key>.yaml.",
        )


# -- rules and contract rules ----------------------------------------------------------------


def _rule(raw: dict[str, Any]) -> Rule:
    return Rule(
        raw["key"],
        raw["when"],
        raw["message"],
        raw.get("advice", ""),
        raw.get("path", ""),
        raw.get("severity", "error"),
        raw.get("for_each", ""),
    )


def _check_rules(out: _Collector, doc: Document, schema: dict, rules, base: str, taken: set[str] = frozenset()) -> None:
    """Rules (of a type.yaml, or of a contract file with the type's rule keys ``taken``): the
    expression compiles, ``for_each`` names an array, ``path`` names a field, keys are unique."""
    names = ", ".join(sorted((schema.get("properties") or {}).keys()))
    keys: set[str] = set()
    for i, rule in enumerate(rules):
        ptr = f"{base}/{i}"
        if rule["key"] in keys or rule["key"] in taken:
            where = "a rule of the type itself" if rule["key"] in taken else "listed twice"
            out.add(doc, f"{ptr}/key", f"rule key '{rule['key']}' is {where}", "Give each rule its own key.")
        keys.add(rule["key"])
        _check_expression(out, doc, f"{ptr}/when", rule["when"])
        each = rule.get("for_each")
        if each:
            sub = schema_at(schema, each)
            if sub is None or sub.get("type") != "array":
                out.add(
                    doc,
                    f"{ptr}/for_each",
                    f"'{each}' is not an array property of schema.json",
                    'Name a property with "type": "array", e.g. learning_deliveries '
                    "(a.b for an array inside each row of a).",
                )
        path = rule.get("path") or ""
        if "*" in path and not each:
            out.add(
                doc,
                f"{ptr}/path",
                "'*' in a path stands for a row, but the rule has no for_each",
                "Add for_each: ARRAY.",
            )
        if path:
            dotted = ".".join(p for p in path.strip("/").split("/") if not p.isdigit() and p != "*")
            if schema_at(schema, dotted) is None:
                out.add(
                    doc,
                    f"{ptr}/path",
                    f"path '{dotted}' is not a property of schema.json",
                    f"Use one of: {names}." if names else "Add the property to schema.json.",
                )


def _load_contracts(sources: list[Folder], registry: Registry, out: _Collector) -> None:
    """``tracker_types/<type>/contracts/<key>.yaml`` in every folder: a contract's own rules for
    a type, switched on for an item by the type's ``contract_field``. When that field lists no
    values itself, the contracts found become its choices (so forms offer them)."""
    for folder in sources:
        if not folder.types.is_dir():
            continue
        for type_folder in sorted(p for p in folder.types.iterdir() if (p / "contracts").is_dir()):
            for path in sorted((type_folder / "contracts").glob("*.y*ml")):
                _load_contract(path, type_folder.name, registry, out)
    for type_key, contracts in registry.contracts.items():
        tracker_type = registry.types[type_key]
        field = tracker_type.contract_field or ""
        sub = schema_at(tracker_type.schema, field) or {}
        if contracts and not choices(sub) and field in (tracker_type.schema.get("properties") or {}):
            options = [{"const": c.key, "title": c.name} for c in contracts.values()]
            schema = copy.deepcopy(tracker_type.schema)
            schema["properties"][field] = {**sub, "oneOf": options}
            tracker_type = dataclasses.replace(tracker_type, schema=schema)
            registry.types[type_key] = tracker_type
            registry.versions[(type_key, tracker_type.version)] = tracker_type


def _load_contract(path: Path, type_key: str, registry: Registry, out: _Collector) -> None:
    doc = out.read(path)
    if doc is None or not out.meta(doc, "contract"):
        return
    raw, before = doc.value, len(out.problems)
    if raw["key"] != path.stem:
        out.add(
            doc,
            "/key",
            f"key '{raw['key']}' does not match the file name '{path.name}'",
            f"Rename the file to {raw['key']}.yaml or change the key to '{path.stem}'.",
        )
    tracker_type = registry.types.get(type_key)
    if tracker_type is None:
        out.add(
            doc,
            "",
            f"tracker type '{type_key}' (the folder above contracts/) does not exist or did not load",
            "Put the file under tracker_types/<type>/contracts/ of a type that loads: "
            f"{', '.join(sorted(registry.types))}.",
        )
        return
    if not tracker_type.contract_field:
        out.add(
            doc,
            "",
            f"type '{type_key}' has no contract_field, so no item could switch these rules on",
            f"Add 'contract_field: <a text property>' to {type_key}'s type.yaml.",
        )
        return
    existing = registry.contracts.get(type_key, {}).get(raw["key"])
    if existing is not None:
        out.add(
            doc,
            "/key",
            f"contract '{raw['key']}' of type '{type_key}' is already defined in {existing.source}",
            "Use another key; a later folder cannot replace an earlier definition.",
        )
        return
    allowed = choices(schema_at(tracker_type.schema, tracker_type.contract_field) or {})
    if allowed is not None and raw["key"] not in [value for value, _label in allowed]:
        out.add(
            doc,
            "/key",
            f"'{raw['key']}' is not one of the values field '{tracker_type.contract_field}' allows",
            f"Use one of: {', '.join(str(v) for v, _label in allowed)}, or add it to the field in schema.json.",
        )
    _check_rules(out, doc, tracker_type.schema, raw["rules"], "/rules", {r.key for r in tracker_type.rules})
    if len(out.problems) != before:
        return
    registry.contracts.setdefault(type_key, {})[raw["key"]] = Contract(
        key=raw["key"],
        type_key=type_key,
        name=raw["name"],
        rules=tuple(_rule(r) for r in raw["rules"]),
        description=raw.get("description", ""),
        source=_display(path),
    )
