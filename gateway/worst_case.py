"""A request's worst case: an upper bound of its prompt's tokens, and what a budget that does not cover the
request's worst cost affords instead."""

from __future__ import annotations

from typing import Callable, Sequence

import msgspec

from domain.money import pico_to_usd
from domain.pricing import Price
from gateway.lease_admission import BudgetRefusal
from gateway.catalog import Model
from gateway.errors import GatewayError, invalid
from gateway.fields import PRICED_PARTS

PROMPT_OVERHEAD = 16  # tokens a provider adds to a prompt (priming the reply)
MESSAGE_OVERHEAD = 8  # tokens a provider adds around each message (role, separators)
# Tokens a provider adds to a prompt with tools (the tool-use preamble): the largest Anthropic publishes is 530
# (Claude 3 Opus, tool_choice auto); the others' are smaller.
TOOLS_OVERHEAD = 530
MAX_ALTERNATIVES = 3  # other models a 402 names with what the budget affords on them
MAX_CANDIDATES = 16  # models a 402 works that out for
FILE_URL_KINDS = frozenset({"gemini"})  # providers that fetch any URL as a file part (a PDF, a video), not an image


def prompt_bound(body: dict, model: Model, kind: str) -> int:
    """An upper bound of the prompt's tokens, never more than the model's context (a longer prompt is refused
    upstream): a token of text is at least one byte of its JSON and providers add a few tokens around each
    message; an image counts the most its provider publishes for one (`model.image_tokens`); files and
    anything else count the whole context, as nothing smaller is safe; tools count their JSON and the tool-use
    preamble, response formats their JSON. Audio input is refused (PRICED_PARTS): its price is not the text's."""
    size = PROMPT_OVERHEAD
    encode = msgspec.json.encode
    for message in body["messages"]:
        content = message.get("content") if type(message) is dict else None
        if type(content) is not list:
            size += MESSAGE_OVERHEAD + len(encode(message))
            continue
        size += MESSAGE_OVERHEAD + len(encode({k: v for k, v in message.items() if k != "content"}))
        for part in content:
            part_type = part.get("type") if isinstance(part, dict) else None
            if part_type == "text":
                size += len(encode(part))
            elif part_type == "image_url" and not (kind in FILE_URL_KINDS and not _image_data_url(part)):
                size += model.image_tokens
            elif part_type in PRICED_PARTS:
                raise invalid(
                    f"{part_type} content is not available through Mesh for model {model.id!r}: "
                    f"{PRICED_PARTS[part_type]} and this model's price does not cover it",
                    "unsupported_parameter",
                    "messages",
                )
            else:
                return model.context_tokens
    if "tools" in body or "functions" in body or "response_format" in body:
        if body.get("tools") or body.get("functions"):
            size += TOOLS_OVERHEAD
        for extra in ("tools", "functions", "response_format"):
            if body.get(extra):
                size += len(encode(body[extra]))
    return size if size < model.context_tokens else model.context_tokens


def _image_data_url(part: dict) -> bool:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    return isinstance(url, str) and url.startswith("data:image/")


def affordable(available: int | None, price: Price, prompt_bound: int, choices: int, completion: int) -> int | None:
    """How many completion tokens (per choice) `available` pico-USD pays for after the prompt's worst case; None
    when the refusal was not about money."""
    if available is None:
        return None
    left = available - price.worst_cost(prompt_bound, 0)
    if left < 0:
        return 0
    per_token = price.cost(0, choices)  # exact: a price is a whole number of pico-USD per token
    return min(completion, left // per_token) if per_token else completion


def elsewhere(
    available: int,
    body: dict,
    candidates: list[tuple[Model, str]],
    choices: int,
    asked: int | None,
    bound: Callable[[dict, Model, str], int] | None = None,
) -> list[tuple[str, int | None]]:
    """What `available` pico-USD affords on other models, for a 402 to name: (model id, completion tokens per
    choice; None for a free model), the priced models that afford the most first, free ones last. Only the
    MAX_CANDIDATES models cheapest per completion token are worked out (a refusal stays cheap however large the
    catalog). `bound` bounds the prompt of a body in another wire format (chat's prompt_bound by default)."""
    bound = bound or prompt_bound
    afforded: list[tuple[str, int | None]] = []
    for model, kind in sorted(candidates, key=lambda c: (c[0].price.cost(0, 1), c[0].id))[:MAX_CANDIDATES]:
        if model.price.is_free:
            afforded.append((model.id, None))
            continue
        completion = min(asked, model.max_output_tokens) if asked else model.max_output_tokens
        try:
            tokens = affordable(available, model.price, bound(body, model, kind), choices, completion)
        except GatewayError:  # the request cannot go to that model at all (say, audio)
            continue
        if tokens:
            afforded.append((model.id, tokens))
    afforded.sort(key=lambda a: (a[1] is None, -(a[1] or 0)))  # priced models first, free ones last
    return afforded[:MAX_ALTERNATIVES]


def unaffordable(
    refusal: BudgetRefusal,
    worst: int,
    prompt_bound: int,
    completion: int,
    choices: int,
    affordable: int,
    others: Sequence[tuple[str, int | None]] = (),
    field: str = "max_tokens",
) -> GatewayError:
    """The 402 that says what the budget does cover, on this model and on the cheaper ones the key may use. It
    never shrinks the request, nor changes its model (see fit_to_budget)."""
    cost = (
        f"this request can cost up to {pico_to_usd(worst)} USD (a prompt of up to {prompt_bound} tokens and "
        f"{completion} completion tokens{f' for each of {choices} choices' if choices > 1 else ''})"
    )
    if affordable < 1:
        advice = "what is left does not cover even its prompt"
    elif affordable >= completion:  # what is left covers it, but requests in flight still hold their worst cases
        advice = "part of what is left is held by this API key's requests in flight until they finish; retry then"
    else:
        advice = (
            f"what is left affords {affordable} completion tokens{' per choice' if choices > 1 else ''}: "
            f"send {field} ≤ {affordable}"
        )
    if others:
        advice += "; other models this API key may use afford: " + ", ".join(
            f"{model} (free)" if tokens is None else f"{model} up to {tokens} completion tokens"
            for model, tokens in others
        )
    return GatewayError(402, f"{refusal.message}; {cost}; {advice}", "insufficient_quota", refusal.code, field)
