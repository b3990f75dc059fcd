"""The application services' refusals leave the API as the OpenAI-style body, with their own code and param."""

from __future__ import annotations

import msgspec
import pytest

from api.errors import EXCEPTION_HANDLERS
from api.services.errors import Busy, Invalid, Missing, ServiceError, Unavailable


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (Invalid("limit must be 1 to 500; got 0", "invalid_request", param="limit"), 400, "invalid_request_error"),
        (Missing("no API key 1 in this account", "not_found"), 404, "invalid_request_error"),
        (Unavailable("auto-refill needs Stripe", "provider_not_configured"), 409, "invalid_request_error"),
        (Busy("an export of this account is already running", "export_in_progress"), 429, "rate_limit_error"),
    ],
)
def test_each_refusal_has_its_status_and_keeps_its_words(error: ServiceError, status: int, kind: str):
    response = EXCEPTION_HANDLERS[type(error)](None, error)  # type: ignore[operator]
    assert response.status_code == status
    body = msgspec.json.decode(response.content)["error"]
    assert body == {"message": error.message, "type": kind, "code": error.code, "param": error.param}
