"""What the gateway hears from the event stream: key, account suspension, catalog and template changes, live.

A core NATS subscription on the aggregate subjects reaches every gateway
process within milliseconds of an append, with no database read.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from domain.catalog import MODEL_CHANGES, ModelSettings
from domain.events import EVENT_TYPES, HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, decode_event
from domain.events import subject_prefix
from gateway.catalog import Catalog
from gateway.keys import ACCOUNT_EVENTS, KEY_EVENTS, KeyCache
from gateway.prompt_templates import EVENTS as TEMPLATE_EVENTS, TemplateCache

log = logging.getLogger("mesh.gateway")

Handler = Callable[[Any], None]


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

    async def on_message(msg: Msg) -> None:
        headers = msg.headers or {}
        topic = headers.get(HEADER_TOPIC, "")
        handler = table.get(EVENT_TYPES.get(topic))  # None: not an event it follows
        if handler is None:
            return
        try:
            event = decode_event(
                topic, msg.data, headers.get(HEADER_ORIGINATOR_ID, ""), int(headers.get(HEADER_ORIGINATOR_VERSION) or 0)
            )
        except Exception:
            log.exception("undecodable %s event on %s", topic, msg.subject)
            return
        handler(event)

    return await nc.subscribe(f"{subject_prefix(stream)}.agg.>", cb=on_message)
