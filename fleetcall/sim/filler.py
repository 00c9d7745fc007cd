"""Prompt text of a given length for trace replay and the emulator: traces have lengths, not text.

:func:`filler_text` makes a prompt of exactly ``n`` estimated tokens, and :func:`blocks_text` one
whose 512-token blocks are named by Mooncake-style hash ids, so requests that share leading ids
share a real, hashable prefix (:func:`fleetcall.router.prefix.block_hashes`).

    >>> from fleetcall.llm.base import count_tokens
    >>> from fleetcall.router.prefix import block_hashes
    >>> count_tokens(filler_text(100, seed=1))
    100
    >>> a, b = blocks_text([7, 8], 512), blocks_text([7, 9], 512)
    >>> block_hashes(a)[:32] == block_hashes(b)[:32], block_hashes(a)[32] == block_hashes(b)[32]
    (True, False)
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from fleetcall.router.prefix import CHARS_PER_TOKEN

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
    if end <= len(cycle):
        return cycle[start:end]
    whole, rest = divmod(end - len(cycle), len(cycle))  # cycles after the first, and the rest
    return cycle[start:] + cycle * whole + cycle[:rest]


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
