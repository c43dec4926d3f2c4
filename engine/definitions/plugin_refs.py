"""Cross-check what schemas ask of plugins against what the enabled plugins give.

``x-validator`` changes what data is valid, so a schema naming a check that no enabled
plugin gives is a definition problem: the type is reported (file, line, pointer) and left
out, like any other broken type. ``x-widget`` and ``x-lookup`` are UI hints: one that no
plugin gives falls back to the plain input; only their shape is checked here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from engine.definitions.model import Registry, TrackerType
from engine.definitions.sourcemap import SourceError, pointer, read_json


def check_plugin_references(registry: Registry, validators: set[str] | frozenset[str]) -> None:
    """Add a problem to ``registry.problems`` for each ``x-validator`` name not in
    ``validators`` and each malformed ``x-validator`` / ``x-lookup``, and drop the types
    concerned (every version of them)."""
    from engine.definitions.loader import DefinitionProblem

    known = ", ".join(sorted(validators)) or "none (no enabled plugin gives one)"
    broken: set[str] = set()
    seen: set[tuple[str, int]] = set()
    for tracker_type in [*registry.types.values(), *registry.versions.values()]:
        if (tracker_type.key, tracker_type.version) in seen:
            continue
        seen.add((tracker_type.key, tracker_type.version))
        found = list(_problems(tracker_type.schema, validators, known))
        if not found:
            continue
        broken.add(tracker_type.key)
        file, lines = _source(tracker_type)
        for ptr, message, advice in found:
            registry.problems.append(DefinitionProblem(file, _line(lines, ptr), ptr, message, advice))
    for key in broken:
        registry.types.pop(key, None)
        for version_key in [k for k in registry.versions if k[0] == key]:
            registry.versions.pop(version_key)


def _problems(schema: Any, validators, known: str, path: tuple = ()) -> Iterator[tuple[str, str, str]]:
    if isinstance(schema, list):
        for i, value in enumerate(schema):
            yield from _problems(value, validators, known, (*path, i))
        return
    if not isinstance(schema, dict):
        return
    for key, value in schema.items():
        here = pointer((*path, key))
        if key == "x-validator":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
                yield here, "x-validator must be a check's name or a list of names", 'e.g. "x-validator": "uk_phone"'
                continue
            for name in names:
                if name not in validators:
                    yield (
                        here,
                        f"x-validator '{name}' is not given by any enabled plugin",
                        f"Use one of: {known}; or install/enable the plugin that gives it ('tracker plugins list').",
                    )
        elif key == "x-lookup":
            name = value.get("name") if isinstance(value, dict) else value
            if not isinstance(name, str) or not name:
                yield here, "x-lookup must be a lookup's name or an object with a name", 'e.g. "x-lookup": "postcode"'
            elif isinstance(value, dict) and not isinstance(value.get("inputs", {}), dict):
                yield (
                    here + "/inputs",
                    "x-lookup inputs must map each query parameter to a field of the same object",
                    'e.g. "inputs": {"q": "postcode"}',
                )
        elif key not in ("enum", "const", "default", "examples"):
            yield from _problems(value, validators, known, (*path, key))


def _source(tracker_type: TrackerType) -> tuple[str, Any]:
    path = Path(tracker_type.source) / "schema.json" if tracker_type.source else None
    if path is not None and path.is_file():
        try:
            return str(path), read_json(path)
        except (SourceError, OSError):
            pass
    return (f"{tracker_type.source}/schema.json" if tracker_type.source else tracker_type.key), None


def _line(doc: Any, ptr: str) -> int | None:
    return doc.line_of(ptr) if doc is not None else None
