"""The pool's I/O shell under cancellation at every await point (virtual clock).

For each scenario a call is started, the loop is stepped ``k`` times (``await sleep(0)``: one
loop iteration, which resumes the call's task at most once, and jumps the virtual clock when
everything waits on timers), then the call is cancelled -- for every ``k`` until the call would
have finished first. Each time: the call ends with CancelledError (never another error), the
core's invariants hold, it holds nothing for the call, and the pool serves the next call at
once. The same for a caller that stops reading after ``k`` chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from fleetcall.llm.base import Completion, complete
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import Faults
from fleetcall.sim.responders import LengthsResponder
from tests.router.helpers import MODEL, Server, ask, fleet, now, vrun

MAX_STEPS = 400


async def _step() -> None:
    """Let the loop run one iteration. When nothing else is ready (every task waits on a
    timer), wait for the earliest timer instead, so the virtual clock jumps to the next event.
    (Reads the loop's ready queue and timer heap: asyncio offers no public "one step".)"""
    loop = asyncio.get_running_loop()
    ready, timers = loop._ready, loop._scheduled  # type: ignore[attr-defined]  # see above
    if ready or not timers:
        await asyncio.sleep(0)
    else:
        await asyncio.sleep(max(min(t.when() for t in timers) - loop.time(), 0.0))


def _settled(pool: EndpointPool, live: int) -> None:
    """The core holds exactly ``live`` calls, and its invariants hold."""
    pool.core.check(now())
    assert len(pool.core) == live, f"{len(pool.core)} calls left in the core, expected {live}"


@contextlib.asynccontextmanager
async def _single(**kwargs: Any) -> AsyncIterator[EndpointPool]:
    async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1, policy="slack",
                                     responder=LengthsResponder(), **kwargs) as pool:
        yield pool


async def _queued_behind(pool: EndpointPool) -> list[asyncio.Task[Completion]]:
    return [asyncio.create_task(complete(pool, ask("ahead", query="ahead", max_tokens=40)))]


async def _nothing(pool: EndpointPool) -> list[asyncio.Task[Completion]]:
    return []


@contextlib.asynccontextmanager
async def _healed_after(seconds: float, server: Server) -> AsyncIterator[EndpointPool]:
    """A pool over ``server`` alone, whose faults stop after ``seconds``."""
    async with fleet(server, policy="slack", retry=RetryConfig()) as (pool, eps):
        async def heal() -> None:
            await asyncio.sleep(seconds)
            eps[server.name].faults = Faults()

        healer = asyncio.create_task(heal())
        try:
            yield pool
        finally:
            await healer


async def _prime_rpm(pool: EndpointPool) -> list[asyncio.Task[Completion]]:
    await complete(pool, ask("first", query="first"))  # the rpm window is now full
    return []


Scenario = tuple[Callable[[], contextlib.AbstractAsyncContextManager[Any]],
                 Callable[[EndpointPool], Awaitable[list[asyncio.Task[Completion]]]]]


def _fleet(*servers: Server, **kwargs: Any) -> Callable[[], Any]:
    @contextlib.asynccontextmanager
    async def build() -> AsyncIterator[EndpointPool]:
        async with fleet(*servers, **kwargs) as (pool, _):
            yield pool
    return build


SCENARIOS: dict[str, Scenario] = {
    "alone": (_single, _nothing),
    "queued behind another call": (_single, _queued_behind),
    "retried after a 500": (_fleet(Server("bad", Faults(error_rate=1.0)), Server("good"),
                                   retry=RetryConfig(backoff_s=0.0)), _nothing),
    "parked by a 429": (lambda: _healed_after(0.2, Server(
        "only", Faults(rate_limit_rate=1.0, retry_after_s=0.5))), _nothing),
    "throttled by rpm": (lambda: EndpointPool(
        [EndpointConfig(name="slow", base_url=f"emulated://A100-80G/{MODEL}", rpm=1)],
        responder=LengthsResponder()), _prime_rpm),
}


async def _cancel_after(build: Callable[[], Any], before: Callable[[EndpointPool], Any],
                        steps: int) -> bool:
    """Cancel the call after ``steps`` loop iterations; False once it finished first."""
    async with build() as pool:
        others = await before(pool)
        call = asyncio.create_task(complete(pool, ask("target", query="target", max_tokens=24)))
        for _ in range(steps):
            await _step()
        finished = call.done()
        call.cancel()
        (result,) = await asyncio.gather(call, return_exceptions=True)
        if not finished:
            assert isinstance(result, asyncio.CancelledError), repr(result)
        else:
            assert isinstance(result, Completion), repr(result)
        _settled(pool, live=sum(not t.done() for t in others))
        await asyncio.gather(*others)
        _settled(pool, live=0)
        async with asyncio.timeout(120):
            after = await complete(pool, ask("after", query="after"))
        assert after.info["attempts"] >= 1
        _settled(pool, live=0)
        return not finished


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_a_call_cancelled_at_every_await_point_leaves_nothing_behind(scenario: str) -> None:
    build, before = SCENARIOS[scenario]

    async def main() -> int:
        for steps in range(MAX_STEPS):
            if not await _cancel_after(build, before, steps):
                return steps
        raise AssertionError(f"the call did not finish within {MAX_STEPS} loop iterations")

    points = vrun(main())
    assert points > 3, "the call should have had several await points"


@pytest.mark.parametrize("scenario", ["alone", "retried after a 500"])
def test_a_caller_that_stops_reading_after_any_chunk_leaves_nothing_behind(scenario: str) -> None:
    build, before = SCENARIOS[scenario]

    async def read(pool: EndpointPool, chunks: int) -> bool:
        stream = pool.stream(ask("target", query="target", max_tokens=24))
        seen = 0
        async with contextlib.aclosing(stream):
            async for _ in stream:
                seen += 1
                if seen == chunks:
                    return True
        return False

    async def main() -> int:
        for chunks in range(1, 200):
            async with build() as pool:
                await before(pool)
                stopped = await read(pool, chunks)
                _settled(pool, live=0)
                after = await complete(pool, ask("after", query="after"))
                assert after.info["queue_s"] == 0.0
                if not stopped:
                    return chunks
        raise AssertionError("the stream never ended")

    assert vrun(main()) > 2
