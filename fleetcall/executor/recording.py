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
from fleetcall.llm.base import LLM, Chunk, LLMRequest, Usage, estimate_usage
from fleetcall.planner.literals import clean_text
from fleetcall.tracing import NO_TRACE, NoTrace, RunTrace, model_name


class RecordingLLM:
    """Implements :class:`LLM`; appends an :class:`LLMCallRecord` per call to ``records`` (and
    gives each call a span in ``trace``, see :mod:`fleetcall.tracing`)."""

    def __init__(self, llm: LLM, records: list[LLMCallRecord], usage: Usage, round_of: Callable[[], int],
                 trace: RunTrace | NoTrace = NO_TRACE) -> None:
        self._llm = llm
        self._records = records      # the run's call log, appended to in call-completion order
        self._usage = usage          # the run's token total, updated in place
        self._round_of = round_of    # current round number of the run
        self._trace = trace
        self._model = model_name(llm) if trace is not NO_TRACE else ""   # for spans only

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """The wrapped LLM's stream, recorded when it ends, however it ends.

        A call closed early (the planner stops reading at ``join()``) or whose LLM reports no
        usage is still counted: prompt tokens from the request, completion tokens from the text
        and tool-call pieces consumed (:func:`~fleetcall.llm.base.estimate_usage`), marked
        estimated."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = _Call()
        span = self._trace.llm_start(request, self._model, start)
        try:
            async for chunk in self._llm.stream(request):
                chunk = _clean(chunk)
                call.observe(chunk)
                yield chunk
        except (LLMError, asyncio.CancelledError, GeneratorExit) as exc:
            call.error = exc
            raise
        except Exception as exc:
            call.error = LLMError(f"{request.context.kind} LLM call failed: {type(exc).__name__}: {exc}")
            raise call.error from exc
        finally:
            record = self._record(request, start, loop.time(), call)
            self._trace.llm_end(span, record, call.error)

    def _record(self, request: LLMRequest, start: float, end: float, call: "_Call") -> LLMCallRecord:
        u = call.usage or estimate_usage(request, "".join(call.consumed))
        u = dataclasses.replace(u, calls=1, estimated_calls=min(u.estimated_calls, 1))
        self._usage.add(u)
        self._records.append(
            LLMCallRecord(
                kind=request.context.kind,
                round=self._round_of(),
                start=start,
                end=end,
                prompt_tokens=u.prompt_tokens,
                completion_tokens=u.completion_tokens,
                usage_estimated=u.estimated_calls > 0,
                finish_reason=call.finish_reason,
                info=call.info,
            )
        )
        return self._records[-1]


def _clean(chunk: Chunk) -> Chunk:
    """``chunk`` with lone UTF-16 surrogates in its text replaced (U+FFFD): a model can send one
    (a ``"\\ud800"`` escape), and no record, prompt or JSON result could then be encoded."""
    text = clean_text(chunk.text)
    if text is chunk.text and all(clean_text(d.arguments) is d.arguments for d in chunk.tool_deltas):
        return chunk
    deltas = tuple(dataclasses.replace(d, arguments=clean_text(d.arguments)) for d in chunk.tool_deltas)
    return dataclasses.replace(chunk, text=text, tool_deltas=deltas)


@dataclasses.dataclass(slots=True)
class _Call:
    """What one call's stream delivered so far."""

    usage: Usage | None = None          # the LLM's own count, if it gave one
    info: dict | None = None            # serving details, latest
    finish_reason: str | None = None
    consumed: list[str] = dataclasses.field(default_factory=list)  # text and tool-call pieces read
    error: BaseException | None = None  # what ended the stream early, if anything (for its span)

    def observe(self, chunk: Chunk) -> None:
        if chunk.text:
            self.consumed.append(chunk.text)
        for piece in chunk.tool_deltas:
            if piece.arguments:
                self.consumed.append(piece.arguments)
        if chunk.usage is not None:
            self.usage = chunk.usage
        if chunk.info is not None:
            self.info = chunk.info
        if chunk.finish_reason is not None:
            self.finish_reason = chunk.finish_reason
