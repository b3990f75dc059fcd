"""Exact money.

Amounts are integers of pico-USD (10**-12 USD). A price per 1,000 tokens with
at most nine decimals then costs an exact integer per token, so every charge is
exact and a replay reproduces it to the unit. JSON carries USD as decimal strings.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

PICO_PER_USD = 10**12
MAX_USD_DECIMALS = 12
MAX_USD = 1_000_000  # the bound of every amount a client or operator sends: a grant, cap, top-up, threshold, price
MAX_AMOUNT = MAX_USD * PICO_PER_USD


class InvalidAmount(ValueError):
    """An amount of money that is not a finite decimal number we can represent exactly."""


class InvalidCreditGrant(ValueError):
    """Credits granted, taken back or charged for with input that cannot be taken: an amount, a reason, a card."""


def usd_to_pico(
    value: str | int | float | Decimal, *, field: str = "amount_usd", decimals: int = MAX_USD_DECIMALS
) -> int:
    """Parse a USD amount given as a decimal string (or int) into pico-USD, exactly.

    Floats are refused (they cannot carry money exactly), except a whole one such as 5.0.
    """
    if isinstance(value, float) and value.is_integer() and abs(value) <= MAX_USD:
        value = int(value)  # 5.0 is the whole number JSON Schema's "integer" also admits: exact
    if isinstance(value, bool) or isinstance(value, float):
        raise InvalidAmount(f'{field} must be a decimal string such as "12.50", not a {type(value).__name__}')
    try:
        amount = Decimal(value.strip() if isinstance(value, str) else value)
    except (InvalidOperation, TypeError, ValueError):
        raise InvalidAmount(f'{field} must be a decimal number such as "12.50", got {str(value)[:40]!r}') from None
    if not amount.is_finite():
        raise InvalidAmount(f"{field} must be a finite decimal number, got {str(value)[:40]!r}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > decimals:
        raise InvalidAmount(f"{field} allows at most {decimals} decimal places, got {str(value)[:40]!r}")
    if abs(amount) > MAX_USD:  # compared before converting: "1e999999" must not build a million-digit integer
        raise InvalidAmount(f"{field} must be at most {MAX_USD} USD, got {str(value)[:40]!r}")
    return int(amount * PICO_PER_USD)


def check_amount(
    amount: int, field: str = "amount_usd", error: type[ValueError] = InvalidAmount, *, positive: bool = False
) -> int:
    """An amount in pico-USD within 0..MAX_AMOUNT (what the read models store as numeric(40, 0) and more), and
    above zero when `positive` (a grant, a payment, a threshold)."""
    if positive and amount <= 0:
        raise error(f"{field} must be greater than zero")
    if amount < 0 or amount > MAX_AMOUNT:
        raise error(f"{field} must be between 0 and {MAX_USD} USD")
    return amount


def pico_to_usd(pico: int) -> str:
    """Format pico-USD as a decimal USD string with at least six decimals, never losing a unit."""
    if pico < 0:
        return "-" + pico_to_usd(-pico)
    whole, frac = divmod(pico, PICO_PER_USD)
    digits = f"{frac:012d}".rstrip("0")
    return f"{whole}.{digits:0<6}"
