"""Who is notified, through which channels, with what: against a real SMTP server (aiosmtpd)
on loopback and both databases. The relay runs in-process after each commit (no Redis)."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from engine.errors import NotFound, PermissionDenied, ValidationFailed
from engine.models import Delivery, Item, Notification, Outbox, Watcher
from engine.notifications import Inbox, Preferences
from tests.notify_helpers import *  # noqa: F403 - fixtures
from tests.notify_helpers import BASE_URL, people, service


def inbox_of(rt, user_id: int) -> list[Notification]:
    with rt.session() as session:
        return list(session.scalars(select(Notification).where(Notification.user_id == user_id)))


def outbox_rows(rt) -> list[Outbox]:
    with rt.session() as session:
        return list(session.scalars(select(Outbox).order_by(Outbox.id)))


def test_assignment_sends_one_email_with_the_absolute_link_and_an_inbox_entry(rt, smtp, clock):
    ids = people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "Annual review"}, assignee="bob")
    link = f"{BASE_URL}/items/{item.id}"
    [mail] = smtp.messages
    assert mail["To"] == "bob@tracker.test"
    assert mail["Subject"] == "[Tracker] alice assigned Annual review to you"
    assert mail["Auto-Submitted"] == "auto-generated"
    assert mail["Message-ID"].startswith("<tracker.outbox.") and mail["Message-ID"].endswith("@tracker.test>")
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert link in text and f'href="{link}"' in html
    assert f"{BASE_URL}/preferences" in text
    [entry] = inbox_of(rt, ids["bob"])
    assert (entry.reason, entry.link, entry.item_id) == ("assigned", f"/items/{item.id}", item.id)
    assert entry.read_at is None
    assert inbox_of(rt, ids["alice"]) == []  # the one who assigned is not told
    assert {r.status for r in outbox_rows(rt)} == {"done"}
    # relaying again, later, changes nothing: the rows are done and the deliveries recorded
    clock.advance(3600)
    assert rt.relay(clock=clock).run_until_empty().claimed == 0
    assert len(smtp.messages) == 1 and len(inbox_of(rt, ids["bob"])) == 1


def test_self_assignment_and_unassignment_notify_nobody(rt, smtp):
    ids = people(rt)
    with rt.session() as session:
        items = service(rt, session, "alice")
        item = items.create("meeting", {"topic": "Own"}, assignee="alice")
        items.assign(item.id, None)
    assert smtp.messages == [] and inbox_of(rt, ids["alice"]) == []


def test_transition_notify_action_reaches_the_creator(rt, smtp):
    ids = people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "Kick-off"})
        service(rt, session, "bob").transition(item.id, "held")
    [mail] = smtp.messages
    assert mail["To"] == "alice@tracker.test"
    assert "Kick-off moved to 'Mark as held'" in mail["Subject"]
    [entry] = inbox_of(rt, ids["alice"])
    assert entry.reason == "transitioned"


def test_transition_notify_on_a_builtin_style_workflow_with_assign_action(rt, smtp):
    """safeguarding 'start' assigns to role:dsl, then notifies the assignee."""
    with rt.session() as session:
        users = rt.users(session)
        users.create("lead", ["dsl"], email="lead@tracker.test")
        learner = service(rt, session, None).create(
            "learner", {"given_name": "Jane", "family_name": "Smith", "date_of_birth": "2001-02-03"}
        )
        concern = service(rt, session, None).create(
            "concern", {"category": "online", "reported_on": "2025-09-01", "contact": "a@b.test"}, subject_id=learner.id
        )
        service(rt, session, "lead").transition(concern.id, "investigating", data={"severity": "low"})
    # lead took it themselves: the assign notification is skipped (own action), the notify action is not
    assert [m["To"] for m in smtp.messages] == ["lead@tracker.test"]
    assert "moved to 'Start investigation'" in smtp.messages[0]["Subject"]


def test_mentions_notify_active_users_who_may_see_the_item(rt, smtp):
    ids = people(rt)
    with rt.session() as session:
        items = service(rt, session, "alice")
        item = items.create("meeting", {"topic": "Budget"})
        items.comment(item.id, "@bob, please check. @dave too? @nobody and me: @alice. Mail x@carol.test")
    assert [m["To"] for m in smtp.messages] == ["bob@tracker.test"]
    assert smtp.messages[0]["Subject"] == "[Tracker] alice mentioned you on Budget"
    [entry] = inbox_of(rt, ids["bob"])
    assert entry.reason == "mentioned"
    assert inbox_of(rt, ids["dave"]) == []  # dave cannot view meetings
    assert inbox_of(rt, ids["carol"]) == []  # an e-mail address is not a mention


def test_watchers_hear_about_changes_once_and_not_about_their_own(rt, smtp):
    ids = people(rt)
    with rt.session() as session:
        alice = service(rt, session, "alice")
        item = alice.create("meeting", {"topic": "Board"})
        service(rt, session, "carol").watch(item.id)
        service(rt, session, "carol").watch(item.id)  # twice is harmless
        alice.watch(item.id)
        assert service(rt, session, "carol").is_watching(item.id)
        alice.update(item.id, changes={"meeting_date": "2030-01-01"})
        # 'hold' notifies the creator and the watchers: carol gets one message, alice none (her change)
        service(rt, session, "bob").transition(item.id, "held")
    assert [m["Subject"] for m in smtp.to("carol@tracker.test")] == [
        "[Tracker] alice updated Board",
        "[Tracker] Board moved to 'Mark as held'",
    ]
    # alice is the creator (notify: creator) and a watcher (notify: watchers): one message, not two
    assert [m["Subject"] for m in smtp.to("alice@tracker.test")] == ["[Tracker] Board moved to 'Mark as held'"]
    with rt.session() as session:
        service(rt, session, "carol").unwatch(item.id)
        service(rt, session, "carol").unwatch(item.id)
        assert not service(rt, session, "carol").is_watching(item.id)
        service(rt, session, "bob").transition(item.id, "planned")  # no notify action: watchers are told
        assert session.scalar(select(func.count()).select_from(Watcher).where(Watcher.user_id == ids["carol"])) == 0
    assert len(smtp.to("carol@tracker.test")) == 2
    assert smtp.to("alice@tracker.test")[-1]["Subject"] == "[Tracker] bob moved Board to 'Planned'"
    assert [e.reason for e in inbox_of(rt, ids["alice"])] == ["transitioned", "watched"]


def test_watching_needs_a_user_who_may_view_the_item(rt):
    people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "Private"})
        with pytest.raises(PermissionDenied):
            service(rt, session, "dave").watch(item.id)
        with pytest.raises(PermissionDenied, match="system operator cannot watch"):
            service(rt, session, None).watch(item.id)
        with pytest.raises(NotFound):
            service(rt, session, "carol").watch(99999)
        assert session.scalar(select(func.count()).select_from(Watcher)) == 0


def test_preferences_choose_channels_per_event_kind(rt, smtp):
    ids = people(rt)
    with rt.session() as session:
        prefs = Preferences(session, ids["bob"])
        assert prefs.get().wants("assigned", "email")
        prefs.save({"assigned": ["inbox"], "mentioned": ["email"], "transitioned": ["inbox", "email"]}, digest=False)
        saved = prefs.get()
        assert not saved.wants("assigned", "email") and saved.wants("assigned", "inbox")
        assert not saved.wants("watched", "inbox")  # left out of the form: off
        items = service(rt, session, "alice")
        item = items.create("meeting", {"topic": "Prefs"}, assignee="bob")
        items.comment(item.id, "over to you @bob")
    assert [m["Subject"] for m in smtp.messages] == ["[Tracker] alice mentioned you on Prefs"]
    assert [e.reason for e in inbox_of(rt, ids["bob"])] == ["assigned"]


def test_preferences_refuse_unknown_kinds_and_channels(rt):
    ids = people(rt)
    with rt.session() as session:
        prefs = Preferences(session, ids["bob"])
        with pytest.raises(ValidationFailed) as excinfo:
            prefs.save({"assigned": ["pigeon"], "gossip": ["inbox"]}, digest=True)
        messages = [p.message for p in excinfo.value.problems]
        assert "'gossip' is not a kind of notification" in messages
        assert "'pigeon' is not a notification channel" in messages
        assert prefs.get().wants("assigned", "email") and not prefs.get().digest


def test_no_notification_for_a_change_that_rolled_back(rt, smtp):
    """'escalate' notifies the watchers, then creates a meeting for the least busy chair;
    with nobody in that role the transition fails after the notification was written."""
    ids = people(rt)
    with rt.session() as session:
        item = service(rt, session, "alice").create("meeting", {"topic": "Doomed"})
        service(rt, session, "carol").watch(item.id)
        for name in ("alice", "bob"):
            rt.users(session).set_roles(name, ["admin"])  # nobody is a chair any more
        before = session.scalar(select(func.count()).select_from(Outbox))
        with pytest.raises(ValidationFailed, match="No active user has the role 'chair'"):
            service(rt, session, "alice").transition(item.id, "escalated")
        assert session.scalar(select(func.count()).select_from(Outbox)) == before
        assert session.get(Item, item.id).status == "planned"
    assert smtp.messages == [] and inbox_of(rt, ids["carol"]) == []


def test_users_without_email_get_the_inbox_only(rt, smtp):
    people(rt)
    with rt.session() as session:
        rt.users(session).create("noemail", ["chair"])
        service(rt, session, "alice").create("meeting", {"topic": "No mail"}, assignee="noemail")
        delivery = session.scalar(select(Delivery).where(Delivery.channel == "email"))
        assert (delivery.status, delivery.detail) == ("skipped", "no e-mail address")
        assert session.scalar(select(func.count()).select_from(Notification)) == 1
    assert smtp.messages == []


def test_inbox_counts_lists_and_marks_read(rt, clock):
    ids = people(rt)
    with rt.session() as session:
        alice = service(rt, session, "alice")
        for n in range(3):
            alice.create("meeting", {"topic": f"M{n}"}, assignee="bob")
        inbox = Inbox(session, ids["bob"], clock=clock)
        assert inbox.unread_count() == 3
        entries, total = inbox.entries(limit=2)
        assert total == 3 and [e.text for e in entries] == ["alice assigned M2 to you", "alice assigned M1 to you"]
        inbox.mark_read(entries[0].id)
        assert inbox.unread_count() == 2
        assert inbox.mark_all_read() == 2 and inbox.unread_count() == 0
        assert inbox.entries(unread_only=True) == ([], 0)
        with pytest.raises(NotFound):
            Inbox(session, ids["carol"]).mark_read(entries[0].id)  # someone else's


def test_reminder_definitions_are_checked(tmp_path):
    import shutil

    from engine.definitions import load_registry
    from tests.notify_helpers import NOTIFY_DEFINITIONS

    folder = tmp_path / "defs"
    shutil.copytree(NOTIFY_DEFINITIONS, folder)
    manifest = folder / "tracker_types" / "meeting" / "type.yaml"
    manifest.write_text(
        manifest.read_text().replace(
            "follow_up.due, before: 1w, notify: watchers", "topic, before: 2x, notify: role:nope"
        )
        + "  - {field: missing, before: 3d, notify: assignee}\n"
    )
    registry = load_registry([folder])
    text = "\n".join(str(p) for p in registry.problems)
    assert "meeting" not in registry.types
    assert "/reminders/1/before: Before (row 2) is not in the expected format" in text
    manifest.write_text(manifest.read_text().replace("before: 2x", "before: 2d"))
    text = "\n".join(str(p) for p in load_registry([folder]).problems)
    assert "'topic' is not a date property" in text
    assert "role 'nope' does not exist" in text
    assert "field 'missing' is not a property of schema.json" in text


def test_an_admin_overrides_an_email_template_from_the_instance_folder(tmp_path, db_url, smtp):
    from engine.runtime import Runtime
    from tests.notify_helpers import make_settings

    folder = tmp_path / "templates" / "email"
    folder.mkdir(parents=True)
    (folder / "notification.subject.txt").write_text("Tracker says: {{ text }}")
    (folder / "notification.txt").write_text("Dear {{ recipient }}, {{ text }}: {{ url }}\n")
    runtime = Runtime(make_settings(tmp_path, db_url, smtp_url=smtp.url))
    people(runtime)
    with runtime.session() as session:
        item = service(runtime, session, "alice").create("meeting", {"topic": "Custom"}, assignee="bob")
    [mail] = smtp.messages
    assert mail["Subject"] == "Tracker says: alice assigned Custom to you"
    body = mail.get_body(("plain",)).get_content()
    assert body.strip() == f"Dear Bob, alice assigned Custom to you: {BASE_URL}/items/{item.id}"
    assert "Choose what Tracker sends you" in mail.get_body(("html",)).get_content()  # the built-in HTML
    runtime.engine.dispose()


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("smtp://mail.internal", ("mail.internal", 25, None, None, False, False)),
        ("smtp://me:p%40ss@mail.internal:587?starttls", ("mail.internal", 587, "me", "p@ss", True, False)),
        ("smtps://mail.internal", ("mail.internal", 465, None, None, False, True)),
    ],
)
def test_smtp_url_settings(url, expected):
    from engine.mail import SmtpConfig

    c = SmtpConfig.from_url(url)
    assert (c.host, c.port, c.username, c.password, c.starttls, c.tls) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mail.internal:25", "is not an SMTP address"),
        ("http://mail.internal", "is not an SMTP address"),
        ("smtp://me:secret@mail.internal:port", "has a port that is not a number"),
        ("smtp://mail.internal?tls=yes", "has unknown options: tls"),
        ("smtp://mail.internal?timeout=soon", "timeout in TRACKER_SMTP_URL is not a number"),
    ],
)
def test_smtp_url_mistakes_are_explained_without_the_password(url, message):
    from engine.errors import TrackerError
    from engine.mail import SmtpConfig

    with pytest.raises(TrackerError, match=message) as excinfo:
        SmtpConfig.from_url(url)
    assert "secret" not in excinfo.value.message
    assert "smtp://" in excinfo.value.advice


def test_mail_and_digest_settings_from_the_environment(tmp_path):
    from engine.config import Settings
    from engine.errors import TrackerError

    env = {"TRACKER_INSTANCE_PATH": str(tmp_path), "TRACKER_SECRET_KEY": "x"}
    defaults = Settings.from_env(env)
    assert (defaults.smtp_url, defaults.mail_from, defaults.digest_hour) == ("", "Tracker <tracker@localhost>", 7)
    chosen = Settings.from_env(
        {
            **env,
            "TRACKER_SMTP_URL": " smtp://mail:25 ",
            "TRACKER_MAIL_FROM": "Ops <ops@x.test>",
            "TRACKER_DIGEST_HOUR": "18",
        }
    )
    assert (chosen.smtp_url, chosen.mail_from, chosen.digest_hour) == ("smtp://mail:25", "Ops <ops@x.test>", 18)
    for bad in ("24", "-1", "seven"):
        with pytest.raises(TrackerError, match="TRACKER_DIGEST_HOUR is not an hour of the day"):
            Settings.from_env({**env, "TRACKER_DIGEST_HOUR": bad})
