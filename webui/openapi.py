"""The OpenAPI 3.1 document of the JSON API, built from :data:`webui.api.OPERATIONS`.

Parameters and request bodies come from the very schemas that validate requests, so the
document is the contract the code enforces. Response schemas are declared here.
"""

from __future__ import annotations

from typing import Any

from webui import api

API_VERSION = "1.0.0"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict) -> dict:
    return {"anyOf": [schema, {"type": "null"}]}


DATE_TIME = {"type": "string", "format": "date-time"}

_TYPE_FIELDS = {
    "key": {"type": "string"},
    "name": {"type": "string"},
    "version": {"type": "integer"},
    "kind": {"enum": ["tracker", "subject", "automation"]},
    "subject": {"enum": ["learner", "employer", "none"]},
    "description": {"type": "string"},
    "can_create": {"type": "boolean", "description": "Whether the caller may create items of this type."},
}

#: Response bodies, by name; operations name theirs in ``ok``.
RESPONSE_SCHEMAS: dict[str, dict] = {
    "Problem": {
        "type": "object",
        "description": "One thing that is wrong, where, and how to fix it.",
        "required": ["path", "message"],
        "properties": {
            "path": {
                "type": "string",
                "description": "A JSON pointer into the item's data (/reviews/0/date), the name of a request "
                "field (subject, assignee, status, template, page ...), or empty for the whole request.",
            },
            "message": {"type": "string"},
            "advice": {"type": "string", "description": "What to do about it."},
            "rule": {"type": "string", "description": "The key of the type's rule that found it, if any."},
        },
    },
    "Error": {
        "type": "object",
        "description": "Every error answer has this shape.",
        "required": ["message", "advice", "errors"],
        "properties": {
            "message": {"type": "string"},
            "advice": {"type": "string"},
            "errors": {"type": "array", "items": _ref("Problem")},
            "existing_id": {"type": "integer", "description": "409 for a duplicate: the existing item's id."},
            "existing_url": {"type": "string", "format": "uri", "description": "409: the existing item's page."},
        },
    },
    "Item": {
        "type": "object",
        "required": [
            "id",
            "type",
            "type_version",
            "status",
            "status_label",
            "title",
            "description",
            "data",
            "subject",
            "assignee",
            "due_date",
            "version",
            "warnings",
            "created_at",
            "updated_at",
            "url",
        ],
        "properties": {
            "id": {"type": "integer"},
            "type": {"type": "string", "description": "The tracker type's key."},
            "type_version": {"type": "integer", "description": "The type version the item was created under."},
            "status": {"type": "string", "description": "The key of its workflow state."},
            "status_label": {"type": "string"},
            "title": {"type": "string"},
            "description": {"type": "string"},
            "data": {
                "type": "object",
                "description": "Its fields, without finance fields unless the caller has finance.view.",
            },
            "subject": _nullable({"type": "integer", "description": "Id of the learner or employer item."}),
            "assignee": _nullable({"type": "string", "description": "User name."}),
            "due_date": _nullable({"type": "string", "format": "date"}),
            "version": {"type": "integer", "description": "Send it back with PATCH."},
            "warnings": {
                "type": "array",
                "items": _ref("Problem"),
                "description": "Rules that failed as warnings: saved, but worth a look.",
            },
            "created_at": DATE_TIME,
            "updated_at": DATE_TIME,
            "url": {"type": "string", "format": "uri", "description": "The item's page in the web UI."},
            "progress": _nullable(
                {"type": "number", "description": "Percent complete of its qualification (types that track progress)."}
            ),
            "transitions": {
                "type": "array",
                "description": "Transitions the caller could take now (single-item answers only).",
                "items": {
                    "type": "object",
                    "required": ["key", "label", "to"],
                    "properties": {"key": {"type": "string"}, "label": {"type": "string"}, "to": {"type": "string"}},
                },
            },
        },
    },
    "ItemPage": {
        "type": "object",
        "required": ["items", "total", "page", "per_page"],
        "properties": {
            "items": {"type": "array", "items": _ref("Item")},
            "total": {"type": "integer", "minimum": 0, "description": "How many items match in all."},
            "page": {"type": "integer", "minimum": 1},
            "per_page": {"type": "integer", "minimum": 1, "maximum": api.MAX_PER_PAGE},
        },
    },
    "TypeSummary": {
        "type": "object",
        "required": ["key", "name", "version", "kind", "subject", "workflow", "description", "can_create"],
        "properties": {**_TYPE_FIELDS, "workflow": {"type": "string", "description": "The workflow's key."}},
    },
    "TypeList": {"type": "array", "items": _ref("TypeSummary")},
    "Workflow": {
        "type": "object",
        "required": ["key", "name", "states", "transitions"],
        "properties": {
            "key": {"type": "string"},
            "name": {"type": "string"},
            "states": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "label", "category", "initial"],
                    "properties": {
                        "key": {"type": "string"},
                        "label": {"type": "string"},
                        "category": {"enum": ["open", "done", "cancelled"]},
                        "initial": {"type": "boolean"},
                    },
                },
            },
            "transitions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["key", "from", "to", "label", "roles", "requires"],
                    "properties": {
                        "key": {"type": "string"},
                        "from": {"type": "array", "items": {"type": "string"}, "description": '"*" means any.'},
                        "to": {"type": "string"},
                        "label": {"type": "string"},
                        "roles": {"type": "array", "items": {"type": "string"}},
                        "requires": {"type": "array", "items": {"type": "string"}},
                    },
                },
            },
        },
    },
    "TypeDetail": {
        "type": "object",
        "required": ["key", "name", "version", "kind", "subject", "workflow", "description", "can_create", "schema"],
        "properties": {
            **_TYPE_FIELDS,
            "schema": {"type": "object", "description": "The JSON Schema (draft 2020-12) of the items' data."},
            "workflow": _ref("Workflow"),
        },
    },
    "Event": {
        "type": "object",
        "required": ["id", "kind", "at", "actor", "payload"],
        "properties": {
            "id": {"type": "integer"},
            "kind": {
                "type": "string",
                "description": "created, updated, transitioned, assigned, commented; document_uploaded, "
                "document_accepted, document_rejected, document_deleted; progress_ticked, progress_unticked ...",
            },
            "at": DATE_TIME,
            "actor": _nullable({"type": "string", "description": "User name; null for the system."}),
            "payload": {"type": "object"},
        },
    },
    "History": {"type": "array", "items": _ref("Event")},
    "TaskLists": {
        "type": "array",
        "items": {
            "type": "object",
            "required": ["key", "label", "type", "count"],
            "properties": {
                "key": {"type": "string"},
                "label": {"type": "string"},
                "type": {"type": "string", "description": "The tracker type's key."},
                "type_name": {"type": "string"},
                "count": {"type": "integer", "minimum": 0},
            },
        },
    },
    "OpenApiDocument": {"type": "object", "required": ["openapi", "paths"]},
}

_ERROR_WORDS = {
    400: "The body is not valid JSON.",
    401: "No token, or a token that is unknown, revoked or belongs to a deactivated user.",
    403: "The caller's roles do not allow this.",
    404: "There is no such item or type.",
    409: "A stale version (someone else changed the item first), or an item with the same identity exists.",
    413: "The body is too large.",
    415: "The body is not sent as application/json.",
    422: "The request is not valid; errors lists each problem.",
}


def _json_content(schema: dict) -> dict:
    return {"application/json": {"schema": schema}}


def _response(status: int, words: str = "") -> dict:
    response: dict[str, Any] = {"description": words or _ERROR_WORDS[status], "content": _json_content(_ref("Error"))}
    if status == 401:
        response["headers"] = {
            "WWW-Authenticate": {"required": True, "schema": {"type": "string"}, "description": "Bearer challenge."}
        }
    return response


def _parameter(param: api.Param) -> dict:
    out = {
        "name": param.name,
        "in": param.where,
        "required": param.where == "path",
        "description": param.description,
        "schema": param.schema,
    }
    if param.schema.get("type") == "array":
        out["style"] = "form"
        out["explode"] = True
    return out


def _operation(op: api.Operation) -> dict:
    status, description, schema_name = op.ok
    content = (
        {media: {"schema": {"type": "string", "contentMediaType": media}} for media in op.ok_media}
        if op.ok_media
        else _json_content(_ref(schema_name))
    )
    ok: dict[str, Any] = {"description": description, "content": content}
    if status == 201:
        ok["headers"] = {"Location": {"required": True, "schema": {"type": "string"}, "description": "The new item."}}
    out: dict[str, Any] = {
        "operationId": op.operation_id,
        "summary": op.summary,
        "description": op.description,
        "tags": [op.tag],
        "responses": {
            str(status): ok,
            **{str(code): _response(code, op.error_words.get(code, "")) for code in op.errors},
        },
    }
    if op.params:
        out["parameters"] = [_parameter(p) for p in op.params]
    if op.body is not None:
        out["requestBody"] = {"required": True, "content": _json_content(_ref(op.body[0]))}
    if op.form is not None:
        out["requestBody"] = {"required": True, "content": {"multipart/form-data": {"schema": _ref(op.form[0])}}}
    if not op.auth:
        out["security"] = []
    return out


def document(base_url: str) -> dict:
    """The OpenAPI 3.1 document; ``base_url`` is where the server answers."""
    paths: dict[str, dict] = {}
    for op in api.OPERATIONS:
        paths.setdefault(api.bp.url_prefix + op.path, {})[op.method.lower()] = _operation(op)
    schemas = {**RESPONSE_SCHEMAS, **api.SCHEMAS}
    for op in api.OPERATIONS:
        if op.body is not None:
            schemas[op.body[0]] = op.body[1]
        if op.form is not None:
            schemas[op.form[0]] = op.form[1]
    return {
        "openapi": "3.1.0",
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "info": {
            "title": "Tracker API",
            "version": API_VERSION,
            "description": "Items, their types, history, task lists and queues, through the same services as the web "
            "UI. Authenticate with 'Authorization: Bearer <token>' (tracker users token create USER). "
            "Every error is JSON with message, advice and errors [{path, message, advice}].",
        },
        "servers": [{"url": base_url}],
        "security": [{"bearerAuth": []}],
        "tags": [
            {"name": "items", "description": "Create, read, change and move items."},
            {"name": "types", "description": "Tracker types and their workflows."},
            {"name": "tasklists", "description": "Task lists with counts."},
            {"name": "queue", "description": "Items waiting in a role's queue, and claiming them."},
            {"name": "documents", "description": "Files attached to items and their quality checks."},
            {"name": "progress", "description": "Progress through a qualification's criteria."},
            {"name": "meta", "description": "This document."},
        ],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API token from 'tracker users token create USER'.",
                }
            },
        },
    }
