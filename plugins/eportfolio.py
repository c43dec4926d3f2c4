"""e-portfolio: signed webhooks out on item events, and progress in from the e-portfolio.

Out
    Each change to an item of a configured type (created, updated, moved, assigned) is POSTed
    as JSON to ``TRACKER_PLUGIN_EPORTFOLIO_URL``, from the outbox after the change is committed
    (never inside the request). A delivery that fails (no answer, a refusal, a 5xx) raises, so
    the outbox tries it again after 10 s, 60 s and 300 s and then dead-letters it for an admin
    to retry at ``/admin/outbox``. Every attempt is signed afresh.

In
    ``POST /integrations/eportfolio/progress`` takes the learner's progress from the e-portfolio
    (criteria met with their evidence, percentage complete, off-the-job hours logged, last
    activity) and saves it on the item through the progress and item services, like any other
    change: validated, in the history, watchers told.

Signatures (both ways)
    ``X-Tracker-Timestamp: <unix seconds>`` and
    ``X-Tracker-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the shared secret>``.
    The timestamp is inside what is signed so that it cannot be changed; a request more than
    ``TOLERANCE`` seconds (default 300) from the receiver's clock is refused, and a repeated
    request inside that window is answered without being applied twice.

Settings (``TRACKER_PLUGIN_EPORTFOLIO_<KEY>``): ``URL`` (where webhooks go; empty: none are
sent), ``SECRET`` (shared; without it nothing is sent and the endpoint refuses every request),
``TYPES`` (comma-separated type keys, default ``apprenticeship``), ``TOLERANCE`` (seconds, default
300), ``TIMEOUT`` (seconds, default 10).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.definitions.model import Registry
from engine.errors import Conflict, NotFound, Problem, ValidationFailed
from engine.models import Item
from engine.permissions import ADMIN, Actor
from engine.plugins import PluginStore, hookimpl
from engine.services import ItemService
from engine.services.items import finance_fields, item_link
from engine.validation import make_validator, schema_problems
from plugins.jsonhttp import ServiceUnavailable, request_json

NAME = "eportfolio"
SERVICE = "e-portfolio"
SIGNATURE_HEADER = "X-Tracker-Signature"
TIMESTAMP_HEADER = "X-Tracker-Timestamp"
DELIVERY_HEADER = "X-Tracker-Delivery"
EVENT_HEADER = "X-Tracker-Event"
#: who changes an item when the e-portfolio reports progress (the history shows this name)
ACTOR_NAME = "e-portfolio"
#: the largest progress request read
MAX_BODY = 64 * 1024
#: what a webhook says about the item's learner or employer: enough to match records, no more
SUBJECT_FIELDS = ("uln", "given_name", "family_name", "date_of_birth", "name", "company_number")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EportfolioConfig:
    url: str = ""
    secret: str = ""
    types: tuple[str, ...] = ("apprenticeship",)
    tolerance: int = 300
    timeout: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EportfolioConfig:
        own = settings.plugin(NAME)
        types = tuple(t.strip() for t in own.get("types", "apprenticeship").split(",") if t.strip())
        return cls(
            url=own.get("url"),
            secret=own.get("secret"),
            types=types,
            tolerance=int(own.number("tolerance", 300)),
            timeout=own.number("timeout", 10.0),
        )

    def sends(self, type_key: str) -> bool:
        return bool(self.url and self.secret) and type_key in self.types


# -- signatures ----------------------------------------------------------------------------------


def sign(secret: str, timestamp: int | str, body: bytes) -> str:
    """The signature header's value for ``body`` sent at ``timestamp``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class SignatureRefused(Exception):  # noqa: N818 - reads as "raise SignatureRefused(...)"
    """The request is not from the e-portfolio, or not from now; the message says which."""


def verify(
    secret: str, body: bytes, timestamp: str | None, signature: str | None, *, now: float, tolerance: int
) -> int:
    """Check a request's signature and age; returns its timestamp.

    Raises :class:`SignatureRefused` when a header is missing, the timestamp is not a number or
    more than ``tolerance`` seconds from ``now``, or the signature does not match.
    """
    if not timestamp or not signature:
        raise SignatureRefused(f"The request needs the {TIMESTAMP_HEADER} and {SIGNATURE_HEADER} headers.")
    try:
        sent = int(timestamp)
    except ValueError:
        raise SignatureRefused(f"{TIMESTAMP_HEADER} is not a number of seconds since 1970.") from None
    if abs(now - sent) > tolerance:
        raise SignatureRefused(
            f"The request's timestamp is more than {tolerance} seconds from the server's clock, so it may be a replay."
        )
    if not hmac.compare_digest(sign(secret, sent, body), signature.strip()):
        raise SignatureRefused("The signature does not match the body; check the shared secret.")
    return sent


# -- out: webhooks -------------------------------------------------------------------------------


class WebhookFailed(Exception):  # noqa: N818
    """The e-portfolio did not take the webhook; the outbox tries again later."""


def webhook_body(event: str, item: Item, payload: dict, registry: Registry, settings: Settings) -> dict:
    """What the e-portfolio is told about one event. ``id`` is the same on every retry, so
    the receiver can ignore a webhook it already has. Finance fields are never sent."""
    tracker_type = registry.type(item.type_key, item.type_version)
    data = _without(item.data or {}, finance_fields(tracker_type.schema))
    body: dict[str, Any] = {
        "id": f"{payload.get('source', '')}",
        "event": f"item.{event}",
        "actor": payload.get("actor"),
        "item": {
            "id": item.id,
            "type": item.type_key,
            "status": item.status,
            "title": item.title,
            "version": item.version,
            "url": settings.base_url.rstrip("/") + item_link(item.id),
            "assignee": item.assignee.username if item.assignee else None,
            "data": data,
        },
    }
    subject = item.subject
    if subject is not None:
        known = {k: v for k, v in (subject.data or {}).items() if k in SUBJECT_FIELDS}
        body["subject"] = {"id": subject.id, "type": subject.type_key, **known}
    for key in ("paths", "from", "to", "assignee", "previous"):
        if key in payload:
            body[key] = payload[key]
    return body


def deliver(config: EportfolioConfig, body: dict, *, now: float | None = None) -> None:
    """POST one webhook, signed. Raises :class:`WebhookFailed` unless the e-portfolio answers 2xx."""
    raw = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    stamp = int(time.time() if now is None else now)
    headers = {
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: sign(config.secret, stamp, raw),
        DELIVERY_HEADER: str(body.get("id", "")),
        EVENT_HEADER: str(body.get("event", "")),
    }
    try:
        response = request_json(SERVICE, "POST", config.url, raw_body=raw, headers=headers, timeout=config.timeout)
    except ServiceUnavailable as exc:
        raise WebhookFailed(f"the e-portfolio did not take the webhook: {exc.reason}") from exc
    if not 200 <= response.status < 300:
        raise WebhookFailed(f"the e-portfolio answered {response.status}: {json.dumps(response.body)[:300]}")


@hookimpl
def tracker_item_event(event, item, payload, registry, settings):
    """Send the event to the e-portfolio (raising on failure, so the outbox retries it)."""
    config = EportfolioConfig.from_settings(settings)
    if item is None or not config.sends(item.type_key):
        return
    if payload.get("actor") == ACTOR_NAME:
        return  # the e-portfolio made this change itself: telling it again would echo forever
    deliver(config, webhook_body(event, item, payload, registry, settings))


# -- in: progress --------------------------------------------------------------------------------

#: fields of the progress request saved on the item, and the item's field each one fills
PROGRESS_FIELDS = {
    "progress_percent": "eportfolio_progress",
    "otj_hours_logged": "otj_hours_logged",
    "last_activity": "eportfolio_last_activity",
}
#: most criteria one request may tick or untick
MAX_CRITERIA = 500


class BadProgress(Exception):  # noqa: N818
    """The progress request cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class CriterionUpdate:
    """A criterion of the item's qualification the e-portfolio marks as met (with where the
    evidence is and the day it was met) or as no longer met."""

    criterion: str
    met: bool = True
    evidence: str = ""
    date: str = ""


@dataclass(frozen=True)
class ProgressUpdate:
    item_id: int
    changes: dict[str, Any]
    criteria: tuple[CriterionUpdate, ...] = ()

    @classmethod
    def parse(cls, raw: bytes) -> ProgressUpdate:
        """Read a progress request body. Raises :class:`BadProgress` saying what is wrong."""
        try:
            body = json.loads(raw)
        except ValueError:
            raise BadProgress("The body is not JSON.") from None
        if not isinstance(body, dict):
            raise BadProgress("The body must be a JSON object.")
        item_id = body.get("item_id")
        if not isinstance(item_id, int) or isinstance(item_id, bool) or not 0 < item_id < 2**31:
            raise BadProgress("item_id must be the Tracker item's number (a positive whole number).")
        known = ["item_id", *PROGRESS_FIELDS, "criteria"]
        unknown = sorted(set(body) - set(known))
        if unknown:
            raise BadProgress(f"Unknown field(s): {', '.join(unknown)}; send only {', '.join(known)}.")
        changes = {PROGRESS_FIELDS[k]: v for k, v in body.items() if k in PROGRESS_FIELDS}
        criteria = _criteria(body.get("criteria", []))
        if not changes and not criteria:
            raise BadProgress(f"Nothing to update: send criteria or at least one of {', '.join(PROGRESS_FIELDS)}.")
        return cls(item_id, changes, criteria)


def _criteria(raw: Any) -> tuple[CriterionUpdate, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_CRITERIA:
        raise BadProgress(f"criteria must be a list of at most {MAX_CRITERIA} objects.")
    out = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("criterion"), str):
            raise BadProgress(f'criteria[{i}] needs criterion: the criterion\'s path or reference, e.g. "1/1/1.1".')
        met = entry.get("met", True)
        if not isinstance(met, bool):
            raise BadProgress(f"criteria[{i}].met must be true or false.")
        evidence, day = entry.get("evidence", ""), entry.get("date", "")
        if not isinstance(evidence, str) or not isinstance(day, str):
            raise BadProgress(f"criteria[{i}]: evidence and date must be text.")
        out.append(CriterionUpdate(entry["criterion"], met, evidence, day))
    return tuple(out)


def eportfolio_actor() -> Actor:
    """The e-portfolio acts as the system, under its own name in the history."""
    return Actor(None, ACTOR_NAME, (ADMIN,))


def apply_progress(session: Session, registry: Registry, config: EportfolioConfig, update: ProgressUpdate) -> Item:
    """Save the progress on the item: criteria through the progress service (ticks with
    evidence and date, weighted into the item's percentage), fields through the item service;
    both validated, both in the item's history.

    Every field value is checked against the item's schema before anything is saved, and the
    progress service checks all criteria before it ticks any, so a refused request changes
    nothing. A criterion sent as no longer met that is not ticked is left as it is (a retry
    must not fail).

    Raises NotFound when there is no such item of a configured type, and ValidationFailed when
    a value or a criterion is refused (e.g. a percentage above 100, a criterion the item's
    qualification does not have).
    """
    item = session.get(Item, update.item_id)
    if item is None or item.type_key not in config.types:
        raise NotFound(f"There is no {' or '.join(config.types)} #{update.item_id}.", "Check the item number.")
    tracker_type = registry.type(item.type_key, item.type_version)
    _check_fields(tracker_type.key, tracker_type.schema, update.changes)
    actor = eportfolio_actor()
    if update.criteria:
        from engine.services.progress import ProgressService

        ticks = [{"criterion": c.criterion, "evidence": c.evidence, "date": c.date} for c in update.criteria if c.met]
        unticks = _ticked(session, registry, item, [c.criterion for c in update.criteria if not c.met])
        if ticks or unticks:
            ProgressService(session, actor, registry).apply(item.id, ticks=ticks, unticks=unticks)
    if update.changes:
        return ItemService(session, actor, registry).update(item.id, changes=update.changes)
    session.refresh(item)
    return item


def _check_fields(type_key: str, schema: dict, changes: dict[str, Any]) -> None:
    """Refuse field values the item's schema would refuse, before anything is saved."""
    properties = schema.get("properties") or {}
    problems = [
        Problem("/" + name, f"{type_key} items do not record {name}", "Leave it out of the request.")
        for name in changes
        if name not in properties
    ]
    if not problems:
        partial = {"type": "object", "properties": {name: properties[name] for name in changes}}
        problems = schema_problems(make_validator(partial), changes)
    if problems:
        raise ValidationFailed(problems)


def _ticked(session: Session, registry: Registry, item: Item, names: list[str]) -> list[str]:
    """Those of ``names`` that are ticked now (others are already not met); a name that is no
    criterion is kept, so the progress service says what is wrong with it."""
    if not names:
        return []
    from engine import progress

    tracker_type = registry.type(item.type_key, item.type_version)
    qualification = progress.qualification_for(registry, tracker_type, item.data) if tracker_type.progress else None
    if qualification is None:
        return names
    ticked = {t.criterion for t in progress.ticks_of(session, item.id, qualification)}
    keep = []
    for name in names:
        found = qualification.resolve(name)
        if len(found) != 1 or found[0] in ticked:
            keep.append(name)
    return keep


def _seen(session: Session, signature: str, now: float, tolerance: int) -> bool:
    """Whether this exact request was applied already (a retry or a replay); remembers it
    otherwise, for as long as its timestamp would be accepted. The caller commits."""
    store = PluginStore(session, NAME)
    for key, value in store.items("seen:"):
        if now - value.get("at", 0) > 2 * tolerance:
            store.delete(key)
    key = "seen:" + hashlib.sha256(signature.encode()).hexdigest()
    if store.get(key) is not None:
        return True
    store.put(key, {"at": now})
    try:
        session.flush()  # a twin request arriving at the same moment fails here, not after applying
    except IntegrityError:
        session.rollback()
        return True
    return False


def progress_blueprint():
    """``POST /integrations/eportfolio/progress``. Answers JSON: 200 with the item's new
    version and stored percentage (``progress``: criteria met, weighted); 400 for a body that
    cannot be read; 401 for a missing, wrong or stale signature; 404 for an unknown item; 409
    when the item changed at the same moment (send again); 422 for values or criteria the
    item's type refuses; 503 when no secret is set. Nothing is changed unless the answer is 200."""
    from flask import Blueprint, current_app, request

    from webui import db_session, runtime
    from webui.auth import csrf

    bp = Blueprint("eportfolio", __name__, url_prefix="/integrations/eportfolio")
    csrf.exempt(bp)  # authenticated by the signature, not by a session

    def refuse(status: int, message: str, advice: str = "", **extra: Any):
        return {"error": message, "advice": advice, **extra}, status

    @bp.post("/progress")
    def progress():
        config = EportfolioConfig.from_settings(runtime().settings)
        if not config.secret:
            return refuse(
                503, "The e-portfolio integration is not set up here.", "Set TRACKER_PLUGIN_EPORTFOLIO_SECRET."
            )
        if (request.content_length or 0) > MAX_BODY:
            return refuse(413, f"The body is larger than {MAX_BODY} bytes.", "Send one item's progress per request.")
        raw = request.get_data(cache=False)
        now = current_app.config.get("EPORTFOLIO_CLOCK", time.time)()
        try:
            verify(
                config.secret,
                raw,
                request.headers.get(TIMESTAMP_HEADER),
                request.headers.get(SIGNATURE_HEADER),
                now=now,
                tolerance=config.tolerance,
            )
        except SignatureRefused as exc:
            return refuse(401, str(exc), "Sign each request as docs/plugins.md describes.")
        try:
            update = ProgressUpdate.parse(raw)
        except BadProgress as exc:
            return refuse(400, str(exc), "See docs/plugins.md for the request's shape.")
        session = db_session()
        if _seen(session, request.headers[SIGNATURE_HEADER], now, config.tolerance):
            session.commit()
            return {"status": "already applied", "item_id": update.item_id}, 200
        try:
            item = apply_progress(session, runtime().registry, config, update)
        except NotFound as exc:
            session.rollback()
            return refuse(404, exc.message, exc.advice)
        except ValidationFailed as exc:
            session.rollback()
            return refuse(422, exc.message, "", errors=[p.as_dict() for p in exc.problems])
        except Conflict as exc:
            session.rollback()
            return refuse(409, exc.message, "Send the progress again.")
        return {"status": "applied", "item_id": item.id, "version": item.version, "progress": item.progress}, 200

    return bp


@hookimpl
def tracker_blueprints(settings):
    return [progress_blueprint()]


def _without(data: dict, dotted: tuple[str, ...]) -> dict:
    out = json.loads(json.dumps(data))
    for name in dotted:
        *parents, last = name.split(".")
        node = out
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out
