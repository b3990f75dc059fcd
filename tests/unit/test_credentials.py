"""Password hashing: today's KDF parameters are written into the hash, older hashes still verify and ask to
be upgraded; password rules; session renewal timing."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta, timezone

import pytest

from domain import credentials
from domain.credentials import (
    DUMMY_PASSWORD_HASH,
    LEGACY_KDF,
    MAX_KDF_LOG_N,
    MIN_KDF_LOG_N,
    PASSWORD_KDF,
    InvalidPassword,
    ScryptParams,
    check_new_password,
    check_presented_password,
    dummy_password_hash,
    hash_password,
    needs_rehash,
    password_kdf,
    session_renewal_due,
    verify_password,
)


def legacy_hash(password: str) -> str:
    """A hash as Mesh stored it before the parameters were written into it (scrypt N=2^14, r=8, p=1)."""
    salt = bytes(range(16))
    digest = hashlib.scrypt(password.encode(), salt=salt, n=2**14, r=8, p=1, dklen=32)
    return f"scrypt${salt.hex()}${digest.hex()}"


def test_new_hashes_use_owasp_scrypt_parameters_and_name_them():
    assert PASSWORD_KDF == ScryptParams(17, 8, 1)
    stored = hash_password("correct horse")
    scheme, params, salt, digest = stored.split("$")
    assert (scheme, params) == ("scrypt", "ln=17,r=8,p=1")
    assert len(bytes.fromhex(salt)) == 16 and len(bytes.fromhex(digest)) == 32
    assert "correct horse" not in stored
    assert verify_password("correct horse", stored) and not verify_password("correct horsE", stored)
    assert not needs_rehash(stored)


def test_the_cost_can_be_chosen_within_bounds_and_is_named_in_the_hash():
    cheap = password_kdf(10)
    assert cheap == ScryptParams(10, 8, 1) and password_kdf(17) == PASSWORD_KDF
    stored = hash_password("correct horse", cheap)
    assert stored.split("$")[1] == "ln=10,r=8,p=1"
    assert verify_password("correct horse", stored)
    assert not needs_rehash(stored, cheap) and needs_rehash(stored)  # moved to today's default at the next login
    assert needs_rehash(hash_password("correct horse", cheap), password_kdf(11))
    assert dummy_password_hash(cheap).split("$")[1] == "ln=10,r=8,p=1"
    assert dummy_password_hash() == DUMMY_PASSWORD_HASH
    for outside in (MIN_KDF_LOG_N - 1, MAX_KDF_LOG_N + 1):
        with pytest.raises(ValueError, match="10 to 20"):
            password_kdf(outside)


def test_legacy_hashes_verify_with_their_own_parameters_and_ask_for_an_upgrade():
    stored = legacy_hash("old password")
    assert verify_password("old password", stored)
    assert not verify_password("other password", stored)
    assert needs_rehash(stored)


def test_the_parameters_in_a_hash_are_the_ones_used(monkeypatch):
    used = []
    real = credentials.derive
    monkeypatch.setattr(credentials, "derive", lambda pw, salt, params: used.append(params) or real(pw, salt, params))
    verify_password("x", legacy_hash("x"))
    verify_password("x", f"scrypt$ln=10,r=4,p=1${'ab' * 16}${'00' * 32}")
    verify_password("x", DUMMY_PASSWORD_HASH)
    assert used == [LEGACY_KDF, ScryptParams(10, 4, 1), PASSWORD_KDF]


@pytest.mark.parametrize("garbage", ["", "garbage", "bcrypt$a$b", "scrypt$zz$00", "scrypt$ln=x$00$00"])
def test_garbage_hashes_never_verify(garbage):
    assert not verify_password("anything", garbage)
    assert needs_rehash(garbage)


def test_the_dummy_hash_matches_no_password():
    assert not verify_password("", DUMMY_PASSWORD_HASH)
    assert not needs_rehash(DUMMY_PASSWORD_HASH)


def test_new_passwords_are_10_to_1024_characters():
    check_new_password("x" * 10)
    check_new_password("x" * 1024)
    for bad in ("", "x" * 9, "x" * 1025):
        with pytest.raises(InvalidPassword, match="10 to 1024 characters") as refused:
            check_new_password(bad)
        assert bad not in str(refused.value) or bad == ""
    check_presented_password("short")  # a wrong password is a wrong password, whatever its length
    with pytest.raises(InvalidPassword, match="at most 1024"):
        check_presented_password("x" * 1025)


def test_a_session_is_renewed_at_most_daily_or_per_quarter_of_a_short_one():
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    month = timedelta(days=30)
    issued = now
    assert not session_renewal_due(issued + month, now + timedelta(hours=23), month)
    assert session_renewal_due(issued + month, now + timedelta(days=1), month)
    short = timedelta(seconds=8)
    assert not session_renewal_due(issued + short, now + timedelta(seconds=1.9), short)
    assert session_renewal_due(issued + short, now + timedelta(seconds=2), short)
