"""Prefix-block hashes: the chained XXH3-64 hashes of every full block."""

from __future__ import annotations

import pytest
import xxhash

from fleetcall.llm.base import count_tokens
from fleetcall.router.prefix import HANDOFF, HashHandoff, block_hashes, prompt_facts_for_endpoint


def _reference(text: str, block_tokens: int) -> tuple[int, ...]:
    """The definition, one block at a time: XXH3-64 of the block's UTF-8 bytes, seeded with
    the previous block's hash (0 for the first)."""
    size, prev, out = block_tokens * 4, 0, []
    for i in range(0, len(text) - size + 1, size):
        prev = xxhash.xxh3_64(text[i:i + size].encode("utf-8", "surrogatepass"), seed=prev).intdigest()
        out.append(prev)
    return tuple(out)


@pytest.mark.parametrize("text", ["", "short", "x" * 63, "y" * 64, "abc " * 1000 + "tail",
                                  "héllo wörld " * 300, "\ud800 lone surrogate " * 40])
@pytest.mark.parametrize("block_tokens", [1, 16, 33])
def test_hashes_are_the_chained_block_digests(text: str, block_tokens: int) -> None:
    assert block_hashes(text, block_tokens) == _reference(text, block_tokens)


def test_equal_prefixes_share_leading_hashes_only() -> None:
    a, b = block_hashes("p" * 640 + "a" * 640), block_hashes("p" * 640 + "b" * 640)
    assert a[:10] == b[:10] and a[10] != b[10] and len(a) == len(b) == 20
    assert all(0 <= h < 2 ** 64 for h in a)


def test_the_handoff_holds_hashes_until_taken_and_within_its_bound() -> None:
    handoff = HashHandoff(max_chars=200)
    texts = [f"{i:03d}" + "t" * 77 for i in range(4)]   # 80 characters each
    for text in texts:
        handoff.put(text, 16, block_hashes(text), count_tokens(text))
    assert len(handoff) == 2                             # the two oldest left to stay in bound
    assert handoff.take(texts[0], 16) is None and handoff.take(texts[3], 8) is None
    assert handoff.take(texts[3], 16) == (block_hashes(texts[3]), count_tokens(texts[3]))
    assert len(handoff) == 1


def test_the_handoff_carries_the_token_count_the_pool_made() -> None:
    text = "how many tokens has this prompt " * 40
    HANDOFF.put(text, 16, block_hashes(text, 16), 12345)   # a count no text gives: it was taken
    assert prompt_facts_for_endpoint(text, 16) == (block_hashes(text, 16), 12345)
    # nothing held (taken once, or never put): hashed and counted here
    assert prompt_facts_for_endpoint(text, 16) == (block_hashes(text, 16), count_tokens(text))


def test_emulated_endpoints_take_what_the_pool_hashed() -> None:
    """A pool of in-process endpoints hashes each prompt once: the endpoint takes the pool's
    hashes (and they are what it would have computed: the engine caches the same blocks)."""
    from fleetcall.bench.workloads import CallSpec, call_text
    from fleetcall.llm.base import LLMRequest, Message, complete
    from fleetcall.router.pool import EndpointPool
    from fleetcall.vclock import run_virtual

    texts = [call_text(CallSpec("s", 600, 4), f"q/{i}") for i in range(6)]
    computed = []

    async def main() -> None:
        async with EndpointPool.emulated(["A100", "A100"], "llama-3.1-8b") as pool:
            for text in texts:
                await complete(pool, LLMRequest((Message("user", text),), max_tokens=4))
                computed.append(len(HANDOFF))
            cached = set()
            for name in pool.endpoints:
                backend = pool._links[name].backend
                assert backend is not None
                cached |= backend.endpoint.engine._cache.refs.keys()  # type: ignore[attr-defined]
            assert all(set(block_hashes(text)) <= cached for text in texts)

    before = len(HANDOFF)
    run_virtual(main())
    assert computed == [before] * len(texts)
