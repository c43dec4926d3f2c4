"""The e-portfolio plugin: signed webhooks out through the outbox, progress in through a signed endpoint."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from engine.config import Settings
from engine.errors import NotFound, ValidationFailed
from engine.models import Event, Item, Outbox, PluginState, ProgressTick, utcnow
from engine.permissions import Actor
from engine.plugins import PluginHost
from engine.runtime import Runtime
from plugins import eportfolio
from plugins.eportfolio import (
    EportfolioConfig,
    ProgressUpdate,
    SignatureRefused,
    WebhookFailed,
    apply_progress,
    deliver,
    sign,
    verify,
)
from tests import webhelpers
from tests.conftest import LEARNER, TEST_DEFINITIONS
from tests.fake_apis import EPORTFOLIO_SECRET, FakeEportfolio, running
from tests.webhelpers import cheap_hashing  # noqa: F401 - an autouse fixture

new_app = webhelpers.new_app

NOW = 1_750_000_000  # a fixed "now" for signatures, in seconds since 1970


@pytest.fixture
def receiver():
    yield from running(FakeEportfolio())


def settings_for(tmp_path, db_url: str = "sqlite://", **plugin_env: str) -> Settings:
    env = {f"TRACKER_PLUGIN_EPORTFOLIO_{k.upper()}": v for k, v in plugin_env.items()}
    return Settings(instance_path=tmp_path, database_url=db_url, secret_key="x", plugin_env=env)


# -- signatures ----------------------------------------------------------------------------------


def test_the_signature_is_hmac_sha256_of_timestamp_dot_body():
    import hashlib
    import hmac

    body = b'{"item_id":1}'
    expected = hmac.new(b"s3cret", b"1750000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", NOW, body) == f"sha256={expected}"


def test_verify_accepts_a_fresh_signed_request_and_returns_its_time():
    body = b'{"item_id":1}'
    assert verify("s", body, str(NOW), sign("s", NOW, body), now=NOW + 10, tolerance=300) == NOW


@pytest.mark.parametrize(
    ("timestamp", "signature", "reason"),
    [
        (None, "sha256=00", "needs the X-Tracker-Timestamp and X-Tracker-Signature"),
        (str(NOW), None, "needs the X-Tracker-Timestamp and X-Tracker-Signature"),
        ("yesterday", "sha256=00", "not a number"),
        (str(NOW - 301), "good", "more than 300 seconds"),
        (str(NOW + 301), "good", "more than 300 seconds"),
        (str(NOW), "sha256=" + "0" * 64, "does not match"),
        (str(NOW), "good-for-other-body", "does not match"),
        (str(NOW), "good-for-other-secret", "does not match"),
    ],
)
def test_verify_refuses_what_is_missing_stale_or_forged(timestamp, signature, reason):
    body = b'{"item_id":1}'
    if signature == "good":
        signature = sign("s", int(timestamp), body)
    elif signature == "good-for-other-body":
        signature = sign("s", NOW, b'{"item_id":2}')
    elif signature == "good-for-other-secret":
        signature = sign("other", NOW, body)
    with pytest.raises(SignatureRefused, match=reason):
        verify("s", body, timestamp, signature, now=NOW, tolerance=300)


def test_the_timestamp_cannot_be_moved_without_breaking_the_signature():
    body = b'{"item_id":1}'
    old = sign("s", NOW - 3600, body)
    with pytest.raises(SignatureRefused, match="does not match"):
        verify("s", body, str(NOW), old, now=NOW, tolerance=300)


# -- configuration -------------------------------------------------------------------------------


def test_settings_come_from_tracker_plugin_eportfolio_variables(tmp_path):
    config = EportfolioConfig.from_settings(
        settings_for(
            tmp_path, url="http://e.example/hook", secret="k", types="apprenticeship, traineeship", timeout="2"
        )
    )
    assert config == EportfolioConfig("http://e.example/hook", "k", ("apprenticeship", "traineeship"), 300, 2.0)
    assert config.sends("traineeship") and not config.sends("learner")
    assert not EportfolioConfig(url="http://e.example/hook").sends("apprenticeship")  # no secret, nothing sent


# -- out: delivering one webhook -----------------------------------------------------------------


def test_deliver_posts_the_signed_body_with_its_headers(receiver):
    config = EportfolioConfig(receiver.url + "/hooks/tracker", EPORTFOLIO_SECRET)
    deliver(config, {"id": "7", "event": "item.updated", "item": {"id": 3}}, now=NOW)
    request = receiver.requests[0]
    assert receiver.signature_ok(request)
    assert request.headers["x-tracker-timestamp"] == str(NOW)
    assert request.headers["x-tracker-delivery"] == "7"
    assert request.headers["x-tracker-event"] == "item.updated"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"id": "7", "event": "item.updated", "item": {"id": 3}}


@pytest.mark.parametrize("problem", ["wrong secret", "outage", "silent", "gone"])
def test_deliver_raises_when_the_e_portfolio_does_not_take_it(receiver, problem):
    config = EportfolioConfig(receiver.url + "/hooks/tracker", EPORTFOLIO_SECRET, timeout=0.2)
    if problem == "wrong secret":
        config = EportfolioConfig(receiver.url + "/hooks/tracker", "not-the-secret")
    elif problem == "outage":
        receiver.outage = 503
    elif problem == "silent":
        receiver.hang = True
    else:
        config = EportfolioConfig(receiver.url + "/nowhere", EPORTFOLIO_SECRET)
    with pytest.raises(WebhookFailed):
        deliver(config, {"id": "1", "event": "item.created"})


# -- in: reading a progress request ---------------------------------------------------------------


def test_a_progress_request_maps_onto_the_apprenticeship_fields():
    update = ProgressUpdate.parse(
        b'{"item_id": 4, "progress_percent": 40, "otj_hours_logged": 120.5, "last_activity": "2025-03-01"}'
    )
    assert update == ProgressUpdate(
        4, {"eportfolio_progress": 40, "otj_hours_logged": 120.5, "eportfolio_last_activity": "2025-03-01"}
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b'{"progress_percent": 5}', "item_id must be"),
        (b'{"item_id": "4", "progress_percent": 5}', "item_id must be"),
        (b'{"item_id": true, "progress_percent": 5}', "item_id must be"),
        (b'{"item_id": 4}', "Nothing to update"),
        (b'{"item_id": 4, "progress_percent": 5, "status": "completed"}', "Unknown field(s): status"),
        (b'{"item_id": 4, "criteria": {"K1": true}}', "criteria must be a list"),
        (b'{"item_id": 4, "criteria": [{"evidence": "x"}]}', "criteria[0] needs criterion"),
        (b'{"item_id": 4, "criteria": [{"criterion": "K1", "met": "yes"}]}', "criteria[0].met must be true or false"),
        (b'{"item_id": 4, "criteria": []}', "Nothing to update"),
    ],
)
def test_a_progress_request_that_cannot_be_read_says_why(raw, reason):
    with pytest.raises(eportfolio.BadProgress) as caught:
        ProgressUpdate.parse(raw)
    assert reason in str(caught.value)


# -- in: saving progress through the item service (both databases) --------------------------------

APPRENTICESHIP = {
    "standard_code": 298,
    "employer_name": "New Forest Training Ltd",
    "english_maths_met": True,
    "start_date": "2025-01-06",
    "planned_end_date": "2026-03-31",
    "total_negotiated_price": 7000,
}


@pytest.fixture
def apprenticeship(system, learner) -> Item:
    return system.create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id)


def test_progress_is_saved_with_its_history_as_the_e_portfolio(session, registry, apprenticeship):
    update = ProgressUpdate(apprenticeship.id, {"eportfolio_progress": 40, "otj_hours_logged": 120.5})
    saved = apply_progress(session, registry, EportfolioConfig(), update)
    assert saved.data["eportfolio_progress"] == 40 and saved.data["otj_hours_logged"] == 120.5
    assert saved.data["standard_code"] == 298  # the rest is kept
    event = session.scalars(select(Event).where(Event.item_id == saved.id).order_by(Event.id.desc())).first()
    assert event.kind == "updated" and event.actor_id is None
    assert {c["path"] for c in event.payload["changes"]} == {"/eportfolio_progress", "/otj_hours_logged"}
    outbox = session.scalars(select(Outbox).where(Outbox.kind == "item_event").order_by(Outbox.id.desc())).first()
    assert outbox.payload["actor"] == "e-portfolio"


def test_an_unknown_item_or_another_type_is_not_found_and_nothing_changes(session, registry, learner):
    config = EportfolioConfig()
    with pytest.raises(NotFound, match="There is no apprenticeship #9999"):
        apply_progress(session, registry, config, ProgressUpdate(9999, {"eportfolio_progress": 1}))
    with pytest.raises(NotFound):  # the learner record is not something the e-portfolio may change
        apply_progress(session, registry, config, ProgressUpdate(learner.id, {"eportfolio_progress": 1}))
    assert session.get(Item, learner.id).version == 1


def test_values_the_type_refuses_change_nothing(session, registry, apprenticeship):
    with pytest.raises(ValidationFailed) as caught:
        apply_progress(
            session, registry, EportfolioConfig(), ProgressUpdate(apprenticeship.id, {"eportfolio_progress": 140})
        )
    assert caught.value.problems[0].path == "/eportfolio_progress"
    session.expire_all()
    assert "eportfolio_progress" not in session.get(Item, apprenticeship.id).data


# -- out: from the outbox, with retries (both databases) ----------------------------------------


def host_for(tmp_path, db_url: str, receiver: FakeEportfolio, **extra: str) -> PluginHost:
    settings = settings_for(tmp_path, db_url, url=receiver.url + "/hooks/tracker", secret=EPORTFOLIO_SECRET, **extra)
    return PluginHost(settings, plugins=[("eportfolio", eportfolio)], entry_points=False)


def run_outbox(session, registry, host: PluginHost) -> list[tuple[int, str, str]]:
    """Hand each waiting row to the host once, as the relay does; returns (id, kind, outcome)."""
    outcomes = []
    for row in session.scalars(select(Outbox).where(Outbox.status == "pending").order_by(Outbox.id)).all():
        try:
            host.handle_outbox(session, row, registry)
        except Exception as exc:  # noqa: BLE001 - the relay records it and retries the row
            session.rollback()
            outcomes.append((row.id, row.kind, f"failed: {exc}"))
            continue
        row.status = "done"
        session.commit()
        outcomes.append((row.id, row.kind, "done"))
    return outcomes


def test_item_events_become_signed_webhooks(tmp_path, db_url, session, registry, system, learner, receiver):
    host = host_for(tmp_path, db_url, receiver)
    item = system.create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id)
    system.update(item.id, changes={"otj_hours_logged": 12})
    system.create("learner", {"given_name": "Al", "family_name": "Bo", "date_of_birth": "2000-01-01"})
    run_outbox(session, registry, host)  # item_event rows fan out into plugin_event rows
    run_outbox(session, registry, host)  # which deliver
    sent = receiver.received()
    assert [(b["event"], b["item"]["id"]) for b in sent] == [("item.created", item.id), ("item.updated", item.id)]
    created, updated = sent
    assert created["item"]["type"] == "apprenticeship" and created["item"]["url"].endswith(f"/items/{item.id}")
    assert created["subject"] == {"id": learner.id, "type": "learner", **{k: v for k, v in learner.data.items()}}
    assert updated["paths"] == ["/otj_hours_logged"] and updated["item"]["data"]["otj_hours_logged"] == 12
    # finance fields never leave
    assert "total_negotiated_price" not in json.dumps(sent)


# -- out: end to end through the runtime's outbox relay, with retries (both databases) ------------


@pytest.fixture
def rt(tmp_path, db_url, receiver):
    """A runtime with every installed plugin (the e-portfolio one pointed at the fake receiver)
    and no Redis: each commit's outbox rows are delivered right after it, in this process."""
    env = {
        "TRACKER_PLUGIN_EPORTFOLIO_URL": receiver.url + "/hooks/tracker",
        "TRACKER_PLUGIN_EPORTFOLIO_SECRET": EPORTFOLIO_SECRET,
        "TRACKER_PLUGIN_EPORTFOLIO_TIMEOUT": "0.5",
    }
    runtime = Runtime(
        Settings(
            instance_path=tmp_path,
            database_url=db_url,
            definitions_path=[TEST_DEFINITIONS],
            secret_key="x",
            plugin_env=env,
        )
    )
    yield runtime
    runtime.engine.dispose()


def plugin_rows(session) -> list[Outbox]:
    session.expire_all()
    return list(
        session.scalars(
            select(Outbox)
            .where(Outbox.kind == "plugin_event", Outbox.payload["plugin"].as_string() == "eportfolio")
            .order_by(Outbox.id)
        )
    )


def test_a_failed_webhook_is_retried_by_the_outbox_and_then_delivered_once(rt, receiver):
    receiver.fail_next = 1
    with rt.session() as session:
        learner = rt.items(session, Actor.system()).create("learner", dict(LEARNER))
        item = rt.items(session, Actor.system()).create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id)
        [row] = [r for r in plugin_rows(session) if r.item_id == item.id]
        assert (row.status, row.attempts) == ("pending", 1)
        assert "the e-portfolio did not take the webhook" in row.last_error and "503" in row.last_error
        assert receiver.received() == []
        # the retry is due 10 seconds later; a relay run then delivers it
        later = rt.relay(clock=lambda: utcnow() + timedelta(seconds=15)).run_until_empty()
        assert later.done >= 1
        [row] = [r for r in plugin_rows(session) if r.item_id == item.id]
        assert row.status == "done"
    assert [(b["event"], b["item"]["id"]) for b in receiver.received()] == [("item.created", item.id)]
    assert len({r.headers["x-tracker-delivery"] for r in receiver.requests}) == 1  # the same id on each attempt


def test_a_webhook_that_keeps_failing_is_dead_lettered_for_an_admin(rt, receiver):
    receiver.outage = 503
    with rt.session() as session:
        learner = rt.items(session, Actor.system()).create("learner", dict(LEARNER))
        item = rt.items(session, Actor.system()).create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id)
        for minutes in (1, 3, 10):
            rt.relay(clock=lambda m=minutes: utcnow() + timedelta(minutes=m)).run_until_empty()
        [row] = [r for r in plugin_rows(session) if r.item_id == item.id]
        assert (row.status, row.attempts) == ("dead", 4)
    assert len(receiver.requests) == 4 and receiver.received() == []


# -- in: the signed endpoint (both databases) ---------------------------------------------------


@pytest.fixture
def app(new_app, receiver):
    env = {
        "TRACKER_PLUGIN_EPORTFOLIO_SECRET": EPORTFOLIO_SECRET,
        "TRACKER_PLUGIN_EPORTFOLIO_URL": receiver.url + "/hooks/tracker",
    }
    app = new_app(settings={"plugin_env": env}, EPORTFOLIO_CLOCK=lambda: NOW)
    yield app


@pytest.fixture
def item_id(app) -> int:
    rt = app.extensions["tracker"]
    with rt.session() as session:
        learner = rt.items(session, Actor.system()).create("learner", dict(LEARNER))
        return (
            rt.items(session, Actor.system()).create("apprenticeship", dict(APPRENTICESHIP), subject_id=learner.id).id
        )


def send(app, body: bytes | dict, *, at: int = NOW, secret: str = EPORTFOLIO_SECRET, headers: dict | None = None):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    signed = {
        "X-Tracker-Timestamp": str(at),
        "X-Tracker-Signature": sign(secret, at, raw),
        "Content-Type": "application/json",
    }
    return app.test_client().post("/integrations/eportfolio/progress", data=raw, headers={**signed, **(headers or {})})


def state(app, item_id: int) -> tuple[int, dict, int]:
    """The item's version and data, and how many events it has."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        item = session.get(Item, item_id)
        events = session.scalar(select(func.count()).select_from(Event).where(Event.item_id == item_id))
        return item.version, dict(item.data), events


def test_signed_progress_is_saved_through_the_item_service(app, item_id, receiver):
    before = state(app, item_id)
    answer = send(
        app, {"item_id": item_id, "progress_percent": 45, "otj_hours_logged": 80, "last_activity": "2025-06-01"}
    )
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json() == {"status": "applied", "item_id": item_id, "version": before[0] + 1, "progress": None}
    version, data, events = state(app, item_id)
    assert (data["eportfolio_progress"], data["otj_hours_logged"], data["eportfolio_last_activity"]) == (
        45,
        80,
        "2025-06-01",
    )
    assert events == before[2] + 1
    # the e-portfolio is not sent its own change back
    assert [b["event"] for b in receiver.received() if b["item"]["id"] == item_id] == ["item.created"]


def test_the_same_signed_request_again_is_not_applied_twice(app, item_id):
    body = {"item_id": item_id, "progress_percent": 45}
    assert send(app, body).get_json()["status"] == "applied"
    after_first = state(app, item_id)
    again = send(app, body)
    assert again.status_code == 200 and again.get_json()["status"] == "already applied"
    assert state(app, item_id) == after_first


@pytest.mark.parametrize(
    ("case", "status", "message"),
    [
        ("bad signature", 401, "The signature does not match the body"),
        ("wrong secret", 401, "The signature does not match the body"),
        ("no signature", 401, "needs the X-Tracker-Timestamp and X-Tracker-Signature headers"),
        ("stale timestamp", 401, "more than 300 seconds from the server's clock"),
        ("future timestamp", 401, "more than 300 seconds from the server's clock"),
        ("unknown item", 404, "There is no apprenticeship #999999"),
        ("learner record", 404, "There is no apprenticeship"),
        ("bad JSON", 400, "The body is not JSON."),
        ("no item id", 400, "item_id must be"),
        ("unknown field", 400, "Unknown field(s): status"),
        ("out of range", 422, "Nothing was saved"),
    ],
)
def test_a_refused_request_changes_nothing(app, item_id, case, status, message):
    good = {"item_id": item_id, "progress_percent": 45}
    before = state(app, item_id), state(app, item_id - 1)  # the apprenticeship and its learner
    if case == "bad signature":
        answer = send(app, good, headers={"X-Tracker-Signature": sign(EPORTFOLIO_SECRET, NOW, b'{"item_id": 1}')})
    elif case == "wrong secret":
        answer = send(app, good, secret="guessed")
    elif case == "no signature":
        answer = send(app, good, headers={"X-Tracker-Signature": ""})
    elif case == "stale timestamp":
        answer = send(app, good, at=NOW - 3600)
    elif case == "future timestamp":
        answer = send(app, good, at=NOW + 3600)
    elif case == "unknown item":
        answer = send(app, {**good, "item_id": 999999})
    elif case == "learner record":
        answer = send(app, {**good, "item_id": item_id - 1})
    elif case == "bad JSON":
        answer = send(app, b'{"item_id": 1, "progress_percent": ')
    elif case == "no item id":
        answer = send(app, {"progress_percent": 45})
    elif case == "unknown field":
        answer = send(app, {**good, "status": "completed"})
    else:
        answer = send(app, {**good, "progress_percent": 140})
    assert answer.status_code == status
    body = answer.get_json()
    assert message in body["error"] and body["advice"] is not None
    if case == "out of range":
        assert body["errors"][0]["path"] == "/eportfolio_progress"
    assert (state(app, item_id), state(app, item_id - 1)) == before
    rt = app.extensions["tracker"]
    with rt.session() as session:
        assert (
            session.scalar(select(func.count()).select_from(PluginState).where(PluginState.plugin == "eportfolio")) == 0
        )
        assert "eportfolio_progress" not in session.get(Item, item_id).data


def test_without_a_shared_secret_the_endpoint_refuses_everything(new_app):
    app = new_app(EPORTFOLIO_CLOCK=lambda: NOW)
    answer = send(app, {"item_id": 1, "progress_percent": 5}, secret="")
    assert answer.status_code == 503
    assert "TRACKER_PLUGIN_EPORTFOLIO_SECRET" in answer.get_json()["advice"]


# -- in: criteria through the progress service (both databases) ---------------------------------

TICK_K1 = {"criterion": "PEOPLE/LEAD/K1", "evidence": "e-portfolio: observation 12", "date": "2025-05-01"}
TICK_S1 = {"criterion": "S1", "evidence": "e-portfolio: team brief recording", "date": "2025-05-02"}


@pytest.fixture
def tracked_id(app) -> int:
    """An apprenticeship on the team leader standard, whose criteria can be ticked."""
    rt = app.extensions["tracker"]
    with rt.session() as session:
        learner = rt.items(session, Actor.system()).create("learner", dict(LEARNER))
        data = {**APPRENTICESHIP, "standard_reference": "ST0384"}
        return rt.items(session, Actor.system()).create("apprenticeship", data, subject_id=learner.id).id


def ticks(app, item_id: int) -> dict[str, str]:
    with app.extensions["tracker"].session() as session:
        rows = session.scalars(select(ProgressTick).where(ProgressTick.item_id == item_id))
        return {t.criterion: t.evidence for t in rows}


def test_criteria_met_in_the_e_portfolio_are_ticked_with_their_evidence(app, tracked_id):
    answer = send(app, {"item_id": tracked_id, "criteria": [TICK_K1, TICK_S1], "otj_hours_logged": 40})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["progress"] > 0
    assert ticks(app, tracked_id) == {
        "PEOPLE/LEAD/K1": "e-portfolio: observation 12",
        "PEOPLE/LEAD/S1": "e-portfolio: team brief recording",
    }
    _version, data, _events = state(app, tracked_id)
    assert data["otj_hours_logged"] == 40
    with app.extensions["tracker"].session() as session:
        kinds = [e.kind for e in session.scalars(select(Event).where(Event.item_id == tracked_id).order_by(Event.id))]
        assert kinds.count("progress_ticked") == 2


def test_a_criterion_no_longer_met_is_unticked_and_one_never_ticked_is_left_alone(app, tracked_id):
    send(app, {"item_id": tracked_id, "criteria": [TICK_K1, TICK_S1]}, at=NOW - 1)
    answer = send(
        app, {"item_id": tracked_id, "criteria": [{"criterion": "K1", "met": False}, {"criterion": "K2", "met": False}]}
    )
    assert answer.status_code == 200, answer.get_json()
    assert set(ticks(app, tracked_id)) == {"PEOPLE/LEAD/S1"}


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ({"criteria": [TICK_K1, {"criterion": "Z9", "evidence": "x", "date": "2025-05-01"}]}, "/ticks/1/criterion"),
        ({"criteria": [TICK_K1], "progress_percent": 140}, "/eportfolio_progress"),
        ({"criteria": [{**TICK_K1, "evidence": ""}]}, "/ticks/0/evidence"),
    ],
)
def test_one_refused_criterion_or_value_records_no_progress_at_all(app, tracked_id, extra, path):
    before = state(app, tracked_id)
    answer = send(app, {"item_id": tracked_id, **extra})
    assert answer.status_code == 422
    assert path in [e["path"] for e in answer.get_json()["errors"]]
    assert ticks(app, tracked_id) == {} and state(app, tracked_id) == before
