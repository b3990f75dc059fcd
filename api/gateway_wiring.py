"""What the gateway is given to reach the rest of Mesh: its caches' loaders (from the read models) and its
upstream adapters (from mesh.toml's providers)."""

from __future__ import annotations

from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from api.connections import StartupError
from gateway.admission import KeyInfo
from gateway.errors import GatewayError
from gateway.providers.anthropic import AnthropicAdapter
from gateway.providers.base import Adapter
from gateway.providers.echo import EchoAdapter
from gateway.providers.gemini import GeminiAdapter
from gateway.providers.openai import OpenAIAdapter
from domain.template_head import TemplateHead
from projections import directory
from projections import prompt_templates as templates_read_model


class ReadModelKeys:
    """Loads a key for the gateway's cache from the directory read model (once per key and process)."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def __call__(self, key_hash: str) -> KeyInfo | None:
        try:
            async with self.pool.connection() as conn:
                found = await directory.key_by_hash(conn, key_hash)
        except psycopg.OperationalError:
            raise GatewayError(
                503,
                "cannot check this API key right now: the read models are unreachable; "
                "Mesh is reconnecting, retry shortly",
                "api_error",
                "service_unavailable",
            ) from None
        if found is None:
            return None
        row, valid_until, suspended = found
        allowed = frozenset(row.allowed_models) if row.allowed_models is not None else None
        return KeyInfo(
            row.key_id,
            row.account_id,
            row.default_model,
            row.status,
            row.spend_cap,
            allowed,
            row.expires_at,
            valid_until,
            row.fit_to_budget,
            row.rpm_limit,
            row.tpm_limit,
            account_suspended=suspended,
        )


class ReadModelTemplates:
    """Loads templates for the gateway's cache from the templates read model (once per name and process)."""

    def __init__(self, pool: AsyncConnectionPool):
        self.pool = pool

    async def head(self, account_id: UUID, name: str) -> TemplateHead | None:
        async with self.pool.connection() as conn:
            row = await templates_read_model.template_named(conn, account_id, name)
        return (
            None
            if row is None
            else TemplateHead(
                row.template_id,
                row.account_id,
                row.name,
                row.latest_version,
                dict(row.labels),
                row.archived,
                row.revision,
            )
        )

    async def version(self, template_id: UUID, version: int):
        async with self.pool.connection() as conn:
            row = await templates_read_model.version_of(conn, template_id, version)
        return None if row is None else (row.messages, row.defaults)


def make_adapter(provider) -> Adapter:
    if provider.kind == "mesh":
        return EchoAdapter()
    if provider.kind in ("openai", "openai-compatible"):
        return OpenAIAdapter(provider)
    if provider.kind == "anthropic":
        return AnthropicAdapter(provider)
    if provider.kind == "gemini":
        return GeminiAdapter(provider)
    raise StartupError(f"provider {provider.name!r}: kind {provider.kind!r} is not supported")
