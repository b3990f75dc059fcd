"""Templates (prompt templates): the list, the editor with its versions and diffs, and trying one out."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import msgspec

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.dashboard import views
from api.dashboard.rendering import PAGE_ERRORS, SessionPages, failure, page
from api.errors import ApiError
from api.services.models import ModelService
from api.services.one_time_views import OneTimeViews, TooLarge
from api.services.template_trial import TemplateTrial
from api.services.prompt_templates import TemplateContent, TemplateService, variables

ROLES = ("system", "user", "assistant")


class PromptPages(SessionPages):
    @get("/templates")
    async def templates(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_service: NamedDependency[TemplateService],
    ) -> Template:
        listing, as_of = await template_service.listing(account_id)
        return page("templates.html", request, section="templates", templates=listing, as_of=as_of)

    @get("/templates/new")
    async def new_template(
        self, request: Request, account_id: NamedDependency[UUID], model_service: NamedDependency[ModelService]
    ) -> Template:
        return self._editor(request, model_service, None, {"name": "", "messages": [], "defaults": {}})

    @post("/templates")
    async def create_template(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_service: NamedDependency[TemplateService],
        model_service: NamedDependency[ModelService],
    ) -> Response:
        content = _template_form(await request.form())
        try:
            template = await template_service.create(account_id, content)
        except PAGE_ERRORS as exc:
            return self._editor(request, model_service, None, _shown(content), error=failure(exc))
        return Redirect(f"/templates/{template.id}", status_code=HTTP_303_SEE_OTHER)

    @get("/templates/{template_id:uuid}")
    async def template(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        template_service: NamedDependency[TemplateService],
        model_service: NamedDependency[ModelService],
        one_time_views: NamedDependency[OneTimeViews],
        diff: FromQuery[int | None] = None,
        tested: FromQuery[str | None] = None,
    ) -> Template:
        """`diff`: a version to compare with; `tested`: the one-time view of a Test sent without JavaScript."""
        test = await one_time_views.take(account_id, request.state.session_token, tested) if tested else None
        return await self._template(
            request, account_id, template_id, template_service, model_service, diff, **({"test": test} if test else {})
        )

    @post("/templates/{template_id:uuid}")
    async def save_template(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        template_service: NamedDependency[TemplateService],
        model_service: NamedDependency[ModelService],
    ) -> Response:
        content = _template_form(await request.form())
        try:
            await template_service.save(account_id, template_id, content)
        except PAGE_ERRORS as exc:
            return await self._template(
                request, account_id, template_id, template_service, model_service, None, error=failure(exc)
            )
        return Redirect(f"/templates/{template_id}", status_code=HTTP_303_SEE_OTHER)

    @post("/templates/{template_id:uuid}/test")
    async def test_template(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        template_service: NamedDependency[TemplateService],
        template_trial: NamedDependency[TemplateTrial],
        model_service: NamedDependency[ModelService],
        one_time_views: NamedDependency[OneTimeViews],
    ) -> Response:
        """Render with the values given, then call the model through /v1 with the key given. htmx swaps the
        result in; without JavaScript the template's page shows it once, after a redirect (a reload calls no
        model again)."""
        form = await request.form()
        view = await template_service.one(account_id, template_id)
        values = {name: form.get(f"var_{name}", "") for name in variables(view.version.messages)}
        test = {"rendered": None, "result": None, "error": None, "values": values}
        try:
            test["rendered"] = await template_service.render(account_id, template_id, values)
        except PAGE_ERRORS as exc:
            test["error"] = failure(exc)
        else:
            result = await template_trial.run(
                account_id,
                form.get("key", "").strip(),
                f"{view.row.name}@{view.version.version}",
                form.get("model") or None,
                values,
            )
            test.update(result=result, error=result.error)
        if request.headers.get("hx-request"):
            return page("_test.html", request, **test)
        try:
            shown = await one_time_views.put(account_id, request.state.session_token, msgspec.to_builtins(test))
        except TooLarge:  # an answer too long to keep: shown on this answer itself
            return await self._template(
                request, account_id, template_id, template_service, model_service, None, test=test
            )
        return Redirect(f"/templates/{template_id}?tested={shown}", status_code=HTTP_303_SEE_OTHER)

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
