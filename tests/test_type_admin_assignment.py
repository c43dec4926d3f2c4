"""The type editor's Assignment tab (/admin/types/<key>/assignment) through the Flask test
client, on both databases: the rule in words, each rule saved into the draft's type.yaml and
used once published, every refusal (the builder's and those of ``tracker check``) on its form
field with a 4xx and nothing changed, and types from files kept read-only."""

from __future__ import annotations

import pytest
import yaml
from sqlalchemy import select

from engine.models import Item, User
from tests import test_type_admin, webhelpers
from tests.test_type_admin import field_action, new_type, page_text, post, state, texts_of
from tests.webhelpers import create_users, sign_in

cheap_hashing = webhelpers.cheap_hashing
new_app = webhelpers.new_app
admin = test_type_admin.admin  # boss, signed in

URL = "/admin/types/bike_loan/assignment"


@pytest.fixture
def app(new_app):
    app = new_app(RATELIMIT_ENABLED=False)
    create_users(app, boss=["admin"], clerk=["tracker_creator"], lead_a=["dsl"], lead_b=["dsl"])
    return app


def assignment_of(app) -> dict | None:
    return yaml.safe_load(texts_of(app, "bike_loan").type_yaml).get("assignment")


def choose(admin, **data):
    return post(admin, URL, data, token_from=URL)


def test_the_tab_tells_the_rule_and_offers_roles_and_text_fields(app, admin):
    new_type(admin)
    field_action(admin, "bike_loan", action="add", parent="", name="officer", kind="text", title="Officer")
    field_action(admin, "bike_loan", action="add", parent="", name="count", kind="integer", title="Count")
    page = admin.get(URL)
    text = page_text(page)
    assert page.status_code == 200
    assert '<a href="/admin/types/bike_loan/assignment" id="tab-assignment" aria-current="page">Assignment</a>' in text
    assert "a new Bike loan item is unassigned until someone assigns it by hand" in text
    assert 'id="rule-none" value="" aria-describedby="rule-none-help" checked' in text
    for rule in ("round_robin", "least_loaded", "field", "queue"):
        assert f'id="rule-{rule}"' in text and f'id="rule-{rule}-help"' in text
    assert '<option value="dsl">Designated safeguarding lead (dsl)</option>' in text
    assert '<option value="payroll">Payroll clerk (payroll) — cannot view these items</option>' in text
    assert '<option value="officer">Officer (officer)</option>' in text
    assert '<option value="title">Title (title)</option>' in text
    assert 'value="count"' not in text  # not a text field
    assert 'src="/static/type_admin.js"' in text


@pytest.mark.parametrize(
    ("data", "expected", "words"),
    [
        (
            {"rule": "round_robin", "role": "dsl"},
            {"rule": "round_robin", "role": "dsl"},
            "goes to the active users of the role Designated safeguarding lead (dsl) in turn",
        ),
        (
            {"rule": "least_loaded", "role": "dsl", "field": ""},
            {"rule": "least_loaded", "role": "dsl"},
            "with the fewest open Bike loan items",
        ),
        (
            {"rule": "field", "role": "", "field": "title"},
            {"rule": "field", "field": "title"},
            "goes to the user whose user name is in the field Title (title)",
        ),
        (
            {"rule": "queue", "role": "caseworker"},
            {"rule": "queue", "role": "caseworker"},
            "waits unassigned in the queue of the role Caseworker (caseworker)",
        ),
    ],
)
def test_each_rule_is_saved_into_the_draft_and_told_in_words(app, admin, data, expected, words):
    new_type(admin)
    saved = choose(admin, **data)
    assert saved.status_code == 303 and saved.headers["Location"].endswith(URL)
    assert assignment_of(app) == expected
    page = page_text(admin.get(URL))
    assert "Saved the assignment rule." in page and words in page
    assert f'id="rule-{expected["rule"]}" value="{expected["rule"]}" aria-describedby' in page
    assert "checked>" in page.split(f'id="rule-{expected["rule"]}"')[1].split("\n")[0]

    cleared = choose(admin, rule="")
    assert cleared.status_code == 303 and assignment_of(app) is None
    assert "Removed the assignment rule: items are assigned by hand." in page_text(admin.get(URL))


def test_a_published_round_robin_assigns_new_items_in_turn(app, admin):
    new_type(admin)
    assert choose(admin, rule="round_robin", role="dsl").status_code == 303
    assert post(admin, "/admin/types/bike_loan/publish", {"note": "first"}).status_code == 303
    clerk = app.test_client()
    sign_in(clerk, "clerk")
    for title in ("Red bike", "Blue bike"):
        created = post(clerk, "/items/new?type=bike_loan", {"data-title": title, "save": "1"})
        assert created.status_code == 303, page_text(created)
    rt = app.extensions["tracker"]
    with rt.session() as session:
        got = session.scalars(
            select(User.username).join(Item, Item.assignee_id == User.id).where(Item.type_key == "bike_loan")
        ).all()
    assert sorted(got) == ["lead_a", "lead_b"]


def test_a_role_the_draft_brings_can_take_the_items(app, admin):
    new_type(admin)
    added = post(
        admin,
        "/admin/types/bike_loan/roles",
        {"action": "add_role", "key": "bike_officer", "name": "Bike officer", "capabilities": ["items.view"]},
    )
    assert added.status_code == 303
    assert '<option value="bike_officer">Bike officer (bike_officer)</option>' in page_text(admin.get(URL))
    assert choose(admin, rule="queue", role="bike_officer").status_code == 303
    assert assignment_of(app) == {"rule": "queue", "role": "bike_officer"}


@pytest.mark.parametrize(
    ("data", "target", "message"),
    [
        ({"rule": "nearest", "role": "dsl"}, "rule-none", "&#39;nearest&#39; is not an assignment rule"),
        ({"rule": "round_robin", "role": ""}, "assign-role", "Pick the role whose users take the items"),
        ({"rule": "queue", "role": "dsl", "field": "title"}, "assign-field", "takes no field"),
        ({"rule": "field", "role": "dsl", "field": "title"}, "assign-role", "takes no role"),
        ({"rule": "field", "field": ""}, "assign-field", "Pick the field that holds the user name"),
        ({"rule": "field", "field": "nowhere"}, "assign-field", "There is no field &#39;nowhere&#39;"),
        # the checks of `tracker check`, on the draft as it would be
        ({"rule": "least_loaded", "role": "nosuch"}, "assign-role", "Role &#39;nosuch&#39; does not exist"),
        ({"rule": "round_robin", "role": "payroll"}, "assign-role", "Users of role &#39;payroll&#39; cannot see"),
        ({"rule": "field", "field": "count"}, "assign-field", "&#39;count&#39; is not a text property"),
    ],
)
def test_refusals_are_shown_on_their_field_with_a_4xx_and_nothing_changed(app, admin, data, target, message):
    new_type(admin)
    field_action(admin, "bike_loan", action="add", parent="", name="count", kind="integer", title="Count")
    assert choose(admin, rule="queue", role="dsl").status_code == 303
    before = state(app)
    refused = choose(admin, **data)
    raw = refused.get_data(as_text=True)
    assert refused.status_code == 422
    assert 'id="error-summary"' in raw and "nothing was changed" in raw
    assert f'<li><a href="#{target}">' in raw and message in raw.split('id="error-summary"')[1].split("</ul>")[0]
    assert 'class="error"' in raw.split(f'for="{target}"')[-1] or target.startswith("rule-")
    assert state(app) == before and assignment_of(app) == {"rule": "queue", "role": "dsl"}


def test_a_queue_is_refused_while_every_item_needs_an_assignee(app, admin):
    new_type(admin)
    texts = texts_of(app, "bike_loan")
    saved = post(
        admin,
        "/admin/types/bike_loan/documents",
        {
            "schema_json": texts.schema_json,
            "type_yaml": texts.type_yaml + "assignee_required: true\n",
            "workflow_yaml": texts.workflow_yaml,
            "roles_yaml": "",
        },
    )
    assert saved.status_code == 303
    assert "requires an assignee on every item" in page_text(admin.get(URL))
    before = state(app)
    refused = choose(admin, rule="queue", role="dsl")
    text = page_text(refused)
    assert refused.status_code == 422 and '<a href="#rule-queue">A queue leaves new items unassigned' in text
    assert state(app) == before
    assert choose(admin, rule="round_robin", role="dsl").status_code == 303


def test_a_refusal_on_a_published_type_starts_no_draft(app, admin):
    new_type(admin)
    assert post(admin, "/admin/types/bike_loan/publish", {"note": "first"}).status_code == 303
    before = state(app)
    refused = choose(admin, rule="round_robin", role="nosuch")
    assert refused.status_code == 422 and "does not exist" in page_text(refused)
    assert state(app) == before
    assert "your first change starts the draft of version 2" in page_text(admin.get(URL))
    assert choose(admin, rule="round_robin", role="dsl").status_code == 303
    assert "Editing the draft of version 2" in page_text(admin.get(URL))


def test_types_from_files_and_people_without_types_admin_are_refused(app, admin):
    before = state(app)
    page = admin.get("/admin/types/concern/assignment")
    assert page.status_code == 403 and "Copy it" in page_text(page)
    refused = post(admin, "/admin/types/concern/assignment", {"rule": "queue", "role": "dsl"}, "/admin/types")
    assert refused.status_code == 403
    assert admin.get("/admin/types/no_such_type/assignment").status_code == 404
    clerk = app.test_client()
    sign_in(clerk, "clerk")
    assert clerk.get("/admin/types/concern/assignment").status_code == 403
    assert state(app) == before
