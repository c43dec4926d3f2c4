"""The Migration steps panel of the type editor's Fields tab, through the Flask test client on
both databases: declaring a default for existing items and new values for the options a
one-choice field lost since the published version, removing a step, every refusal (the
builder's and those of ``tracker check``) with a 4xx and nothing changed, and the steps
doing their work when the items are migrated."""

from __future__ import annotations

import pytest
import yaml

from engine.models import Item
from engine.permissions import Actor
from engine.type_migrations import TypeMigrator
from tests import test_type_admin, webhelpers
from tests.test_type_admin import field_action, new_type, page_text, post, state, texts_of
from tests.webhelpers import sign_in

#: fixtures: the type editor's app (boss the admin, clerk a tracker creator) and boss signed in
cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app
app = test_type_admin.app
admin = test_type_admin.admin

FIELDS = "/admin/types/bike_loan/fields"


def steps_of(app) -> list | None:
    return yaml.safe_load(texts_of(app, "bike_loan").type_yaml).get("migrations")


def step(admin, **data):
    return field_action(admin, "bike_loan", **data)


def set_options(admin, options: str):
    r = field_action(
        admin,
        "bike_loan",
        action="update",
        path="colour",
        title="Colour",
        kind="choice",
        options=options,
        new_name="colour",
        condition_field="",
    )
    assert r.status_code == 303, page_text(r)


@pytest.fixture
def published(app, admin) -> int:
    """Version 1 of bike_loan with a colour (red, green, blue) and an item in green; the
    draft of version 2 has lost green and gained teal, and has a new whole-number field."""
    new_type(admin)
    assert field_action(admin, "bike_loan", action="add", parent="", name="colour", kind="choice").status_code == 303
    set_options(admin, "red | Red\ngreen | Green\nblue | Blue")
    assert post(admin, "/admin/types/bike_loan/publish", {"note": "first"}).status_code == 303
    clerk = app.test_client()
    sign_in(clerk, "clerk")
    created = post(clerk, "/items/new?type=bike_loan", {"data-title": "Old bike", "data-colour": "green", "save": "1"})
    assert created.status_code == 303, page_text(created)
    set_options(admin, "red | Red\nblue | Blue\nteal | Teal")
    assert field_action(admin, "bike_loan", action="add", parent="", name="gears", kind="integer").status_code == 303
    return int(created.headers["Location"].rsplit("/", 1)[1])


def test_before_anything_is_published_there_is_nothing_to_migrate(app, admin):
    new_type(admin)
    page = page_text(admin.get(FIELDS))
    assert 'id="migrations-unpublished"' in page and 'id="default-form"' not in page
    before = state(app)
    refused = step(admin, action="set_default", default_field="title", default_value="x")
    assert refused.status_code == 422 and "No version of this type is published yet" in page_text(refused)
    assert state(app) == before


def test_defaults_and_maps_are_declared_shown_removed_and_migrate_the_items(app, admin, published):
    page = page_text(admin.get(FIELDS))
    assert 'id="no-migration-steps"' in page and 'id="default-form"' in page
    assert '<option value="gears">Gears (gears)</option>' in page
    # green was an option of version 1 and is gone: it is offered for mapping, to the draft's options
    assert 'id="map-form-colour"' in page and "Items with “Green” (green) get" in page
    assert '<option value="teal">Teal (teal)</option>' in page

    declared = step(admin, action="set_default", default_field="gears", default_value="3")
    assert declared.status_code == 303
    assert "Declared the default of gears for existing items." in page_text(admin.get(declared.headers["Location"]))
    mapped = step(admin, action="map_values", map_field="colour", old=["green"], new=["teal"])
    assert mapped.status_code == 303
    assert steps_of(app) == [
        {"set_default": {"field": "gears", "value": 3}},
        {"map_values": {"field": "colour", "map": {"green": "teal"}}},
    ]
    page = page_text(admin.get(FIELDS))
    assert '<li id="step-0">set gears to 3 where it is empty' in page
    assert "<li id=\"step-1\">change the values of colour: 'green' → 'teal'" in page
    assert '<option value="teal" selected>Teal (teal)</option>' in page  # the declared map is shown

    # declaring again replaces the step; a step can be removed
    assert step(admin, action="set_default", default_field="gears", default_value="5").status_code == 303
    assert step(admin, action="set_default", default_field="title", default_value="Unnamed").status_code == 303
    assert steps_of(app)[0] == {"set_default": {"field": "gears", "value": 5}} and len(steps_of(app)) == 3
    assert step(admin, action="remove_step", step="2").status_code == 303
    assert [next(iter(s)) for s in steps_of(app)] == ["set_default", "map_values"]

    assert post(admin, "/admin/types/bike_loan/publish", {"note": "teal"}).status_code == 303
    rt = app.extensions["tracker"]
    with rt.session() as session:
        result = TypeMigrator(session, Actor.system(), rt.registry).apply("bike_loan")
    assert (result.migrated, result.failed) == (1, 0)
    with rt.session() as session:
        item = session.get(Item, published)
        assert (item.type_version, item.data) == (2, {"title": "Old bike", "colour": "teal", "gears": 5})


@pytest.mark.parametrize(
    ("data", "target", "message"),
    [
        ({"action": "set_default", "default_field": "", "default_value": "3"}, "default_field", "Pick the field"),
        ({"action": "set_default", "default_field": "gears", "default_value": ""}, "default_value", "is empty"),
        (
            {"action": "set_default", "default_field": "gears", "default_value": "three"},
            "default_value",
            "not a number",
        ),
        ({"action": "set_default", "default_field": "colour", "default_value": "pink"}, "default_value", "not one of"),
        # `tracker check` on the draft as it would be: the title must have at least one character
        # and at most 200
        (
            {"action": "set_default", "default_field": "title", "default_value": "x" * 201},
            "default_value",
            "is not valid for the field",
        ),
        (
            {"action": "map_values", "map_field": "colour", "old": ["green"], "new": [""]},
            "map-colour-0",
            "No new value",
        ),
        (
            {"action": "map_values", "map_field": "colour", "old": ["red"], "new": ["teal"]},
            "map-colour-0",
            "not an option removed",
        ),
        (
            {"action": "map_values", "map_field": "gears", "old": ["1"], "new": ["2"]},
            "map-gears-0",
            "not a one-choice field",
        ),
        ({"action": "remove_step", "step": "7"}, "migrations-title", "There is no such migration step"),
        ({"action": "remove_step", "step": "x"}, "migrations-title", "There is no such migration step"),
    ],
)
def test_refusals_are_linked_to_their_field_with_a_4xx_and_nothing_changed(
    app, admin, published, data, target, message
):
    assert step(admin, action="set_default", default_field="gears", default_value="3").status_code == 303
    before = state(app)
    refused = step(admin, **data)
    text = page_text(refused)
    assert refused.status_code == 422, text
    summary = text.split('id="error-summary"')[1].split("</ul>")[0]
    assert f'<a href="#{target}">' in summary and message in summary
    assert state(app) == before


def test_a_refused_step_on_a_published_type_starts_no_draft(app, admin):
    new_type(admin)
    assert post(admin, "/admin/types/bike_loan/publish", {"note": "first"}).status_code == 303
    before = state(app)
    refused = step(admin, action="set_default", default_field="title", default_value="")
    assert refused.status_code == 422 and state(app) == before
    refused = step(admin, action="remove_step", step="0")
    assert refused.status_code == 422 and state(app) == before


def test_types_from_files_are_read_only(app, admin):
    before = state(app)
    for data in (
        {"action": "set_default", "default_field": "severity", "default_value": "low"},
        {"action": "map_values", "map_field": "severity", "old": ["x"], "new": ["low"]},
        {"action": "remove_step", "step": "0"},
    ):
        refused = post(admin, "/admin/types/concern/fields", data, "/admin/types")
        assert refused.status_code == 403 and "Copy it" in page_text(refused)
    assert state(app) == before
