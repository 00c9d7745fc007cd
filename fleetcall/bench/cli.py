"""``fleetcall bench NAME``: the benchmarks, each printing a side-by-side table and writing JSON.

Each benchmark module defines ``add_arguments(parser)`` and ``main(args) -> int`` (0 when its
floors hold); this table is the only place that lists them.
"""

from __future__ import annotations

import argparse
import importlib

from fleetcall.errors import FleetcallError

# benchmark -> (module, one-line help)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "executor": ("fleetcall.bench.executor", "compiled plans vs ReAct and parallel calls on ParallelQA"),
    "overhead": ("fleetcall.bench.overhead", "orchestration cost per task and per run (real clock)"),
    "scheduler": ("fleetcall.bench.scheduler", "dispatch policies side by side on emulated GPUs (virtual clock)"),
    "pool": ("fleetcall.bench.pool", "the pool's orchestration cost per LLM call (real clock)"),
    "llamacpp": ("fleetcall.bench.llamacpp", "llama.cpp CPU servers: profile to CSV, or policy ranks real vs emulated"),
    "ray-overhead": ("fleetcall.bench.ray_overhead",
                     "the shared scheduler: the core's cost per decision, the Ray actor's round "
                     "trip and capacity (local Ray cluster)"),
    "burst": ("fleetcall.bench.burst", "many tiny calls at one real endpoint: calls/s direct vs via the pool"),

}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fleetcall bench", description="Run a benchmark.")
    subs = parser.add_subparsers(dest="benchmark", required=True, metavar="NAME")
    modules = {}
    for name, (module_name, about) in BENCHMARKS.items():
        module = modules[name] = importlib.import_module(module_name)
        module.add_arguments(subs.add_parser(name, help=about, description=about))
    args = parser.parse_args(argv)
    try:
        return int(modules[args.benchmark].main(args))
    except FleetcallError as exc:
        parser.exit(2, f"fleetcall bench {args.benchmark}: {exc}\n")
