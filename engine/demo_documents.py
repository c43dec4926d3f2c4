"""Demo documents and progress, loaded through the same services as the demo caseload.

Most learners' sign-up form and photo ID are uploaded by the claims team and accepted by
quality; one in eight has a sign-up form rejected (so "Signup paperwork incomplete" and the
learner page have something to show, and the claims user has a notification); apprentices on
programme have their sign-up paperwork accepted (their start needs it) and some criteria of
their standard ticked by their assessor; apprentices still signing up are at each stage of it.
"""

from __future__ import annotations

import io
import random
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.definitions import Registry
from engine.documents import DocumentStore
from engine.models import Item
from engine.permissions import Actor
from engine.services import UserService
from engine.services.documents import DocumentService
from engine.services.progress import ProgressService

EVIDENCE = ("Observation", "Professional discussion", "Work product", "Witness testimony", "Portfolio page")


def pdf(text: str) -> bytes:
    """A one-page PDF saying ``text``: small, valid, and opened by any reader."""
    safe = text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
    stream = f"BT /F1 14 Tf 72 720 Td ({safe}) Tj ET".encode("latin-1", "replace")
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    start = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, start)
    return out


#: the apprenticeship sign-up paperwork, as "Confirm start on programme" requires it
APPRENTICESHIP_SIGNUP = (
    ("commitment_statement", "Signed training plan"),
    ("apprenticeship_agreement", "Signed apprenticeship agreement"),
    ("initial_assessment", "Initial assessment and skills scan"),
)
#: how far an apprentice still in sign-up has got: all accepted (ready to start), the last one
#: waiting for its check, one rejected, nothing uploaded yet
SIGNUP_STAGES = ("accepted", "awaiting_check", "rejected", "none")


def signup_paperwork(session: Session, registry: Registry, store: DocumentStore, item_id: int, stage: str) -> None:
    """Upload an apprenticeship's sign-up documents as the claims team, checked by quality as
    ``stage`` (one of :data:`SIGNUP_STAGES`) says."""
    if stage == "none":
        return
    users = UserService(session, registry)
    claims = DocumentService(session, Actor.for_user(users.get("claims"), registry), registry, store)
    quality = DocumentService(session, Actor.for_user(users.get("quality"), registry), registry, store)
    item = session.get(Item, item_id)
    who = item.subject.title if item.subject else f"item {item.id}"
    for number, (category, label) in enumerate(APPRENTICESHIP_SIGNUP):
        name = f"{category.replace('_', '-')}-{item.id}.pdf"
        document = claims.upload(item.id, category, name, io.BytesIO(pdf(f"{label}: {who}")))
        last = number == len(APPRENTICESHIP_SIGNUP) - 1
        if stage == "awaiting_check" and last:
            continue
        if stage == "rejected" and category == "apprenticeship_agreement":
            quality.reject(document.id, "The employer has not signed the agreement; send it back to them to sign.")
            continue
        quality.accept(document.id)


def load(session: Session, registry: Registry, store: DocumentStore, today: date) -> None:
    users = UserService(session, registry)
    claims = DocumentService(session, Actor.for_user(users.get("claims"), registry), registry, store)
    quality = DocumentService(session, Actor.for_user(users.get("quality"), registry), registry, store)
    compliance = session.scalars(select(Item).where(Item.type_key == "compliance").order_by(Item.id)).all()
    for number, item in enumerate(compliance):
        who = item.subject.title if item.subject else f"item {item.id}"
        if item.data.get("signup_paperwork_complete"):
            for category, label in (("signup_form", "Signed sign-up form"), ("id_evidence", "Photo ID")):
                name = f"{category.replace('_', '-')}-{item.id}.pdf"
                document = claims.upload(item.id, category, name, io.BytesIO(pdf(f"{label}: {who}")))
                quality.accept(document.id)
        elif number % 8 == 0:
            document = claims.upload(
                item.id, "signup_form", f"signup-form-{item.id}.pdf", io.BytesIO(pdf(f"Sign-up form: {who}"))
            )
            quality.reject(document.id, "The learner's signature is missing on page 2; ask them to sign and rescan it.")
    rng = random.Random(384)
    apprenticeships = session.scalars(
        select(Item).where(Item.type_key == "apprenticeship", Item.status == "on_programme").order_by(Item.id)
    ).all()
    for item in apprenticeships:
        if item.assignee is None:
            continue
        service = ProgressService(session, Actor.for_user(item.assignee, registry), registry, today=lambda: today)
        tree = service.view(item.id).tree
        if tree is None:
            continue
        paths = [c.path for u in tree.units for e in u.elements for c in e.criteria]
        met = paths[: rng.randint(3, len(paths) - 3)]
        ticks = [
            {
                "criterion": path,
                "evidence": f"{rng.choice(EVIDENCE)} {n + 1}",
                "date": (today - timedelta(days=rng.randint(7, 200))).isoformat(),
            }
            for n, path in enumerate(met)
        ]
        service.apply(item.id, ticks=ticks)
