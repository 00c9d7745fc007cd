"""A real-time event loop whose clock runs ``speed`` times faster than the wall clock.

Endpoints started with ``fleetcall emulate --speed K`` serve K times faster than the GPU they
emulate. A client on a :class:`DilatedEventLoop` with the same ``speed`` then sees them exactly
as it would see the real GPUs: its ``loop.time()`` advances K seconds per wall second, so every
latency it measures, every arrival gap it waits and every deadline and timeout it sets is in
the emulated GPU's seconds. fleetcall reads time only from the running loop and waits only on
it (docs/architecture.md, "One clock"), so the pool, its predictors (which start from the GPU's
profile), the replay and the reports run unchanged: a 120 s experiment takes 120/K wall
seconds. What is not emulated is dilated too: a router's or the network's real cost per call
shows K times larger on this clock (:mod:`fleetcall.bench.realclock` reports it in wall time).

    >>> import asyncio, time
    >>> async def nap() -> float:
    ...     await asyncio.sleep(5.0)
    ...     return asyncio.get_running_loop().time()
    >>> wall = time.monotonic()
    >>> end = run_dilated(nap(), speed=100.0)
    >>> end > 5.0 and time.monotonic() - wall < 4.0   # 5 loop seconds in about 0.05 wall seconds
    True
"""

from __future__ import annotations

import asyncio
import selectors
import time
from collections.abc import Coroutine
from typing import Any, TypeVar

from fleetcall.sim.engine import check_speed
from fleetcall.vclock import DelegatingSelector

__all__ = ["DilatedEventLoop", "run_dilated"]

_T = TypeVar("_T")


class _DilatedSelector(DelegatingSelector):
    """A real selector whose ``select`` timeout (loop seconds) is turned into wall seconds."""

    def __init__(self, speed: float) -> None:
        super().__init__()
        self.speed = speed  # loop seconds per wall second

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._real.select(None if timeout is None else timeout / self.speed)


class DilatedEventLoop(asyncio.SelectorEventLoop):
    """asyncio's selector loop with ``time()`` = wall-clock monotonic seconds x ``speed``.

    Real sockets, subprocesses and threads work as on any loop (they run in wall time); timers
    fire when the dilated clock reaches them. ``speed=1`` is an ordinary loop. Raises
    ValueError for a speed that is not a finite number > 0.
    """

    def __init__(self, speed: float = 1.0) -> None:
        selector = _DilatedSelector(1.0)
        super().__init__(selector)
        try:
            self.speed = check_speed(speed)  # loop seconds per wall second
        except ValueError:
            self.close()  # checked once the loop exists, so it closes cleanly
            raise
        selector.speed = self.speed

    def time(self) -> float:
        return time.monotonic() * self.speed


def run_dilated(coro: Coroutine[Any, Any, _T], *, speed: float) -> _T:
    """``asyncio.run(coro)`` on a :class:`DilatedEventLoop` running ``speed`` times faster."""
    with asyncio.Runner(loop_factory=lambda: DilatedEventLoop(speed)) as runner:
        return runner.run(coro)
