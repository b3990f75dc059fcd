"""The dashboard's pages, a controller per section, and its settings.

Each page parses the form or query, calls a service and renders a template; no rules live in a page."""

from __future__ import annotations

from api.dashboard.auth_pages import AuthPages
from api.dashboard.billing_pages import BillingPages
from api.dashboard.key_pages import KeyPages
from api.dashboard.webhook_pages import WebhookPages
from api.dashboard.log_pages import LogPages
from api.dashboard.model_pages import ModelPages
from api.dashboard.operator_pages import OperatorPages
from api.dashboard.prompt_pages import PromptPages
from api.dashboard.rendering import STATIC, dashboard_templates
from api.dashboard.settings import DashboardConfig

PAGES = [AuthPages, KeyPages, BillingPages, LogPages, ModelPages, PromptPages, WebhookPages, OperatorPages]
__all__ = ["PAGES", "STATIC", "DashboardConfig", "dashboard_templates"]
