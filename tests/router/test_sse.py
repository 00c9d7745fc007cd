"""SSE parsing: chunks split into lines exactly as httpx's ``aiter_lines`` splits them."""

from __future__ import annotations

import random

from httpx._decoders import LineDecoder  # the reference the client used to read through

from fleetcall.router.sse import LineSplitter


def _lines(decoder: LineDecoder | LineSplitter, chunks: list[str]) -> list[str]:
    out: list[str] = []
    for chunk in chunks:
        out += decoder.decode(chunk)
    return out + decoder.flush()


def test_lines_split_as_httpx_splits_them_however_the_text_is_chunked() -> None:
    rng = random.Random(8)
    alphabet = ["a", "b", " ", ":", "\n", "\r", "\r\n", "\x0b", "\x1c", "\x85", "\u2028", "é"]
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(30)))
        cuts = sorted(rng.sample(range(1, len(text)), min(rng.randrange(5), max(len(text) - 1, 0))))
        chunks = [text[i:j] for i, j in zip([0, *cuts], [*cuts, len(text)]) if text[i:j]]
        assert _lines(LineSplitter(), chunks) == _lines(LineDecoder(), chunks), repr(chunks)


def test_a_carriage_return_at_a_chunk_end_waits_for_its_line_feed() -> None:
    splitter = LineSplitter()
    assert splitter.decode("data: a\r") == []
    assert splitter.decode("\ndata: b\n\n") == ["data: a", "data: b", ""]
    assert splitter.flush() == []
