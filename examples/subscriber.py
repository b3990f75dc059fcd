"""Follow every usage event of a Mesh straight from NATS JetStream, with a durable consumer that keeps its position.

    MESH_NATS_URL=nats://mesh:<password>@127.0.0.1:4222 python examples/subscriber.py [--durable usage-printer]

Prints one line per request Mesh served: its trace id, key, model and cost. Each event is acknowledged after it is
handled, so the consumer's position (kept by JetStream under the durable name) moves past an event only once it was
printed: stopped and started again, it goes on after the last one handled, nothing skipped; an event whose
handling failed comes again. The usage events of all accounts are on `<stream>.usage.<account id>` (MESH_STREAM,
default MESH; docs/events.md); `mesh up` writes its NATS address, with the password, to <data dir>/running.json.
Needs Mesh's package (for its event types) and nats-py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import nats
from nats.errors import TimeoutError as NatsTimeout
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from domain.events import HEADER_ORIGINATOR_ID, HEADER_ORIGINATOR_VERSION, HEADER_TOPIC, decode_event, usage_subject
from domain.money import pico_to_usd
from domain.usage import UsageRecorded

BATCH = 100  # events fetched at once
WAIT_SECONDS = 5.0  # a fetch waits this long for events before asking again
ACK_WAIT_SECONDS = 30.0  # an event not acknowledged by then is delivered again


def handle(event: object) -> None:
    """What this subscriber does with an event: print the usage ones (a refusal count is on the same subjects)."""
    if isinstance(event, UsageRecorded):
        print(
            f"trace={event.trace_id} key={event.key_id} model={event.model} cost_usd={pico_to_usd(event.cost)}",
            flush=True,
        )


async def run(nats_url: str, stream: str, durable: str, stop: asyncio.Event) -> None:
    nc = await nats.connect(nats_url.split(","))
    js = nc.jetstream()
    subscription = await js.pull_subscribe(
        usage_subject(stream, "*"),
        durable=durable,
        stream=stream,
        config=ConsumerConfig(
            ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL, ack_wait=ACK_WAIT_SECONDS
        ),
    )
    try:
        while not stop.is_set():
            try:
                messages = await subscription.fetch(BATCH, timeout=WAIT_SECONDS)
            except NatsTimeout:
                continue
            for msg in messages:
                headers = msg.headers or {}
                event = decode_event(
                    headers[HEADER_TOPIC],
                    msg.data,
                    headers.get(HEADER_ORIGINATOR_ID, ""),
                    int(headers.get(HEADER_ORIGINATOR_VERSION) or 1),
                )
                handle(event)
                await msg.ack()  # handled: the durable position moves past it
    finally:
        await nc.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--durable", default="usage-printer", help="the consumer's name: its position is kept under it")
    args = parser.parse_args()
    stop = asyncio.Event()

    async def go() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run(os.environ["MESH_NATS_URL"], os.environ.get("MESH_STREAM", "MESH"), args.durable, stop)

    asyncio.run(go())


if __name__ == "__main__":
    main()
