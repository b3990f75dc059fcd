"""The Messages front door's stream: an internal (Chat Completions) stream as Anthropic's message events, each made
from a template whose constant part is encoded once (gateway/wire/messages.py holds the rest of the codec)."""

from __future__ import annotations

import msgspec

from gateway.catalog import Model
from gateway.providers.base import StreamReply
from gateway.wire.internal import (
    INT_SLOT,
    JSON_SLOT,
    Completion,
    Function,
    Reencoded,
    Turn,
)
from gateway.wire.messages import SIGNATURE, STOP_REASONS, message_id, usage

_json = msgspec.json.encode


def _event(kind: str, data: dict) -> bytes:
    """An event; with INT_SLOTs and JSON_SLOTs in `data`, a %-template to fill in their order."""
    return b"event: " + kind.encode() + b"\ndata: " + _json({"type": kind, **data}) + b"\n\n"


# The stream's events, encoded once.
_PING = _event("ping", {})
_MESSAGE_STOP = _event("message_stop", {})
_MESSAGE_DELTA = _event(
    "message_delta", {"delta": {"stop_reason": JSON_SLOT, "stop_sequence": None}, "usage": JSON_SLOT}
)
_BLOCK_START = _event("content_block_start", {"index": INT_SLOT, "content_block": JSON_SLOT})
_BLOCK_STOP = _event("content_block_stop", {"index": INT_SLOT})
_THINKING_BLOCK = _json({"type": "thinking", "thinking": "", "signature": SIGNATURE})
_TEXT_BLOCK = _json({"type": "text", "text": ""})
_TEXT_DELTA = _event("content_block_delta", {"index": INT_SLOT, "delta": {"type": "text_delta", "text": JSON_SLOT}})
_THINKING_DELTA = _event(
    "content_block_delta", {"index": INT_SLOT, "delta": {"type": "thinking_delta", "thinking": JSON_SLOT}}
)
_JSON_DELTA = _event(
    "content_block_delta", {"index": INT_SLOT, "delta": {"type": "input_json_delta", "partial_json": JSON_SLOT}}
)
_STOP_REASONS = {reason: _json(reason) for reason in {"end_turn", *STOP_REASONS.values()}}


class _StreamState:
    """Anthropic's events for one internal stream, made from templates: each event's constant part encoded once."""

    def __init__(self, reply: StreamReply, model: Model):
        self.reply, self.model = reply, model
        self.started = False
        self.index = -1
        self.open: str | None = None  # the type of the open content block
        self.tools: dict[int, int] = {}  # internal tool call index -> block index
        self.stop = "end_turn"

    def encode(self, batch: list[Completion | None]) -> bytes:
        out: list[bytes] = []
        for chunk in batch:
            if not self.started:
                self.started = True
                message = {
                    "id": message_id(chunk.id if chunk else None),
                    "type": "message",
                    "role": "assistant",
                    "model": self.model.id,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 0, "output_tokens": 0},
                }
                out.append(_event("message_start", {"message": message}))
                out.append(_PING)
            if chunk is None:
                self._close(out)
                counted = _json(usage(self.reply.usage, self.reply.cost()))
                out.append(_MESSAGE_DELTA % (_STOP_REASONS[self.stop], counted))
                out.append(_MESSAGE_STOP)
                break
            for choice in chunk.choices:
                if choice.delta is not None:
                    self._delta(choice.delta, out)
                if choice.finish_reason:
                    self.stop = STOP_REASONS.get(choice.finish_reason, "end_turn")
        return b"".join(out)

    def _delta(self, delta: Turn, out: list[bytes]) -> None:
        reasoning = delta.thought()
        if reasoning:
            if self.open != "thinking":
                self._open("thinking", _THINKING_BLOCK, out)
            out.append(_THINKING_DELTA % (self.index, _json(reasoning)))
        text = delta.text()
        if text:
            if self.open != "text":
                self._open("text", _TEXT_BLOCK, out)
            out.append(_TEXT_DELTA % (self.index, _json(text)))
        for call in delta.tool_calls or []:
            function = call.function or Function()
            if call.id or call.index not in self.tools:
                block = {"type": "tool_use", "id": call.id, "name": function.name, "input": {}}
                self._open("tool_use", _json(block), out)
                self.tools[call.index] = self.index
            if function.arguments:
                out.append(_JSON_DELTA % (self.tools[call.index], _json(function.arguments)))

    def _open(self, kind: str, block: bytes, out: list[bytes]) -> None:
        self._close(out)
        self.index += 1
        self.open = kind
        out.append(_BLOCK_START % (self.index, block))

    def _close(self, out: list[bytes]) -> None:
        if self.open is not None:
            out.append(_BLOCK_STOP % self.index)
            self.open = None


def encode_stream(reply: StreamReply, model: Model) -> StreamReply:
    """An internal stream as Anthropic's message events."""
    return Reencoded(reply, _StreamState(reply, model).encode)
