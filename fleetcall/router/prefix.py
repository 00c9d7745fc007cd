"""Prompt text, token counts and prefix-block hashes, the same on both sides of an endpoint.

The pool (to route a call where its prompt prefix is cached) and the emulated engine (to skip
prefill of cached blocks) must cut a prompt into the same blocks. Both use these functions. A
token is :data:`CHARS_PER_TOKEN` characters (the model-free estimate of
:func:`fleetcall.llm.base.count_tokens`), so a block of ``block_tokens`` tokens is a fixed run of
characters, and block ``i``'s hash chains the hash of block ``i - 1``: equal hashes mean equal
prefixes, as in vLLM's automatic prefix caching. A block's hash is the 64-bit XXH3 (``xxhash``)
of its UTF-8 bytes seeded with the previous block's hash (0 for the first block): 64 bits, at a
quarter of blake2b-64's cost (the pool hashes every prompt it places, ~160 blocks a call in
trace replay).

Prompts made of filler text for trace replay live in :mod:`fleetcall.sim.filler`.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping

import xxhash

from fleetcall.llm.base import Message, count_tokens

CHARS_PER_TOKEN = 4
DEFAULT_BLOCK_TOKENS = 16  # vLLM's KV block size: the unit of prefix caching


def prompt_text(messages: Iterable[Message]) -> str:
    """The text a prompt's blocks are cut from: the message contents, in order."""
    return "".join(m.content for m in messages)


def block_hashes(text: str, block_tokens: int = DEFAULT_BLOCK_TOKENS) -> tuple[int, ...]:
    """Chained hashes of every full block of ``text`` (a trailing partial block is not cached)."""
    if block_tokens < 1:
        raise ValueError("block_tokens must be >= 1")
    size = block_tokens * CHARS_PER_TOKEN
    data = text.encode("utf-8", "surrogatepass")
    # Each hash seeds the next: XXH3-64 of the block, seeded with the previous block's hash.
    xxh, prev, out = xxhash.xxh3_64_intdigest, 0, []
    if len(data) == len(text):  # ASCII: a block is a slice of the bytes (each freed at once)
        for i in range(0, len(data) - size + 1, size):
            prev = xxh(data[i:i + size], prev)
            out.append(prev)
        return tuple(out)
    # Cut on characters, not bytes, so non-ASCII text keeps block boundaries on token counts.
    for i in range(0, len(text) - size + 1, size):
        prev = xxh(text[i:i + size].encode("utf-8", "surrogatepass"), prev)
        out.append(prev)
    return tuple(out)


class HashHandoff:
    """Block hashes of prompts on their way to an in-process endpoint, by prompt text.

    The pool hashes every prompt it places, and counts its tokens; an emulated endpoint in the
    same process does both again when the request arrives. The pool :meth:`put` s its hashes
    (and its count) here and the endpoint :meth:`take` s them (equal text, equal hashes and
    count: the result is what hashing and counting again give). Entries not taken (a request
    that never arrived, or went to a real server) leave oldest first once they hold more than
    ``max_chars`` characters of text.

        >>> handoff = HashHandoff()
        >>> handoff.put("x" * 64, 16, (7,), 16)
        >>> handoff.take("x" * 64, 16), handoff.take("x" * 64, 16)
        (((7,), 16), None)
    """

    __slots__ = ("max_chars", "_chars", "_entries")

    def __init__(self, max_chars: int = 32_000_000) -> None:
        self.max_chars = max_chars
        self._chars = 0  # characters of the texts held
        # (text, block_tokens) -> its hashes and token count, oldest first
        self._entries: OrderedDict[tuple[str, int], tuple[tuple[int, ...], int]] = OrderedDict()

    def put(self, text: str, block_tokens: int, hashes: tuple[int, ...], tokens: int) -> None:
        """Hold ``hashes`` (``block_hashes(text, block_tokens)``) and ``tokens``
        (``count_tokens(text)``) until taken."""
        key = (text, block_tokens)
        if key in self._entries:
            return
        self._entries[key] = (hashes, tokens)
        self._chars += len(text)
        while self._chars > self.max_chars:
            (old, _), _ = self._entries.popitem(last=False)
            self._chars -= len(old)

    def take(self, text: str, block_tokens: int) -> tuple[tuple[int, ...], int] | None:
        """The hashes and token count held for ``text`` (no longer held), or None."""
        held = self._entries.pop((text, block_tokens), None)
        if held is not None:
            self._chars -= len(text)
        return held

    def __len__(self) -> int:
        return len(self._entries)


# The handoff between a pool and the emulated endpoints of this process (see HashHandoff).
HANDOFF = HashHandoff()


def prompt_facts_for_endpoint(text: str, block_tokens: int = DEFAULT_BLOCK_TOKENS
                              ) -> tuple[tuple[int, ...], int]:
    """``(block_hashes(text, block_tokens), count_tokens(text))``, taken from :data:`HANDOFF`
    where the pool left them."""
    held = HANDOFF.take(text, block_tokens)
    return held if held is not None else (block_hashes(text, block_tokens), count_tokens(text))


# -- LRU order as a queue of tagged touches ---------------------------------------------------
# The pool's PrefixIndex (router/predict.py) and the emulated engine's BlockCache
# (sim/kvcache.py) keep their least-recently-used order the same way: a deque of
# (tag, block hashes) -- each add or release, oldest first -- whose first ``head`` places are
# consumed; a place is live only while the block's entry in ``tags`` still holds that tag (a
# block touched again leaves a stale place behind). These are the two walks both need.

TaggedQueue = deque[tuple[int, tuple[int, ...]]]


def live_blocks(queue: TaggedQueue, head: int, tags: Mapping[int, int]) -> list[int]:
    """The live places of ``queue``, oldest first: the blocks it holds in LRU order."""
    out: list[int] = []
    for i, (tag, hashes) in enumerate(queue):
        out += [h for h in hashes[head if i == 0 else 0:] if tags.get(h) == tag]
    return out


def compacted(queue: TaggedQueue, head: int, tags: Mapping[int, int]) -> tuple[TaggedQueue, int]:
    """``queue`` without its stale and consumed places (its head is then 0), and how many
    places it keeps."""
    kept: TaggedQueue = deque()
    for i, (tag, hashes) in enumerate(queue):
        live = tuple(h for h in hashes[head if i == 0 else 0:] if tags.get(h) == tag)
        if live:
            kept.append((tag, live))
    return kept, sum(len(hashes) for _, hashes in kept)
