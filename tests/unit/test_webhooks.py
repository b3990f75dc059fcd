"""The rules of account webhooks: endpoint settings and URLs, signatures, the retry schedule, balance crossings."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import uuid

import pytest

from domain.webhook import (
    MAX_ENDPOINTS,
    MAX_RETRY_DELAY,
    InvalidWebhook,
    Webhooks,
    WebhookNotFound,
    balance_watch,
    check_url,
    endpoint_secret,
    refused_address,
    retry_delay,
    signature,
    verify_signature,
)

USD = 10**12


@pytest.mark.parametrize(
    "url, reason",
    [
        ("https://127.0.0.1/hook", "loopback"),
        ("https://[::1]/hook", "loopback"),
        ("https://10.0.0.8/hook", "private"),
        ("https://192.168.1.1/hook", "private"),
        ("https://169.254.169.254/latest/meta-data", "link-local"),
        ("https://[::ffff:127.0.0.1]/hook", "loopback"),
        ("https://224.0.0.1/hook", "multicast"),
        ("https://0.0.0.0/hook", "unspecified"),
        ("https://100.64.0.1/hook", "non-public"),
        ("https://localhost:8443/hook", "loopback"),
    ],
)
def test_a_private_host_is_refused_unless_allowed(url, reason):
    with pytest.raises(InvalidWebhook, match=reason) as refused:
        check_url(url, allow_private=False)
    assert refused.value.param == "url" and "MESH_WEBHOOK_ALLOW_PRIVATE" in str(refused.value)
    assert check_url(url, allow_private=True) == url


@pytest.mark.parametrize(
    "url, rule",
    [
        ("http://example.com/hook", "https://"),
        ("ftp://example.com/hook", "https://"),
        ("https:///hook", "host"),
        ("https://user:pw@example.com/hook", "user name or password"),
        ("https://example.com/hook#x", "fragment"),
        ("https://example.com:99999/hook", "port"),
        ("https://example.com/\nhook", "control character"),
        ("https://example.com/" + "a" * 2048, "at most 2048"),
    ],
)
def test_url_rules(url, rule):
    with pytest.raises(InvalidWebhook, match=rule):
        check_url(url, allow_private=False)


def test_public_urls_pass():
    assert check_url("https://hooks.example.com:8443/mesh?x=1", allow_private=False)
    assert check_url("https://93.184.216.34/hook", allow_private=False)
    assert check_url("http://127.0.0.1:9000/hook", allow_private=True)  # http only where private is allowed
    assert refused_address(ipaddress.ip_address("8.8.8.8")) is None


def test_endpoint_settings_are_checked_and_bounded():
    hooks = Webhooks(account_id=uuid.uuid4())
    with pytest.raises(InvalidWebhook, match="at least one"):
        hooks.add(uuid.uuid4(), "https://example.com", [], None, "", False)
    with pytest.raises(InvalidWebhook, match="key.cap_reached"):
        hooks.add(uuid.uuid4(), "https://example.com", ["key.deleted"], None, "", False)
    with pytest.raises(InvalidWebhook, match="twice"):
        hooks.add(uuid.uuid4(), "https://example.com", ["topup.failed", "topup.failed"], None, "", False)
    with pytest.raises(InvalidWebhook, match="needs balance_low_threshold_usd"):
        hooks.add(uuid.uuid4(), "https://example.com", ["balance.low"], None, "", False)
    with pytest.raises(InvalidWebhook, match="only for an endpoint subscribed to balance.low"):
        hooks.add(uuid.uuid4(), "https://example.com", ["topup.failed"], USD, "", False)
    with pytest.raises(InvalidWebhook, match="above 0"):
        hooks.add(uuid.uuid4(), "https://example.com", ["balance.low"], 0, "", False)
    assert hooks.collect_events()[1:] == []  # only the aggregate's creation: every refusal changed nothing
    for _ in range(MAX_ENDPOINTS):
        hooks.add(uuid.uuid4(), "https://example.com", ["balance.low"], USD, "", False)
    with pytest.raises(InvalidWebhook, match=f"the most it may have \\({MAX_ENDPOINTS}\\)"):
        hooks.add(uuid.uuid4(), "https://example.com", ["topup.failed"], None, "", False)
    with pytest.raises(WebhookNotFound):
        hooks.remove(uuid.uuid4())


def test_an_update_that_changes_nothing_records_nothing():
    hooks = Webhooks(account_id=uuid.uuid4())
    endpoint = uuid.uuid4()
    hooks.add(endpoint, "https://example.com", ["balance.low"], USD, "d", False)
    hooks.collect_events()
    hooks.update(endpoint, "https://example.com", ["balance.low"], USD, "d", False)
    assert hooks.collect_events() == []
    hooks.update(endpoint, "https://example.com", ["balance.low"], 2 * USD, "d", False)
    assert [type(e).__name__ for e in hooks.collect_events()] == ["EndpointUpdated"]


def test_signature_is_stripes_scheme_and_verifies():
    secret = endpoint_secret("server key", uuid.UUID(int=1))
    assert secret.startswith("whsec_") and secret == endpoint_secret("server key", uuid.UUID(int=1))
    assert secret != endpoint_secret("server key", uuid.UUID(int=2))
    assert secret != endpoint_secret("another key", uuid.UUID(int=1))
    body = b'{"id":"1","type":"balance.low"}'
    header = signature(secret, 1_700_000_000, body)
    expected = hmac.new(secret.encode(), b"1700000000." + body, hashlib.sha256).hexdigest()
    assert header == f"t=1700000000,v1={expected}"
    assert verify_signature(secret, header, body, now=1_700_000_100)
    assert not verify_signature(secret, header, body + b" ", now=1_700_000_100)  # another body
    assert not verify_signature("whsec_other", header, body, now=1_700_000_100)  # another secret
    assert not verify_signature(secret, header, body, now=1_700_000_000 + 301)  # too old: a replay
    assert not verify_signature(secret, "v1=" + expected, body, now=1_700_000_000)  # no timestamp


def test_retry_schedule_doubles_up_to_an_hour():
    assert [retry_delay(n, 30) for n in range(1, 6)] == [30, 60, 120, 240, 480]
    assert retry_delay(20, 30) == MAX_RETRY_DELAY
    total, attempts = 0.0, 0
    while total < 24 * 3600:  # the default schedule fills the 24 h window with about 30 attempts
        attempts += 1
        total += retry_delay(attempts, 30)
    assert 25 <= attempts <= 35


def test_balance_low_fires_once_per_crossing():
    threshold, armed, fired = 100, True, []
    for balance in (150, 120, 90, 80, 50, 99, 100, 130, 70, 60, 200):
        notify, armed = balance_watch(armed, balance, threshold)
        fired.append(notify)
    # below at 90 (first crossing), back at/above at 100, below again at 70
    assert [i for i, f in enumerate(fired) if f] == [2, 8]
    assert armed  # 200: re-armed
