"""``fleetcall bench scheduler --replicas K``: the herd, on the virtual clock (``--clock real``:
on a local Ray cluster, :mod:`fleetcall.bench.herd_ray`).

K service replicas share one cluster of (emulated, in-process) endpoints; each replica runs
its own pool shell and serves its share of the workload (query ``i`` goes to replica
``i mod K``, at its arrival time, with its deadline). Two ways to schedule them:

* ``independent``: each replica's pool has its own :class:`~fleetcall.router.core.SchedulerCore`
  and sees only its own calls, as separate routers do. Each thinks it has every slot of every
  endpoint, so all of them pick the same "best" endpoint at once (the herd) and none sees the
  others' urgent calls.
* ``shared``: every replica's pool places its calls through one
  :class:`~fleetcall.distributed.server.SchedulerServer` (a
  :class:`~fleetcall.distributed.remote.RemoteCore` over an in-process channel,
  ``--rtt-ms`` of loop time per round trip): one global view, as the Ray actor gives.

The endpoints are the same engines for every replica (one in-process transport per endpoint,
shared), so the two modes differ only in how placement sees the cluster. Reported per (K,
mode): SLO attainment, latency p50/p95/p99, TTFT p95, failures. The endpoints are reached as
``http://`` hosts routed in-process, so their prefix index has the pool's default size for
an endpoint of unknown memory; K = 1 is the baseline both modes are measured against.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench import deadlines as deadline_rules
from fleetcall.bench.replay import QueryRecord, replay
from fleetcall.bench.report import summarize
from fleetcall.distributed.remote import LocalChannel, RemoteCore
from fleetcall.distributed.server import SchedulerServer
from fleetcall.errors import ConfigError
from fleetcall.gpumodel.perf import default_tp
from fleetcall.router.client import RoutingTransport, emulated_host, make_http_client
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.router.core import SchedulerCore
from fleetcall.router.pool import EndpointPool
from fleetcall.sim.emulator import EmulatedEndpoint, LengthsResponder
from fleetcall.sim.fronts import EmulatorTransport
from fleetcall.vclock import run_virtual
from fleetcall.bench.output import write_json

MODES = ("independent", "shared")
DEFAULT_REPLICAS = "1,2,4,8"


class SharedEndpoints:
    """Emulated endpoints, one per GPU named, that several pools reach through one HTTP client
    (in-process transports: no sockets, virtual-clock safe). ``async with`` closes them."""

    def __init__(self, gpus: Sequence[str], model: str, *, tp: int | None, slots: int,
                 seed: int, stream_interval_s: float, retry: RetryConfig) -> None:
        self.routing = RoutingTransport()
        self.configs: list[EndpointConfig] = []
        self.endpoints: list[EmulatedEndpoint] = []
        for i, gpu in enumerate(gpus):
            degree = tp or default_tp(gpu, model)
            name = f"{gpu}-{i}"
            endpoint = EmulatedEndpoint(gpu, model, tp=degree, name=name,
                                        responder=LengthsResponder(), seed=seed * 1000 + i,
                                        stream_interval_s=stream_interval_s)
            self.endpoints.append(endpoint)
            self.routing.add(emulated_host(name), EmulatorTransport(endpoint))
            self.configs.append(EndpointConfig(
                name=name, base_url=f"http://{emulated_host(name)}/v1",
                model=endpoint.model_name, gpu=gpu, tp=degree, slots=slots))
        self.http = make_http_client(self.routing, retry=retry)

    async def __aenter__(self) -> SharedEndpoints:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.http.aclose()
        for endpoint in self.endpoints:
            await endpoint.aclose()


def shared_pools(configs: Sequence[EndpointConfig], http: httpx.AsyncClient, replicas: int, *,
                 policy: str, options: dict[str, Any], retry: RetryConfig,
                 rtt_s: float) -> tuple[SchedulerServer, list[EndpointPool]]:
    """``replicas`` pools placing through one in-process :class:`SchedulerServer` on the
    running loop's clock (call inside the loop)."""
    server = SchedulerServer(policy, options, retry=retry,
                             clock=asyncio.get_running_loop().time)
    pools = []
    for i in range(replicas):
        core = RemoteCore(LocalChannel(server, rtt_s=rtt_s),
                          SchedulerCore(policy, options, retry=retry), replica=f"replica-{i}")
        pools.append(EndpointPool(configs, policy=policy, policy_options=options, retry=retry,
                                  http=http, core=core))
    return server, pools


async def _run(setup: Any, replicas: int, mode: str, policy: str, options: dict[str, Any],
               times: Sequence[float], budgets: Sequence[float],
               rtt_s: float) -> list[QueryRecord]:
    from fleetcall.bench.scheduler import BENCH_ATTEMPT_TIMEOUT_S, BENCH_STREAM_INTERVAL_S
    retry = RetryConfig(attempt_timeout_s=BENCH_ATTEMPT_TIMEOUT_S)
    reference = deadline_rules.fastest_deployment(setup.deployments(), setup.queries)
    async with SharedEndpoints(setup.gpus, setup.model, tp=setup.tp, slots=setup.slots,
                               seed=setup.seed, stream_interval_s=BENCH_STREAM_INTERVAL_S,
                               retry=retry) as cluster:
        server = None
        if mode == "shared":
            server, pools = shared_pools(cluster.configs, cluster.http, replicas, policy=policy,
                                         options=options, retry=retry, rtt_s=rtt_s)
        else:
            pools = [EndpointPool(cluster.configs, policy=policy, policy_options=options,
                                  retry=retry, http=cluster.http) for _ in range(replicas)]
        parts = [list(range(r, len(setup.queries), replicas)) for r in range(replicas)]
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [group.create_task(replay(
                    pools[r], [setup.queries[i] for i in part], [times[i] for i in part],
                    [budgets[i] for i in part], timeout_s=setup.timeout_s, reference=reference))
                    for r, part in enumerate(parts)]
        finally:
            for pool in pools:
                await pool.aclose()
            if server is not None:
                await server.aclose()
    records: list[QueryRecord | None] = [None] * len(setup.queries)
    for part, task in zip(parts, tasks):
        for i, record in zip(part, task.result()):
            records[i] = record
    return [r for r in records if r is not None]


def run_herd(setup: Any, replicas: int, mode: str, policy: str, rate: float,
             options: dict[str, Any] | None = None, *, rtt_s: float = 0.001) -> dict[str, Any]:
    """One (K, mode) run: the summary of :func:`fleetcall.bench.report.summarize`, plus
    ``replicas``, ``mode`` and ``wall_s``."""
    if replicas < 1 or mode not in MODES:
        raise ConfigError(f"replicas must be >= 1 and mode one of {', '.join(MODES)}")
    times = arrival_processes.make_arrivals(setup.arrivals, rate, len(setup.queries), setup.seed,
                                            setup.cv, queries=setup.queries)
    started = time.perf_counter()
    records = run_virtual(_run(setup, replicas, mode, policy, options or {}, times,
                               setup.budgets(), rtt_s), seed=setup.seed)
    summary = summarize(records, policy=policy, rate=rate, slo_scale=setup.slo_scale)
    summary.update(replicas=replicas, mode=mode, wall_s=time.perf_counter() - started)
    if mode == "shared":
        summary["rtt_s"] = rtt_s
    return summary


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The herd's options, added to ``fleetcall bench scheduler``."""
    parser.add_argument("--replicas", metavar="K[,K...]",
                        help=f"the herd: K service replicas on one cluster (e.g. {DEFAULT_REPLICAS})")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--shared", action="store_true",
                       help="with --replicas: only the replicas sharing one scheduler")
    group.add_argument("--independent", action="store_true",
                       help="with --replicas: only the replicas scheduling alone")
    parser.add_argument("--rtt-ms", type=float, default=1.0,
                        help="with --replicas --shared: loop ms per round trip to the shared "
                             "scheduler (1.0, as a Ray actor call costs; replicas' direct "
                             "connection: 0.1-0.6 ms, see bench ray-overhead)")


def parse_replicas(text: str) -> list[int]:
    try:
        counts = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(f"--replicas wants counts like {DEFAULT_REPLICAS}, got {text!r}") from None
    if not counts or any(k < 1 for k in counts):
        raise ConfigError(f"--replicas wants counts >= 1, got {text!r}")
    return counts


def format_herd(runs: Sequence[dict[str, Any]]) -> str:
    """K rows, each mode's SLO attainment and p95 side by side."""
    modes = [m for m in MODES if any(r["mode"] == m for r in runs)]
    head = "| K | " + " | ".join(f"{m} SLO | {m} p95 | {m} TTFT p95" for m in modes) + " |"
    lines = [head, "|" + "---|" * (1 + 3 * len(modes))]
    for k in sorted({r["replicas"] for r in runs}):
        cells = [str(k)]
        for m in modes:
            run = next((r for r in runs if r["replicas"] == k and r["mode"] == m), None)
            if run is None:
                cells += ["", "", ""]
                continue
            p95, ttft = run["latency_s"]["p95"], run["ttft_s"]["p95"]
            cells += [f"{run['slo_attainment']:.1%}", "-" if p95 is None else f"{p95:,.0f} s",
                      "-" if ttft is None else f"{ttft:.1f} s"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(args: argparse.Namespace, setup: Any, policy: str, options: dict[str, Any]) -> int:
    counts = parse_replicas(args.replicas)
    modes = ["shared"] if args.shared else ["independent"] if args.independent else list(MODES)
    if getattr(args, "clock", "virtual") == "real":  # on a local Ray cluster
        from fleetcall.bench import herd_ray
        return herd_ray.main(args, setup, policy, options, counts, modes)
    from fleetcall.bench.realclock import check_virtual
    check_virtual(args)
    if args.rtt_ms < 0:
        raise ConfigError("--rtt-ms must be >= 0")
    rate = args.rate
    runs = []
    for k in counts:
        for mode in modes:
            run = run_herd(setup, k, mode, policy, rate, options, rtt_s=args.rtt_ms / 1000)
            runs.append(run)
            print(f"  K={k} {mode:<11} p95 {run['latency_s']['p95'] or 0:,.0f}s, "
                  f"SLO {run['slo_attainment']:.1%}, failed {run['failed']}, "
                  f"{run['wall_s']:.1f}s wall", flush=True)
    print(format_herd(runs))
    if args.json:
        report = {"benchmark": "scheduler-herd", "trace": args.trace, "queries": len(setup.queries),
                  "gpus": list(setup.gpus), "model": setup.model, "slots": setup.slots,
                  "policy": policy, "rate": rate, "slo_scale": setup.slo_scale,
                  "rtt_ms": args.rtt_ms, "seed": setup.seed, "runs": runs}
        write_json(args.json, report, default=str)
    return 0
