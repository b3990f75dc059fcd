"""The OpenAI-compatible endpoint, as a plain ASGI app (the hot path skips the web framework).

Per request: authenticate the key, validate the body, resolve the model and its
price, check the balance, call the provider, make its UsageRecorded event durable, then finish the answer.
The gateway never changes state itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable, Iterator, NamedTuple

import msgspec

from domain.credentials import hash_token
from domain.usage import Api, UsageRecorded
from gateway import answer_fields, fallbacks, worst_case
from gateway.answer_fields import UPSTREAM_MODEL_HEADER
from gateway.admission import KeyInfo, bearer_token
from gateway.asgi import Receive, Scope, Send, header, read_body, respond
from gateway.lease_admission import FREE, BudgetRefusal, Budgets, Ticket
from gateway.bodies import BodyPublisher
from gateway.catalog import Catalog, Model
from gateway.fields import GATEWAY_FIELDS, check_fields, refuse_file_ids
from gateway.freelimit import DEFAULT_FREE_RPM, FreeRateLimit
from gateway.key_rate import KeyRates, RateUse, token_bound
from gateway.keys import KeyCache
from gateway.metrics import GatewayMetrics
from gateway.request_parsing import ChatRequest, EmbeddingsRequest, decode_object, parse_chat
from gateway.request_record import RequestRecord, durable
from gateway.stream_relay import drain, recording, relay, watch_disconnect
from gateway.prompt_templates import TemplateCache, TemplateUse
from gateway.errors import GatewayError, invalid
from gateway.fallbacks import Candidate
from gateway.providers.base import Adapter, Reply, StreamReply
from gateway.refusals import Refusals
from gateway.trace_ids import current_trace, new_trace_id
from gateway.usage import UsagePublisher
from gateway.wire import messages, responses
from gateway.wire.internal import Translated

ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/embeddings", "/v1/models", messages.PATH, messages.COUNT_TOKENS_PATH, responses.PATH}
)
MODEL_PATH = "/v1/models/"  # GET /v1/models/{id}: a model id may hold slashes (acme/gpt-4o)
DISCONNECT_DRAIN_SECONDS = 30.0  # how long a stream whose client left is still read, for the upstream's own usage


class Gateway:
    def __init__(
        self,
        catalog: Catalog,
        adapters: dict[str, Adapter],
        keys: KeyCache,
        budgets: Budgets,
        usage: UsagePublisher,
        templates: TemplateCache | None = None,
        drain_seconds: float = DISCONNECT_DRAIN_SECONDS,
        free_rpm: int = DEFAULT_FREE_RPM,
        bodies: BodyPublisher | None = None,
        refusals: Refusals | None = None,
        metrics: GatewayMetrics | None = None,
        key_rates: KeyRates | None = None,
    ):
        self.catalog = catalog
        self.metrics = metrics or GatewayMetrics()
        self.refusals = refusals  # None: refused requests are not counted
        self.free_limit = FreeRateLimit(free_rpm)
        self.adapters = adapters
        self.keys = keys
        self.budgets = budgets
        self.usage = usage
        self.templates = templates
        self.drain_seconds = drain_seconds
        self.bodies = bodies  # None: bodies are not logged (MESH_LOG_BODIES=off), and cost nothing
        self.key_rates = key_rates or KeyRates(None)  # rpm_limit and tpm_limit of keys (gateway/key_rate.py)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        trace_id = new_trace_id()
        started = time.perf_counter_ns()
        current_trace.set(trace_id)
        headers = [
            (b"content-type", b"application/json"),
            (b"x-mesh-trace-id", str(trace_id).encode()),
            (b"x-content-type-options", b"nosniff"),  # the rest of api/security_headers.py is for pages
        ]
        request_id = header(scope, b"x-request-id")
        if request_id is not None:
            headers.append((b"x-request-id", request_id.encode("latin-1")))
        path, method = scope["path"], scope["method"]
        try:
            if path == "/v1/chat/completions" and method == "POST":
                await self._chat(scope, receive, send, headers, trace_id, started, request_id)
            elif path == "/v1/messages" and method == "POST":
                await self._messages(scope, receive, send, headers, trace_id, started, request_id)
            elif path == "/v1/messages/count_tokens" and method == "POST":
                await self._count_tokens(scope, receive, send, headers)
            elif path == "/v1/responses" and method == "POST":
                await self._responses(scope, receive, send, headers, trace_id, started, request_id)
            elif path == "/v1/embeddings" and method == "POST":
                await self._embeddings(scope, receive, send, headers, trace_id, started, request_id)
            elif path == "/v1/models" and method == "GET":
                await respond(send, 200, headers, self._models(await self._authenticate(scope)))
            elif path.startswith(MODEL_PATH) and method == "GET":
                key = await self._authenticate(scope)
                await respond(send, 200, headers, self._model(key, path[len(MODEL_PATH) :]))
            elif path in ENDPOINTS or path.startswith(MODEL_PATH):
                raise GatewayError(
                    405, f"{method} is not allowed on {path}", "invalid_request_error", "method_not_allowed"
                )
            else:
                raise GatewayError(404, f"unknown endpoint {path}", "invalid_request_error", "unknown_url")
        except GatewayError as exc:
            if not exc.billed:
                self.metrics.refusal(exc.code or "unknown")
            body = messages.error_body(exc) if path.startswith(messages.PATH) else exc.body()
            await respond(send, exc.status, headers + exc.headers, body)

    async def _authenticate(self, scope: Scope, anthropic: bool = False) -> KeyInfo:
        """The key of the request's `Authorization: Bearer` (or, as Anthropic's clients send it, `x-api-key`)."""
        api_key = header(scope, b"x-api-key") if anthropic else None
        token = api_key.strip() if api_key else bearer_token(scope["headers"])
        key = await self.keys.get(hash_token(token))
        if key is None:
            raise GatewayError(401, "invalid API key", "invalid_request_error", "invalid_api_key")
        refusal = key.refusal(datetime.now(timezone.utc))
        if refusal is not None:
            self._count_refusal(key, refusal)
            raise refusal
        return key

    def _count_refusal(self, key: KeyInfo, refusal: GatewayError) -> None:
        if self.refusals is not None and refusal.status < 500:  # a 5xx is Mesh's failure, not a refusal
            self.refusals.count(key.account_id, key.key_id, refusal.code)

    @contextlib.contextmanager
    def _counting_refusals(self, key: KeyInfo) -> Iterator[None]:
        """What a request is refused with before it reaches an upstream counts for its key (gateway/refusals.py)."""
        try:
            yield
        except GatewayError as refusal:
            self._count_refusal(key, refusal)
            raise

    def _models(self, key: KeyInfo) -> bytes:
        return msgspec.json.encode(
            {"object": "list", "data": [_model_object(m) for m in self.catalog.enabled() if key.may_use(m.id)]}
        )

    def _model(self, key: KeyInfo, model_id: str) -> bytes:
        """One model as GET /v1/models lists it (its id may hold a slash: the rest of the path), or a 404 for a
        model this key cannot use, in OpenAI's words."""
        model = self.catalog.get(model_id)
        if model is None or not key.may_use(model.id):
            raise GatewayError(
                404,
                f"the model {model_id[:200]!r} does not exist or this API key may not use it; GET /v1/models lists "
                "the ones it may",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return msgspec.json.encode(_model_object(model))

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
        with self._counting_refusals(key):
            raw = await read_body(receive)
            body = decode_object(raw)
            template = await self._template(key, body, headers)
            listed = self._request_models(body, key)
            request = parse_chat(body)
            model = self._resolve(request, key) if request.model or not listed else listed[0]
            check_fields(body, self.adapters[model.provider].chat_fields, model.id)
            refuse_file_ids(request.messages)
            if listed is not None:
                backups = [m for m in listed if m.id != model.id]
                for backup in backups:  # the client's own list: each must take the request as its model would
                    check_fields(body, self.adapters[backup.provider].chat_fields, backup.id)
            else:
                backups = [m for m in self._fallbacks(key, model) if _takes(body, self.adapters[m.provider], m)]
            admitted = await self._admit(key, model, request, body, headers, fallbacks=backups, strict=bool(listed))
        record = self._record(trace_id, key, model, request.model, started, request_id, request.stream, admitted, raw)
        record.template = template
        include_usage = bool((request.stream_options or {}).get("include_usage"))

        def bind(m: Model) -> Door:
            adapter = self.adapters[m.provider]
            return Door(lambda: adapter.chat(m, body), lambda: adapter.chat_stream(m, body, include_usage))

        await self._serve(send, receive, headers, record, admitted.models, bind)

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
        with self._counting_refusals(key):
            raw = await read_body(receive)
            body = decode_object(raw)
            _refuse_templates(body, messages.PATH)
            request = messages.parse(body)
            model = self._resolve_id(request.model, key)
            adapter = self.adapters[model.provider]
            bind: Callable[[Model], Door]
            if self._kind(model) == "anthropic":
                messages.check_pass_through(body, model)
                forwarded = messages.forwarded_headers(scope)
                query = "?beta=true" if scope.get("query_string") == b"beta=true" else ""
                as_chat = ChatRequest(request.messages, request.model, max_tokens=request.max_tokens)
                # passed through as sent: only to other Anthropic-kind models (no translation on this path)
                backups = [m for m in self._fallbacks(key, model) if self._kind(m) == "anthropic" and _passes(body, m)]
                admitted = await self._admit(key, model, as_chat, body, headers, _messages_bound, fallbacks=backups)

                def bind(m: Model) -> Door:
                    adapter = self.adapters[m.provider]
                    head = adapter.upstream.head_with(forwarded)
                    return Door(
                        lambda: adapter.messages(m, body, head, query),
                        lambda: adapter.messages_stream(m, body, head, query),
                    )
            else:
                translated = messages.translate(body, model, adapter.chat_fields)
                translations = self._translations(key, model, lambda m, fields: messages.translate(body, m, fields))
                internal, admitted = await self._admit_translated(
                    key, model, adapter, translated, headers, fallbacks=[self.catalog.models[m] for m in translations]
                )
                translations[model.id] = internal

                def bind(m: Model) -> Door:
                    adapter, internal = self.adapters[m.provider], translations[m.id]
                    return Door(
                        lambda: adapter.chat(m, internal),
                        lambda: adapter.chat_stream(m, internal, True),
                        lambda result, cost: messages.encode(result.body, result.usage, m, cost),
                        lambda reply: messages.encode_stream(reply, m),
                    )

        record = self._record(
            trace_id, key, model, request.model, started, request_id, request.stream, admitted, raw, Api.MESSAGES
        )
        await self._serve(send, receive, headers, record, admitted.models, bind, messages.error_body)

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
        with self._counting_refusals(key):
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
        record = self._record(
            trace_id, key, model, request.model, started, request_id, request.stream, admitted, raw, Api.RESPONSES
        )

        def bind(m: Model) -> Door:
            adapter, internal = self.adapters[m.provider], translations[m.id]
            return Door(
                lambda: adapter.chat(m, internal),
                lambda: adapter.chat_stream(m, internal, True),
                lambda result, cost: responses.encode(result.body, result.usage, m, body, cost),
                lambda reply: responses.encode_stream(reply, m, body),
            )

        await self._serve(send, receive, headers, record, admitted.models, bind)

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
        with self._counting_refusals(key):
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
        await respond(send, 200, headers, answer)

    def _record(
        self,
        trace_id: uuid.UUID,
        key: KeyInfo,
        model: Model,
        requested: str | None,
        started: int,
        request_id: str | None,
        stream: bool,
        admitted: "Admitted",
        raw: bytes,
        api: str = Api.CHAT_COMPLETIONS,
    ) -> RequestRecord:
        record = RequestRecord(trace_id, key, model, requested, started, request_id, stream, admitted.ticket, api)
        record.prompt_bound = admitted.prompt_bound
        record.rate = admitted.rate
        record.bounds = admitted.bounds
        if self.bodies is not None:
            record.request_body = raw
        return record

    async def _admit(
        self,
        key: KeyInfo,
        model: Model,
        request: ChatRequest,
        body: dict,
        headers: list,
        bound: Callable[[dict, Model, str], int] = worst_case.prompt_bound,
        limit_field: str | None = None,
        fallbacks: "list[Model] | None" = None,
        strict: bool = False,
    ) -> "Admitted":
        """The free-model rate limit, then the worst case reserved (of the costliest of the model and its
        `fallbacks`), then the key's rate limits; the answer says a limit the key fitted. `limit_field` names the
        completion limit as the client's wire format does, in refusals. A fallback that cannot write the
        completion limit asked is left out, or, `strict` (the client listed it), refused."""
        if model.price.is_free:  # refused before anything is recorded
            self.free_limit.admit(key.account_id, model.id)
        models = [model]
        if fallbacks:
            asked = request.max_completion_tokens or request.max_tokens
            for backup in fallbacks:
                if asked is not None and asked > backup.max_output_tokens:
                    if strict:
                        raise invalid(
                            f"'models': {backup.id!r} writes at most {backup.max_output_tokens} completion tokens, "
                            f"fewer than the {asked} asked",
                            "invalid_request",
                            "models",
                        )
                    continue
                models.append(backup)
        ticket, fitted, bounds = await self._reserve(key, models, request, body, bound, limit_field)
        prompt_bound = bounds[model.id]

        def tokens() -> int:  # only counted for a key with a tpm_limit
            kind = self._kind(model)
            prompt = prompt_bound if prompt_bound is not None else bound(body, model, kind)
            asked = fitted or request.max_completion_tokens or request.max_tokens
            return token_bound(prompt, asked, request.n or 1, model)

        rate = await self._admit_rate(key, ticket, headers, tokens)
        if fitted is not None:  # the key fits limits to its budget: the answer says to what
            headers.append((b"x-mesh-max-tokens", str(fitted).encode()))
        return Admitted(ticket, prompt_bound, rate, models, bounds)

    async def _serve(
        self,
        send: Send,
        receive: Receive,
        headers: list,
        record: RequestRecord,
        models: list[Model],
        bind: Callable[[Model], "Door"],
        error_body: Callable[[GatewayError], bytes] = GatewayError.body,
    ) -> None:
        """Call the upstream (the request's model, then, when it fails before answering, its retries and
        fallbacks: gateway/fallbacks.py), bill the request exactly once, for the model that answered, and send
        its answer (in the front door's format: `bind` gives each model's calls and encoders; a relayed answer
        patched by gateway/answer_fields.py), the same for every front door. The answer names the Mesh id of the
        model that answered and states its charge."""
        try:
            if record.stream:
                try:
                    door, reply = await self._first_answer(record, models, bind, True)
                except GatewayError as exc:
                    await self._upstream_failed(record, exc)
                    raise
                reply.priced = record.cost
                headers.append((UPSTREAM_MODEL_HEADER, record.model.upstream.encode()))
                if door.encode_stream is not None:
                    reply = door.encode_stream(reply)
                await self._stream(send, receive, headers, reply, record)
            else:
                try:
                    door, result = await self._first_answer(record, models, bind, False)
                except GatewayError as exc:
                    await self._upstream_failed(record, exc)
                    await respond(send, exc.status, headers, error_body(exc))
                    return
                event = record.done(result.usage, result.upstream_us, None)
                if door.encode is None:
                    answer = answer_fields.patched(result.body, answer_fields.model_name(record.model.id), event.cost)
                else:
                    answer = door.encode(result, event.cost)
                # billed first: a client gone while the answer is written still owes what the upstream did
                record.response_body = answer
                await self._emit(record, event)
                await respond(send, 200, _answered(headers, record.model, event.cost), answer)
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

    async def _first_answer(
        self, record: RequestRecord, models: list[Model], bind: Callable[[Model], "Door"], stream: bool
    ) -> tuple["Door", Any]:
        """The first of `models` to answer (its stream opened, when `stream`), tried as gateway/fallbacks.py
        says; the record then names it (its price is the one billed), or, when none answers, the last one tried."""
        doors = [bind(m) for m in models]
        candidates = [Candidate(m, door.open_stream if stream else door.call) for m, door in zip(models, doors)]
        attempts = record.attempts
        try:
            candidate, answer = await fallbacks.first_answer(candidates, attempts, self._attempt_failed)
        except GatewayError:
            self._answered_by(record, self.catalog.models.get(attempts[-1].model, record.model))
            raise
        if candidate.model is not record.model:
            self._answered_by(record, candidate.model)
        return doors[candidates.index(candidate)], answer

    def _attempt_failed(self, model: Model, error: GatewayError) -> None:
        self.metrics.upstream_error(model.provider, error.code or "unknown")

    def _answered_by(self, record: RequestRecord, model: Model) -> None:
        if model.id != record.model.id:
            record.model = model
            record.prompt_bound = record.bounds.get(model.id)

    def _request_models(self, body: dict, key: KeyInfo) -> list[Model] | None:
        """The request's own `models` list (OpenRouter's field), taken out of the body, each a model this key may
        use, in order (tried after its `model`; without one, the first is its model); None without one."""
        if "models" not in body:
            return None
        listed = body.pop("models")
        most = fallbacks.MAX_FALLBACKS + 1
        if not isinstance(listed, list) or not listed or not all(isinstance(m, str) for m in listed):
            raise invalid("'models' must be a non-empty list of model ids", "invalid_request", "models")
        if len(listed) > most:
            raise invalid(f"'models' lists {len(listed)} models; at most {most}", "invalid_request", "models")
        models: list[Model] = []
        for model_id in listed:
            model = self.catalog.get(model_id)
            if model is None or not key.may_use(model.id):
                raise invalid(
                    f"'models': {model_id[:200]!r} does not exist or this API key may not use it; GET /v1/models "
                    "lists the ones it may",
                    "model_not_allowed" if model is not None else "model_not_found",
                    "models",
                )
            if all(model.id != m.id for m in models):
                models.append(model)
        return models

    def _fallbacks(self, key: KeyInfo, model: Model) -> list[Model]:
        """The model's fallbacks in mesh.toml that are enabled and that this key may use, in order."""
        if not model.fallbacks:
            return []
        found = [self.catalog.get(model_id) for model_id in model.fallbacks]
        return [m for m in found if m is not None and m.id != model.id and key.may_use(m.id)]

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

    def _kind(self, model: Model) -> str:
        return self.catalog.providers[model.provider].kind

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
        with self._counting_refusals(key):
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
            model = self._resolve(request, key)
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
            rate = await self._admit_rate(key, ticket, headers, lambda: bound)
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
        answer = answer_fields.patched(result.body, answer_fields.model_name(model.id), event.cost)
        await respond(send, 200, _answered(headers, model, event.cost), answer)

    async def _admit_rate(
        self, key: KeyInfo, ticket: Ticket, headers: list, tokens: Callable[[], int]
    ) -> RateUse | None:
        """Count the request against its key's rpm_limit and tpm_limit (its reservation freed when refused); the
        answer carries the x-ratelimit-* headers."""
        try:
            rate = await self.key_rates.admit(key, tokens)
        except GatewayError:
            self.budgets.release(ticket, 0)
            raise
        if rate is not None:
            headers.extend(rate.headers())
        return rate

    async def _template(self, key: KeyInfo, body: dict, headers: list) -> TemplateUse | None:
        """Apply the prompt template the body names, if any, in place; the answer says which version ran."""
        if self.templates is None:
            return None
        template = await self.templates.expand(key.account_id, body)
        if template is not None:
            headers.append((b"x-mesh-template", f"{template.template_id}@{template.version}".encode()))
        return template

    async def _reserve(
        self,
        key: KeyInfo,
        models: list[Model],
        request: ChatRequest,
        body: dict,
        bound: Callable[[dict, Model, str], int] = worst_case.prompt_bound,
        limit_field: str | None = None,
    ) -> tuple[Ticket, int | None, dict[str, int | None]]:
        """Reserve the request's worst case: its prompt bound and its completion limit, or the model's
        max_output_tokens when it sets none (and then no limit goes upstream); with fallbacks (`models` after the
        first), the worst case of the costliest of them. When the budget does not cover that, a 402 names the
        completion tokens it does cover; only a key with fit_to_budget, on a request without fallbacks, gets its
        limit set to that instead. Returns the reservation, the limit the gateway set, if it set one, and each
        model's prompt bound (None for a free model)."""
        field = limit_field or ("max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens")
        asked = request.max_completion_tokens or request.max_tokens
        model = models[0]
        if asked is not None and asked > model.max_output_tokens:
            raise invalid(
                f"'{field}' is {asked}; model {model.id!r} writes at most {model.max_output_tokens} "
                f"completion tokens: send {field} <= {model.max_output_tokens}",
                "invalid_request",
                field,
            )
        choices = request.n or 1
        bounds: dict[str, int | None] = {}
        worst = 0
        for candidate in models:
            if candidate.price.is_free:
                bounds[candidate.id] = None
                continue
            candidate_bound = bounds[candidate.id] = bound(body, candidate, self._kind(candidate))
            candidate_worst = candidate.price.worst_cost(
                candidate_bound, (asked or candidate.max_output_tokens) * choices
            )
            if candidate_worst > worst:
                worst, model = candidate_worst, candidate
        if not worst:
            return FREE, None, bounds
        price = model.price
        prompt_bound = bounds[model.id] or 0
        completion = asked or model.max_output_tokens

        def unaffordable(refusal: BudgetRefusal) -> tuple[GatewayError, int | None]:
            affordable = worst_case.affordable(refusal.available, price, prompt_bound, choices, completion)
            if affordable is None or refusal.available is None:  # not about money (say, a key revoked meanwhile)
                return refusal, None
            others = worst_case.elsewhere(
                refusal.available, body, self._other_models(key, model), choices, asked, bound
            )
            error = worst_case.unaffordable(
                refusal, worst, prompt_bound, completion, choices, affordable, others, limit_field or "max_tokens"
            )
            return error, affordable

        try:
            return await self.budgets.reserve(key, minimum=worst, wanted=worst), None, bounds
        except BudgetRefusal as refusal:
            error, affordable = unaffordable(refusal)
            if not key.fit_to_budget or not affordable or len(models) > 1:
                raise error from None
        fitted = price.worst_cost(prompt_bound, affordable * choices)
        try:
            ticket = await self.budgets.reserve(key, minimum=fitted, wanted=fitted)
        except BudgetRefusal as refusal:  # spent by others meanwhile: what is left now, said the same way
            raise unaffordable(refusal)[0] from None
        for name in ("max_tokens", "max_completion_tokens"):
            if getattr(request, name) is not None:
                body[name] = affordable
        if asked is None:
            body["max_tokens"] = affordable
        return ticket, affordable, bounds

    def _other_models(self, key: KeyInfo, model: Model) -> list[tuple[Model, str]]:
        """The enabled models besides `model` that `key` may use, with their provider's kind (not Mesh's own
        echo model: it answers nothing a client asked)."""
        kinds = {name: provider.kind for name, provider in self.catalog.providers.items()}
        return [
            (m, kinds[m.provider])
            for m in self.catalog.enabled()
            if m.id != model.id and kinds[m.provider] != "mesh" and key.may_use(m.id)
        ]

    def _emit(self, record: RequestRecord, event: UsageRecorded) -> Awaitable[None]:
        """The request is over: swap its reservation for its cost and publish what it cost (both at once, awaited
        or not). Await what it returns before the answer's last byte: it is done once the event is durable
        (acknowledged by JetStream, or in the fsynced spool), shared with every request finishing alongside."""
        record.emitted = True
        self.budgets.release(record.ticket, event.cost)
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
                await relay(reply if frames is None else recording(reply, frames), send, gone, bill, reply.is_last)
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

    def _resolve(self, request: "ChatRequest | EmbeddingsRequest", key: KeyInfo) -> Model:
        return self._resolve_id(request.model, key)

    def _resolve_id(self, requested: str | None, key: KeyInfo) -> Model:
        model_id = requested or key.default_model
        if not model_id:
            raise invalid("no model: send 'model' or give this API key a default model", "model_required", "model")
        model = self.catalog.get(model_id)
        if model is None:
            raise GatewayError(
                404,
                f"model {model_id!r} does not exist; GET /v1/models lists the models you can use",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        if not key.may_use(model.id):
            allowed = ", ".join(sorted(key.allowed_models or ()))
            raise GatewayError(
                402,
                f"this API key may not use {model.id!r}; it may use: {allowed}",
                "insufficient_quota",
                "model_not_allowed",
                "model",
            )
        return model


class Admitted(msgspec.Struct):
    ticket: Ticket
    prompt_bound: int | None  # the prompt tokens reserved (None: a free model)
    rate: RateUse | None  # what the request counts against its key's rate limits (None: the key has none)
    models: list[Model]  # the model, then the fallbacks it may be served by (gateway/fallbacks.py)
    bounds: dict[str, int | None]  # each model's prompt bound (None: free)


class Door(NamedTuple):
    """How a front door calls one model, and writes its answer in the door's own format (None: as it came)."""

    call: Callable[[], Awaitable[Reply]]
    open_stream: Callable[[], Awaitable[StreamReply]]
    encode: Callable[[Reply, int], bytes] | None = None  # with the request's charge, pico-USD
    encode_stream: Callable[[StreamReply], StreamReply] | None = None


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


def _answered(headers: list, model: Model, cost: int) -> list:
    """A plain answer's headers: the upstream's own name of its model and what it was charged."""
    return [
        *headers,
        (UPSTREAM_MODEL_HEADER, model.upstream.encode()),
        (answer_fields.COST_HEADER, answer_fields.cost_usd(cost).encode()),
    ]


def _model_object(model: Model) -> dict:
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
