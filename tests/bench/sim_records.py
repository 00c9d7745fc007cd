"""Per-query records of ``bench scheduler`` runs, as JSON, and their comparison.

A test helper and a script: the proof that a change meant to make the simulation faster leaves
every figure alone. ``dump`` runs policies on a workload exactly as ``fleetcall bench scheduler``
does (same setup, arrivals, deadlines, seed) and writes every query's record -- arrival,
deadline, finish, every call's start, finish, endpoint, queue wait, TTFT, total time, cached
and output tokens -- plus each endpoint's busy seconds; floats are written with ``repr``
precision, so equal files mean bit-identical runs. ``compare`` says whether two dumps are
identical and, if not, where they first differ::

    python -m tests.bench.sim_records dump --trace trace1 --queries 200 --rate 0.04 \\
        --set hexgen.alpha=0.3 --out before.json
    ... change the code ...
    python -m tests.bench.sim_records dump ... --out after.json
    python -m tests.bench.sim_records compare before.json after.json

It reads only what ``fleetcall.bench.scheduler`` has had from the start (``Setup``,
``setup_from_args``, ``_run``), so it also runs against older checkouts (``PYTHONPATH=...``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from fleetcall.bench import arrivals as arrival_processes
from fleetcall.bench import scheduler
from fleetcall.vclock import run_virtual


def records(setup: scheduler.Setup, policy: str, rate: float,
            options: dict[str, Any] | None = None) -> dict[str, Any]:
    """One policy's run as plain data: ``{"queries": [...], "busy": {...}, "cpu_s": ...}``."""
    times = arrival_processes.make_arrivals(setup.arrivals, rate, len(setup.queries), setup.seed,
                                            setup.cv, queries=setup.queries)
    budgets = setup.budgets()
    cpu = time.process_time()
    out = run_virtual(scheduler._run(setup, policy, options or {}, times, budgets),
                      seed=setup.seed)
    cpu = time.process_time() - cpu
    queries = [_query(r) for r in out["records"]]
    return {"policy": policy, "rate": rate, "queries": queries,
            "busy": dict(sorted(out["busy"].items())), "cpu_s": cpu,
            "calls": sum(len(q["calls"]) for q in queries)}


# Not simulated: the oracle's reference latency (issue 12's stretch), computed from the trace
NOT_SIMULATED = ("calls", "unloaded_s")


def _query(record: Any) -> dict[str, Any]:
    out = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)
           if f.name not in NOT_SIMULATED}
    out["calls"] = [dataclasses.asdict(c) for c in record.calls]
    return out


def diff(a: Any, b: Any, where: str = "") -> str | None:
    """Where ``a`` and ``b`` (JSON data) first differ, or None if they are equal."""
    if type(a) is not type(b):
        return f"{where or '.'}: {a!r} != {b!r}"
    if isinstance(a, dict):
        if a.keys() != b.keys():
            return f"{where or '.'}: keys {sorted(a)} != {sorted(b)}"
        for key in a:
            found = diff(a[key], b[key], f"{where}.{key}")
            if found:
                return found
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{where or '.'}: {len(a)} items != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            found = diff(x, y, f"{where}[{i}]")
            if found:
                return found
        return None
    return None if a == b else f"{where or '.'}: {a!r} != {b!r}"


def compare(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Differences between two dumps, one line per run (empty: identical results)."""
    problems = []
    if a["setup"] != b["setup"]:
        problems.append(f"different setups: {a['setup']} != {b['setup']}")
    runs_a = {(r["policy"], r["rate"]): r for r in a["runs"]}
    runs_b = {(r["policy"], r["rate"]): r for r in b["runs"]}
    if runs_a.keys() != runs_b.keys():
        problems.append(f"different runs: {sorted(runs_a)} != {sorted(runs_b)}")
    for key in sorted(runs_a.keys() & runs_b.keys()):
        for part in ("queries", "busy"):
            found = diff(runs_a[key][part], runs_b[key][part], f"{key[0]}@{key[1]:g}.{part}")
            if found:
                problems.append(found)
    return problems


def _dump(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sim_records dump")
    scheduler.add_setup_arguments(parser)
    parser.add_argument("--policy", action="append")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    setup = scheduler.setup_from_args(args)
    options = scheduler.parse_options(args.set)
    runs = []
    for policy in args.policy or list(scheduler.DEFAULT_POLICIES):
        run = records(setup, policy, args.rate, options.get(policy))
        runs.append(run)
        print(f"{policy:<11} {run['calls']} calls, {run['cpu_s']:.2f} s CPU, "
              f"{run['calls'] / run['cpu_s']:.0f} calls per CPU second", flush=True)
    setup_data = {k: v for k, v in vars(args).items() if k not in ("out", "policy")}
    with open(args.out, "w") as fh:
        json.dump({"setup": setup_data, "runs": runs}, fh)
    return 0


def _compare(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="sim_records compare")
    parser.add_argument("a")
    parser.add_argument("b")
    args = parser.parse_args(argv)
    with open(args.a) as fa, open(args.b) as fb:
        a, b = json.load(fa), json.load(fb)
    problems = compare(a, b)
    for line in problems:
        print("DIFFERENT", line)
    if not problems:
        n = sum(len(r["queries"]) for r in a["runs"])
        calls = sum(r["calls"] for r in a["runs"])
        print(f"identical: {len(a['runs'])} runs, {n} queries, {calls} calls")
    return 1 if problems else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    commands = {"dump": _dump, "compare": _compare}
    if not args or args[0] not in commands:
        print("usage: python -m tests.bench.sim_records {dump,compare} ...", file=sys.stderr)
        return 2
    return commands[args[0]](args[1:])


if __name__ == "__main__":
    raise SystemExit(main())
