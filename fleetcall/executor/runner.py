"""Running one tool call: limits, timeout, retries, containment. Failures become error observations.

Whatever the tool does, :func:`call_tool` returns an observation, except for two exceptions it
passes on: a real cancellation of the calling task (the run's deadline, a cancel) and
``KeyboardInterrupt``. Everything else a tool raises, ``BaseException`` included (``SystemExit``,
``GeneratorExit``, a ``CancelledError`` it raised although nothing cancelled it), is a failed
attempt. See :mod:`fleetcall.executor.containment` for how a call that ignores its cancellation
or blocks the loop is handled, and :mod:`fleetcall.executor.threads` for sync tools.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetcall.errors import ToolArgumentError
from fleetcall.executor.containment import CallWatch, contained
from fleetcall.executor.threads import LaneRunner, ThreadLane
from fleetcall.logs import EXECUTOR, event
from fleetcall.observe import describe_exception
from fleetcall.plan import Observation, ObservationStatus
from fleetcall.throttle import LoopThrottler
from fleetcall.tools.base import Tool, ToolContext

DEFAULT_SYNC_THREADS = 8   # threads of a sync tool's lane when its max_concurrency is not set

log = logging.getLogger(EXECUTOR)


@dataclass(slots=True)
class ToolLimits:
    """The shared limits of one tool across every run of an orchestrator."""

    semaphore: asyncio.Semaphore | None = None   # max_concurrency, if set
    throttler: LoopThrottler | None = None       # rate_limit per rate_period_s, if set
    lane: ThreadLane | None = None               # threads for its sync work (threads start on first use)

    @classmethod
    def for_tool(cls, tool: Tool, sync_threads: int = DEFAULT_SYNC_THREADS) -> "ToolLimits":
        opts = tool.options
        sem = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
        thr = LoopThrottler(opts.rate_limit, period=opts.rate_period_s) if opts.rate_limit else None
        return cls(sem, thr, ThreadLane(tool.name, opts.max_concurrency or sync_threads))

    def runner(self, watch: CallWatch) -> LaneRunner | None:
        """Where the call watched by ``watch`` runs its sync work (``ToolContext.threads``)."""
        if self.lane is None:
            return None
        watch.threads = self.lane.size
        return LaneRunner(self.lane, watch.label, watch.on_thread)


@dataclass(slots=True)
class Attempted:
    observation: Observation
    attempts: int                                 # how many times the tool was called
    arguments: dict[str, Any] = field(default_factory=dict)


class _TimedOut(Exception):
    """The attempt's own ``timeout_s`` expired (not a TimeoutError the tool raised)."""


async def _attempt(tool: Tool, arguments: dict[str, Any], ctx: ToolContext, limits: ToolLimits,
                   watch: CallWatch) -> Any:
    if limits.throttler is not None:
        await limits.throttler.acquire()
    async with limits.semaphore if limits.semaphore is not None else contextlib.nullcontext():
        scope = asyncio.timeout(tool.options.timeout_s)
        try:
            async with scope:
                return await contained(tool.run(arguments, ctx), watch)
        except TimeoutError:
            if scope.expired():
                raise _TimedOut from None
            raise


def _failure(exc: BaseException, tool: Tool, watch: CallWatch) -> str:
    """What a failed attempt observed; re-raises a real cancellation and KeyboardInterrupt."""
    if isinstance(exc, asyncio.CancelledError):
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise exc
        return "the tool raised CancelledError although nothing cancelled it"
    if isinstance(exc, KeyboardInterrupt):
        raise exc
    if isinstance(exc, _TimedOut):
        why = watch.why_stopped()
        return f"timed out after {tool.options.timeout_s}s" + (f"; {why}" if why else "")
    return describe_exception(exc)


async def call_tool(
    tool: Tool,
    task_id: int,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    ctx: ToolContext,
    limits: ToolLimits,
    watch: CallWatch | None = None,
) -> Attempted:
    """Bind, then call with up to ``1 + retries`` attempts; never raises but a real
    ``CancelledError`` and ``KeyboardInterrupt``. ``watch`` collects what the record should say
    (an abandoned thread, a loop-blocking step). A failed attempt that is retried is logged
    (``task.retry``, INFO, on ``fleetcall.executor``)."""
    watch = watch if watch is not None else CallWatch(tool.name, f"task {task_id}")
    try:
        arguments = tool.bind(tuple(args), dict(kwargs))
    except ToolArgumentError as exc:
        why = describe_exception(exc).removeprefix("ToolArgumentError: ")
        obs = Observation(task_id, tool.name, ObservationStatus.ERROR, error=f"bad arguments: {why}")
        return Attempted(obs, 0)
    except BaseException as exc:  # a tool's own bind() failing is its failure, not the run's
        obs = Observation(task_id, tool.name, ObservationStatus.ERROR,
                          error=f"binding the arguments failed: {_failure(exc, tool, watch)}")
        return Attempted(obs, 0)
    error = ""
    attempts = 0
    most = 1 + max(0, tool.options.retries)
    for _ in range(most):
        attempts += 1
        try:
            value = await _attempt(tool, arguments, ctx, limits, watch)
        except BaseException as exc:  # a tool's failure is an observation, not a crash of the run
            error = _failure(exc, tool, watch)
            if attempts < most:
                event(log, logging.INFO, "task.retry", watch.label, tool=tool.name, attempt=attempts,
                      attempts=most, error=error)
        else:
            return Attempted(Observation(task_id, tool.name, ObservationStatus.OK, value=value), attempts, arguments)
    if attempts > 1:
        error = f"{error} (after {attempts} attempts)"
    return Attempted(Observation(task_id, tool.name, ObservationStatus.ERROR, error=error), attempts, arguments)
