"""Where documents are kept, and what kind of file an upload really is.

Files are stored once per content under the documents folder (``TRACKER_DOCUMENTS_PATH``,
default ``<instance>/documents``), at ``<first two hex digits>/<sha256>``: the name a user gave
a file is never part of a path. An upload is accepted only when its name's extension is
allowed (``TRACKER_UPLOAD_TYPES``) *and* its content is that kind of file (a renamed
program or a PNG called ``.pdf`` is refused), and it is no larger than
``TRACKER_UPLOAD_MAX_BYTES``.

The service in :mod:`engine.services.documents` decides who may upload and see what.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import unicodedata
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from sqlalchemy import ColumnElement, Select, distinct, exists, func, literal, select, true
from sqlalchemy.orm import Session

from engine.config import Settings
from engine.definitions.model import DocumentCategory, Registry, TrackerType
from engine.errors import Problem, ValidationFailed
from engine.models import Document, Item

#: extension -> (the kind its content must be, the media type it is served as)
KINDS: dict[str, tuple[str, str]] = {
    "pdf": ("pdf", "application/pdf"),
    "png": ("png", "image/png"),
    "jpg": ("jpeg", "image/jpeg"),
    "jpeg": ("jpeg", "image/jpeg"),
    "gif": ("gif", "image/gif"),
    "webp": ("webp", "image/webp"),
    "docx": ("docx", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
    "xlsx": ("xlsx", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
    "pptx": ("pptx", "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
    "odt": ("odt", "application/vnd.oasis.opendocument.text"),
    "ods": ("ods", "application/vnd.oasis.opendocument.spreadsheet"),
    "doc": ("ole", "application/msword"),
    "xls": ("ole", "application/vnd.ms-excel"),
    "txt": ("text", "text/plain"),
    "csv": ("text", "text/csv"),
}
#: every media type a document can be served as (the API documents them all)
MEDIA_TYPES = tuple(dict.fromkeys(media for _kind, media in KINDS.values()))

#: what each kind of content is called in messages
_DESCRIBED = {
    "pdf": "a PDF",
    "png": "a PNG image",
    "jpeg": "a JPEG image",
    "gif": "a GIF image",
    "webp": "a WebP image",
    "docx": "a Word document (.docx)",
    "xlsx": "an Excel workbook (.xlsx)",
    "pptx": "a PowerPoint presentation (.pptx)",
    "odt": "an OpenDocument text (.odt)",
    "ods": "an OpenDocument spreadsheet (.ods)",
    "ole": "an older Word or Excel file (.doc/.xls)",
    "text": "plain text",
    "zip": "a ZIP archive",
    "macro": "an Office file with macros",
}
_CHUNK = 64 * 1024
_OPENDOCUMENT = {
    b"application/vnd.oasis.opendocument.text": "odt",
    b"application/vnd.oasis.opendocument.spreadsheet": "ods",
}
#: control characters that never appear in a text file (tab, line feed, form feed and carriage return do)
_BINARY_BYTES = re.compile(rb"[\x00-\x08\x0b\x0e-\x1f\x7f]")


class FileRefused(ValidationFailed):
    """An upload that is too large (413) or not a file of an accepted kind (415); nothing is kept."""

    def __init__(self, status: int, message: str, advice: str) -> None:
        super().__init__([Problem("file", message, advice)], message)
        self.status = status
        self.advice = advice


@dataclass(frozen=True)
class Received:
    """An upload written to a temporary file and checked; :meth:`DocumentStore.keep` files it."""

    temp: Path
    sha256: str
    size: int
    extension: str
    content_type: str


def clean_filename(name: str | None) -> str:
    """The name to show and offer on download: the last part of what the browser sent, without
    control characters, at most 200 characters (the extension kept); ``document`` when empty."""
    name = re.split(r"[/\\]", name or "")[-1]
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = " ".join(name.split()).strip(". ")
    if len(name) > 200:
        stem, dot, extension = name.rpartition(".")
        name = stem[: 199 - len(extension)] + dot + extension if dot and len(extension) <= 10 else name[:200]
    return name or "document"


def extension_of(filename: str) -> str:
    _stem, dot, extension = filename.rpartition(".")
    return extension.lower() if dot else ""


def describe_size(size: int) -> str:
    """``10 MB``, ``350 KB``, ``12 bytes``: sizes as people say them."""
    if size >= 1024 * 1024:
        return f"{size / (1024 * 1024):.1f}".removesuffix(".0") + " MB"
    if size >= 1024:
        return f"{size / 1024:.0f} KB"
    return f"{size} byte{'' if size == 1 else 's'}"


class DocumentStore:
    """The documents folder: receives uploads into temporary files, keeps them by content hash,
    and opens them again.

    Args:
        root: the folder (created on first use, readable by this user only).
        max_bytes: the largest file accepted.
        types: the accepted extensions (keys of :data:`KINDS`).
    """

    def __init__(self, root: Path, *, max_bytes: int, types: tuple[str, ...]) -> None:
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.types = tuple(t for t in types if t in KINDS)

    @classmethod
    def from_settings(cls, settings: Settings) -> DocumentStore:
        return cls(settings.documents_path, max_bytes=settings.upload_max_bytes, types=settings.upload_types)

    def accepted(self) -> str:
        """The accepted extensions as a user reads them: ``.pdf, .png, .jpg ...``"""
        return ", ".join(f".{t}" for t in self.types)

    def check_name(self, filename: str) -> str:
        """The extension of ``filename`` if it is an accepted one; else FileRefused (415)."""
        extension = extension_of(filename)
        if extension not in self.types:
            said = f"'.{extension}' files are" if extension else "A file without an extension is"
            raise FileRefused(
                415,
                f"{said} not accepted: '{filename}'.",
                f"Upload one of: {self.accepted()}. Scans are best saved as PDF.",
            )
        return extension

    def receive(self, stream: BinaryIO, filename: str) -> Received:
        """Copy ``stream`` into a temporary file, counting and hashing it, then check its size
        and that its content is the kind its extension says. Raises FileRefused, leaving nothing
        behind."""
        extension = self.check_name(filename)
        temp_dir = self._folder("tmp")
        handle, name = tempfile.mkstemp(dir=temp_dir, prefix="upload-")
        temp = Path(name)
        digest, size = hashlib.sha256(), 0
        try:
            with os.fdopen(handle, "wb") as out:
                while chunk := stream.read(_CHUNK):
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FileRefused(
                            413,
                            f"'{filename}' is larger than {describe_size(self.max_bytes)}, the most a document may be.",
                            "Make the file smaller (a scan at 150-200 dpi, or saved as PDF, is usually enough), "
                            "then upload it again.",
                        )
                    digest.update(chunk)
                    out.write(chunk)
            if size == 0:
                raise FileRefused(415, f"'{filename}' is empty.", "Choose the file again; it has no content.")
            kind, media = KINDS[extension]
            found = sniff(temp)
            if found != kind:
                raise FileRefused(
                    415,
                    f"'{filename}' is not {_DESCRIBED[kind]}: its content is "
                    f"{_DESCRIBED.get(found or '', 'of a kind Tracker does not accept')}.",
                    f"Upload {_DESCRIBED[kind]} with this name, or save the file in one of the accepted kinds "
                    f"({self.accepted()}) and upload it again.",
                )
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Received(temp, digest.hexdigest(), size, extension, media)

    def keep(self, received: Received) -> bool:
        """Move the upload to its place; True when the content was not stored before."""
        target = self.path_for(received.sha256)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        if target.exists():
            received.temp.unlink(missing_ok=True)
            return False
        os.chmod(received.temp, 0o600)
        os.replace(received.temp, target)
        return True

    def path_for(self, sha256: str) -> Path:
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise ValueError("not a SHA-256 digest")
        return self.root / sha256[:2] / sha256

    def exists(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def remove(self, sha256: str) -> None:
        self.path_for(sha256).unlink(missing_ok=True)

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder


def sniff(path: Path) -> str | None:
    """What the content of ``path`` is (a key of ``_DESCRIBED``), judged by its bytes alone;
    None when it is nothing Tracker accepts."""
    with open(path, "rb") as handle:
        head = handle.read(16)
    if head.startswith(b"%PDF-"):
        return "pdf"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head.startswith(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"):
        return "ole"
    if head.startswith(b"PK\x03\x04"):
        return _zip_kind(path)
    return "text" if _is_text(path) else None


def _zip_kind(path: Path) -> str | None:
    """Office Open XML and OpenDocument files are ZIP archives; their members say which.
    Only the archive's directory (and a tiny member) is read, never the whole archive."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if any(n.lower().endswith("vbaproject.bin") for n in names):
                return "macro"
            if "word/document.xml" in names:
                return "docx"
            if "xl/workbook.xml" in names:
                return "xlsx"
            if "ppt/presentation.xml" in names:
                return "pptx"
            if "mimetype" in names:
                with archive.open("mimetype") as member:
                    return _OPENDOCUMENT.get(member.read(100).strip())
            return "zip"
    except (zipfile.BadZipFile, OSError, KeyError):
        return None


def _is_text(path: Path) -> bool:
    """Text: UTF-8 (or a single-byte Windows encoding, as spreadsheets export CSV) without the
    control characters that only binary files contain."""
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            if _BINARY_BYTES.search(chunk):
                return False
    return True


# -- what the database knows about an item's documents ----------------------------------------------


def _complete(categories: tuple[str, ...] | list[str]) -> Select:
    """The items with an accepted, current document of every one of ``categories``."""
    wanted = list(dict.fromkeys(categories))
    return (
        select(Document.item_id)
        .where(Document.category.in_(wanted), Document.qa_state == "accepted", Document.current.is_(true()))
        .group_by(Document.item_id)
        .having(func.count(distinct(Document.category)) == len(wanted))
    )


def missing_clause(categories: tuple[str, ...] | list[str], dialect: str = "postgresql") -> ColumnElement[bool]:
    """A WHERE clause over ``items``: the item lacks an accepted document of at least one of
    ``categories``.

    It is written the way each database answers fastest over a whole task list (measured with
    300,000 items): PostgreSQL turns ``NOT EXISTS`` over the complete items into one hash
    anti-join, SQLite builds ``NOT IN`` once as a lookup table. One ``NOT EXISTS`` per category,
    ORed, is answered row by row on both and was up to twice as slow.
    """
    complete = _complete(categories)
    if dialect == "sqlite":
        return Item.id.not_in(complete)
    done = complete.subquery()
    return ~exists(select(literal(1)).select_from(done).where(done.c.item_id == Item.id))


def category_states(session: Session, item_id: int) -> dict[str, str]:
    """``{category: best state}`` of the item's current documents: ``accepted`` if one is,
    else ``pending`` if one waits for a check, else ``rejected``."""
    rank = {"accepted": 3, "pending": 2, "rejected": 1}
    states: dict[str, str] = {}
    rows = session.execute(
        select(Document.category, Document.qa_state).where(Document.item_id == item_id, Document.current.is_(true()))
    )
    for category, state in rows:
        if rank.get(state, 0) > rank.get(states.get(category, ""), 0):
            states[category] = state
    return states


def missing_categories(session: Session, item_id: int, categories: tuple[str, ...] | list[str]) -> list[str]:
    """Those of ``categories`` without an accepted current document on the item, in order."""
    if not categories:
        return []
    states = category_states(session, item_id)
    return [c for c in categories if states.get(c) != "accepted"]


def missing_problem(
    tracker_type: TrackerType, step: str, session: Session, item_id: int, lacking: list[str]
) -> Problem:
    """Why a step that ``requires_documents`` cannot be taken: each missing category by its
    label, and for each what has to happen (upload one, or wait for the check)."""
    states = category_states(session, item_id)
    labels = {c: (tracker_type.document_category(c).label if tracker_type.document_category(c) else c) for c in lacking}
    what = {
        "pending": "uploaded, waiting for a quality check",
        "rejected": "rejected: upload a corrected one",
    }
    notes = "; ".join(f"{labels[c]}: {what.get(states.get(c, ''), 'none uploaded yet')}" for c in lacking)
    return Problem(
        "documents",
        f"'{step}' needs accepted documents: {', '.join(labels.values())}",
        f"Upload them under Documents on the item's page and have quality assurance accept them ({notes}).",
        rule="requires_documents",
    )


def describe_event(kind: str, payload: dict) -> str | None:
    """A document event of an item's history in words; None for other kinds."""
    name = payload.get("filename", "a document")
    label = payload.get("category_label") or payload.get("category", "")
    if kind == "document_uploaded":
        replaced = f", replacing document #{payload['replaces']}" if payload.get("replaces") else ""
        return f"uploaded {name} ({label}){replaced}"
    if kind == "document_accepted":
        return f"accepted {name} ({label})"
    if kind == "document_rejected":
        return f"rejected {name} ({label}): {payload.get('reason', '')}"
    if kind == "document_deleted":
        return f"deleted {name} ({label})"
    return None


def needed_categories(registry: Registry, tracker_type: TrackerType, status: str) -> list[str]:
    """The document categories an item in ``status`` is waiting for: those a step out of that
    state requires, and those a ``documents_missing`` task list of its type checks while the item
    is in one of the list's states."""
    workflow = registry.workflow_for(tracker_type)
    needed: list[str] = []
    for transition in workflow.transitions_from(status):
        needed += transition.requires_documents
    for tasklist in tracker_type.tasklists:
        states = {*tasklist.statuses, *workflow.states_in(tasklist.status_categories)}
        if tasklist.documents_missing and (not states or status in states):
            needed += tasklist.documents_missing
    return list(dict.fromkeys(needed))


def awaiting_documents(session: Session, registry: Registry, items: list[Item]) -> list[tuple[Item, list[str]]]:
    """Those of ``items`` still waiting for documents, each with the labels of the missing
    categories (no accepted current document), in the order given."""
    out = []
    for item in items:
        tracker_type = registry.types.get(item.type_key)
        if tracker_type is None or not tracker_type.documents:
            continue
        lacking = missing_categories(session, item.id, needed_categories(registry, tracker_type, item.status))
        if lacking:
            labels = [(tracker_type.document_category(c) or DocumentCategory(c, c)).label for c in lacking]
            out.append((item, labels))
    return out
