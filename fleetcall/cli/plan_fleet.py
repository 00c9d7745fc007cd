"""``fleetcall plan-fleet``: the cheapest mix of GPUs serving an agent workload within its SLO.

    fleetcall plan-fleet --trace trace1 --rate 0.04 --slo-scale 3 --attainment 0.95 \\
        --gpus A100-80G,L40S,A6000,H100 --prices example --model llama-3.1-70b \\
        --json plan.json --plot plan.png

Searches mixes of GPU types, endpoint counts and tensor-parallel degrees (within memory and
``--max-gpus``) by simulating the workload on emulated GPUs under the virtual clock
(:mod:`fleetcall.fleet.planner`), and prints the cheapest mix whose SLO attainment reaches the
target, with its cost per hour, cost per query served within the SLO, attainment, p95 latency
and utilisation per endpoint, the simple rules it beats, and the frontier. With ``--validate``
the answer is the mix that holds at full length. Exit 0 with a mix, 1 if no mix within
``--max-gpus`` meets the target (with ``--validate``: none holds at full length), 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
from pathlib import Path

from fleetcall.bench.scheduler import parse_options
from fleetcall.bench.workloads import load_workload
from fleetcall.errors import ConfigError, FleetcallError, UnknownNameError
from fleetcall.fleet.planner import ALL_A100, FleetPlan, Question, plan_fleet
from fleetcall.fleet.prices import load_prices
from fleetcall.fleet.report import format_plan, plan_json, plot_frontier
from fleetcall.fleet.runner import Progress
from fleetcall.router.dispatcher import dispatcher_names

DEFAULT_GPUS = "A100-80G,L40S,A6000,H100"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fleetcall plan-fleet", description=__doc__.split("\n\n")[0])
    p.add_argument("--trace", default="trace1", help="workload: trace1, trace2, ... or a path (trace1)")
    p.add_argument("--rate", type=float, required=True, help="arrival rate, queries/s (Poisson)")
    p.add_argument("--slo-scale", type=float, default=3.0,
                   help="deadline = scale x the query's unloaded latency on --reference (3)")
    p.add_argument("--attainment", type=float, default=0.95, help="SLO attainment to reach (0.95)")
    p.add_argument("--gpus", default=DEFAULT_GPUS, help=f"GPU types to mix ({DEFAULT_GPUS})")
    p.add_argument("--prices", required=True,
                   help="TOML of GPU = $/GPU-hour, or 'example' (illustrative prices shipped with fleetcall)")
    p.add_argument("--model", default="llama-3.1-70b")
    p.add_argument("--max-gpus", type=int, default=32, help="GPUs in a mix at most (32)")
    p.add_argument("--tp", help="tensor-parallel degrees to consider, e.g. 4,8 (default 1,2,4,8 within memory)")
    p.add_argument("--policy", default="slack", help="dispatch policy of the simulated pool (slack)")
    p.add_argument("--set", action="append", default=[], metavar="POLICY.KNOB=VALUE",
                   help="a policy knob, as in bench scheduler")
    p.add_argument("--reference", default=ALL_A100,
                   help=f"GPU whose unloaded latency (at its usual tp) sets the deadlines ({ALL_A100})")
    p.add_argument("--queries", type=int, default=200,
                   help="queries per screening simulation (200): a mix that misses there is out")
    p.add_argument("--confirm", type=int, metavar="QUERIES",
                   help="queries of the run confirming a mix that met in the screen; its verdict "
                        "stands (default: the --validate length, else 5 x --queries; 0: none)")
    p.add_argument("--max-sims", type=int, default=40, help="simulations the main search may run (40)")
    p.add_argument("--validate", type=int, default=0, metavar="QUERIES",
                   help="also run full-length simulations of this many queries (no early stop) of the "
                        "choice, the next cheaper frontier mix and the simple rules' mixes")
    p.add_argument("--jobs", type=int, default=1,
                   help="processes running the validation runs at once (1; 2 on a 2-core machine)")
    p.add_argument("--slots", type=int, default=16, help="calls in flight per endpoint (16)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", metavar="PATH", help="write the plan and its frontier as JSON")
    p.add_argument("--plot", metavar="PATH", help="draw cost vs attainment (.png/.svg/.pdf; needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def _degrees(text: str | None) -> tuple[int, ...]:
    if text is None:
        return (1, 2, 4, 8)
    try:
        degrees = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise ConfigError(f"--tp wants degrees like 4,8, got {text!r}") from None
    if not degrees or min(degrees) < 1:
        raise ConfigError(f"--tp wants positive degrees, got {text!r}")
    return degrees


def check_output(option: str, path: str) -> None:
    """ConfigError unless ``path`` can be written as ``option``'s file (checked before the search,
    so a bad path does not throw its results away): not a directory, in an existing writable
    directory; for ``--plot`` a suffix matplotlib writes as named (it adds .png to none)."""
    target = Path(path)
    parent = target.parent
    if target.is_dir():
        raise ConfigError(f"{option} {path}: is a directory; give a file name")
    if not parent.is_dir():
        raise ConfigError(f"{option} {path}: no directory {parent}")
    existed = target.exists()
    try:  # a trial open: permission bits alone miss read-only mounts, /proc, and root's bypass
        with open(target, "a"):
            pass
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot write it: {exc.strerror}") from exc
    if not existed:
        target.unlink()
    if option == "--plot":
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if target.suffix.lower().lstrip(".") not in formats:
            raise ConfigError(f"{option} {path}: give a file name ending in .png, .svg or .pdf "
                              f"(matplotlib writes {', '.join(sorted(formats))})")


def question_from_args(args: argparse.Namespace) -> Question:
    """The :class:`Question` of the command line; ConfigError names what is wrong."""
    if args.policy not in dispatcher_names():
        raise ConfigError(f"unknown policy {args.policy!r}; choose from {', '.join(dispatcher_names())}")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        raise ConfigError("--plot needs matplotlib: pip install 'fleetcall[plot]'")
    for option, path in (("--json", args.json), ("--plot", args.plot)):
        if path:
            check_output(option, path)
    gpus = tuple(g.strip() for g in args.gpus.split(",") if g.strip())
    options = parse_options(args.set).get(args.policy, {})
    return Question(tuple(load_workload(args.trace)), args.rate, args.slo_scale, args.attainment,
                    gpus, load_prices(args.prices), args.model, max_gpus=args.max_gpus,
                    policy=args.policy, policy_options=options, reference=args.reference,
                    slots=args.slots, seed=args.seed, search_queries=args.queries,
                    confirm_queries=args.confirm,
                    validate_queries=args.validate, jobs=args.jobs, max_sims=args.max_sims,
                    tp_degrees=_degrees(args.tp))


def main(argv: list[str]) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        question = question_from_args(args)
        print(f"plan-fleet: {args.trace}, {question.rate:g} q/s, deadline {question.slo_scale:g} x "
              f"unloaded latency on {question.reference}, target {question.target:.0%}, "
              f"{question.model}, policy {question.policy}, prices {args.prices}", flush=True)
        with Progress(enabled=not args.no_progress and sys.stderr.isatty(),
                      notes=not args.no_progress) as progress:
            plan = plan_fleet(question, progress)
    except (FleetcallError, UnknownNameError) as exc:
        parser.exit(2, f"fleetcall plan-fleet: {exc}\n")
    print(format_plan(plan))
    try:
        _write(args, question, plan)
    except OSError as exc:  # checked up front; this is a race or a full disk
        parser.exit(2, f"fleetcall plan-fleet: cannot write {exc.filename}: {exc.strerror}\n")
    return 0 if plan.answer is not None else 1


def _write(args: argparse.Namespace, question: Question, plan: FleetPlan) -> None:
    if args.json:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        with open(args.json, "w") as fh:
            json.dump(plan_json(plan, {"trace": args.trace, "prices": args.prices, "load_average_1m": load}),
                      fh, indent=2, default=str)
        print(f"wrote {args.json}")
    if args.plot:
        title = (f"fleet plan: {args.trace} at {question.rate:g} q/s, deadline {question.slo_scale:g}x, "
                 f"{question.model}, {question.target:.0%} target")
        print(f"wrote {plot_frontier(plan, args.plot, title=title)}")
