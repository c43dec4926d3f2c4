"""Read YAML and JSON while remembering where each value came from.

Problems are reported like a compiler reports them: ``file:line: /json/pointer: what``.
PyYAML's node tree carries line numbers, so the YAML reader builds the Python value and a
``{pointer: line}`` map in one walk.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine import limits


class SourceError(ValueError):
    def __init__(self, message: str, line: int | None = None, advice: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.advice = advice


_TOO_LARGE_ADVICE = "Split the definition up or simplify it; the file was skipped."


def _too_large(exc: Exception) -> SourceError:
    return SourceError(f"is too large: it {exc}", None, _TOO_LARGE_ADVICE)


@dataclass
class Document:
    """A parsed definition file and the line of each JSON pointer in it."""

    path: Path
    value: Any
    lines: dict[str, int] = field(default_factory=dict)
    #: JSON source whose line map is built only when a problem needs a line
    json_text: str | None = None

    def line_of(self, pointer: str) -> int | None:
        """The line of ``pointer``, or of its nearest ancestor that has one."""
        if self.json_text is not None:
            self.lines, self.json_text = _json_lines(self.json_text), None
        while True:
            if pointer in self.lines:
                return self.lines[pointer]
            if not pointer:
                return None
            pointer = pointer.rsplit("/", 1)[0]


def pointer(parts) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def read_yaml(path: Path) -> Document:
    return parse_yaml(path.read_text(encoding="utf-8"), path)


def parse_yaml(text: str, path: Path) -> Document:
    """A YAML document from text (a definition kept in the database), as if read from ``path``.
    Documents past the limits of :mod:`engine.limits` (size, depth, values counting each use
    of an alias) are refused before they are built."""
    try:
        limits.check_text_size(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise SourceError(f"not valid YAML: {exc.problem}", line) from None
    except limits.DefinitionTooLarge as exc:
        raise _too_large(exc) from None
    except RecursionError:
        raise _too_large(limits.DefinitionTooLarge("nests too deeply")) from None
    lines: dict[str, int] = {}
    loader = yaml.SafeLoader("")
    try:
        value = _construct(node, (), lines, loader, budget=limits.Budget()) if node is not None else None
    except limits.DefinitionTooLarge as exc:
        raise _too_large(exc) from None
    return Document(path, value, lines)


def _construct(
    node, parts: tuple, lines: dict[str, int], loader, line: int | None = None, budget: limits.Budget | None = None
) -> Any:
    if budget is not None:
        budget.spend(len(parts))
    # A mapping entry is reported on its key's line: the value may start on the next one.
    lines[pointer(parts)] = line or node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if key in result:
                raise SourceError(f"duplicate key {key!r}", key_node.start_mark.line + 1)
            result[key] = _construct(value_node, (*parts, key), lines, loader, key_node.start_mark.line + 1, budget)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(child, (*parts, i), lines, loader, None, budget) for i, child in enumerate(node.value)]
    value = loader.construct_object(node, deep=True)
    # YAML turns 2025-08-01 into a date; definitions carry ISO strings like JSON does.
    return value.isoformat() if hasattr(value, "isoformat") else value


def read_json(path: Path) -> Document:
    return parse_json(path.read_text(encoding="utf-8"), path)


def parse_json(text: str, path: Path) -> Document:
    """A JSON document from text, as if read from ``path`` (within the limits of :mod:`engine.limits`)."""
    try:
        limits.check_text_size(text)
        value = json.loads(text)
        limits.check_structure(value)
    except json.JSONDecodeError as exc:
        raise SourceError(f"not valid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None
    except limits.DefinitionTooLarge as exc:
        raise _too_large(exc) from None
    except RecursionError:
        raise _too_large(limits.DefinitionTooLarge("nests too deeply")) from None
    return Document(path, value, json_text=text)


def _json_lines(text: str) -> dict[str, int]:
    """``{pointer: line}`` of a JSON text. JSON is (nearly) YAML flow style, so PyYAML's node
    tree gives the lines; a text it cannot read simply has no lines."""
    try:
        # PyYAML takes no tab between tokens; a space in its place keeps every line where it was
        node = yaml.compose(text.replace("\t", " "), Loader=yaml.SafeLoader)
        lines: dict[str, int] = {}
        if node is not None:
            _construct(node, (), lines, yaml.SafeLoader(""))
        return lines
    except (yaml.YAMLError, SourceError):
        return {}
