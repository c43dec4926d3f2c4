"""Documents in the engine, on both databases: upload with size and type limits, quality checks,
replacing and deleting, steps that need accepted documents, and task lists of missing ones.
Every refusal says why and leaves rows, history, outbox and the documents folder as they were."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import yaml
from sqlalchemy import func, select, text

from engine import indexes
from engine.config import Settings
from engine.definitions import load_registry
from engine.documents import DocumentStore, FileRefused, clean_filename, sniff
from engine.errors import Conflict, NotFound, PermissionDenied, TrackerError, ValidationFailed
from engine.models import Document, Item, Notification, Outbox
from engine.tasklists import TaskListService
from tests.conftest import ROOT
from tests.documents_helpers import *  # noqa: F403 - fixtures
from tests.documents_helpers import DOCS_DEFINITIONS, PDF, PNG, TEXT, stored_files

# -- uploading ---------------------------------------------------------------------------------------


def test_an_upload_is_stored_by_its_content_waits_for_a_check_and_is_in_the_history(world):
    document_id = world.upload("cleo", "evidence_pack", PDF, filename="../../etc/Evidence pack.PDF")
    with world.rt.session() as session:
        document = world.docs(session, "cleo").get(document_id)
        assert (document.qa_state, document.current, document.category) == ("pending", True, "evidence_pack")
        assert document.filename == "Evidence pack.PDF"  # only the last part of what was sent
        assert (document.content_type, document.size) == ("application/pdf", len(PDF))
        path = world.docs(session, "cleo").path(document)
        assert path.read_bytes() == PDF
        assert path.name == document.sha256 and "Evidence" not in str(path)  # never the user's name
        assert path.is_relative_to(world.rt.settings.documents_path)
        [event] = [e for e in world.items(session, "cleo").history(world.portfolio) if e.kind == "document_uploaded"]
        assert event.payload["filename"] == "Evidence pack.PDF" and event.payload["category_label"] == "Evidence pack"
        assert event.actor_id == world.ids["cleo"]
        assert (
            session.scalar(select(Outbox).where(Outbox.kind == "item_event").order_by(Outbox.id.desc())).payload[
                "event"
            ]
            == "document_uploaded"
        )
    again = world.upload("carl", "photo", PDF, filename="copy.pdf")
    assert again != document_id
    files = [f for f in stored_files(world.rt.settings.documents_path) if not f.startswith("tmp")]
    assert len(files) == 1  # the same content is kept once
    assert not list((world.rt.settings.documents_path / "tmp").iterdir())


@pytest.mark.parametrize(
    ("content", "filename", "status", "words"),
    [
        (b"%PDF-" + b"x" * 5000, "big.pdf", 413, "'big.pdf' is larger than 4 KB"),
        (PNG, "scan.pdf", 415, "'scan.pdf' is not a PDF: its content is a PNG image"),
        (b"MZ\x90\x00\x03\x00\x00\x00program", "setup.pdf", 415, "its content is of a kind Tracker does not accept"),
        (PDF, "tool.exe", 415, "'.exe' files are not accepted"),
        (PDF, "no extension", 415, "A file without an extension is not accepted"),
        (b"", "empty.pdf", 415, "'empty.pdf' is empty"),
        (PNG, "photo.svg", 415, "'.svg' files are not accepted"),
        (b"\x00\x01binary\x02", "notes.txt", 415, "'notes.txt' is not plain text"),
    ],
)
def test_files_too_large_or_of_the_wrong_kind_are_refused_and_nothing_is_kept(world, content, filename, status, words):
    before = world.snapshot()
    with world.rt.session() as session, pytest.raises(FileRefused) as refused:
        world.docs(session, "cleo").upload(world.portfolio, "evidence_pack", filename, io.BytesIO(content))
    assert refused.value.status == status
    assert words in refused.value.message
    assert refused.value.advice and refused.value.problems[0].path == "file"
    assert world.snapshot() == before


def test_uploads_need_items_edit_on_a_visible_item_and_a_declared_category(world):
    before = world.snapshot()
    cases = [
        ("vera", "evidence_pack", PermissionDenied, "vera may not edit Portfolio items"),
        ("mona", "evidence_pack", PermissionDenied, "mona may not edit Portfolio items"),
        ("tess", "evidence_pack", PermissionDenied, "tess may not edit Portfolio items"),
        ("cleo", "passport", ValidationFailed, "'passport' is not a kind of document Portfolio takes"),
        ("cleo", "", ValidationFailed, "Pick the kind of document"),
    ]
    for who, category, error, words in cases:
        with world.rt.session() as session, pytest.raises(error) as refused:
            world.docs(session, who).upload(world.portfolio, category, "pack.pdf", io.BytesIO(PDF))
        assert words in str(refused.value), who
    with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
        world.docs(session, "cleo").upload(world.learner, "evidence_pack", "pack.pdf", io.BytesIO(PDF))
    assert "Learner items do not take documents" in str(refused.value)
    assert "Documents can be attached to: " in refused.value.problems[0].advice
    with world.rt.session() as session, pytest.raises(NotFound):
        world.docs(session, "cleo").upload(999999, "evidence_pack", "pack.pdf", io.BytesIO(PDF))
    assert world.snapshot() == before


def test_an_own_scoped_role_sees_documents_only_of_its_own_items(world):
    document_id = world.upload("cleo", "evidence_pack")
    with world.rt.session() as session:
        other = world.items(session, "carl").create("portfolio", {"title": "Plastering"}, subject_id=world.learner)
        mine = world.docs(session, "tess").list(world.portfolio)  # assigned to tess
        assert [d.id for d in mine] == [document_id]
        with pytest.raises(PermissionDenied) as refused:
            world.docs(session, "tess").list(other.id)
        assert "assigned to or created by them" in str(refused.value)


# -- checking ------------------------------------------------------------------------------------------


def test_accepting_needs_documents_qa_and_is_recorded(world):
    document_id = world.upload("cleo", "evidence_pack")
    before = world.snapshot()
    for who in ("cleo", "tess", "mona"):
        with world.rt.session() as session, pytest.raises(PermissionDenied) as refused:
            world.docs(session, who).accept(document_id)
        assert "may not check documents of Portfolio items" in refused.value.message, who
        assert "documents.qa" in refused.value.advice
    assert world.snapshot() == before
    world.accept(document_id, "vera")
    with world.rt.session() as session:
        document = session.get(Document, document_id)
        assert (document.qa_state, document.qa_by_id) == ("accepted", world.ids["vera"])
        kinds = [e.kind for e in world.items(session, None).history(world.portfolio)]
        assert kinds[-1] == "document_accepted"


def test_rejecting_needs_a_reason_and_tells_the_uploader_with_a_link(world):
    document_id = world.upload("cleo", "evidence_pack")
    before = world.snapshot()
    for reason in (None, "", "   "):
        with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
            world.docs(session, "vera").reject(document_id, reason)
        assert refused.value.problems[0].path == "reason"
        assert refused.value.problems[0].message == "A reason is needed to reject a document"
        assert "e.g. 'The photo ID has expired'" in refused.value.problems[0].advice
    with world.rt.session() as session, pytest.raises(ValidationFailed, match="at most 1000"):
        world.docs(session, "vera").reject(document_id, "x" * 1001)
    with world.rt.session() as session, pytest.raises(ValidationFailed, match="'maybe' is not a decision"):
        world.docs(session, "vera").decide(document_id, "maybe")
    assert world.snapshot() == before
    with world.rt.session() as session:
        world.docs(session, "vera").reject(document_id, "  The witness has not   signed it ")
    with world.rt.session() as session:
        document = session.get(Document, document_id)
        assert (document.qa_state, document.qa_reason) == ("rejected", "The witness has not signed it")
        [event] = [e for e in world.items(session, None).history(world.portfolio) if e.kind == "document_rejected"]
        assert event.payload["reason"] == "The witness has not signed it"
        # delivered through the outbox to the uploader's inbox, with a link to the item
        [entry] = session.scalars(select(Notification).where(Notification.user_id == world.ids["cleo"])).all()
        assert entry.reason == "document_rejected" and entry.link == f"/items/{world.portfolio}"
        assert "vera rejected pack.pdf (Evidence pack)" in entry.text and "has not signed it" in entry.text
        assert session.scalars(select(Notification).where(Notification.user_id == world.ids["vera"])).all() == []


def test_a_checked_document_is_not_checked_again(world):
    document_id = world.upload("cleo", "evidence_pack")
    world.accept(document_id)
    before = world.snapshot()
    for decision, reason in (("accept", None), ("reject", "Wrong learner")):
        with world.rt.session() as session, pytest.raises(Conflict) as refused:
            world.docs(session, "quinn").decide(document_id, decision, reason)
        assert refused.value.status == 409
        assert f"Document #{document_id} was already accepted by vera" in refused.value.message
        assert "upload a new version that replaces it" in refused.value.advice
    assert world.snapshot() == before


def test_a_new_version_replaces_the_old_which_stays_in_the_history(world):
    first = world.upload("cleo", "witness_statement", TEXT, filename="witness.txt")
    with world.rt.session() as session:
        world.docs(session, "vera").reject(first, "Not signed")
    second = world.upload(
        "cleo", "witness_statement", TEXT + b"Signed: J Bloggs\n", filename="witness.txt", replaces=first
    )
    with world.rt.session() as session:
        service = world.docs(session, "cleo")
        assert [d.id for d in service.list(world.portfolio)] == [second]
        assert [d.id for d in service.list(world.portfolio, earlier=True)] == [second, first]
        old = service.get(first)
        assert (old.current, old.replaced_by_id) == (False, second)
        assert service.path(old).read_bytes() == TEXT  # the original stays downloadable
        [event] = [e for e in world.items(session, None).history(world.portfolio) if e.payload.get("replaces")]
        assert event.payload["replaces"] == first
    before = world.snapshot()
    cases = [
        (first, "witness_statement", f"Document #{first} was already replaced by #{second}"),
        (second, "photo", "is not a Photo of the work"),
        (424242, "witness_statement", "has no document #424242"),
    ]
    for replaces, category, words in cases:
        with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
            world.docs(session, "cleo").upload(world.portfolio, category, "w.txt", io.BytesIO(TEXT), replaces=replaces)
        assert words in str(refused.value)
    with world.rt.session() as session, pytest.raises(Conflict, match="no longer checked"):
        world.docs(session, "vera").accept(first)
    assert world.snapshot() == before


def test_deleting_by_the_uploader_while_pending_or_by_quality_assurance(world):
    mine = world.upload("cleo", "photo", PNG, filename="wall.png")
    checked = world.upload("cleo", "evidence_pack", PDF)
    world.accept(checked)
    before = world.snapshot()
    for who, document_id in (("carl", mine), ("cleo", checked), ("mona", mine)):
        with world.rt.session() as session, pytest.raises(PermissionDenied) as refused:
            world.docs(session, who).delete(document_id)
        assert f"may not delete document #{document_id}" in refused.value.message
    assert world.snapshot() == before
    with world.rt.session() as session:
        world.docs(session, "cleo").delete(mine)
        world.docs(session, "quinn").delete(checked)
    with world.rt.session() as session:
        for document_id in (mine, checked):
            with pytest.raises(NotFound, match="was deleted on"):
                world.docs(session, "cleo").get(document_id)
        kinds = [e.kind for e in world.items(session, None).history(world.portfolio)]
        assert kinds.count("document_deleted") == 2
        assert world.docs(session, "cleo").list(world.portfolio, earlier=True) == []
    assert [f for f in stored_files(world.rt.settings.documents_path) if not f.startswith("tmp")] == []


def test_a_deleted_documents_content_stays_while_another_document_has_it(world):
    first = world.upload("cleo", "photo", PNG, filename="a.png")
    world.upload("cleo", "evidence_pack", PDF)
    second = world.upload("carl", "photo", PNG, filename="b.png")
    with world.rt.session() as session:
        world.docs(session, "quinn").delete(first)
        service = world.docs(session, "cleo")
        assert service.path(service.get(second)).read_bytes() == PNG


def test_a_file_missing_from_the_folder_is_a_clear_error(world):
    document_id = world.upload("cleo", "evidence_pack")
    with world.rt.session() as session:
        service = world.docs(session, "cleo")
        document = service.get(document_id)
        service.store.path_for(document.sha256).unlink()
        with pytest.raises(NotFound, match="missing from the documents folder"):
            service.path(document)


# -- steps that need documents, and task lists -------------------------------------------------------


def test_a_step_needing_accepted_documents_is_refused_naming_what_is_missing(world):
    pack = world.upload("cleo", "evidence_pack")
    witness = world.upload("cleo", "witness_statement", TEXT, filename="w.txt")
    with world.rt.session() as session:
        world.docs(session, "vera").reject(witness, "Unsigned")
    before = world.snapshot()
    with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
        world.items(session, "cleo").transition(world.portfolio, "signed_off")
    [problem] = refused.value.problems
    assert problem.path == "documents"
    assert problem.message == "'Sign off the portfolio' needs accepted documents: Evidence pack, Witness statement"
    assert "Evidence pack: uploaded, waiting for a quality check" in problem.advice
    assert "Witness statement: rejected: upload a corrected one" in problem.advice
    assert world.snapshot() == before
    world.accept(pack)
    with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
        world.items(session, "cleo").transition(world.portfolio, "signed_off")
    assert refused.value.problems[0].message.endswith("needs accepted documents: Witness statement")
    better = world.upload("cleo", "witness_statement", TEXT + b"Signed\n", filename="w.txt", replaces=witness)
    world.accept(better)
    with world.rt.session() as session:
        moved = world.items(session, "cleo").transition(world.portfolio, "signed_off")
        assert moved.status == "signed_off"


def test_a_step_with_no_document_uploaded_says_none_uploaded(world):
    with world.rt.session() as session, pytest.raises(ValidationFailed) as refused:
        world.items(session, "cleo").transition(world.portfolio, "signed_off")
    assert "Evidence pack: none uploaded yet; Witness statement: none uploaded yet" in refused.value.problems[0].advice


def counts(w, who: str | None) -> dict[str, int]:
    with w.rt.session() as session:
        service = TaskListService(session, w.actor(session, who), w.rt.registry)
        return {e["key"]: e["count"] for e in service.summary() if e["type"] == "portfolio"}


def test_documents_missing_lists_count_items_until_every_category_is_accepted(world):
    with world.rt.session() as session:
        second = world.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=world.learner).id
    assert counts(world, None) == {"paperwork_missing": 2, "no_photo": 2}
    assert counts(world, "vera") == {"paperwork_missing": 2, "no_photo": 2}
    assert counts(world, "tess") == {"paperwork_missing": 1}  # own scope, and not one of her lists
    pack = world.upload("cleo", "evidence_pack")
    witness = world.upload("cleo", "witness_statement", TEXT, filename="w.txt")
    world.accept(pack)
    assert counts(world, None)["paperwork_missing"] == 2  # the witness statement is still pending
    world.accept(witness)
    assert counts(world, None) == {"paperwork_missing": 1, "no_photo": 2}
    with world.rt.session() as session:
        service = TaskListService(session, world.actor(session, None), world.rt.registry)
        found, total = service.items("portfolio", "paperwork_missing")
        assert [i.id for i in found] == [second] and total == 1
    with world.rt.session() as session:  # a deleted accepted document no longer counts
        world.docs(session, "quinn").delete(pack)
    assert counts(world, None)["paperwork_missing"] == 2


def test_the_derived_indexes_still_sync_and_leave_the_documents_test_out_of_the_predicate(world):
    rt = world.rt
    portfolio = rt.registry.types["portfolio"]
    with rt.session() as session:
        where = TaskListService(session, world.actor(session, None), rt.registry).where(
            portfolio, portfolio.tasklist("paperwork_missing")
        )
    # the PostgreSQL test database is shared: the indexes are made in a transaction that is rolled back
    with rt.engine.connect() as connection:
        wanted = [i for i in indexes.wanted(rt.registry, connection.dialect) if i.type_key == "portfolio"]
        assert {i.tasklist for i in wanted} == {"paperwork_missing", "no_photo"}
        assert all("documents" not in i.sql.lower() for i in wanted)
        for index in wanted:
            connection.execute(text(index.sql))
        catalogue = (
            "SELECT indexname FROM pg_indexes WHERE tablename = 'items'"
            if connection.dialect.name == "postgresql"
            else "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'items'"
        )
        assert {i.name for i in wanted} <= set(connection.execute(text(catalogue)).scalars())
        count = select(func.count()).select_from(Item).where(where)
        assert connection.execute(count).scalar() == 1
        connection.rollback()


def test_the_built_in_signup_paperwork_list_counts_compliance_items_missing_documents(world):
    with world.rt.session() as session:
        system = world.items(session, None)
        missing = system.create("compliance", {"programme_type": "apprenticeship"}, subject_id=world.learner).id
        complete = system.create("compliance", {"programme_type": "apprenticeship"}, subject_id=world.learner).id
    for category in ("signup_form", "id_evidence"):
        world.accept(world.upload("cleo", category, PDF, filename=f"{category}.pdf", item=complete), "quinn")
    with world.rt.session() as session:
        service = TaskListService(session, world.actor(session, "quinn"), world.rt.registry)
        found, total = service.items("compliance", "signup_incomplete")
        assert [i.id for i in found] == [missing] and total == 1
        tasklist = world.rt.registry.types["compliance"].tasklist("signup_incomplete")
        assert tasklist.documents_missing == ("signup_form", "id_evidence") and tasklist.conditions == ()
    with world.rt.session() as session:
        items = world.items(session, None)
        paperwork = json.loads((ROOT / "examples" / "data" / "compliance" / "valid.json").read_text())
        items.update(missing, changes=paperwork)
        items.transition(missing, "awaiting_documents")
        items.transition(missing, "under_review")
        with pytest.raises(ValidationFailed) as refused:
            items.transition(missing, "approved")
    assert "needs accepted documents: Signed sign-up form, Photo ID" in str(refused.value)


# -- the files themselves ------------------------------------------------------------------------------


def office_file(tmp_path: Path, members: dict[str, bytes], name: str = "f.zip") -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w") as archive:
        for member, content in members.items():
            archive.writestr(member, content)
    return path


def test_sniffing_tells_office_files_archives_and_text_apart(tmp_path):
    cases = {
        "docx": {"[Content_Types].xml": b"<x/>", "word/document.xml": b"<w/>"},
        "xlsx": {"[Content_Types].xml": b"<x/>", "xl/workbook.xml": b"<w/>"},
        "odt": {"mimetype": b"application/vnd.oasis.opendocument.text", "content.xml": b"<x/>"},
        "ods": {"mimetype": b"application/vnd.oasis.opendocument.spreadsheet"},
        "macro": {"word/document.xml": b"<w/>", "word/vbaProject.bin": b"\x00"},
        "zip": {"readme.txt": b"hello"},
    }
    for kind, members in cases.items():
        assert sniff(office_file(tmp_path, members, f"{kind}.bin")) == kind, kind
    samples = {
        "ole": b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 32,
        "gif": b"GIF89a" + b"\x00" * 10,
        "jpeg": b"\xff\xd8\xff\xe0" + b"\x00" * 10,
        "webp": b"RIFF\x10\x00\x00\x00WEBPVP8 ",
        "text": "Name,Town\nZoë,Lymington\n".encode("cp1252"),
    }
    for kind, content in samples.items():
        path = tmp_path / f"{kind}.sample"
        path.write_bytes(content)
        assert sniff(path) == kind, kind
    broken = tmp_path / "broken.zip"
    broken.write_bytes(b"PK\x03\x04 not really")
    assert sniff(broken) is None


def test_a_docx_with_macros_is_refused(tmp_path):
    store = DocumentStore(tmp_path / "docs", max_bytes=10_000, types=("docx",))
    macro = office_file(tmp_path, {"word/document.xml": b"<w/>", "word/vbaProject.bin": b"\x00"})
    with pytest.raises(FileRefused, match="its content is an Office file with macros"):
        store.receive(io.BytesIO(macro.read_bytes()), "letter.docx")
    plain = office_file(tmp_path, {"word/document.xml": b"<w/>"}, "plain.zip")
    received = store.receive(io.BytesIO(plain.read_bytes()), "letter.docx")
    assert received.content_type.endswith("wordprocessingml.document")


def test_names_are_cleaned_for_showing_never_used_as_paths():
    assert clean_filename("C:\\Users\\jo\\passport scan.PDF") == "passport scan.PDF"
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("a\x00b\u202ec.pdf") == "abc.pdf"
    assert clean_filename("   ") == clean_filename(None) == "document"
    long = clean_filename("x" * 300 + ".pdf")
    assert len(long) == 200 and long.endswith(".pdf")


def test_upload_settings_from_the_environment(tmp_path):
    base = {"TRACKER_INSTANCE_PATH": str(tmp_path), "TRACKER_SECRET_KEY": "x"}
    settings = Settings.from_env(base)
    assert settings.documents_path == tmp_path / "documents"
    assert settings.upload_max_bytes == 10 * 1024 * 1024 and "pdf" in settings.upload_types
    custom = Settings.from_env(
        {
            **base,
            "TRACKER_DOCUMENTS_PATH": str(tmp_path / "elsewhere"),
            "TRACKER_UPLOAD_MAX_BYTES": "2M",
            "TRACKER_UPLOAD_TYPES": "PDF, .png",
        }
    )
    assert (custom.documents_path, custom.upload_max_bytes, custom.upload_types) == (
        tmp_path / "elsewhere",
        2 * 1024 * 1024,
        ("pdf", "png"),
    )
    assert Settings.from_env({**base, "TRACKER_UPLOAD_MAX_BYTES": "512"}).upload_max_bytes == 512
    for name, value, words in (
        ("TRACKER_UPLOAD_MAX_BYTES", "lots", "is not a size"),
        ("TRACKER_UPLOAD_MAX_BYTES", "0", "is not a size"),
        ("TRACKER_UPLOAD_TYPES", "pdf,exe", "cannot check: exe"),
    ):
        with pytest.raises(TrackerError, match=words) as refused:
            Settings.from_env({**base, name: value})
        assert refused.value.advice


# -- definitions ------------------------------------------------------------------------------------------


@pytest.fixture
def defs(tmp_path) -> Path:
    target = tmp_path / "defs"
    shutil.copytree(DOCS_DEFINITIONS, target)
    return target


def edit_yaml(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text())
    change(data)
    path.write_text(yaml.safe_dump(data, sort_keys=False))


TYPE = "tracker_types/portfolio/type.yaml"
WORKFLOW = "workflows/portfolio.yaml"


def _categories(data):
    data["documents"]["categories"][1]["key"] = "evidence_pack"


def _list_names_unknown(data):
    data["tasklists"][0]["filter"]["documents_missing"] = ["evidence_pack", "passport"]


def _step_names_unknown(data):
    data["transitions"][0]["requires_documents"] = ["evidence_pack", "passport"]


DOCUMENT_CASES = {
    "category declared twice": (TYPE, _categories, TYPE, "/documents/categories/1/key", "declared twice"),
    "task list names an undeclared category": (
        TYPE,
        _list_names_unknown,
        TYPE,
        "/tasklists/0/filter/documents_missing/1",
        "names document category 'passport', which this type does not declare",
    ),
    "step names an undeclared category": (
        WORKFLOW,
        _step_names_unknown,
        TYPE,
        "/workflow",
        "transition 'sign_off' requires_documents names document category 'passport'",
    ),
    "no categories": (TYPE, lambda d: d["documents"].update(categories=[]), TYPE, "/documents/categories", ""),
    "category without a label": (
        TYPE,
        lambda d: d["documents"]["categories"][0].pop("label"),
        TYPE,
        "/documents/categories/0/label",
        "required",
    ),
    "requires_documents not a list": (
        WORKFLOW,
        lambda d: d["transitions"][0].update(requires_documents="evidence_pack"),
        WORKFLOW,
        "/transitions/0/requires_documents",
        "",
    ),
    "a capability that does not exist": (
        "roles.yaml",
        lambda d: d["roles"][1].update(capabilities=["items.view", "documents.approve"]),
        "roles.yaml",
        "/roles/1/capabilities/1",
        "",
    ),
}


@pytest.mark.parametrize("case", DOCUMENT_CASES, ids=list(DOCUMENT_CASES))
def test_each_mistake_in_document_settings_is_reported_where_it_is(defs, case):
    edited, change, reported, pointer, words = DOCUMENT_CASES[case]
    edit_yaml(defs / edited, change)
    registry = load_registry([defs])
    found = [p for p in registry.problems if p.file.endswith(reported) and p.pointer == pointer]
    assert found, "\n".join(map(str, registry.problems))
    assert any(words in f"{p.message} {p.advice}" for p in found), "\n".join(map(str, found))
    assert found[0].line is not None
    if reported == TYPE or edited == WORKFLOW:
        assert "portfolio" not in registry.types


def test_documents_qa_and_progress_edit_are_capabilities_of_the_built_in_roles():
    roles = load_registry().roles
    assert (
        "documents.qa" in roles["quality"].capabilities and "documents.qa" not in roles["tracker_creator"].capabilities
    )
    assert "progress.edit" in roles["assessor"].capabilities and "progress.edit" in roles["quality"].capabilities
