"""What Mesh writes into every answer: the Mesh id the request resolved to as its `model` (never an alias, never
the upstream's own name, which goes in the `x-mesh-upstream-model` header), and what the request was charged.

The charge is `usage.cost`, USD as a JSON number, as OpenRouter sends it and as litellm and other clients read it,
written digit for digit from the integer pico-USD Mesh bills (never through a float), and `usage.cost_usd`, the
same amount as a decimal string, Mesh's own form for money.

An upstream's chat completion (and each chunk of its stream) is relayed as bytes: its `model` and `usage` are
patched in place, a bounded byte search instead of decoding and re-encoding the document. Inside a JSON string a
quote is escaped, so the bytes `"model":"` can only be a key: the document's own when no object opens before it;
its `"usage":{` is the document's own when no array closes after it (a nested one sits inside `content` or
`choices`). A document spelled otherwise (a space after a colon, an escape in the name, another order) takes the
slow path, decoded and re-encoded."""

from __future__ import annotations

import functools

import msgspec

from domain.money import pico_to_usd

UPSTREAM_MODEL_HEADER = b"x-mesh-upstream-model"
COST_HEADER = b"x-mesh-cost-usd"
MAX_MODEL_NAME = 256  # the longest model name replaced in place (a longer one takes the slow path)
MODEL_NAMES_KEPT = 4096  # Mesh ids whose JSON form is kept (the catalog's, so a bound that is never reached)

_MODEL_KEY = b'"model":"'
_SPELLED_MODEL = b'"model"'
_USAGE_KEY = b'"usage":{'


def cost_usd(pico: int) -> str:
    """A charge as the answer states it (`usd` below): decimal USD, digit for digit."""
    return pico_to_usd(pico)


def cost_fields(pico: int) -> dict:
    """`usage.cost` (an exact JSON number) and `usage.cost_usd` (a decimal string), for a document Mesh encodes."""
    return _usd_fields(cost_usd(pico))


def _usd_fields(usd: str) -> dict:
    return {"cost": msgspec.Raw(usd.encode()), "cost_usd": usd}


@functools.lru_cache(maxsize=MODEL_NAMES_KEPT)
def model_name(model_id: str) -> bytes:
    """A Mesh id as it stands between the quotes of a JSON string (the catalog's ids: each encoded once)."""
    return msgspec.json.encode(model_id)[1:-1]


def with_model(document: bytes, name: bytes) -> bytes:
    """`document` with its first `model` value replaced by `name` (from `model_name`); unchanged if it has none."""
    at = document.find(_MODEL_KEY)
    if at >= 0 and document.find(b"{", 1, at) < 0:
        start = at + len(_MODEL_KEY)
        end = document.find(b'"', start, start + MAX_MODEL_NAME)
        if end >= 0 and document.find(b"\\", start, end) < 0:
            return document[:start] + name + document[end:]
    elif document.find(_SPELLED_MODEL) < 0:
        return document
    return _rewritten(document, name, None)


def with_cost(document: bytes, usd: str) -> bytes:
    """`document` with `cost` and `cost_usd` (`usd`, from `cost_usd`) added to its `usage` (the last one: a chat
    completion's, a message's are top-level and come last). A document without a usage object is left as it is."""
    at = document.rfind(_USAGE_KEY)
    if at < 0 or document.find(b"]", at) >= 0 or document.find(b'"cost', at) >= 0:  # or the upstream's own cost
        return _rewritten(document, None, usd) if document.find(b'"usage"') >= 0 else document
    number = usd.encode()
    inside = at + len(_USAGE_KEY)
    separator = b"" if document[inside : inside + 1] == b"}" else b","
    return b"".join(
        (document[:inside], b'"cost":', number, b',"cost_usd":"', number, b'"', separator, document[inside:])
    )


def patched(document: bytes, name: bytes, usd: str | None) -> bytes:
    """A relayed answer as Mesh sends it: its model the Mesh id, its usage with the cost (when `usd`, from
    `cost_usd`, is given)."""
    document = with_model(document, name)
    return document if usd is None else with_cost(document, usd)


def _rewritten(document: bytes, name: bytes | None, usd: str | None) -> bytes:
    """The slow path: decoded, changed and re-encoded (a document that is not a JSON object is left as it is)."""
    try:
        decoded = msgspec.json.decode(document)
    except msgspec.DecodeError:
        return document
    if not isinstance(decoded, dict):
        return document
    if name is not None and "model" in decoded:
        decoded["model"] = msgspec.json.decode(b'"' + name + b'"')
    if usd is not None and isinstance(decoded.get("usage"), dict):
        decoded["usage"].update(_usd_fields(usd))
    return msgspec.json.encode(decoded)
