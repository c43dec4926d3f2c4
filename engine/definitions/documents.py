"""Writing definition documents as text: new types from scratch, copies under a new key,
the version line of a publish, and readable diffs between versions.

Edits that change one top-level scalar (``key:``, ``version:``) are made on the text, so an
admin's comments and layout survive; edits of structure (the field builder) go through
:func:`dump_yaml` and :func:`dump_json`.
"""

from __future__ import annotations

import difflib
import json
import re
from typing import Any

import yaml

from engine.definitions.store import DOCUMENTS, Texts


def dump_yaml(value: Any) -> str:
    """YAML as an admin would write it: keys in their order, block style, no width wrapping."""
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, default_flow_style=False, width=1000)


def dump_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False) + "\n"


def _scalar(value: Any) -> str:
    """A YAML scalar on one line: JSON's double-quoted strings are valid YAML."""
    if isinstance(value, bool | int) or (isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9_]*", value)):
        return json.dumps(value) if isinstance(value, bool) else str(value)
    return json.dumps(value, ensure_ascii=False)


def set_top_level(text: str, key: str, value: Any) -> str:
    """``text`` with the top-level ``key:`` set to ``value`` (added after the first line when
    it is missing); the rest of the text, comments included, is left as it was."""
    line = f"{key}: {_scalar(value)}"
    pattern = re.compile(rf"^{re.escape(key)}:[ \t]*([^\n#]*?)[ \t]*(#.*)?$", re.MULTILINE)
    found = pattern.search(text)
    if found is not None and found.group(1).strip() and not found.group(1).strip().startswith(("|", ">")):
        comment = f"  {found.group(2)}" if found.group(2) else ""
        return text[: found.start()] + line + comment + text[found.end() :]
    if found is not None:  # a block value: rewrite the document
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            data = None
        if isinstance(data, dict):
            data[key] = value
            return dump_yaml(data)
    lines = text.splitlines(keepends=True)
    first = next((i for i, s in enumerate(lines) if s.strip() and not s.lstrip().startswith("#")), None)
    if first is None:
        return line + "\n" + text
    lines.insert(first + 1, line + "\n")
    return "".join(lines)


def drop_top_level(text: str, key: str) -> str:
    """``text`` without the top-level ``key:`` and its block; everything else as it was."""
    lines = text.splitlines(keepends=True)
    out, skipping = [], False
    for line in lines:
        starts_entry = bool(line.strip()) and not line[0].isspace() and not line.startswith("#")
        if starts_entry:
            skipping = re.match(rf"{re.escape(key)}\s*:", line) is not None
        if not skipping:
            out.append(line)
    return "".join(out)


def without_migrations(texts: Texts) -> Texts:
    """A version's ``migrations:`` bring items of the version before it; a new version
    starting from it must declare its own."""
    return Texts(
        texts.schema_json, drop_top_level(texts.type_yaml, "migrations"), texts.workflow_yaml, texts.roles_yaml
    )


def new_type_texts(key: str, name: str, subject: str = "none") -> Texts:
    """A small working type: a title field and a two-state workflow of its own."""
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": name,
        "type": "object",
        "properties": {"title": {"type": "string", "title": "Title", "minLength": 1, "maxLength": 200}},
        "required": ["title"],
    }
    manifest = {
        "key": key,
        "name": name,
        "version": 1,
        "workflow": key,
        "subject": subject,
        "title": "{{ data.title }}",
        "list_columns": ["title"],
    }
    workflow = {
        "key": key,
        "name": name,
        "states": [
            {"key": "open", "label": "Open", "category": "open", "initial": True},
            {"key": "done", "label": "Done", "category": "done"},
        ],
        "transitions": [
            {"key": "finish", "from": ["open"], "to": "done", "label": "Finish"},
            {"key": "reopen", "from": ["done"], "to": "open", "label": "Reopen"},
        ],
    }
    return Texts(dump_json(schema), dump_yaml(manifest), dump_yaml(workflow), "")


def renamed_texts(texts: Texts, key: str, name: str, *, own_workflow: bool) -> Texts:
    """A copy of ``texts`` under a new key and name, at version 1. With ``own_workflow`` the
    workflow document is renamed to the new key too, and type.yaml points at it."""
    manifest = set_top_level(texts.type_yaml, "key", key)
    manifest = set_top_level(manifest, "name", name)
    manifest = set_top_level(manifest, "version", 1)
    workflow = texts.workflow_yaml
    if own_workflow and workflow.strip():
        workflow = set_top_level(set_top_level(workflow, "key", key), "name", name)
        manifest = set_top_level(manifest, "workflow", key)
    return Texts(texts.schema_json, manifest, workflow, texts.roles_yaml)


def diff(old: Texts | None, new: Texts, old_label: str = "before", new_label: str = "after") -> str:
    """A unified diff of every document that changed; an empty string when none did."""
    before = old.by_document() if old else dict.fromkeys(DOCUMENTS, "")
    parts = []
    for name, text in new.by_document().items():
        if before[name] == text:
            continue
        parts.append(
            "".join(
                difflib.unified_diff(
                    _lines(before[name]),
                    _lines(text),
                    fromfile=f"{old_label}/{name}",
                    tofile=f"{new_label}/{name}",
                )
            )
        )
    return "".join(parts)


def _lines(text: str) -> list[str]:
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    return lines
