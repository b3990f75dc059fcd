"""An answer waits for its usage event to be stored; an event stored nowhere withholds the answer."""

import asyncio
import uuid

import pytest

from gateway.request_record import durable as _durable
from gateway.errors import GatewayError
from gateway.usage import NotStored


async def _settled(result: Exception | None) -> None:
    stored = asyncio.get_running_loop().create_future()
    waiting = asyncio.ensure_future(_durable(stored, uuid.uuid4()))
    await asyncio.sleep(0)
    assert not waiting.done()  # nothing leaves before the event is stored
    if result is None:
        stored.set_result(None)
    else:
        stored.set_exception(result)
    await waiting


def test_a_stored_event_lets_the_answer_go():
    asyncio.run(_settled(None))


def test_an_event_stored_nowhere_withholds_the_answer():
    with pytest.raises(GatewayError) as refused:
        asyncio.run(_settled(NotStored("not acknowledged and not spooled (disk full)")))
    assert refused.value.status == 503
    body = refused.value.body()
    assert b"usage_not_recorded" in body and b"disk full" not in body  # no internals in the answer
