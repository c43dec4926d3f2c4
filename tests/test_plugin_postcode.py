"""The postcode lookup plugin against a local postcodes.io-compatible server."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.models import Item
from engine.plugins import Invalid, LookupUnavailable, PluginHost
from plugins import postcode
from plugins.jsonhttp import ServiceUnavailable
from plugins.postcode import PostcodeClient, normalise
from tests import webhelpers
from tests.fake_apis import FakePostcodes, running
from tests.webhelpers import cheap_hashing, create_users, post, sign_in  # noqa: F401 - an autouse fixture

new_app = webhelpers.new_app


@pytest.fixture
def fake_postcodes():
    yield from running(FakePostcodes())


# -- the client --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [
        ("SW1A 1AA", "SW1A 1AA"),
        ("sw1a1aa", "SW1A 1AA"),
        ("  so41   8an ", "SO41 8AN"),
        ("M1 1AE", "M1 1AE"),
        ("B33 8TH", "B33 8TH"),
        ("SW1A", None),
        ("12345", None),
        ("", None),
        ("SW1A 1AA; DROP", None),
    ],
)
def test_normalise_writes_postcodes_the_royal_mail_way_or_refuses(typed, expected):
    assert normalise(typed) == expected


def test_lookup_reads_district_region_and_country(fake_postcodes: FakePostcodes):
    found = PostcodeClient(fake_postcodes.url).lookup("so41 8an")
    assert found is not None
    assert (found.postcode, found.district, found.region, found.country) == (
        "SO41 8AN",
        "New Forest",
        "South East",
        "England",
    )
    assert found.county == "Hampshire" and found.latitude == pytest.approx(50.758)
    assert found.summary() == "SO41 8AN: New Forest, South East, England"
    # the request is the service's own shape: the postcode as one path segment
    assert [(r.method, r.path) for r in fake_postcodes.requests] == [("GET", "/postcodes/SO41 8AN")]
    assert fake_postcodes.requests[0].headers["accept"] == "application/json"


def test_a_scottish_postcode_has_no_region_and_offers_none(fake_postcodes):
    found = PostcodeClient(fake_postcodes.url).lookup("EH1 1YZ")
    assert found.region is None
    values = found.values()
    assert "region" not in values
    assert values["district"] == "City of Edinburgh"
    assert values["country"] == "Scotland"


def test_an_unknown_postcode_is_none_and_not_an_outage(fake_postcodes):
    client = PostcodeClient(fake_postcodes.url)
    assert client.lookup("ZZ1 9ZZ") is None
    assert fake_postcodes.requests[-1].path == "/postcodes/ZZ1 9ZZ"


def test_text_that_is_no_postcode_is_never_sent(fake_postcodes):
    assert PostcodeClient(fake_postcodes.url).lookup("not a postcode/../../admin") is None
    assert fake_postcodes.requests == []


def test_validate_and_autocomplete(fake_postcodes):
    client = PostcodeClient(fake_postcodes.url)
    assert client.validate("sw1a 1aa") is True
    assert client.validate("ZZ1 9ZZ") is False
    assert client.autocomplete("so4") == ["SO41 8AN"]
    assert client.autocomplete("q") == []  # too short to ask


@pytest.mark.parametrize("status", [500, 502, 503])
def test_a_5xx_is_an_outage(fake_postcodes, status):
    fake_postcodes.outage = status
    with pytest.raises(ServiceUnavailable) as caught:
        PostcodeClient(fake_postcodes.url).lookup("SW1A 1AA")
    assert str(status) in caught.value.reason


def test_a_service_that_does_not_answer_is_an_outage_after_the_timeout(fake_postcodes):
    fake_postcodes.hang = True
    with pytest.raises(ServiceUnavailable) as caught:
        PostcodeClient(fake_postcodes.url, timeout=0.2).lookup("SW1A 1AA")
    assert "no answer within 0.2 seconds" in caught.value.reason


def test_a_service_that_is_not_there_is_an_outage(fake_postcodes):
    url = fake_postcodes.url
    fake_postcodes.stop()
    with pytest.raises(ServiceUnavailable) as caught:
        PostcodeClient(url, timeout=1).lookup("SW1A 1AA")
    assert "could not be reached" in caught.value.reason


def test_an_answer_that_is_not_json_is_an_outage(fake_postcodes, monkeypatch):
    monkeypatch.setattr(FakePostcodes, "route", lambda self, request: (200, b"<html>captive portal</html>", {}))
    with pytest.raises(ServiceUnavailable, match="not JSON"):
        PostcodeClient(fake_postcodes.url).lookup("SW1A 1AA")


# -- the lookup the forms call ----------------------------------------------------------------


def test_the_lookup_offers_the_fields_a_schema_can_fill(fake_postcodes):
    [result] = postcode.lookup(PostcodeClient(fake_postcodes.url), {"q": "sw1a1aa"})
    assert result.label == "SW1A 1AA: Westminster, London, England"
    assert result.values["postcode"] == "SW1A 1AA"
    assert (result.values["district"], result.values["region"], result.values["country"]) == (
        "Westminster",
        "London",
        "England",
    )
    assert "town" not in result.values  # the local authority is not the post town


def test_the_lookup_of_an_unknown_postcode_offers_nothing(fake_postcodes):
    assert postcode.lookup(PostcodeClient(fake_postcodes.url), {"q": "ZZ1 9ZZ"}) == []


@pytest.mark.parametrize(("typed", "message"), [("", "Type a postcode first"), ("SW1A", "'SW1A' is not a UK postcode")])
def test_the_lookup_refuses_text_that_is_no_postcode(fake_postcodes, typed, message):
    with pytest.raises(Invalid) as caught:
        postcode.lookup(PostcodeClient(fake_postcodes.url), {"q": typed})
    assert caught.value.message == message and "SW1A 1AA" in caught.value.advice
    assert fake_postcodes.requests == []


@pytest.mark.parametrize("trouble", ["outage", "hang"])
def test_when_the_service_is_down_or_slow_the_lookup_says_the_form_still_saves(fake_postcodes, trouble):
    setattr(fake_postcodes, trouble, 503 if trouble == "outage" else True)
    with pytest.raises(LookupUnavailable) as caught:
        postcode.lookup(PostcodeClient(fake_postcodes.url, timeout=0.2), {"q": "SW1A 1AA"})
    assert caught.value.message == "Postcode lookup is unavailable just now; you can still save, without it."


def test_the_plugin_reads_its_settings_and_gives_the_lookup(tmp_path, fake_postcodes):
    settings = Settings(
        instance_path=tmp_path,
        secret_key="x",
        plugin_env={"TRACKER_PLUGIN_POSTCODE_URL": fake_postcodes.url, "TRACKER_PLUGIN_POSTCODE_TIMEOUT": "1.5"},
    )
    host = PluginHost(settings, plugins=[("postcode", postcode)], entry_points=False)
    plugin, find = host.lookups()["postcode"]
    assert plugin == "postcode"
    assert find({"q": "EH1 1YZ"})[0].values["district"] == "City of Edinburgh"
    assert postcode.client_from(settings).timeout == 1.5
    assert postcode.client_from(Settings(instance_path=tmp_path, secret_key="x")).base_url == postcode.DEFAULT_URL


# -- on the learner form ------------------------------------------------------------------------


@pytest.fixture
def app_with(new_app, fake_postcodes):
    """An app whose postcode lookup asks the fake (more settings as keyword arguments)."""

    def make(**plugin_env: str):
        env = {"TRACKER_PLUGIN_POSTCODE_URL": fake_postcodes.url, "TRACKER_PLUGIN_POSTCODE_TIMEOUT": "0.5"}
        app = new_app(settings={"plugin_env": {**env, **plugin_env}})
        create_users(app, clerk=["tracker_creator"])
        return app

    return make


def signed_in(app):
    client = app.test_client()
    sign_in(client, "clerk")
    return client


def test_the_learner_form_offers_a_postcode_lookup_that_runs_as_the_postcode_is_typed(app_with):
    client = signed_in(app_with())
    page = client.get("/items/new?type=learner").get_data(as_text=True)
    button = re.search(r"<button[^>]*id=\"data-postcode-lookup-button\"[^>]*>", page).group(0)
    assert 'data-lookup-name="postcode"' in button and "data-lookup-auto" in button
    assert "hidden" in button  # forms.js shows it; without JavaScript the form is the plain one
    assert 'id="data-district"' in page and 'id="data-region"' in page


def test_the_lookup_endpoint_answers_with_the_fields_to_fill(app_with, fake_postcodes):
    client = signed_in(app_with())
    answer = client.get("/lookups/postcode?q=so41%208an")
    assert answer.status_code == 200
    [result] = answer.get_json()["results"]
    assert result["values"]["district"] == "New Forest" and result["values"]["region"] == "South East"
    fake_postcodes.outage = 503
    down = client.get("/lookups/postcode?q=SO41 8AN")
    assert down.status_code == 503
    assert down.get_json()["message"] == "Postcode lookup is unavailable just now; you can still save, without it."
    not_one = client.get("/lookups/postcode?q=SO41")
    assert not_one.status_code == 422 and "is not a UK postcode" in not_one.get_json()["message"]


def test_when_the_lookup_was_down_the_learner_still_saves_with_a_note(app_with, fake_postcodes):
    app = app_with()
    client = signed_in(app)
    fake_postcodes.hang = True  # slow: the browser's lookup timed out, and forms.js marked the form
    data = {
        "data-given_name": "Ann",
        "data-family_name": "Lee",
        "data-date_of_birth": "2001-02-03",
        "data-postcode": "SO41 8AN",
        "lookup_unavailable": ["postcode", "made-up"],
    }
    response = post(client, "/items/new?type=learner", data, token_from="/items/new?type=learner")
    assert response.status_code == 303, response.get_data(as_text=True)
    page = client.get(response.headers["Location"]).get_data(as_text=True)
    assert "Postcode lookup is unavailable just now; the item was saved without it." in page
    assert "Made-Up lookup" not in page  # only lookups that exist are named
    with app.extensions["tracker"].session() as session:
        learner = session.scalars(select(Item).where(Item.type_key == "learner")).one()
        assert learner.data["postcode"] == "SO41 8AN" and "district" not in learner.data


def test_a_postcode_lookup_switched_off_leaves_a_plain_field(new_app, fake_postcodes):
    app = new_app(settings={"plugins_disabled": ("postcode",)})
    create_users(app, clerk=["tracker_creator"])
    page = signed_in(app).get("/items/new?type=learner").get_data(as_text=True)
    assert 'id="data-postcode"' in page and "data-postcode-lookup-button" not in page
