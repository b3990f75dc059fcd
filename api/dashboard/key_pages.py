"""API Keys: the list, one key with its history, and the actions on it."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from uuid import UUID

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.dashboard import views
from api.dashboard.rendering import PAGE_ERRORS, SessionPages, failure, page
from api.dashboard.time_ranges import instant
from api.errors import ApiError
from api.input_errors import InvalidInput
from api.services.keys import KEY_ACTIONS, KeyService, error_rate
from api.services.models import ModelService
from api.services.one_time_views import OneTimeViews

EXPIRY_FORMAT = "%Y-%m-%dT%H:%M"  # what <input type="datetime-local"> sends, read as UTC
RATE_LIMIT_FIELDS = ("rpm_limit", "tpm_limit")
MAX_LIMIT_DIGITS = 12  # more is no limit the domain allows (it says which are)


def _rate_limit(form, name: str) -> int | None:
    """A whole number, or None for an empty field; the domain checks its range."""
    text = (form.get(name) or "").strip()
    if not text:
        return None
    if not text.isdigit() or len(text) > MAX_LIMIT_DIGITS:
        raise InvalidInput("form field", name, f"takes a whole number, or nothing for no limit; got {text[:40]!r}")
    return int(text)


def key_settings(form) -> dict:
    """A key form's settings as the service takes them (the create and the edit form have the same fields); an
    empty field is no setting: no cap, no reset, no default model, every model allowed, no expiry."""
    expires = form.get("expires_at") or None
    if expires is not None:
        try:
            expires = datetime.strptime(expires, EXPIRY_FORMAT).replace(tzinfo=timezone.utc)
        except ValueError:
            raise InvalidInput(
                "form field",
                "expires_at",
                f"takes a date and time such as 2027-01-31T18:00 (UTC); got {expires[:40]!r}",
            ) from None
    return {
        "spend_cap_usd": form.get("spend_cap_usd") or None,
        "cap_reset": form.get("cap_reset") or None,
        "default_model": form.get("default_model") or None,
        "allowed_models": [m for m in form.getall("allowed_models", []) if m] or None,
        "expires_at": expires,
        "fit_to_budget": form.get("fit_to_budget") == "on",
        **{name: _rate_limit(form, name) for name in RATE_LIMIT_FIELDS},
    }


ROTATE_GRACE = {"0": timedelta(0), "3600": timedelta(hours=1), "86400": timedelta(days=1)}


class KeyPages(SessionPages):
    @get("/keys")
    async def keys(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        key_service: NamedDependency[KeyService],
        model_service: NamedDependency[ModelService],
        one_time_views: NamedDependency[OneTimeViews],
        q: FromQuery[str] = "",
        created: FromQuery[str | None] = None,
    ) -> Template:
        """`created`: the one-time view of a key just made (its secret, shown on this one page)."""
        shown = await one_time_views.take(account_id, request.state.session_token, created) if created else None
        if shown is None:
            return await self._keys(request, account_id, key_service, model_service, q, secret_gone=created is not None)
        return await self._keys(
            request, account_id, key_service, model_service, q, created=shown["key_id"], secret=shown["secret"]
        )

    @post("/keys")
    async def create_key(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        key_service: NamedDependency[KeyService],
        model_service: NamedDependency[ModelService],
        one_time_views: NamedDependency[OneTimeViews],
    ) -> Response:
        """A key made shows its secret on the page the redirect leads to (a reload makes no second key)."""
        form = await request.form()
        try:
            created = await key_service.create(account_id, form.get("label", ""), **key_settings(form))
        except PAGE_ERRORS as exc:
            return await self._keys(
                request, account_id, key_service, model_service, "", error=failure(exc), form=dict(form)
            )
        view = await one_time_views.put(
            account_id, request.state.session_token, {"key_id": str(created.key.id), "secret": created.secret}
        )
        return Redirect(f"/keys?created={view}", status_code=HTTP_303_SEE_OTHER)

    async def _keys(self, request, account_id, key_service, model_service, q, created=None, **extra) -> Template:
        listing = await key_service.listing(account_id)
        shown = [v for v in listing.keys if q.lower() in v.row.label.lower()] if q else listing.keys
        made = next((v.row for v in listing.keys if str(v.row.key_id) == created), None)
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
            created=made,
            **{"error": None, "form": {}, "secret": None, "secret_gone": False, **extra},
        )

    @get("/keys/{key_id:uuid}")
    async def key(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        key_service: NamedDependency[KeyService],
        model_service: NamedDependency[ModelService],
        one_time_views: NamedDependency[OneTimeViews],
        cursor: FromQuery[str | None] = None,
        rotated: FromQuery[str | None] = None,
        at: FromQuery[str] = "",
    ) -> Template:
        """`cursor`: an older page of the history; `rotated`: the one-time view of the new secret; `at` (the
        form's date and time, UTC): the key's settings as they were then."""
        shown = await one_time_views.take(account_id, request.state.session_token, rotated) if rotated else None
        past = await self._settings_at(account_id, key_id, key_service, at) if at else {}
        return await self._key(
            request,
            account_id,
            key_id,
            key_service,
            model_service,
            cursor=cursor,
            secret=shown["secret"] if shown is not None and shown["key_id"] == str(key_id) else None,
            secret_gone=rotated is not None and shown is None,
            at=at,
            **past,
        )

    async def _settings_at(self, account_id: UUID, key_id: UUID, key_service: KeyService, at: str) -> dict:
        """What the page shows of the key at `at`: its settings then, or why there are none."""
        try:
            moment = instant(at)
            view, _ = await key_service.one(account_id, key_id, at=moment)
        except ValueError:
            return {"at_error": f"“{at[:40]}” is not a date and time; pick one"}
        except PAGE_ERRORS as exc:
            return {"at_error": failure(exc)}
        return {"past": view.row, "moment": moment}

    @post("/keys/{key_id:uuid}")
    async def edit_key(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        key_service: NamedDependency[KeyService],
        model_service: NamedDependency[ModelService],
    ) -> Response:
        form = await request.form()
        try:
            await key_service.update(account_id, key_id, key_settings(form))
        except PAGE_ERRORS as exc:
            return await self._key(
                request, account_id, key_id, key_service, model_service, error=failure(exc), form=dict(form)
            )
        return Redirect(f"/keys/{key_id}", status_code=HTTP_303_SEE_OTHER)

    async def _key(self, request, account_id, key_id, key_service, model_service, cursor=None, **extra) -> Template:
        view, as_of = await key_service.one(account_id, key_id)
        history = await key_service.history(account_id, key_id, cursor=cursor)
        return page(
            "key.html",
            request,
            section="keys",
            key=view,
            by_model=await key_service.usage_by_model(account_id, key_id),
            as_of=as_of,
            history=history.events,
            older=history.next_cursor,
            models=model_service.enabled(),
            error_rate=error_rate,
            share=views.share,
            **{"error": None, "secret": None, "secret_gone": False, "form": None, "at": "", **extra},
        )

    @get("/keys/{key_id:uuid}/{action:str}")
    async def confirm(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        action: FromPath[str],
        key_service: NamedDependency[KeyService],
    ) -> Template:
        if action not in (*KEY_ACTIONS, "rotate"):
            raise ApiError(404, f"no action {action!r} on keys", "not_found")
        view, _ = await key_service.one(account_id, key_id)
        return page("confirm.html", request, section="keys", key=view.row, action=action)

    @post("/keys/{key_id:uuid}/{action:str}")
    async def act(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        key_id: FromPath[UUID],
        action: FromPath[str],
        key_service: NamedDependency[KeyService],
        one_time_views: NamedDependency[OneTimeViews],
    ) -> Response:
        """A rotation shows its new secret on the page the redirect leads to (a reload rotates no more)."""
        if action == "rotate":
            form = await request.form()
            grace = ROTATE_GRACE.get(form.get("grace_seconds", "0"), timedelta(0))
            rotated = await key_service.rotate(account_id, key_id, grace)
            view = await one_time_views.put(
                account_id, request.state.session_token, {"key_id": str(key_id), "secret": rotated.secret}
            )
            return Redirect(f"/keys/{key_id}?rotated={view}", status_code=HTTP_303_SEE_OTHER)
        await key_service.act(account_id, key_id, action)
        return Redirect(f"/keys/{key_id}", status_code=HTTP_303_SEE_OTHER)
