"""Users and their roles; passwords hashed with argon2."""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from engine.definitions.model import Registry
from engine.errors import NotFound, Problem, ValidationFailed
from engine.models import RoleGrant, User

_hasher = PasswordHasher()
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")


def new_password() -> str:
    """A random password that is easy to type from a printout: 4 groups of 4."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


class UserService:
    """Create users, grant roles, check passwords.

    The caller has already checked that its actor may administer users (``users.admin``);
    the CLI acts as the system operator.
    """

    def __init__(self, session: Session, registry: Registry) -> None:
        self.session = session
        self.registry = registry

    def get(self, username: str) -> User:
        user = self.session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"There is no user '{username}'.", "Check the spelling, or create the user.")
        return user

    def create(
        self,
        username: str,
        roles: list[str],
        *,
        password: str | None = None,
        display_name: str = "",
        email: str | None = None,
    ) -> tuple[User, str]:
        """Create a user with ``roles``; returns the user and the password (generated when
        not given), which is shown once and stored only as a hash.

        Raises ValidationFailed for a taken or badly formed name or an unknown role.
        """
        username = (username or "").strip().lower()
        problems = []
        if not username or not set(username) <= _USERNAME_CHARS or len(username) > 64:
            problems.append(
                Problem(
                    "username",
                    f"'{username}' is not a valid user name",
                    "Use up to 64 lower-case letters, digits, '.', '_', '-' or '@'.",
                )
            )
        elif self.session.scalar(select(User.id).where(User.username == username)):
            problems.append(Problem("username", f"The user name '{username}' is taken", "Choose another user name."))
        problems += self._role_problems(roles)
        if password is not None and len(password) < 10:
            problems.append(
                Problem(
                    "password",
                    "The password is too short",
                    "Use at least 10 characters; a phrase of several words is best.",
                )
            )
        if problems:
            raise ValidationFailed(problems)
        password = password or new_password()
        user = User(
            username=username, display_name=display_name or username, email=email, password_hash=_hasher.hash(password)
        )
        user.grants = [RoleGrant(role=r) for r in dict.fromkeys(roles)]
        self.session.add(user)
        self.session.commit()
        return user, password

    def set_roles(self, username: str, roles: list[str]) -> User:
        user = self.get(username)
        problems = self._role_problems(roles)
        if problems:
            raise ValidationFailed(problems)
        user.grants = [RoleGrant(role=r) for r in dict.fromkeys(roles)]
        self.session.commit()
        return user

    def authenticate(self, username: str, password: str) -> User | None:
        """The active user with this name and password, or None."""
        user = self.session.scalar(select(User).where(User.username == (username or "").strip().lower()))
        if user is None or not user.active or not user.password_hash:
            _hasher.hash("timing-equaliser")  # do the same work for unknown users
            return None
        try:
            _hasher.verify(user.password_hash, password or "")
        except (VerificationError, InvalidHashError):
            return None
        if _hasher.check_needs_rehash(user.password_hash):
            user.password_hash = _hasher.hash(password)
            self.session.commit()
        return user

    def _role_problems(self, roles: list[str]) -> list[Problem]:
        if not roles:
            return [
                Problem(
                    "roles", "A user needs at least one role", f"Use one of: {', '.join(sorted(self.registry.roles))}."
                )
            ]
        return [
            Problem("roles", f"There is no role '{r}'", f"Use one of: {', '.join(sorted(self.registry.roles))}.")
            for r in roles
            if r not in self.registry.roles
        ]
