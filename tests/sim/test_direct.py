"""The in-process path to emulated endpoints (issue 12, faster simulation): the pool's streamed
calls reach the engine without HTTP, and every record is what the HTTP transport path gives --
the same loop times, endpoints, TTFTs, cached tokens and, with faults, the same errors, retries
and timeouts."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench.replay import replay
from fleetcall.bench.scheduler import Setup
from fleetcall.bench.workloads import load_workload, repeat_queries
from fleetcall.llm.base import LLMRequest, Message, complete
from fleetcall.router.config import BreakerConfig, RetryConfig
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.direct import DirectClient
from fleetcall.sim.emulator import Faults, LengthsResponder
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.vclock import run_virtual

GPUS = ("A100-80G", "A100-80G", "A6000", "L40S")


def _records(policy: str, direct: bool, *, queries: int = 24, rate: float = 0.2,
             faults: Faults | None = None, attempt_timeout_s: float = 3600.0) -> list[Any]:
    setup = Setup(tuple(repeat_queries(load_workload("trace1"), queries)), GPUS, "llama-3.1-70b")
    times = arrival_processes.make_arrivals("poisson", rate, queries, 0, 1.0,
                                            queries=setup.queries)

    async def run() -> list[Any]:
        pool = EndpointPool.emulated(
            GPUS, "llama-3.1-70b", policy=policy, responder=LengthsResponder(), seed=3,
            faults=faults, stream_interval_s=30.0, backend_options={"direct": direct},
            retry=RetryConfig(attempt_timeout_s=attempt_timeout_s, max_attempts=4),
            breaker=BreakerConfig(failures=1000))
        async with pool:
            records = await replay(pool, setup.queries, times, setup.budgets())
        return [dataclasses.asdict(r) for r in records]

    return run_virtual(run(), seed=0)


@pytest.mark.parametrize("policy", ["rr-fcfs", "slack"])
def test_direct_path_gives_the_records_of_the_http_path(policy: str) -> None:
    direct, http = _records(policy, True), _records(policy, False)
    assert sum(len(q["calls"]) for q in direct) > 400
    assert direct == http


def test_direct_path_gives_the_errors_retries_and_timeouts_of_the_http_path() -> None:
    faults = Faults(error_rate=0.08, rate_limit_rate=0.08, retry_after_s=2.0, spike_rate=0.1,
                    spike_s=3.0, hang_rate=0.03, drop_rate=0.08)
    direct = _records("slack", True, queries=16, faults=faults, attempt_timeout_s=200.0)
    http = _records("slack", False, queries=16, faults=faults, attempt_timeout_s=200.0)
    errors = [c["error"] for q in direct for c in q["calls"] if c["error"]]
    assert direct == http
    assert any(q["failed"] for q in direct) and errors  # the faults did fail some calls


def test_a_crashed_endpoint_fails_alike_on_both_paths() -> None:
    faults = Faults(crash_after=40)
    direct = _records("least-busy", True, queries=12, faults=faults)
    assert direct == _records("least-busy", False, queries=12, faults=faults)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The paths of the requests that go through the emulator's HTTP transport."""
    paths: list[str] = []
    handle = EmulatorTransport.handle_async_request

    async def spy(self: EmulatorTransport, request: Any) -> Any:
        paths.append(request.url.path)
        return await handle(self, request)

    monkeypatch.setattr(EmulatorTransport, "handle_async_request", spy)
    return paths


def test_streamed_pool_calls_to_emulated_endpoints_send_no_http(sent: list[str]) -> None:
    """Before the direct path every call was an httpx request through EmulatorTransport, its
    answer SSE text parsed back; now only what is not a streamed chat goes there."""

    async def run() -> list[str]:
        async with EndpointPool.emulated(["A100", "L40S"], "llama-3.1-8b") as pool:
            assert all(isinstance(link.client, DirectClient) for link in pool._links.values())
            out = []
            for i in range(6):
                done = await complete(pool, LLMRequest(
                    messages=(Message("user", f"question {i} " * 40),), max_tokens=20))
                out.append(done.text)
            return out

    texts = run_virtual(run())
    assert all(texts) and sent == []


def test_the_http_path_stays_when_asked_for(sent: list[str]) -> None:

    async def run() -> str:
        async with EndpointPool.emulated(["A100"], "llama-3.1-8b",
                                         backend_options={"direct": False}) as pool:
            done = await complete(pool, LLMRequest(messages=(Message("user", "hi there"),),
                                                   max_tokens=5))
            return done.text

    assert run_virtual(run()) and sent == ["/v1/chat/completions"]


def test_a_caller_that_stops_reading_frees_the_engine_at_once() -> None:
    """The planner stops reading at ``join()``: the request leaves the engine then, not when
    the loop gets round to finalizing a dropped generator (as the HTTP path's closing does)."""

    async def run() -> tuple[int, int]:
        async with EndpointPool.emulated(["A100"], "llama-3.1-8b") as pool:
            link = next(iter(pool._links.values()))
            assert isinstance(link.client, DirectClient)
            engine = link.client.endpoint.engine
            chunks = link.client.stream(LLMRequest(messages=(Message("user", "go " * 50),),
                                                   max_tokens=400))
            first = await anext(chunks)
            assert first.text
            before = sum(not r.cancelled for r in engine._live.values())
            await chunks.aclose()  # no loop step in between
            return before, sum(not r.cancelled for r in engine._live.values())

    assert run_virtual(run()) == (1, 0)
