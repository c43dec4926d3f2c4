"""Documents on the item page, on both databases: the panel each role sees, uploading through
the form (every refusal a 4xx page saying why, with nothing kept), checking with a reason,
downloading as an attachment only for those who may see the item, and the learner page."""

from __future__ import annotations

import io
import re

import pytest
from sqlalchemy import select

from engine.models import Document, Notification
from tests.documents_helpers import *  # noqa: F403 - fixtures: world, app, site
from tests.documents_helpers import PDF, PNG, TEXT, client_for, stored_files
from tests.webhelpers import csrf


def upload(client, item_id: int, content: bytes, filename: str, category: str = "evidence_pack", **extra):
    token = csrf(client, f"/items/{item_id}")
    data = {"csrf_token": token, "category": category, "file": (io.BytesIO(content), filename), **extra}
    return client.post(f"/items/{item_id}/documents", data=data, content_type="multipart/form-data")


def panel(html: str) -> str:
    return html.split('id="documents"', 1)[1].split("</section>", 1)[0]


def test_the_panel_shows_each_kind_and_what_each_role_may_do(app, site):
    cleo = client_for(app, "cleo")
    html = panel(cleo.get(f"/items/{site.portfolio}").get_data(as_text=True))
    for label in ("Evidence pack", "Witness statement", "Photo of the work"):
        assert label in html
    assert html.count("None uploaded") == 3
    assert 'enctype="multipart/form-data"' in html and 'id="upload-file"' in html
    assert 'accept=".pdf,.png,.jpg' in html and "at most 4 KB" in html
    site.upload("cleo", "evidence_pack")
    vera = panel(client_for(app, "vera").get(f"/items/{site.portfolio}").get_data(as_text=True))
    assert "Accept" in vera and "Reject…" in vera and 'id="upload-file"' not in vera  # checks, cannot upload
    mona = panel(client_for(app, "mona").get(f"/items/{site.portfolio}").get_data(as_text=True))
    assert "pack.pdf" in mona and "Waiting for a check" in mona
    assert "Accept" not in mona and 'id="upload-file"' not in mona and "Delete" not in mona
    learner_page = cleo.get(f"/items/{site.learner}").get_data(as_text=True)
    assert 'id="documents"' not in learner_page  # a type without categories has no panel


def test_uploading_through_the_form_and_downloading_as_an_attachment(app, site):
    cleo = client_for(app, "cleo")
    response = upload(cleo, site.portfolio, PDF, "Évidence pack.pdf")
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/items/{site.portfolio}#documents")
    html = cleo.get(response.headers["Location"]).get_data(as_text=True)
    assert "Uploaded Évidence pack.pdf; it waits for a quality check." in html
    assert "uploaded Évidence pack.pdf (Evidence pack)" in html  # the history says it in words
    [link] = re.findall(r'href="(/documents/\d+/download)"', panel(html))
    download = cleo.get(link)
    assert download.status_code == 200 and download.data == PDF
    assert download.mimetype == "application/pdf"
    assert download.headers["Content-Disposition"].startswith("attachment;")
    assert "filename*=UTF-8''%C3%89vidence%20pack.pdf" in download.headers["Content-Disposition"]
    assert download.headers["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in download.headers["Content-Security-Policy"]
    assert "no-store" in download.headers["Cache-Control"]


@pytest.mark.parametrize(
    ("content", "filename", "category", "status", "words"),
    [
        (b"%PDF-" + b"x" * 5000, "big.pdf", "evidence_pack", 413, "is larger than 4 KB"),  # refused by the engine
        (b"%PDF-" + b"x" * 90_000, "huge.pdf", "evidence_pack", 413, "The file is larger than 4 KB"),  # cut off early
        (PNG, "photo.pdf", "evidence_pack", 415, "is not a PDF: its content is a PNG image"),
        (PDF, "run.exe", "evidence_pack", 415, "&#39;.exe&#39; files are not accepted"),
        (PDF, "pack.pdf", "", 422, "Pick the kind of document"),
        (PDF, "pack.pdf", "passport", 422, "&#39;passport&#39; is not a kind of document Portfolio takes"),
        (PDF, "", "evidence_pack", 422, "Choose a file to upload"),
    ],
)
def test_refused_uploads_are_a_4xx_page_saying_why_and_keep_nothing(
    app, site, content, filename, category, status, words
):
    cleo = client_for(app, "cleo")
    before = site.snapshot()
    response = upload(cleo, site.portfolio, content, filename, category)
    assert response.status_code == status
    html = response.get_data(as_text=True)
    assert words in html
    assert 'id="documents-problems"' in html and 'role="alert"' in html
    assert "Traceback" not in html
    if category in ("evidence_pack",) and len(content) < 10_000:  # a body cut off early was never read
        assert f'value="{category}" selected' in html  # the choice is kept
    assert site.snapshot() == before


def test_uploading_without_permission_is_403_and_keeps_nothing(app, site):
    before = site.snapshot()
    for name in ("vera", "mona"):
        response = upload(client_for(app, name), site.portfolio, PDF, "pack.pdf")
        assert response.status_code == 403
        assert f"{name} may not edit Portfolio items" in response.get_data(as_text=True)
    assert site.snapshot() == before
    assert stored_files(site.rt.settings.documents_path) == []


def test_rejecting_asks_for_a_reason_and_keeps_what_was_typed(app, site):
    document_id = site.upload("cleo", "evidence_pack")
    vera = client_for(app, "vera")
    before = site.snapshot()
    token = csrf(vera, f"/items/{site.portfolio}")
    refused = vera.post(
        f"/documents/{document_id}/check", data={"csrf_token": token, "decision": "reject", "reason": "  "}
    )
    assert refused.status_code == 422
    html = refused.get_data(as_text=True)
    assert "A reason is needed to reject a document" in html
    assert '<details class="reject" open>' in html and 'aria-invalid="true"' in html
    assert site.snapshot() == before
    response = vera.post(
        f"/documents/{document_id}/check",
        data={"csrf_token": token, "decision": "reject", "reason": "The witness has not signed it"},
    )
    assert response.status_code == 303
    page = vera.get(response.headers["Location"]).get_data(as_text=True)
    assert "pack.pdf is rejected; the uploader is told why." in page
    assert "The witness has not signed it" in panel(page)
    with site.rt.session() as session:
        [entry] = session.scalars(select(Notification).where(Notification.user_id == site.ids["cleo"])).all()
        assert entry.reason == "document_rejected" and entry.link == f"/items/{site.portfolio}"
    cleo_page = client_for(app, "cleo").get(f"/items/{site.portfolio}").get_data(as_text=True)
    assert "Upload a corrected version" in panel(cleo_page)


def test_a_correction_replaces_the_rejected_document(app, site):
    first = site.upload("cleo", "witness_statement", TEXT, filename="witness.txt")
    with site.rt.session() as session:
        site.docs(session, "vera").reject(first, "Unsigned")
    cleo = client_for(app, "cleo")
    response = upload(
        cleo, site.portfolio, TEXT + b"Signed\n", "witness-signed.txt", "witness_statement", replaces=first
    )
    assert response.status_code == 303
    html = panel(cleo.get(f"/items/{site.portfolio}").get_data(as_text=True))
    assert "witness-signed.txt" in html and "earlier version" in html and f"replaced by #{first + 1}" in html


def test_checking_without_documents_qa_and_checking_twice(app, site):
    document_id = site.upload("cleo", "evidence_pack")
    cleo = client_for(app, "cleo")
    before = site.snapshot()
    token = csrf(cleo, f"/items/{site.portfolio}")
    refused = cleo.post(f"/documents/{document_id}/check", data={"csrf_token": token, "decision": "accept"})
    assert refused.status_code == 403
    assert "cleo may not check documents of Portfolio items" in refused.get_data(as_text=True)
    assert site.snapshot() == before
    vera = client_for(app, "vera")
    token = csrf(vera, f"/items/{site.portfolio}")
    assert (
        vera.post(f"/documents/{document_id}/check", data={"csrf_token": token, "decision": "accept"}).status_code
        == 303
    )
    again = vera.post(f"/documents/{document_id}/check", data={"csrf_token": token, "decision": "accept"})
    assert again.status_code == 409 and "was already accepted by vera" in again.get_data(as_text=True)


def test_downloads_check_who_may_see_the_item(app, site):
    document_id = site.upload("cleo", "evidence_pack")
    with site.rt.session() as session:
        other = site.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=site.learner).id
    hidden = site.upload("carl", "evidence_pack", PNG, filename="tiles.png", item=other)
    tess = client_for(app, "tess")  # own scope: the first portfolio is assigned to her
    assert tess.get(f"/documents/{document_id}/download").status_code == 200
    refused = tess.get(f"/documents/{hidden}/download")
    assert refused.status_code == 403 and refused.data != PNG
    assert "assigned to or created by them" in refused.get_data(as_text=True)
    assert tess.get("/documents/999999/download").status_code == 404
    anonymous = app.test_client().get(f"/documents/{document_id}/download")
    assert anonymous.status_code in (302, 401) and anonymous.data != PDF
    with site.rt.session() as session:
        site.docs(session, "quinn").delete(document_id)
    gone = tess.get(f"/documents/{document_id}/download")
    assert gone.status_code == 404 and "was deleted on" in gone.get_data(as_text=True)


def test_deleting_from_the_page(app, site):
    document_id = site.upload("cleo", "photo", PNG, filename="wall.png")
    cleo = client_for(app, "cleo")
    token = csrf(cleo, f"/items/{site.portfolio}")
    response = cleo.post(f"/documents/{document_id}/delete", data={"csrf_token": token})
    assert response.status_code == 303
    page = cleo.get(f"/items/{site.portfolio}").get_data(as_text=True)
    assert "wall.png was deleted; the history keeps a note of it." in page
    assert "deleted wall.png (Photo of the work)" in page
    with site.rt.session() as session:
        assert session.get(Document, document_id).current is False


def test_a_step_without_its_documents_is_refused_on_the_page(app, site):
    cleo = client_for(app, "cleo")
    page = cleo.get(f"/items/{site.portfolio}").get_data(as_text=True)
    assert "to Signed off; needs accepted Evidence pack, Witness statement" in page  # said before it is tried
    token = csrf(cleo, f"/items/{site.portfolio}")
    before = site.snapshot()
    with site.rt.session() as session:
        version = site.items(session, None).get(site.portfolio).version
    response = cleo.post(f"/items/{site.portfolio}/transition/sign_off", data={"csrf_token": token, "version": version})
    assert response.status_code == 422
    html = response.get_data(as_text=True)
    assert "needs accepted documents: Evidence pack, Witness statement" in html
    assert "none uploaded yet" in html
    assert site.snapshot() == before


def test_the_learner_page_lists_items_awaiting_documents_with_what_is_missing(app, site):
    pack = site.upload("cleo", "evidence_pack")
    site.accept(pack)
    html = client_for(app, "quinn").get(f"/learners/{site.learner}").get_data(as_text=True)
    section = html.split('id="documents-heading"', 1)[1].split("</section>", 1)[0]
    assert f'href="/items/{site.portfolio}"' in section
    assert "no accepted Witness statement, Photo of the work" in section
    assert "Evidence pack" not in section
