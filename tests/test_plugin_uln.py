"""The ULN lookup plugin against a local Learning Records Service stand-in."""

from __future__ import annotations

import html
import json
import re
from datetime import date

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.models import Item
from engine.plugins import Invalid, LookupUnavailable, PluginHost
from plugins import uln
from plugins.jsonhttp import ServiceUnavailable
from plugins.uln import EXACT, NO_MATCH, POSSIBLE, TOO_MANY, Demographics, HttpUlnClient, UlnRefused, check_digit_ok
from tests import webhelpers
from tests.fake_apis import LRS_PASSWORD, LRS_UKPRN, LRS_USER, FakeLrs, running
from tests.webhelpers import cheap_hashing, create_users, post, sign_in  # noqa: F401 - an autouse fixture

new_app = webhelpers.new_app


@pytest.fixture
def fake_lrs():
    yield from running(FakeLrs())


JANE = Demographics("Jane", "Smith", date(2001, 2, 3), postcode="sw1a1aa")


def client(fake: FakeLrs, **overrides) -> HttpUlnClient:
    options = {"username": LRS_USER, "password": LRS_PASSWORD, "ukprn": LRS_UKPRN, **overrides}
    return HttpUlnClient(fake.url, **options)


# -- the check digit ----------------------------------------------------------------------------


@pytest.mark.parametrize("uln", ["1000000043", "1000000027", "1000000051", "9990000017"])
def test_real_ulns_pass_the_check_digit(uln):
    assert check_digit_ok(uln)


@pytest.mark.parametrize(
    "uln",
    [
        "1000000042",  # one digit off
        "1000000034",  # two digits swapped
        "9999999999",  # the temporary ULN
        "100000004",  # nine digits
        "10000000431",
        "100000004A",
        "",
        "1000000060",  # remainder 0 would need a check "digit" of 10: no such ULN
    ],
)
def test_anything_else_fails_the_check_digit(uln):
    assert not check_digit_ok(uln)


# -- the search -------------------------------------------------------------------------------


def test_an_exact_match_sends_the_lrs_search_shape(fake_lrs):
    found = client(fake_lrs).find(JANE)
    assert found.code == EXACT and found.exact
    assert [m.uln for m in found.matches] == ["1000000043"]
    assert found.matches[0].gender_label == "Female"
    request = fake_lrs.requests[0]
    assert (request.method, request.path) == ("POST", "/learners/find-by-demographics")
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "FindType": "FUL",
        "UKPRN": LRS_UKPRN,
        "GivenName": "Jane",
        "FamilyName": "Smith",
        "DateOfBirth": "2001-02-03",
        "LastKnownPostCode": "SW1A 1AA",
    }


def test_without_the_postcode_both_jane_smiths_are_possible_matches(fake_lrs):
    found = client(fake_lrs).find(Demographics("jane", "SMITH", date(2001, 2, 3)))
    assert found.code == POSSIBLE
    assert sorted(m.uln for m in found.matches) == ["1000000027", "1000000043"]
    assert "2 possible matches" in found.explain()


def test_no_match_and_too_many_explain_what_to_do(fake_lrs):
    assert client(fake_lrs).find(Demographics("Nobody", "Here", date(2000, 1, 1))).code == NO_MATCH
    fake_lrs.too_many = 1
    found = client(fake_lrs).find(Demographics("Jane", "Smith", date(2001, 2, 3)))
    assert found.code == TOO_MANY and found.matches == []
    assert "add the postcode" in found.explain()


def test_gender_narrows_the_search(fake_lrs):
    found = client(fake_lrs).find(Demographics("Jane", "Smith", date(2001, 2, 3), gender="1"))
    assert found.code == NO_MATCH
    assert fake_lrs.requests[0].json()["Gender"] == "1"


def test_wrong_credentials_are_refused_with_advice_for_the_admin(fake_lrs):
    with pytest.raises(UlnRefused, match="TRACKER_PLUGIN_ULN_PASSWORD"):
        client(fake_lrs, password="wrong").find(JANE)


def test_an_outage_and_a_silent_service_are_unavailable(fake_lrs):
    fake_lrs.outage = 503
    with pytest.raises(ServiceUnavailable):
        client(fake_lrs).find(JANE)
    fake_lrs.outage, fake_lrs.hang = None, True
    with pytest.raises(ServiceUnavailable, match="no answer"):
        client(fake_lrs, timeout=0.2).find(JANE)


def test_describe_names_the_endpoint_but_never_the_password(fake_lrs):
    text = client(fake_lrs).describe()
    assert fake_lrs.url in text and LRS_USER in text and LRS_UKPRN in text
    assert LRS_PASSWORD not in text


# -- the lookup the forms call, and the field check ---------------------------------------------

JANE_PARAMS = {"given_name": "Jane", "family_name": "Smith", "date_of_birth": "2001-02-03"}


def test_find_uln_offers_each_match_to_pick_and_fills_the_uln(fake_lrs):
    results = uln.lookup(client(fake_lrs), JANE_PARAMS)
    assert [r.values for r in results] == [{"uln": "1000000043"}, {"uln": "1000000027"}]
    assert results[0].label == "1000000043: Jane Smith (born 2001-02-03, SW1A 1AA, Female)"
    [exact] = uln.lookup(client(fake_lrs), {**JANE_PARAMS, "postcode": "SW1A 1AA"})
    assert exact.label.endswith("- exact match") and exact.values == {"uln": "1000000043"}


def test_a_match_whose_uln_fails_the_check_digit_is_never_offered(fake_lrs):
    fake_lrs.learners[1]["ULN"] = "1000000028"
    assert [r.values["uln"] for r in uln.lookup(client(fake_lrs), JANE_PARAMS)] == ["1000000043"]


def test_no_match_offers_nothing_and_too_many_says_what_to_add(fake_lrs):
    assert uln.lookup(client(fake_lrs), {**JANE_PARAMS, "given_name": "Janet"}) == []
    fake_lrs.too_many = 1
    with pytest.raises(Invalid, match="add the postcode"):
        uln.lookup(client(fake_lrs), JANE_PARAMS)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"given_name": "Jane", "family_name": "Smith"}, "Fill in the given name, family name and date of birth first"),
        ({**JANE_PARAMS, "date_of_birth": "3/2/2001"}, "'3/2/2001' is not a date of birth"),
    ],
)
def test_find_uln_needs_the_details_first_and_sends_nothing_without_them(fake_lrs, params, message):
    with pytest.raises(Invalid) as caught:
        uln.lookup(client(fake_lrs), params)
    assert caught.value.message == message
    assert fake_lrs.requests == []


def test_an_outage_or_refused_credentials_leave_the_form_usable(fake_lrs):
    fake_lrs.outage = 503
    with pytest.raises(LookupUnavailable, match="you can still save, with the temporary ULN 9999999999"):
        uln.lookup(client(fake_lrs), JANE_PARAMS)
    fake_lrs.outage = None
    with pytest.raises(LookupUnavailable, match="Tell an administrator"):
        uln.lookup(client(fake_lrs, password="wrong"), JANE_PARAMS)


def test_the_uln_field_check(fake_lrs):
    for fine in ("1000000043", "9999999999", "", None):
        uln.validate_uln(fine, {})
    with pytest.raises(Invalid, match="fails the check-digit test"):
        uln.validate_uln("1000000042", {})


def test_without_an_endpoint_no_lookup_is_offered(tmp_path, fake_lrs):
    bare = Settings(instance_path=tmp_path, secret_key="x")
    assert uln.client_from(bare) is None
    assert PluginHost(bare, plugins=[("uln", uln)], entry_points=False).lookups() == {}
    env = {
        "TRACKER_PLUGIN_ULN_URL": fake_lrs.url,
        "TRACKER_PLUGIN_ULN_USERNAME": LRS_USER,
        "TRACKER_PLUGIN_ULN_PASSWORD": LRS_PASSWORD,
        "TRACKER_PLUGIN_ULN_UKPRN": LRS_UKPRN,
    }
    settings = Settings(instance_path=tmp_path, secret_key="x", plugin_env=env)
    host = PluginHost(settings, plugins=[("uln", uln)], entry_points=False)
    _plugin, find = host.lookups()["uln"]
    assert find({**JANE_PARAMS, "postcode": "SW1A1AA"})[0].values == {"uln": "1000000043"}


# -- on the web: the learner form and the admin page (both databases) --------------------------


@pytest.fixture
def app(new_app, fake_lrs):
    env = {
        "TRACKER_PLUGIN_ULN_URL": fake_lrs.url,
        "TRACKER_PLUGIN_ULN_USERNAME": LRS_USER,
        "TRACKER_PLUGIN_ULN_PASSWORD": LRS_PASSWORD,
        "TRACKER_PLUGIN_ULN_UKPRN": LRS_UKPRN,
        "TRACKER_PLUGIN_ULN_TIMEOUT": "0.5",
    }
    app = new_app(settings={"plugin_env": env})
    create_users(app, clerk=["tracker_creator"], ada=["admin"])
    return app


def signed_in(app, who: str = "clerk"):
    client = app.test_client()
    sign_in(client, who)
    return client


def test_the_learner_form_has_find_uln_asking_with_name_birth_date_and_postcode(app):
    page = signed_in(app).get("/items/new?type=learner").get_data(as_text=True)
    button = re.search(r"<button[^>]*id=\"data-uln-lookup-button\"[^>]*>.*?</button>", page, re.S).group(0)
    assert ">Find ULN<" in button
    inputs = json.loads(html.unescape(re.search(r'data-lookup-inputs="([^"]*)"', button).group(1)))
    assert inputs == {
        "given_name": "given_name",
        "family_name": "family_name",
        "date_of_birth": "date_of_birth",
        "postcode": "postcode",
    }


def test_find_uln_answers_the_matches_and_the_chosen_uln_saves(app, fake_lrs):
    client = signed_in(app)
    answer = client.get("/lookups/uln?given_name=Jane&family_name=Smith&date_of_birth=2001-02-03&postcode=")
    assert answer.status_code == 200
    assert [r["values"]["uln"] for r in answer.get_json()["results"]] == ["1000000043", "1000000027"]
    form = {
        "data-given_name": "Jane",
        "data-family_name": "Smith",
        "data-date_of_birth": "2001-02-03",
        "data-uln": "1000000027",
    }
    saved = post(client, "/items/new?type=learner", form, token_from="/items/new?type=learner")
    assert saved.status_code == 303
    with app.extensions["tracker"].session() as session:
        assert session.scalars(select(Item).where(Item.type_key == "learner")).one().data["uln"] == "1000000027"


def test_a_uln_that_fails_the_check_digit_is_refused_at_save_and_nothing_is_saved(app):
    client = signed_in(app)
    form = {"data-given_name": "Jane", "data-family_name": "Smith", "data-date_of_birth": "2001-02-03"}
    refused = post(
        client, "/items/new?type=learner", {**form, "data-uln": "1000000042"}, token_from="/items/new?type=learner"
    )
    assert refused.status_code == 422
    assert "fails the check-digit test" in html.unescape(refused.get_data(as_text=True))
    with app.extensions["tracker"].session() as session:
        assert session.scalars(select(Item).where(Item.type_key == "learner")).all() == []


def test_find_uln_without_the_details_says_what_to_fill_in(app, fake_lrs):
    answer = signed_in(app).get("/lookups/uln?given_name=Jane&family_name=&date_of_birth=&postcode=")
    assert answer.status_code == 422
    assert answer.get_json()["message"] == "Fill in the given name, family name and date of birth first"
    assert fake_lrs.requests == []


def test_the_admin_page_shows_the_endpoint_never_the_password(app, fake_lrs):
    page = signed_in(app, "ada").get("/admin/uln").get_data(as_text=True)
    assert fake_lrs.url in page and LRS_USER in page and LRS_UKPRN in page
    assert LRS_PASSWORD not in page
    assert "TRACKER_PLUGIN_ULN_PASSWORD" in page and 'id="test-connection"' in page


@pytest.mark.parametrize(
    ("trouble", "flashed"),
    [
        (None, "The connection works: the Learning Records Service answered (WSRC0001)."),
        ("outage", "The connection failed: the Learning Records Service it answered 503"),
        ("hang", "no answer within 0.5 seconds"),
        ("password", "refused the search"),
    ],
)
def test_test_connection_reports_what_happened(app, fake_lrs, trouble, flashed):
    if trouble == "outage":
        fake_lrs.outage = 503
    elif trouble == "hang":
        fake_lrs.hang = True
    elif trouble == "password":
        fake_lrs.learners.clear()
        app.extensions["tracker"].settings.plugin_env["TRACKER_PLUGIN_ULN_PASSWORD"] = "wrong"
    client = signed_in(app, "ada")
    tested = post(client, "/admin/uln/test", token_from="/admin/uln")
    assert tested.status_code == 303 and tested.headers["Location"].endswith("/admin/uln")
    assert flashed in html.unescape(client.get("/admin/uln").get_data(as_text=True))
    request = fake_lrs.requests[0].json()
    assert (request["GivenName"], request["FamilyName"]) == ("Connection", "Test")


def test_only_user_admins_see_the_admin_page_and_its_header_link(app):
    assert '<a href="/admin/uln">ULN lookup</a>' in signed_in(app, "ada").get("/").get_data(as_text=True)
    client = signed_in(app)
    assert 'href="/admin/uln"' not in client.get("/").get_data(as_text=True)
    assert client.get("/admin/uln").status_code == 403
    assert post(client, "/admin/uln/test").status_code == 403
    assert app.test_client().get("/admin/uln").status_code == 302  # to the sign-in page


def test_without_an_endpoint_the_admin_page_says_how_to_set_one_up_and_the_form_has_no_button(new_app):
    app = new_app()
    create_users(app, ada=["admin"])
    client = signed_in(app, "ada")
    page = client.get("/admin/uln").get_data(as_text=True)
    assert "The ULN lookup is not set up" in page and 'id="test-connection"' not in page
    assert "data-uln-lookup-button" not in client.get("/items/new?type=learner").get_data(as_text=True)
    tested = post(client, "/admin/uln/test", token_from="/admin/uln")
    assert "There is nothing to test" in html.unescape(client.get(tested.headers["Location"]).get_data(as_text=True))
