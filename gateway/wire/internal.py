"""What every front-door codec shares: the translated request with the fields it had no equivalent for, and the
internal stream read as chunks and re-encoded."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Iterable

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


def chunks(frames: bytes) -> Iterable[dict | None]:
    """The chat.completion.chunk documents in a batch of internal SSE frames; None for `[DONE]`."""
    for frame in frames.split(b"\n\n"):
        if frame.startswith(b"data: "):
            payload = frame[6:]
            if payload == b"[DONE]":
                yield None
                continue
            try:
                document = msgspec.json.decode(payload)
            except msgspec.DecodeError:
                continue
            if isinstance(document, dict):
                yield document


class Reencoded(StreamReply):
    """An internal stream re-encoded into a front door's events by `encode` (given each batch's chunks, None for
    the end; it returns the frames to send): the usage, times and close are the inner stream's."""

    def __init__(self, inner: StreamReply, encode: Callable[[list[dict | None]], bytes]):
        super().__init__(self._frames(inner, encode), inner.sent_ns)
        self.inner = inner

    async def _frames(self, inner: StreamReply, encode: Callable[[list[dict | None]], bytes]) -> AsyncIterator[bytes]:
        async for batch in inner:
            parsed = list(chunks(batch))
            if None in parsed:
                parsed = parsed[: parsed.index(None) + 1]
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
