"""Contract rules: a provider's own rules per contract, switched on per ILR item by its contract
field, loaded from tracker_types/ilr/contracts/ of any definitions folder and checked at load."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
import yaml

from engine.definitions import load_registry
from engine.errors import ValidationFailed
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER, TEST_DEFINITIONS
from tests.ilr_helpers import TODAY, check, put, record

LEVY = "levy_2526"
P = "learning_deliveries.0"


def provider_folder(tmp_path: Path, name: str = "acme_asf", text: str | None = None) -> Path:
    """A definitions folder holding only one contract file for the built-in ILR type."""
    folder = tmp_path / "provider"
    contracts = folder / "tracker_types" / "ilr" / "contracts"
    contracts.mkdir(parents=True, exist_ok=True)
    (contracts / f"{name}.yaml").write_text(
        text
        or yaml.safe_dump(
            {
                "key": name,
                "name": "Adult Skills Fund - Solent (devolved)",
                "rules": [
                    {
                        "key": "solent_delivery_area",
                        "for_each": "learning_deliveries",
                        "when": "row.del_loc_postcode and row.del_loc_postcode[:2] not in ['SO', 'PO', 'BH']",
                        "message": "Solent contract: learning must take place in the Solent area",
                        "advice": "Check the delivery location postcode (SO, PO or BH)",
                        "path": "/learning_deliveries/*/del_loc_postcode",
                    }
                ],
            },
            sort_keys=False,
        )
    )
    return folder


# -- rules -----------------------------------------------------------------------------------------


def test_the_example_contract_ships_and_is_offered_as_a_choice():
    registry = load_registry()
    assert registry.problems == []
    contract = registry.contracts["ilr"][LEVY]
    assert contract.name.startswith("Apprenticeships with levy-paying employers")
    assert all(rule.advice for rule in contract.rules)
    choices = registry.type("ilr").schema["properties"]["contract"]["oneOf"]
    assert choices == [{"const": LEVY, "title": contract.name}]


def test_contract_rules_apply_only_to_items_of_that_contract():
    registry = load_registry()
    without = record(put(f"{P}.con_ref_number", "A1B2"))
    assert [p for p in check(registry, without) if p.rule.startswith("levy_")] == []
    with_contract = record(put("contract", LEVY))
    found = {(p.rule, p.path) for p in check(registry, with_contract)}
    assert ("levy_agreement_id", "/learning_deliveries/0/con_ref_number") in found
    assert not [p for p in check(registry, record(put("contract", LEVY), put(f"{P}.con_ref_number", "A1B2C3")))]
    wrong = check(registry, record(put("contract", LEVY), put(f"{P}.con_ref_number", "A1B2")))
    assert {(p.rule, p.path) for p in wrong} == {("levy_agreement_id_format", "/learning_deliveries/0/con_ref_number")}


def test_contract_rules_run_per_row_of_rows_and_can_warn():
    registry = load_registry()
    data = record(put("contract", LEVY), put(f"{P}.con_ref_number", "A1B2C3"), put(f"{P}.delivery_fams.0.code", "2"))
    [problem] = check(registry, data)
    assert (problem.rule, problem.path) == ("levy_contract_type", "/learning_deliveries/0/delivery_fams/0/code")
    ending = record(
        put("contract", LEVY), put(f"{P}.con_ref_number", "A1B2C3"), put(f"{P}.learn_plan_end_date", "2026-05-01")
    )
    [warning] = check(registry, ending)
    assert (warning.rule, warning.severity, warning.path) == (
        "levy_epa_booked",
        "warning",
        "/learning_deliveries/0/epa_org_id",
    )
    assert (
        check(
            registry,
            record(
                put("contract", LEVY),
                put(f"{P}.con_ref_number", "A1B2C3"),
                put(f"{P}.learn_plan_end_date", "2026-06-15"),
            ),
        )
        == []
    )


def test_a_provider_adds_a_contract_without_code(tmp_path):
    registry = load_registry([provider_folder(tmp_path)])
    assert registry.problems == []
    assert set(registry.contracts["ilr"]) == {LEVY, "acme_asf"}
    assert [c["const"] for c in registry.type("ilr").schema["properties"]["contract"]["oneOf"]] == [LEVY, "acme_asf"]
    outside = record(put("contract", "acme_asf"), put(f"{P}.del_loc_postcode", "M14 5TQ"))
    assert [(p.rule, p.path) for p in check(registry, outside)] == [
        ("solent_delivery_area", "/learning_deliveries/0/del_loc_postcode")
    ]
    assert check(registry, record(put("contract", "acme_asf"))) == []  # SO41 3AA is in the area


def test_a_contract_value_without_rules_file_is_named(tmp_path):
    import shutil

    defs = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, defs)
    manifest = defs / "tracker_types" / "concern" / "type.yaml"
    manifest.write_text(manifest.read_text() + "contract_field: reference\n")
    registry = load_registry([defs])
    assert registry.problems == []
    data = {"category": "online", "reported_on": "2026-01-05", "reference": "SC-0001", "contact": "a@b.example"}
    [problem] = check(registry, data, type_key="concern")
    assert (problem.rule, problem.path) == ("contract", "/reference")
    assert problem.message == "Reference 'SC-0001' has no rules file for Safeguarding concern"
    assert problem.advice == "Leave it empty: no contract rules are set up for this type."


# -- through the item service, on both databases -----------------------------------------------------


@pytest.fixture
def ilr_service(session, tmp_path):
    registry = load_registry([TEST_DEFINITIONS, provider_folder(tmp_path)])
    assert registry.problems == []
    return ItemService(session, Actor.system(), registry, today=lambda: date.fromisoformat(TODAY))


def _learner(service) -> int:
    return service.create("learner", dict(LEARNER)).id


def test_contract_rules_refuse_a_save_through_the_service(ilr_service):
    subject = _learner(ilr_service)
    data = record(put("contract", "acme_asf"), put(f"{P}.del_loc_postcode", "M14 5TQ"))
    with pytest.raises(ValidationFailed) as excinfo:
        ilr_service.create("ilr", data, subject_id=subject)
    assert {(p.rule, p.path) for p in excinfo.value.problems} == {
        ("solent_delivery_area", "/learning_deliveries/0/del_loc_postcode")
    }
    item = ilr_service.create("ilr", record(put("contract", "acme_asf")), subject_id=subject)
    assert item.data["contract"] == "acme_asf" and item.problem_count == 0
    # switching the contract on later applies its rules to the next change
    with pytest.raises(ValidationFailed):
        ilr_service.update(item.id, changes={"contract": LEVY})
    changed = record(
        put("contract", LEVY), put(f"{P}.con_ref_number", "A1B2C3"), put(f"{P}.learn_plan_end_date", "2026-05-01")
    )
    saved = ilr_service.update(item.id, changed)
    assert [w["rule"] for w in saved.problems] == ["levy_epa_booked"]


def test_an_unknown_contract_is_refused_by_the_schema(ilr_service):
    subject = _learner(ilr_service)
    with pytest.raises(ValidationFailed) as excinfo:
        ilr_service.create("ilr", record(put("contract", "nope")), subject_id=subject)
    [problem] = [p for p in excinfo.value.problems if p.path == "/contract"]
    assert "must be one of" in problem.message and "acme_asf" in problem.message


# -- mistakes in contract files are reported at load, with file and line -----------------------------


BROKEN = {
    "expression does not compile": (
        'key: acme\nname: Acme\nrules:\n  - key: a\n    when: "row.x =="\n    message: m\n    advice: a\n',
        5,
        "/rules/0/when",
        "expression does not compile",
    ),
    "for_each names no array": (
        "key: acme\nname: Acme\nrules:\n  - key: a\n    for_each: uln\n"
        '    when: "row.x"\n    message: m\n    advice: a\n',
        5,
        "/rules/0/for_each",
        "'uln' is not an array property",
    ),
    "path names no field": (
        'key: acme\nname: Acme\nrules:\n  - key: a\n    when: "data.x"\n'
        "    message: m\n    advice: a\n    path: /colour\n",
        8,
        "/rules/0/path",
        "path 'colour' is not a property",
    ),
    "star without for_each": (
        'key: acme\nname: Acme\nrules:\n  - key: a\n    when: "data.x"\n    message: m\n    advice: a\n'
        "    path: /learning_deliveries/*/learn_aim_ref\n",
        8,
        "/rules/0/path",
        "'*' in a path stands for a row",
    ),
    "key is not the file name": (
        'key: other\nname: Acme\nrules:\n  - key: a\n    when: "data.x"\n    message: m\n    advice: a\n',
        1,
        "/key",
        "does not match the file name",
    ),
    "rule key of the type": (
        'key: acme\nname: Acme\nrules:\n  - key: uln_04\n    when: "data.x"\n    message: m\n    advice: a\n',
        4,
        "/rules/0/key",
        "is a rule of the type itself",
    ),
    "rule without advice": (
        'key: acme\nname: Acme\nrules:\n  - key: a\n    when: "data.x"\n    message: m\n',
        4,
        "/rules/0/advice",
        "is required",
    ),
    "not YAML": ("key: acme\nname: [Acme\nrules: []\n", 3, "", "not valid YAML"),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_contract_file_is_reported_where_it_is(tmp_path, case):
    text, line, pointer, message = BROKEN[case]
    registry = load_registry([provider_folder(tmp_path, "acme", text)])
    [problem] = registry.problems
    assert problem.file.endswith("tracker_types/ilr/contracts/acme.yaml")
    assert (problem.line, problem.pointer) == (line, pointer), problem
    assert message in problem.message and problem.advice
    assert f"acme.yaml:{line}:" in str(problem)
    # the type and the other contracts still load; the broken one is left out
    assert "ilr" in registry.types and set(registry.contracts["ilr"]) == {LEVY}


def test_contracts_need_a_type_with_a_contract_field(tmp_path):
    folder = tmp_path / "defs"
    for type_key in ("learner", "ghost"):
        target = folder / "tracker_types" / type_key / "contracts"
        target.mkdir(parents=True)
        (target / "x.yaml").write_text("key: x\nname: X\nrules:\n  - {key: a, when: 'data.x', message: m, advice: a}\n")
    messages = sorted(p.message for p in load_registry([folder]).problems)
    assert messages == [
        "tracker type 'ghost' (the folder above contracts/) does not exist or did not load",
        "type 'learner' has no contract_field, so no item could switch these rules on",
    ]


def test_a_contract_defined_twice_is_refused(tmp_path):
    first = provider_folder(
        tmp_path / "one", LEVY, (Path(__file__).parents[1] / "tracker_types/ilr/contracts/levy_2526.yaml").read_text()
    )
    [problem] = load_registry([first]).problems
    assert "contract 'levy_2526' of type 'ilr' is already defined in" in problem.message


def test_type_yaml_contract_field_and_for_each_are_checked(tmp_path):
    import shutil

    defs = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, defs)
    manifest = defs / "tracker_types" / "concern" / "type.yaml"
    raw = yaml.safe_load(manifest.read_text())
    raw["contract_field"] = "colour"
    raw["rules"][0]["for_each"] = "category"
    manifest.write_text(yaml.safe_dump(raw, sort_keys=False))
    problems = {p.pointer: p for p in load_registry([defs]).problems}
    assert "'colour' is not a property" in problems["/contract_field"].message
    assert "'category' is not an array property" in problems["/rules/0/for_each"].message
    assert all(p.line for p in problems.values())


def test_tracker_check_lists_a_broken_contract(tmp_path, run):
    folder = provider_folder(tmp_path, "acme", BROKEN["for_each names no array"][0])
    result = run("check", str(folder), ok=False)
    assert result.returncode == 1
    assert (
        "tracker_types/ilr/contracts/acme.yaml:5: /rules/0/for_each: 'uln' is not an array property"
        in result.stdout + result.stderr
    )
