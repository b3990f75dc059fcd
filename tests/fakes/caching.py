"""The three fake upstreams set to report prompt caching and reasoning, each in its own wire format, and what they
then report for one conversation (shared by the adapter tests and the end-to-end billing tests)."""

from __future__ import annotations

from tests.fakes.anthropic_upstream import FakeAnthropic
from tests.fakes.gemini_upstream import FakeGemini
from tests.fakes.openai_upstream import FakeOpenAI

MESSAGES = [
    {"role": "system", "content": "you are terse"},
    {"role": "user", "content": "tell me about prompt caching please"},
]  # 9 words: 9 prompt tokens

# provider kind -> tokens one request over MESSAGES bills as (fresh prompt, cache read, cache write, completion,
# reasoning)
REPORTED = {
    "openai": (9 - 6, 6, 0, 7 + 20, 20),  # cached_tokens 6 of 9; 20 reasoning on top of the 7 words
    "anthropic": (2, 5, 2, 6 + 9, 0),  # input_tokens 2 + read 5 + write 2; 9 thinking tokens in output_tokens
    "gemini": (9 - 4, 4, 0, 5 + 30, 30),  # cachedContentTokenCount 4 of 9; thoughtsTokenCount 30 on top of 5
}


def caching_fakes() -> dict[str, FakeOpenAI | FakeAnthropic | FakeGemini]:
    openai, anthropic, gemini = FakeOpenAI(reply_words=7), FakeAnthropic(reply_words=6), FakeGemini(reply_words=5)
    openai.cached_tokens, openai.reasoning_tokens = 6, 20
    anthropic.cache_read, anthropic.cache_write, anthropic.thinking_tokens = 5, 2, 9
    gemini.cached_tokens, gemini.thoughts_tokens = 4, 30
    return {"openai": openai, "anthropic": anthropic, "gemini": gemini}
