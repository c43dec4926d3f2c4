"""Who hears about a change, through which channels; the in-app inbox and preferences.

The outbox relay (:mod:`engine.outbox`) hands each claimed row to :class:`Notifier`:

- a ``notify`` row names its recipients: user ids resolved when the change was made
  (``assignee``, ``creator``, ``role:NAME``, a user name, ``watchers``; the item service
  also tells the item's watchers about each change, once, and never its author);
- other kinds (``item_event``) are for plugins and webhooks; nobody is notified of them.

Each recipient gets the message through every channel they left on for its event kind
(see :data:`EVENTS`); e-mail may instead wait for their daily digest. Every message to
one user through one channel is a :class:`~engine.models.Delivery` with an idempotency
key, so a retried row never shows a second inbox entry or sends a second e-mail for a
recipient already served.
"""

from __future__ import annotations

import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import permissions
from engine.config import Settings
from engine.definitions.model import Registry
from engine.errors import NotFound, Problem, ValidationFailed
from engine.mail import Mailer, MailError, MailTemplates, build_message, message_id, templates_for
from engine.models import (
    Delivery,
    Item,
    Notification,
    NotificationPreference,
    Outbox,
    RoleGrant,
    User,
    Watcher,
    utcnow,
)
from engine.permissions import Actor

log = logging.getLogger(__name__)

#: event kinds a user can choose channels for: ``{kind: label on the preferences page}``
EVENTS: dict[str, str] = {
    "assigned": "An item is assigned to me",
    "transitioned": "A workflow step notifies me",
    "mentioned": "Someone mentions me in a comment",
    "reminder": "A date in an item is coming up",
    "watched": "An item I watch changes",
    "document_rejected": "A document I uploaded is rejected",
    "automation": "A process automation notifies me",
}

#: why the recipient receives a message of each kind, for the e-mail footer
_WHY = {
    "assigned": "an item was assigned to you",
    "transitioned": "a workflow step names you",
    "mentioned": "someone mentioned you in a comment",
    "reminder": "a reminder on this item names you",
    "watched": "you watch this item",
    "document_rejected": "you uploaded the document",
    "automation": "a process automation names you",
}

#: the preference row that turns the daily digest on: event ``*``, channel ``digest``
DIGEST_EVENT, DIGEST_CHANNEL = "*", "digest"


class DeliveryFailed(Exception):
    """Some deliveries of an outbox row failed; the row is tried again later."""


@dataclass(frozen=True)
class Message:
    """What one notification says, whatever the channel carries it."""

    reason: str
    text: str
    link: str
    item_id: int | None = None
    item_title: str = ""

    def url(self, base_url: str) -> str:
        """The absolute link; ``link`` is a path such as ``/items/12``."""
        return base_url.rstrip("/") + self.link if self.link.startswith("/") else self.link


@dataclass
class DeliveryContext:
    """What channels need while delivering: the session, settings and the mailer."""

    session: Session
    settings: Settings
    now: datetime
    mailer: Mailer | None = None
    templates: MailTemplates = field(default_factory=MailTemplates)

    def preferences_url(self) -> str:
        return self.settings.base_url.rstrip("/") + "/preferences"


class Channel(ABC):
    """A way to reach a user. Subclass it to add one (plugins add SMS this way).

    ``external`` channels leave the database, so each delivery is recorded as ``sending``
    and committed before the message goes, and as ``sent`` after. ``digestible`` channels
    can hold messages for the user's daily digest instead of sending each one.
    """

    key: str = ""
    label: str = ""
    external: bool = True
    digestible: bool = False
    #: event kinds the channel is on for until the user chooses (None: all of them); an
    #: opt-in channel such as SMS names only a few
    default_events: frozenset[str] | None = None
    #: a page where users set the channel up (e.g. their mobile number), linked from the preferences page
    setup_url: str = ""
    setup_label: str = ""

    def ready(self, ctx: DeliveryContext) -> bool:
        """False when the channel is not configured here (then it is not used at all)."""
        return True

    def address(self, user: User) -> str | None:
        """Where to reach ``user``; None skips them, with :attr:`missing` as the reason."""
        return user.username

    missing: str = "no address"

    @abstractmethod
    def send(self, ctx: DeliveryContext, delivery: Delivery, user: User, message: Message) -> None:
        """Send ``message``; raise an exception when it did not go (it is tried again later)."""


class InboxChannel(Channel):
    """The in-app inbox: a row in the same transaction as the delivery record."""

    key = "inbox"
    label = "In Tracker"
    external = False

    def send(self, ctx: DeliveryContext, delivery: Delivery, user: User, message: Message) -> None:
        ctx.session.add(
            Notification(
                user_id=user.id,
                item_id=message.item_id,
                outbox_id=delivery.outbox_id,
                reason=message.reason,
                text=message.text[:500],
                link=message.link,
                created_at=ctx.now,
            )
        )


class EmailChannel(Channel):
    """E-mail over SMTP, with an absolute link to the item."""

    key = "email"
    label = "E-mail"
    digestible = True
    missing = "no e-mail address"

    def ready(self, ctx: DeliveryContext) -> bool:
        return ctx.mailer is not None

    def address(self, user: User) -> str | None:
        return user.email or None

    def send(self, ctx: DeliveryContext, delivery: Delivery, user: User, message: Message) -> None:
        assert ctx.mailer is not None
        url = message.url(ctx.settings.base_url)
        subject, text, html = ctx.templates.render(
            "notification",
            {
                "recipient": user.label,
                "text": message.text.rstrip(".!? "),
                "url": url,
                "item_title": message.item_title,
                "why": _WHY.get(message.reason, "Tracker names you"),
                "preferences_url": ctx.preferences_url(),
            },
        )
        ctx.mailer.send(
            build_message(
                mail_from=ctx.settings.mail_from,
                to=user.email or "",
                subject=subject,
                text=text,
                html=html,
                msg_id=delivery.message_id or message_id(delivery.key, ctx.settings.mail_from),
                link=url,
            )
        )


def default_channels() -> list[Channel]:
    return [InboxChannel(), EmailChannel()]


def allowed_channels(settings: Settings, channels: Iterable[Channel]) -> list[Channel]:
    """The channels this installation may use: on TRAINING (a copy of LIVE's real people) only
    those that stay inside Tracker, i.e. the in-app inbox; every channel on LIVE."""
    if settings.environment == "training":
        return [c for c in channels if not c.external]
    return list(channels)


# -- who ---------------------------------------------------------------------------------------


def recipients(session: Session, item: Item, target: str) -> list[int]:
    """User ids a ``notify`` target names: ``assignee``, ``creator``, ``watchers``,
    ``role:NAME`` (every active user with the role) or a user name (if active)."""
    if target == "assignee":
        return [item.assignee_id] if item.assignee_id else []
    if target == "creator":
        return [item.created_by_id] if item.created_by_id else []
    if target == "watchers":
        return watcher_ids(session, item.id)
    if target.startswith("role:"):
        stmt = select(User.id).join(RoleGrant).where(RoleGrant.role == target[5:], User.active)
        return list(session.scalars(stmt))
    user_id = session.scalar(select(User.id).where(User.username == target, User.active))
    return [user_id] if user_id else []


def watcher_ids(session: Session, item_id: int) -> list[int]:
    """Active users watching the item."""
    stmt = select(Watcher.user_id).join(User, User.id == Watcher.user_id).where(Watcher.item_id == item_id, User.active)
    return list(session.scalars(stmt.order_by(Watcher.user_id)))


_MENTION = re.compile(r"(?<![\w.@-])@([a-z0-9][a-z0-9._@-]*)", re.IGNORECASE)


def mentioned_users(session: Session, registry: Registry, item: Item, text: str) -> list[User]:
    """Active users named as ``@username`` in ``text`` who may view ``item``."""
    names = {m.group(1).lower().rstrip("._-@") for m in _MENTION.finditer(text or "")}
    names.discard("")
    if not names:
        return []
    users = session.scalars(select(User).where(User.username.in_(names), User.active).order_by(User.username))
    tracker_type = registry.type(item.type_key, item.type_version)
    return [u for u in users if permissions.allows(Actor.for_user(u, registry), "items.view", tracker_type, item)]


# -- what each recipient wants -----------------------------------------------------------------


@dataclass
class PreferenceSet:
    """A user's choices: which channels are on for each event kind, and the digest."""

    channels: dict[str, set[str]]
    digest: bool = False
    #: per channel, the event kinds it is on for until chosen (None or missing: all)
    defaults: dict[str, frozenset[str] | None] = field(default_factory=dict)

    def wants(self, event: str, channel: str) -> bool:
        chosen = self.channels.get(event)
        if chosen is None:
            default = self.defaults.get(channel)
            return default is None or event in default
        return channel in chosen


class Preferences:
    """Read and save one user's notification preferences. Anything not saved is on."""

    def __init__(self, session: Session, user_id: int, channels: Iterable[Channel] | None = None) -> None:
        self.session = session
        self.user_id = user_id
        self.channels = list(channels or default_channels())

    def get(self) -> PreferenceSet:
        return load_preferences(self.session, [self.user_id], self.channels)[self.user_id]

    def save(self, enabled: dict[str, Iterable[str]], *, digest: bool) -> PreferenceSet:
        """Store the channels left on for each event kind (kinds not given keep every
        channel off) and the digest choice. Raises ValidationFailed for an unknown kind or
        channel; nothing is saved then."""
        keys = [c.key for c in self.channels]
        problems = [
            Problem("events", f"'{event}' is not a kind of notification", f"Use one of: {', '.join(EVENTS)}.")
            for event in enabled
            if event not in EVENTS
        ]
        problems += [
            Problem(event, f"'{channel}' is not a notification channel", f"Use one of: {', '.join(keys)}.")
            for event, chosen in enabled.items()
            for channel in chosen
            if channel not in keys
        ]
        if problems:
            raise ValidationFailed(problems)
        existing = {
            (p.event, p.channel): p
            for p in self.session.scalars(
                select(NotificationPreference).where(NotificationPreference.user_id == self.user_id)
            )
        }
        wanted = {(event, channel): channel in set(enabled.get(event, ())) for event in EVENTS for channel in keys}
        wanted[(DIGEST_EVENT, DIGEST_CHANNEL)] = digest
        for (event, channel), on in wanted.items():
            row = existing.get((event, channel))
            if row is None:
                self.session.add(NotificationPreference(user_id=self.user_id, event=event, channel=channel, enabled=on))
            else:
                row.enabled = on
        self.session.commit()
        return self.get()


def load_preferences(
    session: Session, user_ids: Iterable[int], channels: Iterable[Channel]
) -> dict[int, PreferenceSet]:
    """Preferences of several users in one query; users with no rows get everything on."""
    ids = list(user_ids)
    channels = list(channels)
    defaults = {c.key: c.default_events for c in channels}
    out = {uid: PreferenceSet({}, defaults=defaults) for uid in ids}
    if not ids:
        return out
    rows = session.scalars(select(NotificationPreference).where(NotificationPreference.user_id.in_(ids)))
    for row in rows:
        prefs = out[row.user_id]
        if (row.event, row.channel) == (DIGEST_EVENT, DIGEST_CHANNEL):
            prefs.digest = row.enabled
            continue
        chosen = prefs.channels.setdefault(row.event, {c.key for c in channels if prefs.wants(row.event, c.key)})
        if row.enabled:
            chosen.add(row.channel)
        else:
            chosen.discard(row.channel)
    return out


# -- delivering --------------------------------------------------------------------------------


class Notifier:
    """Turns claimed outbox rows into deliveries.

    Args:
        session: used and committed as deliveries are recorded.
        registry: the definitions, for channels that need them.
        settings: base URL for links, sender address, instance folder for templates.
        mailer: None when no SMTP server is configured (e-mail is then not used).
        channels: defaults to the inbox and e-mail.
        clock: returns "now" (naive UTC); tests pass a fixed one.
    """

    def __init__(
        self,
        session: Session,
        registry: Registry,
        settings: Settings,
        *,
        mailer: Mailer | None = None,
        channels: list[Channel] | None = None,
        templates: MailTemplates | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.session = session
        self.registry = registry
        self.settings = settings
        # TRAINING reaches nobody outside Tracker: no e-mail (nor digests copied from LIVE), no SMS
        self.mailer = None if settings.environment == "training" else mailer
        self.channels = allowed_channels(settings, channels or default_channels())
        self.templates = templates or templates_for(settings.instance_path)
        self.clock = clock

    def context(self) -> DeliveryContext:
        return DeliveryContext(self.session, self.settings, self.clock(), self.mailer, self.templates)

    def deliver(self, row: Outbox) -> None:
        """Deliver ``row`` to each recipient through each channel they want, skipping
        deliveries already made. Raises DeliveryFailed after trying all of them when any
        failed; the others stay recorded as done."""
        messages = self.messages_for(row)
        if not messages:
            return
        prefs = load_preferences(self.session, [u.id for u, _ in messages], self.channels)
        ctx = self.context()
        failures: list[str] = []
        for user, message in messages:
            for channel in self.channels:
                if not prefs[user.id].wants(message.reason, channel.key):
                    continue
                used, address = self._reach(ctx, row, channel, user)
                if not used:
                    continue
                try:
                    self._deliver_one(ctx, row, channel, user, message, address, digest=prefs[user.id].digest)
                except Exception as exc:  # noqa: BLE001 - one failing channel must not stop the others
                    self.session.rollback()
                    log.warning("outbox %s: %s to %s failed: %s", row.id, channel.key, user.username, exc)
                    failures.append(f"{channel.label} to {user.username}: {exc}")
        if failures:
            raise DeliveryFailed("; ".join(failures))

    def _reach(self, ctx: DeliveryContext, row: Outbox, channel: Channel, user: User) -> tuple[bool, str | None]:
        """Whether ``channel`` is used for ``user``, and their address on it (None: the
        delivery is recorded as skipped). A channel whose ``ready`` or ``address`` raises is
        left out for this recipient only, so the other channels and recipients still get the
        message; a plugin's channel has the error recorded (see :mod:`engine.plugins`)."""
        try:
            if not channel.ready(ctx):
                return False, None
            return True, channel.address(user)
        except Exception as exc:  # noqa: BLE001 - one broken channel must not stop the others
            # a failed query in address() leaves a PostgreSQL transaction unusable; every
            # delivery so far is committed, so nothing is lost
            self.session.rollback()
            log.warning("outbox %s: %s left out for %s: %s", row.id, channel.key, user.username, exc)
            return False, None

    def _deliver_one(
        self,
        ctx: DeliveryContext,
        row: Outbox,
        channel: Channel,
        user: User,
        message: Message,
        address: str | None,
        *,
        digest: bool,
    ) -> None:
        key = f"outbox:{row.id}:user:{user.id}:{channel.key}"
        delivery = self.session.scalar(select(Delivery).where(Delivery.key == key))
        if delivery is not None and delivery.status in ("sent", "queued", "skipped"):
            return
        if delivery is None:
            delivery = Delivery(
                key=key,
                outbox_id=row.id,
                user_id=user.id,
                channel=channel.key,
                status="sending",
                attempts=0,
                message_id=message_id(key, self.settings.mail_from),
                payload=asdict(message),
                created_at=ctx.now,
            )
            self.session.add(delivery)
        if address is None:
            delivery.status, delivery.detail = "skipped", channel.missing
            self._commit()
            return
        if channel.digestible and digest:
            delivery.status = "queued"
            self._commit()
            return
        delivery.attempts += 1
        if channel.external:
            self._commit()  # "sending" is on record before the message leaves
            try:
                channel.send(ctx, delivery, user, message)
            except Exception as exc:
                delivery.detail = str(exc)[:1000]
                self._commit()
                raise
        else:
            channel.send(ctx, delivery, user, message)
        delivery.status, delivery.sent_at, delivery.detail = "sent", ctx.now, None
        self._commit()

    def _commit(self) -> None:
        try:
            self.session.commit()
        except IntegrityError:
            self.session.rollback()
            raise DeliveryFailed("another worker is delivering the same message") from None

    def messages_for(self, row: Outbox) -> list[tuple[User, Message]]:
        """Who receives ``row`` and what it says to them."""
        payload = row.payload or {}
        item = self.session.get(Item, row.item_id) if row.item_id else None
        title = item.title if item is not None else ""
        if row.kind == "notify":
            ids = sorted(set(payload.get("recipients") or ()))
            message = Message(
                reason=payload.get("reason", "transitioned"),
                text=payload.get("text") or "Something changed",
                link=payload.get("link", ""),
                item_id=payload.get("item_id", row.item_id),
                item_title=title,
            )
            return [(user, message) for user in self._active(ids)]
        return []

    def _active(self, ids: Iterable[int]) -> list[User]:
        ids = list(ids)
        if not ids:
            return []
        return list(self.session.scalars(select(User).where(User.id.in_(ids), User.active).order_by(User.id)))

    # -- the daily digest ---------------------------------------------------------------------

    def send_digests(self) -> int:
        """Send each user with e-mails waiting their digest for today, once a day after
        ``settings.digest_hour`` (UTC). Returns how many digests went out.

        A digest is a delivery keyed by user and day: the waiting e-mails are tied to it
        before it is sent, so a digest that failed goes again with the same content and
        Message-ID, and a day's digest never goes twice. E-mails queued after today's
        digest wait for tomorrow's.
        """
        now = self.clock()
        if self.mailer is None or now.hour < self.settings.digest_hour:
            return 0
        user_ids = list(
            self.session.scalars(
                select(Delivery.user_id)
                .where(Delivery.status == "queued", Delivery.batch_key.is_(None))
                .group_by(Delivery.user_id)
            )
        )
        pending = list(
            self.session.scalars(
                select(Delivery.user_id)
                .where(Delivery.channel == DIGEST_CHANNEL, Delivery.status == "sending")
                .group_by(Delivery.user_id)
            )
        )
        sent = 0
        for user_id in sorted(set(user_ids) | set(pending)):
            try:
                sent += self._digest_for(user_id, now)
            except Exception as exc:  # noqa: BLE001 - one user's digest must not stop the others
                self.session.rollback()
                log.warning("digest for user %s failed: %s", user_id, exc)
        return sent

    def _digest_for(self, user_id: int, now: datetime) -> int:
        day = now.date().isoformat()
        key = f"digest:user:{user_id}:{day}"
        digest = self.session.scalar(select(Delivery).where(Delivery.key == key))
        if digest is not None and digest.status == "sent":
            return 0
        # an unsent digest of an earlier day goes first, under its own key
        earlier = self.session.scalar(
            select(Delivery).where(
                Delivery.user_id == user_id,
                Delivery.channel == DIGEST_CHANNEL,
                Delivery.status == "sending",
                Delivery.key != key,
            )
        )
        if earlier is not None:
            digest = earlier
        user = self.session.get(User, user_id)
        if digest is None:
            if user is None or not user.active or not user.email:
                return 0
            digest = Delivery(
                key=key,
                user_id=user_id,
                channel=DIGEST_CHANNEL,
                status="sending",
                attempts=0,
                message_id=message_id(key, self.settings.mail_from),
                created_at=now,
            )
            self.session.add(digest)
            self.session.execute(
                update(Delivery)
                .where(Delivery.user_id == user_id, Delivery.status == "queued", Delivery.batch_key.is_(None))
                .values(batch_key=key)
            )
            try:
                self.session.commit()
            except IntegrityError:  # another scheduler made it first
                self.session.rollback()
                return 0
        batch = select(Delivery).where(Delivery.batch_key == digest.key).order_by(Delivery.id)
        entries = list(self.session.scalars(batch))
        if entries and user is not None and user.email:
            base = self.settings.base_url.rstrip("/")
            subject, text, html = self.templates.render(
                "digest",
                {
                    "recipient": user.label,
                    "entries": [
                        {
                            "text": e.payload.get("text", ""),
                            "url": base + e.payload.get("link", "") if e.payload.get("link") else base,
                        }
                        for e in entries
                    ],
                    "preferences_url": base + "/preferences",
                },
            )
            digest.attempts += 1
            self.session.commit()
            try:
                self.mailer.send(
                    build_message(
                        mail_from=self.settings.mail_from,
                        to=user.email,
                        subject=subject,
                        text=text,
                        html=html,
                        msg_id=digest.message_id or message_id(digest.key, self.settings.mail_from),
                    )
                )
            except MailError as exc:
                digest.detail = str(exc)[:1000]
                self.session.commit()
                raise
        digest.status, digest.sent_at, digest.detail = "sent", now, None
        for entry in entries:
            entry.status, entry.sent_at = "sent", now
        self.session.commit()
        return 1 if entries else 0


# -- the inbox ---------------------------------------------------------------------------------


class Inbox:
    """One user's in-app notifications, newest first."""

    def __init__(self, session: Session, user_id: int, *, clock: Callable[[], datetime] = utcnow) -> None:
        self.session = session
        self.user_id = user_id
        self.clock = clock

    def unread_count(self) -> int:
        stmt = select(func.count()).select_from(Notification)
        return self.session.scalar(stmt.where(Notification.user_id == self.user_id, Notification.read_at.is_(None)))

    def entries(self, *, limit: int = 25, offset: int = 0, unread_only: bool = False) -> tuple[list[Notification], int]:
        """A page of notifications and how many there are in all."""
        where = [Notification.user_id == self.user_id]
        if unread_only:
            where.append(Notification.read_at.is_(None))
        total = self.session.scalar(select(func.count()).select_from(Notification).where(*where)) or 0
        stmt = select(Notification).where(*where).order_by(Notification.id.desc()).limit(limit).offset(offset)
        return list(self.session.scalars(stmt)), total

    def get(self, notification_id: int) -> Notification:
        """The user's own notification. Raises NotFound for anyone else's."""
        entry = self.session.get(Notification, notification_id)
        if entry is None or entry.user_id != self.user_id:
            raise NotFound(f"There is no notification #{notification_id} in your inbox.", "Open your inbox again.")
        return entry

    def mark_read(self, notification_id: int) -> Notification:
        """Mark one notification read (again is harmless). Raises NotFound."""
        entry = self.get(notification_id)
        if entry.read_at is None:
            entry.read_at = self.clock()
            self.session.commit()
        return entry

    def mark_all_read(self) -> int:
        """Mark every unread notification read; returns how many were unread."""
        result = self.session.execute(
            update(Notification)
            .where(Notification.user_id == self.user_id, Notification.read_at.is_(None))
            .values(read_at=self.clock())
        )
        self.session.commit()
        return result.rowcount or 0
