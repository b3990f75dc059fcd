"""Which request fields go upstream: an allow-list per provider kind.

A field no adapter knows would be dropped or passed on unchecked, so the
client would not get what it asked for, or would get (and not pay for) a
priced extra: unknown fields are refused with 400 naming what is allowed.

- OpenAI and OpenAI-compatible servers take the documented Chat Completions
  (and Embeddings) parameters as they are.
- Anthropic and Gemini take what their adapters translate.
- `GATEWAY_FIELDS` are read by the gateway itself before the adapter (prompt
  templates) and never go upstream.
- `PRICED` fields change what the provider charges beyond the model's
  configured price (priority/flex tiers, per-search fees, audio tokens); Mesh
  has no price for them, so they are refused rather than billed wrong.
"""

from __future__ import annotations

import re

from typing import Any, Iterator

from gateway.errors import GatewayError, invalid

# Read by the gateway before the adapter runs; removed from what goes upstream.
GATEWAY_FIELDS = frozenset({"template", "variables"})

# platform.openai.com/docs/api-reference/chat/create
OPENAI_CHAT_FIELDS = frozenset(
    {
        "messages",
        "model",
        "audio",  # these two are documented, and refused (PRICED) with the reason, not as unknown
        "web_search_options",
        "frequency_penalty",
        "function_call",
        "functions",
        "logit_bias",
        "logprobs",
        "max_completion_tokens",
        "max_tokens",
        "metadata",
        "modalities",
        "n",
        "parallel_tool_calls",
        "prediction",
        "presence_penalty",
        "prompt_cache_key",
        "prompt_cache_retention",
        "reasoning_effort",
        "response_format",
        "safety_identifier",
        "seed",
        "service_tier",
        "stop",
        "store",
        "stream",
        "stream_options",
        "temperature",
        "tool_choice",
        "tools",
        "top_logprobs",
        "top_p",
        "user",
        "verbosity",
    }
)
# platform.openai.com/docs/api-reference/embeddings/create
OPENAI_EMBEDDINGS_FIELDS = frozenset({"input", "model", "dimensions", "encoding_format", "user"})
# What gateway/providers/anthropic.py translates (see its docstring).
ANTHROPIC_CHAT_FIELDS = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
    }
)
# What gateway/providers/gemini.py translates (see its docstring).
GEMINI_CHAT_FIELDS = frozenset(
    {
        "messages",
        "model",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "stop",
        "temperature",
        "top_p",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "response_format",
        "tools",
        "tool_choice",
    }
)

# Fields that make the provider charge more than the configured price, with the values that do not.
PRICED: dict[str, tuple[frozenset, str]] = {
    "service_tier": (
        frozenset({None, "auto", "default"}),
        "service tiers other than 'auto' and 'default' are priced differently by the provider",
    ),
    "web_search_options": (frozenset(), "web search is charged per search by the provider"),
    "audio": (frozenset({None}), "audio output is priced differently by the provider"),
    "prediction": (
        frozenset({None}),
        "the provider bills a prediction's rejected tokens as completion tokens, a number Mesh cannot bound or "
        "reserve before the answer",
    ),
}
MAX_QUOTED_VALUE = 100  # characters of a refused field's value quoted back in the error
# Message content parts the provider prices apart from text (OpenAI bills audio input tokens at the model's
# audio rate), with why; a priced model refuses them (see gateway/worst_case.py prompt_bound).
PRICED_PARTS = {"input_audio": "the provider prices audio input apart from text"}
_UNPRICED_MODALITIES = frozenset({"text"})
_PLAIN: dict[frozenset[str], frozenset[str]] = {}  # per allow-list: its fields that never change the price


def check_fields(
    body: dict[str, Any], allowed: frozenset[str], model_id: str, consumed: frozenset[str] = GATEWAY_FIELDS
) -> None:
    """Refuse (400) fields the model's provider does not take and fields that would change the price; remove the
    gateway's own fields that were `consumed` before this (an endpoint that consumes none refuses them too)."""
    plain = _PLAIN.get(allowed)
    if plain is None:
        plain = _PLAIN[allowed] = allowed - PRICED.keys() - {"modalities"}
    if body.keys() <= plain:  # the usual request: one comparison, no set built
        return
    unknown = body.keys() - allowed
    for name in unknown & consumed:
        body.pop(name)
    unknown -= consumed
    if unknown:
        name = min(unknown)
        raise invalid(
            f"unknown or unsupported field {name!r} for model {model_id!r}; allowed fields: "
            f"{', '.join(sorted(allowed))}",
            "unsupported_parameter",
            name,
        )
    _check_priced(body)


def _check_priced(body: dict[str, Any]) -> None:
    for name, (free, reason) in PRICED.items():
        if name in body and not (isinstance(body[name], (str, type(None))) and body[name] in free):
            raise invalid(
                f"{name}={repr(body[name])[:MAX_QUOTED_VALUE]} is not available through Mesh: {reason} and this "
                f"model's price does not cover it",
                "unsupported_parameter",
                name,
            )
    modalities = body.get("modalities")
    if modalities is not None and not (
        isinstance(modalities, list) and all(isinstance(m, str) and m in _UNPRICED_MODALITIES for m in modalities)
    ):
        raise invalid(
            f"modalities={modalities!r} is not available through Mesh: only text output is priced",
            "unsupported_parameter",
            "modalities",
        )


def content_parts(content: Any, provider_kind: str) -> Iterator[tuple[str, Any]]:
    """An OpenAI message's content as it reads to a provider that takes text and images only: ("text", text) and
    ("image", url) in order. A refusal part is text (what an assistant turn said); an empty text is skipped; any
    other part is refused (400 unsupported_content), never dropped."""
    if isinstance(content, str):
        if content:
            yield "text", content
        return
    for part in content or []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind in ("text", "refusal"):
            if part.get(kind):
                yield "text", part[kind]
        elif kind == "image_url":
            image = part.get("image_url") or {}
            yield "image", image.get("url", "") if isinstance(image, dict) else str(image)
        else:
            raise _unsupported_part(part, provider_kind)


def refuse_file_ids(messages: list[Any]) -> None:
    """A `file` content part naming an uploaded file (`file_id`) is refused (400): the id would be looked up in
    Mesh's own account with the provider, where the client has no files (and must not reach anyone else's). A
    file sent inline (`file_data`) goes on as any other part."""
    for message in messages:
        content = message.get("content") if type(message) is dict else None
        if type(content) is not list:
            continue
        for part in content:
            if type(part) is dict and part.get("type") == "file":
                file = part.get("file")
                if type(file) is dict and file.get("file_id") is not None:
                    raise invalid(
                        "'file' content parts naming an uploaded file ('file_id') are not available through Mesh: "
                        "file ids belong to a provider account; send the file inline as 'file_data' (a data: URL) "
                        "instead",
                        "unsupported_content",
                        "messages",
                    )


def data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 data) of a `data:` URL; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, _, data = url.partition(",")
    return header[5:].split(";")[0], data


def _unsupported_part(part: Any, provider_kind: str) -> GatewayError:
    """The 400 for a message content part an adapter cannot translate: it is refused, never dropped."""
    part_type = part.get("type") if isinstance(part, dict) else type(part).__name__
    return invalid(
        f"message content of type {str(part_type)[:40]!r} cannot be sent to {provider_kind} models; "
        "they take 'text' and 'image_url' parts",
        "unsupported_content",
        "messages",
    )


MAX_EXTRA_FIELDS = 32
EXTRA_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")


def extra_fields(kind: str, names: list[str]) -> frozenset[str]:
    """An openai-compatible provider's own request fields (vLLM's `top_k`, `min_p`, `repetition_penalty`,
    `chat_template_kwargs`, ...) the operator allows: passed upstream as sent and not priced, so never a field
    that changes the price or one the gateway reads itself."""
    if not names:
        return frozenset()
    if kind != "openai-compatible":
        raise ValueError(f"extra_fields is for openai-compatible providers; this one is {kind}")
    if len(names) > MAX_EXTRA_FIELDS:
        raise ValueError(f"extra_fields names at most {MAX_EXTRA_FIELDS} fields, got {len(names)}")
    for name in names:
        if not EXTRA_FIELD_NAME.fullmatch(name):
            raise ValueError(f"extra_fields: {name[:70]!r} is not a field name (letters, digits, _; at most 64)")
        if name in PRICED or name in GATEWAY_FIELDS or name in OPENAI_CHAT_FIELDS:
            raise ValueError(
                f"extra_fields: {name!r} is {'priced' if name in PRICED else 'already handled by Mesh'}; "
                "list only the server's own fields"
            )
    return frozenset(names)


MAX_IGNORE_FIELDS = 32
# What a request cannot do without: never dropped, whatever the operator lists.
NEVER_IGNORED = frozenset({"model", "messages", "input", "max_tokens", "max_output_tokens", "stream", "tools"})


def ignore_fields(names: list[str]) -> frozenset[str]:
    """A model's `ignore_fields` (mesh.toml): front-door fields (gateway/wire/) that have no equivalent at its
    provider and are dropped, named in the answer's x-mesh-ignored-fields, instead of refused."""
    if len(names) > MAX_IGNORE_FIELDS:
        raise ValueError(f"ignore_fields names at most {MAX_IGNORE_FIELDS} fields, got {len(names)}")
    for name in names:
        if not EXTRA_FIELD_NAME.fullmatch(name):
            raise ValueError(f"ignore_fields: {name[:70]!r} is not a field name (letters, digits, _; at most 64)")
        if name in NEVER_IGNORED:
            raise ValueError(f"ignore_fields: {name!r} is what a request is made of; it cannot be dropped")
    return frozenset(names)
