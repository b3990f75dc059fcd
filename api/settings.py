"""Settings from MESH_* environment variables; docs/configuration.md describes each."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import typing
from pathlib import Path
from typing import Annotated, Literal

import msgspec

from api.log_entries import EXPORT_IDLE_SECONDS
from commands.stream import DEFAULT_REPLICAS, MAX_REPLICAS
from api.services.events import HEARTBEAT_SECONDS
from domain.credentials import MAX_KDF_LOG_N, MIN_KDF_LOG_N, PASSWORD_KDF
from domain.quota import DEFAULT_MAX_KEYS, DEFAULT_MAX_TEMPLATE_VERSIONS, DEFAULT_MAX_TEMPLATES
from gateway.freelimit import DEFAULT_FREE_RPM
from gateway.refusals import FLUSH_SECONDS


class Settings(msgspec.Struct, kw_only=True):
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: str = ".mesh"
    nats_url: str | None = None  # None: start the embedded nats-server
    database_url: str | None = None  # None: start the embedded PostgreSQL
    operator_token: str | None = None  # None: generated on first start, kept in the data dir
    config: str | None = None  # mesh.toml
    stream: str = "MESH"
    stripe_secret_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_api_base: str | None = None
    topup_min_usd: str = "5"
    topup_max_usd: str = "10000"
    bank_transfer_seconds: int = 14 * 24 * 3600  # a bank-transfer top-up not confirmed by then expires
    bank_account_details: str = "the bank account shown on your invoice"
    auto_refill_max_failures: int = 3  # failed charges in a row before auto-refill turns itself off
    auto_refill_retry_seconds: float = 60.0  # wait between attempts for one crossing
    background_cpus: str = "auto"  # where the embedded servers and the projection worker run: "auto", "all", "1-3"
    # the embedded PostgreSQL and the projection worker once started: "idle" (only what the gateway leaves) or "normal"
    background_priority: Literal["idle", "normal"] = "idle"
    disconnect_drain_seconds: float = 30.0  # a stream whose client left is read this long more, for its real usage
    # how often a gateway reports the requests it refused, per key: at most one event per key per this
    refusals_flush_seconds: Annotated[float, msgspec.Meta(ge=1, le=3600)] = FLUSH_SECONDS
    lease_ttl_seconds: float = 900.0  # a budget lease's life; a holder renews it while its requests run
    # new password hashes cost scrypt N = 2**this (17: OWASP's 128 MiB); lower only for test servers
    password_kdf_log_n: Annotated[int, msgspec.Meta(ge=MIN_KDF_LOG_N, le=MAX_KDF_LOG_N)] = PASSWORD_KDF.log_n
    session_days: float = 30.0  # a management token unused this long expires; each use extends it
    login_failures_per_email: int = 10  # failed logins (or sign-ups of a taken email) per email and window
    login_failures_per_address: int = 50  # failed logins per client address and window
    signups_per_address: int = 20  # sign-ups per client address and window
    login_window_seconds: float = 900.0  # the window of the three limits above
    free_rpm: int = DEFAULT_FREE_RPM  # requests a minute per account (all its keys) to free models; 0: no limit
    signup: str = "open"  # who may sign up: open, invite (a code from POST /admin/invites) or closed
    quota_keys: int = DEFAULT_MAX_KEYS  # API keys (not revoked) per account
    quota_templates: int = DEFAULT_MAX_TEMPLATES  # prompt templates (not archived) per account
    quota_template_versions: int = DEFAULT_MAX_TEMPLATE_VERSIONS  # versions per template
    stream_max_bytes: int | None = None  # the event log's size limit on JetStream (unset: 10 GiB or what fits)
    # the JetStream servers holding each stream Mesh makes (3 on a 3-node cluster: one node may be lost)
    stream_replicas: Annotated[int, msgspec.Meta(ge=1, le=MAX_REPLICAS)] = DEFAULT_REPLICAS
    payment_attempts_per_account: int = 10  # card payment attempts (top-up start or charge, card attach) per window
    payment_attempts_per_address: int = 30  # the same, per client address
    payment_window_seconds: float = 3600.0  # the window of the two limits above
    pending_topups_per_account: int = 5  # top-ups started and not finished (paid, failed for good, expired)
    log_retention_days: int = 90  # request logs older than this are dropped (whole months); money is not
    log_bodies: str = "off"  # "on": keep prompts and answers too (their own stream, same retention)
    export_idle_seconds: float = EXPORT_IDLE_SECONDS  # a log export whose client reads nothing this long ends
    # an event stream (GET /api/events) quiet this long sends a heartbeat comment
    events_heartbeat_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=300)] = HEARTBEAT_SECONDS
    stripe_publishable_key: str | None = None  # pk_...: the dashboard's card form (Stripe Elements)
    stripe_js_url: str = "https://js.stripe.com/v3/"  # where the dashboard loads stripe.js from (tests: localstripe's)
    # the reverse proxies (addresses or CIDRs, comma-separated) whose X-Forwarded-For/-Proto are believed
    trusted_proxies: str = ""
    metrics_token: str | None = None  # besides the operator token, what may read GET /metrics (a scraper's)
    log_format: Literal["text", "json"] = "text"  # "json": one JSON object per log line, with the trace id
    webhook_allow_private: bool = False  # webhooks may go to loopback and private addresses (and plain http)
    # seconds before a failed webhook delivery's first retry; each retry waits twice the one before
    webhook_retry_base_seconds: Annotated[float, msgspec.Meta(ge=0.1, le=3600)] = 30.0
    webhook_signing_key: str | None = None  # None: generated on first start, kept in the data dir

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None, **overrides) -> "Settings":
        env = os.environ if env is None else env
        values: dict = {}
        for field in cls.__struct_fields__:
            raw = env.get("MESH_" + field.upper())
            if raw:
                values[field] = raw
        values.update({k: str(v) if isinstance(v, Path) else v for k, v in overrides.items() if v is not None})
        try:
            return msgspec.convert(values, cls, strict=False)
        except msgspec.ValidationError as exc:
            raise SettingsError(
                f"bad setting: {exc}{_allowed(cls, str(exc))} (check the MESH_* environment variables)"
            ) from None

    @property
    def bodies_logged(self) -> bool:
        if self.log_bodies not in ("on", "off"):
            raise SettingsError(f"MESH_LOG_BODIES takes on or off; got {self.log_bodies!r}")
        return self.log_bodies == "on"

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    @property
    def config_path(self) -> Path | None:
        return Path(self.config) if self.config else None

    @property
    def trusted_proxy_list(self) -> list[str]:
        """MESH_TRUSTED_PROXIES as a list of addresses and networks, each checked (an entry that is neither is
        refused, rather than trusted as a literal that never matches)."""
        entries = [entry.strip() for entry in self.trusted_proxies.split(",") if entry.strip()]
        for entry in entries:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise SettingsError(
                    f"MESH_TRUSTED_PROXIES takes IP addresses or CIDR networks separated by commas, "
                    f"such as 127.0.0.1,10.0.0.0/8; {entry!r} is neither"
                ) from None
        return entries

    @property
    def operator_token_path(self) -> Path:
        """Where the generated operator token is kept (unused when MESH_OPERATOR_TOKEN is set)."""
        return self.data_path / "operator_token"

    def resolved_operator_token(self) -> str:
        """The operator token: from MESH_OPERATOR_TOKEN, else the one generated on first start."""
        if self.operator_token:
            return self.operator_token
        return kept_secret(self.operator_token_path, prefix="mo-")

    def resolved_webhook_signing_key(self) -> str:
        """The server key each webhook endpoint's signing secret derives from: MESH_WEBHOOK_SIGNING_KEY, else the
        one generated on first start (changing it changes every endpoint's secret)."""
        if self.webhook_signing_key:
            return self.webhook_signing_key
        return kept_secret(self.data_path / "webhook_signing_key")


class SettingsError(ValueError):
    pass


def kept_secret(path: Path, prefix: str = "") -> str:
    """The secret kept in `path`, generated (URL-safe) on first use; the file is readable by its owner only."""
    try:
        path.chmod(0o600)  # also tightens a file an older version wrote
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    secret = prefix + secrets.token_urlsafe(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process wrote it just now
        return path.read_text().strip()
    with os.fdopen(fd, "w") as file:
        file.write(secret)
    return secret


def _allowed(cls: type, error: str) -> str:
    """The values a setting of a few named ones allows (MESH_LOG_FORMAT: text, json), for its error message."""
    field = re.search(r"at `\$\.(\w+)`", error)
    kind = typing.get_type_hints(cls).get(field.group(1)) if field else None
    if typing.get_origin(kind) is not Literal:
        return ""
    return f"; MESH_{field.group(1).upper()} takes {' or '.join(typing.get_args(kind))}"
