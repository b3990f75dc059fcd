"""What a prompt template adds to a chat request: rendering a 2 KB template, beside plain Python references.

Rows:
- render: the compiled template's messages filled (domain.rendering), against the same text filled with
  chained str.replace and with str.format_map (the plain-Python ways to do it, without any checks);
- request: the gateway's template step (gateway.prompt_templates.TemplateCache.expand: find the fields, decode the
  body, look the template up in the in-memory cache, render, merge defaults, encode) on a request naming the
  template, against the same step on a request without one (what every other request pays).

Times are CPU time of this process (time.process_time), best of five runs, so other processes competing
for the CPU do not count; the references run in the same process, in the same way.

    python -m bench.templates [iterations]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid

import msgspec

from domain.rendering import CompiledMessages
from domain.template_head import TemplateHead
from gateway.prompt_templates import TemplateCache

TARGET_US = 20.0
ACCOUNT, TEMPLATE = uuid.uuid4(), uuid.uuid4()
SYSTEM = (
    "You are {{ persona }}, the support assistant of {{company}}. " + "Answer briefly and politely; "
    "cite the knowledge base where you can, and never invent product names or prices. "
    * 18
    + "The customer's plan is {{plan}} and their language is {{language}}."
)
USER = "My name is {{ name }}. My question: {{question}}"
MESSAGES = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
VARIABLES = {
    "persona": "Ada",
    "company": "Acme Corp",
    "plan": "enterprise",
    "language": "English",
    "name": "Bo",
    "question": "How do I rotate an API key without downtime?",
}
DEFAULTS = {"model": "acme/gpt", "temperature": 0.3, "stop": ["END"]}


class MemoryTemplates:
    async def head(self, account_id, name):
        return TemplateHead(TEMPLATE, ACCOUNT, name, 1, {}, False, 1)

    async def version(self, template_id, version):
        return MESSAGES, DEFAULTS


def per_call_us(fn, iterations: int) -> float:
    best = float("inf")
    for _ in range(5):  # best of five: the least disturbed run
        started = time.process_time()
        for _ in range(iterations):
            fn()
        best = min(best, (time.process_time() - started) / iterations * 1e6)
    return best


async def per_request_us(cache: TemplateCache, raw: bytes, iterations: int) -> float:
    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(iterations):
            await cache.expand(ACCOUNT, msgspec.json.decode(raw))  # the gateway decodes each body once
        best = min(best, (time.process_time() - started) / iterations * 1e6)
    return best


def replace_chain(texts: list[tuple[str, str]]) -> list[dict[str, str]]:
    out = []
    for role, text in texts:
        for name, value in VARIABLES.items():
            text = text.replace("{{ " + name + " }}", value).replace("{{" + name + "}}", value)
        out.append({"role": role, "content": text})
    return out


async def run(iterations: int) -> None:
    size = sum(len(m["content"]) for m in MESSAGES)
    compiled = CompiledMessages(MESSAGES)
    texts = [(m["role"], m["content"]) for m in MESSAGES]
    formats = [
        (m["role"], m["content"].replace("{{ ", "{").replace(" }}", "}").replace("{{", "{").replace("}}", "}"))
        for m in MESSAGES
    ]
    assert (
        compiled.render(VARIABLES)
        == replace_chain(texts)
        == [{"role": role, "content": f.format_map(VARIABLES)} for role, f in formats]
    )

    render = per_call_us(lambda: compiled.render(VARIABLES), iterations)
    replace = per_call_us(lambda: replace_chain(texts), iterations)
    format_map = per_call_us(lambda: [{"role": r, "content": f.format_map(VARIABLES)} for r, f in formats], iterations)

    cache = TemplateCache(MemoryTemplates())
    question = [{"role": "user", "content": "And what about the old key?"}]
    with_template = msgspec.json.encode(
        {"model": "acme/gpt", "messages": question, "template": "support", "variables": VARIABLES}
    )
    without = msgspec.json.encode({"model": "acme/gpt", "messages": question})
    await cache.expand(ACCOUNT, msgspec.json.decode(with_template))  # load once, as a gateway process does
    templated = await per_request_us(cache, with_template, iterations)
    plain = await per_request_us(cache, without, iterations)

    print(f"template: {len(MESSAGES)} messages, {size} characters, {len(VARIABLES)} variables")
    print(f"{'':<44}{'µs':>8}{'ratio to render':>18}")
    print(f"{'render (domain.rendering, checked)':<44}{render:>8.2f}{1:>18.2f}")
    print(f"{'reference: chained str.replace':<44}{replace:>8.2f}{replace / render:>18.2f}")
    print(f"{'reference: str.format_map':<44}{format_map:>8.2f}{format_map / render:>18.2f}")
    print(f"{'request step, no template':<44}{plain:>8.2f}")
    print(f"{'request step, with the template':<44}{templated:>8.2f}")
    print(f"{'added to a request by the template':<44}{templated - plain:>8.2f}   (target <= {TARGET_US:g} µs)")


if __name__ == "__main__":
    asyncio.run(run(int(sys.argv[1]) if len(sys.argv) > 1 else 20000))
