"""``tracker progress`` end to end in a subprocess, on both databases: show, tick, untick, the
structures, recompute; each refusal prints why on stderr, exits 1 and changes nothing."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import update

from engine.models import Item
from tests.documents_helpers import *  # noqa: F403 - fixtures
from tests.documents_helpers import DOCS_DEFINITIONS, World, build_world, make_settings, runtime


@pytest.fixture
def site(tmp_path, db_url, run, documents_registry) -> World:
    run.env["TRACKER_DEFINITIONS_PATH"] = str(DOCS_DEFINITIONS)
    return build_world(runtime(make_settings(tmp_path / "instance", db_url), documents_registry))


def test_show_tick_untick_structures_and_recompute(run, site):
    item = str(site.portfolio)
    ticked = run("progress", "tick", item, "b", "--evidence", "Observation 3", "--date", "2025-03-14", "--as", "tess")
    assert "Ticked b. #2 Portfolio Brickwork: 28.1% complete (1 of 5 criteria)." in ticked.stdout
    shown = run("progress", "show", item).stdout
    assert "[x] A/A1/b  Criterion b  (Observation 3, 2025-03-14)" in shown and "[ ] B/B1/d" in shown
    tree = json.loads(run("progress", "show", item, "--json").stdout)
    assert tree["percent"] == 28.1 and tree["qualification"]["key"] == "mini_award"
    assert "Unticked A/A1/b." in run("progress", "untick", item, "A/A1/b", "--as", "tess").stdout
    structures = run("progress", "structures").stdout
    for words in ("mini_award", "600/0001/1", "team_leader_st0384", "ST0384", "customer_service_l2"):
        assert words in structures
    with site.rt.session() as session:
        session.execute(update(Item).where(Item.id == site.portfolio).values(progress=50.0))
        session.commit()
    assert "1 item(s) changed." in run("progress", "recompute", "--type", "portfolio").stdout
    history = run("items", "history", item).stdout
    assert "ticked A/A1/b Criterion b (evidence Observation 3, 2025-03-14) - now 28.1% complete" in history
    assert "unticked A/A1/b Criterion b - now 0% complete" in history


def test_refusals_exit_1_with_the_reason_and_change_nothing(run, site):
    item = str(site.portfolio)
    before = site.snapshot()
    cases = [
        (("tick", item, "zz", "--evidence", "x", "--date", "2025-01-01"), "'zz' is not a criterion of Mini award"),
        (("tick", item, "a", "--evidence", "x", "--date", "2999-01-01"), "2999-01-01 is in the future"),
        (
            ("tick", item, "a", "--evidence", "x", "--date", "2025-01-01", "--as", "cleo"),
            "cleo may not record progress",
        ),
        (("untick", item, "a"), "A/A1/a is not ticked"),
        (("show", str(site.learner)), "Learner items do not track progress"),
        (("recompute", "--type", "nope"), "There is no tracker type 'nope'"),
    ]
    for args, words in cases:
        result = run("progress", *args, ok=False)
        assert result.returncode == 1, (args, result.stdout, result.stderr)
        assert words in result.stderr, (args, result.stderr)
    assert run("progress", "tick", item, "a", ok=False).returncode == 2  # --evidence and --date are needed
    assert site.snapshot() == before
