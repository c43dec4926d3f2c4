"""Evaluating a type's rules, and its contract's rules, on an item's data.

A rule's ``when`` is a sandboxed expression that is true when the rule FAILS. A rule with
``for_each`` is evaluated once per row of an array (``row`` is the row, ``parent`` the row
it sits in, if any, ``index`` its position), and ``*`` in its path becomes the row's
index, so the problem lands on the field of the row concerned. An item whose contract
field names a contract is also checked against that contract's rules.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from engine import sandbox
from engine.definitions.model import Contract, Registry, Rule, TrackerType
from engine.errors import Problem
from engine.validation import choices, get_path, schema_at

log = logging.getLogger(__name__)


def contract_of(registry: Registry, tracker_type: TrackerType, data: dict) -> Contract | None:
    """The contract named by the item's contract field, or None (no field, no value, unknown)."""
    if not tracker_type.contract_field:
        return None
    key = get_path(data, tracker_type.contract_field)
    return registry.contracts.get(tracker_type.key, {}).get(key) if isinstance(key, str) else None


def rule_problems(registry: Registry, tracker_type: TrackerType, data: dict, context: dict) -> list[Problem]:
    """Every rule of the type (and of the item's contract) that fails on ``data``, as problems
    with their severity; ``context`` is what expressions see (:func:`engine.sandbox.context_for`)."""
    rules = list(tracker_type.rules)
    problems: list[Problem] = []
    if tracker_type.contract_field:
        key = get_path(data, tracker_type.contract_field)
        contract = contract_of(registry, tracker_type, data)
        if contract is not None:
            rules += contract.rules
        elif (
            key not in (None, "") and choices(schema_at(tracker_type.schema, tracker_type.contract_field) or {}) is None
        ):
            # with contracts to choose from, the schema itself refuses any other value
            problems.append(_unknown_contract(registry, tracker_type, key))
    seen: set[tuple[str, str]] = set()
    for rule in rules:
        for path in failing_paths(rule, context):
            if (rule.key, path) not in seen:
                seen.add((rule.key, path))
                problems.append(Problem(path, rule.message, rule.advice, rule.key, rule.severity))
    return problems


def failing_paths(rule: Rule, context: dict) -> Iterator[str]:
    """The JSON pointer of each place the rule fails: its path once, or once per failing row."""
    if not rule.for_each:
        if _fails(rule, context):
            yield rule.path
        return
    for row, parent, indices, pointer in rows_of(context.get("data") or {}, rule.for_each):
        if _fails(rule, {**context, "row": row, "parent": parent, "index": indices[-1]}):
            yield _fill(rule.path, indices) if rule.path else pointer


def rows_of(data: dict, dotted: str) -> Iterator[tuple[dict, dict | None, list[int], str]]:
    """``(row, parent row, indices, pointer)`` for each row of the array ``a.b`` (``b`` an array
    inside each row of the array ``a``, or inside the object ``a``)."""

    def walk(node: Any, parts: list[str], parent: dict | None, indices: list[int], at: str) -> Iterator:
        value = node.get(parts[0]) if isinstance(node, dict) else None
        rest, here = parts[1:], f"{at}/{parts[0]}"
        if isinstance(value, list):
            for i, row in enumerate(value):
                if isinstance(row, dict) and rest:
                    yield from walk(row, rest, row, [*indices, i], f"{here}/{i}")
                elif isinstance(row, dict):
                    yield row, parent, [*indices, i], f"{here}/{i}"
        elif isinstance(value, dict) and rest:
            yield from walk(value, rest, parent, indices, here)

    yield from walk(data, dotted.split("."), None, [], "")


def _fails(rule: Rule, context: dict) -> bool:
    try:
        return sandbox.evaluate(rule.when, context)
    except Exception:  # data the schema already refuses can make a rule uncomputable
        log.debug("rule %s could not be evaluated", rule.key, exc_info=True)
        return False


def _fill(path: str, indices: list[int]) -> str:
    for index in indices:
        path = path.replace("*", str(index), 1)
    return path


def _unknown_contract(registry: Registry, tracker_type: TrackerType, key: Any) -> Problem:
    field = tracker_type.contract_field or ""
    label = (schema_at(tracker_type.schema, field) or {}).get("title") or field
    known = sorted(registry.contracts.get(tracker_type.key, {}))
    return Problem(
        "/" + field.replace(".", "/"),
        f"{label} '{key}' has no rules file for {tracker_type.name}",
        f"Use one of: {', '.join(known)}." if known else "Leave it empty: no contract rules are set up for this type.",
        "contract",
    )
