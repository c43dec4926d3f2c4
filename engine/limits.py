"""Limits that keep hostile definitions and input from exhausting the server.

Definitions are data written by admins (files, the type editor, imported .zip files); data
comes from every door. Each limit here is checked where the thing is read, and refused with
a message saying what the limit is and what to do:

- a definition document's size, nesting depth and number of values (YAML aliases count as
  often as they are used, so an alias bomb is refused before it is expanded);
- ``$ref`` only inside the same document, to something that exists, and never in a loop;
- ``pattern`` regular expressions that could take exponential time (nested unbounded
  repetition) are refused at load, and every pattern runs with a time limit all the same.

The Jinja sandbox's limits (loop sizes, string and list sizes, output) are in :mod:`engine.sandbox`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import Any

import regex

from engine.errors import TrackerError

#: the largest definition document (schema.json, type.yaml, a workflow, roles.yaml), in characters
MAX_DEFINITION_CHARS = 1_000_000
#: how deeply objects and lists may nest in one definition document
MAX_DEFINITION_DEPTH = 40
#: how many values (objects, lists, scalars) one definition document may hold
MAX_DEFINITION_VALUES = 100_000
#: the longest ``pattern`` a schema may give
MAX_PATTERN_CHARS = 1000
#: seconds one ``pattern`` may take on one value before the value is refused
PATTERN_TIMEOUT = 0.25


class DefinitionTooLarge(ValueError):
    """A definition document over one of the limits above; the message says which."""


def whole_number(env: Mapping[str, str], name: str, default: int, *, low: int, high: int) -> int:
    """``env[name]`` as a whole number from ``low`` to ``high``; empty means ``default``.
    Raises TrackerError naming the variable otherwise."""
    text = (env.get(name) or "").strip()
    if not text:
        return default
    if not text.isdigit() or not low <= int(text) <= high:
        raise TrackerError(
            f"{name} is not a whole number from {low} to {high}: '{text}'.",
            f"Set it to a whole number from {low} to {high}, or leave it unset for {default}.",
        )
    return int(text)


# -- definition documents ---------------------------------------------------------------------------


def check_text_size(text: str) -> None:
    """Raise DefinitionTooLarge for a document longer than :data:`MAX_DEFINITION_CHARS`."""
    if len(text) > MAX_DEFINITION_CHARS:
        raise DefinitionTooLarge(
            f"is {len(text):,} characters long, more than the {MAX_DEFINITION_CHARS:,} a definition may have"
        )


class Budget:
    """Counts values and depth while a document is built, so a document that would grow past
    the limits (an alias bomb, thousands of nested lists) stops at the first value too many."""

    def __init__(self) -> None:
        self.values = 0

    def spend(self, depth: int) -> None:
        self.values += 1
        if self.values > MAX_DEFINITION_VALUES:
            raise DefinitionTooLarge(
                f"holds more than {MAX_DEFINITION_VALUES:,} values (YAML aliases count each time they are used)"
            )
        if depth > MAX_DEFINITION_DEPTH:
            raise DefinitionTooLarge(f"nests more than {MAX_DEFINITION_DEPTH} levels deep")


def check_structure(value: Any) -> None:
    """Raise DefinitionTooLarge for a parsed document past the depth or value limits (walked
    without recursion, so a very deep document cannot exhaust the stack here)."""
    budget = Budget()
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        budget.spend(depth)
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


# -- $ref -----------------------------------------------------------------------------------------------


def _walk(node: Any, ptr: str = "") -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        yield ptr, node
        for key, value in node.items():
            yield from _walk(value, f"{ptr}/{str(key).replace('~', '~0').replace('/', '~1')}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{ptr}/{i}")


def schema_nodes(schema: Any) -> Iterator[tuple[str, dict]]:
    """Every object in ``schema`` with its JSON pointer (the schemas and everything else)."""
    return _walk(schema)


def _resolve(schema: Any, ref: str) -> Any:
    """The part of ``schema`` the local reference ``#/a/b`` names; KeyError when there is none."""
    node = schema
    for raw in ref[1:].split("/")[1:] if ref != "#" else []:
        part = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            raise KeyError(ref)
    return node


_IN_PLACE_ONE = ("not", "if", "then", "else")
_IN_PLACE_MANY = ("allOf", "anyOf", "oneOf")


def _in_place(ptr: str, node: dict, refs: dict[str, str]) -> list[str]:
    """The schemas applied to the same value as ``node`` (not to a part of it): its ``$ref``
    target, ``allOf``/``anyOf``/``oneOf`` branches, ``not``, ``if``/``then``/``else``."""
    out = [refs[ptr][1:]] if ptr in refs else []
    out += [f"{ptr}/{k}" for k in _IN_PLACE_ONE if isinstance(node.get(k), dict)]
    for key in _IN_PLACE_MANY:
        if isinstance(node.get(key), list):
            out += [f"{ptr}/{key}/{i}" for i, sub in enumerate(node[key]) if isinstance(sub, dict)]
    if isinstance(node.get("dependentSchemas"), dict):
        out += [f"{ptr}/dependentSchemas/{k}" for k in node["dependentSchemas"]]
    return out


def ref_problems(schema: dict) -> list[tuple[str, str, str]]:
    """``(pointer, message, advice)`` for each ``$ref`` that points outside the document (no
    definition may make the server fetch anything), names nothing, or closes a loop: a chain of
    references (and allOf/anyOf/oneOf/not/if branches) that comes back to where it started
    without going into a field, so checking a value would never end."""
    problems = []
    nodes = dict(_walk(schema))
    refs = {ptr: node["$ref"] for ptr, node in nodes.items() if isinstance(node.get("$ref"), str)}
    good: dict[str, str] = {}
    for ptr, ref in refs.items():
        where = f"{ptr}/$ref"
        if not ref.startswith("#"):
            problems.append(
                (
                    where,
                    f"'{ref}' points outside this schema; only references within it (#/$defs/...) are allowed",
                    "Copy the schema you need under $defs and refer to it as #/$defs/<name>.",
                )
            )
        elif ref != "#" and not ref.startswith("#/"):
            problems.append((where, f"'{ref}' is not a JSON pointer", "Write it as #/$defs/<name>."))
        elif not isinstance(_resolve_or_none(schema, ref), dict):
            problems.append((where, f"'{ref}' names no schema in this document", "Point it at a schema under $defs."))
        else:
            good[ptr] = ref
    for ptr in good:
        # follow what applies to the same value, from the reference's target; back here is a loop
        seen, todo = set(), [good[ptr][1:]]
        while todo and len(seen) < 10_000:
            here = todo.pop()
            if here == ptr:
                problems.append(
                    (
                        f"{ptr}/$ref",
                        f"'{good[ptr]}' is part of a loop of references that never reaches a field",
                        "Make one of the schemas in the loop a real schema instead of a reference.",
                    )
                )
                break
            if here in seen or here not in nodes:
                continue
            seen.add(here)
            todo.extend(_in_place(here, nodes[here], good))
    return problems


def _resolve_or_none(schema: Any, ref: str) -> Any:
    try:
        return _resolve(schema, ref)
    except KeyError:
        return None


# -- regular expressions -----------------------------------------------------------------------------


_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_SAMPLE = "".join(chr(i) for i in range(256))


def _unbounded(high: int) -> bool:
    import re._constants as c  # the parser's names; stable across 3.11-3.13

    return high == c.MAXREPEAT


def _has_unbounded(parsed) -> bool:
    for op, arg in parsed:
        name = str(op)
        if name in _REPEATS and (_unbounded(arg[1]) or _has_unbounded(arg[2])):
            return True
        if name == "SUBPATTERN" and _has_unbounded(arg[-1]):
            return True
        if name == "BRANCH" and any(_has_unbounded(b) for b in arg[1]):
            return True
    return False


def _chars(op, arg) -> set[str] | None:
    """The characters one parsed item matches (of the first 256 code points); None: any or unknown."""
    name = str(op)
    if name == "LITERAL":
        return {chr(arg)}
    if name == "NOT_LITERAL":
        return set(_SAMPLE) - {chr(arg)}
    if name == "IN":
        try:
            return set(re.findall(_class_source(arg), _SAMPLE))
        except re.error:
            return None
    return None


def _separated(body) -> bool:
    """True when every pass through ``body`` must match a character that its unbounded inner
    repetitions cannot (``([a-z]+-)*``: the ``-``), so the engine never has two ways to split."""
    inner: set[str] = set()
    separators = []
    for op, arg in body:
        name = str(op)
        if name in _REPEATS:
            sub = list(arg[2])
            if len(sub) != 1:
                return False
            chars = _chars(*sub[0])
            if chars is None:
                return False
            inner |= chars
            if arg[0] >= 1 and not _unbounded(arg[1]):
                separators.append(chars)
        elif name in ("LITERAL", "NOT_LITERAL", "IN"):
            chars = _chars(op, arg)
            if chars is None:
                return False
            separators.append(chars)
        elif name != "AT":
            return False
    return any(not (sep & inner) for sep in separators)


def _dangerous(parsed) -> bool:
    """True for a repetition of something that itself repeats without bound and is not cut
    into pieces by a separator (``(a+)+``, ``([A-Z0-9]+ ?)+``, ``(.*a){20}``), or for an
    alternation under an unbounded repetition whose branches can start alike (``(ab|a.)*``)."""
    for op, arg in parsed:
        name = str(op)
        if name in _REPEATS:
            _low, high, sub = arg
            body = _ungroup(sub)
            if high > 1 and _has_unbounded(body) and not _separated(body):
                return True
            if _unbounded(high) and (_overlapping_branches(body) or _optional_overlap(body)):
                return True
        if any(_dangerous(child) for child in _children(name, arg)):
            return True
    return False


def _children(name: str, arg) -> list:
    """The parsed sub-patterns directly inside one item."""
    if name in _REPEATS:
        return [arg[2]]
    if name == "SUBPATTERN":
        return [arg[-1]]
    if name == "BRANCH":
        return list(arg[1])
    if name in ("ASSERT", "ASSERT_NOT"):
        return [arg[1]]
    return []


def _ungroup(sub) -> list:
    """``(...)`` around a whole repeated body is the body itself."""
    items = list(sub)
    while len(items) == 1 and str(items[0][0]) == "SUBPATTERN":
        items = list(items[0][1][-1])
    return items


def _optional_overlap(body) -> bool:
    """True when a repeated body has a part of varying length (``a?``, ``x{1,3}``, ``(|a)``)
    that can match what another part matches (``(aa?)+``, which the parser makes of ``(a|aa)+``):
    each pass can then take one character or two, and a long value splits in exponentially many ways."""
    parts = []
    for op, arg in body:
        name = str(op)
        if name in _REPEATS and len(arg[2]) == 1:
            parts.append((arg[0] != arg[1], _chars(*list(arg[2])[0])))
        elif name == "BRANCH":
            lengths = {len(b) for b in arg[1]}
            chars = [_first_chars(b) for b in arg[1] if b]
            merged = None if any(c is None for c in chars) else set().union(*chars)
            parts.append((len(lengths) > 1, merged))
        elif name in ("LITERAL", "NOT_LITERAL", "IN"):
            parts.append((False, _chars(op, arg)))
        elif name != "AT":
            return False
    varying = [c for v, c in parts if v]
    if not varying:
        return False
    if any(c is None for c in varying):
        return True
    every = set().union(*varying)
    fixed = [c for v, c in parts if not v]
    if any(c is not None and not (c & every) for c in fixed):
        return False  # each pass must match a character no varying part can: one way to split
    for i, (varies, chars) in enumerate(parts):
        others = [c for j, (_, c) in enumerate(parts) if j != i]
        if varies and any(c is None or c & chars for c in others):
            return True
    return False


def _overlapping_branches(body) -> bool:
    for op, arg in body:
        if str(op) == "BRANCH":
            firsts = [_first_chars(b) for b in arg[1]]
            for i, a in enumerate(firsts):
                for b in firsts[i + 1 :]:
                    if a is None or b is None or a & b:
                        return True
    return False


def _first_chars(parsed) -> set[str] | None:
    """The characters a parsed branch can start with, None when it could be anything."""
    for op, arg in parsed:
        name = str(op)
        if name == "AT":
            continue
        if name == "SUBPATTERN":
            return _first_chars(arg[-1])
        return _chars(op, arg)
    return set()


def _class_source(items) -> str:
    categories = {
        "CATEGORY_DIGIT": r"\d",
        "CATEGORY_NOT_DIGIT": r"\D",
        "CATEGORY_WORD": r"\w",
        "CATEGORY_NOT_WORD": r"\W",
        "CATEGORY_SPACE": r"\s",
        "CATEGORY_NOT_SPACE": r"\S",
    }
    out = []
    for op, arg in items:
        name = str(op)
        if name == "LITERAL":
            out.append(re.escape(chr(arg)))
        elif name == "RANGE":
            out.append(f"{re.escape(chr(arg[0]))}-{re.escape(chr(arg[1]))}")
        elif name == "CATEGORY":
            out.append(categories.get(str(arg), ""))
        elif name == "NEGATE":
            out.insert(0, "^")
    return "[" + "".join(out) + "]"


def pattern_problem(pattern: Any) -> tuple[str, str] | None:
    """``(message, advice)`` when ``pattern`` may not be used in a schema, else None."""
    if not isinstance(pattern, str):
        return None
    if len(pattern) > MAX_PATTERN_CHARS:
        return (
            f"the pattern is {len(pattern)} characters long, more than {MAX_PATTERN_CHARS}",
            "Use a shorter pattern, or an enum of the values allowed.",
        )
    import re._parser as sre_parse

    try:
        parsed = sre_parse.parse(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        return (f"'{pattern}' is not a regular expression: {exc}", "Fix the pattern; test it on a few values first.")
    if _dangerous(parsed):
        return (
            f"'{pattern}' repeats a part that is itself repeated (or alternatives that overlap), "
            "which can take exponential time on a long value",
            "Repeat a simple character class instead, e.g. ^[A-Z0-9 ]+$ rather than ^([A-Z0-9]+ ?)+$.",
        )
    return None


class PatternTimeout(ValueError):
    """A value took longer than :data:`PATTERN_TIMEOUT` to check against a pattern."""


@lru_cache(maxsize=1024)
def _compiled(pattern: str):
    return regex.compile(pattern, regex.VERSION0)


def pattern_search(pattern: str, text: str) -> bool:
    """``re.search`` semantics with a time limit; raises PatternTimeout past it."""
    try:
        return _compiled(pattern).search(text, timeout=PATTERN_TIMEOUT) is not None
    except TimeoutError:
        raise PatternTimeout(pattern) from None
