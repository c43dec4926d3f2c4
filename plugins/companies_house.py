"""Companies House: a company number gives the employer's registered name and office address.

It speaks the public data API: ``GET <base>/company/<number>`` with HTTP basic authentication
(the API key as the user name, no password). The answer has ``company_name``,
``company_number``, ``company_status`` and ``registered_office_address`` (``premises``,
``address_line_1``, ``address_line_2``, ``locality``, ``region``, ``postal_code``,
``country``); an unknown number is 404 ``{"errors": [{"error": "company-profile-not-found"}]}``
and too many calls (600 per five minutes) are 429.

The lookup is named ``companies_house``: a schema property with ``"x-lookup": "companies_house"``
(the company number) offers the registered name and office, filling the fields of the same
object named ``name``, ``company_number`` and ``address`` (an object with ``line1``, ``line2``,
``town``, ``region``, ``postcode``, ``country``), where the schema has them. The validator
``company_number`` checks the shape of a number.

Configuration: ``TRACKER_PLUGIN_COMPANIES_HOUSE_KEY`` (an API key; without one no lookup is
offered), ``TRACKER_PLUGIN_COMPANIES_HOUSE_URL`` (default
``https://api.company-information.service.gov.uk``) and ``TRACKER_PLUGIN_COMPANIES_HOUSE_TIMEOUT``
(seconds, default 5).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any

from engine.config import Settings
from engine.plugins import Invalid, LookupResult, LookupUnavailable, hookimpl
from plugins.jsonhttp import ServiceUnavailable, basic_auth, join, request_json

NAME = "companies_house"
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
        """The answer flat (empty parts left out): name, company_number, status, line1, line2,
        town, region, postcode, country."""
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

    def fills(self) -> dict[str, Any]:
        """What the lookup fills: ``name``, ``company_number`` and the ``address`` object."""
        flat = self.values()
        address = {k: flat[k] for k in ("line1", "line2", "town", "region", "postcode", "country") if k in flat}
        return {"name": self.name, "company_number": self.number, **({"address": address} if address else {})}

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
                "Companies House refused the API key; "
                "check TRACKER_PLUGIN_COMPANIES_HOUSE_KEY (a key from the Companies House developer hub)."
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


# -- the plugin ----------------------------------------------------------------------------------

log = logging.getLogger(__name__)

UNAVAILABLE = "Companies House lookup is unavailable just now; you can still save, without it."


def client_from(settings: Settings) -> CompaniesHouseClient | None:
    """The configured client, or None without ``TRACKER_PLUGIN_COMPANIES_HOUSE_KEY``."""
    own = settings.plugin(NAME)
    key = own.get("key")
    if not key:
        return None
    return CompaniesHouseClient(key, own.get("url", DEFAULT_URL), timeout=own.number("timeout", DEFAULT_TIMEOUT))


def lookup(client: CompaniesHouseClient, params: dict[str, str]) -> list[LookupResult]:
    """The ``companies_house`` lookup: ``q`` (or ``company_number``) is the number typed."""
    typed = params.get("q") or params.get("company_number") or ""
    try:
        number = normalise_number(typed)
    except CompanyNumberInvalid:
        shown = typed.strip()[:20]
        raise Invalid(
            f"'{shown}' is not a company number" if shown else "Type a company number first", NUMBER_ADVICE
        ) from None
    try:
        company = client.company(number)
    except ServiceUnavailable as exc:
        log.warning("Companies House lookup of %s failed: %s", number, exc)
        raise LookupUnavailable(UNAVAILABLE) from exc
    except CompaniesHouseRefused as exc:
        log.error("Companies House refused the lookup of %s: %s", number, exc)
        raise LookupUnavailable(f"{exc} You can still save, without the lookup.") from exc
    return [LookupResult(company.summary(), company.fills())] if company is not None else []


def validate_company_number(value: Any, schema: dict) -> None:
    """The ``company_number`` field check: 8 digits, or two capital letters and 6 digits."""
    if value in (None, ""):
        return
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        raise Invalid("is not a company number", NUMBER_ADVICE)


@hookimpl
def tracker_lookups(settings):
    client = client_from(settings)
    return {NAME: lambda params: lookup(client, params)} if client is not None else {}


@hookimpl
def tracker_field_validators(settings):
    return {"company_number": validate_company_number}
