"""``fleetcall bench overhead``: what orchestration itself costs, on the real clock.

The model answers instantly (a scripted plan with no pacing) and every tool is a no-op
coroutine, so the wall time of a run is all fleetcall: parsing the streamed plan, validating
it, the task fetching unit, substitution, the executor's tasks, records and events, the joiner's
prompt. Shapes:

* ``wide``: N independent tasks, then join (the task fetching unit's fan-out);
* ``deep``: a chain of N tasks, each taking the previous one's result (N sequential hand-offs);
* ``concurrent``: R runs of a small plan (3 lookups and a step that uses all of them) at once on
  one orchestrator (per-run overhead and fairness of one event loop).

The best of ``--repeat`` measurements is reported (the usual way to time code: the minimum is
the least disturbed by the rest of the machine).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Callable

from fleetcall.executor.orchestrator import Orchestrator
from fleetcall.executor.result import RunStatus
from fleetcall.llm.base import LLMRequest
from fleetcall.llm.scripted import ScriptedLLM
from fleetcall.tools.function import FunctionTool
from fleetcall.bench.output import write_json

FLOOR_US_PER_TASK = 200.0


async def noop(x: object = None) -> int:
    """Do nothing and return 0."""
    return 0


def wide_plan(n: int) -> str:
    return "\n".join([*(f"{i}. noop()" for i in range(1, n + 1)), f"{n + 1}. join()", "<END_OF_PLAN>"])


def deep_plan(n: int) -> str:
    lines = ["1. noop()", *(f"{i}. noop(${i - 1})" for i in range(2, n + 1))]
    return "\n".join([*lines, f"{n + 1}. join()", "<END_OF_PLAN>"])


SMALL_PLAN = "\n".join(["1. noop()", "2. noop()", "3. noop()", '4. noop("$1 $2 $3")', "5. join()"])
SMALL_TASKS = 4


def _orchestrator(plan: str, max_tasks: int) -> Orchestrator:
    def reply(request: LLMRequest) -> str:
        return plan if request.context.kind == "planner" else "Finish(done)"

    llm = ScriptedLLM(reply, tokens_per_chunk=64)  # instant: every microsecond measured is ours
    return Orchestrator(tools=[FunctionTool(noop)], llm=llm, builtin_tools=False, max_tasks=max_tasks)


async def _one_plan(plan: str, tasks: int) -> float:
    orch = _orchestrator(plan, tasks + 1)
    started = time.perf_counter()
    result = await orch.run("run the plan")
    wall = time.perf_counter() - started
    if result.status is not RunStatus.ANSWERED or sum(t.status == "ok" for t in result.tasks) != tasks:
        raise RuntimeError(f"overhead run did not complete: {result.status.value} {result.error}")
    return wall


async def _concurrent(runs: int) -> float:
    orch = _orchestrator(SMALL_PLAN, SMALL_TASKS)
    started = time.perf_counter()
    results = await asyncio.gather(*(orch.run(f"query {i}") for i in range(runs)))
    wall = time.perf_counter() - started
    bad = [r for r in results if r.status is not RunStatus.ANSWERED]
    if bad:
        raise RuntimeError(f"{len(bad)} of {runs} concurrent runs did not answer: {bad[0].error}")
    return wall


def _best(repeat: int, measure: Callable[[], float]) -> float:
    times = []
    for _ in range(repeat):
        gc.collect()
        times.append(measure())
    return min(times)


def measure(tasks: int = 10_000, runs: int = 1_000, repeat: int = 3) -> dict[str, object]:
    """Run the three shapes; figures in microseconds."""
    wide = _best(repeat, lambda: asyncio.run(_one_plan(wide_plan(tasks), tasks)))
    deep = _best(repeat, lambda: asyncio.run(_one_plan(deep_plan(tasks), tasks)))
    conc = _best(repeat, lambda: asyncio.run(_concurrent(runs)))
    shapes = {
        "wide": {"tasks": tasks, "wall_s": wide, "us_per_task": wide / tasks * 1e6},
        "deep": {"tasks": tasks, "wall_s": deep, "us_per_task": deep / tasks * 1e6},
        "concurrent": {"runs": runs, "tasks": runs * SMALL_TASKS, "wall_s": conc,
                       "us_per_run": conc / runs * 1e6, "us_per_task": conc / (runs * SMALL_TASKS) * 1e6},
    }
    worst = max(s["us_per_task"] for s in shapes.values())
    return {"benchmark": "overhead", "clock": "real", "repeat": repeat, "shapes": shapes,
            "floors": {"us_per_task_max": FLOOR_US_PER_TASK, "holds": worst < FLOOR_US_PER_TASK}}


def format_report(rep: dict) -> str:
    s = rep["shapes"]
    lines = [f"orchestration overhead, real clock, best of {rep['repeat']}",
             f"  wide plan, {s['wide']['tasks']} tasks:  {s['wide']['us_per_task']:7.1f} us/task "
             f"({s['wide']['wall_s']:.2f}s)",
             f"  deep plan, {s['deep']['tasks']} tasks:  {s['deep']['us_per_task']:7.1f} us/task "
             f"({s['deep']['wall_s']:.2f}s)",
             f"  {s['concurrent']['runs']} concurrent runs: {s['concurrent']['us_per_run']:7.1f} us/run, "
             f"{s['concurrent']['us_per_task']:.1f} us/task ({s['concurrent']['wall_s']:.2f}s)",
             f"floor: under {rep['floors']['us_per_task_max']:.0f} us per task: "
             f"{'yes' if rep['floors']['holds'] else 'NO'}"]
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks", type=int, default=10_000, help="tasks of the wide and deep plans")
    parser.add_argument("--runs", type=int, default=1_000, help="concurrent runs")
    parser.add_argument("--repeat", type=int, default=3, help="measurements per shape (best is kept)")
    parser.add_argument("--json", metavar="PATH", help="write the report as JSON")


def main(args: argparse.Namespace) -> int:
    if args.tasks < 1 or args.runs < 1 or args.repeat < 1:
        raise SystemExit("fleetcall bench overhead: --tasks, --runs and --repeat must be >= 1")
    rep = measure(args.tasks, args.runs, args.repeat)
    print(format_report(rep))
    if args.json:
        write_json(args.json, rep)
    floors = rep["floors"]
    assert isinstance(floors, dict)
    return 0 if floors["holds"] else 1
