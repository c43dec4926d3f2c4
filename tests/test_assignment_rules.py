"""Assignment rules (``assignment:`` in type.yaml) and role queues, on SQLite and PostgreSQL:
round robin fair across services and threads, least loaded, the user named in a field, a
queue whose users claim items (one wins a race, the other is told), and broken rules refused
with file, line and pointer."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import select

from engine import db
from engine.assignment import QueueService
from engine.definitions import load_registry
from engine.errors import Conflict, PermissionDenied, ValidationFailed
from engine.models import Event, Item, Outbox, User
from engine.permissions import Actor
from engine.services import ItemService, UserService
from tests.conftest import problems_of
from tests.webhelpers import cheap_hashing  # noqa: F401 - autouse: users are made quickly

ROLES = """\
roles:
  - key: clerk
    name: Clerk
    capabilities: [items.create, items.view, items.edit, items.transition]
  - key: advisor
    name: Advisor
    capabilities: [items.view, items.edit, items.transition]
    scope: own
"""
WORKFLOW = """\
key: ticket
name: Ticket
states:
  - {key: new, label: New, initial: true}
  - {key: closed, label: Closed, category: done}
transitions:
  - {key: close, from: [new], to: closed, label: Close}
"""
SCHEMA = """\
{
  "type": "object",
  "properties": {
    "title": {"type": "string", "title": "Title"},
    "owner": {"type": "string", "title": "Owner"},
    "hours": {"type": "integer", "title": "Hours"}
  }
}
"""


def type_yaml(key: str, assignment: str, extra: str = "") -> str:
    return f"key: {key}\nname: {key.replace('_', ' ').title()}\nversion: 1\nworkflow: ticket\n{assignment}{extra}"


def write_definitions(root: Path, types: dict[str, str]) -> Path:
    (root / "workflows").mkdir(parents=True, exist_ok=True)
    (root / "workflows" / "ticket.yaml").write_text(WORKFLOW)
    (root / "roles.yaml").write_text(ROLES)
    for key, manifest in types.items():
        folder = root / "tracker_types" / key
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "type.yaml").write_text(manifest)
        (folder / "schema.json").write_text(SCHEMA)
    return root


@pytest.fixture(scope="module")
def rules_registry(tmp_path_factory):
    root = write_definitions(
        tmp_path_factory.mktemp("assignment_defs"),
        {
            "rr_ticket": type_yaml("rr_ticket", "assignment: {rule: round_robin, role: clerk}\n"),
            "ll_ticket": type_yaml("ll_ticket", "assignment: {rule: least_loaded, role: clerk}\n"),
            "owned_ticket": type_yaml("owned_ticket", "assignment: {rule: field, field: owner}\n"),
            "queued_ticket": type_yaml("queued_ticket", "assignment: {rule: queue, role: advisor}\n"),
        },
    )
    registry = load_registry([root])
    assert registry.problems == [], "\n".join(map(str, registry.problems))
    return registry


@pytest.fixture
def staff(session, rules_registry) -> dict[str, Actor]:
    users = UserService(session, rules_registry)
    out = {}
    for name, role in (
        ("cleo", "clerk"),
        ("carl", "clerk"),
        ("cara", "clerk"),
        ("ada", "advisor"),
        ("abe", "advisor"),
        ("bob", "clerk"),
    ):
        user, _ = users.create(name, [role])
        out[name] = Actor.for_user(user, rules_registry)
    users.deactivate("bob")  # an inactive clerk never gets a turn
    return out


def service(session, registry, actor: Actor | None = None) -> ItemService:
    return ItemService(session, actor or Actor.system(), registry)


def assignees(session, type_key: str) -> list[str]:
    stmt = select(Item).where(Item.type_key == type_key).order_by(Item.id)
    return [i.assignee.username if i.assignee else None for i in session.scalars(stmt)]


# -- round robin -----------------------------------------------------------------------------------


def test_round_robin_takes_turns_across_two_services(engine, session, rules_registry, staff):
    other = db.session_factory(engine)()
    try:
        first, second = service(session, rules_registry), service(other, rules_registry)
        for n in range(6):
            (first if n % 2 == 0 else second).create("rr_ticket", {"title": f"T{n}"})
    finally:
        other.close()
    assert assignees(session, "rr_ticket") == ["cleo", "carl", "cara", "cleo", "carl", "cara"]
    # the usual notification goes to each new assignee
    notes = session.scalars(select(Outbox).where(Outbox.kind == "notify")).all()
    assert Counter(n.payload["reason"] for n in notes) == {"assigned": 6}


def test_round_robin_is_fair_under_concurrent_creates(engine, session, rules_registry, staff):
    factory, barrier, errors = db.session_factory(engine), threading.Barrier(6), []

    def create_three() -> None:
        try:
            with factory() as own:
                items = service(own, rules_registry)
                barrier.wait()
                for n in range(3):
                    items.create("rr_ticket", {"title": f"T{n}"})
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=create_three) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert Counter(assignees(session, "rr_ticket")) == {"cleo": 6, "carl": 6, "cara": 6}


def test_a_named_assignee_wins_over_the_rule_and_a_refused_create_takes_no_turn(session, rules_registry, staff):
    items = service(session, rules_registry)
    items.create("rr_ticket", {"title": "mine"}, assignee="cara")
    with pytest.raises(ValidationFailed):
        items.create("rr_ticket", {"title": "bad", "hours": "many"})
    items.create("rr_ticket", {"title": "next"})
    assert assignees(session, "rr_ticket") == ["cara", "cleo"]


# -- least loaded ----------------------------------------------------------------------------------


def test_least_loaded_counts_open_items_of_the_type(session, rules_registry, staff):
    items = service(session, rules_registry)
    for who in ("cleo", "cleo", "carl", "cara"):
        items.create("ll_ticket", {"title": "open"}, assignee=who)
    for _ in range(3):  # closed items and other types do not count
        closed = items.create("ll_ticket", {"title": "done"}, assignee="carl")
        items.transition(closed.id, "closed")
    items.create("rr_ticket", {"title": "other type"}, assignee="carl")
    fresh = items.create("ll_ticket", {"title": "new"})
    assert fresh.assignee.username == "carl"  # one open, like cara, and first of the two
    assert items.create("ll_ticket", {"title": "newer"}).assignee.username == "cara"


# -- the user named in a field ---------------------------------------------------------------------


def test_the_user_named_in_a_field_gets_the_item(session, rules_registry, staff):
    items = service(session, rules_registry)
    assert items.create("owned_ticket", {"title": "a", "owner": "ada"}).assignee.username == "ada"
    assert items.create("owned_ticket", {"title": "b"}).assignee is None  # nobody named, nobody assigned
    with pytest.raises(ValidationFailed) as excinfo:
        items.create("owned_ticket", {"title": "c", "owner": "zed"})
    problem = {p.path: p for p in excinfo.value.problems}["/owner"]
    assert problem.message == "Owner names 'zed', who is not an active user, so the item cannot be assigned to them"
    assert problem.advice == "Enter the user name of an active user in Owner, or leave it empty."
    with pytest.raises(ValidationFailed) as excinfo:
        items.create("owned_ticket", {"title": "d", "owner": "bob"})  # deactivated
    assert "/owner" in problems_of(excinfo)


# -- queues ----------------------------------------------------------------------------------------


def test_a_queue_leaves_items_for_its_role_to_claim(session, rules_registry, staff):
    clerk = service(session, rules_registry, staff["cleo"])
    waiting = clerk.create("queued_ticket", {"title": "help"})
    assert waiting.assignee is None
    ada = QueueService(service(session, rules_registry, staff["ada"]))
    assert [t.key for t in ada.queue_types()] == ["queued_ticket"]
    assert ada.waiting()[1] == 1 and ada.counts() == {"queued_ticket": 1}
    # the advisor may see only their own items, but their queue shows what waits for them
    with pytest.raises(PermissionDenied):
        service(session, rules_registry, staff["ada"]).get(waiting.id)
    claimed = ada.claim(waiting.id)
    assert claimed.assignee.username == "ada" and claimed.version == 2
    assert service(session, rules_registry, staff["ada"]).get(waiting.id).id == waiting.id
    assert ada.waiting()[1] == 0
    [event] = session.scalars(select(Event).where(Event.item_id == waiting.id, Event.kind == "assigned")).all()
    assert event.payload == {"from": None, "to": "ada", "claimed": True}
    assert event.actor_id == staff["ada"].user_id
    # claiming it again, by anyone, is a conflict that names who has it
    with pytest.raises(Conflict, match=r"was claimed by ada just before you") as excinfo:
        QueueService(service(session, rules_registry, staff["abe"])).claim(waiting.id)
    assert excinfo.value.status == 409 and excinfo.value.advice == "Pick another item from your queue."
    # back to the queue when unassigned
    clerk.assign(waiting.id, None)
    assert ada.waiting()[1] == 1


def test_only_the_queue_role_claims_and_only_queued_open_items(session, rules_registry, staff):
    clerk = service(session, rules_registry, staff["cleo"])
    waiting = clerk.create("queued_ticket", {"title": "help"})
    with pytest.raises(PermissionDenied, match="Only users with the role 'Advisor'"):
        QueueService(clerk).claim(waiting.id)
    assert QueueService(clerk).queue_types() == []
    other = clerk.create("rr_ticket", {"title": "not queued"})
    with pytest.raises(ValidationFailed, match="is not in a queue"):
        QueueService(service(session, rules_registry, staff["ada"])).claim(other.id)
    clerk.transition(waiting.id, "closed")
    with pytest.raises(ValidationFailed, match="nothing to claim"):
        QueueService(service(session, rules_registry, staff["ada"])).claim(waiting.id)


def test_two_users_claiming_at_once_one_wins(engine, session, rules_registry, staff):
    waiting = service(session, rules_registry).create("queued_ticket", {"title": "race"})
    factory, barrier, results = db.session_factory(engine), threading.Barrier(2), {}

    def claim(name: str) -> None:
        with factory() as own:
            actor = Actor.for_user(own.scalar(select(User).where(User.username == name)), rules_registry)
            queue = QueueService(service(own, rules_registry, actor))
            barrier.wait()
            try:
                queue.claim(waiting.id)
                results[name] = "won"
            except Conflict as exc:
                results[name] = exc.message

    threads = [threading.Thread(target=claim, args=(name,)) for name in ("ada", "abe")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = next(name for name, result in results.items() if result == "won")
    loser = next(name for name in results if name != winner)
    assert results[loser] == f"#{waiting.id} race was claimed by {winner} just before you."
    session.expire_all()
    assert session.get(Item, waiting.id).assignee.username == winner
    claims = session.scalars(select(Event).where(Event.item_id == waiting.id, Event.kind == "assigned")).all()
    assert len(claims) == 1


# -- broken rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("assignment", "extra", "pointer", "line", "message"),
    [
        ("assignment: {rule: round_robin, role: wizard}\n", "", "/assignment/role", 5, "role 'wizard' does not exist"),
        ("assignment: {rule: field, field: manager}\n", "", "/assignment/field", 5, "not a property of schema.json"),
        ("assignment: {rule: field, field: hours}\n", "", "/assignment/field", 5, "not a text property"),
        ("assignment:\n  rule: least_loaded\n", "", "/assignment/role", 5, "Role is required"),
        ("assignment:\n  rule: queue\n  role: clerk\n", "assignee_required: true\n", "/assignment/rule", 6, "queue"),
        ("assignment:\n  rule: shuffle\n  role: clerk\n", "", "/assignment/rule", 6, "must be one of"),
        (
            "assignment: {rule: round_robin, role: clerk}\n",
            "permissions:\n  clerk: [items.create]\n",
            "/assignment/role",
            5,
            "users of role 'clerk' cannot see",
        ),
    ],
)
def test_a_broken_assignment_rule_is_refused_with_file_line_and_pointer(
    tmp_path, assignment, extra, pointer, line, message
):
    root = write_definitions(tmp_path, {"bad_ticket": type_yaml("bad_ticket", assignment, extra)})
    registry = load_registry([root])
    assert "bad_ticket" not in registry.types
    [problem] = [p for p in registry.problems if p.pointer == pointer]
    assert problem.file.endswith("tracker_types/bad_ticket/type.yaml")
    assert problem.line == line and message in problem.message and problem.advice


def test_the_built_in_health_and_safety_review_waits_in_the_assessors_queue(system, registry, make_user, session):
    asha = make_user("asha", "assessor")
    assert registry.type("hs_review").assignment.rule == "queue"
    learner = system.create(
        "learner", {"given_name": "Jo", "family_name": "Hill", "date_of_birth": "2000-01-01", "uln": "1000000043"}
    )
    review = system.create("hs_review", {"due_by": "2031-01-10"}, subject_id=learner.id)
    assert review.assignee is None and review.title == "H&S review: workplace for Jo Hill"
    queue = QueueService(ItemService(session, asha, registry))
    assert [i.id for i in queue.waiting()[0]] == [review.id]
    assert queue.claim(review.id).assignee.username == "asha"
