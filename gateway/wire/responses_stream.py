"""The Responses front door's stream: an internal (Chat Completions) stream as the Responses API's events, each
made from a template whose constant part is encoded once (gateway/wire/responses.py holds the rest of the codec)."""

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
from gateway.wire.responses import call_item, incomplete_details, message_item, new_id, response_object, usage

_json = msgspec.json.encode


def _event(kind: str, data: dict) -> bytes:
    """An event as a %-template: its sequence number first, then `data`'s INT_SLOTs and JSON_SLOTs in order."""
    event = {"type": kind, "sequence_number": INT_SLOT, **data}
    return b"event: " + kind.encode() + b"\ndata: " + _json(event) + b"\n\n"


# The stream's events, encoded once as %-templates (_WHERE: an item's id and output index; _PART: a message's text).
_WHERE = {"item_id": JSON_SLOT, "output_index": INT_SLOT}
_PART = {"type": "output_text", "text": JSON_SLOT, "annotations": []}
_RESPONSE_EVENTS = {
    kind: _event(f"response.{kind}", {"response": JSON_SLOT})
    for kind in ("created", "in_progress", "completed", "incomplete")
}
_ITEM_ADDED = _event("response.output_item.added", {"output_index": INT_SLOT, "item": JSON_SLOT})
_ITEM_DONE = _event("response.output_item.done", {"output_index": INT_SLOT, "item": JSON_SLOT})
_PART_ADDED = _event("response.content_part.added", {**_WHERE, "content_index": 0, "part": {**_PART, "text": ""}})
_TEXT_DELTA = _event("response.output_text.delta", {**_WHERE, "content_index": 0, "delta": JSON_SLOT, "logprobs": []})
_TEXT_DONE = _event("response.output_text.done", {**_WHERE, "content_index": 0, "text": JSON_SLOT, "logprobs": []})
_PART_DONE = _event("response.content_part.done", {**_WHERE, "content_index": 0, "part": _PART})
_ARGUMENTS_DELTA = _event("response.function_call_arguments.delta", {**_WHERE, "delta": JSON_SLOT})
_ARGUMENTS_DONE = _event("response.function_call_arguments.done", {**_WHERE, "name": JSON_SLOT, "arguments": JSON_SLOT})
_MESSAGE_OPEN = _json({**message_item(JSON_SLOT, "", "in_progress"), "content": []})  # type: ignore[arg-type]
_MESSAGE_DONE = _json(message_item(JSON_SLOT, JSON_SLOT))  # type: ignore[arg-type]


class _StreamState:
    """The Responses events of one internal stream, made from templates; each item and text encoded once, the last
    event's response the first events' with the stream's end (its created_at kept)."""

    def __init__(self, reply: StreamReply, model: Model, body: dict):
        self.reply, self.model, self.body = reply, model, body
        self.id = new_id("resp")
        self.response: dict | None = None  # made at the first chunk (its created_at)
        self.sequence = 0
        self.output: list[bytes] = []  # the items done, encoded
        self.open: dict | None = None  # the item being written
        self.open_id = b""  # its id, encoded
        self.texts: list[str] = []  # the open message's text so far
        self.calls: dict[int, dict] = {}  # internal tool call index -> its item
        self.length = False

    def encode(self, batch: list[Completion | None]) -> bytes:
        out: list[bytes] = []
        for chunk in batch:
            if self.response is None:
                self.response = response_object(self.id, self.model, self.body, "in_progress", [], None)
                response = _json(self.response)
                out.append(_RESPONSE_EVENTS["created"] % (self.sequence, response))
                out.append(_RESPONSE_EVENTS["in_progress"] % (self.sequence + 1, response))
                self.sequence += 2
            if chunk is None:
                self._close(out)
                status = "incomplete" if self.length else "completed"
                self.response.update(
                    status=status,
                    incomplete_details=incomplete_details(status),
                    output=msgspec.Raw(b"[" + b",".join(self.output) + b"]"),
                    usage=usage(self.reply.usage, self.reply.cost()),
                )
                out.append(_RESPONSE_EVENTS[status] % (self.sequence, _json(self.response)))
                self.sequence += 1
                break
            for choice in chunk.choices:
                if choice.delta is not None:
                    self._delta(choice.delta, out)
                if choice.finish_reason == "length":
                    self.length = True
        return b"".join(out)

    def _delta(self, delta: Turn, out: list[bytes]) -> None:
        text = delta.text()
        if text:
            if self.open is None or self.open["type"] != "message":
                self._close(out)
                self.open = {"type": "message", "id": new_id("msg")}
                self.open_id = _json(self.open["id"])
                self.texts = []
                index = len(self.output)
                out.append(_ITEM_ADDED % (self.sequence, index, _MESSAGE_OPEN % self.open_id))
                out.append(_PART_ADDED % (self.sequence + 1, self.open_id, index))
                self.sequence += 2
            self.texts.append(text)
            out.append(_TEXT_DELTA % (self.sequence, self.open_id, len(self.output), _json(text)))
            self.sequence += 1
        for call in delta.tool_calls or []:
            function = call.function or Function()
            if call.id or call.index not in self.calls:
                self._close(out)
                item = call_item(new_id("fc"), call.id or new_id("call"), function.name or "", "", "in_progress")
                self.open = self.calls[call.index] = item
                self.open_id = _json(item["id"])
                out.append(_ITEM_ADDED % (self.sequence, len(self.output), _json(item)))
                self.sequence += 1
            fragment = function.arguments
            if fragment and self.open is self.calls[call.index]:
                self.open["arguments"] += fragment
                out.append(_ARGUMENTS_DELTA % (self.sequence, self.open_id, len(self.output), _json(fragment)))
                self.sequence += 1

    def _close(self, out: list[bytes]) -> None:
        item, self.open = self.open, None
        if item is None:
            return
        index = len(self.output)
        if item["type"] == "message":
            text = _json("".join(self.texts))
            out.append(_TEXT_DONE % (self.sequence, self.open_id, index, text))
            out.append(_PART_DONE % (self.sequence + 1, self.open_id, index, text))
            self.sequence += 2
            done = _MESSAGE_DONE % (self.open_id, text)
        else:
            item["status"] = "completed"
            name, arguments = _json(item["name"]), _json(item["arguments"])
            out.append(_ARGUMENTS_DONE % (self.sequence, self.open_id, index, name, arguments))
            self.sequence += 1
            done = _json(item)
        self.output.append(done)
        out.append(_ITEM_DONE % (self.sequence, index, done))
        self.sequence += 1


def encode_stream(reply: StreamReply, model: Model, body: dict) -> StreamReply:
    """An internal stream as the Responses API's events."""
    return Reencoded(reply, _StreamState(reply, model, body).encode)
