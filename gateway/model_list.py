"""GET /v1/models and GET /v1/models/{id}: the enabled models a key may use, as OpenAI lists them."""

from __future__ import annotations

import msgspec

from gateway.admission import KeyInfo
from gateway.base import GatewayBase
from gateway.catalog import Model
from gateway.errors import GatewayError


class ModelList(GatewayBase):
    """GET /v1/models and GET /v1/models/{id}."""

    def _models(self, key: KeyInfo) -> bytes:
        return msgspec.json.encode(
            {"object": "list", "data": [_model_object(m) for m in self.catalog.enabled() if key.may_use(m.id)]}
        )

    def _model(self, key: KeyInfo, model_id: str) -> bytes:
        """One model as GET /v1/models lists it (its id may hold a slash: the rest of the path), or a 404 for a
        model this key cannot use, in OpenAI's words."""
        model = self.catalog.get(model_id)
        if model is None or not key.may_use(model.id):
            raise GatewayError(
                404,
                f"the model {model_id[:200]!r} does not exist or this API key may not use it; GET /v1/models lists "
                "the ones it may",
                "invalid_request_error",
                "model_not_found",
                "model",
            )
        return msgspec.json.encode(_model_object(model))


def _model_object(model: Model) -> dict:
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider}
