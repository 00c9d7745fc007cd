"""Running one tool call: limits, timeout, retries. Failures become error observations."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from fleetcall.errors import ToolArgumentError
from fleetcall.plan import Observation, ObservationStatus
from fleetcall.throttle import LoopThrottler
from fleetcall.tools.base import Tool, ToolContext


@dataclass(slots=True)
class ToolLimits:
    """The shared limits of one tool across every run of an orchestrator."""

    semaphore: asyncio.Semaphore | None = None   # max_concurrency, if set
    throttler: LoopThrottler | None = None       # rate_limit per rate_period_s, if set

    @classmethod
    def for_tool(cls, tool: Tool) -> "ToolLimits":
        opts = tool.options
        sem = asyncio.Semaphore(opts.max_concurrency) if opts.max_concurrency else None
        thr = LoopThrottler(opts.rate_limit, period=opts.rate_period_s) if opts.rate_limit else None
        return cls(sem, thr)


@dataclass(slots=True)
class Attempted:
    observation: Observation
    attempts: int                                 # how many times the tool was called
    arguments: dict[str, Any] = field(default_factory=dict)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


async def _attempt(tool: Tool, arguments: dict[str, Any], ctx: ToolContext, limits: ToolLimits) -> Any:
    if limits.throttler is not None:
        await limits.throttler.acquire()
    timeout = tool.options.timeout_s
    if limits.semaphore is None:
        async with asyncio.timeout(timeout):
            return await tool.run(arguments, ctx)
    async with limits.semaphore:
        async with asyncio.timeout(timeout):
            return await tool.run(arguments, ctx)


async def call_tool(
    tool: Tool,
    task_id: int,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    ctx: ToolContext,
    limits: ToolLimits,
) -> Attempted:
    """Bind, then call with up to ``1 + retries`` attempts; never raises but ``CancelledError``."""
    try:
        arguments = tool.bind(tuple(args), dict(kwargs))
    except ToolArgumentError as exc:
        obs = Observation(task_id, tool.name, ObservationStatus.ERROR, error=f"bad arguments: {exc}")
        return Attempted(obs, 0)
    error = ""
    attempts = 0
    for _ in range(1 + max(0, tool.options.retries)):
        attempts += 1
        try:
            value = await _attempt(tool, arguments, ctx, limits)
        except TimeoutError:
            error = f"timed out after {tool.options.timeout_s}s"
        except Exception as exc:  # a tool's failure is an observation, not a crash of the run
            error = _describe(exc)
        else:
            return Attempted(Observation(task_id, tool.name, ObservationStatus.OK, value=value), attempts, arguments)
    if attempts > 1:
        error = f"{error} (after {attempts} attempts)"
    return Attempted(Observation(task_id, tool.name, ObservationStatus.ERROR, error=error), attempts, arguments)
