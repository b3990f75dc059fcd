"""Account webhooks: the endpoints an account registers, and the pure rules of delivering to them.

An account's endpoints live in one aggregate per account (`Webhooks`, id derived from the account), so the
bound on how many it holds is checked atomically. No secret is ever in an event: each endpoint's signing
secret is derived from a server key (`endpoint_secret`), kept out of the log, and the endpoint id.

Deliveries are signed as Stripe signs its own: header `Mesh-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of
"<t>.<body>" keyed with the secret>`.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from datetime import timedelta
from urllib.parse import urlsplit
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, event

from domain.bounds import MAX_LABEL_LENGTH, check_text
from domain.money import MAX_AMOUNT

# What an endpoint may subscribe to (the `type` of a delivery's payload).
WEBHOOK_EVENTS = ("balance.low", "key.cap_reached", "topup.succeeded", "topup.failed", "auto_refill.failed")
MAX_ENDPOINTS = 10  # endpoints per account
MAX_URL_LENGTH = 2048
SECRET_PREFIX = "whsec_"
SIGNATURE_HEADER = "Mesh-Signature"
RETRY_WINDOW = timedelta(hours=24)  # a delivery not accepted within this after it was queued is marked failed
MAX_RETRY_DELAY = 3600.0  # seconds: the back-off doubles up to this
SIGNATURE_TOLERANCE = 300  # seconds a receiver should accept between `t` and its clock (verify_signature)


class InvalidWebhook(ValueError):
    """An endpoint's settings break a rule; `param` names the field."""

    def __init__(self, message: str, param: str = "url"):
        super().__init__(message)
        self.param = param


class InvalidDescription(InvalidWebhook):
    def __init__(self, message: str):
        super().__init__(message, "description")


class WebhookNotFound(LookupError):
    pass


def check_url(url: str, allow_private: bool) -> str:
    """The URL's syntax: https (http only where private addresses are allowed), a host, no user or password in
    it (it is stored in events), at most MAX_URL_LENGTH characters. A host written as an address must be a
    public one unless `allow_private`; a name is resolved and checked by the caller (and again at delivery)."""
    check_text(url, "url", MAX_URL_LENGTH, error=InvalidWebhook)
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise InvalidWebhook(f"url must start with {' or '.join(s + '://' for s in schemes)}; got {url[:60]!r}", "url")
    if not parts.hostname:
        raise InvalidWebhook("url must name a host, such as https://example.com/hooks", "url")
    if parts.username is not None or parts.password is not None:
        raise InvalidWebhook("url must not hold a user name or password", "url")
    if parts.fragment:
        raise InvalidWebhook("url must not have a #fragment", "url")
    try:
        _ = parts.port  # raises for a port that is not a number
    except ValueError:
        raise InvalidWebhook("url has a port that is not a number from 0 to 65535", "url") from None
    if not allow_private:
        if parts.hostname.lower() == "localhost" or parts.hostname.lower().endswith(".localhost"):
            raise InvalidWebhook(private_refusal(parts.hostname, "loopback"), "url")
        try:
            address = ipaddress.ip_address(parts.hostname)
        except ValueError:
            return url
        reason = refused_address(address)
        if reason:
            raise InvalidWebhook(private_refusal(parts.hostname, reason), "url")
    return url


def private_refusal(host: str, reason: str) -> str:
    return (
        f"url's host {host} is a {reason} address; webhooks go to public addresses only "
        "(the operator allows private ones with MESH_WEBHOOK_ALLOW_PRIVATE=true)"
    )


def refused_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why a webhook may not go to `address` without MESH_WEBHOOK_ALLOW_PRIVATE (None: it may)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for reason, refused in (
        ("loopback", address.is_loopback),
        ("link-local", address.is_link_local),
        ("multicast", address.is_multicast),
        ("unspecified", address.is_unspecified),
        ("private", address.is_private),
        ("reserved", address.is_reserved),
        ("non-public", not address.is_global),
    ):
        if refused:
            return reason
    return None


def check_events(events: list[str]) -> list[str]:
    if not events:
        raise InvalidWebhook(f"events must name at least one of {', '.join(WEBHOOK_EVENTS)}", "events")
    for name in events:
        if name not in WEBHOOK_EVENTS:
            raise InvalidWebhook(f"events takes names from {', '.join(WEBHOOK_EVENTS)}; got {name[:60]!r}", "events")
    if len(set(events)) != len(events):
        raise InvalidWebhook("events names an event twice", "events")
    return list(events)


def check_threshold(events: list[str], threshold: int | None) -> int | None:
    """balance.low needs a threshold (pico-USD, above 0); no other event takes one."""
    if "balance.low" in events:
        if threshold is None:
            raise InvalidWebhook("balance.low needs balance_low_threshold_usd, the balance it fires below", "events")
        if not 0 < threshold <= MAX_AMOUNT:
            raise InvalidWebhook(
                "balance_low_threshold_usd must be above 0 and at most 1000000 USD", "balance_low_threshold_usd"
            )
        return threshold
    if threshold is not None:
        raise InvalidWebhook(
            "balance_low_threshold_usd is only for an endpoint subscribed to balance.low", "balance_low_threshold_usd"
        )
    return None


class Webhooks(Aggregate):
    """The webhook endpoints of one account."""

    class Opened(Aggregate.Created):
        account_id: UUID

    class EndpointAdded(Aggregate.Event):
        account_id: UUID
        endpoint_id: UUID
        url: str
        events: list[str]
        balance_low_threshold: int | None  # pico-USD; only with balance.low
        description: str = ""

    class EndpointUpdated(Aggregate.Event):
        """The endpoint's settings as they are after the change (all of them)."""

        endpoint_id: UUID
        url: str
        events: list[str]
        balance_low_threshold: int | None
        description: str = ""

    class EndpointRemoved(Aggregate.Event):
        endpoint_id: UUID

    @staticmethod
    def create_id(account_id: UUID) -> UUID:
        return uuid5(NAMESPACE_URL, f"mesh:webhooks:{account_id}")

    @event(Opened)
    def __init__(self, account_id: UUID):
        self.account_id = account_id
        self.endpoints: dict[UUID, Endpoint] = {}

    def add(
        self,
        endpoint_id: UUID,
        url: str,
        events: list[str],
        threshold: int | None,
        description: str,
        allow_private: bool,
        limit: int = MAX_ENDPOINTS,
    ) -> None:
        if len(self.endpoints) >= limit:
            raise InvalidWebhook(
                f"this account has {len(self.endpoints)} webhook endpoints, the most it may have ({limit}); "
                "remove one first",
                "url",
            )
        check_url(url, allow_private)
        check_events(events)
        check_threshold(events, threshold)
        check_text(description, "description", MAX_LABEL_LENGTH, error=InvalidDescription)
        self._add(self.account_id, endpoint_id, url, events, threshold, description)

    @event(EndpointAdded)
    def _add(
        self,
        account_id: UUID,
        endpoint_id: UUID,
        url: str,
        events: list[str],
        balance_low_threshold: int | None,
        description: str,
    ) -> None:
        self.endpoints[endpoint_id] = Endpoint(url, list(events), balance_low_threshold, description)

    def endpoint(self, endpoint_id: UUID) -> Endpoint:
        try:
            return self.endpoints[endpoint_id]
        except KeyError:
            raise WebhookNotFound(f"no webhook endpoint {endpoint_id} in this account") from None

    def update(
        self,
        endpoint_id: UUID,
        url: str,
        events: list[str],
        threshold: int | None,
        description: str,
        allow_private: bool,
    ) -> None:
        current = self.endpoint(endpoint_id)
        check_url(url, allow_private)
        check_events(events)
        check_threshold(events, threshold)
        check_text(description, "description", MAX_LABEL_LENGTH, error=InvalidDescription)
        if current != Endpoint(url, list(events), threshold, description):
            self._update(endpoint_id, url, events, threshold, description)

    @event(EndpointUpdated)
    def _update(
        self, endpoint_id: UUID, url: str, events: list[str], balance_low_threshold: int | None, description: str
    ) -> None:
        self.endpoints[endpoint_id] = Endpoint(url, list(events), balance_low_threshold, description)

    def remove(self, endpoint_id: UUID) -> None:
        self.endpoint(endpoint_id)
        self._remove(endpoint_id)

    @event(EndpointRemoved)
    def _remove(self, endpoint_id: UUID) -> None:
        del self.endpoints[endpoint_id]


class Endpoint:
    """One endpoint's settings (compared whole: an update that changes nothing records nothing)."""

    __slots__ = ("url", "events", "threshold", "description")

    def __init__(self, url: str, events: list[str], threshold: int | None, description: str):
        self.url, self.events, self.threshold, self.description = url, events, threshold, description

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Endpoint) and (self.url, self.events, self.threshold, self.description) == (
            other.url,
            other.events,
            other.threshold,
            other.description,
        )

    __hash__ = None  # type: ignore[assignment]


def endpoint_secret(server_key: str, endpoint_id: UUID) -> str:
    """The endpoint's signing secret: derived, never stored (the server key is kept out of the event log)."""
    digest = hmac.new(server_key.encode(), f"mesh:webhook:{endpoint_id}".encode(), hashlib.sha256).hexdigest()
    return SECRET_PREFIX + digest


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The `Mesh-Signature` header's value for `body` sent at `timestamp` (unix seconds)."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify_signature(secret: str, header: str, body: bytes, now: int, tolerance: int = SIGNATURE_TOLERANCE) -> bool:
    """What a receiver checks: a `v1` HMAC of `t.body` made with the secret, and `t` within `tolerance` of now."""
    fields = [part.split("=", 1) for part in header.split(",") if "=" in part]
    stamps = [value for name, value in fields if name == "t"]
    macs = [value for name, value in fields if name == "v1"]
    if len(stamps) != 1 or not stamps[0].isdigit() or abs(now - int(stamps[0])) > tolerance:
        return False
    expected = signature(secret, int(stamps[0]), body).split("v1=", 1)[1]
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def retry_delay(attempts: int, base: float) -> float:
    """Seconds to wait after the `attempts`-th failed attempt: base, doubling each time, at most MAX_RETRY_DELAY."""
    return float(min(base * 2 ** max(attempts - 1, 0), MAX_RETRY_DELAY))


def balance_watch(armed: bool, balance: int, threshold: int) -> tuple[bool, bool]:
    """(notify, armed after): balance.low fires once per crossing below the threshold, and is armed again once
    the balance is back at or above it."""
    if armed and balance < threshold:
        return True, False
    if not armed and balance >= threshold:
        return False, True
    return False, armed
