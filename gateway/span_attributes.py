"""What a gateway request's trace spans say: names and attributes after OpenTelemetry's GenAI semantic conventions,
plus Mesh's own (`mesh.*`). Plain data, no OpenTelemetry import: gateway/tracing.py puts them on spans."""

from __future__ import annotations

from domain.money import pico_to_usd
from domain.usage import UsageRecorded
from gateway.catalog import Provider

# The traced endpoints (POST) and their gen_ai.operation.name
OPERATIONS = {"/v1/chat/completions": "chat", "/v1/embeddings": "embeddings"}


def gen_ai_system(provider: Provider) -> str:
    """`gen_ai.system`: the provider's kind (openai, anthropic, gemini; mesh for the built-in echo model), and for
    an OpenAI-compatible server, which the convention has no name for, its name in mesh.toml."""
    return provider.name if provider.kind == "openai-compatible" else provider.kind


def span_name(operation: str, model: str | None) -> str:
    """`{gen_ai.operation.name} {gen_ai.request.model}`, the operation alone while no model is known."""
    return f"{operation} {model}" if model else operation


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def request_attributes(body: dict) -> dict[str, int | float]:
    """The request parameters the body sends upstream: its completion limit (`max_completion_tokens`, else
    `max_tokens`) and temperature, each only when sent."""
    attributes: dict[str, int | float] = {}
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if isinstance(limit, int) and not isinstance(limit, bool):
        attributes["gen_ai.request.max_tokens"] = limit
    temperature = body.get("temperature")
    if _number(temperature):
        attributes["gen_ai.request.temperature"] = float(temperature)  # type: ignore[arg-type]
    return attributes


def usage_attributes(event: UsageRecorded, system: str) -> dict[str, str | int | bool]:
    """What the request was billed for, from its usage event: tokens as the client's `usage` counts them, the cost
    exact (a decimal USD string), and who asked. `gen_ai.request.model` is the model the client named, or the
    key's default model it was routed to when it named none."""
    return {
        "gen_ai.system": system,
        "gen_ai.request.model": event.requested_model or event.model,
        "gen_ai.usage.input_tokens": event.prompt_tokens,
        "gen_ai.usage.output_tokens": event.completion_tokens,
        "mesh.trace_id": str(event.trace_id),
        "mesh.key_id": str(event.key_id),
        "mesh.account_id": str(event.account_id),
        "mesh.model": event.model,
        "mesh.cost_usd": pico_to_usd(event.cost),
        "mesh.stream": event.stream,
    }
