"""An endpoint coming back after a fault (virtual clock): the breaker's half-open probe, and the
calls that went elsewhere while it was away.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from fleetcall.errors import LLMError
from fleetcall.llm.base import complete
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.sim.emulator import Faults
from fleetcall.sim.responders import LengthsResponder
from tests.router.helpers import POLICIES, Clocked, Server, ask, fleet, now, snap, states, vrun


def test_a_probe_refused_with_a_rate_limit_is_no_verdict_the_next_probe_follows_its_cooldown(
        ) -> None:
    """The breaker (cooldown 10 s) opens on a 500; its probe at t=10 is refused with a 429
    and Retry-After 1 s; the server is healthy again at 10.5 s. The rate limit is no verdict
    on the endpoint's health, so the waiting call probes again when the 1 s cooldown ends and
    is served at ~11 s. Before: the refused probe used up the half-open state, and the call
    waited a whole breaker cooldown more (served at 20 s)."""
    clock = Clocked()

    async def main() -> tuple[Any, dict[str, str]]:
        async with fleet(Server("only", Faults(error_rate=1.0), responder=clock),
                         breaker=BreakerConfig(failures=1, cooldown_s=10.0),
                         retry=RetryConfig(max_attempts=1, backoff_s=0.0,
                                           max_unavailable_s=100.0)) as (pool, eps):
            try:
                await complete(pool, ask("opens the breaker", query="first"))
            except LLMError:
                pass
            eps["only"].faults = Faults(rate_limit_rate=1.0, retry_after_s=1.0)
            call = asyncio.create_task(complete(pool, ask("waits", query="second")))
            await asyncio.sleep(10.5)
            eps["only"].faults = Faults()
            done = await call
            return done, states(pool)

    done, breakers = vrun(main())
    assert clock.times and 11.0 <= clock.times[0] < 12.0, clock.times
    assert done.info["endpoint"] == "only" and breakers == {"only": "closed"}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("fault", ["429", "breaker"])
def test_calls_a_fault_sent_elsewhere_come_back_when_the_endpoint_does(policy: str,
                                                                       fault: str) -> None:
    """A (2 slots) refuses for 0.5 s -- 429s with Retry-After 2 s, or 500s that open its
    breaker for 2 s -- so six long calls pile up in B's queue (1 slot). When A is available
    again its slots take the oldest of them (as the policy had placed them before the
    fault). Before: under rr-fcfs, least-busy and hexgen A stayed idle while B served all six
    one by one (14 s instead of ~7)."""
    faults = (Faults(rate_limit_rate=1.0, retry_after_s=2.0) if fault == "429"
              else Faults(error_rate=1.0))

    async def main() -> tuple[Any, float, list[str]]:
        async with fleet(Server("A", faults, slots=2, responder=LengthsResponder()),
                         Server("B", slots=1, responder=LengthsResponder()), policy=policy,
                         retry=RetryConfig(backoff_s=0.0, max_attempts=5),
                         breaker=BreakerConfig(failures=1, cooldown_s=2.0)) as (pool, eps):
            calls = [asyncio.create_task(complete(pool, ask(f"c{i}", query=f"q{i}",
                                                            max_tokens=300)))
                     for i in range(6)]
            await asyncio.sleep(0.5)
            eps["A"].faults = Faults()
            await asyncio.sleep(2.2 - now())
            at_a = snap(pool, "A")
            done = await asyncio.gather(*calls)
            return at_a, now(), [c.info["endpoint"] for c in done]

    at_a, end, placed = vrun(main())
    assert at_a.in_flight >= 1, f"A idle at 2.2 s while calls wait at B: {at_a}"
    assert placed.count("A") >= 2, placed
    assert end < 10.0, f"{end:.1f} s"
