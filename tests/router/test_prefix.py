"""Prefix-block hashes: the chained blake2b digests of every full block, read as integers."""

from __future__ import annotations

import hashlib

import pytest

from fleetcall.router.prefix import block_hashes


def _reference(text: str, block_tokens: int) -> tuple[int, ...]:
    """The definition, one block at a time: blake2b-64 of the previous digest + the block."""
    size, prev, out = block_tokens * 4, b"", []
    for i in range(0, len(text) - size + 1, size):
        prev = hashlib.blake2b(prev + text[i:i + size].encode("utf-8", "surrogatepass"),
                               digest_size=8).digest()
        out.append(int.from_bytes(prev, "big"))
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
