"""``tracker documents`` end to end in a subprocess, on both databases: attach, list, check,
download and delete; each refusal prints why on stderr, exits 1 and changes nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.documents_helpers import *  # noqa: F403 - fixtures
from tests.documents_helpers import DOCS_DEFINITIONS, PDF, PNG, World, build_world, make_settings, runtime


@pytest.fixture
def site(tmp_path, db_url, run, documents_registry) -> World:
    """The people and a portfolio, made through the engine on the database and documents folder
    the ``tracker`` command uses."""
    run.env["TRACKER_DEFINITIONS_PATH"] = str(DOCS_DEFINITIONS)
    run.env["TRACKER_UPLOAD_MAX_BYTES"] = "4096"
    settings = make_settings(tmp_path / "instance", db_url)
    return build_world(runtime(settings, documents_registry))


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_attach_list_check_download_and_delete(tmp_path, run, site):
    pack = write(tmp_path, "pack.pdf", PDF)
    done = run("documents", "attach", str(site.portfolio), str(pack), "--category", "evidence_pack", "--as", "cleo")
    assert "Attached document #1 pack.pdf" in done.stdout and "waits for a quality check" in done.stdout
    listed = json.loads(run("documents", "list", str(site.portfolio), "--json").stdout)
    assert [(d["id"], d["qa_state"], d["uploaded_by"]) for d in listed] == [(1, "pending", "cleo")]
    assert "accepted" in run("documents", "qa", "1", "accept", "--as", "vera").stdout
    photo = write(tmp_path, "wall.png", PNG)
    run("documents", "attach", str(site.portfolio), str(photo), "--category", "photo", "--as", "cleo")
    rejected = run("documents", "qa", "2", "reject", "--reason", "Too dark to see the joints", "--as", "vera")
    assert "is rejected (Too dark to see the joints)" in rejected.stdout
    table = run("documents", "list", str(site.portfolio)).stdout
    assert "evidence_pack" in table and "Too dark to see the joints" in table
    target = tmp_path / "copy.pdf"
    assert "Wrote" in run("documents", "download", "1", "--output", str(target), "--as", "mona").stdout
    assert target.read_bytes() == PDF
    assert "Deleted document #2" in run("documents", "delete", "2", "--as", "quinn").stdout
    history = run("items", "history", str(site.portfolio)).stdout
    for words in ("uploaded pack.pdf (Evidence pack)", "accepted pack.pdf", "rejected wall.png", "deleted wall.png"):
        assert words in history


def test_refusals_exit_1_with_the_reason_and_change_nothing(tmp_path, run, site):
    run("documents", "attach", str(site.portfolio), str(write(tmp_path, "p.pdf", PDF)), "--category", "evidence_pack")
    before = site.snapshot()
    cases = [
        (
            (
                "attach",
                str(site.portfolio),
                str(write(tmp_path, "big.pdf", b"%PDF-" + b"x" * 5000)),
                "--category",
                "photo",
            ),
            "'big.pdf' is larger than 4 KB",
        ),
        (
            ("attach", str(site.portfolio), str(write(tmp_path, "scan.pdf", PNG)), "--category", "photo"),
            "its content is a PNG image",
        ),
        (("attach", str(site.portfolio), str(tmp_path / "missing.pdf"), "--category", "photo"), "Cannot read"),
        (
            ("attach", str(site.portfolio), str(write(tmp_path, "p3.pdf", PDF)), "--category", "photo", "--as", "vera"),
            "vera may not edit Portfolio items",
        ),
        (("qa", "1", "reject"), "A reason is needed to reject a document"),
        (("qa", "1", "accept", "--as", "cleo"), "cleo may not check documents of Portfolio items"),
        (("delete", "1", "--as", "carl"), "carl may not delete document #1"),
        (("download", "1", "--output", str(tmp_path / "p.pdf")), "exists already"),
    ]
    for args, words in cases:
        result = run("documents", *args, ok=False)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert words in result.stderr, (args, result.stderr)
        assert "->" in result.stderr  # with what to do
    assert run("documents", "qa", "1", "maybe", ok=False).returncode == 2  # a malformed command line
    assert site.snapshot() == before
