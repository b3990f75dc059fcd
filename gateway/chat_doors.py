"""The front doors that serve a chat: /v1/chat/completions as it is, /v1/responses and /v1/messages translated to
it (or, to an Anthropic-kind model, /v1/messages passed through), and /v1/messages/count_tokens."""

from __future__ import annotations

import uuid
from typing import Any, Awaitable, Callable

from domain.usage import Api
from gateway.admission import KeyInfo
from gateway.asgi import Receive, Scope, Send, read_body, respond
from gateway.catalog import Model
from gateway.errors import GatewayError, invalid
from gateway.fields import GATEWAY_FIELDS, check_fields, refuse_file_ids
from gateway.prompt_templates import names_template
from gateway.providers.base import Adapter, Reply, StreamReply
from gateway.request_parsing import ChatRequest, decode_object, parse_chat
from gateway.reservation import Admitted
from gateway.serving import Door, Serving
from gateway.wire import messages, messages_request, messages_stream, responses, responses_stream
from gateway.wire.internal import Translated


class ChatDoors(Serving):
    """POST /v1/chat/completions, /v1/responses, /v1/messages and /v1/messages/count_tokens."""

    async def _chat(
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
            raw = await read_body(receive)
            body = decode_object(raw)
            template = await self._template(key, body, headers) if names_template(body) else None
            listed = self._request_models(body, key)
            request = parse_chat(body)
            model = self._resolve_id(request.model, key) if request.model or not listed else listed[0]
            check_fields(body, self.adapters[model.provider].chat_fields, model.id)
            refuse_file_ids(request.messages)
            if listed is not None:
                backups = [m for m in listed if m.id != model.id]
                for backup in backups:  # the client's own list: each must take the request as its model would
                    check_fields(body, self.adapters[backup.provider].chat_fields, backup.id)
            elif model.fallbacks:  # mesh.toml's: those that take the request as it is
                backups = [m for m in self._fallbacks(key, model) if _takes(body, self.adapters[m.provider], m)]
            else:
                backups = []
            admitted = await self._admit(key, model, request, body, headers, fallbacks=backups, strict=bool(listed))
        except GatewayError as refusal:  # refused before any upstream call: counted for its key
            self._count_refusal(key, refusal)
            raise
        record = self._record(trace_id, key, model, request.model, started, request_id, request.stream, admitted, raw)
        record.template = template
        include_usage = bool((request.stream_options or {}).get("include_usage"))
        door = ChatDoor(self.adapters, body, include_usage)
        await self._serve(send, receive, headers, record, admitted.models, door)

    async def _messages(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list,
        trace_id: uuid.UUID,
        started: int,
        request_id: str | None,
    ) -> None:
        """Anthropic's Messages API: passed through to an Anthropic-kind model, translated for the others
        (gateway/wire/messages.py); admitted, billed and logged as a chat completion is."""
        key = await self._authenticate(scope, anthropic=True)
        try:
            raw = await read_body(receive)
            body = decode_object(raw)
            _refuse_templates(body, messages.PATH)
            request = messages.parse(body)
            model = self._resolve_id(request.model, key)
            adapter = self.adapters[model.provider]
            door: Door
            if self._kind(model) == "anthropic":
                messages.check_pass_through(body, model)
                forwarded = messages.forwarded_headers(scope)
                query = "?beta=true" if scope.get("query_string") == b"beta=true" else ""
                as_chat = ChatRequest(request.messages, request.model, max_tokens=request.max_tokens)
                # passed through as sent: only to other Anthropic-kind models (no translation on this path)
                backups = [m for m in self._fallbacks(key, model) if self._kind(m) == "anthropic" and _passes(body, m)]
                admitted = await self._admit(key, model, as_chat, body, headers, _messages_bound, fallbacks=backups)
                door = MessagesPassThrough(self.adapters, body, forwarded, query)
            else:
                translated = messages_request.translate(body, model, adapter.chat_fields)
                translations = self._translations(
                    key, model, lambda m, fields: messages_request.translate(body, m, fields)
                )
                internal, admitted = await self._admit_translated(
                    key, model, adapter, translated, headers, fallbacks=[self.catalog.models[m] for m in translations]
                )
                translations[model.id] = internal
                door = MessagesDoor(self.adapters, translations)
        except GatewayError as refusal:  # refused before any upstream call: counted for its key
            self._count_refusal(key, refusal)
            raise

        record = self._record(
            trace_id, key, model, request.model, started, request_id, request.stream, admitted, raw, Api.MESSAGES
        )
        await self._serve(send, receive, headers, record, admitted.models, door, messages.error_body)

    async def _responses(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        headers: list,
        trace_id: uuid.UUID,
        started: int,
        request_id: str | None,
    ) -> None:
        """OpenAI's Responses API, stateless, translated for every provider kind (gateway/wire/responses.py);
        admitted, billed and logged as a chat completion is."""
        key = await self._authenticate(scope)
        try:
            raw = await read_body(receive)
            body = decode_object(raw)
            _refuse_templates(body, responses.PATH)
            request = responses.parse(body)
            model = self._resolve_id(request.model, key)
            adapter = self.adapters[model.provider]
            translated = responses.translate(body, model, adapter.chat_fields)
            translations = self._translations(key, model, lambda m, fields: responses.translate(body, m, fields))
            internal, admitted = await self._admit_translated(
                key,
                model,
                adapter,
                translated,
                headers,
                "max_output_tokens",
                [self.catalog.models[m] for m in translations],
            )
            translations[model.id] = internal
        except GatewayError as refusal:  # refused before any upstream call: counted for its key
            self._count_refusal(key, refusal)
            raise
        record = self._record(
            trace_id, key, model, request.model, started, request_id, request.stream, admitted, raw, Api.RESPONSES
        )
        await self._serve(
            send, receive, headers, record, admitted.models, ResponsesDoor(self.adapters, translations, body)
        )

    async def _admit_translated(
        self,
        key: KeyInfo,
        model: Model,
        adapter: Adapter,
        translated: Translated,
        headers: list,
        limit_field: str = "max_tokens",
        fallbacks: "list[Model] | None" = None,
    ) -> tuple[dict, "Admitted"]:
        """A front door's request translated to the internal shape, checked and admitted as a chat request is."""
        internal = translated.body
        check_fields(internal, adapter.chat_fields, model.id, consumed=frozenset())
        chat = parse_chat(internal)
        refuse_file_ids(chat.messages)
        admitted = await self._admit(
            key, model, chat, internal, headers, limit_field=limit_field, fallbacks=fallbacks or []
        )
        headers.extend(translated.header())
        return internal, admitted

    async def _count_tokens(self, scope: Scope, receive: Receive, send: Send, headers: list) -> None:
        """POST /v1/messages/count_tokens: the Anthropic upstream's own count, or Mesh's upper bound of the prompt
        (an estimate, said by x-mesh-estimated) for the others. Nothing is billed."""
        key = await self._authenticate(scope, anthropic=True)
        try:
            body = decode_object(await read_body(receive))
            request = messages.parse(body, counting=True)
            model = self._resolve_id(request.model, key)
            adapter = self.adapters[model.provider]
            if self._kind(model) == "anthropic":
                messages.check_pass_through(body, model)
                head = adapter.upstream.head_with(messages.forwarded_headers(scope))
                answer = await adapter.count_tokens(model, body, head)
            else:
                answer = messages.count(body, model)
                headers.append((b"x-mesh-estimated", b"true"))
        except GatewayError as refusal:  # refused before any upstream call: counted for its key
            self._count_refusal(key, refusal)
            raise
        await respond(send, 200, headers, answer)

    def _translations(
        self, key: KeyInfo, model: Model, translate: Callable[[Model, frozenset[str]], Translated]
    ) -> dict[str, dict]:
        """A translated front door's request for each of the model's fallbacks that can take it (the others are
        left out), by model id."""
        translations: dict[str, dict] = {}
        for backup in self._fallbacks(key, model):
            fields = self.adapters[backup.provider].chat_fields
            try:
                internal = translate(backup, fields).body
                check_fields(internal, fields, backup.id, consumed=frozenset())
            except GatewayError:
                continue
            translations[backup.id] = internal
        return translations


class ChatDoor(Door):
    """/v1/chat/completions: the body sent to each model's provider as it is."""

    __slots__ = ("adapters", "body", "include_usage")

    def __init__(self, adapters: dict[str, Adapter], body: dict, include_usage: bool):
        self.adapters, self.body, self.include_usage = adapters, body, include_usage

    def call(self, model: Model) -> Awaitable[Reply]:
        return self.adapters[model.provider].chat(model, self.body)

    def open_stream(self, model: Model) -> Awaitable[StreamReply]:
        return self.adapters[model.provider].chat_stream(model, self.body, self.include_usage)


class MessagesPassThrough(Door):
    """/v1/messages to Anthropic-kind models: the body passed through as sent, with the client's headers that
    Anthropic reads (`forwarded`) and its `?beta=true`, the answer relayed as it came."""

    __slots__ = ("adapters", "body", "forwarded", "query")

    def __init__(self, adapters: dict[str, Adapter], body: dict, forwarded: dict[str, str], query: str):
        self.adapters, self.body, self.forwarded, self.query = adapters, body, forwarded, query

    def call(self, model: Model) -> Awaitable[Reply]:
        adapter: Any = self.adapters[model.provider]
        return adapter.messages(model, self.body, adapter.upstream.head_with(self.forwarded), self.query)

    def open_stream(self, model: Model) -> Awaitable[StreamReply]:
        adapter: Any = self.adapters[model.provider]
        return adapter.messages_stream(model, self.body, adapter.upstream.head_with(self.forwarded), self.query)


class TranslatedDoor(Door):
    """A front door translated to chat completions: each model's request in the internal shape, by model id."""

    __slots__ = ("adapters", "translations")

    def __init__(self, adapters: dict[str, Adapter], translations: dict[str, dict]):
        self.adapters, self.translations = adapters, translations

    def call(self, model: Model) -> Awaitable[Reply]:
        return self.adapters[model.provider].chat(model, self.translations[model.id])

    def open_stream(self, model: Model) -> Awaitable[StreamReply]:
        return self.adapters[model.provider].chat_stream(model, self.translations[model.id], True)


class MessagesDoor(TranslatedDoor):
    """/v1/messages to the other models: translated, the answer encoded as a message (gateway/wire/messages.py)."""

    __slots__ = ()

    def encode(self, model: Model, result: Reply, cost: int, usd: str) -> bytes:
        return messages.encode(result.body, result.usage, model, cost)

    def encode_stream(self, model: Model, reply: StreamReply) -> StreamReply:
        return messages_stream.encode_stream(reply, model)


class ResponsesDoor(TranslatedDoor):
    """/v1/responses: translated, the answer encoded as a response to `body` (gateway/wire/responses.py)."""

    __slots__ = ("body",)

    def __init__(self, adapters: dict[str, Adapter], translations: dict[str, dict], body: dict):
        super().__init__(adapters, translations)
        self.body = body

    def encode(self, model: Model, result: Reply, cost: int, usd: str) -> bytes:
        return responses.encode(result.body, result.usage, model, self.body, cost)

    def encode_stream(self, model: Model, reply: StreamReply) -> StreamReply:
        return responses_stream.encode_stream(reply, model, self.body)


def _takes(body: dict, adapter: Adapter, model: Model) -> bool:
    """Whether a chat completion's body can go to a fallback model as it is (its provider takes every field)."""
    try:
        check_fields(body, adapter.chat_fields, model.id)
    except GatewayError:
        return False
    return True


def _passes(body: dict, model: Model) -> bool:
    """Whether an Anthropic Messages body can be passed through to a fallback model as it is."""
    try:
        messages.check_pass_through(body, model)
    except GatewayError:
        return False
    return True


def _messages_bound(body: dict, model: Model, kind: str) -> int:
    return messages.prompt_bound(body, model)


def _refuse_templates(body: dict, path: str) -> None:
    for name in GATEWAY_FIELDS & body.keys():
        raise invalid(
            f"{name!r}: prompt templates are applied on /v1/chat/completions only, not on {path}",
            "unsupported_parameter",
            name,
        )
