"""The Companies House plugin against a local server speaking the public data API."""

from __future__ import annotations

import base64
import html
import re

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.models import Item
from engine.plugins import Invalid, LookupUnavailable, PluginHost
from plugins import companies_house
from plugins.companies_house import (
    CompaniesHouseClient,
    CompaniesHouseRefused,
    CompanyNumberInvalid,
    normalise_number,
)
from plugins.jsonhttp import ServiceUnavailable
from tests import webhelpers
from tests.fake_apis import CH_KEY, FakeCompaniesHouse, running
from tests.webhelpers import cheap_hashing, create_users, post, sign_in  # noqa: F401 - an autouse fixture

new_app = webhelpers.new_app


@pytest.fixture
def fake_companies_house():
    yield from running(FakeCompaniesHouse())


# -- company numbers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "expected"),
    [("04828784", "04828784"), ("4828784", "04828784"), ("sc123456", "SC123456"), (" SC 123456 ", "SC123456")],
)
def test_company_numbers_are_written_as_companies_house_writes_them(typed, expected):
    assert normalise_number(typed) == expected


@pytest.mark.parametrize("typed", ["", "123456789", "S1234567", "SCX23456", "04828784/", "../admin"])
def test_anything_else_is_refused_saying_what_a_number_looks_like(typed):
    with pytest.raises(CompanyNumberInvalid) as caught:
        normalise_number(typed)
    message = str(caught.value)
    assert "is not a company number" in message and "8 digits" in message and "SC123456" in message


# -- the client ---------------------------------------------------------------------------------


def test_a_company_gives_its_registered_name_and_office(fake_companies_house):
    company = CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("4828784")
    assert company.name == "NEW FOREST TRAINING LIMITED" and company.active
    assert company.values() == {
        "name": "NEW FOREST TRAINING LIMITED",
        "company_number": "04828784",
        "status": "active",
        "line1": "1 High Street",
        "line2": "Old Town",
        "town": "Lymington",
        "region": "Hampshire",
        "postcode": "SO41 8AN",
        "country": "England",
    }
    request = fake_companies_house.requests[0]
    assert (request.method, request.path) == ("GET", "/company/04828784")
    # the API key is the basic-auth user name, with no password
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{CH_KEY}:".encode()).decode()


def test_premises_come_before_the_street(fake_companies_house):
    company = CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("SC123456")
    assert company.line1 == "Unit 4, Leith Walk"
    assert company.town == "Edinburgh" and company.postcode == "EH1 1YZ"


def test_a_dissolved_company_says_so(fake_companies_house):
    company = CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("01234567")
    assert not company.active
    assert company.summary().startswith("GONE BEFORE LIMITED (dissolved), 01234567")


def test_an_unknown_company_is_none(fake_companies_house):
    assert CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("09999999") is None


def test_an_invalid_number_is_never_sent(fake_companies_house):
    with pytest.raises(CompanyNumberInvalid):
        CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("12/34")
    assert fake_companies_house.requests == []


def test_a_wrong_key_and_the_rate_limit_are_refusals_with_advice(fake_companies_house):
    with pytest.raises(CompaniesHouseRefused, match="TRACKER_PLUGIN_COMPANIES_HOUSE_KEY"):
        CompaniesHouseClient("wrong-key", fake_companies_house.url).company("04828784")
    fake_companies_house.rate_limited = True
    with pytest.raises(CompaniesHouseRefused, match="try again in a few minutes"):
        CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("04828784")


def test_an_outage_and_a_silent_service_are_unavailable(fake_companies_house):
    fake_companies_house.outage = 502
    with pytest.raises(ServiceUnavailable, match="502"):
        CompaniesHouseClient(CH_KEY, fake_companies_house.url).company("04828784")
    fake_companies_house.outage, fake_companies_house.hang = None, True
    with pytest.raises(ServiceUnavailable, match="no answer"):
        CompaniesHouseClient(CH_KEY, fake_companies_house.url, timeout=0.2).company("04828784")


# -- the lookup the forms call, and the field check ---------------------------------------------


def test_the_lookup_fills_the_employers_name_number_and_address(fake_companies_house):
    client = CompaniesHouseClient(CH_KEY, fake_companies_house.url)
    [result] = companies_house.lookup(client, {"q": "4828784"})
    assert result.label == "NEW FOREST TRAINING LIMITED, 04828784: 1 High Street, Old Town, Lymington, SO41 8AN"
    assert result.values == {
        "name": "NEW FOREST TRAINING LIMITED",
        "company_number": "04828784",
        "address": {
            "line1": "1 High Street",
            "line2": "Old Town",
            "town": "Lymington",
            "region": "Hampshire",
            "postcode": "SO41 8AN",
            "country": "England",
        },
    }
    assert companies_house.lookup(client, {"q": "09999999"}) == []


@pytest.mark.parametrize(
    ("typed", "message"), [("", "Type a company number first"), ("ABC", "'ABC' is not a company number")]
)
def test_the_lookup_refuses_a_malformed_number_with_a_clear_message(fake_companies_house, typed, message):
    with pytest.raises(Invalid) as caught:
        companies_house.lookup(CompaniesHouseClient(CH_KEY, fake_companies_house.url), {"q": typed})
    assert caught.value.message == message
    assert "8 digits" in caught.value.advice and "SC123456" in caught.value.advice
    assert fake_companies_house.requests == []


def test_outages_rate_limits_and_a_wrong_key_leave_the_form_usable(fake_companies_house):
    client = CompaniesHouseClient(CH_KEY, fake_companies_house.url)
    fake_companies_house.outage = 503
    with pytest.raises(LookupUnavailable, match="unavailable just now; you can still save"):
        companies_house.lookup(client, {"q": "04828784"})
    fake_companies_house.outage, fake_companies_house.rate_limited = None, True
    with pytest.raises(LookupUnavailable, match="try again in a few minutes"):
        companies_house.lookup(client, {"q": "04828784"})
    fake_companies_house.rate_limited = False
    with pytest.raises(LookupUnavailable, match="refused the API key"):
        companies_house.lookup(CompaniesHouseClient("nope", fake_companies_house.url), {"q": "04828784"})


def test_the_company_number_field_check():
    for fine in ("04828784", "SC123456", "", None):
        companies_house.validate_company_number(fine, {})
    for wrong in ("4828784", "sc123456", "SC12345", 4828784):
        with pytest.raises(Invalid, match="is not a company number"):
            companies_house.validate_company_number(wrong, {})


def test_without_a_key_no_lookup_is_offered(tmp_path, fake_companies_house):
    bare = Settings(instance_path=tmp_path, secret_key="x")
    assert PluginHost(bare, plugins=[("companies_house", companies_house)], entry_points=False).lookups() == {}
    env = {"TRACKER_PLUGIN_COMPANIES_HOUSE_KEY": CH_KEY, "TRACKER_PLUGIN_COMPANIES_HOUSE_URL": fake_companies_house.url}
    settings = Settings(instance_path=tmp_path, secret_key="x", plugin_env=env)
    host = PluginHost(settings, plugins=[("companies_house", companies_house)], entry_points=False)
    _plugin, find = host.lookups()["companies_house"]
    assert find({"q": "SC123456"})[0].values["address"]["town"] == "Edinburgh"


# -- on the employer form (both databases) ------------------------------------------------------


@pytest.fixture
def app(new_app, fake_companies_house):
    env = {
        "TRACKER_PLUGIN_COMPANIES_HOUSE_KEY": CH_KEY,
        "TRACKER_PLUGIN_COMPANIES_HOUSE_URL": fake_companies_house.url,
        "TRACKER_PLUGIN_COMPANIES_HOUSE_TIMEOUT": "0.5",
    }
    app = new_app(settings={"plugin_env": env})
    create_users(app, clerk=["tracker_creator"])
    return app


@pytest.fixture
def client(app):
    client = app.test_client()
    sign_in(client, "clerk")
    return client


def test_the_employer_form_looks_the_number_up_on_companies_house(client):
    page = client.get("/items/new?type=employer").get_data(as_text=True)
    button = re.search(r"<button[^>]*id=\"data-company_number-lookup-button\"[^>]*>.*?</button>", page, re.S).group(0)
    assert ">Look up on Companies House<" in button and 'data-lookup-name="companies_house"' in button
    # the fields its answer fills are on the same form, under the names the answer uses
    for name in ("data-name", "data-address-line1", "data-address-line2", "data-address-town", "data-address-postcode"):
        assert f'id="{name}"' in page


def test_the_lookup_endpoint_fills_name_and_address_and_the_employer_saves(app, client):
    answer = client.get("/lookups/companies_house?q=04828784")
    assert answer.status_code == 200
    [result] = answer.get_json()["results"]
    values = result["values"]
    form = {
        "data-name": values["name"],
        "data-company_number": values["company_number"],
        **{f"data-address-{k}": v for k, v in values["address"].items() if k in ("line1", "line2", "town", "postcode")},
    }
    saved = post(client, "/items/new?type=employer", form, token_from="/items/new?type=employer")
    assert saved.status_code == 303, saved.get_data(as_text=True)
    with app.extensions["tracker"].session() as session:
        employer = session.scalars(select(Item).where(Item.type_key == "employer")).one()
        assert employer.data["name"] == "NEW FOREST TRAINING LIMITED"
        assert employer.data["address"] == {
            "line1": "1 High Street",
            "line2": "Old Town",
            "town": "Lymington",
            "postcode": "SO41 8AN",
        }


@pytest.mark.parametrize(
    ("query", "status", "message"),
    [
        ("ABC", 422, "'ABC' is not a company number"),
        ("09999999", 200, "Nothing was found."),
    ],
)
def test_the_lookup_endpoint_explains_a_bad_or_unknown_number(client, query, status, message):
    answer = client.get(f"/lookups/companies_house?q={query}")
    assert answer.status_code == status and answer.get_json()["message"] == message


def test_when_companies_house_is_down_the_lookup_says_so_and_the_employer_still_saves(
    app, client, fake_companies_house
):
    fake_companies_house.hang = True
    answer = client.get("/lookups/companies_house?q=04828784")
    assert answer.status_code == 503 and "unavailable just now" in answer.get_json()["message"]
    form = {
        "data-name": "New Forest Training",
        "data-company_number": "04828784",
        "lookup_unavailable": "companies_house",
    }
    saved = post(client, "/items/new?type=employer", form, token_from="/items/new?type=employer")
    assert saved.status_code == 303
    page = html.unescape(client.get(saved.headers["Location"]).get_data(as_text=True))
    assert "Companies House lookup is unavailable just now; the item was saved without it." in page


@pytest.mark.parametrize("typed", ["4828784", "SC12345", "sc123456", "04828784X"])
def test_a_malformed_company_number_is_refused_with_a_clear_message_and_nothing_saved(app, client, typed):
    refused = post(
        client,
        "/items/new?type=employer",
        {"data-name": "Acme", "data-company_number": typed},
        token_from="/items/new?type=employer",
    )
    assert refused.status_code == 422
    page = html.unescape(refused.get_data(as_text=True))
    assert "Company number is not in the expected format" in page
    assert "Enter 8 digits (for example 04828784) or two capital letters and 6 digits (for example SC123456)" in page
    with app.extensions["tracker"].session() as session:
        assert session.scalars(select(Item).where(Item.type_key == "employer")).all() == []
