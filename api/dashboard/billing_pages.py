"""Billing: the balance, spend over a range as a chart and a table, top-ups (bank transfer, card) and auto-refill."""

from __future__ import annotations

from datetime import timedelta
from uuid import UUID

from litestar import MediaType, Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.client_address import client_address
from api.dashboard import views
from api.dashboard.rendering import PAGE_ERRORS, SessionPages, failure, page
from api.dashboard.settings import DashboardConfig
from api.errors import ApiError
from api.dashboard.time_ranges import SPEND_PRESETS, BadRange, spend_window
from api.services.billing import BillingService
from domain.ratelimit import RateLimited

CHART_SERIES = ("model", "provider")  # what the spend chart stacks by


class BillingPages(SessionPages):
    @get("/billing")
    async def billing(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        billing_service: NamedDependency[BillingService],
        dashboard: NamedDependency[DashboardConfig],
        range: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        by: FromQuery[str] = "model",
        transfer: FromQuery[str | None] = None,
    ) -> Template:
        """`transfer`: the reference of a bank transfer just started, shown with what to send where while it
        waits for its money."""
        started = await billing_service.pending_bank_transfer(account_id, transfer) if transfer else None
        return await self._billing(
            request, account_id, billing_service, dashboard, range, start, end, by, started=started
        )

    async def _billing(
        self, request, account_id, billing_service, dashboard, range=None, start=None, end=None, by="model", **extra
    ) -> Template:
        try:
            preset, first, last, unit = spend_window(range, start, end)
        except BadRange as exc:
            raise ApiError(400, str(exc), "invalid_request", param="start") from None
        by = by if by in CHART_SERIES else "model"
        balance = await billing_service.balance(account_id)
        by_bucket = await billing_service.spend(account_id, [unit, by], first, last)
        by_model = await billing_service.spend(account_id, ["provider", "model"], first, last)
        last_moment = last - timedelta(microseconds=1)  # the range is [first, last)
        last_day = last_moment.date()
        if unit == "hour":
            bars = (first, last_moment.replace(minute=0, second=0, microsecond=0))
        else:
            bars = (first.date(), last_day)
        rows = [(r.group[unit], r.group[by], r.spend) for r in by_bucket.rows]
        chart = views.spend_chart(rows, *bars, unit=unit) if rows else None
        return page(
            "billing.html",
            request,
            section="billing",
            balance=balance,
            chart=chart,
            by_model=sorted(by_model.rows, key=lambda r: -r.spend),
            total=by_model.total,
            preset=preset,
            ranges=SPEND_PRESETS,
            first=first,
            last_day=last_day,
            by=by,
            series=CHART_SERIES,
            topups=await billing_service.topups(account_id),
            auto_refill=await billing_service.auto_refill(account_id),
            providers=billing_service.providers,
            limits=billing_service.topup_limits,
            cards=dashboard.stripe_publishable_key is not None,
            **{"error": None, "started": None, **extra},
        )

    @get("/billing/balance")
    async def balance(
        self, request: Request, account_id: NamedDependency[UUID], billing_service: NamedDependency[BillingService]
    ) -> Template:
        """The live balance (htmx polls it)."""
        return page("_balance.html", request, balance=await billing_service.balance(account_id))

    @post("/billing/topups")
    async def topup(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        billing_service: NamedDependency[BillingService],
        dashboard: NamedDependency[DashboardConfig],
    ) -> Response:
        """A card top-up continues on its payment page; a bank transfer on the Billing page, which shows its
        reference (a redirect either way: a reload starts no second top-up)."""
        form = await request.form()
        try:
            started = await billing_service.start_topup(
                account_id, form.get("provider", ""), form.get("amount_usd"), client_address(request)
            )
        except PAGE_ERRORS as exc:
            return await self._billing(request, account_id, billing_service, dashboard, error=failure(exc))
        if started.provider == "stripe":
            return Redirect(f"/billing/pay/{started.payment.reference}", status_code=HTTP_303_SEE_OTHER)
        return Redirect(f"/billing?transfer={started.payment.reference}", status_code=HTTP_303_SEE_OTHER)

    @get("/billing/pay/{payment_intent:str}")
    async def pay(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        payment_intent: FromPath[str],
        billing_service: NamedDependency[BillingService],
        dashboard: NamedDependency[DashboardConfig],
    ) -> Template:
        """The card form (Stripe Elements) for a pending card top-up. A page of its own: stripe.js is loaded
        only here."""
        topup = await billing_service.pending_card_topup(account_id, payment_intent)
        return page(
            "pay.html",
            request,
            section="billing",
            topup=topup,
            stripe_js=dashboard.stripe_js_url,
            stripe_key=dashboard.stripe_publishable_key,
        )

    @post("/billing/topups/{payment_intent:str}/card", media_type=MediaType.JSON)
    async def pay_by_card(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        payment_intent: FromPath[str],
        billing_service: NamedDependency[BillingService],
    ) -> Response:
        """The card the page tokenised with stripe.js, charged for the top-up it started."""
        data = await request.json()
        try:
            status, client_secret = await billing_service.pay_with_card(
                account_id, payment_intent, str(data.get("token", "")), client_address(request)
            )
        except RateLimited as exc:
            return Response({"error": failure(exc)}, status_code=429, headers={"retry-after": str(exc.retry_after)})
        except PAGE_ERRORS as exc:
            return Response({"error": failure(exc)})
        return Response({"status": status, "client_secret": client_secret})

    @post("/billing/auto-refill")
    async def auto_refill(
        self, request: Request, account_id: NamedDependency[UUID], billing_service: NamedDependency[BillingService]
    ) -> Response:
        form = await request.form()
        try:
            await billing_service.configure_auto_refill(
                account_id,
                form.get("enabled") == "on",
                form.get("threshold_usd") or None,
                form.get("amount_usd") or None,
                form.get("payment_method_id") or None,
                client_address(request),
            )
        except PAGE_ERRORS as exc:
            return page("error.html", request, section="billing", message=failure(exc))
        return Redirect("/billing", status_code=HTTP_303_SEE_OTHER)
