"""API key use cases."""

from __future__ import annotations

from uuid import UUID

import msgspec

from commands.app import MeshApplication
from domain.apikey import ApiKey, check_label, check_spend_cap
from domain.credentials import new_api_key


class CreatedKey(msgspec.Struct, frozen=True):
    key: ApiKey
    secret: str  # plain text, shown once
    position: int


class KeyCommands:
    def __init__(self, app: MeshApplication):
        self.app = app

    def create(self, account_id: UUID, label: str, spend_cap: int | None, default_model: str | None) -> CreatedKey:
        secret = new_api_key()
        key = ApiKey(
            account_id=account_id,
            label=check_label(label),
            key_hash=secret.hash,
            prefix=secret.prefix,
            spend_cap=check_spend_cap(spend_cap),
            default_model=default_model,
        )
        return CreatedKey(key, secret.plain, self.app.save_all(key))
