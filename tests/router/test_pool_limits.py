"""An endpoint's own rpm / tpm limit is a rate limit like a server's 429 (virtual clock).

A call granted a slot at an endpoint whose request or token window is full must not sit in
that slot until the window frees while another endpoint is idle: the endpoint cools down until
its window frees (as if it had answered 429 with that Retry-After), the call goes elsewhere at
once, and with nowhere else to go it waits -- until the window frees, its deadline, or
``max_unavailable_s`` -- and says why when it fails.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetcall.llm.base import Completion, complete
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.faults import NoEndpointError
from fleetcall.router.pool import EndpointPool
from tests.router.helpers import MODEL, POLICIES, ask, now, others, snap, vrun

LIMITS: dict[str, dict[str, int]] = {
    "rpm": {"rpm": 1},
    "tpm": {"tpm": 100},  # ~60 prompt + 16 output tokens a call: one call fills the window
}
PROMPT = " ".join(["word"] * 60)


def _pool(limit: str, policy: str, **kwargs: Any) -> EndpointPool:
    configs = [EndpointConfig(name="limited", base_url=f"emulated://A100-80G/{MODEL}", slots=4,
                              **LIMITS[limit]),
               EndpointConfig(name="spare", base_url=f"emulated://A100-80G/{MODEL}", slots=4)]
    return EndpointPool(configs, policy=policy, **kwargs)


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("limit", list(LIMITS))
def test_a_full_window_sends_calls_to_the_idle_spare_at_once(limit: str, policy: str) -> None:
    """Sequential then concurrent calls: none waits for the limited endpoint's window while
    the spare is idle (before: a call waited ~60 s in its slot, six concurrent ones 180 s)."""

    async def main() -> tuple[list[float], float, Any, list[Any]]:
        async with _pool(limit, policy) as pool:
            waits = []
            for i in range(4):
                start = now()
                await complete(pool, ask(PROMPT, query=f"s{i}"))
                waits.append(now() - start)
            start = now()
            await asyncio.gather(*(complete(pool, ask(PROMPT, query=f"c{i}")) for i in range(6)))
            return waits, now() - start, snap(pool, "limited"), await others()

    waits, together, limited, left = vrun(main())
    assert max(waits) < 1.0, f"a call waited for the {limit} window: {waits}"
    assert together < 5.0, f"six calls took {together:.1f} s"
    assert limited.breaker == "closed" and limited.failures == 0
    assert left == []


@pytest.mark.parametrize("limit", list(LIMITS))
def test_alone_a_call_waits_for_the_window_then_is_served(limit: str) -> None:
    async def main() -> tuple[list[float], list[int]]:
        async with _pool(limit, "slack") as pool:
            await pool.remove("spare")
            ends, attempts = [], []
            for i in range(3):
                done = await complete(pool, ask(PROMPT, query=f"q{i}"))
                ends.append(now())
                attempts.append(done.info["attempts"])
            return ends, attempts

    ends, attempts = vrun(main())
    assert ends[0] < 1.0 and 60.0 <= ends[1] < 61.0 and 120.0 <= ends[2] < 121.0


@pytest.mark.parametrize("limit", list(LIMITS))
def test_a_call_whose_deadline_comes_before_the_window_frees_fails_naming_the_limit(
        limit: str) -> None:
    """Before: the call sat in its slot until the window freed, ~57 s past its deadline."""

    async def main() -> tuple[BaseException | None, float, int]:
        async with _pool(limit, "rr-fcfs") as pool:
            await pool.remove("spare")
            await complete(pool, ask(PROMPT, query="first"))
            start = now()
            try:
                await complete(pool, ask(PROMPT, query="late", deadline=now() + 3.0))
            except NoEndpointError as exc:
                return exc, now() - start, len(pool.core)
            return None, now() - start, len(pool.core)

    error, waited, live = vrun(main())
    assert isinstance(error, NoEndpointError), error
    assert 2.9 <= waited <= 3.1
    assert "limited: rate-limited until +" in str(error) and limit in str(error), str(error)
    assert live == 0


def test_a_window_full_at_the_limited_endpoint_moves_its_queue_elsewhere() -> None:
    """Calls queued at the limited endpoint when its window fills go to the spare."""

    async def main() -> list[Completion]:
        configs = [EndpointConfig(name="limited", base_url=f"emulated://A100-80G/{MODEL}",
                                  slots=1, rpm=2),
                   EndpointConfig(name="spare", base_url=f"emulated://A100-80G/{MODEL}",
                                  slots=1)]
        async with EndpointPool(configs, policy="rr-fcfs",
                                retry=RetryConfig(backoff_s=0.0)) as pool:
            return list(await asyncio.gather(*(complete(pool, ask(f"c{i}", query=f"q{i}"))
                                               for i in range(8))))

    done = vrun(main())
    assert [c.info["endpoint"] for c in done].count("limited") == 2
    assert max(c.info["queue_s"] for c in done) < 5.0
