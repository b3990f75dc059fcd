"""Admitting a request before its upstream call: the free models' rate, its worst case reserved from the budget
(of the costliest of its model and fallbacks, or fitted to the budget for a key that asks), its key's rate
limits, its prompt template, and the record that bills it."""

from __future__ import annotations

import uuid
from typing import Callable

import msgspec

from domain.usage import Api
from gateway import worst_case
from gateway.admission import KeyInfo
from gateway.base import GatewayBase
from gateway.catalog import Model
from gateway.errors import GatewayError, invalid
from gateway.key_rate import RateUse, limited, token_bound
from gateway.lease_admission import BudgetRefusal
from gateway.leases import FREE, Ticket
from gateway.prompt_templates import TemplateUse
from gateway.request_parsing import ChatRequest
from gateway.request_record import RequestRecord


class Reservation(GatewayBase):
    """A request's admission: what it may cost and how often, reserved before its upstream call."""

    def _record(
        self,
        trace_id: uuid.UUID,
        key: KeyInfo,
        model: Model,
        requested: str | None,
        started: int,
        request_id: str | None,
        stream: bool,
        admitted: "Admitted",
        raw: bytes,
        api: str = Api.CHAT_COMPLETIONS,
    ) -> RequestRecord:
        record = RequestRecord(trace_id, key, model, requested, started, request_id, stream, admitted.ticket, api)
        record.prompt_bound = admitted.prompt_bound
        record.rate = admitted.rate
        record.bounds = admitted.bounds
        if self.bodies is not None:
            record.request_body = raw
        return record

    async def _admit(
        self,
        key: KeyInfo,
        model: Model,
        request: ChatRequest,
        body: dict,
        headers: list,
        bound: Callable[[dict, Model, str], int] = worst_case.prompt_bound,
        limit_field: str | None = None,
        fallbacks: "list[Model] | None" = None,
        strict: bool = False,
    ) -> "Admitted":
        """The free-model rate limit, then the worst case reserved (of the costliest of the model and its
        `fallbacks`), then the key's rate limits; the answer says a limit the key fitted. `limit_field` names the
        completion limit as the client's wire format does, in refusals. A fallback that cannot write the
        completion limit asked is left out, or, `strict` (the client listed it), refused."""
        if model.price.is_free:  # refused before anything is recorded
            self.free_limit.admit(key.account_id, model.id)
        models = [model]
        if fallbacks:
            asked = request.max_completion_tokens or request.max_tokens
            for backup in fallbacks:
                if asked is not None and asked > backup.max_output_tokens:
                    if strict:
                        raise invalid(
                            f"'models': {backup.id!r} writes at most {backup.max_output_tokens} completion tokens, "
                            f"fewer than the {asked} asked",
                            "invalid_request",
                            "models",
                        )
                    continue
                models.append(backup)
        ticket, fitted, bounds = await self._reserve(key, models, request, body, bound, limit_field)
        prompt_bound = bounds[model.id]
        rate = None
        if limited(key):

            def tokens() -> int:  # only counted for a key with a tpm_limit
                kind = self._kind(model)
                prompt = prompt_bound if prompt_bound is not None else bound(body, model, kind)
                asked = fitted or request.max_completion_tokens or request.max_tokens
                return token_bound(prompt, asked, request.n or 1, model)

            rate = await self._admit_rate(key, ticket, headers, tokens)
        if fitted is not None:  # the key fits limits to its budget: the answer says to what
            headers.append((b"x-mesh-max-tokens", str(fitted).encode()))
        return Admitted(ticket, prompt_bound, rate, models, bounds)

    async def _admit_rate(
        self, key: KeyInfo, ticket: Ticket, headers: list, tokens: Callable[[], int]
    ) -> RateUse | None:
        """Count the request against its key's rpm_limit and tpm_limit (its reservation freed when refused); the
        answer carries the x-ratelimit-* headers. Only awaited for a key that has a limit (`limited`)."""
        try:
            rate = await self.key_rates.admit(key, tokens)
        except GatewayError:
            self.budgets.release(ticket, 0)
            raise
        if rate is not None:
            headers.extend(rate.headers())
        return rate

    async def _template(self, key: KeyInfo, body: dict, headers: list) -> TemplateUse | None:
        """Apply the prompt template the body names, if any, in place; the answer says which version ran (a body
        without a template's fields need not be awaited here: prompt_templates.names_template)."""
        if self.templates is None:
            return None
        template = await self.templates.expand(key.account_id, body)
        if template is not None:
            headers.append((b"x-mesh-template", f"{template.template_id}@{template.version}".encode()))
        return template

    async def _reserve(
        self,
        key: KeyInfo,
        models: list[Model],
        request: ChatRequest,
        body: dict,
        bound: Callable[[dict, Model, str], int] = worst_case.prompt_bound,
        limit_field: str | None = None,
    ) -> tuple[Ticket, int | None, dict[str, int | None]]:
        """Reserve the request's worst case: its prompt bound and its completion limit, or the model's
        max_output_tokens when it sets none (and then no limit goes upstream); with fallbacks (`models` after the
        first), the worst case of the costliest of them. When the budget does not cover that, a 402 names the
        completion tokens it does cover; only a key with fit_to_budget, on a request without fallbacks, gets its
        limit set to that instead. Returns the reservation, the limit the gateway set, if it set one, and each
        model's prompt bound (None for a free model)."""
        field = limit_field or ("max_completion_tokens" if request.max_completion_tokens is not None else "max_tokens")
        asked = request.max_completion_tokens or request.max_tokens
        model = models[0]
        if asked is not None and asked > model.max_output_tokens:
            raise invalid(
                f"'{field}' is {asked}; model {model.id!r} writes at most {model.max_output_tokens} "
                f"completion tokens: send {field} <= {model.max_output_tokens}",
                "invalid_request",
                field,
            )
        choices = request.n or 1
        bounds: dict[str, int | None] = {}
        worst = 0
        for candidate in models:
            if candidate.price.is_free:
                bounds[candidate.id] = None
                continue
            candidate_bound = bounds[candidate.id] = bound(body, candidate, self._kind(candidate))
            candidate_worst = candidate.price.worst_cost(
                candidate_bound, (asked or candidate.max_output_tokens) * choices
            )
            if candidate_worst > worst:
                worst, model = candidate_worst, candidate
        if not worst:
            return FREE, None, bounds
        price = model.price
        prompt_bound = bounds[model.id] or 0
        completion = asked or model.max_output_tokens

        def unaffordable(refusal: BudgetRefusal) -> tuple[GatewayError, int | None]:
            affordable = worst_case.affordable(refusal.available, price, prompt_bound, choices, completion)
            if affordable is None or refusal.available is None:  # not about money (say, a key revoked meanwhile)
                return refusal, None
            others = worst_case.elsewhere(
                refusal.available, body, self._other_models(key, model), choices, asked, bound
            )
            error = worst_case.unaffordable(
                refusal, worst, prompt_bound, completion, choices, affordable, others, limit_field or "max_tokens"
            )
            return error, affordable

        try:
            return await self.budgets.reserve(key, minimum=worst, wanted=worst), None, bounds
        except BudgetRefusal as refusal:
            error, affordable = unaffordable(refusal)
            if not key.fit_to_budget or not affordable or len(models) > 1:
                raise error from None
        fitted = price.worst_cost(prompt_bound, affordable * choices)
        try:
            ticket = await self.budgets.reserve(key, minimum=fitted, wanted=fitted)
        except BudgetRefusal as refusal:  # spent by others meanwhile: what is left now, said the same way
            raise unaffordable(refusal)[0] from None
        for name in ("max_tokens", "max_completion_tokens"):
            if getattr(request, name) is not None:
                body[name] = affordable
        if asked is None:
            body["max_tokens"] = affordable
        return ticket, affordable, bounds


class Admitted(msgspec.Struct):
    ticket: Ticket
    prompt_bound: int | None  # the prompt tokens reserved (None: a free model)
    rate: RateUse | None  # what the request counts against its key's rate limits (None: the key has none)
    models: list[Model]  # the model, then the fallbacks it may be served by (gateway/fallbacks.py)
    bounds: dict[str, int | None]  # each model's prompt bound (None: free)
