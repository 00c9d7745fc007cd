"""``fleetcall bench pool``: what the pool's orchestration costs per LLM call, on the real clock.

The endpoints answer instantly (an in-process httpx transport returns a short streamed chat
completion at once), so the wall time of a call is all fleetcall: the scheduler core's
placement (dispatcher, local queue, slots), the I/O shell's grant, report and timer handling,
and the endpoint client's request building and SSE parsing. The same calls are also sent
straight through an :class:`~fleetcall.router.client.EndpointClient` (no pool); the difference
is the pool's own cost, which must stay under :data:`FLOOR_US_PER_CALL` for every shape and
policy. Costs are CPU seconds of this process (``time.process_time``: on a shared machine the
wall clock also counts other processes' turns); wall times are reported beside them. Shapes:
calls one after another; ``--concurrency`` calls at once (queues form once they outnumber the
slots). Best of ``--repeat``, the pool and the bare clients measured alternately.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from typing import Any

import httpx

from fleetcall.llm.base import CallContext, LLMRequest, Message, complete
from fleetcall.router.client import EndpointClient, RoutingTransport, make_http_client
from fleetcall.router.config import EndpointConfig
from fleetcall.router.dispatcher import dispatcher_names
from fleetcall.router.pool import EndpointPool

FLOOR_US_PER_CALL = 1000.0
MODEL = "llama-3.1-8b"
_ANSWER = b"".join(
    b"data: " + json.dumps(event).encode() + b"\n\n" for event in (
        {"choices": [{"index": 0, "delta": {"content": "an "}}]},
        {"choices": [{"index": 0, "delta": {"content": "instant answer"}}]},
        {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
         "usage": {"prompt_tokens": 12, "completion_tokens": 2, "total_tokens": 14}},
    )) + b"data: [DONE]\n\n"


class InstantTransport(httpx.AsyncBaseTransport):
    """Answers every chat completion with the same short streamed answer after one loop turn
    (as a socket read would yield), so concurrent calls really overlap and queues form."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        await asyncio.sleep(0)
        return httpx.Response(200, headers={"content-type": "text/event-stream"},
                              content=_ANSWER, request=request)


def _configs(endpoints: int, slots: int) -> list[EndpointConfig]:
    return [EndpointConfig(name=f"instant-{i}", base_url=f"http://instant-{i}.bench/v1",
                           model=MODEL, gpu="A100-80G", slots=slots) for i in range(endpoints)]


def _http(endpoints: int) -> httpx.AsyncClient:
    routing = RoutingTransport()
    for i in range(endpoints):
        routing.add(f"instant-{i}.bench", InstantTransport())
    return make_http_client(routing)


def _request(i: int) -> LLMRequest:
    text = f"question {i}: how many endpoints does it take to answer instantly?"
    return LLMRequest((Message("user", text),), CallContext(query_id=f"q{i}", kind="planner",
                                                            deadline=None), max_tokens=8)


async def _drive(llm: Any, calls: int, concurrency: int) -> tuple[float, float]:
    """(CPU, wall) seconds to serve ``calls`` calls, ``concurrency`` at a time."""
    gate = asyncio.Semaphore(concurrency)

    async def one(i: int) -> None:
        async with gate:
            done = await complete(llm, _request(i))
            if not done.text:
                raise RuntimeError(f"call {i} came back empty")

    cpu, wall = time.process_time(), time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(calls):
            group.create_task(one(i))
    return time.process_time() - cpu, time.perf_counter() - wall


class _RoundRobinClients:
    """The bare clients, one call each in turn: the same HTTP work without the pool."""

    def __init__(self, clients: list[EndpointClient]) -> None:
        self._clients, self._next = clients, 0

    def stream(self, request: LLMRequest) -> Any:
        client = self._clients[self._next % len(self._clients)]
        self._next += 1
        return client.stream(request)


async def _measure(policy: str | None, calls: int, concurrency: int, endpoints: int,
                   slots: int) -> tuple[float, float]:
    async with _http(endpoints) as http:
        if policy is None:
            llm: Any = _RoundRobinClients([EndpointClient(c, http) for c in _configs(endpoints, slots)])
            return await _drive(llm, calls, concurrency)
        async with EndpointPool(_configs(endpoints, slots), policy=policy, http=http) as pool:
            return await _drive(pool, calls, concurrency)


def _best_pair(repeat: int, policy: str, *args: Any) -> dict[str, float]:
    """Best (CPU, wall) seconds through the pool and through bare clients, measured
    alternately (so a busy machine slows both alike)."""
    pooled: list[tuple[float, float]] = []
    direct: list[tuple[float, float]] = []
    for _ in range(repeat):
        for into, which in ((pooled, policy), (direct, None)):
            gc.collect()
            into.append(asyncio.run(_measure(which, *args)))
    return {"cpu": min(c for c, _ in pooled), "wall": min(w for _, w in pooled),
            "direct_cpu": min(c for c, _ in direct), "direct_wall": min(w for _, w in direct)}


def measure(calls: int = 5000, concurrency: int = 200, endpoints: int = 4, slots: int = 16,
            repeat: int = 3, policies: list[str] | None = None) -> dict[str, Any]:
    """Per-call wall time through the pool and through bare clients; figures in microseconds."""
    shapes = {"sequential": 1, "concurrent": concurrency}
    rows: list[dict[str, Any]] = []
    for shape, conc in shapes.items():
        for policy in policies or dispatcher_names():
            us = {k: t / calls * 1e6 for k, t in
                  _best_pair(repeat, policy, calls, conc, endpoints, slots).items()}
            rows.append({"shape": shape, "concurrency": conc, "policy": policy,
                         "us_per_call": us["cpu"], "direct_us_per_call": us["direct_cpu"],
                         "pool_us_per_call": us["cpu"] - us["direct_cpu"],
                         "wall_us_per_call": us["wall"],
                         "direct_wall_us_per_call": us["direct_wall"]})
    worst = max(r["pool_us_per_call"] for r in rows)
    return {"benchmark": "pool", "clock": "real", "calls": calls, "endpoints": endpoints,
            "slots": slots, "repeat": repeat, "rows": rows,
            "floors": {"pool_us_per_call_max": FLOOR_US_PER_CALL,
                       "holds": worst < FLOOR_US_PER_CALL}}


def format_report(rep: dict[str, Any]) -> str:
    lines = [f"pool orchestration cost, real clock, instant endpoints ({rep['endpoints']} x "
             f"{rep['slots']} slots), {rep['calls']} calls, best of {rep['repeat']}; "
             "CPU us per call (wall us per call)",
             f"{'shape':<12}{'concurrency':>12}  {'policy':<11}{'through pool':>17}"
             f"{'bare client':>17}{'pool cost':>11}"]
    for r in rep["rows"]:
        lines.append(f"{r['shape']:<12}{r['concurrency']:>12}  {r['policy']:<11}"
                     f"{r['us_per_call']:>7.0f} ({r['wall_us_per_call']:>5.0f}) us"
                     f"{r['direct_us_per_call']:>7.0f} ({r['direct_wall_us_per_call']:>5.0f}) us"
                     f"{r['pool_us_per_call']:>8.0f} us")
    floor = rep["floors"]
    lines.append(f"floor: pool cost under {floor['pool_us_per_call_max']:.0f} us per call: "
                 f"{'yes' if floor['holds'] else 'NO'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--calls", type=int, default=5000, help="calls per measurement")
    parser.add_argument("--concurrency", type=int, default=200,
                        help="calls at once in the concurrent shape")
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--slots", type=int, default=16, help="slots per endpoint")
    parser.add_argument("--policy", action="append",
                        help=f"policy to measure, repeatable ({', '.join(dispatcher_names())})")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per row (best kept)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def main(args: argparse.Namespace) -> int:
    if min(args.calls, args.concurrency, args.endpoints, args.slots, args.repeat) < 1:
        raise SystemExit("fleetcall bench pool: every count must be >= 1")
    rep = measure(args.calls, args.concurrency, args.endpoints, args.slots, args.repeat,
                  args.policy)
    print(format_report(rep))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rep, fh, indent=2)
        print(f"wrote {args.json}")
    return 0 if rep["floors"]["holds"] else 1
