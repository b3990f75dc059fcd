"""Model prices and the cost of a request.

Prices are USD per 1,000 tokens, separately for prompt and completion tokens,
held as pico-USD per 1,000 tokens. A price must be a multiple of 1,000 pico-USD
(at most nine decimals of USD per 1K tokens) so the cost of every single token
is an exact integer.
"""

from __future__ import annotations

import msgspec

from domain.money import InvalidAmount, pico_to_usd, usd_to_pico

_PRICE_DECIMALS = 9


class Price(msgspec.Struct, frozen=True):
    prompt_per_1k: int  # pico-USD per 1,000 prompt tokens
    completion_per_1k: int  # pico-USD per 1,000 completion tokens

    @classmethod
    def from_usd(cls, prompt_usd_per_1k: str, completion_usd_per_1k: str) -> "Price":
        prompt = usd_to_pico(prompt_usd_per_1k, field="prompt_usd_per_1k", decimals=_PRICE_DECIMALS)
        completion = usd_to_pico(completion_usd_per_1k, field="completion_usd_per_1k", decimals=_PRICE_DECIMALS)
        if prompt < 0 or completion < 0:
            raise InvalidAmount("prices must not be negative")
        return cls(prompt, completion)

    @property
    def is_free(self) -> bool:
        return self.prompt_per_1k == 0 and self.completion_per_1k == 0

    def cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """Exact cost in pico-USD (prices are multiples of 1,000 pico-USD per 1K, so this divides evenly)."""
        return (prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k) // 1000

    def as_usd(self) -> dict[str, str]:
        return {
            "prompt_usd_per_1k": pico_to_usd(self.prompt_per_1k),
            "completion_usd_per_1k": pico_to_usd(self.completion_per_1k),
        }
