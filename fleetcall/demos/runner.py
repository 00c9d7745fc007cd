"""Running a demo: the compiled plan (watched event by event), then the same query the ReAct way.

Both runs use the same kind of model (``llm_factory``, the demo's scripted one by default) on
fresh orchestrators, so the speedup compares the two strategies and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fleetcall import RunResult, events as ev
from fleetcall.demos import Demo
from fleetcall.demos.common import LLMFactory, check_pace
from fleetcall.demos.view import Sink, watched


@dataclass(frozen=True, slots=True)
class DemoOutcome:
    name: str
    question: str
    result: RunResult      # the compiled run
    react: RunResult       # the same query, ReAct

    @property
    def speedup(self) -> float:
        """ReAct's latency over the compiled plan's (> 1: the plan was faster)."""
        return self.react.latency / self.result.latency if self.result.latency > 0 else float("inf")

    def summary(self) -> dict[str, Any]:
        """The outcome as JSON-ready data: answer, status, latencies, speedup, tasks (times from the start)."""
        r, t0 = self.result, self.result.started_at
        return {
            "demo": self.name, "question": self.question, "answer": r.answer, "status": r.status.value,
            "error": r.error, "latency_s": r.latency, "react_latency_s": self.react.latency,
            "react_status": self.react.status.value, "react_answer": self.react.answer,
            "speedup_vs_react": self.speedup, "replans": [p.reason for p in r.replans],
            "llm_calls": len(r.llm_calls), "react_llm_calls": len(self.react.llm_calls),
            "tasks": [
                {"round": t.round, "id": t.id, "tool": t.tool, "status": t.status,
                 "start_s": None if t.start is None else t.start - t0,
                 "end_s": None if t.end is None else t.end - t0,
                 "error": t.error}
                for t in r.tasks
            ],
        }


def _factory(demo: Demo, pace: float, llm_factory: LLMFactory | None, sink: Sink | None) -> LLMFactory:
    base = llm_factory or demo.model(pace)
    return base if sink is None else watched(base, sink)


async def run_compiled(demo: Demo, sink: Sink | None = None, *, pace: float = 1.0,
                       llm_factory: LLMFactory | None = None) -> RunResult:
    """Run the demo's question as a compiled plan; every event and LLM call goes to ``sink``."""
    orch = demo.build(_factory(demo, check_pace(pace), llm_factory, sink), pace=pace)
    async for event in orch.stream(demo.QUESTION):
        if sink is not None:
            sink(event)
        if isinstance(event, ev.RunFinished):
            return event.result
    raise RuntimeError("Orchestrator.stream ended without RunFinished")  # its contract: never happens


async def run_react(demo: Demo, sink: Sink | None = None, *, pace: float = 1.0,
                    llm_factory: LLMFactory | None = None) -> RunResult:
    """Run the demo's question the ReAct way on a fresh orchestrator; LLM calls go to ``sink``."""
    orch = demo.build(_factory(demo, check_pace(pace), llm_factory, sink), pace=pace)
    return await orch.run(demo.QUESTION, mode="react")


async def run_demo(demo: Demo, *, pace: float = 1.0, llm_factory: LLMFactory | None = None) -> DemoOutcome:
    """Both runs, unwatched: what tests and benchmarks need.

    >>> # outcome = await run_demo(get_demo("text2sql")); outcome.speedup
    """
    result = await run_compiled(demo, pace=pace, llm_factory=llm_factory)
    react = await run_react(demo, pace=pace, llm_factory=llm_factory)
    return DemoOutcome(demo.NAME, demo.QUESTION, result, react)
