"""Loading definitions: each class of mistake gives its own message, file, line and pointer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from engine.definitions import load_registry
from tests.conftest import ROOT, TEST_DEFINITIONS


def test_builtin_definitions_load_without_problems():
    registry = load_registry()
    assert registry.problems == []
    expected = {
        "learner",
        "employer",
        "job",
        "apprenticeship",
        "traineeship",
        "education",
        "self_employment",
        "ilr",
        "compliance",
        "process_automation",
    }
    assert expected <= set(registry.types)
    assert {"admin", "tracker_creator", "automation_creator", "assessor", "manager", "finance"} <= set(registry.roles)
    assert registry.types["process_automation"].create_capability == "automation.create"
    for tracker_type in registry.types.values():
        if tracker_type.kind == "tracker":
            assert tracker_type.templates, f"{tracker_type.key} has no template"
            assert tracker_type.rules, f"{tracker_type.key} has no rules"
            assert all(rule.advice for rule in tracker_type.rules), f"{tracker_type.key} has a rule without advice"


def test_reference_task_lists_are_built_in():
    labels = {tl.label.lower() for t in load_registry().types.values() for tl in t.tasklists}
    for wanted in ("signup paperwork incomplete", "reviews overdue", "h&s review due"):
        assert any(wanted in label for label in labels), wanted
    for days in (10, 30, 60):
        assert any("due to complete" in label and str(days) in label for label in labels), days


@pytest.fixture
def defs(tmp_path) -> Path:
    """A writable copy of the test definitions folder."""
    target = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, target)
    return target


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data, indent=2))


def only_problems(defs: Path):
    registry = load_registry([defs])
    return registry, [p for p in registry.problems]


TYPE = "tracker_types/concern/type.yaml"
SCHEMA = "tracker_types/concern/schema.json"
WORKFLOW = "workflows/safeguarding.yaml"

CASES = {
    "unknown workflow": (
        TYPE,
        lambda d: d.update(workflow="nowhere"),
        "/workflow",
        "workflow 'nowhere' does not exist",
    ),
    "list column not in schema": (
        TYPE,
        lambda d: d.update(list_columns=["category", "colour"]),
        "/list_columns/1",
        "field 'colour' is not a property of schema.json",
    ),
    "identity not in schema": (
        TYPE,
        lambda d: d.update(identity=["uln"]),
        "/identity/0",
        "field 'uln' is not a property",
    ),
    "layout field not in schema": (
        TYPE,
        lambda d: d["layout"][0]["fields"].append("nope"),
        "/layout/0/fields/4",
        "field 'nope' is not a property",
    ),
    "task list field not in schema": (
        TYPE,
        lambda d: d["tasklists"][0]["filter"]["all"][0].update(field="grade"),
        "/tasklists/0/filter/all/0/field",
        "field 'grade' is not a property",
    ),
    "task list bad date": (
        TYPE,
        lambda d: d["tasklists"][0]["filter"]["all"][1].update(value="yesterday"),
        "/tasklists/0/filter/all/1/value",
        "'yesterday' is not a date",
    ),
    "task list unknown role": (
        TYPE,
        lambda d: d["tasklists"][0].update(roles=["wizard"]),
        "/tasklists/0/roles/0",
        "role 'wizard' does not exist",
    ),
    "task list unknown state": (
        TYPE,
        lambda d: d["tasklists"][0]["filter"].update(status=["limbo"]),
        "/tasklists/0/filter/status/0",
        "'limbo' is not a state",
    ),
    "template invalid": (
        TYPE,
        lambda d: d["templates"][0]["data"].update(category="fire"),
        "/templates/0/data/category",
        "template 'online' is not valid: Category must be one of",
    ),
    "rule does not compile": (
        TYPE,
        lambda d: d["rules"][0].update(when="data.severity =="),
        "/rules/0/when",
        "expression does not compile",
    ),
    "title does not compile": (
        TYPE,
        lambda d: d.update(title="{{ data.category "),
        "/title",
        "template does not compile",
    ),
    "bad key": (TYPE, lambda d: d.update(key="Concern!"), "/key", "is not in the expected format"),
    "unknown manifest key": (TYPE, lambda d: d.update(colour="red"), "", "'colour' is not a field here"),
    "missing manifest key": (TYPE, lambda d: d.pop("name"), "/name", "Name is required"),
    "permission unknown role": (
        TYPE,
        lambda d: d.update(permissions={"wizard": ["items.view"]}),
        "/permissions/wizard",
        "role 'wizard' does not exist",
    ),
    "schema not valid": (
        SCHEMA,
        lambda d: d["properties"]["hours"].update(type="integr"),
        "/properties/hours/type",
        "not a valid JSON Schema",
    ),
    "two initial states": (
        WORKFLOW,
        lambda d: d["states"][1].update(initial=True),
        "/states",
        "exactly one state must be initial (found: new, investigating)",
    ),
    "no initial state": (
        WORKFLOW,
        lambda d: d["states"][0].pop("initial"),
        "/states",
        "exactly one state must be initial (found: none)",
    ),
    "transition to unknown state": (
        WORKFLOW,
        lambda d: d["transitions"][0].update(to="limbo"),
        "/transitions/0/to",
        "'limbo' is not a state of this workflow",
    ),
    "transition from unknown state": (
        WORKFLOW,
        lambda d: d["transitions"][1].update({"from": ["nowhere"]}),
        "/transitions/1/from/0",
        "'nowhere' is not a state",
    ),
    "transition unknown role": (
        WORKFLOW,
        lambda d: d["transitions"][0].update(roles=["wizard"]),
        "/transitions/0/roles/0",
        "role 'wizard' does not exist",
    ),
    "condition does not compile": (
        WORKFLOW,
        lambda d: d["transitions"][0].update(condition="data.x = 1"),
        "/transitions/0/condition",
        "expression does not compile",
    ),
    "assign to unknown role": (
        WORKFLOW,
        lambda d: d["transitions"][0]["actions"][1].update(assign="role:wizard"),
        "/transitions/0/actions/1/assign",
        "role 'wizard' does not exist",
    ),
    "create unknown type": (
        WORKFLOW,
        lambda d: d["transitions"][3]["actions"][0]["create"].update(type="ghost"),
        "/transitions/3/actions/0/create/type",
        "tracker type 'ghost' does not exist",
    ),
    "requires field not in schema": (
        WORKFLOW,
        lambda d: d["transitions"][0].update(requires=["grade"]),
        "/workflow",
        "names field 'grade'",
    ),
    "bad category": (
        WORKFLOW,
        lambda d: d["states"][2].update(category="finished"),
        "/states/2/category",
        "must be one of: open, done, cancelled",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_each_mistake_is_reported_where_it_is(defs, case):
    relative, change, pointer, message = CASES[case]
    path = defs / relative
    (edit_json if path.suffix == ".json" else edit_yaml)(path, change)
    registry, problems = only_problems(defs)
    assert problems, "no problem was reported"
    matching = [p for p in problems if message in p.message]
    assert matching, "\n".join(map(str, problems))
    problem = matching[0]
    reported_in = TYPE if pointer == "/workflow" else relative
    assert problem.file.endswith(reported_in)
    assert problem.pointer == pointer
    assert problem.advice
    if path.suffix == ".yaml":
        assert problem.line is not None
        line_text = (defs / reported_in).read_text().splitlines()[problem.line - 1]
        last = pointer.rsplit("/", 1)[-1] if pointer else ""
        assert not last or last.isdigit() or last in line_text or pointer == "/states" or "required" in message
    # the other definitions still load
    assert "learner" in registry.types and "apprenticeship" in registry.types


def test_broken_type_is_skipped_and_others_load(defs):
    edit_yaml(defs / TYPE, lambda d: d.update(workflow="nowhere"))
    registry = load_registry([defs])
    assert "concern" not in registry.types
    assert "concern_review" in registry.types


def test_syntax_errors_give_the_line(defs):
    (defs / WORKFLOW).write_text("key: safeguarding\nname: [unclosed\nstates: []\n")
    (defs / SCHEMA).write_text('{"type": "object",\n "properties": {,}}')
    problems = {Path(p.file).name: p for p in load_registry([defs]).problems}
    assert problems["safeguarding.yaml"].message.startswith("not valid YAML")
    assert problems["safeguarding.yaml"].line == 3
    assert problems["schema.json"].message.startswith("not valid JSON")
    assert problems["schema.json"].line == 2


def test_missing_files_and_duplicate_keys(defs, tmp_path):
    (defs / SCHEMA).unlink()
    other = tmp_path / "other"
    shutil.copytree(TEST_DEFINITIONS, other)
    problems = load_registry([defs, other]).problems
    messages = [str(p) for p in problems]
    assert any("schema.json: is missing" in m for m in messages)
    assert any("workflow 'safeguarding' is already defined" in m for m in messages)
    assert any("role 'dsl' is defined twice" in m for m in messages)


def test_not_a_folder(tmp_path):
    problems = load_registry([tmp_path / "nope"]).problems
    assert [p.message for p in problems] == ["is not a folder"]


def test_problem_prints_like_a_compiler(defs):
    edit_yaml(defs / WORKFLOW, lambda d: d["transitions"][0].update(to="limbo"))
    problems = load_registry([defs]).problems
    [problem] = [p for p in problems if p.pointer == "/transitions/0/to"]
    first, advice = str(problem).splitlines()
    assert first.endswith(f"{WORKFLOW}:{problem.line}: /transitions/0/to: 'limbo' is not a state of this workflow")
    assert advice.startswith("  -> Use one of: ")


def test_examples_custom_definitions_are_valid():
    registry = load_registry([ROOT / "examples" / "custom_definitions"])
    assert registry.problems == []
    assert "safeguarding_concern" in registry.types


def test_examples_broken_definitions_report_every_mistake():
    folder = ROOT / "examples" / "broken_definitions"
    registry = load_registry([folder])
    broken = [d.name for d in (folder / "tracker_types").iterdir() if d.is_dir()]
    reported = {Path(p.file).parts[-2] for p in registry.problems if "tracker_types" in p.file}
    assert len(registry.problems) >= 10
    loaded_from_folder = [k for k, t in registry.types.items() if "broken_definitions" in t.source]
    assert len(loaded_from_folder) == 1, loaded_from_folder
    assert len(reported) >= len(broken) - 1 - 3  # some mistakes live in workflows/ and roles.yaml


def test_metaschemas_are_valid_json_schemas():
    from jsonschema import Draft202012Validator

    folder = ROOT / "engine" / "definitions" / "metaschemas"
    names = sorted(p.name for p in folder.glob("*.json"))
    assert {"contract.schema.json", "roles.schema.json", "type.schema.json", "workflow.schema.json"} <= set(names)
    for path in folder.glob("*.json"):
        Draft202012Validator.check_schema(json.loads(path.read_text()))
