"""``fleetcall bench scheduler``: dispatch policies side by side on emulated GPUs, virtual clock.

Each named policy runs the same workload with the same arrivals and deadlines on a fresh pool of
in-process emulated endpoints (:meth:`EndpointPool.emulated`), under the virtual clock: the real
pool, dispatcher, local queues, HTTP client and emulated engines, as a discrete-event
simulation. Reported per policy and rate: completed queries, end-to-end latency
(mean/p50/p95/p99), stretch (latency over the query's unloaded latency on the fastest endpoint:
1.0 is the physical limit; mean/p50/p95), SLO attainment, throughput, time to first token,
prefix-cache hit rate and per-endpoint utilisation; with several policies, ``slack``'s p95 over
the best other's at each rate (its regret); with ``--rates`` the highest rate each policy
serves at 95% attainment.

``--clock real`` runs the same comparison over real HTTP instead, against external routers
too (sglang-router, vllm-router), on ``fleetcall emulate --speed K`` processes: see
:mod:`fleetcall.bench.realclock`.

Deadlines (``--deadline``): ``unloaded`` (default) = scale x the query's own latency alone on the
pool's fastest endpoint; ``paper`` = scale x the sum of the standard workflow's mean step
latencies (HEXGEN-TEXT2SQL's definition, the same for every query).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench import deadlines as deadline_rules
from fleetcall.bench import herd, realclock
from fleetcall.bench.replay import replay
from fleetcall.bench.report import (MIN_INTERVAL_VALUES, caption, format_table, max_rate_at_95, plot,
                                    regret, summarize)
from fleetcall.bench.workloads import QuerySpec, load_workload, repeat_queries
from fleetcall.errors import ConfigError
from fleetcall.router.config import RetryConfig
from fleetcall.router.dispatcher import dispatcher_names
from fleetcall.sim.emulator import LengthsResponder
from fleetcall.gpumodel.perf import Deployment, default_tp
from fleetcall.router.pool import EndpointPool
from fleetcall.vclock import run_virtual
from fleetcall.bench.output import write_json

DEFAULT_GPUS = "A100-80G,A100-80G,A6000,L40S"
DEFAULT_POLICIES = ("rr-fcfs", "least-busy", "hexgen", "slack")
# What one GPU costs an hour, US$, on demand (public list prices of Lambda and RunPod, 2024-25);
# an endpoint costs that x its TP degree. Override with --gpu-cost; GPUs not named: unknown.
DEFAULT_GPU_COST_PER_HOUR = {"A100-80G": 1.79, "A6000": 0.80, "L40S": 0.86, "H100-80G": 2.99}
# Long generations on a loaded GPU legitimately take minutes; the benchmark measures queueing,
# so an attempt is not cut short (``--timeout`` bounds whole queries instead).
BENCH_ATTEMPT_TIMEOUT_S = 3600.0
# Trace replay reads no text: after the first token (always on time), chunks every 30 s of
# engine time keep the simulation to a few events per call.
BENCH_STREAM_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class Setup:
    """Everything but the policy and the rate: one comparison's fixed ground."""

    queries: tuple[QuerySpec, ...]
    gpus: tuple[str, ...]
    model: str
    tp: int | None = None
    slots: int = 16
    arrivals: str = "poisson"
    cv: float = 1.0
    slo_scale: float = 3.0
    deadline: str = "unloaded"
    seed: int = 0
    timeout_s: float | None = None
    gpu_cost_per_hour: tuple[tuple[str, float], ...] = tuple(DEFAULT_GPU_COST_PER_HOUR.items())

    def deployments(self) -> list[Deployment]:
        return [Deployment.of(g, self.model, tp=self.tp or default_tp(g, self.model)) for g in self.gpus]

    def budgets(self) -> list[float]:
        rule = {"unloaded": deadline_rules.unloaded_deadlines,
                "paper": deadline_rules.paper_deadlines}[self.deadline]
        return rule(self.queries, self.deployments(), self.slo_scale)


async def _run(setup: Setup, policy: str, options: dict[str, Any], times: Sequence[float],
               budgets: Sequence[float]) -> dict[str, Any]:
    pool = EndpointPool.emulated(setup.gpus, setup.model, tp=setup.tp, slots=setup.slots,
                                 policy=policy, policy_options=options,
                                 responder=LengthsResponder(), seed=setup.seed,
                                 gpu_cost_per_hour=dict(setup.gpu_cost_per_hour),
                                 stream_interval_s=BENCH_STREAM_INTERVAL_S,
                                 retry=RetryConfig(attempt_timeout_s=BENCH_ATTEMPT_TIMEOUT_S))
    reference = deadline_rules.fastest_deployment(setup.deployments(), setup.queries)
    async with pool:
        records = await replay(pool, setup.queries, times, budgets, timeout_s=setup.timeout_s,
                               reference=reference)
        busy = pool.busy_seconds()
        prices = {name: pool.core.endpoint(name).spec.cost_per_hour for name in busy}
    return {"records": records, "busy": busy, "prices": prices}


def run_policy(setup: Setup, policy: str, rate: float, options: dict[str, Any] | None = None,
               *, label: str | None = None) -> dict[str, Any]:
    """One policy at one rate: the summary dict of :func:`fleetcall.bench.report.summarize`
    (named ``label``, default the policy's name)."""
    times = arrival_processes.make_arrivals(setup.arrivals, rate, len(setup.queries), setup.seed,
                                            setup.cv, queries=setup.queries)
    budgets = setup.budgets()
    started, cpu = time.perf_counter(), time.process_time()
    out = run_virtual(_run(setup, policy, options or {}, times, budgets), seed=setup.seed)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    summary = summarize(out["records"], policy=label or policy, rate=rate,
                        endpoints_busy=out["busy"], slo_scale=setup.slo_scale,
                        endpoints_cost_per_hour=out["prices"], per_query=True)
    summary.update(simulation_speed(out["records"], wall, cpu))
    if options:
        summary["policy_options"] = options
    return summary


def regret_line(excess: dict[float, dict[str, Any]], runs: Sequence[dict[str, Any]],
                policy: str = "slack") -> str:
    """The line that prints :func:`~fleetcall.bench.report.regret`'s ``excess`` of ``runs``:
    per rate, the excess, its interval and the best other policy -- and, where the two runs
    completed different numbers of queries, how many each did: their p95s are over different
    queries, and a run that fails (times out) more of its slow queries has the lower one."""
    completed = {(float(r["rate"]), r["policy"]): (r.get("completed"), r.get("queries"))
                 for r in runs if r.get("rate") is not None}
    parts = []
    for rate, r in excess.items():
        best = r["best_other"]
        mine, n = completed.get((rate, policy), (None, None))
        theirs, _ = completed.get((rate, best), (None, None))
        counts = f"; {policy} completed {mine} of {n}, {best} {theirs}" if mine != theirs else ""
        parts.append(f"{rate:g}/s {r['excess']:+.1%}{_interval(r)} ({best}{counts})")
    return (f"{policy}'s p95 latency over the best other policy's (95% paired bootstrap interval "
            "over the queries): " + ", ".join(parts))


def _interval(regret: dict[str, Any]) -> str:
    low, high = regret.get("interval", (None, None))
    if low is None:  # (from one comparison's runs, only for want of queries: see regret)
        return f" [no interval: under {MIN_INTERVAL_VALUES} queries completed]"
    return f" [{low:+.1%}, {high:+.1%}]"


def simulation_speed(records: Sequence[Any], wall_s: float, cpu_s: float) -> dict[str, Any]:
    """How fast a run simulated: its LLM calls (every call of every query) per wall second
    and per CPU second of this process (on a shared machine the wall clock also counts other
    processes' turns; CPU time does not)."""
    calls = sum(len(r.calls) for r in records)
    return {"wall_s": wall_s, "cpu_s": cpu_s, "llm_calls": calls,
            "calls_per_wall_s": calls / wall_s if wall_s > 0 else 0.0,
            "calls_per_cpu_s": calls / cpu_s if cpu_s > 0 else 0.0}


def parse_options(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``--set hexgen.alpha=0.3`` -> {"hexgen": {"alpha": 0.3}} (values parsed as JSON if they can be)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        policy, dot, knob = key.partition(".")
        if not sep or not dot or not knob:
            raise ConfigError(f"--set wants POLICY.KNOB=VALUE, got {item!r}")
        try:
            parsed: Any = json.loads(value)
        except json.JSONDecodeError:
            parsed = value
        out.setdefault(policy, {})[knob] = parsed
    return out


def add_setup_arguments(parser: argparse.ArgumentParser, *, rate: float = 1.0) -> None:
    """The options that make a :class:`Setup` and its arrivals (shared with ``fleetcall tune``)."""
    parser.add_argument("--trace", default="trace1",
                        help="workload: trace1, trace2, mooncake, miniswe, magagent, azure-conv or a path")
    parser.add_argument("--queries", type=int, help="replay this many queries (the trace is cycled if needed)")
    parser.add_argument("--gpus", default=DEFAULT_GPUS, help=f"one endpoint per GPU type named ({DEFAULT_GPUS})")
    parser.add_argument("--model", default="llama-3.1-70b")
    parser.add_argument("--tp", type=int, help="tensor-parallel degree of every endpoint (default: smallest that fits)")
    parser.add_argument("--slots", type=int, default=16, help="calls in flight per endpoint (16)")
    parser.add_argument("--rate", type=float, default=rate, help=f"arrival rate, queries/s ({rate:g})")
    parser.add_argument("--arrivals", default="poisson", help="poisson, gamma (see --cv), recorded, or a CSV path")
    parser.add_argument("--cv", type=float, default=1.0, help="coefficient of variation of gamma arrivals")
    parser.add_argument("--slo-scale", type=float, default=3.0, help="deadline = scale x base latency (3)")
    parser.add_argument("--deadline", choices=("unloaded", "paper"), default="unloaded")
    parser.add_argument("--timeout", type=float, help="give up on a query this many seconds after it arrives")
    parser.add_argument("--seed", type=int, default=0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_setup_arguments(parser)
    parser.add_argument("--rates", help="comma-separated rates to sweep (reports max rate at 95%% attainment)")
    parser.add_argument("--policy", action="append", metavar="[LABEL=]POLICY",
                        help=f"policy to run, repeatable ({', '.join(dispatcher_names())}); "
                             "LABEL=POLICY runs it under another name, whose knobs --set "
                             "LABEL.KNOB=VALUE sets (e.g. cheap=slack --set cheap.prefer_cheap=true)")
    parser.add_argument("--set", action="append", default=[], metavar="POLICY.KNOB=VALUE",
                        help="a policy knob, e.g. hexgen.alpha=0.3")
    parser.add_argument("--gpu-cost", metavar="GPU=PRICE,...",
                        help="what one GPU costs an hour, for the GPU cost per query served within "
                             "its SLO (default " + ",".join(f"{g}={p:g}" for g, p in
                                                            DEFAULT_GPU_COST_PER_HOUR.items()) + ")")
    parser.add_argument("--json", metavar="PATH", help="write the runs as JSON")
    parser.add_argument("--plot", metavar="PATH",
                        help="write latency and SLO attainment charts, titled with the trace and cluster "
                             "(.png with matplotlib, .svg or .html)")
    herd.add_arguments(parser)
    realclock.add_arguments(parser)


def setup_from_args(args: argparse.Namespace) -> Setup:
    queries = load_workload(args.trace)
    if args.queries is not None:
        if args.queries < 1:
            raise ConfigError("--queries must be >= 1")
        queries = repeat_queries(queries, args.queries)
    if args.slots < 1:
        raise ConfigError(f"--slots must be >= 1 (calls in flight per endpoint), got {args.slots}")
    if args.timeout is not None and not (math.isfinite(args.timeout) and args.timeout > 0):
        raise ConfigError(f"--timeout must be a number of seconds > 0, got {args.timeout}")
    gpus = tuple(g.strip() for g in args.gpus.split(",") if g.strip())
    if not gpus:
        raise ConfigError("--gpus names no GPU")
    if any(g.lower() == "unknown" for g in gpus):
        raise ConfigError("--gpus names the GPUs the endpoints emulate, so it cannot be 'unknown'; "
                          "to hide them from fleetcall's pool (as from an external router) use "
                          "--clock real --pool-gpus unknown")
    setup = Setup(tuple(queries), gpus, args.model, args.tp, args.slots, args.arrivals, args.cv,
                  args.slo_scale, args.deadline, args.seed, args.timeout,
                  gpu_costs(getattr(args, "gpu_cost", None)))
    setup.deployments()  # bad GPU or model names, or a model that does not fit, fail here
    return setup


def gpu_costs(text: str | None) -> tuple[tuple[str, float], ...]:
    """``--gpu-cost A6000=0.5,L40S=1`` over the defaults, as (GPU, price an hour) pairs."""
    prices = dict(DEFAULT_GPU_COST_PER_HOUR)
    for item in (text or "").split(","):
        if not item.strip():
            continue
        gpu, sep, value = item.partition("=")
        try:
            price = float(value)
        except ValueError:
            price = -1.0
        if not sep or not gpu.strip() or not price >= 0:
            raise ConfigError(f"--gpu-cost wants GPU=PRICE (a price >= 0), got {item!r}")
        prices[gpu.strip()] = price
    return tuple(prices.items())


def policy_labels(items: Sequence[str] | None) -> list[tuple[str, str]]:
    """``--policy`` values as (label, policy) pairs: ``slack`` or ``cheap=slack``."""
    pairs = []
    for item in items or DEFAULT_POLICIES:
        label, sep, policy = item.partition("=")
        pairs.append((label, policy) if sep else (item, item))
    unknown = sorted({p for _, p in pairs} - set(dispatcher_names()))
    if unknown:
        raise ConfigError(f"unknown policy {', '.join(unknown)}; choose from {', '.join(dispatcher_names())}")
    labels = [label for label, _ in pairs]
    if not all(labels):
        raise ConfigError(f"--policy LABEL=POLICY wants a label, got {', '.join(items or ())}")
    # A run is reported, and compared (slack's regret), by its label: one that names another
    # policy would stand for that policy (hexgen=slack: slack against itself, as "hexgen").
    taken = [f"{label}={policy}" for label, policy in pairs
             if label != policy and label in dispatcher_names()]
    if taken:
        raise ConfigError(f"--policy {', '.join(taken)}: the label names another policy; "
                          "choose a label of its own (e.g. cheap=slack)")
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ConfigError(f"--policy: {', '.join(twice)} named twice")
    return pairs


def main(args: argparse.Namespace) -> int:
    setup = setup_from_args(args)
    pairs = policy_labels(args.policy or (["slack"] if args.replicas is not None else None))
    policies = [p for _, p in pairs]
    options = parse_options(args.set)
    if args.replicas is not None:  # the herd: K replicas, shared vs independent scheduling
        if len(policies) != 1 or args.rates:
            raise ConfigError("--replicas compares one policy at one --rate (name it with --policy)")
        return herd.main(args, setup, policies[0], options.get(policies[0], {}))
    if getattr(args, "clock", "virtual") == "real":
        if any(label != policy for label, policy in pairs):
            raise ConfigError("--policy LABEL=POLICY is for the virtual clock")
        return realclock.main(args, setup, options, policies)
    realclock.check_virtual(args)
    rates = realclock.parse_rates(args)
    runs = []
    for rate in rates:
        for label, policy in pairs:
            knobs = {**options.get(policy, {}), **options.get(label, {})} if label != policy \
                else options.get(policy)
            summary = run_policy(realclock.setup_at(args, setup, rate), policy, rate, knobs,
                                 label=label)
            runs.append(summary)
            print(f"  {label:<10} rate {rate:g}/s: p95 {summary['latency_s']['p95'] or 0:.2f}s, "
                  f"stretch mean {summary['stretch']['mean'] or 0:.3f}, "
                  f"SLO {summary['slo_attainment']:.1%}, "
                  f"cost/query in SLO {summary.get('cost_per_slo_query') or 0:.4f}, "
                  f"{summary['llm_calls']} LLM calls in "
                  f"{summary['wall_s']:.1f}s wall ({summary['calls_per_wall_s']:,.0f} calls/s), "
                  f"{summary['cpu_s']:.1f}s CPU ({summary['calls_per_cpu_s']:,.0f} calls/s)", flush=True)
    print(format_table(runs))
    report: dict[str, Any] = {"benchmark": "scheduler", "trace": args.trace, "queries": len(setup.queries),
                              "gpus": list(setup.gpus), "model": setup.model, "slots": setup.slots,
                              "slo_scale": setup.slo_scale, "deadline": setup.deadline,
                              "arrivals": setup.arrivals, "seed": setup.seed, "runs": runs}
    excess = regret([r for r in runs if r["policy"] in dispatcher_names()])  # not labelled variants
    if excess:
        report["regret_p95"] = {str(rate): r for rate, r in excess.items()}
        print(regret_line(excess, runs))
    if len(rates) > 1:
        report["max_rate_at_95"] = max_rate_at_95(runs)
        print("highest rate at 95% SLO attainment: "
              + ", ".join(f"{p} {r:g}/s" for p, r in report["max_rate_at_95"].items()))
    if args.json:
        write_json(args.json, report, default=str)
    if args.plot:
        title, subtitle = caption(report)
        print(f"wrote {plot(runs, args.plot, title=title, subtitle=subtitle)}")
    return 0
