"""EndpointPool on the virtual clock: placement, policies, faults, breaker, cancellation, admission.

Every endpoint is an in-process emulated GPU, so each test is a deterministic discrete-event
simulation that takes no wall time. Two ways to build a pool:

* ``EndpointPool.emulated(...)`` / ``emulated://`` configs: the pool owns the emulated engines;
* :func:`fleet`: the pool talks to :class:`EmulatedEndpoint` objects the test owns, through the
  pool's public transport seam (``http=`` a client over a :class:`RoutingTransport`). That is how
  a test injects faults into ONE endpoint (``Faults`` given to the pool apply to all of them) and
  heals it later by assigning ``server.faults``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fleetcall.errors import ConfigError, EndpointError, LLMError
from fleetcall.llm.base import CallContext, Chunk, Completion, LLMRequest, Message, complete
from fleetcall.router.client import RoutingTransport, make_http_client
from fleetcall.router.config import (BreakerConfig, EndpointConfig, PoolConfig, RetryConfig,
                                      write_pool_config)
from fleetcall.sim.emulator import EmulatedEndpoint, Faults
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.sim.responders import LengthsResponder, Reply, Responder
from fleetcall.router.pool import EndpointPool, OverloadedError
from fleetcall.vclock import run_virtual

T = TypeVar("T")
MODEL = "llama-3.2-1b"   # small: short emulated calls
POLICIES = ["rr-fcfs", "least-busy", "hexgen", "slack"]
NO_BACKOFF = RetryConfig(backoff_s=0.0)


def vrun(coro: Coroutine[Any, Any, T]) -> T:
    return run_virtual(coro)


def now() -> float:
    return asyncio.get_running_loop().time()


def ask(text: str = "hello", *, query: str = "q", kind: str = "planner",
        max_tokens: int | None = 16, **context: Any) -> LLMRequest:
    return LLMRequest((Message("user", text),), CallContext(query_id=query, kind=kind, **context),
                      max_tokens=max_tokens)


async def others() -> list[asyncio.Task[Any]]:
    """Tasks still pending, a few loop turns from now, besides the test's own and emulated
    engine drivers (which exit when idle). The turns let async-generator finalizer tasks finish:
    the client stops reading at ``[DONE]``, and httpx leaves its nested response generators
    (aiter_text, aiter_bytes, aiter_raw, ...) to the loop's finalizer, one task each, in turn."""
    for _ in range(20):
        await asyncio.sleep(0)
    return [t for t in asyncio.all_tasks()
            if t is not asyncio.current_task() and not t.done()
            and t.get_name() != "fleetcall-engine"]


def states(pool: EndpointPool) -> dict[str, str]:
    return {s.name: s.breaker for s in pool.snapshot()}


def snap(pool: EndpointPool, name: str) -> Any:
    return next(s for s in pool.snapshot() if s.name == name)


@dataclass
class Server:
    """An emulated endpoint the test owns (faults may differ per server and change mid-run)."""

    name: str
    faults: Faults | None = None
    slots: int = 4
    gpu: str = "A100-80G"
    responder: Responder | None = None


@contextlib.asynccontextmanager
async def fleet(*servers: Server, **pool_kwargs: Any
                ) -> AsyncIterator[tuple[EndpointPool, dict[str, EmulatedEndpoint]]]:
    """A pool over ``servers`` through the transport seam: ``http://<name>.test/v1`` endpoints
    whose host is routed to the test's own EmulatedEndpoint (no sockets: virtual-clock safe)."""
    pool_kwargs.setdefault("policy", "rr-fcfs")
    retry = pool_kwargs.setdefault("retry", NO_BACKOFF)
    routing = RoutingTransport()
    emulated: dict[str, EmulatedEndpoint] = {}
    configs = []
    for s in servers:
        emulated[s.name] = EmulatedEndpoint(s.gpu, MODEL, name=s.name, faults=s.faults,
                                            responder=s.responder)
        routing.add(f"{s.name}.test", EmulatorTransport(emulated[s.name]))
        configs.append(EndpointConfig(name=s.name, base_url=f"http://{s.name}.test/v1",
                                      model=MODEL, gpu=s.gpu, slots=s.slots))
    http = make_http_client(routing, retry=retry)
    pool = EndpointPool(configs, http=http, **pool_kwargs)
    try:
        yield pool, emulated
    finally:
        await pool.aclose()
        await http.aclose()
        for ep in emulated.values():
            await ep.aclose()


class Clocked:
    """A responder that notes the loop time at which each request reaches it."""

    def __init__(self, text: str = "ok") -> None:
        self.text = text
        self.times: list[float] = []

    def __call__(self, body: dict[str, Any]) -> Reply:
        self.times.append(now())
        return Reply(text=self.text)


# ---- basics ---------------------------------------------------------------------------------


def test_a_call_streams_text_and_reports_where_and_how_it_ran() -> None:
    async def main() -> tuple[list[tuple[float, Chunk]], float]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=2) as pool:
            start = now()
            chunks = [(now(), c) async for c in pool.stream(ask("hello there pool", max_tokens=32))]
            return chunks, start

    chunks, start = vrun(main())
    texts = [c for _, c in chunks if c.text]
    assert len(texts) >= 2, "the answer is streamed in several chunks"
    assert "".join(c.text for c in texts) == "Emulated answer to: hello there pool"
    first = texts[0].info
    assert first is not None and first["endpoint"] == "A100-80G-0" and first["attempts"] == 1
    final = chunks[-1][1]
    assert final.usage is not None and final.usage.prompt_tokens > 0
    assert final.usage.completion_tokens > 0
    info = final.info
    assert info is not None
    assert info["endpoint"] == "A100-80G-0" and info["gpu"] == "A100-80G"
    assert info["attempts"] == 1 and info["queue_s"] == 0.0
    assert info["ttft_s"] == pytest.approx(chunks[0][0] - start)  # measured on the loop clock
    assert 0 < info["ttft_s"] < info["total_s"]
    assert info["total_s"] == pytest.approx(chunks[-1][0] - start)
    assert info["completion_tokens"] == final.usage.completion_tokens


def test_the_pool_satisfies_the_llm_protocol_and_closes_cleanly() -> None:
    async def main() -> tuple[Completion, list[asyncio.Task[Any]]]:
        pool = EndpointPool.emulated(["A100-80G", "L40S"], MODEL, slots=2)
        done = await complete(pool, ask())
        await pool.aclose()
        return done, await others()

    done, left = vrun(main())
    assert done.text.startswith("Emulated answer") and done.usage.calls == 1
    assert left == []


def test_a_call_with_infinite_work_after_it_is_refused_and_nothing_is_left_behind() -> None:
    """CallContext(remaining_work_s=inf): a ValueError naming it, before the call is queued;
    the pool serves the next call and closes with nothing pending."""
    async def main() -> tuple[str, Completion, int, list[asyncio.Task[Any]]]:
        pool = EndpointPool.emulated(["A100-80G", "L40S"], MODEL, slots=2, policy="slack")
        with pytest.raises(ValueError) as refused:
            await complete(pool, ask(deadline=now() + 60.0, remaining_work_s=float("inf")))
        done = await complete(pool, ask())
        live = len(pool.core)
        await pool.aclose()
        return str(refused.value), done, live, await others()

    message, done, live, left = vrun(main())
    assert "remaining_work_s must be finite" in message
    assert done.usage.calls == 1 and live == 0 and left == []


# ---- policies -------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
def test_every_policy_places_and_completes_concurrent_calls(policy: str) -> None:
    async def main() -> tuple[str, list[Completion], list[Any]]:
        async with EndpointPool.emulated(["A100-80G", "L40S"], MODEL, slots=2,
                                         policy=policy) as pool:
            done = await asyncio.gather(*(complete(pool, ask(f"call {i}", query=f"q{i}"))
                                          for i in range(8)))
            return pool.dispatcher.name, list(done), pool.snapshot()

    name, done, snapshot = vrun(main())
    assert name == policy
    assert [c.text for c in done] == [f"Emulated answer to: call {i}" for i in range(8)]
    assert {c.info["endpoint"] for c in done} <= {"A100-80G-0", "L40S-1"}
    assert sum(s.calls for s in snapshot) == 8
    assert all(s.in_flight == 0 and s.queued == 0 for s in snapshot)


def test_rr_fcfs_alternates_endpoints() -> None:
    async def main() -> list[str]:
        async with EndpointPool.emulated(["A100-80G", "L40S", "H100"], MODEL,
                                         policy="rr-fcfs") as pool:
            return [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"] for i in range(6)]

    assert vrun(main()) == ["A100-80G-0", "L40S-1", "H100-2"] * 2


def test_least_busy_spreads_concurrent_calls() -> None:
    async def main() -> list[str]:
        async with EndpointPool.emulated(["A100-80G", "A100-80G"], MODEL,
                                         policy="least-busy") as pool:
            done = await asyncio.gather(*(complete(pool, ask(query=f"q{i}")) for i in range(4)))
            return [c.info["endpoint"] for c in done]

    assert sorted(vrun(main())) == ["A100-80G-0", "A100-80G-0", "A100-80G-1", "A100-80G-1"]


def test_unknown_policy_is_a_config_error_listing_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown dispatcher 'fastest'.*rr-fcfs.*slack"):
        EndpointPool.emulated(["A100-80G"], MODEL, policy="fastest")


def test_bad_policy_knob_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        EndpointPool.emulated(["A100-80G"], MODEL, policy="hexgen", policy_options={"alpha": 2})


def test_runs_are_deterministic() -> None:
    async def main() -> list[tuple[str, float, float]]:
        async with EndpointPool.emulated(["A100-80G", "L40S"], MODEL, slots=2) as pool:
            done = await asyncio.gather(*(complete(pool, ask(f"call {i}" * (i + 1), query=f"q{i}",
                                                             max_tokens=8 + i))
                                          for i in range(12)))
            return [(c.info["endpoint"], c.info["queue_s"], c.info["total_s"]) for c in done]

    assert vrun(main()) == vrun(main())


# ---- faults: retries on another endpoint ----------------------------------------------------


def test_a_500_is_retried_on_another_endpoint() -> None:
    async def main() -> tuple[Completion, Any]:
        async with fleet(Server("bad", Faults(error_rate=1.0)), Server("good")) as (pool, _):
            done = await complete(pool, ask())
            return done, snap(pool, "bad")

    done, bad = vrun(main())
    assert done.info["endpoint"] == "good" and done.info["attempts"] == 2
    assert done.text == "Emulated answer to: hello"
    assert bad.failures == 1 and bad.error_rate > 0
    assert "injected server error" in bad.last_error


def test_every_endpoint_failing_raises_llm_error_naming_endpoint_attempts_and_cause() -> None:
    async def main() -> None:
        retry = RetryConfig(max_attempts=3, backoff_s=0.0)
        async with fleet(Server("a", Faults(error_rate=1.0)), Server("b", Faults(error_rate=1.0)),
                         retry=retry) as (pool, _):
            await complete(pool, ask())

    with pytest.raises(LLMError) as caught:
        vrun(main())
    message = str(caught.value)
    assert "after 3 attempt(s)" in message
    assert "endpoint 'a'" in message or "endpoint 'b'" in message
    assert "injected server error" in message
    assert isinstance(caught.value.__cause__, EndpointError)
    assert not isinstance(caught.value, OverloadedError)


def test_a_client_error_is_not_retried() -> None:
    """A 4xx other than 408/429 says the request is wrong: another endpoint would say the same."""
    async def main() -> None:
        async with fleet(Server("a", Faults(error_rate=1.0, error_status=400)),
                         Server("b")) as (pool, _):
            await complete(pool, ask())

    with pytest.raises(LLMError, match=r"endpoint 'a' after 1 attempt\(s\)"):
        vrun(main())


def test_a_429_retry_after_is_honoured_before_retrying_the_same_endpoint() -> None:
    clock = Clocked()

    async def main() -> tuple[Completion, float]:
        server = Server("only", Faults(rate_limit_rate=1.0, retry_after_s=2.5), responder=clock)
        async with fleet(server) as (pool, emulated):
            async def heal() -> None:
                await asyncio.sleep(0.1)
                emulated["only"].faults = Faults()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(heal())
                call = tg.create_task(complete(pool, ask()))
            return call.result(), now()

    done, end = vrun(main())
    assert done.info["attempts"] == 2 and done.info["endpoint"] == "only"
    assert clock.times and clock.times[0] >= 2.5, "the retry went out before Retry-After"
    assert end < 2.5 + 1.0


def test_a_429_sends_the_call_elsewhere_at_once_and_cools_the_endpoint_until_retry_after() -> None:
    """Retry-After is the limited endpoint's cooldown, not a pause for the retry elsewhere."""
    clock = Clocked()

    async def main() -> tuple[Completion, list[str], Any]:
        async with fleet(Server("limited", Faults(rate_limit_rate=1.0, retry_after_s=2.5)),
                         Server("good", responder=clock)) as (pool, _):
            done = await complete(pool, ask())
            cooling = snap(pool, "limited")
            more = [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"] for i in range(3)]
            return done, more, cooling

    done, more, cooling = vrun(main())
    assert done.info["endpoint"] == "good" and done.info["attempts"] == 2
    assert clock.times[0] == pytest.approx(0.0, abs=0.01)
    assert more == ["good"] * 3                       # rr-fcfs skips the cooling endpoint
    assert cooling.rate_limited == 1 and cooling.failures == 0 and cooling.breaker == "closed"
    assert 2.4 < cooling.cooling_s <= 2.5


def test_a_hang_past_the_attempt_timeout_is_retried_elsewhere() -> None:
    async def main() -> tuple[Completion, float, Any]:
        retry = RetryConfig(attempt_timeout_s=2.0, backoff_s=0.0)
        async with fleet(Server("hung", Faults(hang_rate=1.0)), Server("good"),
                         retry=retry) as (pool, _):
            done = await complete(pool, ask())
            return done, now(), snap(pool, "hung")

    done, end, hung = vrun(main())
    assert done.info["endpoint"] == "good" and done.info["attempts"] == 2
    assert 2.0 <= end < 3.0
    assert "timed out" in hung.last_error and hung.in_flight == 0


def test_a_stream_cut_after_output_went_out_is_not_retried() -> None:
    """A retry would repeat text the caller already has: the call fails, naming the cause."""
    async def main() -> None:
        async with fleet(Server("cut", Faults(drop_rate=1.0)), Server("good")) as (pool, _):
            await complete(pool, ask())

    with pytest.raises(LLMError, match=r"endpoint 'cut' after 1 attempt\(s\): stream broke "
                                       r"after output was yielded"):
        vrun(main())


def test_calls_to_a_crashed_endpoint_finish_elsewhere() -> None:
    """``doomed`` serves 2 chat requests and dies on the 3rd, taking the calls in flight there
    (before their first token) with it: they and every later call finish at ``good``."""

    async def main() -> tuple[list[Completion], list[Completion], bool, Any]:
        async with fleet(Server("doomed", Faults(crash_after=2)), Server("good")) as (pool, eps):
            before = [await complete(pool, ask(f"s{i}", query=f"s{i}")) for i in range(4)]
            during = await asyncio.gather(*(complete(pool, ask(f"c{i}", query=f"c{i}"))
                                            for i in range(6)))
            return before, list(during), eps["doomed"].crashed, snap(pool, "doomed")

    before, during, crashed, doomed = vrun(main())
    assert [c.info["endpoint"] for c in before] == ["doomed", "good"] * 2
    assert crashed
    assert [c.text for c in during] == [f"Emulated answer to: c{i}" for i in range(6)]
    assert all(c.info["endpoint"] == "good" for c in during)
    # a call that met the crash went to good at once, and never back to doomed
    assert all(c.info["attempts"] in (1, 2) for c in during)
    retried = sum(c.info["attempts"] - 1 for c in during)
    assert retried >= 3 and doomed.failures == retried
    assert "ConnectError" in doomed.last_error


# ---- the circuit breaker --------------------------------------------------------------------


def test_breaker_opens_and_calls_queued_there_are_redispatched_not_lost() -> None:
    """``hung`` runs one call at a time and never answers; rr-fcfs queues 2 more calls behind
    the hung one. When that call times out the breaker (1 failure) opens and the 2 queued calls
    go to ``good`` at once, without ever being sent to ``hung``."""

    async def main() -> dict[str, Any]:
        retry = RetryConfig(attempt_timeout_s=2.0, backoff_s=0.0)
        async with fleet(Server("hung", Faults(hang_rate=1.0), slots=1), Server("good", slots=8),
                         retry=retry, breaker=BreakerConfig(failures=1, cooldown_s=30.0)
                         ) as (pool, eps):
            calls = [asyncio.create_task(complete(pool, ask(f"c{i}", query=f"q{i}")))
                     for i in range(6)]
            await asyncio.sleep(1.0)
            before = snap(pool, "hung")
            done = await asyncio.gather(*calls)
            return {"before": before, "done": done, "after": states(pool),
                    "end": now(), "metrics": eps["hung"].metrics_text()}

    out = vrun(main())
    before, done = out["before"], out["done"]
    assert (before.in_flight, before.queued, before.breaker) == (1, 2, "closed")
    assert out["after"]["hung"] == "open"
    assert all(c.info["endpoint"] == "good" for c in done)
    assert done[0].info["attempts"] == 2                      # the hung call, retried
    for queued in (done[2], done[4]):                         # queued at hung, re-dispatched
        assert queued.info["attempts"] == 1
        assert queued.info["queue_s"] == pytest.approx(2.0, abs=0.01)
    assert 'kind="hang",model_name="llama-3.2-1b"} 1.0' in out["metrics"]   # hung saw exactly one request
    assert out["end"] < 3.0


async def _open_breaker(pool: EndpointPool) -> None:
    """Two calls fail at ``bad`` (failures=2): its breaker opens."""
    for i in range(2):
        await complete(pool, ask(query=f"fail{i}"))
    assert states(pool)["bad"] == "open"


def test_an_open_breaker_keeps_calls_away_until_its_cooldown() -> None:
    async def main() -> list[str]:
        async with fleet(Server("bad", Faults(error_rate=1.0)), Server("good"),
                         breaker=BreakerConfig(failures=2, cooldown_s=10.0)) as (pool, eps):
            await _open_breaker(pool)
            eps["bad"].faults = Faults()
            return [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"] for i in range(4)]

    assert vrun(main()) == ["good"] * 4


def test_after_the_cooldown_a_successful_probe_closes_the_breaker() -> None:
    async def main() -> tuple[str, list[str]]:
        async with fleet(Server("bad", Faults(error_rate=1.0)), Server("good"),
                         breaker=BreakerConfig(failures=2, cooldown_s=10.0)) as (pool, eps):
            await _open_breaker(pool)
            eps["bad"].faults = Faults()                  # the endpoint recovers
            await asyncio.sleep(10.5)                     # past the cooldown
            served = [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"]
                      for i in range(4)]
            return states(pool)["bad"], served

    state, served = vrun(main())
    assert "bad" in served        # the probe went to the recovered endpoint
    assert state == "closed"


def test_a_failed_probe_reopens_the_breaker_and_only_one_call_probes() -> None:
    async def main() -> tuple[str, Any]:
        async with fleet(Server("bad", Faults(error_rate=1.0)), Server("good"),
                         breaker=BreakerConfig(failures=2, cooldown_s=10.0)) as (pool, eps):
            await _open_breaker(pool)
            await asyncio.sleep(10.5)                     # past the cooldown; still broken
            await asyncio.gather(*(complete(pool, ask(query=f"p{i}")) for i in range(6)))
            return states(pool)["bad"], snap(pool, "bad")

    state, bad = vrun(main())
    assert state == "open"
    assert bad.failures == 3      # 2 to open it + exactly 1 probe


def test_an_active_health_check_closes_the_breaker_before_the_cooldown() -> None:
    async def main() -> str:
        async with fleet(Server("bad", Faults(error_rate=1.0)), Server("good"),
                         breaker=BreakerConfig(failures=2, cooldown_s=60.0),
                         health_interval_s=1.0) as (pool, eps):
            await _open_breaker(pool)
            eps["bad"].faults = Faults()
            await asyncio.sleep(3.0)  # a few probes, far less than the cooldown
            return states(pool)["bad"]

    assert vrun(main()) == "closed"


# ---- cancellation ---------------------------------------------------------------------------


def test_cancelling_a_queued_call_removes_it_from_the_local_queue() -> None:
    async def main() -> dict[str, Any]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1, policy="rr-fcfs",
                                         responder=LengthsResponder()) as pool:
            running = asyncio.create_task(complete(pool, ask("long", query="a", max_tokens=400)))
            waiting = asyncio.create_task(complete(pool, ask("waits", query="b")))
            await asyncio.sleep(0.1)
            queued_before = snap(pool, "A100-80G-0").queued
            waiting.cancel()
            await asyncio.gather(waiting, return_exceptions=True)
            after = snap(pool, "A100-80G-0")
            first = await running
            later = await complete(pool, ask("later", query="c"))
            await asyncio.sleep(0)
            return {"before": queued_before, "after": after, "first": first, "later": later,
                    "final": snap(pool, "A100-80G-0"), "left": await others()}

    out = vrun(main())
    assert out["before"] == 1
    assert (out["after"].queued, out["after"].in_flight) == (0, 1)
    assert out["first"].info["attempts"] == 1
    assert out["later"].info["queue_s"] == 0.0       # no ghost ahead of it
    assert (out["final"].queued, out["final"].in_flight, out["final"].calls) == (0, 0, 2)
    assert out["left"] == []


def test_cancelling_a_running_call_releases_its_slot_and_its_engine_request() -> None:
    async def main() -> dict[str, Any]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1, policy="rr-fcfs",
                                         responder=LengthsResponder()) as pool:
            first_chunk = asyncio.Event()

            async def consume() -> None:
                async for chunk in pool.stream(ask("long", query="a", max_tokens=2000)):
                    if chunk.text:
                        first_chunk.set()

            running = asyncio.create_task(consume())
            waiting = asyncio.create_task(complete(pool, ask("next", query="b", max_tokens=8)))
            await first_chunk.wait()
            cancelled_at = now()
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)
            in_flight = snap(pool, "A100-80G-0").in_flight
            done = await waiting
            await asyncio.sleep(0.5)  # the engine retires a cancelled request at a boundary
            return {"cancelled_at": cancelled_at, "in_flight": in_flight, "done": done,
                    "engine": pool.engine_stats()["A100-80G-0"],
                    "final": snap(pool, "A100-80G-0"), "left": await others()}

    out = vrun(main())
    assert out["in_flight"] == 1                                   # `next` took the slot
    assert out["done"].info["queue_s"] == pytest.approx(out["cancelled_at"], abs=1e-6)
    assert out["engine"].running == 0 and out["engine"].kv_used_tokens == 0
    assert (out["final"].in_flight, out["final"].queued) == (0, 0)
    assert out["left"] == []


# ---- admission control ----------------------------------------------------------------------


def test_a_flood_of_new_queries_is_refused_with_overloaded_and_admitted_ones_complete() -> None:
    async def main() -> list[Completion | BaseException]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1,
                                         max_queued_per_slot=1) as pool:
            calls = [complete(pool, ask(f"c{i}", query=f"q{i}")) for i in range(10)]
            return await asyncio.gather(*calls, return_exceptions=True)

    results = vrun(main())
    refused = [r for r in results if isinstance(r, OverloadedError)]
    served = [r for r in results if isinstance(r, Completion)]
    assert len(refused) + len(served) == 10
    assert len(served) == 2 and len(refused) == 8    # one running + one queued per slot
    assert "overloaded" in str(refused[0])
    assert all(c.text.startswith("Emulated answer") for c in served)


def test_further_calls_of_an_admitted_query_always_pass_admission() -> None:
    async def main() -> tuple[Completion, BaseException | None, Completion]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1,
                                         max_queued_per_slot=1) as pool:
            a = asyncio.create_task(complete(pool, ask(query="admitted", max_tokens=64)))
            b = asyncio.create_task(complete(pool, ask(query="other")))
            await asyncio.sleep(0.01)                     # a runs, b is queued: saturated
            refused = None
            try:
                await complete(pool, ask(query="newcomer"))
            except OverloadedError as exc:
                refused = exc
            same_query = await complete(pool, ask("joiner", query="admitted", kind="joiner"))
            await a, await b
            return same_query, refused, await complete(pool, ask(query="newcomer"))

    same_query, refused, later = vrun(main())
    assert refused is not None
    assert same_query.text == "Emulated answer to: joiner"
    assert later.info["attempts"] == 1        # a refused query may come back once it drains


# ---- endpoints added and removed while calls run -----------------------------------------------


def test_an_endpoint_added_while_calls_run_takes_new_calls() -> None:
    async def main() -> tuple[list[str], list[str]]:
        async with EndpointPool.emulated(["A100-80G"], MODEL, slots=1,
                                         policy="least-busy") as pool:
            early = [asyncio.create_task(complete(pool, ask(query=f"e{i}", max_tokens=64)))
                     for i in range(3)]
            await asyncio.sleep(0.01)
            pool.add(EndpointConfig(name="extra", base_url=f"emulated://H100/{MODEL}", slots=4))
            with pytest.raises(ConfigError, match="already has an endpoint named 'extra'"):
                pool.add({"name": "extra", "base_url": f"emulated://H100/{MODEL}"})
            late = await asyncio.gather(*(complete(pool, ask(query=f"l{i}")) for i in range(2)))
            done = await asyncio.gather(*early)
            return pool.endpoints, [c.info["endpoint"] for c in [*done, *late]]

    endpoints, placed = vrun(main())
    assert endpoints == ["A100-80G-0", "extra"]
    assert placed[-2:] == ["extra", "extra"]


def test_removing_an_endpoint_redispatches_its_queued_calls() -> None:
    async def main() -> tuple[list[str], list[Completion], list[Any]]:
        async with EndpointPool.emulated(["A100-80G", "L40S"], MODEL, slots=1,
                                         policy="rr-fcfs") as pool:
            calls = [asyncio.create_task(complete(pool, ask(f"c{i}", query=f"q{i}",
                                                            max_tokens=32)))
                     for i in range(4)]             # A: c0 runs, c2 queued; L: c1 runs, c3 queued
            await asyncio.sleep(0.005)
            assert snap(pool, "A100-80G-0").queued == 1
            await pool.remove("A100-80G-0")
            with pytest.raises(ConfigError, match="no endpoint named 'A100-80G-0'"):
                await pool.remove("A100-80G-0")
            done = await asyncio.gather(*calls)
            return pool.endpoints, list(done), pool.snapshot()

    endpoints, done, snapshot = vrun(main())
    assert endpoints == ["L40S-1"]
    assert [c.info["endpoint"] for c in done] == ["A100-80G-0", "L40S-1", "L40S-1", "L40S-1"]
    assert done[0].text == "Emulated answer to: c0"   # running at the removed endpoint: finishes
    assert done[2].info["attempts"] == 1              # re-dispatched, not failed and retried
    assert [(s.in_flight, s.queued) for s in snapshot] == [(0, 0)]


def test_removing_an_endpoint_right_after_it_granted_a_slot_does_not_lose_the_call() -> None:
    async def main() -> list[Any]:
        async with EndpointPool.emulated(["A100-80G", "L40S"], MODEL, slots=1,
                                         policy="rr-fcfs") as pool:
            async def first_then_remove() -> str:
                async for _ in pool.stream(ask("c0", query="q0")):
                    pass
                # c0's release granted A's slot to c2; c2's task has not resumed yet
                await pool.remove("A100-80G-0")
                return "removed"

            return await asyncio.gather(first_then_remove(),
                                        complete(pool, ask("c1", query="q1")),
                                        complete(pool, ask("c2", query="q2")),
                                        return_exceptions=True)

    results = vrun(main())
    assert results[0] == "removed"
    assert isinstance(results[2], Completion), repr(results[2])
    assert results[2].text == "Emulated answer to: c2"


# ---- limits -----------------------------------------------------------------------------------


def test_an_rpm_limit_delays_calls_past_the_window() -> None:
    async def main() -> list[float]:
        config = EndpointConfig(name="slow", base_url=f"emulated://A100-80G/{MODEL}", rpm=2)
        async with EndpointPool([config]) as pool:
            ends = []
            for i in range(3):
                await complete(pool, ask(query=f"q{i}"))
                ends.append(now())
            return ends

    ends = vrun(main())
    assert ends[1] < 1.0 and 60.0 <= ends[2] < 61.0


def test_a_tpm_limit_delays_calls_past_the_window() -> None:
    async def main() -> float:
        config = EndpointConfig(name="slow", base_url=f"emulated://A100-80G/{MODEL}", tpm=100)
        async with EndpointPool([config]) as pool:
            for i in range(3):  # ~60 prompt + ~10 output tokens each: 3 of them exceed 100/min
                await complete(pool, ask(" ".join(["word"] * 60), query=f"q{i}", max_tokens=10))
            return now()

    assert vrun(main()) >= 60.0


# ---- configuration from a file ----------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_a_pool_loads_from_a_written_config_file(tmp_path: Path, suffix: str) -> None:
    config = PoolConfig(
        endpoints=[EndpointConfig(name="a", base_url=f"emulated://A100-80G/{MODEL}?tp=1", slots=2),
                   EndpointConfig(name="b", base_url=f"emulated://L40S/{MODEL}", slots=3)],
        policy="rr-fcfs", retry=RetryConfig(max_attempts=2, backoff_s=0.0),
        breaker=BreakerConfig(failures=3, cooldown_s=5.0), max_queued_per_slot=7)
    path = write_pool_config(config, tmp_path / f"pool{suffix}")

    async def main() -> tuple[EndpointPool, list[str]]:
        async with EndpointPool.load(path) as pool:
            placed = [(await complete(pool, ask(query=f"q{i}"))).info["endpoint"] for i in range(4)]
            return pool, placed

    pool, placed = vrun(main())
    assert pool.endpoints == ["a", "b"] and placed == ["a", "b", "a", "b"]
    assert pool.dispatcher.name == "rr-fcfs" and pool.max_queued_per_slot == 7
    assert pool.retry.max_attempts == 2 and pool.breaker.failures == 3


def test_a_bad_pool_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "pool.toml"
    path.write_text('policy = "rr-fcfs"\n[[endpoints]]\nname = "a"\nbase_url = "ftp://x"\n')
    with pytest.raises(ConfigError, match="pool.toml"):
        EndpointPool.load(path)


# ---- scale ------------------------------------------------------------------------------------


def test_200_concurrent_calls_complete_and_the_pool_drains() -> None:
    async def main() -> dict[str, Any]:
        async with EndpointPool.emulated(["A100-80G", "L40S", "H100"], MODEL, slots=8) as pool:
            done = await asyncio.gather(*(
                complete(pool, ask(f"question {i}", query=f"q{i}", max_tokens=16 + i % 24,
                                   deadline=5.0 + i % 7))
                for i in range(200)))
            await asyncio.sleep(0)
            return {"done": done, "snapshot": pool.snapshot(), "busy": pool.busy_seconds(),
                    "engines": pool.engine_stats(), "end": now(), "left": await others()}

    out = vrun(main())
    assert [c.text for c in out["done"]] == [f"Emulated answer to: question {i}"
                                             for i in range(200)]
    assert all(c.info["attempts"] == 1 for c in out["done"])
    assert all((s.in_flight, s.queued, s.failures) == (0, 0, 0) for s in out["snapshot"])
    assert sum(s.calls for s in out["snapshot"]) == 200
    assert len({c.info["endpoint"] for c in out["done"]}) == 3      # the load is spread
    assert all(0 < b <= out["end"] for b in out["busy"].values())
    assert all(e.running == 0 and e.waiting == 0 for e in out["engines"].values())
    assert out["left"] == []


def test_a_rate_window_ends_exactly_when_its_wait_does() -> None:
    """At t = start + 60 s, ``now - start`` rounds to just below 60 at these magnitudes: the
    window must still count the start as gone (the rpm wait slept until that very sum), or the
    call waiting for the window spins at one instant forever."""
    from collections import deque

    from fleetcall.throttle import LoopThrottler, TokenWindow

    start = 481.09011482367356
    assert (start + 60.0) - start < 60.0  # the rounding this is about

    async def main() -> tuple[int, int]:
        rpm, tpm = LoopThrottler(1, 60.0), TokenWindow(10, 60.0)
        rpm._bind_loop()
        tpm._bind_loop()
        rpm._task_logs = deque([start])
        tpm._log, tpm._used = deque([(start, 10)]), 10
        await asyncio.sleep(start + 60.0 - now())
        rpm.flush()
        tpm._flush(now())
        return len(rpm._task_logs), len(tpm._log)

    assert run_virtual(main(), start=start) == (0, 0)
