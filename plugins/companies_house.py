"""Companies House: a company number gives the employer's registered name and office address.

It speaks the public data API: ``GET <base>/company/<number>`` with HTTP basic authentication
(the API key as the user name, no password). The answer has ``company_name``,
``company_number``, ``company_status`` and ``registered_office_address`` (``premises``,
``address_line_1``, ``address_line_2``, ``locality``, ``region``, ``postal_code``,
``country``); an unknown number is 404 ``{"errors": [{"error": "company-profile-not-found"}]}``
and too many calls (600 per five minutes) are 429.

Configuration: ``TRACKER_COMPANIES_HOUSE_URL`` (default
``https://api.company-information.service.gov.uk``), ``TRACKER_COMPANIES_HOUSE_KEY`` (no key:
the lookup is off) and ``TRACKER_COMPANIES_HOUSE_TIMEOUT`` (seconds, default 5).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from plugins.jsonhttp import ServiceUnavailable, basic_auth, join, request_json

SERVICE = "Companies House lookup"
DEFAULT_URL = "https://api.company-information.service.gov.uk"
DEFAULT_TIMEOUT = 5.0

_NUMBER = re.compile(r"[0-9]{8}|[A-Z]{2}[0-9]{6}")

NUMBER_ADVICE = (
    "A company number has 8 characters: 8 digits (for example 04828784, with its leading zeros) "
    "or two capital letters and 6 digits (for example SC123456)."
)


class CompanyNumberInvalid(ValueError):
    """The text is not shaped like a company number; ``str()`` says what to type."""


def normalise_number(text: str) -> str:
    """A company number as Companies House writes it: capitals, no spaces, and leading zeros
    restored for a number typed short (``4828784`` -> ``04828784``).

    Raises :class:`CompanyNumberInvalid` with a message saying what a company number looks like.
    """
    squeezed = re.sub(r"\s+", "", text or "").upper()
    if squeezed.isdigit() and 0 < len(squeezed) < 8:
        squeezed = squeezed.zfill(8)
    if not _NUMBER.fullmatch(squeezed):
        shown = (text or "").strip() or "(empty)"
        raise CompanyNumberInvalid(f"'{shown}' is not a company number. {NUMBER_ADVICE}")
    return squeezed


class CompaniesHouseRefused(Exception):
    """The API refused the call: the key is wrong (401) or too many calls were made (429)."""


@dataclass(frozen=True)
class Company:
    number: str
    name: str
    status: str
    line1: str = ""
    line2: str = ""
    town: str = ""
    region: str = ""
    postcode: str = ""
    country: str = ""

    @property
    def active(self) -> bool:
        return self.status == "active"

    def values(self) -> dict[str, str]:
        """The answer as the names a schema's ``x-lookup`` fill map uses (empty parts left out):
        name, company_number, status, line1, line2, town, region, postcode, country."""
        out = {
            "name": self.name,
            "company_number": self.number,
            "status": self.status,
            "line1": self.line1,
            "line2": self.line2,
            "town": self.town,
            "region": self.region,
            "postcode": self.postcode,
            "country": self.country,
        }
        return {k: v for k, v in out.items() if v}

    def summary(self) -> str:
        address = ", ".join(p for p in (self.line1, self.line2, self.town, self.postcode) if p)
        status = "" if self.active else f" ({self.status.replace('-', ' ')})"
        return f"{self.name}{status}, {self.number}" + (f": {address}" if address else "")


class CompaniesHouseClient:
    def __init__(self, api_key: str, base_url: str = DEFAULT_URL, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.timeout = timeout

    def company(self, number: str) -> Company | None:
        """The company's profile, or None when Companies House has no company with that number.

        Raises :class:`CompanyNumberInvalid` for text that is not a company number (nothing is
        sent), :class:`CompaniesHouseRefused` for a refused key or the rate limit, and
        :class:`~plugins.jsonhttp.ServiceUnavailable` when the service is down or slow.
        """
        wanted = normalise_number(number)
        response = request_json(
            SERVICE,
            "GET",
            join(self.base_url, "company", wanted),
            headers={"Authorization": basic_auth(self.api_key)},
            timeout=self.timeout,
        )
        if response.status == 404:
            return None
        if response.status == 401:
            raise CompaniesHouseRefused(
                "Companies House refused the API key; check TRACKER_COMPANIES_HOUSE_KEY (a key from the developer hub)."
            )
        if response.status == 429:
            raise CompaniesHouseRefused(
                "Companies House is limiting how often Tracker may ask (600 lookups in 5 minutes); "
                "try again in a few minutes."
            )
        body = response.body if isinstance(response.body, dict) else None
        if response.status != 200 or body is None or not body.get("company_name"):
            raise ServiceUnavailable(SERVICE, f"it answered {response.status} without a company profile")
        office = body.get("registered_office_address") or {}
        premises = str(office.get("premises") or "").strip()
        line1 = str(office.get("address_line_1") or "").strip()
        return Company(
            number=str(body.get("company_number") or wanted),
            name=str(body["company_name"]).strip(),
            status=str(body.get("company_status") or ""),
            line1=_first_line(premises, line1),
            line2=str(office.get("address_line_2") or "").strip(),
            town=str(office.get("locality") or "").strip(),
            region=str(office.get("region") or "").strip(),
            postcode=str(office.get("postal_code") or "").strip().upper(),
            country=str(office.get("country") or "").strip(),
        )


def _first_line(premises: str, line1: str) -> str:
    """The premises before the street: "1 High Street", "Unit 4, Leith Walk"."""
    if not premises or premises in line1:
        return line1
    if not line1:
        return premises
    return f"{premises} {line1}" if premises.isdigit() else f"{premises}, {line1}"
