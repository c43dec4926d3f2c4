"""ULN lookup: find a learner's Unique Learner Number from their name, date of birth and postcode.

The Learning Records Service (LRS) answers "learner by demographics" searches. Tracker talks
to it through :class:`UlnClient`, so a deployment can put any adapter behind it (a SOAP
bridge, a test double); the built-in :class:`HttpUlnClient` speaks this JSON shape:

``POST <base>/learners/find-by-demographics`` with HTTP basic authentication (the LRS user
name and organisation password) and the body::

    {"FindType": "FUL", "UKPRN": "10000001", "GivenName": "Jane", "FamilyName": "Smith",
     "DateOfBirth": "2001-02-03", "Gender": "2", "LastKnownPostCode": "SW1A 1AA"}

``Gender`` (LRS codes: 1 male, 2 female, 9 not specified, 0 not known) and
``LastKnownPostCode`` are optional. The answer is 200 with ``ResponseCode`` and ``Learners``
(each with ``ULN``, ``GivenName``, ``FamilyName``, ``DateOfBirth``, ``Gender``,
``LastKnownPostCode``)::

    WSRC0001  no match                  Learners: []
    WSRC0002  too many matches          Learners: [] (add the postcode or gender)
    WSRC0003  exact match               Learners: [the one]
    WSRC0004  possible matches          Learners: [each candidate]

401 means the credentials were refused; 400 a request the service could not read.

The lookup is named ``uln``: a schema property with ``"x-lookup": {"name": "uln", "inputs":
{"given_name": ..., "family_name": ..., "date_of_birth": ..., "postcode": ...}}`` offers each
learner found, and picking one fills the property with their ULN. Only ULNs that pass the
check digit are offered. The validator ``uln`` (``"x-validator": "uln"``) checks the check digit.
Admins see the endpoint and test the connection at ``/admin/uln``.

Configuration: ``TRACKER_PLUGIN_ULN_URL`` (empty: no lookup is offered),
``TRACKER_PLUGIN_ULN_USERNAME``, ``TRACKER_PLUGIN_ULN_PASSWORD``, ``TRACKER_PLUGIN_ULN_UKPRN`` and
``TRACKER_PLUGIN_ULN_TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Protocol

from engine.config import Settings
from engine.plugins import Invalid, LookupResult, LookupUnavailable, MenuLink, hookimpl
from plugins.jsonhttp import ServiceUnavailable, basic_auth, join, request_json
from plugins.postcode import normalise as normalise_postcode

NAME = "uln"
SERVICE = "ULN lookup"
DEFAULT_TIMEOUT = 10.0
#: the ULN used while the real one is being looked up (not allowed on apprenticeships)
TEMPORARY_ULN = "9999999999"

NO_MATCH, TOO_MANY, EXACT, POSSIBLE = "WSRC0001", "WSRC0002", "WSRC0003", "WSRC0004"
#: LRS gender codes
GENDERS = {"1": "Male", "2": "Female", "9": "Not specified", "0": "Not known"}


def check_digit_ok(uln: str) -> bool:
    """Whether ``uln`` is ten digits whose last is the check digit of the first nine (weights
    10 down to 2; check = 10 - sum mod 11; a remainder of 0 would need "10", so no such ULN
    exists). 9999999999 is the temporary ULN, not a real one: False."""
    if not re.fullmatch(r"[0-9]{10}", uln or "") or uln == TEMPORARY_ULN:
        return False
    total = sum(int(d) * w for d, w in zip(uln[:9], range(10, 1, -1), strict=True))
    check = 10 - total % 11
    return check < 10 and int(uln[9]) == check


class UlnRefused(Exception):
    """The service refused the search (bad credentials, a request it could not read); the
    message says what an admin should check."""


@dataclass(frozen=True)
class Demographics:
    """Who to look for. ``postcode`` and ``gender`` (an LRS code) narrow the search."""

    given_name: str
    family_name: str
    date_of_birth: date
    postcode: str = ""
    gender: str = ""


@dataclass(frozen=True)
class LearnerMatch:
    uln: str
    given_name: str
    family_name: str
    date_of_birth: str
    gender: str = ""
    postcode: str = ""

    @property
    def gender_label(self) -> str:
        return GENDERS.get(self.gender, "")


@dataclass(frozen=True)
class UlnSearch:
    """The answer to one search: its LRS response code and the learners it found."""

    code: str
    matches: list[LearnerMatch] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return self.code == EXACT

    def explain(self) -> str:
        """What the answer means, for the person who searched."""
        if self.code == EXACT:
            return "The Learning Records Service found exactly one learner with these details."
        if self.code == POSSIBLE:
            count = len(self.matches)
            found = f"{count} possible match{'es' if count != 1 else ''}"
            return f"The Learning Records Service found {found}; pick the right learner."
        if self.code == TOO_MANY:
            return "Too many learners have these details; add the postcode (and gender) and search again."
        return "The Learning Records Service has no learner with these details; check the spelling and date of birth."


class UlnClient(Protocol):
    """Anything that can search the Learning Records Service by demographics."""

    def find(self, who: Demographics) -> UlnSearch:
        """Search for ``who``. Raises :class:`~plugins.jsonhttp.ServiceUnavailable` when the
        service is down or slow, and :class:`UlnRefused` when it refuses the request."""
        ...

    def describe(self) -> str:
        """Where the client sends its searches, for the admin page (never the password)."""
        ...


class HttpUlnClient:
    """The JSON "learner by demographics" search this module documents."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str = "",
        password: str = "",
        ukprn: str = "",
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.base_url = base_url
        self.username = username
        self.password = password
        self.ukprn = ukprn
        self.timeout = timeout

    def describe(self) -> str:
        who = f" as {self.username}" if self.username else " without credentials"
        return f"{self.base_url}{who}, UKPRN {self.ukprn or '(not set)'}"

    def find(self, who: Demographics) -> UlnSearch:
        body = {
            "FindType": "FUL",
            "UKPRN": self.ukprn,
            "GivenName": who.given_name.strip(),
            "FamilyName": who.family_name.strip(),
            "DateOfBirth": who.date_of_birth.isoformat(),
        }
        if who.gender:
            body["Gender"] = who.gender
        postcode = normalise_postcode(who.postcode) if who.postcode else None
        if postcode:
            body["LastKnownPostCode"] = postcode
        response = request_json(
            SERVICE,
            "POST",
            join(self.base_url, "learners", "find-by-demographics"),
            body=body,
            headers={"Authorization": basic_auth(self.username, self.password)},
            timeout=self.timeout,
        )
        answer = response.body if isinstance(response.body, dict) else {}
        if response.status in (401, 403):
            raise UlnRefused(
                f"The Learning Records Service refused the credentials ({answer.get('Message') or response.status}); "
                "check TRACKER_PLUGIN_ULN_USERNAME, TRACKER_PLUGIN_ULN_PASSWORD and TRACKER_PLUGIN_ULN_UKPRN."
            )
        if response.status != 200:
            raise UlnRefused(
                f"The Learning Records Service could not read the search ({answer.get('Message') or response.status})."
            )
        code = answer.get("ResponseCode")
        if code not in (NO_MATCH, TOO_MANY, EXACT, POSSIBLE):
            raise ServiceUnavailable(SERVICE, f"it answered with an unknown response code {code!r}")
        matches = [_match(m) for m in answer.get("Learners") or [] if isinstance(m, dict)]
        return UlnSearch(code, [m for m in matches if m is not None])


def _match(raw: dict) -> LearnerMatch | None:
    uln = str(raw.get("ULN") or "")
    if not uln:
        return None
    return LearnerMatch(
        uln=uln,
        given_name=str(raw.get("GivenName") or ""),
        family_name=str(raw.get("FamilyName") or ""),
        date_of_birth=str(raw.get("DateOfBirth") or ""),
        gender=str(raw.get("Gender") or ""),
        postcode=str(raw.get("LastKnownPostCode") or ""),
    )


# -- the plugin ----------------------------------------------------------------------------------

log = logging.getLogger(__name__)

UNAVAILABLE = (
    "ULN lookup is unavailable just now; you can still save, with the temporary ULN 9999999999 "
    "if the learner has none yet, and look it up later."
)
REFUSED = "ULN lookup is not working: the Learning Records Service refused Tracker's search. Tell an administrator."


def client_from(settings: Settings) -> HttpUlnClient | None:
    """The configured client, or None when ``TRACKER_PLUGIN_ULN_URL`` is not set."""
    own = settings.plugin(NAME)
    url = own.get("url")
    if not url:
        return None
    return HttpUlnClient(
        url,
        username=own.get("username"),
        password=own.get("password"),
        ukprn=own.get("ukprn"),
        timeout=own.number("timeout", DEFAULT_TIMEOUT),
    )


def lookup(client: UlnClient, params: dict[str, str]) -> list[LookupResult]:
    """The ``uln`` lookup: ``given_name``, ``family_name``, ``date_of_birth`` (YYYY-MM-DD) and,
    optionally, ``postcode`` and ``gender``; each learner found fills ``uln``."""
    given, family = params.get("given_name", "").strip(), params.get("family_name", "").strip()
    born = params.get("date_of_birth", "").strip()
    if not (given and family and born):
        raise Invalid(
            "Fill in the given name, family name and date of birth first",
            "The Learning Records Service finds a ULN from them (and the postcode, if you have it).",
        )
    try:
        birthday = date.fromisoformat(born)
    except ValueError:
        raise Invalid(
            f"'{born[:20]}' is not a date of birth", "Enter it as YYYY-MM-DD, for example 2004-09-17."
        ) from None
    who = Demographics(given, family, birthday, params.get("postcode", ""), params.get("gender", ""))
    try:
        found = client.find(who)
    except ServiceUnavailable as exc:
        log.warning("ULN lookup failed: %s", exc)
        raise LookupUnavailable(UNAVAILABLE) from exc
    except UlnRefused as exc:
        log.error("ULN lookup refused: %s", exc)
        raise LookupUnavailable(REFUSED) from exc
    if found.code == TOO_MANY:
        raise Invalid(found.explain())
    results = []
    for match in found.matches:
        if not check_digit_ok(match.uln):
            log.warning("the Learning Records Service offered ULN %s, which fails the check digit; left out", match.uln)
            continue
        results.append(LookupResult(_label(match, found.exact), {"uln": match.uln}))
    return results


def _label(match: LearnerMatch, exact: bool) -> str:
    born = f"born {match.date_of_birth}" if match.date_of_birth else ""
    details = ", ".join(p for p in (born, match.postcode, match.gender_label) if p)
    return f"{match.uln}: {match.given_name} {match.family_name} ({details})" + (" - exact match" if exact else "")


def validate_uln(value: Any, schema: dict) -> None:
    """The ``uln`` field check: ten digits passing the check digit (9999999999 is let through:
    it is the temporary ULN, which the type's own rules may warn about)."""
    if value in (None, "", TEMPORARY_ULN):
        return
    if not isinstance(value, str) or not check_digit_ok(value):
        raise Invalid(
            "is not a real ULN: it fails the check-digit test",
            "Re-type it from the learner's LRS record, or use Find ULN; a single mistyped digit makes the check fail.",
        )


@hookimpl
def tracker_lookups(settings):
    client = client_from(settings)
    return {NAME: lambda params: lookup(client, params)} if client is not None else {}


@hookimpl
def tracker_field_validators(settings):
    return {NAME: validate_uln}


@hookimpl
def tracker_blueprints(settings):
    from plugins.uln_admin import bp

    return [bp]


@hookimpl
def tracker_menu_links(actor):
    from engine import permissions

    return [MenuLink("ULN lookup", "/admin/uln")] if permissions.allows(actor, "users.admin") else []
