"""The ILR export on the web: the button on the ILR list, the form, the export's job page listing
who was left out and why, the download; refused without exports.bulk or from an address outside
TRACKER_BULK_EXPORT_ALLOW, which also guards the CSV exports; every bulk download recorded.
(tests/test_background_jobs.py follows the job itself: progress, failures, who may see it.)"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import date
from ipaddress import ip_network

import pytest
import xmlschema
from sqlalchemy import select

from engine.config import Settings
from engine.errors import TrackerError
from engine.models import BulkExport, Event, Item
from engine.permissions import Actor
from engine.services import ItemService
from tests.conftest import LEARNER, ROOT
from tests.ilr_helpers import TODAY, put, record
from tests.job_helpers import finished_page
from tests.webhelpers import cheap_hashing, csrf, make_app, sign_in  # noqa: F401 - cheap_hashing is autouse

XSD = ROOT / "tracker_types" / "ilr" / "schemafile25.xsd"
OFFICE = "10.20.30.40"
HOME = "203.0.113.9"


@pytest.fixture
def apps(tmp_path, db_url):
    """Make apps on the test database; their connection pools are closed at teardown."""
    made = []

    def make(**settings):
        made.append(make_app(tmp_path, db_url, settings=settings))
        return made[-1]

    yield make
    for app in made:
        if "engine" in app.extensions["tracker"].__dict__:
            app.extensions["tracker"].engine.dispose()


@pytest.fixture
def setup(apps):
    """An app allowing bulk downloads from 10.0.0.0/8 only; users; three ILR records, one of
    which (LR0003) ESFA's schema refuses; one concern for the CSV export."""

    def make(**settings):
        app = apps(bulk_export_allow=(ip_network("10.0.0.0/8"),), **settings)
        rt = app.extensions["tracker"]
        with rt.session() as session:
            users = rt.users(session)
            for name, roles in {"fran": ["finance"], "clara": ["tracker_creator"]}.items():
                users.create(name, roles, password="sign-in-password-1")
            service = ItemService(session, Actor.system(), rt.registry, today=lambda: date.fromisoformat(TODAY))
            ids = {}
            for ref, uln, changes in [
                ("LR0001", "2442725095", []),
                ("LR0002", "1000000027", []),
                ("LR0003", "1000000035", [put("email", "zoë@example.co.uk")]),
            ]:
                learner = service.create("learner", {**LEARNER, "uln": uln, "family_name": f"Learner {ref}"})
                data = record(put("learn_ref_number", ref), put("uln", uln), *changes)
                ids[ref] = service.create("ilr", data, subject_id=learner.id).id
            service.create("concern", {"category": "online", "reported_on": "2025-09-03"}, subject_id=learner.id)
        app.ids = ids
        return app

    return make


def client_for(app, username: str, address: str = OFFICE):
    client = app.test_client()
    client.environ_base["REMOTE_ADDR"] = address
    sign_in(client, username)
    return client


def post_export(client, **form):
    token = csrf(client, "/ilr/export")
    return client.post("/ilr/export", data={"csrf_token": token, "ukprn": "10012345", "year": "2526", **form})


def audit(app) -> list[BulkExport]:
    with app.extensions["tracker"].session() as session:
        return list(session.scalars(select(BulkExport).order_by(BulkExport.id)))


def test_the_ilr_list_offers_the_export_to_exports_bulk_only(setup):
    app = setup()
    page = client_for(app, "fran").get("/types/ilr?status=new&q=LR").get_data(as_text=True)
    assert '<a class="button secondary" href="/ilr/export?status=new&amp;q=LR">Export ILR XML</a>' in page
    assert "Export ILR XML" not in client_for(app, "clara").get("/types/ilr").get_data(as_text=True)
    assert "Export ILR XML" not in client_for(app, "fran").get("/types/concern").get_data(as_text=True)


def test_export_makes_the_file_and_lists_who_was_left_out(setup):
    app = setup(ukprn="10012345")
    client = client_for(app, "fran")
    form = client.get("/ilr/export?status=new")
    page = form.get_data(as_text=True)
    assert form.status_code == 200
    assert re.search(r"<strong>3</strong> ILR records match\s+in New", page)
    assert 'name="ukprn"' in page and 'value="10012345"' in page  # TRACKER_UKPRN is the default
    assert "No ILR file has been made yet." in page

    response = post_export(client, status="new")
    assert re.fullmatch(r"/ilr/jobs/\d+", response.headers["Location"])
    _url, page = finished_page(client, response)
    name = re.search(r"ILR-10012345-2526-\d{8}-\d{6}-01\.xml", page).group(0)
    assert f"<strong>{name}</strong> holds 2 learners" in page
    assert "1 learner left out of the file" in page
    item = app.ids["LR0003"]
    assert f'<a href="/items/{item}">LR0003</a>' in page
    assert f'<a href="/items/{item}#data-email">Email</a> <code class="muted">/email</code>' in page
    assert "Email is refused by ESFA&#39;s schema: has characters the ILR does not allow" in page
    assert "Correct Email on the learner&#39;s ILR record, then export again." in page

    download = client.get(f"/ilr/files/{name}")
    assert download.status_code == 200
    assert download.headers["Content-Disposition"] == f"attachment; filename={name}"
    assert download.mimetype == "application/xml"
    root = ET.fromstring(download.data)
    xmlschema.XMLSchema(str(XSD)).validate(root)
    refs = [e.text for e in root.iter("{ESFA/ILR/2025-26}LearnRefNumber")]
    assert refs == ["LR0001", "LR0002"]

    rows = audit(app)
    assert [(r.kind, r.outcome, r.item_count, r.filename, r.address) for r in rows] == [
        ("ilr_xml", "done", 2, name, OFFICE),
        ("ilr_download", "done", 0, name, OFFICE),
    ]
    with app.extensions["tracker"].session() as session:
        exported = session.scalars(select(Event.item_id).where(Event.kind == "exported")).all()
    assert sorted(exported) == sorted([app.ids["LR0001"], app.ids["LR0002"]])
    # the form lists the file, with its download link
    page = client.get("/ilr/export").get_data(as_text=True)
    assert f'<a href="/ilr/files/{name}">{name}</a>' in page


def test_strict_export_and_bad_input_write_nothing(setup, tmp_path):
    app = setup()
    client = client_for(app, "fran")
    _url, page = finished_page(client, post_export(client, strict="y"))
    assert "No ILR file written" in page
    assert "1 learner failed" in page and "LR0003" in page
    bad = post_export(client, ukprn="123")
    assert bad.status_code == 422
    assert "&#39;123&#39; is not a UKPRN. Enter your 8-digit UK provider reference number" in bad.get_data(as_text=True)
    none = post_export(client, q="nobody")
    assert none.status_code == 422 and "There is no ILR record to export" in none.get_data(as_text=True)
    wrong_state = client.get("/ilr/export?status=limbo")
    assert wrong_state.status_code == 422 and "&#39;limbo&#39; is not a state of ILR records" in wrong_state.get_data(
        as_text=True
    )
    missing = client.get("/ilr/files/ILR-10012345-2526-20260316-093005-01.xml")
    assert missing.status_code == 404 and "There is no ILR file" in missing.get_data(as_text=True)
    assert client.get("/ilr/files/..%2Fsecret_key").status_code == 404
    exports = tmp_path / "exports" / "ilr"
    assert not exports.exists() or list(exports.iterdir()) == []


def test_without_exports_bulk_the_export_is_refused(setup):
    app = setup()
    client = client_for(app, "clara")
    assert client.get("/ilr/export").status_code == 403
    refused = client.post(
        "/ilr/export", data={"csrf_token": csrf(client, "/types/ilr"), "ukprn": "10012345", "year": "2526"}
    )
    assert refused.status_code == 403 and "exports.bulk" in refused.get_data(as_text=True)
    assert client.get("/ilr/files/ILR-10012345-2526-20260316-093005-01.xml").status_code == 403
    assert audit(app) == []


def test_an_address_outside_the_allow_list_is_refused_with_a_clear_message(setup):
    app = setup()
    office = client_for(app, "fran")
    name = re.search(r"ILR-\d{8}-2526-\d{8}-\d{6}-01\.xml", finished_page(office, post_export(office))[1]).group(0)
    home = client_for(app, "fran", HOME)
    for response in (
        home.get("/ilr/export"),
        home.post("/ilr/export", data={"csrf_token": csrf(home, "/types/ilr"), "ukprn": "10012345", "year": "2526"}),
        home.get(f"/ilr/files/{name}"),
    ):
        page = response.get_data(as_text=True)
        assert response.status_code == 403
        assert f"Bulk downloads are not allowed from your address ({HOME})." in page
        assert "TRACKER_BULK_EXPORT_ALLOW" in page
    refused = [(r.kind, r.address) for r in audit(app) if r.outcome == "refused"]
    assert refused == [("ilr_xml", HOME), ("ilr_download", HOME)]


def test_csv_exports_follow_the_allow_list_and_are_recorded(setup):
    app = setup()
    fran_home = client_for(app, "fran", HOME)
    for url in ("/types/concern/export.csv", "/my/export.csv"):
        response = fran_home.get(url)
        assert response.status_code == 403
        assert f"Bulk downloads are not allowed from your address ({HOME})." in response.get_data(as_text=True)
    fran = client_for(app, "fran")
    ok = fran.get("/types/concern/export.csv?status=new")
    assert ok.status_code == 200 and ok.mimetype == "text/csv"
    rows = [(r.kind, r.type_key, r.outcome, r.address, r.item_count, r.filters) for r in audit(app)]
    assert rows == [
        ("csv", "concern", "refused", HOME, 0, {}),
        ("csv", None, "refused", HOME, 0, {"assignee": "me"}),
        ("csv", "concern", "done", OFFICE, 1, {"status": ["new"]}),
    ]


def test_any_address_may_download_when_no_allow_list_is_set(apps):
    app = apps()
    rt = app.extensions["tracker"]
    with rt.session() as session:
        rt.users(session).create("fran", ["finance"], password="sign-in-password-1")
    response = client_for(app, "fran", HOME).get("/types/concern/export.csv")
    assert response.status_code == 200


def test_a_bad_allow_list_stops_the_start_with_a_clear_message(run):
    with pytest.raises(TrackerError, match="TRACKER_BULK_EXPORT_ALLOW has '10.0.0.0/33'"):
        Settings.from_env({"TRACKER_BULK_EXPORT_ALLOW": "10.0.0.0/8, 10.0.0.0/33", "TRACKER_SECRET_KEY": "x"})
    assert Settings.from_env({"TRACKER_BULK_EXPORT_ALLOW": " ", "TRACKER_SECRET_KEY": "x"}).bulk_export_allow == ()
    with pytest.raises(TrackerError, match="TRACKER_UKPRN is not a UKPRN: '1234'"):
        Settings.from_env({"TRACKER_UKPRN": "1234", "TRACKER_SECRET_KEY": "x"})
    run.env["TRACKER_BULK_EXPORT_ALLOW"] = "office"
    result = run("status", ok=False)
    assert result.returncode == 1
    assert "Error: TRACKER_BULK_EXPORT_ALLOW has 'office', which is not an address or CIDR range." in result.stderr
    assert "List addresses or ranges separated by commas" in result.stderr


def test_export_result_links_each_problem_to_its_field(setup):
    app = setup()
    with app.extensions["tracker"].session() as session:
        item = session.get(Item, app.ids["LR0002"])
        data = dict(item.data)
        data["learning_deliveries"] = [dict(d) for d in data["learning_deliveries"]]
        data["learning_deliveries"][1]["learn_act_end_date"] = "2025-08-01"  # saved before a rule: now breaks it
        item.data = data
        session.commit()
    client = client_for(app, "fran")
    _url, page = finished_page(client, post_export(client))
    anchor = f"/items/{app.ids['LR0002']}#data-learning_deliveries-1-learn_act_end_date"
    assert f'<a href="{anchor}">Learning deliveries 2 › Actual end date</a>' in page
    assert "LearnActEndDate_01: the actual end date must not be before the learning start date" in page
    assert "2 learners left out of the file" in page


def test_learners_ticked_on_the_list_are_exported_and_no_others(setup):
    app = setup(ukprn="10012345")
    client = client_for(app, "fran")
    first, second = app.ids["LR0001"], app.ids["LR0002"]
    listing = client.get("/types/ilr").get_data(as_text=True)
    assert '<form id="ticked-items" method="get" action="/ilr/export"' in listing
    assert f'<input type="checkbox" name="id" value="{first}" form="ticked-items"' in listing
    # nobody without exports.bulk gets tick boxes or the button
    assert 'form="ticked-items"' not in client_for(app, "clara").get("/types/ilr").get_data(as_text=True)

    form = client.get(f"/ilr/export?ticked=1&id={second}&id={first}&id={second}")
    page = form.get_data(as_text=True)
    assert form.status_code == 200 and re.search(r"<strong>2</strong> learners ticked on the list", page)
    assert f'<input type="hidden" name="id" value="{second}">' in page and "Export 2 records" in page
    response = post_export(client, id=[str(second), str(first)])
    _url, page = finished_page(client, response)
    name = re.search(r"ILR-10012345-2526-\d{8}-\d{6}-01\.xml", page).group(0)
    assert f"<strong>{name}</strong> holds 2 learners" in page
    root = ET.fromstring(client.get(f"/ilr/files/{name}").data)
    assert sorted(e.text for e in root.iter("{ESFA/ILR/2025-26}LearnRefNumber")) == ["LR0001", "LR0002"]
    assert audit(app)[0].filters["ids"] == [second, first]


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ("ticked=1", 422, "No learner was ticked"),
        ("ticked=1&id=abc", 422, "&#39;abc&#39; is not an item number"),
        ("ticked=1&id=999999", 404, ""),
    ],
)
def test_a_bad_tick_is_refused_and_nothing_is_exported(setup, query, status, words):
    app = setup()
    client = client_for(app, "fran")
    response = client.get(f"/ilr/export?{query}")
    assert response.status_code == status and words in response.get_data(as_text=True)
    posted = post_export(client, **dict(pair.split("=") for pair in query.split("&")))
    assert posted.status_code == status
    assert audit(app) == []


def test_a_ticked_item_that_is_not_an_ilr_record_is_refused(setup):
    app = setup()
    client = client_for(app, "fran")
    with app.extensions["tracker"].session() as session:
        concern = session.scalar(select(Item.id).where(Item.type_key == "concern"))
    response = client.get(f"/ilr/export?ticked=1&id={concern}")
    assert response.status_code == 422 and f"Item #{concern} is not an ILR record" in response.get_data(as_text=True)
    assert post_export(client, id=str(concern)).status_code == 422
