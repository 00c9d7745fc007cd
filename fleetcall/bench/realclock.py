"""``fleetcall bench scheduler --clock real``: fleetcall's policies and external routers side by
side, over real HTTP, in front of the same emulated GPUs.

The benchmark starts one ``fleetcall emulate --speed K`` process per GPU of ``--gpus`` on
127.0.0.1 (or uses running servers, ``--endpoints``), then replays the same workload with the
same arrival times and deadlines through each *target*:

- each fleetcall policy of ``--policy``: an in-process :class:`~fleetcall.router.pool.EndpointPool`
  over HTTP to the endpoints, told their GPUs (``--pool-gpus known``), or not (``unknown``: it
  learns each endpoint's speed from measurements only, as an external router must), or both;
- each router of ``--router``: ``sglang:POLICY`` / ``vllm:POLICY`` starts that router (a Rust
  binary from its Python wheel: ``pip install 'fleetcall[routers]'``) in front of the endpoints,
  fresh for every run; a URL uses a running router (which must route to ``--endpoints``).

Everything runs on a clock K times faster than the wall clock
(:mod:`fleetcall.bench.dilation`), so the endpoints look exactly like the real GPUs: latencies,
TTFT (measured where the caller sits, for every target alike), deadlines and utilisation are in
the GPU's seconds, and a 120 s run takes 120/K wall seconds. Before each run the endpoints are
drained and their prefix caches emptied, so every target starts cold.

The *overhead* measurement sends small calls (a few prompt tokens, one output token) straight
to the endpoints (in turn, no scheduler) and through each target, one at a time and
``--overhead-concurrency`` at a time: the added wall time per call, and the CPU each adds per
call -- the router process's (``/proc``), or for fleetcall's pool this process's beyond what
the bare clients cost. Wall times on a shared machine are noisy; CPU times much less so.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench import deadlines as deadline_rules
from fleetcall.bench.dilation import run_dilated
from fleetcall.bench.live import CallerTimed, LiveEndpoint, busy_seconds, check_speed, http_client, settle
from fleetcall.bench.overheads import OverheadShape, format_overheads, measure_overheads
from fleetcall.bench.procs import Children, EmulatorSpec, start_emulators
from fleetcall.bench.replay import QueryRecord, replay
from fleetcall.bench.report import format_table, percentile, summarize
from fleetcall.bench.targets import Running, Target, open_llm, parse_targets, serving
from fleetcall.bench.workloads import independent_calls, load_workload, repeat_queries
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import default_tp
from fleetcall.bench.output import write_json

if TYPE_CHECKING:
    from fleetcall.bench.scheduler import Setup

__all__ = ["add_arguments", "check_virtual", "main", "parse_rates", "setup_at"]

DEFAULT_QUERY_TIMEOUT_S = 600.0   # a query not done this long after its arrival fails (GPU s)
# Trace replay reads no text: after the first token (always on time), a chunk every 30 s of
# GPU time keeps the endpoints' and clients' work per call small.
STREAM_INTERVAL_S = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``--clock real`` options of ``fleetcall bench scheduler``."""
    group = parser.add_argument_group("real clock (--clock real): over HTTP, against routers")
    group.add_argument("--clock", choices=("virtual", "real"), default="virtual",
                       help="virtual: in-process simulation (default); real: emulated GPUs served "
                            "over HTTP by `fleetcall emulate` processes, and external routers")
    group.add_argument("--speed", type=float, default=1.0,
                       help="the emulated GPUs and the benchmark's clock run K times faster than "
                            "real; figures stay the GPUs' (default 1)")
    group.add_argument("--router", action="append", default=[], metavar="KIND:POLICY|URL",
                       help="an external router next to the policies, repeatable: sglang:cache_aware, "
                            "sglang:round_robin, sglang:power_of_two, vllm:... (started here), or the "
                            "URL of a running one (with --endpoints)")
    group.add_argument("--endpoints", metavar="URL,...",
                       help="use these running endpoints (one per --gpus entry, in order) instead of "
                            "starting them")
    group.add_argument("--pool-gpus", choices=("known", "unknown", "both"), default="known",
                       help="tell fleetcall's pool the endpoints' GPUs, or not (learned from "
                            "measurements only), or run each policy both ways")
    group.add_argument("--independent-calls", action="store_true",
                       help="replay every call of the trace as a query of its own")
    group.add_argument("--duration", type=float,
                       help="replay rate x duration queries at each rate (instead of --queries)")
    group.add_argument("--overhead-calls", type=int, default=400,
                       help="calls per shape of the per-call overhead measurement (0: skip it)")
    group.add_argument("--overhead-concurrency", type=int, default=32,
                       help="calls at once in the concurrent shape of the overhead measurement")
    group.add_argument("--overhead-repeat", type=int, default=3,
                       help="rounds of the overhead measurement (the best of each figure is kept)")


# ---- the setup ---------------------------------------------------------------------------------


def setup_at(args: argparse.Namespace, setup: Setup, rate: float) -> Setup:
    """The queries of one run (either clock): the trace's calls as queries of their own if asked
    (``--independent-calls``, then ``--queries`` of them), ``rate x --duration`` of them if asked."""
    duration = getattr(args, "duration", None)
    if duration is not None and not (math.isfinite(duration) and duration > 0):
        raise ConfigError(f"--duration must be a number of seconds > 0, got {duration}")
    if not getattr(args, "independent_calls", False) and duration is None:
        return setup
    queries = list(setup.queries)
    if args.independent_calls:
        queries = independent_calls(load_workload(args.trace))
        if args.queries is not None:
            queries = repeat_queries(queries, args.queries)
    if duration is not None:
        queries = repeat_queries(queries, max(1, math.ceil(rate * duration)))
    return dataclasses.replace(setup, queries=tuple(queries))


def parse_rates(args: argparse.Namespace) -> list[float]:
    """The rates of ``--rates`` (comma-separated) or ``--rate``, queries/s; ConfigError naming a
    value that is not a finite number > 0."""
    texts = args.rates.split(",") if args.rates else [str(args.rate)]
    rates = []
    for text in texts:
        try:
            rate = float(text)
        except ValueError:
            rate = math.nan
        if not (math.isfinite(rate) and rate > 0):
            raise ConfigError(f"{'--rates' if args.rates else '--rate'} wants arrival rates in "
                              f"queries/s, each a finite number > 0; got {text.strip()!r}")
        rates.append(rate)
    return rates


def check_virtual(args: argparse.Namespace) -> None:
    """ConfigError naming a real-clock-only option given without ``--clock real``."""
    given = [name for name, on in (("--router", bool(getattr(args, "router", None))),
                                   ("--endpoints", bool(getattr(args, "endpoints", None))),
                                   ("--speed", getattr(args, "speed", 1.0) != 1.0),
                                   ("--pool-gpus", getattr(args, "pool_gpus", "known") != "known"))
             if on]
    if given:
        raise ConfigError(f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} --clock "
                          "real (the virtual clock runs in-process emulated GPUs, without routers)")


def _check_args(args: argparse.Namespace, targets: Sequence[Target]) -> None:
    if not (math.isfinite(args.speed) and args.speed > 0):
        raise ConfigError(f"--speed must be a finite number > 0, got {args.speed}")
    if args.overhead_calls < 0 or min(args.overhead_concurrency, args.overhead_repeat) < 1:
        raise ConfigError("--overhead-calls must be >= 0, --overhead-concurrency and "
                          "--overhead-repeat >= 1")
    if args.json and not Path(args.json).resolve().parent.is_dir():
        raise ConfigError(f"--json {args.json}: its directory does not exist")
    if any(t.kind == "url" for t in targets) and not args.endpoints:
        raise ConfigError("a running router (--router URL) routes to endpoints this benchmark "
                          "cannot start for it: pass --endpoints with the URLs it routes to, or let "
                          "the benchmark start the router (--router sglang:POLICY)")


def _endpoints(children: Children, args: argparse.Namespace, setup: Setup) -> list[LiveEndpoint]:
    """The running endpoints of ``--endpoints``, or one ``fleetcall emulate`` per GPU, started."""
    gpus, model = setup.gpus, setup.model
    tps = [setup.tp or default_tp(g, model) for g in gpus]
    names = [f"{g}-{i}" for i, g in enumerate(gpus)]  # as EndpointPool.emulated names them
    if args.endpoints:
        urls = [u.strip().rstrip("/").removesuffix("/v1") for u in args.endpoints.split(",") if u.strip()]
        if len(urls) != len(gpus):
            raise ConfigError(f"--endpoints names {len(urls)} URLs but --gpus {len(gpus)} GPUs; "
                              "give one GPU per endpoint, in the same order")
        return [LiveEndpoint(n, u, g, tp) for n, u, g, tp in zip(names, urls, gpus, tps)]
    specs = [EmulatorSpec(n, g, model, tp, ("--responder", "lengths", "--seed", str(setup.seed),
                                            "--stream-interval", f"{STREAM_INTERVAL_S:g}"))
             for n, g, tp in zip(names, gpus, tps)]
    started = start_emulators(children, specs, speed=args.speed)
    return [LiveEndpoint(s.name, c.url, s.gpu, tp) for s, c, tp in zip(specs, started, tps)]


# ---- one run -----------------------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    """What one run of one target left: records and the costs around them."""

    records: list[QueryRecord]
    busy: dict[str, float] | None   # endpoint -> emulated-GPU seconds busy during the run
    cold: bool                      # every endpoint's prefix cache was emptied before it
    client_cpu_s: float             # this process's CPU seconds during the replay
    router_cpu_s: float | None      # the router process's, if one ran for it


@dataclass(frozen=True, slots=True)
class _Plan:
    """One rate's run, the same for every target: its queries, arrival times and deadlines."""

    rate: float
    setup: Setup
    times: list[float]      # arrival times, GPU seconds from the start
    budgets: list[float]    # each query's deadline, GPU seconds after its arrival


def _plans(args: argparse.Namespace, setup: Setup) -> list[_Plan]:
    """Every rate's run, computed before any server starts (so bad input fails first)."""
    plans = []
    for rate in parse_rates(args):
        at = setup_at(args, setup, rate)
        times = arrival_processes.make_arrivals(at.arrivals, rate, len(at.queries), at.seed,
                                                at.cv, queries=at.queries)
        plans.append(_Plan(rate, at, times, at.budgets()))
    return plans


async def _replay_target(running: Running, endpoints: Sequence[LiveEndpoint], plan: _Plan,
                         options: dict[str, Any], speed: float) -> _Outcome:
    setup = plan.setup
    reference = deadline_rules.fastest_deployment(setup.deployments(), setup.queries)
    router = running.router
    async with http_client(speed) as http:
        cold = await settle(http, endpoints, speed)
        busy_before = await busy_seconds(http, endpoints)
        llm, owned = open_llm(running, endpoints, setup, http, options, speed)
        router0, cpu0 = router.cpu_seconds() if router else None, time.process_time()
        try:
            records = await replay(CallerTimed(llm), setup.queries, plan.times, plan.budgets,
                                   timeout_s=setup.timeout_s or DEFAULT_QUERY_TIMEOUT_S,
                                   reference=reference)
        finally:
            if owned is not None:
                await owned.aclose()
        cpu, router1 = time.process_time() - cpu0, router.cpu_seconds() if router else None
        busy_after = await busy_seconds(http, endpoints)
    busy = None if busy_before is None or busy_after is None else {
        name: busy_after[name] - busy_before[name] for name in busy_after}
    return _Outcome(records, busy, cold, cpu,
                    None if router0 is None or router1 is None else router1 - router0)


def _summary(out: _Outcome, target: Target, rate: float, setup: Setup, speed: float,
             wall: float) -> dict[str, Any]:
    summary = summarize(out.records, policy=target.label, rate=rate, endpoints_busy=out.busy,
                        slo_scale=setup.slo_scale)
    calls = sum(len(r.calls) for r in out.records) or 1
    ttfts = [c.ttft_s for r in out.records for c in r.calls if c.ttft_s is not None]
    summary["ttft_s"]["p99"] = percentile(ttfts, 99)  # the tail a router's queue shows
    summary.update(
        clock="real", speed=speed, wall_s=wall, cold_start=out.cold,
        target={"kind": target.kind, "policy": target.policy, "gpus_known": target.gpus_known,
                "router": target.router},
        cpu_ms_per_call={"client": out.client_cpu_s / calls * 1e3,
                         "router": None if out.router_cpu_s is None else out.router_cpu_s / calls * 1e3})
    errors = [r.error for r in out.records if r.error]
    if errors:
        summary["first_error"] = errors[0]
    return summary


def _run_target(children: Children, target: Target, endpoints: Sequence[LiveEndpoint],
                plan: _Plan, options: dict[str, Any], speed: float,
                then: Callable[[Running], None] | None = None) -> dict[str, Any]:
    """One target at one rate, on a fresh router if it is one, on the dilated clock; ``then``
    runs after it, the router still up (the overhead measurement)."""
    rate = plan.rate
    with serving(children, target, endpoints) as running:
        started = time.perf_counter()
        out = run_dilated(_replay_target(running, endpoints, plan, options, speed), speed=speed)
        summary = _summary(out, target, rate, plan.setup, speed, time.perf_counter() - started)
        print(f"  {target.label:<26} rate {rate:g}/s: p95 {summary['latency_s']['p95'] or 0:.2f}s, "
              f"TTFT p95 {summary['ttft_s']['p95'] or 0:.2f}s, "
              f"{summary['completed']}/{summary['queries']} done, {summary['wall_s']:.1f}s wall",
              flush=True)
        if then is not None:
            then(running)
    return summary


# ---- main --------------------------------------------------------------------------------------


def main(args: argparse.Namespace, setup: Setup, options: dict[str, Any], policies: Sequence[str]) -> int:
    """Run every target at every rate, then the overhead measurement; print and write them."""
    targets = parse_targets(policies, args.router, args.pool_gpus)
    _check_args(args, targets)
    plans = _plans(args, setup)  # bad input fails before any server starts
    speed = args.speed
    runs: list[dict[str, Any]] = []
    overheads: list[dict[str, Any]] = []
    shapes = (OverheadShape("one at a time", 1, max(1, args.overhead_calls // 4)),
              OverheadShape(f"{args.overhead_concurrency} at once", args.overhead_concurrency,
                            args.overhead_calls))
    with Children() as children:
        endpoints = _endpoints(children, args, setup)
        run_dilated(_check_speed(endpoints, speed), speed=speed)

        def overhead(running: Running) -> None:
            overheads.extend(measure_overheads(running, shapes, endpoints, setup, options, speed,
                                               repeat=args.overhead_repeat))

        for target in targets:
            for i, plan in enumerate(plans):
                last = i == len(plans) - 1 and args.overhead_calls > 0
                runs.append(_run_target(children, target, endpoints, plan, options, speed,
                                        overhead if last else None))
    print(format_table(runs))
    if overheads:
        print(format_overheads(overheads))
    report = {"benchmark": "scheduler", "clock": "real", "speed": speed, "trace": args.trace,
              "independent_calls": args.independent_calls, "gpus": list(setup.gpus),
              "model": setup.model, "slots": setup.slots, "slo_scale": setup.slo_scale,
              "deadline": setup.deadline, "arrivals": setup.arrivals, "seed": setup.seed,
              "runs": runs, "overhead": overheads}
    if args.json:
        write_json(args.json, report, default=str)
    return 0


async def _check_speed(endpoints: Sequence[LiveEndpoint], speed: float) -> None:
    async with http_client(speed) as http:
        await check_speed(http, endpoints, speed)
