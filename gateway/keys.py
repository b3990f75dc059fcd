"""The gateway's API keys, in memory: loaded once from the read model, then kept current by key events.

Key events reach every gateway process straight from NATS (gateway/feed.py), so a
revoked or disabled key stops everywhere within milliseconds, without a database
read per request. Changes seen on the wire are
also remembered per key, so a load from a read model that has not caught up yet
cannot bring back an old state.
"""

from __future__ import annotations

import time
from typing import Any, Callable
from uuid import UUID

import msgspec
from gateway.admission import KeyInfo, KeyLoader

# How each key event changes what the gateway knows of the key.
CHANGES: dict[str, Callable[[Any], dict[str, Any]]] = {
    "key.revoked": lambda e: {"status": "revoked"},
    "key.disabled": lambda e: {"status": "disabled"},
    "key.enabled": lambda e: {"status": "active"},
    "key.expiry_changed": lambda e: {"expires_at": e.expires_at},
    "key.default_model_changed": lambda e: {"default_model": e.default_model},
    "key.spend_cap_changed": lambda e: {"spend_cap": e.spend_cap},
    "key.allowed_models_changed": lambda e: {
        "allowed_models": frozenset(e.allowed_models) if e.allowed_models is not None else None
    },
    "key.fit_to_budget_changed": lambda e: {"fit_to_budget": e.fit_to_budget},
}


class KeyCache:
    def __init__(self, load: KeyLoader, ttl: float = 300.0):
        self.load = load
        self.ttl = ttl  # a safety net only: events keep entries current
        self._by_hash: dict[str, tuple[float, KeyInfo]] = {}
        self._seen: dict[UUID, dict[str, Any]] = {}  # changes seen on the wire, per key
        self._rotated: dict[str, Any] = {}  # old secret hash -> valid until
        self.on_change: Callable[[KeyInfo], None] | None = None

    async def get(self, key_hash: str) -> KeyInfo | None:
        now = time.monotonic()
        hit = self._by_hash.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        info = await self.load(key_hash)
        if info is None:
            return None
        info = self._with_seen(key_hash, info)
        if len(self._by_hash) > 100_000:
            self._by_hash.clear()
        self._by_hash[key_hash] = (now + self.ttl, info)
        return info

    def _with_seen(self, key_hash: str, info: KeyInfo) -> KeyInfo:
        changes = dict(self._seen.get(info.key_id, {}))
        if key_hash in self._rotated:
            changes["secret_valid_until"] = self._rotated[key_hash]
        return msgspec.structs.replace(info, **changes) if changes else info

    def apply(self, topic: str, event: Any) -> None:
        """Bring cached entries of the event's key up to date."""
        key_id = event.originator_id
        if topic == "key.rotated":
            self._rotated[event.previous_hash] = event.previous_valid_until
        elif topic in CHANGES:
            self._seen.setdefault(key_id, {}).update(CHANGES[topic](event))
        else:
            return
        for key_hash, (deadline, info) in list(self._by_hash.items()):
            if info.key_id == key_id:
                updated = self._with_seen(key_hash, info)
                self._by_hash[key_hash] = (deadline, updated)
                if self.on_change is not None:
                    self.on_change(updated)

    def clear(self) -> None:
        """Forget everything (after a gap in the event feed): the next request reloads."""
        self._by_hash.clear()
