"""The operators' section: Support (a request by trace id), Accounts (search; one account with its keys, top-ups,
requests, credits and the actions on it), Top-ups (pending bank transfers to confirm or reject; card payments,
refunds and disputes), Models (prices and switches; enabling a model a provider offers), System (health) and Audit
(who did what). Every page and action checks, on the server, that the signed-in account is an operator (403
otherwise); each action is post/redirect/get, a refusal shown beside its form with the input kept."""

from __future__ import annotations

from urllib.parse import quote, urlencode
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.di import NamedDependency, Provide
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.dashboard.rendering import PAGE_ERRORS, SessionPages, failure, page
from api.dashboard.session import page_account
from api.services.admin import PRICE_FIELDS, AdminService
from api.services.errors import Invalid, Missing
from api.services.health import HealthService
from api.services.logs import LogService
from api.services.operators import OperatorService
from api.services.provider_models import ProviderModelService
from api.services.support import SupportService
from projections import billing, logs

ACCOUNTS_PER_PAGE = 50
AUDIT_PER_PAGE = 50
REQUESTS_SHOWN = 20  # an account's newest requests on its page
OPERATOR_SECTIONS = {  # the section's pages, in the order of the sub-navigation
    "support": "Support",
    "accounts": "Accounts",
    "topups": "Top-ups",
    "models": "Models",
    "system": "System",
    "audit": "Audit",
}


async def page_operator(
    request: Request, account_id: NamedDependency[UUID], operator_service: NamedDependency[OperatorService]
) -> str:
    """The acting operator (the signed-in account's id), or a 403 page: checked on every route of the section."""
    return await operator_service.check(account_id)


OFFERED = "offered:"  # the `failed` mark of an offered model's form (the model list's marks are model ids)


def _whole(value: str, field: str) -> int | None:
    """A whole number typed in a form (empty: not given)."""
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or len(value) > 12:
        raise Invalid(f"{field} must be a whole number of tokens, got {value[:40]!r}", "invalid_request", field)
    return int(value)


def _see(url: str) -> Redirect:
    return Redirect(url, status_code=HTTP_303_SEE_OTHER)


def _page(name: str, request: Request, part: str, **context) -> Template:
    return page(name, request, section="operator", part=part, parts=OPERATOR_SECTIONS, **context)


class OperatorPages(SessionPages):
    path = "/operator"
    dependencies = {"account_id": Provide(page_account), "acting": Provide(page_operator)}

    @get("/")
    async def home(self, acting: NamedDependency[str]) -> Redirect:
        return Redirect("/operator/support")

    # Support

    @get("/support")
    async def support(
        self,
        request: Request,
        acting: NamedDependency[str],
        support_service: NamedDependency[SupportService],
        trace_id: FromQuery[str] = "",
    ) -> Template:
        """`trace_id`: the request a customer read out; its account, key, cost, timings and bodies (when kept)."""
        found, error = None, None
        wanted = trace_id.strip()
        if wanted:
            try:
                found = await support_service.trace(UUID(wanted))
            except ValueError:
                error = f"a trace id looks like 0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b; got {wanted[:60]!r}"
            except Missing as exc:
                error = exc.message
        return _page("operator_support.html", request, "support", trace_id=wanted, found=found, error=error)

    # Accounts

    @get("/accounts")
    async def accounts(
        self,
        request: Request,
        acting: NamedDependency[str],
        support_service: NamedDependency[SupportService],
        q: FromQuery[str] = "",
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        found = await support_service.find_accounts(q, ACCOUNTS_PER_PAGE, cursor)
        more = f"/operator/accounts?{urlencode({'q': q, 'cursor': found.next_cursor})}" if found.next_cursor else None
        return _page("operator_accounts.html", request, "accounts", q=q, found=found, more=more)

    @get("/accounts/{customer_id:uuid}")
    async def account(
        self,
        request: Request,
        acting: NamedDependency[str],
        customer_id: FromPath[UUID],
        support_service: NamedDependency[SupportService],
        operator_service: NamedDependency[OperatorService],
        log_service: NamedDependency[LogService],
    ) -> Template:
        return await self._account(request, customer_id, support_service, operator_service, log_service)

    async def _account(self, request, shown, support_service, operator_service, log_service, **extra) -> Template:
        detail = await support_service.account(shown)
        requests = await log_service.page(logs.LogFilter(account_id=shown), REQUESTS_SHOWN)
        actions, _ = await operator_service.audit(AUDIT_PER_PAGE, account_id=shown)
        return _page(
            "operator_account.html",
            request,
            "accounts",
            a=detail,
            requests=requests.rows,
            actions=actions,
            credit_kinds=billing.CREDIT_KINDS,
            **{"error": None, "failed": None, "form": {}, **extra},
        )

    @post("/accounts/{customer_id:uuid}/{action:str}")
    async def act_on_account(
        self,
        request: Request,
        acting: NamedDependency[str],
        customer_id: FromPath[UUID],
        action: FromPath[str],
        admin_service: NamedDependency[AdminService],
        support_service: NamedDependency[SupportService],
        operator_service: NamedDependency[OperatorService],
        log_service: NamedDependency[LogService],
    ) -> Response:
        """credits (grant), debits (take back), suspend, resume: each with its reason."""
        form = await request.form()
        reason = form.get("reason", "")
        try:
            if action == "credits":
                await admin_service.grant_credits(customer_id, form.get("amount_usd", ""), reason, acting)
            elif action == "debits":
                await admin_service.take_back_credits(customer_id, form.get("amount_usd", ""), reason, acting)
            elif action == "suspend":
                await admin_service.suspend(customer_id, reason, acting)
            elif action == "resume":
                await admin_service.resume(customer_id, reason, acting)
            else:
                raise Missing(f"no action {action[:40]!r} on accounts", "not_found")
        except PAGE_ERRORS as exc:
            return await self._account(
                request,
                customer_id,
                support_service,
                operator_service,
                log_service,
                error=failure(exc),
                failed=action,
                form=dict(form),
            )
        return _see(f"/operator/accounts/{customer_id}")

    # Top-ups

    @get("/topups")
    async def topups(
        self,
        request: Request,
        acting: NamedDependency[str],
        support_service: NamedDependency[SupportService],
        status: FromQuery[str] = "pending",
    ) -> Template:
        return await self._topups(request, support_service, status)

    async def _topups(self, request, support_service, status, **extra) -> Template:
        rows = await support_service.topups(status, 200)
        return _page(
            "operator_topups.html",
            request,
            "topups",
            rows=rows,
            status=status,
            statuses=list(billing.TOPUP_STATUSES),
            **{"error": None, "failed": None, "form": {}, **extra},
        )

    @post("/topups/{reference:str}/{action:str}")
    async def act_on_topup(
        self,
        request: Request,
        acting: NamedDependency[str],
        reference: FromPath[str],
        action: FromPath[str],
        admin_service: NamedDependency[AdminService],
        support_service: NamedDependency[SupportService],
    ) -> Response:
        """confirm (with the amount received) or reject (with a reason) a pending bank transfer."""
        form = await request.form()
        try:
            if action == "confirm":
                await admin_service.confirm_transfer(reference, form.get("amount_usd") or None, acting)
            elif action == "reject":
                await admin_service.reject_transfer(reference, form.get("reason", ""), acting)
            else:
                raise Missing(f"no action {action[:40]!r} on top-ups", "not_found")
        except PAGE_ERRORS as exc:
            return await self._topups(
                request, support_service, "pending", error=failure(exc), failed=reference, form=dict(form)
            )
        return _see("/operator/topups?status=pending")

    # Models

    @get("/models")
    async def models(
        self,
        request: Request,
        acting: NamedDependency[str],
        admin_service: NamedDependency[AdminService],
        provider_model_service: NamedDependency[ProviderModelService],
        provider: FromQuery[str | None] = None,
    ) -> Template:
        """`provider`: also what that provider offers (its own model list), each marked with the Mesh ids serving it."""
        offer, offer_error = None, None
        if provider:
            try:
                offer = await provider_model_service.offered(provider)
            except PAGE_ERRORS as exc:
                offer_error = failure(exc)
        return self._models(request, admin_service, provider=provider, offer=offer, offer_error=offer_error)

    def _models(self, request, admin_service, **extra) -> Template:
        return _page(
            "operator_models.html",
            request,
            "models",
            models=admin_service.models(),
            providers=admin_service.providers(),
            price_fields=PRICE_FIELDS,
            **{
                "error": None,
                "failed": None,
                "form": {},
                "provider": None,
                "offer": None,
                "offer_error": None,
                **extra,
            },
        )

    @post("/models")
    async def add_model(
        self,
        request: Request,
        acting: NamedDependency[str],
        admin_service: NamedDependency[AdminService],
        provider_model_service: NamedDependency[ProviderModelService],
    ) -> Response:
        """Enable a model the provider offers (listed below the catalog): served under the id given at its prices."""
        form = await request.form()
        provider, upstream = form.get("provider", ""), form.get("upstream", "")
        try:
            limits = [_whole(form.get(name, ""), name) for name in ("max_output_tokens", "context_tokens")]
            prices = {name: form.get(name) or None for name in PRICE_FIELDS}
            model = await admin_service.add_model(form.get("id", ""), provider, upstream, prices, *limits, acting)
        except PAGE_ERRORS as exc:
            offer, offer_error = None, None
            try:
                offer = await provider_model_service.offered(provider)
            except PAGE_ERRORS as listing:
                offer_error = failure(listing)
            return self._models(
                request,
                admin_service,
                provider=provider,
                offer=offer,
                offer_error=offer_error,
                error=failure(exc),
                failed=OFFERED + upstream,
                form=dict(form),
            )
        return _see(f"/operator/models?{urlencode({'provider': provider})}#{quote(model.id)}")

    @post("/models/{model_id:path}")
    async def change_model(
        self,
        request: Request,
        acting: NamedDependency[str],
        model_id: FromPath[str],
        admin_service: NamedDependency[AdminService],
    ) -> Response:
        """New prices (a field left empty keeps its price) and the switch."""
        form = await request.form()
        model_id = model_id.lstrip("/")
        prices = {name: form.get(name) for name in PRICE_FIELDS if form.get(name)}
        enabled = {"on": True, "off": False}.get(form.get("enabled", ""))
        try:
            await admin_service.change_model(model_id, prices, enabled, acting)
        except PAGE_ERRORS as exc:
            return self._models(request, admin_service, error=failure(exc), failed=model_id, form=dict(form))
        return _see(f"/operator/models#{quote(model_id)}")

    # System

    @get("/system")
    async def system(
        self,
        request: Request,
        acting: NamedDependency[str],
        health_service: NamedDependency[HealthService],
        retried: FromQuery[str | None] = None,
    ) -> Template:
        report = await health_service.check()
        return _page("operator_system.html", request, "system", report=report, retried=retried)

    @post("/system/retry")
    async def retry(self, acting: NamedDependency[str], health_service: NamedDependency[HealthService]) -> Redirect:
        """Apply the quarantined events again (after a fix), as `mesh projections retry` does."""
        applied, failing = await health_service.retry_quarantined()
        return _see(f"/operator/system?{urlencode({'retried': f'{applied} applied, {failing} still quarantined'})}")

    # Audit

    @get("/audit")
    async def audit(
        self,
        request: Request,
        acting: NamedDependency[str],
        operator_service: NamedDependency[OperatorService],
        cursor: FromQuery[str | None] = None,
    ) -> Template:
        actions, older = await operator_service.audit(AUDIT_PER_PAGE, cursor)
        return _page("operator_audit.html", request, "audit", actions=actions, older=older)
