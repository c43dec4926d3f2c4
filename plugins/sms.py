"""SMS: text messages through an HTTP SMS gateway that takes Twilio's request shape.

- **Channel** ``sms`` ("Text message"): on for reminders (``reminders:`` in type.yaml) by
  default, for other notifications when the user turns it on in their preferences. A message
  is ``POST {base_url}/Accounts/{account_sid}/Messages.json``, form-encoded ``To``, ``From``,
  ``Body``, with HTTP basic authentication (account SID, auth token). The gateway answers
  JSON with ``sid`` and ``status``; an error answers JSON with ``code`` and ``message``. A
  message that did not go (gateway error, gateway down) is tried again through the outbox.
- **Opt-in**: nobody gets texts until they give a mobile number and opt in at
  ``/preferences/sms`` (or an admin runs ``tracker sms set USER --phone ... --opt-in``).
  Numbers are stored in E.164 form (``+447700900123``); UK numbers must be mobiles.
- **Field check** ``mobile_number``: ``"x-validator": "mobile_number"`` on a schema property
  accepts a UK mobile or an international number, with a clear message otherwise.

Settings (environment): ``TRACKER_PLUGIN_SMS_BASE_URL`` (the gateway's API root, e.g.
``https://sms.example.net/2010-04-01``; unset = the channel is not used),
``TRACKER_PLUGIN_SMS_ACCOUNT_SID``, ``TRACKER_PLUGIN_SMS_AUTH_TOKEN``,
``TRACKER_PLUGIN_SMS_FROM`` (a number or an alphanumeric sender id) and
``TRACKER_PLUGIN_SMS_TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import re
import urllib.parse
from dataclasses import dataclass
from typing import Any

import click
from flask import Blueprint, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import Session, object_session
from wtforms import BooleanField, StringField

from engine.config import Settings
from engine.errors import NotFound, Problem, TrackerError, ValidationFailed
from engine.hookspecs import hookimpl
from engine.models import Delivery, User
from engine.notifications import Channel, DeliveryContext, Message
from engine.plugins import Invalid, PluginStore
from plugins.jsonhttp import basic_auth, join, request_json

NAME = "sms"
#: longest text sent (the gateway splits it into parts; 3 parts of 153 characters)
MAX_BODY = 459

_SEPARATORS = re.compile(r"[\s\-().]")
_E164 = re.compile(r"\+[1-9]\d{7,14}")
_UK_MOBILE = re.compile(r"7\d{9}")
PHONE_ADVICE = (
    "Write a UK mobile number such as 07700 900123, or an international number starting with +, e.g. +353 85 123 4567."
)


# -- phone numbers -----------------------------------------------------------------------------------


def normalise_phone(text: str) -> str:
    """``text`` as an E.164 number (``+447700900123``). UK numbers may be written nationally
    (``07700 900123``), with ``+44``, ``0044`` or ``+44 (0)``; they must be mobiles (07...).
    Raises :class:`Invalid` saying what is wrong."""
    raw = (text or "").strip()
    if not raw:
        raise Invalid("is empty", PHONE_ADVICE)
    compact = _SEPARATORS.sub("", raw.replace("(0)", ""))
    if compact.startswith("00"):
        compact = "+" + compact[2:]
    elif compact.startswith("0"):
        compact = "+44" + compact[1:]
    elif compact.startswith("44") and len(compact) == 12:
        compact = "+" + compact
    if not _E164.fullmatch(compact):
        raise Invalid(f"'{raw}' is not a phone number", PHONE_ADVICE)
    if compact.startswith("+44") and not _UK_MOBILE.fullmatch(compact[3:]):
        raise Invalid(
            f"'{raw}' is not a UK mobile number",
            "Text messages need a mobile: UK mobile numbers start 07 and have 11 digits, e.g. 07700 900123.",
        )
    return compact


def check_mobile_number(value: Any, schema: dict) -> None:
    """The ``mobile_number`` field check."""
    if not isinstance(value, str):
        raise Invalid("must be a phone number written as text", PHONE_ADVICE)
    normalise_phone(value)


# -- the gateway -------------------------------------------------------------------------------------


class GatewayError(Exception):
    """The gateway refused a message; ``code`` and ``message`` are its own words."""

    def __init__(self, status: int, code: Any, message: str) -> None:
        super().__init__(f"the SMS gateway refused the message ({status}, code {code}): {message}")
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class SentSms:
    sid: str
    status: str


@dataclass(frozen=True)
class SmsGateway:
    """A client of one gateway account."""

    base_url: str
    account_sid: str
    auth_token: str
    sender: str
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsGateway | None:
        """The configured gateway; None when ``TRACKER_PLUGIN_SMS_BASE_URL`` is unset. Raises
        TrackerError naming a missing variable when the rest is incomplete."""
        config = settings.plugin(NAME)
        if not config.get("base_url"):
            return None
        return cls(
            base_url=config.get("base_url"),
            account_sid=config.require("account_sid", "AC0123456789abcdef"),
            auth_token=config.require("auth_token", "your-token"),
            sender=config.require("from", "+447700900000"),
            timeout=config.number("timeout", 10.0),
        )

    def send(self, to: str, body: str) -> SentSms:
        """Send ``body`` to ``to`` (E.164). Raises :class:`GatewayError` when the gateway
        refuses it and ``plugins.jsonhttp.ServiceUnavailable`` when it cannot be reached."""
        url = join(self.base_url, "Accounts", self.account_sid, "Messages.json")
        form = urllib.parse.urlencode({"To": to, "From": self.sender, "Body": body}).encode()
        response = request_json(
            "SMS gateway",
            "POST",
            url,
            raw_body=form,
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "Authorization": basic_auth(self.account_sid, self.auth_token),
            },
            timeout=self.timeout,
        )
        answer = response.body if isinstance(response.body, dict) else {}
        if response.status >= 300:
            raise GatewayError(response.status, answer.get("code"), str(answer.get("message") or "no reason given"))
        status = str(answer.get("status") or "")
        if status in ("failed", "undelivered", "canceled"):
            raise GatewayError(response.status, answer.get("error_code"), f"the message is {status}")
        if not answer.get("sid"):
            raise GatewayError(response.status, None, "the answer carries no message sid")
        return SentSms(str(answer["sid"]), status)


# -- who wants texts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    phone: str = ""
    opted_in: bool = False


class Subscriptions:
    """Users' mobile numbers and opt-in, kept in the plugin's state (key ``user:<id>``)."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.store = PluginStore(session, NAME)

    def get(self, user_id: int) -> Subscription:
        value = self.store.get(f"user:{user_id}") or {}
        return Subscription(value.get("phone", ""), bool(value.get("opted_in")))

    def save(self, user_id: int, phone: str, opted_in: bool) -> Subscription:
        """Store the number (normalised) and the choice, and commit. Raises ValidationFailed
        (path ``phone``) for a number that is not a mobile or when opting in without one."""
        phone = (phone or "").strip()
        if phone:
            try:
                phone = normalise_phone(phone)
            except Invalid as exc:
                message = f"The mobile number {exc.message}"  # its messages read "'...' is not ..."
                raise ValidationFailed([Problem("phone", message, exc.advice)]) from None
        elif opted_in:
            raise ValidationFailed(
                [Problem("phone", "Text messages need a mobile number", "Enter your mobile number, or untick the box.")]
            )
        self.store.put(f"user:{user_id}", {"phone": phone, "opted_in": bool(opted_in)})
        self.session.commit()
        return Subscription(phone, bool(opted_in))

    def number_for(self, user_id: int) -> str | None:
        """The number to text, or None when the user has not opted in."""
        sub = self.get(user_id)
        return sub.phone if sub.opted_in and sub.phone else None

    def opted_in_count(self) -> int:
        return sum(1 for _key, value in self.store.items("user:") if value.get("opted_in") and value.get("phone"))


# -- the channel -------------------------------------------------------------------------------------


class SmsChannel(Channel):
    key = "sms"
    label = "Text message"
    external = True
    digestible = False
    default_events = frozenset({"reminder"})
    missing = "no mobile number, or not opted in to text messages"
    setup_label = "Set up text messages: your mobile number"

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.setup_url = "/preferences/sms"

    def ready(self, ctx: DeliveryContext) -> bool:
        return bool(self.settings.plugin(NAME).get("base_url"))

    def address(self, user: User) -> str | None:
        session = object_session(user)
        return Subscriptions(session).number_for(user.id) if session is not None else None

    def send(self, ctx: DeliveryContext, delivery: Delivery, user: User, message: Message) -> None:
        gateway = SmsGateway.from_settings(self.settings)
        if gateway is None:
            raise TrackerError("The SMS gateway is not configured.", "Set TRACKER_PLUGIN_SMS_BASE_URL.")
        to = Subscriptions(ctx.session).number_for(user.id)
        if to is None:  # opted out since the delivery was planned
            return
        sent = gateway.send(to, sms_text(message, ctx.settings.base_url))
        delivery.message_id = f"sms:{sent.sid}"[:300]


def sms_text(message: Message, base_url: str) -> str:
    """The text: the notification and the link to the item, within :data:`MAX_BODY`."""
    url = message.url(base_url) if message.link else ""
    room = MAX_BODY - len(url) - 1
    text = message.text.strip()
    if len(text) > room:
        text = text[: max(room - 1, 0)].rstrip() + "…"
    return f"{text} {url}".strip()


# -- the opt-in page ---------------------------------------------------------------------------------

bp = Blueprint("sms", __name__, template_folder="templates")


class SmsForm(FlaskForm):
    phone = StringField(
        "Mobile number",
        description="A UK mobile (07700 900123) or an international number starting with +.",
        render_kw={"autocomplete": "tel", "inputmode": "tel"},
    )
    opted_in = BooleanField("Send me text messages")


@bp.route("/preferences/sms", methods=["GET", "POST"])
@login_required
def preferences():
    from webui import db_session, runtime

    subs = Subscriptions(db_session())
    current = subs.get(int(current_user.id))
    form = SmsForm(data={"phone": current.phone, "opted_in": current.opted_in})
    problems: list[Problem] = []
    status = 200
    if form.validate_on_submit():
        try:
            subs.save(int(current_user.id), form.phone.data or "", bool(form.opted_in.data))
        except ValidationFailed as exc:
            problems, status = exc.problems, 400
        else:
            flash("Your text message settings are saved.", "info")
            return redirect(url_for("sms.preferences"))
    elif form.is_submitted():
        problems, status = [Problem("", "The form expired", "Send it again.")], 400
    return render_template(
        "sms/preferences.html",
        form=form,
        problems=problems,
        ready=bool(runtime().settings.plugin(NAME).get("base_url")),
    ), status


# -- the command line --------------------------------------------------------------------------------


@click.group("sms")
def sms_cli() -> None:
    """Text messages: users' mobile numbers and opt-in, and a test message."""


def _user(session: Session, username: str) -> User:
    user = session.scalar(select(User).where(User.username == username))
    if user is None:
        raise NotFound(f"There is no user '{username}'.", "Check the name with 'tracker users list'.")
    return user


@sms_cli.command("set")
@click.argument("username")
@click.option("--phone", default=None, help="The mobile number (UK or international).")
@click.option("--opt-in/--opt-out", "opted_in", default=None, help="Whether they get text messages.")
def sms_set(username: str, phone: str | None, opted_in: bool | None) -> None:
    """Record USERNAME's mobile number and/or opt-in."""
    from engine.cli import _runtime

    with _runtime().session() as session:
        user = _user(session, username)
        subs = Subscriptions(session)
        current = subs.get(user.id)
        saved = subs.save(
            user.id, current.phone if phone is None else phone, current.opted_in if opted_in is None else opted_in
        )
    click.echo(f"{username}: {saved.phone or 'no number'}, {'opted in' if saved.opted_in else 'not opted in'}.")


@sms_cli.command("test")
@click.argument("username")
def sms_test(username: str) -> None:
    """Send USERNAME a test text message now (not through the outbox)."""
    from engine.cli import _runtime

    rt = _runtime()
    gateway = SmsGateway.from_settings(rt.settings)
    if gateway is None:
        raise TrackerError("The SMS gateway is not configured.", "Set TRACKER_PLUGIN_SMS_BASE_URL and its friends.")
    with rt.session() as session:
        number = Subscriptions(session).number_for(_user(session, username).id)
    if number is None:
        raise TrackerError(
            f"{username} has not opted in to text messages.", f"Run 'tracker sms set {username} --opt-in'."
        )
    try:
        sent = gateway.send(number, "This is a test message from Tracker.")
    except Exception as exc:  # noqa: BLE001 - the gateway's own words are the message
        raise TrackerError(f"The test message did not go: {exc}", "Check the TRACKER_PLUGIN_SMS_* settings.") from None
    click.echo(f"Sent to {number} (gateway message {sent.sid}, {sent.status or 'accepted'}).")


# -- hooks ---------------------------------------------------------------------------------------------


@hookimpl
def tracker_notification_channels(settings):
    return [SmsChannel(settings)]


@hookimpl
def tracker_field_validators():
    return {"mobile_number": check_mobile_number}


@hookimpl
def tracker_blueprints():
    return [bp]


@hookimpl
def tracker_cli_commands():
    return [sms_cli]
