"""Templates (prompt templates): the list, the editor with its versions, labels and diffs, and trying one out."""

from __future__ import annotations

import re
from uuid import UUID

import msgspec

from litestar import Request, Response, get, post
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER

from api.dashboard import template_form, views
from api.dashboard.rendering import PAGE_ERRORS, SessionPages, failure, page
from api.dashboard.template_form import Editor
from api.errors import ApiError
from api.services.models import ModelService
from api.services.one_time_views import OneTimeViews, TooLarge
from api.services.template_trial import TemplateTrial
from api.services.prompt_templates import TemplateService, variables
from domain.template_content import (
    LABEL_RULE,
    MAX_DESCRIPTION_LENGTH,
    MAX_LABEL_CHARS,
    MAX_MESSAGES,
    MAX_NAME_LENGTH,
    ROLES,
)

# the bounds the editor's inputs state (the domain checks them again)
LIMITS = {
    "name": MAX_NAME_LENGTH,
    "description": MAX_DESCRIPTION_LENGTH,
    "messages": MAX_MESSAGES,
    "label": MAX_LABEL_CHARS,
}


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
        return self._editor(request, model_service, None, template_form.blank())

    @post("/templates")
    async def create_template(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_service: NamedDependency[TemplateService],
        model_service: NamedDependency[ModelService],
    ) -> Response:
        """Creates the template; a message button (add, remove, move) answers with the editor changed, unsaved."""
        form = await request.form()
        editor = template_form.blank()
        try:
            editor = template_form.read(form)
            if form.get("action"):
                editor = template_form.apply(editor, form.get("action"))
                return self._editor(request, model_service, None, editor, edited=True)
            template = await template_service.create(account_id, template_form.content(editor))
        except PAGE_ERRORS as exc:
            return self._editor(request, model_service, None, editor, error=failure(exc))
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
        """Saves a new version; a message button (add, remove, move) answers with the editor changed, unsaved."""
        form = await request.form()
        editor = None
        args = (request, account_id, template_id, template_service, model_service, None)
        try:
            editor = template_form.read(form)
            if form.get("action"):
                editor = template_form.apply(editor, form.get("action"))
                return await self._template(*args, editor=editor, edited=True)
            await template_service.save(account_id, template_id, template_form.content(editor))
        except PAGE_ERRORS as exc:
            return await self._template(*args, editor=editor, error=failure(exc))
        return Redirect(f"/templates/{template_id}", status_code=HTTP_303_SEE_OTHER)

    @post("/templates/{template_id:uuid}/labels")
    async def set_label(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        template_service: NamedDependency[TemplateService],
        model_service: NamedDependency[ModelService],
    ) -> Response:
        """Points a label at a version: a new label, or one moved from the version it was on."""
        form = await request.form()
        label, version = form.get("label", "").strip(), form.get("version", "").strip()
        try:
            await template_service.command("label", account_id, template_id, label, _version_number(version))
        except PAGE_ERRORS as exc:
            return await self._template(
                request,
                account_id,
                template_id,
                template_service,
                model_service,
                None,
                label_error=failure(exc),
                label_form={"label": label[: 2 * MAX_LABEL_CHARS], "version": version},
            )
        return Redirect(f"/templates/{template_id}#labels", status_code=HTTP_303_SEE_OTHER)

    @post("/templates/{template_id:uuid}/labels/remove")
    async def remove_label(
        self,
        request: Request,
        account_id: NamedDependency[UUID],
        template_id: FromPath[UUID],
        template_service: NamedDependency[TemplateService],
        model_service: NamedDependency[ModelService],
    ) -> Response:
        form = await request.form()
        try:
            await template_service.command("unlabel", account_id, template_id, form.get("label", ""))
        except PAGE_ERRORS as exc:
            return await self._template(
                request, account_id, template_id, template_service, model_service, None, label_error=failure(exc)
            )
        return Redirect(f"/templates/{template_id}#labels", status_code=HTTP_303_SEE_OTHER)

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
        model again). A blank variable is said, and nothing is sent (dashboard.js says it before asking)."""
        form = await request.form()
        view = await template_service.one(account_id, template_id)
        values = {name: form.get(f"var_{name}", "") for name in variables(view.version.messages)}
        test = {"rendered": None, "result": None, "error": None, "values": values}
        try:
            if blank := [name for name, value in values.items() if not value.strip()]:
                raise ApiError(400, template_form.blank_variables(blank), "invalid_request")
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
        self, request, account_id, template_id, template_service, model_service, diff, editor=None, **extra
    ) -> Template:
        """The template's page; `editor`: the form as posted (unsaved), instead of the newest version."""
        row, versions, as_of = await template_service.versions(account_id, template_id)
        latest = versions[-1]
        shown = editor or template_form.of_version(row.name, latest)
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
    def _editor(request, model_service, row, shown: Editor, **extra) -> Template:
        return page(
            "template.html",
            request,
            section="templates",
            row=row,
            shown=shown,
            roles=ROLES,
            models=model_service.enabled(),
            limits=LIMITS,
            label_rule=LABEL_RULE,
            **{
                "error": None,
                "edited": False,
                "label_error": None,
                "label_form": None,
                "versions": [],
                "diff": None,
                "changes": None,
                "needs": [],
                "as_of": None,
                "test": None,
                **extra,
            },
        )


def _text(version) -> str:
    """A version as lines to compare: its description, its messages, then its defaults."""
    lines = [f"description: {line}" for line in (version.description or "").splitlines()]
    for m in version.messages:
        lines.append(f"[{m['role']}]")
        lines.extend(m["content"].splitlines() or [""])
    lines.extend(f"{k} = {v}" for k, v in sorted(version.defaults.items()))
    return "\n".join(lines)


def _version_number(raw: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", raw):
        raise ApiError(
            400, f"Version must be one of the template's version numbers; got {raw[:20]!r}", "invalid_request"
        )
    return int(raw)
