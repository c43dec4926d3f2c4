"""``tracker documents``: attach, list, download, check and delete an item's documents.

Every command goes through :class:`~engine.services.documents.DocumentService`, acting as the
system operator unless ``--as USER`` is given; a refusal prints why and exits 1.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from engine.cli import _fail_text, _runtime, _table, as_option
from engine.documents import DocumentStore, describe_size
from engine.models import Document
from engine.services.documents import DECISIONS, DocumentService


def _service(session, as_user: str | None) -> DocumentService:
    rt = _runtime()
    return DocumentService(session, rt.actor(session, as_user), rt.registry, DocumentStore.from_settings(rt.settings))


def _record(service: DocumentService, document: Document) -> dict:
    return {
        "id": document.id,
        "item": document.item_id,
        "category": document.category,
        "filename": document.filename,
        "content_type": document.content_type,
        "size": document.size,
        "qa_state": document.qa_state,
        "qa_reason": document.qa_reason,
        "qa_by": document.qa_by.username if document.qa_by else None,
        "uploaded_by": document.uploaded_by.username if document.uploaded_by else None,
        "uploaded_at": document.uploaded_at.isoformat(),
        "current": document.current,
        "replaced_by": document.replaced_by_id,
    }


@click.group()
def documents() -> None:
    """Documents attached to items, and their quality checks."""


@documents.command("attach")
@click.argument("item_id", type=int, metavar="ITEM")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE")
@click.option("--category", required=True, help="The kind of document: a category key of the item's type.")
@click.option("--replaces", type=int, metavar="DOC", help="A current document of the same kind this one supersedes.")
@as_option
def attach(item_id: int, path: Path, category: str, replaces: int | None, as_user: str | None) -> None:
    """Attach FILE to item ITEM; it waits for a quality check."""
    try:
        handle = path.open("rb")
    except OSError as exc:
        _fail_text(f"Cannot read {path}: {exc.strerror}.", "Check the file's name and that you may read it.")
    rt = _runtime()
    with handle, rt.session() as session:
        document = _service(session, as_user).upload(item_id, category, path.name, handle, replaces=replaces)
        click.echo(
            f"Attached document #{document.id} {document.filename} ({describe_size(document.size)}) to item "
            f"#{item_id} as {category}; it waits for a quality check."
        )


@documents.command("list")
@click.argument("item_id", type=int, metavar="ITEM")
@click.option("--json", "as_json", is_flag=True, help="Print the documents as JSON.")
@as_option
def list_documents(item_id: int, as_json: bool, as_user: str | None) -> None:
    """The documents of item ITEM with their checks, earlier versions included."""
    rt = _runtime()
    with rt.session() as session:
        service = _service(session, as_user)
        found = service.list(item_id, earlier=True)
        if as_json:
            click.echo(json.dumps([_record(service, d) for d in found], indent=2))
            return
        if not found:
            click.echo(f"Item #{item_id} has no documents.")
            return
        rows = [("ID", "CATEGORY", "CHECK", "SIZE", "FILE", "NOTE")]
        for d in found:
            note = f"replaced by #{d.replaced_by_id}" if not d.current else (d.qa_reason or "")
            rows.append((str(d.id), d.category, d.qa_state, describe_size(d.size), d.filename, note))
        _table(rows)


@documents.command("qa")
@click.argument("document_id", type=int, metavar="DOC")
@click.argument("decision", type=click.Choice(DECISIONS))
@click.option("--reason", default="", help="Why the document is rejected (needed to reject).")
@as_option
def qa(document_id: int, decision: str, reason: str, as_user: str | None) -> None:
    """Accept or reject document DOC; a rejection needs --reason and tells the uploader."""
    rt = _runtime()
    with rt.session() as session:
        document = _service(session, as_user).decide(document_id, decision, reason)
        done = "accepted" if decision == "accept" else f"rejected ({document.qa_reason})"
        click.echo(f"Document #{document.id} {document.filename} is {done}.")


@documents.command("download")
@click.argument("document_id", type=int, metavar="DOC")
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it (default: its name, in this folder).",
)
@as_option
def download(document_id: int, output: Path | None, as_user: str | None) -> None:
    """Write the file of document DOC."""
    rt = _runtime()
    with rt.session() as session:
        service = _service(session, as_user)
        document = service.get(document_id)
        source = service.path(document)
        target = output or Path(document.filename)
        if target.exists():
            _fail_text(f"{target} exists already.", "Give another name with --output, or move that file first.")
        try:
            shutil.copyfile(source, target)
        except OSError as exc:
            _fail_text(f"Cannot write {target}: {exc.strerror}.", "Choose a folder you may write to with --output.")
        click.echo(f"Wrote {target} ({describe_size(document.size)}).")


@documents.command("delete")
@click.argument("document_id", type=int, metavar="DOC")
@as_option
def delete(document_id: int, as_user: str | None) -> None:
    """Delete document DOC from its item (the history keeps a note of it)."""
    rt = _runtime()
    with rt.session() as session:
        document = _service(session, as_user).delete(document_id)
        click.echo(f"Deleted document #{document.id} {document.filename} from item #{document.item_id}.")
