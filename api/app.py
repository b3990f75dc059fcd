"""The HTTP surface: Litestar for /api, /admin and /health; the gateway's own ASGI app for /v1."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from litestar import Litestar, Request, Response
from litestar.config.csrf import CSRFConfig
from litestar.di import Provide
from litestar.exceptions import NotFoundException
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig

from api.composition import SERVICE_DEPENDENCIES
from api.dashboard.pages import PAGES, STATIC, DashboardConfig, dashboard_templates
from api.dashboard.rendering import not_found
from api.dashboard.session import CSRF_COOKIE
from api.docs import DOCS_PATH, docs_asset, openapi_config
from api.errors import EXCEPTION_HANDLERS, MeshRequest
from api.openapi import openapi_document
from api.strict_input import check_strict_input
from api.routes.accounts import AccountController
from api.routes.admin_accounts import AdminAccountController
from api.routes.admin_audit import AdminAuditController
from api.routes.admin_models import AdminModelController
from api.routes.admin_topups import AdminTopUpController
from api.routes.billing import BillingController
from api.routes.events import account_events, admin_events
from api.routes.health import health
from api.routes.keys import KeyController
from api.routes.logs import AdminLogController, LogController
from api.routes.metrics import metrics
from api.routes.models import ModelController
from api.routes.prompt_templates import TemplateController
from api.routes.topups import AutoRefillController, TopUpController, stripe_webhook
from api.routes.webhooks import WebhookController
from api.runtime import Runtime
from api.security_headers import with_security_headers


def create_litestar(runtime: Runtime, dashboard: DashboardConfig | None = None) -> Litestar:
    config = dashboard or DashboardConfig()
    app = Litestar(
        route_handlers=[
            *PAGES,
            create_static_files_router("/static", [STATIC]),
            AccountController,
            KeyController,
            BillingController,
            TopUpController,
            AutoRefillController,
            ModelController,
            TemplateController,
            WebhookController,
            LogController,
            AdminLogController,
            AdminAccountController,
            AdminTopUpController,
            AdminAuditController,
            AdminModelController,
            account_events,
            admin_events,
            stripe_webhook,
            health,
            metrics,
            docs_asset,
        ],
        openapi_config=openapi_config(),
        exception_handlers={**EXCEPTION_HANDLERS, NotFoundException: not_found},
        request_class=MeshRequest,
        before_request=before_request,
        dependencies={
            **SERVICE_DEPENDENCIES,
            "dashboard": Provide(lambda: config, use_cache=True, sync_to_thread=False),
        },
        template_config=TemplateConfig(instance=dashboard_templates()),
        csrf_config=CSRFConfig(
            secret=_csrf_secret(runtime),
            cookie_name=CSRF_COOKIE,
            cookie_httponly=True,
            exclude=["^/api/", "^/admin/", "^/health", "^/static/"],
        ),
        logging_config=None,  # `mesh` configures logging once, for every part
    )
    _allow_every_method(app)
    app.state.runtime = runtime
    return app


def _allow_every_method(app: Litestar) -> None:
    """OPTIONS answers `Allow` from its own route's methods, and Litestar keeps handlers of one path declared apart
    (e.g. GET and POST /api/keys) as routes apart: the app's OPTIONS answers list every method of the path."""
    methods: dict[str, set[str]] = {}
    for route in app.routes:
        for path in (route.path, route.path_format):  # the routing's path template is either, by Litestar version
            methods.setdefault(path, set()).update(route.methods)
    app.state.allowed_methods = methods


async def before_request(request: Request) -> Response | None:
    if request.method == "OPTIONS":
        allowed = request.app.state.allowed_methods.get(request.scope["path_template"], {"OPTIONS"})
        return Response(None, status_code=204, headers={"Allow": ", ".join(sorted(allowed))})
    if request.scope["path"].startswith(DOCS_PATH):
        openapi_document(request.app)  # completed before the docs routes serve it
    await check_strict_input(request)
    return None


def _csrf_secret(runtime: Runtime | None) -> str:
    """The CSRF tokens' HMAC key: derived from the operator token, so every process of one Mesh agrees and a
    restart keeps open forms valid (a random one when there is no runtime, e.g. to list the routes)."""
    if runtime is None:
        return secrets.token_urlsafe(32)
    return hmac.new(runtime.operator_token.encode(), b"mesh dashboard csrf", hashlib.sha256).hexdigest()


class MeshASGI:
    """Routes /v1/* to the gateway and everything else to Litestar (with the security headers of
    api/security_headers.py); runs the runtime in the lifespan."""

    def __init__(self, runtime: Runtime, dashboard: DashboardConfig | None = None):
        self.runtime = runtime
        self.litestar = create_litestar(runtime, dashboard)

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/"):
            await self.runtime.gateway(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self.litestar(scope, receive, with_security_headers(scope, send))
        else:
            await self.litestar(scope, receive, send)

    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.runtime.start()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.runtime.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return
