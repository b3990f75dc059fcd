"""Billing: the balance, usage over a range (a chart of spend, requests, tokens, errors or latency; tables by model
and by key, and those as CSV), the credits received, top-ups (bank transfer, card) and auto-refill."""

from __future__ import annotations

import csv
import io
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
from api.dashboard.time_ranges import SPEND_PRESETS, BadRange, SpendWindow, spend_window
from api.routes.events import SeenPosition
from api.services.billing import BillingService
from api.spreadsheet_cells import cell
from api.services.usage import MAX_CREDITS, MEASURES, STACKS, UsageService
from domain.money import pico_to_usd
from domain.ratelimit import RateLimited
from projections.billing import CREDIT_KINDS

CHART_SERIES = STACKS  # what the chart stacks by
SERIES = (*MEASURES, "latency")  # what the chart shows per bucket: a measure of spend rows, or latency (logs)
NAMED = len(views.PALETTE) - 1  # series a chart tells apart, the rest summed as "other"
MAX_KEY_ROWS = 100  # keys in the table by key (the largest spend first); the CSV has every one
REFILL_FIELDS = ("Threshold", "Charge")  # the auto-refill form's threshold_usd and amount_usd, as its labels say
# Stripe's card brands (a PaymentMethod's `card.brand`, or a saved card's `brand`) as their owners write them
CARD_BRANDS = {
    "amex": "American Express",
    "americanexpress": "American Express",
    "diners": "Diners Club",
    "dinersclub": "Diners Club",
    "discover": "Discover",
    "eftpos_au": "eftpos",
    "eftposaustralia": "eftpos",
    "jcb": "JCB",
    "mastercard": "Mastercard",
    "unionpay": "UnionPay",
    "visa": "Visa",
}
# the spend tables as CSV: a column's name, and its value in a row (money as the JSON API writes it, exact)
CSV_COLUMNS = {
    "model": {"provider": lambda r: r.group["provider"], "model": lambda r: r.group["model"]},
    "key": {"key_id": lambda k: str(k.key_id), "label": lambda k: k.label},
}
CSV_SUMS = {
    "requests": lambda r: r.requests,
    "errors": lambda r: r.errors,
    "prompt_tokens": lambda r: r.prompt_tokens,
    "completion_tokens": lambda r: r.completion_tokens,
    "spend_usd": lambda r: pico_to_usd(r.spend),
}


class BillingPages(SessionPages):
    @get("/billing")
    async def billing(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        billing_service: NamedDependency[BillingService],
        usage_service: NamedDependency[UsageService],
        dashboard: NamedDependency[DashboardConfig],
        range: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
        by: FromQuery[str] = "model",
        series: FromQuery[str] = "spend",
        transfer: FromQuery[str | None] = None,
    ) -> Template:
        """`series`: what the chart shows (SERIES), stacked `by` one of CHART_SERIES. `transfer`: the reference of
        a bank transfer just started, shown with what to send where while it waits for its money."""
        started = await billing_service.pending_bank_transfer(account_id, transfer) if transfer else None
        return await self._billing(
            request,
            account_id,
            billing_service,
            usage_service,
            dashboard,
            range,
            start,
            end,
            by,
            series,
            started=started,
        )

    async def _billing(
        self,
        request,
        account_id,
        billing_service,
        usage_service,
        dashboard,
        range=None,
        start=None,
        end=None,
        by="model",
        series="spend",
        **extra,
    ) -> Template:
        preset, first, last, unit = _window(range, start, end)
        by = by if by in CHART_SERIES else "model"
        series = series if series in SERIES else "spend"
        balance = await billing_service.balance(account_id)
        auto_refill = await billing_service.auto_refill(account_id)
        latency = series == "latency"
        usage = await usage_service.usage(
            account_id, unit, None if latency else by, first, last, "spend" if latency else series, NAMED
        )
        last_moment = last - timedelta(microseconds=1)  # the range is [first, last)
        last_day = last_moment.date()
        if unit == "hour":
            bars = (first, last_moment.replace(minute=0, second=0, microsecond=0))
        else:
            bars = (first.date(), last_day)
        window = (  # what a link keeps of the range
            {"start": first.date().isoformat(), "end": last_day.isoformat()}
            if preset == "custom"
            else {"range": preset}
        )
        if latency:
            buckets = (await usage_service.latency(account_id, unit, first, last)).buckets
            points = [(b.bucket, b.requests, b.p50_us, b.p95_us) for b in buckets]
            chart = views.latency_chart(points, *bars, unit=unit) if points else None
        else:
            shown = any(value for _, _, value in usage.by_bucket)
            chart = (
                views.spend_chart(usage.by_bucket, *bars, max_series=NAMED, unit=unit, measure=series)
                if shown
                else None
            )
        return page(
            "billing.html",
            request,
            section="billing",
            balance=balance,
            chart=chart,
            by_model=usage.by_model,
            by_key=usage.by_key[:MAX_KEY_ROWS],
            keys_used=len(usage.by_key),
            total=usage.total,
            credits=await usage_service.credits(account_id),
            credit_kinds=CREDIT_KINDS,
            max_credits=MAX_CREDITS,
            preset=preset,
            ranges=SPEND_PRESETS,
            first=first,
            last_day=last_day,
            window=window,
            by=by,
            stacks=CHART_SERIES,
            series=series,
            measures=SERIES,
            unit=unit,
            topups=await billing_service.topups(account_id),
            auto_refill=auto_refill,
            saved_card=saved_card(auto_refill),
            providers=billing_service.providers,
            limits=billing_service.topup_limits,
            cards=dashboard.stripe_publishable_key is not None,
            **{"error": None, "started": None, "refill_error": None, "refill_form": None, **extra},
        )

    @get("/billing/spend.csv", media_type="text/csv; charset=utf-8")
    async def spend_csv(
        self,
        account_id: NamedDependency[UUID],
        usage_service: NamedDependency[UsageService],
        table: FromQuery[str] = "model",
        range: FromQuery[str | None] = None,
        start: FromQuery[str | None] = None,
        end: FromQuery[str | None] = None,
    ) -> Response:
        """The spend table by model (`table=model`) or by key (`table=key`) over the page's range, as CSV: the
        rows the page shows, money in USD exact to the pico-dollar as the JSON API writes it."""
        if table not in CSV_COLUMNS:
            raise ApiError(400, f"table is model or key; got {table[:40]!r}", "invalid_request", param="table")
        _, first, last, unit = _window(range, start, end)
        usage = await usage_service.usage(account_id, unit, None, first, last)
        columns = {**CSV_COLUMNS[table], **CSV_SUMS}
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in usage.by_model if table == "model" else usage.by_key:
            writer.writerow([cell(value(row)) for value in columns.values()])
        last_day = (last - timedelta(microseconds=1)).date()
        name = f"mesh-spend-by-{table}-{first.date().isoformat()}-to-{last_day.isoformat()}.csv"
        return Response(buffer.getvalue(), headers={"content-disposition": f'attachment; filename="{name}"'})

    @get("/billing/balance")
    async def balance(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        billing_service: NamedDependency[BillingService],
        position: SeenPosition = None,
    ) -> Template:
        """The live balance: reloaded by dashboard.js when the account's events (GET /api/events) say it moved."""
        return page("_balance.html", request, balance=await billing_service.balance(account_id, seen=position))

    @post("/billing/topups")
    async def topup(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        billing_service: NamedDependency[BillingService],
        usage_service: NamedDependency[UsageService],
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
            return await self._billing(
                request, account_id, billing_service, usage_service, dashboard, error=failure(exc)
            )
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
            saved_card=saved_card(await billing_service.auto_refill(account_id)),
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
        """The card the page tokenised with stripe.js, charged for the top-up it started (and saved for
        auto-refill once paid, when `save_card` is true)."""
        data = await request.json()
        try:
            status, client_secret = await billing_service.pay_with_card(
                account_id,
                payment_intent,
                str(data.get("token", "")),
                client_address(request),
                save_card=data.get("save_card") is True,
            )
        except RateLimited as exc:
            return Response({"error": failure(exc)}, status_code=429, headers={"retry-after": str(exc.retry_after)})
        except PAGE_ERRORS as exc:
            return Response({"error": failure(exc)})
        return Response({"status": status, "client_secret": client_secret})

    @post("/billing/auto-refill")
    async def auto_refill(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        billing_service: NamedDependency[BillingService],
        usage_service: NamedDependency[UsageService],
        dashboard: NamedDependency[DashboardConfig],
    ) -> Response:
        """On or off with the saved card; refused: the Billing page says why beside the form, the input kept."""
        form = await request.form()
        try:
            await billing_service.configure_auto_refill(
                account_id,
                form.get("enabled") == "on",
                form.get("threshold_usd") or None,
                form.get("amount_usd") or None,
                client=client_address(request),
                names=REFILL_FIELDS,
            )
        except PAGE_ERRORS as exc:
            return await self._billing(
                request,
                account_id,
                billing_service,
                usage_service,
                dashboard,
                refill_error=failure(exc),
                refill_form=dict(form),
            )
        return Redirect("/billing#auto-refill", status_code=HTTP_303_SEE_OTHER)


def saved_card(row) -> str | None:
    """`Visa •••• 4242, expires 12/34`: the auto-refill card of a billing.AutoRefillRow; None without one."""
    if row is None or row.card_last4 is None:
        return None
    brand = row.card_brand or ""
    name = CARD_BRANDS.get(brand.lower().replace(" ", ""), brand if brand.lower() not in ("", "unknown") else "Card")
    return f"{name} •••• {row.card_last4}, expires {row.card_exp_month or 0:02d}/{(row.card_exp_year or 0) % 100:02d}"


def _window(range: str | None, start: str | None, end: str | None) -> SpendWindow:
    try:
        return spend_window(range, start, end)
    except BadRange as exc:
        raise ApiError(400, str(exc), "invalid_request", param="start") from None
