"""``fleetcall bench scheduler --replicas K --clock real``: the herd for real, on a local Ray cluster.

The benchmark starts one ``fleetcall emulate --speed S`` process per GPU of ``--gpus`` on
127.0.0.1 (or uses ``--endpoints``), a local Ray cluster (``ray.init(num_cpus=2)``, shut down at
the end), and for each K and mode K *replica actors*: Ray actors, each its own process, each
replaying its share of the workload (query ``i`` goes to replica ``i mod K``, at its arrival
time, with its deadline) through its own pool, over HTTP to the endpoints:

* ``independent``: each replica an :class:`~fleetcall.router.pool.EndpointPool` of its own, as
  separate routers are;
* ``shared``: each replica a :class:`~fleetcall.distributed.pool.RayPool` on one scheduler actor
  started for the run (:func:`~fleetcall.distributed.actor.start_scheduler`): the real round
  trips, processes and pickling of a deployment.

Every replica starts its replay at one wall time agreed beforehand, so the arrivals line up as
in the virtual run. As in ``--clock real`` (:mod:`fleetcall.bench.realclock`), the replicas run
on a loop ``S`` times faster than the wall clock (``--speed``) and so does the scheduler actor's
clock, so every figure is in the emulated GPUs' seconds; the endpoints are drained and their
prefix caches emptied before each run. Reported per (K, mode) as the virtual herd is
(:func:`fleetcall.bench.herd.format_herd`), plus wall seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench import deadlines as deadline_rules
from fleetcall.bench.dilation import run_dilated
from fleetcall.bench.live import (ATTEMPT_TIMEOUT_S, CONNECT_TIMEOUT_WALL_S, CallerTimed,
                                  LiveEndpoint, http_client, settle)
from fleetcall.bench.procs import Children
from fleetcall.bench.replay import QueryRecord, replay
from fleetcall.bench.report import summarize
from fleetcall.bench.workloads import QuerySpec
from fleetcall.errors import ConfigError
from fleetcall.router.config import EndpointConfig, RetryConfig
from fleetcall.bench.output import write_json

__all__ = ["main", "run_replica"]

START_AFTER_WALL_S = 3.0          # the replicas start replaying this long after they are handed
DEFAULT_QUERY_TIMEOUT_S = 600.0   # a query not done this long after its arrival fails (GPU s)
RPC_TIMEOUT_WALL_S = 10.0         # a replica's round trip to the actor: lost past this (wall s)


@dataclass(frozen=True, slots=True)
class Job:
    """What one replica actor replays (plain data: it is pickled to the actor)."""

    replica: str
    configs: list[EndpointConfig]
    policy: str
    options: dict[str, Any]
    queries: list[QuerySpec]
    times: list[float]                  # arrivals, loop seconds after the start
    budgets: list[float | None]
    timeout_s: float
    reference: Any                      # deadline_rules' fastest deployment
    speed: float
    start_wall: float                   # time.time() at which the replay starts
    scheduler: Any = None               # the shared scheduler actor's handle (None: independent)


def run_replica(job: Job) -> list[QueryRecord]:
    """Replay ``job`` on a dilated loop (blocking; what a replica actor runs)."""
    return run_dilated(_replay(job), speed=job.speed)


async def _replay(job: Job) -> list[QueryRecord]:
    from fleetcall.distributed.pool import RayPool
    from fleetcall.router.pool import EndpointPool
    retry = RetryConfig(attempt_timeout_s=ATTEMPT_TIMEOUT_S,
                        connect_timeout_s=CONNECT_TIMEOUT_WALL_S * job.speed)
    async with http_client(job.speed) as http:
        pool = (EndpointPool(job.configs, policy=job.policy, policy_options=job.options,
                             retry=retry, http=http)
                if job.scheduler is None else
                RayPool(job.configs, scheduler=job.scheduler, replica=job.replica,
                        policy=job.policy, policy_options=job.options, retry=retry, http=http,
                        speed=job.speed, rpc_timeout_s=RPC_TIMEOUT_WALL_S * job.speed,
                        poll_s=5.0 * job.speed))
        async with pool:
            await asyncio.sleep(max(0.0, job.start_wall - time.time()) * job.speed)
            return await replay(CallerTimed(pool), job.queries, job.times, job.budgets,
                                timeout_s=job.timeout_s, reference=job.reference)


class _Replica:
    """The replica actor: one process, one replay at a time."""

    def ready(self) -> bool:
        return True

    def run(self, job: Job) -> list[QueryRecord]:
        return run_replica(job)


def _endpoints(children: Children, args: argparse.Namespace, setup: Any) -> list[LiveEndpoint]:
    from fleetcall.bench.realclock import _endpoints as start_or_find
    return start_or_find(children, args, setup)


def _configs(endpoints: Sequence[LiveEndpoint], setup: Any) -> list[EndpointConfig]:
    return [EndpointConfig(name=e.name, base_url=f"{e.url}/v1", model=setup.model, gpu=e.gpu,
                           tp=e.tp, slots=setup.slots) for e in endpoints]


async def _settle(endpoints: Sequence[LiveEndpoint], speed: float) -> None:
    async with http_client(speed) as http:
        await settle(http, endpoints, speed)


def run_herd(ray: Any, endpoints: Sequence[LiveEndpoint], setup: Any, replicas: int, mode: str,
             policy: str, rate: float, options: dict[str, Any], speed: float) -> dict[str, Any]:
    """One (K, mode) run on the cluster ``ray`` is connected to: the summary of
    :func:`fleetcall.bench.report.summarize`, plus ``replicas``, ``mode``, ``wall_s``."""
    from fleetcall.distributed.actor import start_scheduler
    run_dilated(_settle(endpoints, speed), speed=speed)
    times = arrival_processes.make_arrivals(setup.arrivals, rate, len(setup.queries), setup.seed,
                                            setup.cv, queries=setup.queries)
    budgets = setup.budgets()
    reference = deadline_rules.fastest_deployment(setup.deployments(), setup.queries)
    timeout_s = setup.timeout_s or DEFAULT_QUERY_TIMEOUT_S
    scheduler = None
    if mode == "shared":
        scheduler = start_scheduler(policy, options, name=f"herd-{replicas}", speed=speed,
                                    retry=RetryConfig(attempt_timeout_s=ATTEMPT_TIMEOUT_S))
    actor = ray.remote(num_cpus=0, max_restarts=0)(_Replica)
    actors = [actor.remote() for _ in range(replicas)]
    try:
        # every process up before the clock starts: the scheduler actor's start (a Ray worker
        # importing fleetcall, seconds on a busy machine) is not part of a replica's round trip
        # (a replica whose first hello outlasted its RPC timeout placed its calls locally)
        waits = [a.ready.remote() for a in actors]
        ray.get(waits + ([scheduler.stats.remote()] if scheduler is not None else []),
                timeout=120)
        start_wall = time.time() + START_AFTER_WALL_S
        parts = [list(range(r, len(setup.queries), replicas)) for r in range(replicas)]
        jobs = [Job(f"r{r}", _configs(endpoints, setup), policy, options,
                    [setup.queries[i] for i in part], [times[i] for i in part],
                    [budgets[i] for i in part], timeout_s, reference, speed, start_wall, scheduler)
                for r, part in enumerate(parts)]
        bound = START_AFTER_WALL_S + (max(times, default=0.0) + timeout_s) / speed + 120
        started = time.perf_counter()
        results = ray.get([a.run.remote(job) for a, job in zip(actors, jobs)], timeout=bound)
        wall = time.perf_counter() - started - START_AFTER_WALL_S
        stats = ray.get(scheduler.stats.remote(), timeout=30) if scheduler is not None else None
    finally:
        for a in actors:
            ray.kill(a)
        if scheduler is not None:
            ray.kill(scheduler)
    records: list[QueryRecord | None] = [None] * len(setup.queries)
    for part, result in zip(parts, results):
        for i, record in zip(part, result):
            records[i] = record
    summary = summarize([r for r in records if r is not None], policy=policy, rate=rate,
                        slo_scale=setup.slo_scale)
    summary.update(replicas=replicas, mode=mode, wall_s=wall, clock="real", speed=speed)
    if stats is not None:
        summary["scheduler"] = {"requests": stats["requests"], "ignored_events": stats["ignored_events"],
                                # every replica that placed through it in the run (one done
                                # early is forgotten lease_s later: 1.5 s of wall at speed 20)
                                "replicas": stats["replicas_joined"]}
    errors = [r.error for r in records if r is not None and r.error]
    if errors:
        summary["first_error"] = errors[0]
    return summary


def main(args: argparse.Namespace, setup: Any, policy: str, options: dict[str, Any],
         counts: Sequence[int], modes: Sequence[str]) -> int:
    """Every (K, mode) on one local Ray cluster over the same endpoints; print, write --json."""
    from fleetcall.bench.herd import format_herd
    from fleetcall.distributed.actor import import_ray
    speed = args.speed
    if not (math.isfinite(speed) and speed > 0):
        raise ConfigError(f"--speed must be a finite number > 0, got {speed}")
    if getattr(args, "router", None):
        raise ConfigError("--replicas compares fleetcall's replicas: --router has no place in it")
    ray = import_ray()
    runs: list[dict[str, Any]] = []
    with Children() as children:
        endpoints = _endpoints(children, args, setup)
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        try:
            for k in counts:
                for mode in modes:
                    run = run_herd(ray, endpoints, setup, k, mode, policy, args.rate, options, speed)
                    runs.append(run)
                    print(f"  K={k} {mode:<11} p95 {run['latency_s']['p95'] or 0:,.0f}s, "
                          f"SLO {run['slo_attainment']:.1%}, failed {run['failed']}, "
                          f"{run['wall_s']:.1f}s wall", flush=True)
        finally:
            ray.shutdown()
    print(format_herd(runs))
    if args.json:
        report = {"benchmark": "scheduler-herd", "clock": "real", "speed": speed,
                  "trace": args.trace, "queries": len(setup.queries), "gpus": list(setup.gpus),
                  "model": setup.model, "slots": setup.slots, "policy": policy, "rate": args.rate,
                  "slo_scale": setup.slo_scale, "seed": setup.seed, "runs": runs}
        write_json(args.json, report, default=str)
    return 0
