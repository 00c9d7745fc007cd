"""Rate limits on the loop's clock: :class:`LoopThrottler`.

``asyncio_throttle.Throttler`` reads ``time.monotonic()`` and polls every 10 ms. Under the
virtual-clock loop both are wrong: the wall clock does not move with loop time, and polling
would advance virtual time in 10 ms steps for nothing. This subclass reads
``asyncio.get_running_loop().time()`` and sleeps exactly until the oldest start leaves the
window, so a rate limit costs one timer per wait, in real or virtual time.
"""

from __future__ import annotations

import asyncio
from collections import deque

from asyncio_throttle import Throttler

from fleetcall.errors import ConfigError


class LoopThrottler(Throttler):
    """At most ``rate_limit`` acquisitions per ``period`` seconds of loop time; FIFO waiters.

    >>> throttler = LoopThrottler(2, period=1.0)
    >>> # async with throttler: ...   (or: await throttler.acquire())
    """

    def __init__(self, rate_limit: int, period: float = 1.0, retry_interval: float = 0.01) -> None:
        if not isinstance(rate_limit, int) or isinstance(rate_limit, bool) or rate_limit < 1:
            raise ConfigError(f"rate_limit must be a positive integer, got {rate_limit!r}")
        if not isinstance(period, (int, float)) or period <= 0:
            raise ConfigError(f"period must be a positive number of seconds, got {period!r}")
        super().__init__(rate_limit, period, retry_interval)  # retry_interval: unused here
        self._task_logs: deque[float] = deque()          # loop times of starts in the window, oldest first
        self._loop: asyncio.AbstractEventLoop | None = None  # loop the log and lock belong to
        self._lock: asyncio.Lock | None = None           # queues waiters in arrival order

    def _bind_loop(self) -> asyncio.Lock:
        """The lock of the running loop; a new loop starts with a fresh window."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop = loop
            self._lock = asyncio.Lock()
            self._task_logs.clear()
        return self._lock

    def flush(self) -> None:
        """Forget the starts that have left the window (those ``period`` or more ago)."""
        now = asyncio.get_running_loop().time()
        while self._task_logs and now - self._task_logs[0] >= self.period:
            self._task_logs.popleft()

    async def acquire(self) -> None:
        """Wait until a start is allowed, then record it; waiters go in arrival order."""
        async with self._bind_loop():
            loop = asyncio.get_running_loop()
            while True:
                self.flush()
                if len(self._task_logs) < self.rate_limit:
                    break
                await asyncio.sleep(max(0.0, self._task_logs[0] + self.period - loop.time()))
            self._task_logs.append(loop.time())
