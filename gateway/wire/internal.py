"""What every front-door codec shares: the translated request with the fields it had no equivalent for, and the
internal stream read as chunks and re-encoded."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable

import msgspec

from gateway.catalog import Model
from gateway.errors import invalid
from gateway.providers.base import StreamReply, Usage

IGNORED_HEADER = b"x-mesh-ignored-fields"


class Translated:
    """A front door's request in the internal (Chat Completions) shape. `sources` maps each internal field to the
    front-door field it came from, so a field the provider does not take is refused (or dropped) by the name the
    client sent."""

    def __init__(self, model: Model, accepted: frozenset[str]):
        self.model = model
        self.accepted = accepted  # the internal fields the model's adapter takes
        self.body: dict[str, Any] = {}
        self.sources: dict[str, str] = {}
        self.ignored: list[str] = []

    def set(self, name: str, value: Any, source: str) -> None:
        """The internal field `name` from the client's `source`: refused unless the adapter takes it (or the
        operator lets `source` be dropped for this model)."""
        if name in self.accepted:
            self.body[name] = value
        else:
            self.no_equivalent(source)

    def no_equivalent(self, field: str, why: str = "") -> None:
        """`field` cannot be translated for this model: dropped if the model's ignore_fields lists it (and the
        answer says so), else a 400 naming it."""
        if field in self.model.ignore_fields:
            if field not in self.ignored:
                self.ignored.append(field)
            return
        raise invalid(
            f"{field!r} has no equivalent for model {self.model.id!r} (provider {self.model.provider!r})"
            f"{': ' + why if why else ''}; send the request without it, or the operator may list it in this model's "
            "ignore_fields in mesh.toml to have it dropped",
            "unsupported_parameter",
            field,
        )

    def header(self) -> list[tuple[bytes, bytes]]:
        return [(IGNORED_HEADER, ",".join(self.ignored).encode())] if self.ignored else []


# Decoded from JSON, these hold no reference cycles: left out of the garbage collector's tracking (cheaper to make).
class Function(msgspec.Struct, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCall(msgspec.Struct, gc=False):
    index: int = 0
    id: str | None = None
    function: Function | None = None


class Turn(msgspec.Struct, gc=False):
    """What an answer's message (or a stream chunk's delta) holds that a front door encodes."""

    content: str | None = None
    refusal: str | None = None
    reasoning_content: str | None = None  # as OpenAI-compatible servers send reasoning
    reasoning: str | None = None
    tool_calls: list[ToolCall] | None = None

    def text(self) -> str | None:
        return self.content or self.refusal

    def thought(self) -> str | None:
        return self.reasoning_content or self.reasoning


class Choice(msgspec.Struct, gc=False):
    message: Turn | None = None
    delta: Turn | None = None
    finish_reason: str | None = None


class Completion(msgspec.Struct, gc=False):
    """An internal chat.completion, or one of its stream's chunks: the parts a front door encodes."""

    id: str | None = None
    choices: list[Choice] = []

    def first(self) -> Choice:
        return self.choices[0] if self.choices else Choice()


decode_completion = msgspec.json.Decoder(Completion).decode
_json = msgspec.json.encode

# Where an event template (bytes, filled with %-formatting) takes an integer, and JSON already encoded (bytes).
INT_SLOT = msgspec.Raw(b"%d")
JSON_SLOT = msgspec.Raw(b"%s")


def chunks(frames: bytes) -> list[Completion | None]:
    """The chat.completion.chunk documents in a batch of internal SSE frames, up to the first `[DONE]` (None)."""
    if frames.count(b"\n") == 2 and frames[:6] == b"data: ":  # a batch of one frame: read without splitting
        if frames[6:-2] == b"[DONE]":
            return [None]
        try:
            return [decode_completion(frames[6:])]
        except (msgspec.DecodeError, msgspec.ValidationError):
            return []
    found: list[Completion | None] = []
    for frame in frames.split(b"\n\n"):
        if frame[:6] == b"data: ":
            if frame[6:] == b"[DONE]":
                found.append(None)
                break
            try:
                found.append(decode_completion(frame[6:]))
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
    return found


class Reencoded(StreamReply):
    """An internal stream re-encoded into a front door's events by `encode` (given each batch's chunks, None for
    the end; it returns the frames to send): the usage, times and close are the inner stream's."""

    def __init__(self, inner: StreamReply, encode: Callable[[list[Completion | None]], bytes]):
        super().__init__(self._frames(inner, encode), inner.sent_ns)
        self.inner = inner

    async def _frames(
        self, inner: StreamReply, encode: Callable[[list[Completion | None]], bytes]
    ) -> AsyncIterator[bytes]:
        async for batch in inner:
            parsed = chunks(batch)
            if parsed and parsed[-1] is None:
                self.ended = True
            out = encode(parsed)
            if self.ended:
                yield out
                return
            if out:
                yield out
        if not self.ended:
            self.ended = True
            yield encode([None])

    @property  # type: ignore[override]
    def usage(self) -> Usage:
        return self.inner.usage

    @usage.setter
    def usage(self, value: Usage) -> None:  # StreamReply.__init__ sets it; the inner stream's is the one
        pass

    @property  # type: ignore[override]
    def upstream_us(self) -> int:
        return self.inner.upstream_us

    @upstream_us.setter
    def upstream_us(self, value: int) -> None:
        pass

    @property  # type: ignore[override]
    def first_token_ns(self) -> int | None:
        return self.inner.first_token_ns

    @first_token_ns.setter
    def first_token_ns(self, value: int | None) -> None:
        pass

    async def aclose(self) -> None:
        await super().aclose()
        await self.inner.aclose()
