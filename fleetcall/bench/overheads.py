"""What a router adds to each call, measured over real HTTP: direct vs through it.

Small calls (a few prompt tokens, one output token, each prompt unique) go to the live
endpoints straight (bare clients in turn: no scheduler, no router) and through a target (an
external router, or fleetcall's pool), in alternation, in shapes of ``concurrency`` calls at a
time. Per call: wall milliseconds through each and their difference (the *added* latency one at
a time; at many at once, the throughput), and CPU milliseconds -- the router process's own
(``/proc``), and this process's through the target beyond the bare clients' (for fleetcall's
pool that is the pool: dispatcher, queues, core, the I/O shell). Best of ``repeat`` rounds for
each figure, as wall times on a shared machine also count other processes' turns. Calls run on
the benchmark's dilated clock; every figure here is converted back to wall time.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx

from fleetcall.bench.dilation import run_dilated
from fleetcall.bench.live import LiveEndpoint, http_client
from fleetcall.bench.targets import DIRECT, Running, open_llm
from fleetcall.llm.base import LLM, CallContext, LLMRequest, Message, complete
from fleetcall.router.pool import EndpointPool

if TYPE_CHECKING:
    from fleetcall.bench.scheduler import Setup

__all__ = ["OverheadShape", "format_overheads", "measure_overheads"]

WARMUP_CALLS = 4   # unmeasured calls first: connections opened, caches of the code warm


@dataclass(frozen=True, slots=True)
class OverheadShape:
    label: str
    concurrency: int   # calls in flight at once
    calls: int         # calls measured


@dataclass(frozen=True, slots=True)
class _Sample:
    wall_s: float          # wall seconds for all the calls
    cpu_s: float           # this process's CPU seconds
    router_cpu_s: float | None  # the router process's CPU seconds (None: no router process)


def _request(i: int) -> LLMRequest:
    return LLMRequest((Message("user", f"call {i}: route me"),),
                      CallContext(query_id=f"overhead-{i}", kind="overhead"), max_tokens=1)


async def _drive(llm: LLM, shape: OverheadShape, router_cpu: Callable[[], float | None]) -> _Sample:
    gate = asyncio.Semaphore(shape.concurrency)

    async def one(i: int) -> None:
        async with gate:
            done = await complete(llm, _request(i))
            if done.usage.completion_tokens < 1:
                raise RuntimeError(f"overhead call {i} came back without a token")

    for i in range(WARMUP_CALLS):
        await one(-1 - i)
    router0, cpu0, wall0 = router_cpu(), time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(shape.calls):
            group.create_task(one(i))
    wall, cpu, router1 = time.perf_counter() - wall0, time.process_time() - cpu0, router_cpu()
    return _Sample(wall, cpu, None if router0 is None or router1 is None else router1 - router0)


Opener = Callable[[httpx.AsyncClient], tuple[LLM, EndpointPool | None]]


async def _measure(opener: Opener, shape: OverheadShape,
                   router_cpu: Callable[[], float | None], speed: float) -> _Sample:
    async with http_client(speed) as http:
        llm, owned = opener(http)
        try:
            return await _drive(llm, shape, router_cpu)
        finally:
            if owned is not None:
                await owned.aclose()


def _row(label: str, shape: OverheadShape, via: list[_Sample], direct: list[_Sample]) -> dict[str, Any]:
    calls = shape.calls
    wall = min(s.wall_s for s in via) / calls * 1e3
    direct_wall = min(s.wall_s for s in direct) / calls * 1e3
    cpu = min(s.cpu_s for s in via) / calls * 1e3
    direct_cpu = min(s.cpu_s for s in direct) / calls * 1e3
    routers = [s.router_cpu_s for s in via if s.router_cpu_s is not None]
    return {"target": label, "shape": shape.label, "concurrency": shape.concurrency,
            "calls": calls, "wall_ms_per_call": wall, "direct_wall_ms_per_call": direct_wall,
            "added_wall_ms_per_call": wall - direct_wall,
            "calls_per_s": 1e3 / wall, "direct_calls_per_s": 1e3 / direct_wall,
            "client_cpu_ms_per_call": cpu, "direct_client_cpu_ms_per_call": direct_cpu,
            "added_client_cpu_ms_per_call": cpu - direct_cpu,
            "router_cpu_ms_per_call": min(routers) / calls * 1e3 if routers else None}


def measure_overheads(running: Running, shapes: Sequence[OverheadShape],
                      endpoints: Sequence[LiveEndpoint], setup: Setup, options: dict[str, Any],
                      speed: float, repeat: int = 3) -> list[dict[str, Any]]:
    """One row per shape for a target ready to take calls (its router running): ``repeat``
    rounds, each through the target, then straight to the endpoints."""
    router = running.router
    router_cpu: Callable[[], float | None] = router.cpu_seconds if router is not None else lambda: None
    direct = Running(DIRECT)
    rows = []
    for shape in shapes:
        via: list[_Sample] = []
        bare: list[_Sample] = []
        for _ in range(repeat):
            for into, which, cpu_of in ((via, running, router_cpu), (bare, direct, lambda: None)):
                gc.collect()
                opener = _opener(which, endpoints, setup, options, speed)
                into.append(run_dilated(_measure(opener, shape, cpu_of, speed), speed=speed))
        rows.append(_row(running.target.label, shape, via, bare))
        print(f"  overhead {running.target.label:<26} {shape.label}: "
              f"{rows[-1]['added_wall_ms_per_call']:+.2f} ms wall, "
              f"{rows[-1]['calls_per_s']:.0f} calls/s", flush=True)
    return rows


def _opener(running: Running, endpoints: Sequence[LiveEndpoint], setup: Setup,
            options: dict[str, Any], speed: float) -> Opener:
    return lambda http: open_llm(running, endpoints, setup, http, options, speed)


def format_overheads(rows: Sequence[dict[str, Any]]) -> str:
    """The overhead rows as a table: wall and CPU milliseconds per call."""
    header = (f"{'target':<28}{'shape':<14}{'wall/call':>11}{'direct':>9}{'added':>9}"
              f"{'calls/s':>9}{'direct':>8}{'router CPU':>12}{'client CPU +':>14}")
    lines = ["per-call overhead over real HTTP, ms per call (wall, and CPU: the router process's, "
             "this process's beyond the bare clients'); best of the rounds", header]
    for r in rows:
        router = r["router_cpu_ms_per_call"]
        lines.append(f"{r['target']:<28}{r['shape']:<14}{r['wall_ms_per_call']:>11.2f}"
                     f"{r['direct_wall_ms_per_call']:>9.2f}{r['added_wall_ms_per_call']:>+9.2f}"
                     f"{r['calls_per_s']:>9.0f}{r['direct_calls_per_s']:>8.0f}"
                     f"{'-' if router is None else f'{router:.3f}':>12}"
                     f"{r['added_client_cpu_ms_per_call']:>+14.3f}")
    return "\n".join(lines)
