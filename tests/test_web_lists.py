"""The lists: per type and "My items" with sort, filters and pages; learner search; CSV export."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest

from engine.config import Settings
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER, TEST_DEFINITIONS
from webui import create_app

EXPORT_DEFINITIONS = Path(__file__).resolve().parent / "definitions_exports"
PASSWORD = "list-password-1"


@pytest.fixture(autouse=True)
def quick_hashing(monkeypatch):
    """Cheap argon2 parameters: these tests sign in a lot, and password strength is not what they test."""
    from argon2 import PasswordHasher

    monkeypatch.setattr("engine.services.users._hasher", PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1))


@pytest.fixture
def app(tmp_path, db_url):
    settings = Settings(
        instance_path=tmp_path,
        database_url=db_url,
        definitions_path=[TEST_DEFINITIONS, EXPORT_DEFINITIONS],
        secret_key="test-secret",
    )
    app = create_app({"TESTING": True, "TRACKER_SETTINGS": settings, "ITEMS_PER_PAGE": 2})
    yield app
    runtime = app.extensions["tracker"]
    if "engine" in runtime.__dict__:  # close the pool, so the next test can empty the database
        runtime.engine.dispose()


@pytest.fixture
def data(app):
    """Learners, concerns and bursaries, and people with different roles.

    Concerns (reported_on, category, severity, assignee, status), in creation order:
    c1 2025-09-03 online/low clara new; c2 2025-09-01 bullying/high clara new;
    c3 2025-09-05 neglect/low cass new; c4 2025-09-02 online/low nobody new;
    c5 2025-09-04 other/low dora investigating.
    """
    rt = app.extensions["tracker"]
    with rt.session() as session:
        users = rt.users(session)
        for name, roles in {
            "ada": ["admin"],
            "clara": ["tracker_creator"],
            "fin": ["finance"],
            "exp": ["exporter"],
            "cass": ["caseworker"],
            "dora": ["dsl"],
            "pay": ["payroll"],
            "mona": ["manager"],
        }.items():
            users.create(name, roles, password=PASSWORD)
        session.commit()
        service = ItemService(session, Actor.system(), rt.registry)
        learners = [
            service.create("learner", {**LEARNER, "given_name": given, "family_name": family, "uln": uln}).id
            for given, family, uln in [
                ("Ann", "Smith", "1000000043"),
                ("Ben", "Smith", "1000000027"),
                ("Cara", "Patel", "1000000035"),
            ]
        ]
        concerns = {}
        for key, day, category, severity, assignee, subject in [
            ("c1", "03", "online", "low", "clara", 0),
            ("c2", "01", "bullying", "high", "clara", 0),
            ("c3", "05", "neglect", "low", "cass", 1),
            ("c4", "02", "online", "low", None, 1),
            ("c5", "04", "other", "low", "dora", 2),
        ]:
            concern = service.create(
                "concern",
                {
                    "category": category,
                    "severity": severity,
                    "reported_on": f"2025-09-{day}",
                    "dsl_informed": True,
                    "cost": 120,
                },
                subject_id=learners[subject],
                assignee=assignee,
            )
            concerns[key] = concern.id
        service.transition(concerns["c5"], "investigating")
        service.assign(concerns["c5"], "dora")
        bursaries = {}
        for key, purpose, amount, note, assignee in [
            ("b1", "travel", 250.5, "=SUM(A1:A9)", "clara"),
            ("b2", "kit", 80, "-2+3", None),
            ("b3", "travel", 12, "@cmd", None),
            ("b4", "kit", 40, "+44 call", None),
            ("b5", "travel", 5, "\tTabbed", None),
        ]:
            bursary = service.create(
                "bursary",
                {"purpose": purpose, "amount": amount, "note": note, "paid_on": "2025-10-01", "approved": True},
                assignee=assignee,
            )
            bursaries[key] = bursary.id
        return {"learners": learners, "concerns": concerns, "bursaries": bursaries}


def login(app, username: str):
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    response = client.post("/login", data={"username": username, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 302, response.get_data(as_text=True)
    return client


def listed(html: str) -> list[int]:
    """Item ids in the order the list's table shows them."""
    body = html.split("<tbody>", 1)[1].split("</tbody>", 1)[0] if "<tbody>" in html else ""
    return [int(n) for n in re.findall(r'<a href="/items/(\d+)">', body)]


def download(client, url: str):
    """GET a CSV export, read it whole and close it, as a WSGI server does."""
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def rows_of(response) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(response.get_data().decode("utf-8-sig"))))


# -- sort -----------------------------------------------------------------------------------------


def test_sort_each_way_with_aria_sort(app, data):
    c = data["concerns"]
    client = login(app, "ada")
    up = client.get("/types/concern?sort=reported_on").get_data(as_text=True)
    assert listed(up) == [c["c2"], c["c4"]]
    assert re.search(r'<th scope="col" aria-sort="ascending">\s*<a href="/types/concern\?sort=-reported_on"', up)
    down = client.get("/types/concern?sort=-reported_on").get_data(as_text=True)
    assert listed(down) == [c["c3"], c["c5"]]
    assert 'aria-sort="descending"' in down and 'href="/types/concern?sort=reported_on"' in down
    by_title = client.get("/types/concern?sort=title").get_data(as_text=True)
    assert listed(by_title) == [c["c2"], c["c3"]]  # "Bullying concern ...", "Neglect concern ..."
    # the default is newest first, shown on the # column
    default = client.get("/types/concern").get_data(as_text=True)
    assert listed(default) == [c["c5"], c["c4"]]
    assert re.search(r'aria-sort="descending">\s*<a href="/types/concern\?sort=id"', default)
    oldest = client.get("/types/concern?sort=id").get_data(as_text=True)
    assert listed(oldest) == [c["c1"], c["c2"]]
    by_due = client.get("/types/concern?sort=-due_date").get_data(as_text=True)
    assert listed(by_due) == [c["c3"], c["c5"]]


def test_bad_sort_page_status_and_assignee_are_clear_4xx(app, data):
    client = login(app, "ada")
    bad_sort = client.get("/types/concern?sort=cost")
    assert bad_sort.status_code == 422
    text = bad_sort.get_data(as_text=True)
    assert "cannot be sorted by" in text and "reported_on" in text
    for page in ("abc", "0", "-1", "1.5", "²"):
        response = client.get(f"/types/concern?page={page}")
        assert response.status_code == 422, page
        assert "is not a page number" in response.get_data(as_text=True)
    past = client.get("/types/concern?page=4")
    assert past.status_code == 404
    assert "There is no page 4 of this list: this list has 3 pages" in past.get_data(as_text=True)
    assert client.get("/types/concern?page=99999999999999999999999").status_code == 404
    status = client.get("/types/concern?status=bogus")
    assert status.status_code == 422
    assert "bogus&#39; is not a status of these items" in status.get_data(as_text=True)
    assignee = client.get("/types/concern?assignee=ghost")
    assert assignee.status_code == 422
    assert "There is no user" in assignee.get_data(as_text=True)
    assert client.get("/types/nope").status_code == 404
    assert client.get("/my?sort=category").status_code == 422  # list columns need one type
    assert client.get("/my?page=x").status_code == 422


# -- filters and pages ----------------------------------------------------------------------------


def test_filters_combined(app, data):
    c = data["concerns"]
    client = login(app, "ada")
    both = client.get("/types/concern?status=new&assignee=clara&sort=id").get_data(as_text=True)
    assert listed(both) == [c["c1"], c["c2"]]
    assert "2 items, page 1 of 1" in both
    assert re.search(r'value="new" checked', both) and re.search(r'<option value="clara" selected', both)
    text = client.get("/types/concern?assignee=clara&q=bullying").get_data(as_text=True)
    assert listed(text) == [c["c2"]]
    nobody = client.get("/types/concern?assignee=none").get_data(as_text=True)
    assert listed(nobody) == [c["c4"]]
    states = client.get("/types/concern?status=investigating&status=closed").get_data(as_text=True)
    assert listed(states) == [c["c5"]]
    none = client.get("/types/concern?status=closed&q=online").get_data(as_text=True)
    assert "No Safeguarding concern items match these filters" in none
    assert 'href="/types/concern">Clear the filters' in none
    me = login(app, "clara").get("/types/concern?assignee=me&sort=-id").get_data(as_text=True)
    assert listed(me) == [c["c2"], c["c1"]]


def test_pages_keep_filters_and_sort(app, data):
    c = data["concerns"]
    client = login(app, "ada")
    first = client.get("/types/concern?status=new&sort=reported_on").get_data(as_text=True)
    assert listed(first) == [c["c2"], c["c4"]]
    assert "4 items, page 1 of 2" in first
    next_link = re.search(r'<a rel="next" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    assert next_link == "/types/concern?status=new&sort=reported_on&page=2"
    second = client.get(next_link).get_data(as_text=True)
    assert listed(second) == [c["c1"], c["c3"]]
    prev_link = re.search(r'<a rel="prev" href="([^"]+)"', second).group(1).replace("&amp;", "&")
    assert prev_link == "/types/concern?status=new&sort=reported_on"
    assert 'aria-current="page" href="/types/concern?status=new&amp;sort=reported_on&amp;page=2"' in second
    # sorting from a later page starts again at page 1 and keeps the filters
    assert 'href="/types/concern?status=new&amp;sort=-reported_on"' in second
    assert client.get("/types/concern?status=new&sort=reported_on&page=3").status_code == 404
    # the filter form keeps the sort in a hidden field, so filtering does not lose it
    assert '<input type="hidden" name="sort" value="reported_on">' in first


def test_home_page_state_counts_link_to_filtered_lists(app, data):
    client = login(app, "ada")
    home = client.get("/").get_data(as_text=True)
    assert 'href="/types/concern?status=new"' in home and "New: 4" in home
    assert 'href="/types/concern?status=investigating"' in home and "Investigating: 1" in home
    filtered = client.get("/types/concern?status=investigating").get_data(as_text=True)
    assert listed(filtered) == [data["concerns"]["c5"]]


# -- who sees what --------------------------------------------------------------------------------


def test_finance_column_hidden_without_finance_view(app, data):
    clara = login(app, "clara").get("/types/bursary?sort=id").get_data(as_text=True)
    assert "Purpose" in clara and "Travel costs" in clara  # enum values by their label
    assert "Amount paid" not in clara and "250.5" not in clara
    fin = login(app, "fin").get("/types/bursary?sort=id").get_data(as_text=True)
    assert "Amount paid" in fin and "250.5" in fin
    # nor sorted by, which would give the amounts away; for finance it sorts as a number
    hidden_sort = login(app, "clara").get("/types/bursary?sort=amount")
    assert hidden_sort.status_code == 422 and "cannot be sorted by" in hidden_sort.get_data(as_text=True)
    b = data["bursaries"]
    assert listed(login(app, "fin").get("/types/bursary?sort=amount").get_data(as_text=True)) == [b["b5"], b["b3"]]
    assert listed(login(app, "fin").get("/types/bursary?sort=-amount").get_data(as_text=True)) == [b["b1"], b["b2"]]
    my = login(app, "clara").get("/my").get_data(as_text=True)
    assert "250.5" not in my and "Travel costs" in my


def test_own_scope_user_sees_only_own_items(app, data):
    c = data["concerns"]
    client = login(app, "cass")
    page = client.get("/types/concern").get_data(as_text=True)
    assert listed(page) == [c["c3"]]
    assert "1 item, page 1 of 1" in page
    home = client.get("/").get_data(as_text=True)
    assert "New: 1" in home
    assert listed(client.get("/types/concern?assignee=clara").get_data(as_text=True)) == []


def test_empty_states_and_create_link(app, data):
    clara = login(app, "clara").get("/types/job").get_data(as_text=True)
    assert "There are no Job items yet." in clara
    assert 'href="/items/new?type=job">Create the first Job' in clara
    assert "Export CSV" not in clara
    mona = login(app, "mona").get("/types/job").get_data(as_text=True)
    assert "There are no Job items yet." in mona and "/items/new?type=job" not in mona
    cass = login(app, "cass").get("/types/job").get_data(as_text=True)
    assert "You have no Job items yet: you see only those assigned to you or created by you." in cass
    scoped = login(app, "cass")
    scoped_view = scoped.get("/types/concern?assignee=none").get_data(as_text=True)
    assert "match these filters" in scoped_view


def test_type_list_refused_without_view(app, data):
    response = login(app, "pay").get("/types/concern")
    assert response.status_code == 403
    assert "may not view Safeguarding concern items" in response.get_data(as_text=True)


# -- My items -------------------------------------------------------------------------------------


def test_my_items_across_types(app, data):
    c, b = data["concerns"], data["bursaries"]
    client = login(app, "clara")
    page = client.get("/my?sort=id").get_data(as_text=True)
    assert listed(page) == [c["c1"], c["c2"]]
    assert "3 items, page 1 of 2" in page
    assert "<td>Safeguarding concern</td>" in page
    assert "Reported on" in page and "01 Sep 2025" in page  # details and the due date
    second = client.get("/my?sort=id&page=2").get_data(as_text=True)
    assert listed(second) == [b["b1"]] and "<td>Bursary payment</td>" in second
    filtered = client.get("/my?status=active").get_data(as_text=True)
    assert listed(filtered) == [b["b1"]]
    assert 'value="active" checked' in filtered
    text = client.get("/my?q=online").get_data(as_text=True)
    assert listed(text) == [c["c1"]]
    nothing = client.get("/my?status=closed").get_data(as_text=True)
    assert "None of your items match these filters" in nothing
    # the status filter offers the states of the types clara has items in, and keeps a chosen one
    assert 'value="investigating"' in page and 'value="active"' in page and 'value="on_programme"' not in page
    other = client.get("/my?status=on_programme")
    assert other.status_code == 200 and 'value="on_programme" checked' in other.get_data(as_text=True)
    assert client.get("/my?status=bogus").status_code == 422
    assert 'aria-sort="ascending"' in client.get("/my?sort=title").get_data(as_text=True)


def test_my_items_empty_state(app, data):
    page = login(app, "fin").get("/my").get_data(as_text=True)
    assert "Nothing is assigned to you at the moment." in page
    assert "Export CSV" not in page


# -- search ---------------------------------------------------------------------------------------


def test_search_learners_by_uln_and_name(app, data):
    learners = data["learners"]
    client = login(app, "ada")
    home = client.get("/").get_data(as_text=True)
    assert 'action="/search"' in home and 'id="header-search-q"' in home
    by_uln = client.get("/search?q=1000000027").get_data(as_text=True)
    assert f'href="/items/{learners[1]}">Ben Smith</a>' in by_uln
    assert "1000000027" in by_uln and "2001-02-03" in by_uln
    assert "1 learner match" in by_uln
    assert re.search(r'<td class="num">2</td>', by_uln)  # c3 and c4 are about Ben
    by_name = client.get("/search?q=smith").get_data(as_text=True)
    assert "2 learners match" in by_name and "Ann Smith" in by_name and "Cara Patel" not in by_name
    full = client.get("/search?q=Cara+Patel").get_data(as_text=True)
    assert f'href="/items/{learners[2]}"' in full
    # the count is of the items the user may see: cass sees Ben (assigned to her) and c3, not c4
    rt = app.extensions["tracker"]
    with rt.session() as session:
        ItemService(session, Actor.system(), rt.registry).assign(learners[1], "cass")
    cass = login(app, "cass").get("/search?q=1000000027").get_data(as_text=True)
    assert re.search(r'<td class="num">1</td>', cass)


def test_search_empty_states(app, data):
    client = login(app, "ada")
    empty = client.get("/search").get_data(as_text=True)
    assert "Type a learner's name or ULN" in empty
    assert "<table" not in empty
    none = client.get("/search?q=zzz-nobody").get_data(as_text=True)
    assert "No learner matches “zzz-nobody”" in none
    assert "given name, family name or ULN" in none
    assert client.get("/search?q=" + "x" * 201).status_code == 422


def test_search_needs_learner_view(app, data):
    client = login(app, "pay")
    assert 'id="header-search-q"' not in client.get("/my").get_data(as_text=True)
    assert client.get("/search?q=smith").status_code == 403


# -- CSV export -----------------------------------------------------------------------------------


def test_export_button_only_for_exports_bulk(app, data):
    assert "Export CSV" in login(app, "fin").get("/types/concern").get_data(as_text=True)
    clara = login(app, "clara")
    assert "Export CSV" not in clara.get("/types/concern").get_data(as_text=True)
    assert "Export CSV" not in clara.get("/my").get_data(as_text=True)
    refused = download(clara, "/types/concern/export.csv")
    assert refused.status_code == 403
    assert "exports.bulk" in refused.get_data(as_text=True)
    assert download(clara, "/my/export.csv").status_code == 403


def test_export_keeps_filters_and_sort_across_all_pages(app, data):
    c = data["concerns"]
    client = login(app, "fin")
    page = client.get("/types/concern?status=new&sort=-reported_on").get_data(as_text=True)
    link = re.search(r'<a class="button secondary" href="([^"]+)"', page).group(1).replace("&amp;", "&")
    assert link == "/types/concern/export.csv?status=new&sort=-reported_on"
    response = download(client, link)
    assert response.status_code == 200
    assert response.mimetype == "text/csv"
    assert re.fullmatch(
        r'attachment; filename="concern-\d{4}-\d{2}-\d{2}\.csv"', response.headers["Content-Disposition"]
    )
    rows = rows_of(response)
    assert [int(r["ID"]) for r in rows] == [c["c3"], c["c1"], c["c4"], c["c2"]]  # every page, not just 2
    first = rows[0]
    assert first["Status"] == "New" and first["Assignee"] == "cass" and first["Due date"] == "2025-09-05"
    assert first["Category"] == "neglect" and first["Severity"] == "Low" and first["Reported on"] == "2025-09-05"
    assert first["Cost to the provider"] == "120"  # finance sees finance fields
    assert first["DSL informed"] == "Yes"
    header = next(csv.reader(io.StringIO(response.get_data().decode("utf-8-sig"))))
    assert header[:8] == ["ID", "Title", "Status", "Assignee", "Due date", "Category", "Severity", "Reported on"]
    bad = download(client, "/types/concern/export.csv?sort=nope")
    assert bad.status_code == 422


def test_export_escapes_formulas_and_hides_finance(app, data):
    b = data["bursaries"]
    rows = {int(r["ID"]): r for r in rows_of(download(login(app, "exp"), "/types/bursary/export.csv"))}
    assert set(rows) == set(b.values())
    assert rows[b["b1"]]["Note"] == "'=SUM(A1:A9)"
    assert rows[b["b2"]]["Note"] == "'-2+3"
    assert rows[b["b3"]]["Note"] == "'@cmd"
    assert rows[b["b4"]]["Note"] == "'+44 call"
    assert rows[b["b5"]]["Note"] == "'\tTabbed"
    assert rows[b["b1"]]["Title"] == "Travel bursary =SUM(A1:A9)"  # starts with a letter: unchanged
    assert rows[b["b1"]]["Purpose"] == "Travel costs"
    assert "Amount paid" not in rows[b["b1"]]
    fin = {int(r["ID"]): r for r in rows_of(download(login(app, "fin"), "/types/bursary/export.csv"))}
    assert fin[b["b1"]]["Amount paid"] == "250.5"


def test_export_my_items(app, data):
    c = data["concerns"]
    rt = app.extensions["tracker"]
    with rt.session() as session:
        ItemService(session, Actor.system(), rt.registry).assign(c["c1"], "fin")
    client = login(app, "fin")
    page = client.get("/my?status=new").get_data(as_text=True)
    assert 'href="/my/export.csv?status=new"' in page
    response = download(client, "/my/export.csv")
    assert response.status_code == 200
    assert 'filename="my-items-' in response.headers["Content-Disposition"]
    rows = rows_of(response)
    assert [int(r["ID"]) for r in rows] == [c["c1"]]
    assert rows[0]["Type"] == "Safeguarding concern" and rows[0]["Category"] == "online"
    assert download(login(app, "exp"), "/my/export.csv").get_data().decode("utf-8-sig").strip() == (
        "ID,Type,Title,Status,Assignee,Due date"
    )


def test_streamed_export_gives_its_database_connection_back(app, data):
    rt = app.extensions["tracker"]
    client = login(app, "fin")
    response = client.get("/types/concern/export.csv")  # read, not closed
    assert len(rows_of(response)) == 5
    assert rt.engine.pool.checkedout() == 0
