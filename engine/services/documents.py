"""Documents attached to items: upload, check (accept or reject with a reason), delete, download.

Every door (web page, API, CLI) goes through :class:`DocumentService`. A document is seen by
whoever may see its item; uploading needs ``items.edit`` on the item, checking needs
``documents.qa``. Each step is an event in the item's history and an ``item_event`` outbox
row, in the transaction of the change; a rejection also tells the uploader, with a link to
the item, through the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import func, select, true, update
from sqlalchemy.orm import Session

from engine import permissions
from engine.definitions.model import DocumentCategory, Registry, TrackerType
from engine.documents import DocumentStore, clean_filename, describe_size
from engine.errors import Conflict, NotFound, PermissionDenied, Problem, ValidationFailed
from engine.models import Document, Item, User, utcnow
from engine.permissions import Actor
from engine.services.items import ItemService

log = logging.getLogger(__name__)

#: the longest reason a rejection may give
MAX_REASON = 1000
DECISIONS = ("accept", "reject")


class DocumentService:
    """Documents of items for one actor.

    Args:
        session: a SQLAlchemy session; each changing method commits or rolls it back.
        actor: on whose behalf; permissions are checked for them.
        registry: the loaded definitions (document categories come from the item's type).
        store: the documents folder.
        clock: returns the current time (naive UTC); tests pass a fixed one.
    """

    def __init__(
        self,
        session: Session,
        actor: Actor,
        registry: Registry,
        store: DocumentStore,
        *,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.actor = actor
        self.registry = registry
        self.store = store
        self.clock = clock
        self.items = ItemService(session, actor, registry)

    # -- reading -------------------------------------------------------------------------------

    def list(self, item_id: int, *, earlier: bool = False) -> list[Document]:
        """The item's current documents by category (in the type's order), then newest first;
        with ``earlier``, the versions they replaced too. Deleted documents are not listed."""
        item = self.items.get(item_id)
        stmt = select(Document).where(Document.item_id == item.id, Document.deleted_at.is_(None))
        if not earlier:
            stmt = stmt.where(Document.current.is_(true()))
        order = {c.key: i for i, c in enumerate(self.items.type_of(item).documents)}
        found = list(self.session.scalars(stmt.order_by(Document.id.desc())))
        return sorted(found, key=lambda d: (order.get(d.category, len(order)), not d.current))

    def get(self, document_id: int) -> Document:
        """The document, if the actor may see its item. Raises NotFound (also for a deleted one)
        or PermissionDenied."""
        document = self.session.get(Document, document_id)
        if document is None:
            raise NotFound(f"There is no document #{document_id}.", "Check the number on the item's page.")
        self.items.get(document.item_id)
        if document.deleted_at is not None:
            raise NotFound(
                f"Document #{document_id} was deleted on {document.deleted_at:%d %b %Y}.",
                "The item's history says who deleted it; ask them for the file if it is still needed.",
            )
        return document

    def path(self, document: Document) -> Path:
        """Where the document's content is; NotFound when the file has gone from the folder."""
        path = self.store.path_for(document.sha256)
        if not path.is_file():
            log.error("document %s: file %s is missing from %s", document.id, document.sha256, self.store.root)
            raise NotFound(
                f"The file of document #{document.id} is missing from the documents folder.",
                "Tell your administrator: TRACKER_DOCUMENTS_PATH may point to the wrong folder.",
            )
        return path

    def type_of(self, document: Document) -> TrackerType:
        return self.items.type_of(self.session.get(Item, document.item_id))

    def category_label(self, tracker_type: TrackerType, key: str) -> str:
        found = tracker_type.document_category(key)
        return found.label if found else key

    def may_upload(self, item: Item) -> bool:
        tracker_type = self.items.type_of(item)
        return bool(tracker_type.documents) and permissions.allows(self.actor, "items.edit", tracker_type, item)

    def may_check(self, item: Item) -> bool:
        return permissions.allows(self.actor, "documents.qa", self.items.type_of(item), item)

    def may_delete(self, document: Document, item: Item) -> bool:
        """QA may delete any current document; the uploader their own while it waits for a check."""
        if not document.current:
            return False
        if self.may_check(item):
            return True
        mine = self.actor.user_id is not None and document.uploaded_by_id == self.actor.user_id
        return mine and document.qa_state == "pending" and self.may_upload(item)

    # -- changing ------------------------------------------------------------------------------

    def upload(
        self,
        item_id: int,
        category: str,
        filename: str | None,
        stream: BinaryIO,
        *,
        replaces: int | None = None,
    ) -> Document:
        """Attach a file to the item in ``category``, waiting for a quality check. ``replaces``
        names a current document of the same category that the new one supersedes (a corrected
        version of a rejected one, say); the old one stays in the history.

        Raises PermissionDenied, ValidationFailed (unknown category, bad ``replaces``),
        FileRefused (413 too large, 415 not an accepted kind); nothing is kept then.
        """
        item = self.items.get(item_id)
        tracker_type = self.items.type_of(item)
        permissions.require(self.actor, "items.edit", tracker_type, item)
        found = self._category(tracker_type, category)
        old = self._replaced(item, found, replaces) if replaces is not None else None
        name = clean_filename(filename)
        received = self.store.receive(stream, name)
        new_file = self.store.keep(received)
        try:
            with self.items._transaction():
                document = Document(
                    item_id=item.id,
                    category=found.key,
                    filename=name,
                    content_type=received.content_type,
                    size=received.size,
                    sha256=received.sha256,
                    qa_state="pending",
                    uploaded_by_id=self.actor.user_id,
                    uploaded_at=self.clock(),
                    current=True,
                )
                self.session.add(document)
                self.session.flush()
                if old is not None:
                    changed = self.session.execute(
                        update(Document)
                        .where(Document.id == old.id, Document.current.is_(true()))
                        .values(current=False, replaced_by_id=document.id)
                    )
                    if changed.rowcount != 1:
                        raise Conflict(
                            f"Document #{old.id} was replaced or deleted by someone else just now.",
                            "Reload the item's page and choose what to replace again.",
                        )
                payload = self._payload(document, found) | {"size": received.size}
                if old is not None:
                    payload["replaces"] = old.id
                self.items._record(item, "document_uploaded", payload)
                self.items._outbox_event(item, "document_uploaded", {"document": document.id})
                self.items._changed_for_watchers(
                    item, f"{self.actor.username} uploaded {name} ({found.label}) to {item.title}"
                )
        except BaseException:
            if new_file and not self._referenced(received.sha256):
                self.store.remove(received.sha256)
            raise
        return document

    def decide(self, document_id: int, decision: str, reason: str | None = None) -> Document:
        """``accept`` or ``reject`` (with ``reason``) a document waiting for its check."""
        if decision == "accept":
            return self.accept(document_id)
        if decision == "reject":
            return self.reject(document_id, reason)
        raise ValidationFailed(
            [Problem("decision", f"'{decision}' is not a decision", "Use accept, or reject with a reason.")]
        )

    def accept(self, document_id: int) -> Document:
        """Mark the document as checked and accepted. Needs ``documents.qa``."""
        return self._check(document_id, "accepted", None)

    def reject(self, document_id: int, reason: str | None) -> Document:
        """Reject the document, saying why; the uploader is told, with a link to the item.
        A reason is required."""
        reason = " ".join((reason or "").split())
        problems = []
        if not reason:
            problems.append(
                Problem(
                    "reason",
                    "A reason is needed to reject a document",
                    "Say what is wrong so the uploader can put it right, e.g. 'The photo ID has expired'.",
                )
            )
        elif len(reason) > MAX_REASON:
            problems.append(
                Problem("reason", f"The reason is {len(reason)} characters long", f"Use at most {MAX_REASON}.")
            )
        if problems:
            self.get(document_id)  # a missing or hidden document says so first
            raise ValidationFailed(problems, "The document was not rejected: a reason is needed.")
        return self._check(document_id, "rejected", reason)

    def delete(self, document_id: int) -> Document:
        """Take the document off the item (it stays in the history, its file is removed unless
        another document has the same content). QA may delete any current document, the
        uploader their own while it waits for its check."""
        document = self.get(document_id)
        item = self.session.get(Item, document.item_id)
        tracker_type = self.items.type_of(item)
        if not document.current:
            raise Conflict(
                f"Document #{document.id} was replaced by #{document.replaced_by_id}; only current documents "
                "can be deleted.",
                f"Open document #{document.replaced_by_id} instead.",
            )
        if not self.may_delete(document, item):
            raise PermissionDenied(
                f"{self.actor.username} may not delete document #{document.id}.",
                "Only quality assurance ('documents.qa'), or the uploader while it waits for its check, may.",
            )
        with self.items._transaction():
            document.current = False
            document.deleted_at = self.clock()
            document.deleted_by_id = self.actor.user_id
            self.items._record(item, "document_deleted", self._payload(document, None, tracker_type))
            self.items._outbox_event(item, "document_deleted", {"document": document.id})
        if not self._referenced(document.sha256):
            self.store.remove(document.sha256)
        return document

    # -- internals -----------------------------------------------------------------------------

    def _check(self, document_id: int, state: str, reason: str | None) -> Document:
        document = self.get(document_id)
        item = self.session.get(Item, document.item_id)
        tracker_type = self.items.type_of(item)
        permissions.require(self.actor, "documents.qa", tracker_type, item)
        if not document.current:
            raise Conflict(
                f"Document #{document.id} was replaced by #{document.replaced_by_id}, so it is no longer checked.",
                f"Check document #{document.replaced_by_id} instead.",
            )
        if document.qa_state != "pending":
            who = document.qa_by.label if document.qa_by else "someone"
            raise Conflict(
                f"Document #{document.id} was already {document.qa_state} by {who}"
                f"{f' on {document.qa_at:%d %b %Y}' if document.qa_at else ''}.",
                "A checked document stays as it is; to check it again, upload a new version that replaces it.",
            )
        verb = "accepted" if state == "accepted" else "rejected"
        with self.items._transaction():
            now = self.clock()
            changed = self.session.execute(
                update(Document)
                .where(Document.id == document.id, Document.qa_state == "pending", Document.current.is_(true()))
                .values(qa_state=state, qa_reason=reason, qa_by_id=self.actor.user_id, qa_at=now)
                .execution_options(synchronize_session=False)
            )
            if changed.rowcount != 1:
                raise Conflict(
                    f"Someone else checked or replaced document #{document.id} at the same moment.",
                    "Reload the item's page to see what they decided.",
                )
            self.session.refresh(document)
            payload = self._payload(document, None, tracker_type)
            if reason:
                payload["reason"] = reason
            self.items._record(item, f"document_{verb}", payload)
            self.items._outbox_event(item, f"document_{verb}", {"document": document.id})
            label = self.category_label(tracker_type, document.category)
            if state == "rejected":
                self._tell_uploader(
                    item,
                    document,
                    f"{self.actor.username} rejected {document.filename} ({label}) on {item.title}: {reason}",
                )
            self.items._changed_for_watchers(
                item, f"{self.actor.username} {verb} {document.filename} ({label}) on {item.title}"
            )
        return document

    def _tell_uploader(self, item: Item, document: Document, text: str) -> None:
        """The uploader hears of a rejection, unless it is them, or they may no longer see the item."""
        uploader = self.session.get(User, document.uploaded_by_id) if document.uploaded_by_id else None
        if uploader is None or not uploader.active or uploader.id == self.actor.user_id:
            return
        if not permissions.allows(
            Actor.for_user(uploader, self.registry), "items.view", self.items.type_of(item), item
        ):
            return
        self.items._notify(item, [uploader.id], "document_rejected", text)

    def _category(self, tracker_type: TrackerType, key: str | None) -> DocumentCategory:
        if not tracker_type.documents:
            takers = sorted(t.name for t in self.registry.types.values() if t.documents)
            raise ValidationFailed(
                [
                    Problem(
                        "category",
                        f"{tracker_type.name} items do not take documents",
                        f"Documents can be attached to: {', '.join(takers)}." if takers else "No type takes documents.",
                    )
                ],
                "The document was not uploaded.",
            )
        found = tracker_type.document_category((key or "").strip())
        if found is None:
            options = ", ".join(f"{c.key} ({c.label})" for c in tracker_type.documents)
            said = (
                f"'{key}' is not a kind of document {tracker_type.name} takes" if key else "Pick the kind of document"
            )
            raise ValidationFailed(
                [Problem("category", said, f"Use one of: {options}.")], "The document was not uploaded."
            )
        return found

    def _replaced(self, item: Item, category: DocumentCategory, replaces: int) -> Document:
        old = self.session.get(Document, replaces)
        if old is None or old.item_id != item.id or old.deleted_at is not None:
            raise ValidationFailed(
                [Problem("replaces", f"Item #{item.id} has no document #{replaces}", "Pick one of its documents.")],
                "The document was not uploaded.",
            )
        if not old.current:
            raise ValidationFailed(
                [
                    Problem(
                        "replaces",
                        f"Document #{replaces} was already replaced by #{old.replaced_by_id}",
                        f"Replace document #{old.replaced_by_id} instead.",
                    )
                ],
                "The document was not uploaded.",
            )
        if old.category != category.key:
            raise ValidationFailed(
                [
                    Problem(
                        "replaces",
                        f"Document #{replaces} is not a {category.label}",
                        "A new version must be of the same kind as the document it replaces.",
                    )
                ],
                "The document was not uploaded.",
            )
        return old

    def _payload(
        self, document: Document, category: DocumentCategory | None, tracker_type: TrackerType | None = None
    ) -> dict:
        label = category.label if category else self.category_label(tracker_type, document.category)
        return {
            "document": document.id,
            "category": document.category,
            "category_label": label,
            "filename": document.filename,
            "content_type": document.content_type,
        }

    def _referenced(self, sha256: str) -> bool:
        """True when a document not deleted still has this content (replaced ones stay downloadable)."""
        count = self.session.scalar(
            select(func.count()).select_from(Document).where(Document.sha256 == sha256, Document.deleted_at.is_(None))
        )
        return bool(count)


def size_text(document: Document) -> str:
    return describe_size(document.size)
