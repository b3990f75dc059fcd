"""POST /v1/embeddings: admitted from the budget by its input's size, served by the model's provider, billed."""

from __future__ import annotations

import uuid

import msgspec

from domain.usage import Api
from gateway import answer_fields, worst_case
from gateway.asgi import Receive, Scope, Send, read_body, respond
from gateway.errors import GatewayError, invalid
from gateway.fields import check_fields
from gateway.key_rate import limited
from gateway.leases import FREE
from gateway.providers.base import Reply
from gateway.request_parsing import EmbeddingsRequest, decode_object
from gateway.request_record import RequestRecord
from gateway.serving import Serving, answered


class EmbeddingsDoor(Serving):
    """POST /v1/embeddings."""

    async def _embeddings(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list,
        trace_id: uuid.UUID,
        started: int,
        request_id: str | None,
    ) -> None:
        key = await self._authenticate(scope)
        try:
            body = decode_object(await read_body(receive))
            try:
                request = msgspec.convert(body, EmbeddingsRequest)
            except msgspec.ValidationError as exc:
                raise invalid(f"invalid request: {exc}", "invalid_request") from None
            if not request.input or (
                isinstance(request.input, list)
                and not all(
                    isinstance(i, (str, int)) or (isinstance(i, list) and all(isinstance(t, int) for t in i))
                    for i in request.input
                )
            ):
                raise invalid(
                    "'input' must be a non-empty string, list of strings, or token ids", "invalid_request", "input"
                )
            model = self._resolve_id(request.model, key)
            if model.price.is_free:
                self.free_limit.admit(key.account_id, model.id)
            adapter = self.adapters[model.provider]
            serve = getattr(adapter, "embeddings", None)
            if serve is None:
                raise invalid(f"model {model.id!r} does not serve embeddings", "unsupported_endpoint", "model")
            check_fields(body, adapter.embeddings_fields, model.id, consumed=frozenset())  # templates are for chat
            bound = worst_case.PROMPT_OVERHEAD + len(msgspec.json.encode(request.input))
            cost = model.price.cost(bound, 0)
            ticket = await self.budgets.reserve(key, cost, cost) if cost else FREE
            rate = await self._admit_rate(key, ticket, headers, lambda: bound) if limited(key) else None
        except GatewayError as refusal:  # refused before any upstream call: counted for its key
            self._count_refusal(key, refusal)
            raise
        record = RequestRecord(trace_id, key, model, request.model, started, request_id, False, ticket, Api.EMBEDDINGS)
        record.prompt_bound = None if model.price.is_free else bound
        record.rate = rate
        try:
            result: Reply = await serve(model, body)
        except GatewayError as exc:
            await self._upstream_failed(record, exc)
            await respond(send, exc.status, headers, exc.body())
            return
        except BaseException:
            self.budgets.release(ticket, 0)
            raise
        event = record.done(result.usage, result.upstream_us, None)
        await self._emit(record, event)
        usd = answer_fields.cost_usd(event.cost)
        answer = answer_fields.patched(result.body, answer_fields.model_name(model.id), usd)
        await respond(send, 200, answered(headers, model, usd), answer)
