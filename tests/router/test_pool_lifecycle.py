"""The pool's life: calls made after ``aclose()``, calls in flight while it closes, and a pool
used from one event loop after another (``asyncio.run`` twice).

``aclose()`` ends everything: no call made after it is sent or left waiting, and a call that was
in flight ends (answered, or failed naming the closed pool) instead of waiting forever for a
timer the closed pool no longer arms. Virtual clock, except the event-loop tests, which need two
real loops (bounded, no sockets).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from fleetcall.errors import ConfigError, LLMError
from fleetcall.llm.base import Completion, complete
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.faults import NoEndpointError
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import Faults
from tests.router.helpers import MODEL, Server, ask, fleet, now, others, vrun

BOUND_S = 600.0  # virtual seconds: far past any wait these tests should see


async def _outcome(call: asyncio.Task[Completion]) -> BaseException | Completion:
    """The call's result or error, or TimeoutError if it is still waiting after BOUND_S."""
    try:
        async with asyncio.timeout(BOUND_S):
            return await asyncio.shield(call)
    except TimeoutError as exc:
        call.cancel()
        await asyncio.gather(call, return_exceptions=True)
        return exc
    except Exception as exc:
        return exc


@pytest.mark.parametrize("owned_http", [True, False])
@pytest.mark.parametrize("faults", [Faults(), Faults(rate_limit_rate=1.0, retry_after_s=2.0)],
                         ids=["healthy", "rate-limited"])
def test_a_call_after_aclose_fails_at_once_naming_the_closed_pool(owned_http: bool,
                                                                  faults: Faults) -> None:
    """Before: over a client the test owns it was sent (and parked for ever if refused with a
    429: no timer after aclose; the health loop restarted, an orphan task); over the pool's own
    client, httpx's RuntimeError."""

    async def main() -> tuple[Any, float, list[Any]]:
        if owned_http:
            pool = EndpointPool([EndpointConfig(name="only",
                                                base_url=f"emulated://A100-80G/{MODEL}")],
                                faults=faults, health_interval_s=1.0)
            await pool.aclose()
            start = now()
            result = await _outcome(asyncio.create_task(complete(pool, ask())))
            return result, now() - start, await others()
        async with fleet(Server("only", faults), retry=RetryConfig(),
                         health_interval_s=1.0) as (pool, _):
            await pool.aclose()
            start = now()
            result = await _outcome(asyncio.create_task(complete(pool, ask())))
            return result, now() - start, await others()

    result, waited, left = vrun(main())
    assert isinstance(result, NoEndpointError), repr(result)
    assert "closed" in str(result)
    assert waited == 0.0
    assert left == []


def test_adding_an_endpoint_to_a_closed_pool_is_a_config_error() -> None:
    async def main() -> None:
        pool = EndpointPool([EndpointConfig(name="a", base_url=f"emulated://A100-80G/{MODEL}")])
        await pool.aclose()
        pool.add(EndpointConfig(name="b", base_url=f"emulated://A100-80G/{MODEL}"))

    with pytest.raises(ConfigError, match="closed"):
        vrun(main())


@pytest.mark.parametrize("endpoints,backoff_s", [(1, 0.2), (1, 0.0), (2, 0.2)])
def test_a_call_in_flight_when_the_pool_closes_ends(endpoints: int, backoff_s: float) -> None:
    """The call is in prefill (a 10 s latency spike) when the pool closes. Its attempt fails
    when the closed endpoint drops it; before, the retry was parked with no timer to wake it
    (one endpoint, a backoff: for ever), or sent through the closed client (RuntimeError)."""

    async def main() -> tuple[Any, list[Any], int]:
        pool = EndpointPool.emulated(["A100-80G"] * endpoints, MODEL, slots=1,
                                     faults=Faults(spike_rate=1.0, spike_s=10.0),
                                     retry=RetryConfig(backoff_s=backoff_s))
        call = asyncio.create_task(complete(pool, ask()))
        await asyncio.sleep(1.0)
        await pool.aclose()
        result = await _outcome(call)
        return result, await others(), len(pool.core)

    result, left, live = vrun(main())
    assert isinstance(result, LLMError), repr(result)
    assert "closed" in str(result), str(result)
    assert left == [] and live == 0


# ---- one event loop after another ------------------------------------------------------------


def _twice(pool: EndpointPool, body: Callable[[EndpointPool], Any]) -> list[Any]:
    """``body(pool)`` under ``asyncio.run``, twice (two real loops, one after the other)."""
    async def bounded() -> Any:
        try:
            async with asyncio.timeout(10.0):
                return await body(pool)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            return exc

    return [asyncio.run(bounded()) for _ in range(2)]


def test_a_pool_used_from_a_second_event_loop_wakes_its_parked_calls() -> None:
    """The first loop leaves the endpoint cooling (a 429 with Retry-After 0.2 s) and the
    pool's timer armed on that loop; in the second loop a call refused again is parked, and
    before, no timer woke it: it waited for ever (here: until the test's 10 s bound)."""
    pool = EndpointPool([EndpointConfig(name="only", base_url=f"emulated://A100-80G/{MODEL}")],
                        faults=Faults(rate_limit_rate=1.0, retry_after_s=0.2),
                        retry=RetryConfig(max_unavailable_s=0.5))

    async def call(pool: EndpointPool) -> Any:
        start = asyncio.get_running_loop().time()
        try:
            await complete(pool, ask())
        except NoEndpointError as exc:
            return exc, asyncio.get_running_loop().time() - start
        return None, 0.0

    try:
        results = _twice(pool, call)
    finally:
        asyncio.run(pool.aclose())
    for result in results:
        assert isinstance(result, tuple), repr(result)
        error, waited = result
        assert isinstance(error, NoEndpointError) and "rate-limited" in str(error), error
        assert waited < 5.0


def test_a_pool_used_from_a_second_event_loop_serves_calls_and_probes() -> None:
    """Healthy endpoints, an active health loop: each loop's calls are served, and the second
    loop gets its own health loop (the first one's died with its loop)."""
    pool = EndpointPool([EndpointConfig(name=n, base_url=f"emulated://A100-80G/{MODEL}")
                         for n in ("a", "b")], health_interval_s=0.05)

    async def calls(pool: EndpointPool) -> Any:
        done = await asyncio.gather(*(complete(pool, ask(query=f"q{i}")) for i in range(4)))
        health = pool._health  # noqa: SLF001 - the loop's own health task
        return [c.info["endpoint"] for c in done], health is not None and not health.done()

    try:
        results = _twice(pool, calls)
    finally:
        asyncio.run(pool.aclose())
    for result in results:
        assert isinstance(result, tuple), repr(result)
        placed, health_running = result
        # both twins serve (how many each depends on real-clock measurements: slack weighs
        # the prefill load it measured at each, a few milliseconds here)
        assert len(placed) == 4 and set(placed) == {"a", "b"} and health_running


def test_a_call_from_a_second_loop_while_the_first_runs_calls_is_refused() -> None:
    """Two live loops in turn (``run_until_complete``), the first with a call in flight: the
    pool serves one loop at a time, so the second loop's call is refused with a clear error
    (the core's futures and timer belong to the first) and the first call still ends."""
    pool = EndpointPool([EndpointConfig(name="only", base_url=f"emulated://A100-80G/{MODEL}")],
                        faults=Faults(spike_rate=1.0, spike_s=0.2))
    first, second = asyncio.new_event_loop(), asyncio.new_event_loop()
    try:
        running = first.create_task(complete(pool, ask("first")))
        first.run_until_complete(asyncio.sleep(0.05))
        with pytest.raises(LLMError, match="another event loop"):
            second.run_until_complete(complete(pool, ask("second")))
        done = first.run_until_complete(asyncio.wait_for(running, 10.0))
        assert done.info["endpoint"] == "only"
        first.run_until_complete(pool.aclose())
    finally:
        first.close()
        second.close()
