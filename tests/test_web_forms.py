"""The generated forms in the browser's place: the Create page and the editable item page.

Each test submits the page's own form as a browser without JavaScript would (the inputs the
page rendered, changed where the test says), so what the page shows is what gets sent.
"""

from __future__ import annotations

import functools
import html
import re
from html.parser import HTMLParser

import pytest
from argon2 import PasswordHasher
from werkzeug.datastructures import MultiDict

from engine.definitions.model import StateFields
from engine.models import Item, RoleGrant, User
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER
from tests.webhelpers import PASSWORD, make_app, sign_in

CONCERN = {"category": "online", "severity": "low", "reported_on": "2025-09-01"}


ROLES = {
    "ada": "admin",
    "clara": "tracker_creator",
    "dora": "dsl",
    "mona": "manager",
    "cass": "caseworker",
    "pay": "payroll",
}


@functools.cache
def password_hash() -> str:
    """One hash of the test password for every user: hashing is slow on purpose."""
    return PasswordHasher().hash(PASSWORD)


@pytest.fixture
def app(tmp_path, db_url):
    app = make_app(tmp_path, db_url)
    with app.extensions["tracker"].session() as session:
        for name, role in ROLES.items():
            user = User(username=name, display_name=name, password_hash=password_hash())
            user.grants = [RoleGrant(role=role)]
            session.add(user)
        session.commit()
    yield app
    app.extensions["tracker"].engine.dispose()  # give the database connections back now


@pytest.fixture
def rt(app):
    return app.extensions["tracker"]


@pytest.fixture
def learners(rt) -> list[int]:
    with rt.session() as session:
        service = ItemService(session, Actor.system(), rt.registry)
        return [
            service.create("learner", {**LEARNER, "given_name": given, "family_name": family, "uln": uln}).id
            for given, family, uln in [("Ann", "Smith", "1000000043"), ("Ben", "Jones", "1000000027")]
        ]


def system(rt, session) -> ItemService:
    return ItemService(session, Actor.system(), rt.registry)


def as_user(rt, session, username: str) -> ItemService:
    return ItemService(session, rt.actor(session, username), rt.registry)


@pytest.fixture
def concern(rt, learners) -> int:
    """A concern about Ann, created by clara and assigned to her."""
    with rt.session() as session:
        return (
            as_user(rt, session, "clara").create("concern", dict(CONCERN), subject_id=learners[0], assignee="clara").id
        )


def stored(rt, item_id: int) -> Item:
    with rt.session() as session:
        item = session.get(Item, item_id)
        session.expunge(item)
        return item


def client_for(app, username: str):
    client = app.test_client()
    sign_in(client, username, PASSWORD)
    return client


# -- reading a page's form as a browser would ---------------------------------------------------------


class _Forms(HTMLParser):
    """The successful controls of each <form> on a page (what a browser would send)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self._form: dict | None = None
        self._select: str | None = None
        self._options: list[tuple[str, bool]] = []
        self._textarea: str | None = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = {k: (v if v is not None else "") for k, v in attrs}
        if tag == "form":
            self._form = {"action": a.get("action", ""), "generated": "data-generated" in a, "fields": []}
            self.forms.append(self._form)
        if self._form is None or "disabled" in a:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self._form["fields"].append((a["name"], a.get("value", "on")))
            elif kind not in ("submit", "button", "image", "reset"):
                self._form["fields"].append((a["name"], a.get("value", "")))
        elif tag == "select":
            self._select, self._options = a.get("name"), []
        elif tag == "option" and self._select is not None:
            self._options.append((a.get("value", ""), "selected" in a))
        elif tag == "textarea":
            self._textarea, self._text = a.get("name"), ""

    def handle_data(self, data):
        if self._textarea is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "form":
            self._form = None
        elif tag == "select" and self._select is not None and self._form is not None:
            picked = [v for v, selected in self._options if selected] or [v for v, _ in self._options[:1]]
            self._form["fields"] += [(self._select, v) for v in picked]
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self._form is not None:
            self._form["fields"].append((self._textarea, self._text.removeprefix("\n")))
            self._textarea = None


def form_of(page: str, action: str) -> MultiDict:
    """The form on the page that posts to ``action``."""
    parser = _Forms()
    parser.feed(page)
    for form in parser.forms:
        if form["action"] == action:
            return MultiDict(form["fields"])
    raise AssertionError(f"no form posting to {action} on the page")


def generated_form(page: str) -> MultiDict:
    """The page's generated form (the one forms.js enhances)."""
    parser = _Forms()
    parser.feed(page)
    return MultiDict(next(f for f in parser.forms if f["generated"])["fields"])


def fill(form: MultiDict, **values) -> MultiDict:
    """Set fields (``data_hours="5"`` -> ``data-hours``); None removes one (an unticked box)."""
    out = MultiDict(form)
    for key, value in values.items():
        name = key.replace("__", "-")
        out.poplist(name)
        if value is not None:
            out[name] = value
    return out


def text(response) -> str:
    return html.unescape(response.get_data(as_text=True))


def value_of(page: str, name: str) -> str | None:
    match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', page) or re.search(
        rf'<input[^>]*value="([^"]*)"[^>]*name="{re.escape(name)}"', page
    )
    return html.unescape(match.group(1)) if match else None


def changed(page: str, label: str, old: str, new: str) -> bool:
    """Whether the history on ``page`` shows ``label: old -> new``."""
    pattern = (
        rf'<span class="change-field">{re.escape(label)}</span>: <span class="old">{re.escape(old)}</span>'
        rf'.*?<span class="new">{re.escape(new)}</span>'
    )
    return re.search(pattern, page, re.S) is not None


NEW_CONCERN = "/items/new?type=concern"


# -- picking a type ---------------------------------------------------------------------------------


def test_pick_type_offers_only_the_types_the_user_may_create(app):
    clara = client_for(app, "clara").get("/items/new")
    assert clara.status_code == 200
    page = text(clara)
    for key in ("concern", "apprenticeship", "learner", "employer"):
        assert f'id="type-{key}"' in page
    assert 'id="type-process_automation"' not in page
    assert 'id="template-concern-online"' in page and "Online safety" in page
    assert 'id="nav-create"' in page
    assert 'id="type-process_automation"' in text(client_for(app, "ada").get("/items/new"))
    mona = client_for(app, "mona")
    page = text(mona.get("/items/new"))
    assert "do not let you create any tracker item" in page and 'id="nav-create"' not in page
    refused = mona.get(NEW_CONCERN)
    assert refused.status_code == 403
    assert "may not create Safeguarding concern items" in text(refused)
    automation = client_for(app, "clara").get("/items/new?type=process_automation")
    assert automation.status_code == 403 and "automation.create" in text(automation)
    assert client_for(app, "clara").get("/items/new?type=nope").status_code == 404
    missing = client_for(app, "clara").get(NEW_CONCERN + "&template=nope")
    assert missing.status_code == 404 and "has no template 'nope'" in text(missing)


def test_create_page_generates_every_kind_of_widget(app, learners):
    raw = client_for(app, "clara").get(NEW_CONCERN).get_data(as_text=True)
    page = html.unescape(raw)
    # status: the workflow's initial state, read-only
    assert 'id="field-status"' in page and ">New<" in page and 'name="status"' not in page
    # required marks and help tied to the input
    assert re.search(r'<legend>Category <span class="req" aria-hidden="true">\*</span>', page)
    assert re.search(r'for="data-reported_on">Reported on <span class="req"', page)
    # enum of 4 -> radios; labelled oneOf of 3 -> radios with "Not set" (optional)
    assert 'id="data-category-online"' in page and 'id="data-category--unset"' not in page
    assert 'id="data-severity-high"' in page and 'id="data-severity--unset"' in page and ">High<" in page
    # integer with min/max, date, email, textarea, checkbox, pattern stays a text input
    assert re.search(r'<input[^>]*id="data-hours"[^>]*max="100"[^>]*min="0"[^>]*type="number"', page)
    assert re.search(r'<input[^>]*id="data-reported_on"[^>]*type="date"', page)
    assert re.search(r'<input[^>]*id="data-contact"[^>]*type="email"', page)
    assert re.search(r'<textarea[^>]*id="data-summary"', page)
    assert re.search(r'<input[^>]*id="data-dsl_informed"[^>]*type="checkbox"', page)
    assert re.search(r'<input[^>]*id="data-reference"[^>]*type="text"', page)
    # nested object as a fieldset with a legend; an array with "Add a row"
    assert re.search(r'<fieldset class="group" id="data-address">\s*<legend>Address</legend>', page)
    assert 'id="add-data-actions"' in page and 'name="add_row" value="data-actions"' in page
    # the conditional field carries its condition for forms.js, and says it in words
    assert re.search(r'id="field-data-referred_to" data-show-when="\[\[\{&#34;field&#34;: &#34;referred&#34;', raw)
    assert 'data-scope="data"' in page
    assert "Asked only when Referred to another agency is ticked." in page
    # layout: "Details" first, then the rest; the finance field is not offered without finance.view
    assert page.index(">Details</h2>") < page.index(">Other fields</h2>")
    assert "data-cost" not in page
    assert re.search(r'<input[^>]*id="data-cost"', text(client_for(app, "ada").get(NEW_CONCERN)))
    # assignee: active users who may view the type (not payroll, who cannot)
    assert 'value="dora"' in page and 'value="mona"' in page and 'value="pay"' not in page
    assert '<script src="/static/forms.js" defer>' in page
    assert client_for(app, "clara").get("/static/forms.js").status_code == 200


def test_create_from_a_template_with_a_learner_found_by_uln(app, rt, learners):
    client = client_for(app, "clara")
    url = NEW_CONCERN + "&template=online"
    page = text(client.get(url))
    assert re.search(r'id="data-category-online" value="online" checked', page)
    assert re.search(r'id="data-severity-low" value="low" checked', page)
    # without JavaScript: the search is a button of the same form, and nothing typed is lost
    form = fill(generated_form(page), data__reported_on="2025-09-02", data__hours="3", subject_q="1000000027")
    found = client.post(url, data=fill(form, find_subject="1"))
    assert found.status_code == 200
    page = text(found)
    assert f'id="subject-{learners[1]}"' in page and "Ben Jones · ULN 1000000027 · born 2001-02-03" in page
    assert f'id="subject-{learners[0]}"' not in page
    assert value_of(page, "data-hours") == "3" and value_of(page, "subject_q") == "1000000027"
    form = fill(generated_form(page), subject=str(learners[1]), assignee="dora", description="Check in weekly")
    created = client.post(url, data=form)
    assert created.status_code == 303
    item_id = int(created.headers["Location"].rsplit("/", 1)[1])
    item = stored(rt, item_id)
    assert item.data == {"category": "online", "severity": "low", "reported_on": "2025-09-02", "hours": 3}
    assert item.subject_id == learners[1] and item.assignee.username == "dora"
    assert item.description == "Check in weekly" and item.status == "new"
    landed = client.get(created.headers["Location"])
    assert f"Created #{item_id}" in text(landed)


def test_search_by_name_on_get_and_no_match(app, learners):
    client = client_for(app, "clara")
    page = text(client.get(NEW_CONCERN + "&subject_q=smith"))
    assert f'id="subject-{learners[0]}"' in page and f'id="subject-{learners[1]}"' not in page
    none = text(client.get(NEW_CONCERN + "&subject_q=Zebedee"))
    assert 'No learner matches "Zebedee"' in none
    picked = text(client.get(NEW_CONCERN + f"&subject={learners[1]}"))
    assert re.search(rf'id="subject-{learners[1]}" value="{learners[1]}" checked', picked)


def test_create_without_a_learner_is_refused_and_keeps_the_input(app, rt, learners):
    client = client_for(app, "clara")
    form = fill(
        generated_form(text(client.get(NEW_CONCERN))),
        data__category="bullying",
        data__reported_on="2025-09-03",
        data__summary="Line one\nLine two",
        data__address__line1="1 High St",
        description="Keep me",
    )
    refused = client.post(NEW_CONCERN, data=form)
    assert refused.status_code == 422
    page = text(refused)
    assert 'id="error-summary"' in page and "A learner is required for Safeguarding concern" in page
    assert '<a href="#subject-q">A learner is required' in page
    assert 'id="subject-q-error"' in page
    assert re.search(r'id="data-category-bullying" value="bullying" checked', page)
    assert value_of(page, "data-reported_on") == "2025-09-03"
    assert value_of(page, "data-address-line1") == "1 High St"
    assert "Line one\nLine two</textarea>" in page and "Keep me</textarea>" in page
    with rt.session() as session:
        assert session.query(Item).filter(Item.type_key == "concern").count() == 0


def test_invalid_values_are_shown_on_their_fields_in_plain_words(app, rt, learners):
    client = client_for(app, "clara")
    form = fill(
        generated_form(text(client.get(NEW_CONCERN))),
        subject=str(learners[0]),
        data__category="zzz",
        data__severity="medium",
        data__reported_on="2025-13-45",
        data__hours="abc",
        data__reference="bad",
        data__contact="not-an-address",
    )
    refused = client.post(NEW_CONCERN, data=form)
    assert refused.status_code == 422
    page = text(refused)
    expected = {
        "data-category": "Category must be one of: online, bullying, neglect, other",
        "data-severity": "Severity must be one of: low (Low), high (High), none (None)",
        "data-reported_on": "Reported on must be a date",
        "data-hours": "Hours spent must be a whole number",
        "data-reference": "Reference is not in the expected format",
        "data-contact": "Contact e-mail must be an e-mail address",
    }
    for name, message in expected.items():
        error = re.search(rf'<p class="error" id="{name}-error">(.*?)</p>', page, re.S)
        assert error and message in error.group(1), name
        assert re.search(rf'aria-describedby="[^"]*{name}-error"', page), name
    assert "Write SC- and four digits, e.g. SC-0042" in page  # the schema's x-advice
    assert '<a href="#data-hours">Hours spent must be a whole number' in page
    assert '<a href="#data-category-online">Category must be one of' in page
    assert value_of(page, "data-hours") == "abc" and value_of(page, "data-reference") == "bad"
    assert "is not of type" not in page  # never jsonschema's own words
    # out of range: the number is parsed, the engine says what is allowed
    over = client.post(NEW_CONCERN, data=fill(form, data__category="online", data__hours="500"))
    assert "Hours spent must be at most 100" in text(over)
    with rt.session() as session:
        assert session.query(Item).filter(Item.type_key == "concern").count() == 0


def test_duplicate_reference_names_the_existing_item(app, rt, learners, concern):
    with rt.session() as session:
        system(rt, session).update(concern, changes={"reference": "SC-0001"})
    client = client_for(app, "clara")
    form = fill(
        generated_form(text(client.get(NEW_CONCERN))),
        subject=str(learners[0]),
        data__category="online",
        data__reported_on="2025-09-03",
        data__reference="SC-0001",
    )
    refused = client.post(NEW_CONCERN, data=form)
    assert refused.status_code == 409
    page = text(refused)
    assert f"already exists: #{concern}" in page and f'href="/items/{concern}"' in page


def test_nested_object_and_rows_added_and_removed_without_javascript(app, rt, learners):
    client = client_for(app, "clara")
    form = fill(
        generated_form(text(client.get(NEW_CONCERN))),
        subject=str(learners[0]),
        data__category="neglect",
        data__reported_on="2025-09-04",
        data__address__line1="2 Low Rd",
        data__address__postcode="AB1 2CD",
    )
    assert "data-actions-0-date" not in form
    added = client.post(NEW_CONCERN, data=fill(form, add_row="data-actions"))
    assert added.status_code == 200
    page = text(added)
    assert re.search(r'<input[^>]*autofocus[^>]*id="data-actions-0-date"', page)
    assert value_of(page, "data-address-line1") == "2 Low Rd"
    form = fill(generated_form(page), data__actions__0__date="2025-09-05", data__actions__0__note="Phoned")
    page = text(client.post(NEW_CONCERN, data=fill(form, add_row="data-actions")))
    page = text(client.post(NEW_CONCERN, data=fill(generated_form(page), add_row="data-actions")))
    assert 'id="remove-data-actions-2"' in page and value_of(page, "data-actions-0-note") == "Phoned"
    # remove the first row: the others move up, keeping what was typed in them
    form = fill(generated_form(page), data__actions__1__note="Visited", data__actions__1__date="2025-09-06")
    removed = text(client.post(NEW_CONCERN, data=fill(form, remove_row="data-actions-0")))
    assert value_of(removed, "data-actions-0-note") == "Visited" and 'id="data-actions-2-date"' not in removed
    assert re.search(r'id="add-data-actions"[^>]*autofocus', removed)
    # a row with a note but no date: the error lands on that row's date (empty rows are dropped)
    form = fill(generated_form(removed), data__actions__0__date="")
    refused = client.post(NEW_CONCERN, data=form)
    assert refused.status_code == 422
    page = text(refused)
    assert re.search(r'<p class="error" id="data-actions-0-date-error">.*Action date \(row 1\) is required', page)
    assert 'id="data-actions-1-date"' not in page  # the empty second row was dropped
    created = client.post(NEW_CONCERN, data=fill(generated_form(page), data__actions__0__date="2025-09-06"))
    assert created.status_code == 303
    item = stored(rt, int(created.headers["Location"].rsplit("/", 1)[1]))
    assert item.data["address"] == {"line1": "2 Low Rd", "postcode": "AB1 2CD"}
    assert item.data["actions"] == [{"date": "2025-09-06", "note": "Visited"}]


def test_conditional_field_is_required_when_it_applies_and_dropped_when_not(app, rt, learners):
    client = client_for(app, "clara")
    form = fill(
        generated_form(text(client.get(NEW_CONCERN))),
        subject=str(learners[0]),
        data__category="other",
        data__reported_on="2025-09-04",
        data__referred="y",
    )
    refused = client.post(NEW_CONCERN, data=form)
    assert refused.status_code == 422
    assert re.search(r'id="data-referred_to-error">.*Referred to is required', text(refused))
    # not referred: a value typed into the (no longer relevant) field is not saved
    created = client.post(NEW_CONCERN, data=fill(form, data__referred=None, data__referred_to="Police"))
    assert created.status_code == 303
    item = stored(rt, int(created.headers["Location"].rsplit("/", 1)[1]))
    assert "referred_to" not in item.data and "referred" not in item.data
    created = client.post(NEW_CONCERN, data=fill(form, data__referred_to="Police"))
    item = stored(rt, int(created.headers["Location"].rsplit("/", 1)[1]))
    assert item.data["referred"] is True and item.data["referred_to"] == "Police"


def test_finance_fields_are_neither_shown_nor_lost(app, rt, concern):
    with rt.session() as session:
        system(rt, session).update(concern, changes={"cost": 125.5})
    clara = client_for(app, "clara")
    url = f"/items/{concern}"
    page = text(clara.get(url))
    assert "data-cost" not in page and "125.5" not in page and "Cost to the provider" not in page
    saved = clara.post(url, data=fill(generated_form(page), data__hours="2"))
    assert saved.status_code == 303
    item = stored(rt, concern)
    assert item.data["cost"] == 125.5 and item.data["hours"] == 2
    assert "125.5" not in text(clara.get(url))
    admin = text(client_for(app, "ada").get(url))
    assert value_of(admin, "data-cost") == "125.5"
    assert "Cost to the provider" in admin  # in the history too, for those who may see it


def test_a_template_sets_finance_fields_the_user_may_not_see(app, rt, learners):
    client = client_for(app, "clara")
    url = "/items/new?type=apprenticeship&template=levy_funded"
    page = text(client.get(url))
    assert "data-employer_contribution" not in page
    assert re.search(r'id="data-funding_type-levy" value="levy" checked', page)
    form = fill(generated_form(page), subject=str(learners[0]), data__standard_code="298", data__employer_name="Acme")
    created = client.post(url, data=form)
    assert created.status_code == 303
    item = stored(rt, int(created.headers["Location"].rsplit("/", 1)[1]))
    assert item.data["employer_contribution"] == 0 and item.data["funding_type"] == "levy"


def test_fields_a_state_hides_are_not_shown_and_keep_their_values(app, rt, concern):
    with rt.session() as session:
        system(rt, session).update(concern, changes={"reference": "SC-0042", "outcome": "Pending"})
    workflow = rt.registry.workflows["safeguarding"]  # this app's own copy of the definitions
    workflow.state_fields["new"] = StateFields(hidden=("reference",), required=("hours",))
    client = client_for(app, "clara")
    url = f"/items/{concern}"
    page = text(client.get(url))
    form_part = page[: page.index('id="history"')]
    assert "data-reference" not in form_part and "SC-0042" not in form_part
    assert re.search(r'for="data-hours">Hours spent <span class="req"', page)
    refused = client.post(url, data=generated_form(page))
    assert refused.status_code == 422
    assert "Hours spent is required while the item is &#39;New&#39;" in refused.get_data(as_text=True)
    assert client.post(url, data=fill(generated_form(page), data__hours="1", data__outcome="")).status_code == 303
    item = stored(rt, concern)
    assert item.data["reference"] == "SC-0042" and item.data["hours"] == 1 and "outcome" not in item.data


def test_edit_saves_and_history_shows_old_and_new(app, rt, concern):
    client = client_for(app, "clara")
    url = f"/items/{concern}/edit"
    page = text(client.get(url))
    assert value_of(page, "version") == "2" and re.search(r'id="save"', page)
    form = fill(generated_form(page), data__severity="high", data__dsl_informed="y", description="Escalated")
    saved = client.post(url, data=form)
    assert saved.status_code == 303 and saved.headers["Location"] == f"/items/{concern}"
    page = text(client.get(saved.headers["Location"]))
    assert f"Saved #{concern}" in page
    history = page[page.index('id="history"') :]
    assert changed(history, "Severity", "Low", "High")
    assert changed(history, "DSL informed", "(empty)", "Yes")
    assert changed(history, "Description", "(empty)", "Escalated")
    assert "commented" not in history and "assigned it to clara" in history
    same = client.post(url, data=generated_form(text(client.get(url))))
    assert same.status_code == 303
    assert "Nothing was changed" in text(client.get(f"/items/{concern}"))
    # a rule that fails is shown on its field, with its advice
    refused = client.post(url, data=fill(generated_form(text(client.get(url))), data__dsl_informed=None))
    assert refused.status_code == 422
    page = text(refused)
    assert re.search(r'id="data-dsl_informed-error">.*High-severity concerns must be passed', page)
    assert 'Tick "DSL informed" and record the date' in page


def test_stale_save_shows_who_changed_what_and_keeps_the_input(app, rt, concern):
    clara = client_for(app, "clara")
    url = f"/items/{concern}"
    mine = fill(generated_form(text(clara.get(url))), data__hours="7", data__reference="SC-0007")
    dora = client_for(app, "dora")
    theirs = fill(generated_form(text(dora.get(url))), data__severity="none")
    assert dora.post(url, data=theirs).status_code == 303
    stale = clara.post(url, data=mine)
    assert stale.status_code == 409
    page = text(stale)
    conflict = page[page.index('id="conflict"') : page.index("</section>", page.index('id="conflict"'))]
    assert "changed by someone else since you opened it" in conflict
    assert "dora" in conflict and changed(conflict, "Severity", "Low", "None")
    assert "still in the form below" in conflict
    assert value_of(page, "data-hours") == "7" and value_of(page, "data-reference") == "SC-0007"
    assert value_of(page, "version") == str(stored(rt, concern).version)
    assert stored(rt, concern).data.get("hours") is None
    # dora's change is carried into the form, since clara did not touch that field
    assert re.search(r'id="data-severity-none" value="none" checked', page)
    again = clara.post(url, data=generated_form(page))
    assert again.status_code == 303
    item = stored(rt, concern)
    assert item.data["hours"] == 7 and item.data["reference"] == "SC-0007" and item.data["severity"] == "none"


def test_stale_save_of_a_field_both_changed_keeps_the_users_value_with_a_note(app, rt, concern):
    clara = client_for(app, "clara")
    url = f"/items/{concern}"
    mine = fill(generated_form(text(clara.get(url))), data__hours="3", description="Mine")
    dora = client_for(app, "dora")
    assert dora.post(url, data=fill(generated_form(text(dora.get(url))), data__hours="5")).status_code == 303
    stale = clara.post(url, data=mine)
    assert stale.status_code == 409
    page = text(stale)
    assert value_of(page, "data-hours") == "3" and "Mine</textarea>" in page
    note = re.search(r'id="data-hours-error">(.*?)</p>', page, re.S).group(1)
    assert "dora also changed Hours spent (to: 5); the form shows your value" in note
    assert changed(page, "Hours spent", "(empty)", "5")
    assert clara.post(url, data=generated_form(page)).status_code == 303
    assert stored(rt, concern).data["hours"] == 3 and stored(rt, concern).description == "Mine"


def test_read_only_state_shows_text_and_refuses_a_forged_change(app, rt, concern):
    with rt.session() as session:
        service = system(rt, session)
        service.transition(concern, "investigating")
        service.transition(concern, "closed", data={"outcome": "Resolved"})
    client = client_for(app, "ada")
    url = f"/items/{concern}"
    page = text(client.get(url))
    assert 'While the item is "Closed" its fields cannot be changed.' in page
    assert 'name="data-' not in page
    assert re.search(r'<span class="value" id="data-outcome"[^>]*>Resolved</span>', page)
    assert re.search(r'<span class="value" id="data-severity"[^>]*>Low</span>', page)
    # the description can still be saved; the stored fields are kept as they are
    assert client.post(url, data=fill(generated_form(page), description="Closed off")).status_code == 303
    assert stored(rt, concern).data["outcome"] == "Resolved"
    forged = fill(generated_form(text(client.get(url))), data__outcome="Changed")
    refused = client.post(url, data=forged)
    assert refused.status_code == 422
    assert "Outcome cannot be changed while the item is 'Closed'" in text(refused)
    assert stored(rt, concern).data["outcome"] == "Resolved"


def test_transition_asks_for_its_required_fields_in_the_same_step(app, rt, learners):
    with rt.session() as session:
        item_id = (
            system(rt, session)
            .create("concern", {"category": "online", "reported_on": "2025-09-01"}, subject_id=learners[0])
            .id
        )
    client = client_for(app, "dora")
    page = text(client.get(f"/items/{item_id}"))
    # "Start investigation" needs the severity: a GET form; "Withdraw" is only for the creator
    assert re.search(rf'<form method="get" action="/items/{item_id}/transition/start">', page)
    assert 'id="transition-start"' in page and 'id="transition-withdraw"' not in page
    assert "asks for Severity" in page
    url = f"/items/{item_id}/transition/start"
    step = client.get(url)
    assert step.status_code == 200
    page = text(step)
    assert 'id="data-severity-low"' in page and 'name="data-category"' not in page
    assert re.search(r"<legend>Severity <span class=\"req\"", page)
    missing = client.post(url, data=generated_form(page))
    assert missing.status_code == 422
    assert re.search(r"id=\"data-severity-error\">.*Severity must be filled to 'Start investigation'", text(missing))
    assert stored(rt, item_id).status == "new"
    # high severity breaks a rule about a field this step does not ask for: shown in the summary
    high = client.post(url, data=fill(generated_form(text(missing)), data__severity="high"))
    assert high.status_code == 422
    assert "High-severity concerns must be passed to the safeguarding lead" in text(high)
    moved = client.post(url, data=fill(generated_form(text(missing)), data__severity="low"))
    assert moved.status_code == 303
    item = stored(rt, item_id)
    assert item.status == "investigating" and item.data["severity"] == "low" and "started_on" in item.data
    assert "is now &#39;Investigating&#39;" in moved.get_data(as_text=True) or "Investigating" in text(
        client.get(f"/items/{item_id}")
    )


def test_transition_without_fields_is_a_button_and_refusals_say_why(app, rt, concern):
    clara = client_for(app, "clara")
    page = text(clara.get(f"/items/{concern}"))
    assert re.search(rf'<form method="post" action="/items/{concern}/transition/withdraw">', page)
    assert 'id="transition-start"' not in page  # only the DSL may start an investigation
    not_hers = clara.post(
        f"/items/{concern}/transition/start", data=form_of(page, f"/items/{concern}/transition/withdraw")
    )
    assert not_hers.status_code == 403
    assert "clara may not &#39;Start investigation&#39;" in not_hers.get_data(
        as_text=True
    ) or "clara may not 'Start investigation'" in text(not_hers)
    assert clara.get(f"/items/{concern}/transition/start").status_code == 403
    assert clara.get(f"/items/{concern}/transition/fly").status_code == 404
    withdrawn = clara.post(
        f"/items/{concern}/transition/withdraw", data=form_of(page, f"/items/{concern}/transition/withdraw")
    )
    assert withdrawn.status_code == 303 and stored(rt, concern).status == "withdrawn"
    # the same button again, now from a stale page: the item moved on meanwhile
    again = clara.post(
        f"/items/{concern}/transition/withdraw", data=form_of(page, f"/items/{concern}/transition/withdraw")
    )
    assert again.status_code == 409
    assert "changed by someone else since you opened it" in text(again)
    assert "moved it from New to Withdrawn" in text(again)


def test_assign_and_its_refusals(app, rt, concern, learners):
    clara = client_for(app, "clara")
    url = f"/items/{concern}"
    form = form_of(text(clara.get(url)), f"/items/{concern}/assign")
    assigned = clara.post(f"/items/{concern}/assign", data=fill(form, assignee="dora"))
    assert assigned.status_code == 303
    assert stored(rt, concern).assignee.username == "dora"
    page = text(clara.get(url))
    assert "is assigned to dora" in page and "assigned it to dora (was clara)" in page
    refused = clara.post(f"/items/{concern}/assign", data=fill(form, assignee="pay"))
    assert refused.status_code == 422
    page = text(refused)
    assert re.search(r'id="assignee-error">.*pay cannot see Safeguarding concern items', page)
    assert '<a href="#assignee">' in page
    with rt.session() as session:
        review = system(rt, session).create("concern_review", {}, subject_id=learners[0], assignee="dora").id
    ada = client_for(app, "ada")
    nobody = ada.post(
        f"/items/{review}/assign",
        data=fill(form_of(text(ada.get(f"/items/{review}")), f"/items/{review}/assign"), assignee=""),
    )
    assert nobody.status_code == 422 and "Every Concern review needs an assignee" in text(nobody)


def test_comments_and_an_empty_comment(app, concern):
    client = client_for(app, "clara")
    form = form_of(text(client.get(f"/items/{concern}")), f"/items/{concern}/comment")
    added = client.post(f"/items/{concern}/comment", data=fill(form, comment="Called the tutor"))
    assert added.status_code == 303 and added.headers["Location"].endswith("#history")
    assert "commented: Called the tutor" in text(client.get(f"/items/{concern}"))
    empty = client.post(f"/items/{concern}/comment", data=fill(form, comment="   "))
    assert empty.status_code == 422
    assert re.search(r'id="comment-error">.*The comment is empty', text(empty))


def test_missing_csrf_token_is_refused(app, rt, concern, learners):
    client = client_for(app, "clara")
    assert client.post(NEW_CONCERN, data={"subject": learners[0], "data-category": "online"}).status_code == 400
    for path in (
        f"/items/{concern}",
        f"/items/{concern}/assign",
        f"/items/{concern}/comment",
        f"/items/{concern}/transition/withdraw",
    ):
        assert client.post(path, data={"comment": "x", "version": "2"}).status_code == 400, path
    item = stored(rt, concern)
    assert item.status == "new" and item.version == 2


def test_read_only_user_sees_no_controls_and_cannot_post(app, concern):
    mona = client_for(app, "mona")
    page = text(mona.get(f"/items/{concern}"))
    assert "Online concern for Ann Smith" in page
    for control in ('id="save"', 'id="transition-', 'id="assign"', 'name="data-'):
        assert control not in page, control
    assert re.search(r'<span class="value" id="data-severity"[^>]*>Low</span>', page)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    assert mona.post(f"/items/{concern}", data={"csrf_token": token, "data-hours": "1"}).status_code == 403


def test_own_scope_user_gets_403_for_other_items(app, rt, concern):
    cass = client_for(app, "cass")
    for path in (f"/items/{concern}", f"/items/{concern}/transition/withdraw"):
        response = cass.get(path)
        assert response.status_code == 403
        assert "assigned to or created by them" in text(response)


def test_layout_hidden_fields_are_collapsed_and_open_when_filled(app, rt, learners):
    with rt.session() as session:
        item_id = (
            system(rt, session)
            .create("apprenticeship", {"standard_code": 298, "employer_name": "Acme"}, subject_id=learners[0])
            .id
        )
    client = client_for(app, "ada")
    page = text(client.get(f"/items/{item_id}"))
    assert re.search(r"<details class=\"more\">\s*<summary>More fields: Break in learning started", page)
    form = fill(generated_form(page), data__break_start_date="2025-01-01")
    page = text(client.post(f"/items/{item_id}", data=fill(form, add_row="data-reviews")))
    assert re.search(r"<details class=\"more\" open>\s*<summary>More fields: Break in learning started", page)
    assert re.search(r'id="data-reviews-0-type-progress"', page)
    form = fill(
        generated_form(page),
        data__reviews__0__date="2025-02-01",
        data__reviews__0__type="progress",
        data__reviews__0__outcome="on_track",
    )
    assert client.post(f"/items/{item_id}", data=form).status_code == 303
    item = stored(rt, item_id)
    assert item.data["reviews"] == [{"date": "2025-02-01", "type": "progress", "outcome": "on_track"}]
    assert item.data["break_start_date"] == "2025-01-01" and item.data["standard_code"] == 298
