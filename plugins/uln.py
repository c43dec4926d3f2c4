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

Configuration: ``TRACKER_ULN_URL`` (empty: the lookup is off), ``TRACKER_ULN_USERNAME``,
``TRACKER_ULN_PASSWORD``, ``TRACKER_ULN_UKPRN`` and ``TRACKER_ULN_TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Protocol

from plugins.jsonhttp import ServiceUnavailable, basic_auth, join, request_json
from plugins.postcode import normalise as normalise_postcode

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
                "check TRACKER_ULN_USERNAME, TRACKER_ULN_PASSWORD and TRACKER_ULN_UKPRN."
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
