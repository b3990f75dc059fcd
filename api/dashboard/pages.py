"""The dashboard's pages: parse the form or query, call a service, render a template. No rules here."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode
from uuid import UUID

import msgspec
from litestar import Controller, MediaType, Request, Response, get, post
from litestar.di import Provide
from litestar.response import Redirect, Template

from api.dashboard import views
from api.dashboard.session import (
    SESSION_COOKIE,
    LoginRequired,
    expired_cookie,
    page_account,
    renewed_cookie,
    session_cookie,
    session_seconds,
)
from api.errors import DOMAIN_ERRORS, ApiError
from api.routes.accounts import client_address
from api.routes.logs import decode_cursor, encode_cursor
from api.security_headers import NO_STORE
from api.services.accounts import AccountService
from api.services.billing import BillingService
from api.services.keys import KEY_ACTIONS, KeyService, error_rate
from api.services.logs import LogService
from api.services.models import ModelService
from api.services.templates import TemplateContent, TemplateService, try_out, variables
from domain.credentials import hash_token
from domain.invite import SignupRefused
from domain.quota import QuotaExceeded
from domain.ratelimit import RateLimited
from projections import logs

STATIC = Path(__file__).parent / "static"
TEMPLATES = Path(__file__).parent / "templates"
HTMX = "vendor/htmx-2.0.11/htmx.min.js"
LOG_PAGE = 50
LOG_RANGES = {"1h": timedelta(hours=1), "24h": timedelta(hours=24), "7d": timedelta(days=7), "30d": timedelta(days=30)}
ROTATE_GRACE = {"0": timedelta(0), "3600": timedelta(hours=1), "86400": timedelta(days=1)}
ROLES = ("system", "user", "assistant")
CHART_SERIES = ("model", "provider")  # what the spend chart stacks by
PAGE_ERRORS = (
    ApiError,
    RateLimited,
    SignupRefused,
    QuotaExceeded,
    *DOMAIN_ERRORS,
)  # shown on the page, in the API's words


class DashboardConfig(msgspec.Struct, frozen=True):
    stripe_js_url: str = "https://js.stripe.com/v3/"  # MESH_STRIPE_JS_URL
    stripe_publishable_key: str | None = None  # MESH_STRIPE_PUBLISHABLE_KEY: no card form without it


def failure(exc: Exception) -> str:
    """What went wrong, in the API's own words."""
    return exc.message if isinstance(exc, ApiError) else str(exc)


def page(name: str, request: Request, **context: Any) -> Template:
    return Template(
        template_name=name, context={"request": request, "htmx": HTMX, **context}, cookies=renewed_cookie(request)
    )


def _login_required(request: Request, _: LoginRequired) -> Response:
    if request.headers.get("hx-request"):
        return Response(content="", status_code=401, headers={"HX-Redirect": "/login"})
    return Redirect("/login")


def _page_error(request: Request, exc: Exception) -> Response:
    status = (
        exc.status
        if isinstance(exc, ApiError)
        else 429
        if isinstance(exc, RateLimited)
        else 403
        if isinstance(exc, (SignupRefused, QuotaExceeded))
        else next((s for cls, (s, _) in DOMAIN_ERRORS.items() if isinstance(exc, cls)), 400)
    )
    return Template(
        template_name="error.html",
        status_code=status,
        context={"request": request, "htmx": HTMX, "message": failure(exc), "section": None},
    )


class AuthPages(Controller):
    """Sign up, log in, log out: no session needed."""

    @get("/", include_in_schema=False)
    async def home(self, request: Request) -> Redirect:
        try:
            await page_account(request)
        except LoginRequired:
            return Redirect("/login")
        return Redirect("/keys")

    @get("/login", include_in_schema=False)
    async def login_form(self, request: Request, account_service: AccountService) -> Template:
        return page("auth.html", request, mode="login", error=None, email="", signup=account_service.signup_mode)

    @get("/signup", include_in_schema=False)
    async def signup_form(self, request: Request, account_service: AccountService) -> Template:
        """The form, with an invite code field when MESH_SIGNUP=invite; no form when it is closed."""
        return page("auth.html", request, mode="signup", error=None, email="", signup=account_service.signup_mode)

    @post("/login", include_in_schema=False, cache_control=NO_STORE)
    async def login(self, request: Request, account_service: AccountService) -> Response:
        return await self._enter(request, account_service, "login")

    @post("/signup", include_in_schema=False, cache_control=NO_STORE)
    async def signup(self, request: Request, account_service: AccountService) -> Response:
        return await self._enter(request, account_service, "signup")

    @post("/logout", include_in_schema=False)
    async def logout(self, request: Request, account_service: AccountService) -> Redirect:
        """The session's management token is revoked, and the browser forgets the cookie."""
        token = request.cookies.get(SESSION_COOKIE)
        account_id = await account_service.account_for(token) if token else None
        if account_id is not None:
            await account_service.log_out(account_id, hash_token(token))
        return Redirect("/login", cookies=[expired_cookie(request)])

    @staticmethod
    async def _enter(request: Request, account_service: AccountService, mode: str) -> Response:
        form = await request.form()
        email, password = form.get("email", ""), form.get("password", "")
        try:
            if mode == "signup":
                invite_code = form.get("invite_code") or None
                session = await account_service.sign_up(email, password, client_address(request), invite_code)
            else:
                session = await account_service.log_in(email, password, client_address(request))
        except PAGE_ERRORS as exc:
            signup = account_service.signup_mode
            return page("auth.html", request, mode=mode, error=failure(exc), email=email, signup=signup)
        return Redirect("/keys", cookies=[session_cookie(request, session.management_token, session_seconds(request))])


class DashboardPages(Controller):
    """The five sections; every page needs a session."""

    dependencies = {"account_id": Provide(page_account)}
    exception_handlers = {LoginRequired: _login_required, **{cls: _page_error for cls in PAGE_ERRORS}}
    include_in_schema = False

    # API Keys

    @get("/keys")
    async def keys(
        self, request: Request, account_id: UUID, key_service: KeyService, model_service: ModelService, q: str = ""
    ) -> Template:
        return await self._keys(request, account_id, key_service, model_service, q)

    @post("/keys", cache_control=NO_STORE)
    async def create_key(
        self, request: Request, account_id: UUID, key_service: KeyService, model_service: ModelService
    ) -> Template:
        form = await request.form()
        try:
            created = await key_service.create(
                account_id, form.get("label", ""), form.get("spend_cap_usd") or None, form.get("default_model") or None
            )
        except PAGE_ERRORS as exc:
            return await self._keys(
                request, account_id, key_service, model_service, "", error=failure(exc), form=dict(form)
            )
        return await self._keys(
            request, account_id, key_service, model_service, "", created=created.key, secret=created.secret
        )

    async def _keys(self, request, account_id, key_service, model_service, q, **extra) -> Template:
        listing = await key_service.listing(account_id)
        shown = [v for v in listing.keys if q.lower() in v.row.label.lower()] if q else listing.keys
        return page(
            "keys.html",
            request,
            section="keys",
            keys=shown,
            total=len(listing.keys),
            q=q,
            as_of=listing.as_of,
            models=model_service.enabled(),
            error_rate=error_rate,
            share=views.share,
            base_url=str(request.base_url).rstrip("/"),
            **{"error": None, "form": {}, "secret": None, "created": None, **extra},
        )

    @get("/keys/{key_id:uuid}")
    async def key(
        self,
        request: Request,
        account_id: UUID,
        key_id: UUID,
        key_service: KeyService,
        model_service: ModelService,
        cursor: str | None = None,
    ) -> Template:
        """`cursor`: an older page of the history."""
        return await self._key(request, account_id, key_id, key_service, model_service, cursor=cursor)

    @post("/keys/{key_id:uuid}")
    async def edit_key(
        self, request: Request, account_id: UUID, key_id: UUID, key_service: KeyService, model_service: ModelService
    ) -> Response:
        form = await request.form()
        changes = {
            "spend_cap_usd": form.get("spend_cap_usd") or None,
            "default_model": form.get("default_model") or None,
        }
        try:
            await key_service.update(account_id, key_id, changes)
        except PAGE_ERRORS as exc:
            return await self._key(request, account_id, key_id, key_service, model_service, error=failure(exc))
        return Redirect(f"/keys/{key_id}")

    async def _key(self, request, account_id, key_id, key_service, model_service, cursor=None, **extra) -> Template:
        view, as_of = await key_service.one(account_id, key_id)
        history = await key_service.history(account_id, key_id, cursor=cursor)
        return page(
            "key.html",
            request,
            section="keys",
            key=view,
            as_of=as_of,
            history=history.events,
            older=history.next_cursor,
            models=model_service.enabled(),
            error_rate=error_rate,
            share=views.share,
            **{"error": None, "secret": None, **extra},
        )

    @get("/keys/{key_id:uuid}/{action:str}")
    async def confirm(
        self, request: Request, account_id: UUID, key_id: UUID, action: str, key_service: KeyService
    ) -> Template:
        if action not in (*KEY_ACTIONS, "rotate"):
            raise ApiError(404, f"no action {action!r} on keys", "not_found")
        view, _ = await key_service.one(account_id, key_id)
        return page("confirm.html", request, section="keys", key=view.row, action=action)

    @post("/keys/{key_id:uuid}/{action:str}", cache_control=NO_STORE)
    async def act(
        self,
        request: Request,
        account_id: UUID,
        key_id: UUID,
        action: str,
        key_service: KeyService,
        model_service: ModelService,
    ) -> Response:
        if action == "rotate":
            form = await request.form()
            grace = ROTATE_GRACE.get(form.get("grace_seconds", "0"), timedelta(0))
            rotated = await key_service.rotate(account_id, key_id, grace)
            return await self._key(request, account_id, key_id, key_service, model_service, secret=rotated.secret)
        await key_service.act(account_id, key_id, action)
        return Redirect(f"/keys/{key_id}")

    # Billing

    @get("/billing")
    async def billing(
        self,
        request: Request,
        account_id: UUID,
        billing_service: BillingService,
        range: str | None = None,
        start: str | None = None,
        end: str | None = None,
        by: str = "model",
    ) -> Template:
        return await self._billing(request, account_id, billing_service, range, start, end, by)

    async def _billing(
        self, request, account_id, billing_service, range=None, start=None, end=None, by="model", **extra
    ) -> Template:
        preset, first, last = views.spend_window(range, start, end)
        by = by if by in CHART_SERIES else "model"
        balance = await billing_service.balance(account_id)
        by_day = await billing_service.spend(account_id, ["day", by], first, last)
        by_model = await billing_service.spend(account_id, ["provider", "model"], first, last)
        last_day = (last - timedelta(microseconds=1)).date()  # the range is [first, last)
        chart = views.spend_chart(
            [(r.group["day"][:10], r.group[by], r.spend) for r in by_day.rows], first.date(), last_day
        )
        return page(
            "billing.html",
            request,
            section="billing",
            balance=balance,
            chart=chart,
            by_model=sorted(by_model.rows, key=lambda r: -r.spend),
            total=by_model.total,
            preset=preset,
            ranges=views.RANGES,
            first=first,
            last_day=last_day,
            by=by,
            series=CHART_SERIES,
            topups=await billing_service.topups(account_id),
            auto_refill=await billing_service.auto_refill(account_id),
            providers=billing_service.providers,
            limits=billing_service.topup_limits,
            cards=request.app.state.dashboard.stripe_publishable_key is not None,
            **{"error": None, "started": None, **extra},
        )

    @get("/billing/balance")
    async def balance(self, request: Request, account_id: UUID, billing_service: BillingService) -> Template:
        """The live balance (htmx polls it)."""
        return page("_balance.html", request, balance=await billing_service.balance(account_id))

    @post("/billing/topups")
    async def topup(self, request: Request, account_id: UUID, billing_service: BillingService) -> Response:
        """A card top-up continues on its payment page; a bank transfer shows its reference here."""
        form = await request.form()
        try:
            started = await billing_service.start_topup(
                account_id, form.get("provider", ""), form.get("amount_usd"), client_address(request)
            )
        except PAGE_ERRORS as exc:
            return await self._billing(request, account_id, billing_service, error=failure(exc))
        if started.provider == "stripe":
            return Redirect(f"/billing/pay/{started.payment.reference}")
        return await self._billing(request, account_id, billing_service, started=started)

    @get("/billing/pay/{payment_intent:str}")
    async def pay(
        self, request: Request, account_id: UUID, payment_intent: str, billing_service: BillingService
    ) -> Template:
        """The card form (Stripe Elements) for a pending card top-up. A page of its own: stripe.js is loaded
        only here."""
        topup = await billing_service.pending_card_topup(account_id, payment_intent)
        settings = request.app.state.dashboard
        return page(
            "pay.html",
            request,
            section="billing",
            topup=topup,
            stripe_js=settings.stripe_js_url,
            stripe_key=settings.stripe_publishable_key,
        )

    @post("/billing/topups/{payment_intent:str}/card", media_type=MediaType.JSON, cache_control=NO_STORE)
    async def pay_by_card(
        self, request: Request, account_id: UUID, payment_intent: str, billing_service: BillingService
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
    async def auto_refill(self, request: Request, account_id: UUID, billing_service: BillingService) -> Response:
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
        return Redirect("/billing")

    # Logs

    @get("/logs")
    async def logs(
        self, request: Request, account_id: UUID, log_service: LogService, model_service: ModelService
    ) -> Template:
        query = request.query_params
        preset = query.get("range") or "24h"
        start = _day(query.get("from"))
        end = _day(query.get("to"))
        if start or end:
            preset = "custom"
        elif preset in LOG_RANGES:
            start = datetime.now(timezone.utc) - LOG_RANGES[preset]
        status = query.get("status") if query.get("status") in logs.STATUSES else None
        f = logs.LogFilter(
            account_id=account_id,
            start=start,
            end=end + timedelta(days=1) if end else None,
            model=query.get("model") or None,
            status=status,
            key_id=_uuid(query.get("key_id")),
        )
        result = await log_service.page(f, LOG_PAGE, decode_cursor(query.get("cursor") or None))
        following = None
        if result.more:
            params = {k: v for k, v in query.items() if k != "cursor"}
            params["cursor"] = encode_cursor(result.rows[-1])
            following = "/logs?" + urlencode(params)
        return page(
            "logs.html",
            request,
            section="logs",
            rows=result.rows,
            as_of=result.as_of,
            following=following,
            preset=preset,
            ranges=LOG_RANGES,
            query=query,
            models=model_service.enabled(),
            statuses=logs.STATUSES,
        )

    @get("/logs/{trace_id:uuid}")
    async def log_entry(self, request: Request, account_id: UUID, trace_id: UUID, log_service: LogService) -> Template:
        found = await log_service.entry(account_id, trace_id)
        if found is None:
            raise ApiError(404, f"no request {trace_id} in this account's logs", "not_found")
        return page("log.html", request, section="logs", entry=found.row, bodies=found.bodies, as_of=found.as_of)

    # Models

    @get("/models")
    async def models(
        self, request: Request, account_id: UUID, model_service: ModelService, free: bool = False
    ) -> Template:
        return page("models.html", request, section="models", models=model_service.enabled(free), free=free)

    # Templates

    @get("/templates")
    async def templates(self, request: Request, account_id: UUID, template_service: TemplateService) -> Template:
        listing, as_of = await template_service.listing(account_id)
        return page("templates.html", request, section="templates", templates=listing, as_of=as_of)

    @get("/templates/new")
    async def new_template(self, request: Request, account_id: UUID, model_service: ModelService) -> Template:
        return self._editor(request, model_service, None, {"name": "", "messages": [], "defaults": {}})

    @post("/templates")
    async def create_template(
        self, request: Request, account_id: UUID, template_service: TemplateService, model_service: ModelService
    ) -> Response:
        content = _template_form(await request.form())
        try:
            template = await template_service.create(account_id, content)
        except PAGE_ERRORS as exc:
            return self._editor(request, model_service, None, _shown(content), error=failure(exc))
        return Redirect(f"/templates/{template.id}")

    @get("/templates/{template_id:uuid}")
    async def template(
        self,
        request: Request,
        account_id: UUID,
        template_id: UUID,
        template_service: TemplateService,
        model_service: ModelService,
        diff: int | None = None,
    ) -> Template:
        return await self._template(request, account_id, template_id, template_service, model_service, diff)

    @post("/templates/{template_id:uuid}")
    async def save_template(
        self,
        request: Request,
        account_id: UUID,
        template_id: UUID,
        template_service: TemplateService,
        model_service: ModelService,
    ) -> Response:
        content = _template_form(await request.form())
        try:
            await template_service.save(account_id, template_id, content)
        except PAGE_ERRORS as exc:
            return await self._template(
                request, account_id, template_id, template_service, model_service, None, error=failure(exc)
            )
        return Redirect(f"/templates/{template_id}")

    @post("/templates/{template_id:uuid}/test")
    async def test_template(
        self,
        request: Request,
        account_id: UUID,
        template_id: UUID,
        template_service: TemplateService,
        log_service: LogService,
        model_service: ModelService,
    ) -> Template:
        """Render with the values given, then call the model through /v1 with the key given. htmx swaps the
        result in; without JavaScript the whole page comes back with it."""
        form = await request.form()
        view = await template_service.one(account_id, template_id)
        values = {name: form.get(f"var_{name}", "") for name in variables(view.version.messages)}
        test = {"rendered": None, "result": None, "error": None, "values": values}
        try:
            test["rendered"] = await template_service.render(account_id, template_id, values)
        except PAGE_ERRORS as exc:
            test["error"] = failure(exc)
        else:
            result = await try_out(
                request.app.state.runtime,
                lambda t: log_service.entry(account_id, t),
                form.get("key", "").strip(),
                f"{view.row.name}@{view.version.version}",
                form.get("model") or None,
                values,
            )
            test.update(result=result, error=result.error)
        if request.headers.get("hx-request"):
            return page("_test.html", request, **test)
        return await self._template(request, account_id, template_id, template_service, model_service, None, test=test)

    async def _template(
        self, request, account_id, template_id, template_service, model_service, diff, **extra
    ) -> Template:
        row, versions, as_of = await template_service.versions(account_id, template_id)
        latest = versions[-1]
        shown = {"name": row.name, "messages": latest.messages, "defaults": latest.defaults}
        changes = None
        if diff is not None and 1 < diff <= len(versions):
            changes = views.line_diff(_text(versions[diff - 2]), _text(versions[diff - 1]))
        return self._editor(
            request,
            model_service,
            row,
            shown,
            versions=list(reversed(versions)),
            as_of=as_of,
            diff=diff if changes is not None else None,
            changes=changes,
            needs=variables(latest.messages),
            **extra,
        )

    @staticmethod
    def _editor(request, model_service, row, shown, **extra) -> Template:
        messages = list(shown["messages"]) or [{"role": "system", "content": ""}, {"role": "user", "content": ""}]
        messages.append({"role": "assistant" if messages[-1]["role"] == "user" else "user", "content": ""})
        return page(
            "template.html",
            request,
            section="templates",
            row=row,
            shown=shown,
            messages=messages,
            roles=ROLES,
            models=model_service.enabled(),
            **{
                "error": None,
                "versions": [],
                "diff": None,
                "changes": None,
                "needs": [],
                "as_of": None,
                "test": None,
                **extra,
            },
        )


def _shown(content: TemplateContent) -> dict:
    return {"name": content.name, "messages": content.messages, "defaults": content.defaults}


def _text(version) -> str:
    """A version as lines to compare: its messages, then its defaults."""
    lines = []
    for m in version.messages:
        lines.append(f"[{m['role']}]")
        lines.extend(m["content"].splitlines() or [""])
    lines.extend(f"{k} = {v}" for k, v in sorted(version.defaults.items()))
    return "\n".join(lines)


def _template_form(form) -> TemplateContent:
    """Messages from the editor's rows (blank ones dropped) and the defaults that were filled in."""
    messages = [
        {"role": role, "content": content}
        for role, content in zip(form.getall("role", []), form.getall("content", []))
        if content.strip()
    ]
    defaults: dict[str, Any] = {}
    if form.get("model"):
        defaults["model"] = form.get("model")
    for field, kind in (("temperature", float), ("max_tokens", int)):
        raw = (form.get(field) or "").strip()
        if raw:
            try:
                defaults[field] = kind(raw)
            except ValueError:
                raise ApiError(
                    400,
                    f"{field} must be a {'number' if kind is float else 'whole number'}; got {raw!r}",
                    "invalid_request",
                ) from None
    stops = [s for s in (form.get("stop") or "").splitlines() if s.strip()]
    if stops:
        defaults["stop"] = stops
    return TemplateContent(form.get("name", "").strip(), messages, form.get("description") or None, defaults)


def _uuid(value: str | None) -> UUID | None:
    if not value:
        return None
    try:
        return UUID(value)
    except ValueError:
        raise ApiError(400, f"key_id must be an API key id; got {value!r}", "invalid_request") from None


def _day(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), datetime.min.time(), timezone.utc)
    except ValueError:
        raise ApiError(400, f"dates are YYYY-MM-DD; got {value!r}", "invalid_request") from None


def dashboard_templates():
    """The Jinja engine with the view helpers as filters."""
    from litestar.plugins.jinja import JinjaTemplateEngine

    engine = JinjaTemplateEngine(directory=TEMPLATES)
    engine.engine.filters.update(views.FILTERS)
    engine.engine.globals.update(needs_of=variables)
    return engine
