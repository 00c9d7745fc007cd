"""An LLM wrapper that records each call of a run (kind, times, tokens, serving info).

It also converts any failure of the wrapped LLM into ``LLMError`` naming the kind of call, so the
run can end with a clear failure instead of a crash.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable

from fleetcall.errors import LLMError
from fleetcall.executor.result import LLMCallRecord
from fleetcall.llm.base import LLM, Chunk, LLMRequest, Usage


class RecordingLLM:
    """Implements :class:`LLM`; appends an :class:`LLMCallRecord` per call to ``records``."""

    def __init__(self, llm: LLM, records: list[LLMCallRecord], usage: Usage, round_of: Callable[[], int]) -> None:
        self._llm = llm
        self._records = records      # the run's call log, appended to in call-completion order
        self._usage = usage          # the run's token total, updated in place
        self._round_of = round_of    # current round number of the run

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        start = loop.time()
        usage: Usage | None = None
        info = None
        produced = 0
        try:
            async for chunk in self._llm.stream(request):
                produced += len(chunk.text)
                if chunk.usage is not None:
                    usage = chunk.usage
                if chunk.info is not None:
                    info = chunk.info
                yield chunk
        except (LLMError, asyncio.CancelledError, GeneratorExit):
            raise
        except Exception as exc:
            raise LLMError(f"{request.context.kind} LLM call failed: {type(exc).__name__}: {exc}") from exc
        finally:
            self._record(request, start, loop.time(), usage, info)

    def _record(self, request: LLMRequest, start: float, end: float, usage: Usage | None, info: dict | None) -> None:
        u = usage or Usage()
        self._usage.add(dataclasses.replace(u, calls=1))
        self._records.append(
            LLMCallRecord(
                kind=request.context.kind,
                round=self._round_of(),
                start=start,
                end=end,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                info=info,
            )
        )
