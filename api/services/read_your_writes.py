"""Read-your-writes: a use case saves a change, then answers once the read model it reads shows it."""

from __future__ import annotations

import asyncio
from typing import Callable, TypeVar

from psycopg_pool import AsyncConnectionPool

from projections.readmodel import ReadModel
from projections.runner import wait_for_position

T = TypeVar("T")


class ReadModelWaiter:
    """Waits (briefly) until a read model reflects a stream position; `nudge` wakes the projections first."""

    def __init__(self, pool: AsyncConnectionPool, nudge: Callable[[], None]):
        self.pool = pool
        self.nudge = nudge

    async def caught_up(self, model: ReadModel, position: int) -> None:
        self.nudge()
        await wait_for_position(self.pool, model, position)

    async def then_caught_up(
        self, model: ReadModel, command: Callable[..., T], *args: object, position: Callable[[T], int] | None = None
    ) -> T:
        """Run the command (blocking: it saves to the event log) in a thread, then wait until `model` shows what
        it saved. The command returns the position it saved at, or a result with a `position` (or `position`
        says where it is in the result)."""
        result = await asyncio.to_thread(command, *args)
        if position is not None:
            saved = position(result)
        else:
            saved = result if isinstance(result, int) else result.position  # type: ignore[attr-defined]
        await self.caught_up(model, saved)
        return result
