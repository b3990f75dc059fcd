"""Application services: the use cases the JSON API and the dashboard share.

Routes and pages get them through Litestar's dependency injection (`SERVICE_DEPENDENCIES`), so a number on
a page and the same number from the API come from one piece of code.
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from api.runtime import Runtime
from api.services.accounts import AccountService
from api.services.billing import BillingService
from api.services.keys import KeyService
from api.services.logs import LogService
from api.services.models import ModelService
from api.services.templates import TemplateService


class Services:
    """Every service of one process; each reads the runtime lazily (its pool exists once it started)."""

    def __init__(self, runtime: Runtime):
        self.account_service = AccountService(runtime)
        self.key_service = KeyService(runtime)
        self.billing_service = BillingService(runtime)
        self.model_service = ModelService(runtime)
        self.template_service = TemplateService(runtime)
        self.log_service = LogService(runtime)


def _provider(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state.services, name)

    return Provide(provide, sync_to_thread=False)


SERVICE_DEPENDENCIES = {
    name: _provider(name)
    for name in (
        "account_service",
        "key_service",
        "billing_service",
        "model_service",
        "template_service",
        "log_service",
    )
}
