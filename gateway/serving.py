"""Serving an admitted request the same for every front door: its upstream call (with retries and fallbacks), its
bill made durable exactly once, and its answer, plain or streamed."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime, timezone
from typing import Awaitable, Callable

from domain.usage import UsageRecorded
from gateway import answer_fields, fallbacks
from gateway.answer_fields import UPSTREAM_MODEL_HEADER
from gateway.asgi import Receive, Send, respond
from gateway.catalog import Model
from gateway.errors import GatewayError
from gateway.providers.base import Reply, StreamReply
from gateway.request_record import RequestRecord, durable
from gateway.reservation import Reservation
from gateway.stream_relay import drain, recording, relay, watch_disconnect


class Serving(Reservation):
    """An admitted request's upstream call, bill and answer."""

    async def _serve(
        self,
        send: Send,
        receive: Receive,
        headers: list,
        record: RequestRecord,
        models: list[Model],
        door: "Door",
        error_body: Callable[[GatewayError], bytes] = GatewayError.body,
    ) -> None:
        """Call the upstream (the request's model, then, when it fails before answering, its retries and
        fallbacks: gateway/fallbacks.py), bill the request exactly once, for the model that answered, and send
        its answer (in the front door's format: `door` calls each model and encodes the answer), the same for
        every front door. The answer names the Mesh id of the model that answered and states its charge."""
        try:
            call = door.open_stream if record.stream else door.call
            try:  # the record then names the model that answered, or, when none did, the last one tried
                model, answer = await fallbacks.first_answer(models, call, record.attempts, self._attempt_failed)
            except GatewayError as exc:
                self._answered_by(record, self.catalog.models.get(record.attempts[-1].model, record.model))
                await self._upstream_failed(record, exc)
                if record.stream:
                    raise
                await respond(send, exc.status, headers, error_body(exc))
                return
            self._answered_by(record, model)  # its price is the one billed
            if record.stream:
                answer.priced = record.cost
                headers.append((UPSTREAM_MODEL_HEADER, record.model.upstream.encode()))
                await self._stream(send, receive, headers, door.encode_stream(record.model, answer), record)
            else:
                event = record.done(answer.usage, answer.upstream_us, None)
                usd = answer_fields.cost_usd(event.cost)
                body = door.encode(record.model, answer, event.cost, usd)
                # billed first: a client gone while the answer is written still owes what the upstream did
                record.response_body = body
                await self._emit(record, event)
                await respond(send, 200, answered(headers, record.model, usd), body)
        finally:
            if not record.emitted:  # an unexpected failure: free the reservation all the same
                self.budgets.release(record.ticket, 0)
            elif record.request_body is not None and self.bodies is not None:  # bodies logged: the answer is complete
                self.bodies.submit(
                    record.trace_id,
                    record.key.account_id,
                    datetime.now(timezone.utc),
                    record.request_body,
                    record.response_body,
                )

    def _attempt_failed(self, model: Model, error: GatewayError) -> None:
        self.metrics.upstream_error(model.provider, error.code or "unknown")

    def _answered_by(self, record: RequestRecord, model: Model) -> None:
        """The request is billed as `model`'s (its model, or a fallback that answered or was tried last)."""
        if model.id != record.model.id:
            record.model = model
            record.prompt_bound = record.bounds.get(model.id)

    def _emit(self, record: RequestRecord, event: UsageRecorded) -> Awaitable[None]:
        """The request is over: swap its reservation for its cost and publish what it cost (both at once, awaited
        or not). Await what it returns before the answer's last byte: it is done once the event is durable
        (acknowledged by JetStream, or in the fsynced spool), shared with every request finishing alongside."""
        record.emitted = True
        self.budgets.release(record.ticket, event.cost)
        if record.rate is not None:  # the key has rate limits
            self.key_rates.settle(record.rate, event.prompt_tokens + event.completion_tokens)
        self.metrics.served(event)
        return durable(self.usage.submit(event), event.trace_id)

    def _upstream_failed(self, record: RequestRecord, exc: GatewayError) -> Awaitable[None]:
        """The upstream failed the request before its answer began: billed (for what it reports, usually nothing)
        and counted as the provider's error."""
        exc.billed = True
        self.metrics.upstream_error(record.model.provider, exc.code or "unknown")
        return self._emit(record, record.failed(exc))

    async def _stream(
        self, send: Send, receive: Receive, headers: list, reply: StreamReply, record: RequestRecord
    ) -> None:
        """Relay the stream. If the client goes away, the upstream keeps going (it bills what it generates all
        the same): it is read to its end, up to `drain_seconds`, for its own usage; only a stream that does not end
        by then is closed and billed from an estimate."""
        stream_headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"), *headers[1:]]
        await send({"type": "http.response.start", "status": 200, "headers": stream_headers})
        gone = asyncio.Event()
        watcher = asyncio.create_task(watch_disconnect(receive, gone))
        error: str | None = None
        status = 200
        frames: list[bytes] | None = [] if record.request_body is not None else None  # the logged answer

        async def bill() -> None:  # the stream is complete: its bill is durable before its last frame leaves
            await reply.aclose()  # the adapter settles the usage and the upstream time as it closes
            await self._emit(record, record.done(reply.usage, reply.upstream_us, reply.first_token_ns))

        try:
            try:
                await relay(reply if frames is None else recording(reply, frames), send, gone, bill, reply)
            except GatewayError as exc:
                error, status = exc.message, exc.status
                if not record.emitted:  # the upstream failed mid-stream (not the bill, once it is done)
                    self.metrics.upstream_error(record.model.provider, exc.code or "unknown")
            except OSError as exc:
                gone.set()
                error = f"client disconnected ({type(exc).__name__})"
            if gone.is_set() and not record.emitted:
                await drain(reply, self.drain_seconds)
        finally:
            watcher.cancel()
            await reply.aclose()  # closes the upstream response (if still open): it stops generating
        if frames is not None:
            record.response_body = b"".join(frames)
        if record.emitted:
            return
        if gone.is_set():
            error, status = error or "client disconnected mid-stream", 499
        with contextlib.suppress(GatewayError):  # the response has begun: there is nothing more to tell
            await self._emit(record, record.done(reply.usage, reply.upstream_us, reply.first_token_ns, error, status))


class Door:
    """How a front door calls a request's models, and writes the answer of the one that answered in the door's
    own format. This one is /v1/chat/completions' own: the answer relayed as it came, its model and usage
    patched (gateway/answer_fields.py); a door calls each provider as its subclass says (gateway/chat_doors.py)."""

    __slots__ = ()

    def call(self, model: Model) -> Awaitable[Reply]:
        raise NotImplementedError

    def open_stream(self, model: Model) -> Awaitable[StreamReply]:
        raise NotImplementedError

    def encode(self, model: Model, result: Reply, cost: int, usd: str) -> bytes:
        """The plain answer of `model`, stating the request's charge: `cost` pico-USD, `usd` as
        answer_fields.cost_usd writes it."""
        return answer_fields.patched(result.body, answer_fields.model_name(model.id), usd)

    def encode_stream(self, model: Model, reply: StreamReply) -> StreamReply:
        """The streamed answer of `model` (its frames name it and state the charge as they go)."""
        return reply


def answered(headers: list, model: Model, usd: str) -> list:
    """A plain answer's headers: the upstream's own name of its model and what it was charged (as
    answer_fields.cost_usd writes it)."""
    return [*headers, (UPSTREAM_MODEL_HEADER, model.upstream.encode()), (answer_fields.COST_HEADER, usd.encode())]
