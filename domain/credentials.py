"""Secrets Mesh hands out (API keys, management tokens) and passwords.

Secrets are shown once and kept only as hashes: SHA-256 for high-entropy
tokens (fast lookup by hash), scrypt for passwords people choose. A stored
password hash names its scrypt parameters, so hashes made with older, weaker
ones still verify and are upgraded at the next successful login.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import NamedTuple

API_KEY_PREFIX = "mk-"
MANAGEMENT_TOKEN_PREFIX = "mt-"
VISIBLE_PREFIX_LENGTH = 10
MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


class InvalidPassword(ValueError):
    pass


class ScryptParams(NamedTuple):
    """scrypt cost: N = 2**log_n, block size r, parallelism p."""

    log_n: int
    r: int
    p: int

    def encode(self) -> str:
        return f"ln={self.log_n},r={self.r},p={self.p}"

    @classmethod
    def decode(cls, text: str) -> "ScryptParams":
        fields = dict(part.split("=", 1) for part in text.split(","))
        return cls(int(fields["ln"]), int(fields["r"]), int(fields["p"]))


# OWASP's recommendation for scrypt: N=2^17, r=8, p=1 (128 MiB and about half a second per hash). An operator
# may choose another N (MESH_PASSWORD_KDF_LOG_N, within these bounds): test servers use the cheapest.
PASSWORD_KDF = ScryptParams(17, 8, 1)
MIN_KDF_LOG_N = 10
MAX_KDF_LOG_N = 20
# What hashes were made with before the parameters were written into them ("scrypt$salt$digest").
LEGACY_KDF = ScryptParams(14, 8, 1)
_SALT_BYTES = 16
_DIGEST_BYTES = 32


def password_kdf(log_n: int) -> ScryptParams:
    """The parameters for new password hashes at cost N = 2**log_n (r and p stay OWASP's)."""
    if not MIN_KDF_LOG_N <= log_n <= MAX_KDF_LOG_N:
        raise ValueError(f"the password KDF's log2(N) must be {MIN_KDF_LOG_N} to {MAX_KDF_LOG_N}, got {log_n}")
    return PASSWORD_KDF._replace(log_n=log_n)


def dummy_password_hash(params: ScryptParams = PASSWORD_KDF) -> str:
    """Verified when an email has no account, so that an unknown email costs what a wrong password costs."""
    return f"scrypt${params.encode()}${'00' * _SALT_BYTES}${'00' * _DIGEST_BYTES}"


DUMMY_PASSWORD_HASH = dummy_password_hash()


class NewSecret:
    """A freshly generated secret: the plain text (shown once), its hash and a short visible prefix."""

    __slots__ = ("plain", "hash", "prefix")

    def __init__(self, plain: str):
        self.plain = plain
        self.hash = hash_token(plain)
        self.prefix = plain[:VISIBLE_PREFIX_LENGTH]


def new_api_key() -> NewSecret:
    return NewSecret(API_KEY_PREFIX + secrets.token_urlsafe(32))


def new_management_token() -> NewSecret:
    return NewSecret(MANAGEMENT_TOKEN_PREFIX + secrets.token_urlsafe(32))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_new_password(password: str) -> None:
    """The rule for a password someone chooses."""
    if not MIN_PASSWORD_LENGTH <= len(password) <= MAX_PASSWORD_LENGTH:
        raise InvalidPassword(
            f"password must be {MIN_PASSWORD_LENGTH} to {MAX_PASSWORD_LENGTH} characters, got {len(password)}"
        )


def check_presented_password(password: str) -> None:
    """A password given to prove who one is: never longer than any password can be (no KDF on megabytes)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidPassword(f"password must be at most {MAX_PASSWORD_LENGTH} characters")


def derive(password: str, salt: bytes, params: ScryptParams) -> bytes:
    """The password KDF itself (slow on purpose; releases the GIL)."""
    n = 2**params.log_n
    return hashlib.scrypt(
        password.encode(),
        salt=salt,
        n=n,
        r=params.r,
        p=params.p,
        dklen=_DIGEST_BYTES,
        maxmem=2 * 128 * n * params.r * params.p,
    )


def hash_password(password: str, params: ScryptParams = PASSWORD_KDF) -> str:
    salt = secrets.token_bytes(_SALT_BYTES)
    return f"scrypt${params.encode()}${salt.hex()}${derive(password, salt, params).hex()}"


def _parse(stored: str) -> tuple[ScryptParams, bytes, bytes]:
    parts = stored.split("$")
    if len(parts) == 3 and parts[0] == "scrypt":
        params, salt_hex, digest_hex = LEGACY_KDF, parts[1], parts[2]
    elif len(parts) == 4 and parts[0] == "scrypt":
        params, salt_hex, digest_hex = ScryptParams.decode(parts[1]), parts[2], parts[3]
    else:
        raise ValueError("not a password hash Mesh made")
    return params, bytes.fromhex(salt_hex), bytes.fromhex(digest_hex)


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check of `password` against a stored hash of any parameters Mesh has used."""
    try:
        params, salt, digest = _parse(stored)
    except (ValueError, KeyError):
        return False
    return hmac.compare_digest(derive(password, salt, params), digest)


def needs_rehash(stored: str, params: ScryptParams = PASSWORD_KDF) -> bool:
    """True when a hash was made with other parameters than `params` (today's): rehash it at the next login."""
    try:
        return _parse(stored)[0] != params
    except (ValueError, KeyError):
        return True


# Management-token sessions: a token lives `session` after it was issued or last renewed. A token in use is
# renewed (one event) at most once per SESSION_RENEWAL, or per quarter of a shorter session, never per request.
SESSION_RENEWAL = timedelta(days=1)


def session_renewal_due(expires_at: datetime, now: datetime, session: timedelta) -> bool:
    return now >= expires_at - session + min(SESSION_RENEWAL, session / 4)
