"""The operator's use cases: grant or take back credits, suspend and resume an account, confirm or reject a bank
transfer, invite, add a model and change a model's price or availability. Each is given the acting operator (an
account id, or "token" for the shared operator token: api/services/operators.py), which its events record."""

from __future__ import annotations

import asyncio
from datetime import datetime
from decimal import Decimal
from typing import NamedTuple
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.read_models import BILLING, CATALOG, DIRECTORY
from api.services.errors import Invalid, Missing
from api.services.read_your_writes import ReadModelWaiter
from commands.accounts import AccountCommands
from commands.catalog import CatalogCommands
from commands.topups import TopUpCommands, TopUpResult
from domain.invite import Invite
from domain.money import pico_to_usd, usd_to_pico
from domain.pricing import Price
from gateway.catalog import ECHO_PROVIDER, Catalog, Model, resolved_limits
from projections import directory

OPERATOR = "operator"  # what kind of actor the events' `by` fields say did it (the `operator` field says who)
BANK_TRANSFER = "bank_transfer"
PRICE_FIELDS = (  # in the order of Price's fields
    "prompt_usd_per_1k",
    "completion_usd_per_1k",
    "cached_prompt_usd_per_1k",
    "cache_write_usd_per_1k",
)


Amount = str | int | float | Decimal  # USD, as usd_to_pico takes it


class InviteMade(NamedTuple):
    invite: Invite
    code: str  # shown once


def _usd_or_none(pico: int | None) -> str | None:
    return pico_to_usd(pico) if pico is not None else None


class AdminService:
    def __init__(
        self,
        accounts: AccountCommands,
        topups: TopUpCommands,
        catalog_commands: CatalogCommands,
        catalog: Catalog,
        pool: AsyncConnectionPool,
        waiter: ReadModelWaiter,
    ):
        self.accounts = accounts
        self.topups = topups
        self.catalog_commands = catalog_commands
        self.catalog = catalog  # this process's: changed at once, other processes hear the event
        self.pool = pool
        self.waiter = waiter

    async def grant_credits(self, account_id: UUID, amount_usd: Amount, reason: str, operator: str) -> tuple[int, int]:
        """(the amount granted in pico-USD, the stream position of the grant)."""
        amount = usd_to_pico(amount_usd)
        position = await self.waiter.then_caught_up(
            BILLING, self.accounts.grant_credits, account_id, amount, reason, OPERATOR, operator
        )
        await self.waiter.caught_up(DIRECTORY, position)  # the audit shows it
        return amount, position

    async def take_back_credits(
        self, account_id: UUID, amount_usd: Amount, reason: str, operator: str
    ) -> tuple[int, int]:
        """Credits taken back (a grant made by mistake): at most what the account has neither spent nor reserved
        (domain/account.py take_back_credits). (the amount in pico-USD, the stream position)."""
        amount = usd_to_pico(amount_usd)
        position = await self.waiter.then_caught_up(
            BILLING, self.accounts.take_back_credits, account_id, amount, reason, operator
        )
        await self.waiter.caught_up(DIRECTORY, position)
        return amount, position

    async def suspend(self, account_id: UUID, reason: str, operator: str) -> int:
        """Its keys are refused (402 account_suspended) by every gateway from the event on; it cannot log in nor
        make keys. Nothing is deleted. Suspending a suspended account changes nothing."""
        return await self.waiter.then_caught_up(DIRECTORY, self.accounts.suspend, account_id, reason, operator)

    async def resume(self, account_id: UUID, reason: str, operator: str) -> int:
        return await self.waiter.then_caught_up(DIRECTORY, self.accounts.resume, account_id, reason, operator)

    async def confirm_transfer(self, reference: str, amount_usd: Amount | None, operator: str) -> TopUpResult:
        """The money of a bank-transfer top-up arrived: credit it (once; a second confirm changes nothing).
        `amount_usd`: what arrived (None: the amount asked for)."""
        topup = await asyncio.to_thread(self.topups.load, BANK_TRANSFER, reference)
        amount = usd_to_pico(amount_usd, decimals=2) if amount_usd is not None else topup.amount
        result = await self.waiter.then_caught_up(
            BILLING, self.topups.confirm, BANK_TRANSFER, reference, amount, OPERATOR, None, operator
        )
        await self.waiter.caught_up(DIRECTORY, result.position)
        return result

    async def reject_transfer(self, reference: str, reason: str, operator: str) -> TopUpResult:
        """The money of a pending bank transfer will not come: it can no longer be confirmed."""
        result = await self.waiter.then_caught_up(
            BILLING, self.topups.reject, BANK_TRANSFER, reference, reason, operator
        )
        await self.waiter.caught_up(DIRECTORY, result.position)
        return result

    async def create_invite(self, expires_at: datetime | None, operator: str) -> InviteMade:
        """A single-use invite code for sign-up (MESH_SIGNUP=invite)."""
        invite, code, _ = await self.waiter.then_caught_up(
            DIRECTORY, self.accounts.create_invite, expires_at, OPERATOR, operator, position=lambda made: made[2]
        )
        return InviteMade(invite, code)

    async def invites(self, limit: int) -> list[directory.InviteRow]:
        """The newest invites, used or not (never their codes)."""
        async with self.pool.connection() as conn:
            return await directory.invites(conn, limit)

    def providers(self) -> list[str]:
        """The providers of mesh.toml, by name (not the built-in one)."""
        return sorted(name for name in self.catalog.providers if name != ECHO_PROVIDER.name)

    def models(self) -> list[Model]:
        """Every model of mesh.toml and those operators added, enabled or not, by id."""
        return sorted(self.catalog.models.values(), key=lambda m: m.id)

    async def change_model(
        self, model_id: str, prices: dict[str, object], enabled: bool | None, operator: str
    ) -> Model:
        """Change a model's price and/or switch it on or off; requests that start afterwards see it. `prices`:
        the PRICE_FIELDS given; those not given stay as they are (cache prices left unset keep following the
        prompt price)."""
        model = self.catalog.models.get(model_id)
        if model is None:
            raise Missing(f"no model {model_id!r} in mesh.toml; GET /admin/models lists them", "not_found")
        price = None
        if prices:
            kept = dict(zip(PRICE_FIELDS, map(_usd_or_none, msgspec.structs.astuple(model.price))))
            price = Price.from_usd(**{**kept, **prices})
        position = await asyncio.to_thread(self.catalog_commands.change, model_id, price, enabled, OPERATOR, operator)
        self.catalog.apply(model_id, price, enabled)  # at once here; other processes hear the event
        if position:
            await self.waiter.caught_up(DIRECTORY, position)  # the audit shows it
        return self.catalog.models[model_id]

    async def add_model(
        self,
        model_id: str,
        provider: str,
        upstream: str,
        prices: dict[str, str | int | None],
        max_output_tokens: int | None,
        context_tokens: int | None,
        operator: str,
    ) -> Model:
        """Serve a model of a mesh.toml provider under `model_id`, at `prices` (PRICE_FIELDS; the prompt and
        completion prices are required, "0" for a free model); limits not given default as mesh.toml's do. Every
        gateway process serves it from the event on (gateway/feed.py), and after a restart (the catalog read model).
        """
        for required in PRICE_FIELDS[:2]:
            if prices.get(required) is None:
                raise Invalid(f'{required} is required ("0" for a free model)', "invalid_request", required)
        price = Price.from_usd(**{name: prices.get(name) for name in PRICE_FIELDS})  # type: ignore[arg-type]
        providers = {name: p.kind for name, p in self.catalog.providers.items() if name != ECHO_PROVIDER.name}
        kind = providers.get(provider)
        # an unknown provider is refused by the domain before it looks at the limits
        limits = (
            resolved_limits(kind, upstream, max_output_tokens, context_tokens)
            if kind is not None
            else (max_output_tokens or 1, context_tokens or 1)
        )
        taken = model_id in self.catalog.configured or model_id in self.catalog.aliases
        position = await asyncio.to_thread(
            self.catalog_commands.add,
            model_id,
            provider,
            upstream,
            price,
            limits,
            OPERATOR,
            operator,
            providers=providers,
            taken=taken,
        )
        model = self.catalog.add(model_id, provider, upstream, price, *limits)  # at once here; others hear it
        await self.waiter.caught_up(CATALOG, position)  # a restart serves it
        await self.waiter.caught_up(DIRECTORY, position)  # the audit shows it
        return model or self.catalog.models[model_id]
