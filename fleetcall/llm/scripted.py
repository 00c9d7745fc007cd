"""A scripted LLM: replays given responses chunk by chunk, at a configurable pace.

Used by tests, demos and the executor benchmark. Time is spent with ``asyncio.sleep`` so the same
script runs in real time or instantly under the virtual clock.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass

from fleetcall.errors import LLMError
from fleetcall.llm.base import Chunk, LLMRequest, Usage, prompt_tokens

_TOKEN = re.compile(r"\s*\S{1,4}|\s+")

Responder = Callable[[LLMRequest], str]


def split_tokens(text: str) -> list[str]:
    """Split text into pseudo-tokens (up to 4 characters with leading whitespace); joins back exactly."""
    return _TOKEN.findall(text)


@dataclass(slots=True)
class Pace:
    ttft_s: float = 0.0        # seconds before the first chunk (prefill)
    tpot_s: float = 0.0        # seconds per output token after the first
    tokens_per_chunk: int = 1  # how many pseudo-tokens each yielded chunk carries

    def chunk_offsets(self, text: str) -> list[tuple[int, float]]:
        """For each chunk of ``text``: (characters of text delivered once it is out, seconds
        after the call started at which it is yielded). Chunk ``k`` starts at token
        ``k * tokens_per_chunk`` and comes out at ``ttft + tpot * that token index``."""
        tokens = split_tokens(text)
        out: list[tuple[int, float]] = []
        chars = 0
        step = self.tokens_per_chunk
        for start in range(0, len(tokens), step):
            chars += sum(len(t) for t in tokens[start:start + step])
            out.append((chars, self.ttft_s + self.tpot_s * start))
        return out

    def duration(self, text: str) -> float:
        """Seconds from the call's start to its last chunk (usage comes right after it)."""
        offsets = self.chunk_offsets(text)
        return offsets[-1][1] if offsets else self.ttft_s

    def time_of_char(self, text: str, index: int) -> float:
        """Seconds after the call started at which character ``index`` of ``text`` is out."""
        for chars, at in self.chunk_offsets(text):
            if chars > index:
                return at
        raise IndexError(f"character {index} is past the end of a {len(text)}-character text")


class ScriptedLLM:
    """Answers from a script: a list replayed in order, or a function of the request.

    >>> llm = ScriptedLLM(["1. search('x')\\njoin()", "Finish(done)"], tpot_s=0.01)
    """

    def __init__(
        self,
        script: Iterable[str] | Responder,
        *,
        ttft_s: float = 0.0,
        tpot_s: float = 0.0,
        tokens_per_chunk: int = 1,
    ) -> None:
        if tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        self.pace = Pace(ttft_s, tpot_s, tokens_per_chunk)
        self._responder: Responder | None = script if callable(script) else None
        self._queue: deque[str] = deque() if callable(script) else deque(script)
        self.requests: list[LLMRequest] = []  # every request seen, in arrival order

    def _next_text(self, request: LLMRequest) -> str:
        if self._responder is not None:
            return self._responder(request)
        if not self._queue:
            raise LLMError(
                f"scripted LLM has no response left for call #{len(self.requests)} "
                f"(kind={request.context.kind!r})"
            )
        return self._queue.popleft()

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """Replay the next answer; ``request.max_tokens`` cuts it (``finish_reason`` "length")
        as a server would. Usage (prompt: :func:`prompt_tokens`, completion: pseudo-tokens) and
        the finish reason come on the last chunk, after the text."""
        self.requests.append(request)
        text = self._next_text(request)
        tokens = split_tokens(text)
        finish = "stop"
        if request.max_tokens is not None and len(tokens) > request.max_tokens:
            tokens, finish = tokens[:max(request.max_tokens, 0)], "length"
        pace = self.pace
        loop = asyncio.get_running_loop()
        started = loop.time()
        # Each chunk is due at an absolute offset from the start (ttft + tpot * its first token),
        # so the pace does not drift by the sleeps' own overshoot under a real clock.
        if pace.ttft_s > 0:
            await asyncio.sleep(pace.ttft_s)
        step = pace.tokens_per_chunk
        for start in range(0, len(tokens), step):
            if start > 0 and pace.tpot_s > 0:
                await asyncio.sleep(max(0.0, started + pace.ttft_s + pace.tpot_s * start - loop.time()))
            yield Chunk("".join(tokens[start : start + step]))
        yield Chunk(usage=Usage(prompt_tokens(request), len(tokens), 1), finish_reason=finish)
