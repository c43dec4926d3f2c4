"""Field-level differences between two versions of an item's data, for the history."""

from __future__ import annotations

from typing import Any

from engine.definitions.sourcemap import pointer

_MISSING = object()


def _leaves(value: Any, parts: tuple = ()) -> dict[str, Any]:
    if isinstance(value, dict) and value:
        out: dict[str, Any] = {}
        for key, child in value.items():
            out.update(_leaves(child, (*parts, key)))
        return out
    if isinstance(value, list) and value and any(isinstance(v, dict | list) for v in value):
        out = {}
        for i, child in enumerate(value):
            out.update(_leaves(child, (*parts, i)))
        return out
    return {pointer(parts): value}


def diff(old: dict, new: dict) -> list[dict[str, Any]]:
    """``[{path, old, new}]`` for every leaf that was added, removed or changed.

    Nested objects and rows of arrays are compared field by field, so the history says
    ``/reviews/1/outcome: None -> passed`` rather than repeating the whole array.
    """
    before = _leaves(old) if old else {}
    after = _leaves(new) if new else {}
    changes = []
    for path in sorted(set(before) | set(after)):
        a, b = before.get(path, _MISSING), after.get(path, _MISSING)
        if a != b:
            changes.append(
                {
                    "path": path,
                    "old": None if a is _MISSING else a,
                    "new": None if b is _MISSING else b,
                }
            )
    return changes
