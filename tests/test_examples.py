"""Every built-in type's examples: the valid one saves, each invalid one is refused where expected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.definitions import load_registry
from engine.errors import ValidationFailed
from tests.conftest import LEARNER, ROOT

EXAMPLES = ROOT / "examples" / "data"
REGISTRY = load_registry()
TYPES = sorted(REGISTRY.types)


def valid_data(type_key: str) -> dict:
    return json.loads((EXAMPLES / type_key / "valid.json").read_text())


def invalid_cases() -> list[tuple[str, Path]]:
    return [(t, p) for t in TYPES for p in sorted((EXAMPLES / t).glob("invalid-*.json"))]


def test_every_type_has_examples():
    for type_key in TYPES:
        assert (EXAMPLES / type_key / "valid.json").exists(), type_key
        assert len(list((EXAMPLES / type_key).glob("invalid-*.json"))) >= 3, type_key


def subject_for(system, type_key: str) -> int | None:
    kind = system.registry.type(type_key).subject
    if kind == "learner":
        return system.create("learner", dict(LEARNER)).id
    if kind == "employer":
        return system.create("employer", {"name": "Acme Ltd", "company_number": "01234567"}).id
    return None


@pytest.mark.parametrize("type_key", TYPES)
def test_valid_example_saves(system, type_key):
    data = valid_data(type_key)
    if type_key == "learner":
        data = {**data, "uln": "2442725095"}  # the learner fixture holds 1000000043
    item = system.create(type_key, data, subject_id=subject_for(system, type_key))
    assert item.data == data
    assert item.title and "#" not in item.title or item.title.endswith(f"#{item.id}")


@pytest.mark.parametrize(("type_key", "path"), invalid_cases(), ids=lambda v: getattr(v, "stem", v))
def test_invalid_example_is_refused_at_the_expected_fields(system, type_key, path):
    case = json.loads(path.read_text())
    with pytest.raises(ValidationFailed) as excinfo:
        system.create(type_key, case["data"], subject_id=subject_for(system, type_key))
    reported = {p.path for p in excinfo.value.problems}
    assert set(case["expect"]) <= reported, f"expected {case['expect']}, got {excinfo.value.problems}"
    for problem in excinfo.value.problems:
        assert problem.message and problem.advice, problem
