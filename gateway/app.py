"""The OpenAI-compatible endpoint, as a plain ASGI app (the hot path skips the web framework): each request is routed
to its front door (gateway/chat_doors.py, gateway/embeddings_door.py, gateway/model_list.py).

Per request: authenticate the key, validate the body, resolve the model and its price (gateway/base.py), check the
balance (gateway/reservation.py), call the provider, make its UsageRecorded event durable, then finish the answer
(gateway/serving.py). The gateway never changes state itself.
"""

from __future__ import annotations

import time

from gateway.asgi import Receive, Scope, Send, header, respond
from gateway.chat_doors import ChatDoors
from gateway.embeddings_door import EmbeddingsDoor
from gateway.errors import GatewayError
from gateway.model_list import ModelList
from gateway.trace_ids import current_trace, new_trace_id
from gateway.wire import messages, responses

ENDPOINTS = frozenset(
    {"/v1/chat/completions", "/v1/embeddings", "/v1/models", messages.PATH, messages.COUNT_TOKENS_PATH, responses.PATH}
)
MODEL_PATH = "/v1/models/"  # GET /v1/models/{id}: a model id may hold slashes (acme/gpt-4o)


class Gateway(ChatDoors, EmbeddingsDoor, ModelList):
    """The gateway's ASGI app: each request routed to its front door, a refusal answered in the door's format."""

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
