"""Prompt text, token counts and prefix-block hashes, the same on both sides of an endpoint.

The pool (to route a call where its prompt prefix is cached) and the emulated engine (to skip
prefill of cached blocks) must cut a prompt into the same blocks. Both use these functions. A
token is :data:`CHARS_PER_TOKEN` characters (the model-free estimate of
:func:`fleetcall.llm.base.count_tokens`), so a block of ``block_tokens`` tokens is a fixed run of
characters, and block ``i``'s hash chains the hash of block ``i - 1``: equal hashes mean equal
prefixes, as in vLLM's automatic prefix caching.

Trace replay has lengths, not text: :func:`filler_text` makes a prompt of exactly ``n`` tokens, and
:func:`blocks_text` one whose 512-token blocks are named by Mooncake-style hash ids, so requests
that share leading ids share a real, hashable prefix.

    >>> from fleetcall.llm.base import count_tokens
    >>> count_tokens(filler_text(100, seed=1))
    100
    >>> a, b = blocks_text([7, 8], 512), blocks_text([7, 9], 512)
    >>> block_hashes(a)[:32] == block_hashes(b)[:32], block_hashes(a)[32] == block_hashes(b)[32]
    (True, False)
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterable, Sequence

from fleetcall.llm.base import Message

CHARS_PER_TOKEN = 4
DEFAULT_BLOCK_TOKENS = 16  # vLLM's KV block size: the unit of prefix caching
_WORD = CHARS_PER_TOKEN - 1  # characters of one filler word, before its space


def prompt_text(messages: Iterable[Message]) -> str:
    """The text a prompt's blocks are cut from: the message contents, in order."""
    return "".join(m.content for m in messages)


def block_hashes(text: str, block_tokens: int = DEFAULT_BLOCK_TOKENS) -> tuple[int, ...]:
    """Chained hashes of every full block of ``text`` (a trailing partial block is not cached)."""
    if block_tokens < 1:
        raise ValueError("block_tokens must be >= 1")
    size = block_tokens * CHARS_PER_TOKEN
    out: list[int] = []
    prev = b""
    data = text.encode("utf-8", "surrogatepass")
    # Cut on characters, not bytes, so non-ASCII text keeps block boundaries on token counts.
    if len(data) != len(text):
        pieces = [text[i:i + size].encode("utf-8", "surrogatepass")
                  for i in range(0, len(text) - size + 1, size)]
    else:
        pieces = [data[i:i + size] for i in range(0, len(data) - size + 1, size)]
    for piece in pieces:
        prev = hashlib.blake2b(prev + piece, digest_size=8).digest()
        out.append(int.from_bytes(prev, "big"))
    return tuple(out)


_WORDS = 17576  # distinct filler words (3 lowercase letters): filler text repeats with this period


def _word(n: int) -> str:
    """A 3-character lowercase word for ``n`` (base 26, wrapping), then a space."""
    a, r = divmod(n % _WORDS, 676)
    b, c = divmod(r, 26)
    return chr(97 + a) + chr(97 + b) + chr(97 + c) + " "


@functools.cache
def _cycle() -> str:
    """Every filler word once, in order (70 KB, built on first use)."""
    return "".join(_word(i) for i in range(_WORDS))


def filler_text(tokens: int, seed: int = 0) -> str:
    """Text of exactly ``tokens`` estimated tokens, different for different seeds: the words
    ``_word(start), _word(start + 1), ...`` from ``start = seed * 7919`` (mod the period), as a
    slice of the repeated cycle (it is on the hot path of trace replay)."""
    if tokens < 0:
        raise ValueError("tokens must be >= 0")
    cycle = _cycle()
    start = (seed * 7919) % _WORDS * CHARS_PER_TOKEN
    end = start + tokens * CHARS_PER_TOKEN
    return (cycle * (end // len(cycle) + 1))[start:end]


def blocks_text(hash_ids: Sequence[int], block_tokens: int = 512, tail_tokens: int = 0,
                tail_seed: int = 0) -> str:
    """A prompt made of one ``block_tokens``-token block per hash id (equal ids, equal text),
    then ``tail_tokens`` tokens of filler (the request's own, unshared part)."""
    parts = []
    for h in hash_ids:
        head = f"{h:011d} "[-CHARS_PER_TOKEN * 3:]  # 3 tokens naming the block
        parts.append(head + filler_text(block_tokens - 3, seed=h))
    parts.append(filler_text(tail_tokens, seed=tail_seed))
    return "".join(parts)
