"""The type editor's operations on a draft (engine/definitions/builder.py) and the workflow
diagram (engine/workflow_diagram.py), without a database: a rename reaches every place the
definition names the field, refusals name the form field, and the drawing follows the
workflow."""

from __future__ import annotations

import json
import re

import pytest

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
