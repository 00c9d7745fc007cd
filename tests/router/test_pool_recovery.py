"""An endpoint coming back after a fault (virtual clock): the breaker's half-open probe, and the
calls that went elsewhere while it was away.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fleetcall.errors import LLMError
from fleetcall.llm.base import complete
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.sim.emulator import Faults
from tests.router.helpers import Clocked, Server, ask, fleet, states, vrun


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
