"""Demo data: users with each built-in role and a realistic caseload, loaded through the services.

Dates are relative to today, so the task lists ("due to complete in 30 days", "reviews
overdue") always have something in them. The logins are kept in the instance folder so
``make demo`` can print them every time it starts.
"""

from __future__ import annotations

import json
import random
from datetime import date, timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from engine import demo_documents
from engine.config import DEFAULT_UPLOAD_TYPES
from engine.definitions import Registry
from engine.documents import DocumentStore
from engine.models import Item, User
from engine.permissions import Actor
from engine.services import ItemService, UserService

DEMO_USERS = [
    ("admin", "Ada Admin", ["admin"]),
    ("claims", "Chris Claims", ["tracker_creator"]),
    ("assessor", "Asha Assessor", ["assessor"]),
    ("assessor2", "Tom Ellis", ["assessor"]),
    ("quality", "Quinn Quality", ["quality"]),
    ("manager", "Morgan Manager", ["manager"]),
    ("finance", "Fran Finance", ["finance"]),
    # automations run as their creator: this one also creates trackers, so its H&S automation can book reviews
    ("automator", "Alex Automation", ["automation_creator", "tracker_creator"]),
]

GIVEN = [
    "Amelia",
    "Oliver",
    "Isla",
    "Noah",
    "Ava",
    "Leo",
    "Mia",
    "Arthur",
    "Ivy",
    "Muhammad",
    "Freya",
    "Harry",
    "Sofia",
    "Jack",
    "Grace",
    "Theo",
    "Lily",
    "Oscar",
    "Zara",
    "George",
    "Ruby",
    "Yusuf",
    "Ella",
    "Kai",
]
FAMILY = [
    "Okafor",
    "Smith",
    "Patel",
    "Jones",
    "Williams",
    "Khan",
    "Brown",
    "Taylor",
    "Davies",
    "Evans",
    "Wilson",
    "Thomas",
    "Roberts",
    "Ahmed",
    "Walker",
    "Wright",
    "Hughes",
    "Green",
    "Hall",
    "Lewis",
    "Clarke",
    "Kaur",
    "Murphy",
    "Price",
]
POSTCODES = ["M14 5TQ", "SO41 3AA", "SW1A 1AA", "B15 2TT", "LS1 4AP", "BS1 5TR", "NE1 7RU", "CF10 3AT"]
EMPLOYERS = [
    ("Lymington Marine Engineering Ltd", "09876543", "SO41 3AA"),
    ("Solent Logistics Ltd", "04512378", "SO15 1BA"),
    ("Pennine Care Homes Ltd", "07311290", "M14 5TQ"),
    ("Brightside Digital Ltd", "11223344", "LS1 4AP"),
]


def uln_from(n: int) -> str:
    """The first ULN with a valid check digit (ESFA DD01) whose first nine digits are >= ``n``."""
    while True:
        digits = [int(c) for c in str(n)]
        remainder = sum(w * d for w, d in zip(range(10, 1, -1), digits, strict=True)) % 11
        if remainder and 10 - remainder < 10:
            return f"{n}{10 - remainder}"
        n += 1


def logins_path(instance: Path) -> Path:
    return instance / "demo-logins.json"


def load(session: Session, registry: Registry, instance: Path, today: date | None = None, *, store=None):
    """Create the demo users and items unless they exist (``store``: the documents folder the
    demo documents go to, by default ``<instance>/documents``).

    Returns ``(logins, created)``: ``[(username, password, roles)]`` and the number of
    items created (0 when the demo data was already there).
    """
    today = today or date.today()
    path = logins_path(instance)
    saved = json.loads(path.read_text()) if path.exists() else {}
    users = UserService(session, registry)
    logins = []
    for username, name, roles in DEMO_USERS:
        if session.scalar(select(User.id).where(User.username == username)) is None:
            _user, password = users.create(username, roles, display_name=name, email=f"{username}@provider.example")
            saved[username] = password
        logins.append((username, saved.get(username, "(set before the demo data)"), roles))
    instance.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=2))
    path.chmod(0o600)
    if session.scalar(select(func.count()).select_from(Item)):
        return logins, 0
    store = store or DocumentStore(instance / "documents", max_bytes=10 * 1024 * 1024, types=DEFAULT_UPLOAD_TYPES)
    created = _caseload(session, registry, today, store)
    demo_documents.load(session, registry, store, today)
    return logins, created


def _caseload(session: Session, registry: Registry, today: date, store: DocumentStore) -> int:
    rng = random.Random(2526)
    admin = Actor.for_user(UserService(session, registry).get("claims"), registry)
    items = ItemService(session, admin, registry, today=lambda: today)
    system = ItemService(session, Actor.system(), registry, today=lambda: today)

    def day(offset: int) -> str:
        return (today + timedelta(days=offset)).isoformat()

    employers = [
        items.create(
            "employer",
            {
                "name": name,
                "company_number": number,
                "contact_name": "Priya Shah",
                "contact_email": f"hr@{name.split()[0].lower()}.example.co.uk",
                "address": {"line1": "Unit 4, Quay Road", "town": "Southampton", "postcode": postcode},
                "hs_review_due": day(rng.randint(-20, 90)),
            },
        )
        for name, number, postcode in EMPLOYERS
    ]
    created = len(employers)
    assessors = ["assessor", "assessor2"]
    signing_up = 0  # apprentices still in sign-up so far: each shows another stage of the paperwork
    for i in range(len(GIVEN)):
        given, family = GIVEN[i], FAMILY[i]
        learner = items.create(
            "learner",
            {
                "given_name": given,
                "family_name": family,
                "date_of_birth": (date(1998, 1, 1) + timedelta(days=rng.randint(0, 2500))).isoformat(),
                "uln": uln_from(100000000 + i * 7919 + 11),
                "postcode": rng.choice(POSTCODES),
                "email": f"{given.lower()}.{family.lower()}@example.co.uk",
                "phone": f"07700 900{i:03d}",
                "ni_number": f"AB{123400 + i:06d}C",
            },
        )
        created += 1
        employer = employers[i % len(employers)]
        assessor = assessors[i % 2]
        start = rng.randint(-420, -30)
        end = [8, 25, 45, 75, 200, 320, -5][i % 7]
        apprenticeship = items.create(
            "apprenticeship",
            {
                "employer_name": employer.data["name"],
                "start_date": day(start),
                "planned_end_date": day(end),
                "otj_hours_planned": 278,
                "otj_hours_logged": rng.randint(20, 260),
                "next_review_due": day([-12, 4, -3, 9, 21, 40][i % 6]),
                "hs_review_due": day(rng.choice([-10, 5, 60, 150])),
                # every other apprentice was last H&S-reviewed more than 12 weeks ago
                "last_hs_review_date": day([-120, -40, -95, -10][i % 4]),
                "reviews": [{"date": day(start + 60), "type": "progress", "outcome": "on_track"}],
            },
            template="team_leader_l3",
            subject_id=learner.id,
            assignee=assessor,
            description="Keep reviews on schedule and log off-the-job hours monthly.",
        )
        created += 1
        if i % 4 != 0:
            system.transition(apprenticeship.id, "signup")
            if i % 3 and i % 5:
                demo_documents.signup_paperwork(session, registry, store, apprenticeship.id, "accepted")
                system.transition(apprenticeship.id, "on_programme")
                # starting the programme books the first review in 12 weeks; spread them out
                system.update(apprenticeship.id, changes={"next_review_due": day([-12, 4, -3, 9, 21, 40][i % 6])})
            else:
                stage = demo_documents.SIGNUP_STAGES[signing_up % len(demo_documents.SIGNUP_STAGES)]
                demo_documents.signup_paperwork(session, registry, store, apprenticeship.id, stage)
                signing_up += 1
        items.create(
            "compliance",
            {
                "programme_type": "apprenticeship",
                "signup_date": day(start),
                "documents_due_date": day(start + 14),
                "signup_paperwork_complete": i % 4 != 0,
                "id_checked": i % 4 != 0,
                "right_to_work": True,
                "eligibility_confirmed": True,
                "exemption_claimed": i % 3 == 0,
                "exemption_paperwork_status": ["pending", "accepted", "rejected"][i % 3] if i % 3 == 0 else "accepted",
                "hs_review_due": day(rng.choice([-7, 6, 45])),
                "data_protection_signed": True,
            },
            subject_id=learner.id,
            assignee="quality",
        )
        created += 1
        if i % 3 == 0:
            items.create(
                "ilr",
                {
                    "learn_ref_number": f"LR{1000 + i:07d}",
                    "uln": learner.data["uln"],
                    "family_name": family,
                    "given_names": given,
                    "date_of_birth": learner.data["date_of_birth"],
                    "ethnicity": 31,
                    "sex": "F" if i % 2 == 0 else "M",
                    "llddhealthprob": 2,
                    "ni_number": learner.data["ni_number"],
                    "postcode_prior": learner.data["postcode"],
                    "postcode": learner.data["postcode"],
                    "learning_deliveries": [
                        {
                            "learn_aim_ref": "ZPROG001",
                            "aim_type": 1,
                            "aim_seq_number": 1,
                            "learn_start_date": day(start),
                            "learn_plan_end_date": day(max(end, start + 400)),
                            "fund_model": 36,
                            "prog_type": 25,
                            "std_code": 298,
                            "del_loc_postcode": "SO41 3AA",
                            "con_ref_number": f"A{i:02d}B7C"[:6],
                            "comp_status": 1,
                            "delivery_fams": [
                                {"type": "ACT", "code": "1", "date_from": day(start)},
                                {"type": "SOF", "code": "105"},
                            ],
                            "app_fin_records": [
                                {"type": "TNP", "code": 1, "date": day(start), "amount": 4500},
                                {"type": "TNP", "code": 2, "date": day(start), "amount": 500},
                            ],
                        }
                    ],
                    "contract": "levy_2526",
                },
                subject_id=learner.id,
            )
            created += 1
        if i % 5 == 0:
            items.create(
                "job",
                {
                    "employer_name": "Solent Logistics Ltd",
                    "job_title": "Warehouse operative",
                    "start_date": day(-rng.randint(10, 90)),
                    "hours_per_week": 37.5,
                    "contract_type": "permanent",
                    "evidence_received": i % 2 == 0,
                },
                subject_id=learner.id,
                assignee="claims",
            )
            created += 1
    session.commit()
    return created + _automations(session, registry, learner.id, today)


def _automations(session: Session, registry: Registry, learner_id: int, today: date) -> int:
    """The shipped example, switched on: every Monday an H&S review for each apprentice not
    reviewed for 12 weeks; a gateway hand-over to quality; a review reminder left in draft; and
    one H&S review booked by hand, waiting in the assessors' queue."""
    alex = Actor.for_user(UserService(session, registry).get("automator"), registry)
    automations = ItemService(session, alex, registry, today=lambda: today)
    for template in ("weekly_hs_reviews", "gateway_to_quality"):
        automation = automations.create("process_automation", template=template)
        automations.transition(automation.id, "active")
    automations.create("process_automation", template="review_reminder")
    claims = Actor.for_user(UserService(session, registry).get("claims"), registry)
    ItemService(session, claims, registry, today=lambda: today).create(
        "hs_review",
        {"employer_name": EMPLOYERS[0][0], "due_by": (today + timedelta(days=10)).isoformat()},
        template="workplace_visit",
        subject_id=learner_id,
        description="New workplace after a move: check it before the apprentice starts there.",
    )
    return 4
