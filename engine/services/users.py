"""Users and their roles; passwords hashed with argon2."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from datetime import timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from engine import audit
from engine.definitions.model import Registry
from engine.errors import NotFound, Problem, TrackerError, ValidationFailed
from engine.models import ApiToken, LoginLockout, RecoveryCode, RoleGrant, RoleSetting, User, utcnow
from engine.permissions import Actor

_hasher = PasswordHasher()
_USERNAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789._-@")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")


RECOVERY_CODES = 10
TOTP_ISSUER = "Tracker"
#: seconds between two writes of an API token's ``last_used_at``
TOKEN_USE_RESOLUTION = 60


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class AccountLocked(TrackerError):
    """Sign-in refused: the account is locked after too many failed sign-ins. Its API tokens keep
    working (they are separate secrets); a user administrator unlocks the account."""

    status = 403

    def __init__(self) -> None:
        super().__init__(
            "This account is locked after too many failed sign-ins.",
            "Ask a user administrator (someone who manages users in Tracker) to unlock it on the Users page.",
        )


def new_password() -> str:
    """A random password that is easy to type from a printout: 4 groups of 4."""
    alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
    return "-".join("".join(secrets.choice(alphabet) for _ in range(4)) for _ in range(4))


class UserService:
    """Create users, grant roles, check passwords.

    The caller has already checked that its actor may administer users (``users.admin``);
    the CLI acts as the system operator. ``actor`` (the system operator when None) and
    ``address`` (the client's, empty for the command line) go into the audit log, which every
    change writes in its own transaction (see :mod:`engine.audit`).

    Failed sign-ins (wrong passwords, wrong two-factor codes) are counted per account: at
    ``lockout_attempts`` within ``lockout_minutes`` of the first, the account is locked
    until :meth:`unlock` (0 attempts: never locked).
    """

    def __init__(
        self,
        session: Session,
        registry: Registry,
        *,
        actor: Actor | None = None,
        address: str = "",
        lockout_attempts: int = 5,
        lockout_minutes: float = 15,
    ) -> None:
        self.session = session
        self.registry = registry
        self.actor = actor or Actor.system()
        self.address = address
        self.lockout_attempts = lockout_attempts
        self.lockout_window = timedelta(minutes=lockout_minutes)

    def _audit(self, kind: str, user: User | None = None, **kwargs) -> None:
        """An audit row by this service's actor (``actor=None`` in kwargs: by ``user`` themself)."""
        kwargs.setdefault("actor", self.actor)
        audit.record(self.session, kind, user=user, address=self.address, **kwargs)

    def get(self, username: str) -> User:
        user = self.session.scalar(select(User).where(User.username == username))
        if user is None:
            raise NotFound(f"There is no user '{username}'.", "Check the spelling, or create the user.")
        return user

    def all_users(self) -> list[User]:
        """Every user, active or not, by user name (the users admin page lists them)."""
        return list(self.session.scalars(select(User).order_by(User.username)))

    def record_sign_in(self, user: User) -> None:
        """Note a completed sign-in (password and, when enrolled, the second factor): it clears
        the count of failed sign-ins."""
        user.last_login_at = utcnow()
        self._clear_failures(user)
        self._audit("login.success", user, actor=None)
        self.session.commit()

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
        if len(display_name or "") > 200:
            problems.append(Problem("display_name", "The display name is too long", "Use at most 200 characters."))
        email = (email or "").strip() or None
        if email is not None and (len(email) > 320 or not _EMAIL.fullmatch(email)):
            problems.append(
                Problem(
                    "email", f"'{email}' is not an e-mail address", "Type it as name@example.org, or leave it empty."
                )
            )
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
        self.session.flush()
        self._audit("user.created", user, detail={"roles": list(dict.fromkeys(roles))})
        self.session.commit()
        return user, password

    def set_roles(self, username: str, roles: list[str]) -> User:
        """Replace the user's roles. Raises ValidationFailed for no or an unknown role, or when
        this would leave no active user who may administer users."""
        user = self.get(username)
        problems = self._role_problems(roles)
        if not problems and not self._grants_user_admin(roles):
            problems = self._last_admin_problems(user, "roles", "take the user administration role from")
        if problems:
            raise ValidationFailed(problems)
        # keep the grants of roles the user keeps: replacing them all would insert a
        # (user, role) pair before its old row is deleted and break the unique constraint
        kept = {g.role: g for g in user.grants}
        before = user.role_keys
        user.grants = [kept.get(r) or RoleGrant(role=r) for r in dict.fromkeys(roles)]
        if before != user.role_keys:
            self._audit("user.roles", user, detail={"from": before, "to": user.role_keys})
        self.session.commit()
        return user

    def update_details(self, username: str, *, display_name: str | None = None, email: str | None = None) -> User:
        """Change the user's display name and/or e-mail (``""`` removes the e-mail); None
        leaves a value as it is. Raises ValidationFailed for a bad value; nothing changes then."""
        user = self.get(username)
        problems = self.check_change(username, display_name=display_name, email=email)
        if problems:
            raise ValidationFailed(problems)
        before = {"display_name": user.display_name, "email": user.email}
        if display_name is not None:
            user.display_name = display_name.strip() or user.username
        if email is not None:
            user.email = email.strip() or None
        after = {"display_name": user.display_name, "email": user.email}
        if before != after:
            changed = {k: {"from": before[k], "to": after[k]} for k in before if before[k] != after[k]}
            self._audit("user.details", user, detail=changed)
        self.session.commit()
        return user

    def check_change(
        self,
        username: str,
        *,
        roles: list[str] | None = None,
        display_name: str | None = None,
        email: str | None = None,
        active: bool | None = None,
    ) -> list[Problem]:
        """The problems :meth:`create` (when there is no such user) or :meth:`set_roles`,
        :meth:`update_details` and :meth:`deactivate` would refuse these values for, without
        changing anything: for dry runs of bulk changes. None means "not changed"."""
        name = (username or "").strip().lower()
        user = self.session.scalar(select(User).where(User.username == name)) if name else None
        problems = []
        if user is None and (not name or not set(name) <= _USERNAME_CHARS or len(name) > 64):
            problems.append(
                Problem(
                    "username",
                    f"'{name}' is not a valid user name",
                    "Use up to 64 lower-case letters, digits, '.', '_', '-' or '@'.",
                )
            )
        if display_name is not None and len(display_name) > 200:
            problems.append(Problem("display_name", "The display name is too long", "Use at most 200 characters."))
        mail = (email or "").strip()
        if mail and (len(mail) > 320 or not _EMAIL.fullmatch(mail)):
            problems.append(
                Problem(
                    "email", f"'{mail}' is not an e-mail address", "Type it as name@example.org, or leave it empty."
                )
            )
        if roles is not None or user is None:
            problems += self._role_problems(roles or [])
        if user is not None and not problems:
            if active is False:
                problems += self._last_admin_problems(user, "active", "deactivate")
            elif roles is not None and not self._grants_user_admin(roles):
                problems += self._last_admin_problems(user, "roles", "take the user administration role from")
        return problems

    def authenticate(self, username: str, password: str) -> User | None:
        """The active user with this name and password, or None. Every refusal is in the audit
        log and counts towards locking the account. Raises AccountLocked for a locked account
        (whatever the password: the answer must not tell whether it was right), also when
        this wrong password is the one that locks it."""
        typed = (username or "").strip().lower()
        user = self.session.scalar(select(User).where(User.username == typed))
        if user is None or not user.active or not user.password_hash:
            _hasher.hash("timing-equaliser")  # do the same work for unknown users
            reason = "no such user" if user is None else "inactive"
            self._audit("login.failure", user, actor=None, username=typed[:64], detail={"reason": reason})
            self.session.commit()
            return None
        if self.is_locked(user):
            _hasher.hash("timing-equaliser")
            self._audit("login.locked", user, actor=None)
            self.session.commit()
            raise AccountLocked()
        try:
            _hasher.verify(user.password_hash, password or "")
        except (VerificationError, InvalidHashError):
            if self._failed(user, "login.failure"):
                raise AccountLocked() from None
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

    def _grants_user_admin(self, roles: list[str]) -> bool:
        return any(self.registry.roles[r].can("users.admin") for r in roles if r in self.registry.roles)

    def _last_admin_problems(self, user: User, path: str, verb: str) -> list[Problem]:
        """A problem when ``user`` is the only active user who may administer users, so that
        nobody is locked out of the users page."""
        if not user.active or not self._grants_user_admin(user.role_keys):
            return []
        admin_roles = [key for key, role in self.registry.roles.items() if role.can("users.admin")]
        stmt = (
            select(User.id)
            .join(RoleGrant, RoleGrant.user_id == User.id)
            .where(User.active, User.id != user.id, RoleGrant.role.in_(admin_roles))
            .limit(1)
        )
        if self.session.scalar(stmt) is not None:
            return []
        return [
            Problem(
                path,
                f"You cannot {verb} {user.username}: nobody else could then manage users",
                "Give another active user a role that may administer users first.",
            )
        ]

    # -- lockout after failed sign-ins ----------------------------------------------------------

    def is_locked(self, user: User) -> bool:
        row = self.session.get(LoginLockout, user.id)
        return row is not None and row.locked_at is not None

    def locked_at(self, user: User):
        """When the account was locked, or None."""
        row = self.session.get(LoginLockout, user.id)
        return row.locked_at if row is not None else None

    def locked_usernames(self) -> set[str]:
        stmt = select(User.username).join(LoginLockout, LoginLockout.user_id == User.id)
        return set(self.session.scalars(stmt.where(LoginLockout.locked_at.is_not(None))))

    def _failed(self, user: User, kind: str) -> bool:
        """Count one failed sign-in of ``user`` (audited as ``kind``) and commit; True when the
        account is locked now. Failures older than the window start the count again."""
        now = utcnow()
        try:
            with self.session.begin_nested():
                if self.session.get(LoginLockout, user.id) is None:
                    self.session.add(LoginLockout(user_id=user.id, failures=0))
        except IntegrityError:  # another process counted its first failure at the same moment
            pass
        row = self.session.get(LoginLockout, user.id)
        if row.first_failed_at is None or now - row.first_failed_at > self.lockout_window:
            row.failures, row.first_failed_at = 0, now
            self.session.flush()
        # an UPDATE ... SET failures = failures + 1, so two attempts at once both count
        self.session.execute(
            update(LoginLockout).where(LoginLockout.user_id == user.id).values(failures=LoginLockout.failures + 1)
        )
        self.session.refresh(row)
        self._audit(kind, user, actor=None, detail={"failures": row.failures})
        if self.lockout_attempts and row.failures >= self.lockout_attempts and row.locked_at is None:
            row.locked_at = now
            self._audit("account.locked", user, actor=None, detail={"failures": row.failures})
        self.session.commit()
        return row.locked_at is not None

    def _clear_failures(self, user: User) -> None:
        """Both factors passed: earlier failures no longer count (a lock stays until unlocked)."""
        row = self.session.get(LoginLockout, user.id)
        if row is not None and row.locked_at is None:
            row.failures, row.first_failed_at = 0, None

    def unlock(self, username: str) -> User:
        """Unlock the account and forget its failed sign-ins. Raises NotFound for an unknown user
        and ValidationFailed when it is not locked."""
        user = self.get(username)
        row = self.session.get(LoginLockout, user.id)
        if row is None or row.locked_at is None:
            raise ValidationFailed(
                [Problem("username", f"{user.username} is not locked", "Nothing to do: they can sign in.")]
            )
        self._audit("account.unlocked", user, detail={"failures": row.failures, "locked_at": row.locked_at.isoformat()})
        self.session.delete(row)
        self.session.commit()
        return user

    # -- deactivation ----------------------------------------------------------------------

    def deactivate(self, username: str) -> User:
        """Deactivate the user: their sessions end and their API tokens stop working at once.
        Raises ValidationFailed when they are the last active user who may administer users."""
        user = self.get(username)
        problems = self._last_admin_problems(user, "username", "deactivate")
        if problems:
            raise ValidationFailed(problems)
        user.active = False
        user.session_epoch += 1
        revoked = []
        for token in self.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id)):
            if token.revoked_at is None:
                revoked.append(token.id)
            token.revoked_at = token.revoked_at or utcnow()
        self._audit("user.deactivated", user, detail={"tokens_revoked": revoked})
        self.session.commit()
        return user

    def reactivate(self, username: str) -> User:
        user = self.get(username)
        if not user.active:
            self._audit("user.reactivated", user)
        user.active = True
        self.session.commit()
        return user

    # -- two-factor sign-in (TOTP, RFC 6238) ----------------------------------------------------

    def requires_2fa(self, user: User) -> bool:
        """True when one of the user's roles has two-factor sign-in switched on."""
        roles = user.role_keys
        if not roles:
            return False
        stmt = select(RoleSetting.role).where(RoleSetting.role.in_(roles), RoleSetting.require_2fa)
        return self.session.scalar(stmt) is not None

    def set_role_2fa(self, role: str, required: bool) -> None:
        problems = self._role_problems([role])
        if problems:
            raise ValidationFailed(problems)
        setting = self.session.get(RoleSetting, role) or RoleSetting(role=role)
        if bool(setting.require_2fa) != required:
            self._audit("role.settings", target=f"role {role}", detail={"require_2fa": required})
        setting.require_2fa = required
        self.session.add(setting)
        self.session.commit()

    def roles_requiring_2fa(self) -> set[str]:
        return set(self.session.scalars(select(RoleSetting.role).where(RoleSetting.require_2fa)))

    def begin_totp(self, user: User) -> str:
        """A new secret to show on the enrolment page; it counts only once confirmed."""
        user.totp_pending_secret = pyotp.random_base32()
        self.session.commit()
        return user.totp_pending_secret

    def cancel_totp(self, user: User) -> None:
        """Forget a secret shown but never confirmed; an enrolled user keeps their current one."""
        user.totp_pending_secret = None
        self.session.commit()

    @staticmethod
    def provisioning_uri(user: User, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=user.username, issuer_name=TOTP_ISSUER)

    def confirm_totp(self, user: User, code: str, *, now: float | None = None) -> list[str]:
        """Switch 2FA on once ``code`` matches the pending secret; returns ten recovery codes,
        shown once. Raises ValidationFailed when the code is wrong."""
        secret = user.totp_pending_secret
        step = _matching_step(secret, code, now) if secret else None
        if step is None:
            raise ValidationFailed(
                [
                    Problem(
                        "code",
                        "That code does not match",
                        "Type the 6-digit code your authenticator app shows now for Tracker; check the phone's clock.",
                    )
                ]
            )
        user.totp_secret, user.totp_pending_secret, user.totp_last_step = secret, None, step
        user.session_epoch += 1
        self._audit("2fa.enrolled", user, actor=None)
        return self._new_recovery_codes(user)

    def verify_totp(self, user: User, code: str, *, now: float | None = None) -> bool:
        """True for a current code not used before. A code is refused a second time within
        its window (replay), and so is any code from an earlier time-step. A refused code counts
        as a failed sign-in; raises AccountLocked when the account is (or now becomes) locked."""
        if not user.totp_secret:
            return False
        if self.is_locked(user):
            raise AccountLocked()
        step = _matching_step(user.totp_secret, code, now)
        if step is None or step <= user.totp_last_step:
            if self._failed(user, "login.code_failure"):
                raise AccountLocked()
            return False
        user.totp_last_step = step
        self._clear_failures(user)
        self.session.commit()
        return True

    def use_recovery_code(self, user: User, code: str) -> bool:
        """True, and the code is spent, when ``code`` is one of the user's unused recovery codes.
        A wrong code counts as a failed sign-in; raises AccountLocked as :meth:`verify_totp` does."""
        if self.is_locked(user):
            raise AccountLocked()
        typed = (code or "").strip().lower().replace(" ", "").replace("-", "")
        stmt = select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        for stored in self.session.scalars(stmt):
            try:
                _hasher.verify(stored.code_hash, typed)
            except (VerificationError, InvalidHashError):
                continue
            stored.used_at = utcnow()
            self._clear_failures(user)
            self._audit("2fa.recovery_code_used", user, actor=None)
            self.session.commit()
            return True
        if self._failed(user, "login.code_failure"):
            raise AccountLocked()
        return False

    def recovery_codes_left(self, user: User) -> int:
        stmt = select(RecoveryCode).where(RecoveryCode.user_id == user.id, RecoveryCode.used_at.is_(None))
        return len(self.session.scalars(stmt).all())

    def reset_2fa(self, username: str) -> User:
        """Switch the user's 2FA off (an admin does this for a lost phone); they enrol again."""
        user = self.get(username)
        user.totp_secret = user.totp_pending_secret = None
        user.totp_last_step = 0
        user.session_epoch += 1
        for stored in self.session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)):
            self.session.delete(stored)
        self._audit("2fa.reset", user)
        self.session.commit()
        return user

    def _new_recovery_codes(self, user: User) -> list[str]:
        for stored in self.session.scalars(select(RecoveryCode).where(RecoveryCode.user_id == user.id)):
            self.session.delete(stored)
        alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
        codes = ["".join(secrets.choice(alphabet) for _ in range(10)) for _ in range(RECOVERY_CODES)]
        for code in codes:
            self.session.add(RecoveryCode(user_id=user.id, code_hash=_hasher.hash(code)))
        self.session.commit()
        return [f"{c[:5]}-{c[5:]}" for c in codes]

    # -- API tokens -----------------------------------------------------------------------------

    def create_token(self, username: str, name: str = "") -> tuple[ApiToken, str]:
        """A new API token for the user; the token text is returned once and stored hashed."""
        user = self.get(username)
        if not user.active:
            raise ValidationFailed([Problem("username", f"{username} is deactivated", "Reactivate the user first.")])
        text = "trk_" + secrets.token_urlsafe(32)
        token = ApiToken(user_id=user.id, name=name or "API token", token_hash=_hash_token(text), prefix=text[:8])
        self.session.add(token)
        self.session.flush()
        self._audit("token.created", user, target=f"token #{token.id} {token.name}")
        self.session.commit()
        return token, text

    def user_for_token(self, text: str) -> User | None:
        """The active user a bearer token belongs to, or None for an unknown or revoked token."""
        if not text or not text.startswith("trk_"):
            return None
        token = self.session.scalar(select(ApiToken).where(ApiToken.token_hash == _hash_token(text)))
        if token is None or token.revoked_at is not None or not token.user.active:
            return None
        now = utcnow()
        # "last used" is for people reading the token list: to the minute is enough, and it
        # spares every API request a write and a commit of its own
        if token.last_used_at is None or (now - token.last_used_at).total_seconds() >= TOKEN_USE_RESOLUTION:
            token.last_used_at = now
            self.session.commit()
        return token.user

    def revoke_token(self, token_id: int) -> ApiToken:
        token = self.session.get(ApiToken, token_id)
        if token is None:
            raise NotFound(f"There is no API token #{token_id}.", "List tokens with 'tracker users token list'.")
        if token.revoked_at is None:
            self._audit("token.revoked", token.user, target=f"token #{token.id} {token.name}")
        token.revoked_at = token.revoked_at or utcnow()
        self.session.commit()
        return token

    def tokens(self, username: str) -> list[ApiToken]:
        user = self.get(username)
        return list(self.session.scalars(select(ApiToken).where(ApiToken.user_id == user.id).order_by(ApiToken.id)))


def _matching_step(secret: str, code: str, now: float | None, digits: int = 6) -> int | None:
    """The time-step (now, or one either side for clock drift) whose code is ``code``."""
    code = (code or "").strip().replace(" ", "")
    if not code.isdigit() or len(code) != digits:
        return None
    totp = pyotp.TOTP(secret, digits=digits)
    current = int((time.time() if now is None else now) // totp.interval)
    for step in (current, current - 1, current + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None
