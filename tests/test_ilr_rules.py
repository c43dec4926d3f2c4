"""The ILR type's ESFA rules: each fails on a record that breaks it, at the field concerned, and
passes on a near miss; code lists carry their ESFA rule names; the sandbox helpers they use."""

from __future__ import annotations

import pytest

from engine import sandbox
from engine.definitions import load_registry
from engine.sandbox_helpers import age_on, duplicates, ni_number, postcode, teaching_year_end, valid_uln
from engine.validation import make_validator, schema_problems
from tests.ilr_helpers import DELETE, TODAY, add, check, put, record

REGISTRY = load_registry()
ILR = REGISTRY.type("ilr")

P, C = "learning_deliveries.0", "learning_deliveries.1"
ACT2 = [put(f"{P}.delivery_fams.0.code", "2"), put(f"{C}.delivery_fams.0.code", "2")]
BOOTCAMP = [put(f"{C}.fund_model", 37), put(f"{C}.prog_type", 32)]
OLASS = [
    add(f"{P}.delivery_fams", {"type": "LDM", "code": "034"}),
    add(f"{C}.delivery_fams", {"type": "LDM", "code": "034"}),
]
TWO_LLDD = [{"lldd_cat": 12, "primary_lldd": True}, {"lldd_cat": 4}]

#: rule key -> (changes that make it fail, the path it reports, changes of a near miss that passes);
#: a change list may start with a day ("2025-10-01") to check on instead of TODAY
CASES: dict[str, tuple[list, str, list]] = {
    "uln_04": ([put("uln", "1000000042")], "/uln", [put("uln", "2442725095")]),
    "uln_12": ([put("uln", "9999999999")], "/uln", [put("uln", "9999999999"), *ACT2]),
    "uln_02": (
        [put("uln", "9999999999"), put(f"{C}.fund_model", 99)],
        "/uln",
        [put("uln", "9999999999"), put(f"{C}.fund_model", 99), put(f"{C}.delivery_fams.1.code", "1")],
    ),
    "uln_03": (["2025-10-01", put("uln", "9999999999"), *ACT2], "/uln", [put("uln", "9999999999"), *ACT2]),
    "familyname_01": (
        [put("family_name", "   ")],
        "/family_name",
        [put("family_name", "   "), put(f"{P}.fund_model", 10), put(f"{C}.fund_model", 10)],
    ),
    "givennames_01": (
        [put("given_names", DELETE)],
        "/given_names",
        [put("given_names", DELETE), put(f"{P}.fund_model", 10), put(f"{C}.fund_model", 10)],
    ),
    "dateofbirth_01": ([put("date_of_birth", DELETE)], "/date_of_birth", [put("date_of_birth", DELETE), *OLASS]),
    "dateofbirth_04": ([put("date_of_birth", "1910-07-31")], "/date_of_birth", [put("date_of_birth", "1910-08-02")]),
    "dateofbirth_05": (
        [put("date_of_birth", "2021-09-02"), put(f"{C}.fund_model", 10)],
        "/date_of_birth",
        [put("date_of_birth", "2021-09-01"), put(f"{C}.fund_model", 10)],
    ),
    "dateofbirth_06": (
        [put("date_of_birth", "2012-09-01"), put(f"{C}.fund_model", 25)],
        "/date_of_birth",
        [put("date_of_birth", "2012-08-31"), put(f"{C}.fund_model", 25)],
    ),
    "ninumber_01": ([put("ni_number", "AO123456C")], "/ni_number", [put("ni_number", "AB123456")]),
    "ninumber_02": ([put("ni_number", DELETE)], "/ni_number", [put("ni_number", DELETE), *ACT2]),
    "postcode_15": ([put("postcode", "m14 5tq")], "/postcode", [put("postcode", "ZZ99 9ZZ")]),
    "postcodeprior_02": ([put("postcode_prior", "M1 1AC")], "/postcode_prior", [put("postcode_prior", "GU16 7HF")]),
    "postcode_unknown": ([put("postcode", "ZZ99 9ZZ")], "/postcode", [put("postcode_prior", "ZZ99 9ZZ")]),
    "llddhealthprob_04": (
        [put("llddhealthprob", 2)],
        "/lldd_and_health_problems",
        [put("llddhealthprob", 2), put("lldd_and_health_problems", DELETE)],
    ),
    "llddhealthprob_06": (
        [put("lldd_and_health_problems", [])],
        "/lldd_and_health_problems",
        [put("lldd_and_health_problems", []), put("date_of_birth", "2000-09-01")],
    ),
    "r_45": (
        [put("lldd_and_health_problems", [{"lldd_cat": 12, "primary_lldd": True}, {"lldd_cat": 12}])],
        "/lldd_and_health_problems",
        [put("lldd_and_health_problems", TWO_LLDD)],
    ),
    "primarylldd_01": (
        [put("lldd_and_health_problems", [{"lldd_cat": 12}, {"lldd_cat": 4, "primary_lldd": False}])],
        "/lldd_and_health_problems",
        [put("lldd_and_health_problems", TWO_LLDD)],
    ),
    "primarylldd_03": (
        [
            put(
                "lldd_and_health_problems",
                [{"lldd_cat": 12, "primary_lldd": True}, {"lldd_cat": 4, "primary_lldd": True}],
            )
        ],
        "/lldd_and_health_problems",
        [put("lldd_and_health_problems", TWO_LLDD)],
    ),
    "learnfamtype_01": (
        [put("learner_fams.0.code", 3)],
        "/learner_fams/0/code",
        [put("learner_fams.0", {"type": "LSR", "code": 58})],
    ),
    "learnfamtype_10": (
        [put("learner_fams", [{"type": "LSR", "code": c} for c in (36, 55, 56, 57, 58)])],
        "/learner_fams",
        [put("learner_fams", [{"type": "LSR", "code": c} for c in (36, 55, 56, 57)])],
    ),
    "learnfamtype_11": (
        [put("learner_fams", [{"type": "NLM", "code": 17}, {"type": "NLM", "code": 18}, {"type": "NLM", "code": 17}])],
        "/learner_fams",
        [put("learner_fams", [{"type": "NLM", "code": 17}, {"type": "NLM", "code": 18}, {"type": "EDF", "code": 1}])],
    ),
    "learnfamtype_14": (
        [put("learner_fams", [{"type": "SEN", "code": 1}, {"type": "EHC", "code": 1}])],
        "/learner_fams",
        [put("learner_fams", [{"type": "SEN", "code": 1}, {"type": "HNS", "code": 1}])],
    ),
    "r_51": (
        [add("learner_fams", {"type": "EDF", "code": 2})],
        "/learner_fams",
        [add("learner_fams", {"type": "EDF", "code": 1})],
    ),
    "r_07": ([put(f"{C}.aim_seq_number", 1)], "/learning_deliveries", [put(f"{C}.aim_seq_number", 2)]),
    "aimseqnumber_02": (
        [put(f"{C}.aim_seq_number", 3)],
        "/learning_deliveries/1/aim_seq_number",
        [put(f"{P}.aim_seq_number", 2), put(f"{C}.aim_seq_number", 1)],
    ),
    "aimtype_05": (
        [put(f"{C}.aim_type", 5)],
        "/learning_deliveries/1/aim_type",
        [put(f"{C}.aim_type", 5), put(f"{C}.fund_model", 25)],
    ),
    "learnaimref_30": (
        [put(f"{C}.learn_aim_ref", "ZPROG001")],
        "/learning_deliveries/1/learn_aim_ref",
        [put(f"{P}.learn_aim_ref", "zprog001")],
    ),
    "learnstartdate_02": (
        [put(f"{C}.learn_start_date", "2015-07-31")],
        "/learning_deliveries/1/learn_start_date",
        [put(f"{C}.learn_start_date", "2015-08-01")],
    ),
    "learnstartdate_03": (
        [put(f"{C}.learn_start_date", "2026-08-01"), put(f"{C}.fund_model", 99)],
        "/learning_deliveries/1/learn_start_date",
        [put(f"{C}.learn_start_date", "2026-08-01")],
    ),
    "learnstartdate_05": (
        [put("date_of_birth", "2025-09-01")],
        "/learning_deliveries/0/learn_start_date",
        [put("date_of_birth", "2025-08-31")],
    ),
    "learnplanenddate_02": (
        [put(f"{P}.learn_plan_end_date", "2025-08-31")],
        "/learning_deliveries/0/learn_plan_end_date",
        [put(f"{P}.learn_plan_end_date", "2025-09-01")],
    ),
    "learnplanenddate_03": (
        [put(f"{P}.learn_plan_end_date", "2035-09-01")],
        "/learning_deliveries/0/learn_plan_end_date",
        [put(f"{P}.learn_plan_end_date", "2035-08-31")],
    ),
    "learnactenddate_01": (
        [put(f"{C}.learn_act_end_date", "2025-08-31")],
        "/learning_deliveries/1/learn_act_end_date",
        [put(f"{C}.learn_act_end_date", "2025-09-01")],
    ),
    "learnactenddate_04": (
        [put(f"{C}.learn_act_end_date", "2026-03-17")],
        "/learning_deliveries/1/learn_act_end_date",
        [put(f"{C}.learn_act_end_date", TODAY)],
    ),
    "achdate_03": (
        [put(f"{C}.ach_date", "2025-08-31")],
        "/learning_deliveries/1/ach_date",
        [put(f"{C}.ach_date", "2025-08-31"), *BOOTCAMP],
    ),
    "achdate_04": (
        [put(f"{C}.learn_act_end_date", DELETE)],
        "/learning_deliveries/1/learn_act_end_date",
        [put(f"{C}.learn_act_end_date", DELETE), *BOOTCAMP],
    ),
    "achdate_05": (
        [put(f"{C}.ach_date", "2026-01-18")],
        "/learning_deliveries/1/ach_date",
        [put(f"{C}.ach_date", "2026-01-19")],
    ),
    "achdate_07": (
        [put(f"{C}.ach_date", "2026-03-17")],
        "/learning_deliveries/1/ach_date",
        [put(f"{C}.ach_date", TODAY)],
    ),
    "compstatus_02": (
        [put(f"{C}.comp_status", 1)],
        "/learning_deliveries/1/comp_status",
        [put(f"{P}.learn_act_end_date", "2026-03-01")],  # an apprenticeship standard programme aim may
    ),
    "compstatus_03": (
        [put(f"{P}.comp_status", 2)],
        "/learning_deliveries/0/learn_act_end_date",
        [put(f"{P}.comp_status", 2), put(f"{P}.learn_act_end_date", "2026-03-01")],
    ),
    "compstatus_04": (
        [put(f"{C}.outcome", DELETE)],
        "/learning_deliveries/1/outcome",
        [put(f"{C}.outcome", 8), put(f"{C}.ach_date", DELETE)],
    ),
    "compstatus_05": (
        [put(f"{C}.prog_type", 3), put(f"{C}.std_code", DELETE), put(f"{C}.comp_status", 1)],
        "/learning_deliveries/1/outcome",
        [put(f"{C}.comp_status", 1)],
    ),
    "compstatus_06": (
        [put(f"{C}.comp_status", 3)],
        "/learning_deliveries/1/outcome",
        [put(f"{C}.comp_status", 3), put(f"{C}.outcome", 3), put(f"{C}.ach_date", DELETE)],
    ),
    "withdrawreason_03": (
        [put(f"{C}.comp_status", 3), put(f"{C}.outcome", 3), put(f"{C}.ach_date", DELETE)],
        "/learning_deliveries/1/withdraw_reason",
        [
            put(f"{C}.comp_status", 3),
            put(f"{C}.outcome", 3),
            put(f"{C}.ach_date", DELETE),
            put(f"{C}.withdraw_reason", 98),
        ],
    ),
    "outcome_04": (
        [put(f"{C}.prog_type", 3), put(f"{C}.std_code", DELETE), put(f"{C}.outcome", 2)],
        "/learning_deliveries/1/outcome",
        [put(f"{C}.prog_type", 3), put(f"{C}.std_code", DELETE)],
    ),
    "outcome_05": (
        [put(f"{C}.learn_act_end_date", DELETE)],
        "/learning_deliveries/1/learn_act_end_date",
        [put(f"{C}.learn_act_end_date", DELETE), *BOOTCAMP],
    ),
    "outcome_09": (
        [put(f"{C}.outcome", 8), put(f"{C}.comp_status", 3), put(f"{C}.ach_date", DELETE)],
        "/learning_deliveries/1/comp_status",
        [put(f"{C}.outcome", 8), put(f"{C}.ach_date", DELETE)],
    ),
    "outcome_10": (
        [put(f"{C}.outcome", 3), put(f"{C}.comp_status", 1)],
        "/learning_deliveries/1/comp_status",
        [put(f"{C}.outcome", 3), put(f"{C}.comp_status", 3)],
    ),
    "outcome_11": (
        [put(f"{C}.outcome", 2), put(f"{C}.learn_act_end_date", DELETE), put(f"{C}.ach_date", DELETE)],
        "/learning_deliveries/1/learn_act_end_date",
        [put(f"{C}.outcome", 2), put(f"{C}.ach_date", DELETE)],
    ),
    "progtype_01": (
        [put(f"{C}.prog_type", DELETE)],
        "/learning_deliveries/1/prog_type",
        [put(f"{C}.prog_type", DELETE), put(f"{C}.aim_type", 4)],
    ),
    "progtype_02": ([put(f"{C}.aim_type", 4)], "/learning_deliveries/1/prog_type", [put(f"{C}.aim_type", 3)]),
    "progtype_06": ([put(f"{P}.fund_model", 35)], "/learning_deliveries/0/fund_model", [put(f"{P}.fund_model", 81)]),
    "stdcode_01": (
        [put(f"{P}.std_code", DELETE)],
        "/learning_deliveries/0/std_code",
        [put(f"{P}.std_code", DELETE), put(f"{P}.prog_type", 2)],
    ),
    "stdcode_03": (
        [put(f"{P}.prog_type", 2)],
        "/learning_deliveries/0/std_code",
        [put(f"{P}.prog_type", 2), put(f"{P}.std_code", DELETE)],
    ),
    "dellocpostcode_11": (
        [put(f"{P}.del_loc_postcode", "SO418AN")],
        "/learning_deliveries/0/del_loc_postcode",
        [put(f"{P}.del_loc_postcode", "SO418AN"), *OLASS],
    ),
    "otjacthours_01": (
        [put(f"{C}.otj_act_hours", 10)],
        "/learning_deliveries/1/otj_act_hours",
        [put(f"{P}.otj_act_hours", 0)],
    ),
    "otjacthours_02": (
        [
            put(f"{P}.comp_status", 2),
            put(f"{P}.learn_act_end_date", "2026-03-01"),
            put(f"{P}.outcome", 8),
            put(f"{P}.otj_act_hours", DELETE),
        ],
        "/learning_deliveries/0/otj_act_hours",
        [
            put(f"{P}.comp_status", 2),
            put(f"{P}.learn_act_end_date", "2026-03-01"),
            put(f"{P}.outcome", 8),
            put(f"{P}.otj_act_hours", 0),
        ],
    ),
    "learndelfamtype_01": (
        [put(f"{P}.delivery_fams.1", DELETE)],
        "/learning_deliveries/0/delivery_fams",
        [put(f"{P}.delivery_fams.1", DELETE), put(f"{P}.fund_model", 99)],
    ),
    "learndelfamtype_02": (
        [put(f"{C}.fund_model", 35)],
        "/learning_deliveries/1/delivery_fams",
        [put(f"{C}.fund_model", 35), add(f"{C}.delivery_fams", {"type": "FFI", "code": "1"})],
    ),
    "learndelfamtype_22": (
        [add(f"{P}.delivery_fams", {"type": "FFI", "code": "1"})],
        "/learning_deliveries/0/delivery_fams",
        [put(f"{C}.fund_model", 38), add(f"{C}.delivery_fams", {"type": "FFI", "code": "2"})],
    ),
    "learndelfamtype_04": (
        [put(f"{P}.delivery_fams.0.code", "3")],
        "/learning_deliveries/0/delivery_fams/0/code",
        [put(f"{P}.delivery_fams.0.code", "2")],
    ),
    "learndelfamtype_18": (
        [add(f"{P}.delivery_fams", {"type": "SOF", "code": "107"})],
        "/learning_deliveries/0/delivery_fams",
        [add(f"{P}.delivery_fams", {"type": "EEF", "code": "2"})],
    ),
    "learndelfamtype_63": (
        [put(f"{C}.fund_model", 99)],
        "/learning_deliveries/1/delivery_fams",
        [put(f"{C}.fund_model", 99), put(f"{C}.delivery_fams.0", DELETE)],
    ),
    "learndelfamtype_64": (
        [put(f"{P}.delivery_fams.0", DELETE)],
        "/learning_deliveries/0/delivery_fams",
        [put(f"{C}.delivery_fams.0", DELETE)],
    ),
    "r_52": (
        [
            add(f"{P}.delivery_fams", {"type": "LDM", "code": "331"}),
            add(f"{P}.delivery_fams", {"type": "LDM", "code": "331"}),
        ],
        "/learning_deliveries/0/delivery_fams",
        [add(f"{P}.delivery_fams", {"type": "ACT", "code": "1", "date_from": "2026-01-01"})],
    ),
    "learndelfamdatefrom_01": (
        [add(f"{P}.delivery_fams", {"type": "LSF", "code": "1", "date_from": "2025-09-01"})],
        "/learning_deliveries/0/delivery_fams/2/date_from",
        [add(f"{P}.delivery_fams", {"type": "LSF", "code": "1", "date_from": "2025-09-01", "date_to": "2026-03-01"})],
    ),
    "learndelfamdateto_01": (
        [put(f"{P}.delivery_fams.0.date_to", "2025-08-31")],
        "/learning_deliveries/0/delivery_fams/0/date_to",
        [put(f"{P}.delivery_fams.0.date_to", "2025-09-01")],
    ),
    "afintype_01": (
        [put(f"{P}.fund_model", 81), put(f"{P}.app_fin_records.0", DELETE)],
        "/learning_deliveries/0/app_fin_records",
        [put(f"{P}.fund_model", 81)],
    ),
    "afintype_12": (
        [put(f"{P}.app_fin_records", [{"type": "PMR", "code": 1, "date": "2025-10-15", "amount": 250}])],
        "/learning_deliveries/0/app_fin_records",
        [put(f"{P}.app_fin_records", [{"type": "TNP", "code": 2, "date": "2025-09-01", "amount": 900}])],
    ),
    "afintype_04": (
        [add(f"{C}.app_fin_records", {"type": "TNP", "code": 1, "date": "2025-09-01", "amount": 1})],
        "/learning_deliveries/1/app_fin_records",
        [put(f"{C}.app_fin_records", [])],
    ),
    "afintype_02": (
        [put(f"{P}.app_fin_records.2.code", 4)],
        "/learning_deliveries/0/app_fin_records/2/code",
        [put(f"{P}.app_fin_records.2.code", 3)],
    ),
    "afindate_03": (
        [put(f"{P}.app_fin_records.2.date", "2026-03-17")],
        "/learning_deliveries/0/app_fin_records/2/date",
        [put(f"{P}.app_fin_records.2.date", TODAY)],
    ),
    "afindate_04": (
        [put(f"{P}.prog_type", 2), put(f"{P}.learn_act_end_date", "2025-08-31")],
        "/learning_deliveries/0/app_fin_records/0/date",
        [put(f"{P}.prog_type", 2), put(f"{P}.learn_act_end_date", "2025-09-01")],
    ),
    "afindate_09": (
        [put(f"{P}.app_fin_records.0.date", "2024-08-31")],
        "/learning_deliveries/0/app_fin_records/0/date",
        [put(f"{P}.app_fin_records.0.date", "2024-09-01")],
    ),
}


def _run(changes: list) -> list:
    today = changes[0] if changes and isinstance(changes[0], str) else TODAY
    return check(REGISTRY, record(*[c for c in changes if not isinstance(c, str)]), today)


def test_the_valid_record_breaks_no_rule():
    assert check(REGISTRY, record()) == []


def test_every_rule_of_the_type_has_a_case_and_an_esfa_name():
    assert set(CASES) == {rule.key for rule in ILR.rules}
    esfa = [rule for rule in ILR.rules if rule.key != "postcode_unknown"]
    assert len(esfa) >= 30
    for rule in esfa:
        name = rule.message.split(":")[0]
        assert name.replace("_", "").lower() == rule.key.replace("_", ""), (rule.key, name)
        assert rule.advice, rule.key


@pytest.mark.parametrize("key", sorted(CASES))
def test_rule_fails_at_its_field(key):
    fail, path, _near_miss = CASES[key]
    found = [p for p in _run(fail) if p.rule == key]
    assert found, f"{key} did not fire"
    assert path in {p.path for p in found}, found
    rule = next(r for r in ILR.rules if r.key == key)
    assert all(p.message == rule.message and p.advice == rule.advice and p.severity == rule.severity for p in found)


@pytest.mark.parametrize("key", sorted(CASES))
def test_rule_passes_a_near_miss(key):
    _fail, _path, near_miss = CASES[key]
    assert [p for p in _run(near_miss) if p.rule == key] == []


CODE_LISTS = [
    ("ethnicity", 30, 99, "Ethnicity_01"),
    ("sex", "X", "M", "Sex_01"),
    ("llddhealthprob", 3, 9, "LLDDHealthProb_01"),
    ("lldd_and_health_problems.0.lldd_cat", 3, 17, "LLDDCat_01"),
    ("learner_fams.0.type", "ABC", "LSR", "LearnFAMType_01"),
    (f"{P}.aim_type", 2, 4, "AimType_01"),
    (f"{P}.fund_model", 12, 99, "FundModel_01"),
    (f"{P}.prog_type", 26, 2, "ProgType_03"),
    (f"{P}.comp_status", 4, 6, "CompStatus_01"),
    (f"{C}.outcome", 4, 2, "Outcome_01"),
    (f"{C}.withdraw_reason", 1, 98, "WithdrawReason_02"),
    (f"{P}.delivery_fams.1.type", "XYZ", "LDM", "LearnDelFAMType_04"),
    (f"{P}.app_fin_records.0.type", "ABC", "PMR", "AFinType_02"),
]


@pytest.mark.parametrize(("field", "bad", "good", "rule"), CODE_LISTS, ids=[c[3] for c in CODE_LISTS])
def test_code_lists_carry_their_esfa_rule(field, bad, good, rule):
    validator = make_validator(ILR.schema)
    problems = schema_problems(validator, record(put(field, bad)))
    pointer = "/" + field.replace(".", "/")
    found = [p for p in problems if p.path == pointer]
    assert found and found[0].rule == rule and found[0].message.startswith(f"{rule}: "), problems
    assert found[0].advice
    assert [p for p in schema_problems(validator, record(put(field, good))) if p.path == pointer] == []


def test_the_schema_follows_the_xsd_lengths():
    validator = make_validator(ILR.schema)
    too_long = {
        "learn_ref_number": "A" * 13,
        "family_name": "A" * 101,
        "ni_number": "AB1234567C",
        "postcode": "SW1A 1AAX",
        f"{P}.learn_aim_ref": "ZPROG0012",
        f"{P}.con_ref_number": "X" * 21,
        f"{P}.epa_org_id": "EPA00001",
        f"{P}.app_fin_records.0.amount": 1_000_000,
        f"{P}.delivery_fams.1.code": "123456",
    }
    for field, value in too_long.items():
        pointer = "/" + field.replace(".", "/")
        assert pointer in {p.path for p in schema_problems(validator, record(put(field, value)))}, field


# -- the sandbox helpers the rules use ------------------------------------------------------------


@pytest.mark.parametrize("uln", ["1000000043", "1000000027", "2442725095", "7111780026", "1061484016", "9999999999"])
def test_valid_ulns_pass_the_check_digit(uln):
    assert valid_uln(uln)


@pytest.mark.parametrize(
    "uln", ["1000000042", "1234567890", "1000000063", "9876543210", "100000004", "1061484935", "", None, 1000000043.0]
)
def test_invalid_ulns_fail_the_check_digit(uln):
    assert not valid_uln(uln)


def test_ni_number_and_postcode_formats():
    assert ni_number("AB123456C") and ni_number("AB123456") and ni_number("GB123456A")  # as ESFA's regex
    for bad in ("QQ123456A", "DA123456A", "AO123456A", "AB123456E", "AB12345C", "ab123456c", None):
        assert not ni_number(bad), bad
    assert postcode("SW1A 1AA") and postcode("M1 1AE") and postcode("ZZ99 9ZZ")
    for bad in ("GIR 0AA", "SW1A1AA", "sw1a 1aa", "M1 1AC", "M1  1AE", 12):
        assert not postcode(bad), bad


def test_date_helpers():
    assert age_on("2004-09-17", "2025-09-16") == 20 and age_on("2004-09-17", "2025-09-17") == 21
    assert age_on("2004-02-29", "2005-02-28") == 0 and age_on(None, "2025-01-01") is None
    assert teaching_year_end("2026-07-31") == "2026-07-31" and teaching_year_end("2026-08-01") == "2027-07-31"
    assert duplicates([{"a": 1, "b": 2}, {"a": 1, "b": 2}, {"a": 1}], "a", "b") == [(1, 2)]
    context = sandbox.context_for({"d": "2024-02-29", "rows": [{"x": [1]}, {}, {"x": [2, 1]}]})
    assert sandbox.compile_expression("data.d|add_years(1)")(**context) == "2025-02-28"
    assert sandbox.compile_expression("data.d|add_days(1)")(**context) == "2024-03-01"
    assert sandbox.compile_expression("data.rows|map(attribute='x')|flatten|duplicates")(**context) == [1]
    assert sandbox.compile_expression("data.missing|add_years(1)")(**context) is None
