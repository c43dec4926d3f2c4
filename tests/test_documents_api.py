"""The documents and progress routes of the JSON API, on both databases: every status code the
OpenAPI document names for them is answered, each error as JSON saying why, nothing changed."""

from __future__ import annotations

import io

import pytest
from flask import Flask

from engine.models import Document
from engine.services.documents import DocumentService
from tests.documents_helpers import *  # noqa: F403 - fixtures
from tests.documents_helpers import PDF, PNG, TEXT, World, build_world, make_settings
from webui import api, create_app
from webui.openapi import document

BASE = "/api/v1"


@pytest.fixture
def app(tmp_path, db_url, documents_registry) -> Flask:
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": make_settings(tmp_path, db_url)})
    app.extensions["tracker"].__dict__["file_registry"] = documents_registry
    return app


@pytest.fixture
def site(app) -> World:
    world = build_world(app.extensions["tracker"])
    with world.rt.session() as session:
        users = world.rt.users(session)
        world.tokens = {name: users.create_token(name, "tests")[1] for name in world.ids}
    return world


@pytest.fixture
def call(app, site):
    client = app.test_client()

    def request(who: str | None, method: str, path: str, **kwargs):
        headers = kwargs.pop("headers", {})
        if who is not None:
            headers["Authorization"] = f"Bearer {site.tokens[who]}"
        return client.open(BASE + path, method=method, headers=headers, **kwargs)

    return request


def post_file(call, who, item_id, content=PDF, filename="pack.pdf", **fields):
    data = {"category": "evidence_pack", **fields, "file": (io.BytesIO(content), filename)}
    return call(who, "POST", f"/items/{item_id}/documents", data=data, content_type="multipart/form-data")


def codes(method: str, path: str) -> set[int]:
    entry = document("https://tracker.test")["paths"][BASE + path][method.lower()]
    return {int(code) for code in entry["responses"]}


def assert_error(response, status: int, words: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert words in body["message"] + " " + " ".join(e["message"] for e in body["errors"]), body
    assert "advice" in body
    return body


def test_the_document_names_exactly_the_codes_these_tests_see():
    expected = {
        ("GET", "/items/{item_id}/documents"): {200, 401, 403, 404, 422},
        ("POST", "/items/{item_id}/documents"): {201, 401, 403, 404, 409, 413, 415, 422},
        ("GET", "/documents/{document_id}"): {200, 401, 403, 404, 422},
        ("GET", "/documents/{document_id}/content"): {200, 401, 403, 404, 422},
        ("POST", "/documents/{document_id}/check"): {200, 400, 401, 403, 404, 409, 413, 415, 422},
        ("DELETE", "/documents/{document_id}"): {200, 401, 403, 404, 409, 422},
        ("GET", "/items/{item_id}/progress"): {200, 401, 403, 404, 422},
        ("PATCH", "/items/{item_id}/progress"): {200, 400, 401, 403, 404, 409, 413, 415, 422},
    }
    for (method, path), wanted in expected.items():
        assert codes(method, path) == wanted, (method, path)
    mine = [op for op in api.OPERATIONS if op.tag in ("documents", "progress")]
    assert len(mine) == len(expected)
    doc = document("https://tracker.test")
    upload = doc["paths"][f"{BASE}/items/{{item_id}}/documents"]["post"]
    assert upload["requestBody"]["content"]["multipart/form-data"]["schema"] == {
        "$ref": "#/components/schemas/UploadDocument"
    }
    content = doc["paths"][f"{BASE}/documents/{{document_id}}/content"]["get"]["responses"]["200"]["content"]
    assert "application/pdf" in content and "image/png" in content
    for name in ("Document", "DocumentList", "Progress", "UploadDocument", "CheckDocument", "ChangeProgress"):
        assert name in doc["components"]["schemas"], name


# -- documents --------------------------------------------------------------------------------------------


def test_upload_list_get_download_check_and_delete(call, site):
    created = post_file(call, "cleo", site.portfolio, filename="Evidence.pdf")
    assert created.status_code == 201
    body = created.get_json()
    assert (body["qa_state"], body["category"], body["filename"], body["size"]) == (
        "pending",
        "evidence_pack",
        "Evidence.pdf",
        len(PDF),
    )
    assert created.headers["Location"] == f"{BASE}/documents/{body['id']}"
    assert body["download_url"] == f"https://tracker.test{BASE}/documents/{body['id']}/content"
    listing = call("mona", "GET", f"/items/{site.portfolio}/documents").get_json()
    assert [c["state"] for c in listing["categories"]] == ["pending", "missing", "missing"]
    assert [d["id"] for d in listing["documents"]] == [body["id"]]
    assert call("mona", "GET", f"/documents/{body['id']}").get_json()["filename"] == "Evidence.pdf"
    content = call("mona", "GET", f"/documents/{body['id']}/content")
    assert content.status_code == 200 and content.data == PDF and content.mimetype == "application/pdf"
    assert content.headers["Content-Disposition"].startswith("attachment;")
    assert content.headers["X-Content-Type-Options"] == "nosniff"
    checked = call("vera", "POST", f"/documents/{body['id']}/check", json={"decision": "accept"})
    assert checked.status_code == 200 and checked.get_json()["qa_state"] == "accepted"
    assert checked.get_json()["qa_by"] == "vera"
    photo = post_file(call, "cleo", site.portfolio, PNG, "wall.png", category="photo").get_json()
    rejected = call("vera", "POST", f"/documents/{photo['id']}/check", json={"decision": "reject", "reason": "Blurred"})
    assert rejected.get_json()["qa_reason"] == "Blurred"
    deleted = call("quinn", "DELETE", f"/documents/{photo['id']}")
    assert deleted.status_code == 200 and deleted.get_json()["deleted"] is True
    assert call("mona", "GET", f"/items/{site.learner}/documents").get_json() == {"categories": [], "documents": []}


def test_upload_refusals_keep_nothing(call, site, monkeypatch):
    before = site.snapshot()
    assert_error(post_file(call, "cleo", site.portfolio, b"%PDF-" + b"x" * 5000, "big.pdf"), 413, "larger than 4 KB")
    assert_error(post_file(call, "cleo", site.portfolio, b"%PDF-" + b"x" * 90_000, "big.pdf"), 413, "larger than 4 KB")
    body = assert_error(post_file(call, "cleo", site.portfolio, PNG, "scan.pdf"), 415, "its content is a PNG image")
    assert body["errors"][0]["path"] == "file"
    not_multipart = call("cleo", "POST", f"/items/{site.portfolio}/documents", json={"category": "evidence_pack"})
    assert_error(not_multipart, 415, "must be multipart/form-data")
    assert_error(post_file(call, "cleo", site.portfolio, category="passport"), 422, "not a kind of document")
    assert_error(post_file(call, "cleo", site.portfolio, replaces="x1"), 422, "'x1' is not a document number")
    no_file = call(
        "cleo",
        "POST",
        f"/items/{site.portfolio}/documents",
        data={"category": "photo"},
        content_type="multipart/form-data",
    )
    assert_error(no_file, 422, "The form has no file")
    assert_error(post_file(call, "vera", site.portfolio), 403, "vera may not edit Portfolio items")
    assert_error(post_file(call, "cleo", 999999), 404, "There is no item #999999")
    assert post_file(call, None, site.portfolio).status_code == 401
    assert site.snapshot() == before
    # two uploads replacing the same document at the same moment: the second is told so (409)
    first = post_file(call, "cleo", site.portfolio, TEXT, "w.txt", category="witness_statement").get_json()["id"]
    stale = site.rt.session()
    old = stale.get(Document, first)
    post_file(call, "cleo", site.portfolio, TEXT + b"2", "w2.txt", category="witness_statement", replaces=str(first))
    monkeypatch.setattr(DocumentService, "_replaced", lambda self, item, category, replaces: old)
    before = site.snapshot()
    race = post_file(
        call, "cleo", site.portfolio, TEXT + b"3", "w3.txt", category="witness_statement", replaces=str(first)
    )
    assert_error(race, 409, f"Document #{first} was replaced or deleted by someone else just now")
    assert site.snapshot() == before
    stale.close()


def test_reading_documents_errors(call, site):
    document_id = site.upload("cleo", "evidence_pack")
    with site.rt.session() as session:
        other = site.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=site.learner).id
    hidden = site.upload("carl", "evidence_pack", item=other)
    for path in (f"/documents/{hidden}", f"/documents/{hidden}/content", f"/items/{other}/documents"):
        assert_error(call("tess", "GET", path), 403, "assigned to or created by them")
        assert call(None, "GET", path).status_code == 401
        assert_error(call("mona", "GET", path, query_string={"page": 2}), 422, "'page' is not a parameter here")
    for path in ("/documents/999999", "/documents/999999/content", "/items/999999/documents", "/documents/0"):
        assert call("mona", "GET", path).status_code == 404
    with site.rt.session() as session:
        site.docs(session, "quinn").delete(document_id)
    assert_error(call("mona", "GET", f"/documents/{document_id}"), 404, "was deleted on")
    assert_error(call("mona", "GET", f"/documents/{document_id}/content"), 404, "was deleted on")


def test_checking_errors_change_nothing(call, site):
    document_id = site.upload("cleo", "evidence_pack")
    before = site.snapshot()
    path = f"/documents/{document_id}/check"
    assert_error(call("vera", "POST", path, json={"decision": "reject"}), 422, "A reason is needed")
    assert_error(call("vera", "POST", path, json={"decision": "reject", "reason": " "}), 422, "A reason is needed")
    assert_error(call("vera", "POST", path, json={"decision": "maybe"}), 422, "Decision must be one of: accept, reject")
    assert_error(call("vera", "POST", path, json={"decision": "accept", "extra": 1}), 422, "extra")
    assert_error(call("cleo", "POST", path, json={"decision": "accept"}), 403, "may not check documents")
    assert_error(call("vera", "POST", "/documents/999999/check", json={"decision": "accept"}), 404, "no document")
    assert call(None, "POST", path, json={"decision": "accept"}).status_code == 401
    broken = call("vera", "POST", path, data="{not json", content_type="application/json")
    assert_error(broken, 400, "not valid JSON")
    assert_error(call("vera", "POST", path, data="decision=accept"), 415, "must be JSON")
    big = call(
        "vera",
        "POST",
        path,
        data='{"decision": "accept", "reason": "' + "x" * 1_100_000 + '"}',
        content_type="application/json",
    )
    assert big.status_code == 413 and big.get_json()["message"]
    assert site.snapshot() == before
    assert call("vera", "POST", path, json={"decision": "accept"}).status_code == 200
    before = site.snapshot()
    assert_error(call("quinn", "POST", path, json={"decision": "accept"}), 409, "was already accepted by vera")
    assert site.snapshot() == before


def test_deleting_errors_change_nothing(call, site):
    first = site.upload("cleo", "witness_statement", TEXT, filename="w.txt")
    second = site.upload("cleo", "witness_statement", TEXT + b"2", filename="w2.txt", replaces=first)
    site.accept(second)
    before = site.snapshot()
    assert_error(call("quinn", "DELETE", f"/documents/{first}"), 409, f"was replaced by #{second}")
    assert_error(call("cleo", "DELETE", f"/documents/{second}"), 403, f"may not delete document #{second}")
    assert_error(call("quinn", "DELETE", "/documents/999999"), 404, "no document")
    assert call(None, "DELETE", f"/documents/{second}").status_code == 401
    assert_error(call("quinn", "DELETE", f"/documents/{second}", query_string={"x": 1}), 422, "'x' is not a parameter")
    assert site.snapshot() == before


# -- progress ---------------------------------------------------------------------------------------------


def test_progress_read_and_change(call, site):
    read = call("tess", "GET", f"/items/{site.portfolio}/progress")
    assert read.status_code == 200
    body = read.get_json()
    assert (body["percent"], body["ticked"], body["total"], body["may_edit"]) == (0.0, 0, 5, True)
    assert body["qualification"]["qan"] == "600/0001/1"
    assert body["units"][0]["elements"][0]["criteria"][1]["path"] == "A/A1/b"
    changed = call(
        "tess",
        "PATCH",
        f"/items/{site.portfolio}/progress",
        json={"ticks": [{"criterion": "b", "evidence": "Observation 3", "date": "2025-03-14"}]},
    )
    assert changed.status_code == 200
    body = changed.get_json()
    assert body["percent"] == 28.1  # b is 3/4 of A1; A1 half of A; A three quarters of the award
    criterion = body["units"][0]["elements"][0]["criteria"][1]
    assert (criterion["met"], criterion["evidence"], criterion["date"], criterion["ticked_by"]) == (
        True,
        "Observation 3",
        "2025-03-14",
        "tess",
    )
    item = call("mona", "GET", f"/items/{site.portfolio}").get_json()
    assert item["progress"] == 28.1
    undone = call("tess", "PATCH", f"/items/{site.portfolio}/progress", json={"unticks": ["A/A1/b"]}).get_json()
    assert undone["percent"] == 0.0
    assert_error(call("mona", "GET", f"/items/{site.learner}/progress"), 404, "Learner items do not track progress")


def test_progress_errors_change_nothing(call, site):
    path = f"/items/{site.portfolio}/progress"
    before = site.snapshot()
    bad = {"ticks": [{"criterion": "zz", "evidence": "x", "date": "2025-01-01"}]}
    body = assert_error(call("tess", "PATCH", path, json=bad), 422, "'zz' is not a criterion of Mini award")
    assert body["errors"][0]["path"] == "/ticks/0/criterion"
    future = {"ticks": [{"criterion": "a", "evidence": "x", "date": "2999-01-01"}]}
    assert_error(call("tess", "PATCH", path, json=future), 422, "is in the future")
    assert_error(call("tess", "PATCH", path, json={"unticks": ["a"]}), 422, "A/A1/a is not ticked")
    assert_error(call("tess", "PATCH", path, json={"ticks": [{"criterion": "a"}]}), 422, "Evidence (row 1) is required")
    assert_error(call("tess", "PATCH", path, json={}), 422, "Nothing to record")
    assert_error(call("cleo", "PATCH", path, json={"unticks": ["a"]}), 403, "cleo may not record progress on")
    assert_error(call("tess", "PATCH", path, json={"unticks": ["a"], "version": 99}), 409, "you had version 99")
    assert_error(call("tess", "PATCH", "/items/999999/progress", json={"unticks": ["a"]}), 404, "no item")
    assert_error(
        call("quinn", "PATCH", f"/items/{site.learner}/progress", json={"unticks": ["a"]}), 404, "do not track"
    )
    assert_error(call("tess", "PATCH", f"/items/{site.learner}/progress", json={"unticks": ["a"]}), 403, "may only")
    assert call(None, "PATCH", path, json={"unticks": ["a"]}).status_code == 401
    assert_error(call("tess", "PATCH", path, data="{", content_type="application/json"), 400, "not valid JSON")
    assert_error(call("tess", "PATCH", path, data="unticks=a"), 415, "must be JSON")
    huge = call("tess", "PATCH", path, data='{"unticks": ["' + "a" * 1_100_000 + '"]}', content_type="application/json")
    assert huge.status_code == 413
    assert_error(call("mona", "GET", path, query_string={"page": 1}), 422, "'page' is not a parameter here")
    assert_error(call("cleo", "GET", "/items/999999/progress"), 404, "no item")
    with site.rt.session() as session:
        other = site.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=site.learner).id
    assert_error(call("tess", "GET", f"/items/{other}/progress"), 403, "assigned to or created by them")
    assert call(None, "GET", path).status_code == 401
    assert site.snapshot()["ticks"] == before["ticks"] == []
