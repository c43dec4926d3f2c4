"""Web sign-in sessions kept on the server, so that signing out, the idle timeout and the
absolute lifetime end a session for good: a copy of the cookie stops working too.

The browser's (signed) cookie carries a random session id; only its SHA-256 is stored. Each
sign-in (and each completed two-factor step) starts a new id, so nothing captured before it
is signed in afterwards. :meth:`SessionStore.check` answers whether an id may still be used
and notes that it was, at most once a minute (idle time is counted to the minute).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from engine import audit
from engine.models import User, WebSession, utcnow

#: seconds between two writes of a session's ``last_seen_at``
SEEN_RESOLUTION = 60


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Start, check and end web sessions; ``idle`` and ``lifetime`` bound how long one lasts."""

    def __init__(self, session: Session, *, idle: timedelta, lifetime: timedelta) -> None:
        self.session = session
        self.idle = idle
        self.lifetime = lifetime

    def start(self, user: User, *, address: str = "", user_agent: str = "", replaces: str | None = None) -> str:
        """A new session for ``user``; returns the id for the cookie (stored only hashed). The
        session this browser had (``replaces``) ends: one browser, one sign-in."""
        if replaces:
            self._end(replaces, "replaced")
        # the user's sessions past their lifetime are dead whatever they say: no need to keep them
        self.session.execute(
            delete(WebSession).where(WebSession.user_id == user.id, WebSession.created_at < utcnow() - self.lifetime)
        )
        token = secrets.token_urlsafe(32)
        self.session.add(
            WebSession(token_hash=_hash(token), user_id=user.id, address=address[:64], user_agent=user_agent[:200])
        )
        self.session.commit()
        return token

    def check(self, token: str | None, user_id: int, *, now: datetime | None = None) -> bool:
        """True when ``token`` is a live session of ``user_id``. A session past the idle timeout
        or its lifetime ends here (audited as ``session.ended``)."""
        if not token:
            return False
        row = self.session.scalar(select(WebSession).where(WebSession.token_hash == _hash(token)))
        if row is None or row.user_id != user_id or row.ended_at is not None:
            return False
        now = now or utcnow()
        reason = "idle" if now - row.last_seen_at > self.idle else None
        reason = "expired" if now - row.created_at > self.lifetime else reason
        if reason is not None:
            row.ended_at, row.ended_reason = now, reason
            user = self.session.get(User, row.user_id)
            audit.record(self.session, "session.ended", user=user, actor=None, detail={"reason": reason})
            self.session.commit()
            return False
        if (now - row.last_seen_at).total_seconds() >= SEEN_RESOLUTION:
            row.last_seen_at = now
            self.session.commit()
        return True

    def end(self, token: str | None, user: User | None, *, address: str = "") -> None:
        """Sign out: the session ends on the server (audited as ``logout``)."""
        if token and self._end(token, "signed_out"):
            audit.record(self.session, "logout", user=user, actor=None, address=address)
        self.session.commit()

    def end_all(self, user: User, reason: str = "ended") -> int:
        """End every open session of ``user``; returns how many."""
        result = self.session.execute(
            update(WebSession)
            .where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
            .values(ended_at=utcnow(), ended_reason=reason)
        )
        self.session.commit()
        return result.rowcount or 0

    def open_sessions(self, user: User) -> list[WebSession]:
        stmt = select(WebSession).where(WebSession.user_id == user.id, WebSession.ended_at.is_(None))
        return list(self.session.scalars(stmt.order_by(WebSession.id)))

    def _end(self, token: str, reason: str) -> bool:
        row = self.session.scalar(select(WebSession).where(WebSession.token_hash == _hash(token)))
        if row is None or row.ended_at is not None:
            return False
        row.ended_at, row.ended_reason = utcnow(), reason
        return True
