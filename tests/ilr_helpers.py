"""A valid ILR learner record (on a fixed day) and small helpers to change one thing in it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from engine import sandbox
from engine.definitions.model import Registry
from engine.errors import Problem
from engine.rules import rule_problems

#: the file preparation date the rules are checked on: in the 2025-26 teaching year, after 1 January
TODAY = "2026-03-16"

PROGRAMME_AIM = {
    "learn_aim_ref": "ZPROG001",
    "aim_type": 1,
    "aim_seq_number": 1,
    "learn_start_date": "2025-09-01",
    "learn_plan_end_date": "2027-03-31",
    "fund_model": 36,
    "otj_act_hours": 120,
    "prog_type": 25,
    "std_code": 298,
    "del_loc_postcode": "SO41 3AA",
    "comp_status": 1,
    "delivery_fams": [{"type": "ACT", "code": "1", "date_from": "2025-09-01"}, {"type": "SOF", "code": "105"}],
    "app_fin_records": [
        {"type": "TNP", "code": 1, "date": "2025-09-01", "amount": 6000},
        {"type": "TNP", "code": 2, "date": "2025-09-01", "amount": 1000},
        {"type": "PMR", "code": 1, "date": "2025-10-15", "amount": 250},
    ],
}
COMPONENT_AIM = {
    "learn_aim_ref": "60347244",
    "aim_type": 3,
    "aim_seq_number": 2,
    "learn_start_date": "2025-09-01",
    "learn_plan_end_date": "2026-06-30",
    "fund_model": 36,
    "prog_type": 25,
    "std_code": 298,
    "del_loc_postcode": "SO41 3AA",
    "comp_status": 2,
    "learn_act_end_date": "2026-01-19",
    "outcome": 1,
    "ach_date": "2026-02-10",
    "delivery_fams": [{"type": "ACT", "code": "1", "date_from": "2025-09-01"}, {"type": "SOF", "code": "105"}],
}
LEARNER_RECORD = {
    "learn_ref_number": "LR0001234",
    "uln": "1000000043",
    "family_name": "Okafor",
    "given_names": "Amelia Grace",
    "date_of_birth": "2004-09-17",
    "ethnicity": 31,
    "sex": "F",
    "llddhealthprob": 1,
    "ni_number": "AB123456C",
    "postcode_prior": "M1 1AE",
    "postcode": "M14 5TQ",
    "email": "amelia.okafor@example.co.uk",
    "tel_no": "07700900123",
    "lldd_and_health_problems": [{"lldd_cat": 12, "primary_lldd": True}],
    "learner_fams": [{"type": "EDF", "code": 2}],
    "learning_deliveries": [PROGRAMME_AIM, COMPONENT_AIM],
}

DELETE = object()
Change = Callable[[dict], None]


def record(*changes: Change) -> dict:
    """A copy of the valid record with ``changes`` applied."""
    data = copy.deepcopy(LEARNER_RECORD)
    for change in changes:
        change(data)
    return data


def _walk(data: Any, dotted: str) -> tuple[Any, Any]:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, int(last) if isinstance(node, list) else last


def put(dotted: str, value: Any) -> Change:
    """Set ``a.0.b`` (list positions as numbers); DELETE removes it."""

    def change(data: dict) -> None:
        node, key = _walk(data, dotted)
        if value is DELETE:
            del node[key]
        else:
            node[key] = copy.deepcopy(value)

    return change


def add(dotted: str, value: Any) -> Change:
    """Append ``value`` to the list at ``a.0.b``."""

    def change(data: dict) -> None:
        node, key = _walk(data, dotted)
        node.setdefault(key, []).append(copy.deepcopy(value))

    return change


def check(registry: Registry, data: dict, today: str = TODAY, type_key: str = "ilr") -> list[Problem]:
    """Every rule problem (errors and warnings) of ``data`` on ``today``, as a save would find them."""
    tracker_type = registry.type(type_key)
    context = {**sandbox.context_for(data), "today": today}
    return rule_problems(registry, tracker_type, data, context)
