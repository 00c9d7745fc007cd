"""``fleetcall tune``: search a dispatch policy's knobs on a workload, by simulation.

The HEXGEN-TEXT2SQL paper picks its ``alpha`` by simulating the workload; this does the same
for any policy: every combination of the knob values given (or the policy's default grid) runs
on the same arrivals under the virtual clock (:func:`fleetcall.fleet.runner.simulate`, the runner
``fleetcall plan-fleet`` uses, with a progress bar per run), and the best setting -- highest SLO
attainment, then lowest p95 latency -- is printed, with the whole table.
``fleetcall tune --policy hexgen --trace trace1 --rate 0.05``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from typing import Any

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench.scheduler import Setup, add_setup_arguments, setup_from_args
from fleetcall.errors import ConfigError
from fleetcall.fleet.runner import Progress, Workload, simulate
from fleetcall.gpumodel.perf import default_tp

# policy -> knob -> values tried when the command line names none
DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "hexgen": {"alpha": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]},
    "slack": {"prefill_slots": [1, 2, 4, None], "aging_per_s": [0.0, 0.1, 1.0]},
}


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """``--grid alpha=0,0.5,1`` -> {"alpha": [0, 0.5, 1]} (values parsed as JSON if they can be)."""
    grid: dict[str, list[Any]] = {}
    for item in items:
        knob, sep, values = item.partition("=")
        if not sep or not knob or not values:
            raise ConfigError(f"--grid wants KNOB=V1,V2,..., got {item!r}")
        parsed = []
        for v in values.split(","):
            try:
                parsed.append(json.loads(v))
            except json.JSONDecodeError:
                parsed.append(v)
        grid[knob] = parsed
    return grid


def workload(setup: Setup, rate: float) -> tuple[Workload, list[tuple[str, int]]]:
    """The runner's workload and cluster of a :class:`Setup` at ``rate``: the same arrivals,
    deadlines and endpoints as ``fleetcall bench scheduler`` gives it."""
    times = arrival_processes.make_arrivals(setup.arrivals, rate, len(setup.queries), setup.seed,
                                            setup.cv, queries=setup.queries)
    work = Workload(setup.queries, tuple(times), tuple(setup.budgets()), rate, setup.slo_scale,
                    setup.model, setup.slots, setup.seed, setup.timeout_s)
    return work, [(g, setup.tp or default_tp(g, setup.model)) for g in setup.gpus]


def search(setup: Setup, policy: str, rate: float, grid: dict[str, list[Any]],
           progress: Progress | None = None) -> list[dict[str, Any]]:
    """Run every setting of ``grid``; return the runs, best first."""
    names = list(grid)
    runs = []
    work, cluster = workload(setup, rate)
    progress = progress or Progress(enabled=False)
    for values in itertools.product(*(grid[n] for n in names)):
        options = dict(zip(names, values))
        with progress.task(f"{policy} {options}", queries=len(work.queries)) as advance:
            result = simulate(work, cluster, policy=policy, options=options, on_query=advance)
        assert result.summary is not None  # no stop rule: the run is whole
        run = result.summary
        run["policy_options"] = options
        runs.append(run)
        print(f"  {options}: SLO {run['slo_attainment']:.1%}, p95 {run['latency_s']['p95'] or 0:.1f}s", flush=True)
    runs.sort(key=lambda r: (-r["slo_attainment"], r["latency_s"]["p95"] or float("inf")))
    return runs


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fleetcall tune", description=__doc__.split("\n\n")[0])
    parser.add_argument("--policy", default="hexgen", help="policy whose knobs to search (hexgen)")
    parser.add_argument("--grid", action="append", default=[], metavar="KNOB=V1,V2,...",
                        help="values to try for a knob (default grid per policy)")
    add_setup_arguments(parser, rate=0.05)
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid) or DEFAULT_GRIDS.get(args.policy)
        if not grid:
            raise ConfigError(f"policy {args.policy!r} has no default grid; give --grid KNOB=V1,V2")
        setup = setup_from_args(args)
        with Progress(enabled=not args.no_progress and sys.stderr.isatty()) as progress:
            runs = search(setup, args.policy, args.rate, grid, progress)
    except ConfigError as exc:
        parser.exit(2, f"fleetcall tune: {exc}\n")
    best = runs[0]
    print(f"best {args.policy} setting at {args.rate:g} q/s: {best['policy_options']} "
          f"(SLO {best['slo_attainment']:.1%}, p95 {best['latency_s']['p95']:.1f}s)")
    print("use it: fleetcall bench scheduler "
          + " ".join(f"--set {args.policy}.{k}={json.dumps(v)}" for k, v in best["policy_options"].items()))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"policy": args.policy, "rate": args.rate, "best": best["policy_options"],
                       "runs": runs}, fh, indent=2, default=str)
    return 0
