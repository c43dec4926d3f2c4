"""The SMS plugin: phone numbers, the gateway client against a local server speaking the
Twilio-style API, reminders by text to users who opted in, gateway errors retried through
the outbox, the opt-in page, the command line and the ``mobile_number`` field check."""

from __future__ import annotations

import base64
import secrets
import urllib.parse
from datetime import date, timedelta

import pytest
from sqlalchemy import select

from engine.config import Settings
from engine.errors import ValidationFailed
from engine.models import Delivery, Notification, Outbox, User, utcnow
from engine.permissions import Actor
from engine.plugins import Invalid, PluginHost
from engine.reminders import send_due_reminders
from plugins.jsonhttp import ServiceUnavailable
from plugins.sms import GatewayError, SmsGateway, Subscriptions, normalise_phone
from tests.conftest import TEST_DEFINITIONS
from tests.fake_apis import FakeApi, Recorded
from tests.notify_helpers import NOTIFY_DEFINITIONS
from tests.plugin_helpers import *  # noqa: F403 - fixtures
from tests.plugin_helpers import write_type
from tests.webhelpers import create_users, csrf, sign_in

SID, TOKEN, SENDER = "AC5ef8732a3c49700934481addd5ce1659", "secret-token", "+447700900000"


class FakeSmsGateway(FakeApi):
    """An SMS gateway with Twilio's REST shape: ``POST /2010-04-01/Accounts/{sid}/Messages.json``,
    form-encoded To/From/Body, HTTP basic authentication; 201 with ``sid`` and ``status``, or an
    error body with ``code``, ``message``, ``more_info`` and ``status``. ``refuse_next`` answers
    the next requests with 429 (code 20429, too many requests)."""

    refuse_next: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.accepted: list[dict[str, str]] = []

    def route(self, request: Recorded):
        if request.method != "POST" or request.path != f"/2010-04-01/Accounts/{SID}/Messages.json":
            return 404, {"code": 20404, "message": "The requested resource was not found", "status": 404}, {}
        auth = request.headers.get("authorization", "")
        if auth != "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode():
            return 401, {"code": 20003, "message": "Authenticate", "status": 401}, {}
        form = dict(urllib.parse.parse_qsl(request.body.decode()))
        if self.refuse_next:
            self.refuse_next -= 1
            return 429, {"code": 20429, "message": "Too Many Requests", "status": 429}, {}
        to = form.get("To", "")
        if not to.startswith("+") or not to[1:].isdigit():
            return (
                400,
                {"code": 21211, "message": f"The 'To' number {to} is not a valid phone number.", "status": 400},
                {},
            )
        self.accepted.append(form)
        sid = "SM" + secrets.token_hex(16)
        body = {"sid": sid, "status": "queued", "to": to, "from": form.get("From"), "body": form.get("Body")}
        return 201, body, {}

    def sent(self) -> list[dict[str, str]]:
        """The messages the gateway accepted."""
        return self.accepted


@pytest.fixture
def gateway():
    fake = FakeSmsGateway().start()
    yield fake
    fake.stop()


def sms_env(gateway: FakeSmsGateway, **extra: str) -> dict[str, str]:
    return {
        "TRACKER_PLUGIN_SMS_BASE_URL": gateway.url + "/2010-04-01",
        "TRACKER_PLUGIN_SMS_ACCOUNT_SID": SID,
        "TRACKER_PLUGIN_SMS_AUTH_TOKEN": TOKEN,
        "TRACKER_PLUGIN_SMS_FROM": SENDER,
        "TRACKER_PLUGIN_SMS_TIMEOUT": "5",
        **extra,
    }


# -- phone numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("typed", "e164"),
    [
        ("07700 900123", "+447700900123"),
        ("07700-900-123", "+447700900123"),
        ("+44 (0)7700 900123", "+447700900123"),
        ("0044 7700 900123", "+447700900123"),
        ("447700900123", "+447700900123"),
        (" +44 7700 900 123 ", "+447700900123"),
        ("+353 85 123 4567", "+353851234567"),
        ("+1 (415) 555-0134", "+14155550134"),
    ],
)
def test_numbers_are_normalised_to_e164(typed, e164):
    assert normalise_phone(typed) == e164


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("", "is empty"),
        ("12345", "'12345' is not a phone number"),
        ("0113 496 0000", "'0113 496 0000' is not a UK mobile number"),
        ("+44 20 7946 0000", "is not a UK mobile number"),
        ("07700 90012", "is not a UK mobile number"),
        ("call me", "'call me' is not a phone number"),
        ("+0 123 456 789", "is not a phone number"),
    ],
)
def test_a_number_that_cannot_take_texts_is_refused_with_advice(typed, message):
    with pytest.raises(Invalid) as refused:
        normalise_phone(typed)
    assert message in refused.value.message
    assert "07700 900123" in refused.value.advice


# -- the gateway client ------------------------------------------------------------------------------


def client_for(gateway: FakeSmsGateway, **env: str) -> SmsGateway:
    return SmsGateway.from_settings(Settings(secret_key="x", plugin_env=sms_env(gateway, **env)))


def test_a_message_is_posted_in_the_gateway_s_request_shape(gateway):
    sent = client_for(gateway).send("+447700900123", "Reminder: review on Friday http://tracker.test/items/4")
    assert sent.sid.startswith("SM") and sent.status == "queued"
    [request] = gateway.requests
    assert request.method == "POST" and request.path == f"/2010-04-01/Accounts/{SID}/Messages.json"
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["authorization"] == "Basic " + base64.b64encode(f"{SID}:{TOKEN}".encode()).decode()
    assert gateway.sent() == [
        {"To": "+447700900123", "From": SENDER, "Body": "Reminder: review on Friday http://tracker.test/items/4"}
    ]


def test_gateway_errors_carry_its_code_and_message(gateway):
    with pytest.raises(GatewayError) as refused:
        client_for(gateway).send("07700900123", "hello")
    assert refused.value.code == 21211 and "is not a valid phone number" in str(refused.value)
    with pytest.raises(GatewayError) as denied:
        client_for(gateway, TRACKER_PLUGIN_SMS_AUTH_TOKEN="wrong").send("+447700900123", "hello")
    assert denied.value.status == 401 and denied.value.code == 20003 and "Authenticate" in str(denied.value)
    gateway.outage = 503
    with pytest.raises(ServiceUnavailable) as down:
        client_for(gateway).send("+447700900123", "hello")
    assert "503" in str(down.value)


def test_the_gateway_is_off_until_configured_and_names_a_missing_setting(gateway):
    assert SmsGateway.from_settings(Settings(secret_key="x")) is None
    from engine.errors import TrackerError

    with pytest.raises(TrackerError) as missing:
        SmsGateway.from_settings(Settings(secret_key="x", plugin_env={"TRACKER_PLUGIN_SMS_BASE_URL": gateway.url}))
    assert "TRACKER_PLUGIN_SMS_ACCOUNT_SID" in missing.value.message


# -- reminders by text -------------------------------------------------------------------------------


@pytest.fixture
def sms_runtime(runtime_with, gateway):
    rt = runtime_with(
        PluginHost(Settings(secret_key="x")),
        definitions_path=[TEST_DEFINITIONS, NOTIFY_DEFINITIONS],
        plugin_env=sms_env(gateway),
    )
    with rt.session() as session:
        users = rt.users(session)
        for name in ("ann", "bob", "cat"):
            users.create(name, ["assessor"], email=None)
        ids = {u.username: u.id for u in session.scalars(select(User))}
        subs = Subscriptions(session)
        subs.save(ids["ann"], "07700 900123", True)
        subs.save(ids["cat"], "07700 900456", False)  # a number, but no opt-in
    return rt


def meeting(rt, assignee: str, days: int) -> int:
    with rt.session() as session:
        item = rt.items(session, Actor.system()).create(
            "meeting",
            {"topic": f"Review with {assignee}", "meeting_date": (date.today() + timedelta(days=days)).isoformat()},
            assignee=assignee,
        )
        return item.id


def test_reminders_go_by_text_to_users_who_opted_in(sms_runtime, gateway):
    rt = sms_runtime
    ann_item, bob_item, cat_item = meeting(rt, "ann", 3), meeting(rt, "bob", 3), meeting(rt, "cat", 3)
    assert gateway.sent() == []  # being assigned is not texted unless the user asks for it
    with rt.session() as session:
        assert send_due_reminders(session, rt.registry, date.today()) == 3
    [text] = gateway.sent()
    assert text["To"] == "+447700900123" and text["From"] == SENDER
    assert text["Body"].startswith("Reminder: Meeting date of Review with ann is in 3 days")
    assert text["Body"].endswith(f"http://tracker.test/items/{ann_item}")
    with rt.session() as session:
        sms = {d.user_id: d for d in session.scalars(select(Delivery).where(Delivery.channel == "sms"))}
        ids = {u.username: u.id for u in session.scalars(select(User))}
        assert sms[ids["ann"]].status == "sent" and sms[ids["ann"]].message_id.startswith("sms:SM")
        for name in ("bob", "cat"):
            assert sms[ids[name]].status == "skipped" and "not opted in" in sms[ids[name]].detail
        # everyone still has the reminder in their inbox
        assert session.query(Notification).filter(Notification.reason == "reminder").count() == 3
    assert {bob_item, cat_item}


def test_a_gateway_error_is_retried_through_the_outbox_and_sent_once(sms_runtime, gateway):
    rt = sms_runtime
    gateway.refuse_next = 1
    item = meeting(rt, "ann", 1)
    with rt.session() as session:
        send_due_reminders(session, rt.registry, date.today())
        row = session.scalar(
            select(Outbox).where(Outbox.kind == "notify", Outbox.item_id == item).order_by(Outbox.id.desc())
        )
        assert row.status == "pending" and row.attempts == 1
        assert "code 20429" in row.last_error and "Too Many Requests" in row.last_error
        inbox_count = session.query(Notification).filter(Notification.outbox_id == row.id).count()
    assert inbox_count == 1
    assert rt.plugins.errors.recent[-1].hook == "channel sms"
    stats = rt.relay(clock=lambda: utcnow() + timedelta(minutes=5)).run_until_empty()
    assert stats.done == 1
    assert len(gateway.sent()) == 1 and len(gateway.requests) == 2
    with rt.session() as session:
        assert session.get(Outbox, row.id).status == "done"
        assert session.query(Notification).filter(Notification.outbox_id == row.id).count() == 1  # not twice


def test_a_gateway_that_is_not_configured_is_not_used(runtime_with):
    rt = runtime_with(PluginHost(Settings(secret_key="x")), definitions_path=[TEST_DEFINITIONS, NOTIFY_DEFINITIONS])
    with rt.session() as session:
        user, _ = rt.users(session).create("ann", ["assessor"])
        Subscriptions(session).save(user.id, "07700900123", True)
    meeting(rt, "ann", 2)
    with rt.session() as session:
        send_due_reminders(session, rt.registry, date.today())
        assert session.scalars(select(Delivery).where(Delivery.channel == "sms")).all() == []


# -- opting in ---------------------------------------------------------------------------------------


def test_opting_in_needs_a_mobile_number_and_stores_it_normalised(session, registry):
    from engine.services import UserService

    user, _ = UserService(session, registry).create("ann", ["assessor"])
    subs = Subscriptions(session)
    assert subs.get(user.id).opted_in is False and subs.number_for(user.id) is None
    with pytest.raises(ValidationFailed) as landline:
        subs.save(user.id, "0113 496 0000", True)
    assert landline.value.problems[0].path == "phone"
    assert landline.value.problems[0].message == "The mobile number '0113 496 0000' is not a UK mobile number"
    with pytest.raises(ValidationFailed) as missing:
        subs.save(user.id, "", True)
    assert missing.value.problems[0].message == "Text messages need a mobile number"
    assert subs.get(user.id).phone == ""  # nothing was saved
    subs.save(user.id, "07700 900123", True)
    assert subs.number_for(user.id) == "+447700900123" and subs.opted_in_count() == 1
    subs.save(user.id, "07700 900123", False)
    assert subs.number_for(user.id) is None and subs.get(user.id).phone == "+447700900123"


def test_the_text_message_page_and_the_preferences_column(app_with, gateway):
    app = app_with(PluginHost(Settings(secret_key="x")), settings={"plugin_env": sms_env(gateway)})
    create_users(app, ann=["assessor"])
    client = app.test_client()
    sign_in(client, "ann")
    prefs = client.get("/preferences").get_data(as_text=True)
    assert '<th scope="col">Text message</th>' in prefs and 'href="/preferences/sms"' in prefs
    assert 'id="pref-reminder-sms"\n                 checked' in prefs  # on for reminders by default
    assert 'id="pref-assigned-sms"\n                 >' in prefs  # off for the rest
    page = client.get("/preferences/sms")
    assert page.status_code == 200 and 'id="phone"' in page.get_data(as_text=True)
    token = csrf(client, "/preferences/sms")
    refused = client.post("/preferences/sms", data={"csrf_token": token, "phone": "0113 496 0000", "opted_in": "y"})
    html = refused.get_data(as_text=True)
    assert refused.status_code == 400 and 'id="phone-error"' in html and "is not a UK mobile number" in html
    assert 'aria-invalid="true"' in html and 'value="0113 496 0000"' in html  # what was typed is kept
    saved = client.post("/preferences/sms", data={"csrf_token": token, "phone": "07700 900123", "opted_in": "y"})
    assert saved.status_code == 302
    again = client.get("/preferences/sms").get_data(as_text=True)
    assert 'value="+447700900123"' in again and "checked" in again
    assert client.post("/preferences/sms", data={"phone": "07700 900123"}).status_code == 400  # no CSRF token


def test_sms_commands(run, gateway):
    run("users", "create", "ann", "--role", "assessor")
    out = run("sms", "set", "ann", "--phone", "07700 900123", "--opt-in").stdout
    assert "ann: +447700900123, opted in." in out
    bad = run("sms", "set", "ann", "--phone", "0113 496 0000", ok=False)
    assert bad.returncode == 1 and "is not a UK mobile number" in bad.stderr
    assert run("sms", "set", "nobody", "--opt-in", ok=False).returncode == 1
    unconfigured = run("sms", "test", "ann", ok=False)
    assert unconfigured.returncode == 1 and "not configured" in unconfigured.stderr
    run.env.update(sms_env(gateway))
    assert "Sent to +447700900123" in run("sms", "test", "ann").stdout
    assert gateway.sent()[-1]["Body"] == "This is a test message from Tracker."
    run.env["TRACKER_PLUGIN_SMS_AUTH_TOKEN"] = "wrong"
    failed = run("sms", "test", "ann", ok=False)
    assert failed.returncode == 1 and "Authenticate" in failed.stderr


# -- the field check ---------------------------------------------------------------------------------


def test_the_mobile_number_check_on_a_schema_property(runtime_with, tmp_path):
    schema = {
        "type": "object",
        "properties": {"mobile": {"type": "string", "title": "Mobile", "x-validator": "mobile_number"}},
    }
    folder = write_type(
        tmp_path / "defs",
        "contact",
        'key: contact\nname: Contact\nversion: 1\nworkflow: record\nsubject: none\ntitle: "C"\n',
        schema,
    )
    rt = runtime_with(PluginHost(Settings(secret_key="x")), definitions_path=[TEST_DEFINITIONS, folder])
    with rt.session() as session:
        items = rt.items(session, Actor.system())
        with pytest.raises(ValidationFailed) as refused:
            items.create("contact", {"mobile": "0113 496 0000"})
        [problem] = refused.value.problems
        assert problem.path == "/mobile" and problem.message == "'0113 496 0000' is not a UK mobile number"
        assert items.create("contact", {"mobile": "07700 900123"}).id
