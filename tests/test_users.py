"""Users: passwords, two-factor sign-in (RFC 6238), recovery codes, API tokens, deactivation."""

from __future__ import annotations

import base64

import pyotp
import pytest

from engine.errors import NotFound, ValidationFailed
from engine.services.users import _matching_step

RFC_SECRET = base64.b32encode(b"12345678901234567890").decode()
#: RFC 6238 appendix B, SHA-1 column: (Unix time, 8-digit code)
RFC_VECTORS = [
    (59, "94287082"),
    (1111111109, "07081804"),
    (1111111111, "14050471"),
    (1234567890, "89005924"),
    (2000000000, "69279037"),
    (20000000000, "65353130"),
]


@pytest.mark.parametrize(("when", "code"), RFC_VECTORS)
def test_totp_matches_rfc_6238_vectors(when, code):
    assert _matching_step(RFC_SECRET, code, when, digits=8) == when // 30
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    assert _matching_step(RFC_SECRET, wrong, when, digits=8) is None


def test_password_check(users):
    user, password = users.create("ann", ["manager"])
    assert users.authenticate("ann", password).id == user.id
    assert users.authenticate("ANN ", password).id == user.id
    assert users.authenticate("ann", "wrong") is None
    assert users.authenticate("nobody", password) is None
    assert user.password_hash.startswith("$argon2")


def test_bad_user_input_is_refused(users):
    users.create("ann", ["manager"])
    with pytest.raises(ValidationFailed) as excinfo:
        users.create("ann", ["wizard"], password="short")
    messages = {p.message for p in excinfo.value.problems}
    assert messages == {"The user name 'ann' is taken", "There is no role 'wizard'", "The password is too short"}
    with pytest.raises(ValidationFailed, match="not a valid user name"):
        users.create("Ann Smith!", ["manager"])
    with pytest.raises(ValidationFailed, match="at least one role"):
        users.create("bob", [])


def test_totp_enrolment_replay_and_recovery_codes(users):
    user, _ = users.create("ann", ["manager"])
    secret = users.begin_totp(user)
    assert users.provisioning_uri(user, secret).startswith("otpauth://totp/Tracker:ann?secret=")
    now = 1_800_000_000
    with pytest.raises(ValidationFailed, match="does not match"):
        users.confirm_totp(user, "000000", now=now)
    codes = users.confirm_totp(user, pyotp.TOTP(secret).at(now), now=now)
    assert len(codes) == 10 and len(set(codes)) == 10
    assert user.totp_secret == secret and user.totp_pending_secret is None
    # the code used to confirm cannot be used again to sign in (replay)
    assert not users.verify_totp(user, pyotp.TOTP(secret).at(now), now=now)
    later = now + 30
    assert users.verify_totp(user, pyotp.TOTP(secret).at(later), now=later)
    assert not users.verify_totp(user, pyotp.TOTP(secret).at(later), now=later + 5)
    assert not users.verify_totp(user, "12345", now=later + 60)
    # recovery codes work once each and are stored hashed
    assert users.use_recovery_code(user, codes[0])
    assert not users.use_recovery_code(user, codes[0])
    assert users.use_recovery_code(user, codes[1].upper())
    assert users.recovery_codes_left(user) == 8
    assert not users.use_recovery_code(user, "nope")


def test_admin_reset_2fa_ends_sessions(users):
    user, _ = users.create("ann", ["manager"])
    secret = users.begin_totp(user)
    users.confirm_totp(user, pyotp.TOTP(secret).now())
    epoch = user.session_epoch
    users.reset_2fa("ann")
    assert user.totp_secret is None and user.session_epoch > epoch
    assert users.recovery_codes_left(user) == 0


def test_2fa_required_per_role(users):
    user, _ = users.create("ann", ["manager"])
    assert not users.requires_2fa(user)
    users.set_role_2fa("manager", True)
    assert users.requires_2fa(user)
    assert users.roles_requiring_2fa() == {"manager"}
    with pytest.raises(ValidationFailed, match="no role 'wizard'"):
        users.set_role_2fa("wizard", True)


def test_api_tokens_are_hashed_revocable_and_die_with_deactivation(users):
    users.create("ann", ["manager"])
    token, text = users.create_token("ann", "reporting")
    assert text.startswith("trk_") and token.token_hash != text and text not in token.token_hash
    assert users.user_for_token(text).username == "ann"
    assert users.user_for_token("trk_forged") is None
    assert users.user_for_token("") is None
    users.revoke_token(token.id)
    assert users.user_for_token(text) is None
    _, second = users.create_token("ann")
    epoch = users.get("ann").session_epoch
    users.deactivate("ann")
    assert users.user_for_token(second) is None
    assert users.get("ann").session_epoch == epoch + 1
    assert users.authenticate("ann", "whatever") is None
    with pytest.raises(NotFound):
        users.revoke_token(999)


def test_user_details_are_checked(users):
    with pytest.raises(ValidationFailed) as excinfo:
        users.create("ann", ["manager"], email="not-an-address", display_name="x" * 201)
    messages = {p.path: p.message for p in excinfo.value.problems}
    assert messages == {
        "email": "'not-an-address' is not an e-mail address",
        "display_name": "The display name is too long",
    }
    user, _ = users.create("ann", ["manager"], email="  ann@example.org ")
    assert user.email == "ann@example.org"
    assert users.create("bob", ["manager"], email="")[0].email is None


def test_all_users_and_sign_in_record(users):
    users.create("bob", ["manager"])
    ann, _ = users.create("ann", ["manager"])
    assert [u.username for u in users.all_users()] == ["ann", "bob"]
    assert ann.last_login_at is None
    users.record_sign_in(ann)
    assert users.get("ann").last_login_at is not None


def test_the_last_user_admin_cannot_be_removed(users):
    users.create("root", ["admin"])
    users.create("ann", ["manager"])
    with pytest.raises(ValidationFailed, match="nobody else could then manage users"):
        users.deactivate("root")
    with pytest.raises(ValidationFailed, match="nobody else could then manage users"):
        users.set_roles("root", ["manager"])
    assert users.get("root").active and users.get("root").role_keys == ["admin"]
    users.set_roles("root", ["admin", "manager"])  # keeping an admin role is fine
    users.deactivate("ann")  # others come and go freely
    users.create("second", ["admin"])
    users.deactivate("root")  # once someone else can manage users
    assert not users.get("root").active
    with pytest.raises(ValidationFailed, match="You cannot deactivate second"):
        users.deactivate("second")


def test_setting_up_again_keeps_the_old_secret_until_confirmed(users):
    user, _ = users.create("ann", ["manager"])
    first = users.begin_totp(user)
    users.confirm_totp(user, pyotp.TOTP(first).at(1_800_000_000), now=1_800_000_000)
    second = users.begin_totp(user)
    assert user.totp_secret == first and user.totp_pending_secret == second
    users.cancel_totp(user)
    assert user.totp_secret == first and user.totp_pending_secret is None
    assert users.verify_totp(user, pyotp.TOTP(first).at(1_800_000_060), now=1_800_000_060)
