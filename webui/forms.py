"""Generated forms: a tracker type's JSON Schema becomes WTForms fields; what users type becomes JSON.

The pages never hand-write a type's fields. :func:`build_spec` reads the schema once into a tree
of :class:`FieldSpec` (kind, label, help, choices, min/max, conditions); :class:`BoundForm` turns
that tree into a WTForms form for one request, bound either to what the browser sent or to
stored values; :meth:`BoundForm.to_json` converts the input into the item's data; and
:func:`build_view` lays the bound fields out in the type's sections with the engine's problems
attached to the fields they concern.

The WTForms form is flat (one field per input, named after its JSON pointer) rather than nested
``FormField``/``FieldList``: rows of arrays are renumbered after every round trip so an input's
name always equals the pointer the engine reports problems against, and no property name can
collide with a WTForms attribute. The server decides every rule: the form itself never refuses
input, it keeps it (even "abc" typed into a number field) and the engine reports what is wrong.

Names and ids (a contract for browser tests and forms.js)
----------------------------------------------------------
Every generated input is named after its JSON pointer in the item's data, "/" replaced by "-",
under the prefix ``data``; its id is the same as its name::

    /employer_name      name="data-employer_name"    id="data-employer_name"
    /reviews/0/date     name="data-reviews-0-date"    id="data-reviews-0-date"
    /trigger/event      name="data-trigger-event"     id="data-trigger-event"

- Radio buttons share their name; each has the id ``<name>-<value>`` (the value in lower case,
  other characters than letters and digits replaced by "-"); an optional group starts with a
  "Not set" radio, id ``<name>--unset``. A group of checkboxes (an array of choices) likewise.
- Each field is wrapped in ``<div id="field-<name>">``; its help text has the id ``<name>-help``
  and its error ``<name>-error``, both named by the input's ``aria-describedby``.
- A nested object is ``<fieldset id="<name>">`` with a legend. An array is
  ``<fieldset id="<name>">``; its rows are ``<fieldset id="<name>-<i>">`` (``i`` from 0).
- Buttons: "Add a row" ``id="add-<array name>"`` (``name="add_row"``, value the array's name);
  "Remove" ``id="remove-<row name>"`` (``name="remove_row"``, value the row's name); the main
  button ``id="save"`` (``name="save"``).
- Conditional fields (``if``/``then``/``else``) carry ``data-show-when`` (JSON: a list of lists of
  :meth:`Clause.as_json`; shown when every clause of one list holds) and ``data-scope`` (the name
  of the object whose fields the clauses test); forms.js hides them, and disables their inputs,
  while the condition does not hold.
- The pages add: ``subject-q`` (the learner search box), ``find-subject`` (its button), the radios
  ``subject-<item id>``, ``assignee``, ``description``, the hidden ``version`` and ``seen``; on the
  item page the buttons ``transition-<key>``, ``assign`` and ``add-comment`` and the textarea
  ``comment``; the error summary at the top of a form is ``error-summary``.
"""

from __future__ import annotations

import copy
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from markupsafe import Markup
from wtforms import BooleanField, RadioField, SelectField, SelectMultipleField, StringField, TextAreaField
from wtforms.fields.core import Field, UnboundField
from wtforms.form import BaseForm
from wtforms.widgets import CheckboxInput, DateInput, DateTimeLocalInput, EmailInput, ListWidget, NumberInput

from engine.definitions.model import Section
from engine.errors import Problem
from engine.validation import choices as schema_choices
from engine.validation import humanize_label

#: the prefix of every generated input's name
PREFIX = "data"
#: strings allowed longer than this are edited in a textarea
TEXTAREA_OVER = 200
#: choices up to this many are radio buttons, more are a select
RADIO_UP_TO = 4
#: rows of one array a form may carry; more are ignored (a guard against crafted input)
MAX_ROWS = 200
#: kinds of field holding one value
LEAF_KINDS = (
    "text",
    "textarea",
    "integer",
    "number",
    "boolean",
    "select",
    "radio",
    "checkboxes",
    "date",
    "datetime",
    "email",
)

try:  # WTForms 3.3 wants options as SelectChoice; older versions take (value, label) pairs
    from wtforms import SelectChoice as _Choice
except ImportError:  # pragma: no cover - WTForms < 3.3

    def _Choice(value: str, label: str) -> tuple[str, str]:  # noqa: N802 - stands in for a class
        return (value, label)


_INTEGER = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_INDEX = re.compile(r"[0-9]{1,4}")


# -- conditions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Clause:
    """One test on a sibling field, taken from an ``if`` schema.

    It holds when the field's value is one of ``values`` (``None``: any value), or is not when
    ``negate``. Values are compared as the form sends them: ``str(value)``, booleans as
    ``"true"``/``"false"``. ``empty`` is the answer (before negation) when the field is empty:
    an ``if`` that does not list the field under ``required`` holds while it is missing.
    """

    field: str
    values: tuple[str, ...] | None
    negate: bool = False
    empty: bool = False

    def holds(self, value: str) -> bool:
        result = self.empty if value == "" else (self.values is None or value in self.values)
        return result != self.negate

    def negated(self) -> Clause:
        return Clause(self.field, self.values, not self.negate, self.empty)

    def as_json(self) -> dict:
        values = list(self.values) if self.values is not None else None
        return {"field": self.field, "values": values, "negate": self.negate, "empty": self.empty}


#: a condition in disjunctive normal form: it holds when every clause of one of its tuples
#: holds; the empty tuple means "always"
Condition = tuple[tuple[Clause, ...], ...]


def condition_holds(condition: Condition, values: Mapping[str, str]) -> bool:
    """Whether ``condition`` holds for sibling ``values`` (form strings, "" when empty)."""
    return not condition or any(all(c.holds(values.get(c.field, "")) for c in conj) for conj in condition)


# -- the schema as a tree of fields ----------------------------------------------------------------


@dataclass
class FieldSpec:
    """One property of the schema as a form field.

    ``dotted`` is the property's name from the root (``trigger.event``); fields of array rows
    continue the array's (``reviews.date``), as ``layout`` and state rules name them.
    """

    key: str
    dotted: str
    label: str
    kind: str
    schema: dict = field(default_factory=dict)
    required: bool = False
    help: str = ""
    choices: list[tuple[Any, str]] | None = None
    #: an object's fields
    children: list[FieldSpec] = field(default_factory=list)
    #: an array's row: an object spec, or a leaf for arrays of single values
    item: FieldSpec | None = None
    #: shown only when this holds (from ``if``/``then``/``else``)
    show_when: Condition = ()
    #: required when this holds
    required_when: Condition = ()
    #: the conditions in words, for people without JavaScript
    show_text: str = ""
    required_text: str = ""

    @property
    def is_leaf(self) -> bool:
        return self.kind in LEAF_KINDS

    def child(self, key: str) -> FieldSpec | None:
        return next((c for c in self.children if c.key == key), None)

    def find(self, dotted: str) -> FieldSpec | None:
        """The field ``a.b.c`` below this one (through array rows too), or None."""
        node: FieldSpec | None = self
        for part in dotted.split("."):
            if node is not None and node.kind == "array" and node.item is not None:
                node = node.item
            node = node.child(part) if node is not None else None
            if node is None:
                return None
        return node

    def walk(self) -> Iterator[FieldSpec]:
        yield self
        for c in self.children:
            yield from c.walk()
        if self.item is not None:
            yield from self.item.walk()

    @property
    def row_label(self) -> str:
        """What one row of an array is called ("Review")."""
        title = (self.item.schema.get("title") if self.item else None) or ""
        return title or "Row"


def build_spec(schema: dict, *, exclude: tuple[str, ...] | set[str] = ()) -> FieldSpec:
    """The form fields of ``schema`` (a type's schema), leaving out the dotted names in
    ``exclude`` (finance fields the user may not see, fields a state hides)."""
    return _object(schema, schema, "", "", schema.get("title") or "Details", False, set(exclude))


def prune(spec: FieldSpec, names: list[str] | tuple[str, ...]) -> FieldSpec:
    """A copy of the tree with only the fields ``names`` (dotted) and the objects holding them,
    e.g. the fields a transition asks for."""
    wanted = [n for n in names if spec.find(n) is not None]

    def keep(node: FieldSpec) -> FieldSpec | None:
        if any(node.dotted == n for n in wanted):
            return node
        if node.kind == "object" and any(n.startswith(node.dotted + ".") or not node.dotted for n in wanted):
            children = [k for k in (keep(c) for c in node.children) if k is not None]
            if children:
                return FieldSpec(**{**node.__dict__, "children": children})
        return None

    return keep(spec) or FieldSpec(**{**spec.__dict__, "children": []})


def _deref(node: Any, root: dict) -> dict:
    seen = 0
    while isinstance(node, dict) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/") and seen < 20:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            part = part.replace("~1", "/").replace("~0", "~")
            target = target.get(part, {}) if isinstance(target, dict) else {}
        # keywords beside a $ref (a title, a description) win over the target's
        extra = {k: v for k, v in node.items() if k != "$ref"}
        node, seen = {**target, **extra} if isinstance(target, dict) else extra, seen + 1
    return node if isinstance(node, dict) else {}


def _kind(node: dict) -> str:
    declared = node.get("type")
    if isinstance(declared, list):
        declared = next((t for t in declared if t != "null"), None)
    widget = node.get("x-widget")
    if declared == "object" or (declared is None and "properties" in node):
        return "object"
    if declared == "array":
        return "array"
    options = schema_choices(node)
    if options is not None:
        if widget in ("select", "radio"):
            return widget
        return "radio" if len(options) <= RADIO_UP_TO else "select"
    if declared == "boolean":
        return "boolean"
    if declared in ("integer", "number"):
        return declared
    kind = {"date": "date", "date-time": "datetime", "email": "email"}.get(node.get("format", ""))
    if kind:
        return kind
    if widget == "textarea" or (node.get("maxLength") or 0) > TEXTAREA_OVER:
        return "textarea"
    return "text"


def _spec(
    node: dict,
    root: dict,
    key: str,
    dotted: str,
    required: bool,
    exclude: set[str],
    *,
    show_when: Condition = (),
    required_when: Condition = (),
    labels: Mapping[str, FieldSpec] | None = None,
) -> FieldSpec:
    node = _deref(node, root)
    kind = _kind(node)
    label = node.get("title") or humanize_label(key)
    if kind == "object":
        spec = _object(node, root, key, dotted, label, required, exclude)
    else:
        spec = FieldSpec(key, dotted, label, kind, node, required, node.get("description", ""))
        if kind in ("select", "radio"):
            spec.choices = _choices(node)
        if kind == "array":
            _array(spec, node, root, exclude)
    spec.show_when, spec.required_when = show_when, required_when
    spec.show_text = _describe(show_when, labels or {})
    spec.required_text = _describe(required_when, labels or {})
    return spec


def _array(spec: FieldSpec, node: dict, root: dict, exclude: set[str]) -> None:
    item = _deref(node.get("items") or {}, root)
    if schema_choices(item) is not None and _kind(item) != "object":
        spec.kind, spec.choices = "checkboxes", _choices(item)
        return
    spec.item = _spec(item, root, "", spec.dotted, True, exclude)
    spec.item.label = item.get("title") or spec.label


def _choices(node: dict) -> list[tuple[Any, str]]:
    """The choices with their labels; a plain ``enum`` of words gets readable ones (on_track -> On track)."""
    return [
        (value, humanize_label(label) if isinstance(value, str) and label == value else label)
        for value, label in schema_choices(node) or []
    ]


def _simplify(condition: list[tuple[Clause, ...]]) -> Condition:
    """Drop clauses another in the same conjunction makes redundant: "Event is date_reached"
    already says "Event is not schedule"."""
    out: list[tuple[Clause, ...]] = []
    for conj in condition:
        positive = {c.field: set(c.values) for c in conj if not c.negate and c.values is not None and not c.empty}
        kept = tuple(
            c
            for c in conj
            if not (c.negate and c.values is not None and c.field in positive and not positive[c.field] & set(c.values))
        )
        if kept not in out:
            out.append(kept)
    return tuple(out)


def _object(node: dict, root: dict, key: str, dotted: str, label: str, required: bool, exclude: set[str]) -> FieldSpec:
    node = _deref(node, root)
    props = {name: sub for name, sub in (node.get("properties") or {}).items() if isinstance(sub, dict)}
    base_required = set(node.get("required") or ())
    shown: dict[str, list[tuple[Clause, ...]]] = {}
    needed: dict[str, list[tuple[Clause, ...]]] = {}
    always: set[str] = set()
    extra: dict[str, dict] = {}
    for condition, branch in _branches(node, root, ((),)):
        for name, sub in (branch.get("properties") or {}).items():
            if name in props or not isinstance(sub, dict):
                continue  # the branch narrows a field everyone sees; it adds no field
            extra.setdefault(name, sub)
            if condition is None:
                always.add(name)
            else:
                shown.setdefault(name, []).extend(condition)
        for name in branch.get("required") or ():
            if name not in base_required and condition is not None:
                needed.setdefault(name, []).extend(condition)
    spec = FieldSpec(key, dotted, label, "object", node, required, node.get("description", ""))
    siblings: dict[str, FieldSpec] = {}
    for name, sub in [*props.items(), *extra.items()]:
        child_dotted = f"{dotted}.{name}" if dotted else name
        if child_dotted in exclude:
            continue
        show: Condition = ()
        if name not in always:
            # a field a branch adds, or an optional one only some branches require, is asked
            # for only when one of those branches applies
            show = _simplify(shown.get(name) or ([] if name in base_required else needed.get(name, [])))
        child = _spec(
            sub,
            root,
            name,
            child_dotted,
            name in base_required,
            exclude,
            show_when=show,
            required_when=_simplify(needed.get(name, [])),
            labels=siblings,
        )
        siblings[name] = child
        spec.children.append(child)
    # conditions name siblings that may come later in the schema: describe them again
    for child in spec.children:
        child.show_text = _describe(child.show_when, siblings)
        child.required_text = _describe(child.required_when, siblings)
    return spec


def _branches(node: dict, root: dict, base: Condition) -> Iterator[tuple[Condition | None, dict]]:
    """Each ``then``/``else`` schema under ``node`` (also inside ``allOf``) with the condition
    under which it applies, or None when the ``if`` is too complex to evaluate in a form."""
    holders = [node, *(_deref(x, root) for x in node.get("allOf") or ())]
    for holder in holders:
        if "if" not in holder:
            continue
        clauses = _clauses(_deref(holder["if"], root))
        if clauses is None:
            for word in ("then", "else"):
                if isinstance(holder.get(word), dict):
                    yield None, _deref(holder[word], root)
            continue
        when_then = tuple(conj + clauses for conj in base)
        when_else = tuple(conj + (c.negated(),) for conj in base for c in clauses) if clauses else ()
        for word, condition in (("then", when_then), ("else", when_else)):
            branch = _deref(holder.get(word), root) if isinstance(holder.get(word), dict) else None
            if branch is None:
                continue
            yield condition, branch
            yield from _branches(branch, root, condition)


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def _clauses(schema: dict) -> tuple[Clause, ...] | None:
    """The clauses of an ``if`` schema testing fields against constants, or None."""
    if not schema or set(schema) - {"properties", "required", "type"}:
        return None
    props = schema.get("properties") or {}
    required = set(schema.get("required") or ())
    out = []
    for name, sub in props.items():
        if not isinstance(sub, dict) or set(sub) - {"const", "enum", "type", "title"}:
            return None
        if "const" in sub:
            values = (_form_value(sub["const"]),)
        elif isinstance(sub.get("enum"), list):
            values = tuple(_form_value(v) for v in sub["enum"])
        else:
            return None
        out.append(Clause(name, values, False, name not in required))
    out += [Clause(name, None) for name in sorted(required - set(props))]
    return tuple(out)


def _describe(condition: Condition, siblings: Mapping[str, FieldSpec]) -> str:
    """A condition in words: "Event is Schedule", "Event is not Schedule or Date reached"."""

    def value_label(name: str, value: str) -> str:
        spec = siblings.get(name)
        for option, text in (spec.choices or []) if spec else []:
            if _form_value(option) == value:
                return text
        return {"true": "ticked", "false": "not ticked"}.get(value, value)

    def words(conj: tuple[Clause, ...]) -> str:
        merged: dict[tuple[str, bool], list[str] | None] = {}
        for c in conj:
            key = (c.field, c.negate)
            if c.values is None:
                merged[key] = None
            elif merged.get(key, []) is not None:
                merged[key] = [*(merged.get(key) or []), *c.values]
        parts = []
        for (name, negate), values in merged.items():
            label = siblings[name].label if name in siblings else humanize_label(name)
            if values is None:
                parts.append(f"{label} is {'empty' if negate else 'filled in'}")
                continue
            shown = [value_label(name, v) for v in dict.fromkeys(values)]
            joined = shown[0] if len(shown) == 1 else ", ".join(shown[:-1]) + " or " + shown[-1]
            parts.append(f"{label} is {'not ' if negate else ''}{joined}")
        return " and ".join(parts)

    merged: list[tuple[Clause, ...]] = []
    for conj in condition:
        single = conj[0] if len(conj) == 1 and not conj[0].negate and conj[0].values is not None else None
        last = merged[-1][0] if merged and len(merged[-1]) == 1 else None
        if single and last and not last.negate and last.values is not None and last.field == single.field:
            merged[-1] = (Clause(single.field, (*last.values, *single.values), False, last.empty),)
        else:
            merged.append(conj)
    return "; or ".join(w for w in (words(c) for c in merged) if w)


# -- binding: WTForms fields for one request -------------------------------------------------------


def name_of(dotted_or_parts: str | list) -> str:
    """The input name of a field: ``trigger.event`` or ``["reviews", 0, "date"]`` ->
    ``data-trigger-event`` / ``data-reviews-0-date``."""
    parts = dotted_or_parts.split(".") if isinstance(dotted_or_parts, str) else dotted_or_parts
    return "-".join([PREFIX, *(str(p) for p in parts)])


def pointer_name(path: str) -> str | None:
    """The input name a problem's JSON pointer concerns (``/reviews/1/date`` ->
    ``data-reviews-1-date``), or None for a path that is not a pointer into the data."""
    if not path.startswith("/"):
        return None
    return name_of([p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")])


def submitted(formdata: Mapping[str, Any], dotted: str) -> bool:
    """Whether the browser sent any input for the field ``dotted`` (or below it)."""
    name = name_of(dotted)
    return any(k == name or k.startswith(name + "-") for k in formdata)


@dataclass
class _Slot:
    """One field instance in the form: a leaf input, an object, an array or one of its rows."""

    spec: FieldSpec
    name: str
    children: list[_Slot] = field(default_factory=list)


def _unlisted(spec: FieldSpec, value: Any) -> str | None:
    """A value of a choice field that is not one of its choices (stored under an older
    definition, or sent by hand): it is offered too, so that saving keeps it."""
    if spec.kind not in ("select", "radio") or not isinstance(value, str) or not value:
        return None
    return None if any(_form_value(v) == value for v, _label in spec.choices or []) else value


def _unbound(spec: FieldSpec, value: Any = None) -> UnboundField:
    kind, schema, label = spec.kind, spec.schema, spec.label
    options = [_Choice(_form_value(v), text) for v, text in spec.choices or []]
    if _unlisted(spec, value):
        options.append(_Choice(value, f"{value} (not one of the choices)"))
    if kind == "textarea":
        return TextAreaField(label)
    if kind == "boolean":
        return BooleanField(label)
    if kind == "select":
        return SelectField(label, choices=[_Choice("", "Choose…"), *options], validate_choice=False)
    if kind == "radio":
        return RadioField(label, choices=options, validate_choice=False)
    if kind == "checkboxes":
        return SelectMultipleField(
            label,
            choices=options,
            validate_choice=False,
            widget=ListWidget(prefix_label=False),
            option_widget=CheckboxInput(),
        )
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        return StringField(label, widget=NumberInput(step=1 if kind == "integer" else "any", min=low, max=high))
    widget = {"date": DateInput(), "datetime": DateTimeLocalInput(), "email": EmailInput()}.get(kind)
    return StringField(label, widget=widget) if widget else StringField(label)


def _empty_raw(spec: FieldSpec) -> Any:
    if spec.kind == "object":
        return {c.key: _empty_raw(c) for c in spec.children}
    if spec.kind in ("array", "checkboxes"):
        return []
    return False if spec.kind == "boolean" else ""


def to_raw(spec: FieldSpec, value: Any, *, defaults: bool = False) -> Any:
    """Stored JSON as the values a form shows: strings, booleans for checkboxes, lists for rows.
    ``defaults`` fills missing values from the schema's ``default`` (a new item)."""
    if value is None and defaults and "default" in spec.schema:
        value = copy.deepcopy(spec.schema["default"])
    if spec.kind == "object":
        value = value if isinstance(value, dict) else {}
        return {c.key: to_raw(c, value.get(c.key), defaults=defaults) for c in spec.children}
    if spec.kind == "array":
        rows = value if isinstance(value, list) else []
        return [to_raw(spec.item, v, defaults=defaults) for v in rows[:MAX_ROWS]] if spec.item else []
    if spec.kind == "checkboxes":
        return [_form_value(v) for v in value] if isinstance(value, list) else []
    if spec.kind == "boolean":
        return value is True
    return _form_value(value)


class BoundForm:
    """The generated WTForms form of a spec for one request, and the raw values it holds.

    Bind it to what the browser sent (``formdata``) or to raw values (``raw``, from
    :func:`to_raw`). ``raw`` mirrors the data: a dict per object, a list per array, a string
    (a boolean for a checkbox, a list for checkboxes) per field, exactly as typed.
    """

    def __init__(self, spec: FieldSpec, *, formdata: Mapping[str, Any] | None = None, raw: dict | None = None):
        self.spec = spec
        if formdata is not None:
            self.slot = _slot_from_formdata(spec, PREFIX, formdata)
            values = {s.name: formdata.get(s.name) for s in _leaves(self.slot)}
        else:
            self.slot = _slot_from_raw(spec, PREFIX, raw if raw is not None else _empty_raw(spec))
            values = {s.name: v for s, v in _flatten(self.slot, raw or {})}
        # WTForms adds the prefix back: the fields are named without it
        flat = {name[len(PREFIX) + 1 :]: value for name, value in values.items()}
        fields = [(s.name[len(PREFIX) + 1 :], _unbound(s.spec, values[s.name])) for s in _leaves(self.slot)]
        self.form = BaseForm(fields, prefix=PREFIX)
        self.form.process(formdata, data=None if formdata is not None else flat)
        self.raw = self._raw(self.slot)

    def field(self, name: str) -> Field | None:
        """The WTForms field of an input name (``data-reviews-0-date``)."""
        short = name[len(PREFIX) + 1 :]
        return self.form._fields.get(short)

    def _raw(self, slot: _Slot) -> Any:
        kind = slot.spec.kind
        if kind == "object":
            return {c.spec.key: self._raw(c) for c in slot.children}
        if kind == "array":
            return [self._raw(row) for row in slot.children]
        data = self.field(slot.name).data
        if kind == "boolean":
            return bool(data)
        if kind == "checkboxes":
            return [str(v) for v in data or []]
        return "" if data is None else str(data)

    # -- rows without JavaScript ---------------------------------------------------------------

    def add_row(self, array_name: str) -> str | None:
        """Add an empty row to the array named ``array_name``; return the id to focus
        (the new row's first input), or None when there is no such array."""
        path = _path_to(self.slot, array_name, "array")
        if path is None:
            return None
        rows = _at(self.raw, path)
        spec = _slot_at(self.slot, path).spec
        if len(rows) < MAX_ROWS and spec.item is not None:
            rows.append(_empty_raw(spec.item))
        self.rebind()
        row = _slot_at(self.slot, path).children[-1] if rows else _slot_at(self.slot, path)
        first = next(_leaves(row), None)
        return first.name if first else f"add-{_slot_at(self.slot, path).name}"

    def remove_row(self, row_name: str) -> str | None:
        """Remove the row named ``row_name``; return the id to focus (the array's add button)."""
        path = _path_to(self.slot, row_name, "row")
        if path is None:
            return None
        del _at(self.raw, path[:-1])[path[-1]]
        self.rebind()
        return f"add-{_slot_at(self.slot, path[:-1]).name}"

    def rebind(self, raw: dict | None = None) -> None:
        """Bind again to the raw values, so rows are numbered from 0 without gaps."""
        fresh = BoundForm(self.spec, raw=self.raw if raw is None else raw)
        self.slot, self.form, self.raw = fresh.slot, fresh.form, fresh.raw

    # -- JSON ------------------------------------------------------------------------------------

    def to_json(self, start: dict | None = None) -> dict:
        """The data the input stands for; rows with nothing filled in are dropped (also from the
        form, so the names of the rows left match the pointers of the engine's problems).

        Numbers are parsed; what is not a number is kept as typed, so the engine's validation
        reports it on its field. Empty inputs are left out, and so are fields whose condition
        does not hold. An unticked checkbox is ``false`` when the field is required or ``start``
        (the stored or template data) has a value for it, otherwise it is left out.
        """
        data, cleaned = _convert_object(self.spec, self.raw, start if isinstance(start, dict) else {})
        if cleaned != self.raw:
            self.rebind(cleaned)
        return data if data is not _EMPTY else {}


def _slot_from_raw(spec: FieldSpec, name: str, raw: Any) -> _Slot:
    slot = _Slot(spec, name)
    if spec.kind == "object":
        raw = raw if isinstance(raw, dict) else {}
        slot.children = [_slot_from_raw(c, f"{name}-{c.key}", raw.get(c.key)) for c in spec.children]
    elif spec.kind == "array" and spec.item is not None:
        rows = raw if isinstance(raw, list) else []
        slot.children = [_slot_from_raw(spec.item, f"{name}-{i}", r) for i, r in enumerate(rows[:MAX_ROWS])]
    return slot


def _indices(formdata: Mapping[str, Any], name: str) -> list[int]:
    prefix = name + "-"
    found = set()
    for key in formdata:
        if key.startswith(prefix):
            head = key[len(prefix) :].split("-", 1)[0]
            if _INDEX.fullmatch(head):
                found.add(int(head))
    return sorted(found)[:MAX_ROWS]


def _slot_from_formdata(spec: FieldSpec, name: str, formdata: Mapping[str, Any]) -> _Slot:
    slot = _Slot(spec, name)
    if spec.kind == "object":
        slot.children = [_slot_from_formdata(c, f"{name}-{c.key}", formdata) for c in spec.children]
    elif spec.kind == "array" and spec.item is not None:
        slot.children = [_slot_from_formdata(spec.item, f"{name}-{i}", formdata) for i in _indices(formdata, name)]
    return slot


def _leaves(slot: _Slot) -> Iterator[_Slot]:
    if slot.spec.is_leaf:
        yield slot
    for c in slot.children:
        yield from _leaves(c)


def _flatten(slot: _Slot, raw: Any) -> Iterator[tuple[_Slot, Any]]:
    if slot.spec.is_leaf:
        yield slot, raw
        return
    for i, c in enumerate(slot.children):
        if slot.spec.kind == "object":
            yield from _flatten(c, raw.get(c.spec.key) if isinstance(raw, dict) else None)
        else:
            yield from _flatten(c, raw[i] if isinstance(raw, list) and i < len(raw) else None)


def _path_to(slot: _Slot, name: str, kind: str, path: tuple = ()) -> list | None:
    """The keys and positions leading to the array (``kind="array"``) or row named ``name``."""
    is_row = kind == "row" and len(path) > 0 and isinstance(path[-1], int)
    if slot.name == name and (slot.spec.kind == "array" if kind == "array" else is_row):
        return list(path)
    for i, c in enumerate(slot.children):
        step = c.spec.key if slot.spec.kind == "object" else i
        found = _path_to(c, name, kind, (*path, step))
        if found is not None:
            return found
    return None


def _slot_at(slot: _Slot, path: list) -> _Slot:
    for step in path:
        slot = next(c for c in slot.children if c.spec.key == step) if isinstance(step, str) else slot.children[step]
    return slot


def _at(raw: Any, path: list) -> Any:
    for step in path:
        raw = raw[step]
    return raw


# -- converting raw values to JSON -----------------------------------------------------------------

_EMPTY: Any = type("Empty", (), {"__repr__": lambda self: "<empty>"})()


def _sibling_values(raw: dict) -> dict[str, str]:
    out = {}
    for key, value in raw.items():
        if isinstance(value, bool):
            out[key] = "true" if value else "false"
        elif isinstance(value, str):
            out[key] = value.strip()
    return out


def _convert_object(spec: FieldSpec, raw: Any, start: dict) -> tuple[Any, dict]:
    raw = raw if isinstance(raw, dict) else {}
    siblings = _sibling_values(raw)
    out: dict = {}
    cleaned: dict = {}
    for c in spec.children:
        value, cleaned[c.key] = _convert(c, raw.get(c.key, _empty_raw(c)), start.get(c.key))
        if value is not _EMPTY and condition_holds(c.show_when, siblings):
            out[c.key] = value
    return (out or _EMPTY), cleaned


def _convert(spec: FieldSpec, raw: Any, start: Any) -> tuple[Any, Any]:
    kind = spec.kind
    if kind == "object":
        return _convert_object(spec, raw, start if isinstance(start, dict) else {})
    if kind == "array":
        rows, kept = [], []
        for row in raw if isinstance(raw, list) else []:
            value, cleaned = _convert(spec.item, row, None)
            if value is not _EMPTY:
                rows.append(value)
                kept.append(cleaned)
        return (rows or _EMPTY), kept
    if kind == "boolean":
        if raw is True:
            return True, True
        return (False if spec.required or isinstance(start, bool) else _EMPTY), False
    if kind == "checkboxes":
        picked = [_choice(spec, v) for v in raw if v] if isinstance(raw, list) else []
        return (picked or _EMPTY), list(raw) if isinstance(raw, list) else []
    text = raw if isinstance(raw, str) else ""
    value = text.replace("\r\n", "\n").strip()
    if not value:
        return _EMPTY, text
    if kind in ("select", "radio"):
        return _choice(spec, value), text
    if kind == "integer":
        return _integer(value), text
    if kind == "number":
        return _number(value), text
    return value, text


def _choice(spec: FieldSpec, value: str) -> Any:
    """The choice whose form value is ``value``; an unknown value is kept for the engine to refuse."""
    return next((v for v, _label in spec.choices or [] if _form_value(v) == value), value)


def _integer(text: str) -> Any:
    if _INTEGER.fullmatch(text):
        return int(text)
    number = _number(text)
    return int(number) if isinstance(number, float) and number.is_integer() else text


def _number(text: str) -> Any:
    if not _NUMBER.fullmatch(text):
        return text
    number = float(text)
    if not math.isfinite(number):
        return text
    return int(number) if _INTEGER.fullmatch(text) else number


# -- what the page shows -------------------------------------------------------------------------


def _slug(value: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", value.lower()).strip("-") or "x"


@dataclass
class Option:
    value: str
    label: str
    id: str
    checked: bool


@dataclass
class Node:
    """A field as a page shows it: its bound input (or value), label, errors and state."""

    spec: FieldSpec
    name: str
    label: str
    scope: str
    input: Field | None = None
    children: list[Node] = field(default_factory=list)
    errors: list[Problem] = field(default_factory=list)
    required: bool = False
    read_only: bool = False
    is_row: bool = False
    raw: Any = None
    autofocus: bool = False

    @property
    def kind(self) -> str:
        return "row" if self.is_row else self.spec.kind

    @property
    def help(self) -> str:
        return self.spec.help

    @property
    def help_id(self) -> str:
        return f"{self.name}-help"

    @property
    def error_id(self) -> str:
        return f"{self.name}-error"

    @property
    def target(self) -> str:
        """The id a link to this field jumps to."""
        if self.spec.kind in ("radio", "checkboxes") and not self.read_only and self.options:
            return self.options[0].id
        return self.name

    @property
    def describedby(self) -> str:
        ids = [self.help_id] if self.help or self.spec.show_text or self.spec.required_text else []
        return " ".join(ids + ([self.error_id] if self.errors else []))

    def attrs(self) -> dict:
        """HTML attributes of the input besides name, id and value."""
        out: dict[str, Any] = {}
        if self.describedby:
            out["aria-describedby"] = self.describedby
        if self.errors:
            out["aria-invalid"] = "true"
        if self.required:
            out["aria-required"] = "true"
        if self.autofocus:
            out["autofocus"] = True
        max_length = self.spec.schema.get("maxLength")
        if self.spec.kind in ("text", "textarea", "email") and isinstance(max_length, int):
            out["maxlength"] = max_length
        if self.spec.kind == "textarea":
            out["rows"] = 6 if (max_length or 0) > 1000 else 4
        return out

    @property
    def options(self) -> list[Option]:
        """Radio buttons or checkboxes: one per choice (and "Not set" for an optional radio group)."""
        if self.spec.kind not in ("radio", "checkboxes"):
            return []
        picked = self.raw if isinstance(self.raw, list) else [self.raw]
        out = []
        if self.spec.kind == "radio" and not self.required:
            out.append(Option("", "Not set", f"{self.name}--unset", self.raw in ("", None)))
        for value, label in self.spec.choices or []:
            text = _form_value(value)
            out.append(Option(text, label, f"{self.name}-{_slug(text)}", text in picked))
        unlisted = _unlisted(self.spec, self.raw)
        if unlisted:
            out.append(Option(unlisted, f"{unlisted} (not one of the choices)", f"{self.name}--unlisted", True))
        return out

    @property
    def display(self) -> str:
        """The value in words, for a field shown read-only."""
        return display_value(self.spec, self.raw)

    @property
    def show_when_json(self) -> str:
        if not self.spec.show_when:
            return ""
        return json.dumps([[c.as_json() for c in conj] for conj in self.spec.show_when])

    @property
    def filled(self) -> bool:
        if self.children:
            return any(c.filled for c in self.children)
        return self.raw not in ("", None, False, [])

    @property
    def has_errors(self) -> bool:
        return bool(self.errors) or any(c.has_errors for c in self.children)

    def walk(self) -> Iterator[Node]:
        yield self
        for c in self.children:
            yield from c.walk()


def display_value(spec: FieldSpec | None, raw: Any) -> str:
    """A raw or stored value in words: a choice's label, Yes/No, or "—" when empty."""
    if raw is None or raw == "" or raw == []:
        return "—"
    if spec is not None and spec.kind == "boolean":
        return "Yes" if raw is True or raw == "true" else "No"
    if isinstance(raw, bool):
        return "Yes" if raw else "No"
    if spec is not None and spec.choices:
        labels = dict((_form_value(v), label) for v, label in spec.choices)
        if isinstance(raw, list):
            return ", ".join(labels.get(_form_value(v), _form_value(v)) for v in raw)
        return labels.get(_form_value(raw), _form_value(raw))
    if isinstance(raw, dict | list):
        return json.dumps(raw, ensure_ascii=False)
    return str(raw)


@dataclass
class SectionView:
    title: str
    nodes: list[Node]
    #: fields the layout lists as ``hidden``: shown in a collapsed <details>
    more: list[Node] = field(default_factory=list)

    @property
    def open_more(self) -> bool:
        return any(n.has_errors or n.filled for n in self.more)


@dataclass
class FormView:
    """Everything a template needs to show a generated form and its problems."""

    root: Node
    sections: list[SectionView]
    #: every problem, with the id of the field it concerns (None when no field shows it)
    summary: list[tuple[Problem, str | None]]
    #: whether any input can be changed (otherwise there is nothing to save)
    editable: bool
    focus: str | None = None


def build_view(
    bound: BoundForm,
    problems: list[Problem] = (),
    *,
    layout: tuple[Section, ...] = (),
    read_only: tuple[str, ...] | set[str] = (),
    required: tuple[str, ...] | set[str] = (),
    all_read_only: bool = False,
    targets: Mapping[str, str] | None = None,
    focus: str | None = None,
    default_section: str = "Details",
) -> FormView:
    """Lay the bound form out for a page.

    Args:
        problems: the engine's problems; each is shown on the field its pointer names, and
            all of them in the summary.
        layout: the type's sections; fields it does not place come last.
        read_only: dotted names shown as text, ``*`` for all (a state's ``read_only``).
        required: dotted names marked required besides the schema's (a state's ``required``).
        all_read_only: show every field as text (the user may not edit).
        targets: ids for problems whose path is not a pointer (``subject``, ``assignee``).
        focus: the id of the input to focus (after adding a row).
    """
    read_only, required = set(read_only), set(required)
    locked_all = all_read_only or "*" in read_only

    def make(slot: _Slot, raw: Any, scope: str, locked: bool, is_row: bool = False, label: str = "") -> Node:
        spec = slot.spec
        locked = locked or spec.dotted in read_only
        conditional_required = bool(spec.required_when) and set(spec.required_when) == set(spec.show_when)
        node = Node(
            spec,
            slot.name,
            label or spec.label,
            scope,
            input=bound.field(slot.name) if spec.is_leaf else None,
            required=spec.required or spec.dotted in required or conditional_required,
            read_only=locked,
            is_row=is_row,
            raw=raw,
            autofocus=focus == slot.name,
        )
        if spec.kind == "object":
            raw = raw if isinstance(raw, dict) else {}
            node.children = [make(c, raw.get(c.spec.key), slot.name, locked) for c in slot.children]
        elif spec.kind == "array":
            rows = raw if isinstance(raw, list) else []
            node.children = [
                make(r, rows[i] if i < len(rows) else None, slot.name, locked, True, f"{spec.row_label} {i + 1}")
                for i, r in enumerate(slot.children)
            ]
        return node

    root = make(bound.slot, bound.raw, PREFIX, locked_all)
    by_name = {n.name: n for n in root.walk()}
    summary: list[tuple[Problem, str | None]] = []
    for problem in problems:
        name = pointer_name(problem.path)
        node = by_name.get(name) if name else None
        if node is not None and node is not root:
            node.errors.append(problem)
            summary.append((problem, node.target))
            continue
        near = next((n for n in root.walk() if name and n.name.startswith(name + "-")), None) if name else None
        target = near.target if near else (targets or {}).get(problem.path)
        summary.append((problem, target))
    editable = any(not n.read_only for n in root.walk() if n.spec.is_leaf or n.spec.kind == "array")
    return FormView(root, _sections(root, layout, default_section), summary, editable, focus)


def _sections(root: Node, layout: tuple[Section, ...], default_title: str) -> list[SectionView]:
    by_dotted: dict[str, Node] = {}

    def index(node: Node) -> None:
        for c in node.children:
            by_dotted[c.spec.dotted] = c
            if c.spec.kind == "object":
                index(c)

    index(root)
    placed: set[str] = set()
    sections = []
    for section in layout:
        names = [*section.fields, *(h for h in section.hidden if h not in section.fields)]
        nodes = [by_dotted[n] for n in names if n in by_dotted and n not in section.hidden and n not in placed]
        more = [by_dotted[n] for n in names if n in by_dotted and n in section.hidden and n not in placed]
        placed.update(n.spec.dotted for n in nodes + more)
        if nodes or more:
            sections.append(SectionView(section.name, nodes, more))

    def unplaced(node: Node) -> Iterator[Node]:
        for c in node.children:
            if c.spec.dotted in placed:
                continue
            if c.spec.kind == "object" and any(p.startswith(c.spec.dotted + ".") for p in placed):
                yield from unplaced(c)
            else:
                yield c

    rest = list(unplaced(root))
    if rest:
        sections.append(SectionView("Other fields" if sections else default_title, rest))
    return sections


def field_label(spec: FieldSpec, path: str) -> str:
    """A history path in words: ``/reviews/1/date`` -> "Reviews › row 2 › Review date"."""
    if not path.startswith("/"):
        return humanize_label(path)
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    words = []
    node: FieldSpec | None = spec
    for part in parts:
        if node is not None and node.kind == "array" and part.isdigit():
            words.append(f"row {int(part) + 1}")
            node = node.item
            continue
        node = node.child(part) if node is not None and node.kind == "object" else None
        words.append(node.label if node is not None else humanize_label(part))
    return " › ".join(words)


def spec_at(spec: FieldSpec, path: str) -> FieldSpec | None:
    """The field a JSON pointer (with row numbers) points at, or None."""
    if not path.startswith("/"):
        return None
    node: FieldSpec | None = spec
    for part in path[1:].split("/"):
        if node is not None and node.kind == "array" and part.isdigit():
            node = node.item
            continue
        node = node.child(part) if node is not None and node.kind == "object" else None
    return node


# -- plugins: widgets and lookups -----------------------------------------------------------------


def field_input(node: Node) -> Markup:
    """The input of an editable leaf field: a plugin's widget when the schema names one with
    ``x-widget`` (falling back to the usual input when it does not exist or fails), followed by
    a "Look up" button when the schema has ``x-lookup`` (shown by forms.js; see
    :func:`lookup_button`)."""
    from engine.plugins import WidgetContext
    from webui import runtime

    attrs = node.attrs()
    html = None
    widget = node.spec.schema.get("x-widget")
    if isinstance(widget, str) and widget not in ("textarea", "select", "radio"):
        value = node.input._value() if node.input is not None and hasattr(node.input, "_value") else ""
        ctx = WidgetContext(
            name=node.name,
            id=node.name,
            value="" if value is None else str(value),
            label=node.label,
            schema=node.spec.schema,
            required=node.required,
            choices=tuple((_form_value(v), label) for v, label in node.spec.choices or ()),
            attrs={k: ("" if v is True else str(v)) for k, v in attrs.items()},
        )
        html = runtime().plugins.render_widget(widget, ctx)
    out = Markup(html) if html is not None else Markup(node.input(**attrs))
    return out + lookup_button(node)


def lookup_button(node: Node) -> Markup:
    """For ``x-lookup``: a hidden button forms.js reveals. It calls ``/lookups/<name>`` with the
    ``inputs`` (query parameter -> field of the same object; default ``{"q": <this field>}``)
    and offers the results, each filling the fields its ``values`` name in the same object
    (a nested object's fields through a nested mapping). With ``"auto": true`` the lookup also
    runs when the field's value changes. Nothing is drawn when no enabled plugin gives the
    lookup (it is not set up here): the field is a plain input."""
    from flask import url_for

    from webui import runtime

    spec = node.spec.schema.get("x-lookup")
    if not spec:
        return Markup("")
    config = spec if isinstance(spec, dict) else {"name": spec}
    name = str(config.get("name", ""))
    if name not in runtime().plugins.lookups():
        return Markup("")
    inputs = config.get("inputs") or {"q": node.spec.key}
    label = config.get("label") or "Look up"
    return Markup(
        '<button type="button" class="secondary lookup" hidden id="{id}-lookup-button" data-lookup-url="{url}"'
        ' data-lookup-name="{name}" data-lookup-scope="{scope}" data-lookup-inputs="{inputs}"{auto}'
        ' aria-controls="{id}-lookup">{label}<span class="visually-hidden"> for {field}</span></button>'
        '<div class="lookup-results" id="{id}-lookup" aria-live="polite"></div>'
    ).format(
        id=node.name,
        url=url_for("plugins.lookup", name=name),
        name=name,
        scope=node.scope,
        inputs=json.dumps(inputs),
        auto=Markup(" data-lookup-auto") if config.get("auto") is True else "",
        label=label,
        field=node.label,
    )


#: the form field forms.js adds for each lookup whose service was down while the form was filled
LOOKUP_UNAVAILABLE = "lookup_unavailable"


def unavailable_lookup_notes(formdata: Mapping) -> list[str]:
    """Notes to show after a save: one per lookup the form says was unavailable while it was
    filled in ("Postcode lookup is unavailable just now; the item was saved without it.").
    Only names of lookups enabled here count, so the page never repeats arbitrary text."""
    from webui import runtime

    sent = formdata.getlist(LOOKUP_UNAVAILABLE) if hasattr(formdata, "getlist") else []
    known = runtime().plugins.lookups()
    notes = []
    for name in sorted({n for n in sent if n in known}):
        words = name.replace("_", " ")
        words = words.upper() if len(words) <= 3 else words.title()
        notes.append(f"{words} lookup is unavailable just now; the item was saved without it.")
    return notes
