"""The documents and progress routes of the JSON API (``/api/v1``), declared like every other
route with :func:`webui.api.operation`, so they are validated and documented the same way.

Uploads are ``multipart/form-data`` (``file``, ``category``, optionally ``replaces``); a file
too large is 413, one of a kind not accepted 415. Downloads answer with the file itself,
always as an attachment.
"""

from __future__ import annotations

from flask import request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from engine.documents import MEDIA_TYPES, category_states, describe_size
from engine.errors import Problem, ValidationFailed
from engine.models import Document
from engine.services.documents import DECISIONS, MAX_REASON, DocumentService
from engine.services.progress import MAX_EVIDENCE, ProgressService, ProgressView, progress_record
from webui import db_session, runtime
from webui.api import ID_SCHEMA, ITEM_ID, SCHEMAS, ApiError, Param, _timestamp, actor, operation
from webui.documents import FORM_MARGIN, _file_response, store

DOCUMENT_ID = Param("document_id", ID_SCHEMA, "The document's number.", where="path")


def _documents() -> DocumentService:
    return DocumentService(db_session(), actor(), runtime().registry, store())


def _progress() -> ProgressService:
    return ProgressService(db_session(), actor(), runtime().registry)


def document_json(service: DocumentService, document: Document) -> dict:
    tracker_type = service.type_of(document)
    return {
        "id": document.id,
        "item": document.item_id,
        "category": document.category,
        "category_label": service.category_label(tracker_type, document.category),
        "filename": document.filename,
        "content_type": document.content_type,
        "size": document.size,
        "qa_state": document.qa_state,
        "qa_reason": document.qa_reason,
        "qa_by": document.qa_by.username if document.qa_by else None,
        "qa_at": _timestamp(document.qa_at) if document.qa_at else None,
        "uploaded_by": document.uploaded_by.username if document.uploaded_by else None,
        "uploaded_at": _timestamp(document.uploaded_at),
        "current": document.current,
        "replaced_by": document.replaced_by_id,
        "deleted": document.deleted_at is not None,
        "download_url": runtime().settings.base_url + f"/api/v1/documents/{document.id}/content",
    }


def progress_json(view: ProgressView) -> dict:
    return progress_record(view)


# -- request and response schemas -----------------------------------------------------------------------

UPLOAD_FORM = {
    "type": "object",
    "required": ["file", "category"],
    "properties": {
        "file": {"type": "string", "contentMediaType": "application/octet-stream", "description": "The file."},
        "category": {
            "type": "string",
            "minLength": 1,
            "maxLength": 64,
            "description": "The kind of document: a category key of the item's type (GET /items/{item_id}/documents).",
        },
        "replaces": {
            "type": "integer",
            "minimum": 1,
            "maximum": 2**31 - 1,
            "description": "A current document of the same kind that the new one supersedes.",
        },
    },
}

CHECK_DOCUMENT = {
    "type": "object",
    "required": ["decision"],
    "additionalProperties": False,
    "properties": {
        "decision": {"enum": list(DECISIONS), "description": "accept, or reject with a reason."},
        "reason": {"type": "string", "maxLength": MAX_REASON, "description": "Why it is rejected (required then)."},
    },
}

CHANGE_PROGRESS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "ticks": {
            "type": "array",
            "maxItems": 500,
            "description": "Criteria met: their path UNIT/ELEMENT/CRITERION (or an unambiguous ref), "
            "the evidence reference and the date met. A ticked criterion ticked again gets the new evidence.",
            "items": {
                "type": "object",
                "required": ["criterion", "evidence", "date"],
                "additionalProperties": False,
                "properties": {
                    "criterion": {"type": "string", "minLength": 1, "maxLength": 200},
                    "evidence": {"type": "string", "minLength": 1, "maxLength": MAX_EVIDENCE},
                    "date": {"type": "string", "format": "date"},
                },
            },
        },
        "unticks": {
            "type": "array",
            "maxItems": 500,
            "items": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": "Criteria whose tick is taken off.",
        },
        "version": {**ID_SCHEMA, "description": "Refuse with 409 unless the item is still at this version."},
    },
}

_NULLABLE_STRING = {"type": ["string", "null"]}
_DOCUMENT = {
    "type": "object",
    "required": ["id", "item", "category", "filename", "content_type", "size", "qa_state", "current", "download_url"],
    "properties": {
        "id": {"type": "integer"},
        "item": {"type": "integer"},
        "category": {"type": "string"},
        "category_label": {"type": "string"},
        "filename": {"type": "string", "description": "What the uploader called it."},
        "content_type": {"type": "string"},
        "size": {"type": "integer", "description": "Bytes."},
        "qa_state": {"enum": ["pending", "accepted", "rejected"]},
        "qa_reason": {**_NULLABLE_STRING, "description": "Why it was rejected."},
        "qa_by": _NULLABLE_STRING,
        "qa_at": {"type": ["string", "null"], "format": "date-time"},
        "uploaded_by": _NULLABLE_STRING,
        "uploaded_at": {"type": "string", "format": "date-time"},
        "current": {"type": "boolean", "description": "False once replaced by a newer version or deleted."},
        "replaced_by": {"type": ["integer", "null"]},
        "deleted": {"type": "boolean"},
        "download_url": {"type": "string", "format": "uri"},
    },
}
_CRITERION = {
    "type": "object",
    "required": ["path", "ref", "text", "weight", "met"],
    "properties": {
        "path": {"type": "string", "description": "UNIT/ELEMENT/CRITERION: what PATCH names."},
        "ref": {"type": "string"},
        "text": {"type": "string"},
        "weight": {"type": "number"},
        "met": {"type": "boolean"},
        "evidence": _NULLABLE_STRING,
        "date": {"type": ["string", "null"], "format": "date"},
        "ticked_by": _NULLABLE_STRING,
    },
}
_PART = {
    "ref": {"type": "string"},
    "title": {"type": "string"},
    "weight": {"type": "number"},
    "percent": {"type": "number"},
}

SCHEMAS.update(
    {
        "Document": _DOCUMENT,
        "DocumentList": {
            "type": "object",
            "required": ["categories", "documents"],
            "properties": {
                "categories": {
                    "type": "array",
                    "description": "The kinds of document the item's type takes, each with its best check so far.",
                    "items": {
                        "type": "object",
                        "required": ["key", "label", "state"],
                        "properties": {
                            "key": {"type": "string"},
                            "label": {"type": "string"},
                            "description": {"type": "string"},
                            "state": {"enum": ["accepted", "pending", "rejected", "missing"]},
                        },
                    },
                },
                "documents": {
                    "type": "array",
                    "items": {"$ref": "#/components/schemas/Document"},
                    "description": "Current documents and the earlier versions they replaced.",
                },
            },
        },
        "Progress": {
            "type": "object",
            "required": ["item", "percent", "qualification", "units", "may_edit"],
            "properties": {
                "item": {"type": "integer"},
                "percent": {
                    "type": ["number", "null"],
                    "description": "Weighted percent complete; null without a structure.",
                },
                "ticked": {"type": "integer"},
                "total": {"type": "integer"},
                "may_edit": {"type": "boolean", "description": "Whether the caller may tick (progress.edit)."},
                "reason": {"type": "string", "description": "Why there is no structure, when there is none."},
                "qualification": {
                    "type": ["object", "null"],
                    "properties": {
                        "key": {"type": "string"},
                        "title": {"type": "string"},
                        "qan": _NULLABLE_STRING,
                        "reference": _NULLABLE_STRING,
                        "level": {"type": ["integer", "null"]},
                    },
                },
                "units": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            **_PART,
                            "elements": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {**_PART, "criteria": {"type": "array", "items": _CRITERION}},
                                },
                            },
                        },
                    },
                },
            },
        },
    }
)


# -- routes ---------------------------------------------------------------------------------------------


@operation(
    "GET",
    "/items/{item_id}/documents",
    summary="An item's documents and the kinds it takes",
    ok=(200, "The kinds of document and the documents.", "DocumentList"),
    errors=(403,),
    params=(ITEM_ID,),
    tag="documents",
)
def list_documents(item_id: int):
    """The kinds of document the item's type takes (with the best check each has so far) and its
    documents: the current ones and the earlier versions they replaced."""
    service = _documents()
    found = service.list(item_id, earlier=True)
    tracker_type = service.items.type_of(service.items.get(item_id))
    states = category_states(db_session(), item_id)
    categories = [
        {"key": c.key, "label": c.label, "description": c.description, "state": states.get(c.key, "missing")}
        for c in tracker_type.documents
    ]
    return {"categories": categories, "documents": [document_json(service, d) for d in found]}


@operation(
    "POST",
    "/items/{item_id}/documents",
    summary="Upload a document to an item",
    ok=(201, "The document, waiting for its quality check.", "Document"),
    errors=(403, 409),
    params=(ITEM_ID,),
    form=("UploadDocument", UPLOAD_FORM),
    tag="documents",
)
def upload_document(item_id: int):
    """Attach ``file`` in ``category`` (needs items.edit on the item). 413 when it is larger than
    the limit, 415 when it is not a kind accepted or its content is not what its name says,
    422 for an unknown category."""
    service = _documents()
    request.max_content_length = service.store.max_bytes + FORM_MARGIN
    try:
        form, files = request.form, request.files
    except RequestEntityTooLarge:
        raise ApiError(
            413,
            f"The file is larger than {describe_size(service.store.max_bytes)}, the most a document may be.",
            "Make the file smaller, then upload it again.",
        ) from None
    upload = files.get("file")
    problems = []
    if upload is None:
        problems.append(Problem("file", "The form has no file", "Send the file in the form field 'file'."))
    replaces = form.get("replaces")
    if replaces not in (None, "") and not replaces.isdigit():
        problems.append(Problem("replaces", f"'{replaces[:20]}' is not a document number", "Send a whole number."))
    if problems:
        service.items.get(item_id)  # a missing or hidden item says so first
        raise ValidationFailed(problems, "The document was not uploaded.")
    document = service.upload(
        item_id,
        form.get("category", ""),
        upload.filename,
        upload.stream,
        replaces=int(replaces) if replaces else None,
    )
    return document_json(service, document), 201, {"Location": url_for("api.get_document", document_id=document.id)}


@operation(
    "GET",
    "/documents/{document_id}",
    summary="A document's details and check",
    ok=(200, "The document.", "Document"),
    errors=(403,),
    params=(DOCUMENT_ID,),
    tag="documents",
)
def get_document(document_id: int):
    """The document, for whoever may see its item; a deleted one is 404."""
    service = _documents()
    return document_json(service, service.get(document_id))


@operation(
    "GET",
    "/documents/{document_id}/content",
    summary="Download a document",
    ok=(200, "The file, as an attachment.", "Document"),
    errors=(403,),
    params=(DOCUMENT_ID,),
    tag="documents",
    ok_media=MEDIA_TYPES,
)
def download_document(document_id: int):
    """The file itself, with its media type, as an attachment (never to be shown inline)."""
    service = _documents()
    document = service.get(document_id)
    return _file_response(document, service.path(document))


@operation(
    "POST",
    "/documents/{document_id}/check",
    summary="Accept or reject a document",
    ok=(200, "The checked document.", "Document"),
    errors=(403, 409),
    params=(DOCUMENT_ID,),
    body=("CheckDocument", CHECK_DOCUMENT),
    tag="documents",
)
def check_document(document_id: int, body: dict):
    """Needs documents.qa. A rejection needs a ``reason`` (422 without) and tells the uploader;
    a document checked already, or replaced, is 409."""
    service = _documents()
    return document_json(service, service.decide(document_id, body["decision"], body.get("reason")))


@operation(
    "DELETE",
    "/documents/{document_id}",
    summary="Delete a document",
    ok=(200, "The deleted document (its history stays).", "Document"),
    errors=(403, 409),
    params=(DOCUMENT_ID,),
    tag="documents",
)
def delete_document(document_id: int):
    """Quality assurance may delete any current document, the uploader their own while it waits
    for its check; a replaced one is 409."""
    service = _documents()
    return document_json(service, service.delete(document_id))


@operation(
    "GET",
    "/items/{item_id}/progress",
    summary="An item's progress through its qualification",
    ok=(200, "The qualification's units, elements and criteria with what is met.", "Progress"),
    errors=(403,),
    params=(ITEM_ID,),
    tag="progress",
)
def get_progress(item_id: int):
    """Percent complete at every level, weighted; 404 for a type that does not track progress."""
    return progress_json(_progress().view(item_id))


@operation(
    "PATCH",
    "/items/{item_id}/progress",
    summary="Tick and untick criteria",
    ok=(200, "The progress after the change.", "Progress"),
    errors=(403, 409),
    params=(ITEM_ID,),
    body=("ChangeProgress", CHANGE_PROGRESS),
    tag="progress",
)
def change_progress(item_id: int, body: dict):
    """Needs progress.edit (items.edit is not needed). All or nothing: 422 lists every problem
    (an unknown criterion, missing evidence, a date in the future ...)."""
    view = _progress().apply(
        item_id, ticks=body.get("ticks") or [], unticks=body.get("unticks") or [], version=body.get("version")
    )
    return progress_json(view)
