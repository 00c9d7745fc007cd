"""``fleetcall bench ray-overhead``: what one shared scheduler costs, and how much it carries.

Four measurements, real clock (the last three on a local Ray cluster this command starts with
``ray.init(num_cpus=2)`` and shuts down):

1. **The core's cost per decision**, in-process, no Ray: calls driven through a
   :class:`~fleetcall.router.core.SchedulerCore` of ``--endpoints`` x ``--slots`` (submit ->
   grant, started, first token, finished with measurements), one at a time and with
   ``--queued`` calls waiting; and the same through :class:`~fleetcall.distributed.shared.SharedCore`
   as the actor applies them (events batched, call ids namespaced). CPU microseconds per call
   and per event.
2. **The round trip** to the scheduler actor: an empty exchange, awaited on an asyncio loop
   (what a replica pays to hear back) over the direct connection replicas use
   (:mod:`~fleetcall.distributed.wire`), and as a Ray actor call for comparison: mean and
   p50/p95 milliseconds; and the actor process's CPU per such request.
3. **Per-call overhead**: calls one after another through a
   :class:`~fleetcall.distributed.pool.RayPool` and through a plain
   :class:`~fleetcall.router.pool.EndpointPool` over the same instant in-process endpoints
   (:class:`~fleetcall.bench.pool.InstantTransport`); the difference in wall time per call is
   what placing through the actor adds (target: under 2 ms), and the requests the actor
   served per call (1: the exchange carrying its events; a poll answering empty would add).
4. **Capacity**: ``--drivers`` synthetic replicas in this process drive the actor as fast as it
   answers (over the direct connection), each keeping ``--window`` calls in flight (every round trip carries new submits
   and the started / first-token / finished events of the calls granted before): calls
   finished per second, and the actor's CPU per call (``1 / CPU per call`` is what one actor
   carries on a core of its own).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import statistics
import time
from typing import Any

from fleetcall.bench.pool import _configs, _http, _request
from fleetcall.distributed.shared import Event, SharedCore
from fleetcall.errors import ConfigError
from fleetcall.llm.base import complete
from fleetcall.router.actions import Grant, Outcome
from fleetcall.router.core import SchedulerCore
from fleetcall.router.pool import EndpointPool
from fleetcall.router.state import EndpointSpec
from fleetcall.router.views import CallView
from fleetcall.bench.output import write_json

TARGET_MS_PER_CALL = 2.0
OUTCOME = Outcome(ttft_s=0.05, tpot_s=0.01, total_s=0.5, completion_tokens=45)


def _view(n: Any, query: str) -> CallView:
    return CallView(n, query, "planner", 600, 45, None, 0.0, 0, 0.0, ())


def _specs(endpoints: int, slots: int) -> list[EndpointSpec]:
    return [EndpointSpec(f"e{i}", slots, "A100-80G", "llama-3.1-8b", 1, 10_000,
                         "A100-80G|llama-3.1-8b|1") for i in range(endpoints)]


def core_cost(policy: str, calls: int, endpoints: int, slots: int,
              queued: int) -> dict[str, float]:
    """CPU us per call and per event, calls through a bare core (``queued`` waiting)."""
    core = SchedulerCore(policy)
    for spec in _specs(endpoints, slots):
        core.add_endpoint(spec, 0.0)
    now, events, granted = 0.0, 0, []
    started = time.process_time()
    for n in range(calls + queued):
        now += 1e-4
        granted += [a.call_id for a in core.submit(_view(n, f"q{n % 97}"), now)
                    if isinstance(a, Grant)]
        events += 1
        if n < queued:
            continue
        call = granted.pop(0)
        for actions in (core.started(call, now), core.first_token(call, now),
                        core.finished(call, now, OUTCOME)):
            granted += [a.call_id for a in actions if isinstance(a, Grant)]
        events += 3
    cpu = time.process_time() - started
    return {"us_per_call": cpu / calls * 1e6, "us_per_event": cpu / events * 1e6}


def shared_cost(policy: str, calls: int, endpoints: int, slots: int) -> dict[str, float]:
    """CPU us per call through :class:`SharedCore` as the actor applies them (one batch per
    round trip: a new call's submit and the previous call's other three events)."""
    shared = SharedCore(SchedulerCore(policy))
    shared.hello("r", 1, _specs(endpoints, slots), 0.0)
    now, previous = 0.0, None
    started = time.process_time()
    for n in range(calls):
        now += 1e-4
        batch = [Event("submit", _view(n, f"q{n % 97}"))]
        if previous is not None:
            batch += [Event("started", previous), Event("first_token", previous),
                      Event("finished", previous, OUTCOME)]
        shared.apply("r", 1, batch, now)
        shared.take("r")
        previous = n
    cpu = time.process_time() - started
    return {"us_per_call": cpu / calls * 1e6}


async def round_trip(handle: Any, trips: int) -> dict[str, Any]:
    """Wall ms of an empty exchange with the actor, awaited on this loop, as replicas send it
    (over the direct connection), and the actor's CPU us per such request (its per-request
    cost, the scheduler's work being nil); and the same as an actor method call
    (``actor_call``: what each request cost before the direct connection)."""
    from fleetcall.distributed.actor import RayChannel
    out: dict[str, Any] = {}
    for key, direct in (("direct", True), ("actor_call", False)):
        channel = RayChannel(handle, direct=direct)
        await channel.hello(f"rtt-{key}", 1, [])
        before = await handle.stats.remote()
        times = []
        for seq in range(trips):
            t0 = time.perf_counter()
            await channel.exchange(f"rtt-{key}", 1, seq, [])
            times.append((time.perf_counter() - t0) * 1e3)
        after = await handle.stats.remote()
        await channel.aclose()
        times.sort()
        out[key] = {"mean_ms": statistics.fmean(times), "p50_ms": times[len(times) // 2],
                    "p95_ms": times[int(len(times) * 0.95)],
                    "actor_cpu_us_per_request": (after["cpu_s"] - before["cpu_s"]) / (trips + 1)
                    * 1e6}
    return {**out["direct"], "actor_call": out["actor_call"]}


async def per_call(handle: Any, calls: int, endpoints: int, slots: int) -> dict[str, float]:
    """Wall ms per sequential call, through a RayPool (over the direct connection), one whose
    requests are actor calls (``direct=False``), and a local EndpointPool; and the requests
    the actor served per call of the RayPool (exchanges and polls)."""
    from fleetcall.distributed.pool import RayPool
    out: dict[str, float] = {}
    requests = []
    for label in ("local", "ray", "call", "local2", "ray2", "call2"):  # alternated: a busy
        async with _http(endpoints) as http:                            # machine slows all
            pool: EndpointPool = (
                EndpointPool(_configs(endpoints, slots), http=http, policy="slack")
                if label.startswith("local") else
                RayPool(_configs(endpoints, slots), scheduler=handle, http=http, policy="slack",
                        direct=label.startswith("ray")))
            async with pool:
                await complete(pool, _request(-1))          # joined, warmed up
                before = (await handle.stats.remote())["requests"]
                t0 = time.perf_counter()
                for i in range(calls):
                    await complete(pool, _request(i))
                ms = (time.perf_counter() - t0) / calls * 1e3
                if label.startswith("ray"):
                    requests.append(((await handle.stats.remote())["requests"] - before) / calls)
        key = label.rstrip("2")
        out[key] = min(out.get(key, ms), ms)
    return {"local_ms_per_call": out["local"], "ray_ms_per_call": out["ray"],
            "overhead_ms_per_call": out["ray"] - out["local"],
            "actor_call_ms_per_call": out["call"],
            "actor_call_overhead_ms_per_call": out["call"] - out["local"],
            "requests_per_call": statistics.fmean(requests)}


async def _driver(handle: Any, name: str, window: int, until: float, done: list[int]) -> None:
    """One synthetic replica: ``window`` calls in flight, as fast as the actor answers (over
    the direct connection, as replicas reach it)."""
    from fleetcall.distributed.actor import RayChannel
    channel = RayChannel(handle)
    await channel.hello(name, 1, [])
    n, live, seq = 0, 0, 0
    granted: list[Any] = []
    try:
        while time.perf_counter() < until:
            batch = []
            for call in granted:
                batch += [Event("started", call), Event("first_token", call),
                          Event("finished", call, OUTCOME)]
            live -= len(granted)
            done[0] += len(granted)
            while live < window:
                batch.append(Event("submit", _view(n, f"{name}-{n % 31}")))
                n, live = n + 1, live + 1
            reply = await channel.exchange(name, 1, seq, batch)
            seq += 1
            granted = [a.call_id for a in reply.actions if isinstance(a, Grant)]
    finally:
        await channel.aclose()


async def capacity(handle: Any, drivers: int, window: int, seconds: float) -> dict[str, float]:
    """Calls/s the actor serves to ``drivers`` replicas, and its CPU us per call."""
    done = [0]
    before = await handle.stats.remote()
    t0 = time.perf_counter()
    async with asyncio.TaskGroup() as group:
        for i in range(drivers):
            group.create_task(_driver(handle, f"drive-{i}", window, t0 + seconds, done))
    wall = time.perf_counter() - t0
    after = await handle.stats.remote()
    cpu = after["cpu_s"] - before["cpu_s"]
    return {"calls_per_s": done[0] / wall, "actor_cpu_us_per_call": cpu / max(done[0], 1) * 1e6,
            "actor_cpu_share": cpu / wall, "calls": done[0]}


def measure_ray(args: argparse.Namespace) -> dict[str, Any]:
    from fleetcall.distributed.actor import import_ray, start_scheduler
    ray = import_ray()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        specs = _specs(args.endpoints, args.slots)
        handle = start_scheduler("slack", name="bench-overhead", lease_slots=args.lease_slots)
        trip = asyncio.run(round_trip(handle, args.trips))
        call = asyncio.run(per_call(handle, args.calls, args.endpoints, args.slots))
        ray.kill(handle)
        handle = start_scheduler("slack", name="bench-capacity", endpoints=specs)
        cap = asyncio.run(capacity(handle, args.drivers, args.window, args.seconds))
        ray.kill(handle)
    finally:
        ray.shutdown()
    return {"round_trip": trip, "per_call": call, "capacity": cap}


def format_report(rep: dict[str, Any]) -> str:
    core, shared = rep["core"], rep["shared_core"]
    lines = [f"shared scheduler cost ({rep['endpoints']} endpoints x {rep['slots']} slots, "
             f"policy {rep['policy']})",
             f"core, one call at a time:   {core['sequential']['us_per_call']:7.1f} us CPU per "
             f"call ({core['sequential']['us_per_event']:.1f} us per event)",
             f"core, {rep['queued']} calls queued: {core['queued']['us_per_call']:7.1f} us CPU per "
             f"call ({core['queued']['us_per_event']:.1f} us per event)",
             f"SharedCore (actor's path): {shared['us_per_call']:7.1f} us CPU per call"]
    ray = rep.get("ray")
    if ray:
        t, c, k = ray["round_trip"], ray["per_call"], ray["capacity"]
        a = t["actor_call"]
        lines += [f"actor round trip: {t['mean_ms']:.2f} ms mean, p50 {t['p50_ms']:.2f}, "
                  f"p95 {t['p95_ms']:.2f}; the actor's CPU {t['actor_cpu_us_per_request']:.0f} us "
                  f"per empty request (direct connection; as an actor call: p50 "
                  f"{a['p50_ms']:.2f} ms, {a['actor_cpu_us_per_request']:.0f} us CPU)",
                  f"per call: {c['ray_ms_per_call']:.2f} ms through RayPool, "
                  f"{c['local_ms_per_call']:.2f} ms local: overhead "
                  f"{c['overhead_ms_per_call']:.2f} ms (target < {TARGET_MS_PER_CALL} ms); "
                  f"{c['requests_per_call']:.2f} requests to the actor a call (requests as "
                  f"actor calls: {c['actor_call_ms_per_call']:.2f} ms, overhead "
                  f"{c['actor_call_overhead_ms_per_call']:.2f} ms)",
                  f"capacity: {k['calls_per_s']:,.0f} calls/s from {rep['drivers']} drivers, "
                  f"actor {k['actor_cpu_us_per_call']:.0f} us CPU per call "
                  f"({k['actor_cpu_share']:.0%} of a core) -> one actor on its own core: "
                  f"~{1e6 / k['actor_cpu_us_per_call']:,.0f} calls/s"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--policy", default="slack")
    parser.add_argument("--endpoints", type=int, default=4)
    parser.add_argument("--slots", type=int, default=16)
    parser.add_argument("--core-calls", type=int, default=20_000)
    parser.add_argument("--queued", type=int, default=200, help="calls waiting in the queued shape")
    parser.add_argument("--trips", type=int, default=2000, help="round trips timed")
    parser.add_argument("--calls", type=int, default=500, help="sequential calls per pool")
    parser.add_argument("--drivers", type=int, default=4, help="synthetic replicas (capacity)")
    parser.add_argument("--window", type=int, default=64, help="calls in flight per driver")
    parser.add_argument("--seconds", type=float, default=10.0, help="capacity run length")
    parser.add_argument("--lease-slots", type=int, default=0,
                        help="slot leases per replica of the scheduler (per-call overhead; 0: none)")
    parser.add_argument("--no-ray", action="store_true", help="the core's cost only")
    parser.add_argument("--json", metavar="PATH")


def check(args: argparse.Namespace) -> None:
    """ConfigError naming the first option out of range (before any measurement or cluster)."""
    for name in ("endpoints", "slots", "core_calls", "trips", "calls", "drivers", "window"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    for name in ("queued", "lease_slots"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if not (math.isfinite(args.seconds) and args.seconds > 0):
        raise ConfigError(f"--seconds must be a finite number > 0, got {args.seconds}")


def main(args: argparse.Namespace) -> int:
    check(args)
    rep: dict[str, Any] = {
        "benchmark": "ray-overhead", "policy": args.policy, "endpoints": args.endpoints,
        "slots": args.slots, "queued": args.queued, "drivers": args.drivers,
        "core": {"sequential": core_cost(args.policy, args.core_calls, args.endpoints, args.slots, 0),
                 "queued": core_cost(args.policy, args.core_calls, args.endpoints, args.slots,
                                     args.queued)},
        "shared_core": shared_cost(args.policy, args.core_calls, args.endpoints, args.slots)}
    if not args.no_ray:
        rep["ray"] = measure_ray(args)
        rep["target_met"] = rep["ray"]["per_call"]["overhead_ms_per_call"] < TARGET_MS_PER_CALL
    print(format_report(rep))
    if args.json:
        write_json(args.json, rep)
    return 0 if rep.get("target_met", True) else 1
