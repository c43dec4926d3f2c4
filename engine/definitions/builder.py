"""Edits an admin makes in the type editor, as operations on the parsed documents.

The field builder, the workflow, task list and roles editors of the web UI call these on a
:class:`Draft` (the four documents parsed), then write it back as text. Each operation
checks what it can see at once (a name already taken, a key that is not a key) and raises
ValidationFailed naming the form field; everything else is left to the loader, which checks
the whole draft as ``tracker check`` does.

Fields are addressed by dotted names as everywhere in definitions: ``reviews.date`` is the
``date`` of each row of the repeating group ``reviews``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from engine import limits
from engine.definitions.documents import dump_json, dump_yaml, edit_yaml
from engine.definitions.model import CAPABILITIES, STATE_CATEGORIES
from engine.definitions.store import KEY_PATTERN, Texts
from engine.errors import Problem, ValidationFailed

#: what the field builder offers, and what each becomes in JSON Schema
KINDS = {
    "text": "Text",
    "textarea": "Long text",
    "integer": "Whole number",
    "number": "Number",
    "boolean": "Yes / no",
    "date": "Date",
    "email": "E-mail address",
    "choice": "One choice",
    "choices": "Several choices",
    "group": "Group of fields",
    "repeating": "Repeating group (rows)",
}
TASKLIST_OPS = ("eq", "ne", "in", "lt", "lte", "gt", "gte", "before", "after", "empty", "not_empty")


def refuse(path: str, message: str, advice: str) -> ValidationFailed:
    return ValidationFailed([Problem(path, message, advice)], "Nothing was changed.")


@dataclass
class Draft:
    """The four documents of a draft, parsed. Raises ValidationFailed when one does not
    parse (the builder needs structure; fix the text in the documents editor first)."""

    schema: dict
    manifest: dict
    workflow: dict | None
    roles: dict | None

    @classmethod
    def parse(cls, texts: Texts) -> Draft:
        problems = []
        try:
            limits.check_text_size(texts.schema_json)
            schema = json.loads(texts.schema_json)
            limits.check_structure(schema)
        except json.JSONDecodeError as exc:
            schema = None
            problems.append(Problem("schema.json", f"schema.json is not valid JSON (line {exc.lineno})", _FIX_TEXT))
        except (limits.DefinitionTooLarge, RecursionError) as exc:
            schema = None
            problems.append(_too_large("schema.json", exc))
        parsed, broken = [], set()
        for name, text in (
            ("type.yaml", texts.type_yaml),
            ("workflow", texts.workflow_yaml),
            ("roles", texts.roles_yaml),
        ):
            try:
                parsed.append(_safe_yaml(text))
            except yaml.YAMLError as exc:
                parsed.append(None)
                broken.add(name)
                line = getattr(getattr(exc, "problem_mark", None), "line", None)
                where = f" (line {line + 1})" if line is not None else ""
                problems.append(Problem(name, f"The {name} document is not valid YAML{where}", _FIX_TEXT))
            except (limits.DefinitionTooLarge, RecursionError) as exc:
                parsed.append(None)
                broken.add(name)
                problems.append(_too_large(name, exc))
        manifest, workflow, roles = parsed
        if schema is not None and not isinstance(schema, dict):
            problems.append(Problem("schema.json", "schema.json is not a JSON object", _FIX_TEXT))
        if texts.type_yaml.strip() and "type.yaml" not in broken and not isinstance(manifest, dict):
            problems.append(Problem("type.yaml", "type.yaml is not a mapping of keys to values", _FIX_TEXT))
        if problems:
            raise ValidationFailed(problems, "The editor cannot change a document that does not parse.")
        return cls(schema, manifest or {}, workflow if isinstance(workflow, dict) else None, roles or None)

    def texts(self, before: Texts) -> Texts:
        """The documents as text; those the edit did not touch keep their text. A YAML document
        the edit changed keeps its comments, order and layout wherever they still apply
        (:func:`~engine.definitions.documents.edit_yaml`). Compared as written out, so a
        change of order (moving a field) counts."""
        was = Draft.parse(before)

        def yaml_text(text: str, old: dict | None, new: dict | None) -> str:
            return text if dump_yaml(old or None) == dump_yaml(new or None) else edit_yaml(text, new)

        return Texts(
            dump_json(self.schema) if dump_json(self.schema) != dump_json(was.schema) else before.schema_json,
            yaml_text(before.type_yaml, was.manifest, self.manifest),
            yaml_text(before.workflow_yaml, was.workflow, self.workflow),
            yaml_text(before.roles_yaml, was.roles, self.roles),
        )


def _safe_yaml(text: str) -> Any:
    """A YAML document read with the safe loader, within the limits of :mod:`engine.limits`
    (aliases counted each time they are used), before any builder operation walks it."""
    if not text.strip():
        return None
    limits.check_text_size(text)
    value = yaml.safe_load(text)
    limits.check_structure(value)
    return value


def _too_large(name: str, exc: Exception) -> Problem:
    reason = str(exc) if isinstance(exc, limits.DefinitionTooLarge) else "nests too deeply"
    return Problem(name, f"The {name} document is too large for the editor: it {reason}", _FIX_TEXT)


_FIX_TEXT = "Fix it under Documents, where each problem is shown on its line."


# -- fields -----------------------------------------------------------------------------------------


@dataclass
class FieldInfo:
    """One field as the builder shows it."""

    path: str
    name: str
    depth: int
    kind: str
    title: str
    required: bool
    help: str = ""
    options: list[tuple[Any, str]] = field(default_factory=list)
    minimum: Any = None
    maximum: Any = None
    pattern: str = ""
    section: str = ""
    condition: tuple[str, Any] | None = None
    first: bool = False
    last: bool = False

    @property
    def parent(self) -> str:
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""

    @property
    def is_container(self) -> bool:
        return self.kind in ("group", "repeating")

    @property
    def options_text(self) -> str:
        return "\n".join(str(v) if str(v) == label else f"{v} | {label}" for v, label in self.options)


def kind_of(node: dict) -> str:
    """The builder's kind of a property schema; ``other`` for what only the documents editor can change."""
    if not isinstance(node, dict):
        return "other"
    if "enum" in node or _const_choices(node):
        return "choice"
    kind = node.get("type")
    if kind == "array":
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        if items.get("type") == "object":
            return "repeating"
        if "enum" in items or _const_choices(items):
            return "choices"
        return "other"
    if kind == "object":
        return "group"
    if kind == "string":
        fmt = node.get("format")
        if fmt in ("date", "email"):
            return fmt
        if fmt:
            return "other"
        return "textarea" if node.get("x-widget") == "textarea" else "text"
    if kind in ("integer", "number", "boolean"):
        return kind
    return "other"


def _const_choices(node: dict) -> list | None:
    for keyword in ("oneOf", "anyOf"):
        branches = node.get(keyword)
        if branches and all(isinstance(b, dict) and "const" in b for b in branches):
            return branches
    return None


def _options(node: dict) -> list[tuple[Any, str]]:
    if "enum" in node:
        return [(v, str(v)) for v in node["enum"]]
    branches = _const_choices(node) or []
    return [(b["const"], b.get("title", str(b["const"]))) for b in branches]


def container(schema: dict, parent: str) -> dict:
    """The object schema holding the fields of ``parent`` ("" for the top level)."""
    node = schema
    if parent:
        for part in parent.split("."):
            node = (node.get("properties") or {}).get(part)
            if not isinstance(node, dict):
                raise refuse("parent", f"There is no group '{parent}'", "Pick a group from the list.")
            if node.get("type") == "array":
                node = node.get("items")
            if not isinstance(node, dict) or node.get("type") != "object":
                raise refuse("parent", f"'{parent}' is not a group of fields", "Pick a group or repeating group.")
    return node


def _split(path: str) -> tuple[str, str]:
    return (path.rsplit(".", 1)[0], path.rsplit(".", 1)[1]) if "." in path else ("", path)


def _property(schema: dict, path: str) -> tuple[dict, str, dict]:
    parent, name = _split(path)
    holder = container(schema, parent)
    props = holder.get("properties") or {}
    if name not in props:
        raise refuse("field", f"There is no field '{path}'", "Pick a field from the list.")
    return holder, name, props[name]


def conditions(holder: dict) -> dict[str, tuple[str, Any]]:
    """``{field: (condition field, value)}`` for the if/then entries the builder writes:
    ``allOf: [{if: {properties: {F: {const: V}}, required: [F]}, then: {required: [X]}}]``."""
    found = {}
    for entry in holder.get("allOf") or ():
        parsed = _condition_entry(entry)
        if parsed is not None:
            target, cond_field, value = parsed
            found[target] = (cond_field, value)
    return found


def _condition_entry(entry: Any) -> tuple[str, str, Any] | None:
    if not isinstance(entry, dict) or set(entry) != {"if", "then"}:
        return None
    test, then = entry["if"], entry["then"]
    if not isinstance(test, dict) or not isinstance(then, dict) or set(then) != {"required"}:
        return None
    props = test.get("properties") or {}
    if len(props) != 1 or len(then["required"]) != 1:
        return None
    [(cond_field, sub)] = props.items()
    if not isinstance(sub, dict) or set(sub) != {"const"}:
        return None
    return then["required"][0], cond_field, sub["const"]


def fields(draft: Draft) -> list[FieldInfo]:
    """Every field, depth first, in schema order."""
    sections = {}
    for section in draft.manifest.get("layout") or ():
        for name in [*(section.get("fields") or ()), *(section.get("hidden") or ())]:
            sections.setdefault(name, section.get("section", ""))
    out: list[FieldInfo] = []

    def walk(holder: dict, prefix: str, depth: int) -> None:
        props = holder.get("properties") or {}
        required = set(holder.get("required") or ())
        conds = conditions(holder)
        names = list(props)
        for i, name in enumerate(names):
            node = props[name] if isinstance(props[name], dict) else {}
            path = f"{prefix}{name}"
            kind = kind_of(node)
            target = node.get("items") if kind in ("choices", "repeating") else node
            target = target if isinstance(target, dict) else {}
            low, high = _limits(node, kind)
            info = FieldInfo(
                path=path,
                name=name,
                depth=depth,
                kind=kind,
                title=node.get("title", ""),
                required=name in required,
                help=node.get("description", ""),
                options=_options(target) if kind in ("choice", "choices") else [],
                minimum=low,
                maximum=high,
                pattern=node.get("pattern", ""),
                section=sections.get(path, "") if depth == 0 else "",
                condition=conds.get(name),
                first=i == 0,
                last=i == len(names) - 1,
            )
            out.append(info)
            if kind == "group":
                walk(node, path + ".", depth + 1)
            elif kind == "repeating":
                walk(node["items"], path + ".", depth + 1)

    walk(draft.schema, "", 0)
    return out


_LIMITS = {
    "text": ("minLength", "maxLength"),
    "textarea": ("minLength", "maxLength"),
    "integer": ("minimum", "maximum"),
    "number": ("minimum", "maximum"),
    "choices": ("minItems", "maxItems"),
    "repeating": ("minItems", "maxItems"),
}


def _limits(node: dict, kind: str) -> tuple[Any, Any]:
    low, high = _LIMITS.get(kind, (None, None))
    return (node.get(low) if low else None, node.get(high) if high else None)


def _check_name(name: str, what: str = "name") -> str:
    name = (name or "").strip()
    if not KEY_PATTERN.match(name) or len(name) > 64:
        raise refuse(
            what,
            f"'{name}' cannot be a field name" if name else "The field name is empty",
            "Use lower-case letters, digits and _, starting with a letter, e.g. start_date.",
        )
    return name


def _base(kind: str, options: list[tuple[Any, str]] | None = None) -> dict:
    if kind not in KINDS:
        raise refuse("kind", f"'{kind}' is not a kind of field", f"Use one of: {', '.join(KINDS)}.")
    choice = _choice_schema(options or [("yes", "yes"), ("no", "no")])
    return {
        "text": {"type": "string"},
        "textarea": {"type": "string", "x-widget": "textarea"},
        "integer": {"type": "integer"},
        "number": {"type": "number"},
        "boolean": {"type": "boolean"},
        "date": {"type": "string", "format": "date"},
        "email": {"type": "string", "format": "email"},
        "choice": choice,
        "choices": {"type": "array", "items": choice, "uniqueItems": True},
        "group": {"type": "object", "properties": {}},
        "repeating": {"type": "array", "items": {"type": "object", "properties": {}}},
    }[kind]


def _choice_schema(options: list[tuple[Any, str]]) -> dict:
    if all(str(v) == label for v, label in options):
        return {"enum": [v for v, _ in options]}
    return {"oneOf": [{"const": v, "title": label} for v, label in options]}


def parse_options(text: str) -> list[tuple[Any, str]]:
    """One option a line: ``value`` or ``value | Label``; whole numbers stay numbers."""
    out: list[tuple[Any, str]] = []
    for line in (text or "").splitlines():
        if not line.strip():
            continue
        value, _, label = line.partition("|")
        value, label = value.strip(), label.strip()
        typed: Any = int(value) if re.fullmatch(r"-?[0-9]+", value) else value
        if any(v == typed for v, _ in out):
            raise refuse("options", f"The option '{value}' is listed twice", "List each option once.")
        out.append((typed, label or value))
    return out


def add_field(draft: Draft, parent: str, name: str, kind: str, title: str = "") -> str:
    """Add a field at the end of ``parent`` (a group, a repeating group, or "" for the top);
    returns its dotted name."""
    name = _check_name(name)
    holder = container(draft.schema, parent)
    props = holder.setdefault("properties", {})
    if name in props:
        where = f"in '{parent}'" if parent else "in this type"
        raise refuse("name", f"There is already a field '{name}' {where}", "Choose another name.")
    node = _base(kind)
    node = {"title": (title or "").strip() or name.replace("_", " ").capitalize(), **node}
    props[name] = node
    return f"{parent}.{name}" if parent else name


@dataclass
class FieldChange:
    """What the field form sends; None leaves that part as it is."""

    title: str | None = None
    kind: str | None = None
    required: bool | None = None
    help: str | None = None
    options: str | None = None
    minimum: str | None = None
    maximum: str | None = None
    pattern: str | None = None
    section: str | None = None
    condition_field: str | None = None
    condition_value: str | None = None


def update_field(draft: Draft, path: str, change: FieldChange) -> None:
    holder, name, node = _property(draft.schema, path)
    kind = kind_of(node)
    if change.kind is not None and change.kind != kind:
        if kind == "other":
            raise refuse("kind", f"'{path}' is edited under Documents", "Change its JSON Schema there.")
        has_fields = kind in ("group", "repeating") and (container(draft.schema, path).get("properties") or {})
        if has_fields and {kind, change.kind} != {"group", "repeating"}:
            raise refuse("kind", f"'{path}' has fields of its own", "Remove them first, or keep it a group.")
        keep = {k: v for k, v in node.items() if k in ("title", "description", "x-advice")}
        fresh = _base(change.kind, _options(node.get("items", node)) if kind in ("choice", "choices") else None)
        if {kind, change.kind} == {"group", "repeating"}:
            inner = node.get("items") if kind == "repeating" else node
            fresh = {
                "type": "object",
                "properties": inner.get("properties", {}),
                **{k: v for k, v in inner.items() if k in ("required", "allOf")},
            }
            fresh = {"type": "array", "items": fresh} if change.kind == "repeating" else fresh
        node.clear()
        node.update({**keep, **fresh})
        kind = change.kind
    if change.title is not None:
        _set_or_drop(node, "title", change.title.strip())
    if change.help is not None:
        _set_or_drop(node, "description", change.help.strip())
    if change.options is not None and kind in ("choice", "choices"):
        options = parse_options(change.options)
        if not options:
            raise refuse("options", "A choice needs at least one option", "Write one option a line.")
        target = node["items"] if kind == "choices" else node
        for k in ("enum", "oneOf", "anyOf", "type"):
            target.pop(k, None)
        target.update(_choice_schema(options))
    if kind in _LIMITS:
        low, high = _LIMITS[kind]
        for key, text in ((low, change.minimum), (high, change.maximum)):
            if text is not None:
                _set_or_drop(node, key, _number(text, key, whole=kind != "number"))
    if change.pattern is not None and kind in ("text", "textarea"):
        pattern = change.pattern.strip()
        if pattern:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise refuse("pattern", f"The pattern does not compile: {exc}", "Write a regular expression.") from None
            from engine.limits import pattern_problem

            unsafe = pattern_problem(pattern)
            if unsafe is not None:
                raise refuse("pattern", f"The pattern {unsafe[0].removeprefix(repr(pattern) + ' ')}", unsafe[1])
        _set_or_drop(node, "pattern", pattern)
    if change.required is not None:
        required = [r for r in holder.get("required") or () if r != name]
        if change.required:
            required.append(name)
        _set_or_drop(holder, "required", required)
    if change.condition_field is not None:
        _set_condition(holder, name, change.condition_field.strip(), change.condition_value or "")
    if change.section is not None and "." not in path:
        set_section(draft, path, change.section.strip())


def _set_or_drop(node: dict, key: str, value: Any) -> None:
    if value in ("", None, []):
        node.pop(key, None)
    else:
        node[key] = value


def _number(text: str, what: str, *, whole: bool) -> int | float | None:
    text = (text or "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        raise refuse(what, f"'{text}' is not a number", "Write a number, or leave it empty.") from None
    if whole and not value.is_integer():
        raise refuse(what, f"'{text}' is not a whole number", "Write a whole number, or leave it empty.")
    return int(value) if value.is_integer() else value


def _set_condition(holder: dict, name: str, cond_field: str, raw_value: str) -> None:
    """Ask for ``name`` only while the sibling ``cond_field`` has ``raw_value`` (and then
    require it); an empty ``cond_field`` asks for it always."""
    entries = [e for e in holder.get("allOf") or () if (_condition_entry(e) or ("",))[0] != name]
    if cond_field:
        props = holder.get("properties") or {}
        if cond_field not in props or cond_field == name:
            raise refuse(
                "condition_field", f"'{cond_field}' is not another field of this group", "Pick a field beside it."
            )
        value = _typed_value(props[cond_field], raw_value)
        entries.append(
            {
                "if": {"properties": {cond_field: {"const": value}}, "required": [cond_field]},
                "then": {"required": [name]},
            }
        )
        _set_or_drop(holder, "required", [r for r in holder.get("required") or () if r != name])
    _set_or_drop(holder, "allOf", entries)


def _typed_value(node: dict, raw: str) -> Any:
    kind = kind_of(node)
    raw = (raw or "").strip()
    if kind == "boolean":
        if raw.lower() not in ("true", "false", "yes", "no"):
            raise refuse("condition_value", f"'{raw}' is not yes or no", "Write yes or no.")
        return raw.lower() in ("true", "yes")
    if kind in ("integer", "number"):
        return _number(raw, "condition_value", whole=kind == "integer")
    if kind == "choice":
        for value, label in _options(node):
            if raw.casefold() in (str(value).casefold(), label.casefold()):
                return value
        raise refuse(
            "condition_value",
            f"'{raw}' is not one of the choices",
            f"Use one of: {', '.join(str(v) for v, _ in _options(node))}.",
        )
    if not raw:
        raise refuse("condition_value", "The value is empty", "Write the value that makes the field appear.")
    return raw


def set_section(draft: Draft, name: str, section: str) -> None:
    """Put the top-level field ``name`` in ``section`` (created at the end when new); an empty
    section takes it out of every section."""
    layout = draft.manifest.get("layout") or []
    for entry in layout:
        for part in ("fields", "hidden"):
            if name in (entry.get(part) or ()):
                entry[part] = [f for f in entry[part] if f != name]
    if section:
        entry = next((e for e in layout if e.get("section") == section), None)
        if entry is None:
            entry = {"section": section, "fields": []}
            layout.append(entry)
        entry.setdefault("fields", []).append(name)
    layout = [e for e in layout if e.get("fields") or e.get("hidden")]
    for e in layout:
        e.setdefault("fields", [])
        if not e.get("hidden"):
            e.pop("hidden", None)
    _set_or_drop(draft.manifest, "layout", layout)


def move_field(draft: Draft, path: str, direction: str) -> None:
    """Move a field one place ``up`` or ``down`` among its siblings (and in its section)."""
    holder, name, _node = _property(draft.schema, path)
    names = list(holder["properties"])
    i = names.index(name)
    j = i - 1 if direction == "up" else i + 1
    if not 0 <= j < len(names):
        return
    names[i], names[j] = names[j], names[i]
    holder["properties"] = {n: holder["properties"][n] for n in names}
    if "." not in path:
        for entry in draft.manifest.get("layout") or ():
            listed = entry.get("fields") or []
            if name in listed:
                k = listed.index(name)
                m = k - 1 if direction == "up" else k + 1
                if 0 <= m < len(listed):
                    listed[k], listed[m] = listed[m], listed[k]


def remove_field(draft: Draft, path: str) -> None:
    """Remove a field, its requirement and conditions, and the simple references to it
    (list columns, identity, layout); anything else naming it is reported by the check."""
    holder, name, _node = _property(draft.schema, path)
    del holder["properties"][name]
    _set_or_drop(holder, "required", [r for r in holder.get("required") or () if r != name])
    entries = [
        e
        for e in holder.get("allOf") or ()
        if (_condition_entry(e) or ("", "", None))[0] != name and (_condition_entry(e) or ("", "", None))[1] != name
    ]
    _set_or_drop(holder, "allOf", entries)
    m = draft.manifest
    for key in ("list_columns", "identity"):
        if m.get(key):
            _set_or_drop(m, key, [f for f in m[key] if f != path])
    if m.get("due_date") == path:
        m.pop("due_date")
    if "." not in path:
        set_section(draft, path, "")


def rename_field(draft: Draft, path: str, new_name: str, *, published_schema: dict | None = None) -> str:
    """Rename a field everywhere the definition names it. When the type's published version
    has the field, a ``rename`` migration is declared so existing items keep their values.
    Returns the new dotted name."""
    new_name = _check_name(new_name, "new_name")
    holder, name, _node = _property(draft.schema, path)
    if new_name == name:
        return path
    if new_name in holder["properties"]:
        raise refuse(
            "new_name",
            f"There is already a field '{new_name}' beside '{name}'",
            "Choose a name that is not taken, or remove the other field first.",
        )
    parent, _ = _split(path)
    new_path = f"{parent}.{new_name}" if parent else new_name
    holder["properties"] = {(new_name if k == name else k): v for k, v in holder["properties"].items()}
    if holder.get("required"):
        holder["required"] = [new_name if r == name else r for r in holder["required"]]
    for entry in holder.get("allOf") or ():
        parsed = _condition_entry(entry)
        if parsed is None:
            continue
        if parsed[0] == name:
            entry["then"]["required"] = [new_name]
        if parsed[1] == name:
            entry["if"] = {"properties": {new_name: entry["if"]["properties"][name]}, "required": [new_name]}
    _rename_references(draft, path, new_path)
    steps = draft.manifest.get("migrations") or []
    earlier = next((s for s in steps if isinstance(s, dict) and (s.get("rename") or {}).get("to") == path), None)
    if earlier is not None:  # renamed again before publishing: one step from the published name
        earlier["rename"]["to"] = new_path
        if earlier["rename"]["from"] == new_path:  # and back again: no step at all
            _set_or_drop(draft.manifest, "migrations", [s for s in steps if s is not earlier])
    elif published_schema is not None and _has(published_schema, path):
        draft.manifest["migrations"] = [*steps, {"rename": {"from": path, "to": new_path}}]
    return new_path


def _has(schema: dict, path: str) -> bool:
    try:
        _property(schema, path)
    except ValidationFailed:
        return False
    return True


def _rename_references(draft: Draft, old: str, new: str) -> None:
    m = draft.manifest

    def names(value: Any) -> Any:
        if isinstance(value, list):
            return [new if v == old else v for v in value]
        return new if value == old else value

    for key in ("list_columns", "identity"):
        if m.get(key):
            m[key] = names(m[key])
    if m.get("due_date") == old:
        m["due_date"] = new
    for section in m.get("layout") or ():
        for part in ("fields", "hidden"):
            if section.get(part):
                section[part] = names(section[part])
    for tasklist in m.get("tasklists") or ():
        for cond in (tasklist.get("filter") or {}).get("all") or ():
            if cond.get("field") == old:
                cond["field"] = new
    for reminder in m.get("reminders") or ():
        if reminder.get("field") == old:
            reminder["field"] = new
    expression = re.compile(rf"\bdata\.{re.escape(old)}\b")
    if isinstance(m.get("title"), str):
        m["title"] = expression.sub(f"data.{new}", m["title"])
    for rule in m.get("rules") or ():
        if isinstance(rule.get("when"), str):
            rule["when"] = expression.sub(f"data.{new}", rule["when"])
        if rule.get("path") == "/" + old.replace(".", "/"):
            rule["path"] = "/" + new.replace(".", "/")
    if "." not in old:
        for template in m.get("templates") or ():
            data = template.get("data") or {}
            if old in data:
                template["data"] = {(new if k == old else k): v for k, v in data.items()}
    wf = draft.workflow
    if not wf:
        return
    for t in wf.get("transitions") or ():
        if t.get("requires"):
            t["requires"] = names(t["requires"])
        if isinstance(t.get("condition"), str):
            t["condition"] = expression.sub(f"data.{new}", t["condition"])
        for action in t.get("actions") or ():
            if isinstance(action, dict) and isinstance(action.get("set"), dict) and action["set"].get("field") == old:
                action["set"]["field"] = new
    for rules in (wf.get("state_fields") or {}).values():
        for part in ("read_only", "required", "hidden"):
            if isinstance(rules, dict) and rules.get(part):
                rules[part] = names(rules[part])


# -- the workflow ------------------------------------------------------------------------------------


def _workflow(draft: Draft) -> dict:
    if draft.workflow is None:
        raise refuse(
            "workflow",
            "This type uses a workflow from definition files",
            "Copy that workflow into the workflow document (Documents) to change it here.",
        )
    draft.workflow.setdefault("states", [])
    return draft.workflow


def add_state(draft: Draft, key: str, label: str, category: str) -> None:
    wf = _workflow(draft)
    key = _check_name(key, "key")
    if any(s.get("key") == key for s in wf["states"]):
        raise refuse("key", f"There is already a state '{key}'", "Choose another key.")
    if category not in STATE_CATEGORIES:
        raise refuse("category", f"'{category}' is not a category", f"Use one of: {', '.join(STATE_CATEGORIES)}.")
    state = {"key": key, "label": (label or "").strip() or key.replace("_", " ").capitalize(), "category": category}
    if not wf["states"]:
        state["initial"] = True
    wf["states"].append(state)


def update_states(draft: Draft, rows: list[dict], initial: str | None) -> None:
    """``rows``: ``[{key, label, category}]`` for the states listed, in their order."""
    wf = _workflow(draft)
    by_key = {s.get("key"): s for s in wf["states"]}
    for row in rows:
        state = by_key.get(row["key"])
        if state is None:
            continue
        if row.get("category") not in STATE_CATEGORIES:
            raise refuse(
                f"category-{row['key']}", f"'{row.get('category')}' is not a category", "Pick one from the list."
            )
        state["label"] = (row.get("label") or "").strip() or state["key"]
        state["category"] = row["category"]
    if initial:
        if initial not in by_key:
            raise refuse("initial", f"There is no state '{initial}'", "Pick the state new items start in.")
        for state in wf["states"]:
            state.pop("initial", None)
            if state["key"] == initial:
                state["initial"] = True


def remove_state(draft: Draft, key: str) -> None:
    wf = _workflow(draft)
    used = [t.get("key") for t in wf.get("transitions") or () if t.get("to") == key or key in (t.get("from") or ())]
    if used:
        raise refuse(
            "state", f"Transitions lead to or from '{key}': {', '.join(used)}", "Remove those transitions first."
        )
    wf["states"] = [s for s in wf["states"] if s.get("key") != key]
    (wf.get("state_fields") or {}).pop(key, None)


def add_transition(draft: Draft, key: str, sources: list[str], target: str, label: str) -> None:
    wf = _workflow(draft)
    key = _check_name(key, "key")
    if any(t.get("key") == key for t in wf.get("transitions") or ()):
        raise refuse("key", f"There is already a transition '{key}'", "Choose another key.")
    if not sources:
        raise refuse("from", "Pick at least one state it leaves from", "Tick the states, or 'any state'.")
    wf.setdefault("transitions", []).append(
        {"key": key, "from": "*" if "*" in sources else sources, "to": target, "label": (label or "").strip() or key}
    )


def update_transition(
    draft: Draft,
    key: str,
    *,
    sources: list[str],
    target: str,
    label: str,
    roles: list[str],
    requires: list[str],
    condition: str,
    actions: str,
) -> None:
    wf = _workflow(draft)
    t = next((t for t in wf.get("transitions") or () if t.get("key") == key), None)
    if t is None:
        raise refuse("transition", f"There is no transition '{key}'", "Pick one from the table.")
    if not sources:
        raise refuse(f"from-{key}", "Pick at least one state it leaves from", "Tick the states, or 'any state'.")
    try:
        parsed = yaml.safe_load(actions) if (actions or "").strip() else []
    except yaml.YAMLError:
        parsed = None
    if not isinstance(parsed, list):
        raise refuse(
            f"actions-{key}",
            "The actions are not a YAML list",
            "Write one action a line, e.g. '- {notify: assignee}' or '- {assign: role:assessor}'.",
        )
    t.update({"from": "*" if "*" in sources else sources, "to": target, "label": (label or "").strip() or key})
    for name, value in (
        ("roles", roles),
        ("requires", requires),
        ("condition", (condition or "").strip()),
        ("actions", parsed),
    ):
        _set_or_drop(t, name, value)


def remove_transition(draft: Draft, key: str) -> None:
    wf = _workflow(draft)
    wf["transitions"] = [t for t in wf.get("transitions") or () if t.get("key") != key]


def actions_text(transition: dict) -> str:
    return "".join(f"- {json.dumps(a, ensure_ascii=False)}\n" for a in transition.get("actions") or ())


# -- task lists ----------------------------------------------------------------------------------------


def tasklist_from(fields: dict[str, Any]) -> dict:
    """A task list entry of type.yaml from the editor's form: key, label, roles, status,
    status_category, assignee and condition rows (``cond_field``, ``cond_op``, ``cond_value``)."""
    key = _check_name(fields.get("key", ""), "key")
    label = (fields.get("label") or "").strip()
    if not label:
        raise refuse("label", "The label is empty", "Write what the list shows, e.g. 'Reviews overdue'.")
    flt: dict[str, Any] = {}
    if fields.get("status"):
        flt["status"] = list(fields["status"])
    if fields.get("status_category"):
        flt["status_category"] = list(fields["status_category"])
    if fields.get("assignee") in ("me", "none"):
        flt["assignee"] = fields["assignee"]
    conds = []
    for name, op, value in zip(
        fields.get("cond_field") or (), fields.get("cond_op") or (), fields.get("cond_value") or (), strict=False
    ):
        name, op, value = (name or "").strip(), (op or "").strip(), (value or "").strip()
        if not name:
            continue
        if op not in TASKLIST_OPS:
            raise refuse("cond_op", f"'{op}' is not an operator", f"Use one of: {', '.join(TASKLIST_OPS)}.")
        cond: dict[str, Any] = {"field": name, "op": op}
        if op == "in":
            cond["value"] = [_literal(v.strip()) for v in value.split(",") if v.strip()]
        elif op not in ("empty", "not_empty"):
            cond["value"] = _literal(value)
        conds.append(cond)
    if conds:
        flt["all"] = conds
    entry: dict[str, Any] = {"key": key, "label": label}
    if fields.get("roles"):
        entry["roles"] = list(fields["roles"])
    entry["filter"] = flt
    return entry


def _literal(text: str) -> Any:
    if re.fullmatch(r"-?[0-9]+", text):
        return int(text)
    if re.fullmatch(r"-?[0-9]*\.[0-9]+", text):
        return float(text)
    if text in ("true", "false"):
        return text == "true"
    return text


def condition_text(cond: dict) -> str:
    value = cond.get("value")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def put_tasklist(draft: Draft, entry: dict, *, index: int | None) -> None:
    """Replace the task list at ``index`` with ``entry``, or add it (``index`` None)."""
    lists = draft.manifest.setdefault("tasklists", [])
    taken = [i for i, t in enumerate(lists) if t.get("key") == entry["key"] and i != index]
    if taken:
        raise refuse("key", f"There is already a task list '{entry['key']}'", "Choose another key.")
    if index is None:
        lists.append(entry)
    elif 0 <= index < len(lists):
        lists[index] = entry
    else:
        raise refuse("tasklist", "There is no such task list", "Pick one from the page.")


def remove_tasklist(draft: Draft, index: int) -> None:
    lists = draft.manifest.get("tasklists") or []
    if 0 <= index < len(lists):
        del lists[index]
    _set_or_drop(draft.manifest, "tasklists", lists)


# -- roles ---------------------------------------------------------------------------------------------


def set_permissions(draft: Draft, overrides: dict[str, list[str] | None]) -> None:
    """``permissions:`` of type.yaml: a role's capabilities on this type (None: its own)."""
    permissions = {role: sorted(caps, key=CAPABILITIES.index) for role, caps in overrides.items() if caps is not None}
    for caps in permissions.values():
        unknown = [c for c in caps if c not in CAPABILITIES]
        if unknown:
            raise refuse("capabilities", f"'{unknown[0]}' is not a capability", "Tick capabilities from the list.")
    _set_or_drop(draft.manifest, "permissions", permissions)


def put_role(draft: Draft, key: str, name: str, capabilities: list[str], scope: str, *, new: bool) -> None:
    """Add or change a role this type brings (its roles document)."""
    key = _check_name(key, "key")
    roles = (draft.roles or {}).get("roles") or []
    existing = next((r for r in roles if r.get("key") == key), None)
    if new and existing is not None:
        raise refuse("key", f"This type already brings a role '{key}'", "Choose another key.")
    if not (name or "").strip():
        raise refuse("name", "The role has no name", "Give it the name people see, e.g. 'Bike officer'.")
    if scope not in ("all", "own"):
        raise refuse("scope", f"'{scope}' is not a scope", "Use all or own.")
    role: dict[str, Any] = {
        "key": key,
        "name": name.strip(),
        "capabilities": sorted(capabilities, key=CAPABILITIES.index),
    }
    if scope == "own":
        role["scope"] = "own"
    if existing is None:
        roles.append(role)
    else:
        existing.clear()
        existing.update(role)
    draft.roles = {"roles": roles}


def remove_role(draft: Draft, key: str) -> None:
    roles = [r for r in (draft.roles or {}).get("roles") or () if r.get("key") != key]
    draft.roles = {"roles": roles} if roles else None


# -- checking an edit as `tracker check` does ------------------------------------------------------


def refuse_problems(problems: list, targets: dict[str, str]) -> None:
    """Refuse an edit when checking the edited draft (the loader's problems, as ``tracker
    check`` reports them) found something in type.yaml at one of ``targets``: JSON pointers,
    each with the form field its problems are shown on (the longest pointer that fits wins).
    Problems elsewhere belong to the rest of the draft and are left to its problem list."""
    found = []
    for p in problems:
        if p.file != "type.yaml":
            continue
        fits = [ptr for ptr in targets if p.pointer == ptr or p.pointer.startswith(ptr + "/")]
        if fits:
            message = p.message[:1].upper() + p.message[1:]
            found.append(Problem(targets[max(fits, key=len)], message, p.advice))
    if found:
        raise ValidationFailed(found, "Nothing was changed.")


# -- assignment ---------------------------------------------------------------------------------------

#: the choices of the assignment form, in words; "" is no rule (items are assigned by hand)
ASSIGNMENT_RULES = {
    "": "Nobody: people assign items by hand",
    "round_robin": "Round robin among the users of a role",
    "least_loaded": "The user of a role with the fewest open items",
    "field": "The user named in a field of the item",
    "queue": "A role's queue, where its users claim items",
}
_ROLE_RULES = ("round_robin", "least_loaded", "queue")


def set_assignment(draft: Draft, rule: str, role: str = "", field_path: str = "") -> None:
    """``assignment:`` of type.yaml: who a new item goes to when its creator names nobody.
    ``rule`` "" removes the rule. The role and field are checked against the registry and the
    schema by the loader (``tracker check``); here what the form itself can get wrong."""
    rule, role, field_path = (rule or "").strip(), (role or "").strip(), (field_path or "").strip()
    if rule == "":
        clear_assignment(draft)
        return
    if rule not in ASSIGNMENT_RULES:
        raise refuse("rule", f"'{rule}' is not an assignment rule", "Pick one of the choices.")
    if rule in _ROLE_RULES:
        if field_path:
            raise refuse(
                "field",
                f"'{ASSIGNMENT_RULES[rule]}' takes no field",
                "Set Field to 'No field', or choose 'The user named in a field'.",
            )
        if not role:
            raise refuse("role", "Pick the role whose users take the items", "Choose a role from the list.")
        if not KEY_PATTERN.match(role):
            raise refuse("role", f"'{role}' is not a role key", "Choose a role from the list.")
        draft.manifest["assignment"] = {"rule": rule, "role": role}
        return
    if role:
        raise refuse(
            "role",
            "'The user named in a field' takes no role: the field names the user",
            "Set Role to 'No role', or choose a rule that gives items to a role.",
        )
    if not field_path:
        raise refuse("field", "Pick the field that holds the user name", "Choose a text field from the list.")
    try:
        _property(draft.schema, field_path)
    except ValidationFailed:
        raise refuse("field", f"There is no field '{field_path}'", "Choose a text field from the list.") from None
    row_group = _rows_holding(draft.schema, field_path)
    if row_group:
        raise refuse(
            "field",
            f"'{field_path}' is a field of each row of {row_group}, so it cannot name one user for the item",
            "Choose a field outside repeating groups.",
        )
    draft.manifest["assignment"] = {"rule": "field", "field": field_path}


def clear_assignment(draft: Draft) -> None:
    """No assignment rule: new items stay unassigned unless their creator names someone."""
    draft.manifest.pop("assignment", None)


def _rows_holding(schema: dict, path: str) -> str:
    """The repeating group whose rows hold ``path`` (the outermost), or "" when none does."""
    parts = path.split(".")
    for i in range(1, len(parts)):
        try:
            _holder, _name, node = _property(schema, ".".join(parts[:i]))
        except ValidationFailed:
            return ""
        if kind_of(node) == "repeating":
            return ".".join(parts[:i])
    return ""


def assignable_fields(draft: Draft) -> list[FieldInfo]:
    """The fields a ``field`` rule may name: text fields outside repeating groups."""
    return [
        f for f in fields(draft) if f.kind in ("text", "textarea", "email") and not _rows_holding(draft.schema, f.path)
    ]


def assignment_text(rule: dict | None, type_name: str, roles: dict[str, str], titles: dict[str, str]) -> str:
    """The assignment rule in plain words; ``roles`` and ``titles`` give the names of roles
    and fields by key."""
    if not isinstance(rule, dict) or not rule.get("rule"):
        return (
            f"Nobody: a new {type_name} item is unassigned until someone assigns it by hand "
            "(or its creator picks an assignee)."
        )
    role = rule.get("role") or ""
    who = f"{roles[role]} ({role})" if role in roles else f"'{role}'"
    field_path = rule.get("field") or ""
    named = f"{titles[field_path]} ({field_path})" if titles.get(field_path) else f"'{field_path}'"
    tail = " When its creator picks an assignee, that person gets it instead."
    if rule["rule"] == "round_robin":
        return f"A new {type_name} item goes to the active users of the role {who} in turn.{tail}"
    if rule["rule"] == "least_loaded":
        return (
            f"A new {type_name} item goes to the active user of the role {who} "
            f"with the fewest open {type_name} items.{tail}"
        )
    if rule["rule"] == "field":
        return f"A new {type_name} item goes to the user whose user name is in the field {named}.{tail}"
    if rule["rule"] == "queue":
        return (
            f"A new {type_name} item waits unassigned in the queue of the role {who}; "
            f"one of its users claims it from their Queue page.{tail}"
        )
    return f"The rule '{rule['rule']}' is not one the tracker knows; fix it under Documents."


# -- migration steps -----------------------------------------------------------------------------------


def _unpublished() -> ValidationFailed:
    return refuse(
        "migrations",
        "No version of this type is published yet, so there are no items to migrate",
        "Publish a first version; migration steps belong to the versions after it.",
    )


def _steps(draft: Draft) -> list:
    steps = draft.manifest.get("migrations") or []
    if not isinstance(steps, list):
        raise refuse("migrations", "'migrations:' in type.yaml is not a list", _FIX_TEXT)
    return steps


def _step_for(steps: list, kind: str, path: str) -> int | None:
    return next(
        (i for i, s in enumerate(steps) if isinstance(s, dict) and (s.get(kind) or {}).get("field") == path), None
    )


def _put_step(draft: Draft, kind: str, value: dict) -> int:
    """Declare ``{kind: value}``, in place of the field's earlier step of that kind; its index."""
    steps = _steps(draft)
    index = _step_for(steps, kind, value["field"])
    if index is None:
        steps.append({kind: value})
        index = len(steps) - 1
    else:
        steps[index] = {kind: value}
    draft.manifest["migrations"] = steps
    return index


def _migrated_field(draft: Draft, path: str, what: str) -> dict:
    try:
        _holder, _name, node = _property(draft.schema, path)
    except ValidationFailed:
        raise refuse(what, f"There is no field '{path}'", "Pick a field from the list.") from None
    if kind_of(node) in ("group", "repeating"):
        raise refuse(what, f"'{path}' is a group of fields", "Pick one of the fields in it.")
    row_group = _rows_holding(draft.schema, path)
    if row_group:
        raise refuse(
            what,
            f"'{path}' is a field of each row of {row_group}, which migration steps do not reach",
            "Pick a field outside repeating groups.",
        )
    return node


def migratable_fields(draft: Draft) -> list[FieldInfo]:
    """The fields a ``set_default`` step may fill: every field outside repeating groups."""
    return [f for f in fields(draft) if not f.is_container and not _rows_holding(draft.schema, f.path)]


def set_default_step(draft: Draft, path: str, raw: str, *, published_schema: dict | None) -> int:
    """Declare that items of the published version whose ``path`` is empty get ``raw`` (typed
    by the field: yes/no, a number, an option, options separated by commas); it replaces an
    earlier default for the field. Returns the step's index in ``migrations:``."""
    if published_schema is None:
        raise _unpublished()
    path = (path or "").strip()
    if not path:
        raise refuse("default_field", "Pick the field to fill", "Choose a field from the list.")
    node = _migrated_field(draft, path, "default_field")
    return _put_step(draft, "set_default", {"field": path, "value": _default_value(node, raw)})


def _default_value(node: dict, raw: str) -> Any:
    kind = kind_of(node)
    raw = (raw or "").strip()
    if not raw:
        raise refuse("default_value", "The default is empty", "Write the value that existing items get.")
    if kind == "boolean":
        if raw.lower() not in ("true", "false", "yes", "no"):
            raise refuse("default_value", f"'{raw}' is not yes or no", "Write yes or no.")
        return raw.lower() in ("true", "yes")
    if kind in ("integer", "number"):
        return _number(raw, "default_value", whole=kind == "integer")
    if kind == "choice":
        return _option(_options(node), raw, "default_value")
    if kind == "choices":
        items = node.get("items") if isinstance(node.get("items"), dict) else {}
        return [_option(_options(items), part.strip(), "default_value") for part in raw.split(",") if part.strip()]
    return raw


def _option(options: list[tuple[Any, str]], raw: str, what: str) -> Any:
    for value, label in options:
        if raw.casefold() in (str(value).casefold(), label.casefold()):
            return value
    raise refuse(what, f"'{raw}' is not one of the options", f"Use one of: {', '.join(str(v) for v, _ in options)}.")


def published_name(draft: Draft, path: str) -> str:
    """The name ``path`` had in the published version: a rename step of the draft leads back to it."""
    steps = draft.manifest.get("migrations")
    for step in steps if isinstance(steps, list) else ():
        rename = step.get("rename") if isinstance(step, dict) else None
        if isinstance(rename, dict) and rename.get("to") == path and rename.get("from"):
            return rename["from"]
    return path


def removed_options(draft: Draft, published_schema: dict | None) -> dict[str, list[tuple[Any, str]]]:
    """``{field: [(value, label)]}``: for each one-choice field, the options of its published
    version that the draft no longer offers (what items of that version may still hold)."""
    if published_schema is None:
        return {}
    out = {}
    for info in fields(draft):
        if info.kind != "choice" or _rows_holding(draft.schema, info.path):
            continue
        try:
            _holder, _name, old = _property(published_schema, published_name(draft, info.path))
        except ValidationFailed:
            continue
        now = {str(v) for v, _ in info.options}
        gone = [(v, label) for v, label in _options(old) if str(v) not in now] if kind_of(old) == "choice" else []
        if gone:
            out[info.path] = gone
    return out


def map_values_step(draft: Draft, path: str, pairs: list[tuple[str, str]], *, published_schema: dict | None) -> int:
    """Declare that items of the published version holding an old option of the one-choice
    field ``path`` get a new one: ``pairs`` are (old, new) as the form sends them, an empty
    new value leaving that old one as it is. It replaces an earlier map for the field.
    Returns the step's index in ``migrations:``."""
    if published_schema is None:
        raise _unpublished()
    path = (path or "").strip()
    node = _migrated_field(draft, path, "map_field")
    if kind_of(node) != "choice":
        raise refuse(
            "map_field",
            f"'{path}' is not a one-choice field",
            "Values are mapped for fields of the kind 'One choice'.",
        )
    gone = removed_options(draft, published_schema).get(path, [])
    mapping: dict[Any, Any] = {}
    for i, (old, new) in enumerate(pairs):
        old, new = (old or "").strip(), (new or "").strip()
        if not new:
            continue
        was = next((v for v, _ in gone if str(v) == old), None)
        if was is None:
            raise refuse(
                f"map_to-{i}",
                f"'{old}' is not an option removed from {path} since the published version",
                "Map only the options listed: items of the published version may hold those.",
            )
        mapping[was] = _option(_options(node), new, f"map_to-{i}")
    if not mapping:
        raise refuse(
            "map_field",
            f"No new value was chosen for the old options of {path}",
            "Choose the new option for at least one old option.",
        )
    return _put_step(draft, "map_values", {"field": path, "map": mapping})


def remove_step(draft: Draft, index: int) -> dict:
    """Remove the step at ``index`` of ``migrations:``; returns it."""
    steps = _steps(draft)
    if not 0 <= index < len(steps):
        raise refuse("step", "There is no such migration step", "Pick one from the list on this page.")
    removed = steps.pop(index)
    _set_or_drop(draft.manifest, "migrations", steps)
    return removed
