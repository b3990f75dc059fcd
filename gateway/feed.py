"""What the gateway hears from the event stream: key, account suspension, catalog and template changes, live.

A core NATS subscription on the aggregate subjects reaches every gateway
process within milliseconds of an append, with no database read.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from domain.catalog import ModelSettings
from domain.events import event_name
from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, decode_event, subject_prefix
from domain.pricing import Price
from gateway.catalog import Catalog
from gateway.keys import ACCOUNT_TOPICS, TOPICS as KEY_TOPICS, KeyCache
from gateway.prompt_templates import TOPICS as TEMPLATE_TOPICS, TemplateCache

log = logging.getLogger("mesh.gateway")

Handler = Callable[[str, Any], None]


def handlers(keys: KeyCache, catalog: Catalog, templates: TemplateCache | None = None) -> dict[str, Handler]:
    """The events the gateway follows, and what each one changes."""
    table: dict[str, Handler] = {topic: keys.apply for topic in KEY_TOPICS}
    table.update({topic: keys.apply_account for topic in ACCOUNT_TOPICS})
    if templates is not None:
        table.update({topic: templates.apply for topic in TEMPLATE_TOPICS})
    table["model.price_changed"] = lambda _, e: catalog.apply(
        e.model_id, price=Price(e.prompt_per_1k, e.completion_per_1k, e.cached_per_1k, e.cache_write_per_1k)
    )
    table[event_name(ModelSettings.Added)] = lambda _, e: catalog.add(
        e.model_id,
        e.provider,
        e.upstream,
        Price(e.prompt_per_1k, e.completion_per_1k, e.cached_per_1k, e.cache_write_per_1k),
        e.max_output_tokens,
        e.context_tokens,
    )
    table["model.enabled"] = lambda _, e: catalog.apply(e.model_id, enabled=True)
    table["model.disabled"] = lambda _, e: catalog.apply(e.model_id, enabled=False)
    return table


async def follow(nc: NATS, stream: str, table: dict[str, Handler]):
    """Subscribe to aggregate events and hand the ones in `table` to their handler; returns the subscription."""

    async def on_message(msg: Msg) -> None:
        headers = msg.headers or {}
        topic = headers.get(HEADER_TOPIC, "")
        handler = table.get(topic)
        if handler is None:
            return
        try:
            event = decode_event(
                topic, msg.data, headers.get(HEADER_ORIGINATOR_ID, ""), int(headers.get(HEADER_ORIGINATOR_VERSION) or 0)
            )
        except Exception:
            log.exception("undecodable %s event on %s", topic, msg.subject)
            return
        handler(topic, event)

    return await nc.subscribe(f"{subject_prefix(stream)}.agg.>", cb=on_message)
