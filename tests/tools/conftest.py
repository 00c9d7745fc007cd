"""Helpers for the tool tests: a minimal virtual-time event loop.

``VirtualLoop`` reads time from a counter that jumps straight to the next timer whenever the
loop would block, so ``asyncio.sleep(1)`` returns at once with ``loop.time()`` one second later.
It shows that code reads the loop's clock (not ``time.monotonic``) and waits with timers.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any

import pytest


class _VirtualSelector:
    """A selector that never blocks: a wait of ``timeout`` seconds advances the clock instead."""

    def __init__(self) -> None:
        self._inner = selectors.DefaultSelector()
        self.now = 0.0          # virtual loop time, seconds
        self.waits = 0          # how many times the loop would have blocked on a timer

    def select(self, timeout: float | None = None) -> list[Any]:
        events = self._inner.select(0)
        if events:
            return events
        if timeout is None:
            raise RuntimeError("virtual loop would block forever (nothing scheduled)")
        if timeout > 0:
            self.now += timeout
            self.waits += 1
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self.virtual = _VirtualSelector()
        super().__init__(selector=self.virtual)  # type: ignore[arg-type]  # duck-typed selector

    def time(self) -> float:
        return self.virtual.now


@pytest.fixture
def virtual_run() -> Callable[[Coroutine[Any, Any, Any]], Any]:
    """Run a coroutine to completion on a fresh :class:`VirtualLoop`."""

    def run(coro: Coroutine[Any, Any, Any]) -> Any:
        with asyncio.Runner(loop_factory=VirtualLoop) as runner:
            return runner.run(coro)

    return run
