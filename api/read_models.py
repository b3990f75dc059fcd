"""The read models one Mesh process serves from, and the retention of the logs they hold."""

from __future__ import annotations

from psycopg_pool import AsyncConnectionPool

from projections import logs
from projections.billing_projection import Billing
from projections.catalog import CatalogModel
from projections.directory_projection import Directory
from projections.logs import LogBodies, Logs
from projections.readmodel import ReadModel
from projections.prompt_templates import Templates
from projections.webhooks import WEBHOOKS

DIRECTORY = Directory()
BILLING = Billing()
CATALOG = CatalogModel()
TEMPLATES = Templates()
LOGS = Logs()
READ_MODELS: list[ReadModel] = [DIRECTORY, BILLING, CATALOG, TEMPLATES, LOGS]
# every follower of the log with a position: the read models and the webhook outbox (never rebuilt)
FOLLOWERS: list[ReadModel] = [*READ_MODELS, WEBHOOKS]
LOG_BODIES = LogBodies()  # read from the bodies stream, not the log (MESH_LOG_BODIES=on)
RETENTION_EVERY = 3600.0  # seconds between two retention passes over the logs


async def trim_logs(pool: AsyncConnectionPool, days: int) -> list[str]:
    """Retention: drop the log and body months past `days` (MESH_LOG_RETENTION_DAYS); the partitions dropped."""
    return [name for model in (LOGS, LOG_BODIES) for name in await logs.trim(pool, model, days)]
