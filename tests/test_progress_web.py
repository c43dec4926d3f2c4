"""Progress on the item page and in type lists, on both databases: bars for the qualification
and each unit, ticking several criteria with one evidence reference and date, unticking, and
refusals shown beside the fields with the ticks kept and nothing recorded."""

from __future__ import annotations

import re

import pytest

from engine.models import Item
from tests.documents_helpers import *  # noqa: F403 - fixtures: world, app, site
from tests.documents_helpers import client_for
from tests.webhelpers import csrf


def panel(html: str) -> str:
    return html.split('id="progress"', 1)[1].split("</section>", 1)[0]


def record(client, item_id: int, **form):
    token = csrf(client, f"/items/{item_id}")
    return client.post(f"/items/{item_id}/progress", data={"csrf_token": token, **form})


def test_the_panel_shows_bars_and_what_each_role_may_do(app, site):
    tess = panel(client_for(app, "tess").get(f"/items/{site.portfolio}").get_data(as_text=True))
    assert "Mini award" in tess and "600/0001/1" in tess and "0% complete" in tess
    assert '<progress class="bar" value="0.0" max="100"' in tess
    assert 'id="unit-A"' in tess and 'id="unit-B"' in tess
    assert tess.count('type="checkbox" name="tick"') == 5
    # Enter in a field records the ticks: the hidden default button comes before any Untick button
    assert tess.index('class="default-submit"') < tess.index('id="record-A"')
    mona = panel(client_for(app, "mona").get(f"/items/{site.portfolio}").get_data(as_text=True))
    assert "Not met yet: " in mona and 'name="tick"' not in mona and "<form" not in mona


def test_ticking_several_criteria_then_unticking_one(app, site):
    tess = client_for(app, "tess")
    response = record(
        tess, site.portfolio, unit="A", tick=["A/A1/a", "A/A1/b"], evidence="Observation 12/03", date="2025-03-12"
    )
    assert response.status_code == 303
    assert response.headers["Location"].endswith(f"/items/{site.portfolio}#unit-A")
    html = tess.get(response.headers["Location"]).get_data(as_text=True)
    assert "Ticked 2 criteria. Portfolio Brickwork is 38% complete." in html
    shown = panel(html)
    assert "37.5% complete" not in shown and "38% complete" in shown  # 37.5 of the award, rounded
    assert "Evidence: Observation 12/03 · met on 12 Mar 2025 · ticked by tess" in shown
    assert "ticked A/A1/a Criterion a (evidence Observation 12/03, 2025-03-12)" in html  # the history
    response = record(tess, site.portfolio, unit="A", untick="A/A1/b", evidence="", date="")
    assert response.status_code == 303
    html = tess.get(f"/items/{site.portfolio}").get_data(as_text=True)
    assert "Unticked A/A1/b." in html and "unticked A/A1/b Criterion b" in html
    with site.rt.session() as session:
        assert session.get(Item, site.portfolio).progress == 9.4  # a: 1/4 of A1, half of A, 3/4 of the award


@pytest.mark.parametrize(
    ("form", "status", "words"),
    [
        ({"tick": [], "evidence": "Obs", "date": "2025-03-12"}, 422, "Tick at least one criterion"),
        ({"tick": ["A/A1/a"], "evidence": " ", "date": "2025-03-12"}, 422, "The evidence reference is missing"),
        ({"tick": ["A/A1/a", "A/A2/c"], "evidence": "Obs", "date": "2999-01-01"}, 422, "2999-01-01 is in the future"),
        ({"tick": ["A/A1/a"], "evidence": "Obs", "date": "12/03/2025"}, 422, "is not a date"),
        ({"tick": ["A/Z/z"], "evidence": "Obs", "date": "2025-03-12"}, 422, "is not a criterion of Mini award"),
        ({"untick": "A/A1/a"}, 422, "A/A1/a is not ticked"),
    ],
)
def test_refusals_show_beside_the_fields_and_keep_the_ticks(app, site, form, status, words):
    tess = client_for(app, "tess")
    before = site.snapshot()
    response = record(tess, site.portfolio, unit="A", **form)
    assert response.status_code == status
    html = panel(response.get_data(as_text=True))
    assert words in html
    assert '<details class="unit" id="unit-A" open>' in html and "Nothing was recorded" in html
    for path in form.get("tick", []):
        if path.startswith("A/A"):
            assert f'value="{path}" checked' in html  # what was ticked stays ticked
    summary = html.split('id="unit-A-problems"', 1)[1].split("</div>", 1)[0]
    assert summary.count(words) == 1  # a problem shared by several ticks is said once
    assert site.snapshot() == before


def test_ticking_without_progress_edit_or_on_anothers_item_is_403(app, site):
    before = site.snapshot()
    refused = record(
        client_for(app, "cleo"), site.portfolio, unit="A", tick=["A/A1/a"], evidence="Obs", date="2025-01-01"
    )
    assert refused.status_code == 403
    assert "cleo may not record progress on Portfolio items" in refused.get_data(as_text=True)
    with site.rt.session() as session:
        other = site.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=site.learner).id
    before = site.snapshot()
    tess = client_for(app, "tess")
    response = record(tess, other, unit="A", tick=["A/A1/a"], evidence="Obs", date="2025-01-01")
    assert response.status_code == 403 and "assigned to or created by them" in response.get_data(as_text=True)
    assert site.snapshot() == before


def test_the_type_list_shows_and_sorts_by_progress(app, site):
    with site.rt.session() as session:
        second = site.items(session, "carl").create("portfolio", {"title": "Tiling"}, subject_id=site.learner).id
        site.progress(session, "quinn").tick(site.portfolio, "b", "Obs", "2025-01-01")
    html = client_for(app, "quinn").get("/types/portfolio", query_string={"sort": "-progress"}).get_data(as_text=True)
    assert '<th scope="col" aria-sort="descending">' in html and "Progress" in html
    assert 'aria-label="28% complete"' in html
    body = html.split("<tbody>", 1)[1]
    ids = list(dict.fromkeys(int(n) for n in re.findall(r"<a href=\"/items/(\d+)\">", body)))
    assert ids == [site.portfolio, second]
    learners = client_for(app, "quinn").get("/types/learner").get_data(as_text=True)
    assert ">Progress<" not in learners  # only types that track progress have the column
