"""The composition root of the application services: each is given exactly the collaborators it uses, taken
from the started `Runtime` (its pool, commands and caches exist once it started), and routes and pages get them
through Litestar's dependency injection (`SERVICE_DEPENDENCIES`), so a number on a page and the same number from
the API come from one piece of code."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Any

from litestar.datastructures import State
from litestar.di import Provide

from api.services.accounts import AccountService
from api.services.admin import AdminService
from api.services.billing import BillingService
from api.services.events import EventService
from api.services.health import HealthService
from api.services.keys import KeyService
from api.services.logs import LogService
from api.services.metrics import MetricsService
from api.services.models import ModelService
from api.services.one_time_views import OneTimeViews
from api.services.operators import OperatorService
from api.services.support import SupportService
from api.services.provider_models import ProviderModelService
from api.services.template_trial import TemplateTrial
from api.services.usage import UsageService
from api.services.prompt_templates import TemplateService
from api.services.webhooks import WebhookService

if TYPE_CHECKING:
    from api.runtime import Runtime


@dataclass(frozen=True)
class Services:
    """Every application service of one process, by the dependency name routes and pages ask for."""

    account_service: AccountService
    key_service: KeyService
    billing_service: BillingService
    usage_service: UsageService
    model_service: ModelService
    template_service: TemplateService
    template_trial: TemplateTrial
    log_service: LogService
    admin_service: AdminService
    health_service: HealthService
    webhook_service: WebhookService
    one_time_views: OneTimeViews  # what a dashboard page shows once, after the redirect of a POST
    metrics_service: MetricsService
    operator_service: OperatorService  # who the operators are, and what they did
    support_service: SupportService  # what operators look up across accounts
    provider_model_service: ProviderModelService  # what the providers offer (operator)
    event_service: EventService  # subscribers of the event log (GET /api/events, /admin/events)


def compose(runtime: Runtime) -> Services:
    """The services of a runtime that started."""
    pool, waiter = runtime.pool, runtime.waiter
    health = HealthService(runtime.source, pool, runtime.supervisor)
    log_service = LogService(
        pool,
        runtime.exports,
        runtime.database_url,
        runtime.export_idle_seconds,
        keeps_bodies=runtime.log_bodies,
        waiter=waiter,
    )
    return Services(
        account_service=AccountService(
            runtime.accounts,
            runtime.logins,
            pool,
            waiter,
            runtime.session,
            runtime.signup,
            runtime.renew_session,
        ),
        key_service=KeyService(runtime.keys, pool, waiter, runtime.catalog),
        billing_service=BillingService(
            pool,
            waiter,
            runtime.topups,
            runtime.auto_refill,
            runtime.payments,
            runtime.payment_guard,
            runtime.topup_limits,
            runtime.auto_refill_max_failures,
            runtime.nudge,
        ),
        usage_service=UsageService(pool),
        model_service=ModelService(runtime.catalog, runtime.pool),
        template_service=TemplateService(runtime.templates, pool, waiter, runtime.catalog),
        template_trial=TemplateTrial(runtime.gateway, runtime.nudge, log_service),
        log_service=log_service,
        admin_service=AdminService(
            runtime.accounts, runtime.topups, runtime.catalog_commands, runtime.catalog, pool, waiter
        ),
        health_service=health,
        webhook_service=WebhookService(
            runtime.webhooks,
            pool,
            waiter,
            runtime.webhook_options.signing_key,
            runtime.webhook_options.allow_private,
        ),
        one_time_views=OneTimeViews(pool),
        metrics_service=MetricsService(
            runtime.gateway_metrics,
            runtime.budgets,
            runtime.usage,
            health,
            (runtime.operator_token, runtime.metrics_token or ""),
        ),
        operator_service=OperatorService(pool, runtime.operator_token),
        support_service=SupportService(pool, log_service),
        provider_model_service=ProviderModelService(runtime.catalog, runtime.adapters),
        event_service=EventService(
            runtime.nc, runtime.stream, runtime.source, pool, waiter, runtime.events_heartbeat_seconds
        ),
    )


def _service(name: str) -> Provide:
    def provide(state: State) -> Any:
        return getattr(state.runtime.services, name)

    return Provide(provide, sync_to_thread=False)


def _events_idle_seconds(state: State) -> float:
    return state.runtime.export_idle_seconds


SERVICE_DEPENDENCIES = {
    **{field.name: _service(field.name) for field in fields(Services)},
    "events_idle_seconds": Provide(_events_idle_seconds, sync_to_thread=False),  # an event stream's stalled write
}
