"""Hostile definitions and input, each refused with a clear error: Jinja sandbox escapes and
bombs, huge or deeply nested definitions and YAML alias bombs, ``$ref`` loops and references
outside the document, catastrophic ``pattern``s (refused at load, and run with a time limit
anyway), the type editor and definitions kept in the database, XML with entities, formulas
in exported CSV, and deeply nested JSON on the API. Oversized uploads (413) are tested in
test_documents_web / test_documents_api / test_import_web / test_api."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml
from jinja2.exceptions import SecurityError

from engine import limits, sandbox
from engine.definitions import load_registry, store
from engine.definitions.documents import dump_json
from engine.definitions.store import Texts
from engine.errors import ValidationFailed
from engine.ilr.xml_export import validate_file
from engine.permissions import Actor
from engine.services.definitions import DefinitionRejected, DefinitionService
from engine.services.exports import safe_cell
from engine.services.import_files import Table, problem_rows_csv
from engine.validation import make_validator, schema_problems
from tests.conftest import TEST_DEFINITIONS

TYPE = "tracker_types/concern/type.yaml"
SCHEMA = "tracker_types/concern/schema.json"


@pytest.fixture
def defs(tmp_path) -> Path:
    target = tmp_path / "defs"
    shutil.copytree(TEST_DEFINITIONS, target)
    return target


def problems_after(defs: Path, path: str, change) -> list:
    file = defs / path
    if path.endswith(".json"):
        data = json.loads(file.read_text())
        change(data)
        file.write_text(json.dumps(data, indent=2))
    else:
        data = yaml.safe_load(file.read_text())
        change(data)
        file.write_text(yaml.safe_dump(data, sort_keys=False))
    registry = load_registry([defs])
    assert "concern" not in registry.types  # the broken type is skipped, the others load
    assert "learner" in registry.types
    return registry.problems


def one(problems, file_part: str, pointer: str):
    found = [p for p in problems if file_part in p.file and p.pointer == pointer]
    assert found, "\n".join(map(str, problems))
    return found[0]


# -- the rules sandbox -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expression",
    [
        "data.__class__.__mro__",
        "data['__class__']",
        "(data.x).__globals__",
        "cycler.__init__.__globals__.os",
        "lipsum.__globals__",
    ],
)
def test_hidden_attributes_are_refused_when_the_definition_is_read(defs, expression):
    problems = problems_after(defs, TYPE, lambda d: d["rules"][0].update(when=expression))
    problem = one(problems, "type.yaml", "/rules/0/when")
    assert "is a hidden attribute" in problem.message and problem.line is not None


def test_a_title_template_reaching_for_globals_is_refused(defs):
    problems = problems_after(defs, TYPE, lambda d: d.update(title="{{ self.__init__.__globals__ }}"))
    assert "is a hidden attribute" in one(problems, "type.yaml", "/title").message


@pytest.mark.parametrize(
    ("expression", "words"),
    [
        ("'x' * 1000000000 == ''", "would build something longer than 100,000"),
        ("[1] * 100000000 == []", "would build something longer"),
        ("range(100000000)|list|length > 0", "range() may give at most 10,000"),
        ("'%999999999s'|format(1) == ''", "a format may pad to at most 1000"),
        ("'{:>999999999}'.format(1) == ''", "a format may pad to at most 1000"),
        ("'%099999999d' % 1 == ''", "a format may pad to at most 1000"),
        ("'x'|center(999999999) == ''", "center may pad to at most 1000"),
        ("'x'|indent(999999999) == ''", "indent may pad to at most 1000"),
        ("2 ** 100000 > 1", "'**' would make a number larger than 2**4096"),
    ],
)
def test_bombs_built_of_constants_are_refused_when_the_definition_is_read(defs, expression, words):
    problems = problems_after(defs, TYPE, lambda d: d["rules"][0].update(when=expression))
    problem = one(problems, "type.yaml", "/rules/0/when")
    assert "goes past the sandbox's limits" in problem.message and words in problem.message


def test_loops_in_loops_and_huge_output_stop_at_run_time():
    nested = "{% for a in range(5000) %}{% for b in range(5000) %}x{% endfor %}{% endfor %}"
    with pytest.raises(SecurityError, match="100,000 in one evaluation"):
        sandbox.render(nested, sandbox.context_for({}))
    # data decides how long this gets: the output limit stops it
    long = "{% for row in data.rows %}{{ row * 1000 }}{% endfor %}"
    with pytest.raises(SecurityError, match="more than 100,000 characters"):
        sandbox.render(long, sandbox.context_for({"rows": ["abcdefghij"] * 50}))
    assert sandbox.render("{{ data.name }}", sandbox.context_for({"name": "Ann"})) == "Ann"


def test_evaluate_refuses_a_sequence_built_from_data():
    with pytest.raises(SecurityError):
        sandbox.evaluate("'x' * data.n == ''", sandbox.context_for({"n": 10**9}))


# -- huge and deep definitions ------------------------------------------------------------------------------


def test_a_definition_file_too_large_is_refused(defs):
    path = defs / SCHEMA
    schema = json.loads(path.read_text())
    schema["description"] = "x" * (limits.MAX_DEFINITION_CHARS + 1)
    path.write_text(json.dumps(schema))
    problems = load_registry([defs]).problems
    problem = next(p for p in problems if "schema.json" in p.file)
    assert "is too large" in problem.message and "characters long" in problem.message
    assert "Split the definition up" in problem.advice


def test_a_deeply_nested_schema_is_refused(defs):
    def deep(schema):
        node = schema["properties"]
        for i in range(limits.MAX_DEFINITION_DEPTH):
            node[f"n{i}"] = {"type": "object", "properties": {}}
            node = node[f"n{i}"]["properties"]

    problems = problems_after(defs, SCHEMA, deep)
    assert any("nests more than 40 levels deep" in p.message for p in problems)


def test_json_nested_past_the_stack_is_refused_not_a_crash(defs):
    (defs / SCHEMA).write_text("[" * 100_000 + "]" * 100_000)
    problems = load_registry([defs]).problems
    assert any("schema.json" in p.file and "too large" in p.message for p in problems)


def test_a_yaml_alias_bomb_is_refused_before_it_is_expanded(defs):
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i, name in enumerate("bcdefghi"):
        previous = "abcdefghi"[i]
        bomb.append(f"{name}: &{name} [{', '.join(['*' + previous] * 10)}]")
    (defs / TYPE).write_text("\n".join(bomb) + "\n")
    problems = load_registry([defs]).problems
    problem = next(p for p in problems if "type.yaml" in p.file)
    assert "holds more than 100,000 values" in problem.message and "aliases count" in problem.message


# -- $ref -------------------------------------------------------------------------------------------


def test_references_outside_the_document_are_refused_and_never_fetched(defs):
    def remote(schema):
        schema["properties"]["outcome"] = {"$ref": "https://example.org/evil.json"}
        schema["properties"]["hours"] = {"$ref": "file:///etc/passwd"}

    problems = problems_after(defs, SCHEMA, remote)
    for pointer in ("/properties/outcome/$ref", "/properties/hours/$ref"):
        problem = one(problems, "schema.json", pointer)
        assert "points outside this schema" in problem.message and "$defs" in problem.advice


def test_reference_loops_and_dangling_references_are_refused(defs):
    def loop(schema):
        schema["$defs"] = {
            "a": {"$ref": "#/$defs/b"},
            "b": {"allOf": [{"$ref": "#/$defs/a"}]},
            "tree": {"type": "object", "properties": {"child": {"$ref": "#/$defs/tree"}}},  # fine: goes into a field
        }
        schema["properties"]["outcome"] = {"$ref": "#/$defs/a"}
        schema["properties"]["hours"] = {"$ref": "#/$defs/nothing"}
        schema["properties"]["plan"] = {"$ref": "#/$defs/tree"}

    problems = problems_after(defs, SCHEMA, loop)
    assert "part of a loop" in one(problems, "schema.json", "/$defs/a/$ref").message
    assert "part of a loop" in one(problems, "schema.json", "/$defs/b/allOf/0/$ref").message
    assert "names no schema" in one(problems, "schema.json", "/properties/hours/$ref").message
    assert not [p for p in problems if "/tree" in p.pointer or "/plan" in p.pointer]


# -- patterns -------------------------------------------------------------------------------------------


CATASTROPHIC = ["^(a+)+$", "^([A-Z0-9]+ ?)+$", "(x+x+)+y", "^(.*a){20}$", "^(ab|a.)*$", "^(\\w+\\s?)*$", "^(a|aa)+$"]


@pytest.mark.parametrize("pattern", CATASTROPHIC)
def test_catastrophic_patterns_are_refused_at_load(defs, pattern):
    problems = problems_after(defs, SCHEMA, lambda s: s["properties"]["reference"].update(pattern=pattern))
    problem = one(problems, "schema.json", "/properties/reference/pattern")
    assert "exponential time" in problem.message and "character class" in problem.advice


@pytest.mark.parametrize(
    "pattern",
    [
        "^SC-[0-9]{4}$",
        "^[a-z][a-z0-9_]*(\\.[a-z][a-z0-9_]*)*$",
        "^(?:[a-z]+-)*[a-z]+$",
        "^([A-Z]{1,2}[0-9][0-9A-Z]? [0-9][ABD-HJLNP-UWXYZ]{2}|ZZ99 9ZZ)$",
        "^\\+?[0-9 ]{10,18}$",
        "^(\\d+\\.){3}\\d+$",
    ],
)
def test_ordinary_patterns_pass(pattern):
    assert limits.pattern_problem(pattern) is None


def test_a_pattern_that_is_not_a_regular_expression_or_too_long_is_refused():
    assert "is not a regular expression" in limits.pattern_problem("[a-")[0]
    assert "more than 1000" in limits.pattern_problem("a" * 1001)[0]


def test_every_pattern_runs_with_a_time_limit():
    # a schema that never went through the loader: the check still ends, with a problem
    validator = make_validator({"type": "object", "properties": {"ref": {"type": "string", "pattern": "^(a|aa)+$"}}})
    [problem] = schema_problems(validator, {"ref": "a" * 40 + "!"})
    assert problem.path == "/ref" and "took too long to check against its pattern" in problem.message
    assert "Shorten the value" in problem.advice
    ok = make_validator({"type": "object", "properties": {"ref": {"type": "string", "pattern": "^SC-[0-9]{4}$"}}})
    assert schema_problems(ok, {"ref": "SC-0001"}) == []
    assert "not in the expected format" in schema_problems(ok, {"ref": "nope"})[0].message


# -- the type editor and definitions kept in the database -------------------------------------------------


@pytest.fixture
def db_defs(session, registry) -> DefinitionService:
    engine = session.get_bind()
    return DefinitionService(
        session, Actor.system(), registry, after_publish=lambda: store.merge(registry, store.published(engine))
    )


def test_a_database_definition_with_a_catastrophic_pattern_or_remote_ref_is_refused(db_defs):
    db_defs.create("bike_loan", "Bike loan")
    texts = db_defs.texts_of("bike_loan")
    schema = json.loads(texts.schema_json)
    schema["properties"]["frame"] = {"type": "string", "title": "Frame", "pattern": "^([a-z]+)*$"}
    schema["properties"]["owner"] = {"$ref": "https://example.org/owner.json"}
    db_defs.save_draft("bike_loan", Texts(**{**texts.__dict__, "schema_json": dump_json(schema)}))
    with pytest.raises(DefinitionRejected) as refused:
        db_defs.publish("bike_loan")
    messages = {p.pointer: p for p in refused.value.definition_problems}
    assert "exponential time" in messages["/properties/frame/pattern"].message
    assert messages["/properties/frame/pattern"].line is not None
    assert "points outside this schema" in messages["/properties/owner/$ref"].message


def test_a_database_definition_too_large_is_refused(db_defs):
    db_defs.create("bike_loan", "Bike loan")
    texts = db_defs.texts_of("bike_loan")
    huge = texts.type_yaml + "\ndescription: " + "x" * (limits.MAX_DEFINITION_CHARS + 1) + "\n"
    with pytest.raises(DefinitionRejected) as refused:
        db_defs.save_draft("bike_loan", Texts(**{**texts.__dict__, "type_yaml": huge}))
    assert any("is larger than 512 KB" in p.message for p in refused.value.definition_problems)


def test_the_field_builder_refuses_a_catastrophic_pattern():
    from engine.definitions import builder

    schema = {"type": "object", "properties": {"frame": {"type": "string", "title": "Frame"}}}
    draft = builder.Draft(schema=schema, manifest={}, workflow=None, roles=None)
    with pytest.raises(ValidationFailed) as refused:
        builder.update_field(draft, "frame", builder.FieldChange(pattern="^([a-z]+)*$"))
    [problem] = refused.value.problems
    assert problem.path == "pattern" and "exponential time" in problem.message


# -- XML, CSV, JSON -------------------------------------------------------------------------------------


def test_ilr_files_with_entities_are_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP SECRET")
    name = "ILR-10012345-2526-20260315-093000-01.xml"
    xxe = tmp_path / name
    xxe.write_text(
        f'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY x SYSTEM "file://{secret}">]>'
        '<Message xmlns="ESFA/ILR/2025-26">&x;</Message>'
    )
    problems = validate_file(xxe)
    assert problems == ["the file declares a DTD or entities, which an ILR file never has: it was not read"]
    laughs = tmp_path / name.replace("-01.", "-02.")
    laughs.write_text(
        '<?xml version="1.0"?><!DOCTYPE m [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        '<Message xmlns="ESFA/ILR/2025-26">&b;</Message>'
    )
    assert "declares a DTD or entities" in validate_file(laughs)[0]


def test_spreadsheet_formulas_are_quoted_in_every_csv_we_write():
    for text in ('=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\t=1", "\r=1"):
        assert safe_cell(text) == "'" + text
    assert safe_cell("plain") == "plain"
    table = Table(filename="staff.csv", headers=["name", "note"], rows=[(2, ["=cmd|'/c calc'!A1", "@x"])])
    text = "".join(problem_rows_csv(table, {2: ["=bad reason"]}))
    assert "'=cmd|" in text and "'@x" in text and "'=bad reason" in text
    assert "\n=cmd" not in text and ",=cmd" not in text


def test_deeply_nested_json_on_the_api_is_a_400_not_a_crash(tmp_path, db_url):
    from tests.webhelpers import create_users, make_app

    app = make_app(tmp_path, db_url)
    create_users(app, ann=["tracker_creator"])
    rt = app.extensions["tracker"]
    with rt.session() as session:
        _, token = rt.users(session).create_token("ann")
    body = '{"type": "concern", "data": ' + "[" * 50_000 + "]" * 50_000 + "}"
    response = app.test_client().post(
        "/api/v1/items", data=body, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    )
    assert response.status_code == 400 and "nested too deeply" in response.json["message"]
    too_big = app.test_client().post(
        "/api/v1/items",
        data='{"x": "' + "y" * (2 * 1024 * 1024) + '"}',
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    assert too_big.status_code == 413 and "too large" in too_big.json["message"]
    rt.engine.dispose()


def test_a_document_too_large_for_the_type_editor_is_refused_with_a_message(tmp_path, db_url):
    from tests.webhelpers import create_users, csrf, make_app, sign_in

    app = make_app(tmp_path, db_url)
    create_users(app, root=["admin"])
    rt = app.extensions["tracker"]
    with rt.session() as session:
        rt.definitions(session, Actor.system()).create("bike_loan", "Bike loan")
    client = app.test_client()
    sign_in(client, "root")
    token = csrf(client, "/admin/types/bike_loan/documents")
    huge = {"csrf_token": token, "schema_json": "x" * 600_000}
    refused = client.post("/admin/types/bike_loan/documents", data=huge)
    assert refused.status_code == 422 and "is larger than 512 KB" in refused.get_data(as_text=True)
    # as multipart, the form parser stops at its own limit first: the page says so
    response = client.post("/admin/types/bike_loan/documents", data=huge, content_type="multipart/form-data")
    assert response.status_code == 413
    text = response.get_data(as_text=True)
    assert "larger than Tracker accepts" in text and "Traceback" not in text
    app.extensions["tracker"].engine.dispose()
