"""Apprenticeships in tests: the sign-up paperwork "Confirm start on programme" requires
(tracker_types/apprenticeship/type.yaml), uploaded and accepted through the document service,
so a test can start an apprentice on programme the way staff do."""

from __future__ import annotations

import atexit
import io
import shutil
import tempfile
from pathlib import Path

from engine.config import DEFAULT_UPLOAD_TYPES
from engine.documents import DocumentStore
from engine.models import Item
from engine.permissions import Actor
from engine.services import ItemService
from engine.services.documents import DocumentService

#: the categories ``start_programme`` requires and "Signup paperwork incomplete" counts
SIGNUP_DOCUMENTS = ("commitment_statement", "apprenticeship_agreement", "initial_assessment")

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"

_store: DocumentStore | None = None


def paperwork_store() -> DocumentStore:
    """One documents folder for the test run: these tests need the accepted documents' rows,
    and the same PDF is kept once by its content hash however often it is uploaded."""
    global _store
    if _store is None:
        root = Path(tempfile.mkdtemp(prefix="tracker-signup-paperwork-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        _store = DocumentStore(root, max_bytes=1024 * 1024, types=DEFAULT_UPLOAD_TYPES)
    return _store


def accept_signup_paperwork(
    items: ItemService,
    item_id: int,
    categories: tuple[str, ...] = SIGNUP_DOCUMENTS,
    *,
    store: DocumentStore | None = None,
) -> None:
    """Upload a signed PDF for each category and accept it, as the system operator."""
    documents = DocumentService(items.session, Actor.system(), items.registry, store or paperwork_store())
    for category in categories:
        document = documents.upload(item_id, category, f"{category}.pdf", io.BytesIO(PDF))
        documents.accept(document.id)


def start_on_programme(items: ItemService, item_id: int) -> Item:
    """Take a new apprenticeship through sign-up to 'On programme', its paperwork accepted."""
    items.transition(item_id, "signup")
    accept_signup_paperwork(items, item_id)
    return items.transition(item_id, "on_programme")
