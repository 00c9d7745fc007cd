"""``fleetcall demo [NAME]``: run a scripted workflow live, then the same query the ReAct way."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable

from fleetcall import Orchestrator
from fleetcall.demos import parallelqa
from fleetcall.executor import events as ev

# demo name -> (builder of its orchestrator, its question, one-line description)
DEMOS: dict[str, tuple[Callable[[], Orchestrator], str, str]] = {
    "parallelqa": (parallelqa.build, parallelqa.QUESTION.text, "parallel lookups, arithmetic on each, a comparison"),
}


def _describe(event: ev.Event, t0: float) -> str | None:
    at = f"[{event_time(event) - t0:6.2f}s]"
    match event:
        case ev.TaskPlanned(round=r, task=task):
            return f"{at} plan {r}: {task.id}. {task.source or task.tool}"
        case ev.TaskStarted(task_id=i, tool=tool):
            return f"{at}   start  task {i} ({tool})"
        case ev.TaskFinished(task_id=i, observation=obs):
            return f"{at}   done   task {i} -> {str(obs.value)[:70]}"
        case ev.TaskFailed(task_id=i, observation=obs) | ev.TaskSkipped(task_id=i, observation=obs):
            return f"{at}   {obs.status.value:6} task {i}: {obs.error}"
        case ev.Replanning(reason=reason):
            return f"{at} replanning: {reason}"
        case ev.PlanRejected(issues=issues):
            return f"{at} plan rejected: " + "; ".join(map(str, issues))
    return None


def event_time(event: ev.Event) -> float:
    if isinstance(event, ev.RunFinished):
        return event.result.finished_at
    return getattr(event, "time", None) or getattr(event, "end", 0.0)


async def _run(name: str) -> dict[str, object]:
    build, question, _ = DEMOS[name]
    orch = build()
    print(f"Question: {question}\n")
    t0 = asyncio.get_running_loop().time()
    result = None
    async for event in orch.stream(question):
        line = _describe(event, t0)
        if line:
            print(line, flush=True)
        if isinstance(event, ev.RunFinished):
            result = event.result
    assert result is not None
    print(f"\nAnswer ({result.status.value}, {result.latency:.2f}s): {result.answer}")
    react = await build().run(question, mode="react")
    print(f"Same query the ReAct way: {react.latency:.2f}s ({react.status.value}): {react.answer}")
    speedup = react.latency / result.latency
    print(f"Speedup of the compiled plan over ReAct: {speedup:.2f}x")
    return {"demo": name, "answer": result.answer, "status": result.status.value,
            "latency_s": result.latency, "react_latency_s": react.latency, "speedup_vs_react": speedup}


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="fleetcall demo", description="Run a scripted demo workflow.")
    parser.add_argument("name", nargs="?", default="parallelqa", help="demo to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the demos")
    parser.add_argument("--json", metavar="PATH", help="write the outcome as JSON")
    args = parser.parse_args(argv)
    if args.list:
        for name, (_, _, about) in DEMOS.items():
            print(f"{name:12} {about}")
        return 0
    if args.name not in DEMOS:
        parser.error(f"unknown demo {args.name!r}; choose from {', '.join(DEMOS)}")
    outcome = asyncio.run(_run(args.name))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(outcome, fh, indent=2)
    return 0 if outcome["status"] == "answered" else 1
