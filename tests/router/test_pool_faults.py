"""Issue 10's failures, over the real pool on the virtual clock: each named input, plus more of
its kind.

* Slots leak under cancellation (several calls cancelled in the same loop tick).
* A rate limit becomes an outage (429s counted as breaker failures, Retry-After slept on a
  healthy spare, a rate-limited endpoint given new calls at once).
* Ties go to the first-listed endpoint (a cold endpoint never warms up).
* An open breaker fails queued calls on the spot; errors do not say why each endpoint was
  not used.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import pytest

from fleetcall.errors import LLMError
from fleetcall.llm.base import Completion, complete
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import Faults
from fleetcall.sim.responders import LengthsResponder
from tests.router.helpers import (
    MODEL,
    POLICIES,
    Clocked,
    Server,
    ask,
    chat_requests,
    fleet,
    now,
    others,
    snap,
    states,
    vrun,
)

# ---- slots leak under cancellation ------------------------------------------------------------


def test_a_running_and_a_queued_call_cancelled_in_one_tick_leak_nothing() -> None:
    """slots=1: one call running, one queued behind it, both cancelled in the same tick. Both
    end cancelled (not InvalidStateError), and a third call is served at once."""

    async def main() -> dict[str, Any]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1, policy="rr-fcfs",
                                         responder=LengthsResponder()) as pool:
            first = asyncio.create_task(complete(pool, ask("long", query="a", max_tokens=400)))
            second = asyncio.create_task(complete(pool, ask("waits", query="b")))
            await asyncio.sleep(0.1)
            queued = snap(pool, "A100-80G-0").queued
            first.cancel()
            second.cancel()
            ended = await asyncio.gather(first, second, return_exceptions=True)
            async with asyncio.timeout(30):
                third = await complete(pool, ask("third", query="c"))
            return {"queued": queued, "ended": ended, "third": third,
                    "snapshot": snap(pool, "A100-80G-0"), "left": await others()}

    out = vrun(main())
    assert out["queued"] == 1
    assert [type(e).__name__ for e in out["ended"]] == ["CancelledError", "CancelledError"]
    assert out["third"].info["queue_s"] == 0.0
    assert (out["snapshot"].in_flight, out["snapshot"].queued) == (0, 0)
    assert out["left"] == []


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("which", ["even", "first-half", "second-half"])
def test_cancelling_half_of_12_calls_leaks_no_slot(policy: str, which: str) -> None:
    """3 endpoints x 2 slots, 12 calls, half of them cancelled at once: afterwards 6 long calls
    run at once (every slot came back), and the snapshot agrees. (``slack`` may queue a call
    behind a busy endpoint it predicts finishes sooner, until an idle one steals it at its
    next event: a wait far shorter than a call, unlike a slot that never comes back.)"""
    pick = {"even": slice(0, None, 2), "first-half": slice(0, 6), "second-half": slice(6, None)}
    options = {"prefill_slots": None} if policy == "slack" else {}  # no prefill gate either

    async def main() -> dict[str, Any]:
        async with EndpointPool.emulated(["A100-80G"] * 3, MODEL, slots=2, policy=policy,
                                         policy_options=options,
                                         responder=LengthsResponder()) as pool:
            calls = [asyncio.create_task(complete(pool, ask(f"c{i}", query=f"q{i}",
                                                            max_tokens=200)))
                     for i in range(12)]
            await asyncio.sleep(0.05)
            doomed = calls[pick[which]]
            for call in doomed:
                call.cancel()
            await asyncio.gather(*doomed, return_exceptions=True)
            kept = await asyncio.gather(*(c for c in calls if c not in doomed))
            async with asyncio.timeout(60):
                after = await asyncio.gather(*(complete(pool, ask(f"a{i}", query=f"a{i}",
                                                                  max_tokens=400))
                                               for i in range(6)))
            return {"kept": kept, "after": after, "snapshot": pool.snapshot(),
                    "left": await others()}

    out = vrun(main())
    assert all(isinstance(c, Completion) for c in out["kept"])
    waits = [c.info["queue_s"] for c in out["after"]]
    assert max(waits) < 0.25 * min(c.info["total_s"] for c in out["after"]), waits
    if policy != "slack":
        assert waits == [0.0] * 6, "a slot leaked"
    assert all((s.in_flight, s.queued) == (0, 0) for s in out["snapshot"])
    assert out["left"] == []


# ---- a rate limit is not an outage -------------------------------------------------------------

HALF_LIMITED = Faults(rate_limit_rate=0.5, retry_after_s=1.0)


def test_40_calls_against_a_half_rate_limited_endpoint_and_a_healthy_one_all_answer() -> None:
    async def main() -> tuple[list[Any], dict[str, str]]:
        async with fleet(Server("limited", HALF_LIMITED, slots=8), Server("good", slots=8),
                         policy="slack", retry=RetryConfig()) as (pool, _):
            done = await asyncio.gather(*(complete(pool, ask(f"c{i}", query=f"q{i}"))
                                          for i in range(40)), return_exceptions=True)
            return list(done), states(pool)

    done, breakers = vrun(main())
    assert [type(c).__name__ for c in done] == ["Completion"] * 40
    assert breakers == {"limited": "closed", "good": "closed"}


@pytest.mark.parametrize("policy", POLICIES)
def test_40_calls_against_only_a_half_rate_limited_endpoint_are_slowed_not_failed(
        policy: str) -> None:
    async def main() -> tuple[list[Any], float, int, str]:
        async with fleet(Server("limited", HALF_LIMITED, slots=8), policy=policy,
                         retry=RetryConfig()) as (pool, eps):
            done = await asyncio.gather(*(complete(pool, ask(f"c{i}", query=f"q{i}"))
                                          for i in range(40)), return_exceptions=True)
            return list(done), now(), chat_requests(eps["limited"]), states(pool)["limited"]

    done, end, requests, breaker = vrun(main())
    assert [type(c).__name__ for c in done] == ["Completion"] * 40
    assert breaker == "closed"
    assert requests > 40                 # some were refused with 429 and sent again
    assert end >= 1.0                    # ... after the cooldown


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("retry_after", [4.0, 30.0])
def test_a_retry_after_does_not_delay_the_retry_on_a_healthy_spare(policy: str,
                                                                   retry_after: float) -> None:
    clock = Clocked()

    async def main() -> Completion:
        async with fleet(Server("limited", Faults(rate_limit_rate=1.0, retry_after_s=retry_after)),
                         Server("good", responder=clock), policy=policy,
                         retry=RetryConfig()) as (pool, _):
            # the limited endpoint first: rr-fcfs starts there; the others tie (idle twins)
            return await complete(pool, ask())

    done = vrun(main())
    assert done.info["endpoint"] == "good"
    assert clock.times and clock.times[0] < 0.5, f"the spare was kept waiting: {clock.times}"


@pytest.mark.parametrize("policy", POLICIES)
def test_an_endpoint_that_said_retry_after_30_gets_no_new_calls_until_then(policy: str) -> None:
    async def main() -> tuple[int, list[str], int]:
        async with fleet(Server("limited", Faults(rate_limit_rate=1.0, retry_after_s=30.0)),
                         Server("good"), policy=policy, retry=RetryConfig()) as (pool, eps):
            served = []
            for i in range(10):  # ten calls over ten seconds
                served.append((await complete(pool, ask(query=f"q{i}"))).info["endpoint"])
                await asyncio.sleep(1.0)
            within = chat_requests(eps["limited"])
            await asyncio.sleep(30.0)
            eps["limited"].faults = Faults()
            later = [(await complete(pool, ask(query=f"l{i}"))).info["endpoint"]
                     for i in range(4)]
            return within, served + later, chat_requests(eps["limited"])

    within, served, total = vrun(main())
    assert within <= 1, f"{within} requests reached the cooling endpoint"
    assert served[:10] == ["good"] * 10
    if policy in ("rr-fcfs", "least-busy"):
        assert "limited" in served[10:], "after its cooldown the endpoint is used again"


def test_a_later_retry_after_extends_the_cooldown_and_an_earlier_one_does_not_shorten_it() -> None:
    """Two calls at the only endpoint are refused with Retry-After 5, then 1: nothing is sent
    before t=5."""
    async def main() -> tuple[list[Completion], float]:
        async with fleet(Server("only", Faults(rate_limit_rate=1.0, retry_after_s=5.0)),
                         retry=RetryConfig()) as (pool, eps):
            first = asyncio.create_task(complete(pool, ask(query="a")))
            await asyncio.sleep(0.01)
            eps["only"].faults = Faults(rate_limit_rate=1.0, retry_after_s=1.0)
            second = asyncio.create_task(complete(pool, ask(query="b")))
            await asyncio.sleep(0.01)
            eps["only"].faults = Faults()
            clock = Clocked()
            eps["only"].responder = clock
            done = await asyncio.gather(first, second)
            return list(done), min(clock.times)

    done, first_served = vrun(main())
    assert [c.info["endpoint"] for c in done] == ["only", "only"]
    assert first_served >= 5.0


# ---- an open breaker waits for its probe instead of failing queued calls -------------------------


def test_calls_queued_when_the_only_breaker_opens_wait_for_the_probe() -> None:
    """One endpoint, one slot: its first call fails (breaker failures=1 opens it) while 3 calls
    wait behind it. They are not failed on the spot: the probe at the end of the cooldown finds
    it recovered, and every call is answered."""

    async def main() -> tuple[list[Any], float]:
        async with fleet(Server("only", Faults(error_rate=1.0), slots=1),
                         breaker=BreakerConfig(failures=1, cooldown_s=5.0),
                         retry=RetryConfig(backoff_s=0.0)) as (pool, eps):
            calls = [asyncio.create_task(complete(pool, ask(f"c{i}", query=f"q{i}")))
                     for i in range(4)]
            await asyncio.sleep(0)
            await asyncio.sleep(0.001)
            eps["only"].faults = Faults()           # recovers before the probe
            done = await asyncio.gather(*calls, return_exceptions=True)
            return list(done), now()

    done, end = vrun(main())
    assert [type(c).__name__ for c in done] == ["Completion"] * 4
    assert end >= 5.0


def test_a_call_whose_deadline_comes_before_any_endpoint_recovers_fails_naming_each_one() -> None:
    """A answers 429 with Retry-After 30; B refuses connections (its breaker opens after 5
    connection errors). A call with a 3 s deadline waits, then fails at its deadline with an
    error naming both endpoints and why neither was used."""

    async def main() -> tuple[BaseException | None, float]:
        async with fleet(Server("A", Faults(rate_limit_rate=1.0, retry_after_s=30.0)),
                         Server("B", Faults(crash_after=0)),
                         breaker=BreakerConfig(failures=5, cooldown_s=60.0),
                         retry=RetryConfig(max_attempts=10, backoff_s=0.0)) as (pool, _):
            for i in range(5):
                with pytest.raises(LLMError):
                    await complete(pool, ask(query=f"warm{i}", deadline=now() + 0.5))
            try:
                await complete(pool, ask(query="late", deadline=now() + 3.0))
            except LLMError as exc:
                return exc, now()
            return None, now()

    error, end = vrun(main())
    assert error is not None
    message = str(error)
    assert "A: rate-limited until +" in message and "(429)" in message, message
    assert "B: breaker open after 5 connection errors" in message, message
    assert "no endpoint is available" not in message or "A:" in message


# ---- ties rotate, so cold endpoints warm up ------------------------------------------------------


@pytest.mark.parametrize("policy", ["slack", "least-busy", "hexgen"])
@pytest.mark.parametrize("gpu", ["A100-80G", "unknown"])
def test_sequential_calls_to_identical_idle_endpoints_are_spread(policy: str, gpu: str) -> None:
    async def main() -> list[str]:
        servers = [Server(name, config_gpu=gpu) for name in ("a", "b", "c")]
        async with fleet(*servers, policy=policy) as (pool, _):
            return [(await complete(pool, ask(f"distinct prompt {i} " * 10, query=f"q{i}")))
                    .info["endpoint"] for i in range(12)]

    placed = vrun(main())
    counts = {name: placed.count(name) for name in "abc"}
    assert min(counts.values()) >= 3, f"{policy}/{gpu}: {placed}"


@pytest.mark.parametrize("gpu", ["A100-80G", "unknown"])
def test_least_busy_spreads_9_sequential_calls_evenly(gpu: str) -> None:
    async def main() -> list[str]:
        servers = [Server(name, config_gpu=gpu) for name in ("a", "b", "c")]
        async with fleet(*servers, policy="least-busy") as (pool, _):
            return [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"] for i in range(9)]

    placed = vrun(main())
    assert sorted(placed) == ["a"] * 3 + ["b"] * 3 + ["c"] * 3


# ---- what the router logs --------------------------------------------------------------------------


def test_cooldowns_breaker_changes_and_redispatches_are_logged_without_secrets(
        caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLEETCALL_TEST_KEY", "sk-secret-do-not-log")

    async def main() -> None:
        async with fleet(Server("limited", Faults(rate_limit_rate=1.0, retry_after_s=2.0)),
                         Server("hung", Faults(hang_rate=1.0), slots=1), Server("good"),
                         policy="rr-fcfs", breaker=BreakerConfig(failures=1, cooldown_s=1.0),
                         retry=RetryConfig(backoff_s=0.0, attempt_timeout_s=1.0)) as (pool, eps):
            await asyncio.gather(*(complete(pool, ask(f"c{i}", query=f"q{i}")) for i in range(9)))
            eps["hung"].faults = Faults()
            await asyncio.sleep(1.5)
            for i in range(3):
                await complete(pool, ask(query=f"p{i}"))

    with caplog.at_level(logging.INFO, logger="fleetcall.router"):
        vrun(main())
    records = [r for r in caplog.records if r.name == "fleetcall.router"]
    text = "\n".join(r.getMessage() for r in records)
    seen = {(r.event, r.fields.get("endpoint")) for r in records}
    assert ("endpoint.cooldown", "limited") in seen
    assert ("endpoint.breaker_open", "hung") in seen and ("endpoint.breaker_closed", "hung") in seen
    assert ("endpoint.redispatch", "hung") in seen
    assert re.search(r"^endpoint\.cooldown endpoint=limited status=429 cooldown_s=2\.000 extended=false$", text, re.M)
    assert re.search(r"^endpoint\.breaker_open endpoint=hung after=\"1 timeout\" probe_in_s=1\.000$", text, re.M)
    assert all(r.levelno == (logging.WARNING if r.event == "endpoint.breaker_open" else logging.INFO)
               for r in records if r.event.startswith("endpoint."))
    assert "sk-secret" not in text
    assert len(caplog.records) < 30, "logged per token or per call"


def test_closing_the_pool_ends_the_calls_still_waiting_for_an_endpoint() -> None:
    """A call parked behind a long cooldown would wait for a timer the closed pool no longer
    runs: closing ends it with an error instead of leaving it hanging."""

    async def main() -> tuple[BaseException | None, list[Any]]:
        async with fleet(Server("only", Faults(rate_limit_rate=1.0, retry_after_s=30.0)),
                         retry=RetryConfig()) as (pool, _):
            call = asyncio.create_task(complete(pool, ask()))
            await asyncio.sleep(1.0)
            assert not call.done()
            await pool.aclose()
            (result,) = await asyncio.gather(call, return_exceptions=True)
            return result, await others()

    result, left = vrun(main())
    assert isinstance(result, LLMError) and "the pool was closed" in str(result)
    assert left == []
