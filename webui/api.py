"""The JSON API under ``/api/v1``: the engine's services for other programs.

Every route is declared once with :func:`operation`. Its parameters and request body are
JSON Schemas that validate the request here *and* describe it in the OpenAPI document
(:mod:`webui.openapi`), so the contract and the checks cannot drift apart.

Callers authenticate with ``Authorization: Bearer <token>`` (``tracker users token create``);
no cookies, no CSRF token. Every error is JSON, ``{message, advice, errors: [{path, message,
advice?}]}``: ``path`` is a JSON pointer into the item's ``data`` (``/reviews/0/date``), or the
name of a request field (``subject``, ``page``), or ``""`` for the request as a whole.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from functools import wraps
from typing import Any

from flask import Blueprint, Response, g, jsonify, request, url_for
from jsonschema import Draft202012Validator
from werkzeug import exceptions as werkzeug_exceptions
from werkzeug.exceptions import HTTPException

from engine import permissions
from engine.assignment import QueueService
from engine.definitions.model import TrackerType, Workflow
from engine.errors import NotFound, Problem, TrackerError, ValidationFailed
from engine.models import Event, Item
from engine.permissions import Actor
from engine.services import ItemService, bulk
from engine.services.items import item_link
from engine.tasklists import TaskListService
from engine.validation import make_validator, schema_problems
from webui import db_session, runtime
from webui.auth import csrf
from webui.lists import bulk_origin

log = logging.getLogger(__name__)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
csrf.exempt(bp)

#: Largest id (items, subjects, versions): the database columns are 32-bit integers.
MAX_ID = 2**31 - 1
#: Largest request body, in bytes.
MAX_BODY = 1024 * 1024
#: Deepest nesting of objects and lists accepted in a request body.
MAX_DEPTH = 32
#: Most items on one page of ``GET /items``.
MAX_PER_PAGE = 100

AUTH_REALM = 'Bearer realm="Tracker API"'


# -- declaring operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Param:
    """A path or query parameter; ``schema`` validates it once converted from text."""

    name: str
    schema: dict
    description: str
    where: str = "query"  # "query" or "path"


@dataclass
class Operation:
    """One route of the API, as validated here and documented in the OpenAPI document.

    ``ok`` is the success status, its description and the name of its response schema (in
    :data:`webui.openapi.RESPONSE_SCHEMAS`); ``errors`` lists every error status the route
    can answer with, and ``error_words`` says what those particular to the route mean there;
    ``body`` names the request body's JSON Schema, when it takes one. ``bulk`` marks a list
    that pages out records: it is refused outside ``TRACKER_BULK_EXPORT_ALLOW``.
    """

    method: str
    path: str
    operation_id: str
    summary: str
    description: str
    tag: str
    ok: tuple[int, str, str]  # (status, description, response schema name)
    errors: tuple[int, ...]
    params: tuple[Param, ...] = ()
    body: tuple[str, dict] | None = None  # (schema name, JSON Schema)
    auth: bool = True
    #: a multipart/form-data body (file uploads): (schema name, JSON Schema); the view reads it
    form: tuple[str, dict] | None = None
    #: media types of a success answer that is a file rather than JSON
    ok_media: tuple[str, ...] = ()
    error_words: dict[int, str] = field(default_factory=dict)
    bulk: bool = False
    query_validator: Draft202012Validator = field(init=False, repr=False)
    path_validator: Draft202012Validator = field(init=False, repr=False)
    body_validator: Draft202012Validator | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        query = {p.name: p.schema for p in self.params if p.where == "query"}
        self.query_validator = make_validator({"type": "object", "properties": query})
        path = {p.name: p.schema for p in self.params if p.where == "path"}
        self.path_validator = make_validator({"type": "object", "properties": path})
        if self.body is not None:
            self.body_validator = make_validator(self.body[1])

    @property
    def flask_rule(self) -> str:
        """The Flask URL rule. Path parameters are plain text there and checked against their
        schemas by :func:`_path`, so a malformed or impossible id is always a 404."""
        return self.path.replace("{", "<").replace("}", ">")


#: Every operation, in declaration order; :mod:`webui.openapi` documents exactly these.
OPERATIONS: list[Operation] = []
#: response schemas of routes declared in other modules (``{name: JSON Schema}``), documented with the rest
SCHEMAS: dict[str, dict] = {}


def operation(
    method: str,
    path: str,
    *,
    summary: str,
    ok: tuple[int, str, str],
    errors: tuple[int, ...] = (),
    params: tuple[Param, ...] = (),
    body: tuple[str, dict] | None = None,
    auth: bool = True,
    tag: str = "items",
    form: tuple[str, dict] | None = None,
    ok_media: tuple[str, ...] = (),
    error_words: dict[int, str] | None = None,
    bulk: bool = False,
) -> Callable:
    """Register a view as an API operation.

    The view is called with the path parameters, the validated query parameters (missing
    ones take their schema's ``default``, else None) and, when ``body`` is given, the
    validated request body as ``body``. Before that the caller is authenticated (unless
    ``auth`` is False): :func:`actor` gives the engine Actor.

    ``errors`` names the error statuses particular to the route (403, 409); those every
    operation of its kind can answer are added here, so the document cannot forget them.
    ``bulk`` lists are refused (403) outside ``TRACKER_BULK_EXPORT_ALLOW``, before the view runs.
    """

    # what every operation of its kind can answer: 401 without a token, 422 for a bad query,
    # 404 for a path naming nothing, 400/413/415 for a body that is not JSON, too big, or not sent as JSON
    implied = {422} | ({401} if auth else set()) | ({404} if any(p.where == "path" for p in params) else set())
    implied |= {400, 413, 415, 422} if body is not None else set()
    implied |= {413, 415, 422} if form is not None else set()  # a form too large, not multipart, or wrong
    implied |= {403} if bulk else set()  # an address outside TRACKER_BULK_EXPORT_ALLOW

    def register(view: Callable) -> Callable:
        op = Operation(
            method=method,
            path=path,
            operation_id=view.__name__,
            summary=summary,
            description=(view.__doc__ or "").strip(),
            tag=tag,
            ok=ok,
            errors=tuple(sorted(set(errors) | implied)),
            params=params,
            body=body,
            auth=auth,
            form=form,
            ok_media=ok_media,
            error_words=dict(error_words or {}),
            bulk=bulk,
        )
        OPERATIONS.append(op)

        @wraps(view)
        def endpoint(**path_values: Any):
            if op.auth:
                g.api_actor = _authenticate()
            kwargs = {**_path(op, path_values), **_query(op)}
            if op.body is not None:
                kwargs["body"] = _body(op)
            if op.form is not None and request.mimetype != "multipart/form-data":
                raise ApiError(415, "The request body must be multipart/form-data.", "Send the file as a form upload.")
            if op.bulk:
                _require_bulk_listing(op, kwargs)
            return view(**kwargs)

        bp.add_url_rule(op.flask_rule, endpoint=op.operation_id, view_func=endpoint, methods=[method])
        return view

    return register


def actor() -> Actor:
    """The engine Actor of the authenticated caller."""
    return g.api_actor


def items_service() -> ItemService:
    return runtime().items(db_session(), actor())


def _require_bulk_listing(op: Operation, values: dict[str, Any]) -> None:
    """Refuse a list from an address outside ``TRACKER_BULK_EXPORT_ALLOW``, recording the
    attempt with what was asked for, as the CSV export does."""
    filters = {name: value for name, value in values.items() if name != "type"}
    route = f"{op.method} {bp.url_prefix}{op.path}"
    bulk.require_listing_allowed(db_session(), actor(), bulk_origin(), route, values.get("type"), filters)


# -- authentication ----------------------------------------------------------------------------------


class ApiError(Exception):
    """An error the API itself reports (authentication, body format), with its status."""

    def __init__(self, status: int, message: str, advice: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.advice = advice
        self.headers = headers or {}


def _authenticate() -> Actor:
    """The Actor of the request's bearer token; ApiError 401 without a usable one.

    The token is checked on every request, so a revoked token or a deactivated user stops
    working at once.
    """
    header = request.headers.get("Authorization", "").strip()
    if not header:
        raise ApiError(
            401,
            "This API needs an API token.",
            "Send the header 'Authorization: Bearer <token>'. An administrator creates tokens with "
            "'tracker users token create USER'.",
            {"WWW-Authenticate": AUTH_REALM},
        )
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(
            401,
            "The Authorization header must be 'Bearer <token>'.",
            "Write the word Bearer, a space, then the token.",
            {"WWW-Authenticate": f'{AUTH_REALM}, error="invalid_request"'},
        )
    user = runtime().users(db_session()).user_for_token(token.strip())
    if user is None:
        raise ApiError(
            401,
            "That API token is not valid: it is unknown or revoked, or its user is deactivated.",
            "Ask an administrator for a new token.",
            {"WWW-Authenticate": f'{AUTH_REALM}, error="invalid_token"'},
        )
    return Actor.for_user(user, runtime().registry)


# -- reading the request -------------------------------------------------------------------------------


def _path(op: Operation, texts: dict[str, str]) -> dict[str, Any]:
    """The path parameters of ``op``, converted; one that cannot name anything is a 404."""
    values = {p.name: _from_text(texts[p.name], p.schema) for p in op.params if p.where == "path"}
    if not op.path_validator.is_valid(values):
        raise werkzeug_exceptions.NotFound()
    return values


def _query(op: Operation) -> dict[str, Any]:
    """The query parameters of ``op``, converted and checked against their schemas."""
    values: dict[str, Any] = {}
    for p in op.params:
        if p.where != "query":
            continue
        if p.schema.get("type") == "array":
            raw = request.args.getlist(p.name)
            if raw:
                values[p.name] = [_from_text(v, p.schema.get("items", {})) for v in raw]
        elif p.name in request.args:
            values[p.name] = _from_text(request.args[p.name], p.schema)
    known = [p.name for p in op.params if p.where == "query"]
    unknown = [
        Problem(name, f"'{name}' is not a parameter here", f"Use {', '.join(known)}." if known else "Leave it out.")
        for name in request.args
        if name not in known
    ]
    problems = _text_problems(values, "")
    problems += schema_problems(op.query_validator, values) if not problems else []
    problems = unknown + [_request_problem(p) for p in problems]
    if problems:
        raise ValidationFailed(problems, _query_message(len(problems)))
    return {p.name: values.get(p.name, p.schema.get("default")) for p in op.params if p.where == "query"}


def _query_message(count: int) -> str:
    return f"The query is not valid: {count} problem{'' if count == 1 else 's'} to fix."


def _from_text(text: str, schema: dict) -> Any:
    """Query text as the type its schema wants; left as text (and refused by the schema)
    when it is not a plain whole number."""
    if schema.get("type") == "integer" and re.fullmatch(r"[0-9]{1,15}", text):
        return int(text)
    return text


def _body(op: Operation) -> dict:
    """The request body: JSON, an object, within the size and depth limits, valid for ``op``."""
    if not request.is_json:
        raise ApiError(
            415,
            "The request body must be JSON.",
            "Send it with the header 'Content-Type: application/json'.",
        )
    request.max_content_length = MAX_BODY
    raw = request.get_data(cache=True)  # raises RequestEntityTooLarge past MAX_BODY
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float)
    except RecursionError:
        raise ApiError(400, "The request body is nested too deeply.", f"Nest at most {MAX_DEPTH} levels.") from None
    except ValueError as exc:
        where = f" (line {exc.lineno}, column {exc.colno})" if isinstance(exc, json.JSONDecodeError) else ""
        reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise ApiError(
            400,
            f"The request body is not valid JSON: {reason}{where}.",
            "Check the quotes, commas and brackets; the body must be one JSON object.",
        ) from None
    if not isinstance(body, dict):
        raise ValidationFailed(
            [Problem("", "The request body must be a JSON object", f"Send an object such as {_example(op)}.")]
        )
    problems = _text_problems(body, "")
    if not problems and op.body_validator is not None:
        problems = schema_problems(op.body_validator, body)
    if problems:
        raise ValidationFailed([_request_problem(p) for p in problems])
    return body


def _example(op: Operation) -> str:
    required = op.body[1].get("required", []) if op.body else []
    return "{" + ", ".join(f'"{name}": ...' for name in required) + "}"


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:20]} is too large")
    return value


def _text_problems(value: Any, path: str, depth: int = 0) -> list[Problem]:
    """Text no database can store (NUL characters, broken Unicode), and nesting too deep."""
    if depth > MAX_DEPTH:
        return [Problem(path, f"This is nested more than {MAX_DEPTH} levels deep", "Flatten the data.")]
    if isinstance(value, str):
        if "\x00" in value:
            return [Problem(path, "Text may not contain the NUL character (\\u0000)", "Remove that character.")]
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return [Problem(path, "This text is not valid Unicode", "Send text encoded as UTF-8.")]
        return []
    problems: list[Problem] = []
    if isinstance(value, dict):
        for key, sub in value.items():
            child = f"{path}/{_escape(key)}"
            problems += _text_problems(key, child, depth + 1) or _text_problems(sub, child, depth + 1)
    elif isinstance(value, list):
        for index, sub in enumerate(value):
            problems += _text_problems(sub, f"{path}/{index}", depth + 1)
    return problems


def _escape(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def _request_problem(problem: Problem) -> Problem:
    """A problem found in the request: paths inside ``data`` become pointers into the item's
    data (``/data/reviews/0`` -> ``/reviews/0``); other request fields keep their name."""
    path = problem.path
    if path.startswith("/data/"):
        path = path[len("/data") :]
    elif path.startswith("/"):
        path = path[1:].split("/", 1)[0]
    return Problem(path, problem.message, problem.advice, problem.rule, problem.severity)


# -- writing responses ---------------------------------------------------------------------------------


def _timestamp(value: datetime) -> str:
    """Stored times are naive UTC; say so, so the text is a valid RFC 3339 date-time."""
    return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()


def _problem_json(problem: Problem | dict) -> dict:
    p = problem if isinstance(problem, dict) else problem.as_dict()
    out = {"path": p.get("path", ""), "message": p.get("message", "")}
    for key in ("advice", "rule"):
        if p.get(key):
            out[key] = p[key]
    return out


def error_response(
    status: int,
    message: str,
    advice: str = "",
    problems: list[Problem] | tuple = (),
    *,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    """The JSON body every API error has: ``{message, advice, errors}`` (plus ``extra``)."""
    body = {"message": message, "advice": advice, "errors": [_problem_json(p) for p in problems], **(extra or {})}
    response = jsonify(body)
    response.status_code = status
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


def tracker_error_response(exc: TrackerError) -> Response:
    """An engine error as JSON: 422 lists each problem; a duplicate names the existing item."""
    extra = {}
    existing = getattr(exc, "existing_id", None)
    if existing is not None:
        extra = {"existing_id": existing, "existing_url": absolute_item_url(existing)}
    return error_response(exc.status, exc.message, exc.advice, getattr(exc, "problems", ()), extra=extra)


_HTTP_WORDS = {
    404: ("There is nothing at this address.", "The routes are listed in /api/v1/openapi.json."),
    413: ("The request body is too large.", f"Send at most {MAX_BODY // 1024} KB."),
    500: ("Something went wrong on our side.", "Try again; if it keeps happening, tell your administrator."),
}


def http_error_response(exc: HTTPException) -> Response:
    """A werkzeug HTTP error (unknown address, wrong method, body too large ...) as JSON."""
    status = exc.code or 500
    headers = {k: v for k, v in exc.get_headers() if k in ("Allow", "WWW-Authenticate", "Retry-After")}
    if status == 405:
        allowed = headers.get("Allow", "")
        return error_response(
            405, f"{request.method} is not allowed at this address.", f"Use one of: {allowed}.", headers=headers
        )
    message, advice = _HTTP_WORDS.get(status, (f"{exc.name}.", exc.description or ""))
    return error_response(status, message, advice, headers=headers)


@bp.errorhandler(TrackerError)
def _tracker_error(exc: TrackerError) -> Response:
    return tracker_error_response(exc)


@bp.errorhandler(ApiError)
def _api_error(exc: ApiError) -> Response:
    return error_response(exc.status, exc.message, exc.advice, headers=exc.headers)


@bp.errorhandler(HTTPException)
def _http_error(exc: HTTPException) -> Response:
    if (exc.code or 500) >= 500:
        log.error("API request %s %s failed", request.method, request.path, exc_info=exc)
    return http_error_response(exc)


def absolute_item_url(item_id: int) -> str:
    """The item page's absolute address, as notifications link to it."""
    return runtime().settings.base_url + item_link(item_id)


def item_json(service: ItemService, item: Item, *, detail: bool = False) -> dict:
    """An item as the caller may see it (finance fields hidden without ``finance.view``).

    ``detail`` adds the transitions the caller could take now.
    """
    state = service.workflow_of(item).state(item.status)
    out = {
        "id": item.id,
        "type": item.type_key,
        "type_version": item.type_version,
        "status": item.status,
        "status_label": state.label if state else item.status,
        "title": item.title,
        "description": item.description,
        "data": service.visible_data(item),
        "subject": item.subject_id,
        "assignee": item.assignee.username if item.assignee else None,
        "due_date": item.due_date.isoformat() if isinstance(item.due_date, date) else None,
        "version": item.version,
        "warnings": [_problem_json(w) for w in service.visible_warnings(item)],
        "created_at": _timestamp(item.created_at),
        "updated_at": _timestamp(item.updated_at),
        "url": absolute_item_url(item.id),
        "progress": item.progress,
    }
    if detail:
        out["transitions"] = [
            {"key": t.key, "label": t.label, "to": t.target} for t in service.available_transitions(item)
        ]
    return out


def type_summary(service: ItemService, tracker_type: TrackerType) -> dict:
    """A type as ``GET /types`` lists it; ``can_create`` says whether the caller may create one."""
    return {
        "key": tracker_type.key,
        "name": tracker_type.name,
        "version": tracker_type.version,
        "kind": tracker_type.kind,
        "subject": tracker_type.subject,
        "workflow": tracker_type.workflow,
        "description": tracker_type.description,
        "can_create": service.may_create(tracker_type),
    }


def workflow_json(workflow: Workflow) -> dict:
    return {
        "key": workflow.key,
        "name": workflow.name,
        "states": [
            {"key": s.key, "label": s.label, "category": s.category, "initial": s.initial} for s in workflow.states
        ],
        "transitions": [
            {
                "key": t.key,
                "from": list(t.sources),
                "to": t.target,
                "label": t.label,
                "roles": list(t.roles),
                "requires": list(t.requires),
            }
            for t in workflow.transitions
        ],
    }


def event_json(service: ItemService, item: Item, event: Event) -> dict:
    return {
        "id": event.id,
        "kind": event.kind,
        "at": _timestamp(event.at),
        "actor": event.actor.username if event.actor else None,
        "payload": service.visible_payload(item, event),
    }


def _known_type(key: str, message: str = "") -> TrackerType:
    """The tracker type ``key``; an unknown one is a mistake in the request (422), not a
    missing resource."""
    try:
        return runtime().registry.type(key)
    except NotFound as exc:
        raise ValidationFailed([Problem("type", exc.message, exc.advice)], message) from None


# -- request schemas ------------------------------------------------------------------------------------

ID_SCHEMA = {"type": "integer", "minimum": 1, "maximum": MAX_ID}
NAME_SCHEMA = {"type": "string", "minLength": 1, "maxLength": 64}

ITEM_ID = Param("item_id", ID_SCHEMA, "The item's number.", where="path")
TYPE_KEY = Param("key", {"type": "string", "minLength": 1}, "The tracker type's key, e.g. apprenticeship.", "path")

CREATE_ITEM = {
    "type": "object",
    "required": ["type", "data"],
    "additionalProperties": False,
    "properties": {
        "type": {**NAME_SCHEMA, "description": "The tracker type's key (GET /types)."},
        "data": {
            "type": "object",
            "description": "The item's fields; checked against the type's JSON Schema (GET /types/{key}). "
            "With a template, laid over the template's values.",
        },
        "subject": {
            "type": ["integer", "null"],
            "minimum": 1,
            "maximum": MAX_ID,
            "description": "Id of the learner or employer item this item is about; required when the type "
            "has a subject.",
        },
        "assignee": {"type": ["string", "null"], "maxLength": 64, "description": "User name of the assignee."},
        "description": {"type": "string", "maxLength": 20000, "description": "What needs to be done."},
        "template": {"type": ["string", "null"], "maxLength": 64, "description": "Start from this template."},
    },
}

UPDATE_ITEM = {
    "type": "object",
    "required": ["data", "version"],
    "additionalProperties": False,
    "properties": {
        "data": {
            "type": "object",
            "description": "Fields to change, laid over the item's data; null removes a field.",
        },
        "version": {
            **ID_SCHEMA,
            "description": "The item's version you last read; a stale one is refused with 409.",
        },
        "description": {"type": "string", "maxLength": 20000, "description": "A new description."},
    },
}

TRANSITION_ITEM = {
    "type": "object",
    "required": ["to"],
    "additionalProperties": False,
    "properties": {
        "to": {**NAME_SCHEMA, "description": "The key of the state to move to."},
        "data": {
            "type": "object",
            "description": "Fields to set in the same step (e.g. those the transition requires).",
        },
        "version": {**ID_SCHEMA, "description": "Refuse with 409 unless the item is still at this version."},
    },
}

LIST_PARAMS = (
    Param("type", NAME_SCHEMA, "Only items of this tracker type."),
    Param(
        "status",
        {"type": "array", "items": NAME_SCHEMA, "maxItems": 20},
        "Only items in these states (repeat the parameter for several).",
    ),
    Param("assignee", NAME_SCHEMA, "A user name, 'me' or 'none'."),
    Param("q", {"type": "string", "maxLength": 200}, "Text in the title or identity (a ULN, a company number)."),
    Param(
        "sort",
        {"type": "string", "minLength": 1, "maxLength": 100},
        "id, title, status, due_date, created_at, updated_at, or (with type) one of its list columns; "
        "'-' in front for descending. Default: newest first.",
    ),
    Param("page", {"type": "integer", "minimum": 1, "maximum": 100000, "default": 1}, "Page number, from 1."),
    Param(
        "per_page",
        {"type": "integer", "minimum": 1, "maximum": MAX_PER_PAGE, "default": 25},
        f"Items per page, at most {MAX_PER_PAGE}.",
    ),
)

PAGE_PARAMS = tuple(p for p in LIST_PARAMS if p.name in ("page", "per_page"))

#: why a list that pages out records answers 403
NOT_FROM_HERE = (
    "the caller's address is not in TRACKER_BULK_EXPORT_ALLOW, so it may not list records in bulk "
    "(single items may be read from anywhere)"
)
BULK_REFUSED = f"Refused because {NOT_FROM_HERE}."


# -- routes ---------------------------------------------------------------------------------------------


@operation(
    "GET",
    "/openapi.json",
    summary="This API's OpenAPI 3.1 document",
    ok=(200, "The OpenAPI document.", "OpenApiDocument"),
    auth=False,
    tag="meta",
)
def openapi_document():
    """The contract: every route, parameter, request body and response. No token needed."""
    from webui.openapi import document

    return document(runtime().settings.base_url)


@operation(
    "GET",
    "/types",
    summary="Tracker types you may view",
    ok=(200, "The tracker types.", "TypeList"),
    tag="types",
)
def list_types():
    """Every tracker type whose items the caller may view, subject types (learner, employer) first."""
    registry, service = runtime().registry, items_service()
    shown = [t for t in registry.types.values() if permissions.allows(actor(), "items.view", t)]
    return jsonify([type_summary(service, t) for t in sorted(shown, key=lambda t: (t.kind != "subject", t.key))])


@operation(
    "GET",
    "/types/{key}",
    summary="A tracker type: its JSON Schema and workflow",
    ok=(200, "The tracker type.", "TypeDetail"),
    errors=(403,),
    params=(TYPE_KEY,),
    tag="types",
)
def get_type(key: str):
    """The type's JSON Schema (the contract for ``data``) and its workflow's states and transitions."""
    registry = runtime().registry
    tracker_type = registry.type(key)
    permissions.require(actor(), "items.view", tracker_type)
    return {
        **type_summary(items_service(), tracker_type),
        "schema": tracker_type.schema,
        "workflow": workflow_json(registry.workflow_for(tracker_type)),
    }


@operation(
    "GET",
    "/items",
    summary="Items you may view, a page at a time",
    ok=(200, "A page of items.", "ItemPage"),
    errors=(403,),
    params=LIST_PARAMS,
    error_words={403: f"The caller's roles may not view items of this type, or {NOT_FROM_HERE}."},
    bulk=True,
)
def list_items(type, status, assignee, q, sort, page, per_page):
    """Items the caller may view, filtered, newest first unless ``sort`` says otherwise, with the
    total that match. A page past the end is empty. Only from the addresses in
    ``TRACKER_BULK_EXPORT_ALLOW`` (any address when it is unset)."""
    if type:
        _known_type(type, _query_message(1))
    service = items_service()
    try:
        found, total = service.list(
            type, status=status, assignee=assignee, q=q, sort=sort, limit=per_page, offset=(page - 1) * per_page
        )
    except ValidationFailed as exc:  # an unknown assignee or sort: the query is wrong, not a save
        raise ValidationFailed(exc.problems, _query_message(len(exc.problems))) from None
    return {"items": [item_json(service, i) for i in found], "total": total, "page": page, "per_page": per_page}


@operation(
    "POST",
    "/items",
    summary="Create an item",
    ok=(201, "The item was created.", "Item"),
    errors=(403, 409),
    body=("CreateItem", CREATE_ITEM),
)
def create_item(body: dict):
    """Create an item in its workflow's initial state. ``url`` in the answer is the item's page.

    An unknown type or invalid data is refused with 422, listing every problem; an item
    with the same identity (e.g. the same reference) with 409, naming the existing item.
    """
    _known_type(body["type"])
    service = items_service()
    item = service.create(
        body["type"],
        body["data"],
        subject_id=body.get("subject"),
        assignee=body.get("assignee"),
        description=body.get("description") or "",
        template=body.get("template"),
    )
    location = url_for("api.get_item", item_id=item.id)
    return item_json(service, item, detail=True), 201, {"Location": location}


@operation(
    "GET",
    "/items/{item_id}",
    summary="An item",
    ok=(200, "The item, with the transitions you could take now.", "Item"),
    errors=(403,),
    params=(ITEM_ID,),
)
def get_item(item_id: int):
    """The item as the caller may see it, with the transitions they could take now."""
    service = items_service()
    return item_json(service, service.get(item_id), detail=True)


@operation(
    "PATCH",
    "/items/{item_id}",
    summary="Change some fields of an item",
    ok=(200, "The changed item.", "Item"),
    errors=(403, 409),
    params=(ITEM_ID,),
    body=("UpdateItem", UPDATE_ITEM),
)
def update_item(item_id: int, body: dict):
    """Lay ``data`` over the item's data (null removes a field). ``version`` must be the item's
    current version, else 409: someone else changed it since you read it."""
    service = items_service()
    item = service.update(
        item_id, changes=body["data"], description=body.get("description"), expected_version=body["version"]
    )
    return item_json(service, item, detail=True)


@operation(
    "POST",
    "/items/{item_id}/transitions",
    summary="Move an item to another state",
    ok=(200, "The item in its new state.", "Item"),
    errors=(403, 409),
    params=(ITEM_ID,),
    body=("TransitionItem", TRANSITION_ITEM),
)
def transition_item(item_id: int, body: dict):
    """Take the transition to state ``to``, setting ``data`` first. 422 lists what is missing
    (fields the transition requires, or where the item can move from here); 403 when the
    caller's roles may not take it."""
    service = items_service()
    item = service.transition(item_id, body["to"], data=body.get("data"), expected_version=body.get("version"))
    return item_json(service, item, detail=True)


@operation(
    "GET",
    "/items/{item_id}/history",
    summary="Everything that happened to an item",
    ok=(200, "The item's events, oldest first.", "History"),
    errors=(403,),
    params=(ITEM_ID,),
)
def item_history(item_id: int):
    """Every event of the item, oldest first; values of fields the caller may not see are left out."""
    service = items_service()
    item = service.get(item_id)
    return jsonify([event_json(service, item, e) for e in service.history(item_id)])


@operation(
    "GET",
    "/tasklists",
    summary="Your task lists with their counts",
    ok=(200, "The caller's task lists.", "TaskLists"),
    tag="tasklists",
)
def tasklists():
    """The task lists the caller's roles see, each with how many items are in it for them."""
    return jsonify(TaskListService(db_session(), actor(), runtime().registry).summary())


@operation(
    "GET",
    "/tasklists/{type}/{key}/items",
    summary="The items in one of your task lists, a page at a time",
    ok=(200, "A page of the list's items.", "ItemPage"),
    params=(
        Param("type", NAME_SCHEMA, "The tracker type's key, e.g. compliance.", where="path"),
        Param("key", NAME_SCHEMA, "The task list's key (GET /tasklists).", where="path"),
        *PAGE_PARAMS,
    ),
    tag="tasklists",
    error_words={403: BULK_REFUSED},
    bulk=True,
)
def tasklist_items(type, key, page, per_page):
    """Exactly the items the list's count counts, soonest due first, with the total. A list
    the caller's roles may not see is a 404, as if it did not exist; a page past the end is empty.
    Only from the addresses in ``TRACKER_BULK_EXPORT_ALLOW`` (any address when it is unset)."""
    service = items_service()
    lists = TaskListService(db_session(), actor(), runtime().registry)
    found, total = lists.items(type, key, limit=per_page, offset=(page - 1) * per_page)
    return {"items": [item_json(service, i) for i in found], "total": total, "page": page, "per_page": per_page}


@operation(
    "GET",
    "/queue",
    summary="The items waiting in your queues, a page at a time",
    ok=(200, "A page of the items the caller may claim.", "ItemPage"),
    params=(Param("type", NAME_SCHEMA, "Only the queue of this tracker type."), *PAGE_PARAMS),
    tag="queue",
    error_words={403: BULK_REFUSED, 422: "The query is not valid, or names a type that is not one of your queues."},
    bulk=True,
)
def list_queue(type, page, per_page):
    """Unassigned open items of the types queued for the caller's roles (an administrator serves
    every queue), oldest first, with the total; claim one with ``POST /items/{item_id}/claim``.
    A caller without a queue gets an empty page; a page past the end is empty. Only from the
    addresses in ``TRACKER_BULK_EXPORT_ALLOW`` (any address when it is unset)."""
    service = items_service()
    if type:
        _known_type(type, _query_message(1))
    try:
        found, total = QueueService(service).waiting(type_key=type, limit=per_page, offset=(page - 1) * per_page)
    except ValidationFailed as exc:
        raise ValidationFailed(exc.problems, _query_message(1)) from None
    return {"items": [item_json(service, i) for i in found], "total": total, "page": page, "per_page": per_page}


@operation(
    "POST",
    "/items/{item_id}/claim",
    summary="Claim an item waiting in your queue",
    ok=(200, "The item, now assigned to the caller.", "Item"),
    errors=(403, 409),
    params=(ITEM_ID,),
    tag="queue",
    error_words={
        403: "The caller does not have the role whose queue the item waits in.",
        409: "Someone else claimed the item first (also at the same moment); message says who.",
        422: "The item is not in a queue (its type's items are assigned, not claimed) or is no longer open; "
        "or the request has query parameters, which this route does not take.",
    },
)
def claim_item(item_id: int):
    """Assign the item waiting in the caller's queue to the caller. Of two callers claiming at
    once, one gets it and the other a 409 naming who did."""
    service = items_service()
    item = QueueService(service).claim(item_id)
    return item_json(service, item, detail=True)


# the documents and progress routes are declared in their own module, on this blueprint
from webui import api_documents  # noqa: E402, F401
