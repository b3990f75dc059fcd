"""What the gateway hears from the event stream: key, account suspension, catalog and template changes, live.

A core NATS subscription on the aggregate subjects (commands/event_log.py `listen`) reaches every gateway
process within milliseconds of an append, with no database read.
"""

from __future__ import annotations

from nats.aio.client import Client as NATS

from commands.event_log import Handler, listen
from domain.catalog import MODEL_CHANGES, ModelSettings
from domain.events import aggregate_subject
from gateway.catalog import Catalog
from gateway.keys import ACCOUNT_EVENTS, KEY_EVENTS, KeyCache
from gateway.prompt_templates import EVENTS as TEMPLATE_EVENTS, TemplateCache


def handlers(keys: KeyCache, catalog: Catalog, templates: TemplateCache | None = None) -> dict[type, Handler]:
    """The events the gateway follows, by class, and what each one changes."""
    table: dict[type, Handler] = dict.fromkeys(KEY_EVENTS, keys.apply)
    table.update(dict.fromkeys(ACCOUNT_EVENTS, keys.apply_account))
    if templates is not None:
        table.update(dict.fromkeys(TEMPLATE_EVENTS, templates.apply))
    table.update(dict.fromkeys(MODEL_CHANGES, lambda e: catalog.apply(e.model_id, *MODEL_CHANGES[type(e)](e))))
    table[ModelSettings.Added] = lambda e: catalog.add(  # new to the catalog: added whole, with its price
        e.model_id,
        e.provider,
        e.upstream,
        MODEL_CHANGES[ModelSettings.Added](e)[0],
        e.max_output_tokens,
        e.context_tokens,
    )
    return table


async def follow(nc: NATS, stream: str, table: dict[type, Handler]):
    """Subscribe to aggregate events and hand the ones in `table` to their handler; returns the subscription."""
    return await listen(nc, aggregate_subject(stream, ">"), table)
