"""The form generator on its own: JSON Schema -> fields, form input -> JSON, problems -> fields."""

from __future__ import annotations

import json

import pytest
from werkzeug.datastructures import MultiDict

from engine.errors import Problem
from tests.test_examples import valid_data
from webui import forms


@pytest.fixture(scope="module")
def apprenticeship(registry):
    return registry.type("apprenticeship")


@pytest.fixture(scope="module")
def concern(registry):
    return registry.type("concern")


def kinds(spec: forms.FieldSpec) -> dict[str, str]:
    return {c.key: c.kind for c in spec.children}


def bind(spec: forms.FieldSpec, **fields: str) -> forms.BoundForm:
    """Bind to form input given as ``reviews__0__date="..."`` (names without the prefix)."""
    data = MultiDict({f"data-{key.replace('__', '-')}": value for key, value in fields.items()})
    return forms.BoundForm(spec, formdata=data)


# -- the schema as fields ----------------------------------------------------------------------------


def test_apprenticeship_fields_and_the_reviews_array(apprenticeship):
    spec = forms.build_spec(apprenticeship.schema)
    found = kinds(spec)
    assert found["standard_code"] == "integer" and spec.child("standard_code").required
    assert found["standard_reference"] == "text"  # a pattern: a text input, the server checks it
    assert found["standard_title"] == "text"  # maxLength 200: still one line
    assert found["notes"] == "textarea"  # maxLength 4000
    assert found["level"] == "integer" and found["otj_hours_logged"] == "number"
    assert found["start_date"] == "date" and found["signup_paperwork_complete"] == "boolean"
    assert found["funding_type"] == "radio" and found["epa_result"] == "radio"  # 2 and 4 choices
    assert found["withdrawal_reason"] == "select"  # 8 choices
    assert spec.child("funding_type").choices == [("levy", "Levy"), ("co_investment", "Co investment")]
    assert spec.child("employer_name").help == "The employer the apprentice works for."
    reviews = spec.child("reviews")
    assert reviews.kind == "array" and reviews.row_label == "Review"
    row = reviews.item
    assert [(c.key, c.kind, c.required) for c in row.children] == [
        ("date", "date", True),
        ("type", "radio", True),
        ("outcome", "radio", True),
        ("reviewer", "text", False),
        ("notes", "textarea", False),
    ]
    assert row.child("date").dotted == "reviews.date"
    assert spec.find("reviews.outcome").choices[0] == ("on_track", "On track")


def test_excluded_fields_are_left_out(apprenticeship, concern):
    spec = forms.build_spec(apprenticeship.schema, exclude={"total_negotiated_price", "employer_contribution"})
    assert spec.child("total_negotiated_price") is None and spec.child("employer_contribution") is None
    assert spec.child("funding_type") is not None
    nested = forms.build_spec(concern.schema, exclude={"address.postcode"})
    assert [c.key for c in nested.child("address").children] == ["line1"]


def test_concern_fields_ref_one_of_and_condition(concern):
    spec = forms.build_spec(concern.schema)
    address = spec.child("address")
    assert address.kind == "object" and address.label == "Address"  # a $ref to $defs
    assert [c.dotted for c in address.children] == ["address.line1", "address.postcode"]
    assert spec.child("severity").choices == [("low", "Low"), ("high", "High"), ("none", "None")]
    assert spec.child("category").kind == "radio" and spec.child("category").required
    assert spec.child("contact").kind == "email" and spec.child("summary").kind == "textarea"  # x-widget
    assert spec.child("hours").schema["maximum"] == 100
    referred_to = spec.child("referred_to")  # added by the "then" branch
    assert referred_to is not None and referred_to.label == "Referred to"
    assert referred_to.show_when == ((forms.Clause("referred", ("true",)),),)
    assert referred_to.required_when == referred_to.show_when
    assert referred_to.show_text == "Referred to another agency is ticked"
    assert spec.child("referred").show_when == ()


def test_process_automation_conditions_follow_the_if_chain(registry):
    spec = forms.build_spec(registry.type("process_automation").schema)
    trigger, action = spec.child("trigger"), spec.child("action")

    def shown(node, field: str, **values: str) -> bool:
        return forms.condition_holds(node.child(field).show_when, values)

    assert shown(trigger, "at", event="schedule") and not shown(trigger, "at", event="created")
    assert not shown(trigger, "at", event="")
    assert shown(trigger, "weekday", event="schedule", every="week")
    assert not shown(trigger, "weekday", event="schedule", every="day")
    assert shown(trigger, "state", event="transitioned") and not shown(trigger, "state", event="date_reached")
    assert shown(trigger, "date_field", event="date_reached") and not shown(trigger, "date_field", event="transitioned")
    assert trigger.child("event").show_when == ()
    assert trigger.child("at").show_text == "Event is Schedule"
    assert trigger.child("state").show_text == "Event is Transitioned"
    # a field one action adds (in its "then" branch) shows with that action only
    assert shown(action, "template", do="create_item") and not shown(action, "template", do="notify")
    assert shown(action, "assign_to", do="create_item") and shown(action, "assign_to", do="assign")
    assert not shown(action, "assign_to", do="notify")
    assert action.child("recipient").show_text == "Action is Notify"


def test_an_if_the_form_cannot_evaluate_shows_its_fields_always():
    schema = {
        "type": "object",
        "properties": {"age": {"type": "integer"}},
        "if": {"properties": {"age": {"minimum": 18}}},
        "then": {"properties": {"employer": {"type": "string"}}},
    }
    spec = forms.build_spec(schema)
    assert spec.child("employer").show_when == ()


# -- input to JSON ---------------------------------------------------------------------------------


def test_numbers_booleans_empties_and_choices(apprenticeship, registry):
    spec = forms.build_spec(apprenticeship.schema)
    bound = bind(
        spec,
        standard_code=" 298 ",
        level="3.0",
        otj_hours_logged="12.5",
        otj_hours_planned="1_000",
        standard_title="   ",
        employer_name="Acme",
        signup_paperwork_complete="y",
        funding_type="levy",
        epa_result="nonsense",
    )
    data = bound.to_json({"commitment_statement_signed": True})
    assert data == {
        "standard_code": 298,
        "level": 3,
        "otj_hours_logged": 12.5,
        "otj_hours_planned": "1_000",  # not a number: kept as typed, for the engine to refuse
        "employer_name": "Acme",
        "signup_paperwork_complete": True,
        "commitment_statement_signed": False,  # unticked, and it had a value: now false
        "funding_type": "levy",
        "epa_result": "nonsense",
    }
    assert bound.raw["otj_hours_planned"] == "1_000" and bound.raw["standard_title"] == "   "
    ilr = forms.build_spec(registry.type("ilr").schema)
    assert bind(ilr, ethnicity="31", llddhealthprob="2").to_json() == {"ethnicity": 31, "llddhealthprob": 2}


@pytest.mark.parametrize(
    ("kind", "typed", "expected"),
    [
        ("integer", "-5", -5),
        ("integer", "+7", 7),
        ("integer", "1e2", 100),
        ("integer", "2.5", "2.5"),
        ("integer", "abc", "abc"),
        ("number", "1e3", 1000.0),
        ("number", ".5", 0.5),
        ("number", "nan", "nan"),
        ("number", "inf", "inf"),
        ("number", "1,5", "1,5"),
        ("number", "12", 12),
    ],
)
def test_number_parsing(kind, typed, expected):
    spec = forms.build_spec({"type": "object", "properties": {"n": {"type": kind}}})
    value = bind(spec, n=typed).to_json()["n"]
    assert value == expected and type(value) is type(expected)


def test_rows_are_read_in_order_empty_ones_dropped_and_renumbered(apprenticeship):
    spec = forms.build_spec(apprenticeship.schema)
    bound = bind(
        spec,
        reviews__5__date="2025-03-01",
        reviews__5__type="progress",
        reviews__2__date="",
        reviews__2__notes="",
        reviews__0__date="2025-01-01",
        reviews__0__outcome="on_track",
    )
    assert [r["date"] for r in bound.raw["reviews"]] == ["2025-01-01", "", "2025-03-01"]
    data = bound.to_json()
    assert data["reviews"] == [
        {"date": "2025-01-01", "outcome": "on_track"},
        {"date": "2025-03-01", "type": "progress"},
    ]
    # the form now matches the data, so /reviews/1/... names the second row's inputs
    assert [r["date"] for r in bound.raw["reviews"]] == ["2025-01-01", "2025-03-01"]
    assert bound.field("data-reviews-1-type").data == "progress"
    assert bound.field("data-reviews-2-date") is None


def test_a_row_of_only_checkboxes_is_found_by_its_marker():
    schema = {
        "type": "object",
        "properties": {
            "checks": {"type": "array", "items": {"type": "object", "properties": {"done": {"type": "boolean"}}}}
        },
    }
    spec = forms.build_spec(schema)
    bound = forms.BoundForm(spec, formdata=MultiDict({"data-checks-0-_row": "1", "data-checks-1-done": "y"}))
    assert bound.raw["checks"] == [{"done": False}, {"done": True}]
    assert bound.to_json() == {"checks": [{"done": True}]}


def test_conditional_values_are_dropped_when_the_condition_does_not_hold(concern, registry):
    spec = forms.build_spec(concern.schema)
    assert bind(spec, referred_to="Police").to_json() == {}
    assert bind(spec, referred="y", referred_to="Police").to_json() == {"referred": True, "referred_to": "Police"}
    automation = forms.build_spec(registry.type("process_automation").schema)
    data = bind(automation, trigger__event="schedule", trigger__every="day", trigger__at="07:00", trigger__state="x")
    assert data.to_json()["trigger"] == {"event": "schedule", "every": "day", "at": "07:00"}


def test_checkbox_groups_for_arrays_of_choices():
    schema = {
        "type": "object",
        "properties": {"days": {"type": "array", "uniqueItems": True, "items": {"enum": [1, 2, 3]}}},
    }
    spec = forms.build_spec(schema)
    assert spec.child("days").kind == "checkboxes"
    data = MultiDict([("data-days", "1"), ("data-days", "3")])
    bound = forms.BoundForm(spec, formdata=data)
    assert bound.to_json() == {"days": [1, 3]}
    view = forms.build_view(bound)
    node = view.root.children[0]
    assert [(o.id, o.checked) for o in node.options] == [
        ("data-days-1", True),
        ("data-days-2", False),
        ("data-days-3", True),
    ]


def test_stored_data_round_trips_through_the_form(apprenticeship, registry):
    for key in ("apprenticeship", "ilr", "learner", "process_automation"):
        tracker_type = registry.type(key)
        spec = forms.build_spec(tracker_type.schema)
        data = valid_data(key)
        form = forms.BoundForm(spec, raw=forms.to_raw(spec, data))
        resent = forms.BoundForm(spec, formdata=MultiDict(_sent(form)))
        assert resent.to_json(data) == data, key


def _sent(bound: forms.BoundForm) -> list[tuple[str, str]]:
    """What a browser sends for a bound form: every input, ticked boxes only."""
    out = []
    for name, field in bound.form._fields.items():
        full = f"data-{name}"
        if field.type == "BooleanField":
            if field.data:
                out.append((full, "y"))
        elif field.type == "SelectMultipleField":
            out += [(full, v) for v in field.data or []]
        else:
            out.append((full, field._value() if hasattr(field, "_value") else field.data or ""))
    return out


def test_add_and_remove_rows_keep_everything_typed(apprenticeship):
    spec = forms.build_spec(apprenticeship.schema)
    bound = bind(spec, employer_name="Acme", reviews__0__date="2025-01-01", reviews__3__reviewer="Sam")
    focus = bound.add_row("data-reviews")
    assert focus == "data-reviews-2-date"
    assert [r["reviewer"] for r in bound.raw["reviews"]] == ["", "Sam", ""]
    assert bound.raw["employer_name"] == "Acme"
    assert bound.remove_row("data-reviews-0") == "add-data-reviews"
    assert [r["reviewer"] for r in bound.raw["reviews"]] == ["Sam", ""]
    assert bound.field("data-reviews-0-reviewer").data == "Sam"
    assert bound.add_row("data-nope") is None and bound.remove_row("data-reviews-9") is None


def test_rows_inside_rows():
    schema = {
        "type": "object",
        "properties": {
            "visits": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "place": {"type": "string"},
                        "people": {"type": "array", "items": {"type": "string", "title": "Person"}},
                    },
                },
            }
        },
    }
    spec = forms.build_spec(schema)
    bound = bind(spec, visits__0__place="A", visits__4__place="B", visits__4__people__2="Kim")
    assert bound.add_row("data-visits-4-people") == "data-visits-1-people-1"
    assert bound.raw["visits"][1]["people"] == ["Kim", ""]
    assert bound.to_json() == {"visits": [{"place": "A"}, {"place": "B", "people": ["Kim"]}]}


# -- what the page shows -------------------------------------------------------------------------


def test_problems_land_on_their_fields_and_in_the_summary(apprenticeship):
    spec = forms.build_spec(apprenticeship.schema)
    bound = bind(spec, reviews__0__date="2025-01-01")
    problems = [
        Problem("/reviews/0/outcome", "Outcome (row 1) is required", "Fill in Outcome."),
        Problem("/level", "Level must be at most 7", "Enter a level from 2 to 7"),
        Problem("/reviews", "Reviews needs at least 2 entries", "Add a row."),
        Problem("", "Something about the whole item"),
        Problem("subject", "A learner is required"),
        Problem("/gone/deeper", "A field the form does not show"),
    ]
    view = forms.build_view(bound, problems, layout=apprenticeship.layout, targets={"subject": "subject-q"})
    nodes = {n.name: n for n in view.root.walk()}
    assert nodes["data-reviews-0-outcome"].errors == [problems[0]]
    assert nodes["data-level"].errors == [problems[1]] and nodes["data-reviews"].errors == [problems[2]]
    assert [target for _p, target in view.summary] == [
        "data-reviews-0-outcome-on-track",  # a radio group: its first button
        "data-level",
        "data-reviews",
        None,
        "subject-q",
        None,
    ]
    level = nodes["data-level"]
    assert level.attrs() == {"aria-describedby": "data-level-help data-level-error", "aria-invalid": "true"}
    html = str(level.input(**level.attrs()))
    assert 'min="2"' in html and 'max="7"' in html and 'type="number"' in html and 'name="data-level"' in html


def test_sections_follow_the_layout_with_hidden_fields_collapsed(apprenticeship, concern, registry):
    spec = forms.build_spec(apprenticeship.schema, exclude={"total_negotiated_price"})
    view = forms.build_view(forms.BoundForm(spec), layout=apprenticeship.layout)
    titles = [s.title for s in view.sections]
    assert titles == [s.name for s in apprenticeship.layout]
    breaks = view.sections[5]
    assert breaks.nodes == [] and [n.spec.key for n in breaks.more] == [
        "break_start_date",
        "break_planned_return_date",
        "break_return_date",
    ]
    assert not breaks.open_more
    filled = forms.BoundForm(spec, raw=forms.to_raw(spec, {"break_start_date": "2025-01-01"}))
    assert forms.build_view(filled, layout=apprenticeship.layout).sections[5].open_more
    funding = view.sections[1]
    assert [n.spec.key for n in funding.nodes] == ["employer_name", "funding_type", "employer_contribution"]
    # fields the layout does not place come last
    concern_view = forms.build_view(forms.BoundForm(forms.build_spec(concern.schema)), layout=concern.layout)
    assert [s.title for s in concern_view.sections] == ["Details", "Other fields"]
    assert "dsl_informed" in [n.spec.key for n in concern_view.sections[1].nodes]
    # nested fields placed one by one (process automation)
    automation = registry.type("process_automation")
    auto_view = forms.build_view(forms.BoundForm(forms.build_spec(automation.schema)), layout=automation.layout)
    when = next(s for s in auto_view.sections if s.title == "When")
    assert [n.name for n in when.nodes][:2] == ["data-trigger-event", "data-trigger-state"]
    assert [s.title for s in auto_view.sections] == ["Automation", "When", "For which items", "Then"]


def test_read_only_and_state_required_fields(concern):
    spec = forms.build_spec(concern.schema)
    bound = forms.BoundForm(spec, raw=forms.to_raw(spec, {"severity": "high", "hours": 3}))
    view = forms.build_view(bound, read_only={"severity", "address"}, required={"outcome"})
    nodes = {n.name: n for n in view.root.walk()}
    assert nodes["data-severity"].read_only and nodes["data-severity"].display == "High"
    assert nodes["data-address-postcode"].read_only  # inside a read-only object
    assert not nodes["data-hours"].read_only and nodes["data-outcome"].required
    assert view.editable
    locked = forms.build_view(bound, read_only={"*"})
    assert not locked.editable and all(n.read_only for n in locked.root.walk())
    assert nodes["data-referred_to"].show_when_json == json.dumps(
        [[{"field": "referred", "values": ["true"], "negate": False, "empty": False}]]
    )
    assert nodes["data-referred_to"].scope == "data" and nodes["data-referred_to"].required


def test_labels_and_names_of_pointers(apprenticeship, concern):
    spec = forms.build_spec(apprenticeship.schema)
    assert forms.field_label(spec, "/reviews/1/date") == "Reviews › row 2 › Review date"
    assert forms.field_label(spec, "/gone") == "Gone" and forms.field_label(spec, "description") == "Description"
    assert forms.spec_at(spec, "/reviews/0/outcome").label == "Outcome"
    assert forms.display_value(forms.spec_at(spec, "/reviews/0/outcome"), "at_risk") == "At risk"
    assert forms.display_value(spec.child("signup_paperwork_complete"), False) == "No"
    assert forms.display_value(None, None) == "—"
    assert forms.pointer_name("/reviews/1/date") == "data-reviews-1-date"
    assert forms.pointer_name("/a~1b") == "data-a/b" and forms.pointer_name("subject") is None
    assert forms.name_of("trigger.event") == "data-trigger-event"
    assert forms.submitted({"data-address-line1": "x"}, "address") and not forms.submitted(
        {"data-addressx": ""}, "address"
    )
    pruned = forms.prune(forms.build_spec(concern.schema), ["severity", "address.postcode", "nope"])
    assert [c.dotted for c in pruned.walk()] == ["", "severity", "address", "address.postcode"]


def test_a_stored_value_that_is_no_longer_a_choice_survives_a_save(concern, apprenticeship):
    spec = forms.build_spec(concern.schema)
    bound = forms.BoundForm(spec, raw=forms.to_raw(spec, {"severity": "medium"}))
    node = next(n for n in forms.build_view(bound).root.walk() if n.name == "data-severity")
    assert node.options[-1] == forms.Option(
        "medium", "medium (not one of the choices)", "data-severity--unlisted", True
    )
    assert bind(spec, severity="medium").to_json() == {"severity": "medium"}
    select = forms.build_spec(apprenticeship.schema)
    form = forms.BoundForm(select, raw=forms.to_raw(select, {"withdrawal_reason": "retired"}))
    assert '<option selected value="retired">retired (not one of the choices)</option>' in str(
        form.field("data-withdrawal_reason")()
    )
