"""An LLM wrapper that records each call of a run (kind, times, tokens, serving info).

It also contains the wrapped LLM as a tool is contained (:mod:`fleetcall.executor.containment`):
anything its stream raises, ``BaseException`` included (``SystemExit``, ``GeneratorExit``, a
``CancelledError`` nobody asked for), or a stream that yields something other than a
:class:`~fleetcall.llm.base.Chunk`, becomes an ``LLMError`` naming the kind of call, so the run
ends with a clear failure instead of a crash; only a real cancellation of the run and
``KeyboardInterrupt`` pass. A stream that ignores its cancellation (the deadline, a cancel) is
stopped after the grace period, and so is one whose closing (at ``join()``) does not end.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from fleetcall.errors import LLMError
from fleetcall.executor.containment import CallWatch, contained
from fleetcall.executor.result import LLMCallRecord
from fleetcall.llm.base import LLM, Chunk, LLMRequest, Usage, estimate_usage
from fleetcall.observe import describe_exception
from fleetcall.planner.literals import clean_text
from fleetcall.tracing import NO_TRACE, NoTrace, RunTrace, model_name

log = logging.getLogger("fleetcall.executor")


class RecordingLLM:
    """Implements :class:`LLM`; appends an :class:`LLMCallRecord` per call to ``records`` (and
    gives each call a span in ``trace``, see :mod:`fleetcall.tracing`).

    ``watch(kind)`` makes the :class:`CallWatch` of one call (its grace period, its slow-step
    report); by default one with the defaults of :class:`CallWatch`."""

    def __init__(self, llm: LLM, records: list[LLMCallRecord], usage: Usage, round_of: Callable[[], int],
                 watch: Callable[[str], CallWatch] | None = None, trace: RunTrace | NoTrace = NO_TRACE) -> None:
        self._llm = llm
        self._records = records      # the run's call log, appended to in call-completion order
        self._usage = usage          # the run's token total, updated in place
        self._round_of = round_of    # current round number of the run
        self._watch = watch or (lambda kind: CallWatch(kind, kind, kind="LLM call"))
        self._trace = trace
        self._model = model_name(llm) if trace is not NO_TRACE else ""   # for spans only

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        """The wrapped LLM's stream, recorded when it ends, however it ends.

        A call closed early (the planner stops reading at ``join()``) or whose LLM reports no
        usage is still counted: prompt tokens from the request, completion tokens from the text
        and tool-call pieces consumed (:func:`~fleetcall.llm.base.estimate_usage`), marked
        estimated. Raises ``LLMError`` for whatever the LLM does wrong (module docstring)."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        call = _Call()
        kind = request.context.kind
        watch = self._watch(kind)
        task = asyncio.current_task()
        base = task.cancelling() if task is not None else 0   # cancellations that are not this call's
        source: Any = None
        span = self._trace.llm_start(request, self._model, start)
        try:
            try:
                source = aiter(self._llm.stream(request))
            except BaseException as exc:
                raise _failure(exc, kind, task, base) from exc
            while True:
                chunk = await _next(source, watch, kind, task, base)
                if chunk is None:
                    break
                call.observe(chunk)
                yield chunk
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            end = loop.time()
            try:
                if source is not None and not watch.stopped:
                    await _close(source, watch)
            finally:
                call.abandoned = watch.abandoned
                record = self._record(request, start, end, call)
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
                abandoned=call.abandoned,
            )
        )
        return self._records[-1]


async def _next(source: Any, watch: CallWatch, kind: str, task: asyncio.Task[Any] | None, base: int) -> Chunk | None:
    """The stream's next chunk (cleaned), None at its end; contained (module docstring)."""
    try:
        chunk = await contained(anext(source), watch)
    except StopAsyncIteration:
        return None
    except BaseException as exc:
        raise _failure(exc, kind, task, base) from exc
    if not isinstance(chunk, Chunk):
        raise LLMError(f"{kind} LLM call failed: the stream yielded {type(chunk).__name__}, not a Chunk")
    try:
        return _clean(chunk)
    except Exception as exc:   # a Chunk whose fields are not of their types (text=b"...")
        raise LLMError(f"{kind} LLM call failed: a malformed Chunk: {describe_exception(exc)}") from exc


def _failure(exc: BaseException, kind: str, task: asyncio.Task[Any] | None, base: int) -> BaseException:
    """The LLMError for what the stream raised; re-raises a real cancellation and Ctrl-C."""
    if isinstance(exc, (LLMError, KeyboardInterrupt)):
        raise exc
    if isinstance(exc, asyncio.CancelledError):
        if task is not None and task.cancelling() > base:
            raise exc
        return LLMError(f"{kind} LLM call failed: the stream raised CancelledError although nothing cancelled it")
    return LLMError(f"{kind} LLM call failed: {describe_exception(exc)}")


async def _close(source: Any, watch: CallWatch) -> None:
    """Close the LLM's stream (it may hold an endpoint's slot), at most the grace period and then
    however long a stop takes (containment); a failure to close is logged, not raised."""
    aclose = getattr(source, "aclose", None)
    if aclose is None:
        return
    try:
        async with asyncio.timeout(watch.grace_s):
            await contained(aclose(), watch)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        task = asyncio.current_task()
        if isinstance(exc, asyncio.CancelledError) and task is not None and task.cancelling():
            raise
        log.warning("%s (%s): closing its stream failed: %s", watch.subject, watch.label, describe_exception(exc))


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
    abandoned: bool = False             # the stream was stopped after ignoring its cancellation
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
