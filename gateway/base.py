"""What every front door of the Gateway starts from: its collaborators, the caller's key, and the models that key
may use (the one asked for, its default, a request's own `models` list, a model's fallbacks)."""

from __future__ import annotations

from datetime import datetime, timezone

from domain.credentials import hash_token
from gateway import fallbacks
from gateway.admission import KeyInfo, bearer_token
from gateway.asgi import Scope, header
from gateway.bodies import BodyPublisher
from gateway.catalog import Catalog, Model
from gateway.errors import GatewayError, invalid
from gateway.freelimit import DEFAULT_FREE_RPM, FreeRateLimit
from gateway.key_rate import KeyRates
from gateway.keys import KeyCache
from gateway.lease_admission import Budgets
from gateway.metrics import GatewayMetrics
from gateway.prompt_templates import TemplateCache
from gateway.providers.base import Adapter
from gateway.refusals import Refusals
from gateway.usage import UsagePublisher

DISCONNECT_DRAIN_SECONDS = 30.0  # how long a stream whose client left is still read, for the upstream's own usage


class GatewayBase:
    """The Gateway's collaborators, and the checks every front door begins with (its parts build on it)."""

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

    def _kind(self, model: Model) -> str:
        return self.catalog.providers[model.provider].kind

    def _other_models(self, key: KeyInfo, model: Model) -> list[tuple[Model, str]]:
        """The enabled models besides `model` that `key` may use, with their provider's kind (not Mesh's own
        echo model: it answers nothing a client asked)."""
        kinds = {name: provider.kind for name, provider in self.catalog.providers.items()}
        return [
            (m, kinds[m.provider])
            for m in self.catalog.enabled()
            if m.id != model.id and kinds[m.provider] != "mesh" and key.may_use(m.id)
        ]

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
