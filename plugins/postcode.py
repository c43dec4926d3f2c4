"""Postcode lookup through a postcodes.io-compatible API.

A UK postcode gives its local authority district, region, country and coordinates (postcodes.io
holds no street addresses). Forms use it to offer the fields a schema marks for filling (see
``x-lookup`` in docs/plugins.md); when the service is down or slow the form still saves.

The lookup is named ``postcode``: a schema property with ``"x-lookup": "postcode"`` offers the
answer's values to the fields of the same object named ``postcode`` (written the Royal Mail
way), ``district`` (the local authority), ``region``, ``country``, ``county`` and ``ward``, where
the schema has them. A postcode the service does not know gives no answer, which is no error:
new postcodes reach it late.

Configuration: ``TRACKER_PLUGIN_POSTCODE_URL`` (default ``https://api.postcodes.io``) and
``TRACKER_PLUGIN_POSTCODE_TIMEOUT`` (seconds, default 3). ``TRACKER_PLUGINS_DISABLED=postcode``
turns the lookup off.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass

from engine.config import Settings
from engine.plugins import Invalid, LookupResult, LookupUnavailable, hookimpl
from plugins.jsonhttp import ServiceUnavailable, join, request_json

NAME = "postcode"
SERVICE = "Postcode lookup"
#: what the user reads when the service is down or slow; the form saves without the lookup
UNAVAILABLE = "Postcode lookup is unavailable just now; you can still save, without it."
DEFAULT_URL = "https://api.postcodes.io"
DEFAULT_TIMEOUT = 3.0

#: outward code (area, district, optional sub-district) and inward code (sector, unit)
_SHAPE = re.compile(r"([A-Z]{1,2}[0-9][0-9A-Z]?)([0-9][A-Z]{2})")


def normalise(text: str) -> str | None:
    """``sw1a1aa`` -> ``SW1A 1AA``: capitals, one space before the inward code; None when the
    text does not have the shape of a UK postcode."""
    squeezed = re.sub(r"\s+", "", text or "").upper()
    match = _SHAPE.fullmatch(squeezed)
    return f"{match.group(1)} {match.group(2)}" if match else None


@dataclass(frozen=True)
class PostcodeAddress:
    """What the service knows about one postcode. ``district`` is the local authority
    (``admin_district``); ``region`` is None outside England."""

    postcode: str
    district: str | None
    region: str | None
    country: str | None
    county: str | None = None
    ward: str | None = None
    longitude: float | None = None
    latitude: float | None = None

    def values(self) -> dict[str, str]:
        """The answer keyed by the field names it fills, leaving out what is unknown: postcode,
        district, region, country, county, ward, longitude, latitude. (No town: the local
        authority is not the post town, and the service has no street addresses.)"""
        out = {k: v for k, v in asdict(self).items() if v not in (None, "")}
        return {k: v if isinstance(v, str) else str(v) for k, v in out.items()}

    def summary(self) -> str:
        """One line for a person: "SW1A 1AA: Westminster, London, England"."""
        parts = [p for p in (self.district, self.region, self.country) if p]
        return f"{self.postcode}: {', '.join(parts)}" if parts else self.postcode


class PostcodeClient:
    """The API: ``GET /postcodes/<pc>`` answers ``{"status": 200, "result": {...}}`` or 404
    ``{"status": 404, "error": "Invalid postcode"}`` (or ``"Postcode not found"``)."""

    def __init__(self, base_url: str = DEFAULT_URL, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.base_url = base_url
        self.timeout = timeout

    def lookup(self, postcode: str) -> PostcodeAddress | None:
        """The postcode's area, or None when the service does not know it (or it is not a
        postcode). Raises :class:`~plugins.jsonhttp.ServiceUnavailable` when the service is down,
        slow or answers something unexpected."""
        wanted = normalise(postcode)
        if wanted is None:
            return None
        response = request_json(SERVICE, "GET", join(self.base_url, "postcodes", wanted), timeout=self.timeout)
        if response.status == 404:
            return None
        result = response.body.get("result") if isinstance(response.body, dict) else None
        if response.status != 200 or not isinstance(result, dict):
            raise ServiceUnavailable(SERVICE, f"it answered {response.status} without a result")
        return PostcodeAddress(
            postcode=result.get("postcode") or wanted,
            district=result.get("admin_district"),
            region=result.get("region"),
            country=result.get("country"),
            county=result.get("admin_county"),
            ward=result.get("admin_ward"),
            longitude=_number(result.get("longitude")),
            latitude=_number(result.get("latitude")),
        )

    def validate(self, postcode: str) -> bool:
        """Whether the service knows the postcode (``GET /postcodes/<pc>/validate``)."""
        wanted = normalise(postcode)
        if wanted is None:
            return False
        url = join(self.base_url, "postcodes", wanted, "validate")
        response = request_json(SERVICE, "GET", url, timeout=self.timeout)
        return response.status == 200 and isinstance(response.body, dict) and response.body.get("result") is True

    def autocomplete(self, partial: str, *, limit: int = 10) -> list[str]:
        """Postcodes starting with ``partial`` (at least two characters), at most ``limit``."""
        squeezed = re.sub(r"\s+", "", partial or "").upper()
        if len(squeezed) < 2 or not squeezed.isalnum():
            return []
        url = join(self.base_url, "postcodes", squeezed, "autocomplete", query={"limit": str(limit)})
        response = request_json(SERVICE, "GET", url, timeout=self.timeout)
        found = response.body.get("result") if isinstance(response.body, dict) else None
        return [p for p in found if isinstance(p, str)][:limit] if isinstance(found, list) else []


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# -- the plugin ----------------------------------------------------------------------------------

log = logging.getLogger(__name__)


def client_from(settings: Settings) -> PostcodeClient:
    own = settings.plugin(NAME)
    return PostcodeClient(own.get("url", DEFAULT_URL), timeout=own.number("timeout", DEFAULT_TIMEOUT))


def lookup(client: PostcodeClient, params: dict[str, str]) -> list[LookupResult]:
    """The ``postcode`` lookup: ``q`` (or ``postcode``) is the postcode typed."""
    typed = (params.get("q") or params.get("postcode") or "").strip()
    postcode = normalise(typed)
    if postcode is None:
        raise Invalid(
            f"'{typed[:20]}' is not a UK postcode" if typed else "Type a postcode first",
            "Enter the whole postcode, for example SW1A 1AA.",
        )
    try:
        found = client.lookup(postcode)
    except ServiceUnavailable as exc:
        log.warning("postcode lookup of %s failed: %s", postcode, exc)
        raise LookupUnavailable(UNAVAILABLE) from exc
    return [LookupResult(found.summary(), found.values())] if found is not None else []


@hookimpl
def tracker_lookups(settings):
    client = client_from(settings)
    return {NAME: lambda params: lookup(client, params)}
