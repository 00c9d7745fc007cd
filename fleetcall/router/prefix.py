"""Prompt text, token counts and prefix-block hashes, the same on both sides of an endpoint.

The pool (to route a call where its prompt prefix is cached) and the emulated engine (to skip
prefill of cached blocks) must cut a prompt into the same blocks. Both use these functions. A
token is :data:`CHARS_PER_TOKEN` characters (the model-free estimate of
:func:`fleetcall.llm.base.count_tokens`), so a block of ``block_tokens`` tokens is a fixed run of
characters, and block ``i``'s hash chains the hash of block ``i - 1``: equal hashes mean equal
prefixes, as in vLLM's automatic prefix caching.

Prompts made of filler text for trace replay live in :mod:`fleetcall.sim.filler`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable

from fleetcall.llm.base import Message

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
    # Cut on characters, not bytes, so non-ASCII text keeps block boundaries on token counts.
    if len(data) != len(text):
        pieces = [text[i:i + size].encode("utf-8", "surrogatepass")
                  for i in range(0, len(text) - size + 1, size)]
    else:
        pieces = [data[i:i + size] for i in range(0, len(data) - size + 1, size)]
    # Each digest chains the one before; the 8-byte digests are read as big-endian integers
    # all at once (this runs on both sides of an endpoint, for every call).
    blake2b, prev = hashlib.blake2b, b""
    digests = []
    for piece in pieces:
        prev = blake2b(prev + piece, digest_size=8).digest()
        digests.append(prev)
    return struct.unpack(f">{len(digests)}Q", b"".join(digests))
