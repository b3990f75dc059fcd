"""The dashboard's Test of a prompt template: the template sent through the gateway as any client would send it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from uuid import UUID

import httpx
import msgspec

from api.services.logs import LogService


class TryOut(msgspec.Struct):
    """A template sent through the gateway's /v1/chat/completions, as any client would send it."""

    status: int
    answer: str | None = None
    error: str | None = None
    trace_id: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    cost: int | None = None  # pico-USD, as recorded in the logs (None when not there yet)


TRY_OUT_TIMEOUT = 120.0  # seconds for the model's answer
COST_PATIENCE = 3.0  # seconds to wait for the logs to show the call's cost


class TemplateTrial:
    """The dashboard's Test: a template sent through this process's own gateway, billed and logged like any call."""

    def __init__(self, gateway: Any, nudge: Callable[[], None], log_service: LogService):
        self.gateway = gateway  # the gateway's ASGI app
        self.nudge = nudge  # wakes the projections, so the call's cost shows sooner
        self.log_service = log_service

    async def run(
        self, account_id: UUID, key_secret: str, reference: str, model: str | None, variables: dict
    ) -> TryOut:
        """POST /v1/chat/completions with `template` and `variables` on the gateway's own ASGI app (the real
        path: key check, budget, upstream, usage event), then read the call's cost from the logs."""
        body: dict = {"template": reference, "variables": variables}
        if model:
            body["model"] = model
        transport = httpx.ASGITransport(app=self.gateway)
        async with httpx.AsyncClient(transport=transport, base_url="http://mesh", timeout=TRY_OUT_TIMEOUT) as client:
            r = await client.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key_secret}"})
        trace_id = r.headers.get("x-mesh-trace-id")
        answer = r.json()
        if r.status_code != 200:
            return TryOut(r.status_code, error=(answer.get("error") or {}).get("message") or r.text, trace_id=trace_id)
        usage = answer.get("usage") or {}
        out = TryOut(
            200,
            answer["choices"][0]["message"].get("content"),
            trace_id=trace_id,
            prompt_tokens=usage.get("prompt_tokens"),
            completion_tokens=usage.get("completion_tokens"),
        )
        if trace_id:
            deadline = asyncio.get_running_loop().time() + COST_PATIENCE
            while out.cost is None and asyncio.get_running_loop().time() < deadline:
                entry = await self.log_service.entry(account_id, UUID(trace_id))
                if entry is not None:
                    out.cost = entry.row.cost
                else:
                    self.nudge()
                    await asyncio.sleep(0.1)
        return out
