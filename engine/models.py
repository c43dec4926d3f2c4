"""The run-time model: items, their append-only history, users, role grants, the outbox
and what delivering it leaves behind (inbox notifications, deliveries, reminders sent)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated, Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, LargeBinary, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


#: JSON on SQLite, JSONB on PostgreSQL (indexable, compact)
JSONType = JSON().with_variant(JSONB(), "postgresql")

intpk = Annotated[int, mapped_column(Integer, primary_key=True)]
created_at = Annotated[datetime, mapped_column(default=utcnow)]


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSONType, list[Any]: JSONType}


class User(Base):
    __tablename__ = "users"

    id: Mapped[intpk]
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    email: Mapped[str | None] = mapped_column(String(320))
    password_hash: Mapped[str | None] = mapped_column(String(200))
    totp_secret: Mapped[str | None] = mapped_column(String(64))
    #: a secret shown on the enrolment page, kept until the user confirms it with a code
    totp_pending_secret: Mapped[str | None] = mapped_column(String(64))
    #: the last TOTP time-step accepted; a code from the same or an earlier step is a replay
    totp_last_step: Mapped[int] = mapped_column(default=0)
    #: bumped on deactivation, password or 2FA reset, so every open session ends at once
    session_epoch: Mapped[int] = mapped_column(default=0)
    active: Mapped[bool] = mapped_column(default=True)
    created_at: Mapped[created_at]
    last_login_at: Mapped[datetime | None]

    grants: Mapped[list[RoleGrant]] = relationship(back_populates="user", cascade="all, delete-orphan", lazy="selectin")

    @property
    def role_keys(self) -> list[str]:
        return sorted(g.role for g in self.grants)

    @property
    def label(self) -> str:
        return self.display_name or self.username


class RecoveryCode(Base):
    """One-time 2FA recovery codes, stored hashed like passwords."""

    __tablename__ = "recovery_codes"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    code_hash: Mapped[str] = mapped_column(String(200))
    used_at: Mapped[datetime | None]


class ApiToken(Base):
    """A bearer token for the JSON API. Only a SHA-256 of the token is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(100), default="")
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(12))
    created_at: Mapped[created_at]
    last_used_at: Mapped[datetime | None]
    revoked_at: Mapped[datetime | None]

    user: Mapped[User] = relationship(lazy="joined")


class RoleSetting(Base):
    """Per-role settings an admin changes in the UI (roles themselves are definitions)."""

    __tablename__ = "role_settings"

    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    require_2fa: Mapped[bool] = mapped_column(default=False)


class RoleGrant(Base):
    __tablename__ = "role_grants"
    __table_args__ = (UniqueConstraint("user_id", "role"),)

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    role: Mapped[str] = mapped_column(String(64))

    user: Mapped[User] = relationship(back_populates="grants")


class Item(Base):
    __tablename__ = "items"
    __table_args__ = (
        # Duplicate prevention must hold under concurrency, so it is the database's job.
        UniqueConstraint("type_key", "identity_key", name="uq_items_identity"),
        Index("ix_items_type_status", "type_key", "status"),
        Index("ix_items_assignee_status", "assignee_id", "status"),
        Index("ix_items_type_due", "type_key", "due_date"),
        Index("ix_items_subject", "subject_id"),
    )

    id: Mapped[intpk]
    type_key: Mapped[str] = mapped_column(String(64))
    type_version: Mapped[int]
    status: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("items.id"))
    assignee_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    due_date: Mapped[date | None]
    identity_key: Mapped[str | None] = mapped_column(String(500))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    #: warnings from rules with ``severity: warning``, stored so they can be listed and counted
    problems: Mapped[list[Any]] = mapped_column(default=list)
    problem_count: Mapped[int] = mapped_column(default=0)
    #: percent complete (0-100) of the qualification the item tracks; None for types without progress
    progress: Mapped[float | None]
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    updated_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    version: Mapped[int] = mapped_column(default=1)

    __mapper_args__ = {"version_id_col": version}

    subject: Mapped[Item | None] = relationship(remote_side="Item.id", lazy="joined", join_depth=1)
    assignee: Mapped[User | None] = relationship(foreign_keys=[assignee_id], lazy="joined")
    created_by: Mapped[User | None] = relationship(foreign_keys=[created_by_id])


class Event(Base):
    """Append-only history. ``payload`` depends on ``kind``:

    created {data}; updated {changes: [{path, old, new}]}; transitioned {from, to,
    transition}; assigned {from, to}; commented {text}.
    """

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_item", "item_id", "id"),)

    id: Mapped[intpk]
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[created_at]
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)

    actor: Mapped[User | None] = relationship(lazy="joined")


class Outbox(Base):
    """Side effects written in the same transaction as the change that caused them.

    ``status`` moves ``pending`` -> ``processing`` (claimed by ``claimed_by`` until
    ``locked_until``) -> ``done``; a failure puts it back to ``pending`` with a later
    ``available_at``, and after the last retry to ``dead``. See :mod:`engine.outbox`.
    """

    __tablename__ = "outbox"
    __table_args__ = (Index("ix_outbox_pending", "status", "available_at"),)

    id: Mapped[intpk]
    kind: Mapped[str] = mapped_column(String(32))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    available_at: Mapped[datetime] = mapped_column(default=utcnow)
    #: the worker holding the claim, and until when; a claim past its time is stale and taken again
    claimed_by: Mapped[str | None] = mapped_column(String(100))
    locked_until: Mapped[datetime | None]
    processed_at: Mapped[datetime | None]


class Watcher(Base):
    """A user who follows an item: ``notify: watchers`` reaches them, and so do its changes."""

    __tablename__ = "watchers"
    __table_args__ = (Index("ix_watchers_user", "user_id"),)

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    created_at: Mapped[created_at]


class Notification(Base):
    """One entry of a user's in-app inbox. At most one per outbox row and user, so a
    retried delivery never shows twice."""

    __tablename__ = "notifications"
    __table_args__ = (
        UniqueConstraint("outbox_id", "user_id", name="uq_notifications_outbox_user"),
        Index("ix_notifications_user_read", "user_id", "read_at"),
    )

    id: Mapped[intpk]
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"))
    reason: Mapped[str] = mapped_column(String(32))
    text: Mapped[str] = mapped_column(String(500))
    link: Mapped[str] = mapped_column(String(300), default="")
    created_at: Mapped[created_at]
    read_at: Mapped[datetime | None]


class Delivery(Base):
    """One message to one user through one channel; ``key`` is its idempotency key.

    ``status``: ``sending`` (written before the message leaves), ``sent``, ``queued``
    (an e-mail waiting for the user's daily digest, carried by the digest ``batch_key``)
    or ``skipped`` (with the reason in ``detail``).
    """

    __tablename__ = "deliveries"
    __table_args__ = (Index("ix_deliveries_user_status", "user_id", "status"),)

    id: Mapped[intpk]
    key: Mapped[str] = mapped_column(String(200), unique=True)
    outbox_id: Mapped[int | None] = mapped_column(ForeignKey("outbox.id", ondelete="SET NULL"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    channel: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(default=0)
    message_id: Mapped[str | None] = mapped_column(String(300))
    batch_key: Mapped[str | None] = mapped_column(String(200), index=True)
    #: what the message said, kept for queued digest entries
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    sent_at: Mapped[datetime | None]


class NotificationPreference(Base):
    """A user's choice for one event kind and channel; no row means the default (on).

    The daily digest is the row with event ``*`` and channel ``digest``.
    """

    __tablename__ = "notification_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    event: Mapped[str] = mapped_column(String(32), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    enabled: Mapped[bool] = mapped_column(default=True)


class SentReminder(Base):
    """A reminder sent for one item and one date: the scheduler never sends it twice,
    and a changed date is a new key, so it is sent again for the new date."""

    __tablename__ = "sent_reminders"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    reminder: Mapped[str] = mapped_column(String(200), primary_key=True)
    on_date: Mapped[date] = mapped_column(primary_key=True)
    sent_at: Mapped[created_at]


class PluginError(Base):
    """A plugin hook that raised: when, which plugin and hook, and what it said. Listed on
    ``/admin/plugins`` and counted by ``/health``; the plugin's part was skipped (or, for a
    lifecycle hook, retried through the outbox)."""

    __tablename__ = "plugin_errors"
    __table_args__ = (Index("ix_plugin_errors_at", "at"),)

    id: Mapped[intpk]
    at: Mapped[created_at]
    plugin: Mapped[str] = mapped_column(String(100))
    hook: Mapped[str] = mapped_column(String(100))
    message: Mapped[str] = mapped_column(Text)
    detail: Mapped[str] = mapped_column(Text, default="")


class PluginState(Base):
    """Small values a plugin keeps between runs, keyed by plugin and key (e.g. a user's SMS
    number and opt-in). Read and written through :class:`engine.plugins.PluginStore`."""

    __tablename__ = "plugin_state"

    plugin: Mapped[str] = mapped_column(String(100), primary_key=True)
    key: Mapped[str] = mapped_column(String(200), primary_key=True)
    value: Mapped[dict[str, Any]] = mapped_column(default=dict)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class AutomationRun(Base):
    """What a process automation did for one trigger instance and one target item: the
    unique key makes a re-run or a duplicate event do nothing twice.

    ``trigger_key`` names the trigger instance (``event:<outbox id>``, ``schedule:<local
    time>``, ``date:<field>:<date>``); ``target_key`` is the target item's id, ``-`` for a
    run with no item, or ``*`` for the marker that claims a whole scheduled run.
    ``status``: ``done``, ``skipped``, ``failed`` (with the reason in ``detail``; taken up
    again only by a run of the same trigger that resumes a run that died), and ``running``
    for a marker whose run has not finished.
    """

    __tablename__ = "automation_runs"
    __table_args__ = (
        UniqueConstraint("automation_id", "trigger_key", "target_key", name="uq_automation_runs_key"),
        Index("ix_automation_runs_result", "automation_id", "target_key", "result_id"),
    )

    id: Mapped[intpk]
    automation_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    trigger_key: Mapped[str] = mapped_column(String(200))
    target_key: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16))
    #: the item the run created, if any
    result_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    detail: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(default=1)
    at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    result: Mapped[Item | None] = relationship(foreign_keys=[result_id])


class AssignmentCursor(Base):
    """Whose turn it is for a type's ``round_robin`` assignment: a counter bumped atomically
    by each new item, so turns are fair across web processes and workers."""

    __tablename__ = "assignment_cursors"

    type_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(64), primary_key=True)
    turns: Mapped[int] = mapped_column(default=0)


class TypeDefinition(Base):
    """One version of a tracker type kept in the database, in the documents of the folder
    format: ``schema.json``, ``type.yaml``, its own workflow and roles (both optional).

    ``status`` is ``published`` (immutable; items are created under the newest) or ``draft``
    (at most one per type, numbered one after the newest published version, edited in place).
    See :mod:`engine.definitions.store`.
    """

    __tablename__ = "type_definitions"
    __table_args__ = (UniqueConstraint("type_key", "version", name="uq_type_definitions_version"),)

    id: Mapped[intpk]
    type_key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    status: Mapped[str] = mapped_column(String(16), default="draft")
    schema_json: Mapped[str] = mapped_column(Text)
    type_yaml: Mapped[str] = mapped_column(Text)
    workflow_yaml: Mapped[str] = mapped_column(Text, default="")
    roles_yaml: Mapped[str] = mapped_column(Text, default="")
    note: Mapped[str] = mapped_column(Text, default="")
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[created_at]
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    created_by: Mapped[User | None] = relationship(lazy="joined")


class DefinitionPublish(Base):
    """The audit log of definitions kept in the database: every publish, rollback and import,
    with who, when, the note and a unified diff of each document against the version before.
    Its highest id is the definitions' generation: a process whose registry is older reloads."""

    __tablename__ = "definition_publishes"
    __table_args__ = (Index("ix_definition_publishes_type", "type_key", "version"),)

    id: Mapped[intpk]
    type_key: Mapped[str] = mapped_column(String(64))
    version: Mapped[int]
    action: Mapped[str] = mapped_column(String(16))
    #: for a rollback, the version whose documents were published again
    from_version: Mapped[int | None]
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    at: Mapped[created_at]
    note: Mapped[str] = mapped_column(Text, default="")
    diff: Mapped[str] = mapped_column(Text, default="")

    actor: Mapped[User | None] = relationship(lazy="joined")


class Document(Base):
    """A file attached to an item, in one of its type's categories, with its quality check.

    The file is stored once per content (``sha256``) under the documents folder; ``filename``
    is only what the uploader called it. ``qa_state`` is ``pending``, ``accepted`` or
    ``rejected`` (with ``qa_reason``). ``current`` is False once the document was deleted or
    replaced by a newer upload (``replaced_by_id``); only current documents count.
    """

    __tablename__ = "documents"
    __table_args__ = (
        # an item's documents by category (the page, the check before a step) ...
        Index("ix_documents_item_category", "item_id", "category", "qa_state", "current"),
        # ... and the items with accepted documents of given categories (documents_missing task lists)
        Index("ix_documents_category_state", "category", "qa_state", "current", "item_id"),
    )

    id: Mapped[intpk]
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(100))
    size: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    qa_state: Mapped[str] = mapped_column(String(16), default="pending")
    qa_reason: Mapped[str | None] = mapped_column(Text)
    qa_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    qa_at: Mapped[datetime | None]
    uploaded_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    uploaded_at: Mapped[created_at]
    current: Mapped[bool] = mapped_column(default=True)
    replaced_by_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id"))
    deleted_at: Mapped[datetime | None]
    deleted_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))

    uploaded_by: Mapped[User | None] = relationship(foreign_keys=[uploaded_by_id], lazy="joined")
    qa_by: Mapped[User | None] = relationship(foreign_keys=[qa_by_id], lazy="joined")


class ProgressTick(Base):
    """A criterion of a qualification structure an assessor marked as met on an item, with
    the evidence reference and the date it was met. Unticking deletes the row; both steps
    are events in the item's history."""

    __tablename__ = "progress_ticks"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    qualification: Mapped[str] = mapped_column(String(64), primary_key=True)
    criterion: Mapped[str] = mapped_column(String(200), primary_key=True)
    evidence: Mapped[str] = mapped_column(String(200))
    on_date: Mapped[date]
    ticked_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"))
    ticked_at: Mapped[created_at]

    ticked_by: Mapped[User | None] = relationship(lazy="joined")


class TrainingCopy(Base):
    """Present only in a TRAINING database: the row ``tracker training refresh`` writes after
    copying LIVE into it. A database without it is never treated as a TRAINING copy, so a
    TRAINING instance refuses to run on it and a refresh refuses to overwrite it (unless empty)."""

    __tablename__ = "training_copy"

    id: Mapped[intpk]
    refreshed_at: Mapped[datetime]
    #: the LIVE database it was copied from, without its password
    source: Mapped[str] = mapped_column(String(500))
    revision: Mapped[str] = mapped_column(String(500), default="")
    #: rows per table at the time of the copy
    counts: Mapped[dict[str, Any]] = mapped_column(default=dict)


class BulkExport(Base):
    """One bulk download (a CSV list, an ILR file made or downloaded): who, from which address,
    what and how many. Attempts refused because of the address (``TRACKER_BULK_EXPORT_ALLOW``)
    are kept too, with ``outcome`` ``refused``."""

    __tablename__ = "bulk_exports"
    __table_args__ = (Index("ix_bulk_exports_kind_at", "kind", "at"),)

    id: Mapped[intpk]
    at: Mapped[created_at]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: the client's address; empty for the command line (this machine)
    address: Mapped[str] = mapped_column(String(64), default="")
    #: ``csv``, ``ilr_xml`` (an ILR file made), ``ilr_download`` (an ILR file downloaded) or
    #: ``api_list`` (an API list refused for its address)
    kind: Mapped[str] = mapped_column(String(32))
    type_key: Mapped[str | None] = mapped_column(String(64))
    #: the filters and options of the export (status, assignee, q, sort; UKPRN, year ...)
    filters: Mapped[dict[str, Any]] = mapped_column(default=dict)
    item_count: Mapped[int] = mapped_column(default=0)
    filename: Mapped[str] = mapped_column(String(200), default="")
    #: ``done``, ``refused`` (address not allowed) or ``nothing`` (an ILR export that wrote no file)
    outcome: Mapped[str] = mapped_column(String(16), default="done")
    #: what else is worth keeping: learners left out of an ILR file and why
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)

    user: Mapped[User | None] = relationship(lazy="joined")


class ImportJob(Base):
    """A file being imported from the web page: its rows, where the dry run and the import
    are, and their counts. ``status``: ``checking`` (dry run running), ``checked`` (report
    ready), ``importing``, ``done``, or ``failed`` (the job stopped; ``error`` says why).
    The file is kept (``content``) so the failed rows can be downloaded with their reasons."""

    __tablename__ = "import_jobs"
    __table_args__ = (Index("ix_import_jobs_user", "user_id", "id"),)

    id: Mapped[intpk]
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    type_key: Mapped[str] = mapped_column(String(64))
    filename: Mapped[str] = mapped_column(String(255))
    encoding: Mapped[str] = mapped_column(String(32), default="utf-8")
    content: Mapped[bytes] = mapped_column(LargeBinary, deferred=True)
    status: Mapped[str] = mapped_column(String(16), default="checking")
    total_rows: Mapped[int] = mapped_column(default=0)
    #: rows gone through in the current step (the dry run, then the import)
    processed: Mapped[int] = mapped_column(default=0)
    #: what the dry run found
    valid_rows: Mapped[int] = mapped_column(default=0)
    invalid_rows: Mapped[int] = mapped_column(default=0)
    duplicate_rows: Mapped[int] = mapped_column(default=0)
    #: what the import did
    created: Mapped[int] = mapped_column(default=0)
    duplicates: Mapped[int] = mapped_column(default=0)
    failed: Mapped[int] = mapped_column(default=0)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    #: the last sign of life of the job working on it (a job that stops updating has died)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None]

    user: Mapped[User | None] = relationship(lazy="joined")


class ImportProblem(Base):
    """One problem with one row of an import: found by the dry run (``step`` ``check``) or
    by the import itself (``import``). ``kind`` is ``invalid`` or ``duplicate``."""

    __tablename__ = "import_problems"
    __table_args__ = (Index("ix_import_problems_job", "job_id", "step", "line"),)

    id: Mapped[intpk]
    job_id: Mapped[int] = mapped_column(ForeignKey("import_jobs.id", ondelete="CASCADE"))
    step: Mapped[str] = mapped_column(String(8))
    line: Mapped[int]
    column: Mapped[str] = mapped_column(String(200), default="")
    message: Mapped[str] = mapped_column(Text)
    advice: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(16), default="invalid")
    existing_id: Mapped[int | None]


class AuditEntry(Base):
    """One security-relevant event, written in the same transaction as the change it records
    (see :mod:`engine.audit`): sign-ins and their failures, lockouts, sign-outs, two-factor
    changes, API tokens, user and role changes, bulk exports and definition publishes (linked
    to their own ``bulk_exports`` / ``definition_publishes`` rows), plugin administration.

    ``actor_*`` is who did it (``system`` for the command line); ``user_*`` the account it
    concerns, with ``username`` as typed for a sign-in attempt on a name that does not exist."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_at", "at"),
        Index("ix_audit_log_kind_at", "kind", "at"),
        Index("ix_audit_log_actor_at", "actor_id", "at"),
        Index("ix_audit_log_user_at", "user_id", "at"),
    )

    id: Mapped[intpk]
    at: Mapped[created_at]
    kind: Mapped[str] = mapped_column(String(48))
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    actor_name: Mapped[str] = mapped_column(String(64), default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    username: Mapped[str] = mapped_column(String(64), default="")
    #: the client's address; empty for the command line and background work
    address: Mapped[str] = mapped_column(String(64), default="")
    #: what else was concerned, in words: a role, a token, a type and version, a file
    target: Mapped[str] = mapped_column(String(300), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(default=dict)
    bulk_export_id: Mapped[int | None] = mapped_column(ForeignKey("bulk_exports.id", ondelete="SET NULL"))
    definition_publish_id: Mapped[int | None] = mapped_column(
        ForeignKey("definition_publishes.id", ondelete="SET NULL")
    )

    bulk_export: Mapped[BulkExport | None] = relationship()
    definition_publish: Mapped[DefinitionPublish | None] = relationship()


class LoginLockout(Base):
    """Failed sign-ins of one account (wrong passwords and wrong two-factor codes) counted within
    ``TRACKER_LOCKOUT_MINUTES`` of the first; at ``TRACKER_LOCKOUT_ATTEMPTS`` the account is
    locked (``locked_at``) until a user administrator unlocks it. A successful sign-in clears it."""

    __tablename__ = "login_lockouts"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    failures: Mapped[int] = mapped_column(default=0)
    first_failed_at: Mapped[datetime | None]
    locked_at: Mapped[datetime | None]


class WebSession(Base):
    """One web sign-in. The browser's cookie carries a random id whose SHA-256 is ``token_hash``;
    signing out, the idle timeout, the absolute lifetime or a change of the user's session epoch
    end it here (``ended_at``, ``ended_reason``), so a copied cookie stops working too."""

    __tablename__ = "web_sessions"
    __table_args__ = (Index("ix_web_sessions_user", "user_id", "ended_at"),)

    id: Mapped[intpk]
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[created_at]
    last_seen_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None]
    #: ``signed_out``, ``idle``, ``expired``, ``replaced`` (a new sign-in in the same browser) or ``ended`` (epoch)
    ended_reason: Mapped[str | None] = mapped_column(String(16))
    address: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(200), default="")


class BackgroundJob(Base):
    """Long work started on the web and run in the background (see :mod:`engine.background`):
    an ILR export, the migration of a type's items. ``status``: ``queued``, ``running``,
    ``done`` or ``failed`` (``error`` says why). ``processed`` of ``total`` counts ``unit``
    (learners, items) in the current ``stage``; ``result`` is what the work returned, for its
    result page. Only the user who started it (and administrators) may see it."""

    __tablename__ = "background_jobs"
    __table_args__ = (
        Index("ix_background_jobs_user", "user_id", "kind", "id"),
        Index("ix_background_jobs_subject", "kind", "subject", "status"),
    )

    id: Mapped[intpk]
    #: what the work is: ``ilr_export``, ``type_migration``
    kind: Mapped[str] = mapped_column(String(32))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    #: what it works on, when it is one thing (the type key of a migration)
    subject: Mapped[str] = mapped_column(String(200), default="")
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str] = mapped_column(String(200), default="")
    unit: Mapped[str] = mapped_column(String(32), default="")
    processed: Mapped[int] = mapped_column(default=0)
    total: Mapped[int] = mapped_column(default=0)
    result: Mapped[dict[str, Any] | None] = mapped_column()
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[created_at]
    #: the last sign of life of the work (a job that stops updating has died)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    finished_at: Mapped[datetime | None]

    user: Mapped[User | None] = relationship(lazy="joined")
