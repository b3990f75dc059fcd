"""The gateway's API keys, in memory: loaded once from the read model, then kept current by key events.

Key events reach every gateway process straight from NATS (gateway/feed.py), so a
revoked or disabled key stops everywhere within milliseconds, without a database
read per request. Changes seen on the wire are
also remembered per key, so a load from a read model that has not caught up yet
cannot bring back an old state.

A secret hash no key has is remembered too, briefly (UNKNOWN_TTL, at most MAX_UNKNOWN of them): a client
retrying a wrong key, or a flood of one, costs no database read per request. A key made (or rotated to) after
its hash was looked up is announced by its event, which forgets the hash at once; and a hash announced that
way is never remembered as unknown while the read model may still lag behind its event.
"""

from __future__ import annotations

import time
from typing import Any, Callable
from uuid import UUID

import msgspec
from domain.account import Account
from domain.apikey import KEY_CHANGES, ApiKey
from gateway.admission import KeyInfo, KeyLoader

KEPT = frozenset(KeyInfo.__struct_fields__)  # what the gateway knows of a key (not its label, nor cap_reset)
KEY_EVENTS = frozenset({*KEY_CHANGES, ApiKey.Created, ApiKey.Rotated})  # the key events the cache follows (apply)
ACCOUNT_EVENTS = frozenset({Account.Suspended, Account.Resumed})  # the account events it follows (apply_account)
MAX_KNOWN = 100_000  # keys held at once (then the cache starts afresh)
UNKNOWN_TTL = 5.0  # seconds an unknown secret hash is answered from memory
MAX_UNKNOWN = 10_000  # unknown hashes remembered at once (the oldest are forgotten first)
ANNOUNCED_TTL = 60.0  # seconds a hash a key event announced is not remembered as unknown (read model lag)


def changes(event: Any) -> dict[str, Any]:
    """What a key event (one of domain.apikey.KEY_CHANGES) changes of the gateway's KeyInfo."""
    changed = {name: value for name, value in KEY_CHANGES[type(event)](event).items() if name in KEPT}
    if changed.get("allowed_models") is not None:
        changed["allowed_models"] = frozenset(changed["allowed_models"])
    return changed


class KeyCache:
    def __init__(self, load: KeyLoader, ttl: float = 300.0):
        self.load = load
        self.ttl = ttl  # a safety net only: events keep entries current
        self._by_hash: dict[str, tuple[float, KeyInfo]] = {}
        self._seen: dict[UUID, dict[str, Any]] = {}  # changes seen on the wire, per key
        self._suspended: dict[UUID, bool] = {}  # suspensions and resumptions seen on the wire, per account
        self._rotated: dict[str, Any] = {}  # old secret hash -> valid until
        self._unknown: dict[str, float] = {}  # secret hash no key has -> until when that answer holds
        self._announced: dict[str, float] = {}  # secret hash of a key just made or rotated to -> until when
        self.on_change: Callable[[KeyInfo], None] | None = None

    async def get(self, key_hash: str) -> KeyInfo | None:
        now = time.monotonic()
        hit = self._by_hash.get(key_hash)
        if hit is not None and hit[0] > now:
            return hit[1]
        unknown = self._unknown.get(key_hash)
        if unknown is not None:
            if unknown > now:
                return None
            del self._unknown[key_hash]
        info = await self.load(key_hash)
        if info is None:
            if self._announced.get(key_hash, 0.0) <= time.monotonic():
                _remember(self._unknown, key_hash, now + UNKNOWN_TTL)
            return None
        info = self._with_seen(key_hash, info)
        if len(self._by_hash) > MAX_KNOWN:
            self._by_hash.clear()
        self._by_hash[key_hash] = (now + self.ttl, info)
        return info

    def _with_seen(self, key_hash: str, info: KeyInfo) -> KeyInfo:
        changes = dict(self._seen.get(info.key_id, {}))
        if info.account_id in self._suspended:
            changes["account_suspended"] = self._suspended[info.account_id]
        if key_hash in self._rotated:
            changes["secret_valid_until"] = self._rotated[key_hash]
        return msgspec.structs.replace(info, **changes) if changes else info

    def apply(self, event: Any) -> None:
        """Bring cached entries of the event's key up to date."""
        key_id = event.originator_id
        if isinstance(event, (ApiKey.Created, ApiKey.Rotated)):  # a secret that works from now on
            self._unknown.pop(event.key_hash, None)
            _remember(self._announced, event.key_hash, time.monotonic() + ANNOUNCED_TTL)
        if isinstance(event, ApiKey.Created):
            return  # nothing cached yet: the first request loads it
        if isinstance(event, ApiKey.Rotated):
            self._rotated[event.previous_hash] = event.previous_valid_until
        elif type(event) in KEY_CHANGES and (changed := changes(event)):
            self._seen.setdefault(key_id, {}).update(changed)
        else:
            return  # not about keys, or nothing the gateway holds (a new label)
        for key_hash, (deadline, info) in list(self._by_hash.items()):
            if info.key_id == key_id:
                updated = self._with_seen(key_hash, info)
                self._by_hash[key_hash] = (deadline, updated)
                if self.on_change is not None:
                    self.on_change(updated)

    def apply_account(self, event: Any) -> None:
        """An account suspended or resumed: every cached key of it follows at once."""
        account_id = event.originator_id
        self._suspended[account_id] = isinstance(event, Account.Suspended)
        for key_hash, (deadline, info) in list(self._by_hash.items()):
            if info.account_id == account_id:
                updated = self._with_seen(key_hash, info)
                self._by_hash[key_hash] = (deadline, updated)
                if self.on_change is not None:
                    self.on_change(updated)

    def clear(self) -> None:
        """Forget everything (after a gap in the event feed): the next request reloads."""
        self._by_hash.clear()
        self._unknown.clear()  # a key made during the gap was never announced


def _remember(entries: dict[str, float], key_hash: str, until: float) -> None:
    """Hold `key_hash` until `until` in a bounded map: when full, the oldest entry goes first."""
    entries.pop(key_hash, None)  # re-inserted: now the newest
    if len(entries) >= MAX_UNKNOWN:
        del entries[next(iter(entries))]
    entries[key_hash] = until
