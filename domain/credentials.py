"""Secrets Mesh hands out (API keys, management tokens) and passwords.

Secrets are shown once and kept only as hashes: SHA-256 for high-entropy
tokens (fast lookup by hash), scrypt for passwords people choose.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

API_KEY_PREFIX = "mk-"
MANAGEMENT_TOKEN_PREFIX = "mt-"
VISIBLE_PREFIX_LENGTH = 10
MIN_PASSWORD_LENGTH = 8

_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}


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


def hash_password(password: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, **_SCRYPT)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, salt_hex, digest_hex = stored.split("$")
    except ValueError:
        return False
    if scheme != "scrypt":
        return False
    digest = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt_hex), **_SCRYPT)
    return hmac.compare_digest(digest.hex(), digest_hex)
