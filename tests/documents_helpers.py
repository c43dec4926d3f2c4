"""Shared set-up of the documents and progress tests: a runtime on the test database with the
``tests/definitions_documents`` folder (a Portfolio type with document categories, a workflow
step that needs accepted documents, task lists of missing documents, and the small
``mini_award`` structure), people in each role, and a look at everything a refusal must
leave unchanged."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import func, select

from engine.config import Settings
from engine.definitions import load_registry
from engine.documents import DocumentStore
from engine.models import Document, Event, Item, Outbox, ProgressTick
from engine.permissions import Actor
from engine.runtime import Runtime
from engine.services import ItemService
from engine.services.documents import DocumentService
from engine.services.progress import ProgressService
from tests.conftest import LEARNER, ROOT

DOCS_DEFINITIONS = ROOT / "tests" / "definitions_documents"

PDF = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(32))
TEXT = b"Witness statement: the learner built the wall.\n"

#: user name -> roles (tests/definitions_documents/roles.yaml and the built-ins)
PEOPLE = {
    "cleo": ["clerk"],  # creates portfolios and uploads
    "carl": ["clerk"],  # another clerk
    "vera": ["verifier"],  # checks documents; cannot upload or edit
    "tess": ["tutor"],  # records progress on her own items only; cannot edit
    "quinn": ["quality"],  # built-in quality role: documents.qa and progress.edit
    "mona": ["manager"],  # read-only
}


def make_settings(tmp_path: Path, db_url: str, **overrides) -> Settings:
    return Settings(
        instance_path=tmp_path,
        database_url=db_url,
        definitions_path=[DOCS_DEFINITIONS],
        secret_key="test-secret",
        base_url="https://tracker.test",
        **{"upload_max_bytes": 4096, **overrides},
    )


@dataclass
class World:
    rt: Runtime
    ids: dict[str, int]
    learner: int
    portfolio: int

    def actor(self, session, name: str | None) -> Actor:
        return self.rt.actor(session, name)

    def docs(self, session, name: str | None) -> DocumentService:
        store = DocumentStore.from_settings(self.rt.settings)
        return DocumentService(session, self.actor(session, name), self.rt.registry, store)

    def progress(self, session, name: str | None, **kwargs) -> ProgressService:
        return ProgressService(session, self.actor(session, name), self.rt.registry, **kwargs)

    def items(self, session, name: str | None) -> ItemService:
        return ItemService(session, self.actor(session, name), self.rt.registry)

    def upload(self, name: str, category: str, content: bytes = PDF, filename: str = "pack.pdf", **kwargs) -> int:
        with self.rt.session() as session:
            document = self.docs(session, name).upload(
                kwargs.pop("item", self.portfolio), category, filename, io.BytesIO(content), **kwargs
            )
            return document.id

    def accept(self, document_id: int, name: str = "vera") -> None:
        with self.rt.session() as session:
            self.docs(session, name).accept(document_id)

    def snapshot(self) -> dict:
        """Everything a refused change must leave as it was: rows, events, outbox, stored files."""
        with self.rt.session() as session:
            count = lambda model: session.scalar(select(func.count()).select_from(model))  # noqa: E731
            items = session.execute(select(Item.id, Item.version, Item.status, Item.progress).order_by(Item.id))
            return {
                "documents": session.execute(
                    select(Document.id, Document.qa_state, Document.current, Document.deleted_at).order_by(Document.id)
                ).all(),
                "events": count(Event),
                "outbox": count(Outbox),
                "ticks": session.execute(select(ProgressTick.criterion, ProgressTick.evidence)).all(),
                "items": items.all(),
                "files": stored_files(self.rt.settings.documents_path),
            }


def stored_files(root: Path) -> list[str]:
    """Every file under the documents folder, temporary ones included."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def build_world(rt: Runtime) -> World:
    with rt.session() as session:
        users = rt.users(session)
        ids = {}
        for name, roles in PEOPLE.items():
            user, _ = users.create(name, roles, password="documents-password-1", email=f"{name}@tracker.test")
            ids[name] = user.id
        session.commit()
        learner = ItemService(session, Actor.system(), rt.registry).create("learner", dict(LEARNER)).id
        cleo = ItemService(session, rt.actor(session, "cleo"), rt.registry)
        portfolio = cleo.create("portfolio", {"title": "Brickwork"}, subject_id=learner, assignee="tess").id
    return World(rt, ids, learner, portfolio)


@pytest.fixture(autouse=True)
def cheap_hashing(monkeypatch):
    """These tests sign people in or create many users; password strength is not what they check."""
    from argon2 import PasswordHasher

    from engine.services import users

    monkeypatch.setattr(users, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


@pytest.fixture(scope="session")
def documents_registry():
    """Loading every definition takes a while; the tests share one load (it is never changed)."""
    registry = load_registry([DOCS_DEFINITIONS])
    assert registry.types.get("portfolio") is not None, "\n".join(map(str, registry.problems))
    return registry


def runtime(settings: Settings, registry) -> Runtime:
    rt = Runtime(settings)
    rt.__dict__["file_registry"] = registry  # the cached property, filled in
    return rt


@pytest.fixture
def world(tmp_path, db_url, documents_registry) -> World:
    return build_world(runtime(make_settings(tmp_path, db_url), documents_registry))


# -- the web pages ---------------------------------------------------------------------------------

PASSWORD = "documents-password-1"


@pytest.fixture
def app(tmp_path, db_url, documents_registry):
    from webui import create_app

    app = create_app({"TESTING": True, "TRACKER_SETTINGS": make_settings(tmp_path, db_url)})
    app.extensions["tracker"].__dict__["file_registry"] = documents_registry
    return app


@pytest.fixture
def site(app) -> World:
    return build_world(app.extensions["tracker"])


def client_for(app, name: str):
    from tests.webhelpers import sign_in

    client = app.test_client()
    sign_in(client, name, PASSWORD)
    return client
