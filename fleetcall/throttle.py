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
        # `now >= start + period`, the very sum acquire() sleeps until: `now - start >= period`
        # can round below the period at that instant and the wait would spin forever
        while self._task_logs and now >= self._task_logs[0] + self.period:
            self._task_logs.popleft()

    def free_at(self) -> float:
        """Loop time a start is allowed (the current time if one is allowed now), without
        waiting or recording one: for a caller that goes elsewhere instead of waiting."""
        self._bind_loop()
        self.flush()
        if len(self._task_logs) < self.rate_limit:
            return asyncio.get_running_loop().time()
        return self._task_logs[0] + self.period  # the sum flush() compares with

    def record(self) -> None:
        """Count a start now (when :meth:`free_at` allows one), without waiting."""
        self._bind_loop()
        self._task_logs.append(asyncio.get_running_loop().time())

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


class TokenWindow:
    """At most ``limit`` tokens per ``period`` seconds of loop time (an endpoint's tpm): a call
    waits until the tokens it will use fit in the window; waiters go in arrival order.

    asyncio-throttle counts calls, not their size, so tokens get this sliding-window log of
    ``(loop time, tokens)`` instead. A call bigger than the whole limit waits for an empty window
    and then goes alone (refusing it would make it impossible to serve at all).

    >>> window = TokenWindow(100_000, period=60.0)
    >>> # await window.acquire(prompt_tokens + max_tokens)
    """

    def __init__(self, limit: int, period: float = 60.0) -> None:
        if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
            raise ConfigError(f"token limit must be a positive integer, got {limit!r}")
        if period <= 0:
            raise ConfigError(f"period must be a positive number of seconds, got {period!r}")
        self.limit = limit
        self.period = period
        self._log: deque[tuple[float, int]] = deque()  # (loop time, tokens), oldest first
        self._used = 0                                   # tokens in the log
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None

    def _bind_loop(self) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._lock is None:
            self._loop, self._lock = loop, asyncio.Lock()
            self._log.clear()
            self._used = 0
        return self._lock

    def _flush(self, now: float) -> None:
        while self._log and now >= self._log[0][0] + self.period:  # as LoopThrottler.flush
            self._used -= self._log.popleft()[1]

    def free_at(self, tokens: int) -> float:
        """Loop time ``tokens`` more fit in the window (the current time if they fit now),
        without waiting or counting them; a call bigger than the whole limit waits for an
        empty window."""
        self._bind_loop()
        now = asyncio.get_running_loop().time()
        self._flush(now)
        tokens, used = max(int(tokens), 0), self._used
        if not self._log or used + tokens <= self.limit:
            return now
        for left, (at, n) in enumerate(self._log, start=1):  # the window frees in log order
            used -= n
            if left == len(self._log) or used + tokens <= self.limit:
                return at + self.period  # the sum _flush() compares with
        raise AssertionError("unreachable: the last start leaving empties the window")

    def record(self, tokens: int) -> None:
        """Count ``tokens`` now (when :meth:`free_at` lets them in), without waiting."""
        self._bind_loop()
        tokens = max(int(tokens), 0)
        self._log.append((asyncio.get_running_loop().time(), tokens))
        self._used += tokens

    async def acquire(self, tokens: int) -> None:
        """Wait until ``tokens`` more fit in the window, then count them."""
        tokens = max(int(tokens), 0)
        async with self._bind_loop():
            loop = asyncio.get_running_loop()
            while True:
                self._flush(loop.time())
                if not self._log or self._used + tokens <= self.limit:
                    break
                await asyncio.sleep(max(0.0, self._log[0][0] + self.period - loop.time()))
            self._log.append((loop.time(), tokens))
            self._used += tokens
