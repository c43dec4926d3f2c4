"""Bulk downloads (CSV lists, ILR files): from which addresses they are allowed, and their audit.

Every bulk download is checked against ``TRACKER_BULK_EXPORT_ALLOW`` (addresses or CIDR ranges;
empty allows any address) and recorded as a :class:`~engine.models.BulkExport` row: who, from
where, what and how many. A refused attempt is recorded too, then refused with
:class:`~engine.errors.PermissionDenied` (403 on the web). The command line runs on the server
itself, so it has no client address and is never refused, but it is recorded all the same.

The JSON API's lists are checked against the same addresses (:func:`require_listing_allowed`):
paging through them is a bulk download by other means. Only their refusals are recorded; a
page that is served is not a download of its own.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_address
from typing import Any

from sqlalchemy.orm import Session

from engine import audit
from engine.errors import PermissionDenied
from engine.models import BulkExport
from engine.permissions import Actor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Origin:
    """Where a bulk download is asked from: ``address`` is the client's IP address (None for
    the command line) and ``allow`` the networks bulk downloads may come from (empty: any)."""

    address: str | None = None
    allow: tuple[IPv4Network | IPv6Network, ...] = ()

    def allowed(self) -> bool:
        if self.address is None or not self.allow:
            return True
        try:
            address = ip_address(self.address.split("%")[0])
        except ValueError:
            return False
        # an IPv4 client seen through an IPv6 socket (::ffff:10.0.0.5) is its IPv4 address
        mapped = getattr(address, "ipv4_mapped", None)
        return any(address in net or (mapped is not None and mapped in net) for net in self.allow)


#: the command line: on the server itself, always allowed
COMMAND_LINE = Origin()


#: ``BulkExport.kind`` of a refused JSON API list
API_LIST = "api_list"


def check(origin: Origin) -> None:
    """Raise PermissionDenied unless bulk downloads are allowed from ``origin``'s address (pages
    that only offer a download use it; the download itself uses :func:`require_allowed`)."""
    if not origin.allowed():
        raise PermissionDenied(
            f"Bulk downloads are not allowed from your address ({origin.address or 'unknown'}).",
            "Download from the office network or the VPN; an administrator lists the addresses allowed "
            "in TRACKER_BULK_EXPORT_ALLOW.",
        )


def require_allowed(
    session: Session, actor: Actor, origin: Origin, kind: str, type_key: str | None, filters: dict | None = None
) -> None:
    """Raise PermissionDenied, after recording the refused attempt, unless bulk downloads are
    allowed from ``origin``'s address."""
    if origin.allowed():
        return
    log.warning("bulk download refused: %s asked for a %s export from %s", actor.username, kind, origin.address)
    record(session, actor, origin, kind, type_key, filters=filters, outcome="refused")
    session.commit()
    check(origin)


def require_listing_allowed(
    session: Session, actor: Actor, origin: Origin, route: str, type_key: str | None, filters: dict | None = None
) -> None:
    """Raise PermissionDenied, after recording the refused attempt, unless records may be listed
    in bulk (the JSON API's list ``route``, e.g. ``GET /api/v1/items``) from ``origin``'s address."""
    if origin.allowed():
        return
    log.warning("API list refused: %s asked for %s from %s", actor.username, route, origin.address)
    record(session, actor, origin, API_LIST, type_key, filters=filters, outcome="refused", detail={"route": route})
    session.commit()
    raise PermissionDenied(
        f"Your address ({origin.address or 'unknown'}) is not allowed to list records in bulk.",
        "Call the API from the office network or the VPN, or ask your administrator to add this address "
        "to TRACKER_BULK_EXPORT_ALLOW. Single items (GET /api/v1/items/{id}) may be read from anywhere.",
    )


def record(
    session: Session,
    actor: Actor,
    origin: Origin,
    kind: str,
    type_key: str | None,
    *,
    filters: dict | None = None,
    item_count: int = 0,
    filename: str = "",
    outcome: str = "done",
    detail: dict[str, Any] | None = None,
) -> BulkExport:
    """Add the audit row of one bulk download to ``session`` (the caller commits)."""
    row = BulkExport(
        user_id=actor.user_id,
        address=origin.address or "",
        kind=kind,
        type_key=type_key,
        filters={k: v for k, v in (filters or {}).items() if v not in (None, "", [], ())},
        item_count=item_count,
        filename=filename,
        outcome=outcome,
        detail=detail or {},
    )
    session.add(row)
    kind_key = f"export.{kind}" if f"export.{kind}" in audit.KINDS else "export.csv"
    # an API list has no file: its route says what was asked for
    route = (detail or {}).get("route", "")
    parts = (route, type_key or "", filename, f"{item_count} items" if item_count else "", outcome)
    what = ", ".join(x for x in parts if x)
    audit.record(session, kind_key, actor=actor, address=origin.address, target=what, bulk_export=row)
    return row
