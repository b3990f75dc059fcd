"""Sign-up modes and invite codes.

`MESH_SIGNUP` says who may sign up: anyone (`open`), whoever holds an invite code the operator made
(`invite`), or no one (`closed`). An invite is single use and may expire. Only the code's hash is kept: the
aggregate's id derives from it, so a code presented at sign-up finds its invite without any index, and the
invite is saved in the same atomic append as the account it admits (a code cannot admit two accounts).
"""

from __future__ import annotations

from datetime import datetime
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

SIGNUP_MODES = ("open", "invite", "closed")
INVITE_PREFIX = "mi-"


class SignupRefused(PermissionError):
    """Sign-up is closed, or needs an invite code that was not given or is not valid; `code` says which."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def check_signup_mode(mode: str) -> str:
    if mode not in SIGNUP_MODES:
        raise ValueError(f"MESH_SIGNUP takes one of {', '.join(SIGNUP_MODES)}; got {mode!r}")
    return mode


class Invite(Aggregate):
    class Created(Aggregate.Created):
        code_hash: str
        prefix: str  # the code's first characters, to tell invites apart in a listing
        expires_at: datetime | None
        by: str
        operator: str | None = None  # the operator who made it (an account id, or "token")

    class Used(Aggregate.Event):
        account_id: UUID

    @staticmethod
    def create_id(code_hash: str) -> UUID:
        return uuid5(NAMESPACE_URL, f"mesh:invite:{code_hash}")

    @event(Created)
    def __init__(self, code_hash: str, prefix: str, expires_at: datetime | None, by: str, operator: str | None = None):
        self.code_hash = code_hash
        self.expires_at = expires_at
        self.used_by: UUID | None = None

    def use(self, account_id: UUID, now: datetime) -> None:
        if self.used_by is not None:
            raise SignupRefused("invite_invalid", "this invite code was already used; ask for a new one")
        if self.expires_at is not None and now >= self.expires_at:
            raise SignupRefused("invite_invalid", f"this invite code expired at {self.expires_at:%Y-%m-%d %H:%M} UTC")
        self._use(account_id)

    @event(Used)
    def _use(self, account_id: UUID) -> None:
        self.used_by = account_id
