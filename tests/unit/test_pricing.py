"""Prices per 1K tokens, with optional cache prices, and the exact cost of a request."""

from __future__ import annotations

from decimal import Decimal

import pytest

from domain.money import InvalidAmount
from domain.pricing import Price


def test_cache_prices_default_to_the_prompt_price():
    price = Price.from_usd("3", "15")
    assert (price.cached, price.cache_write) == (3 * 10**12, 3 * 10**12)
    assert price.cost(1000, 1000, cached_tokens=400, cache_write_tokens=100) == price.cost(1000, 1000) == 18 * 10**12


def test_cached_and_cache_write_tokens_cost_their_own_price():
    # Anthropic-like: reads at 10%, writes at 125% of the prompt price
    price = Price.from_usd("3", "15", "0.3", "3.75")
    # 1000 prompt tokens = 600 fresh + 300 read + 100 written; 200 completion tokens
    usd = (600 * Decimal(3) + 300 * Decimal("0.3") + 100 * Decimal("3.75") + 200 * Decimal(15)) / 1000
    assert price.cost(1000, 200, cached_tokens=300, cache_write_tokens=100) == usd * 10**12 == 5_265_000_000_000


def test_every_token_costs_an_exact_integer_at_nine_decimals():
    price = Price.from_usd("0.000000001", "0.000000003", "0.000000001", "0.000000002")
    assert price.cost(1, 1, cached_tokens=0, cache_write_tokens=1) == 2 + 3
    with pytest.raises(InvalidAmount, match="cached_prompt_usd_per_1k allows at most 9 decimal places"):
        Price.from_usd("1", "1", "0.0000000001")
    with pytest.raises(InvalidAmount, match="must not be negative"):
        Price.from_usd("1", "1", cache_write_usd_per_1k="-1")


def test_the_parts_must_fit_in_the_prompt():
    price = Price.from_usd("1", "2", "0.1")
    with pytest.raises(ValueError, match="parts of the prompt"):
        price.cost(10, 0, cached_tokens=8, cache_write_tokens=3)
    with pytest.raises(ValueError, match="parts of the prompt"):
        price.cost(10, 0, cached_tokens=-1)


def test_prices_as_usd_name_the_effective_cache_prices():
    assert Price.from_usd("0.5", "1.5", "0.05").as_usd() == {
        "prompt_usd_per_1k": "0.500000",
        "completion_usd_per_1k": "1.500000",
        "cached_prompt_usd_per_1k": "0.050000",
        "cache_write_usd_per_1k": "0.500000",
    }
    assert not Price.from_usd("0", "0", "0.1").is_free
    assert not Price.from_usd("0", "0", None, "0.2").is_free
    assert not Price.from_usd("0.1", "0", "0", "0").is_free
    assert Price.from_usd("0", "0").is_free
    assert Price.from_usd("0", "0", "0", "0").is_free
