from decimal import Decimal

import pytest

from domain.money import InvalidAmount, pico_to_usd, usd_to_pico
from domain.pricing import Price


@pytest.mark.parametrize(
    "text, pico",
    [
        ("12.5", 12_500_000_000_000),
        ("0.000000000001", 1),
        ("  7 ", 7 * 10**12),
        (3, 3 * 10**12),
        ("-1.25", -1_250_000_000_000),
    ],
)
def test_usd_parses_exactly(text, pico):
    assert usd_to_pico(text) == pico


@pytest.mark.parametrize("bad", [1.5, True, "abc", "NaN", "Infinity", "", "0.0000000000001", None])
def test_usd_refuses_what_it_cannot_hold_exactly(bad):
    with pytest.raises(InvalidAmount):
        usd_to_pico(bad)


def test_format_keeps_every_unit_and_at_least_six_decimals():
    assert pico_to_usd(12_500_000_000_000) == "12.500000"
    assert pico_to_usd(1) == "0.000000000001"
    assert pico_to_usd(-150_000) == "-0.00000015"
    assert pico_to_usd(0) == "0.000000"


def test_round_trip_is_identity():
    for value in ["0.1", "19.99", "123456.000000000001", "0.3333"]:
        assert Decimal(pico_to_usd(usd_to_pico(value))) == Decimal(value)


def test_cost_is_exact_per_token():
    price = Price.from_usd("0.00015", "0.0006")  # $0.15 / $0.60 per million tokens
    assert price.cost(1, 0) == 150_000  # 0.00000015 USD
    assert price.cost(1000, 1000) == 150_000_000 + 600_000_000
    # the sum of single-token costs equals the cost of the whole, to the unit
    assert sum(price.cost(1, 1) for _ in range(777)) == price.cost(777, 777)


def test_price_needs_at_most_nine_decimals_and_no_negatives():
    with pytest.raises(InvalidAmount):
        Price.from_usd("0.0000000001", "0")
    with pytest.raises(InvalidAmount):
        Price.from_usd("-1", "0")
    assert Price.from_usd("0", "0").is_free
