"""An example Tracker plugin: a field check, a notification channel and a page.

Every function marked ``@hookimpl`` implements one hook of ``engine.hookspecs``; it names
only the arguments it needs. Tracker finds this module through the ``tracker.plugins``
entry point in ``pyproject.toml``.
"""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

from flask import Blueprint, render_template, request
from flask_login import login_required

from engine.hookspecs import hookimpl
from engine.notifications import Channel
from engine.plugins import Invalid, MenuLink

__version__ = "1.2.0"

NAME = "example"
_UKPRN = re.compile(r"1\d{7}")


# -- a field check ---------------------------------------------------------------------------------


def check_ukprn(value, schema):
    """``"x-validator": "ukprn"``: a UK Provider Reference Number is 8 digits starting with 1."""
    text = str(value).strip()
    if not _UKPRN.fullmatch(text):
        raise Invalid(
            f"'{text}' is not a UKPRN",
            "A UKPRN has 8 digits and starts with 1, e.g. 10012345; find it on the UK Register of Learning Providers.",
        )


# -- a notification channel ------------------------------------------------------------------------


class ChatChannel(Channel):
    """Posts notifications to a team chat's incoming webhook (``{"text": "..."}``)."""

    key = "chat"
    label = "Team chat"
    external = True
    default_events = frozenset({"assigned"})

    def __init__(self, settings):
        self.settings = settings

    def url(self) -> str:
        return self.settings.plugin(NAME).get("chat_url")

    def ready(self, ctx) -> bool:
        return bool(self.url())

    def send(self, ctx, delivery, user, message) -> None:
        body = json.dumps({"text": f"@{user.username}: {message.text} {message.url(ctx.settings.base_url)}"}).encode()
        req = urllib.request.Request(self.url(), data=body, headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as response:  # noqa: S310 - the URL is configuration
            if response.status >= 300:
                raise RuntimeError(f"the chat webhook answered {response.status}")


# -- a page ----------------------------------------------------------------------------------------

bp = Blueprint("example", __name__, url_prefix="/example", template_folder="templates")


@bp.get("/ukprn")
@login_required
def ukprn_page():
    """Check a UKPRN typed into the form (GET, so it works as a bookmark too)."""
    number = request.args.get("ukprn", "").strip()
    problem = None
    if number:
        try:
            check_ukprn(number, {})
        except Invalid as exc:
            problem = exc
    return render_template("example/ukprn.html", number=number, problem=problem)


# -- the hooks -------------------------------------------------------------------------------------


@hookimpl
def tracker_field_validators():
    return {"ukprn": check_ukprn}


@hookimpl
def tracker_definition_folders():
    return [Path(__file__).parent / "definitions"]


@hookimpl
def tracker_notification_channels(settings):
    return [ChatChannel(settings)]


@hookimpl
def tracker_blueprints():
    return [bp]


@hookimpl
def tracker_menu_links(actor):
    return [MenuLink("Check a UKPRN", "/example/ukprn")]
