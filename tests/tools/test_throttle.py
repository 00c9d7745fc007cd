"""LoopThrottler: rate limits on the loop's clock, waiting with one timer instead of polling."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from fleetcall.errors import ConfigError
from fleetcall.throttle import LoopThrottler


async def _starts(throttler: LoopThrottler, n: int) -> list[tuple[int, float]]:
    """Start n acquirers at once; (index, loop time since start) in order of acquisition."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    starts: list[tuple[int, float]] = []

    async def one(i: int) -> None:
        await throttler.acquire()
        starts.append((i, loop.time() - t0))

    async with asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i))
    return starts


def test_real_loop_rate_two_per_period() -> None:
    period = 0.05
    starts = asyncio.run(_starts(LoopThrottler(2, period=period), 5))
    assert [i for i, _ in starts] == [0, 1, 2, 3, 4]           # first come, first served
    times = [t for _, t in starts]
    assert times == sorted(times)
    assert times[2] >= period * 0.99 and times[3] >= period * 0.99
    assert times[4] >= 2 * period * 0.99


def test_virtual_loop_times_are_exact_and_cost_no_wall_time(
    virtual_run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    wall = time.perf_counter()
    starts = virtual_run(_starts(LoopThrottler(2, period=1.0), 5))
    assert [t for _, t in starts] == pytest.approx([0, 0, 1, 1, 2])
    assert time.perf_counter() - wall < 0.5                   # no real sleeping, no 10 ms polling


def test_waits_are_single_timers_not_polls(virtual_run: Callable[[Coroutine[Any, Any, Any]], Any]) -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        throttler = LoopThrottler(1, period=10.0)
        await throttler.acquire()
        await throttler.acquire()                             # waits 10 s of loop time
        assert loop.time() == pytest.approx(10.0)
        return loop.virtual.waits                             # type: ignore[attr-defined]  # VirtualLoop

    assert virtual_run(main()) <= 2                           # polling every 10 ms would be ~1000


def test_cancelled_waiter_does_not_block_the_others(
    virtual_run: Callable[[Coroutine[Any, Any, Any]], Any],
) -> None:
    async def main() -> float:
        loop = asyncio.get_running_loop()
        throttler = LoopThrottler(1, period=1.0)
        await throttler.acquire()
        doomed = asyncio.ensure_future(throttler.acquire())
        await asyncio.sleep(0.5)
        doomed.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await doomed
        await throttler.acquire()
        return loop.time()

    assert virtual_run(main()) == pytest.approx(1.0)


def test_reusable_across_loops_and_validates() -> None:
    throttler = LoopThrottler(1, period=0.01)
    asyncio.run(_starts(throttler, 2))
    asyncio.run(_starts(throttler, 2))                        # a new loop starts a fresh window
    for bad in ((0, 1.0), (1, 0.0), (1.5, 1.0)):
        with pytest.raises(ConfigError):
            LoopThrottler(*bad)  # type: ignore[arg-type]  # the point of the test
