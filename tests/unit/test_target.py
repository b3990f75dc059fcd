"""Upstream URLs as the connection pool uses them (gateway/transport.py)."""

from gateway.transport import Target


def test_a_default_port_stays_out_of_the_host_header():
    openai = Target("https://api.openai.com/v1")
    assert (openai.host, openai.port, openai.tls, openai.authority) == ("api.openai.com", 443, True, "api.openai.com")
    local = Target("http://127.0.0.1:9000/v1/")
    assert (local.port, local.tls, local.authority) == (9000, False, "127.0.0.1:9000")
    assert Target("http://example.com:80/").authority == "example.com"


def test_join_appends_the_path_and_its_query_to_the_base_path():
    base = Target("http://127.0.0.1:9000/v1beta/")
    joined = base.join("/models/gemini:streamGenerateContent?alt=sse")
    assert joined.target == b"/v1beta/models/gemini:streamGenerateContent?alt=sse"
    assert joined.key == base.key and joined.authority == base.authority


def test_an_ipv6_upstream_keeps_its_brackets_in_the_host_header():
    local = Target("http://[::1]:8000/v1")
    assert (local.host, local.port, local.authority) == ("::1", 8000, "[::1]:8000")
    assert Target("https://[2001:db8::1]/v1").authority == "[2001:db8::1]"
