"""What the `Runtime` of `mesh up` is given, from the settings (each refused with a MeshError naming the setting
when it is out of bounds)."""

from __future__ import annotations

from datetime import timedelta

from api.servers import MeshError, Servers
from api.settings import Settings


def load_catalog(settings: Settings):
    from api.config import ConfigError
    from api.config import load_catalog as load

    try:
        return load(settings.config_path)
    except ConfigError as exc:
        raise MeshError(str(exc)) from None


def payments(settings: Settings) -> dict:
    from api.payments import BankTransfer

    providers: dict = {
        "bank_transfer": BankTransfer(timedelta(seconds=settings.bank_transfer_seconds), settings.bank_account_details)
    }
    if settings.stripe_secret_key:
        from api.stripe_payments import StripePayments  # the Stripe SDK only where cards are taken

        providers[StripePayments.name] = StripePayments(
            settings.stripe_secret_key, settings.stripe_webhook_secret, settings.stripe_api_base
        )
    return providers


def topup_limits(settings: Settings) -> tuple[int, int]:
    from domain.money import InvalidAmount, usd_to_pico

    try:
        low = usd_to_pico(settings.topup_min_usd, field="MESH_TOPUP_MIN_USD")
        high = usd_to_pico(settings.topup_max_usd, field="MESH_TOPUP_MAX_USD")
    except InvalidAmount as exc:
        raise MeshError(str(exc)) from None
    if not 0 < low <= high:
        raise MeshError("MESH_TOPUP_MIN_USD must be above 0 and at most MESH_TOPUP_MAX_USD")
    return low, high


def accounts(settings: Settings) -> dict:
    """Session length, login limits and the password KDF's cost for the Runtime."""
    from api.logins import LoginGuard
    from domain.credentials import password_kdf

    if not settings.session_days > 0:
        raise MeshError("MESH_SESSION_DAYS must be above 0")
    try:
        logins = LoginGuard(
            settings.login_failures_per_email,
            settings.login_failures_per_address,
            settings.signups_per_address,
            settings.login_window_seconds,
        )
    except ValueError as exc:
        raise MeshError(f"MESH_LOGIN_*/MESH_SIGNUPS_PER_ADDRESS: {exc}") from None
    return {
        "session": timedelta(days=settings.session_days),
        "logins": logins,
        "password_kdf": password_kdf(settings.password_kdf_log_n),
    }


def limits(settings: Settings) -> dict:
    """Sign-up mode, quotas, the log's size limit and the payment attempt limits for the Runtime."""
    import msgspec

    from api.payments import PaymentGuard
    from domain.invite import check_signup_mode
    from domain.quota import Quotas

    try:
        signup = check_signup_mode(settings.signup)
        quotas = Quotas(settings.quota_keys, settings.quota_templates, settings.quota_template_versions)
        if min(msgspec.structs.astuple(quotas)) < 1:
            raise ValueError("MESH_QUOTA_* must be at least 1")
        if settings.stream_max_bytes is not None and settings.stream_max_bytes < 1024**2:
            raise ValueError("MESH_STREAM_MAX_BYTES must be at least 1 MiB")
        if settings.pending_topups_per_account < 1:
            raise ValueError("MESH_PENDING_TOPUPS_PER_ACCOUNT must be at least 1")
        payments = PaymentGuard(
            settings.payment_attempts_per_account,
            settings.payment_attempts_per_address,
            settings.payment_window_seconds,
            settings.pending_topups_per_account,
        )
    except ValueError as exc:
        raise MeshError(str(exc)) from None
    return {
        "signup": signup,
        "quotas": quotas,
        "stream_max_bytes": settings.stream_max_bytes,
        "stream_replicas": settings.stream_replicas,
        "payment_guard": payments,
    }


def dashboard_config(settings: Settings):
    from api.dashboard.pages import DashboardConfig

    return DashboardConfig(settings.stripe_js_url, settings.stripe_publishable_key)


def webhook_options(settings: Settings):
    from api.webhook_delivery import WebhookOptions

    return WebhookOptions(
        settings.resolved_webhook_signing_key(),
        settings.webhook_allow_private,
        settings.webhook_retry_base_seconds,
    )


def runtime_for(
    settings: Settings, servers: Servers, catalog, operator_token: str, run_projections: bool, tracer_provider=None
):
    """The Runtime of `mesh up` on these servers (its projections in a child process; traces exported through
    `tracer_provider` when it is given: api/telemetry.py)."""
    from api.runtime import Runtime

    return Runtime(
        nats_url=servers.nats_url,
        database_url=servers.database_url,
        catalog=catalog,
        operator_token=operator_token,
        stream=settings.stream,
        run_projections=run_projections,
        spool_dir=settings.data_path / "spool",
        payments=payments(settings),
        topup_limits=topup_limits(settings),
        auto_refill=(settings.auto_refill_max_failures, settings.auto_refill_retry_seconds),
        projection_process=True,
        background_postgres=servers.postgres_pid,
        background_cpus=servers.background_cpus,
        background_idle=settings.background_priority == "idle",
        children=servers.children,
        log_retention_days=settings.log_retention_days,
        log_bodies=settings.bodies_logged,
        **accounts(settings),
        lease_ttl=timedelta(seconds=settings.lease_ttl_seconds),
        disconnect_drain_seconds=settings.disconnect_drain_seconds,
        refusals_flush_seconds=settings.refusals_flush_seconds,
        free_rpm=settings.free_rpm,
        export_idle_seconds=settings.export_idle_seconds,
        events_heartbeat_seconds=settings.events_heartbeat_seconds,
        metrics_token=settings.metrics_token,
        **limits(settings),
        tracer_provider=tracer_provider,
        webhooks=webhook_options(settings),
    )
