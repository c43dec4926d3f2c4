"""The type editor's operations on a draft (engine/definitions/builder.py) and the workflow
diagram (engine/workflow_diagram.py), without a database: a rename reaches every place the
definition names the field, assignment rules and migration steps are written as type.yaml
declares them, refusals name the form field, and the drawing follows the workflow."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from engine.definitions import builder
from engine.definitions.builder import Draft, FieldChange
from engine.definitions.documents import drop_top_level, dump_json, dump_yaml, set_top_level
from engine.definitions.model import State, Transition, Workflow
from engine.definitions.store import Texts
from engine.errors import ValidationFailed
from engine.workflow_diagram import columns, render

SCHEMA = {
    "type": "object",
    "properties": {
        "severity": {"enum": ["low", "high"], "title": "Severity"},
        "reported_on": {"type": "string", "format": "date", "title": "Reported on"},
        "address": {"type": "object", "properties": {"town": {"type": "string"}}},
        "reviews": {
            "type": "array",
            "items": {"type": "object", "properties": {"date": {"type": "string", "format": "date"}}},
        },
    },
    "required": ["severity"],
    "allOf": [
        {
            "if": {"properties": {"severity": {"const": "high"}}, "required": ["severity"]},
            "then": {"required": ["reported_on"]},
        }
    ],
}
MANIFEST = {
    "key": "concern",
    "name": "Concern",
    "version": 1,
    "workflow": "concern",
    "title": "{{ data.severity }} concern",
    "list_columns": ["severity", "reported_on"],
    "identity": ["reported_on"],
    "due_date": "reported_on",
    "layout": [{"section": "Details", "fields": ["severity", "reported_on"]}],
    "templates": [{"key": "t", "name": "T", "data": {"severity": "low"}}],
    "rules": [
        {"key": "r", "when": "data.severity == 'high' and not data.reported_on", "message": "m", "path": "/reported_on"}
    ],
    "tasklists": [
        {"key": "l", "label": "L", "filter": {"all": [{"field": "reported_on", "op": "before", "value": "today"}]}}
    ],
    "reminders": [{"field": "reported_on", "before": "7d", "notify": "assignee"}],
}
WORKFLOW = {
    "key": "concern",
    "name": "Concern",
    "states": [
        {"key": "new", "label": "New", "category": "open", "initial": True},
        {"key": "closed", "label": "Closed", "category": "done"},
    ],
    "transitions": [
        {
            "key": "close",
            "from": ["new"],
            "to": "closed",
            "requires": ["reported_on"],
            "condition": "data.reported_on",
            "actions": [{"set": {"field": "reported_on", "value": "today"}}],
        }
    ],
    "state_fields": {"closed": {"read_only": ["reported_on"]}},
}


def draft() -> Draft:
    return Draft.parse(Texts(dump_json(SCHEMA), dump_yaml(MANIFEST), dump_yaml(WORKFLOW)))


def refused(fn, *args, **kwargs) -> tuple[str, str]:
    with pytest.raises(ValidationFailed) as exc:
        fn(*args, **kwargs)
    [problem] = exc.value.problems
    return problem.path, problem.message


def test_fields_are_listed_depth_first_with_what_the_builder_edits():
    infos = {f.path: f for f in builder.fields(draft())}
    assert list(infos) == ["severity", "reported_on", "address", "address.town", "reviews", "reviews.date"]
    assert infos["severity"].kind == "choice" and infos["severity"].required and infos["severity"].section == "Details"
    assert infos["reported_on"].condition == ("severity", "high") and not infos["reported_on"].required
    assert (infos["address"].kind, infos["reviews"].kind, infos["reviews.date"].depth) == ("group", "repeating", 1)


def test_a_rename_reaches_every_reference_and_declares_a_migration():
    d = draft()
    new = builder.rename_field(d, "reported_on", "raised_on", published_schema=SCHEMA)
    assert new == "raised_on"
    assert list(d.schema["properties"]) == ["severity", "raised_on", "address", "reviews"]
    assert d.schema["allOf"][0]["then"] == {"required": ["raised_on"]}
    m = d.manifest
    assert (
        m["list_columns"] == ["severity", "raised_on"]
        and m["identity"] == ["raised_on"]
        and m["due_date"] == "raised_on"
    )
    assert m["layout"][0]["fields"] == ["severity", "raised_on"]
    assert m["rules"][0] == {
        **MANIFEST["rules"][0],
        "when": "data.severity == 'high' and not data.raised_on",
        "path": "/raised_on",
    }
    assert m["tasklists"][0]["filter"]["all"][0]["field"] == "raised_on" and m["reminders"][0]["field"] == "raised_on"
    t = d.workflow["transitions"][0]
    assert t["requires"] == ["raised_on"] and t["condition"] == "data.raised_on"
    assert t["actions"] == [{"set": {"field": "raised_on", "value": "today"}}]
    assert d.workflow["state_fields"]["closed"]["read_only"] == ["raised_on"]
    assert m["migrations"] == [{"rename": {"from": "reported_on", "to": "raised_on"}}]
    # renamed again before publishing: still one step from the published name
    builder.rename_field(d, "raised_on", "opened_on", published_schema=SCHEMA)
    assert d.manifest["migrations"] == [{"rename": {"from": "reported_on", "to": "opened_on"}}]
    # the condition's own field renamed too; a nested field; a field the published version lacks
    builder.rename_field(d, "severity", "level", published_schema=SCHEMA)
    assert d.schema["allOf"][0]["if"] == {"properties": {"level": {"const": "high"}}, "required": ["level"]}
    assert builder.rename_field(d, "address.town", "city", published_schema=SCHEMA) == "address.city"
    builder.add_field(d, "", "fresh", "text")
    builder.rename_field(d, "fresh", "newer", published_schema=SCHEMA)
    assert [s["rename"]["to"] for s in d.manifest["migrations"]] == ["opened_on", "level", "address.city"]
    builder.rename_field(d, "level", "severity", published_schema=SCHEMA)  # back to its published name
    assert [s["rename"]["to"] for s in d.manifest["migrations"]] == ["opened_on", "address.city"]


def test_a_rename_onto_a_taken_name_is_refused():
    d = draft()
    assert refused(builder.rename_field, d, "reported_on", "severity") == (
        "new_name",
        "There is already a field 'severity' beside 'reported_on'",
    )
    assert refused(builder.rename_field, d, "reported_on", "Bad name")[0] == "new_name"
    assert d.schema == draft().schema


def test_kinds_limits_options_and_conditions():
    d = draft()
    builder.add_field(d, "reviews", "outcome", "choice", "Outcome")
    builder.update_field(d, "reviews.outcome", FieldChange(options="met | Met\nnot_met | Not met", required=True))
    items = d.schema["properties"]["reviews"]["items"]
    assert items["properties"]["outcome"]["oneOf"] == [
        {"const": "met", "title": "Met"},
        {"const": "not_met", "title": "Not met"},
    ]
    assert items["required"] == ["outcome"]
    builder.update_field(d, "reviews", FieldChange(minimum="1", maximum="12"))
    assert (d.schema["properties"]["reviews"]["minItems"], d.schema["properties"]["reviews"]["maxItems"]) == (1, 12)
    builder.update_field(d, "reviews", FieldChange(kind="group"))
    assert (
        d.schema["properties"]["reviews"]["type"] == "object"
        and "outcome" in d.schema["properties"]["reviews"]["properties"]
    )
    builder.add_field(d, "", "count", "integer")
    assert refused(builder.update_field, d, "count", FieldChange(minimum="1.5")) == (
        "minimum",
        "'1.5' is not a whole number",
    )
    assert refused(builder.update_field, d, "severity", FieldChange(options="a\na")) == (
        "options",
        "The option 'a' is listed twice",
    )
    assert refused(builder.update_field, d, "address", FieldChange(kind="text"))[1] == "'address' has fields of its own"
    builder.update_field(d, "count", FieldChange(condition_field="severity", condition_value="High"))
    assert (
        refused(builder.update_field, d, "count", FieldChange(condition_field="severity", condition_value="medium"))[0]
        == "condition_value"
    )
    builder.update_field(d, "count", FieldChange(condition_field=""))
    assert all(e["then"]["required"] != ["count"] for e in d.schema["allOf"])


def test_moving_and_removing_fields_keep_layout_and_lists_in_step():
    d = draft()
    builder.move_field(d, "reported_on", "up")
    assert list(d.schema["properties"])[:2] == ["reported_on", "severity"]
    assert d.manifest["layout"][0]["fields"] == ["reported_on", "severity"]
    builder.move_field(d, "reported_on", "up")  # already first: nothing happens
    builder.remove_field(d, "reported_on")
    assert "reported_on" not in d.schema["properties"] and "allOf" not in d.schema
    assert d.manifest["list_columns"] == ["severity"] and "identity" not in d.manifest and "due_date" not in d.manifest
    assert d.manifest["layout"] == [{"section": "Details", "fields": ["severity"]}]


def test_the_draft_is_written_back_only_where_it_changed():
    texts = Texts(dump_json(SCHEMA), "# my comment\n" + dump_yaml(MANIFEST), dump_yaml(WORKFLOW))
    d = Draft.parse(texts)
    builder.add_field(d, "", "notes", "textarea")
    out = d.texts(texts)
    assert (
        out.type_yaml.startswith("# my comment")
        and json.loads(out.schema_json)["properties"]["notes"]["x-widget"] == "textarea"
    )
    with pytest.raises(ValidationFailed) as exc:
        Draft.parse(Texts("{", "key: [", ""))
    assert [p.path for p in exc.value.problems] == ["schema.json", "type.yaml"]


def test_workflow_and_tasklist_and_role_edits():
    d = draft()
    builder.add_state(d, "lost", "Lost", "cancelled")
    builder.add_transition(d, "lose", ["new"], "lost", "Report lost")
    builder.update_transition(
        d, "lose", sources=["*"], target="lost", label="Lost", roles=["dsl"], requires=[], condition="", actions=""
    )
    assert d.workflow["transitions"][-1] == {
        "key": "lose",
        "from": "*",
        "to": "lost",
        "label": "Lost",
        "roles": ["dsl"],
    }
    assert refused(builder.remove_state, d, "lost")[1] == "Transitions lead to or from 'lost': lose"
    builder.update_states(d, [{"key": "lost", "label": "Gone", "category": "cancelled"}], "lost")
    assert [s.get("initial") for s in d.workflow["states"]] == [None, None, True]

    entry = builder.tasklist_from(
        {
            "key": "highs",
            "label": "High",
            "status_category": ["open"],
            "assignee": "me",
            "cond_field": ["severity", "reported_on", ""],
            "cond_op": ["in", "empty", "eq"],
            "cond_value": ["high, 3", "", ""],
        }
    )
    assert entry == {
        "key": "highs",
        "label": "High",
        "filter": {
            "status_category": ["open"],
            "assignee": "me",
            "all": [{"field": "severity", "op": "in", "value": ["high", 3]}, {"field": "reported_on", "op": "empty"}],
        },
    }
    builder.put_tasklist(d, entry, index=None)
    assert refused(builder.put_tasklist, d, dict(entry), index=None)[1] == "There is already a task list 'highs'"

    builder.put_role(d, "bike_officer", "Bike officer", ["items.edit", "items.view"], "own", new=True)
    assert d.roles == {
        "roles": [
            {
                "key": "bike_officer",
                "name": "Bike officer",
                "capabilities": ["items.view", "items.edit"],
                "scope": "own",
            }
        ]
    }
    builder.set_permissions(d, {"manager": ["items.view"], "finance": None})
    assert d.manifest["permissions"] == {"manager": ["items.view"]}
    builder.remove_role(d, "bike_officer")
    assert d.roles is None


def test_document_text_edits_keep_comments():
    text = (
        "# the manifest\nkey: concern   # fixed\nversion: 3\nmigrations:\n  - rename: {from: a, to: b}\nname: Concern\n"
    )
    assert set_top_level(text, "version", 4) == text.replace("version: 3", "version: 4")
    assert set_top_level(text, "key", "other").splitlines()[1] == "key: other  # fixed"
    assert drop_top_level(text, "migrations") == "# the manifest\nkey: concern   # fixed\nversion: 3\nname: Concern\n"
    assert set_top_level("name: x\n", "version", 1) == "name: x\nversion: 1\n"


def test_the_diagram_lays_states_out_by_distance_and_labels_every_transition():
    wf = Workflow(
        "w",
        "W",
        (
            State("new", "New", "open", True),
            State("doing", "Doing", "open"),
            State("done", "Done", "done"),
            State("dropped", "Dropped", "cancelled"),
        ),
        (
            Transition("start", ("new",), "doing", "Start"),
            Transition("finish", ("doing",), "done", "Finish"),
            Transition("back", ("doing",), "new", "Back to new"),
            Transition("drop", ("*",), "dropped", "Drop <it>"),
        ),
    )
    assert columns(wf) == {"new": 0, "doing": 1, "done": 2, "dropped": 2}
    svg = render(wf)
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert len(re.findall(r'class="wf-state"', svg)) == 4
    assert len(re.findall(r'class="wf-edge', svg)) == 4
    assert "any state: Drop &lt;it&gt;" in svg and "<it>" not in svg
    assert '<title id="wf-title">Workflow W</title>' in svg
    assert "Back to new: from doing to new" in svg  # the description for screen readers


# -- assignment rules ------------------------------------------------------------------------------


def with_text_fields() -> Draft:
    d = draft()
    builder.add_field(d, "", "officer", "text", "Officer")
    builder.add_field(d, "reviews", "reviewer", "text", "Reviewer")
    return d


@pytest.mark.parametrize(
    ("rule", "role", "field", "expected"),
    [
        ("round_robin", "dsl", "", {"rule": "round_robin", "role": "dsl"}),
        ("least_loaded", " dsl ", "", {"rule": "least_loaded", "role": "dsl"}),
        ("queue", "caseworker", "", {"rule": "queue", "role": "caseworker"}),
        ("field", "", "officer", {"rule": "field", "field": "officer"}),
        ("field", "", "address.town", {"rule": "field", "field": "address.town"}),
    ],
)
def test_each_assignment_rule_is_written_to_type_yaml(rule, role, field, expected):
    d = with_text_fields()
    builder.set_assignment(d, rule, role, field)
    assert d.manifest["assignment"] == expected
    before = Texts(dump_json(d.schema), dump_yaml({**d.manifest, "assignment": {"rule": "queue", "role": "x"}}))
    assert yaml_of(d.texts(before))["assignment"] == expected


def yaml_of(texts: Texts) -> dict:
    return yaml.safe_load(texts.type_yaml)


def test_no_rule_clears_the_assignment_and_the_rule_is_told_in_words():
    d = with_text_fields()
    builder.set_assignment(d, "queue", "dsl")
    builder.set_assignment(d, "", "", "")
    assert "assignment" not in d.manifest
    builder.set_assignment(d, "round_robin", "dsl")
    builder.clear_assignment(d)
    assert "assignment" not in d.manifest
    roles = {"dsl": "Safeguarding lead"}
    titles = {"officer": "Officer"}
    assert "assigns it by hand" in builder.assignment_text(None, "Concern", roles, titles)
    assert "the role Safeguarding lead (dsl) in turn" in builder.assignment_text(
        {"rule": "round_robin", "role": "dsl"}, "Concern", roles, titles
    )
    assert "with the fewest open Concern items" in builder.assignment_text(
        {"rule": "least_loaded", "role": "dsl"}, "Concern", roles, titles
    )
    assert "user name is in the field Officer (officer)" in builder.assignment_text(
        {"rule": "field", "field": "officer"}, "Concern", roles, titles
    )
    assert "waits unassigned in the queue of the role 'gone'" in builder.assignment_text(
        {"rule": "queue", "role": "gone"}, "Concern", roles, titles
    )


def test_assignable_fields_are_text_fields_outside_rows():
    assert [f.path for f in builder.assignable_fields(with_text_fields())] == ["address.town", "officer"]


@pytest.mark.parametrize(
    ("rule", "role", "field", "path", "message"),
    [
        ("nearest", "dsl", "", "rule", "'nearest' is not an assignment rule"),
        ("round_robin", "", "", "role", "Pick the role whose users take the items"),
        ("queue", "Not A Key", "", "role", "'Not A Key' is not a role key"),
        ("least_loaded", "dsl", "officer", "field", "takes no field"),
        ("field", "dsl", "officer", "role", "'The user named in a field' takes no role"),
        ("field", "", "", "field", "Pick the field that holds the user name"),
        ("field", "", "nowhere", "field", "There is no field 'nowhere'"),
        ("field", "", "reviews.reviewer", "field", "is a field of each row of reviews"),
    ],
)
def test_assignment_refusals_name_the_form_field_and_change_nothing(rule, role, field, path, message):
    d = with_text_fields()
    builder.set_assignment(d, "queue", "dsl")
    where, text = refused(builder.set_assignment, d, rule, role, field)
    assert where == path and message in text
    assert d.manifest["assignment"] == {"rule": "queue", "role": "dsl"}


def test_loader_problems_at_the_edited_pointers_refuse_the_edit():
    from engine.definitions.loader import DefinitionProblem

    problems = [
        DefinitionProblem("type.yaml", 3, "/assignment/role", "role 'x' does not exist", "Use one of: dsl."),
        DefinitionProblem("type.yaml", 9, "/migrations/0/set_default/value", "bad default", ""),
        DefinitionProblem("schema.json", 1, "/assignment", "not ours", ""),
    ]
    targets = {"/assignment": "rule", "/assignment/role": "role"}
    with pytest.raises(ValidationFailed) as exc:
        builder.refuse_problems(problems, targets)
    [(path, message, advice)] = [(p.path, p.message, p.advice) for p in exc.value.problems]
    assert (path, message, advice) == ("role", "Role 'x' does not exist", "Use one of: dsl.")
    builder.refuse_problems(problems, {"/migrations/1": "default_field", "/assignment/field": "field"})


# -- migration steps -------------------------------------------------------------------------------

PUBLISHED = {
    **SCHEMA,
    "properties": {
        **SCHEMA["properties"],
        "severity": {"enum": ["low", "medium", "urgent", 3], "title": "Severity"},
        "colour": {"oneOf": [{"const": "r", "title": "Red"}, {"const": "g", "title": "Green"}]},
    },
}


def published_draft() -> Draft:
    d = draft()
    builder.add_field(d, "", "paint", "choice", "Paint")
    builder.update_field(d, "paint", FieldChange(options="r | Red\nb | Blue"))
    builder.add_field(d, "", "count", "integer")
    builder.add_field(d, "", "lent", "boolean")
    builder.add_field(d, "", "tags", "choices")
    builder.update_field(d, "tags", FieldChange(options="a\nb\nc"))
    d.manifest["migrations"] = [{"rename": {"from": "colour", "to": "paint"}}]
    return d


def test_removed_options_follow_renames_and_leave_out_what_is_still_offered():
    d = published_draft()
    assert builder.published_name(d, "paint") == "colour"
    assert builder.removed_options(d, PUBLISHED) == {
        "severity": [("medium", "medium"), ("urgent", "urgent"), (3, "3")],
        "paint": [("g", "Green")],
    }
    assert builder.removed_options(d, None) == {}


def test_defaults_are_typed_by_the_field_and_replace_an_earlier_one():
    d = published_draft()
    assert builder.set_default_step(d, "count", " 4 ", published_schema=PUBLISHED) == 1
    assert builder.set_default_step(d, "lent", "Yes", published_schema=PUBLISHED) == 2
    assert builder.set_default_step(d, "paint", "blue", published_schema=PUBLISHED) == 3
    assert builder.set_default_step(d, "tags", "a, C", published_schema=PUBLISHED) == 4
    assert builder.set_default_step(d, "address.town", "Leeds", published_schema=PUBLISHED) == 5
    assert builder.set_default_step(d, "count", "7", published_schema=PUBLISHED) == 1
    assert d.manifest["migrations"][1:] == [
        {"set_default": {"field": "count", "value": 7}},
        {"set_default": {"field": "lent", "value": True}},
        {"set_default": {"field": "paint", "value": "b"}},
        {"set_default": {"field": "tags", "value": ["a", "c"]}},
        {"set_default": {"field": "address.town", "value": "Leeds"}},
    ]
    assert [f.path for f in builder.migratable_fields(d)] == [
        "severity",
        "reported_on",
        "address.town",
        "paint",
        "count",
        "lent",
        "tags",
    ]


@pytest.mark.parametrize(
    ("field", "value", "published", "path", "message"),
    [
        ("count", "4", None, "migrations", "No version of this type is published yet"),
        ("", "4", PUBLISHED, "default_field", "Pick the field to fill"),
        ("nowhere", "4", PUBLISHED, "default_field", "There is no field 'nowhere'"),
        ("address", "x", PUBLISHED, "default_field", "'address' is a group of fields"),
        ("reviews.date", "2026-01-01", PUBLISHED, "default_field", "is a field of each row of reviews"),
        ("count", "  ", PUBLISHED, "default_value", "The default is empty"),
        ("count", "4.5", PUBLISHED, "default_value", "'4.5' is not a whole number"),
        ("lent", "maybe", PUBLISHED, "default_value", "'maybe' is not yes or no"),
        ("paint", "purple", PUBLISHED, "default_value", "'purple' is not one of the options"),
    ],
)
def test_default_refusals_change_nothing(field, value, published, path, message):
    d = published_draft()
    where, text = refused(builder.set_default_step, d, field, value, published_schema=published)
    assert where == path and message in text
    assert d.manifest["migrations"] == [{"rename": {"from": "colour", "to": "paint"}}]


def test_old_values_are_mapped_to_options_of_the_draft_and_steps_removed():
    d = published_draft()
    pairs = [("medium", "low"), ("urgent", "HIGH"), ("3", "")]
    assert builder.map_values_step(d, "severity", pairs, published_schema=PUBLISHED) == 1
    assert builder.map_values_step(d, "paint", [("g", "Blue")], published_schema=PUBLISHED) == 2
    assert builder.map_values_step(d, "severity", [("3", "high")], published_schema=PUBLISHED) == 1
    assert d.manifest["migrations"][1:] == [
        {"map_values": {"field": "severity", "map": {3: "high"}}},
        {"map_values": {"field": "paint", "map": {"g": "b"}}},
    ]
    assert builder.remove_step(d, 0) == {"rename": {"from": "colour", "to": "paint"}}
    builder.remove_step(d, 1)
    builder.remove_step(d, 0)
    assert "migrations" not in d.manifest


@pytest.mark.parametrize(
    ("field", "pairs", "published", "path", "message"),
    [
        ("severity", [("medium", "low")], None, "migrations", "No version of this type is published yet"),
        ("count", [("1", "2")], PUBLISHED, "map_field", "'count' is not a one-choice field"),
        ("tags", [("a", "b")], PUBLISHED, "map_field", "'tags' is not a one-choice field"),
        ("nowhere", [("a", "b")], PUBLISHED, "map_field", "There is no field 'nowhere'"),
        ("severity", [("medium", ""), ("urgent", "")], PUBLISHED, "map_field", "No new value was chosen"),
        ("severity", [("medium", "low"), ("low", "high")], PUBLISHED, "map_to-1", "'low' is not an option removed"),
        ("severity", [("medium", "purple")], PUBLISHED, "map_to-0", "'purple' is not one of the options"),
    ],
)
def test_map_refusals_change_nothing(field, pairs, published, path, message):
    d = published_draft()
    where, text = refused(builder.map_values_step, d, field, pairs, published_schema=published)
    assert where == path and message in text
    assert d.manifest["migrations"] == [{"rename": {"from": "colour", "to": "paint"}}]


def test_removing_a_step_that_is_not_there_is_refused():
    d = published_draft()
    assert refused(builder.remove_step, d, 5) == ("step", "There is no such migration step")
    assert refused(builder.remove_step, d, -1) == ("step", "There is no such migration step")
    d.manifest["migrations"] = "rename: x"
    assert refused(builder.remove_step, d, 0)[0] == "migrations"
