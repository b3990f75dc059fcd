"""Model prices and the cost of a request.

Prices are USD per 1,000 tokens, separately for prompt and completion tokens,
held as pico-USD per 1,000 tokens. A price must be a multiple of 1,000 pico-USD
(at most nine decimals of USD per 1K tokens) so the cost of every single token
is an exact integer.

Prompt tokens read from a provider's prompt cache, and those written to it, may
have prices of their own (Anthropic charges 10% and 125% of its prompt price);
without one they cost the prompt price.
"""

from __future__ import annotations

import msgspec

from domain.money import InvalidAmount, pico_to_usd, usd_to_pico

_PRICE_DECIMALS = 9


class Price(msgspec.Struct, frozen=True):
    prompt_per_1k: int  # pico-USD per 1,000 prompt tokens
    completion_per_1k: int  # pico-USD per 1,000 completion tokens
    cached_per_1k: int | None = None  # pico-USD per 1,000 prompt tokens read from cache; None: the prompt price
    cache_write_per_1k: int | None = None  # pico-USD per 1,000 prompt tokens written to cache; None: prompt price

    @classmethod
    def from_usd(
        cls,
        prompt_usd_per_1k: str,
        completion_usd_per_1k: str,
        cached_prompt_usd_per_1k: str | None = None,
        cache_write_usd_per_1k: str | None = None,
    ) -> "Price":
        def pico(field: str, value: str) -> int:
            price = usd_to_pico(value, field=field, decimals=_PRICE_DECIMALS)
            if price < 0:
                raise InvalidAmount("prices must not be negative")
            return price

        return cls(
            pico("prompt_usd_per_1k", prompt_usd_per_1k),
            pico("completion_usd_per_1k", completion_usd_per_1k),
            None if cached_prompt_usd_per_1k is None else pico("cached_prompt_usd_per_1k", cached_prompt_usd_per_1k),
            None if cache_write_usd_per_1k is None else pico("cache_write_usd_per_1k", cache_write_usd_per_1k),
        )

    @property
    def cached(self) -> int:
        """pico-USD per 1,000 cached prompt tokens, as charged."""
        return self.prompt_per_1k if self.cached_per_1k is None else self.cached_per_1k

    @property
    def cache_write(self) -> int:
        """pico-USD per 1,000 cache-write prompt tokens, as charged."""
        return self.prompt_per_1k if self.cache_write_per_1k is None else self.cache_write_per_1k

    @property
    def is_free(self) -> bool:
        # the cache prices default to the prompt price: with that at 0, only one set apart can cost
        return not (self.prompt_per_1k or self.completion_per_1k or self.cached_per_1k or self.cache_write_per_1k)

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> int:
        """Exact cost in pico-USD (prices are multiples of 1,000 pico-USD per 1K, so this divides evenly).

        `prompt_tokens` is the whole prompt; `cached_tokens` and `cache_write_tokens` are the parts of it read
        from and written to the provider's cache, each charged at its own price, the rest at the prompt price."""
        if not 0 <= cached_tokens + cache_write_tokens <= prompt_tokens or min(cached_tokens, cache_write_tokens) < 0:
            raise ValueError(
                f"cached ({cached_tokens}) and cache-write ({cache_write_tokens}) tokens must be parts "
                f"of the prompt's {prompt_tokens}"
            )
        fresh = prompt_tokens - cached_tokens - cache_write_tokens
        return (
            fresh * self.prompt_per_1k
            + cached_tokens * self.cached
            + cache_write_tokens * self.cache_write
            + completion_tokens * self.completion_per_1k
        ) // 1000

    def worst_cost(self, prompt_tokens: int, completion_tokens: int) -> int:
        """The most these tokens can cost: every prompt token at the dearest of its prices (a cache write can cost
        more than a fresh token), what a reservation must cover."""
        per_1k = max(self.prompt_per_1k, self.cached, self.cache_write)
        return (prompt_tokens * per_1k + completion_tokens * self.completion_per_1k) // 1000

    def as_usd(self) -> dict[str, str]:
        return {
            "prompt_usd_per_1k": pico_to_usd(self.prompt_per_1k),
            "completion_usd_per_1k": pico_to_usd(self.completion_per_1k),
            "cached_prompt_usd_per_1k": pico_to_usd(self.cached),
            "cache_write_usd_per_1k": pico_to_usd(self.cache_write),
        }
