"""The dashboard's own settings, handed to its pages as the `dashboard` dependency."""

from __future__ import annotations

import msgspec


class DashboardConfig(msgspec.Struct, frozen=True):
    stripe_js_url: str = "https://js.stripe.com/v3/"  # MESH_STRIPE_JS_URL
    stripe_publishable_key: str | None = None  # MESH_STRIPE_PUBLISHABLE_KEY: no card form without it
