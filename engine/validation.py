"""JSON Schema validation that speaks plain words.

jsonschema's own messages ("'x' is not of type 'integer'") are for developers. Each
error is turned into a :class:`Problem` naming the field by its title, saying what is
wrong, and giving the schema's ``x-advice`` (or a sensible default) on how to fix it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import date, datetime
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError, best_match

from engine.definitions.sourcemap import pointer
from engine.errors import Problem
from engine.limits import PatternTimeout, pattern_search

format_checker = FormatChecker(formats=())


@format_checker.checks("date", raises=ValueError)
def _is_date(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    # fromisoformat also accepts "20250801"; ILR and the forms use the dashed form only.
    return len(value) == 10 and bool(date.fromisoformat(value))


@format_checker.checks("date-time", raises=ValueError)
def _is_datetime(value: Any) -> bool:
    return not isinstance(value, str) or bool(datetime.fromisoformat(value))


@format_checker.checks("email")
def _is_email(value: Any) -> bool:
    if not isinstance(value, str):
        return True
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain and " " not in value and not domain.startswith(".")


_TYPE_WORDS = {
    "string": "text",
    "integer": "a whole number",
    "number": "a number",
    "boolean": "yes or no",
    "array": "a list",
    "object": "a group of fields",
    "null": "empty",
}

_FORMAT_WORDS = {
    "date": ("must be a date", "Write the date as YYYY-MM-DD, for example 2025-08-01."),
    "date-time": ("must be a date and time", "Write it as YYYY-MM-DDTHH:MM, e.g. 2025-08-01T09:30."),
    "email": ("must be an e-mail address", "Write it like name@example.org."),
}


def make_validator(schema: dict, field_validators: Mapping[str, Callable[[Any, dict], None]] | None = None):
    """A validator for ``schema``. With ``field_validators`` (plugins' ``{name: check}``), a
    property's ``x-validator`` names the checks its value must also pass; each runs only
    once the rest of the property's schema accepts the value."""
    if field_validators is None:
        return _Timed(schema, format_checker=format_checker)
    checks = field_validators  # kept by reference: callers cache validators by its id()

    def x_validator(validator, names, instance, node):
        if instance is None or instance == "":
            return
        rest = {k: v for k, v in node.items() if k != "x-validator"}
        if not validator.evolve(schema=rest).is_valid(instance):
            return  # the schema's own keywords already say what is wrong
        for name in [names] if isinstance(names, str) else names:
            check = checks.get(name)
            if check is None:
                yield ValidationError("could not be checked", cause=_Unchecked(name, "is not available"))
                continue
            try:
                check(instance, node)
            except Exception as exc:  # Invalid says what is wrong; anything else is a crash
                yield ValidationError(str(exc), cause=exc if hasattr(exc, "advice") else _Unchecked(name, "failed"))

    cls = validators.extend(_Timed, {"x-validator": x_validator})
    return cls(schema, format_checker=format_checker)


def _timed_pattern(validator, pattern, instance, _schema):
    """``pattern`` with a time limit (see :mod:`engine.limits`): a value that takes too long
    is refused rather than holding the server."""
    if not validator.is_type(instance, "string"):
        return
    try:
        if not pattern_search(pattern, instance):
            yield ValidationError(f"{instance!r} does not match {pattern!r}")
    except PatternTimeout:
        yield ValidationError(
            "took too long to check", cause=_Unchecked("pattern", "took too long on this value; shorten the value")
        )


#: Draft 2020-12 with ``pattern`` run under a time limit
_Timed = validators.extend(Draft202012Validator, {"pattern": _timed_pattern})


class _Unchecked(Exception):
    """An ``x-validator`` check that is not available (no enabled plugin gives it) or crashed."""

    def __init__(self, name: str, why: str) -> None:
        super().__init__(name)
        self.message = "could not be checked"
        self.advice = f"The '{name}' check {why}: try again later, or ask an administrator to look at Admin > Plugins."


def humanize_label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize() if name else "The item"


def choices(schema: dict) -> list[tuple[Any, str]] | None:
    """The allowed values of an enum-like schema, each with its label, or None."""
    if "enum" in schema:
        return [(v, str(v)) for v in schema["enum"]]
    for keyword in ("oneOf", "anyOf"):
        branches = schema.get(keyword)
        if branches and all(isinstance(b, dict) and "const" in b for b in branches):
            return [(b["const"], b.get("title", str(b["const"]))) for b in branches]
    return None


def _label(error: ValidationError, name: str | None = None, sub: Any = None) -> str:
    path = list(error.absolute_path)
    if name is not None:
        title = sub.get("title") if isinstance(sub, dict) else None
        path.append(name)
    else:
        title = error.schema.get("title") if isinstance(error.schema, dict) else None
    field = next((str(p) for p in reversed(path) if not isinstance(p, int)), "")
    label = title or humanize_label(field)
    rows = [p for p in path if isinstance(p, int)]
    if rows:
        label += " (" + ", ".join(f"row {r + 1}" for r in rows) + ")"
    return label


def _describe_choices(options: list[tuple[Any, str]]) -> str:
    shown = [label if str(v) == label else f"{v} ({label})" for v, label in options[:10]]
    more = f" and {len(options) - 10} more" if len(options) > 10 else ""
    return ", ".join(shown) + more


def to_problem(error: ValidationError, root: dict | None = None) -> Problem:
    """One jsonschema error as a Problem in plain words. ``root`` (the whole schema) names a
    field that a ``then``/``else`` branch requires by the title its object declares.

    A property's ``x-rule`` names the published rule its constraints implement (ESFA's
    ``Ethnicity_01`` for the ethnicity code list): it leads the message and is the problem's rule.
    """
    problem = _plain_problem(error, root)
    rule = error.schema.get("x-rule") if isinstance(error.schema, dict) else None
    if isinstance(rule, str) and rule and error.validator != "required" and not problem.message.startswith(rule):
        return replace(problem, message=f"{rule}: {problem.message}", rule=rule)
    return problem


def _plain_problem(error: ValidationError, root: dict | None = None) -> Problem:
    schema = error.schema if isinstance(error.schema, dict) else {}
    path = pointer(error.absolute_path)
    advice = schema.get("x-advice", "")
    kind, arg = error.validator, error.validator_value
    label = _label(error)

    if kind == "x-validator":
        cause = error.cause
        message = getattr(cause, "message", None) or str(cause or error.message)
        if message[:1].islower():
            message = f"{label} {message}"
        return Problem(path, message, getattr(cause, "advice", "") or advice)
    if kind == "required":
        name = error.message.split("'")[1] if "'" in error.message else ""
        sub = (schema.get("properties") or {}).get(name)
        if not isinstance(sub, dict) and root is not None:
            dotted = ".".join([*(str(p) for p in error.absolute_path if not isinstance(p, int)), name])
            sub = schema_at(root, dotted)
        sub = sub if isinstance(sub, dict) else {}
        label = _label(error, name, sub)
        return Problem(
            f"{path}/{name}",
            f"{label} is required",
            (sub.get("x-advice") if isinstance(sub, dict) else "") or f"Fill in {label}.",
        )
    if kind in ("oneOf", "anyOf") and choices(schema) is None and error.context:
        return to_problem(best_match(error.context), root)
    options = choices(schema)
    if kind in ("enum", "oneOf", "anyOf", "const") and options is not None:
        message = f"{label} must be one of: {_describe_choices(options)}"
        return Problem(path, message, advice or "Pick one of the listed values.")
    if kind == "const":
        return Problem(path, f"{label} must be {arg!r}", advice or f"Set {label} to {arg!r}.")
    if kind == "type":
        wanted = _TYPE_WORDS.get(arg if isinstance(arg, str) else arg[0], str(arg))
        return Problem(path, f"{label} must be {wanted}", advice or f"Enter {wanted} for {label}.")
    if kind == "format":
        words, default_advice = _FORMAT_WORDS.get(arg, (f"must be a valid {arg}", ""))
        return Problem(path, f"{label} {words}", advice or default_advice)
    if kind == "pattern" and isinstance(error.cause, _Unchecked):
        return Problem(
            path,
            f"{label} took too long to check against its pattern",
            "Shorten the value, or ask an administrator to simplify the field's pattern.",
        )
    if kind == "pattern":
        return Problem(
            path,
            f"{label} is not in the expected format",
            advice or f"It must match the pattern {arg}.",
        )
    if kind == "minLength":
        message = f"{label} must not be empty" if arg == 1 else f"{label} needs at least {arg} characters"
        return Problem(path, message, advice or f"Fill in {label}.")
    if kind == "maxLength":
        return Problem(path, f"{label} must be at most {arg} characters long", advice or "Shorten it.")
    if kind in ("minimum", "exclusiveMinimum"):
        word = "at least" if kind == "minimum" else "more than"
        return Problem(path, f"{label} must be {word} {arg}", advice or f"Enter a value {word} {arg}.")
    if kind in ("maximum", "exclusiveMaximum"):
        word = "at most" if kind == "maximum" else "less than"
        return Problem(path, f"{label} must be {word} {arg}", advice or f"Enter a value {word} {arg}.")
    if kind == "minItems":
        return Problem(path, f"{label} needs at least {arg} entries", advice or "Add a row.")
    if kind == "maxItems":
        return Problem(path, f"{label} may have at most {arg} entries", advice or "Remove a row.")
    if kind == "uniqueItems":
        return Problem(path, f"{label} has the same entry twice", advice or "Remove the duplicate.")
    if kind in ("additionalProperties", "unevaluatedProperties"):
        extra = sorted(set(error.instance) - set(schema.get("properties", {})))
        names = ", ".join(f"'{n}'" for n in extra) or "a field"
        return Problem(
            path,
            f"{names} is not a field here",
            "Remove it or check its spelling against the field list.",
        )
    return Problem(path, f"{label} is not valid", advice or error.message)


def schema_problems(validator: Draft202012Validator, data: Any) -> list[Problem]:
    """Every schema problem in ``data``, most relevant first, without duplicates."""
    seen: set[tuple[str, str]] = set()
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: list(map(str, e.path))):
        problem = to_problem(error, validator.schema)
        if (problem.path, problem.message) not in seen:
            seen.add((problem.path, problem.message))
            problems.append(problem)
    return problems


def without_refused(data: dict, problems: list[Problem]) -> dict:
    """``data`` without the single values the schema refused (a copy when there are any), so
    rules do not judge a mistyped value a second time: a date of birth typed as ``31/12/2000``
    is one problem, not also "the start date is before the date of birth"."""
    copied = None
    for problem in problems:
        if not problem.path.startswith("/"):
            continue
        parts = [p.replace("~1", "/").replace("~0", "~") for p in problem.path.split("/")[1:]]
        parent, last = _container(copied or data, parts[:-1]), parts[-1]
        key: Any = int(last) if isinstance(parent, list) and last.isdigit() else last
        try:
            value = parent[key] if isinstance(parent, list | dict) else None
        except (IndexError, KeyError, TypeError):
            continue
        if not isinstance(value, str | int | float | bool):
            continue  # a missing value, or a whole group or row: rules handle those themselves
        if copied is None:
            copied = copy.deepcopy(data)
            parent = _container(copied, parts[:-1])
        parent[key] = None
    return data if copied is None else copied


def _container(data: Any, parts: list[str]) -> Any:
    for part in parts:
        if isinstance(data, list) and part.isdigit() and int(part) < len(data):
            data = data[int(part)]
        elif isinstance(data, dict):
            data = data.get(part)
        else:
            return None
    return data


def without_required(schema: Any) -> Any:
    """A copy of ``schema`` with every ``required`` removed: templates are partial data."""
    if isinstance(schema, dict):
        return {k: without_required(v) for k, v in schema.items() if k != "required"}
    if isinstance(schema, list):
        return [without_required(v) for v in schema]
    return schema


def schema_at(schema: dict, dotted: str, root: dict | None = None) -> dict | None:
    """The sub-schema of the property ``a.b.c``, following local ``$ref`` and if/then/else,
    or None when the schema has no such property."""
    root = root or schema
    node: dict | None = schema
    for part in dotted.split("."):
        node = _property(node, part, root)
        if node is None:
            return None
    return node


def _resolve(node: dict, root: dict) -> dict:
    seen = 0
    while isinstance(node, dict) and "$ref" in node and str(node["$ref"]).startswith("#/") and seen < 20:
        target: Any = root
        for part in node["$ref"][2:].split("/"):
            target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
        node, seen = target, seen + 1
    return node if isinstance(node, dict) else {}


def _property(node: dict | None, name: str, root: dict) -> dict | None:
    if node is None:
        return None
    node = _resolve(node, root)
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        node = _resolve(node["items"], root)
    props = node.get("properties") or {}
    if name in props:
        return _resolve(props[name], root)
    for keyword in ("then", "else"):
        found = _property(node.get(keyword), name, root) if keyword in node else None
        if found is not None:
            return found
    for keyword in ("allOf", "anyOf", "oneOf"):
        for branch in node.get(keyword) or ():
            found = _property(branch, name, root)
            if found is not None:
                return found
    return None


def get_path(data: Any, dotted: str) -> Any:
    """The value of ``a.b.c`` in nested dicts, or None."""
    for part in dotted.split("."):
        if not isinstance(data, dict):
            return None
        data = data.get(part)
    return data


def set_path(data: dict, dotted: str, value: Any) -> None:
    """Set ``a.b.c`` in nested dicts, making the dicts on the way."""
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def is_filled(value: Any) -> bool:
    return value not in (None, "", [], {})
