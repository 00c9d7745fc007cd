"""What a demo shows while it runs: the run's events, the LLM calls, and the state they add up to.

The orchestrator's stream yields task and plan events; LLM calls are seen through
:class:`WatchedLLM`, a wrapper on the LLM seam that reports each call's start and end (with the
serving ``info`` of its last chunk: endpoint, queue wait). :class:`RunState` folds both into the
rows a display draws; :func:`describe` turns one event into a plain log line.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from fleetcall import LLM, Chunk, LLMRequest, events as ev
from fleetcall.demos.common import LLMFactory, Responder
from fleetcall.llm.base import ModelInfo, model_info

# Keys of an LLM call's ``info`` that may hold its queue wait (s), in order of preference.
QUEUE_WAIT_KEYS = ("queue_wait_s", "queued_s", "queue_s", "wait_s")


@dataclass(frozen=True, slots=True)
class LLMCallStarted:
    call: int           # number of the call within its WatchedLLM, from 1
    kind: str           # planner | joiner | react | tool:<name>
    time: float         # loop time (s)
    stage: int = 0      # the request's CallContext.stage: plan round or ReAct step (0 for tool calls)


@dataclass(frozen=True, slots=True)
class LLMCallFinished:
    call: int
    kind: str
    start: float                        # loop time (s)
    end: float                          # loop time (s)
    completion_tokens: int              # from usage; streamed pieces if the stream closed before it
    info: dict[str, Any] | None         # serving details of the last chunk, if the LLM gives any
    error: str | None = None            # why the call failed, None if it did not

    @property
    def endpoint(self) -> str | None:
        return None if self.info is None else self.info.get("endpoint")

    @property
    def queue_wait_s(self) -> float | None:
        if self.info is None:
            return None
        return next((self.info[k] for k in QUEUE_WAIT_KEYS if self.info.get(k) is not None), None)


ViewEvent: TypeAlias = ev.Event | LLMCallStarted | LLMCallFinished
Sink: TypeAlias = Callable[[ViewEvent], None]


class WatchedLLM:
    """Implements the LLM protocol; reports every call of ``llm`` to ``sink`` as it starts and ends."""

    def __init__(self, llm: LLM, sink: Sink) -> None:
        self._llm = llm
        self._sink = sink
        self._numbers = itertools.count(1)

    @property
    def model_info(self) -> ModelInfo:
        """The watched model's (so ``plan_format="auto"`` sees through the watcher)."""
        return model_info(self._llm)

    async def stream(self, request: LLMRequest) -> AsyncIterator[Chunk]:
        loop = asyncio.get_running_loop()
        number, kind, start = next(self._numbers), request.context.kind, loop.time()
        self._sink(LLMCallStarted(number, kind, start, request.context.stage))
        tokens, pieces, info = None, 0, None
        error: str | None = "stopped early"
        stream = self._llm.stream(request)
        try:
            async for chunk in stream:
                pieces += bool(chunk.text)
                if chunk.usage is not None:
                    tokens = chunk.usage.completion_tokens
                if chunk.info is not None:
                    info = chunk.info
                yield chunk
            error = None
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            # The planner's stream is closed at <END_OF_PLAN>: that is a finished call, not a failure.
            failed = error if error != "stopped early" or kind != "planner" else None
            # Without usage (a stream closed early), each streamed piece counts as a token.
            count = pieces if tokens is None else tokens
            self._sink(LLMCallFinished(number, kind, start, loop.time(), count, info, failed))
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:   # close the model's stream now, not when it is collected
                await aclose()


def watched(factory: LLMFactory, sink: Sink) -> LLMFactory:
    """``factory`` whose models report their calls to ``sink``."""

    def make(responder: Responder) -> LLM:
        return WatchedLLM(factory(responder), sink)

    return make


# -- the state a display draws ---------------------------------------------------------------------
@dataclass(slots=True)
class TaskRow:
    round: int
    id: int
    action: str                     # the call as planned, e.g. search("France")
    planned_at: float               # loop time (s)
    state: str = "planned"          # planned | running | done | failed | skipped | invalid
    start: float | None = None      # loop time (s)
    end: float | None = None        # loop time (s)
    detail: str = ""                # the result (shortened) or the error

    def duration(self, now: float) -> float | None:
        if self.start is None:
            return None
        return (self.end if self.end is not None else now) - self.start


@dataclass(slots=True)
class CallRow:
    call: int
    kind: str
    round: int                      # plan round (ReAct step) of the call
    start: float                    # loop time (s)
    end: float | None = None
    tokens: int = 0
    endpoint: str | None = None
    queue_wait_s: float | None = None
    error: str | None = None

    def duration(self, now: float) -> float:
        return (self.end if self.end is not None else now) - self.start


@dataclass(slots=True)
class RunState:
    """The run as far as its events tell: folded by :meth:`apply`, drawn by a display."""

    title: str
    question: str
    t0: float                                          # loop time (s) the run started
    tasks: dict[tuple[int, int], TaskRow] = field(default_factory=dict)   # (round, task id) -> row
    calls: dict[int, CallRow] = field(default_factory=dict)               # call number -> row
    replans: list[tuple[int, str, float]] = field(default_factory=list)   # (round, reason, time)
    rejected: list[tuple[int, str]] = field(default_factory=list)         # (round, issues)
    round: int = 0
    answer: str | None = None
    finished_at: float | None = None

    def apply(self, event: ViewEvent) -> None:
        match event:
            case ev.TaskPlanned(round=r, task=task, time=t):
                self.round = max(self.round, r)
                self.tasks[(r, task.id)] = TaskRow(r, task.id, action_text(task.source, task.tool), t)
            case ev.TaskStarted(round=r, task_id=i, time=t):
                self._task(r, i, state="running", start=t)
            case ev.TaskFinished(round=r, task_id=i, observation=obs, start=s, end=e):
                self._task(r, i, state="done", start=s, end=e, detail=short(obs.value))
            case ev.TaskFailed(round=r, task_id=i, observation=obs, start=s, end=e):
                self._task(r, i, state="failed", start=s, end=e, detail=short(obs.error))
            case ev.TaskSkipped(round=r, task_id=i, observation=obs):
                self._task(r, i, state="skipped", detail=short(obs.error))
            case ev.PlanRejected(round=r, issues=issues):
                self.rejected.append((r, "; ".join(map(str, issues))))
            case ev.Replanning(round=r, reason=reason, time=t):
                self.replans.append((r, reason, t))
                self.round = r + 1
            case ev.AnswerReady(answer=answer):
                self.answer = answer
            case ev.RunFinished(result=result):
                self.finished_at = result.finished_at
            case LLMCallStarted(call=n, kind=kind, time=t, stage=stage):
                # Tool calls carry no stage: they belong to the round running now.
                self.calls[n] = CallRow(n, kind, self.round if kind.startswith("tool:") else stage, t)
            case LLMCallFinished():
                self._finish_call(event)

    def _task(self, round_no: int, task_id: int, **changes: Any) -> None:
        row = self.tasks.get((round_no, task_id))
        if row is None:   # ReAct steps are not planned ahead: a row appears when its task does
            row = self.tasks[(round_no, task_id)] = TaskRow(round_no, task_id, "?", changes.get("start") or 0.0)
        for name, value in changes.items():
            setattr(row, name, value)

    def _finish_call(self, event: LLMCallFinished) -> None:
        row = self.calls.get(event.call) or CallRow(event.call, event.kind, self.round, event.start)
        row.end, row.tokens, row.error = event.end, event.completion_tokens, event.error
        row.endpoint, row.queue_wait_s = event.endpoint, event.queue_wait_s
        self.calls[event.call] = row


_NUMBER = re.compile(r"^\s*\d+\s*\.\s*")


def action_text(source: str, tool: str) -> str:
    """The action as the planner wrote it, without its ``N.`` prefix."""
    return _NUMBER.sub("", source).strip() or f"{tool}(...)"


def short(value: object, limit: int = 70) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _dash(value: float | str | None, fmt: str = "{:.2f}s") -> str:
    if value is None:
        return "-"
    return fmt.format(value) if isinstance(value, float) else str(value)


def describe(event: ViewEvent, t0: float) -> str | None:
    """One plain log line for ``event`` (None for events that add nothing to read)."""
    at = f"[{event_time(event) - t0:6.2f}s]"
    match event:
        case ev.TaskPlanned(round=r, task=task):
            return f"{at} plan {r}: {task.id}. {short(action_text(task.source, task.tool), 160)}"
        case ev.TaskStarted(task_id=i, tool=tool):
            return f"{at}   start  task {i} ({tool})"
        case ev.TaskFinished(task_id=i, observation=obs, start=s, end=e):
            return f"{at}   done   task {i} in {e - s:.2f}s -> {short(obs.value)}"
        case ev.TaskFailed(task_id=i, observation=obs) | ev.TaskSkipped(task_id=i, observation=obs):
            return f"{at}   {obs.status.value:6} task {i}: {obs.error}"
        case ev.Replanning(reason=reason):
            return f"{at} replanning: {reason}"
        case ev.PlanRejected(issues=issues):
            return f"{at} plan rejected: " + "; ".join(map(str, issues))
        case LLMCallStarted(kind=kind):
            return f"{at}   llm    {kind} call started"
        case LLMCallFinished(kind=kind, start=s, end=e, completion_tokens=n, error=error):
            how = f"failed: {error}" if error else f"done in {e - s:.2f}s, {n} tokens"
            return (f"{at}   llm    {kind} {how} (endpoint {_dash(event.endpoint)}, "
                    f"queued {_dash(event.queue_wait_s)})")
    return None


def event_time(event: ViewEvent) -> float:
    """Loop time (s) at which ``event`` happened."""
    match event:
        case ev.RunFinished(result=result):
            return result.finished_at
        case ev.TaskFinished(end=end) | ev.TaskFailed(end=end) | LLMCallFinished(end=end):
            return end
    return getattr(event, "time", 0.0)
