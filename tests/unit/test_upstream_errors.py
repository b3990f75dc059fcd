"""What a client learns when an upstream fails: which provider and how, never its credentials' text or address."""

from __future__ import annotations

import socket

from gateway.catalog import Provider
from gateway.providers.upstream_errors import upstream_error, upstream_unreachable
from gateway.transport import UpstreamClosed, UpstreamUnreachable

ACME = Provider(name="acme", kind="openai", base_url="http://10.0.0.7:9000/v1", api_key="sk-secret")


def unreachable_because(cause: BaseException) -> UpstreamUnreachable:
    try:
        try:
            raise cause
        except OSError as exc:
            raise UpstreamUnreachable(f"could not connect to 10.0.0.7:9000: {exc}") from None
    except UpstreamUnreachable as exc:
        return exc


def test_an_upstream_refusing_our_credentials_is_a_502_without_its_text(caplog):
    for status in (401, 403):
        error = upstream_error(ACME, status, "Incorrect API key provided: sk-sec*****")
        assert (error.status, error.code) == (502, "upstream_auth_failed")
        assert "acme" in error.message and "sk-sec" not in error.message and "Incorrect" not in error.message
    assert "sk-sec" not in caplog.text and "acme" in caplog.text


def test_other_upstream_refusals_keep_their_message():
    error = upstream_error(ACME, 400, "max_tokens is too large")
    assert (error.status, error.code) == (400, "upstream_rejected") and "max_tokens is too large" in error.message


def test_an_unreachable_upstream_says_how_but_not_where(caplog):
    cases = {
        ConnectionRefusedError(111, "Connection refused"): "the connection was refused",
        socket.gaierror(-2, "Name or service not known"): "its host name does not resolve",
        OSError(113, "No route to host"): "no connection could be made",
    }
    for cause, how in cases.items():
        error = upstream_unreachable(ACME, unreachable_because(cause))
        assert (error.status, error.code, error.message) == (
            502,
            "upstream_unreachable",
            f"provider acme is unreachable: {how}",
        )
    broken = upstream_unreachable(ACME, UpstreamClosed("connection lost mid-response from 10.0.0.7:9000"))
    assert broken.message == "provider acme is unreachable: the connection broke before the answer was complete"
    assert "10.0.0.7:9000" in caplog.text  # the address is for the operator's log
